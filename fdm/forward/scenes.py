"""Inverse graphics on the procedural scene family (seed 003 Sec. 4.1, brief S2, sized for
a CPU): random scenes of `fdm.data.scene_family` seen by three cameras; the signal is a
pixelNeRF conditioned on the context and the target (`fdm.forward.pixelnerf`).

Notation:
  views    H x W = size x size images in [-1, 1] with the toy scene's field of view
           CAMERA_ANGLE_X, depths [NEAR, FAR] and white background (`geometry`; the
           constants of `fdm.data.toy_scene`, which this layer does not import).
  phi      a camera c2w float32 [4, 4] on the toy scene's orbit (radius 4, elevation
           10-80 degrees, looking at the origin), drawn independently for the context,
           the target and the novel view (`fdm.data.scene_tuples`).
  S        the conditioned field [2, H, W, F + 13] (`fdm.forward.pixelnerf`, module
           doc): feature maps and cameras of the context and of the (noisy) target,
           and the target's diffusion timestep t.
  forward  forward(S, phi) = 2 render(S, phi)_rgb - 1 (`SceneOperator`): the field
           volume-rendered at phi; its MLP is learned with the denoiser, so the operator
           holds the trained params['field'] (`SceneOperator.bind`).
  truth    what evaluation knows of the true scene (the data's 'signal', made by
           `fdm.data.scene_tuples`), one array [H, W, 3 K + 7] (`pack_truth`): its
           analytic views at the K = 4 RING cameras (`ring_cameras`: azimuths 45 + 90 k
           degrees at 30 degrees elevation, the same world cameras for every scene) in
           channels 3k .. 3k + 2, the context warped to the target view (channels 3 K ..
           3 K + 2: the context image, bilinearly sampled where each target pixel's first
           hit point projects into it; meaningful where seen), then two masks of the
           target view's pixels: surface (the pixel's ray hits a primitive) and seen (its
           first hit point lies inside the context's image and nothing occludes it from
           the context camera), then, for scenes with hidden sides (`fdm.data.scene_tuples`
           option hidden_sides), a third mask, hidden (the pixel shows a far side painted
           with a colour independent of everything the context shows), and there the
           posterior std that colour alone gives, on [-1, 1] (prior_std; 0 elsewhere,
           and both 0 without hidden sides). `Truth` holds them apart.

Regularisers (`regularizers`; weights of `RegularizerWeights`, 0 = off; supp. Eq. 7-10):
  loss_cond             ||O_det,rgb - O^trgt||^2 (mean), O_det the render of the context-only
                        field S_det at phi^trgt (det_samples bins; not for the
                        deterministic model, whose S is S_det)
  loss_depth_smoothness edge-aware smoothness of the depth renders of S at phi^trgt and
                        phi^novel, depth mapped to [0, 1] over [near, far], guided by the
                        true view on [0, 1] (`fdm.nerf.regularizers`), summed over the two
                        views
  loss_distortion       the distortion loss of the same renders, edges mapped to [0, 1]
  loss_opacity_entropy  the binary entropy of the same renders' opacity (mean over pixels,
                        summed over the two views; not in the paper: an opacity prior,
                        `fdm.nerf.regularizers.opacity_entropy`)
LPIPS (supp. Eq. 8) is not a training loss here.

Scores of samples [N, M, ...] of N eval tuples (`score`; images compared on [0, 1]):
  psnr_trgt          mean over the N M samples of the PSNR of forward(S, phi^trgt) vs O^trgt
  psnr_trgt_best     mean over contexts of the best of the M samples
  psnr_trgt_mean     PSNR of the mean of the M renders (what a deterministic model aims at)
  psnr_novel         as psnr_trgt at phi^novel
  sample_std_seen    per-pixel standard deviation over the M target renders (mean of the
                     channels), averaged over the target's seen pixels (truth)
  sample_std_unseen  the same over its surface pixels that are not seen
  spread_skill_seen  the samples' spread against the error of their mean over the
                     target's seen pixels (`fdm.metrics.calibration.spread_skill_ratio`):
                     1 for a calibrated sampler, below 1 when the M renders agree more
                     than their mean's error warrants, 0 for the deterministic model
  spread_skill_unseen  the same over its unseen surface pixels
  unseen_fraction    the fraction of surface pixels not seen (background pixels are
                     neither)
  With hidden sides (scored when the truth marks any hidden pixel not seen): on the
  target's hidden pixels, where the posterior of the colour is exactly its prior,
  sample_std_hidden, spread_skill_hidden, rmse_trgt_hidden and rmse_mean_image_hidden
  as above, against their known answers prior_std_hidden (the mean posterior std from
  the colour, on [-1, 1] like sample_std: exact where the context fixes the geometry,
  as it does for a sphere or box it sees, a floor where it does not; a calibrated
  sampler's sample_std_hidden approaches about sqrt((M - 1) / M) of it) and
  rmse_floor_hidden (its root mean square halved, on [0, 1] like the RMSEs: no
  predictor's expected RMSE there is lower; the posterior mean's equals it where the
  geometry is fixed, calibrated samples' is sqrt(2) of it); hidden_fraction the
  fraction of surface pixels that are hidden.
  Away from edges (`interior`: the pixels of a class whose 3 x 3 neighbourhood lies
  wholly in that class, none on the image border): sample_std_seen_interior,
  spread_skill_seen_interior and rmse_trgt_seen_interior, and with hidden sides the same
  _hidden_interior, as above over those pixels, with their baselines and known answers
  rmse_mean_image_*_interior, rmse_context_warp_seen_interior and
  prior_std_hidden_interior, and seen_interior_fraction (and hidden_) the share of the
  class's pixels that are interior; absent when a class has no interior pixel. A pixel
  on a class's edge mixes surfaces at this resolution and moves with a small error of
  depth or silhouette, so these tell the spread inside what the context sees from the
  spread along its outline.
  rmse_trgt_seen     RMSE on [0, 1] of the M target renders against O^trgt over the
                     target's seen pixels (all samples, all channels): whether the
                     context's pixels reach the render (the deterministic model too)
  rmse_trgt_unseen   the same over its unseen surface pixels
  rmse_context_warp_seen  the oracle of the seen pixels: the same RMSE of the context
                     warped to the target with the true geometry (truth): what copying the
                     context's colours along the true surface scores there
  rmse_depth_warp_seen  the same RMSE of the context warped to the target along the
                     model's own geometry (`warp_context`: each target pixel's
                     `fdm.nerf.render.surface_depth` point, projected into the context
                     camera, looks up the context image): near rmse_context_warp_seen,
                     the model's depth is right where the context sees and its colour
                     path is what loses the context's pixels; near rmse_trgt_seen or
                     above, its geometry is the limit
  rmse_weights_warp_seen  the same RMSE of the context's colours at every bin of the
                     target ray composited with the model's own weights and divided by its
                     opacity (`composite_context`): the render of this depth
                     distribution with perfect colours, opaque. Against rmse_trgt_seen it
                     tells the depth distribution (this) from the colour head and the
                     transparency (what the render loses beyond it; opacity_seen)
  opacity_seen       the target render's opacity (acc, 1 - the background's weight),
                     mean over samples, averaged over the target's seen pixels (near 1:
                     opaque surfaces; well below 1: a semi-transparent fog)
  opacity_background the same over the target's background pixels (truth: no surface);
                     near 0 when the model leaves empty space empty
  rmse_mean_image_seen, rmse_mean_image_unseen  the baseline that uses no context: the
                     mean real view (as fd_pixels_mean_image) over the same pixels
  fd_pixels_trgt     FID-style (`pixel_distribution_scores`): the Frechet distance
                     (`fdm.metrics.fid`) between the N M target renders and the 3 N real
                     views of the N tuples (context, target, novel: views of the same
                     scenes from independent orbit cameras), each image average-pooled to
                     about 8 x 8 (FD_POOLED_SIZE) and read as a vector on [0, 1]
                     (Inception features mean nothing at 16 x 16). Blur raises it: a
                     posterior mean has too little variance.
  fd_pixels_mean_image  the baseline that answers every context with the mean real view
                     (all blur; it equals tr Sigma of the real views)
  Both need N >= 2. FD is biased upwards at small set sizes, so compare runs at equal N
  and M. Checked on 384 against 384 real views at 8 x 8: other real views 0.32, a
  Gaussian blur of 1 px 1.08, of 2 px 3.49, the mean image 4.39 (at 16 x 16 with 32
  images a side, real views scored as badly as the mean image). A real-view floor of the
  evaluation's own size does not exist: 48 real views against 48 others score 2.9, above
  the models' 256 samples against 96 real views. KID's cubic kernel on raw pixels,
  dominated by the mean, did not separate blurred from sharp sets.
PSNR rewards blur: the deterministic model aims at the posterior mean, so compare it with
psnr_trgt_mean (and psnr_trgt_best), not with psnr_trgt alone. Expected for the diffusion
model: sample_std_unseen > sample_std_seen; the deterministic model's samples are one S,
so both stds are 0.
Given the target (`score_given_target`: S from the context and the clean target at
t = 0, every eval tuple; the deterministic model's S is from the context alone):
given_target_psnr_ring, the PSNR of the renders of S at the RING cameras against the
true scene's; given_target_rmse_seen / _unseen / _hidden, the RMSE (on [0, 1], the
pixel classes above) of S rendered at the target's own camera against the target it was
shown: how well forward reproduces an observation it is given, a floor under what any
sample can score there (near 0: the field copies the view; near rmse_floor_hidden on the
hidden pixels: it renders them as if it had not been shown them); and
given_target_alone_rmse_*, the same of the field of the target's slot alone
(`fdm.forward.pixelnerf.view_alone`): the render's fidelity without the mean over views
(below given_target_rmse_*: the context's code dilutes the target's; about equal: the
render itself is the limit). _hidden only when the truth marks hidden pixels.

Figures: a signal is shown as its renders at the RING cameras side by side [H, 4 W, 3]
(`render`; the true scene: `render_truth`), a context as its image padded with white to
the same width (`canvas_image`); `target_figure_tiles` (experiments/scenes_target_figure.py)
shows samples at their target view beside its pixel classes, their spread and the known
answer's.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fdm.errors import UserError
from fdm.forward.base import ObservationTuple
from fdm.forward.pixelnerf import (RGB, EXTRA_CHANNELS, TARGET_SLOT, PixelField, SceneDenoiser,
                                   context_only, project, render_signal, sample_features,
                                   view_alone, world_to_camera)
from fdm.metrics import fid
from fdm.metrics.calibration import spread_skill_ratio
from fdm.nerf import cameras
from fdm.nerf.regularizers import distortion_loss, edge_aware_smoothness, opacity_entropy
from fdm.nerf.rays import generate_rays
from fdm.nerf.render import ChannelRender, surface_depth
from fdm.nerf.views import ViewGeometry
from fdm.nn.unet import UNet

CAMERA_ANGLE_X = 0.6911112070083618      # the toy scene's (fdm.data.toy_scene)
NEAR, FAR, RADIUS = 2.0, 6.0, 4.0
FD_POOLED_SIZE = 8                       # images are pooled to about this size for FD
RING_ELEVATION_DEG = 30.0
RING_AZIMUTHS_DEG = (45.0, 135.0, 225.0, 315.0)
NUM_RING = len(RING_AZIMUTHS_DEG)
PSNR_FLOOR_MSE = 1e-10
STD_DISPLAY_MAX = 0.5                    # per-pixel std ([-1, 1] units) shown white
PIXEL_CLASS_COLORS = {"seen": np.array([-0.6, 0.6, -0.6]),      # in [-1, 1]
                      "unseen": np.array([0.0, 0.0, 0.0]),
                      "hidden": np.array([0.8, -0.8, 0.8])}


def focal_length(size: int) -> float:
    """Focal length in pixels of a size x size view with the field of view CAMERA_ANGLE_X."""
    return float(0.5 * size / np.tan(0.5 * CAMERA_ANGLE_X))


def geometry(size: int) -> ViewGeometry:
    """The views' geometry: size x size pixels, the toy scene's field of view and depth
    bounds, white background."""
    return ViewGeometry(size, size, focal_length(size), NEAR, FAR, True)


def signal_shape(size: int, features: int) -> tuple[int, ...]:
    """The shape of one S: [2, size, size, features + 13] (features: the channels of
    each view's feature map, `SceneDenoiser.signal_features`)."""
    return (2, size, size, features + EXTRA_CHANNELS)


def ring_cameras() -> np.ndarray:
    """The RING cameras c2w float32 [4, 4, 4]: radius RADIUS, elevation
    RING_ELEVATION_DEG, azimuths RING_AZIMUTHS_DEG, looking at the origin (z up)."""
    az, el = np.deg2rad(RING_AZIMUTHS_DEG), np.deg2rad(RING_ELEVATION_DEG)
    eye = RADIUS * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                             np.full_like(az, np.sin(el))], -1)
    return np.asarray(cameras.look_at(jnp.asarray(eye, jnp.float32)), np.float32)


