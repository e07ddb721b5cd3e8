"""RealEstate10K (Zhou et al. 2018) sequences with cameras, read from the published camera
files plus frames the user extracted, and the (context, target, novel) triples of seed 003
Sec. 4.1. Nothing is downloaded: the camera files are RealEstate10K.tar.gz of
RE10K_SOURCE; the frames come from the YouTube videos, which each user extracts.

Layout supported (two roots, the same folder by default):
  <root>/<split>/<sequence>.txt                camera files as published ({train, test})
  <frames_root>/<split>/<sequence>/<timestamp>.png (or .jpg / .jpeg)
                                               one frame per camera line, named by its
                                               timestamp as written in the camera file
  or <frames_root>/<split>/<sequence>/data.npz the same frames decoded (uint8 [H, W, 3]),
                                               keys '<timestamp>.jpg'
The first form is the per-frame convention of DFM `data_io/realestate10k.py` (it reads
<root>/<split>/<sequence>/<timestamp>.jpg, 640x360 frames; .png is accepted as well); the
second is what the
downloader the DFM README points to leaves (yilundu/cross_attention_renderer
`data_download/generate_realestate.py`: ffmpeg -ss at each timestamp of the 360p stream into
<sequence>/<timestamp>.jpg, then packed into <sequence>/data.npz and the jpgs deleted).
Image files win over data.npz entries of the same timestamp.

Camera file (google.github.io/realestate10k/download.html): line 1 the YouTube URL, then
one line per frame of 19 numbers: timestamp (microseconds, integer), fx fy cx cy (intrinsics
normalised by the image width and height), two zeros, then the 3x4 world-to-camera matrix
[R | t] row-major. Conversion (pixelSplat `src/dataset/dataset_re10k.py` `convert_poses`:
an OpenCV-style w2c, inverted to c2w; DFM `Camera`): for a W x H frame, (fx, fy) =
(fx_n W, fy_n H), (cx, cy) = (cx_n W, cy_n H) in pixels of the frame with (0, 0) its
top-left corner (cx_n = 0.5 is the image centre, the `fdm.nerf.rays` convention); OpenCV
camera axes (x right, y down, z forward) -> OpenGL (x right, y up, z back):
c2w = inverse([R | t; 0 0 0 1]) @ diag(1, -1, -1, 1). Frames are then centre-cropped to a
square and resized (`fdm.data.posed_sequences.crop_resize_intrinsics`); for DFM's 640x360
frames this is its 140-pixel side crop, and fx in pixels of the crop is fx_n * 640, i.e.
DFM's fx * 640 / 360 in units of the crop width.

Frames are matched to camera lines by timestamp. Frames missing on disk (failed
extractions) are left out of a sequence (a warning counts them), so frame positions
(`PosedSequence`, triple 'v_frame') count the frames present (DFM also indexes only the
images it finds, but pairs them with camera lines by position). Loading a whole split skips
sequences without a frame folder (videos that could not be fetched); a named sequence
without its folder, or a folder holding none of its frames, is an error.

Triples: DFM's RealEstate10K sampling (configurations/config.yaml ctxt_min 100, ctxt_max
180 with one context view, random reversal) via `posed_sequences.sample_triples`; poses
relative to the context camera (DFM gives no absolute pose for RealEstate10K).

Errors: a missing root, split, camera file or frame folder and a malformed camera file raise
a one-line `fdm.errors.UserError` naming the path and where to get the data.
"""
from __future__ import annotations

import os
import zipfile
from typing import Optional, Sequence

import numpy as np
from absl import logging

from fdm.data import posed_sequences as ps
from fdm.data import scene_checks
from fdm.errors import UserError

RE10K_SOURCE = ("https://google.github.io/realestate10k/download.html (RealEstate10K.tar.gz: "
                "the camera files)")
