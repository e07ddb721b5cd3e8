"""A linear forward model with row selection: forward(w, phi) = (A w)[phi].

Notation:
  A     the generator matrix [m, n] (m outputs, e.g. the pixels of an image; n latents).
  w     the signal [B, n]; G(w) = A w [B, m] its full view.
  phi   int32 [B, k]: the k rows of G(w) observed (a patch of pixels, or all m).
  O     (A w)[phi] [B, k]; its canvas is the m-vector with O at phi and 0 elsewhere,
        its mask the m-vector with 1 at phi.

`apply` is linear in w, so its vector-Jacobian product is the adjoint
A^T paste(O, phi); `paste` is the adjoint of the row selection alone.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class LinearOperator:
    """forward(w, phi) = (A w)[phi] with A = `matrix` [m, n] (module doc)."""
    matrix: jax.Array

    @property
    def num_outputs(self) -> int:
        """m: the length of the full view G(w)."""
        return self.matrix.shape[0]

    def generate(self, signal: jax.Array) -> jax.Array:
        """The full view G(w) = A w [B, m] of w [B, n]."""
        return signal @ jnp.asarray(self.matrix).T

    def apply(self, signal: jax.Array, phi: jax.Array) -> jax.Array:
        """O = (A w)[phi] [B, k] of w [B, n] and rows phi int [B, k]."""
        return jnp.einsum("bkn,bn->bk", jnp.asarray(self.matrix)[phi], signal)

    def paste(self, obs: jax.Array, phi: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(canvas [B, m], mask [B, m]) of O [B, k] at rows phi [B, k]."""
        batch = jnp.arange(obs.shape[0])[:, None]
        zeros = jnp.zeros((obs.shape[0], self.num_outputs), obs.dtype)
        return zeros.at[batch, phi].set(obs), zeros.at[batch, phi].set(1.0)


def all_rows(batch: int, num_outputs: int) -> jax.Array:
    """phi int32 [batch, m] selecting every row: the full view."""
    return jnp.broadcast_to(jnp.arange(num_outputs, dtype=jnp.int32), (batch, num_outputs))
