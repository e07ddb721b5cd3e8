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
noise (alpha_bar_99 = 2e-5; the unscaled 1e-4 .. 0.02 would leave 0.36).

Builders of every lifting config: `lifting_config(name, data)` declares every key
the family reads with its default; `scene_data(...)` makes the data section of a
scene folder, `toy_scene_data(...)` that of this procedural scene (with its view
counts data.num_train / data.num_val).
"""
import ml_collections

from configs import variants
from configs.fdm_common import data_config, loop_keys, precision_keys


def get_config(variant: str = ""):
    """The CPU experiment; variant 'tiny' (`--config=configs/toy_scene.py:tiny`) is a
    16x16 model that trains in seconds, for tests and the notebook's smoke run."""
    return variants.apply(_base_config(), variant, {"tiny": _shrink})


def cpu_encoder() -> ml_collections.ConfigDict:
    """The CPU-sized pose encoder (C = 16, 5 levels, no attention) of this and the CPU
    variants of the paper configs."""
    return ml_collections.ConfigDict(dict(
        ch=16, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(),
        dropout=0.0, num_groups=8))


def cpu_nerf() -> ml_collections.ConfigDict:
    """The CPU-sized field: 3 x 64, 4 frequency bands, no view dependence."""
    return ml_collections.ConfigDict(dict(
        depth=3, width=64, skips=(), pos_max_deg=4, view_max_deg=2, use_viewdirs=False,
        density_activation="softplus", density_bias=-1.0))


def _shrink(c) -> None:
    c.name = "toy_scene_tiny"
    c.data.image_size, c.data.num_train, c.data.num_val = 16, 8, 4
    c.model.encoder = ml_collections.ConfigDict(dict(
        ch=8, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
        num_groups=4))
    c.model.nerf = cpu_nerf()
    c.model.nerf.depth, c.model.nerf.width = 2, 32
    c.model.num_samples, c.model.num_loss_pixels, c.model.num_candidates = 16, 64, 4
    c.train.num_steps, c.train.batch_size = 20, 4
    c.train.learning_rate, c.train.encoder_learning_rate = 5e-3, 1e-3
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 10, 20, 20
    c.eval.num_examples, c.eval.batch_size, c.eval.chunk = 4, 4, 256
    c.eval.num_samples, c.eval.render_frames = 2, 4
    c.eval.landscape_views, c.eval.landscape_grid, c.eval.landscape_size = 2, (12, 4), 8


def _base_config():
    return lifting_config("toy_scene", toy_scene_data())


def scene_data(dataset: str, data_dir: str, image_size, eval_split: str,
               **options) -> ml_collections.ConfigDict:
    """The data section of a lifting config: `data_config` (no flips: cameras would not
    match), the split evaluated and the scene dataset's own keys `options` (their
    defaults are in its `fdm.data.scenes.SCENES` entry)."""
    d = data_config(dataset, data_dir, image_size)
    d.eval_split = eval_split
    d.update(options)
    return d


def toy_scene_data(image_size: int = 32, num_train: int = 100,
                   num_val: int = 20) -> ml_collections.ConfigDict:
    """The procedural scene's data section, with its view counts (file-backed scenes,
    `scene_data`, have no such keys)."""
    return scene_data("toy_scene", "", image_size, "val", num_train=num_train,
                      num_val=num_val)


def lifting_defaults() -> ml_collections.ConfigDict:
    """`LiftingFamily.config_defaults`: every key the family reads, with no scene's own
    data keys, so that filling an old workdir's config adds none it did not have."""
    return lifting_config("toy_scene", scene_data("toy_scene", "", 32, "val"))


