"""A pixel-aligned, time-conditioned NeRF (pixelNeRF, Yu et al. 2021) as the signal and
the denoiser of diffusion with forward models on scenes (seed 003 Sec. 4.1, Eq. 10-14).

Notation:
  views    v = 0 .. V-1, each an image [H, W, 3] in [-1, 1] of a pinhole camera c2w_v
           [4, 4] (OpenGL camera-to-world, `fdm.nerf.cameras`) with the shared intrinsics of
           a `ViewGeometry` (focal f, principal point (W/2, H/2), depths [near, far]).
  F_v      the view's pixel-aligned feature map [H, W, F]: feature (i, j) sits at the
           pixel centre (x, y) = (j + 1/2, i + 1/2) (`fdm.nerf.rays`).
  t        the diffusion timestep of S (0 .. T-1, a float; 0 for S_det and a clean
           target).
  S        the conditioned field, one array [V, H, W, F + 13] per example (`pack`):
           S[v, ..., :F] = F_v, S[v, i, j, F:F + 12] = c2w_v[:3, :4] flattened row-major
           and S[v, i, j, F + 12] = t, the same at every pixel (and t in every view).
           This is the signal of the diffusion model.
  p_v      a world point p [3] in view v's camera frame, R_v^T (p - o_v); its pixel is
           pi_v(p) = (W/2 + f x / (-z), H/2 - f y / (-z)) of p_v = (x, y, z) (`project`,
           the inverse of `fdm.nerf.rays.camera_directions`).
  f_v(p)   F_v bilinearly interpolated at pi_v(p), clamped at the border (`sample_features`;
           torch's grid_sample(align_corners=False, padding_mode="border")).
  gamma    NeRF's positional encoding (`fdm.nerf.field.positional_encoding`, frequencies
           2^k, k < num_freqs) of p_v / position_scale.
  temb     the embedded timestep [width], silu(Dense(s(t))) of the sinusoid s(t) of
           width channels (`fdm.nn.layers.timestep_embedding`), as `fdm.nn.mlp.TimeMLP`.

The field (Eq. 10; `PixelField`, pixelNeRF's ResnetFC): per view
    h_v = Dense(gamma(p_v)),  then per view block
    h_v <- ResBlock(h_v + Dense(f_v(p)) + Dense(temb))
mean over the views, h = mean_v h_v, then the joint blocks h <- ResBlock(h + Dense(temb))
and the heads
    sigma = softplus(Dense_1(h)),  c = sigmoid(Dense_3(h)),  g = Dense_G(h)
(density, colour in [0, 1] and G rendered features; ResBlock(h) = h + Dense(relu(Dense(
relu(h))))). With density_from_context (model.pixelnerf.density_from_context; not in the
paper) sigma is read from the context's h_ctxt instead of the mean, through the same joint
blocks and head: the geometry of S is then a function of the context (and t) alone, every
sample shares it, and only colour and features see the target slot. S_det is unchanged
(its mean is h_ctxt). t enters every block the way pixelNeRF injects its latent (the
brief's D6), besides the features (the encoder is conditioned on t). time_mlp=False
(model.pixelnerf.time_mlp) drops the Dense(temb) terms: t enters only through the
features, the field of the checkpoints before D6 (the same params, t ignored).

forward (Eq. 12; `render_signal`): the field of S volume-rendered from a camera c2w
(`fdm.nerf.render.render_rays_channels`, one ray per pixel, `num_samples` bins between
near and far at their midpoints) with the values [c, g] composited onto the background
[1, 1, 1, 0, ...] (white, features 0); O = 2 c_rendered - 1 [H, W, 3].

denoise (Eq. 13-14; `SceneDenoiser`), with enc a `fdm.nn.unet.UNet` conditioned on t
whose input is an image [H, W, 3] and a conditioning map [H, W, 3 + G + 1]:
    F_ctxt = enc_0([O^ctxt, 0])                          (the context, t = 0)
    S_det  = (F_ctxt, phi^ctxt) in both slots, t = 0      (V = 2: the context alone)
    O_det  = render(S_det, phi^trgt) with det_samples bins: [2 c - 1, g, depth] (`conditioning`)
    F_trgt = enc_t([O^trgt_t, O_det])           (enc: the same network for both views)
    S      = pack([F_ctxt, F_trgt], [phi^ctxt, phi^trgt], t)
With image_features (model.pixelnerf.image_features) each feature map also carries its
view's image, F_ctxt = [enc_0(...), O^ctxt] and F_trgt = [enc_t(...), O^trgt_t] (F + 3
channels), so the field reads the colour at the projected point f_v(p) directly, as
image-based renderers (GRF, IBRNet) do, instead of through what enc keeps of it.
S_det repeats the context in the target's slot, so the mean over the views is exactly
pixelNeRF conditioned on the context alone (`context_only`: S_det of an S); the
deterministic baseline (`deterministic=True`) returns S_det. Classifier-free guidance's
null context is a zero context image (keep [B] bool).

Pure JAX and flax: imports nothing from fdm.models, fdm.train or the entry points.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.forward.base import View
from fdm.nerf.field import positional_encoding
from fdm.nerf.rays import generate_rays
from fdm.nerf.render import ChannelRender, render_rays_channels
from fdm.nerf.views import ViewGeometry
from fdm.nn.layers import timestep_embedding
from fdm.nn.unet import UNet

CAMERA_CHANNELS = 12
TIME_CHANNELS = 1
EXTRA_CHANNELS = CAMERA_CHANNELS + TIME_CHANNELS      # S's channels after the F features
RGB = 3
CONTEXT_SLOT, TARGET_SLOT = 0, 1                  # S's view slots (Eq. 14)

# (S [B, V, H, W, F + 13], points [B, P, 3]) -> (values [B, P, 3 + G], density [B, P])
SignalField = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def pack(features: jax.Array, c2w: jax.Array, t: jax.Array) -> jax.Array:
    """S [..., V, H, W, F + 13] of feature maps [..., V, H, W, F], cameras
    [..., V, 4, 4] and timesteps t [...] (module doc)."""
    camera = c2w[..., :3, :4].reshape(c2w.shape[:-2] + (CAMERA_CHANNELS,))
    camera = jnp.broadcast_to(camera[..., None, None, :],
                              features.shape[:-1] + (CAMERA_CHANNELS,))
    time = jnp.broadcast_to(jnp.asarray(t)[..., None, None, None, None],
                            features.shape[:-1] + (TIME_CHANNELS,))
    return jnp.concatenate([features, camera.astype(features.dtype),
                            time.astype(features.dtype)], axis=-1)


def unpack(signal: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(feature maps [..., V, H, W, F], cameras c2w [..., V, 4, 4], timesteps t [...]) of
    S [..., V, H, W, F + 13]."""
    camera = signal[..., 0, 0, -EXTRA_CHANNELS:-TIME_CHANNELS]
    top = camera.reshape(signal.shape[:-3] + (3, 4))
    bottom = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 0.0, 1.0], signal.dtype),
                              top.shape[:-2] + (1, 4))
    return (signal[..., :-EXTRA_CHANNELS], jnp.concatenate([top, bottom], axis=-2),
            signal[..., 0, 0, 0, -1])


