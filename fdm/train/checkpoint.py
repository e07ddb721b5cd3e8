"""Orbax checkpoints of the train state, one directory per experiment workdir.

Layout: `<workdir>/checkpoints/<step>/` (written by all processes together,
finalised atomically by Orbax, so a killed run never leaves a half checkpoint
that `latest_step` would pick) and `<workdir>/config.json` (process 0 only).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from fdm.errors import UserError
from fdm.host import write_text_atomic

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    """Where the checkpoints of `workdir` live."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
    """Saves/restores `TrainState`s of one workdir; keeps the newest `keep` steps.

    Saves are asynchronous; `wait()` blocks until they are on disk. The caller decides
    when to save (every `train.checkpoint_every` steps, at the end, on SIGTERM).
    """

    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
        """read_only: only restore (creates and cleans nothing; Orbax's own read-only
        mode would log a warning per use)."""
        options = ocp.CheckpointManagerOptions(
            preservation_policy=None if read_only else ocp.checkpoint_managers.LatestN(keep),
            create=not read_only, cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=True)
        self._mngr = ocp.CheckpointManager(
            checkpoint_dir(workdir), options=options,
            item_handlers=ocp.StandardCheckpointHandler())

    def latest_step(self) -> int | None:
        """The newest finalised step, or None."""
        return self._mngr.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Starts an async save of `state` as `step` (all processes must call it)."""
        self._mngr.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restores `step` (default: newest) into the structure/shardings of `target`.

        target: a pytree of `jax.ShapeDtypeStruct`s carrying `.sharding`.
        """
        step = self.latest_step() if step is None else step
        return self._mngr.restore(step, args=ocp.args.StandardRestore(target))

    def restore_tree(self, sharding: jax.sharding.Sharding,
                     step: int | None = None) -> Any:
        """Restores `step` as nested dicts of arrays all placed with `sharding`.

        Needs no template, so it works on any topology (used by evaluation modes).
        """
        step = self.latest_step() if step is None else step
        meta = self._mngr.item_metadata(step)
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta)
        return self._mngr.restore(step, args=ocp.args.StandardRestore(target))

    def wait(self) -> None:
        """Blocks until all pending saves are finalised."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax resources."""
        self._mngr.close()


def latest_step(workdir: str) -> int | None:
    """The newest finalised checkpoint step in `workdir`, without creating anything."""
    if not os.path.isdir(checkpoint_dir(workdir)):
        return None
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def require_checkpoint(workdir: str) -> int:
    """The newest checkpoint step; UserError if `workdir` has none."""
    step = latest_step(workdir)
    if step is None:
        raise UserError(f"no checkpoint in {checkpoint_dir(workdir)}; "
                        "train first with --mode=train and the same --workdir")
    return step


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes `workdir/config.json` (process 0 only)."""
    if jax.process_index() == 0:
        write_text_atomic(config.to_json_best_effort(indent=2, sort_keys=True) + "\n",
                          os.path.join(workdir, "config.json"))