@dataclasses.dataclass(frozen=True)
class Truth:
    """What evaluation knows of N true scenes (module doc), numpy."""
    ring: np.ndarray       # [N, K, H, W, 3] their views at the RING cameras, in [-1, 1]
    warp: np.ndarray       # [N, H, W, 3] the context's colour at each target pixel's hit
                           # point (meaningful where seen)
    surface: np.ndarray    # bool [N, H, W]
    seen: np.ndarray       # bool [N, H, W]
    hidden: np.ndarray     # bool [N, H, W] (all False without hidden sides)
    prior_std: np.ndarray  # [N, H, W] the colour's posterior std where hidden, [-1, 1]

    def pixel_classes(self) -> dict[str, np.ndarray]:
        """The target's pixel classes of the scores, bool [N, H, W] each: seen, unseen
        (surface not seen) and hidden (a repainted side not seen: part of unseen)."""
        return {"seen": self.seen, "unseen": self.surface & ~self.seen,
                "hidden": self.hidden & ~self.seen}


def pack_truth(ring_views: np.ndarray, warp: np.ndarray, surface: np.ndarray,
               seen: np.ndarray, hidden: np.ndarray, prior_std: np.ndarray) -> np.ndarray:
    """truth float32 [N, H, W, 3 K + 7] (module doc) of the views at the RING cameras
    [N, K, H, W, 3] in [-1, 1], the context warped to the target [N, H, W, 3], the
    target's masks surface, seen, hidden bool [N, H, W] and the prior std [N, H, W]."""
    n, k, h, w, c = ring_views.shape
    views = np.transpose(ring_views, (0, 2, 3, 1, 4)).reshape(n, h, w, k * c)
    masks = np.stack([surface, seen, hidden, prior_std], -1).astype(np.float32)
    return np.concatenate([views, warp, masks], -1).astype(np.float32)


