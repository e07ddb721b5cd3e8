"""Volume rendering: sampling along rays, alpha compositing, chunked images, a field
rematerialised per chunk of rays (`remat_chunks`, model.remat="chunk" of NeRF lifting).

Notation (NeRF, Mildenhall et al. 2020; seed 004 Eq. 4.1):
  A ray r(t) = o + t d with d = `Rays.directions` (t = depth, see
  `fdm.nerf.rays`). [near, far] is split into S bins with edges
  t_0 < ... < t_S ([..., S+1], "t_edges"); the field is queried once per bin
  at t_mid_i, inside [t_i, t_{i+1}] (the midpoint, or a uniform draw when
  sampling is stratified). With delta_i = (t_{i+1} - t_i) |d| the discrete
  volume-rendering equation is
      alpha_i = 1 - exp(-sigma_i delta_i)
      T_i     = exp(-sum_{j<i} sigma_j delta_j)     (transmittance)
      w_i     = T_i alpha_i
      C       = sum_i w_i c_i + (1 - sum_i w_i) c_bg
  which is exact for piecewise-constant sigma and c (e.g. a slab of constant
  density sigma over a length L has opacity 1 - exp(-sigma L)).
  Unlike NeRF's code, the last bin is not stretched to infinity: whatever
  passes `far` shows the background (white for Blender scenes, else black).

A field function is `field_fn(points [..., S, 3], viewdirs [..., S, 3]) ->
(rgb [..., S, 3] in [0, 1], density [..., S] >= 0)`; e.g.
`lambda x, d: NeRFMLP().apply(params, x, d)`.

C channels (`composite_channels`, `render_rays_channels`): a field may return any
values [..., S, C] in place of rgb (colour and features, pixelNeRF's rendered feature
maps, seed 003 Sec. 4.1); the weights come from the density as above and
      V = sum_i w_i v_i + (1 - sum_i w_i) v_bg
with a background v_bg [C] (a number: the same in every channel). `composite` is its
C = 3 case with v_bg = 1 (white) or 0.
"""
import math
from typing import Callable, Optional, Tuple

import flax
import jax
import jax.numpy as jnp

from fdm.nerf.rays import Rays

FieldFn = Callable[[jax.Array, jax.Array], Tuple[jax.Array, jax.Array]]


@flax.struct.dataclass
class RenderOutput:
    """A rendering of rays with leading shape [...] (S samples per ray)."""
    rgb: jax.Array      # [..., 3]
    depth: jax.Array    # [...] expected termination depth, the missed mass at far
    acc: jax.Array      # [...] accumulated opacity sum_i w_i
    weights: jax.Array  # [..., S]
    t_edges: jax.Array  # [..., S+1]


@flax.struct.dataclass
class ChannelRender:
    """A rendering of C-channel values along rays with leading shape [...] (S samples)."""
    values: jax.Array   # [..., C] sum_i w_i v_i + (1 - acc) v_bg
    depth: jax.Array    # [...] expected termination depth, the missed mass at far
    acc: jax.Array      # [...] accumulated opacity sum_i w_i
    weights: jax.Array  # [..., S]
    t_edges: jax.Array  # [..., S+1]


def stratified_bins(rng: Optional[jax.Array], near, far, num_samples: int,
                    batch_shape: Tuple[int, ...], lindisp: bool = False,
                    dtype=jnp.float32) -> Tuple[jax.Array, jax.Array]:
    """Bin edges and one sample depth per bin along each ray.

    Args:
      rng: PRNG key for stratified sampling (one uniform draw inside each bin),
        or None for the deterministic bin midpoints.
      near, far: scalars or arrays broadcastable to batch_shape.
      num_samples: S, the number of bins.
      lindisp: space the edges linearly in inverse depth (NeRF's LLFF option).
      dtype: floating dtype of the result.
    Returns:
      t_edges [*batch_shape, S+1], t_mid [*batch_shape, S].
    """
    near = jnp.broadcast_to(jnp.asarray(near, dtype), batch_shape)[..., None]
    far = jnp.broadcast_to(jnp.asarray(far, dtype), batch_shape)[..., None]
    s = jnp.linspace(0.0, 1.0, num_samples + 1, dtype=dtype)
    if lindisp:
        t_edges = 1.0 / (1.0 / near * (1.0 - s) + 1.0 / far * s)
    else:
        t_edges = near + (far - near) * s
    if rng is None:
        u = jnp.full(batch_shape + (num_samples,), 0.5, t_edges.dtype)
    else:
        u = jax.random.uniform(rng, batch_shape + (num_samples,), t_edges.dtype)
    return t_edges, t_edges[..., :-1] + u * jnp.diff(t_edges, axis=-1)


