"""Image-folder datasets, and the preprocessing every local reader shares.

The one place where images and masks are decoded, cropped and resized
(`load_image`, `load_mask`, `resize_grey_mask`, `resize_label_map`), read in
parallel and stacked (`load_examples`), and where a missing file of an official
archive becomes a one-line `UserError` (`DataDir.require`). Scaling to [-1, 1] and
flips happen at batch time in `fdm.data.pipeline`.

Image folders: DIR/images/*.{jpg,png,...} with optional DIR/masks/.

Layout: `data_dir/images/NAME.jpg` (or the images directly in `data_dir` when
it has no `images/` subdirectory) and, optionally, `data_dir/masks/NAME.png`
with the same stem: a grey-level figure/ground mask, > 127 = foreground.
When `masks/` exists every image must have a mask.

Every image is centre-cropped to a square (side = its shorter side) and resized
to S = `image_size` with an antialiasing filter (PIL Lanczos). Masks get the
same crop and an antialiased resize of the grey levels, then the > 127
threshold, so mask edges stay aligned with the image. Label maps (class ids)
get the same crop; each class's indicator is resized with the same filter and
every pixel takes the class of largest weight (for two classes this is the
> 0.5 threshold of the binary case).

Output of `load_folder`: {'image': uint8 [N, S, S, 3], 'mask': int32 [N, S, S]
in {0, 1} (only with masks/)}; files in sorted name order.
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image

from fdm.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_MAX_WORKERS = 8


def load_folder(data_dir: str, image_size: int) -> dict[str, np.ndarray]:
    """All images (and masks, if `data_dir/masks` exists) of an image folder; see module doc."""
    image_paths = list_images(data_dir)
    mask_paths = _mask_paths(data_dir, image_paths) or [None] * len(image_paths)

    def example(paths):
        image_path, mask_path = paths
        out = {"image": load_image(image_path, image_size)}
        if mask_path is not None:
            out["mask"] = load_mask(mask_path, image_size)
        return out

    return load_examples(example, list(zip(image_paths, mask_paths)))


def load_examples(example: Callable[[object], dict[str, np.ndarray]],
                  items: Sequence) -> dict[str, np.ndarray]:
    """`example(item)` for every item (in a thread pool), stacked: {key: [N, ...]}."""
    if not items:
        raise ValueError("load_examples needs at least one item")
    workers = min(_MAX_WORKERS, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(example, items))
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class DataDir(NamedTuple):
    """A dataset root folder and the config key that names it (for the error messages)."""
    path: str
    key: str = "data.data_dir"

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def require(self, *parts: str, what: str, source: str) -> str:
        """join(*parts) if it exists, else a one-line UserError: what is missing, where to
        get it, which config key to set."""
        if not self.path or not os.path.isdir(self.path):
            state = f"{self.path} does not exist" if self.path else "is not set"
            raise UserError(f"{self.key} {state}; get {what} from {source} and pass "
                            f"--config.{self.key}=DIR")
        path = self.join(*parts)
        if not os.path.exists(path):
            raise UserError(f"{what} not found: {path} is missing; get it from {source} "
                            f"and extract it under {self.path}, or set --config.{self.key}=DIR "
                            "to your copy")
        return path


def check_choice(key: str, value, choices: Sequence):
    """`value` if it is one of `choices`, else a one-line UserError naming config key `key`."""
    if value not in choices:
        raise UserError(f"{key}={value!r} is not supported; use one of {list(choices)}")
    return value


def split_name(split: str, eval_split: str, eval_splits: Sequence[str]) -> str:
    """The dataset's own split for the registry split: "train", or data.eval_split
    (checked against `eval_splits`) for "eval"."""
    if split == "train":
        return "train"
    return check_choice("data.eval_split", eval_split, eval_splits)


def read_lines(path: str) -> list[str]:
    """Non-empty stripped lines of a text file."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


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
    image = open_image(path).convert("RGB")
    return np.asarray(center_crop_resize(image, image_size), dtype=np.uint8)


def load_mask(path: str, image_size: int) -> np.ndarray:
    """One figure/ground mask, cropped and resized like its image: int32 [S, S] in {0, 1}."""
    return resize_grey_mask(open_image(path).convert("L"), image_size)


def resize_grey_mask(grey: Image.Image, image_size: int) -> np.ndarray:
    """Grey-level mask (mode L, > 127 = foreground) cropped and resized: int32 [S, S] in {0, 1}."""
    return (np.asarray(center_crop_resize(grey, image_size)) > 127).astype(np.int32)


def resize_label_map(labels: np.ndarray, image_size: int) -> np.ndarray:
    """Class-id map int [H, W] cropped and resized like its image: int32 [S, S] (module doc)."""
    classes = np.unique(labels)
    weights = [np.asarray(center_crop_resize(Image.fromarray((labels == c).astype(np.float32)),
                                             image_size)) for c in classes]
    return classes[np.argmax(weights, axis=0)].astype(np.int32)


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [N, H, W, 3] cropped and resized like `load_image` -> uint8 [N, S, S, 3]."""
    if images.shape[1:3] == (image_size, image_size):
        return images.astype(np.uint8)
    return np.stack([np.asarray(center_crop_resize(Image.fromarray(x), image_size), np.uint8)
                     for x in images])


def open_image(path: str) -> Image.Image:
    """A decoded PIL image; a UserError naming the file when it cannot be read."""
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
