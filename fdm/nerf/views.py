"""Rendering whole views and pixel subsets of a scene from cameras.

Notation:
  A view is H x W pixels of a pinhole camera with focal length f (pixels) and the
  principal point at the image centre (`fdm.nerf.rays`); c2w [..., 4, 4] are
  OpenGL camera-to-world matrices (`fdm.nerf.cameras`). A pixel subset is given
  by flat indices [B, P] into H*W (row-major) or by pixel centres xy [B, P, 2]
  (x = column + 0.5, y = row + 0.5). Renders are `fdm.nerf.render.RenderOutput`s.

`ViewGeometry` is what rendering needs of a scene (also held by
`fdm.data.nerf.SceneData`); `RenderSettings` adds how rays are sampled.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from fdm.nerf import rays as rays_lib
from fdm.nerf import render as render_lib


@flax.struct.dataclass
class ViewGeometry:
    """Image size, pinhole focal length, depth bounds and background of a scene (static).

    forward_facing: an LLFF-style scene (cameras roughly facing one way), else 360-degree.
    """
    height: int = flax.struct.field(pytree_node=False)
    width: int = flax.struct.field(pytree_node=False)
    focal: float = flax.struct.field(pytree_node=False)
    near: float = flax.struct.field(pytree_node=False)
    far: float = flax.struct.field(pytree_node=False)
    white_background: bool = flax.struct.field(pytree_node=False)
    forward_facing: bool = flax.struct.field(pytree_node=False, default=False)


@flax.struct.dataclass
class RenderSettings:
    """A scene's geometry and the ray sampling of its renders (all static).

    num_samples S (coarse), num_importance (fine samples; 0: one pass), lindisp
    (bins linear in inverse depth), ndc (rays in LLFF's NDC space, near 0, far 1),
    chunk (rays per `lax.map` step of `render_views`).
    """
    geometry: ViewGeometry = flax.struct.field(pytree_node=False)
    num_samples: int = flax.struct.field(pytree_node=False)
    num_importance: int = flax.struct.field(pytree_node=False)
    lindisp: bool = flax.struct.field(pytree_node=False)
    ndc: bool = flax.struct.field(pytree_node=False)
    chunk: int = flax.struct.field(pytree_node=False)


def pixel_xy(indices: jax.Array, width: int) -> jax.Array:
    """Pixel centres xy [..., P, 2] (x = column + 0.5, y = row + 0.5) of flat indices [..., P]."""
    return jnp.stack([indices % width, indices // width], -1).astype(jnp.float32) + 0.5


def sample_pixels(rng: jax.Array, batch: int, height: int, width: int, num: int) -> jax.Array:
    """Flat pixel indices [B, P]: P = num uniform draws per image, or all H*W when num = 0."""
    if num <= 0:
        return jnp.broadcast_to(jnp.arange(height * width), (batch, height * width))
    return jax.random.randint(rng, (batch, num), 0, height * width)


def crop_pixels(rng: jax.Array, batch: int, height: int, width: int, num: int,
                frac: float) -> jax.Array:
    """Flat pixel indices [B, P]: P = num uniform draws from the centre window of NeRF's
    precrop, rows H//2 - h .. H//2 + h - 1 with h = max(1, int(H//2 * frac)) (columns
    likewise)."""
    half_h, half_w = (max(1, int(n // 2 * frac)) for n in (height, width))
    k_row, k_col = jax.random.split(rng)
    rows = height // 2 - half_h + jax.random.randint(k_row, (batch, num), 0, 2 * half_h)
    cols = width // 2 - half_w + jax.random.randint(k_col, (batch, num), 0, 2 * half_w)
    return rows * width + cols


def grid_pixels(batch: int, height: int, width: int, stride: int) -> jax.Array:
    """Flat pixel indices [B, P] of a regular grid: rows and columns i * s + s // 2
    (pixel centres i * s + s // 2 + 0.5), i.e. every pixel of an s-times downsampled
    image; P = ceil((H - s//2) / s) * ceil((W - s//2) / s) (all H*W when s = 1)."""
    rows = jnp.arange(stride // 2, height, stride)
    cols = jnp.arange(stride // 2, width, stride)
    flat = (rows[:, None] * width + cols[None, :]).reshape(-1)
    return jnp.broadcast_to(flat, (batch, flat.shape[0]))


def gather_pixels(images: jax.Array, indices: jax.Array) -> jax.Array:
    """images [B, H, W, C], flat indices [B, P] -> [B, P, C]."""
    flat = images.reshape(images.shape[0], -1, images.shape[-1])
    return jnp.take_along_axis(flat, indices[..., None], axis=1)


def make_rays(c2w: jax.Array, xy: jax.Array, rs: RenderSettings):
    """(rays [..., P], near, far) through pixels xy [..., P, 2] of cameras c2w [..., 4, 4];
    in NDC (near 0, far 1) when rs.ndc."""
    g = rs.geometry
    r = rays_lib.rays_from_pixels(c2w, xy, g.focal, g.width / 2.0, g.height / 2.0)
    if rs.ndc:
        return rays_lib.ndc_rays(r, g.height, g.width, g.focal, 1.0), 0.0, 1.0
    return r, g.near, g.far


def render_pixels(field_fn: render_lib.FieldFn, c2w: jax.Array, xy: jax.Array,
                  rs: RenderSettings, rng,
                  fine_fn: render_lib.FieldFn | None = None) -> list[render_lib.RenderOutput]:
    """Renders pixels xy [B, P, 2] from cameras c2w [B, 4, 4] (stratified with rng, bin
    midpoints when None): [coarse] or [coarse, fine], fields [B, P, ...]; fine_fn: a
    separate fine network (None: field_fn for both passes)."""
    r, near, far = make_rays(c2w, xy, rs)
    white = rs.geometry.white_background
    if rs.num_importance > 0:
        return list(render_lib.render_rays_hierarchical(
            field_fn, r, near, far, rs.num_samples, rs.num_importance, rng, white, rs.lindisp,
            fine_fn))
    return [render_lib.render_rays(field_fn, r, near, far, rs.num_samples, rng, white,
                                   rs.lindisp)]


def render_views(field_fn: render_lib.FieldFn, c2w: jax.Array, rs: RenderSettings,
                 fine_fn: render_lib.FieldFn | None = None) -> render_lib.RenderOutput:
    """Full images from cameras c2w [..., 4, 4] (chunked, bin midpoints): fields [..., H, W];
    fine_fn: a separate fine network (None: field_fn for both passes)."""
    g = rs.geometry
    xy = rays_lib.pixel_centers(g.height, g.width).reshape(-1, 2)
    r, near, far = make_rays(c2w, xy, rs)
    out = render_lib.render_image(field_fn, r, rs.chunk, near=near, far=far,
                                  num_samples=rs.num_samples, num_importance=rs.num_importance,
                                  white_background=g.white_background, lindisp=rs.lindisp,
                                  fine_fn=fine_fn)
    shape = c2w.shape[:-2] + (g.height, g.width)
    return jax.tree_util.tree_map(lambda a: a.reshape(shape + a.shape[len(c2w.shape) - 1:]), out)
