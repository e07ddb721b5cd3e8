"""Pose landscapes: the reconstruction loss of one view over a grid of cameras.

A landscape tells whether a trained NeRF's loss has its minimum at a view's true
camera (then an encoder that misses it is what limits pose accuracy) or
elsewhere (then no encoder could do better under this NeRF).

Notation (cameras as in `fdm.nerf.cameras`: c2w [..., 4, 4], OpenGL, looking
down -z; angles in degrees throughout this module):
  c2w*      [4, 4] a view's true camera, in the frame of the NeRF.
  Grid      R x C cameras c2w [R, C, 4, 4] over two angles: column angles
            col_deg [C] and row angles row_deg [R], both increasing with
            uniform steps. Two kinds:
    'orbit'     (360-degree scenes, cameras looking at the origin): columns are
                azimuths 0, 360/C, ..., periodic; rows elevations evenly spaced
                over [lo, hi]; every camera sits on the sphere of radius |t*|
                and is `look_at` the origin with world up u. Azimuth is measured
                in the plane orthogonal to u from e1 toward e2 (`sphere_frame`:
                x toward y for u = +z, as `cameras.orbit_path`), elevation from
                that plane toward u. c2w* is generally not a grid node.
    'rotation'  (forward-facing scenes): c2w* turned about its own centre,
                R = R* R_y(yaw) R_x(pitch) (camera axes: x right, y up; positive
                yaw turns the view left, positive pitch tilts it up); columns
                yaws, rows pitches, both step * (-n..n), so c2w* is the centre
                node.
  L [R, C]  the loss of the view rendered from each grid camera.
  Arg-min   the grid cell of min L; its offset from c2w* is the geodesic
            angle between their rotations (`cameras.rotation_angle_deg`) and the
            (column, row) angle differences (azimuth wrapped to (-180, 180]);
            "within one cell" means both differences are at most one step.
  Rank      of c2w*: the number of grid cells whose loss is below L(c2w*)
            (0: the truth beats every grid camera).

Figures are drawn with numpy + PIL (`landscape_figure`), like `fdm.nerf.figures`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fdm.metrics import poses
from fdm.nerf import cameras

ORBIT, ROTATION = "orbit", "rotation"
AXIS_NAMES = {ORBIT: ("azimuth", "elevation"), ROTATION: ("yaw", "pitch")}
TRUE_COLOR = (40, 200, 60)
MIN_COLOR = (230, 30, 30)
PRED_COLOR = (40, 120, 255)
_TOL = 1e-4
# Anchors of the colour map (dark blue = low loss -> yellow = high), viridis-like.
_CMAP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                 np.float64)


# ======================================================================= grids


@dataclasses.dataclass(frozen=True)
class Grid:
    """R x C cameras over (column, row) angles; see the module docstring."""
    kind: str             # ORBIT | ROTATION
    c2w: np.ndarray       # [R, C, 4, 4]
    col_deg: np.ndarray   # [C] azimuths | yaws
    row_deg: np.ndarray   # [R] elevations | pitches
    frame: np.ndarray     # ORBIT: [3, 3] rows (e1, e2, u); ROTATION: c2w* [4, 4]

    @property
    def axis_names(self) -> tuple[str, str]:
        """(column name, row name)."""
        return AXIS_NAMES[self.kind]

    @property
    def steps(self) -> tuple[float, float]:
        """(column step, row step) in degrees."""
        return _step(self.col_deg), _step(self.row_deg)

    def coords(self, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(column angle [...], row angle [...]) of cameras c2w [..., 4, 4]."""
        if self.kind == ORBIT:
            return orbit_coords(c2w, self.frame)
        return rotation_coords(c2w, self.frame)

    def differences(self, col_a, row_a, col_b, row_b) -> tuple[np.ndarray, np.ndarray]:
        """(a - b) in column and row angles; orbit azimuths wrapped to (-180, 180]."""
        d_col = np.asarray(col_a, np.float64) - col_b
        if self.kind == ORBIT:
            d_col = 180.0 - np.mod(180.0 - d_col, 360.0)
        return d_col, np.asarray(row_a, np.float64) - row_b


def _step(values: np.ndarray) -> float:
    return float(values[1] - values[0]) if len(values) > 1 else 0.0


def sphere_frame(up: Sequence[float] = cameras.Z_UP) -> np.ndarray:
    """Rows (e1, e2, u) [3, 3]: an orthonormal frame with u = up / |up|; (x, y, z) for +z."""
    u = np.asarray(up, np.float64) / np.linalg.norm(up)
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = helper - np.dot(helper, u) * u
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(u, e1), u])