FRAMES_HOWTO = ("extract each sequence's frames from its YouTube video (first line of the "
                "camera file) at the listed timestamps into <frames_root>/<split>/<sequence>/"
                "<timestamp>.png, e.g. with data_download/generate_realestate.py of "
                "https://github.com/yilundu/cross_attention_renderer")
SPLITS = ("train", "test")
FIELDS = 19
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
NPZ_NAME = "data.npz"
DFM_MIN_GAP, DFM_MAX_GAP = 100, 180
_FIX = f"the file is damaged: re-extract it from {RE10K_SOURCE}"


def split_dir(root: str, split: str, key: str = "") -> str:
    """root/split, checked: a one-line UserError when the root or the split is missing (key:
    the config key that names the root, for the message)."""
    set_it = f" and pass --config.{key}=DIR" if key else ""
    if not root or not os.path.isdir(root):
        state = f"{root} does not exist" if root else "is not set"
        raise UserError(f"RealEstate10K root {state}; download {RE10K_SOURCE}, extract it to "
                        f"DIR (DIR/train/*.txt, DIR/test/*.txt){set_it}")
    if split not in SPLITS:
        raise UserError(f"RealEstate10K split {split!r} is unknown; use one of {list(SPLITS)}")
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise UserError(f"RealEstate10K split folder not found: {path} is missing; extract "
                        f"{split}/ of {RE10K_SOURCE} into {root}")
    return path


def read_camera_file(path: str):
    """(url, timestamps int64 [N], intrinsics float64 [N, 4] normalised (fx, fy, cx, cy),
    w2c float64 [N, 3, 4]) of a camera file, frames sorted by timestamp; a one-line
    UserError naming the file and line when it is malformed."""
    if not os.path.isfile(path):
        raise UserError(f"RealEstate10K camera file not found: {path}; extract it from "
                        f"{RE10K_SOURCE}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(n, line.split()) for n, line in enumerate(f, start=1) if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); {_FIX}") from e
    if len(lines) < 2:
        raise UserError(f"{path} has {max(len(lines) - 1, 0)} camera lines; expected the "
                        f"video URL then one line of {FIELDS} numbers per frame; {_FIX}")
    url, rows, stamps = " ".join(lines[0][1]), [], []
    for n, fields in lines[1:]:
        where = f"{path}: line {n}"
        if len(fields) != FIELDS:
            raise UserError(f"{where} has {len(fields)} fields, expected {FIELDS} (timestamp, "
                            f"fx fy cx cy, 0 0, 3x4 world-to-camera matrix); {_FIX}")
        try:
            stamps.append(int(fields[0]))
            rows.append([float(v) for v in fields[1:]])
        except ValueError as e:
            raise UserError(f"{where} has a field that is not a number ({e}); {_FIX}") from e
    values = np.asarray(rows, np.float64)
    bad = ~np.isfinite(values).all(1) | (values[:, :2] <= 0).any(1)
    rotations = values[:, 6:].reshape(-1, 3, 4)[:, :, :3]
    problems = [scene_checks.rotation_problem(r) if ok else "" for r, ok in zip(rotations, ~bad)]
    for i, problem in enumerate(problems):
        if bad[i] or problem:
            what = (f"a world-to-camera rotation that is {problem}" if problem else
                    "non-finite values or a focal length <= 0")
            raise UserError(f"{path}: line {lines[i + 1][0]} has {what}; {_FIX}")
    stamps = np.asarray(stamps, np.int64)
    order = np.argsort(stamps, kind="stable")
    if len(np.unique(stamps)) != len(stamps):
        raise UserError(f"{path} lists a timestamp twice; {_FIX}")
    return url, stamps[order], values[order, :4], values[order, 6:].reshape(-1, 3, 4)


