"""Posed frame sequences of real videos (Co3D, RealEstate10K) and the (context, target, novel)
frame triples of diffusion with forward models (seed 003, Sec. 4.1) drawn from them.

A `PosedSequence` is one video's frames with per-frame cameras, in the conventions of
`fdm.nerf` (`fdm.nerf.cameras`, `fdm.nerf.rays`):
  image            uint8 [N, S, S, 3]: each frame centre-cropped to a square (side = its
                   shorter side) and resized to S x S by `fdm.data.folder.center_crop_resize`
  c2w              float32 [N, 4, 4] camera-to-world, OpenGL convention (columns: camera
                   right, up, back, centre; the camera looks down its -z axis)
  focal            float32 [N, 2] (fx, fy) in pixels of the S x S image
  principal_point  float32 [N, 2] (cx, cy) in pixels of the S x S image
  frame_ids        int64 [N]: the dataset's id of each frame (Co3D frame_number,
                   RealEstate10K timestamp in microseconds), increasing
Pixel coordinates are continuous with (0, 0) the top-left corner of the top-left pixel and
pixel centres at (u + 0.5, v + 0.5), as in `fdm.nerf.rays`: a camera-frame point (x, y, z),
z < 0, is seen at u = cx + fx * x / -z, v = cy - fy * y / -z (`project`). Where fx = fy
(square pixels, both datasets up to rounding) `fdm.nerf.rays.rays_from_pixels(c2w, xy, fx,
cx, cy)` casts the rays of these cameras.

Crop and resize (`crop_resize_intrinsics`): the crop box of an H x W frame is
(left, top) = ((W - side) // 2, (H - side) // 2), side = min(H, W), exactly the box of
`fdm.data.folder.center_crop_resize`; with s = S / side, (fx, fy) -> s (fx, fy) and
(cx, cy) -> s (cx - left, cy - top).

Triples (`sample_triple_indices`, `gather_triples`; the sampling of the authors' code,
ayushtewari/DFM `data_io/realestate10k.py` and `data_io/co3d_new.py`, `__getitem__` with one
context view): draw a sequence uniformly, a start frame uniformly, a gap d uniformly in
[min_gap, max_gap) and end = start + d, and draw again (sequence and all) until end lies in
the sequence (DFM re-draws the scene too); the context is `start`, the target `end`, the novel
view (Eq. 9) uniform strictly between them ("one additional frame between initial context
frame and the target frame", supplement Sec. 2.1; DFM draws it from [start, end), which can
repeat the context frame; here min_gap >= 2 and it never does). With reverse=True, context
and target swap with probability 1/2 (DFM's flip; "randomly reversing the order of frames",
supplement). Every draw comes from `np.random.default_rng(seed)`, so a set of triples is a
pure function of (sequence lengths, num, seed, gaps, reverse).

Triple arrays (per view v in ('ctxt', 'trgt', 'novel'), B triples), in the layout of the
procedural scene tuples (`fdm.data.scene_tuples`: views in [-1, 1], phi the camera c2w):
  v                    float32 [B, S, S, 3] in [-1, 1] (or uint8 with image_dtype='uint8')
  v_phi                float32 [B, 4, 4] the camera c2w; with relative_to_context=True (DFM)
                       expressed in the context camera's frame (ctxt_phi = I), and
                       'ctxt_world_c2w' [B, 4, 4] holds the context camera in the sequence's
                       world frame (DFM's absolute pose input for Co3D)
  v_focal, v_principal_point  float32 [B, 2] the view's intrinsics (pixels of the S x S
                       view; they vary between sequences, unlike the procedural scenes')
  v_frame              int32 [B]: the frame's position in its sequence
  'sequence'           int32 [B]: index of the sequence in the list given
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image

from fdm.data import folder
from fdm.errors import UserError

VIEWS = ("ctxt", "trgt", "novel")
# DFM: opencv c2w of the dataset -> OpenGL (flip the camera's y and z axes).
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclasses.dataclass(frozen=True)
class PosedSequence:
    """One video's frames and cameras (module doc); all arrays share axis 0 (N frames)."""
    name: str
    image: np.ndarray            # uint8 [N, S, S, 3]
    c2w: np.ndarray              # float32 [N, 4, 4] OpenGL camera-to-world
    focal: np.ndarray            # float32 [N, 2] (fx, fy) pixels of the S x S image
    principal_point: np.ndarray  # float32 [N, 2] (cx, cy) pixels of the S x S image
    frame_ids: np.ndarray        # int64 [N] dataset frame ids, increasing

    def __len__(self) -> int:
        return len(self.image)


def crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(left, top, side) of the central square crop of `fdm.data.folder.center_crop_resize`."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


def crop_resize_intrinsics(focal: np.ndarray, principal_point: np.ndarray, height, width,
                           size: int) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics [..., 2] in pixels of H x W frames -> in pixels of their S x S centre crop
    (module doc). height, width: ints or arrays broadcasting with focal[..., 0]."""
    height, width = np.asarray(height), np.asarray(width)
    side = np.minimum(height, width)
    offset = np.stack([(width - side) // 2, (height - side) // 2], -1)
    scale = (size / side)[..., None]
    return (np.asarray(focal, np.float64) * scale,
            (np.asarray(principal_point, np.float64) - offset) * scale)


def load_frames(sources: Sequence, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [N, S, S, 3], their original (H, W) int64 [N, 2]) of image files (paths)
    or decoded frames (uint8 [H, W, 3] arrays): each decoded once, centre-cropped and resized
    (`folder.center_crop_resize`), in parallel; a one-line UserError names a file that
    cannot be decoded."""
    def example(source):
        if isinstance(source, np.ndarray):
            image = Image.fromarray(np.asarray(source, np.uint8))
        else:
            image = folder.open_image(source)
        image = image.convert("RGB")
        return {"image": np.asarray(folder.center_crop_resize(image, size), np.uint8),
                "size": np.asarray((image.size[1], image.size[0]), np.int64)}
    out = folder.load_examples(example, list(sources))
    return out["image"], out["size"]


def project(c2w: np.ndarray, focal: np.ndarray, principal_point: np.ndarray,
            points: np.ndarray) -> np.ndarray:
    """Pixel coordinates (u, v) [..., 2] of world points [..., 3] seen by OpenGL cameras
    c2w [..., 4, 4] with intrinsics [..., 2] (module doc: u = cx + fx x / -z,
    v = cy - fy y / -z in the camera frame)."""
    c2w = np.asarray(c2w, np.float64)
    rot, centre = c2w[..., :3, :3], c2w[..., :3, 3]
    cam = np.einsum("...ji,...j->...i", rot, np.asarray(points, np.float64) - centre)
    depth = -cam[..., 2]
    u = principal_point[..., 0] + focal[..., 0] * cam[..., 0] / depth
    v = principal_point[..., 1] - focal[..., 1] * cam[..., 1] / depth
    return np.stack([u, v], -1)


def focus_point(c2w: np.ndarray) -> np.ndarray:
    """The point [3] nearest (least squares) to every camera's optical axis (the object an
    object-centric capture circles): sum_i (I - d_i d_i^T)(x - c_i) = 0, d_i the view
    direction (-z column) and c_i the centre of c2w[i]."""
    d = -np.asarray(c2w, np.float64)[:, :3, 2]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    proj = np.eye(3) - d[:, :, None] * d[:, None, :]
    centres = np.asarray(c2w, np.float64)[:, :3, 3]
    return np.linalg.lstsq(proj.sum(0), np.einsum("nij,nj->i", proj, centres), rcond=None)[0]


def normalize_object_centric(c2w: np.ndarray, radius: float) -> np.ndarray:
    """c2w [N, 4, 4] translated so that `focus_point` is the origin and scaled so that the
    median camera distance to it is `radius` (rotations unchanged)."""
    out = np.array(c2w, np.float64)
    out[:, :3, 3] -= focus_point(c2w)
    distance = np.median(np.linalg.norm(out[:, :3, 3], axis=-1))
    if not distance > 0:
        raise UserError("cannot normalise a sequence whose cameras all sit at the focus of "
                        "their optical axes; set the normalisation radius to 0 (off)")
    out[:, :3, 3] *= radius / distance
    return out.astype(np.float32)


def check_gaps(min_gap: int, max_gap: int, what: str = "min_gap/max_gap") -> None:
    """UserError unless 2 <= min_gap < max_gap (integers)."""
    if int(min_gap) != min_gap or int(max_gap) != max_gap or not 2 <= min_gap < max_gap:
        raise UserError(f"{what} = {min_gap!r}/{max_gap!r} is invalid; the target lies "
                        "min_gap..max_gap-1 frames from the context with the novel view "
                        "between them, so use integers with 2 <= min_gap < max_gap")


