"""Camera math of fdm.nerf.cameras against scipy / closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fdm.nerf import cameras

RNG = np.random.default_rng(0)
rodrigues = jax.jit(cameras.rodrigues)
look_at = jax.jit(cameras.look_at, static_argnums=2)


def _assert_rotation(r, atol=1e-5):
    r = np.asarray(r, np.float64)
    eye = np.broadcast_to(np.eye(3), r.shape)
    np.testing.assert_allclose(np.swapaxes(r, -1, -2) @ r, eye, atol=atol)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=atol)


def test_rodrigues_matches_scipy_including_tiny_angles():
    angles = np.array([0.0, 1e-8, 1e-4, 0.02, 0.0316, 0.0317, 0.5, 2.0, 3.1])  # Taylor below 0.0316
    axes = RNG.normal(size=(len(angles), 5, 3))
    rotvec = angles[:, None, None] * axes / np.linalg.norm(axes, axis=-1, keepdims=True)
    ours = rodrigues(jnp.asarray(rotvec.reshape(-1, 3), jnp.float32))
    ref = Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_rodrigues_batched_random():
    rotvec = RNG.normal(size=(4, 6, 3)) * 1.5
    ours = rodrigues(jnp.asarray(rotvec, jnp.float32))
    ref = Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix().reshape(4, 6, 3, 3)
    np.testing.assert_allclose(ours, ref, atol=3e-6)


def test_rodrigues_gradient_at_zero_is_the_skew_generator():
    jac = jax.jit(jax.jacfwd(cameras.rodrigues))(jnp.zeros(3))  # [3, 3, 3(v)]
    generators = np.array([[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                           [[0, -1, 0], [1, 0, 0], [0, 0, 0]]], np.float32)
    np.testing.assert_allclose(np.moveaxis(jac, -1, 0), generators, atol=1e-7)
    loss = lambda v: jnp.sum(cameras.rodrigues(v) ** 2 * jnp.arange(9.).reshape(3, 3))
    grads = jax.jit(jax.vmap(jax.grad(loss)))(
        jnp.array([[0.0, 0.0, 0.0], [1e-20, 1e-20, 1e-20], [0.0, 0.0, 0.0317]]))
    assert np.all(np.isfinite(grads))


def test_rodrigues_gradient_matches_finite_differences_across_branch():
    with jax.enable_x64(True):
        f = jax.jit(lambda v: cameras.rodrigues(v)[0, 1] + 2 * cameras.rodrigues(v)[2, 0])
        grad_f = jax.jit(jax.grad(f))
        for theta in [0.03, 0.04, 1.0]:
            v = jnp.array([0.3, -0.5, 0.8]) / np.sqrt(0.98) * theta
            fd = [(f(v + e * 1e-7) - f(v - e * 1e-7)) / 2e-7 for e in jnp.eye(3)]
            np.testing.assert_allclose(grad_f(v), fd, rtol=1e-6, atol=1e-8)


def test_pose_from_axis_angle():
    c2w = jax.jit(cameras.pose_from_axis_angle)(jnp.array([0.1, 0.2, 0.3]),
                                                jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(c2w[:3, :3], Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(),
                               atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0)])
def test_look_at_orthonormal_and_points_at_target(up):
    eye = jnp.asarray(RNG.normal(size=(20, 3)) * 3, jnp.float32)
    eye = eye.at[0].set(jnp.array(up) * 2.5).at[1].set(-jnp.array(up) * 4.0)  # along +-up
    target = jnp.asarray(RNG.normal(size=(20, 3)) * 0.3, jnp.float32)
    c2w = look_at(eye, target, up)
    _assert_rotation(c2w[:, :3, :3])
    np.testing.assert_allclose(c2w[:, :3, 3], eye)
    np.testing.assert_allclose(c2w[:, 3], np.tile([0, 0, 0, 1], (20, 1)))
    to_target = (target - eye) / jnp.linalg.norm(target - eye, axis=-1, keepdims=True)
    np.testing.assert_allclose(-c2w[:, :3, 2], to_target, atol=1e-6)
    # Image up (+y) leans towards world up, unless looking along it.
    assert np.all(np.asarray(c2w[2:, :3, 1] @ jnp.array(up)) >= -1e-6)


def test_look_at_matches_code_3_2_formula():
    eye, up = np.array([1.0, -2.0, 3.0]), np.array([0.0, 1.0, 0.0])
    fwd = -eye / np.linalg.norm(eye)
    side = np.cross(fwd, up) / np.linalg.norm(np.cross(fwd, up))
    up2 = np.cross(side, fwd)
    expected = np.stack([side, up2, -fwd], -1)
    c2w = look_at(jnp.asarray(eye), jnp.zeros(3), (0.0, 1.0, 0.0))
    np.testing.assert_allclose(c2w[:3, :3], expected, atol=1e-6)


def test_rotation_from_position_is_transposed_look_at():
    pos = jnp.asarray(RNG.normal(size=(6, 3)), jnp.float32)
    r = jax.jit(cameras.rotation_from_position, static_argnums=1)(pos, (0.0, 1.0, 0.0))
    c2w = look_at(pos, jnp.zeros_like(pos), (0.0, 1.0, 0.0))
    np.testing.assert_allclose(r, np.swapaxes(c2w[:, :3, :3], -1, -2), atol=1e-6)
    np.testing.assert_allclose(r[:, 2], pos / jnp.linalg.norm(pos, axis=-1, keepdims=True),
                               atol=1e-6)


def test_candidate_signs_match_code_3_3():
    code_3_3 = np.array([[1, 1, 1], [1, -1, 1], [-1, 1, 1], [-1, -1, 1]] * 3)
    np.testing.assert_array_equal(cameras.candidate_signs(12, "quadrant"), code_3_3)
    octants = cameras.candidate_signs(8, "octant")
    assert len({tuple(s) for s in octants}) == 8


LOGIT_CASES = {
    "random": RNG.normal(size=(3, 12, 3)) * 2,
    "huge": RNG.choice([-1.0, 1.0], size=(3, 12, 3)) * 1e4,
    "all_very_negative": -np.abs(RNG.normal(size=(3, 12, 3))) * 1e30 - 1e3,
    "tiny": RNG.normal(size=(3, 12, 3)) * 1e-30,
    "mixed": RNG.normal(size=(3, 12, 3)) * np.array([1e-6, 1.0, 1e6]),
}


@jax.jit
def _cameras_and_grad(logits, signs, weights):
    loss = lambda h: jnp.sum(cameras.candidate_cameras(h, signs, 4.0) * weights)
    return cameras.candidate_cameras(logits, signs, 4.0), jax.grad(loss)(logits)


@pytest.mark.parametrize("layout", ["quadrant", "octant"])
@pytest.mark.parametrize("case", sorted(LOGIT_CASES))
def test_candidate_cameras_in_octant_on_sphere_with_finite_gradients(layout, case):
    signs = cameras.candidate_signs(12, layout)
    logits = jnp.asarray(LOGIT_CASES[case], jnp.float32)
    weights = jnp.asarray(RNG.normal(size=(3, 12, 4, 4)), jnp.float32)
    c2w, grad = _cameras_and_grad(logits, signs, weights)
    centres = np.asarray(c2w[..., :3, 3])
    assert c2w.shape == (3, 12, 4, 4)
    assert np.all(centres * signs >= 0.0)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.0, rtol=1e-6)
    _assert_rotation(c2w[..., :3, :3])
    np.testing.assert_allclose(-c2w[..., :3, 2], -centres / 4.0, atol=1e-6)  # looks at origin
    assert np.all(np.isfinite(grad))


def test_candidate_positions_gradient_nonzero_for_moderate_logits():
    signs = cameras.candidate_signs(4, "quadrant")
    grad = jax.jit(jax.jacfwd(lambda h: cameras.candidate_positions(h, signs)))(jnp.zeros((4, 3)))
    assert np.abs(grad).max() > 0.1


def test_orbit_path_on_sphere_looking_at_origin():
    c2w = jax.jit(cameras.orbit_path, static_argnums=0)(16, 3.0, 20.0, 10.0)
    np.testing.assert_allclose(np.linalg.norm(c2w[:, :3, 3], axis=-1), 3.0, rtol=1e-6)
    np.testing.assert_allclose(-c2w[:, :3, 2], -c2w[:, :3, 3] / 3.0, atol=1e-6)
    elevation = np.rad2deg(np.arcsin(c2w[:, 2, 3] / 3.0))
    assert 9.9 < elevation.min() and elevation.max() < 30.1


def test_spiral_path_forward_facing():
    eye = jnp.asarray(RNG.normal(size=(10, 3)) * 0.2 + [0, 0, 4.0], jnp.float32)
    base = look_at(eye, jnp.zeros((10, 3)), (0.0, 1.0, 0.0))
    path = jax.jit(cameras.spiral_path, static_argnums=3)(base, 2.0, 50.0, 30)
    assert path.shape == (30, 4, 4)
    _assert_rotation(path[:, :3, :3])
    assert np.all(np.asarray(path[:, 2, 2]) > 0.9)  # back axis ~ +z like the inputs


def _random_similarity():
    r = Rotation.from_rotvec(RNG.normal(size=3)).as_matrix()
    return 2.5, r, np.array([0.3, -1.0, 2.0])


def test_umeyama_recovers_similarity():
    s, r, t = _random_similarity()
    src = RNG.normal(size=(30, 3))
    sim = cameras.umeyama(jnp.asarray(src), jnp.asarray(s * src @ r.T + t))
    np.testing.assert_allclose(sim.scale, s, rtol=1e-5)
    np.testing.assert_allclose(sim.rotation, r, atol=1e-5)
    np.testing.assert_allclose(sim.translation, t, atol=1e-4)


def test_pose_errors_after_alignment():
    s, r, t = _random_similarity()
    eye = jnp.asarray(RNG.normal(size=(12, 3)) * 3, jnp.float32)
    true = look_at(eye, jnp.zeros_like(eye), (0.0, 0.0, 1.0))
    # Predicted cameras live in another frame: true = sim(pred) with sim = (s, r, t).
    true_np = np.asarray(true, np.float64)
    pred = true_np.copy()
    pred[:, :3, 3] = (true_np[:, :3, 3] - t) @ r / s
    pred[:, :3, :3] = r.T @ true_np[:, :3, :3]
    pred = jnp.asarray(pred, jnp.float32)
    pose_errors = jax.jit(cameras.pose_errors)
    err = pose_errors(pred, true)
    # float32 rounding gives ~2e-5 deg here (arccos of the trace gave up to ~0.06 deg).
    assert float(err.rot_err_deg.max()) < 1e-3 and float(err.trans_err.max()) < 1e-4
    tilted = np.asarray(pred).copy()
    tilt = Rotation.from_rotvec([0.0, np.deg2rad(10.0), 0.0]).as_matrix()
    tilted[3, :3, :3] = tilted[3, :3, :3] @ tilt
    err = pose_errors(jnp.asarray(tilted), true)
    np.testing.assert_allclose(err.rot_err_deg[3], 10.0, atol=1e-3)
    assert float(np.delete(np.asarray(err.rot_err_deg), 3).max()) < 1e-3


@pytest.mark.parametrize("deg", [0.0, 1e-3, 0.01, 0.1, 1.0, 45.0, 90.0, 179.0, 179.99, 180.0])
def test_rotation_angle_accurate_near_0_and_180_in_float32(deg):
    """atan2 of (sin, cos) keeps float32 precision at every angle; the old arccos of
    the trace resolved only ~0.03 deg near 0 and 180 deg."""
    r1 = Rotation.random(64, random_state=1).as_matrix()
    axes = RNG.normal(size=(64, 3))
    rotvec = np.deg2rad(deg) * axes / np.linalg.norm(axes, axis=-1, keepdims=True)
    r2 = r1 @ Rotation.from_rotvec(rotvec).as_matrix()
    r1, r2 = r1.astype(np.float32), r2.astype(np.float32)
    ref = np.rad2deg((Rotation.from_matrix(r1.astype(np.float64)).inv()
                      * Rotation.from_matrix(r2.astype(np.float64))).magnitude())
    ours = jax.jit(cameras.rotation_angle_deg)(r1, r2)
    assert ours.dtype == jnp.float32
    # 2e-5 deg: float32 rounding of the matrices (~1e-7 rad) and of 180 (ulp 1.5e-5).
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(ours, deg, rtol=0, atol=2e-5)