def opencv_w2c_to_opengl(w2c: np.ndarray) -> np.ndarray:
    """World-to-camera [R | t] [..., 3, 4] (OpenCV camera) -> OpenGL camera-to-world
    [..., 4, 4] (module doc)."""
    w2c = np.asarray(w2c, np.float64)
    rot_t = np.swapaxes(w2c[..., :3, :3], -1, -2)
    c2w = np.zeros(w2c.shape[:-2] + (4, 4))
    c2w[..., :3, :3] = rot_t
    c2w[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, w2c[..., :3, 3])
    c2w[..., 3, 3] = 1.0
    return c2w @ ps.OPENCV_TO_OPENGL


def pixel_intrinsics(intrinsics: np.ndarray, size_hw: np.ndarray):
    """Normalised (fx, fy, cx, cy) [..., 4] of frames (H, W) [..., 2] -> (focal [..., 2],
    principal_point [..., 2]) in pixels of the frames."""
    wh = np.asarray(size_hw, np.float64)[..., ::-1]
    intrinsics = np.asarray(intrinsics, np.float64)
    return intrinsics[..., :2] * wh, intrinsics[..., 2:4] * wh


def _frame_sources(folder_: str) -> dict:
    """{timestamp string: image path, or (npz path, key)} of a sequence folder: its frame
    images, and the frames packed in its data.npz (keys '<timestamp>.jpg'); files win."""
    sources: dict = {}
    npz = os.path.join(folder_, NPZ_NAME)
    if os.path.isfile(npz):
        try:
            with np.load(npz) as data:
                keys = list(data.files)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise UserError(f"cannot read {npz} ({type(e).__name__}: {e}); delete it and "
                            f"re-extract the frames: {FRAMES_HOWTO}") from e
        sources.update({os.path.splitext(k)[0]: (npz, k) for k in keys})
    sources.update({os.path.splitext(n)[0]: os.path.join(folder_, n)
                    for n in sorted(os.listdir(folder_))
                    if n.lower().endswith(FRAME_EXTENSIONS) and not n.startswith(".")})
    return sources


def _read_sources(sources: list) -> list:
    """Image paths as they are; (npz, key) pairs as their decoded uint8 [H, W, 3] frames."""
    out, opened = list(sources), {}
    try:
        for i, source in enumerate(sources):
            if isinstance(source, tuple):
                npz, key = source
                if npz not in opened:
                    opened[npz] = np.load(npz)
                frame = opened[npz][key]
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] not in (3, 4):
                    raise UserError(f"{npz}: frame {key!r} is a {frame.dtype} array of shape "
                                    f"{list(frame.shape)}, expected uint8 [H, W, 3]; delete "
                                    f"the file and re-extract the frames: {FRAMES_HOWTO}")
                out[i] = frame[..., :3]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {source[0]} ({type(e).__name__}: {e}); delete it and "
                        f"re-extract the frames: {FRAMES_HOWTO}") from e
    finally:
        for data in opened.values():
            data.close()
    return out


def sequence_names(root: str, split: str, frames_root: Optional[str] = None) -> list[str]:
    """Sorted names of the split's sequences that have a camera file and a frame folder."""
    cameras = split_dir(root, split)
    frames = os.path.join(frames_root or root, split)
    names = sorted(n[:-4] for n in os.listdir(cameras) if n.endswith(".txt"))
    if not names:
        raise UserError(f"no RealEstate10K camera files (*.txt) in {cameras}; extract "
                        f"{split}/ of {RE10K_SOURCE} there")
    present = [n for n in names if os.path.isdir(os.path.join(frames, n))]
    if not present:
        raise UserError(f"no RealEstate10K frames for any of the {len(names)} sequences of "
                        f"{cameras}: no folder {os.path.join(frames, '<sequence>')}; "
                        f"{FRAMES_HOWTO}")
    return present


