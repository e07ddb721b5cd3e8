"""Test-time camera refinement (issue 15): the se(3) perturbation against scipy, Adam on a
loss with a known minimum, a perfect NeRF (the toy scene's analytic volume) pulling
turned cameras back to the truth, and the pose_refined_* metrics of --mode=evaluate."""
import os

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from configs import toy_scene
from fdm.data import make_iterator
from fdm.data import toy_scene as toy_data
from fdm.metrics import poses
from fdm.models import get_family
from fdm.nerf import pose_refine


def _cameras(num: int = 3) -> np.ndarray:
    return toy_data.sample_cameras(num, 0, "val").astype(np.float32)


def _turned(c2w: np.ndarray, deg: float, seed: int = 0) -> np.ndarray:
    """Cameras [N,4,4] turned about their own centres by deg about random axes."""
    axes = np.random.default_rng(seed).normal(size=(len(c2w), 3))
    rotvec = np.deg2rad(deg) * axes / np.linalg.norm(axes, axis=-1, keepdims=True)
    out = c2w.copy()
    out[:, :3, :3] = c2w[:, :3, :3] @ Rotation.from_rotvec(rotvec).as_matrix()
    return out.astype(np.float32)


def test_perturb_is_a_right_multiplied_rigid_motion():
    c2w = _cameras(4)
    delta = np.random.default_rng(1).normal(scale=0.3, size=(4, 6)).astype(np.float32)
    out = np.asarray(pose_refine.perturb(jnp.asarray(c2w), jnp.asarray(delta)))
    motion = np.tile(np.eye(4), (4, 1, 1))
    motion[:, :3, :3] = Rotation.from_rotvec(delta[:, :3]).as_matrix()
    motion[:, :3, 3] = delta[:, 3:]
    np.testing.assert_allclose(out, c2w @ motion, atol=2e-5)
    np.testing.assert_allclose(pose_refine.perturb(jnp.asarray(c2w), jnp.zeros((4, 6))), c2w,
                               atol=1e-6)


def test_adam_reaches_the_minimum_of_a_pose_loss():
    """L = |R - R*|_F^2 + |t - t*|^2 from cameras 5 degrees and 0.1 units away."""
    truth = _cameras(3)
    start = _turned(truth, 5.0)
    start[:, :3, 3] += 0.1
    target = jnp.asarray(truth)

    def loss(c2w):
        return jnp.sum((c2w[:, :3, :] - target[:, :3, :]) ** 2, axis=(-2, -1))

    out = jax.jit(lambda c: pose_refine.refine_cameras(loss, c, 300, 1e-2))(jnp.asarray(start))
    err = poses.geodesic_deg(np.asarray(out.c2w)[:, :3, :3], truth[:, :3, :3])
    assert out.losses.shape == (301, 3) and out.delta.shape == (3, 6)
    assert np.all(err < 0.05), err
    np.testing.assert_allclose(np.asarray(out.c2w)[:, :3, 3], truth[:, :3, 3], atol=1e-3)
    assert np.all(out.losses[-1] < 1e-3 * out.losses[0])


BLOB_CENTERS = jnp.asarray(toy_data.SPHERE_CENTERS)
BLOB_COLORS = jnp.asarray(toy_data.SPHERE_COLORS)


def smooth_field(points, viewdirs=None):
    """A field with gradients everywhere: Gaussian blobs (sigma 0.3) at the toy scene's
    sphere centres, each with its sphere's colour (the toy scene's own volume is a hard
    indicator, flat almost everywhere in the camera)."""
    weight = jnp.exp(-jnp.sum((points[..., None, :] - BLOB_CENTERS) ** 2, -1) / 0.18)
    rgb = jnp.sum(weight[..., None] * BLOB_COLORS, -2) / (jnp.sum(weight, -1)[..., None] + 1e-3)
    return rgb, 30.0 * jnp.sum(weight, -1)


def test_a_perfect_nerf_pulls_turned_cameras_back_to_the_truth():
    """Known answer: views rendered by a field from the true cameras are fitted exactly
    there, so refining turned cameras through the same frozen field must find them up
    to what 16 x 16 views resolve: a small turn and a sideways shift of the camera give
    nearly the same image of smooth blobs (the loss falls 5000-fold, the turn from 4 to
    0.7-1.7 deg)."""
    c = toy_scene.get_config("tiny")
    c.model.supervised, c.model.num_samples = True, 64
    c.eval.refine_steps, c.eval.refine_learning_rate = 300, 1e-2
    fam = get_family(c)
    fam.field_fn = lambda nerf_params, alpha=None: smooth_field
    truth = np.asarray(next(make_iterator(c, "eval"))["c2w"], np.float32)
    x0 = 2.0 * fam.render_cameras({"nerf": {}}, jnp.asarray(truth)).rgb - 1.0
    start = _turned(truth, 4.0, seed=2)
    out = fam.refine_cameras({"nerf": {}}, x0, jnp.asarray(start))
    before = poses.geodesic_deg(start[:, :3, :3], truth[:, :3, :3])
    after = poses.geodesic_deg(np.asarray(out.c2w)[:, :3, :3], truth[:, :3, :3])
    assert np.allclose(before, 4.0, atol=1e-3)
    assert np.all(after < 2.0) and np.median(after) < 1.0, after
    assert np.all(np.asarray(out.losses[-1]) < 1e-3 * np.asarray(out.losses[0]))


def test_evaluate_reports_refined_poses_and_psnr(tmp_path):
    """Pose-free tiny model (untrained): the keys are there, finite, and the figure written."""
    c = toy_scene.get_config("tiny")
    c.eval.refine_steps = 3
    fam = get_family(c)
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), next(make_iterator(c, "train")))
    metrics = fam.evaluate(params, make_iterator(c, "eval"), str(tmp_path), jax.random.PRNGKey(1))
    for key in ("pose_refined_rot_err_deg", "pose_refined_rot_err_deg_unaligned_median",
                "pose_refined_const_baseline_deg", "pose_refined_spread_ratio",
                "pose_refined_rot_err_deg_train_frame",
                "pose_refined_spread_ratio_train_frame", "psnr_refined", "ssim_refined",
                "pose_refined_loss_ratio"):
        assert np.isfinite(metrics[key]), key
    assert metrics["pose_refined_const_baseline_deg"] == metrics["pose_const_baseline_deg"]
    assert os.path.isfile(tmp_path / "eval" / "cameras_refined.png")