def world_to_camera(c2w: jax.Array, points: jax.Array) -> jax.Array:
    """p_v = R^T (p - o) [..., P, 3] of world points [..., P, 3] for cameras c2w
    [..., 4, 4]."""
    rel = points - c2w[..., None, :3, 3]
    return jnp.einsum("...ji,...pj->...pi", c2w[..., :3, :3], rel)


def project(points_cam: jax.Array, geometry: ViewGeometry) -> jax.Array:
    """Pixel coordinates xy [..., 2] (x right, y down; centres at +1/2) of camera-frame
    points [..., 3] in front of the camera (z < 0)."""
    depth = jnp.maximum(-points_cam[..., 2], 1e-6)
    x = 0.5 * geometry.width + geometry.focal * points_cam[..., 0] / depth
    y = 0.5 * geometry.height - geometry.focal * points_cam[..., 1] / depth
    return jnp.stack([x, y], axis=-1)


def sample_features(feature_map: jax.Array, xy: jax.Array) -> jax.Array:
    """Bilinear lookup [B, P, F] of feature maps [B, H, W, F] at pixel coordinates xy
    [B, P, 2] (centres at +1/2), clamped at the border (module doc)."""
    b, h, w, f = feature_map.shape
    u = jnp.clip(xy[..., 0] - 0.5, 0.0, w - 1.0)
    v = jnp.clip(xy[..., 1] - 0.5, 0.0, h - 1.0)
    u0 = jnp.clip(jnp.floor(u), 0, max(w - 2, 0)).astype(jnp.int32)
    v0 = jnp.clip(jnp.floor(v), 0, max(h - 2, 0)).astype(jnp.int32)
    du, dv = (u - u0)[..., None], (v - v0)[..., None]
    u1, v1 = jnp.minimum(u0 + 1, w - 1), jnp.minimum(v0 + 1, h - 1)
    flat = feature_map.reshape(b, h * w, f)
    take = lambda row, col: jnp.take_along_axis(flat, (row * w + col)[..., None], axis=1)
    top = (1.0 - du) * take(v0, u0) + du * take(v0, u1)
    bottom = (1.0 - du) * take(v1, u0) + du * take(v1, u1)
    return (1.0 - dv) * top + dv * bottom


