"""Host-side helpers that every layer may import (models, baselines, train, run).

They sit below all packages that use them, so that math and model code never import
`fdm.train` (whose package imports the trainer, which imports `fdm.models`):

  to_host             a (possibly multi-host) jax array -> numpy on every process
  unit_range_batches  uint8 images [N, S, S, 3] -> fixed-size float batches in [-1, 1]
  write_text_atomic   text to a file via a temporary file and a rename
  write_json_atomic   the same for JSON, on process 0 only
  write_npz_atomic    numpy arrays as an .npz the same way, on process 0 only
"""
from __future__ import annotations

import json
from typing import Iterator

import jax
import numpy as np

from fdm.errors import UserError
from fdm.viz import atomic_write, save_npz
from fdm.metrics.inception import fixed_size_batches


def to_host(x: jax.Array) -> np.ndarray:
    """A (possibly multi-host) array as a full numpy array on every process."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def unit_range_batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """uint8 images [N, S, S, 3] -> (float32 [batch_size, S, S, 3] in [-1, 1], n_valid)
    per batch; the last one zero-padded so that a jitted consumer compiles once."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"the baselines take uint8 images, got {images.dtype}; convert "
                        "with fdm.viz.to_uint8")
    for batch, n in fixed_size_batches(images, batch_size):
        yield batch / 127.5 - 1.0, n


def write_text_atomic(text: str, path: str) -> None:
    """Writes `text` (UTF-8) to `path` via a temporary file + rename (`fdm.viz.atomic_write`)."""
    atomic_write(path, ".tmp", lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(obj: dict, path: str) -> None:
    """Writes `obj` as JSON to `path` atomically (process 0 only)."""
    if jax.process_index() == 0:
        write_text_atomic(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def write_npz_atomic(path: str, **arrays) -> None:
    """Writes `arrays` as an .npz to `path` atomically (`fdm.viz.save_npz`; process 0 only)."""
    if jax.process_index() == 0:
        save_npz(path, **arrays)