def orbit_coords(c2w: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(azimuth in [0, 360), elevation in [-90, 90]) [...] of the centres of c2w [..., 4, 4]."""
    v = np.asarray(c2w, np.float64)[..., :3, 3] @ frame.T
    v /= np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    azimuth = np.mod(np.rad2deg(np.arctan2(v[..., 1], v[..., 0])), 360.0)
    return azimuth, np.rad2deg(np.arcsin(np.clip(v[..., 2], -1.0, 1.0)))


def rotation_coords(c2w: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) [...] of cameras c2w [..., 4, 4] relative to `reference` [4, 4]: the
    angles with back axis R_ref^T R[:, 2] = (sin yaw cos pitch, -sin pitch, cos yaw cos pitch)."""
    rel = np.swapaxes(np.asarray(reference, np.float64)[:3, :3], 0, 1) @ \
        np.asarray(c2w, np.float64)[..., :3, :3]
    back = rel[..., :, 2]
    yaw = np.rad2deg(np.arctan2(back[..., 0], back[..., 2]))
    return yaw, np.rad2deg(np.arctan2(-back[..., 1], np.hypot(back[..., 0], back[..., 2])))


def orbit_grid(radius: float, num_azimuth: int, num_elevation: int,
               elevation_range_deg: Sequence[float],
               up: Sequence[float] = cameras.Z_UP) -> Grid:
    """Cameras on the sphere of `radius` looking at the origin: azimuths k 360 / A
    (k < A = num_azimuth) x E = num_elevation elevations linspace(lo, hi)."""
    frame = sphere_frame(up)
    azimuth = np.arange(num_azimuth) * 360.0 / num_azimuth
    elevation = np.linspace(*elevation_range_deg, num_elevation)
    az, el = np.deg2rad(azimuth)[None, :], np.deg2rad(elevation)[:, None]
    local = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                         np.sin(el)), -1)
    eye = radius * local @ frame
    c2w = np.asarray(cameras.look_at(jnp.asarray(eye, jnp.float32), up=tuple(up)), np.float64)
    return Grid(ORBIT, c2w, azimuth, elevation, frame)


def rotation_grid(reference: np.ndarray, max_offset_deg: float, step_deg: float) -> Grid:
    """`reference` [4, 4] turned about its centre by yaw, pitch in step * (-n..n),
    n = round(max_offset_deg / step_deg): (2n + 1)^2 cameras, the centre node = reference."""
    n = int(round(max_offset_deg / step_deg))
    offsets = step_deg * np.arange(-n, n + 1, dtype=np.float64)
    yaw = cameras.rodrigues(jnp.asarray(np.deg2rad(offsets)[:, None] * [0.0, 1.0, 0.0]))
    pitch = cameras.rodrigues(jnp.asarray(np.deg2rad(offsets)[:, None] * [1.0, 0.0, 0.0]))
    ref = np.asarray(reference, np.float64)
    rot = ref[:3, :3] @ np.asarray(yaw)[None, :] @ np.asarray(pitch)[:, None]   # [R, C, 3, 3]
    c2w = np.broadcast_to(ref, rot.shape[:2] + (4, 4)).copy()
    c2w[..., :3, :3] = rot
    return Grid(ROTATION, c2w, offsets, offsets.copy(), ref)


# ==================================================================== analysis


def analyse_view(grid: Grid, losses: np.ndarray, truth: np.ndarray, truth_loss: float) -> dict:
    """Where the minimum of L [R, C] lies relative to the true camera `truth` [4, 4].

    Returns a JSON-ready dict: truth_deg and argmin_deg ([column, row] angles),
    argmin_cell ([row, column] indices), min_offset_deg (geodesic),
    min_offset_axes_deg ([column, row] differences argmin - truth),
    min_within_one_cell, loss_min, loss_truth, truth_rank, truth_is_min.
    """
    losses = np.asarray(losses, np.float64)
    row, col = np.unravel_index(int(np.argmin(losses)), losses.shape)
    col_t, row_t = grid.coords(truth)
    d_col, d_row = grid.differences(grid.col_deg[col], grid.row_deg[row], col_t, row_t)
    step_col, step_row = grid.steps
    offset = camera_angle_deg(grid.c2w[row, col], truth)
    near = abs(d_col) <= step_col + _TOL and abs(d_row) <= step_row + _TOL
    return {
        "truth_deg": [float(col_t), float(row_t)],
        "argmin_deg": [float(grid.col_deg[col]), float(grid.row_deg[row])],
        "argmin_cell": [int(row), int(col)],
        "min_offset_deg": float(offset),
        "min_offset_axes_deg": [float(d_col), float(d_row)],
        "min_within_one_cell": bool(near),
        "loss_min": float(losses[row, col]),
        "loss_truth": float(truth_loss),
        "truth_rank": int(np.sum(losses < truth_loss)),
        "truth_is_min": bool(truth_loss <= losses[row, col]),
    }


