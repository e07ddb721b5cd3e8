"""Pose metrics of fdm.metrics.poses: alignment (similarity or orientation-only), the
best-constant-rotation baseline and the spread ratio, on constructed cameras."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fdm.metrics import poses
from fdm.nerf import cameras

SCALE, ROT = 0.5, Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
SHIFT = np.array([1.0, -2.0, 0.5])


def ring(num: int = 12, elevation_deg: float = 30.0, amplitude_deg: float = 0.0) -> np.ndarray:
    """True cameras [num, 4, 4] on a circle (a spiral with amplitude) of radius 4 around 0."""
    return np.asarray(cameras.orbit_path(num, 4.0, elevation_deg, amplitude_deg), np.float64)


def in_other_frame(true: np.ndarray, scale=SCALE, rot=ROT, shift=SHIFT) -> np.ndarray:
    """Cameras [N, 4, 4] whose exact alignment to `true` is x -> (x - shift) rot / scale."""
    pred = true.copy()
    pred[:, :3, :3] = rot @ true[:, :3, :3]
    pred[:, :3, 3] = scale * true[:, :3, 3] @ rot.T + shift
    return pred


def posed(rotations: np.ndarray, seed: int = 0) -> np.ndarray:
    """Cameras [N, 4, 4] with rotations [N, 3, 3] and random centres (spread ~1.7)."""
    centres = np.random.default_rng(seed).normal(size=(len(rotations), 3))
    c2w = np.tile(np.eye(4), (len(rotations), 1, 1))
    c2w[:, :3, :3], c2w[:, :3, 3] = rotations, centres
    return c2w


def forward_facing(num: int = 14, seed: int = 0) -> np.ndarray:
    """Fern-like true cameras [num, 4, 4]: centres on a nearly planar patch (spread
    ~0.22 with principal axes ~ 0.2 : 0.07 : 0.002; Fern's training views: 0.24 with
    singular values 0.87 : 0.28 : 0.05), orientations within a few degrees of -z."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num, 3)) * [0.2, 0.07, 0.002]
    rot = Rotation.from_rotvec(rng.normal(size=(num, 3)) * 0.05).as_matrix()
    return np.asarray(cameras.make_c2w(jnp.asarray(rot), jnp.asarray(centres)), np.float64)


# ---------------------------------------------------------------- rotations


@pytest.mark.parametrize("deg", [0.0, 1e-7, 1e-3, 1.0, 90.0, 149.9, 150.1, 179.9999, 180.0])
def test_rotation_log_and_exp_match_scipy(deg):
    axes = np.random.default_rng(1).normal(size=(32, 3))
    rotvec = np.deg2rad(deg) * axes / np.linalg.norm(axes, axis=-1, keepdims=True)
    r = Rotation.from_rotvec(rotvec).as_matrix()
    np.testing.assert_allclose(poses.rotation_exp(rotvec), r, atol=1e-14)
    log = poses.rotation_log(r)
    np.testing.assert_allclose(np.linalg.norm(log, axis=-1), np.deg2rad(deg), atol=1e-14)
    np.testing.assert_allclose(poses.rotation_exp(log), r, atol=1e-14)   # +-axis at 180


def test_geodesic_deg_agrees_with_the_float32_camera_metric():
    r1, r2 = Rotation.random(50, random_state=2).as_matrix(), Rotation.random(50, 3).as_matrix()
    ours = poses.geodesic_deg(r1, r2)
    np.testing.assert_allclose(ours, np.rad2deg((Rotation.from_matrix(r1).inv()
                                                 * Rotation.from_matrix(r2)).magnitude()),
                               atol=1e-12)
    np.testing.assert_allclose(cameras.rotation_angle_deg(jnp.asarray(r1, jnp.float32),
                                                          jnp.asarray(r2, jnp.float32)),
                               ours, atol=2e-5)


# ---------------------------------------------------------------- alignment


