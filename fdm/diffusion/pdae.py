"""PDAE and DiffSiam math (seed 002, brief `shared/design/seed002.md`): the weighted
loss in which a decoder's output g shifts a frozen DM's prediction, DiffSiam's stage
map and segment masks, and the SimSiam loss. Pure functions, no flax modules.

Notation as in `fdm.diffusion.schedules` (0-indexed t in [0, T), abar_{-1} = 1):

    snr_t = abar_t / (1 - abar_t)
    lambda_t  = snr_t^gamma / (1 + snr_t)           PDAE's weight, gamma = 0.1 (eps space)
    lambda'_t = snr_t * lambda_t                    the same weight in x0 space
    s_t = -sqrt(alpha_t) (1 - abar_{t-1}) / sqrt(1 - abar_t)      eps shift (0 at t = 0)
    w_t = (1 - abar_{t-1}) / sqrt(abar_{t-1})                     x0 shift  (0 at t = 0)

The frozen DM predicts eps_theta(x_t, t) (equivalently x0_hat = u_theta(x_t, t) =
`predict_x0_from_eps`); the decoder's output g = g_phi(x_t, z, t) (it stands for
grad_{x_t} log p(z | x_t)) shifts it:

    eps_hat = eps_theta + s_t g          x0_hat = u_theta + w_t g
    L_t = lambda_t  ||eps - eps_hat||^2  = lambda'_t ||x0 - x0_hat||^2     (Eq. 3.11)

(norms are means over pixels). The two forms are one identity: x0 - x0_hat =
-(eps - eps_hat) / sqrt(snr_t) and w_t = -s_t / sqrt(snr_t). In the reverse process
the eps shift moves the posterior mean by beta~_t g, classifier guidance (Eq. 3.7).
With g = 0 the loss is the frozen DM's lambda-weighted eps loss, bit for bit.

DiffSiam (Eq. 3.9-3.12, Alg. 1): z [B, d] is split into n equal segments z_1..z_n; a
noise level t is served by stage k(t) in [1, n], and g sees z_bar_k = [z_1..z_k, 0..0]
("hierarchical") or only z_k ("sequential"). `sample_stages` draws (t, k) by the
stage map "bins" (k = floor(t n / T) + 1, the authors' code; the default, brief D1) or
"alg1_literal" (Alg. 1 as printed: k independent of t). SimSiam's loss is the
symmetrised negative cosine with a stop-gradient on the target (Eq. 3.9-3.10, D3).

Editing (Alg. 2, 3): `lerp_segments` is Alg. 2's z_S = lerp(z, z', S; lambda) on a
subset S of the segments, `slerp` its spherical interpolation of the inverted noises
x_T, x'_T (closed form below); Alg. 3's shifted code z' = z + lambda sigma * w / ||w||
is `fdm.metrics.probmask` (the direction) added to z.

    theta = arccos(<a, b> / (||a|| ||b||))
    slerp(a, b; lambda) = sin((1 - lambda) theta) / sin(theta) a
                          + sin(lambda theta) / sin(theta) b      (lerp when sin(theta) ~ 0)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fdm.diffusion.process import mean_flat
from fdm.diffusion.schedules import DiffusionSchedule
from fdm.errors import UserError

STAGE_MAPS = ("bins", "alg1_literal")
SEGMENT_MODES = ("hierarchical", "sequential")


def snr(schedule: DiffusionSchedule, t) -> jnp.ndarray:
    """snr_t = abar_t / (1 - abar_t); t: scalar or [B] ints -> same shape.

    Computed as 1 / sqrt(1/abar_t - 1)^2 from the float64-derived table, so it keeps
    full relative precision where 1 - abar_t is tiny (t near 0)."""
    return 1.0 / jnp.square(schedule.sqrt_recipm1_alphas_cumprod[jnp.asarray(t)])


def pdae_weight_from_snr(snr_t: jnp.ndarray, gamma: float = 0.1) -> jnp.ndarray:
    """PDAE's loss weight in eps space, lambda = snr^gamma / (1 + snr) (any shape).

    The x0-space weight of Eq. 3.11 is snr * lambda = snr^(1 + gamma) / (1 + snr)."""
    return snr_t ** gamma / (1.0 + snr_t)


def pdae_weight(schedule: DiffusionSchedule, t, gamma: float = 0.1) -> jnp.ndarray:
    """lambda_t = snr_t^gamma / (1 + snr_t) (module docstring); t: scalar or [B]."""
    return pdae_weight_from_snr(snr(schedule, t), gamma)


def eps_shift_coef(schedule: DiffusionSchedule, t) -> jnp.ndarray:
    """s_t = -sqrt(alpha_t) (1 - abar_{t-1}) / sqrt(1 - abar_t); t: scalar or [B].

    Written as -sqrt(alpha_t) beta~_t sqrt(1 - abar_t) / beta_t (beta~_t the posterior
    variance), which avoids the cancellation in 1 - abar_{t-1}; s_0 = 0."""
    t = jnp.asarray(t)
    return (-jnp.sqrt(schedule.alphas[t]) * schedule.posterior_variance[t]
            * schedule.sqrt_one_minus_alphas_cumprod[t] / schedule.betas[t])


def x0_shift_coef(schedule: DiffusionSchedule, t) -> jnp.ndarray:
    """w_t = (1 - abar_{t-1}) / sqrt(abar_{t-1}) = -s_t / sqrt(snr_t) (Eq. 3.11's
    "compensate strength"); t: scalar or [B]; w_0 = 0."""
    t = jnp.asarray(t)
    return -eps_shift_coef(schedule, t) * schedule.sqrt_recipm1_alphas_cumprod[t]


def guided_eps(schedule: DiffusionSchedule, eps_pred: jnp.ndarray, g: jnp.ndarray,
               t) -> jnp.ndarray:
    """eps_hat = eps_theta + s_t g. eps_pred, g: [B, ...]; t: [B] -> [B, ...]."""
    return eps_pred + _broadcast(eps_shift_coef(schedule, t), eps_pred.ndim) * g


def guided_x0(schedule: DiffusionSchedule, x0_pred: jnp.ndarray, g: jnp.ndarray,
              t) -> jnp.ndarray:
    """x0_hat = u_theta + w_t g (Eq. 3.11, and the guided x0 of Alg. 2/3).
    x0_pred, g: [B, ...]; t: [B] -> [B, ...]."""
    return x0_pred + _broadcast(x0_shift_coef(schedule, t), x0_pred.ndim) * g


def pdae_loss(schedule: DiffusionSchedule, eps: jnp.ndarray, eps_pred: jnp.ndarray,
              g: jnp.ndarray, t, gamma: float = 0.1) -> jnp.ndarray:
    """Per-example PDAE loss [B]: lambda_t mean_pixels (eps - (eps_theta + s_t g))^2.

    eps: the noise in x_t = q_sample(x_0, t, eps); eps_pred: the frozen DM's eps_theta(x_t,
    t); g: the decoder output; all [B, ...]; t: [B] ints (the true noise level). Equal
    to Eq. 3.11, lambda'_t mean (x0 - (u_theta + w_t g))^2 (module docstring)."""
    err = eps - guided_eps(schedule, eps_pred, g, t)
    return pdae_weight(schedule, t, gamma) * mean_flat(jnp.square(err))


