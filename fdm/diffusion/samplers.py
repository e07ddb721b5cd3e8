"""Reverse-process samplers: ancestral (DDPM), DDIM, re-noising, DDIM inversion,
interpolation.

Notation as in `fdm.diffusion.schedules` (0-indexed t in [0, T), t = 0 least
noisy, abar_{-1} := 1 meaning "clean data"). A *denoiser* is
`fn(x_t [B, ...], t [B] int32) -> (pred, aux)`: `pred` is the eps- or
x0-prediction (`prediction="eps" | "x0"`), `aux` any pytree (e.g. FDM masks).

One step (these match `diffusers` exactly; see the tests):
  ancestral_step  == DDPMScheduler.step (no `set_timesteps`, prev_t = t - 1):
      x0_hat (clipped to [-1, 1] if clip_x0), mean = coef1_t x0_hat + coef2_t x_t,
      x_{t-1} = mean + [t > 0] sigma_t z, sigma_t^2 = beta~_t ("fixed_small") or
      beta_t ("fixed_large").
  ddim_step       == DDIMScheduler.step with set_alpha_to_one=True, steps_offset=0,
      use_clipped_model_output=False: eps_hat is the model's (unclipped) eps,
      x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - s^2) eps_hat + s z,
      s = eta sqrt((1 - abar_prev)/(1 - abar_t) (1 - abar_t/abar_prev)),
      abar_prev = 1 when t_prev < 0 (the last step returns x0_hat).
  renoise_step    (seed 003 Eq. 6, diffusion with forward models; no diffusers
      counterpart, tested by its moments): the clean estimate re-noised to the next
      level, independently of x_t,
      x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) z,  z ~ N(0, I),
      i.e. q(x_prev | x0_hat) (Eq. 3.4) = DDIM with s^2 = 1 - abar_prev, which no single
      eta expresses (brief D1); the last step (t_prev < 0) returns x0_hat.

Timestep grids:
  ancestral: t_start, t_start - 1, ..., 0 (t_start = T - 1 by default).
  DDIM and re-noising: diffusers' "leading" spacing, t_i = i * (T // N),
  i = N-1, ..., 0; with an explicit t_start instead round(linspace(0, t_start, N))
  (so the grid ends exactly at t_start: used by inversion to t_end and by decoding
  from it).
  DDIM inversion walks the same grid upwards: clean -> t_0 -> ... -> t_{N-1}; the
  step to t_i evaluates the denoiser at (x_{t_{i-1}}, t_i) (the convention of
  diffusers' DDIMInverseScheduler), so the sampler later calls the model at the
  same timesteps.

Execution: the whole loop runs on device in chunks of `chunk_size` steps; each
chunk is one call of a module-level jitted function (compiled once per
configuration and reused for every chunk and every later call with the same
denoiser structure) and a tqdm bar advances per chunk (`progress=False` turns it
off). Per-step noise is `jax.random.normal(jax.random.fold_in(rng, t), ...)`
with t the timestep at which the denoiser is called, so samples do not depend
on chunking. Denoiser arrays should be pytree leaves, e.g.
`jax.tree_util.Partial(apply_fn, params)`: they are then passed to the jitted
chunk as arguments; arrays captured by a plain closure get baked in as constants.

Recording (`record_every=k`): at loop steps 0, k, 2k, ... the input x_t, the
denoiser's aux and t are stored in `SampleOutput.trajectory`
([K, B, ...] with K = ceil(num_steps / k)). `SampleOutput.aux` is always the aux
of the last denoiser call (t = 0 for ancestral sampling, the paper's t = 1).
`with_x0_hat(fn, ...)` adds the prediction x0_hat(x_t) (Eq. 3.15) to the aux, so a
recorded trajectory shows progressive generation (seed 004 Fig. 3.6).
"""
from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm.auto import tqdm

