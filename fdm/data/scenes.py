"""Multi-view scenes for NeRF lifting, in the `fdm.data` registry's format.

Datasets (config.data.dataset), each one `SCENES` entry (reader and option defaults,
from which `fdm.data.DATASETS` takes its entry):
  "toy_scene":      the procedural scene (`fdm.data.toy_scene`), rendered here;
                    keys data.num_train, data.num_val, data.seed.
  "nerf_synthetic": a Blender scene folder (`fdm.data.nerf.load_nerf_synthetic`).
  "llff":           a forward-facing LLFF scene (`fdm.data.nerf.load_llff`); keys
                    data.llffhold (every n-th image held out), data.llff_holdout.
Split "eval" reads the scene split `data.eval_split` (default "val"; "test" for
the LLFF hold-out views). `data.image_size` is an int (square) or (H, W).

Few-shot protocol (every scene; DietNeRF, seed 004 sec. 4.5.1): data.num_train_views
= k > 0 keeps k views of the training split, drawn without replacement by
np.random.default_rng(data.train_views_seed) and kept in their original order
(`select_views`); 0 keeps all. The "eval" split is never subsampled.

Arrays (`fdm.data.load_split_arrays`): 'image' uint8 [N, H, W, 3] (white
background composited), 'c2w' float32 [N, 4, 4] camera-to-world (OpenGL
convention), 'index' int32 [N]. Random flips must stay off (a flipped image
no longer matches its camera). `fdm.data.load_scene` gives the full `SceneData`
(with its `fdm.nerf.views.ViewGeometry`: intrinsics, near/far bounds) that rendering
needs, its options resolved as for the arrays.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from fdm.data.folder import DataDir
from fdm.data.nerf import SceneData, load_llff, load_nerf_synthetic
from fdm.data.toy_scene import load_toy_scene
from fdm.errors import UserError

_SOURCE = "https://www.matthewtancik.com/nerf (nerf_synthetic.zip / nerf_llff_data.zip)"


@dataclasses.dataclass(frozen=True)
class SceneDataset:
    """A registered scene dataset: `read(data_dir, split, size, **options) -> SceneData`.

    options maps config.data keys to their defaults; every entry has eval_split, the
    scene split that the "eval" split reads (consumed here, not passed to read).
    """
    read: Callable[..., SceneData]
    options: dict[str, Any]
    uses_data_dir: bool = True


def _toy(data_dir, split, size, num_train, num_val, seed) -> SceneData:
    """The procedural scene (square images only)."""
    if not isinstance(size, int):
        raise UserError("toy_scene renders square images; set data.image_size to an int")
    return load_toy_scene(split, seed, size, num_train, num_val)


def _nerf_synthetic(data_dir, split, size) -> SceneData:
    """A Blender scene folder."""
    DataDir(data_dir).require(f"transforms_{split}.json", what="a nerf_synthetic scene",
                              source=_SOURCE)
    return load_nerf_synthetic(data_dir, split, size)


def _llff(data_dir, split, size, llffhold, llff_holdout) -> SceneData:
    """A forward-facing LLFF scene folder."""
    DataDir(data_dir).require("poses_bounds.npy", what="an LLFF scene", source=_SOURCE)
    return load_llff(data_dir, split, size, llffhold, holdout=llff_holdout)


FEW_SHOT = dict(num_train_views=0, train_views_seed=0)   # keys of every scene (module doc)
SCENES: dict[str, SceneDataset] = {
    "toy_scene": SceneDataset(_toy, dict(eval_split="val", num_train=100, num_val=20, seed=0,
                                         **FEW_SHOT), uses_data_dir=False),
    "nerf_synthetic": SceneDataset(_nerf_synthetic, dict(eval_split="val", **FEW_SHOT)),
    "llff": SceneDataset(_llff, dict(eval_split="test", llffhold=8, llff_holdout="name",
                                     **FEW_SHOT)),
}


def as_size(image_size):
    """int, or (H, W) from a list/tuple."""
    if isinstance(image_size, (tuple, list)):
        return tuple(int(s) for s in image_size)
    return int(image_size)


@functools.lru_cache(maxsize=4)
def read_scene(name: str, data_dir: str, split: str, size, options: tuple) -> SceneData:
    """Split 'train' or 'eval' (the options' eval_split) of scene dataset `name` (cached);
    options: sorted (key, value) pairs of every key in its `SceneDataset.options`."""
    kwargs = dict(options)
    eval_split = kwargs.pop("eval_split")
    num_views, views_seed = (kwargs.pop(k) for k in FEW_SHOT)
    scene = SCENES[name].read(data_dir, eval_split if split == "eval" else split,
                              as_size(size), **kwargs)
    return select_views(scene, num_views, views_seed) if split == "train" else scene


def select_views(scene: SceneData, num: int, seed: int) -> SceneData:
    """The few-shot subset (module doc): num views drawn without replacement by
    np.random.default_rng(seed), in their original order; all views when num = 0."""
    total = len(scene.images)
    if num < 0 or num > total:
        raise UserError(f"data.num_train_views={num} is invalid; use 0 (all) to {total}, "
                        f"the views of the training split")
    if num == 0:
        return scene
    keep = np.sort(np.random.default_rng(seed).choice(total, num, replace=False))
    names = tuple(scene.names[i] for i in keep) if scene.names else ()
    return scene.replace(images=scene.images[keep], c2w=scene.c2w[keep], names=names)


def to_arrays(scene: SceneData) -> dict[str, np.ndarray]:
    """SceneData -> {'image' uint8 [N,H,W,3], 'c2w' float32 [N,4,4], 'index' int32 [N]}."""
    return {"image": np.round(np.asarray(scene.images) * 255.0).astype(np.uint8),
            "c2w": np.asarray(scene.c2w, np.float32),
            "index": np.arange(len(scene.images), dtype=np.int32)}


def registry_loader(name: str):
    """`load(root, image_size, split, **options)` of the `fdm.data` registry for `name`."""
    def load(root, image_size, split, **options):
        path = root.path if root is not None else ""
        return to_arrays(read_scene(name, path, split, image_size,
                                    tuple(sorted(options.items()))))
    return load
