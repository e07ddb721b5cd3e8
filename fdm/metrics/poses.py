"""Pose-evaluation metrics: predicted cameras against the truth, with the alignment,
baselines and diagnostics needed to read a pose error (numpy, float64 inside).

Notation (cameras as in `fdm.nerf.cameras`: OpenGL camera-to-world):
  Predicted poses P_i = [R_i | c_i], c2w_pred [N, 4, 4] (or [N, 3, 4]), in the
  predictor's own frame; true poses T_i = [Q_i | d_i], c2w_true [N, 4, 4].
  angle(A, B) = |log(A^T B)| in degrees, the geodesic distance of rotations, in
  [0, 180] (`geodesic_deg`).
  spread(x) = sqrt(mean_i |x_i - mean x|^2), the RMS distance of points [N, 3] to
  their centroid.
  A similarity (s, G, t) maps a pose to [G R_i | s G c_i + t] (`Alignment.apply`).

Alignment (`align`). Pose-free cameras live in an arbitrary frame, so the aligned
errors are measured after mapping them into the true frame by one of:
  * similarity: (s, G, t) = the least-squares fit d_i ~ s G c_i + t of the centres
    (Umeyama 1991; `fit_similarity`, the float64 twin of `cameras.umeyama`);
  * orientation only: G = argmin_G sum_i |G R_i - Q_i|_F^2, the Procrustes rotation
    of M = sum_i Q_i R_i^T; then s, t are the least-squares fit of the centres with
    G fixed (s clipped at 0; s = 0 and every centre at mean d when the predicted
    centres coincide).
The similarity is used only when the centre fit is well conditioned
(`centre_fit_conditioned`): N >= 3, spread(c) >= MIN_SPREAD_RATIO spread(d), and
sigma_2 >= MIN_SINGULAR_RATIO sigma_1, sigma the singular values of the centre
cross-covariance C = mean_i (d_i - mean d)(c_i - mean c)^T [3, 3]. The first
condition catches collapsed predictions (LLFF Fern: spread 0.04 against 0.22;
there the fitted G follows the noise of the collapsed centres, 110 deg aligned
error); the spreads are compared unaligned, which assumes the predicted frame has
about the true frame's scale (in NeRF lifting the candidate cameras' radius
model.camera_radius is set to the scene's camera distance). The second catches correspondences that are nearly
one-dimensional (collinear true or predicted centres): there the rotation about
that line is unconstrained. Coplanar centres with a two-dimensional spread (a
360-degree ring) pass, since a rank-2 C fixes G with det G = +1. A perfect but
mis-scaled prediction that fails the test is still aligned exactly (the
orientations fix G, the centres then fix s and t).

Errors: aligned rot_err_i = angle(G R_i, Q_i); unaligned angle(R_i, Q_i);
trans_err_i = |s G c_i + t - d_i| (true scene units).

Frames (`frame_offset_deg`, `rot_err_in_frame`): angle(G, I), the rotation between the
predictor's frame and the true one, is how much of an unaligned error one global
rotation explains (pose-free cameras are registered only up to that gauge); held-out
cameras can be scored in the frame fitted on other (training) views, which fits
nothing to the views being scored; their centre spread likewise
(`spread_ratio_in_frame`: the training fit's scale s replaces the equal-scale
assumption of the unaligned ratio).

Constant baseline (`best_constant_rotation`): R* = argmin_R mean_i angle(R, Q_i),
the geodesic L1 mean of the true rotations. A predictor that outputs one pose for
every image (one rotation, whatever the centres) scores at least
mean_i angle(R*, Q_i), aligned (G R is again one rotation) or not; an error near it says the orientations carry no per-view
information. The reported median is that of the same R*'s errors (R* minimises
the mean, not the median).
"""
from __future__ import annotations

import flax
import numpy as np

MIN_SPREAD_RATIO = 0.25    # spread(c) / spread(d) below this: collapsed prediction
MIN_SINGULAR_RATIO = 0.1   # sigma_2 / sigma_1 of C below this: ~1-D correspondence
_NEAR_PI_SIN = 0.5         # below this sin(theta) (with cos < 0) log reads the axis from R + R^T
_WEISZFELD_ITERS = 100
_WEISZFELD_TOL = 1e-12     # radians: stop when the step is this small
_WEISZFELD_EPS = 1e-12     # radians: distance floor of the 1 / distance weights


