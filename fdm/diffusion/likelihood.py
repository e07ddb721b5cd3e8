"""The variational bound of a DDPM in bits/dim (seed 004 §3.2-3.4.3; Ho et al.'s
`calc_bpd_loop`): its terms, the discretized decoder, progressive coding.

Notation as in `fdm.diffusion.schedules` and `fdm.diffusion.reverse`: x_0 [B, ...] data
on the grid of `num_bins` levels in [-1, 1] (256: 8-bit images scaled by x/127.5 - 1),
D = number of dimensions of one example, 0-indexed t in [0, T). The bound (Eq. 3.3),
L = L_T + sum_{t>1} L_{t-1} + L_0 in the paper's 1-indexing (Eq. 3.5), is here

    L = prior + sum_{s=0}^{T-1} term[s],  term[s] = the paper's L_s, in its indices:
        term[0]   = -log p_theta(x_0 | x_1)                    decoder (Eq. 3.13)
        term[s>0] = KL(q(x_s | x_{s+1}, x_0) || p_theta(x_s | x_{s+1}))      (Eq. 3.5)
                  = KL of the Gaussians N(mu~, beta~) and N(mu_theta, sigma^2), which for
                    the eps parameterisation, unclipped, equals the constant
                    0.5 (log sigma^2/beta~ + beta~/sigma^2 - 1) per dimension plus
                    beta^2 / (2 sigma^2 alpha (1 - abar)) ||eps - eps_theta||^2 (Eq. 3.12)
        prior     = KL(q(x_T | x_0) || N(0, I)) = L_T

The paper's x_{s+1} is fdm's x_s (timestep s is the paper's t = s + 1): term[s] calls
the model at fdm timestep s on one draw x_s ~ q(x_s | x_0). Bits/dim as the paper
counts it (Ho et al.'s code): each term is a mean over the D dimensions divided by
ln 2, from one draw per term; the total adds the prior. The decoder integrates N(mu_theta, sigma_0^2)
over the bin [x - delta, x + delta], delta = 1/(num_bins - 1), with -inf / +inf at the
edge bins (Eq. 3.13), via `jax.scipy.special.log_ndtr` or (`cdf="tanh"`) the tanh
approximation of Ho et al.'s code; `num_bins=None` is a Gaussian density decoder for
continuous data (nats per unit, not a codelength).

Progressive coding (§3.4.3, Table 6.2): a receiver holding fdm's x_s (reverse process
time T - s) has been sent prior + sum(term[s+1:]) (the rate) and predicts x0_hat(x_s)
(Eq. 3.15); the distortion
is its RMSE on the [0, 255] scale. `bpd_loop` records mse[s] = mean_d (x0_hat - x_0)^2
with x0_hat clipped like the sampler's.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import log_ndtr

from fdm.diffusion.process import mean_flat, q_posterior, q_sample
from fdm.diffusion.reverse import ReverseStep, p_mean_variance
from fdm.diffusion.samplers import combine_denoiser, partition_denoiser
from fdm.diffusion.schedules import DiffusionSchedule
from fdm.errors import UserError

LN2 = math.log(2.0)
CDFS = ("exact", "tanh")
PIXEL_SCALE = 127.5            # [-1, 1] -> [0, 255]: RMSE on the paper's scale
NUM_TABLE_ROWS = 10            # Table 6.2: reverse process times T, 0.9 T, ..., 0.1 T


@flax.struct.dataclass
class BoundTerms:
    """The bound of B examples in bits/dim (module doc).

    total: [B] prior + terms.sum(1); terms: [B, T] (terms[:, 0] the decoder L_0,
    terms[:, s] the paper's L_s); prior: [B] L_T; mse: [B, T] mean_d (x0_hat - x_0)^2
    with x0_hat predicted from x_s.
    """
    total: jnp.ndarray
    terms: jnp.ndarray
    prior: jnp.ndarray
    mse: jnp.ndarray


# ----------------------------------------------------------------------------- pieces


def normal_kl(mean1, logvar1, mean2, logvar2) -> jnp.ndarray:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats, elementwise (broadcast):
    0.5 [logvar2 - logvar1 + e^(logvar1 - logvar2) - 1 + (mean1 - mean2)^2 e^-logvar2]."""
    return 0.5 * (logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) - 1.0
                  + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: jnp.ndarray) -> jnp.ndarray:
    """Ho et al.'s tanh approximation of the standard normal CDF (elementwise):
    0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _log_bin_mass(lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
    """log(Phi(hi) - Phi(lo)) for lo < hi, stable in both tails (the upper tail is taken as
    Phi(-lo) - Phi(-hi)); floored at the dtype's tiny so a vanishing bin stays finite."""
    upper = lo > 0
    a, b = jnp.where(upper, -hi, lo), jnp.where(upper, -lo, hi)
    log_a, log_b = log_ndtr(a), log_ndtr(b)
    tiny = jnp.finfo(jnp.result_type(log_a)).tiny
    return log_b + jnp.log(jnp.maximum(-jnp.expm1(log_a - log_b), tiny))


