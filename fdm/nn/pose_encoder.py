"""Pose encoder of generative lifting (seed 000 sec. 3.3, Fig. 3.12, Alg. 3/4).

Notation:
  x_t [B, S, S, 3] noisy image in [-1, 1] (S divisible by 2^(L-1)), t [B] int.
  f [B, F] image features: the U-Net encoder trunk (`fdm.nn.unet.UNetEncoder`,
    timestep-conditioned through `TimeEmbed`), then GroupNorm -> swish -> mean
    over space; F = ch * ch_mult[-1] (paper: C = 64, ch_mult (1, 1, 2, 2, 4),
    2 ResBlocks per level, so F = 256).
  N camera candidates; c2w [B, N, 4, 4] OpenGL camera-to-world matrices
  (`fdm.nerf.cameras`); scores s [B, N] logits of the camera distribution.

Heads:
  * `AxisAngleHead` (Alg. 3, forward-facing scenes): Dense(6) -> axis-angle
    omega phi (Rodrigues, Eq. 3.2) and translation; N = 1, scores = 0. The
    layer is zero-initialised: every image starts at the identity camera at the
    origin, i.e. the average pose of a recentred LLFF scene.
  * `CandidateHead` (Alg. 4, 360-degree scenes): Dense(3N) logits -> N cameras
    on the sphere of radius r, each inside its octant / upper quadrant, looking
    at the origin (`fdm.nerf.cameras.candidate_cameras`, Code 3.3), and Dense(N)
    scores. Kernels have PyTorch's default Linear initialisation (as Code 3.3's
    `linear1` / `linear2`), so initial cameras vary a little with the image; the
    logit biases spread the candidates that share a quadrant
    (`candidate_init_logits`): with equal biases, candidates of one quadrant
    would start identical, so the cameras start "spread over the sphere,
    pointing to the origin" (Fig. 3.3).
"""
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fdm.nerf import cameras
from fdm.nn.layers import GroupNorm
from fdm.nn.unet import TimeEmbed, UNetEncoder

Dtype = Any

CAMERA_HEADS = ("axis_angle", "candidates")
INIT_ELEVATION_DEG = 30.0  # elevation (above the octant's base plane) of initial candidates
_INIT_SIGMOID_MAX = 0.5    # largest initial sigmoid(logit): mid-range, far from saturation
# torch.nn.Linear's default weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@flax.struct.dataclass
class CameraPrediction:
    """The pose encoder's output for a batch of B images."""
    c2w: jax.Array     # [B, N, 4, 4] candidate cameras (N = 1 for the axis-angle head)
    scores: jax.Array  # [B, N] logits of the camera distribution (zeros when N = 1)

    def best(self) -> jax.Array:
        """c2w [B, 4, 4] of the arg-max-score camera (the test-time camera)."""
        index = jnp.argmax(self.scores, axis=-1)
        return jnp.take_along_axis(self.c2w, index[:, None, None, None], axis=1)[:, 0]


def candidate_init_logits(num_candidates: int, layout: str) -> np.ndarray:
    """Initial head logits [N, 3]: the m candidates sharing a sign pattern are spread
    over its octant at azimuths (j + 0.5) * 90 / m degrees (j = 0..m-1) and
    elevation INIT_ELEVATION_DEG (with the sign pattern applied by
    `candidate_positions`, whose direction is proportional to sigmoid(logits))."""
    patterns = len(np.unique(cameras.candidate_signs(num_candidates, layout), axis=0))
    share = -(-num_candidates // patterns)
    j = np.arange(num_candidates) // patterns  # candidate i is copy j of pattern i % patterns
    azimuth = np.deg2rad((j + 0.5) * 90.0 / share)
    elevation = np.deg2rad(INIT_ELEVATION_DEG)
    u = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                  np.full_like(azimuth, np.sin(elevation))], -1)
    p = _INIT_SIGMOID_MAX * u / u.max(-1, keepdims=True)
    return np.log(p / (1.0 - p)).astype(np.float32)


class PoseTrunk(nn.Module):
    """U-Net encoder trunk: (x_t [B,S,S,3], t [B]) -> features f [B, ch * ch_mult[-1]]
    float32. dtype: compute dtype of the trunk (float32 parameters, `fdm.nn.unet`);
    remat: rematerialise its ResBlocks. The camera heads always run in float32."""
    ch: int = 64
    ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = ()
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
        temb = TimeEmbed(self.ch, dtype=self.dtype, name="time_embed")(t)
        h, _ = UNetEncoder(self.ch, tuple(self.ch_mult), self.num_res_blocks,
                           tuple(self.attn_resolutions), self.dropout, self.num_groups,
                           dtype=self.dtype, remat=self.remat, name="encoder")(x, temb, train)
        h = nn.swish(GroupNorm(self.num_groups, name="norm_out")(h).astype(jnp.float32))
        return jnp.mean(h, axis=(1, 2))


class AxisAngleHead(nn.Module):
    """Single camera (Alg. 3): f [B, F] -> CameraPrediction with N = 1."""

    @nn.compact
    def __call__(self, f: jax.Array) -> CameraPrediction:
        out = nn.Dense(6, kernel_init=nn.initializers.zeros, name="pose")(f)
        c2w = cameras.pose_from_axis_angle(out[:, :3], out[:, 3:])
        return CameraPrediction(c2w[:, None], jnp.zeros((f.shape[0], 1), f.dtype))


class CandidateHead(nn.Module):
    """N candidate cameras + scores (Alg. 4, Code 3.3): f [B, F] -> CameraPrediction.

    Attributes: num_candidates N; layout 'octant' | 'quadrant'; radius r; up (world up).
    """
    num_candidates: int = 12
    layout: str = "quadrant"
    radius: float = 4.0
    up: Sequence[float] = cameras.Z_UP

    @nn.compact
    def __call__(self, f: jax.Array) -> CameraPrediction:
        n = self.num_candidates
        bias = candidate_init_logits(n, self.layout).reshape(-1)
        logits = nn.Dense(3 * n, kernel_init=TORCH_LINEAR_INIT,
                          bias_init=lambda *_: jnp.asarray(bias), name="cameras")(f)
        signs = cameras.candidate_signs(n, self.layout)
        c2w = cameras.candidate_cameras(logits.reshape(-1, n, 3), signs, self.radius,
                                        tuple(self.up))
        scores = nn.Dense(n, kernel_init=TORCH_LINEAR_INIT, name="scores")(f)
        return CameraPrediction(c2w, scores)


class PoseEncoder(nn.Module):
    """Trunk + camera head: (x_t [B,S,S,3], t [B]) -> CameraPrediction (Fig. 3.12).

    Attributes: trunk, the `PoseTrunk` (its parameters live under 'trunk');
    camera_head in CAMERA_HEADS; the candidate head's num_candidates, layout, radius, up.
    """
    trunk: PoseTrunk = PoseTrunk()
    camera_head: str = "candidates"
    num_candidates: int = 12
    layout: str = "quadrant"
    radius: float = 4.0
    up: Sequence[float] = cameras.Z_UP

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> CameraPrediction:
        f = self.trunk(x, t, train)
        if self.camera_head == "axis_angle":
            return AxisAngleHead(name="head")(f)
        if self.camera_head == "candidates":
            return CandidateHead(self.num_candidates, self.layout, self.radius, self.up,
                                 name="head")(f)
        raise ValueError(f"camera_head must be one of {CAMERA_HEADS}, got {self.camera_head!r}")
