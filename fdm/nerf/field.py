"""The NeRF radiance field: positional encoding and an MLP (flax.linen).

Notation (NeRF, Mildenhall et al. 2020, Sec. 5.1 and Fig. 7):
  x [..., 3] world points, d [..., 3] unit view directions.
  gamma(p) = [p, sin(2^k p), cos(2^k p) for k = min_deg .. max_deg-1], applied
  componentwise; like the official code the frequencies are 2^k (no factor
  pi), which suits scenes inside roughly [-1.5, 1.5]^3 (Blender, toy_scene)
  and NDC. Default degrees: 10 for x, 4 for d (output widths 63 and 27).
  The field returns rgb = sigmoid(.) in [0, 1] and density sigma >= 0 through
  softplus(raw + density_bias) (default; smooth and never "dead", which
  matters when cameras are learned) or relu(raw) (original NeRF).
A seed-000 style single network: no coarse/fine pair (see `fdm.nerf.render`
for hierarchical sampling with one field).

Coarse-to-fine encoding (BARF, Lin et al. 2021, Eq. 5): with alpha in [0, L]
(L = max_deg - min_deg bands) band k of gamma is weighted by
  w_k(alpha) = (1 - cos(pi clamp(alpha - k, 0, 1))) / 2,
so bands above alpha are off, bands below are on, and the identity term is
kept; alpha grows linearly with the training step (`coarse_to_fine_alpha`),
which lets camera registration see a smooth field first. alpha None = all
bands (the plain encoding).

Precision (`NeRFMLP.dtype`, model.dtype): the Dense layers compute in `dtype`
(bfloat16 or float32) with float32 parameters; the positional encoding is computed
in float32 (sin(2^k x) of a bfloat16 x would lose the position) and cast where it
enters a layer, and rgb and density are float32, so the renderer's transmittance
and weights stay float32.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def coarse_to_fine_weights(alpha: jax.Array, num_bands: int) -> jax.Array:
    """BARF Eq. 5: w_k(alpha) [L] = (1 - cos(pi clamp(alpha - k, 0, 1))) / 2 for
    k = 0 .. L-1 (L = num_bands); alpha [] in [0, L]."""
    k = jnp.arange(num_bands, dtype=jnp.float32)
    return (1.0 - jnp.cos(jnp.pi * jnp.clip(alpha - k, 0.0, 1.0))) / 2.0


def coarse_to_fine_alpha(step: jax.Array | int, start: int, end: int,
                         num_bands: int) -> jax.Array:
    """alpha [] = L clamp((step - start) / (end - start), 0, 1): 0 until `start`, then
    linear in the step to L = num_bands at `end` (BARF's schedule); end > start."""
    progress = (jnp.asarray(step, jnp.float32) - start) / (end - start)
    return num_bands * jnp.clip(progress, 0.0, 1.0)


def positional_encoding(x: jax.Array, min_deg: int, max_deg: int,
                        include_identity: bool = True,
                        alpha: Optional[jax.Array] = None) -> jax.Array:
    """gamma(x) [..., D * (2 * (max_deg - min_deg) + include_identity)].

    Layout: [x (if include_identity), sin(2^k x_j) for all (k, j), cos(...)] with
    k the slow index. alpha []: band k = 0 .. max_deg-min_deg-1 scaled by
    `coarse_to_fine_weights` (BARF); None: all bands at weight 1.
    """
    scales = 2.0 ** jnp.arange(min_deg, max_deg, dtype=x.dtype)
    xb = (x[..., None, :] * scales[:, None]).reshape(x.shape[:-1] + (-1,))
    parts = [jnp.sin(xb), jnp.cos(xb)]
    if alpha is not None:
        w = jnp.repeat(coarse_to_fine_weights(alpha, max_deg - min_deg), x.shape[-1])
        parts = [p * w.astype(x.dtype) for p in parts]
    return jnp.concatenate(([x] if include_identity else []) + parts, axis=-1)


def encoding_width(dim: int, min_deg: int, max_deg: int, include_identity: bool = True) -> int:
    """Output width of `positional_encoding` for inputs of width `dim`."""
    return dim * (2 * (max_deg - min_deg) + int(include_identity))


class NeRFMLP(nn.Module):
    """NeRF MLP: gamma(x) -> depth x Dense(width) with a skip -> sigma, (+ gamma(d)) -> rgb.

    Attributes:
      depth, width: trunk layers and their width (paper: 8, 256).
      skips: trunk layer indices whose input is concatenated with gamma(x) (paper: (4,)).
      pos_max_deg, view_max_deg: positional-encoding degrees for x and d.
      use_viewdirs: view-dependent colour through a width/2 branch on gamma(d)
        (paper default); otherwise rgb depends on x only.
      density_activation: 'softplus' (default) or 'relu'.
      density_bias: added to the raw density before softplus (multinerf: -1).
      dtype: compute dtype of the Dense layers (module docstring).
    """
    depth: int = 8
    width: int = 256
    skips: Sequence[int] = (4,)
    pos_max_deg: int = 10
    view_max_deg: int = 4
    use_viewdirs: bool = True
    density_activation: str = "softplus"
    density_bias: float = -1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, viewdirs: Optional[jax.Array] = None,
                 alpha: Optional[jax.Array] = None):
        """Args: x [..., 3]; viewdirs [..., 3] (required if use_viewdirs); alpha []
        in [0, pos_max_deg]: BARF's coarse-to-fine weighting of gamma(x), and of
        gamma(d) at alpha * view_max_deg / pos_max_deg (the same training progress,
        as in BARF); None: all bands.

        Returns: rgb [..., 3] in [0, 1], density [...] >= 0, both float32.
        """
        dense = lambda features, name: nn.Dense(features, dtype=self.dtype, name=name)  # noqa: E731
        x_enc = positional_encoding(x, 0, self.pos_max_deg, alpha=alpha).astype(self.dtype)
        h = x_enc
        for i in range(self.depth):
            if i in self.skips:
                h = jnp.concatenate([h, x_enc], axis=-1)
            h = nn.relu(dense(self.width, f"trunk_{i}")(h))
        density = self._density(dense(1, "density")(h)[..., 0].astype(jnp.float32))
        if self.use_viewdirs:
            h = dense(self.width, "bottleneck")(h)
            view_alpha = None if alpha is None else alpha * self.view_max_deg / self.pos_max_deg
            d_enc = positional_encoding(viewdirs, 0, self.view_max_deg, alpha=view_alpha)
            h = jnp.concatenate([h, d_enc.astype(self.dtype)], axis=-1)
            h = nn.relu(dense(self.width // 2, "view")(h))
        rgb = nn.sigmoid(dense(3, "rgb")(h).astype(jnp.float32))
        return rgb, density

    def _density(self, raw: jax.Array) -> jax.Array:
        if self.density_activation == "softplus":
            return nn.softplus(raw + self.density_bias)
        if self.density_activation == "relu":
            return nn.relu(raw)
        raise ValueError(f"density_activation must be 'softplus' or 'relu', "
                         f"got {self.density_activation!r}")
