"""Image utilities: uint8 conversion, grids, PNG/npz writing, mask colouring.

Notation: images are numpy arrays [H, W, C] (C = 1 or 3) or batches
[N, H, W, C]; float images are in [-1, 1] (model space) or [0, 1] (display
space) as each function states; `labels` are integer region maps [..., H, W]
with values in [0, K); soft masks are [..., H, W, K] with channels summing to 1.
All functions are host-side numpy (they accept jax arrays too).
"""
from __future__ import annotations

import colorsys
import os
import tempfile

import numpy as np
from PIL import Image

# Distinct colours for labels 0..9 (0 = background is dark grey); more are
# generated on the golden-ratio hue circle.
_BASE_PALETTE = np.array([
    [64, 64, 64], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25],
    [145, 30, 180], [245, 130, 48], [70, 240, 240], [240, 50, 230], [170, 110, 40],
], dtype=np.uint8)


def to_uint8(x, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Maps floats in `value_range` to uint8 [0, 255] (clipped, rounded); same shape."""
    lo, hi = value_range
    x = (np.asarray(x, dtype=np.float32) - lo) / (hi - lo)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def default_palette(num_colors: int) -> np.ndarray:
    """[num_colors, 3] uint8 distinct colours; colour 0 is for the background."""
    if num_colors <= len(_BASE_PALETTE):
        return _BASE_PALETTE[:num_colors].copy()
    extra = []
    for i in range(num_colors - len(_BASE_PALETTE)):
        hue = (0.1 + i * 0.618033988749895) % 1.0
        extra.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.75, 0.95)])
    return np.concatenate([_BASE_PALETTE, np.array(extra, dtype=np.uint8)])


def make_grid(images, ncol: int | None = None, pad: int = 2, pad_value=0) -> np.ndarray:
    """Tiles images [N, H, W, C] into one [rows*(H+pad)+pad, ncol*(W+pad)+pad, C].

    `ncol` defaults to ceil(sqrt(N)); empty cells and borders get `pad_value`.
    The dtype of `images` is kept.
    """
    images = np.asarray(images)
    n, h, w, c = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = -(-n // ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value,
                   dtype=images.dtype)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def make_strip(images, pad: int = 2, pad_value=0) -> np.ndarray:
    """One row of images [T, H, W, C] (e.g. a refinement trajectory) -> [H+2pad, ..., C]."""
    return make_grid(images, ncol=len(images), pad=pad, pad_value=pad_value)


def _atomic_write(path: str, suffix: str, write) -> None:
    """Calls write(file object) on a temporary file in path's directory, then renames it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npz(path: str, **arrays) -> None:
    """np.savez(path, **arrays), creating parent directories; no partial file is left."""
    _atomic_write(path, ".npz", lambda f: np.savez(f, **arrays))


def save_png(path: str, image) -> None:
    """Writes [H, W], [H, W, 1] or [H, W, 3] as PNG, creating parent directories.

    uint8 images are written as they are; float images must be in [0, 1]
    (convert model-space [-1, 1] images with `to_uint8` first). The file is
    written to a temporary name and renamed, so no partial PNG is left behind.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image, (0.0, 1.0))
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    _atomic_write(path, ".png", lambda f: Image.fromarray(image).save(f, format="PNG"))


def colorize_mask(labels, palette=None) -> np.ndarray:
    """Integer labels [..., H, W] -> uint8 RGB [..., H, W, 3] via `palette` [K, 3]."""
    labels = np.asarray(labels).astype(np.int64)
    if palette is None:
        palette = default_palette(int(labels.max(initial=0)) + 1)
    palette = np.asarray(palette, dtype=np.uint8)
    return palette[np.clip(labels, 0, len(palette) - 1)]


def soft_mask_to_rgb(probs, palette=None) -> np.ndarray:
    """Soft masks [..., H, W, K] -> uint8 RGB [..., H, W, 3]: sum_k p_k * colour_k."""
    probs = np.asarray(probs, dtype=np.float32)
    if palette is None:
        palette = default_palette(probs.shape[-1])
    rgb = probs @ np.asarray(palette, dtype=np.float32)
    return np.round(np.clip(rgb, 0, 255)).astype(np.uint8)


def mask_channels(probs) -> np.ndarray:
    """Soft masks [H, W, K] -> K grey uint8 images [K, H, W, 3] (one per channel)."""
    probs = np.moveaxis(np.asarray(probs, dtype=np.float32), -1, 0)
    return np.repeat(to_uint8(probs, (0.0, 1.0))[..., None], 3, axis=-1)


def overlay(image, labels, alpha: float = 0.5, palette=None) -> np.ndarray:
    """Blends label colours over an image: (1-alpha)*image + alpha*colour, uint8.

    image: [..., H, W, 3] uint8, or float in [-1, 1]; labels: [..., H, W] int.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image)
    colours = colorize_mask(labels, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.round(blended).astype(np.uint8)
