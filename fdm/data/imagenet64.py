"""ImageNet 64x64 with labels: the downsampled-ImageNet batches (Chrabaszcz et al. 2017).

On-disk layout (`data.data_dir`, the extracted Imagenet64_train_part1_npz.zip,
Imagenet64_train_part2_npz.zip and Imagenet64_val_npz.zip of
https://image-net.org/download-images.php, "Downsampled ImageNet 64x64"):
  train_data_batch_1.npz ... train_data_batch_10.npz   "train"
  val_data.npz                                         "eval" (the 50k validation images)
(the pickled release without .npz is not read). Each file holds 'data' uint8
[n, 12288] (channel-major rows: 4096 R, then G, then B values of a 64x64
image) and 'labels' in 1 ... 1000.

Labels: the files number the classes 1 ... 1000 in the ILSVRC devkit order of
map_clsloc.txt ("<wnid> <k> <name>" per line; kit_fox = 1), which is not the
sorted-synset order of TFDS/torchvision and of the papers' Table 2.7. With
`data.synsets_file` = a map_clsloc.txt (default in configs/imagenet64.py), label
k becomes the rank of its wnid among the sorted wnids, i.e. the standard index;
with `data.synsets_file=""` it is k - 1 (file order). The Pixel-ImageNet and VOC
evaluation sets use the standard index. Output: 'image' uint8 [N, S, S, 3]
(cropped/resized only when data.image_size != 64), 'label' int32 [N].
Memory: the train split is ~15.7 GB of uint8 at 64x64.
"""
from __future__ import annotations

import os

import numpy as np

from fdm.data import folder
from fdm.errors import UserError

SOURCE = "https://image-net.org/download-images.php (Downsampled ImageNet 64x64, npz)"
SYNSETS_SOURCE = ("the ILSVRC devkit (data/map_clsloc.txt of ILSVRC2015_devkit.tar.gz, "
                  "https://image-net.org/challenges/LSVRC/2015/)")
NUM_TRAIN_FILES = 10
SIDE = 64


def load(root: folder.DataDir, image_size: int, split: str, synsets_file: str = "") -> dict:
    """The "train" or "eval" split (module doc): image uint8 [N,S,S,3], label int32 [N]."""
    names = ([f"train_data_batch_{i}" for i in range(1, NUM_TRAIN_FILES + 1)]
             if split == "train" else ["val_data"])
    parts = [read_batch(root, name) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]) - 1
    if synsets_file:
        labels = devkit_to_standard(read_synsets(synsets_file))[labels]
    return {"image": folder.resize_images(images, image_size), "label": labels.astype(np.int32)}


def read_batch(root: folder.DataDir, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 64, 64, 3], file labels int [n] in 1..1000) of one batch file."""
    path = root.require(name + ".npz", what=f"downsampled ImageNet {name}.npz", source=SOURCE)
    with np.load(path) as z:
        data = np.asarray(z["data"], np.uint8).reshape(-1, 3, SIDE, SIDE)
        return data.transpose(0, 2, 3, 1), np.asarray(z["labels"], np.int64)


def read_synsets(path: str) -> list[str]:
    """wnids in devkit order from a map_clsloc.txt ("<wnid> <k> <name>", k = 1 ... 1000)."""
    if not os.path.isfile(path):
        raise UserError(f"ImageNet class list {path} is missing; get map_clsloc.txt from "
                        f"{SYNSETS_SOURCE} or set --config.data.synsets_file=PATH "
                        "(\"\" keeps the files' label order)")
    rows = sorted((int(k), wnid) for wnid, k, *_ in map(str.split, folder.read_lines(path)))
    return [wnid for _, wnid in rows]


def devkit_to_standard(devkit_wnids: list[str]) -> np.ndarray:
    """int [1000]: devkit class k-1 -> its rank among the sorted wnids (the standard index)."""
    rank = standard_index(devkit_wnids)
    return np.array([rank[w] for w in devkit_wnids], np.int64)


def standard_index(devkit_wnids: list[str]) -> dict[str, int]:
    """wnid -> standard (sorted-synset) class index."""
    return {w: i for i, w in enumerate(sorted(devkit_wnids))}
