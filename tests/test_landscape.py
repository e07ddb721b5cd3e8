"""Pose landscapes (issue 15): camera grids, the arg-min analysis, frame alignment, and
`--mode=landscape` of the NeRF lifting family on the tiny toy scene."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy_scene
from fdm import run as run_lib
from fdm.data import make_iterator
from fdm.data import toy_scene as toy_data
from fdm.errors import UserError
from fdm.models import get_family
from fdm.metrics import poses
from fdm.nerf import cameras, landscape
from fdm.nerf.views import RenderSettings
from tests import helpers


def _toy_cameras(num: int = 6) -> np.ndarray:
    return toy_data.sample_cameras(num, 0, "val").astype(np.float64)


def _turn(c2w: np.ndarray, rotvec, scale: float = 1.0, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Cameras c2w [N, 4, 4] moved by x -> scale R x + shift, R = rodrigues(rotvec)."""
    rot = np.asarray(cameras.rodrigues(jnp.asarray(rotvec, jnp.float32)), np.float64)
    return poses.Alignment(np.float64(scale), rot, np.asarray(shift, np.float64)).apply(c2w)


# ------------------------------------------------------------------- grids


def test_orbit_grid_cameras_sit_on_their_angles_and_look_at_the_origin():
    grid = landscape.orbit_grid(4.0, 24, 9, (5.0, 85.0))
    assert grid.c2w.shape == (9, 24, 4, 4) and grid.steps == (15.0, 10.0)
    az, el = grid.coords(grid.c2w)
    np.testing.assert_allclose(az, np.broadcast_to(grid.col_deg, (9, 24)), atol=1e-3)
    np.testing.assert_allclose(el, np.broadcast_to(grid.row_deg[:, None], (9, 24)), atol=1e-3)
    centres = grid.c2w[..., :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.0, rtol=1e-5)
    np.testing.assert_allclose(grid.c2w[..., :3, 2], centres / 4.0, atol=1e-5)  # back axis
    assert np.all(grid.c2w[..., 2, 0] == pytest.approx(0.0, abs=1e-5))  # no roll (z-up)


def test_orbit_coords_of_the_toy_scene_cameras():
    truth = _toy_cameras()
    az, el = landscape.orbit_coords(truth, landscape.sphere_frame())
    eye = 4.0 * np.stack([np.cos(np.deg2rad(el)) * np.cos(np.deg2rad(az)),
                          np.cos(np.deg2rad(el)) * np.sin(np.deg2rad(az)),
                          np.sin(np.deg2rad(el))], -1)
    np.testing.assert_allclose(eye, truth[:, :3, 3], atol=1e-4)
    assert np.all((el > 9.9) & (el < 80.1))


def test_rotation_grid_has_the_truth_at_its_centre_and_the_right_angles():
    truth = _toy_cameras(1)[0]
    grid = landscape.rotation_grid(truth, 15.0, 2.5)
    assert grid.c2w.shape == (13, 13, 4, 4) and grid.steps == (2.5, 2.5)
    np.testing.assert_allclose(grid.c2w[6, 6], truth, atol=1e-6)
    np.testing.assert_allclose(grid.c2w[..., :3, 3], np.broadcast_to(truth[:3, 3], (13, 13, 3)))
    yaw, pitch = grid.coords(grid.c2w)
    np.testing.assert_allclose(yaw, np.broadcast_to(grid.col_deg, (13, 13)), atol=1e-3)
    np.testing.assert_allclose(pitch, np.broadcast_to(grid.row_deg[:, None], (13, 13)), atol=1e-3)
    np.testing.assert_allclose(landscape.camera_angle_deg(grid.c2w[6], truth),
                               np.abs(grid.col_deg), atol=0.05)          # pure yaws
    # positive pitch tilts the view (-z axis) up, positive yaw turns it left
    view_up = truth[:3, :3].T @ -grid.c2w[12, 6, :3, 2]
    view_left = truth[:3, :3].T @ -grid.c2w[6, 12, :3, 2]
    assert view_up[1] > 0.2 and view_left[0] < -0.2


# ---------------------------------------------------------------- analysis