def unpack_truth(truth: np.ndarray) -> Truth:
    """The `Truth` of truth [N, H, W, 3 K + 7] (`pack_truth`)."""
    truth = np.asarray(truth)
    n, h, w, _ = truth.shape
    views = truth[..., :NUM_RING * RGB].reshape(n, h, w, NUM_RING, RGB)
    return Truth(ring=np.transpose(views, (0, 3, 1, 2, 4)),
                 warp=truth[..., NUM_RING * RGB:(NUM_RING + 1) * RGB],
                 surface=truth[..., -4] > 0.5, seen=truth[..., -3] > 0.5,
                 hidden=truth[..., -2] > 0.5, prior_std=truth[..., -1])


# ------------------------------------------------------------------ forward model


@flax.struct.dataclass
class SceneOperator:
    """forward(S, phi) = 2 render(S, phi)_rgb - 1 (module doc) by the PixelField `field`
    with params `field_params` (None until `bind`); num_samples bins per ray."""
    field_params: Any
    field: PixelField = flax.struct.field(pytree_node=False)
    num_samples: int = flax.struct.field(pytree_node=False)

    def bind(self, field_params) -> "SceneOperator":
        """The operator with the trained params of the field."""
        return self.replace(field_params=field_params)

    def render(self, signal: jax.Array, phi: jax.Array,
               num_samples: int | None = None) -> ChannelRender:
        """The rendering [B, H, W, ...] of S [B, 2, H, W, F + 13] at cameras phi [B, 4, 4]
        with num_samples bins (None: the operator's)."""
        if self.field_params is None:
            raise UserError("the scenes' forward model renders with trained field params; "
                            "bind them first (ForwardProblem.bound)")
        field = functools.partial(self.field.apply, {"params": self.field_params})
        return render_signal(field, signal, phi, self.field.geometry,
                             num_samples or self.num_samples, self.field.det_features)

    def apply(self, signal: jax.Array, phi: jax.Array) -> jax.Array:
        """O [B, H, W, 3] in [-1, 1] of S [B, 2, H, W, F + 13] at phi [B, 4, 4] (Eq. 12)."""
        return 2.0 * self.render(signal, phi).values[..., :RGB] - 1.0

    def paste(self, obs: jax.Array, phi: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(canvas, mask [B, H, W, 1]): every view is a whole image, mask 1."""
        return obs, jnp.ones(obs.shape[:-1] + (1,), obs.dtype)


@dataclasses.dataclass(frozen=True)
class RegularizerWeights:
    """Weights of the regularisers (module doc; 0 = off)."""
    cond: float = 0.0
    depth_smoothness: float = 0.0
    distortion: float = 0.0
    opacity_entropy: float = 0.0


def regularizers(operator: SceneOperator, weights: RegularizerWeights, det_samples: int,
                 deterministic: bool, views: ObservationTuple,
                 signal: jax.Array) -> dict[str, jax.Array]:
    """The weighted regularisers {name: [B]} (module doc) of S [B, ...] for the tuples
    `views`; only those with a weight > 0."""
    out = {}
    if weights.cond > 0.0 and not deterministic:
        det = operator.render(context_only(signal), views.trgt.phi, det_samples)
        rgb = 2.0 * det.values[..., :RGB] - 1.0
        out["loss_cond"] = weights.cond * jnp.mean(jnp.square(rgb - views.trgt.obs), (1, 2, 3))
    if max(weights.depth_smoothness, weights.distortion, weights.opacity_entropy) > 0.0:
        geo = operator.field.geometry
        unit = lambda d: (d - geo.near) / (geo.far - geo.near)
        smooth, dist, entropy = 0.0, 0.0, 0.0
        for view in (views.trgt, views.novel):
            r = operator.render(signal, view.phi)
            smooth = smooth + edge_aware_smoothness(unit(r.depth), 0.5 * (view.obs + 1.0))
            dist = dist + jnp.mean(distortion_loss(r.weights, unit(r.t_edges)), (1, 2))
            entropy = entropy + jnp.mean(opacity_entropy(r.acc), (1, 2))
        if weights.depth_smoothness > 0.0:
            out["loss_depth_smoothness"] = weights.depth_smoothness * smooth
        if weights.distortion > 0.0:
            out["loss_distortion"] = weights.distortion * dist
        if weights.opacity_entropy > 0.0:
            out["loss_opacity_entropy"] = weights.opacity_entropy * entropy
    return out


def denoiser(size: int, features: int, det_features: int, det_samples: int,
             image_features: bool, field_kwargs: dict, unet_kwargs: dict,
             deterministic: bool) -> SceneDenoiser:
    """The SceneDenoiser of size x size views: enc a UNet (unet_kwargs: ch, ch_mult,
    num_res_blocks, attn_resolutions, num_groups) with out_ch = features, the views'
    images appended to the feature maps when image_features, the PixelField with
    det_features rendered features (field_kwargs: width, view_blocks, joint_blocks,
    num_freqs, time_mlp, density_from_context)."""
    field = PixelField(geometry(size), det_features, **field_kwargs)
    return SceneDenoiser(UNet(out_ch=features, **unet_kwargs), field, det_samples,
                         deterministic, image_features)


# ------------------------------------------------------------------ scores and figures


@jax.jit
def _apply(operator: SceneOperator, signal: jax.Array, phi: jax.Array) -> jax.Array:
    """operator.apply(S [N, ...], phi [N, 4, 4]), jitted (the operator is a pytree)."""
    return operator.apply(signal, phi)


def _context_along_rays(context: jax.Array, c2w_ctxt: jax.Array, c2w_trgt: jax.Array,
                        depths: jax.Array, geometry: ViewGeometry) -> jax.Array:
    """The context images [N, H, W, C] looked up (bilinear, border-clamped) where the
    points at depths [N, H, W, K] along each target pixel's ray (o + depth d, the rays of
    `fdm.nerf.rays.generate_rays` of c2w_trgt [N, 4, 4]) project into the context
    cameras c2w_ctxt [N, 4, 4]: [N, H, W, K, C]."""
    n, h, w, k = depths.shape
    rays = generate_rays(c2w_trgt, h, w, geometry.focal)
    points = rays.origins[..., None, :] + depths[..., None] * rays.directions[..., None, :]
    xy = project(world_to_camera(c2w_ctxt, points.reshape(n, -1, 3)), geometry)
    return sample_features(context, xy).reshape(n, h, w, k, context.shape[-1])


def warp_context(context: jax.Array, c2w_ctxt: jax.Array, c2w_trgt: jax.Array,
                 depth: jax.Array, geometry: ViewGeometry) -> jax.Array:
    """The context images [N, H, W, 3] looked up where each pixel of the target views
    c2w_trgt [N, 4, 4] projects into the context cameras c2w_ctxt [N, 4, 4] at its depth
    [N, H, W] along the target ray (`_context_along_rays`): [N, H, W, 3]."""
    return _context_along_rays(context, c2w_ctxt, c2w_trgt, depth[..., None],
                               geometry)[..., 0, :]


def composite_context(context: jax.Array, c2w_ctxt: jax.Array, c2w_trgt: jax.Array,
                      render: ChannelRender, geometry: ViewGeometry) -> jax.Array:
    """The context images [N, H, W, 3] looked up where every bin midpoint of each target
    ray (c2w_trgt [N, 4, 4]) projects into the context camera c2w_ctxt [N, 4, 4],
    composited with the render's own weights [N, H, W, S] (its t_edges: bins without
    stratification, as evaluation renders) and divided by its opacity:
    sum_i w_i ctxt(pi(p_i)) / acc [N, H, W, 3] (zero where acc < 1e-6). The render a
    field with this depth distribution would give with the context's colours, opaque."""
    mids = 0.5 * (render.t_edges[..., 1:] + render.t_edges[..., :-1])           # [N, H, W, S]
    colours = _context_along_rays(context, c2w_ctxt, c2w_trgt, mids, geometry)
    acc = render.acc[..., None]
    blend = jnp.sum(render.weights[..., None] * colours, axis=-2)
    return jnp.where(acc > 1e-6, blend / jnp.maximum(acc, 1e-6), 0.0)


