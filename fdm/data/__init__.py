"""Input pipelines: dataset loading by name and per-process batch iterators.

`config.data.dataset` selects the source from `DATASETS` (name -> `Dataset`);
each yields in-memory arrays ('image' uint8 [N, S, S, 3], optional 'mask'
int32 [N, S, S], 'label' int32 [N], and dataset-specific int32 [N] columns)
for the splits "train" and "eval", with S = `data.image_size`:
  "shapes":         procedural shapes (`fdm.data.shapes`); keys data.num_regions,
                    data.num_train, data.num_eval, data.seed, data.style ("object":
                    object-centric, the default; "textured": the harder style). Has masks.
  "factors":        procedural images with five labelled factors (seed 002, `fdm.data.factors`);
                    keys data.num_train, data.num_val, data.num_test, data.seed,
                    data.eval_split ("test" or "val"). Has masks and factor labels.
  "folder":         `data.data_dir`/images (+ masks/), see `fdm.data.folder`. Both splits
                    are the whole folder (unsupervised setting: masks only evaluate).
  "cifar10":        TFDS `cifar10` already prepared under `data.data_dir` (never
                    downloaded); "train" -> train, "eval" -> test. Has labels.
  "digits":         scikit-learn's 8x8 grey digits, one channel (`fdm.data.digits`);
                    no data_dir. Has labels.
  "binarized_mnist": TFDS `binarized_mnist` (fixed binarisation, 28x28, one channel in
                    {0, 255}) prepared under `data.data_dir`; "eval" -> test.
  "rectangles":     every filled rectangle of an S x S binary image, one channel, both
                    splits the whole support (`fdm.data.rectangles`; S = 8: rectangles8,
                    entropy 10.3399 bits); no data_dir.
  "flowers102":     Oxford Flowers-102 + masks, IEM splits (`fdm.data.flowers`).
  "cub":            CUB-200-2011 + masks, IEM splits (`fdm.data.cub`).
  "ffhq":           FFHQ image folders (`fdm.data.ffhq`).
  "celebamask_hq":  CelebAMask-HQ, 3-class skin/hair/background masks (`fdm.data.celebamask`).
  "imagenet64":     downsampled ImageNet 64x64 + labels (`fdm.data.imagenet64`).
  "pixel_imagenet": Pixel-ImageNet masks, <= 20 images per class (`fdm.data.pixel_imagenet`).
  "voc2012":        PASCAL VOC 2012, zero-shot per-class examples (`fdm.data.voc`).
  "davis2017":      DAVIS-2017 480p frames + object masks (`fdm.data.davis`).
  "linear_gaussian": observation tuples of the linear-Gaussian inversion (seed 003 T1,
                    `fdm.data.inverse_toys`): float observations and int32 forward-model
                    parameters instead of images (keys in `fdm.forward.base`); no data_dir.
  "glyph_mosaic":   observation tuples (8x8 crops) of the 16x16 glyph mosaics (seed 003
                    T2, `fdm.data.inverse_toys`), the same layout; no data_dir.
  "motion":         observation tuples (16x16x3 frames, float phi) of random textures under
                    one of four global flows (seed 003 T3, `fdm.data.inverse_toys`); no
                    data_dir.
  "scene_tuples":   observation tuples (S x S x 3 views, c2w phi [4, 4]) of random scenes
                    of the toy scene's family seen by three orbit cameras (seed 003 Sec.
                    4.1, `fdm.data.scene_tuples`); keys data.num_train, data.num_eval,
                    data.seed, data.hidden_sides (far sides repainted with colours the
                    context cannot know); no data_dir.
  "co3d":           Co3D v2 frame triples (seed 003 Sec. 4.1, `fdm.data.co3d`): views float32
                    [N, S, S, 3] in [-1, 1], phi c2w [N, 4, 4] (relative to the context),
                    focal / principal_point [N, 2]; keys data.category, data.subset,
                    data.eval_split, data.num_train, data.num_eval, data.min_gap,
                    data.max_gap, data.max_sequences, data.normalize_radius, data.seed.
  "realestate10k":  RealEstate10K frame triples (`fdm.data.realestate10k`), the same layout;
                    keys data.frames_dir ('' = data_dir), data.eval_split, data.num_train,
                    data.num_eval, data.min_gap, data.max_gap, data.max_sequences, data.seed.
  "transfer_<name>": seed 002's linear-probe transfer datasets (aircraft, caltech101, cars,
                    cifar10, cifar100, dtd, flowers102, food101, pets, sun397;
                    `fdm.data.transfer`) in their published layouts; "train" =
                    data.train_split ("train" | "trainval"), "eval" = data.eval_split
                    ("test" | "val"); data.split_seed seeds the held-out val. Has labels.
  "toy_scene", "nerf_synthetic", "llff": multi-view scenes with cameras ('c2w'
                    [N, 4, 4]) for NeRF lifting, registered in `fdm.data.scenes.SCENES`
                    (their entries here derive from it); no flips. `load_scene`
                    gives a split with its geometry.
Every module documents its on-disk layout; a missing file ends in a one-line
UserError naming the path, where to get it and the config key to set.

The data keys every config has (dataset, data_dir, eval_dataset, eval_data_dir,
image_size, random_flip, seed) are declared in configs/fdm_common.py:data_config;
the keys of one dataset, with their defaults, in its `DATASETS` entry (`options`).

Evaluating on another dataset: `data.eval_dataset` ("": data.dataset) names
the source of the "eval" split and `data.eval_data_dir` ("": data.data_dir) its root, e.g. FFHQ training with CelebAMask-HQ evaluation or
ImageNet training with Pixel-ImageNet / VOC / DAVIS evaluation. The other data
keys (image_size, seed, eval_split, ...) are shared.

All decoding, cropping and resizing lives in `fdm.data.folder`; batching,
scaling to [-1, 1] and flips in `fdm.data.pipeline`: the train stream is a
pure function of (data.seed, step) with optional `data.random_flip`; eval
batches are one padded pass with a 'valid' key. Global batch: `train.batch_size`
for train, `eval.batch_size` for eval.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator

import numpy as np

from fdm.data import (celebamask, co3d, cub, davis, digits, factors, ffhq, flowers, folder,
                      imagenet64, inverse_toys, pipeline, pixel_imagenet, realestate10k,
                      rectangles, scene_tuples, scenes, shapes, transfer, voc)
from fdm.data.nerf import SceneData
from fdm.errors import UserError

SPLITS = ("train", "eval")
REQUIRED = object()          # option default: the config key must be set


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A registered source: `load(root, image_size, split, **options) -> arrays`.

    root is a `folder.DataDir` (None when `uses_data_dir` is False); `options`
    maps config.data keys to their defaults (REQUIRED: no default).
    """
    load: Callable[..., dict[str, np.ndarray]]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    uses_data_dir: bool = True


