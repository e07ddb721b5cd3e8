"""Diffusion training losses (Ho et al., seed 004 ch. 3).

Notation as in `fdm.diffusion.schedules`; x_t = q_sample(x_0, t, eps) with
t ~ Uniform{0, ..., T-1} and eps ~ N(0, I). Per-example losses have shape [B].

    "simple", eps:   mean_d (eps - eps_hat)^2               (L_simple, Eq. 3.14)
    "simple", x0:    mean_d (x0 - x0_hat)^2                 (NeRF lifting, seed 000 Eq. 3.3)
    "weighted", eps: beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) sum_d (eps - eps_hat)^2
                                                            (Eq. 3.12)
    "weighted", x0:  coef1_t^2 / (2 sigma_t^2) sum_d (x0 - x0_hat)^2

The weighted forms are the true variational-bound terms L_{t-1} - C in nats
(sum over dimensions, no mean); at t = 0 the same expression is the Gaussian
decoder term -log N(x_0; mu_theta(x_1), sigma_1^2) up to a constant. The
reverse variance sigma_t^2 is beta_t ("fixed_large") or beta~_t with the t = 0
entry clipped to beta~_1 ("fixed_small", Ho et al.'s `posterior_log_variance_clipped`),
so every weight is finite. Both weighted forms are the same function of the
implied mean, so eps- and x0-weighted losses agree for equivalent predictions.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from fdm.diffusion.process import q_sample
from fdm.diffusion.schedules import DiffusionSchedule
from fdm.errors import UserError

PREDICTIONS = ("eps", "x0")
WEIGHTINGS = ("simple", "weighted")
VARIANCES = ("fixed_small", "fixed_large")


@flax.struct.dataclass
class DiffusionLossOutput:
    """loss: [B] per-example losses; t: [B] int32 timesteps used; aux: the denoiser's aux."""
    loss: jnp.ndarray
    t: jnp.ndarray
    aux: Any = None


def mean_flat(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over all but the first axis: [B, ...] -> [B]."""
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def sum_flat(x: jnp.ndarray) -> jnp.ndarray:
    """Sum over all but the first axis: [B, ...] -> [B]."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def reverse_variance(schedule: DiffusionSchedule, t, variance: str = "fixed_small") -> jnp.ndarray:
    """sigma_t^2 of p(x_{t-1} | x_t) used by the VLB weights: [B] for t [B] (see module doc)."""
    if variance == "fixed_small":
        return jnp.exp(schedule.posterior_log_variance_clipped[t])
    if variance == "fixed_large":
        return schedule.betas[t]
    raise UserError(f"variance={variance!r}; use one of {VARIANCES}")


def vlb_weight(schedule: DiffusionSchedule, t, prediction: str = "eps",
               variance: str = "fixed_small") -> jnp.ndarray:
    """Per-example weight [B] turning sum_d (target - pred)^2 into the VLB term L_{t-1}."""
    sigma2 = reverse_variance(schedule, t, variance)
    if prediction == "eps":
        beta = schedule.betas[t]
        return beta**2 / (2.0 * sigma2 * schedule.alphas[t] * (1.0 - schedule.alphas_cumprod[t]))
    if prediction == "x0":
        return schedule.posterior_mean_coef1[t] ** 2 / (2.0 * sigma2)
    raise UserError(f"prediction={prediction!r}; use one of {PREDICTIONS}")


def eps_loss(schedule, eps_pred, eps, t, weighting: str = "simple", variance: str = "fixed_small"):
    """eps-prediction loss [B]: L_simple (mean) or the VLB-weighted sum. Inputs [B, ...]."""
    sq = jnp.square(eps_pred.astype(jnp.float32) - eps.astype(jnp.float32))
    if weighting == "simple":
        return mean_flat(sq)
    return vlb_weight(schedule, t, "eps", variance) * sum_flat(sq)


def x0_loss(schedule, x0_pred, x0, t, weighting: str = "simple", variance: str = "fixed_small"):
    """x0-prediction loss [B]: mean (x0_hat - x0)^2 or the VLB-weighted sum. Inputs [B, ...]."""
    sq = jnp.square(x0_pred.astype(jnp.float32) - x0.astype(jnp.float32))
    if weighting == "simple":
        return mean_flat(sq)
    return vlb_weight(schedule, t, "x0", variance) * sum_flat(sq)


def diffusion_loss(schedule: DiffusionSchedule, denoise_fn: Callable, x0: jnp.ndarray,
                   rng: jax.Array, prediction: str = "eps", weighting: str = "simple",
                   variance: str = "fixed_small") -> DiffusionLossOutput:
    """Sample t ~ U{0..T-1} and eps, noise x0 and score `denoise_fn(x_t, t) -> (pred, aux)`.

    x0: [B, ...]; rng: PRNG key (split into t- and noise-keys). `variance` only
    matters for weighting="weighted". Returns DiffusionLossOutput(loss [B], t [B], aux).
    """
    if prediction not in PREDICTIONS:
        raise UserError(f"prediction={prediction!r}; use one of {PREDICTIONS}")
    if weighting not in WEIGHTINGS:
        raise UserError(f"loss weighting={weighting!r}; use one of {WEIGHTINGS}")
    key_t, key_eps = jax.random.split(rng)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, schedule.num_timesteps, dtype=jnp.int32)
    eps = jax.random.normal(key_eps, x0.shape, dtype=x0.dtype)
    pred, aux = denoise_fn(q_sample(schedule, x0, t, eps), t)
    if prediction == "eps":
        loss = eps_loss(schedule, pred, eps, t, weighting, variance)
    else:
        loss = x0_loss(schedule, pred, x0, t, weighting, variance)
    return DiffusionLossOutput(loss=loss, t=t, aux=aux)
