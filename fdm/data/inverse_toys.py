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
"""
from __future__ import annotations

import numpy as np

from fdm.errors import UserError
from fdm.forward import linear_gaussian as lg

SPLIT_STREAMS = {"train": 0, "eval": 1}


def _num_examples(split: str, num_train: int, num_eval: int) -> int:
    num = num_train if split == "train" else num_eval
    if num <= 0:
        raise UserError(f"data.num_{split}={num}; it must be positive")
    return int(num)


def linear_gaussian(root, image_size, split: str, num_train: int, num_eval: int,
                    patch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The split's linear-Gaussian tuples (module doc): signal [N, 8], ctxt / novel [N, p^2]
    with rows [N, p^2], trgt [N, 64] with rows [N, 64]."""
    if image_size != lg.SIDE:
        raise UserError(f"data.image_size={image_size!r} is invalid for linear_gaussian; its "
                        f"images are {lg.SIDE}x{lg.SIDE}, set --config.data.image_size={lg.SIDE}")
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