def camera_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle [...] between the rotations of cameras a, b [..., 4, 4]."""
    return poses.geodesic_deg(np.asarray(a)[..., :3, :3], np.asarray(b)[..., :3, :3])


def summarise(views: Sequence[dict]) -> dict:
    """Over per-view dicts of `analyse_view`: frac_min_within_one_cell,
    median_min_offset_deg, frac_truth_is_min, median_truth_rank, and with the
    encoder's cameras ('pred_offset_deg', 'pred_to_min_deg' in the views) their medians."""
    out = {
        "frac_min_within_one_cell": float(np.mean([v["min_within_one_cell"] for v in views])),
        "median_min_offset_deg": float(np.median([v["min_offset_deg"] for v in views])),
        "frac_truth_is_min": float(np.mean([v["truth_is_min"] for v in views])),
        "median_truth_rank": float(np.median([v["truth_rank"] for v in views])),
    }
    for key in ("pred_offset_deg", "pred_to_min_deg"):
        if all(key in v for v in views):
            out[f"median_{key}"] = float(np.median([v[key] for v in views]))
    return out


def fit_frame(src: np.ndarray, dst: np.ndarray, about_origin: bool) -> poses.Alignment:
    """Alignment mapping cameras src [N, 4, 4] into the frame of dst [N, 4, 4].

    about_origin (360-degree scenes, cameras looking at the origin): the rotation of
    `poses.fit_orientations`, scale = mean |t_dst| / mean |t_src|, no translation, so
    mapped cameras still look at the origin. Otherwise `poses.align`, the alignment
    `evaluate` uses (the centre similarity when well conditioned, else orientations).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if not about_origin:
        return poses.align(src, dst)
    rotation = poses.fit_orientations(src, dst).rotation
    norms = lambda c: np.mean(np.linalg.norm(c[:, :3, 3], axis=-1))
    return poses.Alignment(np.float64(norms(dst) / max(norms(src), 1e-12)), rotation,
                           np.zeros(3), orientation_only=True)


def self_aligned_offsets(argmin: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Geodesic angles [N] between the arg-min cameras [N, 4, 4] and the true cameras
    [N, 4, 4] after one rotation Q (`poses.fit_orientations`) maps the truths onto the
    arg-mins: the NeRF's own consistency, whatever frame the truths were placed in."""
    q = poses.fit_orientations(truth, argmin).rotation
    turned = np.array(truth, np.float64)
    turned[:, :3, :3] = q @ turned[:, :3, :3]
    return camera_angle_deg(argmin, turned)


# ===================================================================== figure