from fdm.diffusion.process import PREDICTIONS, extract, q_posterior, q_sample, to_x0_and_eps
from fdm.diffusion.reverse import LEARNED_VARIANCES, VARIANCES, reverse_log_variance, split_output
from fdm.diffusion.schedules import DiffusionSchedule
from fdm.errors import UserError


@flax.struct.dataclass
class Trajectory:
    """Recorded states: t [K] int32, x_t [K, B, ...] (denoiser input), aux (leaves [K, ...])."""
    t: jnp.ndarray
    x_t: jnp.ndarray
    aux: Any


@flax.struct.dataclass
class SampleOutput:
    """x0: final sample [B, ...]; aux: aux of the last denoiser call; trajectory or None."""
    x0: jnp.ndarray
    aux: Any
    trajectory: Optional[Trajectory] = None


@flax.struct.dataclass
class InversionOutput:
    """x_t: latent [B, ...] at timestep `t` (static int); aux of the last call; trajectory."""
    x_t: jnp.ndarray
    aux: Any
    trajectory: Optional[Trajectory] = None
    t: int = flax.struct.field(pytree_node=False, default=0)


# ----------------------------------------------------------------------------- one step


def _check(name: str, value, choices) -> None:
    if value not in choices:
        raise UserError(f"{name}={value!r} is not supported; use one of {tuple(choices)}")


def _levels(schedule: DiffusionSchedule, t, ndim: int):
    """(sqrt(abar_t), sqrt(1 - abar_t)) broadcast for `ndim`-dim arrays; (1, 0) where t < 0.

    Uses the float64-derived arrays, so 1 - abar keeps its precision near t = 0.
    """
    t = jnp.asarray(t)
    idx = jnp.maximum(t, 0)
    sa = extract(schedule.sqrt_alphas_cumprod, idx, ndim)
    s1m = extract(schedule.sqrt_one_minus_alphas_cumprod, idx, ndim)
    valid = (t >= 0).reshape(sa.shape) if t.ndim else t >= 0
    return jnp.where(valid, sa, 1.0), jnp.where(valid, s1m, 0.0)


def ancestral_step(schedule: DiffusionSchedule, pred, x_t, t, noise=None, prediction: str = "eps",
                   variance: str = "fixed_small", clip_x0: bool = True):
    """One DDPM step x_t -> x_{t-1} (Alg. 4; == diffusers DDPMScheduler.step).

    pred: [B, ..., C], or [B, ..., 2C] with a learned variance (`fdm.diffusion.reverse`);
    x_t, noise: [B, ..., C]; t: scalar or [B] int. noise=None returns the mean.
    Returns (x_{t-1} [B, ...], x0_hat [B, ...]); no noise is added where t == 0.
    """
    _check("prediction", prediction, PREDICTIONS)
    _check("variance", variance, VARIANCES)
    pred, var_out = split_output(pred, variance, x_t.shape[-1])
    x0_hat, _ = to_x0_and_eps(schedule, pred, x_t, t, prediction)
    if clip_x0:
        x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    mean, var, _ = q_posterior(schedule, x0_hat, x_t, t)
    if noise is None:
        return mean, x0_hat
    if variance == "fixed_large":
        var = extract(schedule.betas, t, x_t.ndim)
    elif variance in LEARNED_VARIANCES:
        var = jnp.exp(reverse_log_variance(schedule, t, variance, var_out, x_t.ndim))
    nonzero = extract(jnp.arange(schedule.num_timesteps) > 0, t, x_t.ndim)  # no noise at t = 0
    return mean + jnp.where(nonzero, jnp.sqrt(var), 0.0) * noise, x0_hat


