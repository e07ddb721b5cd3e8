"""Co3D v2 (Common Objects in 3D, Reizenstein et al. 2021) sequences with cameras, read from
the published layout, and the (context, target, novel) triples of seed 003 Sec. 4.1 (Co3D
hydrants). Nothing is downloaded: get the data with `download_dataset.py` of CO3D_SOURCE.

Layout (github.com/facebookresearch/co3d README, "Dataset format"), under the root:
  <category>/frame_annotations.jgz      gzipped JSON list of FrameAnnotation
  <category>/sequence_annotations.jgz   (not read: nothing here needs it)
  <category>/set_lists/set_lists_<subset>.json
                                        {"train" | "val" | "test": [[sequence_name,
                                        frame_number, image_path], ...]}
  <category>/<sequence_name>/images/frameXXXXXX.jpg
A FrameAnnotation (`co3d/dataset/data_types.py`) is {"sequence_name", "frame_number",
"frame_timestamp", "image": {"path" (relative to the root), "size": [H, W]}, "viewpoint":
{"R" 3x3, "T" [3], "focal_length" [2], "principal_point" [2], "intrinsics_format"}, ...};
frame_number need not match the file name's number, so images are found through
image.path. A split of a subset is the frames its set list names, grouped by sequence and
ordered by frame_number (sequences sorted by name). v2 subsets: fewview_dev (the one the
DFM code uses, with its "train" and "val" lists), fewview_test, manyview_dev_0/1,
manyview_test_0.

Cameras (`pytorch3d_to_opengl`). Co3D stores PyTorch3D cameras: X_view = X_world @ R + T
(row vectors; view axes +X left, +Y up, +Z into the scene), then NDC
x_ndc = f_x X/Z + p_x, y_ndc = f_y Y/Z + p_y with +x_ndc left and +y_ndc up. The pixel
scale of NDC depends on viewpoint.intrinsics_format (FrameAnnotation's comment; the
conversion of pytorch3d `implicitron/dataset/json_index_dataset.py` `_get_pytorch3d_camera`):
  ndc_isotropic          (PyTorch3D >= 0.5 NDC)           r = (min(H, W) / 2) on both axes
  ndc_norm_image_bounds  (legacy, the field's default)    r = (W / 2, H / 2)
(each frame's own field is followed)
and in the screen space of PyTorch3D's docs (pytorch3d.org/docs/cameras: (0, 0) the top-left
corner of the top-left pixel, (W, H) the bottom-right corner, the pixel convention of
`fdm.nerf.rays`): u = W/2 - r_x x_ndc, v = H/2 - r_y y_ndc. Hence, in pixels of the H x W
frame, (fx, fy) = r * focal_length and (cx, cy) = (W/2, H/2) - r * principal_point, and with
X_view = (-x, y, -z) for OpenGL camera coordinates (x, y, z) (left -> right, forward ->
back): c2w = [R diag(-1, 1, -1) | -R T] (the camera centre is -R T). Frames are then
centre-cropped and resized (`fdm.data.posed_sequences.crop_resize_intrinsics`).

World frame: Co3D's per-sequence COLMAP frame and scale. normalize_radius > 0 moves the
point nearest every optical axis to the origin and scales the median camera distance to
normalize_radius (`posed_sequences.normalize_object_centric`), a depth-free stand-in for
DFM's per-sequence depth-median scale (their precomputed scale_dict.pt); 0 keeps Co3D's
frame.

Triples: DFM's Co3D sampling (`data_io/co3d_new.py`: context_min_distance 20,
context_max_distance 40 with one context view, random flip) via
`posed_sequences.sample_triples`.

Errors: a missing root, category, set list, split or image, and a malformed annotation file
raise a one-line `fdm.errors.UserError` naming the path and where to get the data.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import zlib
from typing import Any, Optional, Sequence

import numpy as np

from fdm.data import posed_sequences as ps
from fdm.data import scene_checks
from fdm.errors import UserError

CO3D_SOURCE = ("https://github.com/facebookresearch/co3d (Co3D v2: python "
               "./co3d/download_dataset.py --download_folder DIR)")
INTRINSICS_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")
DEFAULT_FORMAT = "ndc_norm_image_bounds"      # FrameAnnotation's default when absent
DFM_MIN_GAP, DFM_MAX_GAP = 20, 40
# OpenGL camera axes in PyTorch3D view axes: right = -left, up = up, back = -forward.
PYTORCH3D_TO_OPENGL = np.diag([-1.0, 1.0, -1.0])


_DAMAGED = ("the file is damaged or not a Co3D v2 annotation file: re-download the category "
            f"from {CO3D_SOURCE}")


def category_dir(root: str, category: str, key: str = "") -> str:
    """root/category, checked: a one-line UserError when the root or the category is missing
    (key: the config key that names the root, for the message)."""
    set_it = f" and pass --config.{key}=DIR" if key else ""
    if not root or not os.path.isdir(root):
        state = f"{root} does not exist" if root else "is not set"
        raise UserError(f"Co3D v2 root {state}; download Co3D v2 (category {category!r}) "
                        f"from {CO3D_SOURCE} into DIR{set_it}")
    path = os.path.join(root, category)
    if not os.path.isfile(os.path.join(path, "frame_annotations.jgz")):
        raise UserError(f"Co3D v2 category {category!r} not found: "
                        f"{os.path.join(path, 'frame_annotations.jgz')} is missing; download "
                        f"that category from {CO3D_SOURCE} into {root}")
    return path


def _read_jgz(path: str) -> Any:
    """The JSON value of a gzipped JSON file; one-line UserError when it does not parse."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid gzipped JSON ({e.msg} at line {e.lineno}, "
                        f"column {e.colno}); {_DAMAGED}") from e
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); "
                        f"{_DAMAGED}") from e


