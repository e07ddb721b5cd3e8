"""DietNeRF mode of the NeRF lifting family's supervised path (seed 004 ch. 4, Alg. 7).

The posed NeRF (`model.supervised=True`) trained on few views gets, at every K-th
update, the semantic consistency loss of `fdm.nerf.dietnerf`: a render I_hat from an
unobserved pose p_hat ~ pi on the n x n jittered ray grid is embedded by a frozen image
encoder phi and pulled towards the embedding phi(I) of one random training view,
  L = L_MSE + sum over renders R in {coarse, fine} of -lambda cos(phi(I), phi(I_hat_R)),
added at updates s with (s + 1) % K == 0 (the code's 1-based `i % K == 0`) while
s < train.num_steps - model.mse_finetune_steps (the MSE-only fine-tuning at the end,
Table 4.5). Renders are clamped to [0, 1] and the field is rematerialised
(`jax.checkpoint`) in their backward pass. phi is chosen by model.semantic_encoder_kind:
  "clip"        CLIP's image tower (`fdm.nn.clip_vision.make_image_encoder`: bilinear
                resize to its input size as the authors' configs, CLIP normalisation,
                unit vectors) with the feature model.semantic_feature ("projected",
                the paper's phi, or "final_cls", the code's);
  "procedural"  the small conv encoder trained here on renders of the procedural scene
                family (`fdm.nn.scene_encoder`, `python -m experiments.train_scene_encoder
                OUT.npz`; README, DietNeRF), the same interface (image -> unit vector);
                model.semantic_feature must be "projected" (its only output).

Config keys (declared in configs/toy_scene.py:lifting_config, checked by
`fdm.models.lifting.LIFTING_RULES`): model.semantic_weight (lambda; 0 = off, the plain
NeRF), semantic_every (K), semantic_size (n), semantic_encoder_kind ("clip" |
"procedural"), semantic_encoder (a local file: for "clip" an .npz of
`fdm.nn.convert_clip`, an OpenAI ViT-B-32.pt or a Hugging Face model.safetensors; for
"procedural" an .npz of `experiments.train_scene_encoder`), semantic_feature,
semantic_elevation_deg and semantic_radius (pi, about model.world_up), mse_finetune_steps.

Frozen inputs: the encoder is read when training starts (`build_prior`, called through
`LiftingFamily.frozen_params` by the trainer, which passes it to the jitted step as an
argument, never as baked-in constants nor as trained / checkpointed parameters); the
targets phi(I) of all training views are computed once there (Alg. 7 line 4).
Evaluation, render and sample never read the encoder.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fdm.errors import UserError
from fdm.nerf import dietnerf
from fdm.nerf.views import RenderSettings, ViewGeometry, render_pixels
from fdm.nn.clip_vision import ClipVisionConfig, make_image_encoder
from fdm.nn.convert_clip import load_clip_vision
from fdm.nn import scene_encoder
from fdm.nn.scene_encoder import ConvEncoderConfig, make_conv_encoder

FROZEN_KEY = "semantic"   # the key of the prior in the params loss_fn sees
RESIZE = "bilinear"       # the authors' configs: pixel_interp_mode = bilinear
TARGET_BATCH = 8          # training views embedded per call
ENCODER_KINDS = ("clip", "procedural")   # model.semantic_encoder_kind (module doc)
CLIP_SOURCES = ("OpenAI's ViT-B-32.pt (the file clip.load('ViT-B/32') caches in "
                "~/.cache/clip, from github.com/openai/CLIP) or model.safetensors of "
                "huggingface.co/openai/clip-vit-base-patch32")


@dataclasses.dataclass(frozen=True)
class SemanticSettings:
    """The DietNeRF keys of a config (module doc); `until` = train.num_steps -
    model.mse_finetune_steps, the first update without the loss."""
    weight: float
    every: int
    size: int
    encoder: str
    encoder_kind: str
    feature: str
    elevation_deg: tuple[float, float]
    radius: tuple[float, float]
    until: int
    up: tuple[float, float, float]

    @classmethod
    def from_config(cls, config) -> "SemanticSettings | None":
        """The settings of a config, None when model.semantic_weight = 0 (off)."""
        m = config.model
        if not m.semantic_weight:
            return None
        return cls(float(m.semantic_weight), int(m.semantic_every), int(m.semantic_size),
                   str(m.semantic_encoder), str(m.semantic_encoder_kind),
                   str(m.semantic_feature),
                   tuple(float(v) for v in m.semantic_elevation_deg),
                   tuple(float(v) for v in m.semantic_radius),
                   int(config.train.num_steps) - int(m.mse_finetune_steps),
                   tuple(float(v) for v in m.world_up))

    def check(self, geometry: ViewGeometry) -> None:
        """UserError unless pi and the n x n grid fit the scene: a 360-degree scene (the
        code interpolates training poses for forward-facing ones, not done here) with
        n <= min(H, W)."""
        if geometry.forward_facing:
            raise UserError("model.semantic_weight > 0 samples poses on a sphere around the "
                            "origin, which needs a 360-degree scene; set it to 0 for "
                            "forward-facing (LLFF) scenes")
        if self.size > min(geometry.height, geometry.width):
            raise UserError(f"model.semantic_size={self.size} exceeds the "
                            f"{geometry.height}x{geometry.width} views; use at most "
                            f"{min(geometry.height, geometry.width)}")

    def active(self, step: jax.Array) -> jax.Array:
        """bool []: whether update `step` (0-based) adds the loss (module doc)."""
        step = jnp.asarray(step)
        return ((step + 1) % self.every == 0) & (step < self.until)


@flax.struct.dataclass
class SemanticPrior:
    """What the loss reads besides the NeRF (frozen): the encoder and the targets."""
    tower: ClipVisionConfig | ConvEncoderConfig = flax.struct.field(pytree_node=False)
    feature: str = flax.struct.field(pytree_node=False)
    params: Any = None        # the encoder's parameters
    targets: Any = None       # [N, F] phi(I) of the N training views (unit vectors)

    def encode(self, images: jax.Array) -> jax.Array:
        """phi: images [B, H, W, 3] in [0, 1] -> unit embeddings [B, F]."""
        if isinstance(self.tower, ConvEncoderConfig):
            return make_conv_encoder(self.tower)(self.params, images)
        return make_image_encoder(self.tower, self.feature, RESIZE)(self.params, images)


def load_encoder(path: str, kind: str = "clip"):
    """The encoder checkpoint (config, params) of model.semantic_encoder_kind `kind` at a
    local path (nothing is downloaded); a one-line UserError when the file is unset or
    missing (for "clip": where to get CLIP weights and how to convert them; for
    "procedural": the command that trains one) or of the other kind."""
    if kind == "procedural":
        return scene_encoder.load_encoder(path)
    if not path or not os.path.exists(path):
        raise UserError(
            f"model.semantic_encoder={path!r} is not a file; DietNeRF needs a local image "
            f"encoder: get {CLIP_SOURCES}, convert it with `python -m fdm.nn.convert_clip "
            f"ViT-B-32.pt clip_vit_b32.npz` and pass "
            f"--config.model.semantic_encoder=clip_vit_b32.npz (or train the procedural "
            f"encoder, README: DietNeRF)")
    if scene_encoder.file_kind(path) == scene_encoder.KIND:
        raise UserError(f"{path} is a procedural encoder; pass "
                        f"--config.model.semantic_encoder_kind=procedural")
    return load_clip_vision(path)


def target_embeddings(prior: SemanticPrior, images: np.ndarray) -> np.ndarray:
    """phi(I) [N, F] float32 of training views uint8 [N, H, W, 3], TARGET_BATCH at a time."""
    encode = jax.jit(lambda params, x: prior.replace(params=params).encode(x))
    out = [np.asarray(encode(prior.params, jnp.asarray(images[i:i + TARGET_BATCH],
                                                       jnp.float32) / 255.0))
           for i in range(0, len(images), TARGET_BATCH)]
    return np.concatenate(out).astype(np.float32)


def build_prior(settings: SemanticSettings, images: np.ndarray) -> SemanticPrior:
    """The encoder at settings.encoder and the targets of training views images (uint8
    [N, H, W, 3])."""
    checkpoint = load_encoder(settings.encoder, settings.encoder_kind)
    prior = SemanticPrior(checkpoint.config, settings.feature,
                          jax.tree_util.tree_map(jnp.asarray, checkpoint.params))
    return prior.replace(targets=jnp.asarray(target_embeddings(prior, images)))


def render_grid(coarse_fn: Callable, fine_fn: Callable | None, c2w: jax.Array,
                rs: RenderSettings, size: int, rng: jax.Array) -> jax.Array:
    """Renders [R, n, n, 3] in [0, 1] (R = 1, or 2: coarse then fine) from one camera
    c2w [4, 4] on the jittered n x n grid (`fdm.nerf.dietnerf.jittered_grid`, key
    fold_in(rng, 0)), stratified samples with fold_in(rng, 1); the fields rematerialised
    in the backward pass."""
    g = rs.geometry
    xy = dietnerf.jittered_grid(jax.random.fold_in(rng, 0), g.height, g.width, size)
    outs = render_pixels(_remat(coarse_fn), c2w[None], xy.reshape(1, -1, 2), rs,
                         jax.random.fold_in(rng, 1), _remat(fine_fn))
    return jnp.stack([jnp.clip(o.rgb.reshape(size, size, 3), 0.0, 1.0) for o in outs])


def _remat(field_fn: Callable | None) -> Callable | None:
    """field_fn with its activations recomputed in the backward pass (None stays None)."""
    return None if field_fn is None else jax.checkpoint(field_fn)


def semantic_loss(coarse_fn: Callable, fine_fn: Callable | None, prior: SemanticPrior,
                  settings: SemanticSettings, rs: RenderSettings,
                  rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(L_SC summed over the coarse and fine renders [], cos of the finest render []) of
    one pose p_hat ~ pi (key fold_in(rng, 0)) against one uniformly drawn training
    target (fold_in(rng, 1)); the renders use fold_in(rng, 2). The prior (encoder and
    targets) is frozen: no gradient reaches it."""
    prior = jax.lax.stop_gradient(prior)
    c2w = dietnerf.sample_poses(jax.random.fold_in(rng, 0), 1, settings.elevation_deg,
                                settings.radius, settings.up)[0]
    index = jax.random.randint(jax.random.fold_in(rng, 1), (), 0, prior.targets.shape[0])
    images = render_grid(coarse_fn, fine_fn, c2w, rs, settings.size,
                         jax.random.fold_in(rng, 2))
    losses = dietnerf.semantic_consistency_loss(prior.targets[index], prior.encode(images),
                                                settings.weight)
    return jnp.sum(losses), -losses[-1] / settings.weight


def scheduled_semantic_loss(coarse_fn: Callable, fine_fn: Callable | None,
                            prior: SemanticPrior, settings: SemanticSettings,
                            rs: RenderSettings, step: jax.Array,
                            rng: jax.Array) -> tuple[jax.Array, dict]:
    """(loss [], scalars) of update `step`: `semantic_loss` when `settings.active(step)`,
    else 0 without rendering (`lax.cond`). Scalars: sc_loss (the term added, 0 when
    inactive) and sc_cos (cos(phi(I), phi(I_hat)) of the finest render, 0 when inactive)."""
    def on(_):
        return semantic_loss(coarse_fn, fine_fn, prior, settings, rs, rng)

    def off(_):
        return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

    loss, cos = jax.lax.cond(settings.active(step), on, off, None)
    return loss, {"sc_loss": loss, "sc_cos": cos}