class ResBlock(nn.Module):
    """h + Dense(relu(Dense(relu(h)))) (pixelNeRF's ResnetBlockFC, width preserved)."""
    width: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h [..., width] -> [..., width]."""
        x = nn.Dense(self.width, name="dense_0")(nn.relu(h))
        return h + nn.Dense(self.width, name="dense_1")(nn.relu(x))


class PixelField(nn.Module):
    """The field of Eq. 10 (module doc): (S, world points) -> (values [c, g], sigma);
    time_mlp: Dense(temb) in every block (False: t ignored, the field before D6);
    density_from_context: sigma from the context slot's code (module doc)."""
    geometry: ViewGeometry
    det_features: int = 8
    width: int = 64
    view_blocks: int = 2
    joint_blocks: int = 1
    num_freqs: int = 6
    position_scale: float = 4.0
    time_mlp: bool = True
    density_from_context: bool = False

    def embed_time(self, t: jax.Array) -> jax.Array | None:
        """temb [B, width] of timesteps t [B] (module doc); None without time_mlp."""
        if not self.time_mlp:
            return None
        return nn.silu(nn.Dense(self.width, name="time")(timestep_embedding(t, self.width)))

    def add_time(self, hidden: jax.Array, temb: jax.Array | None, name: str) -> jax.Array:
        """hidden [B, ..., width] + Dense(temb) (the Dense `name`), the same for every
        view and point; hidden itself when temb is None."""
        if temb is None:
            return hidden
        term = nn.Dense(self.width, name=name)(temb)
        return hidden + jnp.expand_dims(term, tuple(range(1, hidden.ndim - 1)))

    @nn.compact
    def __call__(self, signal: jax.Array, points: jax.Array) -> tuple[jax.Array, jax.Array]:
        """S [B, V, H, W, F + 13], points [B, P, 3] -> (values [B, P, 3 + G], density
        [B, P] >= 0)."""
        features, c2w, t = unpack(signal)
        b, num_views, h, w, f = features.shape
        local = world_to_camera(c2w, points[:, None])                       # [B, V, P, 3]
        xy = project(local, self.geometry).reshape(b * num_views, -1, 2)
        sampled = sample_features(features.reshape(b * num_views, h, w, f), xy)
        sampled = sampled.reshape(local.shape[:-1] + (f,))                  # [B, V, P, F]
        code = positional_encoding(local / self.position_scale, 0, self.num_freqs)
        hidden = nn.Dense(self.width, name="position")(code)
        temb = self.embed_time(t)
        for i in range(self.view_blocks):
            hidden = hidden + nn.Dense(self.width, name=f"feature_{i}")(sampled)
            hidden = self.add_time(hidden, temb, f"view_time_{i}")
            hidden = ResBlock(self.width, name=f"view_block_{i}")(hidden)
        num_points = hidden.shape[2]
        joint = jnp.mean(hidden, axis=1)                                    # [B, P, width]
        if self.density_from_context:                     # [B, 2P, width]: mean, context
            joint = jnp.concatenate([joint, hidden[:, CONTEXT_SLOT]], axis=1)
        for i in range(self.joint_blocks):
            joint = self.add_time(joint, temb, f"joint_time_{i}")
            joint = ResBlock(self.width, name=f"joint_block_{i}")(joint)
        joint = nn.relu(joint)
        density = nn.softplus(nn.Dense(1, name="density")(joint[:, -num_points:])[..., 0])
        joint = joint[:, :num_points]
        rgb = nn.sigmoid(nn.Dense(RGB, name="rgb")(joint))
        extra = nn.Dense(self.det_features, name="features")(joint)
        return jnp.concatenate([rgb, extra], axis=-1), density


def render_signal(field: SignalField, signal: jax.Array, c2w: jax.Array,
                  geometry: ViewGeometry, num_samples: int,
                  det_features: int) -> ChannelRender:
    """forward's rendering (Eq. 12, module doc) of S [B, V, H, W, F + 13] from cameras c2w
    [B, 4, 4] by a field with G = det_features rendered features: ChannelRender with
    leading shape [B, H, W] (values [B, H, W, 3 + G])."""
    rays = generate_rays(c2w, geometry.height, geometry.width, geometry.focal)
    batch = signal.shape[0]

    def field_fn(points: jax.Array, viewdirs: jax.Array):
        del viewdirs                                     # Lambertian scenes: no view input
        values, density = field(signal, points.reshape(batch, -1, 3))
        return (values.reshape(points.shape[:-1] + values.shape[-1:]),
                density.reshape(points.shape[:-1]))

    background = jnp.zeros(RGB + det_features, signal.dtype).at[:RGB].set(
        1.0 if geometry.white_background else 0.0)
    return render_rays_channels(field_fn, rays, geometry.near, geometry.far, num_samples,
                                background=background)


