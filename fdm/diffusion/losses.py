"""Diffusion training losses (Ho et al., seed 004 ch. 3).

Notation as in `fdm.diffusion.schedules`; x_t = q_sample(x_0, t, eps) with
t ~ Uniform{0, ..., T-1} and eps ~ N(0, I). Per-example losses have shape [B].

    "simple", eps:   mean_d (eps - eps_hat)^2               (L_simple, Eq. 3.14)
    "simple", x0:    mean_d (x0 - x0_hat)^2                 (NeRF lifting, seed 000 Eq. 3.3)
    "weighted", eps: beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) sum_d (eps - eps_hat)^2
                                                            (Eq. 3.12)
    "weighted", x0:  coef1_t^2 / (2 sigma_t^2) sum_d (x0 - x0_hat)^2
    "min_snr", x0:   min(SNR_t, gamma) mean_d (x0 - x0_hat)^2, SNR_t = abar_t / (1 - abar_t)
                     (Min-SNR-gamma, Hang et al. 2023, Eq. 9: the x0 objective with the
                     easy, low-noise steps up-weighted to at most gamma and the noisiest
                     ones down-weighted by their SNR)
    "min_snr", eps:  min(SNR_t, gamma) / SNR_t mean_d (eps - eps_hat)^2, the same loss for
                     equivalent predictions ((eps - eps_hat)^2 = SNR_t (x0 - x0_hat)^2)
    With a floor f > 0 the weight is clip(SNR_t, f, gamma): the noisiest steps keep weight
    f instead of SNR_t. f = 1 with gamma = inf is the truncated-SNR weighting
    max(SNR_t, 1) of Salimans & Ho 2022 (Sec. 4, "max(||x - x_hat||^2, ||eps - eps_hat||^2)");
    f = 1 with a finite gamma only raises the easy steps above the simple x0 loss.
    "vlb":           the bound's term L_t itself in bits/dim (`fdm.diffusion.likelihood`):
                     the KL to the forward posterior for t > 0 and the discretized
                     decoder NLL (Eq. 3.13) at t = 0, unclipped x0_hat; so that
                     T * E_t[loss] + L_T is the bound (the paper's "L", Table 3.1/3.2)

The weighted forms are the true variational-bound terms L_{t-1} - C in nats
(sum over dimensions, no mean); at t = 0 the same expression is the Gaussian
decoder term -log N(x_0; mu_theta(x_1), sigma_1^2) up to a constant. The
reverse variance sigma_t^2 is beta_t ("fixed_large") or beta~_t ("fixed_small"),
both with the t = 0 entry beta~_1 (`fdm.diffusion.reverse`), so every weight is
finite. Both weighted forms are the same function of the implied mean, so eps- and
x0-weighted losses agree for equivalent predictions. A learned variance
(`reverse.LEARNED_VARIANCES`: the denoiser outputs 2C channels) trains only with "vlb".
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from fdm.diffusion.likelihood import vb_term_bpd
from fdm.diffusion.process import PREDICTIONS, mean_flat, q_sample, sum_flat
from fdm.diffusion.reverse import LEARNED_VARIANCES, check_variance, reverse_variance
from fdm.diffusion.schedules import DiffusionSchedule
from fdm.diffusion.timesteps import sample_timesteps
from fdm.errors import UserError

WEIGHTINGS = ("simple", "weighted", "vlb", "min_snr")
MIN_SNR_GAMMA = 5.0                      # Hang et al.'s default
MIN_SNR_FLOOR = 0.0                      # Hang et al.'s (no floor)


@flax.struct.dataclass
class DiffusionLossOutput:
    """loss: [B] per-example losses; t: [B] int32 timesteps used; aux: the denoiser's aux."""
    loss: jnp.ndarray
    t: jnp.ndarray
    aux: Any = None


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


def min_snr_weight(schedule: DiffusionSchedule, t, prediction: str = "x0",
                   gamma: float = MIN_SNR_GAMMA, floor: float = MIN_SNR_FLOOR) -> jnp.ndarray:
    """Per-example weight [B] of "min_snr" (module doc) on mean_d (target - pred)^2:
    clip(SNR_t, floor, gamma) for x0 (floor 0: min(SNR_t, gamma)), divided by SNR_t for
    eps."""
    if not 0.0 <= floor <= gamma:
        raise UserError(f"diffusion.min_snr_floor={floor} must lie in [0, min_snr_gamma="
                        f"{gamma}]; lower the floor or raise gamma")
    abar = schedule.alphas_cumprod[t]
    snr = abar / (1.0 - abar)
    weight = jnp.clip(snr, floor, gamma)
    return weight / snr if prediction == "eps" else weight