def test_similarity_fit_recovers_a_known_similarity_float64_and_float32():
    true = ring(12, 30.0, 20.0)
    pred = in_other_frame(true)
    fit = poses.align(pred, true)
    assert not fit.orientation_only
    # The inverse of (SCALE, ROT, SHIFT), exactly up to float64 rounding.
    np.testing.assert_allclose(fit.scale, 1.0 / SCALE, rtol=1e-12)
    np.testing.assert_allclose(fit.rotation, ROT.T, atol=1e-12)
    np.testing.assert_allclose(fit.translation, -ROT.T @ SHIFT / SCALE, atol=1e-12)
    np.testing.assert_allclose(fit.apply(pred), true, atol=1e-12)
    # float32 cameras in: float32 rounding of the inputs (~1e-7 relative) bounds the error.
    pred32, true32 = pred.astype(np.float32), true.astype(np.float32)
    np.testing.assert_allclose(poses.align_cameras(pred32, true32), true, atol=1e-5)
    # Same estimator as the float32 JAX `cameras.umeyama`.
    jx = cameras.umeyama(jnp.asarray(pred32[:, :3, 3]), jnp.asarray(true32[:, :3, 3]))
    np.testing.assert_allclose(jx.rotation, fit.rotation, atol=1e-5)
    np.testing.assert_allclose(jx.scale, fit.scale, rtol=1e-5)


def test_align_cameras_exact_and_degenerate():
    true = np.asarray(cameras.orbit_path(6, 4.0, 30.0, 20.0))
    rot = np.asarray(cameras.rodrigues(jnp.array([0.3, -0.2, 0.5])))
    pred = true.copy()
    pred[:, :3, :3] = rot @ true[:, :3, :3]
    pred[:, :3, 3] = 0.5 * true[:, :3, 3] @ rot.T + 1.0
    np.testing.assert_allclose(poses.align_cameras(pred, true), true, atol=1e-4)
    same = np.broadcast_to(pred[:1], pred.shape).copy()           # untrained encoder
    aligned = poses.align_cameras(same, true)
    assert np.all(np.isfinite(aligned))
    np.testing.assert_allclose(aligned[:, :3, 3], np.broadcast_to(true[:, :3, 3].mean(0), (6, 3)),
                               atol=1e-5)


def test_healthy_ring_keeps_the_similarity_fit():
    """A planar 360-degree ring (rank-2 centre covariance) with noisy predictions."""
    true = ring(16)
    pred = in_other_frame(true)
    pred[:, :3, 3] += np.random.default_rng(2).normal(size=(16, 3)) * 0.05
    assert poses.centre_fit_conditioned(pred, true)
    ev = poses.evaluate_poses(pred, true)
    assert not ev.alignment.orientation_only
    np.testing.assert_allclose(ev.spread_ratio, SCALE, rtol=0.05)
    assert ev.rot_err_deg.max() < 2.0 and ev.trans_err.max() < 0.3


