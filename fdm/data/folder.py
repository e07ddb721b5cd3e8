"""Image-folder datasets: DIR/images/*.{jpg,png,...} with optional DIR/masks/.

Layout: `data_dir/images/NAME.jpg` (or the images directly in `data_dir` when
it has no `images/` subdirectory) and, optionally, `data_dir/masks/NAME.png`
with the same stem: a grey-level figure/ground mask, > 127 = foreground.
When `masks/` exists every image must have a mask.

Every image is centre-cropped to a square (side = its shorter side) and resized
to S = `image_size` with an antialiasing filter (PIL Lanczos). Masks get the
same crop and an antialiased resize of the grey levels, then the > 127
threshold, so mask edges stay aligned with the image.

Output of `load_folder`: {'image': uint8 [N, S, S, 3], 'mask': int32 [N, S, S]
in {0, 1} (only with masks/)}; files in sorted name order.
"""
from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from PIL import Image

from fdm.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_MAX_WORKERS = 8


def load_folder(data_dir: str, image_size: int) -> dict[str, np.ndarray]:
    """All images (and masks, if `data_dir/masks` exists) of an image folder; see module doc."""
    image_paths = list_images(data_dir)
    mask_paths = _mask_paths(data_dir, image_paths)
    with concurrent.futures.ThreadPoolExecutor(min(_MAX_WORKERS, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: load_image(p, image_size), image_paths))
        masks = list(pool.map(lambda p: load_mask(p, image_size), mask_paths))
    out = {"image": np.stack(images)}
    if masks:
        out["mask"] = np.stack(masks)
    return out


def list_images(data_dir: str) -> list[str]:
    """Sorted image paths of `data_dir/images` (or of `data_dir` itself)."""
    if not data_dir:
        raise UserError("data.data_dir is not set; pass --config.data.data_dir=DIR with the "
                        "images in DIR/images")
    if not os.path.isdir(data_dir):
        raise UserError(f"data.data_dir {data_dir} does not exist; put the images in "
                        f"{os.path.join(data_dir, 'images')} or pass "
                        "--config.data.data_dir=...")
    image_dir = os.path.join(data_dir, "images")
    if not os.path.isdir(image_dir):
        image_dir = data_dir
    paths = _files_with_extensions(image_dir)
    if not paths:
        raise UserError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in {image_dir}; put the "
                        "images there or pass --config.data.data_dir=...")
    return paths


def _files_with_extensions(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise UserError(f"cannot list {directory} ({e.strerror}); fix its permissions or "
                        "pass another --config.data.data_dir=...") from e
    return [os.path.join(directory, n) for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]


def _mask_paths(data_dir: str, image_paths: list[str]) -> list[str]:
    """Mask path per image (same stem in data_dir/masks), or [] without masks/."""
    mask_dir = os.path.join(data_dir, "masks")
    if not os.path.isdir(mask_dir):
        return []
    by_stem = {os.path.splitext(os.path.basename(p))[0]: p
               for p in _files_with_extensions(mask_dir)}
    out = []
    for path in image_paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem not in by_stem:
            raise UserError(f"no mask for {path} in {mask_dir}; add {stem}.png there or "
                            f"remove {mask_dir} to train without masks")
        out.append(by_stem[stem])
    return out


def load_image(path: str, image_size: int) -> np.ndarray:
    """One image, centre-cropped and resized: uint8 [S, S, 3]."""
    image = _open(path).convert("RGB")
    return np.asarray(center_crop_resize(image, image_size), dtype=np.uint8)


def load_mask(path: str, image_size: int) -> np.ndarray:
    """One figure/ground mask, cropped and resized like its image: int32 [S, S] in {0, 1}."""
    grey = center_crop_resize(_open(path).convert("L"), image_size)
    return (np.asarray(grey) > 127).astype(np.int32)


def _open(path: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({type(e).__name__}); remove or replace "
                        "the file") from e
    return image


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Central square crop (shorter side) then antialiased resize to size x size."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    return image.resize((size, size), Image.Resampling.LANCZOS, box=box)
