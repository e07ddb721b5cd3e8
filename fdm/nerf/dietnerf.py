"""DietNeRF's semantic consistency (seed 004 ch. 4; Jain et al. 2021): the loss, the
sampler of unobserved poses and the cheap strided ray grid their renders use.

Notation:
  phi(.)  an image encoder returning embeddings [..., F] (CLIP ViT-B/32's projected
          embedding in the paper, unit vectors); I an observed training view, I_hat a
          render from a sampled pose p_hat ~ pi; lambda the loss weight.
  cos(a, b) = a . b / max(|a| |b|, eps), eps = 1e-8 (torch.cosine_similarity, which
          the authors' code calls).
  Eq. 4.4:  L_SC,l2(I, I_hat) = (lambda / 2) |phi(I) - phi(I_hat)|^2.
  Eq. 4.5 with its sign fixed (the chapter prints +lambda phi(I)^T phi(I_hat), which
          would push the embeddings apart; the code minimises the negative):
            L_SC(I, I_hat) = -lambda cos(phi(I), phi(I_hat)),
          which for unit embeddings is L_SC,l2 - lambda: the same gradient.
  The target phi(I) is precomputed (Alg. 7 line 4) and enters without gradient.

Pose distribution pi (the code's `pose_spherical_uniform`, config 042): azimuth
theta ~ U[-180, 180) deg, elevation e ~ U[e_lo, e_hi] deg above the plane normal to
world up (the code's phi ~ U[-90, 0] is e = -phi ~ U[0, 90]), radius r ~ U[r_lo, r_hi]
(3.5 .. 4.5 for Blender, whose cameras sit at radius ~4.03), the camera at
  eye = r (cos e cos theta u_1 + cos e sin theta u_2 + sin e up)
(u_1, u_2, up an orthonormal frame) looking at the origin with no roll (`look_at`).
This is uniform in the angles, not uniform in area on the hemisphere as the text says.

Ray grid (the code's `get_rays(H, W, focal, c2w, nH, nW, jitter=True)`): n x n rays
on a grid of stride d = W // n (rows: H // n) whose first ray is offset by
o ~ U[0, W - n d) (= W mod n; rows likewise, drawn separately), spanning the whole
image plane at low resolution. In this library's pixel coordinates (pixel centres at
column + 0.5, `fdm.nerf.rays`; the code's integer coordinate i is pixel i's ray):
  x_j = o_x + d_x j + 1/2,  y_i = o_y + d_y i + 1/2,   i, j = 0 .. n-1.
400^2 views with n = 168 (the paper): d = 2, o ~ U[0, 64), 17.6% of the rays.
Without a key the offset is the middle of its range (deterministic renders).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from fdm.nerf.cameras import Z_UP, look_at, safe_normalize

COSINE_EPS = 1e-8
AZIMUTH_DEG = (-180.0, 180.0)


# ========================================================================== the loss


def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = COSINE_EPS) -> jax.Array:
    """cos(a, b) [...] of embeddings [..., F] (torch.cosine_similarity, see module doc)."""
    norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
    return jnp.sum(a * b, axis=-1) / jnp.maximum(norms, eps)


def semantic_consistency_loss(target: jax.Array, rendered: jax.Array,
                              weight: float) -> jax.Array:
    """Eq. 4.5 (sign fixed): -lambda cos(phi(I), phi(I_hat)) [...] of a target embedding
    [..., F] (gradient stopped) and a rendered one [..., F]; lambda = weight."""
    return -weight * cosine_similarity(jax.lax.stop_gradient(target), rendered)


def semantic_l2_loss(target: jax.Array, rendered: jax.Array, weight: float) -> jax.Array:
    """Eq. 4.4: (lambda / 2) |phi(I) - phi(I_hat)|^2 [...] of embeddings [..., F] (target
    without gradient); equals `semantic_consistency_loss` + lambda for unit vectors."""
    diff = jax.lax.stop_gradient(target) - rendered
    return 0.5 * weight * jnp.sum(diff * diff, axis=-1)


# ===================================================================== the poses


def up_frame(up: Sequence[float] = Z_UP) -> jax.Array:
    """Orthonormal [3, 3] rows (u_1, u_2, up/|up|) with u_1 x u_2 = up/|up|; u_1 is the
    world axis least aligned with up, made orthogonal to it (up = +z: the axes x, y, z)."""
    w = safe_normalize(jnp.asarray(up, jnp.float32))
    axis = jnp.eye(3, dtype=jnp.float32)[jnp.argmin(jnp.abs(w))]
    u1 = safe_normalize(axis - jnp.dot(axis, w) * w)
    return jnp.stack([u1, jnp.cross(w, u1), w])


def spherical_eyes(azimuth_deg: jax.Array, elevation_deg: jax.Array, radius: jax.Array,
                   up: Sequence[float] = Z_UP) -> jax.Array:
    """Camera centres [..., 3] at azimuth theta, elevation e (degrees, above the plane
    normal to up) and radius r [...] (module doc)."""
    theta, elev = jnp.deg2rad(azimuth_deg), jnp.deg2rad(elevation_deg)
    local = jnp.stack([jnp.cos(elev) * jnp.cos(theta), jnp.cos(elev) * jnp.sin(theta),
                       jnp.sin(elev)], -1)
    return radius[..., None] * (local @ up_frame(up))


def sample_poses(rng: jax.Array, num: int, elevation_deg: Sequence[float],
                 radius: Sequence[float], up: Sequence[float] = Z_UP) -> jax.Array:
    """num cameras c2w [num, 4, 4] from pi (module doc): azimuth ~ U[-180, 180) deg,
    elevation ~ U[elevation_deg] deg, radius ~ U[radius], looking at the origin, no roll."""
    k_az, k_el, k_r = jax.random.split(rng, 3)
    azimuth = jax.random.uniform(k_az, (num,), minval=AZIMUTH_DEG[0], maxval=AZIMUTH_DEG[1])
    elevation = jax.random.uniform(k_el, (num,), minval=elevation_deg[0],
                                   maxval=elevation_deg[1])
    r = jax.random.uniform(k_r, (num,), minval=radius[0], maxval=radius[1])
    return look_at(spherical_eyes(azimuth, elevation, r, up), up=up)


# ================================================================== the ray grid


def grid_stride(extent: int, size: int) -> tuple[int, int]:
    """(stride d, offset range extent - size d) of `size` rays over `extent` pixels
    (d = extent // size, so the range is extent mod size); ValueError if size > extent."""
    if not 1 <= size <= extent:
        raise ValueError(f"a grid of {size} rays needs 1 <= {size} <= {extent} pixels")
    stride = extent // size
    return stride, extent - size * stride


def jittered_grid(rng: jax.Array | None, height: int, width: int, size: int) -> jax.Array:
    """Pixel coordinates xy [size, size, 2] (x = column, y = row; pixel centres at +0.5)
    of the strided grid of the module doc, offsets o ~ U[0, range) per axis drawn with
    rng, or the middle of the range when rng is None."""
    axes = []
    for key_index, extent in ((0, height), (1, width)):
        stride, span = grid_stride(extent, size)
        if rng is None:
            offset = 0.5 * span
        else:
            offset = span * jax.random.uniform(jax.random.fold_in(rng, key_index))
        axes.append(offset + stride * jnp.arange(size, dtype=jnp.float32) + 0.5)
    rows, cols = axes
    y, x = jnp.meshgrid(rows, cols, indexing="ij")
    return jnp.stack([x, y], -1)
