"""The supervised U-Net segmenter (seed 000 Tables 2.3-2.5) as a model family
(`model.family = "segmenter"`), and its use as the judge of masks generated with
images (Table 2.5 bottom).

It lives with the models, not the baselines, because the FDM family's evaluation
loads it (eval.segmenter_workdir): models never import `fdm.baselines`.
`fdm.baselines.supervised` derives its config and trains it with `fdm.train`.

Notation: x [B, S, S, 3] images in [-1, 1]; y int32 [B, S, S] ground-truth classes
in [0, C), C = `model.num_seg_classes` (>= 2).

Network: the DDPM U-Net of `fdm.nn.unet` with the `config.model` sizes, no class
embedding, `out_ch` = C logits, called at a constant t = 0 (its timestep embedding
is then a learned bias); dropout as `model.dropout`.
Loss: softmax cross-entropy per pixel against the batch's 'mask' (the trainer hands
in batches with 'image' and 'mask'); logged scalar `pixel_acc`, the fraction of
pixels whose argmax is the true class.
Prediction: argmax over the C logits -> int32 [N, S, S] in the masks' classes.
Saved as every trainer run: `<workdir>/config.json` and Orbax checkpoints; read with
`fdm.load(workdir)` or `load_segmenter(workdir)` (the same files: config.json and
the EMA parameters of the newest checkpoint, `fdm.checkpoint_io.restore_ema_params`).

Generated images (Table 2.5 bottom): the segmenter's prediction on a generated image
is the reference; the generator's own K-region mask is scored against it with the
global region mapping of the FDM evaluation (`generated_mask_agreement`).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fdm.errors import UserError
from fdm.host import unit_range_batches
from fdm.metrics import segmentation as seg_metrics
from fdm.models.base import LossOutput, ModelFamily
from fdm.nn.unet import UNet

FAMILY = "segmenter"


@flax.struct.dataclass
class Segmenter:
    """A trained segmenter: the U-Net (static), its parameters and the side S of the
    square images it was trained on (static)."""
    net: UNet = flax.struct.field(pytree_node=False)
    params: Any
    image_size: int = flax.struct.field(pytree_node=False)


def build_net(model_config) -> UNet:
    """The U-Net of `model_config` with `num_seg_classes` logits and no class embedding."""
    return UNet.from_config(model_config, out_ch=int(model_config.num_seg_classes),
                            num_classes=0)


def logits(net: UNet, params, x: jax.Array, train: bool = False, rng=None) -> jax.Array:
    """x [B, S, S, 3] in [-1, 1] -> logits [B, S, S, C]."""
    t = jnp.zeros((x.shape[0],), jnp.int32)
    return net.apply({"params": params}, x, t, train=train,
                     rngs=None if rng is None else {"dropout": rng})


class SegmenterFamily(ModelFamily):
    """The U-Net segmenter trained with per-pixel cross-entropy (module doc)."""
    can_sample = False

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        num_classes = int(config.model.num_seg_classes)
        if num_classes < 2:
            raise UserError(f"model.num_seg_classes={num_classes} must be >= 2 (background "
                            "and at least one foreground class)")
        self.net = build_net(config.model)

    def init_params(self, rng, batch):
        """U-Net parameters from one dummy example shaped like batch['image'][:1]."""
        x = jnp.zeros((1,) + tuple(batch["image"].shape[1:]), jnp.float32)
        return self.net.init({"params": rng}, x, jnp.zeros((1,), jnp.int32))["params"]

    def loss_fn(self, params, batch, rng, train, step=0) -> LossOutput:
        """Mean cross-entropy of logits [B, S, S, C] against batch['mask'] [B, S, S]."""
        out = logits(self.net, params, batch["image"], train=train, rng=rng)
        target = batch["mask"].astype(jnp.int32)
        loss = optax.softmax_cross_entropy_with_integer_labels(out, target).mean()
        accuracy = jnp.mean(jnp.argmax(out, axis=-1) == target)
        return LossOutput(loss, {"pixel_acc": accuracy})

    def segmenter(self, params) -> Segmenter:
        """The judge made of these parameters, for images of side data.image_size."""
        return Segmenter(self.net, params, int(self.config.data.image_size))


def _make_it(workdir: str) -> str:
    """How to train the segmenter that `workdir` lacks (the end of a one-line error)."""
    return (f"make it with `python -m experiments.baselines --baseline=supervised "
            f"--config=configs/NAME.py --workdir={workdir}` (a config with the same data)")


def load_segmenter(workdir: str) -> Segmenter:
    """The segmenter `--baseline=supervised` trained in `workdir`: its config.json and the
    EMA parameters of its newest checkpoint; a one-line UserError when there is none."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"no trained segmenter in {workdir} ({path} is missing); "
                        + _make_it(workdir))
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.model.family != FAMILY:
        raise UserError(f"{workdir} holds a model.family={config.model.family!r} run, not a "
                        "segmenter; pass a --baseline=supervised workdir")
    from fdm.checkpoint_io import restore_ema_params   # Orbax only when loading
    params, _ = restore_ema_params(workdir, hint=_make_it(workdir))
    return SegmenterFamily(config).segmenter(params)


@functools.partial(jax.jit, static_argnums=(0,))
def _predict(net, params, x):
    """x [B, S, S, 3] in [-1, 1] -> argmax classes int32 [B, S, S]."""
    return jnp.argmax(logits(net, params, x), axis=-1).astype(jnp.int32)


def predict(segmenter: Segmenter, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """uint8 images [N, S, S, 3] -> predicted classes int32 [N, S, S] (fixed-size batches)."""
    return np.concatenate([np.asarray(_predict(segmenter.net, segmenter.params, x))[:n]
                           for x, n in unit_range_batches(images, batch_size)])


def generated_mask_agreement(segmenter: Segmenter, images: np.ndarray, regions: np.ndarray,
                             num_regions: int) -> dict:
    """Table 2.5 bottom: agreement of generated masks with the segmenter's reference.

    images uint8 [N, S, S, 3] (generated), regions int [N, S, S] in [0, K) (the
    generator's argmax masks). Returns the FDM evaluation keys prefixed `gen_`
    (gen_seg_acc, gen_seg_iou, ... with the regions mapped globally).
    """
    reference = predict(segmenter, images)
    report = seg_metrics.segmentation_metrics(np.asarray(regions), reference, num_regions)
    return {f"gen_{k}": v for k, v in report.metrics.items()}