def _ddim_update(pred, x, level_from, level_to, noise, eta, prediction: str, clip_x0: bool):
    """Generalised DDIM move between noise levels given as (sqrt(abar), sqrt(1 - abar)) pairs
    (either may be (1, 0) = clean). For x0-predictions eps_hat uses the `from` level, or the
    `to` level when `from` is clean (the first inversion step). Returns (x_to, x0_hat).
    """
    _check("prediction", prediction, PREDICTIONS)
    (sa_from, s1m_from), (sa_to, s1m_to) = level_from, level_to
    if prediction == "eps":
        eps = pred
        x0_hat = (x - s1m_from * pred) / sa_from
    else:
        x0_hat = pred
        clean = s1m_from == 0.0
        sa_c, s1m_c = jnp.where(clean, sa_to, sa_from), jnp.where(clean, s1m_to, s1m_from)
        eps = (x - sa_c * pred) / s1m_c
    if clip_x0:
        x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    x_to = sa_to * x0_hat
    if eta != 0:  # sigma^2 = (1 - abar_to)/(1 - abar_from) * (1 - abar_from/abar_to)
        var = (s1m_to / s1m_from) ** 2 * (1.0 - (sa_from / sa_to) ** 2)
        sigma = eta * jnp.sqrt(var)
        x_to = x_to + jnp.sqrt(s1m_to**2 - sigma**2) * eps
        return (x_to if noise is None else x_to + sigma * noise), x0_hat
    return x_to + s1m_to * eps, x0_hat


def ddim_step(schedule: DiffusionSchedule, pred, x_t, t, t_prev, noise=None, eta: float = 0.0,
              prediction: str = "eps", clip_x0: bool = True):
    """One DDIM step x_t -> x_{t_prev} (== diffusers DDIMScheduler.step, set_alpha_to_one=True).

    pred, x_t, noise: [B, ...]; t, t_prev: scalar or [B] int, t_prev = -1 means
    "to clean data" (abar = 1). eta is a Python float; noise is only used when eta > 0.
    Returns (x_{t_prev} [B, ...], x0_hat [B, ...]).
    """
    level_t, level_prev = _levels(schedule, t, x_t.ndim), _levels(schedule, t_prev, x_t.ndim)
    return _ddim_update(pred, x_t, level_t, level_prev, noise, eta, prediction, clip_x0)


def _renoise_update(pred, x, level_from, level_to, noise, prediction: str, clip_x0: bool):
    """x_to = sqrt(abar_to) x0_hat + sqrt(1 - abar_to) noise (Eq. 6 of seed 003) between
    levels given as (sqrt(abar), sqrt(1 - abar)); noise=None gives the mean. Returns
    (x_to, x0_hat)."""
    _check("prediction", prediction, PREDICTIONS)
    (sa_from, s1m_from), (sa_to, s1m_to) = level_from, level_to
    x0_hat = (x - s1m_from * pred) / sa_from if prediction == "eps" else pred
    if clip_x0:
        x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    x_to = sa_to * x0_hat
    return (x_to if noise is None else x_to + s1m_to * noise), x0_hat


def renoise_step(schedule: DiffusionSchedule, pred, x_t, t, t_prev, noise=None,
                 prediction: str = "x0", clip_x0: bool = True):
    """One re-noising step x_t -> x_{t_prev} (seed 003 Eq. 6 with C = sqrt(abar_prev),
    B = 1 - abar_prev): a draw of q(x_{t_prev} | x0_hat) (module doc).

    pred, x_t, noise: [B, ...]; t, t_prev: scalar or [B] int, t_prev = -1 means "to clean
    data" (returns x0_hat). x_t is read only to turn an eps-prediction into x0_hat.
    noise=None returns the mean sqrt(abar_prev) x0_hat.
    Returns (x_{t_prev} [B, ...], x0_hat [B, ...]).
    """
    level_t, level_prev = _levels(schedule, t, x_t.ndim), _levels(schedule, t_prev, x_t.ndim)
    return _renoise_update(pred, x_t, level_t, level_prev, noise, prediction, clip_x0)


# ----------------------------------------------------------------------------- grids


