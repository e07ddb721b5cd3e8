"""The UCI handwritten digits of `sklearn.datasets.load_digits` (bundled with scikit-learn,
no download, no data_dir): 1797 grey 8x8 images on 17 levels v = 0..16, one channel,
with their class labels.

Images are stored as uint8 round(v * 255 / 16) [N, 8, 8, 1], so the pipeline's [-1, 1]
values lie within 0.004 of the 17 level centres 2v/16 - 1 (a 17-bin model snaps them
back exactly; an 8-bit model reads them as 8-bit images).
Splits: a fixed permutation (numpy default_rng(0)) of the 1797 images; its first
NUM_TRAIN = 1437 (80 %) are "train", the other 360 "eval".
"""
from __future__ import annotations

import functools

import numpy as np

from fdm.errors import UserError

NUM_LEVELS = 17
NUM_TRAIN = 1437
IMAGE_SIZE = 8


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [1797, 8, 8, 1], int32 labels [1797]) in the permuted order."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise UserError("data.dataset='digits' needs scikit-learn; pip install "
                        "'scikit-learn>=1.9,<1.10' (the fdm[baselines] extra)") from e
    bunch = load_digits()
    images = np.round(bunch.images * 255.0 / (NUM_LEVELS - 1)).astype(np.uint8)[..., None]
    perm = np.random.default_rng(0).permutation(len(images))
    return images[perm], bunch.target[perm].astype(np.int32)


def load(root, image_size: int, split: str) -> dict[str, np.ndarray]:
    """{'image': uint8 [N, 8, 8, 1], 'label': int32 [N]}: 1437 train or 360 eval digits."""
    if image_size != IMAGE_SIZE:
        raise UserError(f"data.image_size={image_size!r} is invalid for digits; the images "
                        f"are {IMAGE_SIZE}x{IMAGE_SIZE}, set --config.data.image_size=8")
    images, labels = _all_digits()
    rows = slice(None, NUM_TRAIN) if split == "train" else slice(NUM_TRAIN, None)
    return {"image": images[rows], "label": labels[rows]}