def _tanh_log_probs(lo, hi, left, right) -> jnp.ndarray:
    """Ho et al.'s `discretized_gaussian_log_likelihood`: tanh CDF, masses floored at 1e-12."""
    cdf_lo, cdf_hi = approx_standard_normal_cdf(lo), approx_standard_normal_cdf(hi)
    log = lambda p: jnp.log(jnp.maximum(p, 1e-12))  # noqa: E731
    return jnp.where(left, log(cdf_hi), jnp.where(right, log(1.0 - cdf_lo), log(cdf_hi - cdf_lo)))


def discretized_gaussian_log_likelihood(x, mean, log_scale, num_bins: int = 256,
                                        cdf: str = "exact") -> jnp.ndarray:
    """log P(x) of the bin of x under N(mean, e^(2 log_scale)) (Eq. 3.13), elementwise nats.

    x: [...] on the grid of `num_bins` levels in [-1, 1]; mean, log_scale broadcast
    against x. The bins are [x - delta, x + delta], delta = 1/(num_bins - 1), the edge
    bins extended to -inf / +inf, so the masses of all bins sum to 1. cdf: "exact"
    (log_ndtr) or "tanh" (Ho et al.'s approximation).
    """
    if cdf not in CDFS:
        raise UserError(f"decoder cdf={cdf!r} is not supported; use one of {CDFS}")
    delta = 1.0 / (num_bins - 1)
    inv_scale = jnp.exp(-log_scale)
    lo, hi = (x - mean - delta) * inv_scale, (x - mean + delta) * inv_scale
    left, right = x < -1.0 + delta, x > 1.0 - delta
    if cdf == "tanh":
        return _tanh_log_probs(lo, hi, left, right)
    return jnp.where(left, log_ndtr(hi), jnp.where(right, log_ndtr(-lo), _log_bin_mass(lo, hi)))


def gaussian_log_density(x, mean, log_scale) -> jnp.ndarray:
    """log N(x; mean, e^(2 log_scale)), elementwise nats (the decoder of continuous data)."""
    return (-0.5 * math.log(2.0 * math.pi) - log_scale
            - 0.5 * jnp.square((x - mean) * jnp.exp(-log_scale)))


def decoder_nll(x0, mean, log_variance, num_bins: int | None = 256,
                cdf: str = "exact") -> jnp.ndarray:
    """-log p_theta(x_0 | x_1) per dimension in nats [B, ...] (Eq. 3.13); num_bins=None:
    the Gaussian density."""
    log_scale = 0.5 * log_variance
    if num_bins is None:
        return -gaussian_log_density(x0, mean, log_scale)
    return -discretized_gaussian_log_likelihood(x0, mean, log_scale, num_bins, cdf)


