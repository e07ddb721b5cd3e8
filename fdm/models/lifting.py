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
sampling (num_importance > 0; coarse and fine losses summed, one field).

Batches (`fdm.data.make_iterator`; scene datasets in `fdm.data.scenes`):
'image' float32 [B, H, W, 3] in [-1, 1],
'c2w' float32 [B, 4, 4] (ground truth, used only by evaluation and the
supervised baseline), 'index' int32 [B] (view index in its split), and
'valid' bool [B] in evaluation batches.

Parameters: {'nerf': ..., 'encoder': ...} ('encoder' absent when supervised),
optimised by separate Adams (train.learning_rate for the NeRF, 1e-4 in the
paper; train.encoder_learning_rate for the encoder, 2e-5), both decayed
exponentially to train.lr_final_factor times their initial value.

Config keys: data.{dataset (toy_scene | nerf_synthetic | llff), data_dir,
image_size, eval_split, seed, num_train, num_val (toy_scene), llffhold and
llff_holdout (llff; see `fdm.data.nerf.load_llff`)};
model.{supervised, autoencoder, camera_head, num_candidates, candidate_layout,
camera_radius, world_up, cls_weight, num_samples, num_importance,
num_loss_pixels, lindisp, ndc, encoder.*, nerf.*}; train.{learning_rate,
encoder_learning_rate, lr_final_factor, grad_clip}; eval.{num_examples,
batch_size, pose_t, chunk, num_samples, render_frames, render_elevation_deg}.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import dm_pix
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdm import viz
from fdm.data import pipeline
from fdm.data import load_split_arrays
from fdm.data.nerf import SceneData
from fdm.data.scenes import load_scene
from fdm.diffusion import DiffusionSchedule, ancestral_sample, q_sample
from fdm.errors import UserError
from fdm.models.base import LossOutput, ModelFamily
from fdm.nerf import cameras, figures, rays as rays_lib, render as render_lib
from fdm.nerf.field import NeRFMLP
from fdm.nn.pose_encoder import CAMERA_HEADS, CameraPrediction, PoseEncoder

LAYOUTS = ("octant", "quadrant")
NUM_SUMMARY_VIEWS = 4


# ======================================================================= rendering


@flax.struct.dataclass
class RenderSettings:
    """Intrinsics and sampling of one scene (all static)."""
    height: int = flax.struct.field(pytree_node=False)
    width: int = flax.struct.field(pytree_node=False)
    focal: float = flax.struct.field(pytree_node=False)
    near: float = flax.struct.field(pytree_node=False)
    far: float = flax.struct.field(pytree_node=False)
    num_samples: int = flax.struct.field(pytree_node=False)
    num_importance: int = flax.struct.field(pytree_node=False)
    white_background: bool = flax.struct.field(pytree_node=False)
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


def gather_pixels(images: jax.Array, indices: jax.Array) -> jax.Array:
    """images [B, H, W, C], flat indices [B, P] -> [B, P, C]."""
    flat = images.reshape(images.shape[0], -1, images.shape[-1])
    return jnp.take_along_axis(flat, indices[..., None], axis=1)


def make_rays(c2w: jax.Array, xy: jax.Array, rs: RenderSettings):
    """(rays [..., P], near, far) through pixels xy [..., P, 2] of cameras c2w [..., 4, 4];
    in NDC (near 0, far 1) when rs.ndc."""
    r = rays_lib.rays_from_pixels(c2w, xy, rs.focal, rs.width / 2.0, rs.height / 2.0)
    if rs.ndc:
        return rays_lib.ndc_rays(r, rs.height, rs.width, rs.focal, 1.0), 0.0, 1.0
    return r, rs.near, rs.far


def render_pixels(field_fn, c2w: jax.Array, xy: jax.Array, rs: RenderSettings,
                  rng) -> list[render_lib.RenderOutput]:
    """Renders pixels xy [B, P, 2] from cameras c2w [B, 4, 4]: [coarse] or [coarse, fine]."""
    r, near, far = make_rays(c2w, xy, rs)
    if rs.num_importance > 0:
        return list(render_lib.render_rays_hierarchical(
            field_fn, r, near, far, rs.num_samples, rs.num_importance, rng,
            rs.white_background, rs.lindisp))
    return [render_lib.render_rays(field_fn, r, near, far, rs.num_samples, rng,
                                   rs.white_background, rs.lindisp)]


