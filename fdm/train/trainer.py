"""The generic train loop: any `ModelFamily` plugs in through init/loss/hooks.

One `jax.jit` step with explicit shardings (batch split over the mesh axis `data`,
state replicated, state donated; the family's `frozen_params()` replicated, passed as
an argument and merged into the params `loss_fn` sees) does: loss and grads of
`family.train_loss` (with respect to the trained params; it also returns the family's
updated running statistics `TrainState.stats`), the
optimizer update (`family.optimizer()`), the EMA update with `train.ema_decay`,
and the metrics loss, the family's scalars, grad_norm, param_norm, update_norm
(and learning_rate when the optimizer injects one).

Loop (step s = updates done, see `fdm.train.state`): data batch s from
`make_iterator(..., start_step=s0)`, checkpoints every `train.checkpoint_every`
and at the end, auto-resume from the newest checkpoint, a checkpoint of the
current step on SIGTERM (training returns early: `stopped_short`; callers that need the
finished model do not evaluate it), and `NonFiniteLossError` (nothing saved) when the loss
or gradient norm stops being finite. Each start appends where it runs (software,
devices, CPU) to `workdir/environment.jsonl` (`fdm.provenance`).

Warm start (`train.init_from=DIR`): a run with no checkpoint of its own starts from the
EMA params of DIR's newest checkpoint (params and EMA both; a fresh optimizer state, step
0, this run's seed and data), e.g. a diffusion model from its deterministic baseline
(`fdm.models.dfm`) or a fine-tune at a new learning rate. DIR must hold the same
parameter tree (paths and shapes), else a one-line `UserError` before anything is
written. A run that has checkpoints resumes from them and ignores DIR.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from fdm import checkpoint_io, provenance
from fdm.errors import NonFiniteLossError, UserError
from fdm.host import to_host
from fdm.models.base import ModelFamily, with_frozen
from fdm.train import checkpoint as ckpt_lib
from fdm.train import logging as log_lib
from fdm.train import mesh as mesh_lib
from fdm.train.state import TrainState, create_state, ema_update
from fdm.trees import flatten, shape_mismatch

Batch = dict[str, Any]
MakeIterator = Callable[..., Iterator[Batch]]


def _hyperparam_scalars(opt_state: Any) -> dict[str, jnp.ndarray]:
    """Learning rates injected with `optax.inject_hyperparams` (none for a fixed rate)."""
    is_value = lambda _, v: hasattr(v, "dtype") and jnp.ndim(v) == 0
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "learning_rate", is_value)
    if len(found) == 1:
        return {"learning_rate": found[0][1]}
    return {f"learning_rate_{i}": v for i, (_, v) in enumerate(found)}


def make_train_step(family: ModelFamily, tx: optax.GradientTransformation,
                    ema_decay: float, mesh: jax.sharding.Mesh, state_shardings: Any,
                    frozen: dict):
    """jit(state, batch) -> (state, metrics); batch arrays [B, ...] split over `data`;
    frozen (the family's `frozen_params()`) is placed on the devices once and passed to
    every step."""
    frozen = jax.device_put(frozen, mesh_lib.replicated(mesh))

    def step_fn(state: TrainState, batch: Batch, frozen: dict):
        def loss(params):
            out, stats = family.train_loss(with_frozen(params, frozen), batch,
                                           state.step_key(), state.step, state.stats)
            return out.loss, (out, stats)

        (value, (out, stats)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, stats=stats,
            ema_params=ema_update(state.ema_params, params, ema_decay))
        metrics = {"loss": value, **out.scalars, **_hyperparam_scalars(opt_state),
                   "grad_norm": optax.global_norm(grads),
                   "param_norm": optax.global_norm(params),
                   "update_norm": optax.global_norm(updates)}
        return new_state, metrics

    step = jax.jit(step_fn,
                   in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh),
                                 mesh_lib.replicated(mesh)),
                   out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
                   donate_argnums=0)
    return lambda state, batch: step(state, batch, frozen)


def abstract_state(family: ModelFamily, tx: optax.GradientTransformation, seed: int,
                   batch: Batch, mesh: jax.sharding.Mesh) -> tuple[Callable, Any]:
    """(init_fn, target): init_fn(batch) -> TrainState; target: its ShapeDtypeStructs
    carrying the state shardings (the structure `Checkpointer.restore` fills)."""
    init_fn = lambda b: create_state(lambda k: family.init_params(k, b), tx, seed,
                                     family.init_stats())
    shapes = jax.eval_shape(init_fn, batch)
    shardings = mesh_lib.state_shardings(mesh, shapes)
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
    return init_fn, target


def initial_state(init_fn: Callable, target: Any, batch: Batch, mesh: jax.sharding.Mesh,
                  ckpt: ckpt_lib.Checkpointer, tx: optax.GradientTransformation | None = None,
                  warm_params: Any = None) -> TrainState:
    """The newest checkpoint restored onto `target`'s shardings, else a fresh state
    created already placed (jit with out_shardings); with `warm_params` (a tree of
    `target.params`' structure, `warm_start_params`) its params and EMA start there and
    the optimizer state is `tx`'s fresh one for them."""
    if ckpt.latest_step() is not None:
        logging.info("Restoring checkpoint at step %d", ckpt.latest_step())
        return _restore(ckpt, target)
    shardings = jax.tree.map(lambda t: t.sharding, target)
    state = jax.jit(init_fn, in_shardings=mesh_lib.batch_sharding(mesh),
                    out_shardings=shardings)(batch)
    if warm_params is None:
        return state
    place = jax.jit(lambda p: (p, jax.tree.map(jnp.copy, p), tx.init(p)),
                    out_shardings=(shardings.params, shardings.ema_params,
                                   shardings.opt_state))
    params, ema_params, opt_state = place(warm_params)
    return state.replace(params=params, ema_params=ema_params, opt_state=opt_state)


def warm_start_params(workdir: str, target: Any) -> Any:
    """The EMA params of `workdir`'s newest checkpoint, checked against `target.params`
    (ShapeDtypeStructs): a one-line UserError naming the first differing path when they
    are not the same tree of the same shapes, or when `workdir` has no checkpoint."""
    hint = ("train.init_from must name the workdir of a finished run of the same model "
            "(model config alike)")
    params, step = checkpoint_io.restore_ema_params(workdir, hint)
    want = {k: v.shape for k, v in flatten(target.params).items()}
    mismatch = shape_mismatch(want, flatten(params))
    if mismatch:
        raise UserError(f"train.init_from={workdir}: its params do not fit this model: "
                        f"{mismatch}; {hint}")
    logging.info("Warm start: params from %s, step %d (EMA)", workdir, step)
    return params


def _restore(ckpt: ckpt_lib.Checkpointer, target: Any) -> TrainState:
    """The newest checkpoint onto `target`; one written before `TrainState.stats` existed
    restores everything else and starts the stats at zero (the initial value of every
    family's stats)."""
    if "stats" in ckpt.saved_keys():
        return ckpt.restore(target)
    logging.info("Checkpoint has no TrainState.stats (older layout); starting them at 0")
    fields = {name: getattr(target, name) for name in ckpt.saved_keys()}
    zeros = jax.tree.map(lambda t: jax.device_put(jnp.zeros(t.shape, t.dtype), t.sharding),
                         target.stats)
    return TrainState(**ckpt.restore(fields), stats=zeros)


class PreemptionWatcher:
    """Tells the loop to checkpoint and stop after SIGTERM (preemptible VMs).

    One process: a SIGTERM handler sets a flag. Several processes: JAX's preemption
    sync point (armed by `jax.distributed.initialize`), so all stop at the same step.
    """

    def __init__(self):
        self._flag = threading.Event()
        self._previous = None

    def __enter__(self) -> "PreemptionWatcher":
        is_main = threading.current_thread() is threading.main_thread()
        if jax.process_count() == 1 and is_main:
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def requested(self, step: int) -> bool:
        """True once a preemption was signalled (collective in multi-process runs)."""
        if jax.process_count() == 1:
            return self._flag.is_set()
        from jax.experimental import multihost_utils
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # preemption service disabled
            return False


class FiniteGuard:
    """Checks each step's loss and grad_norm on the host one step late (keeps dispatch async).

    `push(s, metrics)` queues the metrics of the update at step s and checks the
    previous one; `flush()` checks the queued one and returns it as numpy.
    """

    def __init__(self):
        self._pending: tuple[int, dict] | None = None

    def push(self, step: int, metrics: dict) -> None:
        previous, self._pending = self._pending, (step, metrics)
        if previous is not None:
            self._check(*previous)

    def flush(self) -> dict[str, np.ndarray]:
        return self._check(*self._pending) if self._pending else {}

    @staticmethod
    def _check(step: int, metrics: dict) -> dict[str, np.ndarray]:
        host = {k: to_host(v) for k, v in metrics.items()}
        if not (np.isfinite(host["loss"]) and np.isfinite(host["grad_norm"])):
            raise NonFiniteLossError(
                f"non-finite loss {float(host['loss'])} / grad_norm "
                f"{float(host['grad_norm'])} at step {step}; nothing was saved after the "
                "last checkpoint; lower train.learning_rate or set train.grad_clip")
        return host


def _save(ckpt: ckpt_lib.Checkpointer, step: int, state: TrainState,
          guard: FiniteGuard) -> None:
    """Checks the pending step is finite, then starts saving `state` as `step`."""
    guard.flush()
    ckpt.save(step, state)


def _write_images(writer, family: ModelFamily, image_fn: Callable, state: TrainState,
                  batch: Batch, step: int) -> None:
    """Image summaries: LossOutput.images (params) and family.summary_images (EMA)."""
    key = jax.random.fold_in(state.step_key(), 1)
    images = dict(image_fn(state.params, batch, key))
    family.set_step(step)
    images.update(family.summary_images(state.ema_params, batch, key))
    if images:
        writer.write_images(step, {k: to_host(v) for k, v in images.items()})


def _make_image_fn(family: ModelFamily, mesh: jax.sharding.Mesh, frozen: dict) -> Callable:
    """jit(params, batch, key) -> LossOutput.images (train=False), replicated."""
    frozen = jax.device_put(frozen, mesh_lib.replicated(mesh))
    images = jax.jit(lambda p, b, k, f: family.loss_fn(with_frozen(p, f), b, k,
                                                       train=False).images,
                     out_shardings=mesh_lib.replicated(mesh))
    return lambda p, b, k: images(p, b, k, frozen)


def _loop(state: TrainState, step_fn: Callable, batches: Iterator[Batch],
          ckpt: ckpt_lib.Checkpointer, writer, family: ModelFamily,
          config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
          frozen: dict) -> TrainState:
    """Runs updates from state.step to train.num_steps (or until preempted)."""
    from clu import periodic_actions
    tc = config.train
    guard, image_fn = FiniteGuard(), _make_image_fn(family, mesh, frozen)
    image_every = tc.image_every
    report = periodic_actions.ReportProgress(
        num_train_steps=tc.num_steps, writer=writer, every_steps=tc.log_every,
        every_secs=None)
    with PreemptionWatcher() as preemption:
        for step in range(int(state.step), tc.num_steps):
            if preemption.requested(step):
                logging.warning("SIGTERM: saving a checkpoint at step %d and stopping", step)
                _save(ckpt, step, state, guard)
                ckpt.wait()
                logging.warning("Checkpoint at step %d saved; exiting", step)
                return state
            batch = mesh_lib.global_batch(next(batches), mesh)
            state, metrics = step_fn(state, batch)
            guard.push(step, metrics)
            done = step + 1
            report(done)
            if done % tc.log_every == 0 or done == tc.num_steps:
                writer.write_scalars(done, guard.flush())
            if done % image_every == 0:
                _write_images(writer, family, image_fn, state, batch, done)
            if done % tc.checkpoint_every == 0 or done == tc.num_steps:
                _save(ckpt, done, state, guard)
    return state


def stopped_short(state: TrainState, config: ml_collections.ConfigDict) -> bool:
    """Whether training returned before train.num_steps (a SIGTERM stopped it)."""
    return int(state.step) < config.train.num_steps


def _default_iterator() -> MakeIterator:
    """`fdm.data.make_iterator`, imported late (fdm.data may pull in heavy deps)."""
    from fdm import data
    return data.make_iterator


def train(config: ml_collections.ConfigDict, workdir: str,
          family: ModelFamily | None = None,
          make_iterator: MakeIterator | None = None) -> TrainState:
    """Trains `config` in `workdir`, resuming from its newest checkpoint; returns the state.

    family: defaults to `fdm.models.get_family(config)`.
    make_iterator: `(config, split, process_index, process_count, start_step)` ->
      host-local batches; defaults to `fdm.data.make_iterator`.
    Input problems raise `UserError` before anything is written to `workdir`.
    """
    from fdm.models import get_family
    checkpoint_io.quiet_orbax_info()
    family = family or get_family(config)
    make_iterator = make_iterator or _default_iterator()
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(config.train.batch_size, mesh)
    start, first, batches = _open_stream(config, workdir, make_iterator, mesh)
    batch = mesh_lib.global_batch(first, mesh)
    tx = family.optimizer()
    frozen = family.frozen_params()
    init_fn, target = abstract_state(family, tx, config.train.seed, batch, mesh)
    warm = (warm_start_params(config.train.init_from, target)
            if config.train.init_from and start == 0 else None)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        ckpt_lib.save_config(config, workdir)
        family.save_inputs(workdir)
    provenance.record(workdir, "train", start)
    ckpt = ckpt_lib.Checkpointer(workdir, config.train.keep_checkpoints)
    writer = log_lib.create_writer(workdir, start)
    try:
        state = initial_state(init_fn, target, batch, mesh, ckpt, tx, warm)
        step_fn = make_train_step(family, tx, config.train.ema_decay, mesh,
                                  jax.tree.map(lambda t: t.sharding, target), frozen)
        return _loop(state, step_fn, _chain(first, batches), ckpt, writer, family,
                     config, mesh, frozen)
    finally:
        ckpt.close()
        writer.close()


def _open_stream(config: ml_collections.ConfigDict, workdir: str,
                 make_iterator: MakeIterator, mesh: jax.sharding.Mesh):
    """(start step, its host-local batch, the rest of the stream) for this process.

    Starts at the newest checkpoint's step so a resumed run sees the batches an
    uninterrupted one would; reading the first batch surfaces data errors early.
    """
    start = ckpt_lib.latest_step(workdir) or 0
    batches = make_iterator(config, "train", jax.process_index(), jax.process_count(),
                            start_step=start)
    first = next(batches)
    logging.info("Mesh %s: %d devices, %d processes; global batch %d; start step %d",
                 dict(mesh.shape), mesh.devices.size, jax.process_count(),
                 config.train.batch_size, start)
    return start, first, batches


def _chain(first: Batch, rest: Iterator[Batch]) -> Iterator[Batch]:
    """`first`, then the rest of the stream."""
    yield first
    yield from rest
