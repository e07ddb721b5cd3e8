"""Pose-free NeRF lifting on the embedded procedural scene (no download), CPU-sized.

  python -m experiments.main --config=configs/toy_scene.py --workdir=/tmp/toy_scene
  python -m experiments.main --config=configs/toy_scene.py --workdir=/tmp/toy_scene --mode=evaluate
  (--mode=render: orbit video in DIR/render/; --mode=sample: views from pure noise)

The scene (`fdm.data.toy_scene`) is seen from 100 cameras on the upper hemisphere
(radius 4, elevation 10-80 degrees), so the camera distribution is the paper's
Lego/Drums one: candidates over the 4 quadrants of the upper hemisphere (Alg. 4).
Sizes are reduced from the paper's (C = 64, 12 candidates, 8x256 NeRF, 200K
steps at 1e-4 / 2e-5) to train on a laptop CPU; `--config.model.supervised=True`
gives the posed NeRF baseline on the same data, `--config.model.autoencoder=True`
the no-noise ablation.

Diffusion: T = 100 with the linear betas of Ho et al. rescaled by 1000 / T
(1e-3 .. 0.2, as improved-DDPM does for short schedules) so that x_T is pure
noise (alpha_bar_99 = 4e-5; the unscaled 1e-4 .. 0.02 would leave 0.36).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.name = "toy_scene"

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "toy_scene"
    c.data.data_dir = ""
    c.data.image_size = 32
    c.data.num_train = 100
    c.data.num_val = 20
    c.data.eval_split = "val"
    c.data.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.family = "nerf_lifting"
    c.model.supervised = False
    c.model.autoencoder = False
    c.model.camera_head = "candidates"       # candidates (Alg. 4) | axis_angle (Alg. 3)
    c.model.num_candidates = 8
    c.model.candidate_layout = "quadrant"    # quadrant (upper hemisphere) | octant
    c.model.camera_radius = 4.0
    c.model.world_up = (0.0, 0.0, 1.0)
    c.model.cls_weight = 0.1                 # lambda of Eq. 3.4
    c.model.num_samples = 32
    c.model.num_importance = 0
    c.model.num_loss_pixels = 128            # random pixels per image in the loss (0 = all)
    c.model.lindisp = False
    c.model.ndc = False
    c.model.encoder = ml_collections.ConfigDict(dict(
        ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(),
        dropout=0.0, num_groups=8))
    c.model.nerf = ml_collections.ConfigDict(dict(
        depth=4, width=64, skips=(2,), pos_max_deg=6, view_max_deg=2, use_viewdirs=False,
        density_activation="softplus", density_bias=-1.0))

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.num_timesteps = 100
    c.diffusion.beta_schedule = "linear"
    c.diffusion.beta_start = 1e-3
    c.diffusion.beta_end = 0.2
    c.diffusion.prediction = "x0"

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 3000
    c.train.batch_size = 8
    c.train.learning_rate = 5e-4             # NeRF
    c.train.encoder_learning_rate = 1e-4     # pose encoder
    c.train.lr_final_factor = 0.1            # exponential decay to 0.1x at num_steps
    c.train.grad_clip = 0.0
    c.train.ema_decay = 0.99
    c.train.seed = 0
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2
    c.train.image_every = 500

    c.eval = ml_collections.ConfigDict()
    c.eval.num_examples = 20
    c.eval.batch_size = 10
    c.eval.pose_t = 1                        # light noise before predicting a camera
    c.eval.chunk = 1024                      # rays per rendering chunk
    c.eval.num_samples = 4                   # --mode=sample
    c.eval.render_frames = 24                # --mode=render
    c.eval.render_elevation_deg = 30.0
    return c
