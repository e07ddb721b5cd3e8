"""`fdm.metrics.invariance` against a slow double loop over image pairs, its fixed points,
and its invariance to scaling and shifting the codes."""
from __future__ import annotations

import numpy as np
import pytest

from fdm.metrics.invariance import mean_pair_distance, relative_invariance


def slow_invariance(z: np.ndarray, z_aug: np.ndarray) -> float:
    """1 - mean_i ||z_aug_i - z_i||^2 / mean_{i != j} ||z_i - z_j||^2 by explicit loops."""
    n = len(z)
    pairs = [float(np.sum((z[i] - z[j]) ** 2)) for i in range(n) for j in range(n) if i != j]
    moved = [float(np.sum((z_aug[i] - z[i]) ** 2)) for i in range(n)]
    return 1.0 - (sum(moved) / n) / (sum(pairs) / len(pairs))


def codes(n: int = 40, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d)
    return z, z + 0.4 * rng.normal(size=(n, d))


def test_matches_the_pairwise_loop():
    z, z_aug = codes()
    assert relative_invariance(z, z_aug) == pytest.approx(slow_invariance(z, z_aug), rel=1e-12)
    pairs = [np.sum((a - b) ** 2) for i, a in enumerate(z) for j, b in enumerate(z) if i != j]
    assert mean_pair_distance(z) == pytest.approx(np.mean(pairs), rel=1e-12)


def test_fixed_points_and_a_swapped_image():
    z, z_aug = codes()
    assert relative_invariance(z, z) == 1.0
    # each view replaced by the next image's code: the moved distance is a sample of the
    # pairwise one, so the invariance is about 0 (exactly the loop's value)
    swapped = np.roll(z, 1, axis=0)
    assert relative_invariance(z, swapped) == pytest.approx(slow_invariance(z, swapped),
                                                            rel=1e-12)
    assert abs(relative_invariance(z, swapped)) < 0.5
    assert relative_invariance(z, z_aug) < 1.0


def test_scale_and_shift_of_the_codes_change_nothing():
    z, z_aug = codes(seed=3)
    shift = np.arange(z.shape[1], dtype=np.float64)
    assert relative_invariance(3.0 * z + shift, 3.0 * z_aug + shift) == pytest.approx(
        relative_invariance(z, z_aug), rel=1e-12)


def test_float32_codes_are_measured_in_float64():
    z, z_aug = codes(seed=4)
    assert relative_invariance(z.astype(np.float32), z_aug.astype(np.float32)) == pytest.approx(
        relative_invariance(z, z_aug), rel=1e-6)


def test_degenerate_input():
    z = np.ones((5, 3))
    assert np.isnan(relative_invariance(z, z))
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        relative_invariance(z, z[:4])
    with pytest.raises(ValueError, match="at least two"):
        mean_pair_distance(z[:1])