def colormap(x: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] of values x [...] in [0, 1] (dark blue low, yellow high)."""
    t = np.clip(np.asarray(x, np.float64), 0.0, 1.0) * (len(_CMAP) - 1)
    i = np.minimum(t.astype(int), len(_CMAP) - 2)
    rgb = _CMAP[i] + (t - i)[..., None] * (_CMAP[i + 1] - _CMAP[i])
    return np.round(rgb).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType
        return ImageFont.load_default()


def cell_position(grid: Grid, col_deg: float, row_deg: float, cell: int) -> tuple[float, float]:
    """Heat-map pixel (x, y) of angles (column, row): column c at x = (c + 0.5) cell, the
    last row at the top; orbit azimuths wrap, angles beyond the grid are clipped to its edge."""
    step_col, step_row = grid.steps
    c = float(grid.differences(col_deg, 0.0, grid.col_deg[0], 0.0)[0]) / (step_col or 1.0)
    if grid.kind == ORBIT:
        c = np.mod(c + 0.5, len(grid.col_deg)) - 0.5
    r = (row_deg - grid.row_deg[0]) / (step_row or 1.0)
    c = np.clip(c, -0.5, len(grid.col_deg) - 0.5)
    r = np.clip(r, -0.5, len(grid.row_deg) - 0.5)
    return (c + 0.5) * cell, (len(grid.row_deg) - 0.5 - r) * cell


def heatmap(grid: Grid, losses: np.ndarray, markers: dict, cell: int) -> np.ndarray:
    """uint8 [R cell, C cell, 3]: L [R, C] scaled to its own [min, max], highest row on
    top, with markers {'truth' | 'pred': (column, row) angles} and the arg-min cell boxed."""
    losses = np.asarray(losses, np.float64)
    lo, hi = losses.min(), losses.max()
    rgb = colormap((losses - lo) / max(hi - lo, 1e-12))[::-1]
    image = Image.fromarray(np.repeat(np.repeat(rgb, cell, 0), cell, 1))
    draw = ImageDraw.Draw(image)
    row, col = np.unravel_index(int(np.argmin(losses)), losses.shape)
    top = (len(grid.row_deg) - 1 - row) * cell
    draw.rectangle([col * cell, top, (col + 1) * cell - 1, top + cell - 1], outline=MIN_COLOR,
                   width=max(2, cell // 6))
    rad = max(3, cell // 3)
    if "pred" in markers:
        x, y = cell_position(grid, *markers["pred"], cell)
        for sign in (1, -1):
            draw.line([x - rad, y - sign * rad, x + rad, y + sign * rad], fill=(255, 255, 255),
                      width=5)
            draw.line([x - rad, y - sign * rad, x + rad, y + sign * rad], fill=PRED_COLOR, width=3)
    if "truth" in markers:
        x, y = cell_position(grid, *markers["truth"], cell)
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=TRUE_COLOR,
                     outline=(255, 255, 255), width=2)
    return np.asarray(image)


def colorbar(height: int, lo: float, hi: float, width: int = 12) -> np.ndarray:
    """uint8 [height, width + label room, 3]: the colour map bottom (lo) to top (hi), labelled."""
    font = _font(11)
    bar = np.repeat(colormap(np.linspace(1.0, 0.0, height))[:, None], width, 1)
    canvas = Image.new("RGB", (width + 64, height), (255, 255, 255))
    canvas.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((width + 3, 0), f"{hi:.4g}", fill=(0, 0, 0), font=font)
    draw.text((width + 3, height - 13), f"{lo:.4g}", fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def view_row(grid: Grid, losses: np.ndarray, images: Sequence[np.ndarray],
             image_titles: Sequence[str], title_lines: Sequence[str], markers: dict,
             min_height: int = 96) -> np.ndarray:
    """One figure row: title lines over [images (uint8 [h, w, 3], scaled to the heat map's
    height) | `heatmap` (cells of >= 16 px, >= min_height px tall) | `colorbar`], each
    part captioned below (the heat map with its axes)."""
    cell = max(16, -(-min_height // len(grid.row_deg)))
    heat = heatmap(grid, losses, markers, cell)
    size = heat.shape[0]
    tiles = [np.asarray(Image.fromarray(np.asarray(im)).resize((size, size), Image.NEAREST))
             for im in images]
    losses = np.asarray(losses, np.float64)
    parts = tiles + [heat, colorbar(size, losses.min(), losses.max())]
    captions = [[t] for t in image_titles] + [_axes_caption(grid), ["loss"]]
    pad, line, font = 6, 16, _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(sum(p.shape[1] for p in parts) + pad * (len(parts) + 1),
                max(int(probe.textlength(t, font=font)) for t in title_lines) + 2 * pad)
    top = line * len(title_lines) + pad
    canvas = Image.new("RGB", (width, top + size + 2 * line + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(title_lines):
        draw.text((pad, 2 + k * line), text, fill=(0, 0, 0), font=font)
    x = pad
    for part, caption in zip(parts, captions):
        canvas.paste(Image.fromarray(part), (x, top))
        for k, text in enumerate(caption):
            draw.text((x, top + size + 2 + k * line), text, fill=(0, 0, 0), font=font)
        x += part.shape[1] + pad
    return np.asarray(canvas)


def _axes_caption(grid: Grid) -> list[str]:
    """['x: <column name> first..last deg', 'y: <row name> first..last deg (up)']."""
    (c_name, r_name), (c0, c1), (r0, r1) = (grid.axis_names, grid.col_deg[[0, -1]],
                                            grid.row_deg[[0, -1]])
    return [f"x: {c_name} {c0:.0f}..{c1:.0f} deg", f"y: {r_name} {r0:.0f}..{r1:.0f} deg (up)"]


def legend(width: int, with_pred: bool) -> np.ndarray:
    """uint8 [22, width, 3]: what the markers mean."""
    canvas = Image.new("RGB", (width, 22), (255, 255, 255))
    draw, font, x = ImageDraw.Draw(canvas), _font(12), 8
    items = [(TRUE_COLOR, "true camera"), (MIN_COLOR, "grid minimum")]
    if with_pred:
        items.append((PRED_COLOR, "encoder's camera"))
    for color, text in items:
        draw.rectangle([x, 6, x + 10, 16], fill=color)
        draw.text((x + 14, 4), text, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(text, font=font))
    draw.text((x, 4), "colour: loss, each view on its own scale (dark = low)", fill=(0, 0, 0),
              font=font)
    return np.asarray(canvas)


def landscape_figure(rows: Sequence[np.ndarray], with_pred: bool) -> np.ndarray:
    """uint8 figure: `view_row`s stacked (left-aligned on white) above a `legend`."""
    width = max(max(r.shape[1] for r in rows), 640)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
              for r in rows]
    return np.concatenate(padded + [legend(width, with_pred)], axis=0)