def compute_weights(density: jax.Array, t_edges: jax.Array, directions: jax.Array) -> jax.Array:
    """Compositing weights w_i = T_i alpha_i [..., S] (NeRF Eq. 3).

    Args:
      density: [..., S] sigma_i >= 0; t_edges: [..., S+1]; directions: [..., 3].
    """
    delta = jnp.diff(t_edges, axis=-1) * jnp.linalg.norm(directions, axis=-1, keepdims=True)
    optical = density * delta
    alpha = 1.0 - jnp.exp(-optical)
    before = jnp.concatenate([jnp.zeros_like(optical[..., :1]),
                              jnp.cumsum(optical[..., :-1], axis=-1)], axis=-1)
    return alpha * jnp.exp(-before)


def composite_channels(values: jax.Array, density: jax.Array, t_edges: jax.Array,
                       t_mid: jax.Array, directions: jax.Array,
                       background=0.0) -> ChannelRender:
    """Alpha compositing of per-sample C-channel values along rays (module doc).

    Args:
      values: [..., S, C]; density: [..., S]; t_edges: [..., S+1]; t_mid: [..., S];
      directions: [..., 3] (unnormalised ray directions).
      background: v_bg, a number or [C], shown where the rays are not opaque.
    Returns:
      ChannelRender; depth = sum_i w_i t_mid_i + (1 - acc) far.
    """
    weights = compute_weights(density, t_edges, directions)
    acc = jnp.sum(weights, axis=-1)
    out = jnp.sum(weights[..., None] * values, axis=-2)
    out = out + (1.0 - acc[..., None]) * jnp.asarray(background, out.dtype)
    depth = jnp.sum(weights * t_mid, axis=-1) + (1.0 - acc) * t_edges[..., -1]
    return ChannelRender(out, depth, acc, weights, t_edges)


def surface_depth(render: ChannelRender | RenderOutput, far) -> jax.Array:
    """The expected termination depth given that the ray terminates, sum_i w_i t_i / acc
    [...], of a rendering whose depth counts the missed mass (1 - acc) at far
    (`composite_channels`); far where nothing is hit (acc < 1e-6). Unlike render.depth
    it does not pull a partly transparent surface towards far."""
    acc = render.acc
    hit = acc > 1e-6
    return jnp.where(hit, (render.depth - (1.0 - acc) * far) / jnp.where(hit, acc, 1.0), far)


def composite(rgb: jax.Array, density: jax.Array, t_edges: jax.Array, t_mid: jax.Array,
              directions: jax.Array, white_background: bool = False) -> RenderOutput:
    """Alpha compositing of per-sample colours and densities along rays.

    Args:
      rgb: [..., S, 3]; density: [..., S]; t_edges: [..., S+1]; t_mid: [..., S];
      directions: [..., 3] (unnormalised ray directions).
      white_background: composite onto white (Blender scenes) instead of black.
    Returns:
      RenderOutput; depth = sum_i w_i t_mid_i + (1 - acc) far.
    """
    return _as_rgb(composite_channels(rgb, density, t_edges, t_mid, directions,
                                      1.0 if white_background else 0.0))


def _as_rgb(render: ChannelRender) -> RenderOutput:
    """The RenderOutput of a 3-channel ChannelRender (values are the colours)."""
    return RenderOutput(render.values, render.depth, render.acc, render.weights,
                        render.t_edges)


