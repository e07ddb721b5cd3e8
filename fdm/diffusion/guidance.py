"""Transforms of a denoiser's x0-prediction at sampling time: dynamic thresholding
(Saharia et al. 2022, Imagen Sec. 2.3) and classifier-free guidance (Ho & Salimans
2022), as diffusion with forward models uses them (seed 003 supp. §2.4; brief D2).

Notation: x0_hat [B, ...] an x0-prediction (for `fdm.models.dfm`, O_hat^trgt =
forward(S, phi^trgt)); a denoiser is `fn(x_t [B, ...], t [B]) -> (pred, aux)` as in
`fdm.diffusion.samplers`.

Dynamic thresholding at percentile p in (0, 1], per example b over all its elements:

    s_b = max(quantile_p(|x0_hat_b|), 1)
    x0_hat_b <- clip(x0_hat_b, -s_b, s_b) / s_b

(quantile with linear interpolation, as `np.quantile`). Every output lies in [-1, 1];
where the p-quantile is <= 1 it is plain clipping to [-1, 1].

Classifier-free guidance with scale w, on predictions of the conditional (c) and the
unconditional (u) model, leaf-wise on pytrees:

    pred = pred_u + w (pred_c - pred_u)

w = 1 is the conditional model (returned as pred_c itself, bit for bit, and the
unconditional denoiser is not called), w = 0 the unconditional one; Ho & Salimans'
(1 + w') eps_c - w' eps_u is w = 1 + w'. For an x0-prediction this mixes x0_hat; the
aux is mixed the same way (for DFM: the signal S, so that forward(S) of a linear forward
model is the mixed O_hat exactly).

The wrappers are `flax.struct.dataclass`es whose scale / percentile are static fields,
so a wrapped denoiser passes its arrays to the samplers' jitted loop as leaves and one
compilation serves every call with the same setting.

Pure math: imports nothing from fdm.models, fdm.train or the entry points.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp


def dynamic_threshold(x0_hat: jax.Array, percentile: float) -> jax.Array:
    """Imagen's dynamic thresholding (module doc) of x0_hat [B, ...] at percentile
    p in (0, 1] (a Python float): [B, ...], every value in [-1, 1]."""
    flat = jnp.abs(x0_hat.reshape(x0_hat.shape[0], -1))
    s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0)
    s = s.reshape((-1,) + (1,) * (x0_hat.ndim - 1)).astype(x0_hat.dtype)
    return jnp.clip(x0_hat, -s, s) / s


def guidance_mix(uncond: Any, cond: Any, scale: float) -> Any:
    """pred_u + w (pred_c - pred_u) leaf-wise over matching pytrees (module doc); the
    static scale w = 1 returns `cond` unchanged."""
    if scale == 1.0:
        return cond
    return jax.tree_util.tree_map(lambda u, c: u + scale * (c - u), uncond, cond)


@flax.struct.dataclass
class GuidedDenoiser:
    """Classifier-free guided denoiser (module doc): cond and uncond are denoisers of the
    same x_t, t with the same output structure; `scale` is w."""
    cond: Callable
    uncond: Callable
    scale: float = flax.struct.field(pytree_node=False, default=1.0)

    def __call__(self, x_t: jax.Array, t: jax.Array):
        """(pred, aux) mixed with scale w; w = 1 is cond(x_t, t) without calling uncond."""
        cond = self.cond(x_t, t)
        if self.scale == 1.0:
            return cond
        return guidance_mix(self.uncond(x_t, t), cond, self.scale)


@flax.struct.dataclass
class ThresholdedDenoiser:
    """A denoiser of x0-predictions whose pred is dynamically thresholded at `percentile`
    (module doc); the aux is passed through unchanged."""
    fn: Callable
    percentile: float = flax.struct.field(pytree_node=False, default=0.95)

    def __call__(self, x_t: jax.Array, t: jax.Array):
        """(dynamic_threshold(pred, percentile), aux) of fn(x_t, t)."""
        pred, aux = self.fn(x_t, t)
        return dynamic_threshold(pred, self.percentile), aux


__all__ = ["GuidedDenoiser", "ThresholdedDenoiser", "dynamic_threshold", "guidance_mix"]
