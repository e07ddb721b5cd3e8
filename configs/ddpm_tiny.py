"""Tiny DDPM on the procedural shapes data: the CPU smoke/baseline config.

  python -m experiments.main --config=configs/ddpm_tiny.py --workdir=/tmp/ddpm_tiny
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.name = "ddpm_tiny"

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "shapes"
    c.data.image_size = 32
    c.data.data_dir = ""
    c.data.num_regions = 3          # procedural: background + up to 2 objects
    c.data.num_train = 4096         # procedural images per epoch (infinite stream, fixed pool)
    c.data.num_eval = 256
    c.data.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.family = "ddpm"
    c.model.ch = 32
    c.model.ch_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.model.dropout = 0.0
    c.model.num_classes = 0
    c.model.num_groups = 8

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.num_timesteps = 1000
    c.diffusion.beta_schedule = "linear"
    c.diffusion.beta_start = 1e-4
    c.diffusion.beta_end = 0.02
    c.diffusion.prediction = "eps"           # eps | x0
    c.diffusion.loss = "simple"              # simple | weighted
    c.diffusion.variance = "fixed_small"     # fixed_small (beta_tilde) | fixed_large (beta)
    c.diffusion.clip_x0 = True

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 2000
    c.train.batch_size = 32
    c.train.learning_rate = 2e-4
    c.train.grad_clip = 1.0
    c.train.ema_decay = 0.999
    c.train.seed = 0
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    c.train.image_every = 1000

    c.eval = ml_collections.ConfigDict()
    c.eval.num_examples = 64
    c.eval.sampler = "ddim"                  # ancestral | ddim
    c.eval.sample_steps = 50
    c.eval.ddim_eta = 0.0
    c.eval.batch_size = 64
    c.eval.metric_weights = ""               # .npz of docs/METRICS.md: adds fid / kid / kid_std
    c.eval.num_fid_samples = 256             # generated images scored against the eval images
    return c
