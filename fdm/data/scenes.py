"""Multi-view scenes for NeRF lifting, in the `fdm.data` registry's format.

Datasets (config.data.dataset):
  "toy_scene":      the procedural scene (`fdm.data.toy_scene`), rendered here;
                    keys data.num_train, data.num_val, data.seed.
  "nerf_synthetic": a Blender scene folder (`fdm.data.nerf.load_nerf_synthetic`).
  "llff":           a forward-facing LLFF scene (`fdm.data.nerf.load_llff`); keys
                    data.llffhold (every n-th image held out), data.llff_holdout.
Split "eval" reads the scene split `data.eval_split` (default "val"; "test" for
the LLFF hold-out views). `data.image_size` is an int (square) or (H, W).

Arrays (`fdm.data.load_split_arrays`): 'image' uint8 [N, H, W, 3] (white
background composited), 'c2w' float32 [N, 4, 4] camera-to-world (OpenGL
convention), 'index' int32 [N]. Random flips must stay off (a flipped image
no longer matches its camera). `load_scene` gives the full `SceneData`
(intrinsics, near/far bounds) that rendering needs.
"""
from __future__ import annotations

import functools

import numpy as np

from fdm.data.folder import DataDir
from fdm.data.nerf import SceneData, load_llff, load_nerf_synthetic
from fdm.data.toy_scene import load_toy_scene
from fdm.errors import UserError

SCENE_DATASETS = ("toy_scene", "nerf_synthetic", "llff")
_SOURCE = "https://www.matthewtancik.com/nerf (nerf_synthetic.zip / nerf_llff_data.zip)"
EVAL_SPLIT_DEFAULT = {"toy_scene": "val", "nerf_synthetic": "val", "llff": "test"}


def as_size(image_size):
    """int, or (H, W) from a list/tuple."""
    if isinstance(image_size, (tuple, list)):
        return tuple(int(s) for s in image_size)
    return int(image_size)


def load_scene(d, split: str) -> SceneData:
    """config.data `d` -> the scene split; split 'train', or 'eval' (= data.eval_split)."""
    name = d.get("dataset", "toy_scene")
    if name not in SCENE_DATASETS:
        raise UserError(f"data.dataset={name!r} is not a NeRF scene; use one of "
                        f"{list(SCENE_DATASETS)}")
    eval_split = d.get("eval_split", EVAL_SPLIT_DEFAULT[name])
    return read_scene(name, d.get("data_dir", ""), eval_split if split == "eval" else split,
                      as_size(d.image_size), d.get("seed", 0), d.get("num_train", 100),
                      d.get("num_val", 20), d.get("llffhold", 8), d.get("llff_holdout", "name"))


@functools.lru_cache(maxsize=4)
def read_scene(name, data_dir, split, size, seed=0, num_train=100, num_val=20, llffhold=8,
               llff_holdout="name") -> SceneData:
    """One split of a scene dataset (cached); arguments as in the module doc."""
    if name == "toy_scene":
        if not isinstance(size, int):
            raise UserError("toy_scene renders square images; set data.image_size to an int")
        return load_toy_scene(split, seed, size, num_train, num_val)
    root = DataDir(data_dir)
    if name == "nerf_synthetic":
        root.require(f"transforms_{split}.json", what="a nerf_synthetic scene", source=_SOURCE)
        return load_nerf_synthetic(data_dir, split, size)
    root.require("poses_bounds.npy", what="an LLFF scene", source=_SOURCE)
    return load_llff(data_dir, split, size, llffhold, holdout=llff_holdout)


def to_arrays(scene: SceneData) -> dict[str, np.ndarray]:
    """SceneData -> {'image' uint8 [N,H,W,3], 'c2w' float32 [N,4,4], 'index' int32 [N]}."""
    return {"image": np.round(np.asarray(scene.images) * 255.0).astype(np.uint8),
            "c2w": np.asarray(scene.c2w, np.float32),
            "index": np.arange(len(scene.images), dtype=np.int32)}


def registry_loader(name: str):
    """`load(root, image_size, split, **options)` for the `fdm.data` registry."""
    def load(root, image_size, split, eval_split, **options):
        path = root.path if root is not None else ""
        return to_arrays(read_scene(name, path, eval_split if split == "eval" else split,
                                    as_size(image_size), **options))
    return load
