"""Building blocks of the DDPM U-Net (Ho et al. 2020), flax.linen, NHWC.

Notation:
  B batch, H/W spatial size, C channels of the current feature map,
  E = 4 * ch the timestep-embedding width, N = H * W tokens in attention.
  x, h: [B, H, W, C] float arrays; temb: [B, E]; t: [B] (int or float).

All blocks match `diffusers` (UNet2DModel configured as DDPM: norm_eps 1e-6,
single-head attention, `downsample_padding=0`) output for output once weights
are converted with `fdm.nn.convert_diffusers`.

Mixed precision (`model.dtype`, `compute_dtype`): parameters are always float32;
`dtype` is the compute dtype of convolutions and matmuls, and of the activations
between them (bfloat16 halves activation memory and runs on the accelerators'
bf16 units). GroupNorm statistics and the attention softmax are always computed
in float32; each block returns its input's dtype.
"""
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Values of model.dtype (`compute_dtype`): float32, or bfloat16 compute with float32
# parameters. float16 is not offered: its 5-bit exponent needs loss scaling.
DTYPES = ("float32", "bfloat16")

# DDPM's initialiser (variance scaling 1.0, fan_avg, uniform) and the
# zero initialiser used for the last layer of each residual branch.
default_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
zeros_init = nn.initializers.zeros


def compute_dtype(model_cfg) -> jnp.dtype:
    """The compute dtype named by `model_cfg.dtype` (one of DTYPES; checked by the
    families' config rules)."""
    return jnp.dtype(model_cfg.dtype)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding [sin, cos] of timesteps, as DDPM / diffusers.

    Equals diffusers `get_timestep_embedding(t, dim, flip_sin_to_cos=False,
    downscale_freq_shift=1)`: frequency i is exp(-log(max_period) * i / (half - 1)).

    Args:
      t: [B] timesteps (int or float).
      dim: embedding width (even; an odd width is zero-padded by one column).
    Returns:
      [B, dim] float32.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1)
    args = jnp.asarray(t, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
               eps: float) -> jax.Array:
    """Group normalisation of NHWC `x` with per-channel affine, stats in float32.

    Two-pass statistics (mean, then the mean of squared deviations) stay exact
    when |mean| >> std, where E[x^2] - E[x]^2 loses all precision in float32.
    Normalisation and affine are folded into one per-(batch, channel)
    multiply-add, so the [B, H, W, C] tensor is read three times and written
    once (as fast as the one-pass form on CPU; see BENCHMARKS.md).

    For x narrower than float32 (bfloat16) the float32 internals are recomputed in
    the backward pass (`jax.checkpoint`) instead of stored: autodiff would otherwise
    keep two float32 copies of x, four times its bfloat16 size, and undo the memory
    saving of bfloat16 activations. float32 x is differentiated as written.

    Args:
      x: [B, H, W, C]; scale, bias: [C]; C divisible by num_groups.
    Returns:
      [B, H, W, C] in x.dtype.
    """
    if x.dtype == jnp.float32:
        return _group_norm(x, scale, bias, num_groups, eps)
    return jax.checkpoint(_group_norm, static_argnums=(3, 4))(x, scale, bias, num_groups, eps)


def _group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
                eps: float) -> jax.Array:
    """`group_norm`'s computation."""
    b, c = x.shape[0], x.shape[-1]
    per = c // num_groups
    xf = x.astype(jnp.float32)
    xg = xf.reshape(b, -1, num_groups, per)
    mean = jnp.mean(xg, axis=(1, 3))                                   # [B, G]
    var = jnp.mean(jnp.square(xg - mean[:, None, :, None]), axis=(1, 3))
    inv_c = jnp.repeat(jax.lax.rsqrt(var + eps), per, axis=1) * scale   # [B, C]
    shift_c = bias - jnp.repeat(mean, per, axis=1) * inv_c
    return (xf * inv_c[:, None, None, :] + shift_c[:, None, None, :]).astype(x.dtype)


class GroupNorm(nn.Module):
    """GroupNorm with parameters `scale`, `bias` of shape [C] (see `group_norm`)."""
    num_groups: int = 32
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        c = x.shape[-1]
        if c % self.num_groups:
            raise ValueError(f"GroupNorm: {c} channels not divisible by {self.num_groups} groups")
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return group_norm(x, scale, bias, self.num_groups, self.eps)


