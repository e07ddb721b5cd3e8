"""Camera math: rotations, look-at, candidate cameras, camera paths, pose errors.

Conventions (used by every `fdm.nerf` and `fdm.data` function):
  * A camera pose is a camera-to-world matrix `c2w` [..., 4, 4] (a [..., 3, 4]
    is accepted wherever only R and t are read). Its columns are the camera's
    right (+x), up (+y) and back (+z) axes in world coordinates and the camera
    centre: x_world = R @ x_cam + t. This is the OpenGL / Blender convention of
    NeRF's `transforms_*.json`: the camera looks down its -z axis, +y is image up.
  * LLFF's `poses_bounds.npy` stores [down, right, back] columns; see
    `llff_to_opengl`, which is the column swap of the standard LLFF loader.
  * World "up" is a parameter. Blender scenes and `fdm.data.toy_scene` are
    z-up and their cameras live on the upper hemisphere z > 0, so the default
    `up` here is +z. (Code 3.1-3.3 of the paper pass up = +y to its look-at; pass
    `up=(0, 1, 0)` to reproduce that.)
  * Angles are radians unless a name ends in `_deg`.

Paper references are to seed 000 (Generative lifting, chapter 3): Rodrigues'
formula Eq. 3.2, the rotation from a camera position Code 3.1, look-at Code
3.2, the candidate-camera parameterisation Code 3.3.
"""
from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

Z_UP = (0.0, 0.0, 1.0)
_TINY = 1e-12
_SMALL_ANGLE_SQ = 1e-3  # below this theta^2 Rodrigues uses its Taylor series

# Sign patterns of the 8 octants: the 4 upper (z > 0) quadrants first, in the
# order of Code 3.3, then the 4 lower ones.
OCTANT_SIGNS = np.array([[1, 1, 1], [1, -1, 1], [-1, 1, 1], [-1, -1, 1],
                         [1, 1, -1], [1, -1, -1], [-1, 1, -1], [-1, -1, -1]],
                        np.float32)


def safe_normalize(v: jax.Array, eps: float = _TINY) -> jax.Array:
    """v / |v| along the last axis; finite value and gradient even at v = 0."""
    sq = jnp.sum(v * v, axis=-1, keepdims=True)
    return v * jax.lax.rsqrt(jnp.maximum(sq, eps))


