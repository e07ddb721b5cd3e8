"""Multi-view tuples of random scenes for inverse graphics with forward models (seed 003
Sec. 4.1; `fdm.forward.scenes`): no files, everything rendered analytically.

Example i of a split of N (`load`):
  scene   a random scene of `fdm.data.scene_family` (a plinth, 3 spheres, a box), the N
          scenes drawn from the key fold_in(PRNGKey(data.seed), stream) (train 0, eval 1);
  phi     three cameras c2w float32 [4, 4] of the toy scene's orbit sampler
          (`toy_scene.sample_cameras` of 3 N cameras, data.seed, the toy split "train"
          for train and "val" for eval; context, target, novel view independent);
  views   'ctxt', 'trgt', 'novel' float32 [S, S, 3] in [-1, 1] (S = data.image_size),
          `toy_scene.render_primitives` with the toy scene's field of view (white
          background), 'ctxt_phi', 'trgt_phi', 'novel_phi' the cameras;
  signal  the truth of `fdm.forward.scenes.pack_truth` [S, S, 3 K + 7]: the scene's views
          at the K RING cameras, the context warped to the target (`context_visibility`:
          the context view bilinearly sampled where each target pixel's hit point X
          projects into it), the target's surface and seen masks, and its hidden-side
          mask and the colour's posterior std there (zero without hidden_sides).
Options: num_train, num_eval, seed, hidden_sides.

hidden_sides (default False): the scenes are two-sided (`scene_family`, module doc), the
viewpoint the context camera's centre: the same scenes (geometry and the colours the
context sees), with the far side of every sphere and of the box repainted with a colour
drawn from the prior (key fold_in(scenes' key, HIDDEN_STREAM)). The context view is
unchanged; every view that shows a far side shows a colour nothing in the context
determines. The truth marks those target pixels (hidden: the first hit is a sphere or
the box, facing away from the context camera) and gives there the posterior's per-pixel
std on [-1, 1] that the colour alone contributes, 2 f(n) `scene_family.color_prior_std()`
(f(n) the Lambertian factor of `toy_scene.shade`): exact where the context fixes the
geometry (a sphere or box it sees), a floor where it does not; what a calibrated
sampler's spread approaches, and (halved, on [0, 1]) the floor of any predictor's RMSE.

Visibility (`context_visibility`), by ray marching the primitives' inside tests (MARCH_STEPS
samples): a target pixel is a surface pixel when a sample of its ray over [near, far] is
inside a primitive; its first such sample is the hit point X; X is seen by the context
when it projects into the context image (in front of the camera) and no sample of the
segment from the context camera to X, stopped VISIBILITY_MARGIN before X, is inside a
primitive.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fdm.data import scene_family, toy_scene
from fdm.errors import UserError
from fdm.forward import scenes as sc
from fdm.forward.pixelnerf import project, sample_features, world_to_camera
from fdm.nerf.rays import generate_rays

SPLIT_STREAMS = {"train": 0, "eval": 1}
HIDDEN_STREAM = 1             # the back colours' key: fold_in(the scenes' key, this)
TOY_SPLITS = {"train": "train", "eval": "val"}   # the toy scene's camera stream of a split
VIEWS = ("ctxt", "trgt", "novel")
RENDER_CHUNK = 128            # scenes per jitted call
MARCH_STEPS = 128
VISIBILITY_MARGIN = 0.05      # scene units


def _render(scenes: scene_family.SceneParams, c2w: jax.Array, size: int,
            back_colors: jax.Array | None, viewpoints: jax.Array | None) -> jax.Array:
    """Views [N, K, size, size, 3] in [-1, 1] of scenes [N] from cameras c2w [N, K, 4, 4],
    two-sided with back_colors [N, Ns + 2, 3] facing away from viewpoints [N, 3] (None:
    one colour each)."""
    per_camera = jax.vmap(
        lambda c: scene_family.render_scenes(scenes, c, size, back_colors, viewpoints), 1, 1)
    return 2.0 * per_camera(c2w) - 1.0


def hidden_sides(scenes: scene_family.SceneParams, c2w_trgt: jax.Array,
                 c2w_ctxt: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """(hidden bool [N, size, size], prior std [N, size, size]) of the target views
    c2w_trgt [N, 4, 4] of two-sided scenes [N] repainted away from the context cameras
    c2w_ctxt (module doc): the pixels showing a sphere's or the box's far side, and there
    2 f(n) color_prior_std() (0 elsewhere)."""
    hits = scene_family.hits(scenes, c2w_trgt, size)
    far = ~toy_scene.faces(hits, c2w_ctxt[:, None, None, :3, 3])
    repainted = hits.index != scene_family.NUM_SPHERES                  # not the plinth
    hidden = hits.hit & far & repainted
    lambert = toy_scene.shade(jnp.ones_like(hits.normal), hits.normal)[..., 0]
    return hidden, jnp.where(hidden, 2.0 * lambert * scene_family.color_prior_std(), 0.0)


def _inside(scenes: scene_family.SceneParams, points: jax.Array) -> jax.Array:
    """bool [N, P]: points [N, P, 3] inside a primitive of scene n (batch shape [N])."""
    rel_s = points[:, :, None] - scenes.sphere_centers[:, None]
    in_s = jnp.linalg.norm(rel_s, axis=-1) < scenes.sphere_radii[:, None]
    rel_b = jnp.abs(points[:, :, None] - scenes.box_centers[:, None])
    in_b = jnp.all(rel_b < scenes.box_half_sizes[:, None], axis=-1)
    return jnp.any(in_s, -1) | jnp.any(in_b, -1)


def context_visibility(scenes: scene_family.SceneParams, c2w_trgt: jax.Array,
                       c2w_ctxt: jax.Array, size: int
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(surface, seen bool [N, size, size], xy [N, size, size, 2]) of the target views
    c2w_trgt [N, 4, 4] of scenes [N] for the contexts c2w_ctxt [N, 4, 4] (module doc); xy
    the context pixel (centres at +1/2) of each target pixel's hit point."""
    geo = sc.geometry(size)
    rays = generate_rays(c2w_trgt, size, size, geo.focal)
    n = c2w_trgt.shape[0]
    depths = jnp.linspace(geo.near, geo.far, MARCH_STEPS)
    samples = rays.origins[..., None, :] + depths[:, None] * rays.directions[..., None, :]
    hits = _inside(scenes, samples.reshape(n, -1, 3)).reshape(n, size * size, MARCH_STEPS)
    surface = jnp.any(hits, -1)
    point = (rays.origins.reshape(n, -1, 3) + depths[jnp.argmax(hits, -1)][..., None]
             * rays.directions.reshape(n, -1, 3))                            # [N, P, 3]
    local = world_to_camera(c2w_ctxt, point)
    xy = project(local, geo)
    in_image = (local[..., 2] < 0) & jnp.all((xy >= 0) & (xy <= size), -1)
    eye = c2w_ctxt[:, None, :3, 3]
    dist = jnp.linalg.norm(point - eye, axis=-1)
    stop = jnp.maximum(dist - VISIBILITY_MARGIN, 0.0) / jnp.maximum(dist, 1e-9)
    frac = jnp.linspace(0.0, 1.0, MARCH_STEPS) * stop[..., None]            # [N, P, T]
    segment = eye[:, :, None] + frac[..., None] * (point - eye)[:, :, None]
    blocked = jnp.any(_inside(scenes, segment.reshape(n, -1, 3)).reshape(frac.shape), -1)
    shape = (n, size, size)
    return (surface.reshape(shape), (surface & in_image & ~blocked).reshape(shape),
            xy.reshape(shape + (2,)))