def stage_of_timestep(t, num_timesteps: int, num_segments: int) -> jnp.ndarray:
    """The stage k(t) = floor(t n / T) + 1 in [1, n] of the "bins" map (brief D1; the
    authors' code): the T timesteps split into n equal bins, the least noisy first.
    t: scalar or [B] ints in [0, T) -> int32 of t's shape."""
    _check_segments(num_timesteps, num_segments)
    return (jnp.asarray(t, jnp.int32) * num_segments) // num_timesteps + 1


def sample_stages(rng: jax.Array, batch: int, num_timesteps: int, num_segments: int,
                  stage_map: str = "bins"):
    """Draws the noise level t [B] (0-indexed, int32) and the stage k [B] in [1, n].

    "bins": t ~ U{0..T-1}, k = `stage_of_timestep(t)`.
    "alg1_literal": Alg. 1 as printed: t' ~ U{1..T-n}, k ~ U{1..n} independently,
    x is noised to t' + k; returned 0-indexed, t = t' + k - 1 in [1, T-1]. The
    caller evaluates u_theta, g and every coefficient at this true noise level t
    (Alg. 1 evaluates them at t'; brief D1 settles on the true level).
    """
    _check_segments(num_timesteps, num_segments)
    key_t, key_k = jax.random.split(rng)
    if stage_map == "bins":
        t = jax.random.randint(key_t, (batch,), 0, num_timesteps, dtype=jnp.int32)
        return t, stage_of_timestep(t, num_timesteps, num_segments)
    if stage_map == "alg1_literal":
        if num_segments >= num_timesteps:
            raise UserError(f"stage_map 'alg1_literal' needs num_segments < num_timesteps "
                            f"(got {num_segments} >= {num_timesteps})")
        t_base = jax.random.randint(key_t, (batch,), 0, num_timesteps - num_segments,
                                    dtype=jnp.int32)
        k = jax.random.randint(key_k, (batch,), 1, num_segments + 1, dtype=jnp.int32)
        return t_base + k, k
    raise UserError(f"stage_map={stage_map!r}; use one of {STAGE_MAPS}")


