"""A time-conditioned MLP (flax.linen): the denoiser of vector-valued toy problems
(seed 003 brief T1: "MLP (3 x 256) on [canvas, mask, O^trgt_t, sinusoidal t]").

Notation: x [B, D] the flattened input, t [B] timesteps, E = `time_embed_dim`,
s(t) = sinusoid(t, E) (`fdm.nn.layers.timestep_embedding`).

time_conditioning = "input" (the brief's MLP): t enters once, at the input,
  h_0 = concat(x, s(t)),  h_i = silu(Dense(width)(h_{i-1})),  i = 1 .. depth.
time_conditioning = "film" (the adaptive layer norm of DiT, Peebles & Xie 2023, the
  network the paper uses for GAN inversion, without the norm): every hidden layer is
  scaled and shifted by the embedded time,
  e = silu(Dense(width)(s(t))),  (gamma_i, beta_i) = Dense_i(2 width)(e) (zero-initialised),
  h_0 = x,  h_i = silu(Dense(width)(h_{i-1}) * (1 + gamma_i) + beta_i),
  so the gain from x to the output can change with t (a Wiener filter's does); at
  initialisation the layers see no t.
out = Dense(out_dim)(h_depth)  [B, out_dim].
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.nn.layers import timestep_embedding

TIME_CONDITIONINGS = ("input", "film")


class TimeMLP(nn.Module):
    """MLP of `depth` hidden layers of `width`, conditioned on t (module doc)."""
    out_dim: int
    width: int = 256
    depth: int = 3
    time_embed_dim: int = 64
    time_conditioning: str = "input"

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x: [B, D], t: [B] -> [B, out_dim] float32."""
        h = x.astype(jnp.float32)
        s = timestep_embedding(t, self.time_embed_dim)
        if self.time_conditioning == "input":
            h = jnp.concatenate([h, s], axis=-1)
        else:
            e = nn.silu(nn.Dense(self.width, name="time")(s))
        for i in range(self.depth):
            h = nn.Dense(self.width, name=f"dense_{i}")(h)
            if self.time_conditioning == "film":
                gamma, beta = jnp.split(nn.Dense(2 * self.width, name=f"film_{i}",
                                                 kernel_init=nn.initializers.zeros)(e), 2, -1)
                h = h * (1.0 + gamma) + beta
            h = nn.silu(h)
        return nn.Dense(self.out_dim, name="out")(h)
