"""Locally masked convolution, LMConv (seed 004 §2.4, Alg. 1-2; Jain et al. 2020).

Notation: x [B, H, W, C_in] (NHWC), kernel [k, k, C_in, C_out] (HWIO, as flax `Conv`),
odd k, dilation d, tap t = (Δr + ⌊k/2⌋) k + (Δc + ⌊k/2⌋) for offsets Δr, Δc in
[-⌊k/2⌋, ⌊k/2⌋]. A *mask* [k², H, W] holds, for each tap and output pixel (r, c),
whether the input feature at (r + dΔr, c + dΔc) may be read (Alg. 2 with the +⌊k/2⌋
index fix of the brief): it may iff that pixel lies inside the image and was generated
before (r, c) in the order; mask A (first layer) closes the centre tap, mask B (later
layers) opens it. The same mask applies to every input channel.

Alg. 1: y[b, r, c] = Σ_t mask[t, r, c] · x_pad[b, r + dΔr_t, c + dΔc_t] · kernel[t] + bias,
i.e. Y = W (M ⊙ im2col(pad x)) + b. Two implementations (`METHODS`), equal to float
rounding:
  "shifted"  the sum of k² shifted, per-pixel-masked matmuls [BHW, C_in] x [C_in, C_out];
             never holds the k²-sized patch tensor (memory of a plain convolution).
  "im2col"   the k² shifted views stacked into the [B, H, W, k², C_in] patch tensor -> mask
             -> one matmul (Alg. 1, Fig. 5.4's unfold).
benchmarks/lmconv_step.py times both (BENCHMARKS.md): a training step of the paper's
network at batch 4 takes 8 % less CPU time with "shifted" (`DEFAULT_METHOD`); on tiny
inputs (8x8, F = 32, or batch 1) "im2col" is 10-20 % faster (one large matmul instead of
k² small ones; the CPU configs of configs/lmconv.py use it). Autodiff keeps the masked
windows for the weight gradient in both (the authors' custom backward recomputes them).

Masks are built once per order (`order_masks`, from the order's rank grid; in jax, so a
traced order works too: one compiled sampler serves every order); `LMConvMasks` carries
the three a Locally Masked PixelCNN uses (mask A, mask B, mask B dilated).
"""
from __future__ import annotations

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("shifted", "im2col")
DEFAULT_METHOD = "shifted"


