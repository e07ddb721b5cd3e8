"""Generic trainer: train state, device mesh, checkpoints, metric writers, train loop.

Entry points: `fdm.train.train(config, workdir)` and the building blocks below.
"""
from fdm.train.checkpoint import Checkpointer, latest_step
from fdm.train.mesh import (DATA_AXIS, batch_sharding, global_batch, make_mesh,
                            replicated, state_shardings)
from fdm.train.state import TrainState, create_state, ema_update
from fdm.train.trainer import make_train_step, train

__all__ = [
    "Checkpointer", "DATA_AXIS", "TrainState", "batch_sharding", "create_state",
    "ema_update", "global_batch", "latest_step", "make_mesh", "make_train_step",
    "replicated", "state_shardings", "train",
]
