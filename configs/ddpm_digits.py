"""DDPM likelihood on scikit-learn's 8x8 digits (seed 004 §3.4, Table 3.1: L vs L_simple
in bits/dim), sized for a 2-core CPU; no download (`fdm.data.digits`).

  python -m experiments.main --config=configs/ddpm_digits.py --workdir=/tmp/digits_simple
  python -m experiments.main --config=configs/ddpm_digits.py:vlb --workdir=/tmp/digits_vlb

Each run trains a 32-channel U-Net on the 1437 train digits (4000 steps, 0.15 CPU-s a
step: roughly 6-10 minutes on a quiet 2-core CPU, estimated) and then evaluates
(eval.at_end): results.json with bpd, bpd_prior, bpd_decoder, bpd_rate and
distortion_rmse on the 360 eval digits, DIR/rate_distortion.json, and samples with
the progressive-generation strip (DIR/samples/progressive.png).
Variants: '' L_simple, 'vlb' the bound L (same fixed variance beta~, t uniform), 'vlb_is'
L with t importance-sampled from each t's loss history (diffusion.t_sampling='loss_aware',
Improved DDPM §3.3; uniform L trained worse than L_simple here), 'learned' L with a
learned variance (learned_range), 'smoke' a few steps and a short bound (tests).
"""
from configs import variants
from configs.fdm_common import ddpm_config


def get_config(variant: str = ""):
    """L_simple on the digits; variants in the module doc."""
    return variants.apply(_digits(), variant, {"vlb": _vlb, "vlb_is": _vlb_is,
                                               "learned": _learned,
                                               "smoke": _smoke})


def _digits():
    c = ddpm_config("ddpm_digits", dataset="digits", data_dir="", image_size=8, ch=32,
                    ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_steps=4000,
                    batch_size=64)
    c.data.random_flip = False
    c.model.out_ch = 1
    c.model.num_groups = 8
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 200
    c.train.ema_decay = 0.999
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 100, 2000, 2000
    c.eval.at_end = True
    c.eval.num_examples, c.eval.batch_size = 64, 120
    c.eval.bpd_examples = 360                # the whole eval split
    c.eval.num_fid_samples = 0
    return c


def _vlb(c) -> None:
    c.name = "ddpm_digits_vlb"
    c.diffusion.loss = "vlb"


def _vlb_is(c) -> None:
    """L with t importance-sampled from its loss history (Improved DDPM's sampler)."""
    _vlb(c)
    c.name = "ddpm_digits_vlb_is"
    c.diffusion.t_sampling = "loss_aware"


def _learned(c) -> None:
    c.name = "ddpm_digits_learned"
    c.diffusion.loss = "vlb"
    c.diffusion.variance = "learned_range"


def _smoke(c) -> None:
    c.name = "ddpm_digits_smoke"
    c.model.ch, c.model.num_groups = 8, 4
    c.diffusion.num_timesteps = 50
    c.train.num_steps, c.train.batch_size, c.train.warmup_steps = 4, 8, 0
    c.train.log_every, c.train.checkpoint_every = 2, 4
    c.eval.num_examples, c.eval.batch_size, c.eval.bpd_examples = 8, 8, 12
    c.eval.sampler, c.eval.sample_steps, c.eval.record_every = "ddim", 5, 2