def conv3x3(features: int, name: str, dtype: Dtype, zero: bool = False, stride: int = 1,
            padding: Any = ((1, 1), (1, 1))) -> nn.Conv:
    """A 3x3 NHWC convolution with DDPM initialisation (zero-init if `zero`)."""
    return nn.Conv(features, (3, 3), strides=(stride, stride), padding=padding,
                   kernel_init=zeros_init if zero else default_init, dtype=dtype, name=name)


class ResBlock(nn.Module):
    """DDPM residual block with additive timestep embedding, optionally z-modulated.

    h = conv1(swish(norm1(x))) + temb_proj(swish(temb))
    h = norm2(h)
    h = (1 + s_z) * h + b_z                   (only when zemb is given, see below)
    h = conv2(dropout(swish(h)))              (conv2 zero-initialised)
    out = shortcut(x) + h                     (shortcut: 1x1 conv iff C_in != out_ch)

    z-modulation (PDAE's ResBlockShift, seed 002 brief S1): [s_z, b_z] =
    z_proj(swish(zemb)), z_proj a Dense(2 * out_ch) layer, applied to the normalised
    activations after norm2. Without zemb the block and its parameters are exactly
    DDPM's (no z_proj); with z_proj's kernel and bias at zero it computes the same.
    """
    out_ch: int
    dropout: float = 0.0
    num_groups: int = 32
    eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool = False,
                 zemb: Optional[jax.Array] = None) -> jax.Array:
        """x: [B, H, W, C_in], temb: [B, E], zemb: [B, E_z] or None -> [B, H, W, out_ch]."""
        h = nn.swish(GroupNorm(self.num_groups, self.eps, name="norm1")(x))
        h = conv3x3(self.out_ch, "conv1", self.dtype)(h)
        t = nn.Dense(self.out_ch, kernel_init=default_init, dtype=self.dtype,
                     name="temb_proj")(nn.swish(temb))
        h = h + t[:, None, None, :]
        h = GroupNorm(self.num_groups, self.eps, name="norm2")(h)
        if zemb is not None:
            scale, shift = jnp.split(nn.Dense(2 * self.out_ch, kernel_init=default_init,
                                              dtype=self.dtype, name="z_proj")(nn.swish(zemb)),
                                     2, axis=-1)
            h = h * (1.0 + scale[:, None, None, :]) + shift[:, None, None, :]
        h = nn.swish(h)
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(self.out_ch, "conv2", self.dtype, zero=True)(h)
        if x.shape[-1] != self.out_ch:
            x = nn.Conv(self.out_ch, (1, 1), kernel_init=default_init, dtype=self.dtype,
                        name="shortcut")(x)
        return x + h


class Attention(nn.Module):
    """Single-head self-attention over all H*W positions, with residual.

    out = x + proj_out(softmax(q k^T / sqrt(C)) v), q, k, v = Dense(norm(x)).
    """
    num_groups: int = 32
    eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        b, hh, ww, c = x.shape
        h = GroupNorm(self.num_groups, self.eps, name="norm")(x).reshape(b, hh * ww, c)
        dense = lambda name, init=default_init: nn.Dense(  # noqa: E731
            c, kernel_init=init, dtype=self.dtype, name=name)
        q, k, v = dense("q")(h), dense("k")(h), dense("v")(h)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) * (c ** -0.5)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        h = jnp.einsum("bqk,bkc->bqc", weights, v)
        h = dense("proj_out", zeros_init)(h)
        return x + h.reshape(b, hh, ww, c)


class Downsample(nn.Module):
    """3x3 stride-2 conv with asymmetric padding (0 before, 1 after): H -> H/2."""
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, C] -> [B, H/2, W/2, C]."""
        return conv3x3(x.shape[-1], "conv", self.dtype, stride=2,
                       padding=((0, 1), (0, 1)))(x)


def upsample_nearest(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 upsampling: [B, H, W, C] -> [B, 2H, 2W, C]."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv."""
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, H, W, C] -> [B, 2H, 2W, C]."""
        return conv3x3(x.shape[-1], "conv", self.dtype)(upsample_nearest(x))
