"""The Locally Masked PixelCNN (seed 004 §2.5; the authors' `OurPixelCNN` with
`-k 3 --normalization pono -dp 0`): a one-stream PixelCNN++ whose convolutions are
LMConvs, so one set of weights models the image under any generation order.

Notation: x [B, H, W, C] in [-1, 1], F = `features` filters, R = `num_res` gated ResNet
blocks per stage, masks: `fdm.nn.lmconv.LMConvMasks` of one order (each [k², H, W]).

  input [x, 1] -> LMConv_F (mask A) -> PONO                                    u_0
  up pass:   3 stages of R gated ResNets (mask B); between stages an LMConv_F with
             dilation d + PONO instead of down-sampling (every output kept: 3R + 3)
  down pass: stages of R, R + 1, R + 1 gated ResNets, each taking the newest unused
             up-pass output as skip; between stages a dilated LMConv_F + PONO
  output:    ELU -> 1x1 conv -> `out_channels` per pixel
Gated ResNet: h = PONO(LMConv_F(concat_elu x)) [+ nin(concat_elu skip)];
  (a, b) = LMConv_2F(concat_elu h); out = x + PONO(a) σ(b).
Normalisation is PONO (positional normalisation: over the channels of each pixel, eps
1e-5, no affine, `pono`), never a spatial one: GroupNorm / BatchNorm statistics mix pixels and
leak later pixels of the order into earlier ones. No weight norm, no dropout.
F = 160, R = 5, k = 3 has 46.07M parameters for RGB with 10 mixtures (the paper's ≈46M).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.nn.lmconv import DEFAULT_METHOD, LMConv, LMConvMasks

PONO_EPS = 1e-5


def pono(x: jax.Array, eps: float = PONO_EPS) -> jax.Array:
    """Positional normalisation: x [..., C] standardised over C at each pixel, with the
    unbiased variance (the authors' `x.var(dim=1)`): (x - mean) / sqrt(var + eps)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.sum(jnp.square(x - mean), axis=-1, keepdims=True) / (x.shape[-1] - 1)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def concat_elu(x: jax.Array) -> jax.Array:
    """ELU of [x, -x] along the channels: [..., C] -> [..., 2C]."""
    return nn.elu(jnp.concatenate([x, -x], axis=-1))


class GatedResNet(nn.Module):
    """x [B, H, W, F], mask [k², H, W], optional skip [B, H, W, F] -> [B, H, W, F]."""
    features: int
    kernel_size: int = 3
    method: str = DEFAULT_METHOD

    @nn.compact
    def __call__(self, x, mask, skip=None):
        conv = lambda f, name: LMConv(f, self.kernel_size, method=self.method, name=name)
        h = pono(conv(self.features, "conv_in")(concat_elu(x), mask))
        if skip is not None:
            h = h + nn.Dense(self.features, name="nin_skip")(concat_elu(skip))
        a, b = jnp.split(conv(2 * self.features, "conv_out")(concat_elu(h), mask), 2, axis=-1)
        return x + pono(a) * jax.nn.sigmoid(b)


class LocallyMaskedPixelCNN(nn.Module):
    """__call__(x [B, H, W, C], masks: LMConvMasks) -> [B, H, W, out_channels] (module doc)."""
    out_channels: int
    features: int = 160
    num_res: int = 5
    kernel_size: int = 3
    dilation: int = 2
    method: str = DEFAULT_METHOD

    def _dilated(self, u, mask, name):
        return pono(LMConv(self.features, self.kernel_size, self.dilation, self.method,
                           name=name)(u, mask))

    def _block(self, name):
        return GatedResNet(self.features, self.kernel_size, self.method, name=name)

    @nn.compact
    def __call__(self, x: jax.Array, masks: LMConvMasks) -> jax.Array:
        x = jnp.concatenate([x, jnp.ones(x.shape[:3] + (1,), x.dtype)], axis=-1)
        us = [pono(LMConv(self.features, self.kernel_size, method=self.method,
                          name="conv_init")(x, masks.first))]
        for stage in range(3):
            for i in range(self.num_res):
                us.append(self._block(f"up{stage}_{i}")(us[-1], masks.later))
            if stage < 2:
                us.append(self._dilated(us[-1], masks.dilated, f"up{stage}_dilated"))
        u = us.pop()
        for stage, depth in enumerate((self.num_res, self.num_res + 1, self.num_res + 1)):
            for i in range(depth):
                u = self._block(f"down{stage}_{i}")(u, masks.later, skip=us.pop())
            if stage < 2:
                u = self._dilated(u, masks.dilated, f"down{stage}_dilated")
        return nn.Dense(self.out_channels, name="nin_out")(nn.elu(u))


__all__ = ["GatedResNet", "LocallyMaskedPixelCNN", "PONO_EPS", "concat_elu", "pono"]