def ancestral_timesteps(num_timesteps: int, t_start: Optional[int] = None) -> np.ndarray:
    """Descending int32 grid [t_start + 1]: t_start, ..., 0 (t_start = T - 1 by default)."""
    t_start = num_timesteps - 1 if t_start is None else int(t_start)
    if not 0 <= t_start < num_timesteps:
        raise UserError(f"t_start={t_start} must be in [0, {num_timesteps})")
    return np.arange(t_start, -1, -1, dtype=np.int32)


def ddim_timesteps(num_timesteps: int, num_steps: int,
                   t_start: Optional[int] = None) -> np.ndarray:
    """Descending int32 DDIM grid [num_steps] (see the module docstring for the spacing)."""
    limit = num_timesteps if t_start is None else int(t_start) + 1
    if t_start is not None and not 0 <= t_start < num_timesteps:
        raise UserError(f"t_start={t_start} must be in [0, {num_timesteps})")
    if not 1 <= int(num_steps) <= limit:
        raise UserError(f"num_steps={num_steps} must be in [1, {limit}] for this timestep range")
    if t_start is None:
        ts = np.arange(num_steps) * (num_timesteps // num_steps)
    else:
        ts = np.round(np.linspace(0, t_start, num_steps))
    return ts[::-1].astype(np.int32)


# ----------------------------------------------------------------------------- x0_hat aux


def _x0_hat_denoiser(denoise_fn, schedule, prediction, variance, clip_x0, x_t, t):
    pred, aux = denoise_fn(x_t, t)
    out, _ = split_output(pred, variance, x_t.shape[-1])
    x0_hat, _ = to_x0_and_eps(schedule, out.astype(x_t.dtype), x_t, t, prediction)
    if clip_x0:
        x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    if aux is None:
        aux = {}
    if not isinstance(aux, dict):
        raise UserError("with_x0_hat needs a denoiser whose aux is a dict or None")
    return pred, {**aux, "x0_hat": x0_hat}


def with_x0_hat(denoise_fn: Callable, schedule: DiffusionSchedule, prediction: str = "eps",
                variance: str = "fixed_small", clip_x0: bool = True):
    """The denoiser `denoise_fn(x_t, t) -> (pred, aux)` with aux (a dict or None) extended by
    'x0_hat' [B, ...]: x0 predicted from x_t (Eq. 3.15), clipped as the samplers clip it."""
    _check("prediction", prediction, PREDICTIONS)
    _check("variance", variance, VARIANCES)
    return jax.tree_util.Partial(_x0_hat_denoiser, denoise_fn, schedule, prediction, variance,
                                 bool(clip_x0))


# ----------------------------------------------------------------------------- jitted loop


class _Ref:
    """Hashable-by-identity holder for non-array denoiser leaves (functions, modules)."""

    def __init__(self, value):
        self.value = value
        if isinstance(value, types.MethodType):  # fresh bound-method objects per access
            self._key = (id(value.__self__), value.__func__)
        else:
            self._key = id(value)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Ref) and self._key == other._key


def partition_denoiser(fn):
    """Split a denoiser pytree into (hashable static part, list of array leaves): what a
    jitted loop (here and `fdm.diffusion.likelihood.bpd_loop`) takes as static / traced."""
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    is_array = tuple(isinstance(v, (jax.Array, np.ndarray)) for v in leaves)
    static = tuple(None if a else _Ref(v) for v, a in zip(leaves, is_array))
    dynamic = [v for v, a in zip(leaves, is_array) if a]
    return (treedef, is_array, static), dynamic