def test_analyse_view_finds_the_minimum_and_its_offsets():
    grid = landscape.orbit_grid(4.0, 24, 9, (5.0, 85.0))
    az, el = np.deg2rad(353.0), np.deg2rad(20.0)
    eye = 4.0 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    truth = np.asarray(cameras.look_at(jnp.asarray(eye, jnp.float32)), np.float64)
    near = landscape.camera_angle_deg(grid.c2w, truth)           # a bowl around the truth
    info = landscape.analyse_view(grid, near, truth, 0.0)
    assert info["argmin_cell"] == [2, 0]                          # elevation 25, azimuth 0
    np.testing.assert_allclose(info["truth_deg"], [353.0, 20.0], atol=1e-3)
    np.testing.assert_allclose(info["min_offset_axes_deg"], [7.0, 5.0], atol=1e-3)  # wrapped
    assert info["min_within_one_cell"] and info["truth_is_min"] and info["truth_rank"] == 0
    far = near.copy()
    far[6, 12] = -1.0                                             # a deeper minimum elsewhere
    info = landscape.analyse_view(grid, far, truth, 30.0)
    assert info["argmin_cell"] == [6, 12] and not info["min_within_one_cell"]
    assert info["min_offset_deg"] > 100.0 and not info["truth_is_min"]
    assert info["truth_rank"] == int(np.sum(far < 30.0)) > 1
    summary = landscape.summarise([info, {**info, "min_within_one_cell": True}])
    assert summary["frac_min_within_one_cell"] == 0.5


def test_fit_frame_recovers_a_rotation_about_the_origin_and_a_similarity():
    truth = _toy_cameras()
    pred = _turn(truth, [0.1, -0.2, 1.3], scale=1.25)
    sim = landscape.fit_frame(truth, pred, about_origin=True)
    np.testing.assert_allclose(sim.apply(truth), pred, atol=1e-6)
    pred = _turn(truth, [0.3, 0.1, -0.4], scale=0.5, shift=(1.0, -2.0, 0.5))
    sim = landscape.fit_frame(truth, pred, about_origin=False)
    np.testing.assert_allclose(sim.apply(truth), pred, atol=1e-4)
    collapsed = np.broadcast_to(pred[:1], pred.shape)             # an untrained encoder
    assert np.all(np.isfinite(landscape.fit_frame(truth, collapsed, about_origin=False)
                              .apply(truth)))


def test_self_aligned_offsets_ignore_one_global_rotation():
    truth = _toy_cameras()
    turned = _turn(truth, [0.0, 0.0, 0.7])
    np.testing.assert_allclose(landscape.self_aligned_offsets(turned, truth), 0.0, atol=0.05)
    wrong = turned.copy()
    wrong[0] = _turn(turned[:1], [0.0, 0.0, 2.0])[0]
    assert landscape.self_aligned_offsets(wrong, truth)[0] > 30.0


def test_camera_losses_of_the_analytic_scene_are_lowest_at_the_truth():
    """The pure grid evaluation with a perfect field (the toy scene's own volume)."""
    from fdm.models import lifting_landscape as ll
    scene = toy_data.load_toy_scene("val", image_size=16, num_val=1)
    rs = RenderSettings(scene.geometry, 64, 0, False, False, 1024)
    grid = landscape.orbit_grid(4.0, 12, 4, (10.0, 80.0))
    cams = np.concatenate([grid.c2w.reshape(-1, 4, 4), scene.c2w]).astype(np.float32)
    target, xy = ll.view_pixels(2.0 * scene.images[0] - 1.0, 1)
    losses = np.asarray(jax.jit(lambda c: ll.camera_losses(
        toy_data.toy_field, c, jnp.asarray(target), jnp.asarray(xy), rs, 8))(jnp.asarray(cams)))
    assert losses.shape == (49,) and losses[-1] < 0.05 and losses[-1] < 0.5 * losses[:-1].min()


# ---------------------------------------------------------------- the mode


def _config(**eval_keys):
    c = toy_scene.get_config("tiny")
    c.eval.update(eval_keys)
    return c


def _read(workdir) -> dict:
    assert os.path.isfile(os.path.join(workdir, "landscape", "landscape.png"))
    with open(os.path.join(workdir, "landscape", "landscape.json")) as f:
        return json.load(f)


