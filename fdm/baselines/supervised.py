"""Supervised U-Net segmenter (seed 000 Tables 2.3-2.5): the upper reference of the
unsupervised methods, and the judge of masks generated with images (Table 2.5 bottom).

Network: the DDPM U-Net of `fdm.nn.unet` with the experiment's `config.model` sizes,
no class embedding, `out_ch` = C (the number of mask classes, >= 2) logits, called
at a constant t = 0 (its timestep embedding is then a learned bias).
Training: softmax cross-entropy per pixel, Adam at `baselines.supervised_learning_rate`,
`baselines.supervised_steps` steps of `baselines.supervised_batch_size` images drawn
(seeded) from the train images, random horizontal flips; dropout as config.model.
Prediction: argmax over the C logits -> int32 [N, S, S] in the masks' classes.
Saved by `run_supervised` as `<workdir>/segmenter.npz` (`save_segmenter`): arrays
"params/<module path>", the U-Net's sizes "net/<field>" (net/out_ch = C) and
"image_size" S; `load_segmenter(workdir)` rebuilds it.

Generated images (Table 2.5 bottom): the segmenter's prediction on a generated image
is the reference; the generator's own K-region mask is scored against it with the
global region mapping of the FDM evaluation (`generated_mask_agreement`).
"""
from __future__ import annotations

import functools
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from fdm import viz
from fdm.baselines.common import (BaselineData, LabelledImages, class_scores, region_scores,
                                 split_results, unit_range_batches)
from fdm.errors import UserError
from fdm.metrics.weights import flatten, unflatten
from fdm.nn.unet import UNet, unet_kwargs_from_config

LOG_EVERY = 100
SEGMENTER_FILE = "segmenter.npz"


@flax.struct.dataclass
class Segmenter:
    """A trained segmenter: the U-Net (static), its parameters and the side S of the
    square images it was trained on (static)."""
    net: UNet = flax.struct.field(pytree_node=False)
    params: Any
    image_size: int = flax.struct.field(pytree_node=False)


def build_net(config, num_classes: int) -> UNet:
    """The U-Net of config.model with `num_classes` output logits and no class embedding."""
    return UNet.from_config(config.model, out_ch=num_classes, num_classes=0)


def logits(net: UNet, params, x: jax.Array, train: bool = False, rng=None) -> jax.Array:
    """x [B, S, S, 3] in [-1, 1] -> logits [B, S, S, C]."""
    t = jnp.zeros((x.shape[0],), jnp.int32)
    return net.apply({"params": params}, x, t, train=train,
                     rngs=None if rng is None else {"dropout": rng})


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_step(net, tx, params, opt_state, x, y, rng):
    """One Adam step on x [B, S, S, 3], y int [B, S, S]: (params, opt_state, loss)."""
    def loss_fn(p):
        out = logits(net, p, x, train=True, rng=rng)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def _batch(data: LabelledImages, rng: np.random.Generator, size: int):
    """A random batch with random horizontal flips: (x [b,S,S,3] in [-1,1], y [b,S,S])."""
    idx = rng.choice(len(data.images), size, replace=len(data.images) < size)
    flip = rng.random(size) < 0.5
    x = data.images[idx].astype(np.float32) / 127.5 - 1.0
    y = data.masks[idx]
    x[flip], y[flip] = x[flip, :, ::-1], y[flip, :, ::-1]
    return jnp.asarray(x), jnp.asarray(y)


def train_segmenter(config, train: LabelledImages, seed: int = 0) -> Segmenter:
    """Trains the segmenter on the images/masks of `train` (module doc)."""
    b = config.baselines
    net = build_net(config, max(2, int(train.masks.max()) + 1))
    key = jax.random.PRNGKey(seed)
    x = jnp.zeros((1,) + train.images.shape[1:], jnp.float32)
    params = jax.jit(net.init)(key, x, jnp.zeros((1,), jnp.int32))["params"]
    tx = optax.adam(b.supervised_learning_rate)
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    for step in range(int(b.supervised_steps)):
        x, y = _batch(train, rng, int(b.supervised_batch_size))
        params, opt_state, loss = _train_step(net, tx, params, opt_state, x, y,
                                              jax.random.fold_in(key, step))
        if step % LOG_EVERY == 0:
            logging.info("supervised segmenter step %d: cross-entropy %.4f", step, float(loss))
    return Segmenter(net, params, int(train.images.shape[1]))


def save_segmenter(segmenter: Segmenter, workdir: str) -> str:
    """Writes `workdir/segmenter.npz` (module doc); returns its path."""
    tree = {"params": segmenter.params, "net": unet_kwargs_from_config(segmenter.net),
            "image_size": segmenter.image_size}
    path = os.path.join(workdir, SEGMENTER_FILE)
    viz.save_npz(path, **{k: np.asarray(v) for k, v in flatten(tree).items()})
    return path


def load_segmenter(workdir: str) -> Segmenter:
    """The segmenter `run_supervised` saved in `workdir`; UserError when there is none."""
    path = os.path.join(workdir, SEGMENTER_FILE)
    if not os.path.isfile(path):
        raise UserError(f"no trained segmenter at {path}; make it with `python -m "
                        f"experiments.baselines --baseline=supervised --config=configs/NAME.py "
                        f"--workdir={workdir}` (a config with the same data)")
    with np.load(path) as arrays:
        tree = unflatten({k: arrays[k] for k in arrays.files})
    net = UNet.from_config({k: v.tolist() for k, v in tree["net"].items()})
    return Segmenter(net, jax.tree.map(jnp.asarray, tree["params"]), int(tree["image_size"]))


@functools.partial(jax.jit, static_argnums=(0,))
def _predict(net, params, x):
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
    scores = region_scores(np.asarray(regions), reference, num_regions)
    return {f"gen_{k}": v for k, v in scores.items()}


def run_supervised(config, data: BaselineData, workdir: str, seed: int = 0) -> dict:
    """Trains on the train images, saves the segmenter in `workdir` (for Table 2.5's
    `eval.segmenter_workdir`), predicts the evaluation set, scores it (no remapping)."""
    segmenter = train_segmenter(config, data.train, seed)
    save_segmenter(segmenter, workdir)
    pred = predict(segmenter, data.evaluation.images, int(config.eval.get("batch_size", 64)))
    return split_results(pred, data, class_scores)