def render_views(field_fn, c2w: jax.Array, rs: RenderSettings) -> render_lib.RenderOutput:
    """Full images from cameras c2w [..., 4, 4] (chunked, bin midpoints): fields [..., H, W]."""
    xy = rays_lib.pixel_centers(rs.height, rs.width).reshape(-1, 2)
    r, near, far = make_rays(c2w, xy, rs)
    out = render_lib.render_image(field_fn, r, rs.chunk, near=near, far=far,
                                  num_samples=rs.num_samples, num_importance=rs.num_importance,
                                  white_background=rs.white_background, lindisp=rs.lindisp)
    shape = c2w.shape[:-2] + (rs.height, rs.width)
    return jax.tree_util.tree_map(lambda a: a.reshape(shape + a.shape[len(c2w.shape) - 1:]), out)


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
    losses: jax.Array    # [B, N] l_i of every candidate (no gradient)


def candidate_loss(camera_loss: Callable, params, c2w: jax.Array, scores: jax.Array,
                   cls_weight: float) -> CandidateLoss:
    """Eq. 3.4 with gradient only through the selected candidate's render.

    Args:
      camera_loss: (params, c2w [B, 4, 4]) -> reconstruction loss [B] of the
        renders from one camera per image (deterministic given its closure, so
        the selected camera's loss is reproduced exactly).
      params: what camera_loss differentiates (the NeRF parameters).
      c2w: [B, N, 4, 4] candidate cameras; scores: [B, N] logits.
      cls_weight: lambda.
    """
    frozen = jax.lax.stop_gradient(params)
    losses = jax.lax.map(lambda c: camera_loss(frozen, c),
                         jnp.swapaxes(jax.lax.stop_gradient(c2w), 0, 1)).T
    selected = jnp.argmin(losses, axis=-1)
    best = jnp.take_along_axis(c2w, selected[:, None, None, None], axis=1)[:, 0]
    recon = camera_loss(params, best)
    log_p = jax.nn.log_softmax(scores, axis=-1)
    ce = -jnp.take_along_axis(log_p, selected[:, None], axis=1)[:, 0]
    loss = jnp.mean(recon) + cls_weight * jnp.mean(ce)
    return CandidateLoss(loss, recon, ce, selected, losses)


def psnr_from_loss(loss: jax.Array) -> jax.Array:
    """PSNR (dB, [0, 1] images) of a mean squared error measured in [-1, 1] units."""
    return -10.0 * jnp.log10(jnp.maximum(loss / 4.0, 1e-10))


# ========================================================================== family


