"""The interface every model family implements to plug into the generic trainer.

A model family (DDPM, FDM, NeRF lifting, ...) is a subclass of `ModelFamily`
built from the experiment's `ml_collections.ConfigDict`. The trainer
(`fdm.train`) owns the optimisation loop, sharding, EMA, checkpoints and
logging; the family owns the network, the loss and what each command-line mode
does with trained parameters.

Notation: a batch is a dict of host-local numpy / global jax arrays with keys
  'image': float32 [B, H, W, C] in [-1, 1]
  'mask':  int32   [B, H, W]    ground-truth regions (optional; never used in training)
  'label': int32   [B]          class label (optional)
"""
from __future__ import annotations

import abc
from typing import Any, Iterator, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fdm.errors import UserError

Params = Any  # a pytree of arrays
Batch = Mapping[str, jnp.ndarray]


@flax.struct.dataclass
class LossOutput:
    """What `ModelFamily.loss_fn` returns.

    loss:    scalar, the quantity that is differentiated.
    scalars: name -> scalar, logged every `train.log_every` steps (mean over the batch).
    images:  name -> [N, H, W, C] float in [0, 1], written as image summaries.
    """
    loss: jnp.ndarray
    scalars: dict = flax.struct.field(default_factory=dict)
    images: dict = flax.struct.field(default_factory=dict)


class ModelFamily(abc.ABC):
    """A model family: network init, loss, and the evaluation-time hooks."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # ---- training -----------------------------------------------------
    @abc.abstractmethod
    def init_params(self, rng: jax.Array, batch: Batch) -> Params:
        """Initial parameters (pure, jit-able; the trainer jits it with out_shardings)."""

    @abc.abstractmethod
    def loss_fn(self, params: Params, batch: Batch, rng: jax.Array,
                train: bool) -> LossOutput:
        """Loss on a (global, sharded) batch. Pure and jit-able."""

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at `train.learning_rate`, with optional global-norm clipping.

        `train.lr_multipliers` (name -> factor) scales the learning rate of the
        top-level parameter subtrees with those names (e.g. {'mask_generator':
        0.1}); the others train at the base rate. Empty: one Adam.
        """
        tc = self.config.train
        chain = []
        if tc.get("grad_clip", 0.0):
            chain.append(optax.clip_by_global_norm(tc.grad_clip))
        chain.append(_scaled_adam(tc.learning_rate, dict(tc.get("lr_multipliers", {}))))
        return optax.chain(*chain)

    # ---- modes other than train (host-side, use EMA params) ------------
    def evaluate(self, params: Params, batches: Iterator[Batch], workdir: str,
                 rng: jax.Array) -> dict[str, float]:
        """Metrics for `results.json` (flat name -> number)."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluate mode")

    def sample(self, params: Params, workdir: str, rng: jax.Array) -> None:
        """Write sample grids (PNG) and an .npz to workdir/samples/."""
        raise NotImplementedError(f"{type(self).__name__} has no sample mode")

    def segment(self, params: Params, input_glob: str, workdir: str,
                rng: jax.Array) -> None:
        """Write per-image mask PNGs and overlays to workdir/segment/."""
        raise NotImplementedError(f"{type(self).__name__} has no segment mode")

    def render(self, params: Params, workdir: str, rng: jax.Array) -> None:
        """Write a camera-path video and frames to workdir/render/."""
        raise NotImplementedError(f"{type(self).__name__} has no render mode")

    def summary_images(self, params: Params, batch: Batch,
                       rng: jax.Array) -> dict[str, jnp.ndarray]:
        """Optional images (name -> [N, H, W, C] in [0, 1]) logged at checkpoint time."""
        return {}


def _scaled_adam(learning_rate: float, multipliers: dict) -> optax.GradientTransformation:
    """Adam whose step is scaled by multipliers[k] on the top-level subtree k."""
    if not multipliers:
        return optax.adam(learning_rate)
    txs = {k: optax.adam(learning_rate * float(f)) for k, f in multipliers.items()}
    txs["_base"] = optax.adam(learning_rate)

    def labels(params):
        unknown = sorted(set(multipliers) - set(params))
        if unknown:
            raise UserError(f"train.lr_multipliers names {unknown}, which are not parameter "
                            f"subtrees; use some of {sorted(params)}")
        return {k: jax.tree_util.tree_map(lambda _: k if k in multipliers else "_base", v)
                for k, v in params.items()}
    return optax.multi_transform(txs, labels)