def _numbers(value: Any, shape: tuple, where: str, field: str, path: str) -> np.ndarray:
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != shape or not np.isfinite(arr).all():
        raise UserError(f"{path}: {where} has {field} = {value!r:.80}, expected "
                        f"{'x'.join(map(str, shape))} finite numbers; {_DAMAGED}")
    return arr


def _frame_record(entry: Any, index: int, path: str) -> dict:
    """One checked FrameAnnotation as {'sequence', 'frame_number', 'image_path', 'size' (H, W),
    'R', 'T', 'focal_length', 'principal_point', 'intrinsics_format'}."""
    where = f"frame annotation {index}"
    if not isinstance(entry, dict):
        raise UserError(f"{path}: {where} is a {type(entry).__name__}, not an object; "
                        f"{_DAMAGED}")
    for key, kind in (("sequence_name", str), ("frame_number", int), ("image", dict),
                      ("viewpoint", dict)):
        if not isinstance(entry.get(key), kind) or isinstance(entry[key], bool):
            raise UserError(f"{path}: {where} has no {key!r} ({kind.__name__}); "
                            f"{_DAMAGED}")
    where = (f"frame annotation {index} (sequence {entry['sequence_name']!r}, frame "
             f"{entry['frame_number']!r})")
    image, view = entry["image"], entry["viewpoint"]
    if not isinstance(image.get("path"), str):
        raise UserError(f"{path}: {where} has no image.path; {_DAMAGED}")
    size = _numbers(image.get("size"), (2,), where, "image.size", path)
    rot = _numbers(view.get("R"), (3, 3), where, "viewpoint.R", path)
    problem = scene_checks.rotation_problem(rot)
    if problem:
        raise UserError(f"{path}: {where} has viewpoint.R {problem}; {_DAMAGED}")
    fmt = view.get("intrinsics_format", DEFAULT_FORMAT)
    if not isinstance(fmt, str) or fmt.lower() not in INTRINSICS_FORMATS:
        raise UserError(f"{path}: {where} has intrinsics_format {fmt!r}, expected one of "
                        f"{list(INTRINSICS_FORMATS)}; {_DAMAGED}")
    focal = _numbers(view.get("focal_length"), (2,), where, "viewpoint.focal_length", path)
    if (size <= 0).any() or (focal <= 0).any():
        raise UserError(f"{path}: {where} has image size {size.tolist()} and focal_length "
                        f"{focal.tolist()}, all must be > 0; {_DAMAGED}")
    translation = _numbers(view.get("T"), (3,), where, "viewpoint.T", path)
    centre = _numbers(view.get("principal_point"), (2,), where, "viewpoint.principal_point",
                      path)
    return {"sequence": entry["sequence_name"], "frame_number": entry["frame_number"],
            "image_path": image["path"], "size": size.astype(np.int64), "R": rot,
            "T": translation, "focal_length": focal, "principal_point": centre,
            "intrinsics_format": fmt.lower()}


@functools.lru_cache(maxsize=2)
def _frame_annotations(path: str, stamp: tuple) -> dict:
    """{(sequence, frame_number): record} of a frame_annotations.jgz (cached per file
    version `stamp` = (mtime, size))."""
    entries = _read_jgz(path)
    if not isinstance(entries, list):
        raise UserError(f"{path} holds a JSON {type(entries).__name__}, expected a list of "
                        f"frame annotations; {_DAMAGED}")
    records = {}
    for i, entry in enumerate(entries):
        record = _frame_record(entry, i, path)
        records[(record["sequence"], record["frame_number"])] = record
    return records