def order_masks(ranks: jax.Array, kernel_size: int, dilation: int = 1,
                first_layer: bool = False) -> jax.Array:
    """Alg. 2: float32 [k², H, W] masks of one order, from its rank grid [H, W] (the step
    at which each pixel is generated; numpy or traced).

    Taps outside the image get 0; the centre tap is 0 with `first_layer` (mask A), else
    1 (mask B)."""
    if kernel_size % 2 != 1:
        raise ValueError(f"LMConv needs an odd kernel size, got {kernel_size}")
    ranks = jnp.asarray(ranks)
    height, width = ranks.shape
    pad = dilation * (kernel_size // 2)
    padded = jnp.pad(ranks, pad, constant_values=height * width)   # never generated before
    taps = [padded[dilation * i:dilation * i + height, dilation * j:dilation * j + width]
            < ranks for i in range(kernel_size) for j in range(kernel_size)]
    centre = kernel_size ** 2 // 2
    return jnp.stack(taps).astype(jnp.float32).at[centre].set(0.0 if first_layer else 1.0)


@flax.struct.dataclass
class LMConvMasks:
    """The masks of one order for a Locally Masked PixelCNN, each float32 [k², H, W]
    (with a leading [K] axis when stacked for K orders, `stack_masks`):
    first = mask A (input layer), later = mask B, dilated = mask B at the dilation."""
    first: jax.Array
    later: jax.Array
    dilated: jax.Array

    def select(self, index) -> "LMConvMasks":
        """The masks of order `index` (an int or traced int32 []) of stacked masks."""
        return jax.tree_util.tree_map(lambda m: m[index], self)


def masks_for_order(order: jax.Array, height: int, width: int, kernel_size: int,
                    dilation: int) -> LMConvMasks:
    """LMConvMasks of the order π [D] (flat pixel indices in generation order; numpy or
    traced, so that one compiled sampler serves every order)."""
    d = height * width
    ranks = jnp.zeros(d, jnp.int32).at[jnp.asarray(order)].set(jnp.arange(d, dtype=jnp.int32))
    ranks = ranks.reshape(height, width)
    return LMConvMasks(first=order_masks(ranks, kernel_size, 1, first_layer=True),
                       later=order_masks(ranks, kernel_size, 1),
                       dilated=order_masks(ranks, kernel_size, dilation))


def stack_masks(orders: np.ndarray, height: int, width: int, kernel_size: int,
                dilation: int) -> LMConvMasks:
    """LMConvMasks with a leading axis [K] for the orders [K, D]."""
    each = [masks_for_order(o, height, width, kernel_size, dilation) for o in orders]
    return jax.tree_util.tree_map(lambda *m: jnp.stack(m), *each)


def locally_masked_conv(x: jax.Array, mask: jax.Array, kernel: jax.Array, dilation: int = 1,
                        method: str = DEFAULT_METHOD) -> jax.Array:
    """Alg. 1 without bias: x [B, H, W, C_in], mask [k², H, W], kernel [k, k, C_in, C_out]
    -> [B, H, W, C_out] (same padding, stride 1)."""
    if method == "shifted":
        return _shifted(x, mask, kernel, dilation)
    if method == "im2col":
        return _im2col(x, mask, kernel, dilation)
    raise ValueError(f"unknown LMConv method {method!r}; use one of {METHODS}")


def _windows(x, k, dilation):
    """The k² shifted views of zero-padded x [B, H, W, C] ([B, H, W, C] each), tap order."""
    height, width = x.shape[1], x.shape[2]
    pad = dilation * (k // 2)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return [padded[:, dilation * i:dilation * i + height, dilation * j:dilation * j + width]
            for i in range(k) for j in range(k)]


def _shifted(x, mask, kernel, dilation):
    """Σ_t (mask_t ⊙ shift_t(x)) @ kernel_t: k² matmuls of the input's size."""
    k = kernel.shape[0]
    terms = [jnp.dot(window * mask[t][None, :, :, None], kernel[t // k, t % k])
             for t, window in enumerate(_windows(x, k, dilation))]
    return sum(terms[1:], terms[0])


def _im2col(x, mask, kernel, dilation):
    """W (M ⊙ im2col(pad x)): the [B, H, W, k², C_in] patch tensor, one matmul."""
    k, c_in = kernel.shape[0], kernel.shape[2]
    patches = jnp.stack(_windows(x, k, dilation), axis=3)
    patches = patches * jnp.transpose(mask, (1, 2, 0))[None, :, :, :, None]
    return jnp.einsum("bhwtc,tco->bhwo", patches, kernel.reshape(k * k, c_in, -1))


def _uniform(bound: float):
    """Initialiser U(-bound, bound)."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                    -bound, bound)


class LMConv(nn.Module):
    """Locally masked k x k convolution (Alg. 1): __call__(x [B, H, W, C_in], mask [k², H,
    W]) -> [B, H, W, features]; parameters 'kernel' [k, k, C_in, features], 'bias'."""
    features: int
    kernel_size: int = 3
    dilation: int = 1
    method: str = DEFAULT_METHOD

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        k, c_in = self.kernel_size, x.shape[-1]
        bound = 1.0 / math.sqrt(k * k * c_in)     # PyTorch's Conv2d init (the authors')
        kernel = self.param("kernel", _uniform(bound), (k, k, c_in, self.features))
        bias = self.param("bias", _uniform(bound), (self.features,))
        y = locally_masked_conv(x, mask.astype(x.dtype), kernel, self.dilation, self.method)
        return y + bias


__all__ = ["DEFAULT_METHOD", "LMConv", "LMConvMasks", "METHODS", "locally_masked_conv",
           "masks_for_order", "order_masks", "stack_masks"]
