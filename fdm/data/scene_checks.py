"""Checks of NeRF scene files, run by the readers of `fdm.data.nerf` before training.

Each function validates one thing a reader has just read and raises
`fdm.errors.UserError` with ONE line naming the file, the frame (Blender: index
and file_path; LLFF: row of poses_bounds.npy) and the fix:
  * `read_json`: the transforms file parses (else the line and column of the error).
  * `blender_meta`: `camera_angle_x` is a number in (0, pi) and `frames` a non-empty list.
  * `blender_pose`: a frame has a string `file_path` and a finite 4x4 or 3x4
    `transform_matrix` whose rotation part is a rotation.
  * `check_poses_bounds`: `poses_bounds.npy` is [N, 17], finite, with positive
    height/width/focal, 0 < near < far and rotations in every row.
  * `check_image_count`: one LLFF pose per image.
A camera-to-world rotation R [3, 3] must satisfy max |R^T R - I| <= ROTATION_TOL
and det R > 0 (`rotation_problem`). The released files are far inside the
tolerance: Blender lego (float32 JSON) 1.3e-6, LLFF fern 4.4e-16.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from fdm.errors import UserError

ROTATION_TOL = 1e-3
LLFF_COLUMNS = 17  # per image: 3x5 [R | t | hwf] row-major, then near, far
_BLENDER_LAYOUT = ("fix the file (a nerf_synthetic transforms file holds 'camera_angle_x', the "
                   "horizontal field of view in radians, and 'frames', a list of "
                   "{'file_path', 'transform_matrix'}) or re-copy it from the scene's download")
_RIGID_FIX = ("write a rigid camera-to-world matrix (rotation and translation, no scale or "
              "shear) for that frame, or remove the frame")
_LLFF_FIX = "re-export poses_bounds.npy with LLFF's imgs2poses.py or re-copy the scene"


def read_json(path: str) -> dict:
    """The JSON object in `path`; UserError with the line and column when it does not parse."""
    fix = "the file is damaged or truncated; re-copy it from the scene's download"
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column "
                        f"{e.colno}); {fix}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); {fix}") from e
    if not isinstance(meta, dict):
        raise UserError(f"{path} holds a JSON {type(meta).__name__}, not an object; "
                        f"{_BLENDER_LAYOUT}")
    return meta


def blender_meta(meta: dict, path: str) -> tuple[float, list]:
    """(camera_angle_x, frames) of a parsed transforms file, checked (see module doc)."""
    for key in ("camera_angle_x", "frames"):
        if key not in meta:
            raise UserError(f"{path} has no {key!r} key; {_BLENDER_LAYOUT}")
    angle, frames = meta["camera_angle_x"], meta["frames"]
    if not _is_number(angle) or not 0.0 < angle < math.pi:
        raise UserError(f"{path}: camera_angle_x = {angle!r} must be a number in (0, pi), the "
                        "horizontal field of view in radians; fix it or re-copy the file")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: 'frames' is {_describe(frames)}, expected a non-empty list; "
                        f"{_BLENDER_LAYOUT}")
    return float(angle), frames


def frame_label(index: int, frame: Any) -> str:
    """'frame 3 (file_path './train/r_3')', or 'frame 3' when it has no file_path."""
    if isinstance(frame, dict) and "file_path" in frame:
        return f"frame {index} (file_path {frame['file_path']!r})"
    return f"frame {index}"


def blender_pose(frame: Any, index: int, path: str) -> np.ndarray:
    """The checked camera-to-world matrix float64 [4, 4] of frame `index` of `path`
    (a 3x4 `transform_matrix` gets the row [0, 0, 0, 1])."""
    where = f"{path}: {frame_label(index, frame)}"
    if not isinstance(frame, dict):
        raise UserError(f"{where} is {_describe(frame)}, not an object; {_BLENDER_LAYOUT}")
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise UserError(f"{where} has no {key!r}; {_BLENDER_LAYOUT}")
    if not isinstance(frame["file_path"], str) or not frame["file_path"]:
        raise UserError(f"{where}: file_path must be a non-empty string, the image path "
                        "relative to the scene folder (e.g. './train/r_0'); fix that frame")
    matrix = _numeric_matrix(frame["transform_matrix"], where)
    if matrix.shape not in ((4, 4), (3, 4)):
        raise UserError(f"{where}: transform_matrix has shape {list(matrix.shape)}, expected "
                        "4x4 (or 3x4); write it as 4 rows of 4 numbers (camera to world)")
    if not np.isfinite(matrix).all():
        raise UserError(f"{where}: transform_matrix has non-finite values (nan or inf); "
                        f"{_RIGID_FIX}")
    if len(matrix) == 4 and np.abs(matrix[3] - [0, 0, 0, 1]).max() > ROTATION_TOL:
        raise UserError(f"{where}: transform_matrix has last row {matrix[3].tolist()}, "
                        f"expected [0, 0, 0, 1]; {_RIGID_FIX}")
    problem = rotation_problem(matrix[:3, :3])
    if problem:
        raise UserError(f"{where}: transform_matrix rotation is {problem}; {_RIGID_FIX}")
    return np.concatenate([matrix[:3], [[0.0, 0.0, 0.0, 1.0]]])


def rotation_problem(r: np.ndarray) -> str:
    """'' when r [3, 3] is a rotation within ROTATION_TOL (orthonormal columns, det > 0),
    else what is wrong with it."""
    error = float(np.abs(r.T @ r - np.eye(3)).max())
    if error > ROTATION_TOL:
        return f"not orthonormal (max |R^T R - I| = {error:.3g} > {ROTATION_TOL:g})"
    if np.linalg.det(r) < 0:
        return "a reflection (det R = -1), not a rotation"
    return ""


def check_poses_bounds(arr: np.ndarray, path: str) -> None:
    """UserError unless `arr` (the contents of poses_bounds.npy) is [N, 17] with N >= 1,
    finite, positive height/width/focal, 0 < near < far and a rotation in every row."""
    if arr.ndim != 2 or arr.shape[1] != LLFF_COLUMNS or not len(arr):
        raise UserError(f"{path} has shape {list(arr.shape)}, expected [N, 17] (one row per "
                        f"image: a 3x5 pose-hwf matrix, then near and far); {_LLFF_FIX}")
    poses, bounds = arr[:, :15].reshape(-1, 3, 5), arr[:, 15:]
    checks = [
        (~np.isfinite(arr).all(1), lambda i: "has non-finite values (nan or inf)"),
        ((poses[:, :, 4] <= 0).any(1),
         lambda i: f"has height/width/focal {poses[i, :, 4].tolist()}, all must be > 0"),
        ((bounds[:, 0] <= 0) | (bounds[:, 1] <= bounds[:, 0]),
         lambda i: f"has near/far bounds {bounds[i].tolist()}, expected 0 < near < far"),
        (np.array([bool(rotation_problem(p[:, :3])) for p in poses]),
         lambda i: f"has a rotation that is {rotation_problem(poses[i, :, :3])}"),
    ]
    for bad, problem in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{path}: row {i} (the pose of image {i} in sorted name order) "
                            f"{problem(i)}; {_LLFF_FIX}")


def check_image_count(image_paths: Sequence[str], num_poses: int, image_dir: str,
                      path: str) -> None:
    """UserError unless there is one image in `image_dir` per row of `path`."""
    if len(image_paths) != num_poses:
        raise UserError(f"{path} has {num_poses} poses but {image_dir} has "
                        f"{len(image_paths)} images; they must match one to one (row i = "
                        f"image i in sorted name order): restore the missing images or "
                        f"{_LLFF_FIX}")


def _numeric_matrix(value: Any, where: str) -> np.ndarray:
    """`value` as a float64 array; UserError when it is not a rectangular list of numbers."""
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: transform_matrix is not a matrix of numbers; write it as 4 "
                        "rows of 4 numbers (camera to world)") from e


def _is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages: 'an empty list', 'a str'."""
    if isinstance(value, list) and not value:
        return "an empty list"
    return f"a {type(value).__name__}"