def eps_loss(schedule, eps_pred, eps, t, weighting: str = "simple", variance: str = "fixed_small",
             min_snr_gamma: float = MIN_SNR_GAMMA, min_snr_floor: float = MIN_SNR_FLOOR):
    """eps-prediction loss [B]: L_simple (mean), Min-SNR (weighted mean) or the
    VLB-weighted sum. Inputs [B, ...]."""
    sq = jnp.square(eps_pred.astype(jnp.float32) - eps.astype(jnp.float32))
    if weighting == "simple":
        return mean_flat(sq)
    if weighting == "min_snr":
        return min_snr_weight(schedule, t, "eps", min_snr_gamma, min_snr_floor) * mean_flat(sq)
    return vlb_weight(schedule, t, "eps", variance) * sum_flat(sq)


def x0_loss(schedule, x0_pred, x0, t, weighting: str = "simple", variance: str = "fixed_small",
            min_snr_gamma: float = MIN_SNR_GAMMA, min_snr_floor: float = MIN_SNR_FLOOR):
    """x0-prediction loss [B]: mean (x0_hat - x0)^2, Min-SNR (weighted mean) or the
    VLB-weighted sum. Inputs [B, ...]."""
    sq = jnp.square(x0_pred.astype(jnp.float32) - x0.astype(jnp.float32))
    if weighting == "simple":
        return mean_flat(sq)
    if weighting == "min_snr":
        return min_snr_weight(schedule, t, "x0", min_snr_gamma, min_snr_floor) * mean_flat(sq)
    return vlb_weight(schedule, t, "x0", variance) * sum_flat(sq)


def diffusion_loss(schedule: DiffusionSchedule, denoise_fn: Callable, x0: jnp.ndarray,
                   rng: jax.Array, prediction: str = "eps", weighting: str = "simple",
                   variance: str = "fixed_small", cdf: str = "exact",
                   t_probs: jnp.ndarray | None = None,
                   min_snr_gamma: float = MIN_SNR_GAMMA,
                   min_snr_floor: float = MIN_SNR_FLOOR) -> DiffusionLossOutput:
    """Sample t ~ U{0..T-1} (or t ~ t_probs [T], `fdm.diffusion.timesteps`; the caller
    applies the importance weights) and eps, noise x0 and score `denoise_fn(x_t, t) ->
    (pred, aux)`.

    x0: [B, ...]; rng: PRNG key (split into t- and noise-keys). `variance` matters for
    weighting "weighted" and "vlb" (a learned one: pred has 2C channels, "vlb" only);
    `cdf` ("exact" | "tanh") is the decoder's CDF in "vlb"; `min_snr_gamma` and
    `min_snr_floor` are "min_snr"'s clip range.
    Returns DiffusionLossOutput(loss [B], t [B], aux).
    """
    if prediction not in PREDICTIONS:
        raise UserError(f"prediction={prediction!r}; use one of {PREDICTIONS}")
    if weighting not in WEIGHTINGS:
        raise UserError(f"loss weighting={weighting!r}; use one of {WEIGHTINGS}")
    check_variance(variance)
    if variance in LEARNED_VARIANCES and weighting != "vlb":
        raise UserError(f"variance={variance!r} is learned on the bound; use loss weighting "
                        f"'vlb' (got {weighting!r})")
    key_t, key_eps = jax.random.split(rng)
    if t_probs is None:
        t = jax.random.randint(key_t, (x0.shape[0],), 0, schedule.num_timesteps,
                               dtype=jnp.int32)
    else:
        t = sample_timesteps(key_t, t_probs, x0.shape[0])
    eps = jax.random.normal(key_eps, x0.shape, dtype=x0.dtype)
    x_t = q_sample(schedule, x0, t, eps)
    pred, aux = denoise_fn(x_t, t)
    if weighting == "vlb":
        loss, _ = vb_term_bpd(schedule, pred.astype(x0.dtype), x0, x_t, t, prediction=prediction,
                              variance=variance, clip_x0=False, cdf=cdf)
    elif prediction == "eps":
        loss = eps_loss(schedule, pred, eps, t, weighting, variance, min_snr_gamma, min_snr_floor)
    else:
        loss = x0_loss(schedule, pred, x0, t, weighting, variance, min_snr_gamma, min_snr_floor)
    return DiffusionLossOutput(loss=loss, t=t, aux=aux)
