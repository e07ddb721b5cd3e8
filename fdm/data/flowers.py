"""Oxford Flowers-102 with the official foreground masks, in the IEM/ReDO splits.

On-disk layout (`data.data_dir`, the official archives extracted side by side,
https://www.robots.ox.ac.uk/~vgg/data/flowers/102/):
  jpg/image_00001.jpg ... image_08189.jpg      from 102flowers.tgz
  segmim/segmim_00001.jpg ... segmim_08189.jpg from 102segmentations.tgz
  setid.mat                                    the data splits (MATLAB: trnid, valid, tstid)

Splits: IEM (Savarese et al. 2021) reuses ReDO's (Chen et al. 2019) reader,
which maps the official `setid.mat` lists to train = `tstid` (6149 images),
val = `valid` (1020), test = `trnid` (1020). "train" is IEM's train split;
"eval" is IEM's test split (`data.eval_split="test"`, default) or its val
split (`data.eval_split="val"`). Images in increasing id order; `load` is the shared
skeleton `fdm.data.splits.SplitDataset` over `split_ids` and `_example`.

Masks: the segmim images paint the background pure blue (0, 0, 254) over the
photo. As in IEM/ReDO, a pixel is background when R == 0 or G == 0 or B == 254
in the decoded segmim JPEG, foreground otherwise; the mask is then cropped and
resized like the image (`fdm.data.folder`). Output: 'image' uint8 [N, S, S, 3],
'mask' int32 [N, S, S] in {0, 1} (1 = flower).
"""
from __future__ import annotations

import numpy as np
import scipy.io

from fdm.data import folder
from fdm.data.splits import SplitDataset

SOURCE = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
SETID_KEYS = {"train": "tstid", "val": "valid", "test": "trnid"}
FOLDERS = (("jpg", "Flowers-102 images (jpg/ of 102flowers.tgz)"),
           ("segmim", "Flowers-102 masks (segmim/ of 102segmentations.tgz)"))
BACKGROUND_RGB = (0, 0, 254)


def split_ids(root: folder.DataDir, name: str) -> list[int]:
    """Sorted image ids (1-based, as in the file names) of IEM split `name` (train|val|test)."""
    path = root.require("setid.mat", what="Flowers-102 data splits (setid.mat)", source=SOURCE)
    return sorted(int(i) for i in np.ravel(scipy.io.loadmat(path)[SETID_KEYS[name]]))


def _example(root: folder.DataDir, image_id: int, image_size: int) -> dict[str, np.ndarray]:
    image = folder.load_image(root.join("jpg", f"image_{image_id:05d}.jpg"), image_size)
    segmim = folder.open_image(root.join("segmim", f"segmim_{image_id:05d}.jpg"))
    mask = foreground(np.asarray(segmim.convert("RGB")))
    return {"image": image, "mask": folder.resize_label_map(mask, image_size)}


def foreground(segmim: np.ndarray) -> np.ndarray:
    """IEM/ReDO rule on a segmim image uint8 [H, W, 3]: int32 [H, W], 1 = flower."""
    background = np.zeros(segmim.shape[:2], bool)
    for channel, value in enumerate(BACKGROUND_RGB):
        background |= segmim[..., channel] == value
    return (~background).astype(np.int32)


load = SplitDataset(SOURCE, FOLDERS, split_ids, _example).load
