"""Camera rays from pinhole intrinsics and camera-to-world matrices.

Notation:
  H, W      image height and width in pixels; pixel (row v, column u).
  focal     focal length in pixels (square pixels: fx = fy = focal).
  cx, cy    principal point in pixels (default W / 2, H / 2).
  c2w       camera-to-world [..., 4, 4] or [..., 3, 4] (OpenGL: camera looks
            down -z, +y is image up; see `fdm.nerf.cameras`).
Pixel centres sit at (u + 0.5, v + 0.5), so the camera-frame direction of
pixel (v, u) is ((u + 0.5 - cx) / focal, -(v + 0.5 - cy) / focal, -1).
Directions are NOT normalised: their camera-frame z is -1, so a ray parameter
t is the depth along the optical axis (near/far bounds are depths, as in NeRF);
`viewdirs` holds the unit directions used for view dependence.
Everything is linear in c2w, hence differentiable with respect to it.

Forward-facing (LLFF) scenes can be rendered either in world space between
the bounds of `poses_bounds.npy` (`SceneData.near/far`), or in normalised
device coordinates with `ndc_rays` and near = 0, far = 1 (as in NeRF).
"""
import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Rays:
    """A batch of rays; all fields share the leading shape [...]."""
    origins: jax.Array     # [..., 3]
    directions: jax.Array  # [..., 3] camera-frame z = -1 (t is depth)
    viewdirs: jax.Array    # [..., 3] unit length


def pixel_centers(height: int, width: int) -> jax.Array:
    """Pixel centres [H, W, 2] as (x = u + 0.5, y = v + 0.5)."""
    u, v = jnp.meshgrid(jnp.arange(width), jnp.arange(height), indexing="xy")
    return jnp.stack([u, v], -1).astype(jnp.float32) + 0.5


def camera_directions(xy: jax.Array, focal, cx, cy) -> jax.Array:
    """Camera-frame ray directions [..., 3] of image points xy [..., 2] (pixels)."""
    x = (xy[..., 0] - cx) / focal
    y = -(xy[..., 1] - cy) / focal
    return jnp.stack([x, y, -jnp.ones_like(x)], -1)


def rays_from_pixels(c2w: jax.Array, xy: jax.Array, focal, cx, cy) -> Rays:
    """Rays through image points xy seen by cameras c2w.

    Args:
      c2w: [..., 4, 4] (or [..., 3, 4]).
      xy: [..., P, 2] pixel coordinates (x right, y down; centres at +0.5);
        the leading dims broadcast with c2w's.
      focal, cx, cy: intrinsics in pixels (scalars or broadcastable to [...]).
    Returns:
      Rays with fields [..., P, 3].
    """
    d_cam = camera_directions(xy, focal, cx, cy)
    rot = c2w[..., :3, :3]
    directions = jnp.einsum("...ij,...pj->...pi", rot, d_cam)
    origins = jnp.broadcast_to(c2w[..., None, :3, 3], directions.shape)
    viewdirs = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    return Rays(origins, directions, viewdirs)


def generate_rays(c2w: jax.Array, height: int, width: int, focal, cx=None, cy=None) -> Rays:
    """One ray per pixel centre: Rays with fields [..., H, W, 3] for c2w [..., 4, 4]."""
    cx = width / 2.0 if cx is None else cx
    cy = height / 2.0 if cy is None else cy
    xy = pixel_centers(height, width).reshape(-1, 2)
    rays = rays_from_pixels(c2w, xy, focal, cx, cy)
    return jax.tree_util.tree_map(lambda a: a.reshape(a.shape[:-2] + (height, width, 3)), rays)


def ndc_rays(rays: Rays, height: int, width: int, focal, near: float = 1.0) -> Rays:
    """Rays in normalised device coordinates (NeRF appendix C, `ndc_rays`).

    Origins are first moved to the plane z = -near (world frame of a
    forward-facing scene looking down -z); afterwards sample t in [0, 1].
    `viewdirs` are kept from the world-space rays (for view dependence).
    """
    o, d = rays.origins, rays.directions
    t = -(near + o[..., 2]) / d[..., 2]
    o = o + t[..., None] * d
    ax, ay = -2.0 * focal / width, -2.0 * focal / height
    o_ndc = jnp.stack([ax * o[..., 0] / o[..., 2], ay * o[..., 1] / o[..., 2],
                       1.0 + 2.0 * near / o[..., 2]], -1)
    d_ndc = jnp.stack([ax * (d[..., 0] / d[..., 2] - o[..., 0] / o[..., 2]),
                       ay * (d[..., 1] / d[..., 2] - o[..., 1] / o[..., 2]),
                       -2.0 * near / o[..., 2]], -1)
    return Rays(o_ndc, d_ndc, rays.viewdirs)
