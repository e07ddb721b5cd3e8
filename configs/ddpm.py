"""DDPM (Ho et al. 2020): the paper's CIFAR-10 run, and a tiny CPU variant.

  python -m experiments.main --config=configs/ddpm.py --workdir=DIR
  python -m experiments.main --config=configs/ddpm.py:tiny --workdir=/tmp/ddpm_tiny

Default: the paper's 35.7M-parameter U-Net on CIFAR-10 (TFDS `cifar10` prepared
under data.data_dir), 800K steps at 2e-4 with 5000 warm-up steps, FID of 50K
ancestral samples and the bits/dim bound of the test set (bpd, rate_distortion.json).
Variant 'tiny': the CPU smoke/baseline config, a 32-channel U-Net on the procedural
shapes data (no download), 2000 steps.
Variant 'factors': the frozen DM of the PDAE / DiffSiam CPU experiment (configs/pdae.py,
seed 002 brief sec. 4 A): a 16-channel U-Net (levels 16 and 8, one block each, attention
only in the middle) on the 16x16 procedural factors data, 3000 steps at batch 64. The
brief's 32 channels cost 0.56 s of CPU per step (one core), 28 min for the 3000 steps;
16 channels 0.21 s, about 11 min on one core.

The public checkpoint google/ddpm-cifar10-32 (a local diffusers directory) on CIFAR-10's
test set in TFDS format, bits/dim only (experiments/ddpm_likelihood.py):
  python -m experiments.ddpm_likelihood --config=configs/ddpm.py --workdir=DIR \
      --diffusers=PATH/ddpm-cifar10-32 --config.data.data_dir=TFDS_DIR
"""
from configs import variants
from configs.fdm_common import ddpm_config


def get_config(variant: str = ""):
    """The CIFAR-10 run; variants 'tiny' and 'factors' the CPU ones (module doc)."""
    return variants.apply(_cifar10(), variant, {"tiny": _tiny, "factors": _factors})


def _cifar10():
    c = ddpm_config("ddpm_cifar10", dataset="cifar10", data_dir="", image_size=32,
                    ch_mult=(1, 2, 2, 2), num_res_blocks=2, num_steps=800_000,
                    batch_size=128, dropout=0.1)
    c.data.random_flip = False
    # fixed_small (beta_tilde) | fixed_large (beta); the paper's CIFAR-10 run used beta.
    c.diffusion.variance = "fixed_large"
    c.train.learning_rate = 2e-4
    c.train.warmup_steps = 5000
    c.train.checkpoint_every = 10_000
    c.train.image_every = 50_000
    c.eval.num_examples = 50_000             # FID over 50K samples, as in the paper
    c.eval.sample_steps = 1000
    c.eval.batch_size = 256
    c.eval.num_fid_samples = 50_000          # FID of 50K samples vs the test set (Ho et al.)
    c.eval.bpd_examples = 10_000             # NLL bound on the whole test set (Table 3.1)
    c.eval.record_every = 50                 # progressive generation strip (Fig. 3.6)
    return c


def _tiny(c) -> None:
    c.name = "ddpm_tiny"
    c.data.dataset = "shapes"
    c.data.num_regions = 3          # procedural: background + up to 2 objects
    c.data.num_train = 4096         # procedural images per epoch (infinite stream, fixed pool)
    c.data.num_eval = 256
    c.model.ch, c.model.ch_mult, c.model.num_res_blocks = 32, (1, 2, 2), 1
    c.model.attn_resolutions, c.model.dropout, c.model.num_groups = (8,), 0.0, 8
    c.diffusion.variance = "fixed_small"
    c.train.num_steps, c.train.batch_size, c.train.warmup_steps = 2000, 32, 0
    c.train.ema_decay = 0.999
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 50, 500, 1000
    c.eval.num_examples, c.eval.batch_size = 64, 64
    c.eval.sampler, c.eval.sample_steps = "ddim", 50
    c.eval.num_fid_samples = 256    # generated images scored against the eval images


def _factors(c) -> None:
    c.name = "ddpm_factors"
    c.data.dataset, c.data.image_size, c.data.random_flip = "factors", 16, True
    c.data.placement = "quadrant"   # "centre": the object moves 5 px, not 2 (fdm.data.factors)
    c.model.ch, c.model.ch_mult, c.model.num_res_blocks = 16, (1, 2), 1
    c.model.attn_resolutions, c.model.dropout, c.model.num_groups = (), 0.0, 8
    c.diffusion.variance = "fixed_small"
    c.train.num_steps, c.train.batch_size, c.train.warmup_steps = 3000, 64, 0
    c.train.learning_rate, c.train.ema_decay = 2e-4, 0.995
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 100, 500, 1000
    c.eval.num_examples, c.eval.batch_size = 256, 128
    c.eval.sampler, c.eval.sample_steps, c.eval.record_every = "ddim", 50, 5
    c.eval.num_fid_samples, c.eval.bpd_examples = 0, 0
    c.eval.at_end = True