def _finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_finite(v) for v in tree)
    return not isinstance(tree, float) or np.isfinite(tree)


def test_landscape_mode_writes_the_figure_and_finite_json(tmp_path):
    """Pose-free tiny model (untrained: the mode must not need a good one)."""
    c = _config()
    fam = get_family(c)
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), next(make_iterator(c, "train")))
    summary = fam.landscape(params, make_iterator(c, "eval"), str(tmp_path),
                            jax.random.PRNGKey(1))
    out = _read(tmp_path)
    assert out["summary"] == summary and _finite(out)
    assert out["grid"] == "orbit" and out["axes"] == ["azimuth", "elevation"]
    assert len(out["views"]) == 2 and out["pixel_stride"] == 2
    assert np.asarray(out["views"][0]["losses"]).shape == (4, 12)
    for key in ("median_min_offset_deg", "frac_min_within_one_cell", "median_pred_offset_deg",
                "median_pred_to_min_deg", "median_min_offset_deg_self_aligned"):
        assert key in summary, key
    assert out["frame"].startswith("encoder frame")


def test_perfect_nerf_has_its_landscape_minimum_at_the_true_camera(tmp_path):
    """Known answer: the supervised family with the toy scene's analytic volume as F."""
    c = _config(landscape_grid=(24, 9), landscape_size=16, landscape_views=3)
    c.model.supervised, c.model.num_samples = True, 64
    fam = get_family(c)
    fam.field_fn = lambda nerf_params, alpha=None: toy_data.toy_field
    summary = fam.landscape({"nerf": {}}, make_iterator(c, "eval"), str(tmp_path),
                            jax.random.PRNGKey(0))
    views = _read(tmp_path)["views"]
    assert [v["truth_rank"] for v in views] == [0, 0, 0]
    assert all(v["min_within_one_cell"] for v in views), [v["min_offset_axes_deg"] for v in views]
    assert summary["frac_truth_is_min"] == 1.0 and summary["median_min_offset_deg"] < 15.0


def test_forward_facing_grid_is_used_for_forward_facing_scenes(tmp_path):
    c = _config(landscape_offset_max_deg=4.0, landscape_offset_step_deg=2.0, landscape_views=1)
    c.model.supervised, c.model.num_samples = True, 64
    fam = get_family(c)
    fam.forward_facing = True
    fam.field_fn = lambda nerf_params, alpha=None: toy_data.toy_field
    fam.landscape({"nerf": {}}, make_iterator(c, "eval"), str(tmp_path), jax.random.PRNGKey(0))
    out = _read(tmp_path)
    view = out["views"][0]
    assert out["axes"] == ["yaw", "pitch"] and np.asarray(view["losses"]).shape == (5, 5)
    assert view["argmin_cell"] == [2, 2] and view["min_offset_deg"] < 1e-2


def test_landscape_settings_are_checked():
    with pytest.raises(UserError, match="landscape_grid"):
        get_family(_config(landscape_grid=(0, 4))).landscape(None, iter(()), "", None)


def test_other_families_refuse_the_mode():
    with pytest.raises(UserError, match="NeRF lifting"):
        helpers.TinyFamily(helpers.tiny_config()).landscape(None, iter(()), "", None)


def test_run_dispatches_landscape_with_the_eval_batches(monkeypatch, tmp_path):
    calls = {}

    class Family:
        def set_step(self, step):
            calls["step"] = step

        def landscape(self, params, batches, workdir, rng):
            calls.update(params=params, batches=batches, workdir=workdir)
            return {"ok": 1}

    import fdm.models
    monkeypatch.setattr(fdm.models, "get_family", lambda config, workdir=None: Family())
    monkeypatch.setattr(run_lib, "restore_ema_params", lambda workdir: ("P", 7))
    monkeypatch.setattr(run_lib, "eval_batches", lambda config: "BATCHES")
    assert "landscape" in run_lib.MODES
    assert run_lib.run(_config(), str(tmp_path), "landscape") == {"ok": 1}
    assert calls == {"step": 7, "params": "P", "batches": "BATCHES", "workdir": str(tmp_path)}