# ====================================================================== rotations


def _vee(m: np.ndarray) -> np.ndarray:
    """[..., 3] vee(m - m^T) of m [..., 3, 3] (= 2 sin(theta) axis for a rotation)."""
    return np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1)


def rotation_log(r: np.ndarray) -> np.ndarray:
    """Axis-angle vectors [..., 3] (|v| = theta in [0, pi], radians) of rotations [..., 3, 3].

    theta = atan2(|vee(R - R^T)| / 2, (tr R - 1) / 2); the axis a is vee / (2 sin theta),
    except beyond 150 deg (sin < 0.5, cos < 0), where vee loses precision and a is the
    largest column of (R + R^T) / 2 - cos(theta) I = (1 - cos theta) a a^T, signed
    along vee. Accurate to float64 rounding at every angle.
    """
    r = np.asarray(r, np.float64)
    w = _vee(r)
    sin = 0.5 * np.linalg.norm(w, axis=-1)
    cos = 0.5 * (np.trace(r, axis1=-2, axis2=-1) - 1.0)
    theta = np.arctan2(sin, cos)
    factor = np.where(sin > 0.0, theta / np.where(sin > 0.0, 2.0 * sin, 1.0), 0.5)
    generic = factor[..., None] * w
    sym = 0.5 * (r + np.swapaxes(r, -1, -2)) - cos[..., None, None] * np.eye(3)
    k = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), axis=-1)
    column = np.take_along_axis(sym, k[..., None, None], axis=-1)[..., 0]
    axis = column / np.maximum(np.linalg.norm(column, axis=-1, keepdims=True), 1e-300)
    axis = np.where(np.sum(axis * w, -1, keepdims=True) < 0.0, -axis, axis)
    near_pi = (sin < _NEAR_PI_SIN) & (cos < 0.0)
    return np.where(near_pi[..., None], theta[..., None] * axis, generic)


def rotation_exp(v: np.ndarray) -> np.ndarray:
    """Rotations [..., 3, 3] of axis-angle vectors v [..., 3] (Rodrigues, float64)."""
    v = np.asarray(v, np.float64)
    theta = np.linalg.norm(v, axis=-1)[..., None, None]
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = np.zeros_like(x)
    k = np.stack([np.stack([o, -z, y], -1), np.stack([z, o, -x], -1),
                  np.stack([-y, x, o], -1)], -2)
    small = theta < 1e-4
    t = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta ** 2 / 6.0, np.sin(t) / t)
    b = np.where(small, 0.5 - theta ** 2 / 24.0, 2.0 * (np.sin(0.5 * t) / t) ** 2)
    return np.eye(3) + a * k + b * (k @ k)


def geodesic_deg(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """angle(r1, r2) [...] in degrees of rotations [..., 3, 3] (broadcast)."""
    rel = np.swapaxes(np.asarray(r1, np.float64), -1, -2) @ np.asarray(r2, np.float64)
    return np.rad2deg(np.linalg.norm(rotation_log(rel), axis=-1))


def project_to_rotation(m: np.ndarray) -> np.ndarray:
    """The rotation [3, 3] nearest to m [3, 3] in Frobenius norm (det +1): argmax_G tr(G^T m)."""
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64))
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt


# ===================================================================== alignment


@flax.struct.dataclass
class Alignment:
    """x -> scale * rotation @ x + translation, and which fit produced it."""
    scale: np.ndarray        # []
    rotation: np.ndarray     # [3, 3]
    translation: np.ndarray  # [3]
    orientation_only: bool = flax.struct.field(pytree_node=False, default=False)

    def apply(self, c2w: np.ndarray) -> np.ndarray:
        """Aligned cameras [N, 4, 4] (float64) of c2w [N, 4, 4] or [N, 3, 4]."""
        c2w = np.asarray(c2w, np.float64)
        out = np.tile(np.eye(4), (len(c2w), 1, 1))
        out[:, :3, :3] = self.rotation @ c2w[:, :3, :3]
        out[:, :3, 3] = self.scale * c2w[:, :3, 3] @ self.rotation.T + self.translation
        return out