def prior_bpd(schedule: DiffusionSchedule, x0: jnp.ndarray) -> jnp.ndarray:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim: x0 [B, ...] -> [B]."""
    last = schedule.num_timesteps - 1
    mean = schedule.sqrt_alphas_cumprod[last] * x0
    logvar = 2.0 * jnp.log(schedule.sqrt_one_minus_alphas_cumprod[last])
    return mean_flat(normal_kl(mean, logvar, 0.0, 0.0)) / LN2


def vb_term_bpd(schedule: DiffusionSchedule, out, x0, x_t, t, *, prediction: str = "eps",
                variance: str = "fixed_small", clip_x0: bool = True,
                num_bins: int | None = 256, cdf: str = "exact"):
    """One term of the bound per example in bits/dim (module doc) and x0_hat.

    out: the network output at (x_t, t), [B, ..., C] or [B, ..., 2C] (learned variance);
    x0, x_t: [B, ..., C]; t: [B] int. Returns (bpd [B]: the decoder NLL where t == 0,
    else the KL to the forward posterior; x0_hat [B, ..., C]).
    """
    step = p_mean_variance(schedule, out, x_t, t, prediction=prediction, variance=variance,
                           clip_x0=clip_x0)
    kl, nll = _kl_bpd(schedule, step, x0, x_t, t), _decoder_bpd(step, x0, num_bins, cdf)
    return jnp.where(t == 0, nll, kl), step.x0_hat


def _kl_bpd(schedule, step: ReverseStep, x0, x_t, t) -> jnp.ndarray:
    """KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) in bits/dim [B] (t > 0)."""
    true_mean, _, true_log_var = q_posterior(schedule, x0, x_t, t)
    return mean_flat(normal_kl(true_mean, true_log_var, step.mean, step.log_variance)) / LN2


def _decoder_bpd(step: ReverseStep, x0, num_bins, cdf) -> jnp.ndarray:
    """-log p_theta(x_0 | x_1) in bits/dim [B] (t = 0)."""
    return mean_flat(decoder_nll(x0, step.mean, step.log_variance, num_bins, cdf)) / LN2


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass(frozen=True)
class _BoundConfig:
    """The static (hashable) part of one `bpd_loop` compilation."""
    fn_static: object
    prediction: str
    variance: str
    clip_x0: bool
    num_bins: int | None
    cdf: str


def _loop_term(cfg: _BoundConfig, fn, schedule, x0, rng, t, decoder: bool):
    """(term [B], mse [B]) at timestep t (a scalar) with x_t ~ q(x_t | x_0) from
    fold_in(rng, t); the decoder term when `decoder`, else the KL."""
    tb = jnp.full((x0.shape[0],), t, jnp.int32)
    noise = jax.random.normal(jax.random.fold_in(rng, t), x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, tb, noise)
    out, _ = fn(x_t, tb)
    step = p_mean_variance(schedule, out.astype(x0.dtype), x_t, tb, prediction=cfg.prediction,
                           variance=cfg.variance, clip_x0=cfg.clip_x0)
    term = (_decoder_bpd(step, x0, cfg.num_bins, cfg.cdf) if decoder
            else _kl_bpd(schedule, step, x0, x_t, tb))
    return term, mean_flat(jnp.square(step.x0_hat - x0))


def _bpd_loop_impl(cfg: _BoundConfig, fn_dynamic, schedule, x0, rng) -> BoundTerms:
    fn = combine_denoiser(cfg.fn_static, fn_dynamic)
    kl_step = lambda carry, t: (carry, _loop_term(cfg, fn, schedule, x0, rng, t, False))  # noqa
    ts = jnp.arange(schedule.num_timesteps - 1, 0, -1, dtype=jnp.int32)
    _, (kls, kl_mse) = lax.scan(kl_step, None, ts)                   # [T - 1, B], t = T-1..1
    nll, nll_mse = _loop_term(cfg, fn, schedule, x0, rng, jnp.int32(0), True)
    terms = jnp.concatenate([nll[None], kls[::-1]]).T
    mse = jnp.concatenate([nll_mse[None], kl_mse[::-1]]).T
    prior = prior_bpd(schedule, x0)
    return BoundTerms(total=terms.sum(axis=1) + prior, terms=terms, prior=prior, mse=mse)


_bpd_loop_jit = jax.jit(_bpd_loop_impl, static_argnums=0)


def bpd_loop(denoise_fn: Callable, schedule: DiffusionSchedule, x0, rng, *,
             prediction: str = "eps", variance: str = "fixed_small", clip_x0: bool = True,
             num_bins: int | None = 256, cdf: str = "exact") -> BoundTerms:
    """The whole bound of x0 [B, ...] (Ho et al.'s `calc_bpd_loop`): one jitted lax.scan of
    the KL terms over t = T-1, ..., 1, then the decoder at t = 0, with x_t drawn with noise
    normal(fold_in(rng, t)).

    denoise_fn: the samplers' denoiser `fn(x_t, t) -> (out, aux)` (out as in
    `vb_term_bpd`; arrays as pytree leaves, e.g. a `jax.tree_util.Partial`).
    Returns BoundTerms (total [B], terms [B, T], prior [B], mse [B, T]).
    """
    static, dynamic = partition_denoiser(denoise_fn)
    cfg = _BoundConfig(static, prediction, variance, bool(clip_x0), num_bins, cdf)
    return _bpd_loop_jit(cfg, dynamic, schedule, jnp.asarray(x0), rng)


# ----------------------------------------------------------------------------- summaries


def bound_metrics(bound: BoundTerms) -> dict[str, float]:
    """Means over the examples (bits/dim unless said): bpd (the bound), bpd_prior (L_T),
    bpd_decoder (L_0, the distortion of §3.4.3), bpd_rate (L_1 + ... + L_T) and
    distortion_rmse (RMSE on [0, 255] of x0_hat from x_1, the paper's 0.95)."""
    terms, prior = np.asarray(bound.terms, np.float64), np.asarray(bound.prior, np.float64)
    return {"bpd": float(np.mean(bound.total)), "bpd_prior": float(prior.mean()),
            "bpd_decoder": float(terms[:, 0].mean()),
            "bpd_rate": float(np.mean(prior + terms[:, 1:].sum(axis=1))),
            "distortion_rmse": float(PIXEL_SCALE * np.sqrt(np.mean(bound.mse[:, 0])))}


def rate_distortion_curve(bound: BoundTerms) -> tuple[np.ndarray, np.ndarray]:
    """(rate [T], distortion [T]) indexed by s: bits/dim sent once x_s is received
    (prior + sum(terms[s+1:]), mean over examples) and the RMSE on [0, 255] of x0_hat(x_s)
    (sqrt of the mean MSE over examples and dimensions)."""
    terms = np.asarray(bound.terms, np.float64)
    after = np.cumsum(terms[:, ::-1], axis=1)[:, ::-1] - terms        # sum(terms[s+1:])
    rate = np.mean(np.asarray(bound.prior, np.float64)[:, None] + after, axis=0)
    distortion = PIXEL_SCALE * np.sqrt(np.mean(np.asarray(bound.mse, np.float64), axis=0))
    return rate, distortion


def rate_distortion_table(bound: BoundTerms, num_rows: int = NUM_TABLE_ROWS) -> dict:
    """Table 6.2 of seed 004 as a JSON-ready dict: `rows` [reverse process time T - t + 1
    (paper t), rate bits/dim, distortion RMSE [0, 255]] at times T, ..., T/num_rows, and the
    whole `curve` (one entry per reverse time 1..T)."""
    rate, distortion = rate_distortion_curve(bound)
    num_t = len(rate)
    times = sorted({max(1, round(num_t * k / num_rows)) for k in range(1, num_rows + 1)},
                   reverse=True)
    row = lambda r: [int(r), float(rate[num_t - r]), float(distortion[num_t - r])]  # noqa: E731
    return {"columns": ["reverse_process_time", "rate_bpd", "distortion_rmse"],
            "rows": [row(r) for r in times],
            "num_examples": int(np.shape(bound.total)[0]), "num_timesteps": num_t,
            "curve": {"reverse_process_time": list(range(1, num_t + 1)),
                      "rate_bpd": [float(v) for v in rate[::-1]],
                      "distortion_rmse": [float(v) for v in distortion[::-1]]}}
