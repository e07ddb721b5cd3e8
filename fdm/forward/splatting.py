"""Forward softmax splatting (Niklaus & Liu, "Softmax Splatting for Video Frame
Interpolation", CVPR 2020): every source pixel is pushed along its flow vector and
spread bilinearly over the four target pixels around where it lands.

Notation:
  I     the source image [B, H, W, C].
  F     the flow [B, H, W, 2] in pixels, (x, y) order: F[..., 0] moves a pixel along the
        columns (right is +), F[..., 1] along the rows (down is +); the optical-flow
        convention, not the (row, column) order of crop offsets.
  Z     the importance metric [B, H, W] (brief D7: the paper leaves it open; Z = 0, the
        default, is average splatting).
  b     the bilinear kernel b(d) = max(0, 1 - |d_x|) max(0, 1 - |d_y|).

Summation splatting of a field X over the source pixels p, at a
target pixel q:

    sum_splat(X)[q] = sum_p b(q - (p + F[p])) X[p]

and softmax splatting, the output [B, H, W, C]:

    splat(I, F, Z)[q] = sum_splat(exp(Z) I)[q] / sum_splat(exp(Z))[q]

where the denominator exceeds `eps`, and 0 where it does not (no source pixel lands near
q, e.g. the strip a global motion uncovers). Target positions outside the H x W grid
receive nothing. exp(Z) is taken as exp(Z - max Z) per image (the ratio is unchanged; it
keeps exp finite), so `eps` is relative to the image's largest weight.

Pure JAX (a scatter-add of the four corners), jittable, differentiable in I, F and Z:
the corners come from floor (no gradient), the weights are piecewise linear in F.
An integer flow is exact: a uniform integer flow (dx, dy) shifts the image, q = p + (dx,
dy), and leaves 0 on the uncovered strip.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-7


def _corners(flow: jax.Array):
    """The four bilinear corners of the landing positions p + F[p]: a list of (index
    int [B, H*W] into the flattened H x W grid, weight [B, H*W]), weight 0 for corners
    outside the grid (their index is clamped to 0)."""
    b, h, w, _ = flow.shape
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=flow.dtype), jnp.arange(w, dtype=flow.dtype),
                          indexing="ij")
    tx = (xs[None] + flow[..., 0]).reshape(b, -1)
    ty = (ys[None] + flow[..., 1]).reshape(b, -1)
    x0, y0 = jnp.floor(tx), jnp.floor(ty)
    out = []
    for cx, wx in ((x0, 1.0 - (tx - x0)), (x0 + 1.0, tx - x0)):
        for cy, wy in ((y0, 1.0 - (ty - y0)), (y0 + 1.0, ty - y0)):
            inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            index = jnp.where(inside, cy * w + cx, 0).astype(jnp.int32)
            out.append((index, jnp.where(inside, wx * wy, 0.0)))
    return out


def summation_splat(values: jax.Array, flow: jax.Array) -> jax.Array:
    """sum_splat(X) [B, H, W, K] (module doc) of values X [B, H, W, K] moved by flow
    F [B, H, W, 2]."""
    b, h, w, k = values.shape
    flat = values.reshape(b, h * w, k)
    rows = jnp.arange(b)[:, None]
    out = jnp.zeros_like(flat)
    for index, weight in _corners(flow):
        out = out.at[rows, index].add(weight[..., None] * flat)
    return out.reshape(b, h, w, k)


def softmax_splat(image: jax.Array, flow: jax.Array, importance: jax.Array | None = None,
                  eps: float = EPS) -> jax.Array:
    """splat(I, F, Z) [B, H, W, C] (module doc) of image I [B, H, W, C]
    by flow F [B, H, W, 2] ((x, y) order, pixels) with importance Z [B, H, W] (None: Z = 0,
    average splatting, brief D7); 0 where the splatted weight is <= eps."""
    if importance is None:
        importance = jnp.zeros(image.shape[:-1], image.dtype)
    top = jax.lax.stop_gradient(jnp.max(importance, axis=(1, 2), keepdims=True))
    scale = jnp.exp(importance - top)[..., None]
    both = summation_splat(jnp.concatenate([scale * image, scale], axis=-1), flow)
    numerator, weight = both[..., :-1], both[..., -1:]
    covered = weight > eps
    return jnp.where(covered, numerator / jnp.where(covered, weight, 1.0), 0.0)