def sample_pdf(rng: Optional[jax.Array], t_edges: jax.Array, weights: jax.Array,
               num_samples: int, padding: float = 1e-5) -> jax.Array:
    """Inverse-transform sampling of the piecewise-constant pdf ~ weights (NeRF 5.2).

    Args:
      rng: PRNG key (uniform u), or None for evenly spaced u (deterministic).
      t_edges: [..., S+1] bin edges; weights: [..., S] (need not sum to 1).
      num_samples: number of new depths per ray.
      padding: added to every weight so that empty rays sample uniformly.
    Returns:
      [..., num_samples] sorted depths, with the gradient stopped.
    """
    weights = jax.lax.stop_gradient(weights) + padding
    pdf = weights / jnp.sum(weights, axis=-1, keepdims=True)
    cdf = jnp.concatenate([jnp.zeros_like(pdf[..., :1]), jnp.cumsum(pdf, axis=-1)], axis=-1)
    cdf = jnp.minimum(cdf, 1.0)
    shape = weights.shape[:-1] + (num_samples,)
    if rng is None:
        u = jnp.broadcast_to(jnp.linspace(0.0, 1.0, num_samples + 2)[1:-1], shape)
    else:
        u = jnp.sort(jax.random.uniform(rng, shape, cdf.dtype), axis=-1)
    return jax.lax.stop_gradient(_invert_cdf(u, cdf, t_edges))


def _invert_cdf(u: jax.Array, cdf: jax.Array, t_edges: jax.Array) -> jax.Array:
    """Piecewise-linear inverse of cdf [..., S+1] at u [..., n].

    Compare-all search (O(n * S) per ray, fast on accelerators, no while loop).
    """
    num_bins = cdf.shape[-1] - 1
    index = jnp.sum(u[..., :, None] >= cdf[..., None, :], axis=-1) - 1
    index = jnp.clip(index, 0, num_bins - 1)
    c0, c1 = (jnp.take_along_axis(cdf, i, -1) for i in (index, index + 1))
    t0, t1 = (jnp.take_along_axis(t_edges, i, -1) for i in (index, index + 1))
    frac = jnp.clip(jnp.where(c1 > c0, (u - c0) / jnp.where(c1 > c0, c1 - c0, 1.0), 0.0), 0.0, 1.0)
    return t0 + frac * (t1 - t0)


