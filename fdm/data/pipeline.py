"""Deterministic batching of an in-memory array dataset, split across processes.

Notation: N examples in the split, B the global batch size, P processes,
p this process's index, b = B / P the host batch. Stored arrays:
'image' uint8 [N, H, W, 3], optional 'mask' int32 [N, H, W], 'label' int32 [N].
A host batch is a dict of numpy arrays with 'image' float32 [b, H, W, 3] in
[-1, 1] and the other keys sliced the same way. A split without 'image' (the
observation tuples of `fdm.data.inverse_toys`) is batched the same way, every
array sliced as stored; N is the length of any array (all share axis 0).

Train: an infinite stream. The examples are read as consecutive epochs, each
epoch a permutation of [0, N) drawn from `default_rng([seed, 0, epoch])`;
global batch i holds stream positions [i*B, (i+1)*B), so it is a pure function
of (seed, i) (a batch may straddle two epochs; nothing is dropped), and
starting at step s costs O(1) batches. Random horizontal flips (optional) are
drawn per example from `default_rng([seed, 1, i])`, applied to image and mask.

Eval: one pass in index order. The last global batch is padded to B with
copies of example 0 and every eval batch carries 'valid' bool [b] (False on
padding), so shapes stay static for `jit` and each example counts once.

Process p receives rows [p*b, (p+1)*b) of every global batch.
"""
from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from fdm.errors import UserError

Arrays = dict[str, np.ndarray]
_PERMUTATION_STREAM, _FLIP_STREAM = 0, 1


def host_batch_size(batch_size: int, process_count: int) -> int:
    """b = B / P; a UserError unless P divides B."""
    if batch_size <= 0 or batch_size % process_count:
        raise UserError(f"batch size {batch_size} is not a positive multiple of the "
                        f"{process_count} processes; pick a multiple of {process_count}")
    return batch_size // process_count


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, _PERMUTATION_STREAM, epoch]).permutation(num_examples)
    perm.setflags(write=False)
    return perm


def split_size(arrays: Arrays) -> int:
    """N: the number of examples of a split (the length of its arrays' axis 0)."""
    return len(next(iter(arrays.values())))


def train_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices [B] of global train batch `step` (see module doc)."""
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = _epoch_permutation(num_examples, seed, int(epoch))[offsets[sel]]
    return out


def flip_flags(batch_size: int, seed: int, step: int) -> np.ndarray:
    """bool [B]: which examples of global train batch `step` are mirrored."""
    return np.random.default_rng([seed, _FLIP_STREAM, step]).random(batch_size) < 0.5


def gather(arrays: Arrays, indices: np.ndarray, flip: np.ndarray | None = None) -> Arrays:
    """Rows `indices` [b] as a host batch: float32 [-1, 1] images, optional flips [b]."""
    batch = {k: v[indices] for k, v in arrays.items()}
    if "image" in batch:
        batch["image"] = batch["image"].astype(np.float32) / 127.5 - 1.0
    if flip is not None:
        for key in ("image", "mask"):
            if key in batch:
                batch[key] = np.where(_expand(flip, batch[key].ndim), batch[key][:, :, ::-1],
                                      batch[key])
    return batch


def _expand(flags: np.ndarray, ndim: int) -> np.ndarray:
    return flags.reshape((-1,) + (1,) * (ndim - 1))


def train_batches(arrays: Arrays, batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1, start_step: int = 0,
                  random_flip: bool = False) -> Iterator[Arrays]:
    """Infinite host batches for global steps start_step, start_step+1, ...

    Checks the batch size now (UserError), not at the first `next`.
    """
    b = host_batch_size(batch_size, process_count)
    rows = slice(process_index * b, (process_index + 1) * b)
    return _train_stream(arrays, batch_size, seed, rows, start_step, random_flip)


def _train_stream(arrays, batch_size, seed, rows, step, random_flip):
    num_examples = split_size(arrays)
    while True:
        indices = train_indices(num_examples, batch_size, seed, step)[rows]
        flip = flip_flags(batch_size, seed, step)[rows] if random_flip else None
        yield gather(arrays, indices, flip)
        step += 1


def eval_batches(arrays: Arrays, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Arrays]:
    """One pass over the split; the last batch is padded and 'valid' marks real rows.

    Checks the batch size now (UserError), not at the first `next`.
    """
    b = host_batch_size(batch_size, process_count)
    return _eval_pass(arrays, batch_size, slice(process_index * b, (process_index + 1) * b))


def _eval_pass(arrays, batch_size, rows):
    num_examples = split_size(arrays)
    for start in range(0, num_examples, batch_size):
        positions = np.arange(start, start + batch_size)[rows]
        valid = positions < num_examples
        batch = gather(arrays, np.where(valid, positions, 0))
        batch["valid"] = valid
        yield batch