class LiftingFamily(ModelFamily):
    """Pose encoder + NeRF as an x0-predicting denoiser (see the module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        _check_config(config)
        m = config.model
        self.supervised = bool(m.get("supervised", False))
        self.autoencoder = bool(m.get("autoencoder", False))
        scene = load_scene(config.data, "train")
        _check_image_size(config, scene)
        self.forward_facing = scene.forward_facing
        self.settings = _render_settings(config, scene)
        self.nerf = NeRFMLP(**_nerf_kwargs(m.nerf))
        self.encoder = None if self.supervised else _build_encoder(m)
        self.schedule = DiffusionSchedule.from_config(config.diffusion)
        self._eval_step = jax.jit(self.eval_step)
        self._render = jax.jit(self.render_cameras)

    # ---- parameters -----------------------------------------------------
    def init_params(self, rng, batch):
        """{'nerf': NeRF params, 'encoder': pose-encoder params (unless supervised)}."""
        points = jnp.zeros((1, 3), jnp.float32)
        params = {"nerf": self.nerf.init(jax.random.fold_in(rng, 0), points, points)["params"]}
        if self.encoder is not None:
            x = jnp.zeros((1,) + tuple(batch["image"].shape[1:]), jnp.float32)
            params["encoder"] = self.encoder.init(jax.random.fold_in(rng, 1), x,
                                                  jnp.zeros((1,), jnp.int32))["params"]
        return params

    def optimizer(self) -> optax.GradientTransformation:
        """Separate Adams (b1 0.9, b2 0.999) for 'nerf' and 'encoder' (multi_transform)."""
        tc = self.config.train
        txs = {"nerf": self._adam(tc.learning_rate)}
        if self.encoder is not None:
            txs["encoder"] = self._adam(tc.encoder_learning_rate)
        labels = lambda params: {k: jax.tree_util.tree_map(lambda _: k, v)
                                 for k, v in params.items()}
        return optax.multi_transform(txs, labels)

    def _adam(self, learning_rate: float) -> optax.GradientTransformation:
        tc = self.config.train
        schedule = optax.exponential_decay(learning_rate, tc.num_steps,
                                           tc.get("lr_final_factor", 1.0))
        chain = [optax.clip_by_global_norm(tc.grad_clip)] if tc.get("grad_clip", 0.0) else []
        chain.append(optax.inject_hyperparams(optax.adam)(learning_rate=schedule))
        return optax.chain(*chain)

    def field_fn(self, nerf_params) -> render_lib.FieldFn:
        return lambda x, d: self.nerf.apply({"params": nerf_params}, x, d)

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

    def denoise(self, params, x_t, t):
        """Sampler denoiser: x0_hat [B,H,W,3] rendered from the arg-max camera of E(x_t, t);
        aux {'x0': x0_hat, 'c2w': [B,4,4], 'scores': [B,N]}."""
        pred = self.predict_cameras(params, x_t, t)
        c2w = pred.best()
        x0_hat = 2.0 * self.render_cameras(params, c2w).rgb - 1.0
        return x0_hat, {"x0": x0_hat, "c2w": c2w, "scores": pred.scores}

    def render_cameras(self, params, c2w) -> render_lib.RenderOutput:
        """Full renders (fields [..., H, W]) from cameras c2w [..., 4, 4]."""
        return render_views(self.field_fn(params["nerf"]), c2w, self.settings)

    # ---- training -------------------------------------------------------
    def loss_fn(self, params, batch, rng, train, step=0):
        """Eq. 3.3 / 3.4 (pose-free) or the supervised NeRF loss; see the module docstring."""
        x0, rs = batch["image"], self.settings
        indices = sample_pixels(jax.random.fold_in(rng, 0), x0.shape[0], rs.height, rs.width,
                                int(self.config.model.get("num_loss_pixels", 0)))
        target, xy = gather_pixels(x0, indices), pixel_xy(indices, rs.width)
        key_render = jax.random.fold_in(rng, 1)

        def renders(p, c2w):
            return render_pixels(self.field_fn(p["nerf"]), c2w, xy, rs, key_render)

        if self.supervised:
            return _supervised_loss(renders(params, batch["c2w"]), target)
        camera_loss = lambda p, c2w: reconstruction_loss(renders(p, c2w), target)
        return self._lifting_loss(params, x0, camera_loss, rng, train)

    def _lifting_loss(self, params, x0, camera_loss, rng, train) -> LossOutput:
        """Eq. 3.3 (N = 1) or Eq. 3.4 on x_t = q_sample(x0, t), t ~ U[0, T)."""
        t = jax.random.randint(jax.random.fold_in(rng, 2), (x0.shape[0],), 0,
                               self.schedule.num_timesteps)
        x_t, t = self.noisy_input(x0, t, jax.random.fold_in(rng, 3))
        pred = self.predict_cameras(params, x_t, t, train, jax.random.fold_in(rng, 4))
        if pred.c2w.shape[1] == 1:
            loss = jnp.mean(camera_loss(params, pred.c2w[:, 0]))
            return LossOutput(loss, {"recon": loss, "psnr": psnr_from_loss(loss)})
        out = candidate_loss(camera_loss, params, pred.c2w, pred.scores,
                             float(self.config.model.cls_weight))
        return LossOutput(out.loss, _candidate_scalars(out, pred.scores))

    # ---- evaluation -------------------------------------------------------
    def eval_step(self, params, x0, rng) -> dict:
        """Cameras of views x0 [B,H,W,3] from x_t at t = eval.pose_t (one pass):
        'c2w' [B,4,4] arg-max camera, 'best' [B] its index, 'pseudo' [B] the
        candidate with the lowest reconstruction loss (on model.num_loss_pixels
        pixels; the classifier's target, Sec. 3.4.5)."""
        b, rs = x0.shape[0], self.settings
        t = jnp.full((b,), int(self.config.eval.get("pose_t", 1)), jnp.int32)
        x_t, t = self.noisy_input(x0, t, jax.random.fold_in(rng, 0))
        pred = self.predict_cameras(params, x_t, t)
        indices = sample_pixels(jax.random.fold_in(rng, 1), b, rs.height, rs.width,
                                int(self.config.model.get("num_loss_pixels", 0)))
        target, xy = gather_pixels(x0, indices), pixel_xy(indices, rs.width)
        field = self.field_fn(params["nerf"])
        losses = jax.lax.map(
            lambda c: reconstruction_loss(render_pixels(field, c, xy, rs, None), target),
            jnp.swapaxes(pred.c2w, 0, 1)).T
        return {"c2w": pred.best(), "best": jnp.argmax(pred.scores, -1),
                "pseudo": jnp.argmin(losses, -1)}

    def evaluate(self, params, batches, workdir, rng):
        """PSNR / SSIM of renders of the first eval.num_examples views of data.eval_split
        from their predicted (pose-free) or true (supervised) cameras; pose-free also
        pose_rot_err_deg / pose_trans_err after a similarity alignment (>= 3 views),
        and with candidates cam_cls_acc (arg-max score == lowest-loss candidate, the
        paper's classifier accuracy) and cam_region_acc (aligned predicted centre in
        the true camera's octant / quadrant). LPIPS (eval.lpips_net) only when
        eval.metric_weights names the weights file of docs/METRICS.md.
        Writes DIR/eval/renders.png (truth, render, depth) and DIR/eval/cameras.png."""
        views = self._eval_views(params, batches, rng)
        if not len(views["image"]):
            raise UserError("the evaluation split is empty; check data.eval_split")
        metrics = image_metrics(views["render"], views["image"])
        metrics.update(self._lpips(views["render"], views["image"]))
        aligned = None
        if self.encoder is not None:
            pose, aligned = self._pose_metrics(views)
            metrics.update(pose)
        metrics["num_eval_views"] = len(views["image"])
        self._write_eval_figures(views, aligned, os.path.join(workdir, "eval"))
        return metrics

    def _eval_views(self, params, batches, rng) -> dict[str, np.ndarray]:
        """Per-view numpy arrays over the first eval.num_examples valid views."""
        from fdm.train.mesh import to_host
        num, rows = int(self.config.eval.num_examples), {}
        for i, batch in enumerate(batches):
            x0 = batch["image"]
            extra = {} if self.encoder is None else self._eval_step(
                params, x0, jax.random.fold_in(rng, i))
            out = self._render(params, extra.get("c2w", batch["c2w"]))
            cols = {"image": (x0 + 1.0) / 2.0, "render": out.rgb, "depth": out.depth,
                    "c2w_true": batch["c2w"], **extra}
            valid = to_host(batch["valid"]) if "valid" in batch else np.ones(len(x0), bool)
            for k, v in cols.items():
                rows.setdefault(k, []).append(to_host(v)[valid])
            if sum(map(len, rows["image"])) >= num:
                break
        return {k: np.concatenate(v)[:num] for k, v in rows.items()}

    def _lpips(self, render: np.ndarray, image: np.ndarray) -> dict[str, float]:
        """{'lpips': mean distance} of [n,H,W,3] in [0, 1], or {} without eval.metric_weights."""
        path = self.config.eval.get("metric_weights", "")
        if not path:
            return {}
        from fdm.metrics.lpips import compute_lpips
        from fdm.metrics.weights import load_metric_variables
        net = self.config.eval.get("lpips_net", "alex")
        dist = compute_lpips(2.0 * render - 1.0, 2.0 * image - 1.0,
                             load_metric_variables(path, f"lpips_{net}"), net=net)
        return {"lpips": float(np.mean(dist))}

    def _pose_metrics(self, views):
        """(camera metrics, predicted cameras aligned to the truth or None)."""
        metrics, aligned = {}, None
        pred, true = views["c2w"], views["c2w_true"]
        if len(pred) >= 3:
            aligned = align_cameras(pred, true)
            rot = cameras.rotation_angle_deg(jnp.asarray(aligned[:, :3, :3]),
                                             jnp.asarray(true[:, :3, :3]))
            metrics["pose_rot_err_deg"] = float(jnp.mean(rot))
            metrics["pose_trans_err"] = float(np.mean(np.linalg.norm(
                aligned[:, :3, 3] - true[:, :3, 3], axis=-1)))
        if self.encoder.camera_head == "candidates":
            metrics["cam_cls_acc"] = float(np.mean(views["best"] == views["pseudo"]))
            if aligned is not None:
                axes = 3 if self.encoder.layout == "octant" else 2
                same = np.sign(aligned[:, :axes, 3]) == np.sign(true[:, :axes, 3])
                metrics["cam_region_acc"] = float(np.mean(np.all(same, -1)))
        return metrics, aligned

    def _write_eval_figures(self, views, aligned, out_dir: str) -> None:
        """renders.png: rows truth / render / depth of up to 8 views; cameras.png (Fig. 3.6)."""
        n = min(8, len(views["image"]))
        depth = self.depth_image(views["depth"][:n])
        rows = np.concatenate([viz.to_uint8(views["image"][:n], (0, 1)),
                               viz.to_uint8(views["render"][:n], (0, 1)), depth])
        viz.save_png(os.path.join(out_dir, "renders.png"), viz.make_grid(rows, ncol=n))
        sets = [(views["c2w_true"], figures.TRUE_COLOR)]
        if aligned is not None:
            sets.append((aligned, figures.PRED_COLOR))
        viz.save_png(os.path.join(out_dir, "cameras.png"), figures.camera_figure(sets))

    def depth_image(self, depth) -> np.ndarray:
        """uint8 [..., H, W, 3] grey depth: near (or NDC 0) white, far (NDC 1) black."""
        rs = self.settings
        near, far = (0.0, 1.0) if rs.ndc else (rs.near, rs.far)
        d = 1.0 - np.clip((np.asarray(depth) - near) / (far - near), 0.0, 1.0)
        return np.repeat(viz.to_uint8(d[..., None], (0, 1)), 3, axis=-1)

    # ---- render and sample modes -------------------------------------------
    def camera_path(self, params, rng) -> np.ndarray:
        """Cameras [F, 4, 4] (F = eval.render_frames): LLFF's spiral around the (predicted
        or true) training cameras, else an orbit at eval.render_elevation_deg around the
        origin at model.camera_radius (pose-free) or the mean true radius (supervised)."""
        e, m = self.config.eval, self.config.model
        frames = int(e.get("render_frames", 40))
        if self.forward_facing:
            c2w = self._train_cameras(params, rng)
            rs = self.settings
            return np.asarray(cameras.spiral_path(jnp.asarray(c2w), rs.near, 5.0 * rs.far, frames))
        if self.supervised:
            radius = float(np.mean(np.linalg.norm(load_scene(self.config.data, "train").c2w[:, :3, 3],
                                                  axis=-1)))
        else:
            radius = float(m.camera_radius)
        return np.asarray(cameras.orbit_path(frames, radius, e.get("render_elevation_deg", 30.0),
                                             up=tuple(m.get("world_up", cameras.Z_UP))))

    def _train_cameras(self, params, rng) -> np.ndarray:
        """c2w [N, 4, 4] of the training views: true (supervised) or predicted."""
        arrays = load_split_arrays(self.config, "train")
        if self.encoder is None:
            return np.asarray(arrays["c2w"])
        batches = pipeline.eval_batches(arrays, int(self.config.eval.get("batch_size", 8)))
        return np.concatenate([np.asarray(self._eval_step(params, b["image"],
                                                          jax.random.fold_in(rng, i))["c2w"])
                               [b["valid"]] for i, b in enumerate(batches)])

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
        rs, n = self.settings, int(self.config.eval.get("num_samples", 4))
        x_T = jax.random.normal(jax.random.fold_in(rng, 0), (n, rs.height, rs.width, 3))
        out = jax.device_get(ancestral_sample(
            jax.tree_util.Partial(self.denoise, params), self.schedule, x_T,
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
        from fdm.train.mesh import to_host
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


def align_cameras(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Predicted cameras [N, 4, 4] mapped into the true frame by the least-squares
    similarity of their centres (`fdm.nerf.cameras.umeyama`). When the predicted
    centres coincide (e.g. an untrained encoder) that fit degenerates to its limit,
    scale 0: every centre maps to the true centroid and the rotation is the one
    that best aligns the camera orientations (Procrustes on sum_i R_true_i R_pred_i^T)."""
    centres = pred[:, :3, 3]
    if np.max(np.linalg.norm(centres - centres.mean(0), axis=-1)) > 1e-6:
        sim = cameras.umeyama(jnp.asarray(centres), jnp.asarray(true[:, :3, 3]))
        return np.asarray(sim.apply_c2w(jnp.asarray(pred)))
    u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", true[:, :3, :3], pred[:, :3, :3]))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    aligned = np.array(pred, np.float64)
    aligned[:, :3, :3] = rot @ pred[:, :3, :3]
    aligned[:, :3, 3] = true[:, :3, 3].mean(0)
    return aligned.astype(np.float32)


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


def _render_settings(config, scene: SceneData) -> RenderSettings:
    m = config.model
    ndc = bool(m.get("ndc", False))
    if ndc and not scene.forward_facing:
        raise UserError("model.ndc=True needs a forward-facing (LLFF) scene; set it False")
    return RenderSettings(scene.H, scene.W, scene.focal, scene.near, scene.far,
                          int(m.num_samples), int(m.get("num_importance", 0)),
                          scene.white_background, bool(m.get("lindisp", False)), ndc,
                          int(config.eval.get("chunk", 4096)))


def _nerf_kwargs(cfg) -> dict:
    kw = dict(cfg)
    if "skips" in kw:
        kw["skips"] = tuple(kw["skips"])
    return kw


def _build_encoder(m) -> PoseEncoder:
    e = m.encoder
    return PoseEncoder(ch=e.ch, ch_mult=tuple(e.ch_mult), num_res_blocks=e.num_res_blocks,
                       attn_resolutions=tuple(e.attn_resolutions), dropout=e.dropout,
                       num_groups=e.num_groups, camera_head=m.camera_head,
                       num_candidates=int(m.get("num_candidates", 1)),
                       layout=m.get("candidate_layout", "quadrant"),
                       radius=float(m.get("camera_radius", 4.0)),
                       up=tuple(m.get("world_up", cameras.Z_UP)))


def _check_config(config) -> None:
    """UserError for out-of-range model / eval values (before anything runs)."""
    m, T = config.model, config.diffusion.num_timesteps
    checks = [
        (m.get("camera_head", "candidates") in CAMERA_HEADS,
         f"model.camera_head={m.get('camera_head')!r}; use one of {list(CAMERA_HEADS)}"),
        (m.get("candidate_layout", "quadrant") in LAYOUTS,
         f"model.candidate_layout={m.get('candidate_layout')!r}; use one of {list(LAYOUTS)}"),
        (int(m.get("num_candidates", 1)) >= 1, "model.num_candidates must be >= 1"),
        (float(m.get("cls_weight", 0.0)) >= 0.0, "model.cls_weight (lambda) must be >= 0"),
        (int(m.get("num_loss_pixels", 0)) >= 0, "model.num_loss_pixels must be >= 0 (0 = all)"),
        (int(m.num_samples) >= 1, "model.num_samples must be >= 1"),
        (not (m.get("supervised", False) and m.get("autoencoder", False)),
         "model.supervised and model.autoencoder exclude each other; set one False"),
        (config.diffusion.get("prediction", "x0") == "x0",
         "NeRF lifting predicts x0; set diffusion.prediction='x0'"),
        (0 <= int(config.eval.get("pose_t", 1)) < T, f"eval.pose_t must be in [0, {T})"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _check_image_size(config, scene: SceneData) -> None:
    """The L-level pose encoder halves the image L-1 times: H, W divisible by 2^(L-1)."""
    if config.model.get("supervised", False):
        return
    levels = len(config.model.encoder.ch_mult)
    factor = 2 ** (levels - 1)
    if scene.H % factor or scene.W % factor:
        raise UserError(f"images load at {scene.H}x{scene.W}, not divisible by {factor} (the "
                        f"pose encoder has {levels} levels); set data.image_size to a multiple")
