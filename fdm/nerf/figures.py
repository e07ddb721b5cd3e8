"""Pictures of cameras and camera-path videos, with numpy + PIL only (no matplotlib).

`camera_figure` draws camera frusta (Fig. 3.6: predicted vs true cameras) as a
wireframe seen by a virtual pinhole viewer. Conventions of `fdm.nerf.cameras`:
c2w [N, 4, 4] OpenGL camera-to-world (columns right, up, back, centre); each
frustum is the centre joined to the four corners of the image rectangle at
depth s (a camera looks down its -z axis), s = FRUSTUM_SCALE * the spread of the
first set's centres. The viewer looks at the centroid of all centres from the
direction VIEW_DIR (in the frame right / forward / up built from the first
set's mean camera-up axis), far enough to see everything, and the drawing is
scaled to fill the image. The top edge of each frustum is drawn thicker, so
that roll is visible; lines join the i-th cameras of the first two sets.
`with_title` puts lines of text (e.g. the pose metrics) above such a figure.
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from fdm import viz

TRUE_COLOR = (40, 150, 60)
PRED_COLOR = (220, 40, 40)
LINK_COLOR = (170, 170, 170)
FRUSTUM_SCALE = 0.12
VIEW_DIR = np.array([0.55, -0.75, 0.45])  # (right, forward, up) components of viewer offset
_ASPECT = 0.75                            # frustum height / width


def _frame(up: np.ndarray):
    """Orthonormal (e1, e2, up) with up the normalised mean camera-up axis."""
    up = up / max(np.linalg.norm(up), 1e-9)
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(helper, up)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(up, e1), up


def frustum_segments(c2w: np.ndarray, scale: float) -> np.ndarray:
    """Line segments [N, 8, 2, 3] of camera frusta (4 rays, 4 image-rectangle edges)."""
    corners_cam = np.array([[-1, _ASPECT, -1], [1, _ASPECT, -1], [1, -_ASPECT, -1],
                            [-1, -_ASPECT, -1]], np.float64) * scale
    corners = np.einsum("nij,kj->nki", c2w[:, :3, :3], corners_cam) + c2w[:, None, :3, 3]
    centre = np.broadcast_to(c2w[:, None, :3, 3], corners.shape)
    rays = np.stack([centre, corners], 2)
    edges = np.stack([corners, np.roll(corners, -1, axis=1)], 2)
    return np.concatenate([rays, edges], 1)


def _viewer(points: np.ndarray, up: np.ndarray):
    """(viewer rotation rows [3, 3] (right, up, back), viewer eye [3]) for `points` [M, 3]."""
    centre = points.mean(0)
    extent = max(np.linalg.norm(points - centre, axis=-1).max(), 1e-3)
    e1, e2, up = _frame(up)
    eye = centre + 3.0 * extent * (VIEW_DIR[0] * e1 + VIEW_DIR[1] * e2 + VIEW_DIR[2] * up)
    back = (eye - centre) / np.linalg.norm(eye - centre)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(back, right), back]), eye


def _project(points: np.ndarray, rot: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Normalised image coordinates [..., 2] (x right, y up) of world points [..., 3]."""
    cam = (points - eye) @ rot.T
    depth = np.maximum(-cam[..., 2:], 1e-6)
    return cam[..., :2] / depth


def camera_figure(sets: Sequence[Tuple[np.ndarray, Tuple[int, int, int]]],
                  size: int = 384, margin: int = 16) -> np.ndarray:
    """uint8 [size, size, 3] white image with the frusta of each (c2w [N, 4, 4], rgb) set."""
    sets = [(np.asarray(c, np.float64), col) for c, col in sets]
    first = sets[0][0]
    centres = np.concatenate([c[:, :3, 3] for c, _ in sets])
    spread = max(np.linalg.norm(first[:, :3, 3] - first[:, :3, 3].mean(0), axis=-1).max(), 1e-3)
    segs = [frustum_segments(c, FRUSTUM_SCALE * spread) for c, _ in sets]
    rot, eye = _viewer(np.concatenate([centres] + [s.reshape(-1, 3) for s in segs]),
                       first[:, :3, 1].sum(0))
    flat = [_project(s, rot, eye) for s in segs]
    links = np.stack([first[:, :3, 3], sets[1][0][:, :3, 3]], 1) if len(sets) > 1 else None
    coords = np.concatenate([f.reshape(-1, 2) for f in flat])
    lo, hi = coords.min(0), coords.max(0)
    scale = (size - 2 * margin) / max((hi - lo).max(), 1e-9)
    offset = margin + 0.5 * ((size - 2 * margin) - scale * (hi - lo))
    to_px = lambda xy: np.stack([offset[0] + scale * (xy[..., 0] - lo[0]),
                                 size - offset[1] - scale * (xy[..., 1] - lo[1])], -1)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if links is not None:
        for a, b in to_px(_project(links, rot, eye)):
            draw.line([tuple(a), tuple(b)], fill=LINK_COLOR, width=1)
    for f, (_, color) in zip(flat, sets):
        for cam in to_px(f):
            for k, (a, b) in enumerate(cam):
                draw.line([tuple(a), tuple(b)], fill=color, width=3 if k == 4 else 1)
    return np.asarray(image)


def with_title(image: np.ndarray, lines: Sequence[str], font_size: int = 13,
               pad: int = 2) -> np.ndarray:
    """uint8 [h + H, W, 3]: one `fdm.viz.title_strip` per line (black on white, cut with
    ".." when too wide) above image uint8 [H, W, 3]."""
    strips = [viz.title_strip([line], image.shape[1] - 2 * pad, pad=pad, font_size=font_size)
              for line in lines]
    return np.concatenate(strips + [np.asarray(image, np.uint8)], 0)


def write_video(frames: np.ndarray, path_stem: str, fps: int = 12) -> list:
    """Writes uint8 frames [F, H, W, 3] as `path_stem`.gif (PIL) and, when imageio's
    ffmpeg plugin is installed, `path_stem`.mp4. Returns the paths written."""
    os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    gif = path_stem + ".gif"
    images[0].save(gif + ".tmp", format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    os.replace(gif + ".tmp", gif)
    written = [gif]
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg  # noqa: F401  (the plugin imageio needs for mp4)
    except ImportError:
        return written
    iio.imwrite(path_stem + ".mp4", frames, fps=fps)
    return written + [path_stem + ".mp4"]