def test_collapsed_prediction_falls_back_to_orientation_only():
    """Centres collapsed to 5% of the true spread; orientations right up to a frame."""
    true = ring(12, 30.0, 20.0)
    pred = in_other_frame(true)
    noise = np.random.default_rng(3).normal(size=(12, 3)) * 3.0
    pred[:, :3, 3] = 0.05 * SCALE * (true[:, :3, 3] + noise) @ ROT.T
    assert not poses.centre_fit_conditioned(pred, true)
    ev = poses.evaluate_poses(pred, true)
    assert ev.alignment.orientation_only and ev.spread_ratio < poses.MIN_SPREAD_RATIO
    np.testing.assert_allclose(ev.rot_err_deg, 0.0, atol=1e-9)      # G from the orientations
    np.testing.assert_allclose(ev.alignment.rotation, ROT.T, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_fern_like_collapse_on_a_nearly_planar_truth_is_orientation_only(seed):
    """LLFF Fern: nearly planar true centres (spread ~0.22), predicted centres collapsed
    to ~0.04 and orientations right up to a global rotation. The centre fit would
    follow the noise; the orientation-only fit recovers the frame."""
    true = forward_facing(seed=seed)
    frame = Rotation.from_rotvec([0.2, 0.4, -0.1]).as_matrix()
    pred = true.copy()
    pred[:, :3, :3] = frame @ true[:, :3, :3]
    pred[:, :3, 3] = np.random.default_rng(10 + seed).normal(size=(len(true), 3)) * 0.023
    assert 0.1 < poses.spread_ratio(pred, true) < poses.MIN_SPREAD_RATIO
    ev = poses.evaluate_poses(pred, true)
    assert ev.alignment.orientation_only
    np.testing.assert_allclose(ev.rot_err_deg, 0.0, atol=1e-9)
    forced = poses.fit_similarity(pred[:, :3, 3], true[:, :3, 3]).apply(pred)
    assert poses.geodesic_deg(forced[:, :3, :3], true[:, :3, :3]).mean() > 10.0


def test_collinear_centres_fall_back_to_orientation_only():
    """Healthy spread, but the centres lie on a line: sigma_2 / sigma_1 of C ~ 0."""
    true = ring(12, 30.0, 20.0)
    pred = in_other_frame(true)
    pred[:, :3, 3] = np.linspace(-3.0, 3.0, 12)[:, None] * [1.0, 0.5, 0.2]
    assert poses.spread_ratio(pred, true) > poses.MIN_SPREAD_RATIO
    assert not poses.centre_fit_conditioned(pred, true)
    assert poses.align(pred, true).orientation_only


def test_fewer_than_three_views_align_orientations_only():
    true = ring(12)[:2]
    assert poses.align(in_other_frame(true), true).orientation_only


# ---------------------------------------------------------------- baselines


def test_spread_ratio_is_the_unaligned_rms_spread_ratio():
    true = ring(12, 30.0, 20.0)
    np.testing.assert_allclose(poses.spread_ratio(in_other_frame(true), true), SCALE, rtol=1e-12)
    centres = true[:, :3, 3]
    np.testing.assert_allclose(poses.centre_spread(centres),
                               np.sqrt(np.mean(np.sum((centres - centres.mean(0)) ** 2, -1))))
    assert np.isnan(poses.spread_ratio(true, np.broadcast_to(true[:1], true.shape)))


def test_best_constant_rotation_of_rotations_symmetric_about_a_centre():
    """Q_i = C exp(+-theta e_k), k = x, y, z: the geodesic L1 mean is C, at theta from each."""
    centre = Rotation.from_rotvec([0.4, -1.0, 0.7]).as_matrix()
    theta = np.deg2rad(35.0)
    steps = np.concatenate([np.eye(3), -np.eye(3)]) * theta
    q = centre @ poses.rotation_exp(steps)
    best = poses.best_constant_rotation(q)
    np.testing.assert_allclose(best, centre, atol=1e-9)
    np.testing.assert_allclose(poses.geodesic_deg(best, q), 35.0, atol=1e-7)


def test_best_constant_rotation_is_the_median_not_the_mean():
    """3 views at A, 2 at B (60 deg apart): the L1 mean is A (the chordal mean lies
    between), so the baseline's mean error is 2/5 * 60 deg and its median 0."""
    a = Rotation.from_rotvec([0.1, 0.2, -0.3]).as_matrix()
    b = a @ poses.rotation_exp(np.array([0.0, np.deg2rad(60.0), 0.0]))
    q = np.stack([a, a, a, b, b])
    best = poses.best_constant_rotation(q)
    np.testing.assert_allclose(best, a, atol=1e-9)
    chordal = poses.project_to_rotation(q.sum(0))
    assert poses.geodesic_deg(chordal, a) > 10.0
    ev = poses.evaluate_poses(posed(q), posed(q))
    np.testing.assert_allclose(ev.const_err_deg.mean(), 24.0, atol=1e-7)
    np.testing.assert_allclose(np.median(ev.const_err_deg), 0.0, atol=1e-7)


def test_best_constant_rotation_beats_the_chordal_mean_and_bounds_constant_predictors():
    true = ring(20, 30.0, 25.0)
    best = poses.best_constant_rotation(true[:, :3, :3])
    chordal = poses.project_to_rotation(true[:, :3, :3].sum(0))
    cost = lambda r: poses.geodesic_deg(r, true[:, :3, :3]).mean()
    assert cost(best) <= cost(chordal) + 1e-12
    nudges = np.random.default_rng(5).normal(size=(20, 3)) * 0.02
    for r, nudge in zip(Rotation.random(20, random_state=4).as_matrix(), nudges):
        assert cost(best) <= cost(best @ poses.rotation_exp(nudge)) + 1e-9
        constant = np.broadcast_to(posed(r[None]), true.shape)
        ev = poses.evaluate_poses(constant, true)
        assert ev.alignment.orientation_only
        assert ev.rot_err_deg.mean() >= ev.const_err_deg.mean() - 1e-9
        assert ev.rot_err_deg_unaligned.mean() >= ev.const_err_deg.mean() - 1e-9


# ---------------------------------------------------------------- frames


def test_frame_offset_is_the_global_rotation_and_held_out_views_score_in_the_train_frame():
    """Predictions exact up to one global rotation (angle 7 deg): the training views'
    alignment recovers it (frame offset 7 deg, the unaligned error of every view), and
    held-out views scored in that frame have zero error; a per-view error added to one
    held-out view is reported for that view alone, at its size."""
    true = forward_facing(20, seed=3)
    axis = np.array([0.3, 1.0, -0.2]) / np.linalg.norm([0.3, 1.0, -0.2])
    glob = Rotation.from_rotvec(np.radians(7.0) * axis).as_matrix()
    pred = in_other_frame(true, scale=1.3, rot=glob, shift=np.array([0.1, 0.0, -0.2]))
    train, held = slice(0, 14), slice(14, None)
    ev = poses.evaluate_poses(pred[train], true[train])
    assert poses.frame_offset_deg(ev.alignment) == pytest.approx(7.0, abs=1e-6)
    np.testing.assert_allclose(ev.rot_err_deg_unaligned, 7.0, atol=1e-6)
    np.testing.assert_allclose(poses.rot_err_in_frame(ev.alignment, pred[held], true[held]),
                               0.0, atol=1e-5)
    nudged = pred[held].copy()
    nudged[0, :3, :3] = nudged[0, :3, :3] @ Rotation.from_rotvec([0.0, np.radians(2.0), 0.0]).as_matrix()
    err = poses.rot_err_in_frame(ev.alignment, nudged, true[held])
    assert err[0] == pytest.approx(2.0, abs=1e-6)
    np.testing.assert_allclose(err[1:], 0.0, atol=1e-5)


def test_spread_ratio_in_the_train_frame_undoes_the_frame_scale():
    """Predictions exact in a frame of 1.3x the true scale (a pose-free NeRF's own
    gauge): the unaligned spread ratio of held-out views reads 1.3, in the training
    views' frame 1.0; held-out centres pulled halfway to their centroid read 0.5 there,
    the closed form s spread(c) / spread(d)."""
    true = forward_facing(20, seed=5)
    glob = Rotation.from_rotvec([0.0, np.radians(5.0), 0.0]).as_matrix()
    pred = in_other_frame(true, scale=1.3, rot=glob, shift=np.array([0.2, -0.1, 0.0]))
    train, held = slice(0, 14), slice(14, None)
    ev = poses.evaluate_poses(pred[train], true[train])
    assert poses.spread_ratio(pred[held], true[held]) == pytest.approx(1.3, rel=1e-9)
    assert poses.spread_ratio_in_frame(ev.alignment, pred[held], true[held]) == pytest.approx(
        1.0, rel=1e-9)
    shrunk = pred[held].copy()
    centres = shrunk[:, :3, 3]
    shrunk[:, :3, 3] = centres.mean(0) + 0.5 * (centres - centres.mean(0))
    assert poses.spread_ratio_in_frame(ev.alignment, shrunk, true[held]) == pytest.approx(
        0.5, rel=1e-9)