@flax.struct.dataclass
class GeometryProbes:
    """What the model's own geometry does with the context's colours, per target pixel
    (module doc: rmse_depth_warp_seen, rmse_weights_warp_seen, opacity_*)."""
    depth_warp: jax.Array      # [..., H, W, 3] `warp_context` along `surface_depth`
    weights_warp: jax.Array    # [..., H, W, 3] `composite_context`
    opacity: jax.Array         # [..., H, W] the render's acc


@jax.jit
def _geometry_probes(operator: SceneOperator, signal: jax.Array,
                     views: ObservationTuple) -> GeometryProbes:
    """The GeometryProbes [N] of S [N, ...] rendered at the targets of `views` [N]."""
    render = operator.render(signal, views.trgt.phi)
    geo, ctxt = operator.field.geometry, views.ctxt
    return GeometryProbes(
        warp_context(ctxt.obs, ctxt.phi, views.trgt.phi, surface_depth(render, geo.far), geo),
        composite_context(ctxt.obs, ctxt.phi, views.trgt.phi, render, geo), render.acc)


def _render_at(operator: SceneOperator, signals: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """forward(S, c2w) [N, H, W, 3] of signals [N, ...] at cameras c2w [N, 4, 4]."""
    return np.asarray(_apply(operator, jnp.asarray(signals), jnp.asarray(c2w, jnp.float32)))


def psnr(images: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR [...] in dB of images [..., H, W, C] against truth (both in [-1, 1]), on
    [0, 1]."""
    mse = np.mean(np.square((np.asarray(images, np.float64) - truth) / 2.0), axis=(-3, -2, -1))
    return -10.0 * np.log10(np.maximum(mse, PSNR_FLOOR_MSE))


def score(operator: SceneOperator, signals: np.ndarray, views: ObservationTuple,
          truth: np.ndarray) -> dict[str, float]:
    """The scores (module doc) of samples signals [N, M, ...] of the N eval tuples `views`
    (numpy) with their truth [N, H, W, 3 K + 7]."""
    signals = np.asarray(signals)
    n = signals.shape[0]
    trgt = _samples_at(operator, signals, views.trgt.phi)
    novel = _samples_at(operator, signals, views.novel.phi)
    per_sample = psnr(trgt, views.trgt.obs[:, None])
    true = unpack_truth(truth)
    std = _pixel_std(trgt)
    classes = true.pixel_classes()
    seen, unseen = classes["seen"], classes["unseen"]
    real = np.concatenate([views.ctxt.obs, views.trgt.obs, views.novel.obs])   # [3 N, ...]
    mean_image = np.broadcast_to(real.mean(0), views.trgt.obs.shape)[:, None]
    rmse = lambda images, mask: _masked_rmse(images, views.trgt.obs, mask)
    probes = _sample_geometry_probes(operator, signals, views)
    opacity = probes.opacity.mean(1)                                            # [N, H, W]
    return {**pixel_distribution_scores(trgt.reshape((-1,) + trgt.shape[2:]), real, n),
            "psnr_trgt": float(np.mean(per_sample)),
            "psnr_trgt_best": float(np.mean(np.max(per_sample, axis=1))),
            "psnr_trgt_mean": float(np.mean(psnr(trgt.mean(1), views.trgt.obs))),
            "psnr_novel": float(np.mean(psnr(novel, views.novel.obs[:, None]))),
            "sample_std_seen": _masked_mean(std, seen),
            "sample_std_unseen": _masked_mean(std, unseen),
            "spread_skill_seen": spread_skill_ratio(trgt, views.trgt.obs, seen),
            "spread_skill_unseen": spread_skill_ratio(trgt, views.trgt.obs, unseen),
            "rmse_trgt_seen": rmse(trgt, seen),
            "rmse_trgt_unseen": rmse(trgt, unseen),
            "rmse_context_warp_seen": rmse(true.warp[:, None], seen),
            "rmse_depth_warp_seen": rmse(probes.depth_warp, seen),
            "rmse_weights_warp_seen": rmse(probes.weights_warp, seen),
            "opacity_seen": _masked_mean(opacity, seen),
            "opacity_background": _masked_mean(opacity, ~true.surface),
            "rmse_mean_image_seen": rmse(mean_image, seen),
            "rmse_mean_image_unseen": rmse(mean_image, unseen),
            "unseen_fraction": float(np.sum(unseen) / max(np.sum(true.surface), 1)),
            **_hidden_side_scores(trgt, std, views.trgt.obs, mean_image, true),
            **_interior_scores(trgt, std, views.trgt.obs, mean_image, true)}


def interior(mask: np.ndarray) -> np.ndarray:
    """The pixels of mask bool [N, H, W] whose 3 x 3 neighbourhood lies wholly in it, bool
    [N, H, W] (outside the image counts as outside the mask)."""
    mask = np.asarray(mask, bool)
    h, w = mask.shape[1:]
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    inner = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            inner &= padded[:, dy:dy + h, dx:dx + w]
    return inner


def _interior_scores(trgt: np.ndarray, std: np.ndarray, obs: np.ndarray,
                     mean_image: np.ndarray, true: Truth) -> dict[str, float]:
    """The *_seen_interior and *_hidden_interior scores (module doc) of target renders
    trgt [N, M, H, W, 3] with their per-pixel std [N, H, W] against obs [N, H, W, 3], and
    the mean view's mean_image [N, 1, H, W, 3]; a class without interior pixels (no
    hidden sides, tiny images) is skipped."""
    scores, classes = {}, true.pixel_classes()
    for name in ("seen", "hidden"):
        mask = classes[name]
        inner = interior(mask)
        if not inner.any():
            continue
        scores.update({f"sample_std_{name}_interior": _masked_mean(std, inner),
                       f"spread_skill_{name}_interior": spread_skill_ratio(trgt, obs, inner),
                       f"rmse_trgt_{name}_interior": _masked_rmse(trgt, obs, inner),
                       f"rmse_mean_image_{name}_interior": _masked_rmse(mean_image, obs, inner),
                       f"{name}_interior_fraction": float(np.sum(inner) / np.sum(mask))})
        if name == "seen":
            scores["rmse_context_warp_seen_interior"] = _masked_rmse(true.warp[:, None], obs,
                                                                     inner)
        else:
            scores["prior_std_hidden_interior"] = _masked_mean(true.prior_std, inner)
    return scores


def _samples_at(operator: SceneOperator, signals: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """forward(S, c2w_n) [N, M, H, W, 3] of the M samples signals [N, M, ...] of tuple n at
    its camera c2w [N, 4, 4]."""
    n, m = signals.shape[:2]
    flat = signals.reshape((n * m,) + signals.shape[2:])
    images = _render_at(operator, flat, np.repeat(c2w, m, 0))
    return images.reshape((n, m) + images.shape[1:])


def _pixel_std(images: np.ndarray) -> np.ndarray:
    """The per-pixel std [N, H, W] over the M images [N, M, H, W, 3], mean over channels
    (sample_std_*)."""
    return np.mean(np.std(images, axis=1), axis=-1)


def _hidden_side_scores(trgt: np.ndarray, std: np.ndarray, obs: np.ndarray,
                        mean_image: np.ndarray, true: Truth) -> dict[str, float]:
    """The hidden-side scores (module doc) of target renders trgt [N, M, H, W, 3] with
    their per-pixel std [N, H, W] against obs [N, H, W, 3], and the mean view's
    mean_image [N, 1, H, W, 3]; {} when the truth marks no hidden pixel that is not
    seen."""
    hidden = true.pixel_classes()["hidden"]
    if not hidden.any():
        return {}
    return {"sample_std_hidden": _masked_mean(std, hidden),
            "spread_skill_hidden": spread_skill_ratio(trgt, obs, hidden),
            "rmse_trgt_hidden": _masked_rmse(trgt, obs, hidden),
            "rmse_mean_image_hidden": _masked_rmse(mean_image, obs, hidden),
            "prior_std_hidden": _masked_mean(true.prior_std, hidden),
            "rmse_floor_hidden": float(np.sqrt(_masked_mean(np.square(true.prior_std / 2.0),
                                                            hidden))),
            "hidden_fraction": float(np.sum(hidden) / max(np.sum(true.surface), 1))}


def _sample_geometry_probes(operator: SceneOperator, signals: np.ndarray,
                            views: ObservationTuple) -> GeometryProbes:
    """The GeometryProbes (numpy, [N, M, ...]) of each of the M samples signals [N, M, ...]
    of the N tuples `views` at its target."""
    n, m = signals.shape[:2]
    repeat = jax.tree_util.tree_map(lambda a: jnp.repeat(jnp.asarray(a), m, 0), views)
    flat = jnp.asarray(signals.reshape((n * m,) + signals.shape[2:]))
    probes = _geometry_probes(operator, flat, repeat)
    return jax.tree_util.tree_map(lambda a: np.asarray(a).reshape((n, m) + a.shape[1:]),
                                  probes)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of values [N, H, W] over the pixels where mask [N, H, W] (0 if none)."""
    return float(np.sum(values * mask) / max(np.sum(mask), 1))


def _masked_rmse(images: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """RMSE on [0, 1] of images [N, M, H, W, 3] (M per truth) against truth [N, H, W, 3]
    over the pixels where mask [N, H, W], all M images and channels."""
    square = np.mean(np.square((images - truth[:, None]) / 2.0), axis=(1, -1))
    return float(np.sqrt(_masked_mean(square, mask)))


def pooled_pixels(images: np.ndarray) -> np.ndarray:
    """images [K, H, W, 3] in [-1, 1] -> [K, D] on [0, 1], average-pooled by the largest
    factor that keeps both sides >= FD_POOLED_SIZE (none when H or W is smaller)."""
    k, h, w, c = images.shape
    f = max(1, min(h, w) // FD_POOLED_SIZE)
    x = np.asarray(images, np.float64)[:, :h - h % f, :w - w % f]
    x = x.reshape(k, h // f, f, w // f, f, c).mean(axis=(2, 4))
    return ((x + 1) / 2).reshape(k, -1)


def pixel_distribution_scores(samples: np.ndarray, real: np.ndarray,
                              num_tuples: int) -> dict[str, float]:
    """fd_pixels_trgt and fd_pixels_mean_image (module doc).

    Args:
      samples: [K, H, W, 3] renders in [-1, 1].
      real: [3 N, H, W, 3] real views in [-1, 1], view kind major (contexts, targets,
        novel views, each in tuple order).
      num_tuples: N.
    Returns:
      both scores; {} when N < 2.
    """
    if num_tuples < 2:
        return {}
    x, r = pooled_pixels(samples), pooled_pixels(real)
    mean_image = np.repeat(r.mean(0, keepdims=True), len(x), 0)
    return {"fd_pixels_trgt": fid.fid_from_features(x, r),
            "fd_pixels_mean_image": fid.fid_from_features(mean_image, r)}


def render(operator: SceneOperator, signals: np.ndarray) -> np.ndarray:
    """Signals [N, ...] as images [N, H, 4 W, 3]: their renders at the RING cameras."""
    signals = np.asarray(signals)
    ring = ring_cameras()
    k, n = len(ring), len(signals)
    views = _render_at(operator, np.repeat(signals, k, 0), np.tile(ring, (n, 1, 1)))
    return _side_by_side(views.reshape((n, k) + views.shape[1:]))


def render_truth(truth: np.ndarray) -> np.ndarray:
    """True scenes truth [N, H, W, 3 K + 7] as images [N, H, 4 W, 3]: their views at the
    RING cameras."""
    return _side_by_side(unpack_truth(truth).ring)


def canvas_image(canvas: np.ndarray) -> np.ndarray:
    """Context images [N, H, W, 3] as [N, H, 4 W, 3]: padded with white on the right."""
    canvas = np.asarray(canvas, np.float32)
    pad = np.ones(canvas.shape[:2] + (canvas.shape[2] * (len(RING_AZIMUTHS_DEG) - 1), 3),
                  np.float32)
    return np.concatenate([canvas, pad], axis=2)


def _side_by_side(views: np.ndarray) -> np.ndarray:
    """[N, K, H, W, 3] -> [N, H, K W, 3]."""
    n, k, h, w, c = views.shape
    return np.transpose(views, (0, 2, 1, 3, 4)).reshape(n, h, k * w, c)


def target_figure_tiles(operator: SceneOperator, signals: np.ndarray,
                        views: ObservationTuple, truth: np.ndarray) -> np.ndarray:
    """Tiles [N, M + 5, H, W, 3] in [-1, 1], a row per tuple: the context, the true
    target, its pixel classes (white background, green seen, grey unseen, magenta
    hidden; seen and hidden pixels off their class's `interior` halfway to white), the
    M samples signals [N, M, ...] rendered at the target camera, their
    per-pixel std and the known answer's (prior_std where hidden, black elsewhere), both
    as grey levels with white at STD_DISPLAY_MAX."""
    renders = _samples_at(operator, np.asarray(signals), views.trgt.phi)
    true = unpack_truth(truth)
    hidden = true.pixel_classes()["hidden"]
    classes = pixel_class_image(true)
    prior = np.where(hidden, true.prior_std, 0.0)
    return np.concatenate([views.ctxt.obs[:, None], views.trgt.obs[:, None],
                           classes[:, None], renders, _grey(_pixel_std(renders))[:, None],
                           _grey(prior)[:, None]], axis=1).astype(np.float32)


def pixel_class_image(true: Truth) -> np.ndarray:
    """The target's pixel classes as images [N, H, W, 3] in [-1, 1]: PIXEL_CLASS_COLORS
    (white background), the seen and hidden pixels off their class's `interior` halfway
    to white."""
    hidden = true.pixel_classes()["hidden"]
    edge = (hidden & ~interior(hidden)) | (true.seen & ~interior(true.seen))
    classes = np.select([hidden[..., None], true.seen[..., None], true.surface[..., None]],
                        [PIXEL_CLASS_COLORS[k] for k in ("hidden", "seen", "unseen")], 1.0)
    return np.where(edge[..., None], (classes + 1.0) / 2.0, classes)


def _grey(std: np.ndarray) -> np.ndarray:
    """std [...] as grey images [..., 3] in [-1, 1], white at STD_DISPLAY_MAX."""
    return np.repeat(2.0 * np.clip(std / STD_DISPLAY_MAX, 0.0, 1.0)[..., None] - 1.0, 3, -1)


def score_given_target(operator: SceneOperator, signals: np.ndarray, views: ObservationTuple,
                       truth: np.ndarray) -> dict[str, float]:
    """given_target_psnr_ring and the given_target_rmse_* / given_target_alone_rmse_*
    reproduction scores (module doc) of S [N, ...] of the N tuples `views` (numpy)
    against the truth [N, H, W, 3 K + 7]."""
    classes = unpack_truth(truth).pixel_classes()
    scores = {"given_target_psnr_ring": float(np.mean(
        psnr(render(operator, signals), render_truth(truth))))}
    for name, signal in (("given_target", signals),
                         ("given_target_alone", np.asarray(view_alone(jnp.asarray(signals),
                                                                      TARGET_SLOT)))):
        image = _render_at(operator, signal, views.trgt.phi)
        scores.update({f"{name}_rmse_{c}": _masked_rmse(image[:, None], views.trgt.obs, mask)
                       for c, mask in classes.items() if c != "hidden" or mask.any()})
    return scores