def lifting_config(name: str, data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Every key of a NeRF lifting experiment (`fdm.models.lifting`) with its default (the
    CPU sizes of this config), on the data section `data` (`scene_data`)."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.data = data

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
    c.model.num_samples = 16
    c.model.num_importance = 0
    c.model.separate_fine = False            # True: NeRF's separate fine network (needs
                                             # num_importance > 0)
    c.model.num_loss_pixels = 64             # random pixels per image in the loss (0 = all)
    c.model.precrop_steps = 0                # NeRF's precrop: the first n updates draw loss
    c.model.precrop_frac = 0.5               # pixels from the centre crop of this side fraction
    c.model.lindisp = False
    c.model.ndc = False
    # Registration aids (issue 15), all off by default = the paper's settings:
    c.model.select_stride = 0                # s > 0: Eq. 3.4's arg-min on the stride-s pixel
                                             # grid (all pixels of an s-x downsampled view)
    c.model.coarse_to_fine = (0, 0)          # BARF (start, end) steps of alpha 0 -> L; (0, 0) off
    c.model.train_t_max = 0                  # t ~ floor(t_max u^power) in training; 0: t_max = T
    c.model.train_t_power = 1.0              # 1: uniform t (paper); > 1 favours small t
    c.model.view_warmup_steps = 0            # n > 0: the first n updates fit the NeRF from a
                                             # per-view camera table that the encoder
                                             # regresses (axis_angle head; 0 off)
    c.model.view_gauge = "free"              # 'mean': the table's mean row subtracted (its
                                             # average camera pinned at the identity)
    # DietNeRF (seed 004 ch. 4, `fdm.models.lifting_semantic`; supervised only), off at 0:
    c.model.semantic_weight = 0.0            # lambda of L_SC = -lambda cos(phi(I), phi(I_hat))
    c.model.semantic_every = 10              # K: L_SC at every K-th update
    c.model.semantic_size = 16               # n: L_SC renders an n x n strided jittered grid
    c.model.semantic_encoder_kind = "clip"   # clip | procedural (fdm.nn.scene_encoder)
    c.model.semantic_encoder = ""            # local weights: CLIP (.npz of fdm.nn.convert_clip,
                                             # OpenAI .pt or HF .safetensors), or procedural
                                             # (.npz of experiments.train_scene_encoder)
    c.model.semantic_feature = "projected"   # projected (paper's phi) | final_cls (its code's)
    c.model.semantic_elevation_deg = (0.0, 90.0)  # unobserved poses: elevation ~ U[lo, hi],
    c.model.semantic_radius = (3.5, 4.5)     # radius ~ U[lo, hi], azimuth ~ U[-180, 180)
    c.model.mse_finetune_steps = 0           # the last n updates without L_SC
    # model.dtype "float32" | "bfloat16" (the field's and encoder trunk's layers; rendering
    # and the loss stay float32) and model.remat "none" | "chunk" (the field recomputed in
    # the backward pass model.remat_chunk rays at a time): `fdm.models.lifting` module doc.
    precision_keys(c.model)
    c.model.remat_chunk = 1024               # rays per rematerialised field chunk
    c.model.encoder = cpu_encoder()
    # A small NeRF on purpose: with 4 layers + skip, 32 samples and 128 pixels per
    # image, one candidate won every selection within 50 steps and training never
    # left that collapse (selected_max_frac = 1, rotation error ~170 deg); with this
    # slower-fitting field the selections stay spread over the candidates.
    c.model.nerf = cpu_nerf()

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.num_timesteps = 100
    c.diffusion.beta_schedule = "linear"
    c.diffusion.beta_start = 1e-3
    c.diffusion.beta_end = 0.2
    c.diffusion.prediction = "x0"

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 20000
    c.train.batch_size = 8
    c.train.learning_rate = 5e-4             # NeRF
    c.train.encoder_learning_rate = 1e-4     # pose encoder
    c.train.view_learning_rate = 1e-3        # per-view camera table (model.view_warmup_steps)
    c.train.lr_final_factor = 0.1            # exponential decay to 0.1x at num_steps
    c.train.grad_clip = 0.0
    loop_keys(c.train, ema_decay=0.99, log_every=250, checkpoint_every=2500,
              keep_checkpoints=2, image_every=2500)

    c.eval = ml_collections.ConfigDict()
    c.eval.at_end = False                    # after training: evaluate and sample (fdm.run)
    c.eval.num_examples = 20
    c.eval.batch_size = 10
    c.eval.pose_t = 1                        # light noise before predicting a camera
    c.eval.num_train_views = 100             # training views of the pose_train_* metrics
                                             # (each renders every candidate on a pixel grid)
    c.eval.chunk = 1024                      # rays per rendering chunk
    c.eval.num_samples = 4                   # --mode=sample
    c.eval.render_frames = 24                # --mode=render
    c.eval.render_elevation_deg = 30.0
    # --mode=landscape (`fdm.models.lifting_landscape`): loss of a view over a grid of cameras
    c.eval.landscape_views = 4               # the first views of data.eval_split
    c.eval.landscape_grid = (24, 9)          # (azimuths, elevations) of the 360-degree grid
    c.eval.landscape_elevation_deg = (5.0, 85.0)  # its elevation range (world up model.world_up)
    c.eval.landscape_offset_max_deg = 15.0   # forward-facing: yaw / pitch turns up to +-this,
    c.eval.landscape_offset_step_deg = 2.5   # in these steps, about the true camera's centre
    c.eval.landscape_size = 32               # loss on a pixel grid ~this many px on the short side
    c.eval.metric_weights = ""               # .npz of docs/METRICS.md: adds LPIPS when set
    c.eval.lpips_net = "alex"                # alex | vgg
    # pose-free: eval views' cameras refined on the frozen NeRF (fdm.nerf.pose_refine),
    # pose_refined_* and psnr_refined; Adam steps (0 = off) and its starting rate
    c.eval.refine_steps = 0
    c.eval.refine_learning_rate = 2e-3       # radians (and scene units) per step at first
    return c
