"""Random scenes of the toy scene's kind, for training an image encoder (DietNeRF's phi).

`fdm.data.toy_scene` is one fixed arrangement; this module draws others of the same
kind, rendered by the same analytic renderer (`toy_scene.render_primitives`: Lambertian
primitives under the toy scene's light, white background, its field of view):

  plinth    an axis-aligned box, top at z = 0, thickness 0.2, half side U[0.7, 1.0],
            grey of value U[0.4, 0.7];
  spheres   NUM_SPHERES, radius U[0.15, 0.45], centre (x, y) uniform in the disc of
            radius 0.65, resting on the plinth or floating up to 0.6 above it
            (z = radius + U[0, 0.6] with probability 1/2, else z = radius);
  box       one axis-aligned box, half sides U[0.12, 0.35], centre (x, y) uniform in
            the disc of radius 0.65, resting on the plinth;
  colours   of the spheres and the box: hue U[0, 1), saturation U[0.6, 1], value
            U[0.7, 1] (HSV), drawn independently.

Two-sided scenes (`sample_back_colors`, `render_scenes` with a viewpoint): every sphere
and the box get a second colour from the same prior, shown where the primitive's surface
faces away from a viewpoint (`toy_scene.faces`; the plinth stays one grey). From the
viewpoint's own camera nothing of a second colour is visible, and nothing visible
depends on it, so its posterior given that view is the prior: per channel the colour
prior's standard deviation `color_prior_std` (closed form), times the Lambertian factor.

The toy scene (3 spheres, a blue box on a grey plinth) is one point of this family
(`toy_scene_params`), a point of probability zero: an encoder trained on
`sample_scenes` has seen scenes like it, never it. Objects may intersect (the renderer
shows the nearest surface), as nothing in a contrastive embedding needs them apart.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fdm.data import toy_scene

NUM_SPHERES = 3
PLINTH_TOP_HALF_HEIGHT = 0.1
DISC_RADIUS = 0.65


@flax.struct.dataclass
class SceneParams:
    """Primitives of scenes [...] (leading batch shape): spheres [..., 3] and boxes
    [..., 2] (the plinth first), in the argument order of `toy_scene.render_primitives`."""
    sphere_centers: jax.Array     # [..., Ns, 3]
    sphere_radii: jax.Array       # [..., Ns]
    sphere_colors: jax.Array      # [..., Ns, 3]
    box_centers: jax.Array        # [..., 2, 3]
    box_half_sizes: jax.Array     # [..., 2, 3]
    box_colors: jax.Array         # [..., 2, 3]


def toy_scene_params() -> SceneParams:
    """The toy scene of `fdm.data.toy_scene` as a member of the family (no batch axis)."""
    return SceneParams(*(jnp.asarray(a) for a in (
        toy_scene.SPHERE_CENTERS, toy_scene.SPHERE_RADII, toy_scene.SPHERE_COLORS,
        toy_scene.BOX_CENTERS, toy_scene.BOX_HALF_SIZES, toy_scene.BOX_COLORS)))


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """[..., 3] HSV in [0, 1] -> RGB in [0, 1] (colorsys.hsv_to_rgb, vectorised)."""
    h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    k = jnp.mod(jnp.asarray([5.0, 3.0, 1.0]) + 6.0 * h, 6.0)
    return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _in_disc(rng: jax.Array, shape: tuple, radius: float) -> jax.Array:
    """Points [*shape, 2] uniform in the disc of `radius`."""
    k_r, k_a = jax.random.split(rng)
    r = radius * jnp.sqrt(jax.random.uniform(k_r, shape))
    a = 2.0 * jnp.pi * jax.random.uniform(k_a, shape)
    return jnp.stack([r * jnp.cos(a), r * jnp.sin(a)], -1)


def _colors(rng: jax.Array, shape: tuple) -> jax.Array:
    lo, hi = jnp.asarray([0.0, 0.6, 0.7]), jnp.asarray([1.0, 1.0, 1.0])
    return hsv_to_rgb(jax.random.uniform(rng, shape + (3,), minval=lo, maxval=hi))


def sample_scenes(rng: jax.Array, num: int) -> SceneParams:
    """`num` scenes of the family (module doc): SceneParams with batch shape [num]."""
    keys = jax.random.split(rng, 9)
    u = jax.random.uniform
    radii = u(keys[0], (num, NUM_SPHERES), minval=0.15, maxval=0.45)
    lift = u(keys[1], (num, NUM_SPHERES), maxval=0.6) * jax.random.bernoulli(
        keys[2], 0.5, (num, NUM_SPHERES))
    sphere_centers = jnp.concatenate(
        [_in_disc(keys[3], (num, NUM_SPHERES), DISC_RADIUS), (radii + lift)[..., None]], -1)
    box_half = u(keys[4], (num, 3), minval=0.12, maxval=0.35)
    box_center = jnp.concatenate([_in_disc(keys[5], (num,), DISC_RADIUS),
                                  box_half[:, 2:]], -1)
    plinth_half = u(keys[6], (num, 1), minval=0.7, maxval=1.0)
    plinth_half = jnp.concatenate([plinth_half, plinth_half,
                                   jnp.full((num, 1), PLINTH_TOP_HALF_HEIGHT)], -1)
    plinth_center = jnp.broadcast_to(jnp.asarray([0.0, 0.0, -PLINTH_TOP_HALF_HEIGHT]),
                                     (num, 3))
    grey = jnp.repeat(u(keys[7], (num, 1), minval=0.4, maxval=0.7), 3, -1)
    colors = _colors(keys[8], (num, NUM_SPHERES + 1))
    return SceneParams(sphere_centers, radii, colors[:, :NUM_SPHERES],
                       jnp.stack([plinth_center, box_center], 1),
                       jnp.stack([plinth_half, box_half], 1),
                       jnp.stack([grey, colors[:, NUM_SPHERES]], 1))


def sample_back_colors(rng: jax.Array, scenes: SceneParams) -> jax.Array:
    """Second colours [N, Ns + 2, 3] of scenes [N] in `toy_scene.render_primitives`'s
    back_colors order (spheres, plinth, box): the spheres' and the box's drawn from the
    colour prior independently of everything else, the plinth's its own grey."""
    num = scenes.sphere_radii.shape[0]
    colors = _colors(rng, (num, NUM_SPHERES + 1))
    return jnp.concatenate([colors[:, :NUM_SPHERES], scenes.box_colors[:, :1],
                            colors[:, NUM_SPHERES:]], 1)


