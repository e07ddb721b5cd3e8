"""Beta schedules and the precomputed diffusion coefficients.

Notation (Ho et al. 2020, seed 004 ch. 3), with 0-indexed timesteps exactly as
in `diffusers`: t in [0, T), t = 0 is the least noisy step (the paper's t = 1).

    beta_t     forward variance, q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    alpha_t = 1 - beta_t
    abar_t  = prod_{s<=t} alpha_s            (`alphas_cumprod`)
    abar_{t-1}                               (`alphas_cumprod_prev`, = 1 at t = 0)
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                        (Eq. 3.4)
    beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t   (`posterior_variance`, 0 at t = 0)
    mu~_t(x_t, x_0) = coef1_t x_0 + coef2_t x_t                                (Eq. 3.7)
        coef1_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t)
        coef2_t = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)

Betas are computed in float64 numpy, every derived quantity is computed in
float64 and only then cast to float32 `jnp` arrays of shape [T].
`posterior_log_variance_clipped` follows Ho et al.'s code: log(beta~) with the
t = 0 entry (beta~_0 = 0) replaced by beta~_1; `log_betas_clipped` likewise is
log(beta) with the t = 0 entry replaced by log(beta~_1), the decoder variance of
their `fixedlarge` reverse process (seed 004 brief, part B).
"""
from __future__ import annotations

import math

import flax.struct
import jax.numpy as jnp
import numpy as np

from fdm.errors import UserError

# Accepted names -> canonical name; the diffusers spellings are aliases.
SCHEDULE_ALIASES = {
    "linear": "linear",
    "cosine": "cosine",
    "squaredcos_cap_v2": "cosine",
    "quadratic": "quadratic",
    "scaled_linear": "quadratic",
}


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Ho et al.: betas evenly spaced in [beta_start, beta_end]. Returns float64 [T]."""
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def quadratic_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """`scaled_linear` in diffusers: linspace(sqrt(b0), sqrt(b1), T)**2. Returns float64 [T]."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal cosine schedule (`squaredcos_cap_v2`). Returns float64 [T].

    beta_t = min(1 - abar(t+1)/abar(t), max_beta), abar(u) = cos((u/T + s)/(1 + s) * pi/2)^2.
    """
    def abar(u):
        return math.cos((u / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - abar(i + 1) / abar(i), max_beta) for i in range(num_timesteps)]
    return np.asarray(betas, dtype=np.float64)


def make_betas(name: str, num_timesteps: int, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> np.ndarray:
    """Float64 betas [T] for a schedule name (`SCHEDULE_ALIASES`); cosine ignores beta range."""
    canonical = SCHEDULE_ALIASES.get(str(name))
    if canonical is None:
        raise UserError(f"unknown beta schedule {name!r}; use one of {sorted(SCHEDULE_ALIASES)}")
    if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 2:
        raise UserError(f"num_timesteps={num_timesteps!r} must be an integer >= 2")
    if canonical == "cosine":
        return cosine_betas(int(num_timesteps))
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise UserError(f"beta_start={beta_start}, beta_end={beta_end}: "
                        "need 0 < beta_start <= beta_end < 1")
    fn = linear_betas if canonical == "linear" else quadratic_betas
    return fn(int(num_timesteps), float(beta_start), float(beta_end))


def _coefficients(betas: np.ndarray) -> dict:
    """All derived float64 arrays [T] from float64 betas [T] (names as in `DiffusionSchedule`)."""
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    return dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=abar,
        alphas_cumprod_prev=abar_prev,
        sqrt_alphas_cumprod=np.sqrt(abar),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1.0),
        posterior_variance=post_var,
        posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])),
        log_betas_clipped=np.log(np.append(post_var[1], betas[1:])),
        posterior_mean_coef1=betas * np.sqrt(abar_prev) / (1.0 - abar),
        posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    )


@flax.struct.dataclass
class DiffusionSchedule:
    """Precomputed coefficient arrays (float32 unless built with another dtype), each of
    shape [T]; see the module docstring.

    A pytree (jit/vmap friendly); `num_timesteps` is static. Build with `create`
    or `from_config`, index with integer timesteps t in [0, T).
    """
    betas: jnp.ndarray
    alphas: jnp.ndarray
    alphas_cumprod: jnp.ndarray
    alphas_cumprod_prev: jnp.ndarray
    sqrt_alphas_cumprod: jnp.ndarray
    sqrt_one_minus_alphas_cumprod: jnp.ndarray
    sqrt_recip_alphas_cumprod: jnp.ndarray
    sqrt_recipm1_alphas_cumprod: jnp.ndarray
    posterior_variance: jnp.ndarray
    posterior_log_variance_clipped: jnp.ndarray
    log_betas_clipped: jnp.ndarray
    posterior_mean_coef1: jnp.ndarray
    posterior_mean_coef2: jnp.ndarray
    num_timesteps: int = flax.struct.field(pytree_node=False, default=1000)

    @classmethod
    def from_betas(cls, betas: np.ndarray, dtype=jnp.float32) -> "DiffusionSchedule":
        """Schedule from explicit betas [T] (computed in float64, stored as `dtype`;
        float64 needs `jax.enable_x64`, as the known-answer tests do)."""
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not np.all((betas > 0) & (betas < 1)):
            raise UserError("betas must be a 1-D array with every value in (0, 1)")
        arrays = {k: jnp.asarray(v, dtype=dtype) for k, v in _coefficients(betas).items()}
        return cls(num_timesteps=int(betas.shape[0]), **arrays)

    @classmethod
    def create(cls, name: str = "linear", num_timesteps: int = 1000, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> "DiffusionSchedule":
        """Schedule `name` in {linear, cosine, quadratic} (or diffusers' aliases
        `squaredcos_cap_v2`, `scaled_linear`) with T = num_timesteps."""
        return cls.from_betas(make_betas(name, num_timesteps, beta_start, beta_end))

    @classmethod
    def from_config(cls, config) -> "DiffusionSchedule":
        """From `config.diffusion` (a ConfigDict) with keys num_timesteps, beta_schedule,
        beta_start, beta_end."""
        return cls.create(config.beta_schedule, config.num_timesteps, config.beta_start,
                          config.beta_end)
