"""The DDPM U-Net split into parts with explicit skip exchange (flax.linen, NHWC).

Notation:
  C = `ch` base width; level l in [0, L) with L = len(ch_mult) has width
  C_l = ch * ch_mult[l] and spatial size S / 2^l for input size S.
  R = `num_res_blocks`. E = 4C is the timestep-embedding width.
  x: [B, S, S, in_ch]; t: [B]; y: [B] int class labels; temb: [B, E].
  skips: list of feature maps [B, H_i, W_i, C_i], in encoder order.

Parts (FDM, seed 000 sec. 2.3, needs them separately):
  TimeEmbed(t, y)                 -> temb
  UNetEncoder(x, temb, train)     -> (h, skips)   len(skips) = L*(R+1)
  UNetMiddle(h, temb, train)      -> h            Res, Attn, Res at the lowest level
  UNetDecoder(h, skips, temb, train) -> out       consumes skips in reverse order
`UNet` composes them: out = dec(mid(enc(x))) with the same skips.
UNetMiddle and UNetDecoder take an optional `zemb` [B, E_z] that modulates every
ResBlock (`fdm.nn.layers.ResBlock`, PDAE's z-modulation; `fdm.nn.pdae` builds PDAE's
decoder g from them); without it they are DDPM's parts, parameters included.

Attention is applied wherever the feature map's height H is in
`attn_resolutions` (plus always in the middle block).
The decoder needs the batch of `h`, every skip and `temb` to be equal; the FDM
folds its K branches into that batch axis.

Precision and memory (`model.dtype`, `model.remat`; BENCHMARKS.md "Memory and FLOPs"):
`dtype` is the compute dtype (float32 or bfloat16, `fdm.nn.layers`); parameters are
float32, activations between layers are in `dtype`, GroupNorm statistics and softmaxes
in float32, and the network outputs (UNetDecoder, UNet) are cast to float32 so that
every loss is computed in float32. `remat` (the parts' bool; UNet's "resblock")
rematerialises each ResBlock (`nn.remat`): only its inputs are stored for the
backward pass, which recomputes the rest; values and gradients are unchanged.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.errors import UserError
from fdm.nn.layers import (Attention, Downsample, GroupNorm, ResBlock, Upsample,
                           conv3x3, default_init, timestep_embedding)

Dtype = Any

# Values of model.remat for the DDPM U-Net: "none", or "resblock" (nn.remat per ResBlock).
REMATS = ("none", "resblock")
# ResBlock with its activations recomputed in the backward pass; argument 3 of
# __call__(self, x, temb, train, zemb) is the Python bool `train`.
RematResBlock = nn.remat(ResBlock, static_argnums=(3,))


class TimeEmbed(nn.Module):
    """Timestep (and optional class) embedding.

    temb = Dense(E)(swish(Dense(E)(sinusoid(t, C)))) [+ Embed(num_classes, E)(y)],
    in `dtype` (the sinusoid is computed in float32).
    """
    ch: int
    num_classes: int = 0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array, y: Optional[jax.Array] = None) -> jax.Array:
        """t: [B], y: [B] int or None -> temb [B, 4*ch]."""
        dim = 4 * self.ch
        emb = timestep_embedding(t, self.ch)
        emb = nn.Dense(dim, kernel_init=default_init, dtype=self.dtype, name="dense_0")(emb)
        emb = nn.Dense(dim, kernel_init=default_init, dtype=self.dtype,
                       name="dense_1")(nn.swish(emb))
        if self.num_classes > 0 and y is not None:
            emb = emb + nn.Embed(self.num_classes, dim, dtype=self.dtype,
                                 name="class_embed")(y)
        return emb


class _UNetPart(nn.Module):
    """Shared hyper-parameters of the U-Net parts (see module docstring); `remat`:
    rematerialise every ResBlock."""
    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    remat: bool = False

    def res_block(self, out_ch: int, name: str) -> ResBlock:
        """A ResBlock (RematResBlock when `remat`; call it with `train` positional)."""
        block = RematResBlock if self.remat else ResBlock
        return block(out_ch, self.dropout, self.num_groups, dtype=self.dtype, name=name)

    def maybe_attn(self, h: jax.Array, name: str) -> jax.Array:
        """Applies self-attention iff the feature-map height is an attention resolution."""
        if h.shape[1] in tuple(self.attn_resolutions):
            h = Attention(self.num_groups, dtype=self.dtype, name=name)(h)
        return h


class UNetEncoder(_UNetPart):
    """Down path: conv_in, then per level R ResBlocks (+attn) and a downsample."""

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool = False):
        """x: [B, S, S, in_ch], temb: [B, E] -> (h [B, S/2^(L-1), ., C_{L-1}], skips).

        skips (in order): conv_in output, each ResBlock(+attn) output, each
        downsample output; exactly the `hs` list of DDPM.
        """
        h = conv3x3(self.ch, "conv_in", self.dtype)(x)
        skips = [h]
        last = len(self.ch_mult) - 1
        for level, mult in enumerate(self.ch_mult):
            for i in range(self.num_res_blocks):
                h = self.res_block(self.ch * mult, f"down_{level}_res_{i}")(h, temb, train)
                h = self.maybe_attn(h, f"down_{level}_attn_{i}")
                skips.append(h)
            if level != last:
                h = Downsample(self.dtype, name=f"down_{level}_downsample")(h)
                skips.append(h)
        return h, skips


class UNetMiddle(_UNetPart):
    """Middle block at the lowest resolution: ResBlock, Attention, ResBlock."""

    @nn.compact
    def __call__(self, h: jax.Array, temb: jax.Array, train: bool = False,
                 zemb: Optional[jax.Array] = None) -> jax.Array:
        """h: [B, s, s, C_{L-1}], temb: [B, E], zemb: [B, E_z] or None
        -> [B, s, s, C_{L-1}]."""
        c = self.ch * self.ch_mult[-1]
        h = self.res_block(c, "res_0")(h, temb, train, zemb)
        h = Attention(self.num_groups, dtype=self.dtype, name="attn")(h)
        return self.res_block(c, "res_1")(h, temb, train, zemb)


class UNetDecoder(_UNetPart):
    """Up path: per level (from the lowest) R+1 ResBlocks on [h, skip] (+attn),
    an upsample, then GroupNorm -> swish -> conv_out.

    Each level's output before its upsample, [B, S/2^l, S/2^l, C_l], is sown into
    the collection "intermediates" as "up_{l}": `apply(..., mutable=["intermediates"])`
    returns them (see `decoder_features`); otherwise nothing is stored.

    conv_out is zero-initialised when `out_init_scale` is 0 (DDPM), else
    variance-scaling initialised with that scale (the FDM mask generator: exactly
    uniform masks are a fixed point, saturated ones have no gradient). The output is
    float32 whatever `dtype` (conv_out runs in `dtype`)."""
    out_ch: int = 3
    out_init_scale: float = 0.0

    @nn.compact
    def __call__(self, h: jax.Array, skips: Sequence[jax.Array], temb: jax.Array,
                 train: bool = False, zemb: Optional[jax.Array] = None) -> jax.Array:
        """h: [B, s, s, C_{L-1}], skips as from UNetEncoder (each [B, ...]),
        temb: [B, E], zemb: [B, E_z] or None -> [B, S, S, out_ch] float32."""
        expected = len(self.ch_mult) * (self.num_res_blocks + 1)
        if len(skips) != expected:
            raise ValueError(f"UNetDecoder: got {len(skips)} skips, expected {expected}")
        skips = list(skips)
        for level in reversed(range(len(self.ch_mult))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = self.res_block(self.ch * self.ch_mult[level], f"up_{level}_res_{i}")(
                    h, temb, train, zemb)
                h = self.maybe_attn(h, f"up_{level}_attn_{i}")
            self.sow("intermediates", f"up_{level}", h)
            if level != 0:
                h = Upsample(self.dtype, name=f"up_{level}_upsample")(h)
        h = nn.swish(GroupNorm(self.num_groups, name="norm_out")(h))
        init = (nn.initializers.zeros if self.out_init_scale == 0.0 else
                nn.initializers.variance_scaling(self.out_init_scale, "fan_avg", "uniform"))
        out = nn.Conv(self.out_ch, (3, 3), padding=((1, 1), (1, 1)), kernel_init=init,
                      dtype=self.dtype, name="conv_out")(h)
        return out.astype(jnp.float32)


class UNet(nn.Module):
    """DDPM U-Net: TimeEmbed -> UNetEncoder -> UNetMiddle -> UNetDecoder.

    Parameter tree: {time_embed, encoder, middle, decoder} (float32; the same with
    any dtype and remat). dtype: compute dtype; remat: one of REMATS (module doc).
    """
    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.0
    num_classes: int = 0
    out_ch: int = 3
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    remat: str = "none"

    def part_kwargs(self) -> dict:
        """Hyper-parameters shared by encoder, middle and decoder(-shaped) parts."""
        if self.remat not in REMATS:
            raise UserError(f"model.remat={self.remat!r} is unknown for the U-Net; use one "
                            f"of {list(REMATS)}")
        return dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                    attn_resolutions=tuple(self.attn_resolutions), dropout=self.dropout,
                    num_groups=self.num_groups, dtype=self.dtype,
                    remat=self.remat == "resblock")

    def setup(self):
        kw = self.part_kwargs()
        self.time_embed = TimeEmbed(self.ch, self.num_classes, self.dtype)
        self.encoder = UNetEncoder(**kw)
        self.middle = UNetMiddle(**kw)
        self.decoder = UNetDecoder(**kw, out_ch=self.out_ch)

    def __call__(self, x: jax.Array, t: jax.Array, y: Optional[jax.Array] = None,
                 train: bool = False) -> jax.Array:
        """x: [B, S, S, C_in], t: [B], y: [B] int or None -> [B, S, S, out_ch] float32."""
        temb = self.time_embed(t, y)
        h, skips = self.encoder(x, temb, train)
        h = self.middle(h, temb, train)
        return self.decoder(h, skips, temb, train)

    @classmethod
    def from_config(cls, cfg, **overrides) -> "UNet":
        """Builds a UNet from a config section with keys ch, ch_mult,
        num_res_blocks, attn_resolutions, dropout and optionally num_classes,
        num_groups, out_ch, dtype, remat. `overrides` win over the config."""
        return cls(**{**unet_kwargs_from_config(cfg), **overrides})


_KEYS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout",
         "num_classes", "num_groups", "out_ch", "remat")


def unet_kwargs_from_config(cfg) -> dict:
    """UNet keyword arguments from a mapping / ConfigDict (e.g. `config.model`).

    Required keys: ch, ch_mult, num_res_blocks, attn_resolutions, dropout.
    Optional: num_classes (0), num_groups (32), out_ch (3), dtype ("float32", the
    name of the compute dtype), remat ("none"). Other keys are ignored.
    """
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    missing = [k for k in _KEYS[:5] if get(k, None) is None]
    if missing:
        raise UserError(f"model config lacks {missing}; add them to config.model")
    kw = {k: get(k, None) for k in _KEYS if get(k, None) is not None}
    kw["ch_mult"] = tuple(kw["ch_mult"])
    kw["attn_resolutions"] = tuple(kw["attn_resolutions"])
    if get("dtype", None) is not None:
        kw["dtype"] = jnp.dtype(get("dtype", None))
    return kw


def unet_from_config(cfg, **overrides) -> UNet:
    """Same as `UNet.from_config(cfg, **overrides)`."""
    return UNet.from_config(cfg, **overrides)


def decoder_features(unet: UNet, params, x: jax.Array, t: jax.Array,
                     y: Optional[jax.Array] = None) -> dict[str, jax.Array]:
    """Decoder level outputs of one eval-mode pass: {"up_l": [B, S/2^l, S/2^l, C_l]}
    for every level l (x: [B, S, S, C_in], t: [B], y: [B] or None)."""
    _, state = unet.apply({"params": params}, x, t, y=y, mutable=["intermediates"])
    return {name: value[0] for name, value in state["intermediates"]["decoder"].items()}
