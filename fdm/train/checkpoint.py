"""Orbax checkpoints of the train state, one directory per experiment workdir.

Layout: `<workdir>/checkpoints/<step>/` (written by all processes together,
finalised atomically by Orbax, so a killed run never leaves a half checkpoint
that `latest_step` would pick) and `<workdir>/config.json` (process 0 only).
The read side (latest_step, require_checkpoint, restore_ema_params) lives in
`fdm.checkpoint_io`, which models, `fdm.run` and `fdm.api` import too.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from fdm import checkpoint_io
from fdm.checkpoint_io import latest_step  # noqa: F401  (re-exported: fdm.train.latest_step)
from fdm.host import write_text_atomic


class Checkpointer:
    """Saves/restores `TrainState`s of one workdir; keeps the newest `keep` steps.

    Saves are asynchronous; `wait()` blocks until they are on disk. The caller decides
    when to save (every `train.checkpoint_every` steps, at the end, on SIGTERM).
    """

    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
        """read_only: only restore (creates and cleans nothing)."""
        self._mngr = checkpoint_io.open_manager(workdir, keep, read_only)

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

    def saved_keys(self, step: int | None = None) -> set[str]:
        """Top-level names of the tree saved at `step` (default: newest)."""
        step = self.latest_step() if step is None else step
        return set(self._mngr.item_metadata(step).keys())

    def restore_tree(self, sharding: jax.sharding.Sharding,
                     step: int | None = None) -> Any:
        """Restores `step` as nested dicts of arrays all placed with `sharding`
        (`fdm.checkpoint_io.restore_tree`)."""
        return checkpoint_io.restore_tree(self._mngr, sharding, step)

    def wait(self) -> None:
        """Blocks until all pending saves are finalised."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax resources."""
        self._mngr.close()


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes `workdir/config.json` (process 0 only)."""
    if jax.process_index() == 0:
        write_text_atomic(config.to_json_best_effort(indent=2, sort_keys=True) + "\n",
                          os.path.join(workdir, "config.json"))