def sample_triple_indices(lengths: Sequence[int], num: int, seed, min_gap: int,
                          max_gap: int, reverse: bool = True) -> dict[str, np.ndarray]:
    """`num` frame triples (module doc) from sequences of `lengths` frames: int32 [num]
    arrays 'sequence', 'ctxt', 'trgt', 'novel' (frame positions in the sequence).

    seed: anything `np.random.default_rng` takes (an int, a list of ints).
    """
    check_gaps(min_gap, max_gap)
    lengths = np.asarray(lengths, np.int64)
    if not (lengths > min_gap).any():
        raise UserError(f"no sequence has more than min_gap={min_gap} frames (the longest has "
                        f"{lengths.max() if len(lengths) else 0}); lower min_gap or add "
                        "longer sequences")
    rng = np.random.default_rng(seed)
    out = np.zeros((4, num), np.int32)
    for i in range(num):
        while True:
            s = int(rng.integers(len(lengths)))
            if lengths[s] <= min_gap:      # no room for the gap: DFM's draw would fail too
                continue
            start = int(rng.integers(lengths[s]))
            end = start + int(rng.integers(min_gap, max_gap))
            if end < lengths[s]:
                break
        novel = int(rng.integers(start + 1, end))
        if reverse and rng.random() < 0.5:
            start, end = end, start
        out[:, i] = (s, start, end, novel)
    return dict(zip(("sequence",) + VIEWS, out))


def gather_triples(sequences: Sequence[PosedSequence], indices: dict[str, np.ndarray],
                   relative_to_context: bool = True,
                   image_dtype: str = "float32") -> dict[str, np.ndarray]:
    """The triple arrays (module doc) of `sample_triple_indices` output."""
    if image_dtype not in ("float32", "uint8"):
        raise UserError(f"image_dtype={image_dtype!r}; use 'float32' ([-1, 1]) or 'uint8'")
    sizes = {s.image.shape[1:] for s in sequences}
    if len(sizes) != 1:
        raise UserError(f"sequences have different image sizes {sorted(sizes)}; load them "
                        "at one image size")
    seq = indices["sequence"]
    out = {"sequence": seq.astype(np.int32)}

    def take(field, frames):
        return np.stack([getattr(sequences[s], field)[f] for s, f in zip(seq, frames)])

    world_from_ctxt = take("c2w", indices["ctxt"]).astype(np.float64)
    to_ctxt = np.linalg.inv(world_from_ctxt)
    for view in VIEWS:
        frames = indices[view]
        image = take("image", frames)
        out[view] = (image if image_dtype == "uint8"
                     else image.astype(np.float32) / 127.5 - 1.0)
        c2w = take("c2w", frames).astype(np.float64)
        if relative_to_context:
            c2w = to_ctxt @ c2w
        out[f"{view}_phi"] = c2w.astype(np.float32)
        out[f"{view}_focal"] = take("focal", frames).astype(np.float32)
        out[f"{view}_principal_point"] = take("principal_point", frames).astype(np.float32)
        out[f"{view}_frame"] = frames.astype(np.int32)
    if relative_to_context:
        out["ctxt_world_c2w"] = world_from_ctxt.astype(np.float32)
    return out


def sample_triples(sequences: Sequence[PosedSequence], num: int, seed, min_gap: int,
                   max_gap: int, reverse: bool = True, relative_to_context: bool = True,
                   image_dtype: str = "float32") -> dict[str, np.ndarray]:
    """`num` (context, target, novel) triples of `sequences` as arrays (module doc)."""
    if not sequences:
        raise UserError("no sequences to draw frame triples from; load at least one")
    indices = sample_triple_indices([len(s) for s in sequences], num, seed, min_gap, max_gap,
                                    reverse)
    return gather_triples(sequences, indices, relative_to_context, image_dtype)


def split_seed(seed: int, split: str) -> list[int]:
    """The rng seed of a registry split's fixed pool of triples: [seed, 0] train, [seed, 1]
    eval (as `fdm.data.inverse_toys`)."""
    return [int(seed), {"train": 0, "eval": 1}[split]]


def check_request(image_size, split: str, num_train: int, num_eval: int, what: str) -> int:
    """The number of triples `split` asks for; a UserError for a non-int data.image_size
    (frames of `what` are cropped to squares) or a non-positive count."""
    if not isinstance(image_size, int):
        raise UserError(f"data.image_size={image_size!r}: {what} frames are cropped to "
                        "squares; set it to an int")
    num = num_train if split == "train" else num_eval
    if num <= 0:
        raise UserError(f"data.num_{split}={num}; it must be positive")
    return num
