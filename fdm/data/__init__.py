"""Input pipelines: dataset loading by name and per-process batch iterators.

`config.data.dataset` selects the source; each yields in-memory arrays
('image' uint8 [N, S, S, 3], optional 'mask' int32 [N, S, S], 'label' int32 [N])
for the splits "train" and "eval", with S = `data.image_size`:
  "shapes":  procedural textured shapes (`fdm.data.shapes`); keys data.num_regions,
             data.num_train, data.num_eval, data.seed. Has masks.
  "folder":  `data.data_dir`/images (+ masks/), see `fdm.data.folder`. Both splits
             are the whole folder (unsupervised setting: masks only evaluate).
  "cifar10": TFDS `cifar10` already prepared under `data.data_dir` (never
             downloaded); "train" -> train, "eval" -> test. Has labels.
Batching (`fdm.data.pipeline`): the train stream is a pure function of
(data.seed, step) with optional `data.random_flip`; eval batches are one padded
pass with a 'valid' key. Global batch: `train.batch_size` for train,
`eval.batch_size` (default `train.batch_size`) for eval.
"""
from __future__ import annotations

import functools
from typing import Iterator

import numpy as np
from PIL import Image

from fdm.data import folder, pipeline, shapes
from fdm.errors import UserError

DATASETS = ("shapes", "folder", "cifar10")
SPLITS = ("train", "eval")


def make_iterator(config, split: str, process_index: int = 0, process_count: int = 1,
                  start_step: int = 0, batch_size: int | None = None) -> Iterator[dict]:
    """Host-local batches of `split` for process `process_index` of `process_count`.

    Each batch has `batch_size // process_count` rows (batch_size defaults as in
    the module doc). Train: infinite, starting at global step `start_step`.
    Eval: one pass, padded, with 'valid'.
    """
    arrays = load_split_arrays(config, split)
    if batch_size is None:
        batch_size = _default_batch_size(config, split)
    if split == "train":
        return pipeline.train_batches(arrays, batch_size, config.data.get("seed", 0),
                                      process_index, process_count, start_step,
                                      config.data.get("random_flip", False))
    return pipeline.eval_batches(arrays, batch_size, process_index, process_count)


def _default_batch_size(config, split: str) -> int:
    if split == "train":
        return config.train.batch_size
    return config.eval.get("batch_size", config.train.batch_size)


def load_split_arrays(config, split: str) -> dict[str, np.ndarray]:
    """The whole split in memory (read-only arrays; see the module doc for keys)."""
    if split not in SPLITS:
        raise UserError(f"unknown data split {split!r}; use one of {list(SPLITS)}")
    d = config.data
    name = d.get("dataset", "shapes")
    if name == "shapes":
        size = d.num_train if split == "train" else d.num_eval
        return _shapes(size, d.image_size, d.get("num_regions", 3), d.get("seed", 0), split)
    if name == "folder":
        return _folder(d.get("data_dir", ""), d.image_size)
    if name == "cifar10":
        return _cifar10(d.get("data_dir", ""), d.image_size, split)
    raise UserError(f"unknown data.dataset {name!r}; use one of {list(DATASETS)}")


def _read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for v in arrays.values():
        v.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=4)
def _shapes(num_examples, image_size, num_regions, seed, split):
    if num_examples <= 0:
        raise UserError(f"data.num_{split}={num_examples}; it must be positive")
    data = shapes.generate(num_examples, image_size, num_regions, seed, split)
    image = np.round((data["image"] + 1.0) * 127.5).astype(np.uint8)
    return _read_only({"image": image, "mask": data["mask"]})


@functools.lru_cache(maxsize=2)
def _folder(data_dir, image_size):
    return _read_only(folder.load_folder(data_dir, image_size))


@functools.lru_cache(maxsize=2)
def _cifar10(data_dir, image_size, split):
    import tensorflow_datasets as tfds  # slow import (TensorFlow): only when asked for
    builder = tfds.builder("cifar10", data_dir=data_dir or None)
    if not builder.is_prepared():
        raise UserError(f"TFDS cifar10 is not prepared under data.data_dir="
                        f"{data_dir or '(TFDS default)'} (no {builder.data_dir}); run `tfds "
                        "build cifar10 --data_dir=DIR` on a machine with network, copy DIR "
                        "here and pass --config.data.data_dir=DIR")
    data = tfds.as_numpy(builder.as_dataset(split="train" if split == "train" else "test",
                                            batch_size=-1))
    image = data["image"]
    if image.shape[1] != image_size:
        image = np.stack([np.asarray(folder.center_crop_resize(Image.fromarray(x), image_size))
                          for x in image])
    return _read_only({"image": image.astype(np.uint8), "label": data["label"].astype(np.int32)})


__all__ = ["DATASETS", "SPLITS", "load_split_arrays", "make_iterator"]
