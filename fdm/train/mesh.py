"""Device mesh and shardings for the trainer.

The mesh has one axis, `data`, over all devices of all processes: the global
batch is split along its leading dimension over `data` and the train state is
replicated. Parameter sharding is decided in one place,
`state_partition_specs`, which maps the state pytree to `PartitionSpec`s
(all `P()` today); adding a `model` axis means giving the mesh a second axis
and returning specs that name it there.

Notation: B = global batch size, b = B // process_count (host-local batch).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fdm.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis `data` over `devices` (default: all devices)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices).reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of an array copied whole onto every device of `mesh`."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of batch arrays [B, ...]: leading axis split over `data`."""
    return NamedSharding(mesh, P(DATA_AXIS))


def state_partition_specs(abstract_state: Any) -> Any:
    """PartitionSpec per leaf of the (abstract) train state: replicated for now."""
    return jax.tree.map(lambda _: P(), abstract_state)


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
    """NamedSharding per leaf of the train state (same structure as the state)."""
    specs = state_partition_specs(abstract_state)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                        is_leaf=lambda x: isinstance(x, P))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Raises UserError unless the global batch splits evenly over devices and hosts."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if global_batch_size % n_dev or global_batch_size % n_proc:
        raise UserError(
            f"train.batch_size={global_batch_size} does not divide over {n_dev} devices "
            f"and {n_proc} processes; set --config.train.batch_size to a multiple of {n_dev}")


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local batch {name: [b, ...]} -> global arrays {name: [B, ...]} split over `data`.

    Every process passes its own contiguous slice of the global batch (process i holds
    examples [i*b, (i+1)*b)); the result is one global array per key.
    """
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}
