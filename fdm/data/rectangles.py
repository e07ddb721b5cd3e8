"""rectangles8: filled axis-aligned rectangles in binary images, a dataset with a known answer.

The distribution is uniform over every filled rectangle [r0, r1] x [c0, c1] (0 <= r0 <=
r1 < S, likewise c) of an S x S binary image: N = (S(S+1)/2)² images (1296 at S = 8),
pixels 255 inside, 0 outside, one channel. Both splits are the whole support, each
rectangle once, so an average NLL over the eval split is an exact cross-entropy against
the true distribution: NLL = H + KL >= H with no sampling error. The distribution is
invariant under the 8 symmetries of the square.

Known answers (`entropies`, by enumeration): H = log2 N (10.3399 bits at S = 8); any half
(top, left, bottom: S/2 rows or columns) H(half) = 6.6910 bits, the NLL of a hidden half
under an order that generates it first (adversarial); H(half | rest) = H - H(other
half) = 3.6488 bits, under an order that generates it last (max-context; seed 004
Table 2.3's ordering).
"""
from __future__ import annotations

import functools

import numpy as np

from fdm.errors import UserError


@functools.lru_cache(maxsize=4)
def rectangles(size: int) -> np.ndarray:
    """Every filled rectangle: uint8 [N, S, S, 1] in {0, 255}, N = (S(S+1)/2)²."""
    spans = [(a, b) for a in range(size) for b in range(a, size)]
    index = np.arange(size)
    rows = np.stack([(index >= a) & (index <= b) for a, b in spans])      # [S(S+1)/2, S]
    images = rows[:, None, :, None] & rows[None, :, None, :]              # rows x cols
    images = (images.reshape(-1, size, size, 1) * 255).astype(np.uint8)
    images.setflags(write=False)
    return images


def _entropy_bits(patterns: np.ndarray) -> float:
    """Entropy (bits) of the uniform mixture of the rows of `patterns` [N, ...]."""
    _, counts = np.unique(patterns.reshape(len(patterns), -1), axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def half_patterns(images: np.ndarray, half: str) -> np.ndarray:
    """The pixels of one half ('top', 'left', 'bottom', 'right') of images [N, S, S, 1]."""
    s = images.shape[1] // 2
    views = {"top": images[:, :s], "bottom": images[:, -s:], "left": images[:, :, :s],
             "right": images[:, :, -s:]}
    return views[half]


def entropies(size: int) -> dict[str, float]:
    """{'entropy_bits': H, 'entropy_half_bits': H(half), 'entropy_half_given_rest_bits':
    H(half | rest)} of the S x S rectangles, for the top half (every half has the same
    values by symmetry; the tests check it)."""
    images = rectangles(size)
    total = _entropy_bits(images)
    half = _entropy_bits(half_patterns(images, "top"))
    rest = _entropy_bits(half_patterns(images, "bottom"))
    return {"entropy_bits": total, "entropy_half_bits": half,
            "entropy_half_given_rest_bits": total - rest}


def load(root, image_size: int, split: str) -> dict[str, np.ndarray]:
    """Either split: every rectangle of image_size x image_size, {'image': uint8 [N, S, S, 1]}."""
    if not isinstance(image_size, int) or image_size < 2 or image_size % 2:
        raise UserError(f"data.image_size={image_size!r} is invalid for rectangles; use an "
                        "even integer >= 2 (8 is rectangles8)")
    return {"image": rectangles(image_size)}