@functools.partial(jax.jit, static_argnums=3)
def _tuples(scenes: scene_family.SceneParams, c2w: jax.Array, ring: jax.Array, size: int,
            back_colors: jax.Array | None = None):
    """(views [N, 3, S, S, 3], the parts of the truth: views at the ring cameras [K, 4, 4]
    [N, K, S, S, 3], the context warped to the target [N, S, S, 3], surface, seen, hidden
    [N, S, S] and the prior std [N, S, S]) of scenes [N] seen by cameras c2w [N, 3, 4, 4];
    two-sided away from the context cameras with back_colors [N, Ns + 2, 3] (module doc;
    None: one-sided, hidden all False)."""
    n = c2w.shape[0]
    viewpoints = None if back_colors is None else c2w[:, 0, :3, 3]
    views = _render(scenes, c2w, size, back_colors, viewpoints)
    ring = jnp.broadcast_to(ring, (n,) + ring.shape)
    surface, seen, xy = context_visibility(scenes, c2w[:, 1], c2w[:, 0], size)
    warp = sample_features(views[:, 0], xy.reshape(n, -1, 2)).reshape(views[:, 0].shape)
    if back_colors is None:
        hidden, prior_std = jnp.zeros_like(seen), jnp.zeros(seen.shape)
    else:
        hidden, prior_std = hidden_sides(scenes, c2w[:, 1], c2w[:, 0], size)
    return (views, _render(scenes, ring, size, back_colors, viewpoints), warp, surface, seen,
            hidden, prior_std)


def load(root, image_size, split: str, num_train: int, num_eval: int, seed: int,
         hidden_sides: bool = False) -> dict[str, np.ndarray]:
    """The split's scene tuples (module doc): every view [N, S, S, 3] with its camera
    [N, 4, 4], 'signal' [N, S, S, 3 K + 7]."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 4:
        raise UserError(f"data.image_size={image_size!r} is invalid for scenes; use an "
                        "integer >= 4 (square views)")
    num = num_train if split == "train" else num_eval
    if num <= 0:
        raise UserError(f"data.num_{split}={num}; it must be positive")
    if not isinstance(hidden_sides, bool):
        raise UserError(f"data.hidden_sides={hidden_sides!r}; use True or False")
    key = jax.random.fold_in(jax.random.PRNGKey(seed), SPLIT_STREAMS[split])
    scenes = scene_family.sample_scenes(key, num)
    back = (scene_family.sample_back_colors(jax.random.fold_in(key, HIDDEN_STREAM), scenes)
            if hidden_sides else None)
    c2w = toy_scene.sample_cameras(3 * num, seed, TOY_SPLITS[split]).reshape(num, 3, 4, 4)
    ring = jnp.asarray(sc.ring_cameras())
    parts = [_tuples(*jax.tree_util.tree_map(lambda a: a[i:i + RENDER_CHUNK],
                                             (scenes, jnp.asarray(c2w))),
                     ring, image_size, None if back is None else back[i:i + RENDER_CHUNK])
             for i in range(0, num, RENDER_CHUNK)]
    views, ring, warp, surface, seen, hidden, prior_std = (
        np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(7))
    out = {"signal": sc.pack_truth(ring, warp, surface, seen, hidden, prior_std)}
    for k, view in enumerate(VIEWS):
        out[view] = views[:, k].astype(np.float32)
        out[f"{view}_phi"] = c2w[:, k].astype(np.float32)
    return out