def skew(v: jax.Array) -> jax.Array:
    """Cross-product matrix [v]_x [..., 3, 3] of v [..., 3]: [v]_x @ w = v x w."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    rows = [jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)]
    return jnp.stack(rows, -2)


def rodrigues(rotvec: jax.Array) -> jax.Array:
    """Rotation matrix from an axis-angle vector (Eq. 3.2).

    R = I + sin(phi) [w]_x + (1 - cos(phi)) [w]_x^2 with phi = |rotvec| and
    w = rotvec / phi, evaluated as R = I + a [v]_x + b [v]_x^2 with
    a = sin(phi)/phi, b = (1 - cos(phi))/phi^2 = 2 sin^2(phi/2)/phi^2 (no
    cancellation). Below phi^2 = 1e-3 a and b are their Taylor series, so the
    value and the gradient are exact and finite at phi = 0.

    Args:
      rotvec: [..., 3] axis * angle (radians), like scipy's `from_rotvec`.
    Returns:
      [..., 3, 3] rotation matrices.
    """
    theta_sq = jnp.sum(rotvec * rotvec, axis=-1)[..., None, None]
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
    a = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq ** 2 / 120.0, jnp.sin(theta) / theta)
    half_sin = jnp.sin(0.5 * theta) / theta
    b = jnp.where(small, 0.5 - theta_sq / 24.0 + theta_sq ** 2 / 720.0, 2.0 * half_sin ** 2)
    k = skew(rotvec)
    return jnp.eye(3, dtype=k.dtype) + a * k + b * (k @ k)


def make_c2w(rotation: jax.Array, translation: jax.Array) -> jax.Array:
    """[R | t; 0 0 0 1] [..., 4, 4] from R [..., 3, 3] and t [..., 3]."""
    top = jnp.concatenate([rotation, translation[..., None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], top.dtype), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def pose_from_axis_angle(rotvec: jax.Array, translation: jax.Array) -> jax.Array:
    """Single-camera head of Alg. 3: c2w [..., 4, 4] = [rodrigues(rotvec) | translation]."""
    return make_c2w(rodrigues(rotvec), translation)


def _camera_axes(back: jax.Array, up: jax.Array):
    """Right and true-up axes of a camera whose back (+z) axis is `back`.

    Where `back` is (anti)parallel to `up` (within 1e-4 rad) the right axis is
    undefined; a fixed vector not parallel to `up` is used instead
    (jnp.where-safe gradients). `right` is re-orthogonalised against `back`.
    """
    up = jnp.broadcast_to(jnp.asarray(up, back.dtype), back.shape)
    alt = jnp.where(jnp.abs(up[..., 1:2]) < 0.9, jnp.array([0.0, 1.0, 0.0], back.dtype),
                    jnp.array([1.0, 0.0, 0.0], back.dtype))
    right = jnp.cross(up, back)
    up_sq = jnp.sum(up * up, -1, keepdims=True)
    degenerate = jnp.sum(right * right, -1, keepdims=True) < 1e-8 * up_sq
    right = jnp.where(degenerate, jnp.cross(alt, back), right)
    right = safe_normalize(right - jnp.sum(right * back, -1, keepdims=True) * back)
    return right, jnp.cross(back, right)


def rotation_from_position(position: jax.Array, up: Sequence[float] = Z_UP) -> jax.Array:
    """World-to-camera rotation of a camera at `position` looking at the origin (Code 3.1).

    Rows are [right, up, back] (back = position / |position|), i.e. the transpose of
    the c2w rotation of `look_at(position, 0, up)`. Code 3.1's in-plane Euler
    rotation is the identity wherever the paper uses it and is omitted.

    Args:
      position: [..., 3] camera centre (not at the origin).
      up: world up vector (Code 3.1 uses +y).
    Returns:
      [..., 3, 3] rotation.
    """
    back = safe_normalize(position)
    right, true_up = _camera_axes(back, up)
    return jnp.stack([right, true_up, back], axis=-2)


def look_at(eye: jax.Array, target: jax.Array = None, up: Sequence[float] = Z_UP) -> jax.Array:
    """Camera-to-world matrix of a camera at `eye` looking at `target` (Code 3.2).

    Code 3.2 returns a transposed view matrix; like Code 3.3 this returns the
    pose it is turned into: columns [side, up, -forward, eye] with
    forward = normalize(target - eye), so the camera's -z axis points at target.

    Args:
      eye: [..., 3] camera centres.
      target: [..., 3] points looked at (default: the origin).
      up: world up vector [3] or [..., 3]; a camera looking along it gets a
        fixed fallback roll instead of NaNs.
    Returns:
      c2w [..., 4, 4].
    """
    target = jnp.zeros_like(eye) if target is None else target
    back = safe_normalize(eye - target)
    right, true_up = _camera_axes(back, up)
    return make_c2w(jnp.stack([right, true_up, back], axis=-1), eye)


def candidate_signs(num_candidates: int, layout: str) -> np.ndarray:
    """Sign patterns [N, 3] of the candidate cameras (Code 3.3 `eye_candidates`).

    layout 'octant': the 8 octants of the sphere; 'quadrant': the 4 quadrants of
    the upper (z > 0) hemisphere. Candidate i gets pattern i mod 8 (resp. 4), so
    12 quadrant candidates are 3 per quadrant, exactly the table of Code 3.3.
    """
    if layout == "octant":
        patterns = OCTANT_SIGNS
    elif layout == "quadrant":
        patterns = OCTANT_SIGNS[:4]
    else:
        raise ValueError(f"layout must be 'octant' or 'quadrant', got {layout!r}")
    return patterns[np.arange(num_candidates) % len(patterns)]


def candidate_positions(logits: jax.Array, signs: jax.Array, radius: float = 4.0) -> jax.Array:
    """Camera centres on a sphere of radius r, each inside its octant (Code 3.3).

    eye_i = r * normalize(sigmoid(logits_i) * signs_i). The sigmoids are
    normalised through exp(log_sigmoid - max) so the largest component is 1:
    finite value and gradient for any finite logits (huge, tiny, all negative).
    Code 3.3 then multiplies by Code 3.1's rotation (R @ [0, 0, r]), which
    moves the camera to another octant; this function keeps the stated intent
    (the camera lies in its own octant, looking at the origin).

    Args:
      logits: [..., N, 3] head outputs (Code 3.3 `h1` reshaped).
      signs: [N, 3] from `candidate_signs`.
      radius: sphere radius r (4.0 in the paper).
    Returns:
      [..., N, 3] camera centres with sign(eye) == signs (or 0) componentwise.
    """
    log_s = jax.nn.log_sigmoid(logits)
    u = jnp.exp(log_s - jax.lax.stop_gradient(jnp.max(log_s, axis=-1, keepdims=True)))
    return radius * safe_normalize(u * jnp.asarray(signs, u.dtype))


def candidate_cameras(logits: jax.Array, signs: jax.Array, radius: float = 4.0,
                      up: Sequence[float] = Z_UP) -> jax.Array:
    """Candidate poses of Alg. 4 / Code 3.3: c2w [..., N, 4, 4] looking at the origin.

    Args:
      logits: [..., N, 3] head outputs; signs: [N, 3]; radius: r; up: world up.
    """
    return look_at(candidate_positions(logits, signs, radius), up=up)


def orbit_path(num_frames: int, radius: float = 4.0, elevation_deg: float = 30.0,
               elevation_amplitude_deg: float = 0.0, num_rotations: float = 1.0,
               up: Sequence[float] = Z_UP) -> jax.Array:
    """Cameras circling the origin (z-up world), looking at it: c2w [F, 4, 4].

    Azimuth goes through `num_rotations` turns; the elevation oscillates by
    `elevation_amplitude_deg` around `elevation_deg` (a spiral on the sphere, as
    the "continuous spiral camera path pointing to the origin" of Fig. 3.8).
    """
    s = jnp.arange(num_frames) / num_frames
    azimuth = 2.0 * jnp.pi * num_rotations * s
    elevation = jnp.deg2rad(elevation_deg + elevation_amplitude_deg * jnp.sin(2.0 * jnp.pi * s))
    eye = radius * jnp.stack([jnp.cos(elevation) * jnp.cos(azimuth),
                              jnp.cos(elevation) * jnp.sin(azimuth), jnp.sin(elevation)], -1)
    return look_at(eye, up=up)


def _view_matrix(back: jax.Array, up: jax.Array, position: jax.Array) -> jax.Array:
    """LLFF `viewmatrix`: c2w [4, 4] with back axis `back`, roll from `up`."""
    back = safe_normalize(back)
    right = safe_normalize(jnp.cross(up, back))
    return make_c2w(jnp.stack([right, jnp.cross(back, right), back], -1), position)


def average_pose(c2w: jax.Array) -> jax.Array:
    """LLFF `poses_avg`: mean centre, summed back and up axes -> c2w [4, 4]."""
    return _view_matrix(jnp.sum(c2w[:, :3, 2], 0), jnp.sum(c2w[:, :3, 1], 0),
                        jnp.mean(c2w[:, :3, 3], 0))


def spiral_path(c2w: jax.Array, close_depth: float, inf_depth: float, num_frames: int = 120,
                num_rotations: float = 2.0, zrate: float = 0.5) -> jax.Array:
    """Forward-facing spiral of the standard LLFF loader (`render_path_spiral`).

    The focus depth is 1 / ((1 - 0.75) / close_depth + 0.75 / inf_depth); the
    radii are the 90th percentile of |camera centres| (in the recentred frame).
    The standard values are close_depth = 0.9 * min bound (= `SceneData.near`
    of an LLFF scene) and inf_depth = 5 * max bound (= 5 * `SceneData.far`).

    Args:
      c2w: [N, 4, 4] the scene's (recentred) training cameras.
    Returns:
      [num_frames, 4, 4] cameras.
    """
    avg = average_pose(c2w)
    up = safe_normalize(jnp.sum(c2w[:, :3, 1], 0))
    focus = 1.0 / (0.25 / close_depth + 0.75 / inf_depth)
    rads = jnp.append(jnp.percentile(jnp.abs(c2w[:, :3, 3]), 90, axis=0), 1.0)
    theta = jnp.linspace(0.0, 2.0 * jnp.pi * num_rotations, num_frames + 1)[:-1]
    offsets = jnp.stack([jnp.cos(theta), -jnp.sin(theta), -jnp.sin(theta * zrate),
                         jnp.ones_like(theta)], -1) * rads
    centres = offsets @ avg[:3, :4].T
    look = avg[:3, :4] @ jnp.array([0.0, 0.0, -focus, 1.0])
    return jax.vmap(lambda c: _view_matrix(c - look, up, c))(centres)


@flax.struct.dataclass
class Similarity:
    """x_aligned = scale * rotation @ x + translation."""
    scale: jax.Array        # []
    rotation: jax.Array     # [3, 3]
    translation: jax.Array  # [3]

    def apply_points(self, x: jax.Array) -> jax.Array:
        """Transforms points [..., 3]."""
        return self.scale * x @ self.rotation.T + self.translation

    def apply_c2w(self, c2w: jax.Array) -> jax.Array:
        """Transforms cameras [..., 4, 4]: rotation composed, centre mapped (no scale on R)."""
        return make_c2w(self.rotation @ c2w[..., :3, :3], self.apply_points(c2w[..., :3, 3]))


def umeyama(src: jax.Array, dst: jax.Array, with_scale: bool = True) -> Similarity:
    """Least-squares similarity dst ~ s R src + t (Umeyama 1991), det R = +1.

    Args:
      src, dst: [N, 3] corresponding points (N >= 3, not collinear).
    """
    mu_s, mu_d = jnp.mean(src, 0), jnp.mean(dst, 0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / src.shape[0]
    u, sv, vt = jnp.linalg.svd(cov)
    d = jnp.sign(jnp.linalg.det(u) * jnp.linalg.det(vt))
    signs = jnp.ones(3, cov.dtype).at[2].set(d)
    rot = (u * signs) @ vt
    var_s = jnp.mean(jnp.sum(xs * xs, -1))
    scale = jnp.sum(sv * signs) / var_s if with_scale else jnp.ones((), cov.dtype)
    return Similarity(scale, rot, mu_d - scale * rot @ mu_s)


def rotation_angle_deg(r1: jax.Array, r2: jax.Array) -> jax.Array:
    """Geodesic angle between rotations [..., 3, 3] in degrees, in [0, 180]: angle of r1^T r2.

    With M = r1^T r2 = exp(theta [a]_x): vee(M - M^T) = 2 sin(theta) a and
    tr M = 1 + 2 cos(theta), so theta = atan2(|vee(M - M^T)| / 2, (tr M - 1) / 2).
    Unlike arccos of the trace alone (whose float32 resolution is ~0.03 deg near 0
    and 180 deg), both arguments keep their precision there: the error is of the
    order of the rounding of M's entries (~1e-5 deg in float32) at every angle.
    """
    m = jnp.swapaxes(r1, -1, -2) @ r2
    vee = jnp.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1)
    cos = 0.5 * (jnp.trace(m, axis1=-2, axis2=-1) - 1.0)
    return jnp.rad2deg(jnp.arctan2(0.5 * jnp.linalg.norm(vee, axis=-1), cos))


@flax.struct.dataclass
class PoseErrors:
    """Per-camera errors after similarity alignment of predicted to true centres (the
    jit-able float32 version; evaluation uses `fdm.metrics.poses`, which also
    falls back to an orientation-only alignment when the centre fit is ill-conditioned)."""
    rot_err_deg: jax.Array  # [N] degrees
    trans_err: jax.Array    # [N] scene units
    alignment: Similarity   # predicted frame -> ground-truth frame


def pose_errors(c2w_pred: jax.Array, c2w_true: jax.Array) -> PoseErrors:
    """Camera errors after aligning predicted camera centres to the true ones.

    A similarity (scale, rotation, translation) is fit to the centres with
    `umeyama`; rotations are compared after applying its rotation, centres
    after applying the whole similarity (so translation errors are in the
    ground-truth scene's units).

    Args:
      c2w_pred, c2w_true: [N, 4, 4] (or [N, 3, 4]), N >= 3.
    """
    sim = umeyama(c2w_pred[:, :3, 3], c2w_true[:, :3, 3])
    aligned = sim.apply_c2w(c2w_pred)
    rot = rotation_angle_deg(aligned[:, :3, :3], c2w_true[:, :3, :3])
    trans = jnp.linalg.norm(aligned[:, :3, 3] - c2w_true[:, :3, 3], axis=-1)
    return PoseErrors(rot, trans, sim)