def combine_denoiser(static, dynamic):
    """The denoiser back from `partition_denoiser`'s two parts."""
    treedef, is_array, refs = static
    dyn = iter(dynamic)
    leaves = [next(dyn) if a else r.value for a, r in zip(is_array, refs)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


@dataclasses.dataclass(frozen=True)
class _LoopConfig:
    kind: str                  # "ancestral" | "ddim" | "renoise" | "invert"
    fn_static: Any
    num_steps: int
    chunk_size: int
    prediction: str = "eps"
    variance: str = "fixed_small"
    clip_x0: bool = True
    eta: float = 0.0
    record_every: Optional[int] = None
    noise_repeat: int = 1      # draw noise for B // r examples and tile r times


def _step_noise(cfg: _LoopConfig, rng, t, x):
    key = jax.random.fold_in(rng, t)
    shape = (x.shape[0] // cfg.noise_repeat,) + x.shape[1:]
    noise = jax.random.normal(key, shape, x.dtype)
    return jnp.tile(noise, (cfg.noise_repeat,) + (1,) * (x.ndim - 1))


def _update(cfg: _LoopConfig, schedule, pred, x, t_from, t_to, noise):
    if cfg.kind == "ancestral":
        return ancestral_step(schedule, pred, x, t_from, noise, cfg.prediction, cfg.variance,
                              cfg.clip_x0)[0]
    pred, _ = split_output(pred, cfg.variance, x.shape[-1])
    if cfg.kind == "renoise":
        return _renoise_update(pred, x, _levels(schedule, t_from, 0), _levels(schedule, t_to, 0),
                               noise, cfg.prediction, cfg.clip_x0)[0]
    eta = cfg.eta if cfg.kind == "ddim" else 0.0
    return _ddim_update(pred, x, _levels(schedule, t_from, 0), _levels(schedule, t_to, 0), noise,
                        eta, cfg.prediction, cfg.clip_x0)[0]


def _record(traj: Trajectory, i, every: int, t, x, aux) -> Trajectory:
    """Write (t, x, aux) into slot i // every when i % every == 0 (otherwise rewrite the slot)."""
    k, hit = i // every, i % every == 0
    put = lambda buf, v: buf.at[k].set(jnp.where(hit, v, buf[k]))  # noqa: E731
    return Trajectory(t=put(traj.t, t), x_t=put(traj.x_t, x),
                      aux=jax.tree_util.tree_map(put, traj.aux, aux))


def _loop_step(cfg: _LoopConfig, fn, schedule, plan, rng, i, carry):
    x, _, traj = carry
    t_model, t_from, t_to = plan[i, 0], plan[i, 1], plan[i, 2]
    pred, aux = fn(x, jnp.full((x.shape[0],), t_model, jnp.int32))
    needs_noise = (cfg.kind in ("ancestral", "renoise")
                   or (cfg.kind == "ddim" and cfg.eta != 0))
    noise = _step_noise(cfg, rng, t_model, x) if needs_noise else None
    x_next = _update(cfg, schedule, pred.astype(x.dtype), x, t_from, t_to, noise).astype(x.dtype)
    if traj is not None:
        traj = _record(traj, i, cfg.record_every, t_model, x, aux)
    return x_next, aux, traj


def _run_chunk_impl(cfg: _LoopConfig, fn_dynamic, schedule, plan, carry, start, rng):
    """Run loop steps [start, min(start + chunk_size, num_steps))."""
    fn = combine_denoiser(cfg.fn_static, fn_dynamic)
    stop = jnp.minimum(start + cfg.chunk_size, cfg.num_steps)
    body = lambda i, c: _loop_step(cfg, fn, schedule, plan, rng, i, c)  # noqa: E731
    return lax.fori_loop(start, stop, body, carry)


_run_chunk = jax.jit(_run_chunk_impl, static_argnums=0, donate_argnums=4)


_AUX_SHAPES: dict = {}      # (denoiser structure, its array shapes, x's shape) -> aux shapes
_AUX_SHAPES_MAX = 64


def _aux_shape(fn_static, fn_dynamic, denoise_fn, x):
    """ShapeDtypeStructs of the denoiser's aux at x [B, ...]. Tracing the denoiser costs
    as much as a compilation's front end (seconds for a U-Net), so the result is kept per
    denoiser structure and shapes, the key the chunk's jit cache uses as well: repeated
    sampling calls (batches of `generate`, benchmarks) trace it once."""
    key = (fn_static, tuple((v.shape, v.dtype) for v in fn_dynamic), x.shape, x.dtype)
    if key not in _AUX_SHAPES:
        if len(_AUX_SHAPES) >= _AUX_SHAPES_MAX:
            _AUX_SHAPES.pop(next(iter(_AUX_SHAPES)))
        t = jax.ShapeDtypeStruct((x.shape[0],), jnp.int32)
        _AUX_SHAPES[key] = jax.eval_shape(denoise_fn, jax.ShapeDtypeStruct(x.shape, x.dtype),
                                          t)[1]
    return _AUX_SHAPES[key]


def _initial_carry(aux_shape, x, num_steps: int, record_every: Optional[int]):
    aux0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)
    traj = None
    if record_every:
        k = math.ceil(num_steps / record_every)
        stack = lambda s: jnp.zeros((k,) + tuple(s.shape), s.dtype)  # noqa: E731
        traj = Trajectory(t=jnp.zeros((k,), jnp.int32), x_t=stack(x),
                          aux=jax.tree_util.tree_map(stack, aux_shape))
    return jnp.array(x, copy=True), aux0, traj


def _run_loop(kind, denoise_fn, schedule, x, rng, plan: np.ndarray, *, chunk_size: int,
              progress: bool, record_every: Optional[int], desc: str, **step_kw):
    """Drive the chunked jitted loop over `plan` [N, 3] = (t_model, t_from, t_to) rows.

    Returns (x [B, ...], aux of the last call, Trajectory or None).
    """
    if record_every is not None and int(record_every) < 1:
        raise UserError(f"record_every={record_every} must be a positive integer or None")
    if int(chunk_size) < 1:
        raise UserError(f"chunk_size={chunk_size} must be a positive integer")
    record_every = None if record_every is None else int(record_every)
    n = int(plan.shape[0])
    fn_static, fn_dynamic = partition_denoiser(denoise_fn)
    cfg = _LoopConfig(kind=kind, fn_static=fn_static, num_steps=n,
                      chunk_size=min(int(chunk_size), n), record_every=record_every, **step_kw)
    x = jnp.asarray(x)
    carry = _initial_carry(_aux_shape(fn_static, fn_dynamic, denoise_fn, x), x, n, record_every)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    plan = jnp.asarray(plan, jnp.int32)
    with tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, n, cfg.chunk_size):
            carry = _run_chunk(cfg, fn_dynamic, schedule, plan, carry, jnp.int32(start), rng)
            if progress:
                jax.block_until_ready(carry[0])
            bar.update(min(cfg.chunk_size, n - start))
    return carry


