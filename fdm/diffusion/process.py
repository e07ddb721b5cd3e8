"""Forward process q and the conversions between eps- and x0-predictions.

Notation as in `fdm.diffusion.schedules`: x_0 [B, ...] data, t [B] int (or a
scalar int) with 0 <= t < T, eps ~ N(0, I) of x_0's shape,

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                          (Eq. 3.4)
    x_0 = x_t / sqrt(abar_t) - sqrt(1/abar_t - 1) eps
    q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, beta~_t I)         (Eq. 3.6-3.7)

Per-example coefficients of shape [B] are broadcast over the trailing
dimensions of x ([B, H, W, C] images, [B, D] vectors, ...); `mean_flat` and
`sum_flat` reduce per-example values [B, ...] to [B].
"""
from __future__ import annotations

import jax.numpy as jnp

from fdm.diffusion.schedules import DiffusionSchedule
from fdm.errors import UserError

PREDICTIONS = ("eps", "x0")


def extract(coef: jnp.ndarray, t, ndim: int) -> jnp.ndarray:
    """coef[t] shaped to broadcast against an array with `ndim` dims.

    coef: [T]; t: scalar int or [B] ints. Returns a scalar or [B, 1, ..., 1].
    """
    values = coef[jnp.asarray(t)]
    if values.ndim == 0:
        return values
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def mean_flat(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over all but the first axis: [B, ...] -> [B]."""
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def sum_flat(x: jnp.ndarray) -> jnp.ndarray:
    """Sum over all but the first axis: [B, ...] -> [B]."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def q_sample(schedule: DiffusionSchedule, x0: jnp.ndarray, t, noise: jnp.ndarray) -> jnp.ndarray:
    """Sample x_t ~ q(x_t | x_0) with the given noise. x0, noise: [B, ...]; t: [B] -> [B, ...]."""
    return (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)


def predict_x0_from_eps(schedule: DiffusionSchedule, x_t: jnp.ndarray, t,
                        eps: jnp.ndarray) -> jnp.ndarray:
    """x0 implied by x_t and eps: x_t / sqrt(abar_t) - sqrt(1/abar_t - 1) eps. Shapes [B, ...]."""
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps)


def predict_eps_from_x0(schedule: DiffusionSchedule, x_t: jnp.ndarray, t,
                        x0: jnp.ndarray) -> jnp.ndarray:
    """eps implied by x_t and x0: (x_t / sqrt(abar_t) - x0) / sqrt(1/abar_t - 1). [B, ...]."""
    return ((extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0)
            / extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.ndim))


def q_posterior(schedule: DiffusionSchedule, x0: jnp.ndarray, x_t: jnp.ndarray, t):
    """Forward-process posterior q(x_{t-1} | x_t, x_0) (Eq. 3.6-3.7).

    x0, x_t: [B, ...]; t: [B]. Returns (mean [B, ...], variance [B, 1, ..., 1],
    log_variance [B, 1, ..., 1]); variance is beta~_t (0 at t = 0) and
    log_variance is the clipped log (beta~_1 used at t = 0).
    """
    mean = (extract(schedule.posterior_mean_coef1, t, x_t.ndim) * x0
            + extract(schedule.posterior_mean_coef2, t, x_t.ndim) * x_t)
    variance = extract(schedule.posterior_variance, t, x_t.ndim)
    log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t.ndim)
    return mean, variance, log_variance


def to_x0_and_eps(schedule: DiffusionSchedule, pred: jnp.ndarray, x_t: jnp.ndarray, t,
                  prediction: str):
    """(x0_hat, eps_hat) from a model prediction of kind "eps" or "x0". Shapes [B, ...]."""
    if prediction == "eps":
        return predict_x0_from_eps(schedule, x_t, t, pred), pred
    if prediction == "x0":
        return pred, predict_eps_from_x0(schedule, x_t, t, pred)
    raise UserError(f"prediction={prediction!r} is not supported; use one of {PREDICTIONS}")
