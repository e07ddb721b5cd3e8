"""Per-pixel likelihoods of an autoregressive image model (seed 004 §2.5; PixelCNN++).

Notation: x [B, H, W, C] in [-1, 1] on n = `num_bins` equally spaced levels
x_k = 2k/(n-1) - 1, half-bin δ = 1/(n-1); M mixture components; σ the logistic
sigmoid. A pixel's network output [P] is split into `MixtureParams`.

Discretized logistic mixture (the paper's conditional for each pixel):
  p(x) = Σ_m π_m Π_c P_c(x_c | μ'_mc, s_mc), with the RGB coupling of PixelCNN++
  μ'_m0 = μ_m0, μ'_mc = μ_mc + Σ_{j<c} a_mjc x_j (for RGB: μ_G += a x_R,
  μ_B += b x_R + c x_G), a = tanh(·), log s >= -7, and per channel
    P(x_0)       = σ((x_0 + δ - μ)/s)                 (lowest bin, x = -1)
    P(x_{n-1})   = 1 - σ((x_{n-1} - δ - μ)/s)         (highest bin, x = 1)
    P(x_k)       = σ((x_k + δ - μ)/s) - σ((x_k - δ - μ)/s)   otherwise;
  where an interior bin's mass is below 1e-5 its log is approximated by the log density
  at the bin centre times the bin width 2δ (log pdf - log((n-1)/2); the authors' log
  127.5 holds for 8 bits only). Output width P = M (1 + 2C + C(C-1)/2): 10 M for RGB,
  3 M for grey (`num_params`).
Categorical (binary data: a 2-way softmax, §2.5): one channel, P = n logits.

`log_prob` functions return the log-likelihood of each pixel (all its channels
jointly) [B, H, W] in nats; samples are snapped to bin centres.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

LOG_SCALE_MIN = -7.0
RARE_BIN_MASS = 1e-5


@flax.struct.dataclass
class MixtureParams:
    """A mixture of M discretized logistics per pixel, for C channels:
    logits [B, H, W, M], means and log_scales [B, H, W, C, M] (log_scales clipped at
    LOG_SCALE_MIN), coeffs [B, H, W, C(C-1)/2, M] = tanh(·), pairs (j, c), j < c, ordered
    (0, 1), (0, 2), (1, 2), ... by c then j."""
    logits: jax.Array
    means: jax.Array
    log_scales: jax.Array
    coeffs: jax.Array


def num_params(channels: int, num_mix: int) -> int:
    """P = M (1 + 2C + C(C-1)/2), the network's output channels for the mixture."""
    return num_mix * (1 + 2 * channels + channels * (channels - 1) // 2)


def split_params(out: jax.Array, channels: int, num_mix: int) -> MixtureParams:
    """Network output [B, H, W, P] -> MixtureParams (layout: logits, then per channel the
    means, log-scales, then the coupling coefficients, each M wide)."""
    c, m = channels, num_mix
    pairs = c * (c - 1) // 2
    logits, rest = out[..., :m], out[..., m:]
    means = rest[..., :c * m].reshape(out.shape[:3] + (c, m))
    log_scales = rest[..., c * m:2 * c * m].reshape(out.shape[:3] + (c, m))
    coeffs = rest[..., 2 * c * m:].reshape(out.shape[:3] + (pairs, m))
    return MixtureParams(logits, means, jnp.maximum(log_scales, LOG_SCALE_MIN),
                         jnp.tanh(coeffs))


def to_bins(x: jax.Array, num_bins: int) -> jax.Array:
    """x in [-1, 1] -> the nearest bin index int32 in [0, n)."""
    k = jnp.round((x + 1.0) * 0.5 * (num_bins - 1))
    return jnp.clip(k, 0, num_bins - 1).astype(jnp.int32)


def from_bins(k: jax.Array, num_bins: int) -> jax.Array:
    """Bin index -> its centre 2k/(n-1) - 1 (float32)."""
    return 2.0 * k.astype(jnp.float32) / (num_bins - 1) - 1.0


def coupled_means(params: MixtureParams, x: jax.Array) -> jax.Array:
    """μ' [B, H, W, C, M]: channel c's means shifted by Σ_{j<c} a_jc x_j (x [B, H, W, C])."""
    channels = params.means.shape[3]
    means, pair = [params.means[..., 0, :]], 0
    for c in range(1, channels):
        shift = 0.0
        for j in range(c):
            shift = shift + params.coeffs[..., pair, :] * x[..., j, None]
            pair += 1
        means.append(params.means[..., c, :] + shift)
    return jnp.stack(means, axis=3)


def _channel_log_probs(x: jax.Array, mean: jax.Array, log_scale: jax.Array,
                       num_bins: int) -> jax.Array:
    """log P(x | μ, s) of the discretized logistic, elementwise (x broadcast over M)."""
    half_bin = 1.0 / (num_bins - 1)
    centred = x - mean
    inv_scale = jnp.exp(-log_scale)
    plus_in = inv_scale * (centred + half_bin)
    min_in = inv_scale * (centred - half_bin)
    log_cdf_plus = plus_in - jax.nn.softplus(plus_in)           # log σ(plus_in)
    log_one_minus_cdf_min = -jax.nn.softplus(min_in)            # log (1 - σ(min_in))
    cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
    mid_in = inv_scale * centred
    log_pdf_mid = mid_in - log_scale - 2.0 * jax.nn.softplus(mid_in)
    interior = jnp.where(cdf_delta > RARE_BIN_MASS,
                         jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                         log_pdf_mid - np.log((num_bins - 1) / 2.0))
    k = to_bins(x, num_bins)
    return jnp.where(k == 0, log_cdf_plus,
                     jnp.where(k == num_bins - 1, log_one_minus_cdf_min, interior))


def log_prob(params: MixtureParams, x: jax.Array, num_bins: int) -> jax.Array:
    """log p(x_pixel) [B, H, W] (nats) of x [B, H, W, C] on the bin centres."""
    means = coupled_means(params, x)
    per_channel = _channel_log_probs(x[..., None], means, params.log_scales, num_bins)
    return jax.nn.logsumexp(per_channel.sum(axis=3) + jax.nn.log_softmax(params.logits), -1)


def sample(params: MixtureParams, key: jax.Array, num_bins: int) -> jax.Array:
    """x [B, H, W, C] ~ the mixture, channel by channel (coupling uses the sampled earlier
    channels), snapped to bin centres."""
    key_mix, key_logistic = jax.random.split(key)
    component = jax.random.categorical(key_mix, params.logits)            # [B, H, W]
    pick = lambda a: jnp.take_along_axis(a, component[..., None, None], -1)[..., 0]
    u = jax.random.uniform(key_logistic, params.means.shape[:4], minval=1e-5,
                           maxval=1.0 - 1e-5)
    noise = jnp.log(u) - jnp.log1p(-u)                                      # logistic
    channels = params.means.shape[3]
    x = jnp.zeros(params.means.shape[:4])
    for c in range(channels):          # x_c depends on the already sampled x_<c
        mean = pick(coupled_means(params, x))[..., c]
        value = mean + jnp.exp(pick(params.log_scales)[..., c]) * noise[..., c]
        x = x.at[..., c].set(from_bins(to_bins(jnp.clip(value, -1.0, 1.0), num_bins),
                                       num_bins))
    return x


def categorical_log_prob(logits: jax.Array, x: jax.Array, num_bins: int) -> jax.Array:
    """log p(x_pixel) [B, H, W] of one-channel x [B, H, W, 1] under softmax(logits [B, H,
    W, n])."""
    k = to_bins(x[..., 0], num_bins)
    return jnp.take_along_axis(jax.nn.log_softmax(logits), k[..., None], -1)[..., 0]


def categorical_sample(logits: jax.Array, key: jax.Array, num_bins: int) -> jax.Array:
    """x [B, H, W, 1] ~ softmax(logits [B, H, W, n]) on the bin centres."""
    return from_bins(jax.random.categorical(key, logits), num_bins)[..., None]


__all__ = ["LOG_SCALE_MIN", "MixtureParams", "categorical_log_prob", "categorical_sample",
           "coupled_means", "from_bins", "log_prob", "num_params", "sample", "split_params",
           "to_bins"]
