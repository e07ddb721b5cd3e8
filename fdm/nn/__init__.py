"""Network layers (flax.linen, NHWC): the DDPM U-Net and its parts.

`UNet` = `TimeEmbed` -> `UNetEncoder` -> `UNetMiddle` -> `UNetDecoder`, with
explicit skip exchange so model families (FDM) can recombine the parts.
`fdm.nn.convert_diffusers` imports diffusers `UNet2DModel` (DDPM) weights.
`fdm.nn.clip_vision` is CLIP's ViT image tower (DietNeRF's encoder), with its
preprocessing in `fdm.nn.clip_preprocess` and `fdm.nn.convert_clip` reading local
OpenAI or Hugging Face weight files; `fdm.nn.lmconv` / `lmconv_net` the locally
masked PixelCNN; `fdm.nn.mlp` the time-conditioned MLP of the forward-model toys;
`fdm.nn.pdae` PDAE / DiffSiam's encoder f(x0) -> z and z-modulated decoder g.

Importing this package applies `xla_cpu_conv_workaround()` (see there; opt out
with FDM_XLA_CPU_WORKAROUND=0).
"""
import os

XLA_CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def xla_cpu_conv_workaround() -> bool:
    """Routes XLA:CPU convolutions to Eigen instead of YNNPACK (jaxlib 0.10.x).

    In jaxlib 0.10 XLA:CPU sends convolutions to YNNPACK, whose weight-gradient
    convolutions (window = the whole feature map) run at ~30 GFLOP/s on one core
    versus ~75-125 for Eigen; forward and input-gradient convs are on par. This
    makes a U-Net training step ~1.4x slower (benchmarks/unet_step.py,
    BENCHMARKS.md). The flag only affects CPU compilation. It is appended to
    XLA_FLAGS only when: FDM_XLA_CPU_WORKAROUND is not "0", XLA_FLAGS does not set
    the YNN fusion type already, jaxlib is 0.10.x (the flag exists there; an
    unknown flag aborts XLA) and no JAX backend is initialised yet (XLA reads
    XLA_FLAGS once, when the first backend starts). Returns True if applied.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("FDM_XLA_CPU_WORKAROUND", "1") == "0" or "ynn_fusion_type" in flags:
        return False
    try:
        import jaxlib
        from jax._src import xla_bridge
        version = tuple(int(v) for v in jaxlib.__version__.split(".")[:2])
        if version != (0, 10) or xla_bridge.backends_are_initialized():
            return False
    except Exception:  # private API moved or odd version string: leave XLA alone
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_CONV_FLAG}".strip()
    return True


xla_cpu_conv_workaround()

from fdm.nn.layers import (Attention, Downsample, GroupNorm, ResBlock, Upsample,  # noqa: E402
                           group_norm, timestep_embedding, upsample_nearest)
from fdm.nn.unet import (TimeEmbed, UNet, UNetDecoder, UNetEncoder, UNetMiddle,  # noqa: E402
                         decoder_features, unet_from_config, unet_kwargs_from_config)

__all__ = [
    "Attention", "Downsample", "GroupNorm", "ResBlock", "Upsample", "group_norm",
    "timestep_embedding", "upsample_nearest", "TimeEmbed", "UNet", "UNetDecoder",
    "UNetEncoder", "UNetMiddle", "decoder_features", "unet_from_config", "unet_kwargs_from_config",
    "xla_cpu_conv_workaround", "XLA_CPU_CONV_FLAG",
]