def read_frame_annotations(root: str, category: str) -> dict:
    """{(sequence_name, frame_number): checked record} of a category (see `_frame_record`)."""
    path = os.path.join(category_dir(root, category), "frame_annotations.jgz")
    stat = os.stat(path)
    return _frame_annotations(path, (stat.st_mtime_ns, stat.st_size))


def read_set_list(root: str, category: str, subset: str) -> dict[str, list]:
    """{split: [(sequence_name, frame_number, image_path), ...]} of
    root/category/set_lists/set_lists_<subset>.json."""
    folder_ = os.path.join(category_dir(root, category), "set_lists")
    path = os.path.join(folder_, f"set_lists_{subset}.json")
    if not os.path.isfile(path):
        present = sorted(n[len("set_lists_"):-len(".json")] for n in (
            os.listdir(folder_) if os.path.isdir(folder_) else [])
            if n.startswith("set_lists_") and n.endswith(".json"))
        raise UserError(f"Co3D v2 set list not found: {path} is missing (subsets present: "
                        f"{present}); pick one of them or download the category's v2 "
                        f"annotations from {CO3D_SOURCE}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column "
                        f"{e.colno}); {_DAMAGED}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); "
                        f"{_DAMAGED}") from e
    if not isinstance(meta, dict):
        raise UserError(f"{path} holds a JSON {type(meta).__name__}, expected an object "
                        f"{{split: [[sequence_name, frame_number, image_path], ...]}}; "
                        f"{_DAMAGED}")
    for split, entries in meta.items():
        if not isinstance(entries, list) or not all(
                isinstance(e, list) and len(e) in (2, 3) and isinstance(e[0], str)
                and isinstance(e[1], int) for e in entries):
            raise UserError(f"{path}: split {split!r} is not a list of [sequence_name, "
                            f"frame_number, image_path]; {_DAMAGED}")
    return meta


def sequence_frames(root: str, category: str, subset: str = "fewview_dev",
                    split: str = "train") -> dict[str, list[int]]:
    """{sequence_name: sorted frame numbers} of a split of a subset, sequences sorted."""
    meta = read_set_list(root, category, subset)
    if split not in meta:
        raise UserError(f"Co3D v2 split {split!r} is not in set_lists_{subset}.json of "
                        f"{os.path.join(root, category)} (it has {sorted(meta)}); use one "
                        "of those")
    frames: dict[str, set] = {}
    for entry in meta[split]:
        frames.setdefault(entry[0], set()).add(int(entry[1]))
    return {name: sorted(frames[name]) for name in sorted(frames)}


def pytorch3d_to_opengl(rotation: np.ndarray, translation: np.ndarray, focal_length: np.ndarray,
                        principal_point: np.ndarray, size_hw: np.ndarray,
                        intrinsics_format="ndc_isotropic"):
    """PyTorch3D NDC cameras -> (c2w [..., 4, 4] OpenGL, focal [..., 2], principal_point
    [..., 2] in pixels of the H x W frame) (module doc).

    Args:
      rotation: R [..., 3, 3], X_view = X_world @ R + T; translation: T [..., 3].
      focal_length, principal_point: [..., 2] in NDC of `intrinsics_format`.
      size_hw: (H, W) [..., 2] of the frames.
      intrinsics_format: 'ndc_isotropic' or 'ndc_norm_image_bounds' (or an array of them).
    """
    rotation = np.asarray(rotation, np.float64)
    translation = np.asarray(translation, np.float64)
    size_wh = np.asarray(size_hw, np.float64)[..., ::-1]
    half = size_wh / 2.0
    isotropic = np.asarray(np.char.lower(np.asarray(intrinsics_format, str)) ==
                           "ndc_isotropic")[..., None]
    rescale = np.where(isotropic, half.min(-1, keepdims=True), half)
    focal = np.asarray(focal_length, np.float64) * rescale
    centre = half - np.asarray(principal_point, np.float64) * rescale
    c2w = np.zeros(rotation.shape[:-2] + (4, 4))
    c2w[..., :3, :3] = rotation @ PYTORCH3D_TO_OPENGL
    c2w[..., :3, 3] = -np.einsum("...ij,...j->...i", rotation, translation)
    c2w[..., 3, 3] = 1.0
    return c2w, focal, centre


