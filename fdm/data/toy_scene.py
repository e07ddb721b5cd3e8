"""The embedded default scene for NeRF lifting: analytic primitives seen from a sphere.

Scene (world z-up, like Blender; everything inside a radius of ~1.3): a flat
grey plinth (box, top at z = 0) carrying a red sphere, a blue box and a green
sphere, with a small yellow sphere floating above them, all placed
asymmetrically so that every view has a unique pose. Surfaces are Lambertian
under one fixed directional light plus ambient, hence view independent; the
background is white.

Images are rendered by exact ray-primitive intersection (`render_toy_scene`,
one ray per pixel centre, no anti-aliasing) from cameras on a sphere of
radius 4 (upper hemisphere, elevation 10..80 degrees, uniform in area)
looking at the origin with world up +z (`fdm.nerf.cameras.look_at`), field
of view 0.6911 rad as Blender's Lego, near 2, far 6. Cameras of split s are
drawn from `np.random.default_rng([seed, split_id])`, so a split is a pure
function of (seed, split, count) and train / val views differ.

`toy_field` is the same scene as a volume (density TOY_DENSITY inside the
primitives, the same shaded colour), usable as a `field_fn` for
`fdm.nerf.render`: rendering it with enough samples reproduces the analytic
images up to silhouette pixels (a renderer check independent of the renderer).
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fdm.data.nerf import SceneData
from fdm.errors import UserError
from fdm.nerf import cameras, rays
from fdm.nerf.views import ViewGeometry

SPLIT_IDS = {"train": 0, "val": 1}
CAMERA_ANGLE_X = 0.6911112070083618
NEAR, FAR, RADIUS = 2.0, 6.0, 4.0
MIN_ELEVATION_DEG, MAX_ELEVATION_DEG = 10.0, 80.0
TOY_DENSITY = 200.0

SPHERE_CENTERS = np.array([[0.55, -0.05, 0.46], [-0.5, 0.5, 0.36], [0.1, 0.45, 0.95]], np.float32)
SPHERE_RADII = np.array([0.45, 0.35, 0.22], np.float32)
SPHERE_COLORS = np.array([[0.9, 0.15, 0.1], [0.15, 0.75, 0.2], [0.95, 0.85, 0.1]], np.float32)
BOX_CENTERS = np.array([[0.0, 0.0, -0.1], [-0.3, -0.5, 0.3]], np.float32)
BOX_HALF_SIZES = np.array([[0.95, 0.95, 0.1], [0.3, 0.22, 0.3]], np.float32)
BOX_COLORS = np.array([[0.55, 0.55, 0.5], [0.15, 0.3, 0.9]], np.float32)
LIGHT_DIR = np.array([0.5, -0.35, 0.8], np.float32) / np.linalg.norm([0.5, -0.35, 0.8])
AMBIENT = 0.35


def shade(albedo: jax.Array, normal: jax.Array) -> jax.Array:
    """Lambertian colour [..., 3] of surfaces with unit normals [..., 3]."""
    diffuse = jnp.maximum(jnp.sum(normal * LIGHT_DIR, -1, keepdims=True), 0.0)
    return albedo * (AMBIENT + (1.0 - AMBIENT) * diffuse)


def _sphere_hits(o: jax.Array, d: jax.Array, centers: jax.Array, radii: jax.Array):
    """First hit depth [..., Ns] (inf if none) and normals [..., Ns, 3] of spheres
    centers [Ns, 3], radii [Ns]."""
    oc = o[..., None, :] - centers
    dd = jnp.sum(d * d, -1, keepdims=True)
    b = jnp.sum(oc * d[..., None, :], -1)
    disc = b * b - dd * (jnp.sum(oc * oc, -1) - radii ** 2)
    t = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) / dd
    t = jnp.where((disc > 0) & (t > 0), t, jnp.inf)
    normal = (oc + t[..., None] * d[..., None, :]) / radii[:, None]
    return t, normal


def _box_hits(o: jax.Array, d: jax.Array, centers: jax.Array, half_sizes: jax.Array):
    """First hit depth [..., Nb] (inf if none) and normals [..., Nb, 3] (slab method) of
    axis-aligned boxes centers [Nb, 3], half_sizes [Nb, 3]."""
    d = jnp.where(jnp.abs(d) < 1e-9, 1e-9, d)[..., None, :]
    t1 = (centers - half_sizes - o[..., None, :]) / d
    t2 = (centers + half_sizes - o[..., None, :]) / d
    t_in = jnp.minimum(t1, t2)
    t_enter, t_exit = jnp.max(t_in, -1), jnp.min(jnp.maximum(t1, t2), -1)
    t = jnp.where((t_exit >= t_enter) & (t_enter > 0), t_enter, jnp.inf)
    axis = jax.nn.one_hot(jnp.argmax(t_in, -1), 3)
    return t, -axis * jnp.sign(d)


class SurfaceHits(NamedTuple):
    """The first surface each pixel's ray meets (`first_hits`)."""
    index: jax.Array    # int [..., H, W]: its primitive, spheres first, then boxes
    point: jax.Array    # [..., H, W, 3] the hit point (not finite where no hit)
    normal: jax.Array   # [..., H, W, 3] the unit outward normal there
    hit: jax.Array      # bool [..., H, W]: the ray meets a primitive


