"""Posed multiview scenes for NeRF: the `SceneData` type and on-disk readers.

`SceneData` holds one split of one scene: images float32 [N, H, W, 3] in
[0, 1], camera-to-world matrices c2w float32 [N, 4, 4] in the OpenGL / Blender
convention of `fdm.nerf.cameras` (camera looks down -z, +y up) and its
`geometry` (`fdm.nerf.views.ViewGeometry`): image size, one pinhole focal length in
pixels (principal point at the image centre), depth bounds near/far for
`fdm.nerf.render`, whether to composite on white and whether it is forward-facing.

Readers (any output resolution; the focal length follows the loaded width):
  * `load_nerf_synthetic`: Blender scenes (`transforms_{split}.json`, RGBA PNG
    composited on white), focal = W / 2 / tan(camera_angle_x / 2), near 2, far 6.
  * `load_llff`: forward-facing real scenes (`poses_bounds.npy` +
    `images_8/`), with the standard LLFF loader's processing: [down, right,
    back] -> [right, up, back] columns, scale so the nearest bound is
    1 / bd_factor, recentre on the average pose; near = 0.9 * min bound,
    far = max bound (world-space rendering; with `fdm.nerf.rays.ndc_rays`
    render in [0, 1] instead).
    Split selection is the standard hold-out: image i is held out ('test' or
    'val') iff i % llffhold == 0. With holdout='name' (default) the index i is
    the number in the file name when all names are `image<digits>` (as in the
    released `nerf_llff_data`), else the position in sorted order; with
    holdout='position' it is always the position among the images present.
    The shared development copy of fern lacks image000/008/016, exactly the
    standard held-out views, so there the 'name' hold-out is empty (a UserError
    says so) and holdout='position' is the documented fallback: it holds out
    image001/010/019 (positions 0, 8, 16 of the 17) and trains on the other 14.
Missing data raises `fdm.errors.UserError` naming the path and where to get it;
what is read is checked first (`fdm.data.scene_checks`: JSON syntax, keys, finite
rigid poses, LLFF bounds, one pose per image) and every image must decode and
have the size of the first, else a one-line `UserError` naming the file and frame.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Sequence, Tuple, Union

import flax
import numpy as np
from absl import logging
from PIL import Image

from fdm.data import scene_checks
from fdm.errors import UserError
from fdm.nerf.cameras import average_pose
from fdm.nerf.views import ViewGeometry

ImageSize = Optional[Union[int, Tuple[int, int]]]

NERF_DATA_URL = ("https://drive.google.com/drive/folders/128yBriW1IG_3NJ5Rp7APSTZsJqdJdfc1 "
                 "(NeRF project data: nerf_synthetic, nerf_llff_data)")
BLENDER_NEAR, BLENDER_FAR = 2.0, 6.0
HOLDOUT_SPLITS = ("test", "val")
LLFF_HOLDOUTS = ("name", "position")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")


@flax.struct.dataclass
class SceneData:
    """One split of a posed scene (see the module docstring for conventions).

    `geometry` (image size, focal, near/far, background, forward-facing) and `names`
    are static (not traced).
    """
    images: np.ndarray  # [N, H, W, 3] float32 in [0, 1]
    c2w: np.ndarray     # [N, 4, 4] float32, OpenGL camera-to-world
    geometry: ViewGeometry = flax.struct.field(pytree_node=False)
    names: Tuple[str, ...] = flax.struct.field(pytree_node=False, default=())


def output_size(image_size: ImageSize, height: int, width: int) -> Tuple[int, int]:
    """(H, W) to load an [height, width] image at: None keeps it, an int is the
    output height (width keeps the aspect ratio), a pair is (H, W) and must keep
    the aspect ratio within 2% (one focal length serves both axes)."""
    if image_size is None:
        return height, width
    if isinstance(image_size, int):
        return image_size, max(1, round(width * image_size / height))
    out_h, out_w = (int(s) for s in image_size)
    if abs((out_w / width) / (out_h / height) - 1.0) > 0.02:
        raise UserError(f"image size {out_h}x{out_w} changes the {height}x{width} aspect "
                        "ratio; pick a size with the same aspect ratio")
    return out_h, out_w


def resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resizes float [h, w, C] to size (H, W): box filter down, bilinear up."""
    if image.shape[:2] == tuple(size):
        return image
    down = size[0] * size[1] < image.shape[0] * image.shape[1]
    method = Image.Resampling.BOX if down else Image.Resampling.BILINEAR
    channels = [np.asarray(Image.fromarray(image[..., c]).resize(size[::-1], method))
                for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, -1), 0.0, 1.0)


def read_image(path: str, white_background: bool, frame: str = "") -> np.ndarray:
    """Float32 [h, w, 3] in [0, 1]; RGBA is composited on white or black.

    `frame` says which entry of the scene lists the image (for the error messages).
    """
    where = f" for {frame}" if frame else ""
    if not os.path.isfile(path):
        raise UserError(f"image not found: {path}{where}; the scene folder is incomplete, "
                        f"re-copy it from {NERF_DATA_URL}")
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}{where} ({type(e).__name__}: {e}); replace "
                        f"the file with the scene's original from {NERF_DATA_URL}") from e
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return rgb * alpha + (1.0 - alpha) * float(white_background)


