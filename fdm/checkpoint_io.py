"""The Orbax checkpoints of a workdir, below every layer that reads them.

Layout: `<workdir>/checkpoints/<step>/`, each a pytree {'params', 'ema_params',
'opt_state', 'step', ...} (the trainer's `TrainState`), finalised atomically by
Orbax, so `latest_step` never picks a half-written one. The trainer writes them
(`fdm.train.checkpoint.Checkpointer`, built on `open_manager`); `fdm.run`, `fdm.api`
and models that read another run (the segmenter judge of `fdm.models.segmenter`)
restore them here, so models need not import `fdm.train`.

  checkpoint_dir      where the checkpoints of a workdir live
  open_manager        an Orbax CheckpointManager of a workdir (read-only or writing)
  latest_step         the newest finalised step, or None (creates nothing)
  require_checkpoint  the same, a one-line UserError when there is none
  restore_tree        a step as nested dicts of arrays placed with one sharding
  restore_ema_params  (EMA params of the newest checkpoint, replicated; its step)
  quiet_orbax_info    keeps Orbax's INFO chatter out of the log
"""
from __future__ import annotations

import logging as std_logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from fdm.errors import UserError

CHECKPOINT_DIR = "checkpoints"
TRAIN_HINT = "train first with --mode=train and the same --workdir"
MESH_AXIS = "data"   # the trainer's mesh axis (fdm.train.mesh.DATA_AXIS)


def checkpoint_dir(workdir: str) -> str:
    """Where the checkpoints of `workdir` live."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def open_manager(workdir: str, keep: int = 3, read_only: bool = True) -> ocp.CheckpointManager:
    """The CheckpointManager of `workdir`. read_only: creates and cleans nothing (Orbax's
    own read-only mode would log a warning per use); else keeps the newest `keep` steps
    and saves asynchronously."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=None if read_only else ocp.checkpoint_managers.LatestN(keep),
        create=not read_only, cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=True)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())


def latest_step(workdir: str) -> int | None:
    """The newest finalised checkpoint step in `workdir`, without creating anything."""
    if not os.path.isdir(checkpoint_dir(workdir)):
        return None
    with open_manager(workdir) as manager:
        return manager.latest_step()


def require_checkpoint(workdir: str, hint: str = TRAIN_HINT) -> int:
    """The newest checkpoint step; a one-line UserError ending with `hint` if none."""
    step = latest_step(workdir)
    if step is None:
        raise UserError(f"no checkpoint in {checkpoint_dir(workdir)}; {hint}")
    return step


def restore_tree(manager: ocp.CheckpointManager, sharding: jax.sharding.Sharding,
                 step: int | None = None) -> Any:
    """Step `step` (default: newest) of `manager` as nested dicts of arrays, all placed
    with `sharding`. Needs no template, so it works on any topology."""
    step = manager.latest_step() if step is None else step
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                          manager.item_metadata(step))
    return manager.restore(step, args=ocp.args.StandardRestore(target))


def replicated_sharding() -> jax.sharding.NamedSharding:
    """Arrays copied whole onto every device, on the trainer's 1-D mesh of all devices."""
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(-1), (MESH_AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def restore_ema_params(workdir: str, hint: str = TRAIN_HINT) -> tuple[Any, int]:
    """(EMA params of the newest checkpoint replicated over all devices, its step);
    a one-line UserError ending with `hint` when `workdir` has no checkpoint."""
    quiet_orbax_info()
    step = require_checkpoint(workdir, hint)
    with open_manager(workdir) as manager:
        return restore_tree(manager, replicated_sharding(), step)["ema_params"], step


class _NoOrbaxInfo(std_logging.Filter):
    """Drops Orbax's INFO records (several per save); its warnings and errors pass."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_info() -> None:
    """Keeps Orbax's per-save INFO chatter out of the training log (idempotent)."""
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _NoOrbaxInfo) for f in absl_logger.filters):
        absl_logger.addFilter(_NoOrbaxInfo())