def first_hits(c2w: jax.Array, height: int, width: int, focal: float,
               sphere_centers: jax.Array, sphere_radii: jax.Array, box_centers: jax.Array,
               box_half_sizes: jax.Array) -> SurfaceHits:
    """The `SurfaceHits` of the pixel-centre rays of cameras c2w [..., 4, 4] among spheres
    (centers [Ns, 3], radii [Ns]) and axis-aligned boxes (centers, half sizes [Nb, 3])."""
    r = rays.generate_rays(c2w, height, width, focal)
    t_s, n_s = _sphere_hits(r.origins, r.directions, sphere_centers, sphere_radii)
    t_b, n_b = _box_hits(r.origins, r.directions, box_centers, box_half_sizes)
    t = jnp.concatenate([t_s, t_b], -1)
    normals = jnp.concatenate([n_s, n_b], -2)
    first = jnp.argmin(t, -1)
    normal = jnp.take_along_axis(normals, first[..., None, None], -2)[..., 0, :]
    t_first = jnp.min(t, -1)
    return SurfaceHits(first, r.origins + t_first[..., None] * r.directions, normal,
                       jnp.isfinite(t_first))


def faces(hits: SurfaceHits, viewpoint: jax.Array) -> jax.Array:
    """bool [..., H, W]: the hit surface faces the point viewpoint [3], n . (v - p) > 0.
    On a convex primitive these are the points its own shape does not hide from v, so
    every surface a camera at v sees faces v."""
    return jnp.sum(hits.normal * (viewpoint - hits.point), -1) > 0.0


def render_primitives(c2w: jax.Array, height: int, width: int, focal: float,
                      sphere_centers: jax.Array, sphere_radii: jax.Array,
                      sphere_colors: jax.Array, box_centers: jax.Array,
                      box_half_sizes: jax.Array, box_colors: jax.Array,
                      back_colors: jax.Array | None = None,
                      viewpoint: jax.Array | None = None) -> jax.Array:
    """Analytic images [..., H, W, 3] in [0, 1] from cameras c2w [..., 4, 4] of any scene
    of Lambertian spheres (centers [Ns, 3], radii [Ns], colors [Ns, 3]) and axis-aligned
    boxes (centers, half sizes, colors [Nb, 3]) under this module's light, white
    background (the toy scene is `render_toy_scene`; `fdm.data.scene_family` others).
    With back_colors [Ns + Nb, 3] and a viewpoint [3], each primitive shows its back colour
    where its surface does not face the viewpoint (`faces`): two-sided primitives."""
    hits = first_hits(c2w, height, width, focal, sphere_centers, sphere_radii, box_centers,
                      box_half_sizes)
    albedo = jnp.concatenate([sphere_colors, box_colors], 0)[hits.index]
    if back_colors is not None:
        albedo = jnp.where(faces(hits, viewpoint)[..., None], albedo, back_colors[hits.index])
    return jnp.where(hits.hit[..., None], shade(albedo, hits.normal), 1.0)