def color_prior_std() -> float:
    """The standard deviation of one RGB channel of a colour of the prior (module doc:
    hue h ~ U[0, 1), saturation s ~ U[0.6, 1], value v ~ U[0.7, 1]), in closed form.

    A channel is c = v (1 - s g) with g = clip(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6
    uniform on [0, 6) (`hsv_to_rgb`): g is 0 on a third of k, 1 on a third and uniform on
    [0, 1] on the rest, so E g = 1/2 and E g^2 = 4/9, the same for every channel. v, s, g
    independent: E c = E v (1 - E s E g), E c^2 = E v^2 (1 - 2 E s E g + E s^2 E g^2).
    """
    def moments(lo: float, hi: float) -> tuple[float, float]:
        return (lo + hi) / 2, (lo * lo + lo * hi + hi * hi) / 3
    (v1, v2), (s1, s2), (g1, g2) = moments(0.7, 1.0), moments(0.6, 1.0), (0.5, 4.0 / 9.0)
    mean = v1 * (1.0 - s1 * g1)
    second = v2 * (1.0 - 2.0 * s1 * g1 + s2 * g2)
    return float(np.sqrt(second - mean * mean))


def focal_length(size: int) -> float:
    """Focal length in pixels of a size x size view with the toy scene's field of view."""
    return float(0.5 * size / np.tan(0.5 * toy_scene.CAMERA_ANGLE_X))


def render_scenes(scenes: SceneParams, c2w: jax.Array, size: int,
                  back_colors: jax.Array | None = None,
                  viewpoints: jax.Array | None = None) -> jax.Array:
    """Images [B, size, size, 3] in [0, 1]: scene b of `scenes` (batch shape [B]) from
    camera c2w[b] [B, 4, 4]; two-sided (module doc) with back_colors [B, Ns + 2, 3]
    (`sample_back_colors`) and viewpoints [B, 3]; jit-compatible (size static)."""
    focal = focal_length(size)

    def one(scene: SceneParams, pose: jax.Array, back, viewpoint) -> jax.Array:
        return toy_scene.render_primitives(pose, size, size, focal, scene.sphere_centers,
                                           scene.sphere_radii, scene.sphere_colors,
                                           scene.box_centers, scene.box_half_sizes,
                                           scene.box_colors, back, viewpoint)

    return jax.vmap(one)(scenes, c2w, back_colors, viewpoints)


def hits(scenes: SceneParams, c2w: jax.Array, size: int) -> toy_scene.SurfaceHits:
    """The `toy_scene.SurfaceHits` [B, size, size, ...] of scene b from camera c2w[b]."""
    focal = focal_length(size)

    def one(scene: SceneParams, pose: jax.Array) -> toy_scene.SurfaceHits:
        return toy_scene.first_hits(pose, size, size, focal, scene.sphere_centers,
                                    scene.sphere_radii, scene.box_centers,
                                    scene.box_half_sizes)

    return jax.vmap(one)(scenes, c2w)