def segment_of_dims(z_dim: int, num_segments: int) -> jnp.ndarray:
    """The 1-based segment of each of the d dims of z: [d] int32, d/n dims per segment."""
    if num_segments < 1 or z_dim % num_segments:
        raise UserError(f"z_dim={z_dim} must split into num_segments={num_segments} "
                        "equal segments")
    return jnp.arange(z_dim, dtype=jnp.int32) // (z_dim // num_segments) + 1


def masked_z(z: jnp.ndarray, k, num_segments: int, mode: str = "hierarchical",
             detach_prev: bool = False) -> jnp.ndarray:
    """z_bar_k, the part of z that g sees at stage k (Sec. 3.2, Fig. 4.8).

    z: [B, d] with d divisible by n; k: [B] (or scalar) ints in [1, n].
    "hierarchical": [z_1, ..., z_k, 0, ..., 0];  "sequential": [0, .., z_k, .., 0].
    detach_prev (hierarchical only; Sec. 4.3.2, brief D2): z_1..z_{k-1} pass through a
    stop-gradient, so only z_k is trained at stage k. Returns [B, d]."""
    if mode not in SEGMENT_MODES:
        raise UserError(f"segment mode={mode!r}; use one of {SEGMENT_MODES}")
    if detach_prev and mode != "hierarchical":
        raise UserError("detach_prev applies to the hierarchical mode only")
    seg = segment_of_dims(z.shape[-1], num_segments)[None, :]
    k = jnp.reshape(jnp.asarray(k, jnp.int32), (-1, 1))
    zeros = jnp.zeros_like(z)
    if mode == "sequential":
        return jnp.where(seg == k, z, zeros)
    prev = jax.lax.stop_gradient(z) if detach_prev else z
    return jnp.where(seg == k, z, jnp.where(seg < k, prev, zeros))


