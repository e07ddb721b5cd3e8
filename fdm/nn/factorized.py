"""The factorized U-Net of FDM (seed 000 §2.3, Eq. 2.2–2.7; seed 001).

Notation (shapes NHWC):
  x_t  [B, S, S, C]       noisy image;  t [B] int;  y [B] int class (optional)
  temb [B, E]             timestep (+ class) embedding, E = 4·ch
  h_enc                   the encoder's skip list, h_enc[i]: [B, S_i, S_i, C_i]
  h_mid [B, s, s, C_mid]  middle-block output
  m    [B, S, S, K]       soft region masks, softmax over K           (Eq. 2.4)
  m↓   m average-pooled to a skip's resolution
  ε̂_k  [K, B, S, S, C]    decoder output of branch k                  (Eq. 2.6)
  ε̂    [B, S, S, C]       Σ_k ε̂_k ⊙ m_k                              (Eq. 2.7)

θ = {time_embed, encoder, middle, mask_generator, decoder}. The mask generator
is decoder-shaped with its own weights and K output channels; its output conv
gets a small random init (`mask_init_scale`): with exactly equal masks every
branch sees the same input, the gradient w.r.t. the masks vanishes and uniform
masks never split, while a full-scale init saturates the softmax.
`branch_embed_std` > 0 adds a learned per-branch identity e_k [E] (initialised
N(0, std²)) to the timestep embedding each decoder branch receives, so that
branches can differ beyond their masked inputs; 0 (the paper) adds nothing.
`mask_skip_max_res` (0 = every skip, the paper) lets the mask generator read only
the skips at resolution <= that value (the others are replaced by zeros, so the
parameter tree is unchanged): its masks are then built from coarse features and
cannot follow single edges (README, "What the main job shows today"). The decoder has
ONE set of weights shared by all K branches; the branches run as one batched
computation, K folded into the batch axis (row k·B + b is branch k of example b).

Decoding variants (Table 2.6 ablations), `decoding=`:
  "shared"    ε̂_k = dec(h_mid, h_enc ⊙ m_k↓), ε̂ = Σ_k ε̂_k ⊙ m_k  (the FDM)
  "unshared"  as "shared" but K decoders with separate weights, decoder_k
              (a loop of K ordinary decoders: XLA:CPU runs a vmapped decoder, i.e.
              convolutions with batched weights, about 7x slower per FLOP)
  "mask_hmid" ε̂_k = dec(h_mid ⊙ m_k↓, h_enc), ε̂ = Σ_k ε̂_k ⊙ m_k
  "concat"    ε̂ = dec([h_mid, m↓], [h_enc, m↓]), one branch          (Eq. 2.5)

`HierarchicalFDM` (appendix 2.5.1) nests a second FDM level inside each
first-level region.

Precision (`dtype`, `fdm.nn.unet`): encoder, middle, mask generator and decoders compute
in `dtype` with float32 parameters; the mask logits, the softmax m, the decoder
outputs ε̂_k and their combination ε̂ are float32; the pooled masks are cast to
`dtype` where they multiply features. Rematerialisation, `remat` (model.remat):
  "none"      store every activation for the backward pass
  "resblock"  recompute inside each ResBlock (`fdm.nn.unet`)
  "branch"    recompute each decoder-shaped pass: the mask generator, and the K
              decoder branches one at a time (the shared decoder then runs per
              branch, K calls on [B, ...] instead of one on [K·B, ...]), so the
              backward pass holds the activations of one branch at a time
Values and gradients are the same under every remat (up to float32 rounding).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.errors import UserError
from fdm.nn.layers import compute_dtype
from fdm.nn.unet import TimeEmbed, UNetDecoder, UNetEncoder, UNetMiddle

DECODINGS = ("shared", "unshared", "mask_hmid", "concat")
REMATS = ("none", "resblock", "branch")
# UNetDecoder with its activations recomputed in the backward pass; argument 4 of
# __call__(self, h, skips, temb, train, zemb) is the Python bool `train`.
RematDecoder = nn.remat(UNetDecoder, static_argnums=(4,))


@flax.struct.dataclass
class FDMOutput:
    """What the factorized U-Net returns.

    eps:         [B, S, S, C]    the noise prediction ε̂ (Eq. 2.7).
    masks:       [B, S, S, K]    soft region masks m (sum to one over K).
    branches:    [K, B, S, S, C] per-branch ε̂_k, or None unless requested.
    fine_masks:  [B, S, S, K·K2] second-level masks of the hierarchical FDM
                 (m_i^0 · m_ij^1, region i·K2 + j), else None.
    mask_logits: [B, S, S, K]    the mask generator's output before the softmax
                 (float32), or None when the masks were given.
    """
    eps: jax.Array
    masks: jax.Array
    branches: Optional[jax.Array] = None
    fine_masks: Optional[jax.Array] = None
    mask_logits: Optional[jax.Array] = None


def pool_masks(m: jax.Array, size: int) -> jax.Array:
    """Average-pools masks to a skip resolution.  m: [B, S, S, K] -> [B, size, size, K]."""
    factor = m.shape[1] // size
    if factor == 1:
        return m
    return nn.avg_pool(m, (factor, factor), strides=(factor, factor))


def fold_branches(a: jax.Array) -> jax.Array:
    """[K, B, ...] -> [K·B, ...] (row k·B + b)."""
    return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def unfold_branches(a: jax.Array, num_branches: int) -> jax.Array:
    """[K·B, ...] -> [K, B, ...]."""
    return a.reshape((num_branches, a.shape[0] // num_branches) + a.shape[1:])


def mask_features(h: jax.Array, m: jax.Array) -> jax.Array:
    """One masked copy of h per region, in h's dtype.
    h: [B, s, s, C], m: [B, S, S, K] -> [K, B, s, s, C]."""
    m_small = pool_masks(m, h.shape[1]).astype(h.dtype)
    return h[None] * jnp.moveaxis(m_small, -1, 0)[..., None]


def tile_branches(a: jax.Array, num_branches: int) -> jax.Array:
    """The same array for every branch.  a: [B, ...] -> [K, B, ...]."""
    return jnp.broadcast_to(a[None], (num_branches,) + a.shape)


def combine_branches(branches: jax.Array, m: jax.Array) -> jax.Array:
    """Σ_k ε̂_k ⊙ m_k.  branches: [K, B, S, S, C], m: [B, S, S, K] -> [B, S, S, C]."""
    return jnp.einsum("kbhwc,bhwk->bhwc", branches, m)


def coarse_skips(skips: Sequence[jax.Array], max_res: int) -> list[jax.Array]:
    """The skips with those finer than `max_res` zeroed; max_res = 0 keeps all.

    skips: list of [B, S_i, S_i, C_i] -> same shapes.
    """
    if max_res <= 0:
        return list(skips)
    return [s if s.shape[1] <= max_res else jnp.zeros_like(s) for s in skips]


class FactorizedUNet(nn.Module):
    """FDM denoiser: x_t, t -> FDMOutput(ε̂, m).  See the module docstring."""
    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.0
    num_classes: int = 0
    out_ch: int = 3
    num_groups: int = 32
    num_masks: int = 3
    decoding: str = "shared"
    mask_init_scale: float = 1e-2
    mask_skip_max_res: int = 0
    branch_embed_std: float = 0.0
    dtype: Any = jnp.float32
    remat: str = "none"

    def part_kwargs(self) -> dict:
        return dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                    attn_resolutions=tuple(self.attn_resolutions), dropout=self.dropout,
                    num_groups=self.num_groups, dtype=self.dtype,
                    remat=self.remat == "resblock")

    def decoder(self, out_ch: int, name: str, **kw) -> UNetDecoder:
        """A decoder-shaped part (RematDecoder under remat="branch"; call it with
        `train` positional)."""
        cls = RematDecoder if self.remat == "branch" else UNetDecoder
        return cls(**self.part_kwargs(), out_ch=out_ch, name=name, **kw)

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: Optional[jax.Array] = None,
                 train: bool = False, return_branches: bool = False,
                 masks: Optional[jax.Array] = None) -> FDMOutput:
        """x: [B, S, S, C], t: [B], y: [B] or None -> FDMOutput.

        masks: [B, S, S, K] or None. When given, the decoder uses them in place of
        the mask generator's (which is then not run; FDMOutput.masks = masks):
        the given-mask probe of `fdm.models.mask_probe`.
        """
        if self.decoding not in DECODINGS:
            raise UserError(f"model.decoding={self.decoding!r} is unknown; use one of {DECODINGS}")
        if self.remat not in REMATS:
            raise UserError(f"model.remat={self.remat!r} is unknown; use one of {list(REMATS)}")
        kw = self.part_kwargs()
        temb = TimeEmbed(self.ch, self.num_classes, self.dtype, name="time_embed")(t, y)
        h, skips = UNetEncoder(**kw, name="encoder")(x, temb, train)
        h_mid = UNetMiddle(**kw, name="middle")(h, temb, train)
        logits = None
        if masks is None:
            logits = self._mask_logits(h_mid, skips, temb, train)
            masks = jax.nn.softmax(logits, axis=-1)
        if self.decoding == "concat":
            eps = self._concat_decode(h_mid, skips, temb, masks, train)
            return FDMOutput(eps=eps, masks=masks, mask_logits=logits)
        branches = self._branch_decode(h_mid, skips, temb, masks, train)
        return FDMOutput(eps=combine_branches(branches, masks), masks=masks,
                         branches=branches if return_branches else None, mask_logits=logits)

    def _mask_logits(self, h_mid, skips, temb, train) -> jax.Array:
        """mask_generator(h_mid, h_enc, t) [B, S, S, K] float32; m = softmax of it (Eq. 2.4)."""
        return self.decoder(self.num_masks, "mask_generator",
                            out_init_scale=self.mask_init_scale)(
            h_mid, coarse_skips(skips, self.mask_skip_max_res), temb, train)

    def _branch_inputs(self, h_mid, skips, temb, m):
        """Per-branch decoder inputs, each [K, B, ...]."""
        k = self.num_masks
        temb_k = tile_branches(temb, k)
        if self.branch_embed_std > 0:
            embed = self.param("branch_embed", nn.initializers.normal(self.branch_embed_std),
                               (k, temb.shape[-1]))
            temb_k = temb_k + embed[:, None, :].astype(temb.dtype)
        if self.decoding == "mask_hmid":
            return mask_features(h_mid, m), [tile_branches(s, k) for s in skips], temb_k
        return tile_branches(h_mid, k), [mask_features(s, m) for s in skips], temb_k

    def _branch_decode(self, h_mid, skips, temb, m, train) -> jax.Array:
        """ε̂_k for all branches -> [K, B, S, S, C] float32: one batched computation of
        the shared decoder, or (unshared decoders, remat="branch") one call per branch."""
        hs, ss, ts = self._branch_inputs(h_mid, skips, temb, m)
        branch = lambda dec, k: dec(hs[k], [s[k] for s in ss], ts[k], train)
        if self.decoding == "unshared":
            return jnp.stack([branch(self.decoder(self.out_ch, f"decoder_{k}"), k)
                              for k in range(self.num_masks)])
        dec = self.decoder(self.out_ch, "decoder")
        if self.remat == "branch":
            return jnp.stack([branch(dec, k) for k in range(self.num_masks)])
        out = dec(fold_branches(hs), [fold_branches(s) for s in ss], fold_branches(ts), train)
        return unfold_branches(out, self.num_masks)

    def _concat_decode(self, h_mid, skips, temb, m, train) -> jax.Array:
        """Eq. 2.5: one decoder on features concatenated with the pooled masks.

        The K mask channels are zero-padded to `num_groups` channels so that the
        decoder's GroupNorm(num_groups) still divides the widened features.
        """
        pad = (-self.num_masks) % self.num_groups
        m_padded = jnp.pad(m, ((0, 0), (0, 0), (0, 0), (0, pad)))
        cat = lambda a: jnp.concatenate([a, pool_masks(m_padded, a.shape[1]).astype(a.dtype)], -1)
        return self.decoder(self.out_ch, "decoder")(cat(h_mid), [cat(s) for s in skips], temb,
                                                      train)


class HierarchicalFDM(nn.Module):
    """Two-level FDM (seed 000 appendix 2.5.1, Fig. 2.15).

    Level 1 is a FactorizedUNet giving masks m^0 [B,S,S,K] and branch outputs
    h^0_i. For each region i, a level-2 FactorizedUNet (one set of weights for
    all i, batched over i) denoises x_t ⊙ m^0_i, giving masks m^1_{i,j} and
    branch outputs h^1_{i,j}. Output: Σ_i m^0_i (h^0_i + Σ_j h^1_{i,j} m^1_{i,j}) / 2.
    """
    level1: dict
    level2_masks: int = 3

    @nn.compact
    def __call__(self, x, t, y=None, train=False, return_branches=False) -> FDMOutput:
        """x: [B, S, S, C], t: [B] -> FDMOutput with fine_masks [B, S, S, K·K2]."""
        top = FactorizedUNet(**self.level1, name="level1")(x, t, y, train, return_branches=True)
        k = top.masks.shape[-1]
        x_regions = fold_branches(mask_features(x, top.masks))
        sub = FactorizedUNet(**{**self.level1, "num_masks": self.level2_masks}, name="level2")(
            x_regions, jnp.tile(t, k), None if y is None else jnp.tile(y, k), train)
        sub_eps = unfold_branches(sub.eps, k)
        eps = combine_branches((top.branches + sub_eps) / 2, top.masks)
        sub_masks = unfold_branches(sub.masks, k)                      # [K, B, S, S, K2]
        fine = jnp.moveaxis(top.masks, -1, 0)[..., None] * sub_masks    # [K, B, S, S, K2]
        fine = jnp.moveaxis(fine, 0, -2).reshape(top.masks.shape[:-1] + (-1,))
        return FDMOutput(eps=eps, masks=top.masks, fine_masks=fine, mask_logits=top.mask_logits,
                         branches=top.branches if return_branches else None)


_UNET_KEYS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout",
              "num_classes", "num_groups", "out_ch", "remat")


def fdm_from_config(model_cfg) -> nn.Module:
    """FactorizedUNet or HierarchicalFDM from `config.model`.

    Keys (declared in configs/fdm_common.py:fdm_config, their values checked by
    `FDMFamily.config_rules`): the U-Net keys, dtype, remat, num_masks (K), decoding,
    mask_init_scale, mask_skip_max_res, branch_embed_std, hierarchical (bool),
    level2_masks (K2, hierarchical only).
    """
    kw = {k: model_cfg[k] for k in _UNET_KEYS if k in model_cfg}
    kw["ch_mult"] = tuple(kw["ch_mult"])
    kw["attn_resolutions"] = tuple(kw["attn_resolutions"])
    kw["dtype"] = compute_dtype(model_cfg)
    kw["num_masks"] = model_cfg.num_masks
    kw["decoding"] = model_cfg.decoding
    kw["mask_init_scale"] = model_cfg.mask_init_scale
    kw["mask_skip_max_res"] = model_cfg.mask_skip_max_res
    kw["branch_embed_std"] = float(model_cfg.branch_embed_std)
    if kw["branch_embed_std"] > 0 and kw["decoding"] == "concat":
        raise UserError("model.branch_embed_std > 0 needs decoder branches; 'concat' decoding "
                        "has one branch: set model.branch_embed_std=0 or another decoding")
    if model_cfg.hierarchical:
        if kw["decoding"] == "concat":
            raise UserError("model.hierarchical needs per-branch outputs; "
                            "use model.decoding='shared' (or unshared/mask_hmid), not 'concat'")
        return HierarchicalFDM(level1=kw, level2_masks=model_cfg.level2_masks)
    return FactorizedUNet(**kw)
