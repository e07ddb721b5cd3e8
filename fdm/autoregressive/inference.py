"""Likelihoods over orders, image completion and sampling in any order (seed 004 §2.3, §2.6).

Notation: K orders π_1..π_K over D = H W pixels; `pixel_log_probs` [B, H, W] holds
log p(x_p | x_π(<rank p)) under one order (the network's output for that order, teacher
forced with the true image), so
  log p(x; π)                = Σ_p pixel_log_probs                       (Eq. 2.1)
  log p(x_R | x_rest; π)     = Σ_{p in R} pixel_log_probs  when π generates the rest
                               before R (a max-context order, §2.3); under an order that
                               generates R first the same sum is the marginal log p(x_R; π)
  log p_ens(x)               = logsumexp_k log p(x; π_k) - log K          (the ensemble at
                               the level of the joint, the authors' `average_loss`)
so that, per image, min_k NLL_k <= NLL_ens <= min(mean_k NLL_k, min_k NLL_k + log K).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

LN2 = math.log(2.0)


def ensemble_log_prob(log_probs: jax.Array) -> jax.Array:
    """log (1/K Σ_k p_k) [...] of log p_k [..., K] (nats)."""
    return jax.nn.logsumexp(log_probs, axis=-1) - math.log(log_probs.shape[-1])


def region_log_prob(pixel_log_probs: jax.Array, region: np.ndarray) -> jax.Array:
    """Σ over the pixels of `region` (bool [H, W]) of pixel_log_probs [B, H, W] -> [B]."""
    return jnp.sum(jnp.where(jnp.asarray(region), pixel_log_probs, 0.0), axis=(1, 2))


def sample_in_order(draw: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array,
                    order: jax.Array, start, stop, key: jax.Array) -> jax.Array:
    """Ancestral sampling of the pixels π(start), ..., π(stop - 1), in that order (forward
    sampling of Eq. 2.1). Completing an image samples its hidden pixels: the last ones of
    a max-context order (start = |observed|, stop = D), the first ones of an adversarial
    order (start = 0, stop = |hidden|).

    draw(x [B, H, W, C], key) -> [B, H, W, C]: a sample of every pixel from the model's
    conditionals given x (only pixel π(i) is kept at step i, drawn with fold_in(key, i)).
    x: the pixels not sampled (observed ones) set, the rest arbitrary (the authors: 0).
    start, stop: ints or traced int32 [].
    """
    width = x.shape[2]

    def step(i, x):
        r, c = jnp.divmod(order[i], width)
        value = jax.lax.dynamic_slice(draw(x, jax.random.fold_in(key, i)),
                                      (0, r, c, 0), (x.shape[0], 1, 1, x.shape[3]))
        return jax.lax.dynamic_update_slice(x, value, (0, r, c, 0))

    return jax.lax.fori_loop(start, stop, step, x)


__all__ = ["LN2", "ensemble_log_prob", "region_log_prob", "sample_in_order"]
