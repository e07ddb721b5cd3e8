"""The supervised U-Net segmenter (seed 000 Tables 2.3-2.5) as a network: building,
saving, loading and prediction, and its use as the judge of masks generated with
images (Table 2.5 bottom). Training it is a baseline: `fdm.baselines.supervised`.

It lives with the models, not the baselines, because the FDM family's evaluation
loads it (eval.segmenter_workdir): models never import `fdm.baselines`.

Network: the DDPM U-Net of `fdm.nn.unet` with the experiment's `config.model` sizes,
no class embedding, `out_ch` = C (the number of mask classes, >= 2) logits, called
at a constant t = 0 (its timestep embedding is then a learned bias).
Prediction: argmax over the C logits -> int32 [N, S, S] in the masks' classes.
Saved as `<workdir>/segmenter.npz` (`save_segmenter`): arrays "params/<module path>",
the U-Net's sizes "net/<field>" (net/out_ch = C) and "image_size" S;
`load_segmenter(workdir)` rebuilds it.

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

from fdm import viz
from fdm.errors import UserError
from fdm.host import unit_range_batches
from fdm.metrics import segmentation as seg_metrics
from fdm.metrics.weights import flatten, unflatten
from fdm.nn.unet import UNet, unet_kwargs_from_config

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


def save_segmenter(segmenter: Segmenter, workdir: str) -> str:
    """Writes `workdir/segmenter.npz` (module doc); returns its path."""
    tree = {"params": segmenter.params, "net": unet_kwargs_from_config(segmenter.net),
            "image_size": segmenter.image_size}
    path = os.path.join(workdir, SEGMENTER_FILE)
    viz.save_npz(path, **{k: np.asarray(v) for k, v in flatten(tree).items()})
    return path


def load_segmenter(workdir: str) -> Segmenter:
    """The segmenter `fdm.baselines.supervised.run_supervised` saved in `workdir`;
    UserError when there is none."""
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