@functools.partial(jax.jit, static_argnums=(1, 2))
def render_toy_scene(c2w: jax.Array, height: int, width: int, focal: float) -> jax.Array:
    """Analytic images [..., H, W, 3] in [0, 1] of the scene from cameras c2w [..., 4, 4]."""
    return render_primitives(c2w, height, width, focal, SPHERE_CENTERS, SPHERE_RADII,
                             SPHERE_COLORS, BOX_CENTERS, BOX_HALF_SIZES, BOX_COLORS)


def toy_field(points: jax.Array, viewdirs: jax.Array = None):
    """The scene as a radiance field (a `fdm.nerf.render` field_fn).

    Args:
      points: [..., 3]; viewdirs: ignored (the scene is view independent).
    Returns:
      rgb [..., 3] (the shaded colour of the containing primitive, normal from
      its nearest face), density [...] (TOY_DENSITY inside, 0 outside).
    """
    rel_s = points[..., None, :] - SPHERE_CENTERS
    dist_s = jnp.linalg.norm(rel_s, axis=-1)
    inside_s = dist_s < SPHERE_RADII
    n_s = rel_s / jnp.maximum(dist_s, 1e-9)[..., None]
    rel_b = points[..., None, :] - BOX_CENTERS
    slack = BOX_HALF_SIZES - jnp.abs(rel_b)
    inside_b = jnp.all(slack > 0, -1)
    n_b = jax.nn.one_hot(jnp.argmin(slack, -1), 3) * jnp.sign(rel_b)
    inside = jnp.concatenate([inside_s, inside_b], -1)
    normals = jnp.concatenate([n_s, n_b], -2)
    which = jnp.argmax(inside, -1)
    normal = jnp.take_along_axis(normals, which[..., None, None], -2)[..., 0, :]
    colors = jnp.concatenate([SPHERE_COLORS, BOX_COLORS], 0)
    density = jnp.where(jnp.any(inside, -1), TOY_DENSITY, 0.0)
    return shade(colors[which], normal), density


_look_at_origin = jax.jit(cameras.look_at)


def sample_cameras(num: int, seed: int, split: str, radius: float = RADIUS) -> np.ndarray:
    """Ground-truth c2w [num, 4, 4] on the upper hemisphere, looking at the origin."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    azimuth = rng.uniform(0.0, 2.0 * np.pi, num)
    lo, hi = np.sin(np.deg2rad([MIN_ELEVATION_DEG, MAX_ELEVATION_DEG]))
    elevation = np.arcsin(rng.uniform(lo, hi, num))
    eye = radius * np.stack([np.cos(elevation) * np.cos(azimuth),
                             np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1)
    return np.asarray(_look_at_origin(jnp.asarray(eye, jnp.float32)), np.float32)


def load_toy_scene(split: str = "train", seed: int = 0, image_size: int = 32,
                   num_train: int = 100, num_val: int = 20, radius: float = RADIUS) -> SceneData:
    """One split of the toy scene as `SceneData` (image_size x image_size, white background)."""
    if split not in SPLIT_IDS:
        raise UserError(f"unknown toy_scene split {split!r}; use one of {list(SPLIT_IDS)}")
    num = num_train if split == "train" else num_val
    if num <= 0 or image_size <= 0:
        raise UserError(f"toy_scene needs positive sizes, got {num} views of {image_size} px")
    c2w = sample_cameras(num, seed, split, radius)
    focal = 0.5 * image_size / np.tan(0.5 * CAMERA_ANGLE_X)
    images = np.asarray(render_toy_scene(jnp.asarray(c2w), image_size, image_size, focal))
    geometry = ViewGeometry(image_size, image_size, float(focal), NEAR, FAR, True)
    return SceneData(images.astype(np.float32), c2w, geometry)
