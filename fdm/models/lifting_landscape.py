"""`--mode=landscape` of the NeRF lifting family: pose landscapes of evaluation views.

For each of the first V = eval.landscape_views views x0 of data.eval_split, the
loss of Eq. 3.3 (mean over pixels and channels of (2 rgb - 1 - x0)^2, the
training loss's [-1, 1] units, coarse + fine summed when hierarchical; bin
midpoints, so deterministic) on every pixel of the stride-s grid of the view
(s = max(1, min(H, W) // eval.landscape_size)), rendered from every camera of a
`fdm.nerf.landscape` grid around the view's true camera c2w*:
  360-degree scenes: 'orbit', A x E = eval.landscape_grid azimuths x elevations
    over eval.landscape_elevation_deg, on the sphere of radius |t*|, world up
    model.world_up;
  forward-facing (LLFF) scenes: 'rotation', yaw x pitch turns of c2w* about its
    centre in steps of eval.landscape_offset_step_deg up to
    +-eval.landscape_offset_max_deg;
and from c2w* itself and (pose-free) the encoder's camera at t = eval.pose_t.

Frames: a pose-free model's NeRF lives in the frame of its encoder's cameras,
the data's frame only up to a similarity S. The true cameras are mapped by S
fitted to the encoder's cameras of the first max(eval.num_examples, V) views
(`landscape.fit_frame`: a rotation about the origin and a scale for 360-degree
scenes, `poses.align` for forward-facing ones), the frame in which
`evaluate` measures pose errors. The supervised baseline's NeRF is in the data's
frame (S = identity). As S trusts the encoder, the summary of a pose-free model
also has median_min_offset_deg_self_aligned: the arg-min offsets after one
rotation re-aligns the truths onto the arg-mins themselves (the NeRF alone).

Reading it: the minimum at the truth (within one cell, truth rank ~0) while the
encoder's camera lies away from it means the encoder limits pose accuracy; a
minimum away from the truth means the NeRF does (its loss prefers a wrong camera,
which no encoder could fix).

Writes DIR/landscape/landscape.png (one row per view: the view, renders from the
true camera, the arg-min and the encoder's camera, the heat map of L over the
grid with the true camera, the arg-min cell and the encoder's camera marked,
and its colour bar) and DIR/landscape/landscape.json.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fdm import viz
from fdm.errors import UserError
from fdm.host import to_host, write_json_atomic
from fdm.models import lifting
from fdm.nerf import landscape
from fdm.nerf.views import RenderSettings, render_pixels

OUT_DIR = "landscape"


def landscape_settings(config) -> dict:
    """The eval.landscape_* keys (declared in configs/toy_scene.py, their values checked
    by `lifting.LIFTING_RULES` when the family is built)."""
    e = config.eval
    return {"views": int(e.landscape_views),
            "grid": tuple(int(v) for v in e.landscape_grid),
            "elevation_deg": tuple(float(v) for v in e.landscape_elevation_deg),
            "offset_max_deg": float(e.landscape_offset_max_deg),
            "offset_step_deg": float(e.landscape_offset_step_deg),
            "size": int(e.landscape_size)}


def stride_pixels(height: int, width: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows [h], cols [w]) of the stride-s pixel grid: i * s + s // 2."""
    return np.arange(stride // 2, height, stride), np.arange(stride // 2, width, stride)


def view_pixels(image: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(target [P, 3], xy [P, 2] pixel centres) of the stride-s grid of image [H, W, 3]."""
    rows, cols = stride_pixels(image.shape[0], image.shape[1], stride)
    target = np.asarray(image)[rows][:, cols].reshape(-1, image.shape[-1])
    xy = np.stack(np.meshgrid(cols, rows, indexing="xy"), -1).reshape(-1, 2) + 0.5
    return target.astype(np.float32), xy.astype(np.float32)


def camera_losses(field_fn, c2w: jax.Array, target: jax.Array, xy: jax.Array,
                  rs: RenderSettings, cameras_per_batch: int) -> jax.Array:
    """Eq. 3.3 losses [G] of one view (target [P, 3] in [-1, 1] at pixels xy [P, 2])
    rendered from each camera c2w [G, 4, 4] (bin midpoints), cameras_per_batch at a
    time (`lax.map`), so memory stays at cameras_per_batch * P rays."""
    def one(c):
        outs = render_pixels(field_fn, c[None], xy[None], rs, None)
        return lifting.reconstruction_loss(outs, target[None])[0]
    return jax.lax.map(one, c2w, batch_size=cameras_per_batch)


def gather_views(family, params, batches, num: int, rng) -> dict[str, np.ndarray]:
    """The first `num` valid views: 'image' [n, H, W, 3] in [-1, 1], 'c2w_true' [n, 4, 4]
    and, pose-free, 'c2w_pred' [n, 4, 4] (the encoder's arg-max camera, `eval_step`)."""
    rows = {}
    for i, batch in enumerate(batches):
        cols = {"image": to_host(batch["image"]), "c2w_true": to_host(batch["c2w"])}
        if family.encoder is not None:
            cols["c2w_pred"] = to_host(family._eval_step(params, batch["image"],
                                                         jax.random.fold_in(rng, i))["c2w"])
        valid = to_host(batch["valid"]) if "valid" in batch else np.ones(len(cols["image"]), bool)
        for k, v in cols.items():
            rows.setdefault(k, []).append(np.asarray(v)[valid])
        if sum(map(len, rows["image"])) >= num:
            break
    if not rows or not sum(map(len, rows["image"])):
        raise UserError("the evaluation split is empty; check data.eval_split")
    return {k: np.concatenate(v)[:num] for k, v in rows.items()}


def true_cameras_in_model_frame(views: dict, forward_facing: bool) -> tuple[np.ndarray, str]:
    """(true cameras [n, 4, 4] in the NeRF's frame, how they got there); see the module
    docstring."""
    if "c2w_pred" not in views:
        return views["c2w_true"], "data frame (supervised: true cameras as they are)"
    if len(views["c2w_true"]) < 2:
        raise UserError("--mode=landscape of a pose-free model aligns the true cameras to the "
                        "encoder's on >= 2 views; raise eval.num_examples or "
                        "eval.landscape_views")
    sim = landscape.fit_frame(views["c2w_true"], views["c2w_pred"],
                              about_origin=not forward_facing)
    how = ("orientations" if sim.orientation_only else "similarity") if forward_facing \
        else "rotation about the origin + scale"
    return sim.apply(views["c2w_true"]), \
        f"encoder frame ({how} fitted to the encoder's cameras of {len(views['c2w_true'])} views)"


def make_grid(settings: dict, truth: np.ndarray, forward_facing: bool,
              up) -> landscape.Grid:
    """The view's grid (orbit around the origin, or rotations of `truth` [4, 4])."""
    if forward_facing:
        return landscape.rotation_grid(truth, settings["offset_max_deg"],
                                       settings["offset_step_deg"])
    num_az, num_el = settings["grid"]
    return landscape.orbit_grid(float(np.linalg.norm(truth[:3, 3])), num_az, num_el,
                                settings["elevation_deg"], up)


def run_landscape(family, params, batches, workdir: str, rng) -> dict:
    """--mode=landscape (see the module docstring); returns the JSON's 'summary'."""
    settings = landscape_settings(family.config)
    rs, pose_free = family.settings, family.encoder is not None
    height, width = rs.geometry.height, rs.geometry.width
    stride = max(1, min(height, width) // settings["size"])
    num = max(settings["views"], int(family.config.eval.num_examples)) \
        if pose_free else settings["views"]
    views = gather_views(family, params, batches, num, rng)
    truths, frame = true_cameras_in_model_frame(views, family.forward_facing)
    up = tuple(family.config.model.world_up)
    pixels = np.prod([len(a) for a in stride_pixels(height, width, stride)])
    per_batch = max(1, int(family.config.eval.chunk) // int(pixels))
    losses_fn = jax.jit(lambda p, alpha, c2w, target, xy: camera_losses(
        family.field_fn(p, alpha), c2w, target, xy, rs, per_batch))
    alpha = family.alpha(family.checkpoint_step)
    infos, rows, argmins = [], [], []
    for v in range(min(settings["views"], len(truths))):
        grid = make_grid(settings, truths[v], family.forward_facing, up)
        probes = np.stack([truths[v], views["c2w_pred"][v] if pose_free else truths[v]])
        cams = np.concatenate([grid.c2w.reshape(-1, 4, 4), probes]).astype(np.float32)
        target, xy = view_pixels(views["image"][v], stride)
        losses = np.asarray(losses_fn(params["nerf"], alpha, jnp.asarray(cams),
                                      jnp.asarray(target), jnp.asarray(xy)), np.float64)
        grid_losses = losses[:-2].reshape(grid.c2w.shape[:2])
        info = landscape.analyse_view(grid, grid_losses, truths[v], losses[-2])
        info.update(index=v, losses=grid_losses.tolist())
        argmins.append(grid.c2w[tuple(info["argmin_cell"])])
        if pose_free:
            info.update(_encoder_info(grid, probes[1], truths[v], argmins[-1], losses[-1]))
        infos.append(info)
        rows.append(_figure_row(family, params, views["image"][v], grid, info, probes))
    summary = landscape.summarise(infos)
    if pose_free and len(infos) >= 2:
        summary["median_min_offset_deg_self_aligned"] = float(np.median(
            landscape.self_aligned_offsets(np.stack(argmins), truths[:len(infos)])))
    out_dir = os.path.join(workdir, OUT_DIR)
    viz.save_png(os.path.join(out_dir, "landscape.png"),
                 landscape.landscape_figure(rows, with_pred=pose_free))
    write_json_atomic({
        "config": family.config.name, "grid": grid.kind,
        "axes": list(grid.axis_names), "col_deg": grid.col_deg.tolist(),
        "row_deg": grid.row_deg.tolist(), "pixel_stride": stride, "frame": frame,
        "summary": summary, "views": infos}, os.path.join(out_dir, "landscape.json"))
    return summary


def _encoder_info(grid: landscape.Grid, pred: np.ndarray, truth: np.ndarray,
                  argmin: np.ndarray, loss_pred: float) -> dict:
    """The encoder's camera pred [4, 4] on the landscape: pred_deg ([column, row] angles),
    loss_pred, pred_offset_deg (to the truth), pred_to_min_deg (to the arg-min camera)."""
    return {"pred_deg": [float(a) for a in grid.coords(pred)], "loss_pred": float(loss_pred),
            "pred_offset_deg": float(landscape.camera_angle_deg(pred, truth)),
            "pred_to_min_deg": float(landscape.camera_angle_deg(pred, argmin))}


def _figure_row(family, params, image: np.ndarray, grid: landscape.Grid, info: dict,
                probes: np.ndarray) -> np.ndarray:
    """One `landscape.view_row`: the view, renders from the truth, the arg-min and (pose-free)
    the encoder's camera (probes [2, 4, 4]: truth, encoder), the heat map."""
    cams = [probes[0], grid.c2w[tuple(info["argmin_cell"])]]
    titles = ["view", "@ truth", "@ minimum"]
    markers = {"truth": info["truth_deg"]}
    if "pred_deg" in info:
        markers["pred"] = info["pred_deg"]
        cams.append(probes[1])
        titles.append("@ encoder")
    renders = np.asarray(family._render(params, jnp.asarray(np.stack(cams), jnp.float32)).rgb)
    images = [viz.to_uint8(image)] + [viz.to_uint8(r, (0, 1)) for r in renders]
    c_name, r_name = grid.axis_names
    d_col, d_row = info["min_offset_axes_deg"]
    lines = [f"view {info['index']}: grid minimum {info['min_offset_deg']:.1f} deg from the true "
             f"camera ({c_name} {round(d_col):+d}, {r_name} {round(d_row):+d}); truth rank "
             f"{info['truth_rank']}",
             f"loss at truth {info['loss_truth']:.4g}, at minimum {info['loss_min']:.4g}"]
    if "pred_deg" in info:
        lines[1] += (f"; encoder's camera {info['pred_offset_deg']:.1f} deg from the truth, "
                     f"{info['pred_to_min_deg']:.1f} deg from the minimum")
    return landscape.view_row(grid, np.asarray(info["losses"]), images, titles, lines, markers)