def lerp_segments(z: jnp.ndarray, z_other: jnp.ndarray, subset, lam,
                  num_segments: int) -> jnp.ndarray:
    """Alg. 2's z_S = lerp(z, z', S; lambda): z + lambda (z' - z) on the dims of the
    segments in S, z elsewhere. z, z_other: [B, d] (d divisible by n = num_segments);
    subset: 1-based segment indices in [1, n] (S of Alg. 2; empty: z); lam: a scalar.
    Returns [B, d]."""
    seg = segment_of_dims(z.shape[-1], num_segments)
    bad = [s for s in subset if not 1 <= int(s) <= num_segments]
    if bad:
        raise UserError(f"segments {bad} are not in [1, {num_segments}]; pass 1-based "
                        "segment indices")
    chosen = jnp.isin(seg, jnp.asarray(tuple(subset), jnp.int32))
    return jnp.where(chosen, z + lam * (z_other - z), z)


def slerp(a: jnp.ndarray, b: jnp.ndarray, lam, eps: float = 1e-7) -> jnp.ndarray:
    """Spherical linear interpolation per example (module docstring; Alg. 2's
    x_T <- slerp(x_T, x'_T; lambda)). a, b: [B, ...], the angle taken over all but the
    first axis; lam: a scalar or [B]. lam = 0 gives a, lam = 1 gives b; for ||a|| =
    ||b|| the norm is kept; where sin(theta) < eps (parallel inputs) it is the lerp
    (1 - lam) a + lam b. Returns [B, ...]."""
    flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    norms = jnp.linalg.norm(flat_a, axis=-1) * jnp.linalg.norm(flat_b, axis=-1)
    cos = jnp.sum(flat_a * flat_b, axis=-1) / jnp.maximum(norms, eps)
    theta = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
    sin = jnp.sin(theta)
    curved = sin >= eps
    safe = jnp.where(curved, sin, 1.0)
    lam = jnp.broadcast_to(jnp.asarray(lam, a.dtype), theta.shape)
    w_a = jnp.where(curved, jnp.sin((1.0 - lam) * theta) / safe, 1.0 - lam)
    w_b = jnp.where(curved, jnp.sin(lam * theta) / safe, lam)
    return _broadcast(w_a, a.ndim) * a + _broadcast(w_b, b.ndim) * b


def negative_cosine(p: jnp.ndarray, z: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
    """SimSiam's D(p, z) = -<p / ||p||, sg(z) / ||z||> (Eq. 3.10), per example.

    p: [B, D] the predictor's output; z: [B, D] the other view's projection, the
    target: it passes through a stop-gradient (SimSiam; Eq. 3.9 omits it, brief D3).
    Norms are clamped below at `eps` (torch `F.cosine_similarity`), as sqrt(max(|p|^2,
    eps^2)): the same value, and a finite gradient where p = 0 (a predictor whose
    ReLU layer is all zero for an example outputs its bias, 0 at init). Returns [B]."""
    z = jax.lax.stop_gradient(z)
    p_unit = p / _clamped_norm(p, eps)
    z_unit = z / _clamped_norm(z, eps)
    return -jnp.sum(p_unit * z_unit, axis=-1)


def simsiam_loss(p1: jnp.ndarray, p2: jnp.ndarray, z1: jnp.ndarray,
                 z2: jnp.ndarray) -> jnp.ndarray:
    """The symmetrised SimSiam loss (Eq. 3.9): D(p1, z2) / 2 + D(p2, z1) / 2.

    p_i = predictor(z_i), z_i = projection of view i; all [B, D]. Returns [B]; its
    batch mean is L_SimSiam, and Eq. 3.12's total is L_diffusion + L_SimSiam."""
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


def _clamped_norm(x: jnp.ndarray, eps: float) -> jnp.ndarray:
    """max(||x||, eps) over the last axis, [..., 1], written sqrt(max(sum x^2, eps^2)) so
    that its gradient at x = 0 is 0, not NaN."""
    return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))


def _broadcast(values: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """Per-example values [B] (or a scalar) shaped [B, 1, ..., 1] against `ndim` dims."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim)) if values.ndim else values


def _check_segments(num_timesteps: int, num_segments: int) -> None:
    if not 1 <= num_segments <= num_timesteps:
        raise UserError(f"num_segments={num_segments} must be in [1, num_timesteps="
                        f"{num_timesteps}]")
