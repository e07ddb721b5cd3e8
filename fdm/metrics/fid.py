"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID), float64.

Notation
  X    [N1, D], Y [N2, D]   features of two image sets (D = 2048 Inception pool3)
  μ, Σ [D], [D, D]          mean and unbiased covariance (ddof = 1) of a feature set

FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge
to a local Nash equilibrium") is the Fréchet / 2-Wasserstein distance between the
Gaussians N(μ1, Σ1), N(μ2, Σ2) (Dowson & Landau 1982):
  d² = ||μ1 - μ2||² + tr Σ1 + tr Σ2 - 2 tr (Σ1^½ Σ2 Σ1^½)^½.
The trace term (= tr (Σ1 Σ2)^½) is computed from two symmetric eigendecompositions
with round-off negative eigenvalues clipped to 0, so it stays real and stable for
singular covariances (N < D), where `scipy.linalg.sqrtm(Σ1 Σ2)` of the
non-symmetric product can return complex parts. For feature sets with
N1, N2 <= D (small evaluation sets: the covariances are singular) it is computed
exactly, and faster, from the centred features X̃ = X - μ1, Ỹ = Y - μ2: the nonzero
eigenvalues of Σ1 Σ2 are the squared singular values of X̃ Ỹᵀ / √((N1-1)(N2-1)), so
  tr (Σ1 Σ2)^½ = ||X̃ Ỹᵀ||_* / √((N1-1)(N2-1))   (nuclear norm of an N1 x N2 matrix).

KID (Bińkowski et al. 2018, "Demystifying MMD GANs") is the unbiased MMD² with
the cubic polynomial kernel k(x, y) = (x·y / D + 1)³,
  MMD²_u = Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m-1)) - 2 Σ_{i,j} k(x_i, y_j) / m²,
averaged over `num_subsets` pairs of random subsets (without replacement) of
m = min(subset_size, N1, N2) rows of X and of Y, as clean-fid (Parmar et al. 2022).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import scipy.linalg

from fdm.metrics.inception import Images, InceptionFeatureExtractor


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] (N >= 2) -> (μ float64 [D], Σ float64 [D, D], ddof = 1)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix [D, D] (eigenvalues clipped at 0)."""
    w, v = scipy.linalg.eigh((a + a.T) / 2, driver="evr")  # MRRR: fast for D = 2048
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (Σ1^½ Σ2 Σ1^½)^½ = tr (Σ1 Σ2)^½ for PSD Σ1, Σ2 [D, D], float64."""
    s1 = _sqrt_psd(np.asarray(sigma1, np.float64))
    inner = s1 @ np.asarray(sigma2, np.float64) @ s1
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """d² between N(μ1, Σ1) and N(μ2, Σ2): μ [D], Σ [D, D].  The FID for Inception stats."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"statistics shapes disagree: {mu1.shape}, {sigma1.shape}, "
                         f"{mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                 - 2.0 * trace_sqrt_product(sigma1, sigma2))


def _fid_few_samples(x: np.ndarray, y: np.ndarray) -> float:
    """d² from the features x [N1, D], y [N2, D] via the N1 x N2 cross-Gram matrix."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    c1, c2 = len(x) - 1, len(y) - 1
    trace_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(diff @ diff + np.sum(xc * xc) / c1 + np.sum(yc * yc) / c2 - 2.0 * trace_sqrt)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID of two feature sets [N1, D], [N2, D] (N >= 2); exact cross-Gram path if N1, N2 <= D."""
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x.ndim != 2 or y.shape[1:] != x.shape[1:] or min(len(x), len(y)) < 2:
        raise ValueError(f"need features [N >= 2, D] of equal D, got {x.shape} and {y.shape}")
    if max(len(x), len(y)) <= x.shape[1]:
        return _fid_few_samples(x, y)
    return frechet_distance(*feature_statistics(x), *feature_statistics(y))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x_i, y_j) = (x_i·y_j / D + 1)³ for x [M, D], y [K, D] -> [M, K]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² (polynomial kernel) of two equal-size samples x, y [m, D], m >= 2."""
    m = len(x)
    kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * polynomial_kernel(x, y).mean())


def kid_subset_values(features1: np.ndarray, features2: np.ndarray, num_subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> np.ndarray:
    """Unbiased MMD² of each of `num_subsets` random subset pairs of features [N1, D],
    [N2, D] -> float64 [num_subsets]; their mean is the KID, their std its spread.

    Subsets are drawn with `np.random.default_rng(seed)`: the values are deterministic.
    """
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"need features [N >= 2, D] of equal D, got {x.shape} and {y.shape}")
    rng = np.random.default_rng(seed)
    return np.array([mmd2_unbiased(x[rng.choice(len(x), m, replace=False)],
                                   y[rng.choice(len(y), m, replace=False)])
                     for _ in range(num_subsets)])


def kid(features1: np.ndarray, features2: np.ndarray, num_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> float:
    """KID: mean unbiased MMD² over random subset pairs of features [N1, D], [N2, D]."""
    return float(kid_subset_values(features1, features2, num_subsets, subset_size, seed).mean())


def compute_fid(images_a: Images, images_b: Images, variables: Mapping,
                batch_size: int = 50) -> float:
    """FID between two image sets ([N,H,W,3] in [-1,1], or streams of such batches).

    variables: `fdm.metrics.weights.load_metric_variables(path, "inception")`. Images
    are quantised to 8 bits and resized to 299x299 in batches of `batch_size`.
    """
    extract = InceptionFeatureExtractor(variables, batch_size=batch_size)
    return fid_from_features(extract(images_a), extract(images_b))


def fid_kid(images_real: Images, images_fake: Images, variables: Mapping,
            batch_size: int = 50) -> dict[str, float]:
    """{'fid', 'kid', 'kid_std'} of generated vs real images ([N,H,W,3] in [-1,1], or
    streams of such batches); kid_std is the std of the 100 subset MMD² values.

    variables: `fdm.metrics.weights.load_metric_variables(path, "inception")`.
    """
    extract = InceptionFeatureExtractor(variables, batch_size=batch_size)
    real, fake = extract(images_real), extract(images_fake)
    kids = kid_subset_values(real, fake)
    return {"fid": fid_from_features(real, fake), "kid": float(kids.mean()),
            "kid_std": float(kids.std())}
