"""How far an augmentation moves a representation, relative to how far apart images are.

Seed 002's argument for DiffSiam over SimSiam (brief `shared/design/seed002.md` sec. 4,
check 2): a self-supervised code learns to ignore what the augmentations change, so a
SimSiam encoder trained with colour jitter should lose colour. This measures that
directly, beside the probes that measure what is left.

Notation: z [N, d] the codes of N images, z_aug [N, d] the codes of one augmented view of
each (row i of both from image i).

    invariance(z, z_aug) = 1 - mean_i ||z_aug_i - z_i||^2 / mean_{i != j} ||z_i - z_j||^2

1: the augmentation does not move z; 0: it moves z as far, on average, as replacing the
image by another one; below 0: further. The denominator is computed in closed form,
mean_{i != j} ||z_i - z_j||^2 = 2 N / (N - 1) tr Cov(z) with the biased (1/N) covariance.
The ratio does not change when z is scaled or shifted as a whole.
"""
from __future__ import annotations

import numpy as np


def mean_pair_distance(z: np.ndarray) -> float:
    """mean_{i != j} ||z_i - z_j||^2 of z [N, d] (N >= 2), in float64: 2 N / (N - 1) times
    the summed per-dimension (biased) variance."""
    z = np.asarray(z, np.float64)
    n = len(z)
    if n < 2:
        raise ValueError(f"mean_pair_distance needs at least two codes; got {n}")
    return float(2.0 * n / (n - 1) * np.sum(np.var(z, axis=0)))


def relative_invariance(z: np.ndarray, z_aug: np.ndarray) -> float:
    """invariance(z, z_aug) of the module docstring: z, z_aug [N, d] -> a float <= 1
    (nan when every code is the same, so no scale exists)."""
    z, z_aug = np.asarray(z, np.float64), np.asarray(z_aug, np.float64)
    if z.shape != z_aug.shape or z.ndim != 2:
        raise ValueError(f"z and z_aug must both be [N, d]; got {z.shape} and {z_aug.shape}")
    spread = mean_pair_distance(z)
    moved = float(np.mean(np.sum(np.square(z_aug - z), axis=1)))
    return 1.0 - moved / spread if spread > 0 else float("nan")
