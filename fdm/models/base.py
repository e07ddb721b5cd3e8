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

from fdm import config_rules as rules
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
    can_sample = True  # whether `sample` makes samples (run after training by eval.at_end)
    # "module:function" building a config with every key the family reads at its
    # default (configs/); fills the keys a saved config predates (fdm.api.load_config).
    config_defaults = ""
    # {dotted key: fdm.config_rules.Rule}: valid values, checked by fdm.models.get_family.
    config_rules = {
        "train.num_steps": rules.int_at_least(0),
        "train.batch_size": rules.int_at_least(1),
        "train.learning_rate": rules.above(0.0),
        "train.grad_clip": rules.at_least(0.0),
        "train.ema_decay": rules.in_range(0.0, 1.0),
        "train.log_every": rules.int_at_least(1),
        "train.checkpoint_every": rules.int_at_least(1),
        "train.keep_checkpoints": rules.int_at_least(1),
        "train.image_every": rules.int_at_least(1),
    }

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @classmethod
    def inputs(cls, config: ml_collections.ConfigDict, workdir: str | None = None) -> dict:
        """What the constructor takes beside the config, as keyword arguments (e.g. NeRF
        lifting's scene metadata): read back from `workdir` (what `save_inputs` wrote),
        else from the data when workdir is None; {} here. `fdm.models.get_family` calls it."""
        return {}

    def save_inputs(self, workdir: str) -> None:
        """Writes to `workdir` what `inputs` reads back, so that a trained run loads without
        its training data (the trainer calls it on process 0 before training); no-op here."""

    # ---- training -----------------------------------------------------
    @abc.abstractmethod
    def init_params(self, rng: jax.Array, batch: Batch) -> Params:
        """Initial parameters (pure, jit-able; the trainer jits it with out_shardings)."""

    @abc.abstractmethod
    def loss_fn(self, params: Params, batch: Batch, rng: jax.Array, train: bool,
                step: jax.Array | int = 0) -> LossOutput:
        """Loss on a (global, sharded) batch. Pure and jit-able.

        step: int32 [] updates done so far (the trainer passes `TrainState.step`), for
        losses whose terms follow a schedule; 0 outside training.
        """

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at `train.learning_rate`, with optional global-norm clipping.

        Per top-level parameter subtree (e.g. 'mask_generator'):
        `train.lr_multipliers` (name -> factor) scales its learning rate and
        `train.frozen_steps` (name -> n) holds it at 0 for the first n steps
        (Adam's moments still accumulate). `train.warmup_steps` = w > 0 ramps
        every rate linearly from 0 to its value over the first w steps of its
        subtree's training (after its frozen steps). Subtrees not named train at
        the base rate; with none of these keys set this is one plain Adam.
        A subtree frozen for good (e.g. a pretrained network) is not a parameter at all:
        `frozen_params` keeps it out of the optimizer, EMA and checkpoints.
        """
        tc = self.config.train
        chain = []
        if tc.grad_clip:
            chain.append(optax.clip_by_global_norm(tc.grad_clip))
        chain.append(_subtree_adam(tc.learning_rate, dict(tc.lr_multipliers),
                                   dict(tc.frozen_steps), int(tc.warmup_steps)))
        return optax.chain(*chain)

    def init_stats(self) -> Any:
        """The initial running statistics the training loss reads and updates without
        gradients (`TrainState.stats`, checkpointed with it; e.g. a per-timestep loss
        history for importance sampling): a pytree of arrays; {} here."""
        return {}

    def train_loss(self, params: Params, batch: Batch, rng: jax.Array, step: jax.Array,
                   stats: Any) -> tuple[LossOutput, Any]:
        """(the training loss, the updated `stats`): what the trainer differentiates.
        Here `loss_fn(..., train=True)` with the stats unchanged; families with running
        statistics override it. Pure and jit-able."""
        return self.loss_fn(params, batch, rng, train=True, step=step), stats

    def frozen_params(self) -> dict:
        """Permanently frozen parameter subtrees: fixed inputs of `loss_fn` that training
        neither updates nor saves (e.g. a pretrained image encoder, PDAE's frozen DM):
        {name: pytree}, names disjoint from `init_params`'s; {} here. The trainer calls it
        once, places it on every device and passes it to the jitted step as an argument
        (not as constants baked into the program), merged into the params `loss_fn` sees
        (`with_frozen`); gradients, optimizer state, EMA and checkpoints cover the trained
        params only, so a frozen subtree gets no gradient, no optimizer state and no
        update, and is stored once by whatever it is loaded from (a family records
        where in `save_inputs`). The host-side modes (evaluate, sample, ...) receive the
        trained params only and merge the frozen ones themselves when they need them.
        `train.frozen_steps` (optimizer) is the temporary kind."""
        return {}

    # ---- modes other than train (host-side, use EMA params) ------------
    def set_step(self, step: int) -> None:
        """The training step of the parameters the host-side hooks below will get (the
        checkpoint's: `fdm.run` calls it after restoring one, the trainer before
        `summary_images`), for families whose network follows a schedule; no-op here."""

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

    def landscape(self, params: Params, batches: Iterator[Batch], workdir: str,
                  rng: jax.Array) -> dict[str, float]:
        """Pose landscapes of evaluation views in workdir/landscape/ (NeRF lifting only)."""
        raise UserError(f"--mode=landscape needs a NeRF lifting model (model.family="
                        f"'nerf_lifting'); {type(self).__name__} has no cameras")

    def summary_images(self, params: Params, batch: Batch,
                       rng: jax.Array) -> dict[str, jnp.ndarray]:
        """Optional images (name -> [N, H, W, C] in [0, 1]) logged at checkpoint time."""
        return {}


def decayed_adam(learning_rate: float, tc) -> optax.GradientTransformation:
    """Adam at `learning_rate` decayed exponentially to tc.lr_final_factor times it at
    tc.num_steps, after global-norm clipping at tc.grad_clip (0: none); tc the train
    section of a config."""
    schedule = optax.exponential_decay(learning_rate, max(int(tc.num_steps), 1),
                                       tc.lr_final_factor)
    chain = [optax.clip_by_global_norm(tc.grad_clip)] if tc.grad_clip else []
    chain.append(optax.inject_hyperparams(optax.adam)(learning_rate=schedule))
    return optax.chain(*chain)


def with_frozen(params: Params, frozen: dict) -> Params:
    """The params `ModelFamily.loss_fn` sees in training: the trained params and the
    family's `frozen_params()` (params unchanged when there are none)."""
    return {**params, **frozen} if frozen else params


def _subtree_adam(learning_rate: float, multipliers: dict, frozen_steps: dict,
                  warmup_steps: int = 0) -> optax.GradientTransformation:
    """Adam with a learning-rate schedule per named top-level subtree (see optimizer)."""
    named = ({k for k, f in multipliers.items() if float(f) != 1.0}
             | {k for k, n in frozen_steps.items() if int(n) > 0})
    base = optax.adam(_subtree_schedule(learning_rate, 0, warmup_steps))
    if not named:
        return base
    txs = {k: optax.adam(_subtree_schedule(learning_rate * float(multipliers.get(k, 1.0)),
                                           int(frozen_steps.get(k, 0)), warmup_steps))
           for k in named}
    txs["_base"] = base

    def labels(params):
        unknown = sorted(named - set(params))
        if unknown:
            raise UserError(f"train.lr_multipliers / train.frozen_steps name {unknown}, which "
                            f"are not parameter subtrees; use some of {sorted(params)}")
        return {k: jax.tree_util.tree_map(lambda _: k if k in named else "_base", v)
                for k, v in params.items()}
    return optax.multi_transform(txs, labels)


def _subtree_schedule(learning_rate: float, frozen: int, warmup: int = 0):
    """0 for the first `frozen` steps, then a linear ramp to learning_rate over `warmup`
    steps (reached at update `frozen + warmup`), then learning_rate; a float when
    both are 0."""
    if frozen <= 0 and warmup <= 0:
        return learning_rate
    ramp = (optax.linear_schedule(learning_rate / warmup, learning_rate, warmup - 1)
            if warmup > 1 else optax.constant_schedule(learning_rate))
    if frozen <= 0:
        return ramp
    return optax.join_schedules([optax.constant_schedule(0.0), ramp], [frozen])
