"""Regularisers of rendered geometry: the distortion loss (mip-NeRF 360) and edge-aware
depth smoothness (seed 003 supp. Eq. 9: L_depth = L_smooth + L_dist).

Notation (`fdm.nerf.render`): a ray has S bins with edges s_0 < ... < s_S ([..., S+1]),
midpoints m_i = (s_i + s_{i+1}) / 2 and compositing weights w_i ([..., S]).

Distortion (Barron et al. 2022, Eq. 15), on whatever parameterisation of the edges is
passed (mip-NeRF 360 uses normalised distances s in [0, 1]; callers normalise):
    L_dist = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (s_{i+1} - s_i)
It is small when the weight is concentrated in one short interval and penalises
"floaters" spread along the ray. `distortion_loss` evaluates the double sum in O(S):
for sorted midpoints sum_{i,j} w_i w_j |m_i - m_j| = 2 sum_i w_i (m_i W_i - M_i) with the
exclusive prefix sums W_i = sum_{j<i} w_j and M_i = sum_{j<i} w_j m_j.

Edge-aware smoothness (Godard et al. 2017, monodepth's disparity smoothness) of a depth map
D [..., H, W] guided by its image I [..., H, W, C]:
    L_smooth = mean_{x} |D(x+1, y) - D(x, y)| exp(-mean_c |I(x+1, y) - I(x, y)|)
             + mean_{y} |D(x, y+1) - D(x, y)| exp(-mean_c |I(x, y+1) - I(x, y)|)
(each mean over the H (W - 1), resp. (H - 1) W, neighbouring pairs): depth may jump at
image edges, elsewhere it should be smooth.

Opacity entropy (not in seed 003; an opacity prior in the spirit of Neural Volumes' beta
prior, Lombardi et al. 2019) of a ray's accumulated opacity a = sum_i w_i in [0, 1]:
    L_opacity = -a log a - (1 - a) log(1 - a)        (nats; a clipped to [eps, 1 - eps])
the binary entropy: 0 for an opaque (a = 1) or an empty (a = 0) ray, log 2 at a = 1/2. It
pushes each ray to hit or miss outright, against the semi-transparent surfaces a
posterior mean composited over a background settles for.
"""
import jax
import jax.numpy as jnp


def distortion_loss(weights: jax.Array, edges: jax.Array) -> jax.Array:
    """L_dist [...] (module doc) of weights [..., S] on bins with edges [..., S+1]
    (increasing), in O(S)."""
    mids = 0.5 * (edges[..., 1:] + edges[..., :-1])
    prefix_w = jnp.cumsum(weights, axis=-1) - weights
    prefix_wm = jnp.cumsum(weights * mids, axis=-1) - weights * mids
    between = 2.0 * jnp.sum(weights * (mids * prefix_w - prefix_wm), axis=-1)
    within = jnp.sum(weights ** 2 * jnp.diff(edges, axis=-1), axis=-1) / 3.0
    return between + within


def opacity_entropy(acc: jax.Array, eps: float = 1e-4) -> jax.Array:
    """L_opacity [...] (module doc) of accumulated opacities acc [...] in [0, 1]."""
    a = jnp.clip(acc, eps, 1.0 - eps)
    return -(a * jnp.log(a) + (1.0 - a) * jnp.log1p(-a))


def edge_aware_smoothness(depth: jax.Array, image: jax.Array) -> jax.Array:
    """L_smooth [...] (module doc) of depth maps [..., H, W] guided by images
    [..., H, W, C]."""
    dx = jnp.abs(jnp.diff(depth, axis=-1))
    dy = jnp.abs(jnp.diff(depth, axis=-2))
    edge_x = jnp.mean(jnp.abs(jnp.diff(image, axis=-2)), axis=-1)
    edge_y = jnp.mean(jnp.abs(jnp.diff(image, axis=-3)), axis=-1)
    return (jnp.mean(dx * jnp.exp(-edge_x), axis=(-2, -1))
            + jnp.mean(dy * jnp.exp(-edge_y), axis=(-2, -1)))
