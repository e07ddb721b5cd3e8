"""DiffSiam's SimSiam branch (seed 002 Eq. 3.9-3.10; brief `shared/design/seed002.md`
D3, D5, D8): the two augmented views, written in JAX, and the projector / predictor
heads. The loss itself is `fdm.diffusion.pdae.simsiam_loss`.

Views (brief D8, SimSiam's CIFAR recipe), per example, on images x [S, S, C] in
[-1, 1], each view a pure function of its key:

    random resized crop: area fraction a ~ U[crop_scale], aspect r = exp(U[log 3/4,
        log 4/3)), side fractions w = sqrt(a r), h = sqrt(a / r) (clipped to 1; torchvision
        retries 10 times and then falls back to a centre crop), offset uniform, resampled
        bilinearly back to S x S;
    horizontal flip with probability 1/2;
    colour jitter with probability jitter_prob: brightness, contrast, saturation
        factors ~ U[1 - s, 1 + s] and a hue shift ~ U[-s_h, s_h] turns (HSV), applied
        in this fixed order (torchvision draws the order at random), each clipped to
        [0, 1] as torchvision does (1-channel images: brightness and contrast only);
    grayscale with probability gray_prob (0.299 R + 0.587 G + 0.114 B, 3 channels).
`colour_views` applies the colour jitter alone, always (the invariance evaluation).

Heads (SimSiam, on z [B, d]):

    projector: Dense(D) -> norm -> relu -> Dense(D) -> norm -> relu -> Dense(D) -> norm
               (the last norm without scale and bias; Dense layers without bias)
    predictor: Dense(H) -> norm -> relu -> Dense(D)       (bottleneck H < D)

norm = "batch": BatchNorm with the batch's own statistics and no running averages.
The heads are discarded after training, so no statistics need to be kept (the trainer
has none, brief D5); under jit over a data-sharded batch the mean and variance are
global, i.e. SyncBN. norm = "group": GroupNorm of the D (or H) features of each
example in `groups` groups (per example, no batch coupling).
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from fdm.errors import UserError

HEAD_NORMS = ("batch", "group")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@flax.struct.dataclass
class ViewSpec:
    """The augmentation of one view (module docstring); all static.

    crop_scale: (a_min, a_max) area fractions of the crop; jitter: (brightness,
    contrast, saturation, hue) strengths; jitter_prob, gray_prob: probabilities."""
    crop_scale: tuple = flax.struct.field(pytree_node=False, default=(0.2, 1.0))
    jitter: tuple = flax.struct.field(pytree_node=False, default=(0.4, 0.4, 0.4, 0.1))
    jitter_prob: float = flax.struct.field(pytree_node=False, default=0.8)
    gray_prob: float = flax.struct.field(pytree_node=False, default=0.2)


def view_spec_from_config(m) -> ViewSpec:
    """ViewSpec from model.{aug_crop_scale, aug_jitter, aug_jitter_prob, aug_gray_prob}."""
    return ViewSpec(tuple(float(v) for v in m.aug_crop_scale),
                    tuple(float(v) for v in m.aug_jitter), float(m.aug_jitter_prob),
                    float(m.aug_gray_prob))


# ---------------------------------------------------------------------------- geometry


def crop_window(key: jax.Array, scale: Sequence[float],
                ratio: Sequence[float] = (3 / 4, 4 / 3)) -> jax.Array:
    """(y0, x0, h, w) [4] of a random resized crop as fractions of the side (module
    docstring): h, w in (0, 1], y0 in [0, 1 - h], x0 in [0, 1 - w]."""
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (), minval=scale[0], maxval=scale[1])
    aspect = jnp.exp(jax.random.uniform(k_ratio, (), minval=math.log(ratio[0]),
                                        maxval=math.log(ratio[1])))
    w = jnp.minimum(jnp.sqrt(area * aspect), 1.0)
    h = jnp.minimum(jnp.sqrt(area / aspect), 1.0)
    return jnp.stack([jax.random.uniform(k_y) * (1.0 - h), jax.random.uniform(k_x) * (1.0 - w),
                      h, w])


def resized_crop(x: jax.Array, window: jax.Array) -> jax.Array:
    """The crop `window` = (y0, x0, h, w) (side fractions) of x [S, S, C] resampled
    bilinearly to [S, S, C] (pixel centres: output pixel i reads source coordinate
    (y0 + (i + 1/2) h / S) S - 1/2; borders clamp)."""
    size = x.shape[0]
    centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    ys = (window[0] + centres * window[2]) * size - 0.5
    xs = (window[1] + centres * window[3]) * size - 0.5
    grid_y, grid_x = jnp.meshgrid(ys, xs, indexing="ij")
    channel = lambda c: map_coordinates(c, [grid_y, grid_x], order=1, mode="nearest")  # noqa: E731
    return jax.vmap(channel, in_axes=-1, out_axes=-1)(x)


# ---------------------------------------------------------------------------- colour


def grayscale(x: jax.Array) -> jax.Array:
    """Luma [..., 1] of RGB x [..., 3] in [0, 1] (ITU-R 601, torchvision's weights)."""
    return jnp.sum(x * jnp.asarray(GRAY_WEIGHTS, x.dtype), axis=-1, keepdims=True)


def rgb_to_hsv(x: jax.Array) -> jax.Array:
    """RGB [..., 3] in [0, 1] -> HSV [..., 3], hue in turns [0, 1) (0 where grey)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc, minc = jnp.max(x, axis=-1), jnp.min(x, axis=-1)
    delta = maxc - minc
    safe = jnp.where(delta > 0, delta, 1.0)
    hue = jnp.where(maxc == r, jnp.mod((g - b) / safe, 6.0),
                    jnp.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = jnp.where(delta > 0, hue / 6.0, 0.0)
    sat = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
    return jnp.stack([hue, sat, maxc], axis=-1)


def hsv_to_rgb(x: jax.Array) -> jax.Array:
    """HSV [..., 3] (hue in turns, any real) -> RGB [..., 3]."""
    h, s, v = jnp.mod(x[..., 0], 1.0), x[..., 1], x[..., 2]
    sector = jnp.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = jnp.mod(sector, 6.0).astype(jnp.int32)
    r = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [v, q, p, p, t], v)
    g = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [t, v, v, q, p], p)
    b = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [p, p, t, v, v], q)
    return jnp.stack([r, g, b], axis=-1)


def color_jitter(key: jax.Array, x: jax.Array, strength: Sequence[float]) -> jax.Array:
    """Brightness, contrast, saturation, hue jitter (module docstring) of x [S, S, C]
    in [0, 1]; strength = (b, c, s, h). Returns [S, S, C] in [0, 1]."""
    kb, kc, ks, kh = jax.random.split(key, 4)
    factor = lambda k, s: jax.random.uniform(k, (), minval=1.0 - s, maxval=1.0 + s)  # noqa: E731
    rgb = x.shape[-1] == 3
    x = jnp.clip(x * factor(kb, strength[0]), 0.0, 1.0)
    mean = jnp.mean(grayscale(x) if rgb else x)
    x = jnp.clip(mean + (x - mean) * factor(kc, strength[1]), 0.0, 1.0)
    if not rgb:
        return x
    gray = grayscale(x)
    x = jnp.clip(gray + (x - gray) * factor(ks, strength[2]), 0.0, 1.0)
    shift = jax.random.uniform(kh, (), minval=-strength[3], maxval=strength[3])
    hsv = rgb_to_hsv(x)
    return jnp.clip(hsv_to_rgb(hsv.at[..., 0].add(shift)), 0.0, 1.0)


# ---------------------------------------------------------------------------- views


def augment(key: jax.Array, x: jax.Array, spec: ViewSpec) -> jax.Array:
    """One view of one image x [S, S, C] in [-1, 1] (module docstring) -> [S, S, C]."""
    if x.shape[0] != x.shape[1]:
        raise UserError(f"the SimSiam views need square images; got {x.shape[:2]}")
    k_crop, k_flip, k_jit, k_apply, k_gray = jax.random.split(key, 5)
    x = resized_crop(x, crop_window(k_crop, spec.crop_scale))
    x = jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)
    x01 = (x + 1.0) / 2.0
    jittered = color_jitter(k_jit, x01, spec.jitter)
    x01 = jnp.where(jax.random.bernoulli(k_apply, spec.jitter_prob), jittered, x01)
    if x.shape[-1] == 3:
        gray = jnp.broadcast_to(grayscale(x01), x01.shape)
        x01 = jnp.where(jax.random.bernoulli(k_gray, spec.gray_prob), gray, x01)
    return x01 * 2.0 - 1.0


def _per_example(key: jax.Array, x: jax.Array, fn) -> jax.Array:
    """fn(fold_in(key, b), x[b]) for every example b of x [B, ...], stacked."""
    keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(x.shape[0]))
    return jax.vmap(fn)(keys, x)


def two_views(key: jax.Array, x: jax.Array, spec: ViewSpec) -> tuple[jax.Array, jax.Array]:
    """The two views (v1, v2) [B, S, S, C] of a batch x [B, S, S, C] in [-1, 1]: example
    b of view i uses the key fold_in(fold_in(key, i), b)."""
    view = lambda i: _per_example(jax.random.fold_in(key, i), x,  # noqa: E731
                                  lambda k, im: augment(k, im, spec))
    return view(1), view(2)


def colour_views(key: jax.Array, x: jax.Array, spec: ViewSpec) -> jax.Array:
    """The views' colour jitter alone, always applied (no crop, flip or grayscale), of a
    batch x [B, S, S, C] in [-1, 1] -> [B, S, S, C]; example b uses fold_in(key, b)."""
    def jitter(k, im):
        return color_jitter(k, (im + 1.0) / 2.0, spec.jitter) * 2.0 - 1.0
    return _per_example(key, x, jitter)


# ---------------------------------------------------------------------------- heads


class BatchStatNorm(nn.Module):
    """BatchNorm over the batch axis with the batch's own statistics (no running
    averages; module docstring). x: [B, D] -> [B, D]; scale and bias when `affine`."""
    affine: bool = True
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mean = jnp.mean(x, axis=0, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=0, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        if not self.affine:
            return y
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        return y * scale + bias


def head_norm(kind: str, groups: int, affine: bool = True, name: str | None = None) -> nn.Module:
    """The heads' normalisation of [B, D] features: "batch" (`BatchStatNorm`) or "group"
    (GroupNorm in `groups` groups of each example's features)."""
    if kind == "batch":
        return BatchStatNorm(affine, name=name)
    if kind == "group":
        return nn.GroupNorm(num_groups=groups, epsilon=1e-5, use_scale=affine,
                            use_bias=affine, name=name)
    raise UserError(f"model.head_norm={kind!r}; use one of {list(HEAD_NORMS)}")


class Projector(nn.Module):
    """SimSiam's 3-layer projector (module docstring): z [B, d] -> [B, dim]."""
    dim: int = 2048
    norm: str = "batch"
    groups: int = 32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z.astype(jnp.float32)
        for i in range(2):
            h = nn.Dense(self.dim, use_bias=False, name=f"dense_{i}")(h)
            h = nn.relu(head_norm(self.norm, self.groups, name=f"norm_{i}")(h))
        h = nn.Dense(self.dim, use_bias=False, name="dense_2")(h)
        return head_norm(self.norm, self.groups, affine=False, name="norm_2")(h)


class Predictor(nn.Module):
    """SimSiam's bottleneck predictor (module docstring): [B, dim] -> [B, dim]."""
    dim: int = 2048
    hidden: int = 512
    norm: str = "batch"
    groups: int = 32

    @nn.compact
    def __call__(self, p: jax.Array) -> jax.Array:
        h = nn.Dense(self.hidden, use_bias=False, name="dense_0")(p)
        h = nn.relu(head_norm(self.norm, self.groups, name="norm_0")(h))
        return nn.Dense(self.dim, name="dense_1")(h)


class SimSiamHeads(nn.Module):
    """Projector then predictor: z [B, d] -> (projection [B, dim], prediction [B, dim]);
    params {'projector', 'predictor'}."""
    dim: int = 2048
    hidden: int = 512
    norm: str = "batch"
    groups: int = 32

    @nn.compact
    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        proj = Projector(self.dim, self.norm, self.groups, name="projector")(z)
        return proj, Predictor(self.dim, self.hidden, self.norm, self.groups,
                               name="predictor")(proj)