def load_realestate10k_sequence(root: str, split: str, sequence: str, image_size: int,
                                frames_root: Optional[str] = None) -> ps.PosedSequence:
    """One sequence as a `PosedSequence` (`fdm.data.posed_sequences`); frame_ids are the
    timestamps (microseconds).

    Args:
      root: the camera-file root (holding train/ and test/).
      split: 'train' or 'test'.
      sequence: the camera file's name without .txt.
      image_size: S; frames are centre-cropped to a square and resized to S x S.
      frames_root: the root of the extracted frames (default: root).
    """
    path = os.path.join(split_dir(root, split), f"{sequence}.txt")
    if not os.path.isfile(path):
        raise UserError(f"RealEstate10K camera file not found: {path}; pick a sequence of "
                        f"{os.path.dirname(path)} or extract it from {RE10K_SOURCE}")
    _, stamps, intrinsics, w2c = read_camera_file(path)
    folder_ = os.path.join(frames_root or root, split, sequence)
    if not os.path.isdir(folder_):
        raise UserError(f"RealEstate10K frames not found: {folder_} is missing for {path}; "
                        f"{FRAMES_HOWTO}")
    files = _frame_sources(folder_)
    keep = np.array([str(t) in files for t in stamps])
    if not keep.any():
        raise UserError(f"RealEstate10K frames not found: {folder_} has none of the "
                        f"{len(stamps)} frames of {path} (<timestamp>.png, e.g. "
                        f"{stamps[0]}.png); {FRAMES_HOWTO}")
    if not keep.all():
        logging.warning("RealEstate10K %s: %d of %d frames are missing in %s; using the %d "
                        "present", sequence, int((~keep).sum()), len(keep), folder_,
                        int(keep.sum()))
    stamps, intrinsics, w2c = stamps[keep], intrinsics[keep], w2c[keep]
    images, size_hw = ps.load_frames(_read_sources([files[str(t)] for t in stamps]),
                                     image_size)
    focal, centre = pixel_intrinsics(intrinsics, size_hw)
    focal, centre = ps.crop_resize_intrinsics(focal, centre, size_hw[:, 0], size_hw[:, 1],
                                              image_size)
    return ps.PosedSequence(sequence, images, opencv_w2c_to_opengl(w2c).astype(np.float32),
                            focal.astype(np.float32), centre.astype(np.float32), stamps)


def load_realestate10k_sequences(root: str, split: str, image_size: int,
                                 frames_root: Optional[str] = None,
                                 sequences: Optional[Sequence[str]] = None,
                                 max_sequences: int = 0) -> list[ps.PosedSequence]:
    """Sequences of a split (default: every one with a frame folder, in name order;
    max_sequences > 0 keeps the first that many), see `load_realestate10k_sequence`."""
    names = sequence_names(root, split, frames_root) if sequences is None else list(sequences)
    if max_sequences > 0:
        names = names[:max_sequences]
    return [load_realestate10k_sequence(root, split, name, image_size, frames_root)
            for name in names]


def load(root, image_size, split: str, frames_dir: str, eval_split: str, num_train: int,
         num_eval: int, min_gap: int, max_gap: int, max_sequences: int,
         seed: int) -> dict[str, np.ndarray]:
    """`fdm.data` registry loader: a fixed pool of triples (`posed_sequences` module doc) of
    the "train" sequences (registry split "train") or of `eval_split` ("eval"), frames under
    frames_dir ('' = the data root), drawn with seed `posed_sequences.split_seed(seed,
    split)`."""
    path = root.path if root is not None else ""
    key = root.key if root is not None else "data.data_dir"
    name = "train" if split == "train" else eval_split
    split_dir(path, name, key)
    num = ps.check_request(image_size, split, num_train, num_eval, "RealEstate10K")
    sequences = load_realestate10k_sequences(path, name, image_size, frames_dir or None,
                                             max_sequences=max_sequences)
    return ps.sample_triples(sequences, num, ps.split_seed(seed, split), min_gap, max_gap)


REGISTRY_OPTIONS = dict(frames_dir="", eval_split="test", num_train=4096, num_eval=256,
                        min_gap=DFM_MIN_GAP, max_gap=DFM_MAX_GAP, max_sequences=0, seed=0)
