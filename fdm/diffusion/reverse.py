"""The reverse process p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) from a
network output (seed 004 Eq. 3.1, 3.11; Ho et al.'s `p_mean_variance`).

Notation as in `fdm.diffusion.schedules` (0-indexed t in [0, T); t = 0 is the paper's
t = 1, whose step is the decoder p(x_0 | x_1)). The mean is the posterior mean at the
predicted x0: mu_theta = mu~_t(x_t, x0_hat) (Eq. 3.7, 3.11), x0_hat clipped to [-1, 1]
when asked. The reverse variance (`variance`):

    fixed_small    sigma_t^2 = beta~_t, at t = 0 beta~_1 (`posterior_log_variance_clipped`)
    fixed_large    sigma_t^2 = beta_t,  at t = 0 beta~_1 (`log_betas_clipped`): Ho et al.'s
                   `fixedlarge`, whose decoder variance the paper's CIFAR-10 numbers need
                   (with beta_1 the decoder alone costs 1.7128 instead of 1.3054 bits/dim)
    learned        the network's extra C channels are log sigma_t^2 (Table 3.2 "learned
                   diagonal Sigma", trained on the bound; unstable for eps prediction)
    learned_range  the extra channels v give log sigma_t^2 = (v + 1)/2 log beta_t
                   + (1 - v)/2 log beta~_t (clipped) (Nichol & Dhariwal 2021)

With a learned variance the network output is [B, ..., 2C] = concat(prediction,
variance channels) along the last axis (`split_output`); fixed variances take [B, ..., C].
"""
from __future__ import annotations

import flax.struct
import jax.numpy as jnp

from fdm.diffusion.process import extract, q_posterior, to_x0_and_eps
from fdm.diffusion.schedules import DiffusionSchedule
from fdm.errors import UserError

FIXED_VARIANCES = ("fixed_small", "fixed_large")
LEARNED_VARIANCES = ("learned", "learned_range")
VARIANCES = FIXED_VARIANCES + LEARNED_VARIANCES


@flax.struct.dataclass
class ReverseStep:
    """p_theta(x_{t-1} | x_t): mean [B, ...], log_variance (broadcasts against mean:
    [B, 1, ..., 1] fixed, [B, ...] learned) and the x0_hat [B, ...] the mean came from."""
    mean: jnp.ndarray
    log_variance: jnp.ndarray
    x0_hat: jnp.ndarray


def check_variance(variance: str) -> None:
    """UserError unless `variance` is one of VARIANCES."""
    if variance not in VARIANCES:
        raise UserError(f"variance={variance!r} is not supported; use one of {VARIANCES}")


def output_channels(channels: int, variance: str) -> int:
    """Channels of the network output for images with `channels` channels: C or 2C."""
    check_variance(variance)
    return 2 * channels if variance in LEARNED_VARIANCES else channels


def split_output(out: jnp.ndarray, variance: str, channels: int | None = None):
    """(prediction [B, ..., C], variance channels [B, ..., C] or None) of a network output.

    `channels` (C, e.g. x_t.shape[-1]) checks a learned-variance output has 2C channels.
    """
    check_variance(variance)
    if variance not in LEARNED_VARIANCES:
        return out, None
    if channels is not None and out.shape[-1] != 2 * channels:
        raise UserError(f"variance={variance!r} needs a denoiser output with 2 x {channels} "
                        f"channels (prediction, variance); got {out.shape[-1]}")
    pred, var_out = jnp.split(out, 2, axis=-1)
    return pred, var_out


def reverse_log_variance(schedule: DiffusionSchedule, t, variance: str, var_out=None,
                         ndim: int = 1) -> jnp.ndarray:
    """log sigma_t^2 (module doc): [B, 1, ..., 1] (ndim dims) for fixed variances, the shape
    of `var_out` [B, ...] for learned ones. t: scalar or [B] int."""
    check_variance(variance)
    if variance == "fixed_small":
        return extract(schedule.posterior_log_variance_clipped, t, ndim)
    if variance == "fixed_large":
        return extract(schedule.log_betas_clipped, t, ndim)
    if var_out is None:
        raise UserError(f"variance={variance!r} needs the network's variance channels")
    if variance == "learned":
        return var_out
    frac = (var_out + 1.0) / 2.0
    max_log = extract(jnp.log(schedule.betas), t, var_out.ndim)
    min_log = extract(schedule.posterior_log_variance_clipped, t, var_out.ndim)
    return frac * max_log + (1.0 - frac) * min_log


def reverse_variance(schedule: DiffusionSchedule, t, variance: str = "fixed_small") -> jnp.ndarray:
    """sigma_t^2 [B] of a fixed reverse variance for t [B] (used by the weighted loss)."""
    if variance not in FIXED_VARIANCES:
        raise UserError(f"variance={variance!r}: the weighted loss needs a fixed variance "
                        f"{FIXED_VARIANCES}; train a learned one with loss 'vlb'")
    return jnp.exp(reverse_log_variance(schedule, t, variance))


def p_mean_variance(schedule: DiffusionSchedule, out: jnp.ndarray, x_t: jnp.ndarray, t, *,
                    prediction: str = "eps", variance: str = "fixed_small",
                    clip_x0: bool = True) -> ReverseStep:
    """p_theta(x_{t-1} | x_t) from the network output `out` [B, ..., C or 2C] at x_t [B, ...],
    t [B] (module doc; Eq. 3.11 for eps, Eq. 3.7 at x0_hat in general)."""
    pred, var_out = split_output(out, variance, x_t.shape[-1])
    x0_hat, _ = to_x0_and_eps(schedule, pred, x_t, t, prediction)
    if clip_x0:
        x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    mean, _, _ = q_posterior(schedule, x0_hat, x_t, t)
    log_variance = reverse_log_variance(schedule, t, variance, var_out, x_t.ndim)
    return ReverseStep(mean=mean, log_variance=log_variance, x0_hat=x0_hat)