def _load_images(paths: Sequence[str], image_size: ImageSize, white_background: bool,
                 frames: Sequence[str]) -> np.ndarray:
    """Images float32 [N, H, W, 3] at the output size of the first one; all must have its
    size. `frames[i]` names the entry that lists paths[i] (for the error messages)."""
    first = read_image(paths[0], white_background, frames[0])
    size = output_size(image_size, *first.shape[:2])
    images = [resize(first, size)]
    for path, frame in zip(paths[1:], frames[1:]):
        image = read_image(path, white_background, frame)
        if image.shape != first.shape:
            raise UserError(f"image {path} for {frame} is {image.shape[0]}x{image.shape[1]} "
                            f"but {paths[0]} is {first.shape[0]}x{first.shape[1]}; all images of "
                            "a scene must have one size (one focal length): resize or replace it")
        images.append(resize(image, size))
    return np.stack(images).astype(np.float32)


def load_nerf_synthetic(scene_dir: str, split: str = "train", image_size: ImageSize = None,
                        white_background: bool = True,
                        max_images: Optional[int] = None) -> SceneData:
    """A Blender scene of nerf_synthetic (e.g. `.../nerf_synthetic/lego`).

    Args:
      scene_dir: folder with `transforms_{split}.json` and the images it lists.
      split: 'train', 'val' or 'test'.
      image_size: see `output_size` (e.g. 64 for 64x64 from 800x800 or 200x200).
      white_background: composite RGBA on white (standard) or black.
      max_images: keep only the first frames (fast tests).
    """
    path = os.path.join(scene_dir, f"transforms_{split}.json")
    if not os.path.isfile(path):
        raise UserError(f"NeRF synthetic split file not found: {path}; point data.data_dir at a "
                        f"scene folder of nerf_synthetic (e.g. .../nerf_synthetic/lego) from "
                        f"{NERF_DATA_URL}")
    angle, frames = scene_checks.blender_meta(scene_checks.read_json(path), path)
    c2w = np.stack([scene_checks.blender_pose(fr, i, path) for i, fr in enumerate(frames)])
    frames = frames[:max_images]
    paths = [os.path.join(scene_dir, _with_ext(fr["file_path"])) for fr in frames]
    labels = [f"{scene_checks.frame_label(i, fr)} of {path}" for i, fr in enumerate(frames)]
    images = _load_images(paths, image_size, white_background, labels)
    c2w = c2w[:len(frames)].astype(np.float32)
    height, width = images.shape[1:3]
    focal = 0.5 * width / np.tan(0.5 * angle)
    geometry = ViewGeometry(height, width, float(focal), BLENDER_NEAR, BLENDER_FAR,
                            white_background)
    return SceneData(images, c2w, geometry, tuple(os.path.basename(p) for p in paths))


def _with_ext(file_path: str) -> str:
    """`./train/r_0` -> `train/r_0.png` (the json omits the extension)."""
    path = os.path.normpath(file_path)
    return path if os.path.splitext(path)[1] else path + ".png"


def llff_to_opengl(poses: np.ndarray) -> np.ndarray:
    """LLFF [..., 3, 4+] with [down, right, back, centre] columns -> [right, up, back, centre]."""
    return np.concatenate([poses[..., 1:2], -poses[..., 0:1], poses[..., 2:4]], axis=-1)


def recenter_poses(c2w: np.ndarray) -> np.ndarray:
    """LLFF `recenter_poses`: c2w [N, 4, 4] expressed in the frame of their average pose."""
    avg = np.asarray(average_pose(c2w.astype(np.float32)), np.float64)
    return np.linalg.inv(avg) @ c2w


def normalize_llff_poses(c2w: np.ndarray, bounds: np.ndarray, recenter: bool,
                         bd_factor: Optional[float]):
    """Standard LLFF normalisation: scale so min bound = 1 / bd_factor, then recentre.

    Returns (c2w [N, 4, 4], bounds [N, 2]), computed over all views of the scene.
    """
    c2w = c2w.copy()
    if bd_factor:
        scale = 1.0 / (bounds.min() * bd_factor)
        c2w[:, :3, 3] *= scale
        bounds = bounds * scale
    if recenter:
        c2w = recenter_poses(c2w)
    return c2w, bounds


