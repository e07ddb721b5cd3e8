"""Generative lifting: a NeRF inside a diffusion model (seed 000 ch. 3) as a model family.

Notation:
  x0 [B, H, W, 3] a view in [-1, 1]; t [B] int in [0, T); x_t = q_sample(x0, t, eps).
  E: the pose encoder (`fdm.nn.pose_encoder`), E(x_t, t) -> N cameras c2w
     [B, N, 4, 4] and scores s [B, N] (N = 1: axis-angle head, Alg. 3).
  F: the NeRF field (`fdm.nerf.NeRFMLP`); render_i = volume rendering of F from
     camera i at P pixels (`fdm.nerf.render`), x0_hat^i = 2 render_i - 1 [B, P, 3].
  l_i = mean over the P pixels and 3 channels of (x0_hat^i - x0)^2   [B, N].
  Eq. 3.3 (N = 1):  L = l_0.
  Eq. 3.4 (N > 1):  L = min_i l_i + lambda CE(s, argmin_i l_i)   (lambda = model.cls_weight).
  The denoiser is x0-parameterised: its output IS x0_hat (diffusion.prediction
  = "x0"), T = 100. P = model.num_loss_pixels random pixels per image (0: all),
  while E always sees the whole x_t.

Gradient only through the best render (Alg. 4): all N candidates are rendered
in a stop-gradient pass (one candidate at a time, `lax.map`), the argmin picks
the candidate, and only that camera is rendered again with gradients, with the
same stratified samples (so the loss value equals min_i l_i). The other
candidates' cameras and renders get exactly zero reconstruction gradient; the
CE term reaches the score head only.

Variants (config.model): `autoencoder=True` feeds the clean image (x_t = x0,
t = 0; the ablation of Fig. 3.10); `supervised=True` is the NeRF baseline of
Table 3.1: no encoder, cameras from batch['c2w'], optional hierarchical
sampling (num_importance > 0; coarse and fine losses summed, one field, or with
`separate_fine=True` NeRF's separate fine network of the same architecture,
params['nerf_fine']). `precrop_steps` > 0: the loss pixels of the first updates are
drawn from NeRF's centre crop (`fdm.nerf.views.crop_pixels`, side fraction
`precrop_frac`).

DietNeRF (seed 004 ch. 4): `supervised=True` with `semantic_weight` > 0 adds the
semantic consistency loss on renders from unobserved poses every `semantic_every`
updates (`fdm.models.lifting_semantic`, keys semantic_* and mse_finetune_steps). Its
frozen image encoder and target embeddings are `frozen_params()` ({} otherwise), which
the trainer merges into the params loss_fn sees as params['semantic'].

Registration aids (issue 15; all off by default, which is the paper):
  model.select_stride = s > 0: Eq. 3.4's argmin_i l_i is taken on every pixel
    of the stride-s grid (`grid_pixels`, bin midpoints; `candidate_loss`'s
    select_loss) instead of the P random loss pixels; the selected camera's
    gradient pass still uses the loss pixels. Evaluation's pseudo-labels
    ('pseudo' of `eval_step`) always use a grid: stride s, or when s = 0 the
    stride giving ~32 grid pixels along the shorter side (`pseudo_label_stride`).
  model.coarse_to_fine = (start, end) steps: BARF's coarse-to-fine positional
    encoding of F (`fdm.nerf.field`), alpha 0 -> L linearly over [start, end];
    training uses the loss_fn's step, the host-side modes the checkpoint's
    (`set_step`, called by `fdm.run` and the trainer). (0, 0): all bands.
  model.train_t_max, model.train_t_power: t = floor(t_max u^p), u ~ U[0, 1) in
    training (`train_timesteps`); (0 = T, 1.0) is the paper's t ~ U[0, T).
  model.view_warmup_steps = n > 0 (axis-angle head): for the first n updates the NeRF
    is fitted from a learnable per-view camera table params['views'] (BARF's joint
    registration, Adam at train.view_learning_rate) while the encoder regresses the
    table's cameras; then the paper's loss (`view_warmup_loss`). Evaluation adds the
    table's registration of the training views (pose_views_*).
  model.view_gauge: 'free' (BARF) lets the table drift as a whole (a global rotation
    and shift of scene and cameras renders the same, so training does not fix that
    gauge); 'mean' renders the table's rows minus their mean over the training views
    (`gauge_fixed_table`), which pins the cameras' average to the identity: the
    convention of a recentred scene (LLFF `recenter_poses`), so that unaligned errors
    measure the cameras, not the drift.

Evaluation (`evaluate`): image metrics of the held-out views; pose-free, the pose
metrics of `fdm.metrics.poses` (aligned and unaligned rotation errors, the best
constant rotation as a baseline, the centre spread ratio, a similarity alignment
only when the centre fit is well conditioned, else orientations only) on the
held-out views (pose_*) and on the training views (pose_train_*).

Scene: the family is built from a `fdm.models.lifting_scene.SceneMeta` handed in (view
geometry, training cameras), saved as DIR/scene.npz when training starts, so that
`fdm.load`, render and sample work without the scene files; views are rendered with
`fdm.nerf.views`.

Batches (`fdm.data.make_iterator`; scene datasets in `fdm.data.scenes`):
'image' float32 [B, H, W, 3] in [-1, 1],
'c2w' float32 [B, 4, 4] (ground truth, used only by evaluation and the
supervised baseline), 'index' int32 [B] (view index in its split), and
'valid' bool [B] in evaluation batches.

Parameters: {'nerf': ..., 'encoder': ...} ('encoder' absent when supervised),
optimised by separate Adams (train.learning_rate for the NeRF, 1e-4 in the
paper; train.encoder_learning_rate for the encoder, 2e-5), both decayed
exponentially to train.lr_final_factor times their initial value.

Precision and memory (issue 22; model.dtype, model.remat, declared by
`configs.fdm_common.precision_keys`): model.dtype="bfloat16" runs the NeRF field's Dense
layers and the pose encoder's trunk in bfloat16 with float32 parameters and optimizer
state (`fdm.nerf.field`, `fdm.nn.pose_encoder`); the positional encoding, the camera
heads and camera math, rays, volume rendering (alphas, transmittance, weights,
compositing) and the loss stay float32 (`field_fn` returns float32 rgb and density).
model.remat="chunk" queries the field model.remat_chunk rays at a time, each chunk
rematerialised (`fdm.nerf.render.remat_chunks`): the backward pass keeps the chunks'
sample points and recomputes the field's activations one chunk at a time.

Config keys: data.{dataset (toy_scene | nerf_synthetic | llff), data_dir,
image_size, eval_split, seed, num_train, num_val (toy_scene), llffhold and
llff_holdout (llff; see `fdm.data.nerf.load_llff`), num_train_views and
train_views_seed (few-shot, `fdm.data.scenes`)};
model.{supervised, autoencoder, camera_head, num_candidates, candidate_layout,
camera_radius, world_up, cls_weight, num_samples, num_importance, separate_fine,
num_loss_pixels, precrop_steps, precrop_frac, lindisp, ndc, select_stride,
coarse_to_fine, train_t_max, train_t_power, semantic_weight, semantic_every,
semantic_size, semantic_encoder, semantic_encoder_kind, semantic_feature,
semantic_elevation_deg, semantic_radius, mse_finetune_steps, dtype, remat, remat_chunk,
encoder.*,
nerf.*};
train.{learning_rate, encoder_learning_rate, lr_final_factor, grad_clip}; eval.{num_examples,
num_train_views, batch_size, pose_t, chunk, num_samples, render_frames, render_elevation_deg,
landscape_* (`fdm.models.lifting_landscape`)}.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import dm_pix
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from fdm import config_rules as rules, viz
from fdm.data import pipeline
from fdm.data import load_split_arrays
from fdm.diffusion import DiffusionSchedule, ancestral_sample, q_sample
from fdm.errors import UserError
from fdm.host import to_host
from fdm.metrics import poses
from fdm.models import lifting_semantic as semantic
from fdm.models.base import LossOutput, ModelFamily, decayed_adam
from fdm.models.lifting_scene import SCENE_FILE, SceneMeta, save as save_scene_meta, scene_meta
from fdm.nerf import cameras, figures, pose_refine, render as render_lib
from fdm.nerf.field import NeRFMLP, coarse_to_fine_alpha
from fdm.nerf.views import (RenderSettings, ViewGeometry, crop_pixels, gather_pixels,
                             grid_pixels, pixel_xy, render_pixels, render_views, sample_pixels)
from fdm.nn.clip_vision import FEATURES
from fdm.nn.layers import DTYPES, compute_dtype
from fdm.nn.pose_encoder import CAMERA_HEADS, CameraPrediction, PoseEncoder, PoseTrunk

LAYOUTS = ("octant", "quadrant")
# Values of model.remat: "none", or "chunk" (the field rematerialised per model.remat_chunk
# rays).
REMATS = ("none", "chunk")
VIEW_GAUGES = ("free", "mean")
# Valid values of the keys configs/toy_scene.py:lifting_config declares (fdm.config_rules).
LIFTING_RULES = {
    "model.camera_head": rules.one_of(*CAMERA_HEADS),
    "model.dtype": rules.one_of(*DTYPES),
    "model.remat": rules.one_of(*REMATS),
    "model.remat_chunk": rules.int_at_least(1),
    "model.num_candidates": rules.int_at_least(1),
    "model.candidate_layout": rules.one_of(*LAYOUTS),
    "model.camera_radius": rules.above(0.0),
    "model.cls_weight": rules.at_least(0.0),               # lambda of Eq. 3.4
    "model.num_samples": rules.int_at_least(1),
    "model.num_importance": rules.int_at_least(0),
    "model.num_loss_pixels": rules.int_at_least(0),         # 0 = all
    "model.separate_fine": rules.Rule(
        "False unless model.num_importance > 0 (a fine network needs a fine pass)",
        lambda v, c: not v or int(c.model.num_importance) > 0, True,
        {"model.num_importance": 0}),
    "model.precrop_steps": rules.Rule(
        "an integer >= 0, and 0 when model.num_loss_pixels = 0 (all pixels)",
        lambda v, c: rules.int_at_least(0).ok(v, c) and (
            v == 0 or int(c.model.num_loss_pixels) > 0), -1),
    "model.precrop_frac": rules.rule(lambda v: rules.above(0.0).ok(v, None) and v <= 1.0,
                                     "a number in (0, 1]", 0.0),
    # DietNeRF (fdm.models.lifting_semantic)
    "model.semantic_weight": rules.Rule(
        "a number >= 0, and 0 unless model.supervised=True (DietNeRF is a posed NeRF)",
        lambda v, c: rules.at_least(0.0).ok(v, c) and (v == 0 or bool(c.model.supervised)),
        -1.0),
    "model.semantic_every": rules.int_at_least(1),          # K
    "model.semantic_size": rules.int_at_least(1),           # n of the n x n ray grid
    "model.semantic_encoder_kind": rules.one_of(*semantic.ENCODER_KINDS),
    "model.semantic_feature": rules.Rule(
        f"one of {list(FEATURES)}, and 'projected' when model.semantic_encoder_kind="
        f"procedural (its only output)",
        lambda v, c: v in FEATURES and (v == "projected"
                                        or c.model.semantic_encoder_kind == "clip"),
        "final_cls", {"model.semantic_encoder_kind": "procedural"}),
    "model.semantic_elevation_deg": rules.number_pair(
        lambda lo, hi: -90.0 <= lo <= hi <= 90.0, "(lo, hi) with -90 <= lo <= hi <= 90",
        (10.0, 0.0)),
    "model.semantic_radius": rules.number_pair(
        lambda lo, hi: 0.0 < lo <= hi, "(lo, hi) with 0 < lo <= hi", (0.0, 1.0)),
    "model.mse_finetune_steps": rules.int_at_least(0),
    "model.autoencoder": rules.Rule("False when model.supervised=True (they exclude each other)",
                                    lambda v, c: not (v and c.model.supervised), True,
                                    {"model.supervised": True}),
    "model.select_stride": rules.int_at_least(0),           # 0 = the loss pixels
    "model.coarse_to_fine": rules.int_pair(
        lambda start, end: (start, end) == (0, 0) or 0 <= start < end,
        "(start, end) steps with 0 <= start < end, or (0, 0) for off", (5, 1)),
    "model.train_t_max": rules.timestep(inclusive=True),    # 0 = T
    "model.train_t_power": rules.above(0.0),                # 1 = uniform t
    "model.view_warmup_steps": rules.Rule(
        "an integer >= 0, and 0 unless model.camera_head='axis_angle' and "
        "model.supervised=False (the table warms up the single-camera encoder)",
        lambda v, c: rules.int_at_least(0).ok(v, c) and (
            v == 0 or (c.model.camera_head == "axis_angle" and not c.model.supervised)),
        -1, {"model.camera_head": "candidates"}),
    "train.view_learning_rate": rules.above(0.0),
    "model.view_gauge": rules.one_of(*VIEW_GAUGES),
    "diffusion.prediction": rules.one_of("x0"),             # NeRF lifting predicts x0
    "train.encoder_learning_rate": rules.above(0.0),
    "train.lr_final_factor": rules.above(0.0),
    "eval.num_examples": rules.int_at_least(1),
    "eval.batch_size": rules.int_at_least(1),
    "eval.pose_t": rules.timestep(),
    "eval.num_train_views": rules.int_at_least(0),
    "eval.chunk": rules.int_at_least(1),
    "eval.num_samples": rules.int_at_least(1),
    "eval.render_frames": rules.int_at_least(1),
    "eval.lpips_net": rules.one_of("alex", "vgg"),
    # --mode=landscape (fdm.models.lifting_landscape)
    "eval.landscape_views": rules.int_at_least(1),
    "eval.landscape_grid": rules.int_pair(lambda a, e: min(a, e) >= 1,
                                          "(azimuths, elevations), both >= 1", (0, 9)),
    "eval.landscape_elevation_deg": rules.number_pair(
        lambda lo, hi: -90.0 <= lo <= hi <= 90.0, "(lo, hi) with -90 <= lo <= hi <= 90",
        (85.0, 5.0)),
    "eval.landscape_offset_max_deg": rules.at_least(0.0),
    "eval.landscape_offset_step_deg": rules.above(0.0),
    "eval.landscape_size": rules.int_at_least(1),
    "eval.refine_steps": rules.int_at_least(0),             # 0 = no test-time refinement
    "eval.refine_learning_rate": rules.above(0.0),
}
NUM_SUMMARY_VIEWS = 4
VIEWS_KEY = "views"   # params of the per-view camera table (model.view_warmup_steps > 0)


# ========================================================================== losses


def reconstruction_loss(outputs: list[render_lib.RenderOutput], target: jax.Array) -> jax.Array:
    """Eq. 3.3 per image [B]: sum over renders of mean((2 rgb - 1 - x0)^2); target [B, P, 3]."""
    return sum(jnp.mean((2.0 * o.rgb - 1.0 - target) ** 2, axis=(-2, -1)) for o in outputs)


@flax.struct.dataclass
class CandidateLoss:
    """Eq. 3.4 and its parts for a batch of B images with N candidates."""
    loss: jax.Array      # [] batch mean of recon + cls_weight * ce
    recon: jax.Array     # [B] reconstruction loss of the selected candidate
    ce: jax.Array        # [B] cross-entropy of the scores toward the selected index
    selected: jax.Array  # [B] int argmin_i l_i
    losses: jax.Array    # [B, N] l_i of every candidate (no gradient), by select_loss


def candidate_losses(camera_loss: Callable, params, c2w: jax.Array) -> jax.Array:
    """l_i [B, N] of candidates c2w [B, N, 4, 4], one candidate at a time (`lax.map`),
    without gradient; camera_loss: (params, c2w [B, 4, 4]) -> [B]."""
    frozen = jax.lax.stop_gradient(params)
    return jax.lax.map(lambda c: camera_loss(frozen, c),
                       jnp.swapaxes(jax.lax.stop_gradient(c2w), 0, 1)).T


def take_candidate(c2w: jax.Array, index: jax.Array) -> jax.Array:
    """c2w [B, N, 4, 4], index [B] -> the indexed cameras [B, 4, 4]."""
    return jnp.take_along_axis(c2w, index[:, None, None, None], axis=1)[:, 0]


def candidate_loss(camera_loss: Callable, params, c2w: jax.Array, scores: jax.Array,
                   cls_weight: float, select_loss: Callable | None = None) -> CandidateLoss:
    """Eq. 3.4 with gradient only through the selected candidate's render.

    Args:
      camera_loss: (params, c2w [B, 4, 4]) -> reconstruction loss [B] of the
        renders from one camera per image (deterministic given its closure, so
        the selected camera's loss is reproduced exactly).
      params: what camera_loss differentiates (the NeRF parameters).
      c2w: [B, N, 4, 4] candidate cameras; scores: [B, N] logits.
      cls_weight: lambda.
      select_loss: like camera_loss, the l_i whose arg-min selects the candidate
        (e.g. on a pixel grid, model.select_stride); None: camera_loss itself, and
        then recon = min_i l_i exactly.
    """
    losses = candidate_losses(select_loss or camera_loss, params, c2w)
    selected = jnp.argmin(losses, axis=-1)
    recon = camera_loss(params, take_candidate(c2w, selected))
    log_p = jax.nn.log_softmax(scores, axis=-1)
    ce = -jnp.take_along_axis(log_p, selected[:, None], axis=1)[:, 0]
    loss = jnp.mean(recon) + cls_weight * jnp.mean(ce)
    return CandidateLoss(loss, recon, ce, selected, losses)


def table_cameras(table: jax.Array) -> jax.Array:
    """Per-view cameras c2w [..., 4, 4] of table rows [..., 6] (axis-angle, translation;
    zeros = the identity, the average pose of a recentred scene), parameterised as the
    axis-angle head of Alg. 3 (`fdm.nerf.cameras.pose_from_axis_angle`)."""
    return cameras.pose_from_axis_angle(table[..., :3], table[..., 3:])


def gauge_fixed_table(table: jax.Array, gauge: str) -> jax.Array:
    """The camera table [N, 6] as rendered: as stored ('free'), or with its mean row
    subtracted ('mean'): axis-angle and centre averaging to zero, the average camera at
    the identity to first order in the rotations (model.view_gauge)."""
    if gauge == "free":
        return table
    return table - jnp.mean(table, axis=0, keepdims=True)


def view_warmup_loss(camera_loss: Callable, params, c2w_encoder: jax.Array,
                     rows: jax.Array, step, warmup_steps: int) -> LossOutput:
    """The per-view camera warm-up (model.view_warmup_steps = n, a registration aid).

    For updates step < n the reconstruction renders from the learnable per-view cameras
    C_v = `table_cameras`(rows) [B, 4, 4] (BARF's joint pose and NeRF optimisation), and
    the encoder regresses them: L = l(C_v) + mean_{3x4 entries}(E(x_t, t) - sg(C_v))^2
    ('distill'). From step n on, L = l(E(x_t, t)) (Eq. 3.3) and the table gets no
    gradient. One render either way (the camera is selected by jnp.where, which passes
    the reconstruction gradient only to the selected camera). c2w_encoder [B, 4, 4]."""
    warm = jnp.asarray(step) < warmup_steps
    c2w_views = table_cameras(rows)
    recon = jnp.mean(camera_loss(params, jnp.where(warm, c2w_views, c2w_encoder)))
    gap = c2w_encoder[:, :3] - jax.lax.stop_gradient(c2w_views[:, :3])
    distill = jnp.mean(gap ** 2)
    return LossOutput(recon + jnp.where(warm, distill, 0.0),
                      {"recon": recon, "psnr": psnr_from_loss(recon), "distill": distill,
                       "warm": warm.astype(jnp.float32)})


def psnr_from_loss(loss: jax.Array) -> jax.Array:
    """PSNR (dB, [0, 1] images) of a mean squared error measured in [-1, 1] units."""
    return -10.0 * jnp.log10(jnp.maximum(loss / 4.0, 1e-10))


def train_timesteps(rng: jax.Array, batch: int, t_max: int, power: float) -> jax.Array:
    """Training timesteps t [B] int32 in [0, t_max): t = floor(t_max u^p), u ~ U[0, 1),
    so P(t < k) = (k / t_max)^(1 / p). p = 1 is the paper's t ~ U[0, T) (drawn with
    randint); p > 1 favours small t. Why: with T = 100 and betas up to 0.2, 52% of
    uniform draws have SNR = alpha_bar / (1 - alpha_bar) < 0.1, where the MSE-optimal
    x0_hat is the mean image from the mean camera (model.train_t_max / train_t_power)."""
    if power == 1.0:
        return jax.random.randint(rng, (batch,), 0, t_max)
    u = jax.random.uniform(rng, (batch,))
    return jnp.minimum(jnp.floor(t_max * u ** power), t_max - 1).astype(jnp.int32)


# ========================================================================== family


class LiftingFamily(ModelFamily):
    """Pose encoder + NeRF as an x0-predicting denoiser (see the module docstring)."""
    config_defaults = "configs.toy_scene:lifting_defaults"
    config_rules = {**ModelFamily.config_rules, **LIFTING_RULES}

    def __init__(self, config, scene: SceneMeta):
        """scene: what the family keeps of its training scene (`fdm.models.lifting_scene`)."""
        super().__init__(config)
        m = config.model
        self.supervised = bool(m.supervised)
        self.autoencoder = bool(m.autoencoder)
        _check_image_size(config, scene.geometry)
        self.scene = scene
        self.forward_facing = scene.geometry.forward_facing
        self.settings = _render_settings(config, scene.geometry)
        self.nerf = NeRFMLP(**_nerf_kwargs(m.nerf), dtype=compute_dtype(m))
        self.remat_chunk = int(m.remat_chunk) if m.remat == "chunk" else 0
        self.separate_fine = bool(m.separate_fine)
        self.semantic = semantic.SemanticSettings.from_config(config)
        if self.semantic is not None:
            self.semantic.check(scene.geometry)
        self._prior = None
        self.encoder = None if self.supervised else _build_encoder(m)
        self.schedule = DiffusionSchedule.from_config(config.diffusion)
        self.checkpoint_step = int(config.train.num_steps)
        self._jit_eval_step = jax.jit(self.eval_step)
        self._jit_render = jax.jit(self.render_cameras)
        self._jit_refine = jax.jit(self.refine_cameras)

    @classmethod
    def inputs(cls, config, workdir: str | None = None) -> dict:
        """{'scene': SceneMeta}: DIR/scene.npz of a trained workdir, else from the
        training scene (`fdm.models.lifting_scene.scene_meta`)."""
        return {"scene": scene_meta(config, workdir, not config.model.supervised)}

    def save_inputs(self, workdir: str) -> None:
        """Writes the scene metadata to DIR/scene.npz (`fdm.models.lifting_scene`)."""
        save_scene_meta(self.scene, os.path.join(workdir, SCENE_FILE))

    # ---- parameters -----------------------------------------------------
    def init_params(self, rng, batch):
        """{'nerf': NeRF params, 'nerf_fine': the fine network's (model.separate_fine),
        'encoder': pose-encoder params (unless supervised), 'views': the per-view camera
        table [N_train, 6] of model.view_warmup_steps > 0 (zeros: every view at the
        identity)}."""
        points = jnp.zeros((1, 3), jnp.float32)
        params = {"nerf": self.nerf.init(jax.random.fold_in(rng, 0), points, points)["params"]}
        if self.separate_fine:
            params["nerf_fine"] = self.nerf.init(jax.random.fold_in(rng, 2), points,
                                                 points)["params"]
        if self.encoder is not None:
            x = jnp.zeros((1,) + tuple(batch["image"].shape[1:]), jnp.float32)
            params["encoder"] = self.encoder.init(jax.random.fold_in(rng, 1), x,
                                                  jnp.zeros((1,), jnp.int32))["params"]
        if int(self.config.model.view_warmup_steps) > 0:
            params[VIEWS_KEY] = jnp.zeros((len(self.scene.train_c2w), 6), jnp.float32)
        return params

    def optimizer(self) -> optax.GradientTransformation:
        """Separate Adams (b1 0.9, b2 0.999) for the NeRF ('nerf' and 'nerf_fine' share
        one), 'encoder' and 'views' (train.view_learning_rate) (multi_transform)."""
        tc = self.config.train
        txs = {"nerf": decayed_adam(tc.learning_rate, tc)}
        if self.encoder is not None:
            txs["encoder"] = decayed_adam(tc.encoder_learning_rate, tc)
        if int(self.config.model.view_warmup_steps) > 0:
            txs[VIEWS_KEY] = decayed_adam(tc.view_learning_rate, tc)
        labels = lambda params: {k: jax.tree_util.tree_map(lambda _: _adam_group(k), v)
                                 for k, v in params.items()}
        return optax.multi_transform(txs, labels)

    def frozen_params(self) -> dict:
        """DietNeRF (model.semantic_weight > 0): {'semantic': `lifting_semantic.
        SemanticPrior`}, the image encoder read from model.semantic_encoder and the target
        embeddings of the training views, built on the first call (training start);
        {} otherwise."""
        if self.semantic is None:
            return {}
        if self._prior is None:
            self._prior = semantic.build_prior(self.semantic, self._train_split()["image"])
        return {semantic.FROZEN_KEY: self._prior}

    def field_fn(self, nerf_params, alpha=None) -> render_lib.FieldFn:
        """F(x, d) at parameters nerf_params; alpha []: BARF's coarse-to-fine alpha
        (`alpha`), None: all frequency bands. rgb and density are float32 whatever
        model.dtype, so compositing is float32; with model.remat="chunk" the field is
        queried model.remat_chunk rays at a time, each chunk rematerialised
        (`fdm.nerf.render.remat_chunks`)."""
        def field(x, d):
            rgb, density = self.nerf.apply({"params": nerf_params}, x, d, alpha)
            return rgb.astype(jnp.float32), density.astype(jnp.float32)
        return render_lib.remat_chunks(field, self.remat_chunk) if self.remat_chunk else field

    def fine_fn(self, params, alpha=None) -> render_lib.FieldFn | None:
        """The separate fine network of params['nerf_fine'] at alpha (model.separate_fine),
        None: the fine pass uses field_fn (one network)."""
        return self.field_fn(params["nerf_fine"], alpha) if self.separate_fine else None

    def alpha(self, step) -> jax.Array | None:
        """BARF's alpha [] at `step` for model.coarse_to_fine = (start, end), growing
        linearly from 0 to L = model.nerf.pos_max_deg (`fdm.nerf.field.
        coarse_to_fine_alpha`); None when off, (0, 0)."""
        start, end = (int(v) for v in self.config.model.coarse_to_fine)
        if end == 0:
            return None
        return coarse_to_fine_alpha(step, start, end, self.nerf.pos_max_deg)

    # ---- the step of the parameters the host-side modes get ------------------
    def set_step(self, step: int) -> None:
        """evaluate / render / sample / summary_images render with the alpha of `step`
        (the checkpoint's; model.coarse_to_fine); train.num_steps until called."""
        self.checkpoint_step = int(step)

    def _eval_step(self, params, x0, rng) -> dict:
        """Jitted `eval_step` at the alpha of checkpoint_step, passed as a traced
        argument: a new step reuses the compiled function and is never frozen into it."""
        return self._jit_eval_step(params, x0, rng, self.alpha(self.checkpoint_step))

    def _render(self, params, c2w) -> render_lib.RenderOutput:
        """Jitted `render_cameras` at the alpha of checkpoint_step (see _eval_step)."""
        return self._jit_render(params, c2w, self.alpha(self.checkpoint_step))

    # ---- the denoiser -----------------------------------------------------
    def predict_cameras(self, params, x_t, t, train=False, rng=None) -> CameraPrediction:
        """E(x_t [B,H,W,3], t [B]) -> CameraPrediction (c2w [B,N,4,4], scores [B,N])."""
        rngs = {"dropout": rng} if train and rng is not None else None
        return self.encoder.apply({"params": params["encoder"]}, x_t, t, train, rngs=rngs)

    def noisy_input(self, x0, t, rng):
        """(x_t, t): q_sample(x0, t), or (x0, 0) for the autoencoder ablation."""
        if self.autoencoder:
            return x0, jnp.zeros_like(t)
        return q_sample(self.schedule, x0, t, jax.random.normal(rng, x0.shape, x0.dtype)), t

    def denoise(self, params, x_t, t, alpha=None):
        """Sampler denoiser: x0_hat [B,H,W,3] rendered (at coarse-to-fine alpha) from the
        arg-max camera of E(x_t, t); aux {'x0': x0_hat, 'c2w': [B,4,4], 'scores': [B,N]}."""
        pred = self.predict_cameras(params, x_t, t)
        c2w = pred.best()
        x0_hat = 2.0 * self.render_cameras(params, c2w, alpha).rgb - 1.0
        return x0_hat, {"x0": x0_hat, "c2w": c2w, "scores": pred.scores}

    def render_cameras(self, params, c2w, alpha=None) -> render_lib.RenderOutput:
        """Full renders (fields [..., H, W]) from cameras c2w [..., 4, 4] at alpha."""
        return render_views(self.field_fn(params["nerf"], alpha), c2w, self.settings,
                            self.fine_fn(params, alpha))

    # ---- training -------------------------------------------------------
    def loss_fn(self, params, batch, rng, train, step=0):
        """Eq. 3.3 / 3.4 (pose-free) or the supervised NeRF loss (+ DietNeRF's in training);
        see the module docstring. step: sets the field's coarse-to-fine alpha
        (model.coarse_to_fine), the precrop and DietNeRF's schedule."""
        x0, rs, g = batch["image"], self.settings, self.scene.geometry
        with_semantic = train and self.semantic is not None
        if with_semantic and semantic.FROZEN_KEY not in params:
            raise ValueError("DietNeRF's loss reads params['semantic']: pass "
                             "{**params, **family.frozen_params()} (the trainer does)")
        alpha = self.alpha(step)
        indices = self.loss_pixels(x0.shape[0], rng, step)
        target, xy = gather_pixels(x0, indices), pixel_xy(indices, g.width)
        key_render = jax.random.fold_in(rng, 1)

        def renders(p, c2w):
            return render_pixels(self.field_fn(p["nerf"], alpha), c2w, xy, rs, key_render,
                                 self.fine_fn(p, alpha))

        if self.supervised:
            out = _supervised_loss(renders(params, batch["c2w"]), target)
            if with_semantic:
                out = self._with_semantic_loss(out, params, jax.random.fold_in(rng, 5), step,
                                               alpha)
            return out
        camera_loss = lambda p, c2w: reconstruction_loss(renders(p, c2w), target)
        stride = int(self.config.model.select_stride)
        select_loss = self.grid_loss(x0, stride, alpha) if stride > 0 else None
        return self._lifting_loss(params, x0, camera_loss, select_loss, rng, train,
                                  batch.get("index"), step)

    def loss_pixels(self, batch: int, rng, step) -> jax.Array:
        """Flat loss-pixel indices [B, P] (`sample_pixels`, key fold_in(rng, 0)); in the
        first model.precrop_steps updates from the centre crop (`crop_pixels`, key
        fold_in(rng, 6))."""
        m, g = self.config.model, self.scene.geometry
        indices = sample_pixels(jax.random.fold_in(rng, 0), batch, g.height, g.width,
                                int(m.num_loss_pixels))
        if int(m.precrop_steps) == 0:
            return indices
        crop = crop_pixels(jax.random.fold_in(rng, 6), batch, g.height, g.width,
                           int(m.num_loss_pixels), float(m.precrop_frac))
        return jnp.where(jnp.asarray(step) < int(m.precrop_steps), crop, indices)

    def _with_semantic_loss(self, out: LossOutput, params, rng, step, alpha) -> LossOutput:
        """out + DietNeRF's scheduled L_SC (`lifting_semantic.scheduled_semantic_loss`) of
        the prior params['semantic'] (`frozen_params`, merged in by the trainer)."""
        loss, scalars = semantic.scheduled_semantic_loss(
            self.field_fn(params["nerf"], alpha), self.fine_fn(params, alpha),
            params[semantic.FROZEN_KEY], self.semantic, self.settings, step, rng)
        return LossOutput(out.loss + loss, {**out.scalars, **scalars})

    def grid_loss(self, x0, stride: int, alpha=None) -> Callable:
        """(params, c2w [B,4,4]) -> Eq. 3.3 loss [B] of views x0 [B,H,W,3] on every pixel
        of the stride-s grid (`grid_pixels`), rendered at bin midpoints (deterministic):
        the candidate selection of model.select_stride and the eval pseudo-labels."""
        rs, g = self.settings, self.scene.geometry
        indices = grid_pixels(x0.shape[0], g.height, g.width, stride)
        target, xy = gather_pixels(x0, indices), pixel_xy(indices, g.width)
        return lambda p, c2w: reconstruction_loss(
            render_pixels(self.field_fn(p["nerf"], alpha), c2w, xy, rs, None,
                          self.fine_fn(p, alpha)), target)

    def _lifting_loss(self, params, x0, camera_loss, select_loss, rng, train, index,
                      step) -> LossOutput:
        """Eq. 3.3 (N = 1) or Eq. 3.4 on x_t = q_sample(x0, t), t from `train_timesteps`
        (model.train_t_max, model.train_t_power); select_loss: the l_i of Eq. 3.4's
        arg-min (None: camera_loss, the paper). index [B]: the views' training indices,
        step []: the update, both read by the per-view warm-up (`view_warmup_loss`)."""
        m = self.config.model
        t = train_timesteps(jax.random.fold_in(rng, 2), x0.shape[0],
                            int(m.train_t_max) or self.schedule.num_timesteps,
                            float(m.train_t_power))
        x_t, t = self.noisy_input(x0, t, jax.random.fold_in(rng, 3))
        pred = self.predict_cameras(params, x_t, t, train, jax.random.fold_in(rng, 4))
        if VIEWS_KEY in params:
            rows = gauge_fixed_table(params[VIEWS_KEY], m.view_gauge)[index]
            return view_warmup_loss(camera_loss, params, pred.c2w[:, 0], rows, step,
                                    int(m.view_warmup_steps))
        if pred.c2w.shape[1] == 1:
            loss = jnp.mean(camera_loss(params, pred.c2w[:, 0]))
            return LossOutput(loss, {"recon": loss, "psnr": psnr_from_loss(loss)})
        out = candidate_loss(camera_loss, params, pred.c2w, pred.scores, float(m.cls_weight),
                             select_loss)
        return LossOutput(out.loss, _candidate_scalars(out, pred.scores))

    # ---- evaluation -------------------------------------------------------
    def pseudo_label_stride(self) -> int:
        """Grid stride of the eval pseudo-labels: model.select_stride, or when that is 0
        the stride giving about 32 grid pixels along the shorter image side."""
        s = int(self.config.model.select_stride)
        g = self.scene.geometry
        return s if s > 0 else max(1, min(g.height, g.width) // 32)

    def eval_step(self, params, x0, rng, alpha=None) -> dict:
        """Cameras of views x0 [B,H,W,3] from x_t at t = eval.pose_t (one pass), the
        field at coarse-to-fine alpha (None: all bands):
          'c2w' [B,4,4] the arg-max-score camera, 'best' [B] its index;
          'candidate_losses' [B,N] l_i of every candidate on all pixels of the grid of
            stride `pseudo_label_stride` (`grid_loss`);
          'pseudo' [B] argmin_i l_i (the classifier's target, Sec. 3.4.5) and
          'c2w_pseudo' [B,4,4] its camera.
        With N = 1 (axis-angle head) best = pseudo = 0 and c2w = c2w_pseudo."""
        t = jnp.full((x0.shape[0],), int(self.config.eval.pose_t), jnp.int32)
        x_t, t = self.noisy_input(x0, t, jax.random.fold_in(rng, 0))
        pred = self.predict_cameras(params, x_t, t)
        losses = candidate_losses(self.grid_loss(x0, self.pseudo_label_stride(), alpha),
                                  params, pred.c2w)
        pseudo = jnp.argmin(losses, -1)
        return {"c2w": pred.best(), "best": jnp.argmax(pred.scores, -1), "pseudo": pseudo,
                "c2w_pseudo": take_candidate(pred.c2w, pseudo), "candidate_losses": losses}

    def refine_cameras(self, params, x0, c2w, alpha=None) -> pose_refine.Refinement:
        """Test-time refinement (`fdm.nerf.pose_refine`, BARF's protocol for held-out
        views): cameras c2w [B,4,4] of views x0 [B,H,W,3] moved by eval.refine_steps Adam
        steps at eval.refine_learning_rate on the frozen NeRF's `grid_loss` (every pixel
        of the `pseudo_label_stride` grid), the field at coarse-to-fine alpha."""
        e = self.config.eval
        return pose_refine.refine_cameras(
            lambda cams: self.grid_loss(x0, self.pseudo_label_stride(), alpha)(params, cams),
            c2w, int(e.refine_steps), float(e.refine_learning_rate))

    def evaluate(self, params, batches, workdir, rng):
        """Metrics of the first eval.num_examples views of data.eval_split:
          psnr / ssim of renders from their predicted (pose-free) or true (supervised)
            cameras; lpips (eval.lpips_net) only when eval.metric_weights names the
            weights file of docs/METRICS.md;
          mean_image_psnr: PSNR of the mean training image against each view, averaged
            (the trivial image baseline).
        Pose-free, with >= 3 views, the pose metrics of `pose_scalars` (prefix pose_)
        of the arg-max-score cameras (`fdm.metrics.poses.evaluate_poses`) and
        pose_rot_err_deg_pseudo, the aligned mean error of the lowest-loss candidates
        ('c2w_pseudo' of `eval_step`); the same on the first eval.num_train_views
        training views (prefix pose_train_), which are what lifting registers; the frame
        numbers of `frame_scalars` (the eval views scored in the training views' frame). With
        candidates, cam_cls_acc (arg-max score == lowest-loss candidate on the pixel
        grid, the paper's classifier accuracy) and cam_region_acc (aligned predicted
        centre in the true camera's octant / quadrant).
        With the per-view warm-up (params['views']), pose_views_*: the camera table
        against the true training cameras. With eval.refine_steps > 0, the eval views'
        cameras refined on the frozen NeRF (`_refined_evaluation`): pose_refined_*,
        psnr_refined, ssim_refined and the figure cameras_refined.png.
        Writes DIR/eval/renders.png (truth, render, depth), cameras.png (eval views) and,
        pose-free, cameras_train.png (training views; cameras_views.png: the warm-up
        table), titled with the key numbers."""
        eval_key, train_key = jax.random.split(rng)
        views = self._eval_views(params, batches, eval_key)
        if not len(views.get("image", ())):
            raise UserError("the evaluation split is empty; check data.eval_split")
        metrics = image_metrics(views["render"], views["image"])
        metrics.update(self._lpips(views["render"], views["image"]))
        metrics["mean_image_psnr"] = mean_image_psnr(self._train_split()["image"],
                                                     views["image"])
        panels = {"cameras": (views["c2w_true"], None, "eval views")}
        if self.encoder is not None:
            pose, panels = self._pose_evaluation(params, views, train_key)
            metrics.update(pose)
        metrics["num_eval_views"] = len(views["image"])
        self._write_eval_figures(views, panels, os.path.join(workdir, "eval"))
        return metrics

    def _eval_views(self, params, batches, rng) -> dict[str, np.ndarray]:
        """Per-view numpy arrays over the first eval.num_examples valid views: those of
        `_camera_columns`, 'image' [n,H,W,3] in [0, 1], 'render' and 'depth' (from the
        predicted or true cameras)."""
        def columns(i, batch):
            cols = self._camera_columns(params, batch, jax.random.fold_in(rng, i))
            out = self._render(params, cols.get("c2w", batch["c2w"]))
            return {"image": (batch["image"] + 1.0) / 2.0, "render": out.rgb,
                    "depth": out.depth, **cols}
        return _view_rows(batches, int(self.config.eval.num_examples), columns)

    def _camera_columns(self, params, batch, rng) -> dict:
        """'c2w_true' [B,4,4] of a batch and, pose-free, the outputs of `eval_step`."""
        extra = {} if self.encoder is None else self._eval_step(params, batch["image"], rng)
        return {"c2w_true": batch["c2w"], **extra}

    def _train_split(self, num: int | None = None) -> dict[str, np.ndarray]:
        """Arrays of the training split (`fdm.data.load_split_arrays`): all views, or the
        first num."""
        arrays = load_split_arrays(self.config, "train")
        return arrays if num is None else {k: v[:num] for k, v in arrays.items()}

    def _train_views(self, params, rng, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`_camera_columns` of training views arrays ('image' uint8 [n,H,W,3], 'c2w'
        [n,4,4]; each view costs an `eval_step`: every candidate rendered on the
        pseudo-label grid)."""
        num = len(arrays["image"])
        batches = pipeline.eval_batches(arrays, int(self.config.eval.batch_size))
        return _view_rows(batches, num, lambda i, batch: self._camera_columns(
            params, batch, jax.random.fold_in(rng, i)))

    def _lpips(self, render: np.ndarray, image: np.ndarray) -> dict[str, float]:
        """{'lpips': mean distance} of [n,H,W,3] in [0, 1], or {} without eval.metric_weights."""
        path = self.config.eval.metric_weights
        if not path:
            return {}
        from fdm.metrics.lpips import compute_lpips
        from fdm.metrics.weights import load_metric_variables
        net = self.config.eval.lpips_net
        dist = compute_lpips(2.0 * render - 1.0, 2.0 * image - 1.0,
                             load_metric_variables(path, f"lpips_{net}"), net=net)
        return {"lpips": float(np.mean(dist))}

    def _pose_evaluation(self, params, views, rng):
        """Pose-free: (the pose_*, cam_* and pose_train_* metrics, the camera-figure
        panels of `_write_eval_figures` for the eval views and the training views)."""
        pose, ev = self._pose_metrics(views, "pose_")
        train_views = self._train_views(
            params, rng, self._train_split(int(self.config.eval.num_train_views)))
        train_pose, train_ev = self._pose_metrics(train_views, "pose_train_")
        panels = {"cameras": (views["c2w_true"], ev, "eval views"),
                  "cameras_train": (train_views["c2w_true"], train_ev, "training views")}
        metrics = {**pose, **self._candidate_metrics(views, ev), **train_pose,
                   **frame_scalars(views, train_ev)}
        if int(self.config.eval.refine_steps) > 0 and ev is not None:
            refined, refined_ev = self._refined_evaluation(params, views, train_ev)
            metrics.update(refined)
            panels["cameras_refined"] = (views["c2w_true"], refined_ev,
                                         "eval views, refined")
        if VIEWS_KEY in params and len(self.scene.train_c2w) >= 3:
            table = gauge_fixed_table(params[VIEWS_KEY], self.config.model.view_gauge)
            table_ev = poses.evaluate_poses(np.asarray(table_cameras(table)),
                                            self.scene.train_c2w)
            metrics.update(pose_scalars(table_ev, "pose_views_"))
            panels["cameras_views"] = (self.scene.train_c2w, table_ev, "warm-up camera table")
        return metrics, panels

    def _refined_evaluation(self, params, views, train_ev):
        """(metrics, `poses.PoseEvaluation`) of the eval views' cameras after
        `refine_cameras` from the encoder's ('c2w'), in batches of eval.batch_size:
        pose_refined_* (`pose_scalars`), pose_refined_rot_err_deg_train_frame (mean,
        _median) and pose_refined_spread_ratio_train_frame (`train_frame_scalars`),
        psnr_refined / ssim_refined of renders from the refined cameras (BARF's
        novel-view protocol) and pose_refined_loss_ratio, the
        mean over views of the refined over the starting `grid_loss`."""
        alpha, size = self.alpha(self.checkpoint_step), int(self.config.eval.batch_size)
        c2w, renders, ratio = [], [], []
        num, began = len(views["c2w"]), time.time()
        for start in range(0, num, size):
            logging.info("refining the cameras of eval views %d-%d of %d (%d Adam steps)%s",
                         start + 1, min(start + size, num), num,
                         int(self.config.eval.refine_steps),
                         " - compiling first" if start == 0 else
                         f", ETA {(time.time() - began) * (num - start) / start / 60:.1f} min")
            x0 = jnp.asarray(2.0 * views["image"][start:start + size] - 1.0)
            out = self._jit_refine(params, x0, jnp.asarray(views["c2w"][start:start + size]),
                                   alpha)
            c2w.append(np.asarray(out.c2w))
            renders.append(np.asarray(self._render(params, out.c2w).rgb))
            ratio.append(np.asarray(out.losses[-1] / out.losses[0]))
        c2w = np.concatenate(c2w)
        ev = poses.evaluate_poses(c2w, views["c2w_true"])
        metrics = pose_scalars(ev, "pose_refined_")
        metrics.update(train_frame_scalars(train_ev, c2w, views["c2w_true"], "pose_refined_"))
        metrics.update({k + "_refined": v for k, v in
                        image_metrics(np.concatenate(renders), views["image"]).items()})
        metrics["pose_refined_loss_ratio"] = float(np.mean(np.concatenate(ratio)))
        return metrics, ev

    @staticmethod
    def _pose_metrics(views, prefix: str):
        """(`pose_scalars` named prefix + ... and prefix + rot_err_deg_pseudo, the
        `poses.PoseEvaluation` of the arg-max cameras) of per-view 'c2w', 'c2w_pseudo'
        and 'c2w_true' [n,4,4]; ({}, None) below 3 views."""
        if len(views["c2w"]) < 3:
            return {}, None
        ev = poses.evaluate_poses(views["c2w"], views["c2w_true"])
        pseudo = poses.evaluate_poses(views["c2w_pseudo"], views["c2w_true"])
        metrics = pose_scalars(ev, prefix)
        metrics[prefix + "rot_err_deg_pseudo"] = float(np.mean(pseudo.rot_err_deg))
        return metrics, ev

    def _candidate_metrics(self, views, ev) -> dict[str, float]:
        """cam_cls_acc and (with an evaluation `ev`) cam_region_acc; {} without candidates."""
        if self.encoder.camera_head != "candidates":
            return {}
        metrics = {"cam_cls_acc": float(np.mean(views["best"] == views["pseudo"]))}
        if ev is not None:
            axes = 3 if self.encoder.layout == "octant" else 2
            same = np.sign(ev.aligned[:, :axes, 3]) == np.sign(views["c2w_true"][:, :axes, 3])
            metrics["cam_region_acc"] = float(np.mean(np.all(same, -1)))
        return metrics

    def _write_eval_figures(self, views, panels, out_dir: str) -> None:
        """renders.png: rows truth / render / depth of up to 8 views; per panel name,
        (true c2w [n,4,4], `poses.PoseEvaluation` or None, what) -> NAME.png, Fig. 3.6:
        true cameras green, aligned predicted ones red, the key numbers as a title."""
        n = min(8, len(views["image"]))
        depth = self.depth_image(views["depth"][:n])
        rows = np.concatenate([viz.to_uint8(views["image"][:n], (0, 1)),
                               viz.to_uint8(views["render"][:n], (0, 1)), depth])
        viz.save_png(os.path.join(out_dir, "renders.png"), viz.make_grid(rows, ncol=n))
        for name, (true, ev, what) in panels.items():
            sets = [(true, figures.TRUE_COLOR)]
            if ev is not None:
                sets.append((ev.aligned, figures.PRED_COLOR))
            image = figures.with_title(figures.camera_figure(sets), pose_caption(what, true, ev))
            viz.save_png(os.path.join(out_dir, f"{name}.png"), image)

    def depth_image(self, depth) -> np.ndarray:
        """uint8 [..., H, W, 3] grey depth: near (or NDC 0) white, far (NDC 1) black."""
        g = self.scene.geometry
        near, far = (0.0, 1.0) if self.settings.ndc else (g.near, g.far)
        d = 1.0 - np.clip((np.asarray(depth) - near) / (far - near), 0.0, 1.0)
        return np.repeat(viz.to_uint8(d[..., None], (0, 1)), 3, axis=-1)

    # ---- render and sample modes -------------------------------------------
    def camera_path(self, params, rng) -> np.ndarray:
        """Cameras [F, 4, 4] (F = eval.render_frames): LLFF's spiral around the (predicted
        or true) training cameras, else an orbit at eval.render_elevation_deg around the
        origin at model.camera_radius (pose-free) or the mean true radius (supervised)."""
        e, m = self.config.eval, self.config.model
        frames = int(e.render_frames)
        if self.forward_facing:
            c2w, g = self._train_cameras(params, rng), self.scene.geometry
            return np.asarray(cameras.spiral_path(jnp.asarray(c2w), g.near, 5.0 * g.far, frames))
        if self.supervised:
            radius = float(np.mean(np.linalg.norm(self.scene.train_c2w[:, :3, 3], axis=-1)))
        else:
            radius = float(m.camera_radius)
        return np.asarray(cameras.orbit_path(frames, radius, e.render_elevation_deg,
                                             up=tuple(m.world_up)))

    def _train_cameras(self, params, rng) -> np.ndarray:
        """c2w [N, 4, 4] of the training views (`SceneMeta`): true (supervised) or predicted."""
        if self.encoder is None:
            return self.scene.train_c2w
        arrays = {"image": self.scene.train_images, "c2w": self.scene.train_c2w}
        return self._train_views(params, rng, arrays)["c2w"]

    def landscape(self, params, batches, workdir, rng) -> dict:
        """Pose landscapes (issue 15): the loss of the first eval.landscape_views views
        over a grid of cameras around each true camera; DIR/landscape/landscape.png and
        landscape.json. See `fdm.models.lifting_landscape`; returns its summary."""
        from fdm.models.lifting_landscape import run_landscape
        if self.separate_fine:
            raise UserError("--mode=landscape renders with one network; it does not support "
                            "model.separate_fine=True")
        return run_landscape(self, params, batches, workdir, rng)

    def render(self, params, workdir, rng):
        """DIR/render/: frame_NNN.png, depth_NNN.png and video.gif (+ video.mp4 when
        imageio's ffmpeg plugin is installed) along `camera_path`."""
        out_dir = os.path.join(workdir, "render")
        rgb, depth = [], []
        for c2w in self.camera_path(params, rng):
            out = self._render(params, jnp.asarray(c2w)[None])
            rgb.append(viz.to_uint8(np.asarray(out.rgb[0]), (0, 1)))
            depth.append(self.depth_image(np.asarray(out.depth[0])))
        for i, (frame, d) in enumerate(zip(rgb, depth)):
            viz.save_png(os.path.join(out_dir, f"frame_{i:03d}.png"), frame)
            viz.save_png(os.path.join(out_dir, f"depth_{i:03d}.png"), d)
        figures.write_video(np.stack(rgb), os.path.join(out_dir, "video"))

    def sample(self, params, workdir, rng):
        """A novel view and its camera from pure noise (Fig. 3.9): T ancestral steps with the
        x0-predicting denoiser. Writes DIR/samples/grid.png, trajectory.png (per sample:
        x_t and x0_hat every T/10 steps) and samples.npz ('images' [n,H,W,3] in [-1, 1],
        'c2w' [n,4,4], 'trajectory_t' [K], 'trajectory_x_t' / 'trajectory_x0' [K,n,H,W,3],
        'trajectory_c2w' [K,n,4,4]); n = eval.num_samples."""
        if self.encoder is None:
            raise UserError("--mode=sample needs the pose encoder; the supervised baseline "
                            "has none (set model.supervised=False)")
        n, g = int(self.config.eval.num_samples), self.scene.geometry
        x_T = jax.random.normal(jax.random.fold_in(rng, 0), (n, g.height, g.width, 3))
        out = jax.device_get(ancestral_sample(
            jax.tree_util.Partial(self.denoise, params, alpha=self.alpha(self.checkpoint_step)),
            self.schedule, x_T,
            jax.random.fold_in(rng, 1), prediction="x0", clip_x0=True,
            record_every=max(1, self.schedule.num_timesteps // 10)))
        traj = out.trajectory
        out_dir = os.path.join(workdir, "samples")
        viz.save_npz(os.path.join(out_dir, "samples.npz"), images=out.x0, c2w=out.aux["c2w"],
                     trajectory_t=traj.t, trajectory_x_t=traj.x_t,
                     trajectory_x0=traj.aux["x0"], trajectory_c2w=traj.aux["c2w"])
        viz.save_png(os.path.join(out_dir, "grid.png"), viz.make_grid(viz.to_uint8(out.x0)))
        strips = np.concatenate([np.stack([traj.x_t[:, i], traj.aux["x0"][:, i]])
                                 for i in range(n)]).reshape((-1,) + traj.x_t.shape[2:])
        viz.save_png(os.path.join(out_dir, "trajectory.png"),
                     viz.make_grid(viz.to_uint8(strips), ncol=len(traj.t)))

    def summary_images(self, params, batch, rng):
        """{'views': [3k, H, W, 3]}: k views, their renders from the predicted (or true)
        cameras and depth maps, as rows."""
        x0 = batch["image"][:NUM_SUMMARY_VIEWS]
        c2w = batch["c2w"][:NUM_SUMMARY_VIEWS] if self.encoder is None else \
            self._eval_step(params, x0, rng)["c2w"]
        out = self._render(params, c2w)
        rows = np.concatenate([viz.to_uint8(to_host(x0)), viz.to_uint8(to_host(out.rgb), (0, 1)),
                               self.depth_image(to_host(out.depth))])
        return {"views": rows.astype(np.float32) / 255.0}


# ========================================================================= helpers


def image_metrics(render: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """Mean per-view PSNR and SSIM (dm_pix, 11x11 Gaussian window) of [n,H,W,3] in [0, 1]."""
    render, image = jnp.asarray(render), jnp.asarray(image)
    return {"psnr": float(jnp.mean(dm_pix.psnr(render, image))),
            "ssim": float(jnp.mean(dm_pix.ssim(render, image)))}


def mean_image_psnr(train_images: np.ndarray, images: np.ndarray) -> float:
    """Mean over views [n,H,W,3] in [0, 1] of the PSNR of the mean training image
    (uint8 [N,H,W,3] averaged over N, in [0, 1]) against each view."""
    mean = np.mean(np.asarray(train_images, np.float64), 0) / 255.0
    images = jnp.asarray(images, jnp.float32)
    return float(jnp.mean(dm_pix.psnr(jnp.broadcast_to(mean, images.shape), images)))


def pose_scalars(ev: poses.PoseEvaluation, prefix: str) -> dict[str, float]:
    """The results.json numbers of `poses.evaluate_poses` (degrees; module doc there):
    prefix + rot_err_deg (aligned), rot_err_deg_unaligned and const_baseline_deg (the
    best constant rotation R*), each as the mean and as _median (R*'s median is that
    of the mean-minimising R*); trans_err (mean, after the alignment), spread_ratio
    and alignment_orientation_only (1 when the centre fit was ill-conditioned)."""
    errors = {"rot_err_deg": ev.rot_err_deg, "rot_err_deg_unaligned": ev.rot_err_deg_unaligned,
              "const_baseline_deg": ev.const_err_deg}
    out = {}
    for name, err in errors.items():
        out[prefix + name] = float(np.mean(err))
        out[prefix + name + "_median"] = float(np.median(err))
    out[prefix + "trans_err"] = float(np.mean(ev.trans_err))
    out[prefix + "spread_ratio"] = float(ev.spread_ratio)
    out[prefix + "alignment_orientation_only"] = int(ev.alignment.orientation_only)
    return out


def frame_scalars(views, train_ev: poses.PoseEvaluation | None) -> dict[str, float]:
    """pose_train_frame_offset_deg: the global rotation between the predicted and the true
    frame (of the training views' alignment; `poses.frame_offset_deg`),
    pose_train_frame_scale: that alignment's scale s (true units per predicted unit), and
    the `train_frame_scalars` of the eval views' 'c2w' (prefix pose_); {} without a
    training-view evaluation."""
    if train_ev is None:
        return {}
    return {"pose_train_frame_offset_deg": poses.frame_offset_deg(train_ev.alignment),
            "pose_train_frame_scale": float(train_ev.alignment.scale),
            **train_frame_scalars(train_ev, views["c2w"], views["c2w_true"], "pose_")}


def train_frame_scalars(train_ev: poses.PoseEvaluation | None, c2w: np.ndarray,
                        c2w_true: np.ndarray, prefix: str) -> dict[str, float]:
    """Cameras c2w [n,4,4] in the frame fitted on the training views, where the NeRF's
    gauge is fixed: prefix + rot_err_deg_train_frame (mean, _median;
    `poses.rot_err_in_frame`) and prefix + spread_ratio_train_frame
    (`poses.spread_ratio_in_frame`, the spread ratio at the training fit's scale); {}
    without a training-view evaluation."""
    if train_ev is None:
        return {}
    err = poses.rot_err_in_frame(train_ev.alignment, c2w, c2w_true)
    return {prefix + "rot_err_deg_train_frame": float(np.mean(err)),
            prefix + "rot_err_deg_train_frame_median": float(np.median(err)),
            prefix + "spread_ratio_train_frame":
                poses.spread_ratio_in_frame(train_ev.alignment, c2w, c2w_true)}


def pose_caption(what: str, c2w_true: np.ndarray, ev: poses.PoseEvaluation | None) -> list:
    """Title lines of a camera figure: what and how many views, and the key numbers."""
    if ev is None:
        return [f"{what} ({len(c2w_true)}): true cameras"]
    fit = "orientation-only" if ev.alignment.orientation_only else "similarity"
    return [f"{what} ({len(c2w_true)}): green true, red predicted",
            f"{fit} alignment: rot err {np.mean(ev.rot_err_deg):.1f} deg "
            f"(median {np.median(ev.rot_err_deg):.1f})",
            f"unaligned {np.mean(ev.rot_err_deg_unaligned):.1f}, best constant "
            f"{np.mean(ev.const_err_deg):.1f} deg; spread ratio {float(ev.spread_ratio):.2f}"]


def _view_rows(batches, num: int, columns: Callable) -> dict[str, np.ndarray]:
    """Per-view numpy arrays [n, ...] over the first n <= num valid views of `batches`
    (rows with 'valid' False dropped): columns(i, batch i) -> {name: [B, ...]}."""
    rows, count = {}, 0
    for i, batch in enumerate(batches):
        valid = to_host(batch["valid"]) if "valid" in batch else np.ones(len(batch["image"]),
                                                                         bool)
        for k, v in columns(i, batch).items():
            rows.setdefault(k, []).append(to_host(v)[valid])
        count += int(valid.sum())
        if count >= num:
            break
    return {k: np.concatenate(v)[:num] for k, v in rows.items()}


def _supervised_loss(outs: list[render_lib.RenderOutput], target: jax.Array) -> LossOutput:
    """Supervised NeRF: coarse (+ fine) losses summed; PSNR of the last (finest) render."""
    per_render = [jnp.mean(reconstruction_loss([o], target)) for o in outs]
    loss = sum(per_render)
    return LossOutput(loss, {"recon": loss, "psnr": psnr_from_loss(per_render[-1])})


def _candidate_scalars(out: CandidateLoss, scores: jax.Array) -> dict:
    """Logged scalars of Eq. 3.4: parts, PSNR of the best render, in-batch classifier
    accuracy and the largest fraction of the batch that chose one candidate."""
    recon = jnp.mean(out.recon)
    usage = jnp.mean(jax.nn.one_hot(out.selected, scores.shape[-1]), axis=0)
    return {"recon": recon, "ce": jnp.mean(out.ce), "psnr": psnr_from_loss(recon),
            "cls_acc": jnp.mean(jnp.argmax(scores, -1) == out.selected),
            "selected_max_frac": jnp.max(usage)}


def _adam_group(name: str) -> str:
    """The Adam of a top-level parameter subtree: the fine network shares the NeRF's."""
    return "nerf" if name == "nerf_fine" else name


def _render_settings(config, geometry: ViewGeometry) -> RenderSettings:
    m = config.model
    ndc = bool(m.ndc)
    if ndc and not geometry.forward_facing:
        raise UserError("model.ndc=True needs a forward-facing (LLFF) scene; set it False")
    return RenderSettings(geometry, int(m.num_samples), int(m.num_importance),
                          bool(m.lindisp), ndc, int(config.eval.chunk))


def _nerf_kwargs(cfg) -> dict:
    kw = dict(cfg)
    if "skips" in kw:
        kw["skips"] = tuple(kw["skips"])
    return kw


def _build_encoder(m) -> PoseEncoder:
    e = m.encoder
    trunk = PoseTrunk(ch=e.ch, ch_mult=tuple(e.ch_mult), num_res_blocks=e.num_res_blocks,
                      attn_resolutions=tuple(e.attn_resolutions), dropout=e.dropout,
                      num_groups=e.num_groups, dtype=compute_dtype(m))
    return PoseEncoder(trunk=trunk, camera_head=m.camera_head,
                       num_candidates=int(m.num_candidates), layout=m.candidate_layout,
                       radius=float(m.camera_radius), up=tuple(m.world_up))


def _check_image_size(config, geometry: ViewGeometry) -> None:
    """The L-level pose encoder halves the image L-1 times: H, W divisible by 2^(L-1);
    the selection grid (model.select_stride) fits in the image."""
    if config.model.supervised:
        return
    height, width = geometry.height, geometry.width
    if int(config.model.select_stride) > min(height, width):
        raise UserError(f"model.select_stride={config.model.select_stride} exceeds the "
                        f"{height}x{width} images; use at most {min(height, width)}")
    levels = len(config.model.encoder.ch_mult)
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        raise UserError(f"images load at {height}x{width}, not divisible by {factor} (the "
                        f"pose encoder has {levels} levels); set data.image_size to a multiple")
