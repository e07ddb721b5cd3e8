"""Supervised U-Net segmenter (seed 000 Tables 2.3-2.5): the upper reference of the
unsupervised methods, and the judge of masks generated with images (Table 2.5 bottom).

The network, its saving/loading, prediction and the judging of generated masks are in
`fdm.models.segmenter` (the FDM evaluation loads it); this baseline trains it.
Training: softmax cross-entropy per pixel, Adam at `baselines.supervised_learning_rate`,
`baselines.supervised_steps` steps of `baselines.supervised_batch_size` images drawn
(seeded) from the train images, random horizontal flips; dropout as config.model.
`run_supervised` saves it as `<workdir>/segmenter.npz` (`save_segmenter`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from fdm.baselines.common import BaselineData, LabelledImages, class_scores, split_results
from fdm.models.segmenter import Segmenter, build_net, logits, predict, save_segmenter

LOG_EVERY = 100


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


def run_supervised(config, data: BaselineData, workdir: str, seed: int = 0) -> dict:
    """Trains on the train images, saves the segmenter in `workdir` (for Table 2.5's
    `eval.segmenter_workdir`), predicts the evaluation set, scores it (no remapping)."""
    segmenter = train_segmenter(config, data.train, seed)
    save_segmenter(segmenter, workdir)
    pred = predict(segmenter, data.evaluation.images, int(config.eval.get("batch_size", 64)))
    return split_results(pred, data, class_scores)
