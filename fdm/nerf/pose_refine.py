"""Test-time camera refinement: a view's camera fitted to a frozen NeRF by gradient descent.

The evaluation protocol of pose-free NeRFs (BARF, Lin et al. 2021, Sec. 4: "we
optimize the poses of the test views with the NeRF frozen" before novel-view
metrics; NeRF-- likewise): the NeRF was fitted to the training views only, so a
held-out view's camera is known only up to how well it can be localised in that
NeRF. Refining it from a starting camera (the encoder's prediction) by the view's
photometric loss measures the held-out pose error and PSNR the NeRF itself allows.

Notation (cameras as in `fdm.nerf.cameras`: c2w [B, 4, 4], x_world = R x_cam + t):
  delta   [B, 6] = (omega, v): a rotation vector omega (radians) and a translation
          v, both in the camera's own frame, zero at the start.
  c2w(delta) = c2w_0 [exp(omega) | v; 0 1]: R = R_0 exp(omega), t = t_0 + R_0 v
          (BARF's right-multiplied se(3) perturbation, with R and t updated apart).
  L(c2w)  [B] the per-view loss of a frozen NeRF (for instance Eq. 3.3 on every
          pixel of a grid); the views are independent, so descending sum_b L_b moves
          each delta_b by its own view's gradient.
Adam (Kingma and Ba 2015) with the learning rate decayed exponentially to
final_factor times its start over the steps, as BARF's pose optimiser.
"""
from __future__ import annotations

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import optax

from fdm.nerf import cameras

LossFn = Callable[[jax.Array], jax.Array]      # c2w [B, 4, 4] -> per-view loss [B]


@flax.struct.dataclass
class Refinement:
    """c2w [B,4,4] the refined cameras; delta [B,6] their (omega, v) from the start;
    losses [K+1, B] L before the first and after every one of the K steps."""
    c2w: jax.Array
    delta: jax.Array
    losses: jax.Array


def perturb(c2w: jax.Array, delta: jax.Array) -> jax.Array:
    """c2w [..., 4, 4] moved by delta [..., 6] = (omega, v) in the camera frame (module
    doc): R = R_0 rodrigues(omega), t = t_0 + R_0 v."""
    rot0, t0 = c2w[..., :3, :3], c2w[..., :3, 3]
    rot = rot0 @ cameras.rodrigues(delta[..., :3])
    t = t0 + jnp.einsum("...ij,...j->...i", rot0, delta[..., 3:])
    return cameras.make_c2w(rot, t)


def refine_cameras(loss_fn: LossFn, c2w: jax.Array, steps: int, learning_rate: float,
                   final_factor: float = 0.1) -> Refinement:
    """K = steps Adam updates of delta [B, 6] from zero on sum_b loss_fn(perturb(c2w,
    delta))_b; c2w [B, 4, 4] the starting cameras. Returns the `Refinement` (the cameras
    after the last update). Jit-compatible (a lax.scan over the steps)."""
    schedule = optax.exponential_decay(learning_rate, max(steps, 1), final_factor)
    opt = optax.adam(schedule)
    delta0 = jnp.zeros(c2w.shape[:-2] + (6,), c2w.dtype)

    def losses(delta):
        per_view = loss_fn(perturb(c2w, delta))
        return jnp.sum(per_view), per_view

    def step(carry, _):
        delta, state = carry
        (_, per_view), grad = jax.value_and_grad(losses, has_aux=True)(delta)
        updates, state = opt.update(grad, state, delta)
        return (optax.apply_updates(delta, updates), state), per_view

    (delta, _), history = jax.lax.scan(step, (delta0, opt.init(delta0)), None, length=steps)
    final = loss_fn(perturb(c2w, delta))
    history = jnp.concatenate([history, final[None]], 0)
    return Refinement(perturb(c2w, delta), delta, history)
