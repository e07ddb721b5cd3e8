"""A crop forward model: forward(S, phi) = the h x w window of S at integer offset phi.

Notation:
  S     the signal [B, H, W, C] (seed 003 brief T2: a 16 x 16 x 1 glyph mosaic).
  phi   int32 [B, 2]: the window's top-left corner (row, column), each in
        [0, H - h] x [0, W - w] (`lax.dynamic_slice` clamps an offset outside).
  O     S[:, r:r+h, c:c+w, :] [B, h, w, C]; its canvas is an H x W image with O at phi
        and 0 elsewhere, its mask [B, H, W, 1] is 1 inside the window.

`apply` is a gather, differentiable in S (its vector-Jacobian product pastes the
cotangent into the window); `paste` is its adjoint: <apply(S, phi), O> =
<S, paste(O, phi)[0]>.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax


@flax.struct.dataclass
class CropOperator:
    """forward(S, phi) = the `window` = (h, w) crop of S [B, H, W, C] at phi (module doc);
    `signal_size` = (H, W)."""
    window: tuple[int, int] = flax.struct.field(pytree_node=False, default=(8, 8))
    signal_size: tuple[int, int] = flax.struct.field(pytree_node=False, default=(16, 16))

    def max_offset(self) -> tuple[int, int]:
        """The largest valid phi: (H - h, W - w)."""
        return (self.signal_size[0] - self.window[0], self.signal_size[1] - self.window[1])

    def apply(self, signal: jax.Array, phi: jax.Array) -> jax.Array:
        """O [B, h, w, C] of S [B, H, W, C] at offsets phi int [B, 2]."""
        def crop(s, offset):
            return lax.dynamic_slice(s, (offset[0], offset[1], 0),
                                     (*self.window, s.shape[-1]))
        return jax.vmap(crop)(signal, phi)

    def paste(self, obs: jax.Array, phi: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(canvas [B, H, W, C], mask [B, H, W, 1]) of O [B, h, w, C] at offsets phi [B, 2]."""
        def put(o, offset):
            canvas = jnp.zeros((*self.signal_size, o.shape[-1]), o.dtype)
            mask = jnp.zeros((*self.signal_size, 1), o.dtype)
            start = (offset[0], offset[1], 0)
            return (lax.dynamic_update_slice(canvas, o, start),
                    lax.dynamic_update_slice(mask, jnp.ones((*self.window, 1), o.dtype), start))
        return jax.vmap(put)(obs, phi)
