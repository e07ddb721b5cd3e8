"""The glyph mosaic seen through crops with diffusion through a forward model (seed 003
brief T2): a multimodal posterior known by enumeration, and the test of Eq. 9.
Procedural data, no files.

  python -m experiments.main --config=configs/forward_glyph_mosaic.py --workdir=/tmp/gm
  python -m experiments.main --config=configs/forward_glyph_mosaic.py:deterministic \
      --workdir=/tmp/gm_det
  python -m experiments.main --config=configs/forward_glyph_mosaic.py:no_novel \
      --workdir=/tmp/gm_no_novel

S is one of 16 glyph mosaics (`fdm.forward.glyph_mosaic`): four 8 x 8 cells of +-1 glyphs
(horizontal bar, vertical bar, diagonal, ring), a, b ~ U{0..3}, TL = a, BR = (a + 2) mod 4,
TR = BL = b. forward(S, phi) = the 8 x 8 crop at phi in {0..8}^2. Training tuples
(`fdm.data.inverse_toys.glyph_mosaic`) are three crops of one S; in half of them
(data.aligned_fraction = 0.5) the three crops are cells, in the others their offsets
are uniform (the brief's "all phi uniform" is data.aligned_fraction = 0). Why: with
uniform offsets almost every context shows part of TR or BL, so a context that leaves b
open, the multimodal case the test measures, is ~3 % of the tuples; the MLP trained so
sampled TR far from uniform (tr_tv 0.23 at 4000 steps, 0.22 at 8000, the vertical bar
at a third of its share); with half the tuples cell-aligned tr_tv was 0.058 at 2000.
Loss Eq. 8 + Eq. 9 (1 : 1); x0, cosine T = 1000, O_hat clipped to [-1, 1] (the brief's
plain clipping in the toys).

Denoiser: an MLP (4 x 512) on [context canvas, mask, O^trgt_t canvas, mask] (16 x 16 x 4,
flattened) and sinusoidal t -> S; batch 128, 8000 steps at 1e-3 decayed to 5e-5. The
brief's U-Net (ch 32, ch_mult (1, 2), 2 res blocks, batch 64) costs 0.76 s of one CPU
core per step (51 min for its 4000 steps), the MLP ~0.025 s (about 4 min of one core for
the 8000 steps and the evaluation). Variant 'unet' is a smaller U-Net (ch 16, 1 res
block, batch 64, 4000 steps: ~0.28 s per step, about 20 min of one core in all).

Evaluation (eval.at_end): context = the TL cell, target = the TR cell, 256 DDIM-50 samples
for each a (the first 4 eval contexts), every cell classified to its nearest glyph:
observed_accuracy (TL = a), coupled_accuracy (BR = (a + 2) mod 4), consistency (BL = TR),
tr_tv (TV of TR's distribution to uniform; tr_tv_floor what exact samples score),
posterior_tv, valid_rmse, rmse_{tl,tr,bl,br}. Success (brief): >= 0.99, >= 0.95,
>= 0.90, <= 0.10, valid_rmse <= 0.1. samples/grid.png: per a, the context canvas, the
true signal and 8 samples.

Variants: 'deterministic' the same network from the context alone (the posterior mean:
TR and BL the mean glyph, tr_tv = 0.75); 'no_novel' Eq. 8 only (train.novel_weight = 0;
the brief predicts BL = TR only by chance, ~0.25, since the cells outside the target
window are fitted by Eq. 9 alone); 'unet' the U-Net denoiser; 'smoke' a few steps of a
tiny model (tests).
"""
from configs import variants
from configs.fdm_common import data_config, dfm_config, dfm_smoke


def get_config(variant: str = ""):
    """The diffusion model with Eq. 8 + Eq. 9; variants in the module doc."""
    return variants.apply(_glyph_mosaic(), variant, {"deterministic": _deterministic,
                                                     "no_novel": _no_novel,
                                                     "unet": _unet,
                                                     "smoke": _smoke})


def _glyph_mosaic():
    data = data_config("glyph_mosaic", "", 16)
    data.num_train, data.num_eval, data.aligned_fraction = 65536, 256, 0.5
    c = dfm_config("forward_glyph_mosaic", data)
    c.model.forward = "glyph_mosaic"
    c.model.mlp.width, c.model.mlp.depth = 512, 4
    c.train.num_steps, c.train.batch_size, c.train.lr_final_factor = 8000, 128, 0.05
    c.eval.batch_size, c.eval.num_contexts, c.eval.samples_per_context = 64, 4, 256
    c.eval.num_examples = 4
    return c


def _deterministic(c) -> None:
    c.name = "forward_glyph_mosaic_deterministic"
    c.model.deterministic = True


def _no_novel(c) -> None:
    c.name = "forward_glyph_mosaic_no_novel"
    c.train.novel_weight = 0.0


def _unet(c) -> None:
    c.name = "forward_glyph_mosaic_unet"
    c.model.network = "unet"
    c.model.unet.ch, c.model.unet.num_res_blocks = 16, 1
    c.train.num_steps, c.train.batch_size = 4000, 64


def _smoke(c) -> None:
    c.name = "forward_glyph_mosaic_smoke"
    dfm_smoke(c, num_eval=8)
    c.eval.batch_size = 8
