"""Image utilities: uint8 conversion, grids, PNG/npz writing, mask colouring.

Notation: images are numpy arrays [H, W, C] (C = 1 or 3) or batches
[N, H, W, C]; float images are in [-1, 1] (model space) or [0, 1] (display
space) as each function states; `labels` are integer region maps [..., H, W]
with values in [0, K); soft masks are [..., H, W, K] with channels summing to 1.
All functions are host-side numpy (they accept jax arrays too).
"""
from __future__ import annotations

import colorsys
import math
import os
import tempfile
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def upscale_nearest(images, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer `factor` on both spatial axes.

    images: [..., H, W, C] -> [..., H*factor, W*factor, C] (each pixel becomes a
    factor x factor block, i.e. np.kron with a ones block); dtype kept.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"upscale factor must be an integer >= 1, got {factor}")
    images = np.asarray(images)
    if factor == 1:
        return images
    return np.repeat(np.repeat(images, factor, axis=-3), factor, axis=-2)


def upscale_factor(tile_size: int, min_tile: int) -> int:
    """Smallest integer f >= 1 with tile_size * f >= min_tile, i.e. ceil(min_tile / tile_size)."""
    return max(1, math.ceil(min_tile / tile_size))


def _title_font(size: int):
    """PIL's built-in default font (no font files, no network) at `size` px where supported."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def title_strip(titles: Sequence[str], column_width: int, pad: int = 4, font_size: int = 14,
                background: int = 255, foreground: int = 0) -> np.ndarray:
    """A header of K centred titles for K columns laid out as by `make_grid(ncol=K, pad=pad)`.

    Returns uint8 [height, K*(column_width+pad)+pad, 3] (height follows the font:
    the line height plus `pad` above and below); text in grey level `foreground`
    on grey level `background`. Titles wider than their column are cut with "..".
    """
    font = _title_font(font_size)
    ascent, descent = font.getmetrics()
    height = ascent + descent + 2 * pad
    width = len(titles) * (column_width + pad) + pad
    canvas = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    for k, title in enumerate(titles):
        text = str(title)
        while len(text) > 1 and draw.textlength(text, font=font) > column_width:
            text = text[:-3] + ".." if len(text) > 3 else text[:-1]
        x0 = pad + k * (column_width + pad)
        x = x0 + max(0.0, (column_width - draw.textlength(text, font=font)) / 2)
        draw.text((x, pad), text, fill=(foreground,) * 3, font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def titled_columns(columns: Sequence[np.ndarray], titles: Sequence[str], min_tile: int = 128,
                   pad: int = 4, font_size: int = 14, background: int = 255) -> np.ndarray:
    """A readable figure: one example per row, one titled column per kind of image.

    columns: K uint8 arrays [N, H, W, 3] (or [N, H, W, 1], shown grey) of the same
    N, H, W; column k holds the k-th view of each of the N examples. Every tile is
    upscaled with `upscale_nearest` by f = upscale_factor(min(H, W), min_tile)
    (32 px tiles with min_tile=128 -> 4x; tiles already >= min_tile stay 1x),
    laid out with `make_grid(ncol=K, pad=pad)` on `background`, and topped by a
    `title_strip` of `titles` (black text on a white strip by default; white text
    for a dark `background`).

    Returns uint8 [header + N*(H*f+pad)+pad, K*(W*f+pad)+pad, 3], with
    header = title_strip(titles, W*f, pad, font_size).shape[0].
    Raises ValueError for no columns, a title count other than K, or columns
    that are not uint8 or whose shapes differ or are not [N, H, W, 1 or 3].
    """
    if len(columns) == 0:
        raise ValueError("titled_columns needs at least one column")
    if len(titles) != len(columns):
        raise ValueError(f"titled_columns got {len(columns)} columns but {len(titles)} titles")
    columns = [np.asarray(c) for c in columns]
    shapes = [c.shape for c in columns]
    if (any(len(s) != 4 or s[-1] not in (1, 3) for s in shapes)
            or len(set(s[:3] for s in shapes)) != 1):
        raise ValueError("titled_columns needs columns of one shape [N, H, W, 1 or 3]; got "
                         + ", ".join(f"{t!r}: {s}" for t, s in zip(titles, shapes)))
    if any(c.dtype != np.uint8 for c in columns):
        raise ValueError("titled_columns needs uint8 columns (convert with to_uint8); got "
                         + ", ".join(f"{t!r}: {c.dtype}" for t, c in zip(titles, columns)))
    columns = [np.broadcast_to(c, c.shape[:3] + (3,)) if c.shape[-1] == 1 else c
               for c in columns]
    _, h, w, _ = shapes[0]
    factor = upscale_factor(min(h, w), min_tile)
    tiles = upscale_nearest(np.stack(columns, axis=1), factor)     # [N, K, H*f, W*f, 3]
    body = make_grid(tiles.reshape((-1,) + tiles.shape[2:]), ncol=len(columns), pad=pad,
                     pad_value=background)
    header = title_strip(titles, w * factor, pad=pad, font_size=font_size,
                         background=background,
                         foreground=0 if background >= 128 else 255)
    return np.concatenate([header, body], axis=0)


def atomic_write(path: str, suffix: str, write) -> None:
    """Calls write(binary file object) on a temporary file in path's directory (created
    if missing), then renames it to path: readers never see a half-written file."""
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
    atomic_write(path, ".npz", lambda f: np.savez(f, **arrays))


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
    atomic_write(path, ".png", lambda f: Image.fromarray(image).save(f, format="PNG"))


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
