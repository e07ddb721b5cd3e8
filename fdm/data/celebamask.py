"""CelebAMask-HQ (Lee et al. 2020) with its part masks reduced to 3 classes.

On-disk layout (`data.data_dir`, or `data.eval_data_dir` when it is the eval
set of another dataset; the extracted CelebAMask-HQ.zip,
https://github.com/switchablenorms/CelebAMask-HQ):
  CelebA-HQ-img/<idx>.jpg                          idx = 0 ... 29999, 1024x1024
  CelebAMask-HQ-mask-anno/<k>/<idx:05d>_<part>.png k = idx // 2000; 512x512, part = 255;
                                                   a part's file is absent when it is
  CelebA-HQ-to-CelebA-mapping.txt                  "idx orig_idx orig_file" per image

Splits: CelebA's official partition of the source image (`orig_file`, 1-based
number n): n <= 162770 train, n <= 182637 val, else test (24183 / 2993 / 2824
images). "train" = train; "eval" = test (`data.eval_split="test"`, default;
the papers report the CelebAMask test set) or val. Images in idx order;
`load` is the shared skeleton `fdm.data.splits.SplitDataset` over `split_ids`
and `_example`.

Classes (the papers' skin / hair / background): the part masks are painted in
the official order of the dataset's own label script, later parts over earlier:
  skin, nose, eye_g, l_eye, r_eye, l_brow, r_brow, l_ear, r_ear, mouth, u_lip,
  l_lip -> 1 skin;  hair, hat -> 2 hair;  ear_r (earring) -> 1 skin;
  neck_l (necklace) -> 0 background;  neck -> 1 skin;  cloth -> 0 background;
  unpainted pixels -> 0 background.
The 512x512 label map is then resized like the 1024x1024 image (both full
frame). Output: 'image' uint8 [N, S, S, 3], 'mask' int32 [N, S, S] in {0, 1, 2}.
"""
from __future__ import annotations

import os

import numpy as np

from fdm.data import folder
from fdm.data.splits import SplitDataset
from fdm.errors import UserError

SOURCE = "https://github.com/switchablenorms/CelebAMask-HQ"
BACKGROUND, SKIN, HAIR = 0, 1, 2
PART_CLASSES = (
    ("skin", SKIN), ("nose", SKIN), ("eye_g", SKIN), ("l_eye", SKIN), ("r_eye", SKIN),
    ("l_brow", SKIN), ("r_brow", SKIN), ("l_ear", SKIN), ("r_ear", SKIN), ("mouth", SKIN),
    ("u_lip", SKIN), ("l_lip", SKIN), ("hair", HAIR), ("hat", HAIR), ("ear_r", SKIN),
    ("neck_l", BACKGROUND), ("neck", SKIN), ("cloth", BACKGROUND))
CELEBA_LAST = {"train": 162770, "val": 182637}       # last CelebA file number per split
FOLDERS = (("CelebA-HQ-img", "CelebAMask-HQ images (CelebA-HQ-img/)"),
           ("CelebAMask-HQ-mask-anno", "CelebAMask-HQ part masks (CelebAMask-HQ-mask-anno/)"))
IMAGES_PER_MASK_FOLDER = 2000


def split_ids(root: folder.DataDir, name: str) -> list[int]:
    """CelebA-HQ idx of the images in split `name` (train|val|test), increasing."""
    path = root.require("CelebA-HQ-to-CelebA-mapping.txt", what="CelebAMask-HQ split mapping "
                        "(CelebA-HQ-to-CelebA-mapping.txt)", source=SOURCE)
    ids = []
    for line in folder.read_lines(path)[1:]:                  # header: idx orig_idx orig_file
        idx, _, orig_file = line.split()
        if _celeba_split(int(os.path.splitext(orig_file)[0])) == name:
            ids.append(int(idx))
    return sorted(ids)


def _celeba_split(number: int) -> str:
    if number <= CELEBA_LAST["train"]:
        return "train"
    return "val" if number <= CELEBA_LAST["val"] else "test"


def _example(root: folder.DataDir, idx: int, image_size: int) -> dict[str, np.ndarray]:
    image = folder.load_image(root.join("CelebA-HQ-img", f"{idx}.jpg"), image_size)
    return {"image": image, "mask": folder.resize_label_map(label_map(root, idx), image_size)}


def label_map(root: folder.DataDir, idx: int) -> np.ndarray:
    """3-class map int32 [512, 512] of image idx from its part masks (module doc)."""
    mask_dir = root.join("CelebAMask-HQ-mask-anno", str(idx // IMAGES_PER_MASK_FOLDER))
    out = None
    for part, cls in PART_CLASSES:
        path = os.path.join(mask_dir, f"{idx:05d}_{part}.png")
        if os.path.exists(path):
            painted = np.asarray(folder.open_image(path).convert("L")) > 127
            out = np.zeros(painted.shape, np.int32) if out is None else out
            out[painted] = cls
    if out is None:
        raise UserError(f"no part masks for image {idx} in {mask_dir}; restore "
                        f"CelebAMask-HQ-mask-anno/ from {SOURCE}")
    return out


load = SplitDataset(SOURCE, FOLDERS, split_ids, _example).load