# ----------------------------------------------------------------------------- samplers


def _ancestral_plan(num_timesteps: int, t_start: Optional[int]) -> np.ndarray:
    """[N, 3] rows (t_model, t_from, t_to) = (t, t, t - 1) for t = t_start, ..., 0."""
    ts = ancestral_timesteps(num_timesteps, t_start)
    return np.stack([ts, ts, ts - 1], axis=1)


def ancestral_sample(denoise_fn: Callable, schedule: DiffusionSchedule, x_T, rng, *,
                     prediction: str = "eps", variance: str = "fixed_small", clip_x0: bool = True,
                     t_start: Optional[int] = None, record_every: Optional[int] = None,
                     chunk_size: int = 100, progress: bool = True) -> SampleOutput:
    """DDPM ancestral sampling (Alg. 4) from x_T [B, ...] at timestep t_start (T-1) down to 0.

    Returns SampleOutput(x0 [B, ...], aux of the t = 0 call, trajectory or None).
    """
    _check("prediction", prediction, PREDICTIONS)
    _check("variance", variance, VARIANCES)
    plan = _ancestral_plan(schedule.num_timesteps, t_start)
    x, aux, traj = _run_loop("ancestral", denoise_fn, schedule, x_T, rng, plan,
                             chunk_size=chunk_size, progress=progress, record_every=record_every,
                             desc="ancestral", prediction=prediction, variance=variance,
                             clip_x0=bool(clip_x0))
    return SampleOutput(x0=x, aux=aux, trajectory=traj)


