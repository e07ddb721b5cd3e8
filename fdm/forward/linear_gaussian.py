"""Linear-Gaussian inversion: GAN inversion (seed 003 Sec. 4.3) in miniature, with an exact
posterior (brief T1).

Notation:
  w     the signal, w ~ N(0, I_n), n = LATENTS = 8.
  A     the generator [m, n], m = SIDE^2 = 64: column j is an 8 x 8 image, a seeded
        Gaussian mix of the 2-D cosines cos(pi u (y + 1/2) / 8) cos(pi v (x + 1/2) / 8),
        u, v <= MAX_FREQUENCY, scaled so that the pixels of G(w) = A w have RMS std
        PIXEL_STD (0.3). G(w) is an 8 x 8 image flattened row-major (pixel (y, x) is
        row 8 y + x).
  phi   rows of G(w) observed (`fdm.forward.linear`): the context is a p x p patch
        (p = 2: 4 pixels) at a uniform offset, the target all 64 rows.
  M     A[phi^ctxt] [k, n], k = p^2; o = M w the context (noise-free).

Exact posterior (`fdm.forward.gaussian.condition` with s2 = 0): w | o ~ N(M^+ o,
I - M^+ M), rank n - k, tr = n - k = 4. A model that outputs the posterior mean
(the deterministic baseline) has W2 = sqrt(tr Sigma) = 2 to it; prior samples
have W2 = W2(N(0, I), posterior).

Conditioning: MAX_FREQUENCY = 7 (all 64 cosines: white random images), not the
brief's smooth basis. With frequencies <= 3 adjacent pixels are so correlated that
every 2 x 2 patch matrix M is nearly rank-deficient (smallest singular value 0.023 to
0.043 in the median patch, largest ~0.5): the posterior is still exact, but a small MLP
must read w off the context with a gain of ~25 along the weak direction, and measured
W2 stayed at 1.4 (5000 and 15000 steps); with all frequencies the smallest singular
value is 0.063, 0.129 in the median patch.

Scores of samples w_hat [N, M, n] of N contexts (`score`), averaged over contexts:
  w2            Gaussian W2 of the samples' mean and covariance to the posterior
  w2_max        its largest value over the contexts
  trace_ratio   tr Cov(w_hat) / tr Sigma
  mean_error    |mean(w_hat) - M^+ o|
  context_rmse  sqrt(mean over samples and pixels of (M w_hat - o)^2)
  w2_posterior_mean, w2_prior  the two baselines' exact W2 (sqrt tr Sigma; prior)
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fdm.forward import gaussian
from fdm.forward.base import View
from fdm.forward.linear import LinearOperator

SIDE = 8
LATENTS = 8
PIXEL_STD = 0.3
MAX_FREQUENCY = 7
GENERATOR_SEED = 0


def cosine_basis(side: int = SIDE, max_frequency: int = MAX_FREQUENCY) -> np.ndarray:
    """The 2-D cosines [side^2, (max_frequency + 1)^2] (module doc), float64."""
    x = (np.arange(side) + 0.5) / side
    waves = np.stack([np.cos(np.pi * u * x) for u in range(max_frequency + 1)], axis=1)
    return np.einsum("yu,xv->yxuv", waves, waves).reshape(side * side, -1)


def generator_matrix(seed: int = GENERATOR_SEED) -> np.ndarray:
    """A [SIDE^2, LATENTS] float64: seeded smooth basis images with pixel RMS std PIXEL_STD."""
    basis = cosine_basis()
    mix = np.random.default_rng(seed).standard_normal((basis.shape[1], LATENTS))
    matrix = basis @ mix
    return matrix * PIXEL_STD / np.sqrt(np.mean(np.sum(matrix**2, axis=1)))


def operator() -> LinearOperator:
    """forward(w, phi) = (A w)[phi] with the fixed generator A (float32)."""
    return LinearOperator(jnp.asarray(generator_matrix(), jnp.float32))


def patch_rows(offsets: np.ndarray, size: int) -> np.ndarray:
    """Rows int32 [N, size^2] of the size x size patches of G(w) at offsets [N, 2] (y, x)."""
    offsets = np.asarray(offsets)
    dy, dx = np.divmod(np.arange(size * size), size)
    return ((offsets[:, :1] + dy) * SIDE + offsets[:, 1:] + dx).astype(np.int32)


def random_patch_rows(rng: np.random.Generator, num: int, size: int) -> np.ndarray:
    """Rows int32 [num, size^2] of patches at uniform offsets in [0, SIDE - size]^2."""
    return patch_rows(rng.integers(0, SIDE - size + 1, (num, 2)), size)


def posterior(matrix: np.ndarray, rows: np.ndarray,
              obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (mean [n], cov [n, n]) of w | (A w)[rows] = obs (rows [k], obs [k])."""
    return gaussian.condition(np.asarray(matrix, np.float64)[np.asarray(rows)], obs)


def score_context(samples: np.ndarray, matrix: np.ndarray, rows: np.ndarray,
                  obs: np.ndarray) -> dict[str, float]:
    """The scores (module doc) of samples [M, n] of one context (rows [k], obs [k])."""
    mean, cov = posterior(matrix, rows, obs)
    sample_mean, sample_cov = gaussian.moments(samples)
    n = mean.shape[0]
    residual = np.asarray(samples, np.float64) @ np.asarray(matrix, np.float64)[rows].T - obs
    return {"w2": gaussian.gaussian_w2(sample_mean, sample_cov, mean, cov),
            "trace_ratio": float(np.trace(sample_cov) / np.trace(cov)),
            "mean_error": float(np.linalg.norm(sample_mean - mean)),
            "context_rmse": float(np.sqrt(np.mean(residual**2))),
            "w2_posterior_mean": float(np.sqrt(np.trace(cov))),
            "w2_prior": gaussian.gaussian_w2(np.zeros(n), np.eye(n), mean, cov)}


def score(signals: np.ndarray, ctxt: View) -> dict[str, float]:
    """Scores averaged over N contexts (and w2_max) of samples [N, M, n] of the contexts
    ctxt (obs [N, k], phi rows [N, k], numpy)."""
    matrix = generator_matrix()
    per_context = [score_context(s, matrix, r, o)
                   for s, r, o in zip(signals, np.asarray(ctxt.phi), np.asarray(ctxt.obs))]
    metrics = {k: float(np.mean([c[k] for c in per_context])) for k in per_context[0]}
    metrics["w2_max"] = float(np.max([c["w2"] for c in per_context]))
    return metrics


def image(canvas: np.ndarray) -> np.ndarray:
    """Full views or canvases [N, SIDE^2] as images [N, SIDE, SIDE, 1], +-3 PIXEL_STD -> +-1."""
    return np.asarray(canvas).reshape(-1, SIDE, SIDE, 1) / (3.0 * PIXEL_STD)
