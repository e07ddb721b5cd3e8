"""GrabCut (Rother et al. 2004; seed 000 Tables 2.1/2.2) with OpenCV's `cv2.grabCut`.

Each evaluation image is segmented on its own at G = `baselines.grabcut_size` pixels
(the photo reloaded at that size; 0 = data.image_size: GrabCut's colour models need
more pixels than 32x32 gives, where it calls almost everything background),
initialised with a centred rectangle: `baselines.grabcut_margin` = m of the width
(height) is cut off the left and right (top and bottom), i.e. the rectangle spans
pixels [round(m*G), G - round(m*G)) in both axes; outside it is sure background.
After `baselines.grabcut_iters` iterations the foreground is the (probable)
foreground pixels; that mask is resized to data.image_size exactly as the
ground-truth masks are (`fdm.data.folder.resize_grey_mask`). OpenCV's random
generator is seeded per image, so results are deterministic.
Needs `opencv-python-headless` (`pip install -e .[baselines]`).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from fdm.baselines.common import BaselineData, class_scores, split_results
from fdm.errors import UserError


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise UserError("GrabCut needs OpenCV, which is not installed; run "
                        "`pip install -e .[baselines]` (opencv-python-headless)") from e
    return cv2


def init_rectangle(height: int, width: int, margin: float) -> tuple[int, int, int, int]:
    """The centred rectangle (x, y, w, h) leaving `margin` of each side outside."""
    if not 0 <= margin < 0.5:
        raise UserError(f"baselines.grabcut_margin={margin} must be in [0, 0.5)")
    mx, my = round(margin * width), round(margin * height)
    return mx, my, width - 2 * mx, height - 2 * my


def grabcut_masks(images: np.ndarray, margin: float, iters: int, seed: int = 0) -> np.ndarray:
    """uint8 images [N, S, S, 3] (RGB) -> foreground int32 [N, S, S] (1 = fg)."""
    cv2 = _cv2()
    n, h, w, _ = images.shape
    rect = init_rectangle(h, w, margin)
    out = np.zeros((n, h, w), np.int32)
    for i, image in enumerate(images):
        cv2.setRNGSeed(seed + i)
        mask = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        bgr = np.ascontiguousarray(image[..., ::-1])
        cv2.grabCut(bgr, mask, rect, bgd, fgd, int(iters), cv2.GC_INIT_WITH_RECT)
        out[i] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return out


def eval_images_at(config, size: int) -> np.ndarray:
    """The "eval" split's images loaded at `size`: uint8 [N, size, size, 3]."""
    from fdm.data import load_split_arrays
    resized = config.copy_and_resolve_references()
    resized.data.image_size = size
    return np.asarray(load_split_arrays(resized, "eval")["image"])


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """{0, 1} masks [N, G, G] -> int32 [N, size, size], resized like ground-truth masks."""
    from fdm.data.folder import resize_grey_mask
    return np.stack([resize_grey_mask(Image.fromarray((255 * m).astype(np.uint8)), size)
                     for m in masks])


def run_grabcut(config, data: BaselineData, seed: int = 0) -> dict:
    """GrabCut on every evaluation image, scored as fg/bg (no remapping)."""
    b, size = config.baselines, config.data.image_size
    grab_size = int(b.grabcut_size) or size
    images = data.evaluation.images if grab_size == size else eval_images_at(config, grab_size)
    pred = grabcut_masks(images, b.grabcut_margin, b.grabcut_iters, seed)
    return split_results(resize_masks(pred, size), data, class_scores)