def ddim_sample(denoise_fn: Callable, schedule: DiffusionSchedule, x_T, rng=None,
                num_steps: int = 50, eta: float = 0.0, *, prediction: str = "eps",
                variance: str = "fixed_small", clip_x0: bool = True,
                t_start: Optional[int] = None, record_every: Optional[int] = None,
                chunk_size: int = 100, progress: bool = True) -> SampleOutput:
    """DDIM sampling with `num_steps` denoiser calls on `ddim_timesteps(T, num_steps, t_start)`.

    x_T: [B, ...] at the grid's first timestep; rng may be None when eta == 0. DDIM
    ignores the reverse variance; a learned one only means the denoiser's output carries
    its variance channels, which are dropped.
    Returns SampleOutput(x0 [B, ...], aux of the last call, trajectory or None).
    """
    _check("prediction", prediction, PREDICTIONS)
    _check("variance", variance, VARIANCES)
    if eta < 0:
        raise UserError(f"ddim eta={eta} must be >= 0")
    if eta > 0 and rng is None:
        raise UserError("ddim_sample with eta > 0 needs an rng key")
    return _sample_down_ddim_grid("ddim", denoise_fn, schedule, x_T, rng, num_steps, t_start,
                                  chunk_size=chunk_size, progress=progress,
                                  record_every=record_every, prediction=prediction,
                                  variance=variance, clip_x0=bool(clip_x0), eta=float(eta))


def _sample_down_ddim_grid(kind: str, denoise_fn: Callable, schedule: DiffusionSchedule, x_T,
                           rng, num_steps: int, t_start: Optional[int],
                           **loop_kwargs) -> SampleOutput:
    """The `kind` loop ("ddim" | "renoise") down `ddim_timesteps(T, num_steps, t_start)`,
    each step from t_i to t_{i-1} (-1: clean data) with the model called at t_i."""
    ts = ddim_timesteps(schedule.num_timesteps, num_steps, t_start)
    plan = np.stack([ts, ts, np.append(ts[1:], -1)], axis=1)
    x, aux, traj = _run_loop(kind, denoise_fn, schedule, x_T, rng, plan, desc=kind,
                             **loop_kwargs)
    return SampleOutput(x0=x, aux=aux, trajectory=traj)


def renoise_sample(denoise_fn: Callable, schedule: DiffusionSchedule, x_T, rng,
                   num_steps: int = 50, *, prediction: str = "x0", variance: str = "fixed_small",
                   clip_x0: bool = True, t_start: Optional[int] = None,
                   record_every: Optional[int] = None, chunk_size: int = 100,
                   progress: bool = True) -> SampleOutput:
    """Re-noising sampler (seed 003 Eq. 4-6): on DDIM's grid `ddim_timesteps(T, num_steps,
    t_start)`, each step predicts x0_hat from x_t and draws the next x from
    q(x_{t_prev} | x0_hat) (`renoise_step`); the last step returns x0_hat.

    x_T: [B, ...] at the grid's first timestep; rng: the key of the per-step noise
    (fold_in(rng, t) at the call at t, as in the other samplers). A learned variance's
    extra output channels are dropped, as in DDIM.
    Returns SampleOutput(x0 [B, ...], aux of the last call, trajectory or None).
    """
    _check("prediction", prediction, PREDICTIONS)
    _check("variance", variance, VARIANCES)
    if rng is None:
        raise UserError("renoise_sample needs an rng key (every step but the last adds noise)")
    return _sample_down_ddim_grid("renoise", denoise_fn, schedule, x_T, rng, num_steps,
                                  t_start, chunk_size=chunk_size, progress=progress,
                                  record_every=record_every, prediction=prediction,
                                  variance=variance, clip_x0=bool(clip_x0))