def remat_chunks(field_fn: FieldFn, chunk: int) -> FieldFn:
    """field_fn queried `chunk` rays at a time (`lax.map`), each chunk rematerialised
    (`jax.checkpoint`): the backward pass keeps the chunks' inputs and recomputes the
    field's activations one chunk at a time instead of storing them for every ray.

    The returned field takes points, viewdirs [..., S, 3] (rays [...], S samples each)
    like field_fn and returns its values. Rays are flattened and padded to a multiple of
    min(chunk, number of rays) by repeating the last ray; the padding's outputs are
    dropped, so it gets no gradient."""
    step = jax.checkpoint(lambda args: field_fn(*args))

    def chunked(points: jax.Array, viewdirs: jax.Array):
        lead, tail = points.shape[:-2], points.shape[-2:]
        n = math.prod(lead)
        size = min(chunk, n)
        num = -(-n // size)
        split = lambda a: jnp.pad(a.reshape((n,) + tail), ((0, num * size - n), (0, 0), (0, 0)),
                                  mode="edge").reshape((num, size) + tail)
        out = jax.lax.map(step, (split(points), split(viewdirs)))
        return jax.tree_util.tree_map(
            lambda a: a.reshape((num * size,) + a.shape[2:])[:n].reshape(lead + a.shape[2:]),
            out)
    return chunked


def _query(field_fn: FieldFn, rays: Rays, t_mid: jax.Array):
    """Evaluates the field at o + t d for t_mid [..., S]."""
    points = rays.origins[..., None, :] + t_mid[..., None] * rays.directions[..., None, :]
    viewdirs = jnp.broadcast_to(rays.viewdirs[..., None, :], points.shape)
    return field_fn(points, viewdirs)


def render_rays(field_fn: FieldFn, rays: Rays, near, far, num_samples: int,
                rng: Optional[jax.Array] = None, white_background: bool = False,
                lindisp: bool = False) -> RenderOutput:
    """Renders rays [...] with S = num_samples stratified samples (one field pass).

    Args:
      field_fn: see module docstring; rays: Rays with fields [..., 3].
      near, far: depth bounds (scalars or [...]).
      rng: stratified-sampling key, or None for bin midpoints (evaluation).
    """
    return _as_rgb(render_rays_channels(field_fn, rays, near, far, num_samples, rng,
                                        1.0 if white_background else 0.0, lindisp))


def render_rays_channels(field_fn: FieldFn, rays: Rays, near, far, num_samples: int,
                         rng: Optional[jax.Array] = None, background=0.0,
                         lindisp: bool = False) -> ChannelRender:
    """`render_rays` of a field returning C-channel values [..., S, C] (module doc) in
    place of rgb, composited onto `background` (a number or [C])."""
    t_edges, t_mid = stratified_bins(rng, near, far, num_samples, rays.origins.shape[:-1],
                                     lindisp, rays.origins.dtype)
    values, density = _query(field_fn, rays, t_mid)
    return composite_channels(values, density, t_edges, t_mid, rays.directions, background)


def render_rays_hierarchical(field_fn: FieldFn, rays: Rays, near, far, num_samples: int,
                             num_importance: int, rng: Optional[jax.Array] = None,
                             white_background: bool = False, lindisp: bool = False,
                             fine_fn: Optional[FieldFn] = None
                             ) -> Tuple[RenderOutput, RenderOutput]:
    """Coarse pass + importance-sampled fine pass (NeRF 5.2).

    The fine pass queries the field at the midpoints of the bins whose edges
    are the coarse edges merged with `num_importance` depths drawn from the
    coarse weights (S + num_importance + 1 edges, all without gradient).
    fine_fn: the fine pass's field (NeRF's separate fine network); None: field_fn
    for both passes (one network).

    Returns:
      (coarse, fine) RenderOutputs; fine has S + num_importance samples.
    """
    keys = (None, None) if rng is None else tuple(jax.random.split(rng))
    coarse = render_rays(field_fn, rays, near, far, num_samples, keys[0], white_background, lindisp)
    extra = sample_pdf(keys[1], coarse.t_edges, coarse.weights, num_importance)
    t_edges = jnp.sort(jnp.concatenate([jax.lax.stop_gradient(coarse.t_edges), extra], -1), -1)
    t_mid = 0.5 * (t_edges[..., 1:] + t_edges[..., :-1])
    rgb, density = _query(fine_fn or field_fn, rays, t_mid)
    return coarse, composite(rgb, density, t_edges, t_mid, rays.directions, white_background)


def render_image(field_fn: FieldFn, rays: Rays, chunk: int = 4096, *, near, far,
                 num_samples: int, num_importance: int = 0, rng: Optional[jax.Array] = None,
                 white_background: bool = False, lindisp: bool = False,
                 fine_fn: Optional[FieldFn] = None) -> RenderOutput:
    """Renders rays of any leading shape (e.g. [H, W]) in chunks with `lax.map`.

    near and far are scalars here. Rays are flattened, padded to a multiple
    of `chunk` and rendered `chunk` at a time (memory ~ chunk * samples *
    field width); chunk c uses the key fold_in(rng, c). Jit-able and
    differentiable. With num_importance > 0 the fine rendering is returned
    (by fine_fn when given, see `render_rays_hierarchical`).

    Returns:
      RenderOutput with leading shape rays.origins.shape[:-1].
    """
    shape = rays.origins.shape[:-1]
    flat = jax.tree_util.tree_map(lambda a: a.reshape(-1, 3), rays)
    n = flat.origins.shape[0]
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n
    padded = jax.tree_util.tree_map(
        lambda a: jnp.pad(a, ((0, pad), (0, 0)), mode="edge").reshape(num_chunks, chunk, 3), flat)

    def render_chunk(args):
        index, chunk_rays = args
        key = None if rng is None else jax.random.fold_in(rng, index)
        if num_importance > 0:
            return render_rays_hierarchical(field_fn, chunk_rays, near, far, num_samples,
                                            num_importance, key, white_background, lindisp,
                                            fine_fn)[1]
        return render_rays(field_fn, chunk_rays, near, far, num_samples, key,
                           white_background, lindisp)

    out = jax.lax.map(render_chunk, (jnp.arange(num_chunks), padded))
    unflatten = lambda a: a.reshape((-1,) + a.shape[2:])[:n].reshape(shape + a.shape[2:])
    return jax.tree_util.tree_map(unflatten, out)
