"""PDAE / DiffSiam networks (seed 002, brief `shared/design/seed002.md` S1, S2, D4, D5):
the encoder f(x0) -> z and the decoder g(x_t, z, t) (flax.linen, NHWC).

`ResNetEncoder` (f_omega): ResNet-10 with the CIFAR stem, BasicBlocks
[1, 1, 1, 1] at widths (64, 128, 256, 512) by default, strides 1, 2, 2, 2:

    stem:   relu(norm(conv3x3(x)))                       (no max-pool)
    block:  relu(shortcut(h) + norm2(conv3x3(relu(norm1(conv3x3_stride(h))))))
            shortcut = norm(conv1x1_stride(h)) iff the stride or the width changes
    z = mean over H, W of the last stage               [B, widths[-1]]
      -> Dense(z_dim)(z) when z_dim is set              [B, z_dim]

It is torchvision's `ResNet(BasicBlock, [1, 1, 1, 1])` with a 3x3 stride-1 stem, no
max-pool and no fc, except that every BatchNorm is a GroupNorm (brief D5: the trainer
keeps no batch statistics); convolutions have no bias, as there.

`ShiftDecoder` (g_phi, PDAE's shift branch of `ShiftUNet`): reads the *frozen* U-Net
encoder's output h and skips and the frozen timestep embedding temb, and runs
trainable copies of `UNetMiddle` and `UNetDecoder` whose ResBlocks are z-modulated
(`fdm.nn.layers.ResBlock`):

    zemb = Dense(4C)(z)                                  (PDAE's label_emb)
    in every ResBlock, after norm2:
        h <- (1 + s_z) h + b_z,   [s_z, b_z] = Dense(2 C_out)(swish(zemb))
    g = UNetDecoder(UNetMiddle(h, temb, zemb), skips, temb, zemb)   [B, S, S, out_ch]

UNetDecoder's output conv is zero-initialised, so g = 0 at initialisation whatever z
is, and the PDAE loss starts as the frozen DM's (`fdm.diffusion.pdae`). The parameter
tree {z_embed, middle, decoder} holds UNet's {middle, decoder} trees plus each
ResBlock's z_proj, so the frozen DM's weights can initialise g. Build it from a UNet
`unet` as `ShiftDecoder(**unet.part_kwargs(), out_ch=image channels)`.

Precision (`dtype`, as `fdm.nn.unet`): convolutions and dense layers compute in `dtype`
with float32 parameters, GroupNorm statistics in float32; z and g are returned in
float32. ShiftDecoder's `remat` rematerialises its ResBlocks (`fdm.nn.unet`).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.nn.layers import GroupNorm, default_init
from fdm.nn.unet import UNetDecoder, UNetMiddle

Dtype = Any

# torchvision's ResNet convolution initialiser (kaiming normal, fan_out, relu)
resnet_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nn.Module):
    """ResNet basic block (module docstring) with GroupNorm; x: [B, H, W, C_in] ->
    [B, H / stride, W / stride, features]."""
    features: int
    stride: int = 1
    num_groups: int = 8
    eps: float = 1e-6
    dtype: Dtype = jnp.float32

    def conv(self, kernel: int, stride: int, name: str) -> nn.Conv:
        pad = kernel // 2
        return nn.Conv(self.features, (kernel, kernel), strides=(stride, stride),
                       padding=((pad, pad), (pad, pad)), use_bias=False,
                       kernel_init=resnet_conv_init, dtype=self.dtype, name=name)

    def norm(self, name: str) -> GroupNorm:
        return GroupNorm(self.num_groups, self.eps, name=name)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.relu(self.norm("norm1")(self.conv(3, self.stride, "conv1")(x)))
        h = self.norm("norm2")(self.conv(3, 1, "conv2")(h))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = self.norm("shortcut_norm")(self.conv(1, self.stride, "shortcut_conv")(x))
        return nn.relu(x + h)


class ResNetEncoder(nn.Module):
    """f_omega: images [B, S, S, C] -> z [B, z_dim or widths[-1]] float32 (module docstring).

    widths: one per stage (the first stage keeps the resolution, each later one
    halves it); blocks: BasicBlocks per stage ((1, 1, 1, 1) = ResNet-10); num_groups:
    GroupNorm groups, dividing every width; z_dim: None for the pooled features
    themselves (the thesis's z), else a Dense projection to z_dim."""
    widths: Sequence[int] = (64, 128, 256, 512)
    blocks: Sequence[int] = (1, 1, 1, 1)
    z_dim: Optional[int] = None
    num_groups: int = 8
    eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"ResNetEncoder: {len(self.widths)} widths but "
                             f"{len(self.blocks)} block counts")
        h = nn.Conv(self.widths[0], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=resnet_conv_init, dtype=self.dtype, name="stem_conv")(x)
        h = nn.relu(GroupNorm(self.num_groups, self.eps, name="stem_norm")(h))
        for stage, (width, count) in enumerate(zip(self.widths, self.blocks)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                h = BasicBlock(width, stride, self.num_groups, self.eps, self.dtype,
                               name=f"stage_{stage}_block_{i}")(h)
        z = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
        if self.z_dim is not None:
            z = nn.Dense(self.z_dim, kernel_init=default_init, dtype=self.dtype,
                         name="proj")(z)
        return z.astype(jnp.float32)


class ShiftDecoder(nn.Module):
    """g_phi(x_t, z, t) on the frozen U-Net encoder's outputs (module docstring).

    The U-Net hyper-parameters must be the frozen UNet's (`UNet.part_kwargs()`);
    out_ch is the image's channel count (g lives in image space)."""
    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.0
    num_groups: int = 32
    out_ch: int = 3
    dtype: Dtype = jnp.float32
    remat: bool = False

    def setup(self):
        kw = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                  attn_resolutions=tuple(self.attn_resolutions), dropout=self.dropout,
                  num_groups=self.num_groups, dtype=self.dtype, remat=self.remat)
        self.z_embed = nn.Dense(4 * self.ch, kernel_init=default_init, dtype=self.dtype)
        self.middle = UNetMiddle(**kw)
        self.decoder = UNetDecoder(**kw, out_ch=self.out_ch)

    def __call__(self, h: jax.Array, skips: Sequence[jax.Array], temb: jax.Array,
                 z: jax.Array, train: bool = False) -> jax.Array:
        """h, skips: `UNetEncoder(x_t, temb)`'s outputs; temb: [B, 4C] the frozen
        `TimeEmbed(t)`; z: [B, d] (masked by `fdm.diffusion.pdae.masked_z` in DiffSiam)
        -> g [B, S, S, out_ch] float32."""
        zemb = self.z_embed(z)
        h = self.middle(h, temb, train, zemb)
        return self.decoder(h, skips, temb, train, zemb)
