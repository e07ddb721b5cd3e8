"""Procedural observation tuples of the forward-model experiments (seed 003 brief §4), no files.

Each split is a fixed pool of N examples drawn from `default_rng([data.seed, split])`
(train 0, eval 1), in the layout of `fdm.forward.base` (float32 observations, int32
forward-model parameters):
  'signal'                 S [N, *signal_shape], kept for checks and evaluation only:
                           no loss reads it (the model sees S only through observations)
  'ctxt', 'ctxt_phi'       the context observation and its phi
  'trgt', 'trgt_phi'       the target (diffused in training)
  'novel', 'novel_phi'     the novel view of Eq. 9

"linear_gaussian" (`fdm.forward.linear_gaussian`, T1): w ~ N(0, I_8), G(w) = A w on an
8 x 8 image (data.image_size must be 8); context and novel view are
data.patch_size^2-pixel patches at independent uniform offsets, the target is the full
image (phi = all 64 rows). Options: num_train, num_eval, patch_size, seed.

"glyph_mosaic" (`fdm.forward.glyph_mosaic`, T2): S one of the 16 equally likely 16 x 16 x 1
glyph mosaics (a, b ~ U{0..3}), every view an 8 x 8 crop (data.image_size must be 16).
Train: three windows of one S (the brief's T2): with probability data.aligned_fraction
an example's context, target and novel view are independent uniform cells (offsets in
{0, 8}^2), else independent uniform offsets in {0..8}^2 (aligned_fraction = 0: the
brief's "all phi uniform"). Eval: the test protocol, context the TL cell, target the TR
cell, novel view the BL cell (the cell the coupling BL = TR concerns), a = i mod 4 for
example i (so the first 4 contexts show every a), b uniform. Options: num_train,
num_eval, aligned_fraction, seed.

"motion" (`fdm.forward.motion`, T3): S = (S_c, S_m) [N, 16, 16, 5], S_c a random 16 x 16
x 3 texture, S_m the uniform field of one of the flows (2, 0), (-2, 0), (0, 2), (0, -2)
((x, y) pixels) drawn independently of the texture (data.image_size must be 16); every
view a whole frame [N, 16, 16, 3] with phi float32 [N]: the context S_c (phi 0), the
target S_c moved by the flow (phi 1), the novel view moved by half of it (phi 0.5), exact
integer shifts with 0 on the uncovered strip. Train: flow uniform; eval: flow i mod 4
for example i (every flow equally often). Options: num_train, num_eval, seed.
"""
from __future__ import annotations

import numpy as np

from fdm.errors import UserError
from fdm.forward import glyph_mosaic as gm
from fdm.forward import linear_gaussian as lg
from fdm.forward import motion as mo

SPLIT_STREAMS = {"train": 0, "eval": 1}


def _num_examples(split: str, num_train: int, num_eval: int) -> int:
    num = num_train if split == "train" else num_eval
    if num <= 0:
        raise UserError(f"data.num_{split}={num}; it must be positive")
    return int(num)


def _check_image_size(dataset: str, image_size, side: int) -> None:
    """UserError unless data.image_size is the side of the dataset's images."""
    if image_size != side:
        raise UserError(f"data.image_size={image_size!r} is invalid for {dataset}; its "
                        f"images are {side}x{side}, set --config.data.image_size={side}")


def linear_gaussian(root, image_size, split: str, num_train: int, num_eval: int,
                    patch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The split's linear-Gaussian tuples (module doc): signal [N, 8], ctxt / novel [N, p^2]
    with rows [N, p^2], trgt [N, 64] with rows [N, 64]."""
    _check_image_size("linear_gaussian", image_size, lg.SIDE)
    if not 1 <= patch_size <= lg.SIDE:
        raise UserError(f"data.patch_size={patch_size!r} is invalid; use an integer in "
                        f"[1, {lg.SIDE}]")
    num = _num_examples(split, num_train, num_eval)
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
    signal = rng.standard_normal((num, lg.LATENTS))
    full = (signal @ lg.generator_matrix().T).astype(np.float32)
    ctxt_rows = lg.random_patch_rows(rng, num, patch_size)
    novel_rows = lg.random_patch_rows(rng, num, patch_size)
    trgt_rows = np.tile(np.arange(lg.SIDE * lg.SIDE, dtype=np.int32), (num, 1))
    return {"signal": signal.astype(np.float32),
            "ctxt": np.take_along_axis(full, ctxt_rows, axis=1), "ctxt_phi": ctxt_rows,
            "trgt": full, "trgt_phi": trgt_rows,
            "novel": np.take_along_axis(full, novel_rows, axis=1), "novel_phi": novel_rows}


def glyph_mosaic(root, image_size, split: str, num_train: int, num_eval: int,
                 aligned_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """The split's glyph-mosaic tuples (module doc): signal [N, 16, 16, 1], every view
    [N, 8, 8, 1] with its offset phi [N, 2]."""
    _check_image_size("glyph_mosaic", image_size, gm.SIDE)
    if not 0.0 <= aligned_fraction <= 1.0:
        raise UserError(f"data.aligned_fraction={aligned_fraction!r} is invalid; use a "
                        "number in [0, 1]")
    num = _num_examples(split, num_train, num_eval)
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
    if split == "train":
        a = rng.integers(0, gm.NUM_GLYPHS, num)
        aligned = rng.random(num) < aligned_fraction
        phis = [gm.random_offsets(rng, aligned) for _ in range(3)]
    else:
        a = np.arange(num) % gm.NUM_GLYPHS
        phis = [np.tile(np.asarray(phi, np.int32), (num, 1))
                for phi in (gm.TEST_CTXT_PHI, gm.TEST_TRGT_PHI, gm.TEST_NOVEL_PHI)]
    signal = gm.mosaic(gm.signal_glyphs(a, rng.integers(0, gm.NUM_GLYPHS, num)))
    out = {"signal": signal}
    for view, phi in zip(("ctxt", "trgt", "novel"), phis):
        out[view], out[f"{view}_phi"] = gm.crop(signal, phi), phi
    return out


def motion(root, image_size, split: str, num_train: int, num_eval: int,
           seed: int) -> dict[str, np.ndarray]:
    """The split's motion tuples (module doc): signal [N, 16, 16, 5], every view
    [N, 16, 16, 3] with phi float32 [N]."""
    _check_image_size("motion", image_size, mo.SIDE)
    num = _num_examples(split, num_train, num_eval)
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
    texture = mo.textures(rng, num)
    if split == "train":
        flow = rng.integers(0, mo.NUM_FLOWS, num)
    else:
        flow = np.arange(num) % mo.NUM_FLOWS
    out = {"signal": np.concatenate([texture, mo.flow_fields(flow)], axis=-1)}
    for view, phi in (("ctxt", mo.PHI_CTXT), ("trgt", mo.PHI_TRGT), ("novel", mo.PHI_NOVEL)):
        out[view] = mo.observe(texture, flow, phi)
        out[f"{view}_phi"] = np.full(num, phi, np.float32)
    return out
