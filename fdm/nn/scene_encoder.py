"""A small convolutional image encoder phi: image -> unit vector, trained contrastively.

The DietNeRF encoder that can be had on this machine (no CLIP weights are here): the
same interface as `fdm.nn.clip_vision.make_image_encoder` (images [B, H, W, 3] in
[0, 1], any H, W -> unit vectors [B, E]), trained by `experiments.train_scene_encoder`
on renders of `fdm.data.scene_family` so that views of one scene from different poses
embed close together and views of different scenes apart (`info_nce_loss`).

Network (`ConvEncoder`, NHWC, float32):
  x = 2 resize(images, S) - 1           bilinear to S x S (`clip_preprocess.resize`)
  per stage c in channels:  x = silu(GroupNorm(conv3x3_c(x)));  x = silu(conv3x3_c,
                            stride 2 (x))                      -> [B, S / 2^k, ., c]
  h = mean of x over the pixels                                 [B, c_last]
  z = Dense_E(silu(Dense_{c_last}(h)))                          [B, E]
  phi = z / |z|
GroupNorm (8 groups, or c if fewer) keeps every image independent of its batch.

Loss (CLIP's symmetric InfoNCE with a fixed temperature tau): for unit embeddings
a, b [B, E] of two views of B scenes (row i of a and b: the same scene),
  logits = a b^T / tau,
  L = (CE(logits, diag) + CE(logits^T, diag)) / 2,
CE the mean over rows of -log softmax at the matching column.

File (.npz): "encoder_kind" = "procedural" (what tells it from a CLIP .npz of
`fdm.nn.convert_clip`), "config/<field>" of `ConvEncoderConfig`, "params/<module
path>/<leaf>" float32.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import zipfile
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fdm.errors import UserError
from fdm.nn.clip_preprocess import resize
from fdm.nn.clip_vision import unit_vectors
from fdm.trees import flatten, shape_mismatch, unflatten

KIND = "procedural"       # the "encoder_kind" entry of the file
MAX_GROUPS = 8


@dataclasses.dataclass(frozen=True)
class ConvEncoderConfig:
    """Architecture of `ConvEncoder` (module doc)."""
    image_size: int = 32                    # S: inputs are resized to S x S
    channels: tuple[int, ...] = (32, 64, 128)
    embed_dim: int = 64                     # E

    def check(self) -> None:
        """ValueError unless S survives the stride-2 stages and the sizes are positive."""
        if self.image_size % (2 ** len(self.channels)) or min(self.channels) < 1:
            raise ValueError(f"image_size {self.image_size} must be a multiple of "
                             f"2^{len(self.channels)} (one halving per stage) and "
                             f"channels {self.channels} positive")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim {self.embed_dim} must be positive")


class ConvEncoder(nn.Module):
    """`apply(v, images)`: images [B, H, W, 3] in [0, 1] -> embeddings z [B, E] (not
    normalised; `make_conv_encoder` normalises)."""
    config: ConvEncoderConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        c.check()
        x = 2.0 * resize(images, (c.image_size, c.image_size)) - 1.0
        for i, ch in enumerate(c.channels):
            x = nn.Conv(ch, (3, 3), name=f"conv_{i}")(x)
            x = nn.silu(nn.GroupNorm(num_groups=min(MAX_GROUPS, ch), name=f"norm_{i}")(x))
            x = nn.silu(nn.Conv(ch, (3, 3), strides=(2, 2), name=f"down_{i}")(x))
        h = jnp.mean(x, axis=(1, 2))
        h = nn.silu(nn.Dense(c.channels[-1], name="hidden")(h))
        return nn.Dense(c.embed_dim, name="proj")(h)


def init_params(config: ConvEncoderConfig, rng: jax.Array) -> dict:
    """Fresh parameters of `ConvEncoder(config)`."""
    x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    return ConvEncoder(config).init(rng, x)["params"]


def make_conv_encoder(config: ConvEncoderConfig) -> Callable[[Any, jax.Array], jax.Array]:
    """phi as `f(params, images)`: images [B, H, W, 3] in [0, 1] -> unit vectors [B, E]
    (the interface of `fdm.nn.clip_vision.make_image_encoder`); differentiable in both."""
    model = ConvEncoder(config)

    def encode(params, images: jax.Array) -> jax.Array:
        return unit_vectors(model.apply({"params": params}, images))

    return encode


def info_nce_loss(a: jax.Array, b: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """(symmetric InfoNCE [] of the module doc, top-1 accuracy [] of matching a row of
    a to its row of b) of unit embeddings a, b [B, E], row i of both the same scene."""
    logits = a @ b.T / temperature
    labels = jnp.arange(a.shape[0])
    ce_ab = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, 1), labels[:, None], 1))
    ce_ba = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, 0), labels[None, :], 0))
    accuracy = jnp.mean(jnp.argmax(logits, 1) == labels)
    return 0.5 * (ce_ab + ce_ba), accuracy


class ConvEncoderCheckpoint(NamedTuple):
    """Trained weights: `make_conv_encoder(config)(params, images)`."""
    config: ConvEncoderConfig
    params: dict


def save_encoder(path: str, checkpoint: ConvEncoderCheckpoint) -> None:
    """Writes the kind marker, the config and float32 params into one .npz at `path`."""
    arrays = {"encoder_kind": np.asarray(KIND)}
    arrays.update({f"config/{f.name}": np.asarray(getattr(checkpoint.config, f.name))
                   for f in dataclasses.fields(ConvEncoderConfig)})
    arrays.update({f"params/{k}": np.asarray(v, np.float32)
                   for k, v in flatten(checkpoint.params).items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:   # a file object: np.savez would append ".npz" to the name
        np.savez(f, **arrays)


def file_kind(path: str) -> str:
    """The "encoder_kind" entry of an .npz at path, "" when it has none or is no .npz."""
    try:
        with np.load(path) as data:
            return str(data["encoder_kind"]) if "encoder_kind" in data.files else ""
    except (OSError, ValueError, zipfile.BadZipFile):
        return ""


def load_encoder(path: str) -> ConvEncoderCheckpoint:
    """Reads an .npz of `save_encoder`; a one-line UserError when it is missing, another
    kind of file or its parameters do not fit its config."""
    hint = "train one with `python -m experiments.train_scene_encoder OUT.npz`"
    if not path or not os.path.isfile(path):
        raise UserError(f"procedural encoder file {path!r} not found; {hint}")
    if file_kind(path) != KIND:
        raise UserError(f"{path} is not a procedural encoder (no encoder_kind={KIND!r} "
                        f"entry); {hint}")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    fields = dataclasses.fields(ConvEncoderConfig)
    absent = [f.name for f in fields if f"config/{f.name}" not in arrays]
    if absent:
        raise UserError(f"{path} lacks config entries {absent}; {hint}")
    config = ConvEncoderConfig(
        image_size=int(arrays["config/image_size"]),
        channels=tuple(int(c) for c in np.atleast_1d(arrays["config/channels"])),
        embed_dim=int(arrays["config/embed_dim"]))
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    want = {k: v.shape for k, v in flatten(jax.eval_shape(
        functools.partial(init_params, config), jax.random.PRNGKey(0))).items()}
    mismatch = shape_mismatch(want, params)
    if mismatch:
        raise UserError(f"{path}: parameters do not fit {config}: {mismatch}; {hint}")
    return ConvEncoderCheckpoint(config, unflatten(params))