def _shapes(root, image_size, split, num_train, num_eval, num_regions, seed, style):
    """Procedural shapes in the stored format: image uint8 [N,S,S,3], mask int32 [N,S,S]."""
    num_examples = num_train if split == "train" else num_eval
    if num_examples <= 0:
        raise UserError(f"data.num_{split}={num_examples}; it must be positive")
    data = shapes.generate(num_examples, image_size, num_regions, seed, split, style=style)
    image = np.round((data["image"] + 1.0) * 127.5).astype(np.uint8)
    return {"image": image, "mask": data["mask"]}


def _folder(root, image_size, split):
    """The whole image folder for either split (see `fdm.data.folder`)."""
    return folder.load_folder(root.path, image_size)


def _tfds_split(name, root, split):
    """The whole "train" (or, for "eval", "test") split of TFDS dataset `name` prepared
    under root (never downloaded) as numpy arrays; a one-line UserError when it is not."""
    import tensorflow_datasets as tfds  # slow import (TensorFlow): only when asked for
    builder = tfds.builder(name, data_dir=root.path or None)
    if not builder.is_prepared():
        raise UserError(f"TFDS {name} is not prepared under {root.key}="
                        f"{root.path or '(TFDS default)'} (no {builder.data_dir}); run `tfds "
                        f"build {name} --data_dir=DIR` on a machine with network, copy DIR "
                        f"here and pass --config.{root.key}=DIR")
    return tfds.as_numpy(builder.as_dataset(split="train" if split == "train" else "test",
                                            batch_size=-1))


def _cifar10(root, image_size, split):
    """TFDS cifar10 prepared under root (never downloaded): image uint8, label int32 [N]."""
    data = _tfds_split("cifar10", root, split)
    return {"image": folder.resize_images(data["image"], image_size),
            "label": data["label"].astype(np.int32)}


def _binarized_mnist(root, image_size, split):
    """TFDS binarized_mnist prepared under root: image uint8 [N, 28, 28, 1] in {0, 255}."""
    if image_size != 28:
        raise UserError(f"data.image_size={image_size!r} is invalid for binarized_mnist; "
                        "the images are 28x28, set --config.data.image_size=28")
    data = _tfds_split("binarized_mnist", root, split)
    return {"image": (data["image"] * 255).astype(np.uint8)}