def load_co3d_sequences(root: str, category: str, image_size: int,
                        subset: str = "fewview_dev", split: str = "train",
                        sequences: Optional[Sequence[str]] = None, max_sequences: int = 0,
                        normalize_radius: float = 0.0) -> list[ps.PosedSequence]:
    """The sequences of a split as `PosedSequence`s (`fdm.data.posed_sequences`).

    Args:
      root: the Co3D v2 root (holding <category>/frame_annotations.jgz).
      category: e.g. 'hydrant' (the paper's).
      image_size: S; frames are centre-cropped to a square and resized to S x S.
      subset, split: the set list set_lists_<subset>.json and its split ('train', 'val',
        'test').
      sequences: names to load (each must be in the split), default all in name order.
      max_sequences: > 0 keeps the first that many (after `sequences`).
      normalize_radius: > 0: object-centric normalisation (module doc); 0: Co3D's frame.
    """
    records = read_frame_annotations(root, category)
    frames = sequence_frames(root, category, subset, split)
    names = list(frames) if sequences is None else list(sequences)
    for name in names:
        if name not in frames:
            raise UserError(f"Co3D v2 sequence {name!r} is not in split {split!r} of "
                            f"set_lists_{subset}.json of {os.path.join(root, category)}; "
                            f"pick one of its {len(frames)} sequences or another split")
    if max_sequences > 0:
        names = names[:max_sequences]
    return [_load_sequence(root, category, name, frames[name], records, image_size,
                           normalize_radius) for name in names]


def load_co3d_sequence(root: str, category: str, sequence: str, image_size: int,
                       subset: str = "fewview_dev", split: str = "train",
                       normalize_radius: float = 0.0) -> ps.PosedSequence:
    """One sequence of a split (see `load_co3d_sequences`)."""
    return load_co3d_sequences(root, category, image_size, subset, split, [sequence],
                               normalize_radius=normalize_radius)[0]


def _load_sequence(root, category, name, frame_numbers, records, image_size,
                   normalize_radius) -> ps.PosedSequence:
    annotations = os.path.join(root, category, "frame_annotations.jgz")
    rows = []
    for number in frame_numbers:
        if (name, number) not in records:
            raise UserError(f"Co3D v2 frame {number} of sequence {name!r} is named by a set "
                            f"list but not annotated in {annotations}; {_DAMAGED}")
        rows.append(records[(name, number)])
    paths = [os.path.join(root, r["image_path"]) for r in rows]
    for path, r in zip(paths, rows):
        if not os.path.isfile(path):
            raise UserError(f"Co3D v2 image not found: {path} (frame {r['frame_number']} of "
                            f"sequence {name!r}); the category download is incomplete: "
                            f"re-download it from {CO3D_SOURCE}")
    size_hw = np.stack([r["size"] for r in rows])
    images, actual = ps.load_frames(paths, image_size)
    bad = np.flatnonzero((actual != size_hw).any(-1))
    if len(bad):
        i = int(bad[0])
        raise UserError(f"Co3D v2 image {paths[i]} is {actual[i][0]}x{actual[i][1]} but "
                        f"{annotations} gives {size_hw[i][0]}x{size_hw[i][1]}; replace the "
                        f"image with the original from {CO3D_SOURCE}")
    c2w, focal, centre = pytorch3d_to_opengl(
        np.stack([r["R"] for r in rows]), np.stack([r["T"] for r in rows]),
        np.stack([r["focal_length"] for r in rows]),
        np.stack([r["principal_point"] for r in rows]), size_hw,
        np.array([r["intrinsics_format"] for r in rows]))
    focal, centre = ps.crop_resize_intrinsics(focal, centre, size_hw[:, 0], size_hw[:, 1],
                                              image_size)
    if normalize_radius > 0:
        c2w = ps.normalize_object_centric(c2w, normalize_radius)
    return ps.PosedSequence(name, images, c2w.astype(np.float32),
                            focal.astype(np.float32), centre.astype(np.float32),
                            np.asarray(frame_numbers, np.int64))


def load(root, image_size, split: str, category: str, subset: str, eval_split: str,
         num_train: int, num_eval: int, min_gap: int, max_gap: int, max_sequences: int,
         normalize_radius: float, seed: int) -> dict[str, np.ndarray]:
    """`fdm.data` registry loader: a fixed pool of triples (`posed_sequences` module doc) of
    the subset's "train" list (registry split "train") or of `eval_split` ("eval"); the
    pool is drawn with seed `posed_sequences.split_seed(seed, split)`."""
    path = root.path if root is not None else ""
    key = root.key if root is not None else "data.data_dir"
    category_dir(path, category, key)
    num = ps.check_request(image_size, split, num_train, num_eval, "Co3D")
    sequences = load_co3d_sequences(path, category, image_size, subset,
                                    "train" if split == "train" else eval_split,
                                    max_sequences=max_sequences,
                                    normalize_radius=normalize_radius)
    return ps.sample_triples(sequences, num, ps.split_seed(seed, split), min_gap, max_gap)


REGISTRY_OPTIONS = dict(category="hydrant", subset="fewview_dev", eval_split="val",
                        num_train=4096, num_eval=256, min_gap=DFM_MIN_GAP,
                        max_gap=DFM_MAX_GAP, max_sequences=0, normalize_radius=0.0, seed=0)