def ddim_invert(denoise_fn: Callable, schedule: DiffusionSchedule, x0, num_steps: int = 50,
                t_end: Optional[int] = None, *, prediction: str = "eps", clip_x0: bool = False,
                record_every: Optional[int] = None, chunk_size: int = 100,
                progress: bool = True) -> InversionOutput:
    """Deterministic (eta = 0) DDIM inversion x0 [B, ...] -> x_t on the DDIM grid to t_end.

    Decode with `ddim_sample(..., num_steps=num_steps, t_start=t_end, eta=0)` (same
    grid; with t_end=None both use the leading grid).
    Returns InversionOutput(x_t [B, ...], aux, trajectory, t = last grid timestep).
    """
    _check("prediction", prediction, PREDICTIONS)
    ts = ddim_timesteps(schedule.num_timesteps, num_steps, t_end)[::-1]
    plan = np.stack([ts, np.append(-1, ts[:-1]), ts], axis=1)
    x, aux, traj = _run_loop("invert", denoise_fn, schedule, x0, None, plan,
                             chunk_size=chunk_size, progress=progress, record_every=record_every,
                             desc="ddim-invert", prediction=prediction, clip_x0=bool(clip_x0))
    return InversionOutput(x_t=x, aux=aux, trajectory=traj, t=int(ts[-1]))


def _unfold(tree, total: int, num: int, axis: int):
    """Reshape leaves whose `axis` has size total = num * B into (..., num, B, ...)."""
    def fold(a):
        if a.ndim <= axis or a.shape[axis] != total:
            return a
        return a.reshape(a.shape[:axis] + (num, total // num) + a.shape[axis + 1:])

    return jax.tree_util.tree_map(fold, tree)


def interpolate(denoise_fn: Callable, schedule: DiffusionSchedule, x0_a, x0_b, t: int, lambdas,
                rng, *, prediction: str = "eps", variance: str = "fixed_small",
                clip_x0: bool = True, record_every: Optional[int] = None, chunk_size: int = 100,
                progress: bool = True) -> SampleOutput:
    """Latent interpolation (seed 004 §3.4.4): x_t^a, x_t^b = q_sample(x0_a/b, t, SAME eps),
    x_t(l) = (1 - l) x_t^a + l x_t^b, decoded by ancestral sampling from t.

    x0_a, x0_b: [B, ...]; lambdas: [L]. The reverse-process noise is also shared
    across lambdas. Returns SampleOutput with x0 [L, B, ...], aux leaves and
    trajectory leaves with the L * B axis split into (L, B).
    """
    _check("prediction", prediction, PREDICTIONS)
    _check("variance", variance, VARIANCES)
    plan = _ancestral_plan(schedule.num_timesteps, int(t))
    x0_a, x0_b = jnp.asarray(x0_a), jnp.asarray(x0_b)
    if x0_a.shape != x0_b.shape:
        raise UserError(f"interpolate: x0_a {x0_a.shape} and x0_b {x0_b.shape} differ in shape")
    lam = jnp.asarray(lambdas, x0_a.dtype).reshape((-1,) + (1,) * x0_a.ndim)
    key_enc, key_dec = jax.random.split(rng)
    eps = jax.random.normal(key_enc, x0_a.shape, x0_a.dtype)
    x_a, x_b = q_sample(schedule, x0_a, int(t), eps), q_sample(schedule, x0_b, int(t), eps)
    num, batch = lam.shape[0], x0_a.shape[0]
    x_t = ((1.0 - lam) * x_a[None] + lam * x_b[None]).reshape((num * batch,) + x0_a.shape[1:])
    x, aux, traj = _run_loop("ancestral", denoise_fn, schedule, x_t, key_dec, plan,
                             chunk_size=chunk_size, progress=progress, record_every=record_every,
                             desc="interpolate", prediction=prediction, variance=variance,
                             clip_x0=bool(clip_x0), noise_repeat=num)
    total = num * batch
    return SampleOutput(x0=_unfold(x, total, num, 0), aux=_unfold(aux, total, num, 0),
                        trajectory=None if traj is None else _unfold(traj, total, num, 1))
