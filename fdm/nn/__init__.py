"""Network layers (flax.linen, NHWC): the DDPM U-Net and its parts.

`UNet` = `TimeEmbed` -> `UNetEncoder` -> `UNetMiddle` -> `UNetDecoder`, with
explicit skip exchange so model families (FDM) can recombine the parts.
`fdm.nn.convert_diffusers` imports diffusers `UNet2DModel` (DDPM) weights.
"""
from fdm.nn.layers import (Attention, Downsample, GroupNorm, ResBlock, Upsample,
                           group_norm, timestep_embedding, upsample_nearest)
from fdm.nn.unet import (TimeEmbed, UNet, UNetDecoder, UNetEncoder, UNetMiddle,
                         unet_from_config, unet_kwargs_from_config)

__all__ = [
    "Attention", "Downsample", "GroupNorm", "ResBlock", "Upsample", "group_norm",
    "timestep_embedding", "upsample_nearest", "TimeEmbed", "UNet", "UNetDecoder",
    "UNetEncoder", "UNetMiddle", "unet_from_config", "unet_kwargs_from_config",
]
