"""Gaussian conditioning and the 2-Wasserstein distance between Gaussians (numpy, float64).

Notation: a Gaussian N(m, C), m [n], C [n, n] symmetric PSD. A linear observation
o = M w + e with M [k, n], e ~ N(0, s2 I_k) of w ~ N(mu, P) has the posterior

    w | o ~ N(mu + K (o - M mu), P - K M P),   K = P M^T (M P M^T + s2 I)^-1

(s2 = 0, P = I: N(M^+ o, I - M^+ M), rank n - k; its trace is n - k).
The Gaussian W2 (Dowson & Landau 1982; Givens & Shortt 1984):

    W2^2(N(m1, C1), N(m2, C2)) = |m1 - m2|^2 + tr C1 + tr C2
                                 - 2 tr (C2^{1/2} C1 C2^{1/2})^{1/2}

with square roots of PSD matrices by symmetric eigendecomposition (eigenvalues
clipped at 0), so singular covariances (a degenerate posterior, the zero covariance
of a deterministic model's samples) are exact. Empirical moments of samples x [N, n]
use the unbiased covariance (N - 1).
"""
from __future__ import annotations

import numpy as np

from fdm.errors import UserError


def condition(matrix: np.ndarray, obs: np.ndarray, prior_mean: np.ndarray | None = None,
              prior_cov: np.ndarray | None = None,
              noise_var: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Posterior (mean [n], cov [n, n]) of w ~ N(prior_mean, prior_cov) (default N(0, I))
    given o [k] = M w + N(0, noise_var I) with M = `matrix` [k, n] (module doc)."""
    m = np.asarray(matrix, np.float64)
    k, n = m.shape
    mu = np.zeros(n) if prior_mean is None else np.asarray(prior_mean, np.float64)
    p = np.eye(n) if prior_cov is None else np.asarray(prior_cov, np.float64)
    s = m @ p @ m.T + noise_var * np.eye(k)
    if np.linalg.matrix_rank(s) < k:
        raise UserError(f"the observation covariance is singular (observation matrix rank "
                        f"{np.linalg.matrix_rank(m)} < {k} rows, noise_var={noise_var}); "
                        "observe independent rows or pass noise_var > 0")
    gain = np.linalg.solve(s, m @ p).T
    mean = mu + gain @ (np.asarray(obs, np.float64) - m @ mu)
    cov = p - gain @ m @ p
    return mean, (cov + cov.T) / 2.0


def sqrtm_psd(cov: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root [n, n] of a symmetric PSD matrix [n, n] (float64)."""
    cov = np.asarray(cov, np.float64)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def gaussian_w2(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray,
                cov2: np.ndarray) -> float:
    """W2(N(mean1, cov1), N(mean2, cov2)) (module doc); means [n], covariances [n, n]."""
    root2 = sqrtm_psd(cov2)
    cross = sqrtm_psd(root2 @ np.asarray(cov1, np.float64) @ root2)
    delta = np.asarray(mean1, np.float64) - np.asarray(mean2, np.float64)
    squared = delta @ delta + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(cross)
    return float(np.sqrt(max(squared, 0.0)))


def moments(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [n], unbiased covariance [n, n]) of samples [N, n] (N >= 2), in float64."""
    x = np.asarray(samples, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise UserError(f"moments need samples [N >= 2, n]; got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))