def centre_spread(centres: np.ndarray) -> float:
    """spread(x): RMS distance of points [N, 3] to their centroid."""
    x = np.asarray(centres, np.float64)
    return float(np.sqrt(np.mean(np.sum((x - x.mean(0)) ** 2, -1))))


def spread_ratio(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> float:
    """spread(c) / spread(d) of the unaligned centres of [N, 4, 4] cameras (NaN when the
    true centres coincide)."""
    true = centre_spread(np.asarray(c2w_true)[:, :3, 3])
    pred = centre_spread(np.asarray(c2w_pred)[:, :3, 3])
    return pred / true if true > 0.0 else float("nan")


def _cross_covariance(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """C [3, 3] = mean_i (dst_i - mean dst)(src_i - mean src)^T of points [N, 3]."""
    return (dst - dst.mean(0)).T @ (src - src.mean(0)) / len(src)


def centre_fit_conditioned(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> bool:
    """Whether the similarity fit of the centres of [N, 4, 4] cameras is well posed:
    N >= 3, spread ratio >= MIN_SPREAD_RATIO and sigma_2 / sigma_1 of the centre
    cross-covariance >= MIN_SINGULAR_RATIO (module docstring)."""
    src = np.asarray(c2w_pred, np.float64)[:, :3, 3]
    dst = np.asarray(c2w_true, np.float64)[:, :3, 3]
    if len(src) < 3 or not spread_ratio(c2w_pred, c2w_true) >= MIN_SPREAD_RATIO:
        return False
    sv = np.linalg.svd(_cross_covariance(src, dst), compute_uv=False)
    return bool(sv[1] >= MIN_SINGULAR_RATIO * sv[0])


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Alignment:
    """Least-squares similarity dst ~ s G src + t (Umeyama 1991, det G = +1) of points
    [N, 3] (N >= 3, not collinear; float64 version of `fdm.nerf.cameras.umeyama`)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    cov = _cross_covariance(src, dst)
    u, sv, vt = np.linalg.svd(cov)
    signs = np.array([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rot = (u * signs) @ vt
    scale = np.sum(sv * signs) / np.mean(np.sum((src - src.mean(0)) ** 2, -1))
    return Alignment(scale, rot, dst.mean(0) - scale * rot @ src.mean(0))


def fit_orientations(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> Alignment:
    """Orientation-only alignment of [N, 4, 4] cameras: G = Procrustes of
    sum_i Q_i R_i^T, then the least-squares s >= 0 and t of the centres with G fixed."""
    pred, true = np.asarray(c2w_pred, np.float64), np.asarray(c2w_true, np.float64)
    rot = project_to_rotation(np.einsum("nij,nkj->ik", true[:, :3, :3], pred[:, :3, :3]))
    src, dst = pred[:, :3, 3], true[:, :3, 3]
    xs, xd = src - src.mean(0), dst - dst.mean(0)
    var = np.sum(xs * xs)
    scale = max(0.0, np.sum((xs @ rot.T) * xd) / var) if var > 1e-24 else 0.0
    return Alignment(np.float64(scale), rot, dst.mean(0) - scale * rot @ src.mean(0),
                     orientation_only=True)


def align(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> Alignment:
    """The similarity fit of the centres when `centre_fit_conditioned`, else the
    orientation-only alignment; cameras [N, 4, 4]."""
    if centre_fit_conditioned(c2w_pred, c2w_true):
        return fit_similarity(np.asarray(c2w_pred)[:, :3, 3], np.asarray(c2w_true)[:, :3, 3])
    return fit_orientations(c2w_pred, c2w_true)


def align_cameras(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> np.ndarray:
    """Predicted cameras [N, 4, 4] mapped into the true frame by `align` (float64).
    Coinciding predicted centres (an untrained encoder) all map to the true centroid."""
    return align(c2w_pred, c2w_true).apply(c2w_pred)


def frame_offset_deg(alignment: Alignment) -> float:
    """angle(G, I) in degrees: the global rotation of an `Alignment` (module docstring)."""
    return float(geodesic_deg(np.asarray(alignment.rotation, np.float64), np.eye(3)))


def rot_err_in_frame(alignment: Alignment, c2w_pred: np.ndarray,
                     c2w_true: np.ndarray) -> np.ndarray:
    """[N] angle(G R_i, Q_i) in degrees: cameras [N, 4, 4] scored after an alignment
    fitted elsewhere (e.g. on the training views' predictions)."""
    aligned = alignment.apply(c2w_pred)
    return geodesic_deg(aligned[:, :3, :3], np.asarray(c2w_true, np.float64)[:, :3, :3])


def spread_ratio_in_frame(alignment: Alignment, c2w_pred: np.ndarray,
                          c2w_true: np.ndarray) -> float:
    """spread(s G c_i + t) / spread(d_i) = s spread(c) / spread(d): the centre-spread ratio
    of cameras [N, 4, 4] mapped by an alignment fitted elsewhere (e.g. on the training
    views). Unlike `spread_ratio` it does not assume the predicted frame has the true
    frame's scale: a pose-free NeRF fixes its own (in NDC, LLFF) and s carries it."""
    return float(alignment.scale) * spread_ratio(c2w_pred, c2w_true)


# ====================================================================== baseline


def best_constant_rotation(rotations: np.ndarray) -> np.ndarray:
    """R* [3, 3] = argmin_R mean_i angle(R, Q_i) of rotations Q [N, 3, 3].

    Starts at the chordal mean (the projection of sum_i Q_i onto SO(3)) and runs
    Weiszfeld steps on the geodesic L1 cost (Hartley et al. 2011):
    v_i = log(R^T Q_i), R <- R exp(sum_i v_i / |v_i| / sum_i 1 / |v_i|). Returns the
    best of the result and the Q_i themselves (the minimiser may be a data point,
    where Weiszfeld converges slowly).
    """
    q = np.asarray(rotations, np.float64)
    r = project_to_rotation(q.sum(0))
    for _ in range(_WEISZFELD_ITERS):
        v = rotation_log(r.T @ q)
        w = 1.0 / np.maximum(np.linalg.norm(v, axis=-1), _WEISZFELD_EPS)
        step = (w[:, None] * v).sum(0) / w.sum()
        r = r @ rotation_exp(step)
        if np.linalg.norm(step) < _WEISZFELD_TOL:
            break
    candidates = np.concatenate([r[None], q])
    cost = geodesic_deg(candidates[:, None], q[None]).mean(-1)
    return candidates[int(np.argmin(cost))]


# ====================================================================== summary


@flax.struct.dataclass
class PoseEvaluation:
    """Per-camera errors of N predicted cameras against the truth (module docstring)."""
    rot_err_deg: np.ndarray            # [N] aligned
    rot_err_deg_unaligned: np.ndarray  # [N]
    trans_err: np.ndarray              # [N] true scene units, after the alignment
    const_err_deg: np.ndarray          # [N] angle(R*, Q_i) of the best constant rotation
    const_rotation: np.ndarray         # [3, 3] R*
    spread_ratio: np.ndarray           # [] spread(c) / spread(d), unaligned
    aligned: np.ndarray                # [N, 4, 4] the predicted cameras after the alignment
    alignment: Alignment


def evaluate_poses(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> PoseEvaluation:
    """All pose metrics of predicted cameras c2w_pred [N, 4, 4] against c2w_true [N, 4, 4]."""
    pred, true = np.asarray(c2w_pred, np.float64), np.asarray(c2w_true, np.float64)
    alignment = align(pred, true)
    aligned = alignment.apply(pred)
    const = best_constant_rotation(true[:, :3, :3])
    return PoseEvaluation(
        rot_err_deg=geodesic_deg(aligned[:, :3, :3], true[:, :3, :3]),
        rot_err_deg_unaligned=geodesic_deg(pred[:, :3, :3], true[:, :3, :3]),
        trans_err=np.linalg.norm(aligned[:, :3, 3] - true[:, :3, 3], axis=-1),
        const_err_deg=geodesic_deg(const, true[:, :3, :3]),
        const_rotation=const, spread_ratio=np.float64(spread_ratio(pred, true)),
        aligned=aligned, alignment=alignment)