def conditioning(render: ChannelRender, geometry: ViewGeometry) -> jax.Array:
    """The deterministic estimate O_det [B, H, W, 3 + G + 1] of a rendering: colour in
    [-1, 1], the rendered features, depth mapped from [near, far] to [-1, 1]."""
    rgb = 2.0 * render.values[..., :RGB] - 1.0
    depth = 2.0 * (render.depth - geometry.near) / (geometry.far - geometry.near) - 1.0
    return jnp.concatenate([rgb, render.values[..., RGB:], depth[..., None]], axis=-1)


class SceneDenoiser(nn.Module):
    """denoise of Eq. 13-14 (module doc): (context view, O^trgt_t, phi^trgt, t) -> S.

    encoder: enc_t, a UNet with out_ch = F and input channels 3 + (3 + G + 1);
    field: the PixelField (the learned part of forward, which binds params['field']);
    det_samples: the bins of O_det's rendering; deterministic: return S_det;
    image_features: append each view's image to its feature map (module doc)."""
    encoder: UNet
    field: PixelField
    det_samples: int = 16
    deterministic: bool = False
    image_features: bool = False

    @property
    def signal_features(self) -> int:
        """The channels of each view's feature map in S: F, plus 3 with image_features."""
        return self.encoder.out_ch + (RGB if self.image_features else 0)

    def encode(self, image: jax.Array, cond: jax.Array, t: jax.Array) -> jax.Array:
        """The feature maps [B, H, W, F (+ 3)] of images [B, H, W, 3] with conditioning maps
        [B, H, W, 3 + G + 1] at timesteps t [B]: enc_t, and the image itself appended when
        image_features."""
        features = self.encoder(jnp.concatenate([image, cond], axis=-1), t)
        if self.image_features:
            features = jnp.concatenate([features, image.astype(features.dtype)], axis=-1)
        return features

    def __call__(self, ctxt: View, x_t: jax.Array, phi_trgt: jax.Array, t: jax.Array,
                 keep: jax.Array | None = None) -> jax.Array:
        """S [B, 2, H, W, F + 13] (Eq. 14) of the context (obs [B, H, W, 3], phi c2w
        [B, 4, 4]), the noisy target x_t [B, H, W, 3] seen from phi_trgt [B, 4, 4] at t
        [B]; keep [B] bool or None: False replaces the context image by zeros."""
        geometry, g = self.field.geometry, self.field.det_features
        image = ctxt.obs if keep is None else jnp.where(keep[:, None, None, None], ctxt.obs, 0.0)
        zeros = jnp.zeros(image.shape[:-1] + (RGB + g + 1,), image.dtype)
        f_ctxt = self.encode(image, zeros, jnp.zeros_like(t))
        det = pack(jnp.stack([f_ctxt, f_ctxt], 1), jnp.stack([ctxt.phi, ctxt.phi], 1),
                   jnp.zeros(t.shape, f_ctxt.dtype))
        if self.deterministic:
            if self.is_initializing():       # forward renders with the field: make its params
                self.field(det, jnp.zeros((det.shape[0], 1, 3), det.dtype))
            return det
        o_det = conditioning(render_signal(self.field, det, phi_trgt, geometry,
                                           self.det_samples, g), geometry)
        f_trgt = self.encode(x_t, o_det, t)
        return pack(jnp.stack([f_ctxt, f_trgt], 1), jnp.stack([ctxt.phi, phi_trgt], 1), t)


def context_only(signal: jax.Array) -> jax.Array:
    """S_det of S [..., V, H, W, F + 13]: the context (slot 0) in every slot at t = 0
    (module doc)."""
    return view_alone(signal, CONTEXT_SLOT).at[..., -TIME_CHANNELS:].set(0.0)


def view_alone(signal: jax.Array, view: int) -> jax.Array:
    """S [..., V, H, W, F + 13] with view slot `view` in every slot: the field of that
    view alone (the mean over identical views is that view's code)."""
    return jnp.broadcast_to(signal[..., view:view + 1, :, :, :], signal.shape)
