"""CUB-200-2011 with its foreground masks, in the IEM/ReDO splits.

On-disk layout (`data.data_dir` = the extracted CUB_200_2011/ folder):
  images.txt                          "<id> <class>/<name>.jpg", from CUB_200_2011.tgz
  images/<class>/<name>.jpg           from CUB_200_2011.tgz
  segmentations/<class>/<name>.png    from segmentations.tgz, extracted into this folder
  train_val_test_split.txt            "<id> <0|1|2>" (0 train, 1 val, 2 test): a separate
                                      download, ReDO's split file, which IEM reuses
Official archives: https://www.vision.caltech.edu/datasets/cub_200_2011/ ; split
file: https://github.com/mickaelChen/ReDO/blob/master/datasplits/cub/train_val_test_split.txt

Splits: IEM (Savarese et al. 2021) evaluates on ReDO's (Chen et al. 2019) test
split of CUB; "train" is ReDO's train split (flag 0), "eval" its test split
(flag 2, `data.eval_split="test"`, default) or val split (flag 1, "val").
Images in images.txt order; `load` is the shared skeleton
`fdm.data.splits.SplitDataset` over `split_files` and `_example`.

Masks: grey levels (fraction of annotators), > 127 after the crop and resize of
`fdm.data.folder` = foreground, as ReDO's > 0.5. Output: 'image' uint8
[N, S, S, 3], 'mask' int32 [N, S, S] in {0, 1} (1 = bird).
"""
from __future__ import annotations

import os

import numpy as np

from fdm.data import folder
from fdm.data.splits import SplitDataset

SOURCE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
SPLIT_SOURCE = ("https://github.com/mickaelChen/ReDO/blob/master/datasplits/cub/"
                "train_val_test_split.txt")
SPLIT_FLAGS = {"train": 0, "val": 1, "test": 2}
FOLDERS = (("images", "CUB images (images/ of CUB_200_2011.tgz)"),
           ("segmentations", "CUB masks (segmentations/ of segmentations.tgz)"))


def split_files(root: folder.DataDir, name: str) -> list[str]:
    """'<class>/<name>.jpg' of the images in split `name` (train|val|test), images.txt order."""
    images_txt = root.require("images.txt", what="CUB image list (images.txt of "
                              "CUB_200_2011.tgz)", source=SOURCE)
    split_txt = root.require("train_val_test_split.txt", what="the IEM/ReDO CUB split file",
                             source=SPLIT_SOURCE)
    files = dict(line.split() for line in folder.read_lines(images_txt))
    flags = dict(line.split() for line in folder.read_lines(split_txt))
    return [files[i] for i in files if int(flags.get(i, -1)) == SPLIT_FLAGS[name]]


def _example(root: folder.DataDir, name: str, image_size: int) -> dict[str, np.ndarray]:
    stem = os.path.splitext(name)[0]
    return {"image": folder.load_image(root.join("images", name), image_size),
            "mask": folder.load_mask(root.join("segmentations", stem + ".png"), image_size)}


load = SplitDataset(SOURCE, FOLDERS, split_files, _example).load