_EVAL_SPLIT = {"eval_split": "test"}
DATASETS: dict[str, Dataset] = {
    "shapes": Dataset(_shapes, dict(num_train=REQUIRED, num_eval=REQUIRED, num_regions=3,
                                    seed=0, style="object"), uses_data_dir=False),
    "factors": Dataset(factors.load, dict(num_train=8000, num_val=2000, num_test=2000, seed=0,
                                          eval_split="test", placement="quadrant"),
                       uses_data_dir=False),
    "folder": Dataset(_folder),
    "cifar10": Dataset(_cifar10),
    "digits": Dataset(digits.load, uses_data_dir=False),
    "binarized_mnist": Dataset(_binarized_mnist),
    "rectangles": Dataset(rectangles.load, uses_data_dir=False),
    "flowers102": Dataset(flowers.load, _EVAL_SPLIT),
    "cub": Dataset(cub.load, _EVAL_SPLIT),
    "ffhq": Dataset(ffhq.load),
    "celebamask_hq": Dataset(celebamask.load, _EVAL_SPLIT),
    "imagenet64": Dataset(imagenet64.load, {"synsets_file": ""}),
    "pixel_imagenet": Dataset(pixel_imagenet.load, dict(synsets_file=REQUIRED,
                                                        max_per_class=20, seed=0)),
    "voc2012": Dataset(voc.load),
    "davis2017": Dataset(davis.load, dict(sequences="", davis_label=-1)),
    "linear_gaussian": Dataset(inverse_toys.linear_gaussian, dict(
        num_train=65536, num_eval=20, patch_size=2, seed=0), uses_data_dir=False),
    "glyph_mosaic": Dataset(inverse_toys.glyph_mosaic, dict(
        num_train=65536, num_eval=256, aligned_fraction=0.0, seed=0), uses_data_dir=False),
    "motion": Dataset(inverse_toys.motion, dict(num_train=65536, num_eval=256, seed=0),
                      uses_data_dir=False),
    "scene_tuples": Dataset(scene_tuples.load, dict(num_train=8192, num_eval=64, seed=0,
                                                    hidden_sides=False),
                            uses_data_dir=False),
    "co3d": Dataset(co3d.load, co3d.REGISTRY_OPTIONS),
    "realestate10k": Dataset(realestate10k.load, realestate10k.REGISTRY_OPTIONS),
    **{f"transfer_{n}": Dataset(transfer.registry_loader(n), dict(transfer.REGISTRY_OPTIONS))
       for n in transfer.TRANSFER},
    **{name: Dataset(scenes.registry_loader(name), scene.options, scene.uses_data_dir)
       for name, scene in scenes.SCENES.items()},
}


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
        return pipeline.train_batches(arrays, batch_size, config.data.seed,
                                      process_index, process_count, start_step,
                                      config.data.random_flip)
    return pipeline.eval_batches(arrays, batch_size, process_index, process_count)


def _default_batch_size(config, split: str) -> int:
    if split == "train":
        return config.train.batch_size
    return config.eval.batch_size


def load_split_arrays(config, split: str) -> dict[str, np.ndarray]:
    """The whole split in memory (read-only arrays; see the module doc for keys)."""
    name, root, options = _resolve(config, split)
    size = config.data.image_size
    return _load(name, root, tuple(size) if isinstance(size, list) else size, split, options)


def load_scene(config, split: str) -> SceneData:
    """One split of a scene dataset (`fdm.data.scenes`) with its geometry, the options
    resolved as for `load_split_arrays`; a UserError for other datasets."""
    name, root, options = _resolve(config, split)
    if name not in scenes.SCENES:
        raise UserError(f"data.dataset={name!r} is not a NeRF scene; use one of "
                        f"{list(scenes.SCENES)}")
    return scenes.read_scene(name, root.path if root is not None else "", split,
                             scenes.as_size(config.data.image_size), tuple(sorted(options)))


def _resolve(config, split: str) -> tuple[str, folder.DataDir | None, tuple]:
    """(dataset name, its root, its options as (key, value) pairs) that feed `split`."""
    if split not in SPLITS:
        raise UserError(f"unknown data split {split!r}; use one of {list(SPLITS)}")
    name, root = source(config.data, split)
    options = tuple((k, _option(config.data, k, default))
                    for k, default in DATASETS[name].options.items())
    return name, root, options


def source(d, split: str) -> tuple[str, folder.DataDir | None]:
    """(dataset name, its root) that feeds `split` (data.eval_* for "eval", module doc)."""
    from_eval_keys = split == "eval" and bool(d.eval_dataset)
    name = d.eval_dataset if from_eval_keys else d.dataset
    if name not in DATASETS:
        key = "data.eval_dataset" if from_eval_keys else "data.dataset"
        raise UserError(f"unknown {key} {name!r}; use one of {list(DATASETS)}")
    if not DATASETS[name].uses_data_dir:
        return name, None
    if from_eval_keys and d.eval_data_dir:
        return name, folder.DataDir(d.eval_data_dir, "data.eval_data_dir")
    return name, folder.DataDir(d.data_dir)


def _option(d, key: str, default):
    """config.data[key], or its default declared in `DATASETS` (the one deliberate
    `.get` with a default: a dataset's own keys live in its registry entry, not in
    every config); a UserError when a REQUIRED key is absent."""
    if default is REQUIRED and key not in d:
        raise UserError(f"data.{key} is not set; pass --config.data.{key}=...")
    return d.get(key, default)


@functools.lru_cache(maxsize=4)
def _load(name, root, image_size, split, options) -> dict[str, np.ndarray]:
    arrays = DATASETS[name].load(root, image_size, split, **dict(options))
    for v in arrays.values():
        v.setflags(write=False)
    return arrays


__all__ = ["DATASETS", "Dataset", "SPLITS", "load_scene", "load_split_arrays", "make_iterator",
           "source"]
