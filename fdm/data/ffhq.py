"""FFHQ (Karras et al. 2019) from its image folders; no masks, no labels.

On-disk layout (`data.data_dir`), the official release
(https://github.com/NVlabs/ffhq-dataset), first match wins:
  images1024x1024/<group>/<id>.png   70 groups 00000, 01000, ... of 1000 images each
  thumbnails128x128/<group>/<id>.png the 128x128 thumbnails (enough for image_size <= 128)
  otherwise a plain image folder as `fdm.data.folder` reads it (DIR/images/ or DIR).
Images in sorted path order; both splits are all of them (the papers train on
all 70k and evaluate segmentation on CelebAMask-HQ: the ffhq configs set
data.eval_dataset, see `fdm.data`). Output: 'image' uint8 [N, S, S, 3].
"""
from __future__ import annotations

import glob

from fdm.data import folder

SOURCE = "https://github.com/NVlabs/ffhq-dataset"
OFFICIAL_DIRS = ("images1024x1024", "thumbnails128x128")


def load(root: folder.DataDir, image_size: int, split: str) -> dict:
    """All FFHQ images (module doc), for either split: image uint8 [N, S, S, 3]."""
    root.require(what="FFHQ (images1024x1024/ or thumbnails128x128/)", source=SOURCE)
    return folder.load_examples(lambda p: {"image": folder.load_image(p, image_size)},
                                list_images(root))


def list_images(root: folder.DataDir) -> list[str]:
    """Sorted image paths in the first official subfolder present, else the plain folder."""
    for name in OFFICIAL_DIRS:
        paths = sorted(glob.glob(root.join(name, "*", "*.png")))
        if paths:
            return paths
    return folder.list_images(root.path)
