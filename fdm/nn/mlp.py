"""A time-conditioned MLP (flax.linen): the denoiser of vector-valued toy problems
(seed 003 brief T1: "MLP (3 x 256) on [canvas, mask, O^trgt_t, sinusoidal t]").

Notation: x [B, D] the flattened input, t [B] timesteps, E = `time_embed_dim`:
  h_0 = concat(x, sinusoid(t, E))                   (`fdm.nn.layers.timestep_embedding`)
  h_i = silu(Dense(width)(h_{i-1})),  i = 1 .. depth
  out = Dense(out_dim)(h_depth)                     [B, out_dim]
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.nn.layers import timestep_embedding


class TimeMLP(nn.Module):
    """MLP of `depth` hidden layers of `width` on [x, sinusoid(t)] (module doc)."""
    out_dim: int
    width: int = 256
    depth: int = 3
    time_embed_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x: [B, D], t: [B] -> [B, out_dim] float32."""
        h = jnp.concatenate([x.astype(jnp.float32),
                             timestep_embedding(t, self.time_embed_dim)], axis=-1)
        for i in range(self.depth):
            h = nn.silu(nn.Dense(self.width, name=f"dense_{i}")(h))
        return nn.Dense(self.out_dim, name="out")(h)
