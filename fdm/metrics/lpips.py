"""LPIPS perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness
of Deep Features as a Perceptual Metric"), version 0.1, in Flax, NHWC.

Notation
  x0, x1  float32 [N, H, W, 3]   images in [-1, 1]
  F_l     float32 [N, H_l, W_l, C_l]  ReLU output l = 1..5 of the trunk (AlexNet
          relu1..relu5 or VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) applied
          to the scaled input (x - shift) / scale, shift = (-.030, -.088, -.188),
          scale = (.458, .448, .450)
  F̂_l = F_l / (||F_l||_2 over channels + 1e-10)       unit-normalised features
  w_l     float32 [C_l]          linear head of layer l (a 1x1 conv, no bias)

  d(x0, x1) = Σ_l mean_{h,w} Σ_c w_l[c] (F̂_l(x0) - F̂_l(x1))²[h, w, c]     [N]

Trunk convolutions are named by their index in torchvision's `features`
Sequential (`features_3` = `features.3`), heads `lin0..lin4` as in the `lpips`
package, so converting the public weights is a renaming.
"""
from __future__ import annotations

import functools
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fdm.metrics.inception import fixed_size_batches

# Per tapped stage: (max pool (window, stride) before the stage or None,
# convs as (torchvision features index, out channels, kernel, stride, padding)).
_STAGES = {
    "alex": (
        (None, ((0, 64, 11, 4, 2),)),
        ((3, 2), ((3, 192, 5, 1, 2),)),
        ((3, 2), ((6, 384, 3, 1, 1),)),
        (None, ((8, 256, 3, 1, 1),)),
        (None, ((10, 256, 3, 1, 1),)),
    ),
    "vgg": (
        (None, ((0, 64, 3, 1, 1), (2, 64, 3, 1, 1))),
        ((2, 2), ((5, 128, 3, 1, 1), (7, 128, 3, 1, 1))),
        ((2, 2), ((10, 256, 3, 1, 1), (12, 256, 3, 1, 1), (14, 256, 3, 1, 1))),
        ((2, 2), ((17, 512, 3, 1, 1), (19, 512, 3, 1, 1), (21, 512, 3, 1, 1))),
        ((2, 2), ((24, 512, 3, 1, 1), (26, 512, 3, 1, 1), (28, 512, 3, 1, 1))),
    ),
}
NETS = tuple(_STAGES)
_SHIFT = jnp.array([-0.030, -0.088, -0.188], jnp.float32)
_SCALE = jnp.array([0.458, 0.448, 0.450], jnp.float32)
_PRECISION = jax.lax.Precision.HIGHEST


def _unit_normalize(f: jax.Array, eps: float = 1e-10) -> jax.Array:
    """[N,H,W,C] divided by its L2 norm over C (+eps), as lpips.normalize_tensor."""
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1.  (x0, x1) [N,H,W,3] in [-1,1] -> distances [N].  net: "alex" | "vgg"."""
    net: str = "alex"

    @nn.compact
    def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
        n = x0.shape[0]
        h = (jnp.concatenate([x0, x1]) - _SHIFT) / _SCALE
        distance = jnp.zeros((n,), jnp.float32)
        for l, (pool, convs) in enumerate(_STAGES[self.net]):
            if pool is not None:
                h = nn.max_pool(h, (pool[0], pool[0]), strides=(pool[1], pool[1]))
            for index, features, kernel, stride, pad in convs:
                h = nn.relu(nn.Conv(features, (kernel, kernel), strides=stride,
                                    padding=((pad, pad), (pad, pad)), precision=_PRECISION,
                                    name=f"features_{index}")(h))
            f = _unit_normalize(h)
            diff = (f[:n] - f[n:]) ** 2
            head = nn.Conv(1, (1, 1), use_bias=False, precision=_PRECISION, name=f"lin{l}")
            distance = distance + jnp.mean(head(diff), axis=(1, 2, 3))
        return distance


def variable_shapes(net: str) -> Mapping:
    """Shape/dtype tree of LPIPS(net)'s variables ({'params': ...}); no compute."""
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    return jax.eval_shape(LPIPS(net).init, jax.random.PRNGKey(0), x, x)


@functools.partial(jax.jit, static_argnames=("net",))
def _distance(variables: Mapping, pairs: jax.Array, net: str) -> jax.Array:
    """pairs [B, 2, H, W, 3] -> [B]."""
    return LPIPS(net).apply(variables, pairs[:, 0], pairs[:, 1])


def compute_lpips(images0: np.ndarray, images1: np.ndarray, variables: Mapping,
                  net: str = "alex", batch_size: int = 32) -> np.ndarray:
    """Per-pair LPIPS distances float32 [N] of images0, images1 [N,H,W,3] in [-1,1].

    variables: `fdm.metrics.weights.load_metric_variables(path, f"lpips_{net}")`.
    """
    if images0.shape != images1.shape:
        raise ValueError(f"image batches differ in shape: {images0.shape} vs {images1.shape}")
    pairs = np.stack([images0, images1], axis=1)
    out = [np.asarray(_distance(variables, batch, net))[:k]
           for batch, k in fixed_size_batches(pairs, batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