def read_poses_bounds(scene_dir: str):
    """`poses_bounds.npy` -> (c2w [N, 4, 4] OpenGL, bounds [N, 2], hwf [N, 3]) in float64,
    checked by `scene_checks.check_poses_bounds`."""
    path = os.path.join(scene_dir, "poses_bounds.npy")
    if not os.path.isfile(path):
        raise UserError(f"LLFF poses not found: {path}; point data.data_dir at a scene folder "
                        f"of nerf_llff_data (e.g. .../nerf_llff_data/fern) from {NERF_DATA_URL}")
    try:
        arr = np.asarray(np.load(path), np.float64)
    except (OSError, ValueError, EOFError, TypeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); the file is damaged: "
                        f"re-copy it from {NERF_DATA_URL}") from e
    scene_checks.check_poses_bounds(arr, path)
    poses = arr[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(arr), 1, 1))
    c2w[:, :3, :4] = llff_to_opengl(poses[:, :, :4])
    return c2w, arr[:, 15:17], poses[:, :, 4]


def llff_image_paths(scene_dir: str, images_dir: str) -> list:
    """Image files of `scene_dir/images_dir` in sorted order."""
    folder = os.path.join(scene_dir, images_dir)
    if not os.path.isdir(folder):
        raise UserError(f"LLFF image folder not found: {folder}; copy {images_dir}/ of the scene "
                        f"from {NERF_DATA_URL}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(_IMAGE_EXTS))
    return [os.path.join(folder, n) for n in names]


def original_indices(paths: Sequence[str]) -> np.ndarray:
    """Index of each view in the full capture: the number in `image<digits>` names,
    else the position in sorted order (see the module docstring)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    matches = [re.fullmatch(r"image(\d+)", s) for s in stems]
    if all(matches):
        return np.array([int(m.group(1)) for m in matches])
    return np.arange(len(paths))


def llff_split_mask(indices: np.ndarray, split: str, llffhold: int) -> np.ndarray:
    """Boolean mask of the views in `split` ('train', 'test'/'val', 'all')."""
    held_out = (indices % llffhold == 0) if llffhold > 0 else np.zeros(len(indices), bool)
    if split == "all":
        return np.ones(len(indices), bool)
    if split == "train":
        return ~held_out
    if split in HOLDOUT_SPLITS:
        return held_out
    raise UserError(f"unknown LLFF split {split!r}; use 'train', 'test' (or 'val') or 'all'")


def holdout_indices(paths: Sequence[str], holdout: str) -> np.ndarray:
    """The index each view is held out by: 'name' = `original_indices`, 'position' =
    the position in sorted order (see the module docstring)."""
    if holdout not in LLFF_HOLDOUTS:
        raise UserError(f"data.llff_holdout={holdout!r}; use one of {list(LLFF_HOLDOUTS)}")
    return original_indices(paths) if holdout == "name" else np.arange(len(paths))


def load_llff(scene_dir: str, split: str = "train", image_size: ImageSize = None,
              llffhold: int = 8, images_dir: str = "images_8", recenter: bool = True,
              bd_factor: Optional[float] = 0.75, holdout: str = "name") -> SceneData:
    """A forward-facing LLFF scene (e.g. `.../nerf_llff_data/fern`).

    Args:
      scene_dir: folder with `poses_bounds.npy` and `images_dir/`.
      split: 'train', 'test' / 'val' (every llffhold-th view), or 'all'.
      image_size: see `output_size` (e.g. (378, 504) or 64).
      llffhold: hold-out period (8 standard; 0 holds nothing out).
      recenter, bd_factor: the standard loader's pose normalisation.
      holdout: 'name' (standard) or 'position' (fallback for partial copies).
    """
    c2w, bounds, hwf = read_poses_bounds(scene_dir)
    paths = llff_image_paths(scene_dir, images_dir)
    scene_checks.check_image_count(paths, len(c2w), os.path.join(scene_dir, images_dir),
                                   os.path.join(scene_dir, "poses_bounds.npy"))
    c2w, bounds = normalize_llff_poses(c2w, bounds, recenter, bd_factor)
    keep = llff_split_mask(holdout_indices(paths, holdout), split, llffhold)
    if not keep.any():
        raise UserError(f"LLFF split {split!r} of {scene_dir} is empty: its held-out views "
                        f"(index % {llffhold} == 0) are not in this copy; set "
                        "data.llff_holdout='position' to hold out by position instead, or use "
                        "the full download")
    paths = [p for p, k in zip(paths, keep) if k]
    if holdout == "position" and split in HOLDOUT_SPLITS:
        logging.warning("LLFF: held out %s by position (data.llff_holdout='position'), not "
                        "by the standard file number %% %d", ", ".join(
                            os.path.basename(p) for p in paths), llffhold)
    rows = [f"pose row {i} of {os.path.join(scene_dir, 'poses_bounds.npy')}"
            for i in np.flatnonzero(keep)]
    images = _load_images(paths, image_size, False, rows)
    height, width = images.shape[1:3]
    focal = hwf[0, 2] * width / hwf[0, 1]
    geometry = ViewGeometry(height, width, float(focal), float(bounds.min() * 0.9),
                            float(bounds.max()), False, forward_facing=True)
    return SceneData(images, c2w[keep].astype(np.float32), geometry,
                     tuple(os.path.basename(p) for p in paths))
