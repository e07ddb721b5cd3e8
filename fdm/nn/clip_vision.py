"""CLIP's image tower (Radford et al. 2021; OpenAI `clip/model.py` VisionTransformer), flax.linen.

Notation:
  B batch; S = image_size, P = patch_size, G = S / P patches per side,
  N = G^2 + 1 tokens (the class token first); D = width, h = heads, d = D / h,
  M = mlp_dim (4 D in OpenAI's models), E = embed_dim (the joint embedding).
  images [B, S, S, 3]: CLIP-normalised RGB (`fdm.nn.clip_preprocess`), NHWC.

Forward (OpenAI's code; equal to transformers' CLIPVisionModelWithProjection):
  x = conv1(images)                      P x P conv, stride P, no bias -> [B, G^2, D]
  x = [class_embedding; x] + positional_embedding                    -> [B, N, D]
  x = ln_pre(x)
  L pre-LN residual blocks:  x += attn(ln_1(x));  x += c_proj(QuickGELU(c_fc(ln_2(x))))
    attn: h-head softmax(q k^T / sqrt(d)) v with biased q, k, v and output projections;
    QuickGELU(u) = u * sigmoid(1.702 u)
  tokens = x                                                        [B, N, D]
  image_embeds = ln_post(tokens[:, 0]) @ proj (no bias)              [B, E]
LayerNorms have eps = layer_norm_eps (1e-5) and use two-pass statistics, like torch.

Features for an embedding loss (`image_features`):
  "projected"  image_embeds, E = 512 for ViT-B/32: CLIP's image embedding, what the
               DietNeRF paper (and transformers' `image_embeds`) call phi(I).
  "final_cls"  tokens[:, 0], D = 768: the class token after the last block, before
               ln_post and proj. This is what DietNeRF's released code compares
               (its CLIPEncoder calls `visual.featurize` and takes index 0).
Parameters are float32 and so is all computation (DietNeRF's code ran CLIP in float16
on the GPU, as `clip.load` leaves it there).
"""
import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdm.nn.clip_preprocess import clip_preprocess

FEATURES = ("projected", "final_cls")


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
    """Architecture of a CLIP ViT image tower; the defaults are ViT-B/32."""
    image_size: int = 224      # S, input side in pixels
    patch_size: int = 32       # P
    width: int = 768           # D
    layers: int = 12           # L residual blocks
    heads: int = 12            # h (OpenAI: width // 64)
    mlp_dim: int = 3072        # M (OpenAI: 4 * width)
    embed_dim: int = 512       # E, output of the projection
    layer_norm_eps: float = 1e-5

    @property
    def grid(self) -> int:
        """G = S / P patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """N = G^2 + 1."""
        return self.grid ** 2 + 1

    def check(self) -> None:
        """ValueError unless the sizes are consistent."""
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")


def quick_gelu(x: jax.Array) -> jax.Array:
    """x * sigmoid(1.702 x), the activation of OpenAI's CLIP."""
    return x * jax.nn.sigmoid(1.702 * x)


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class SelfAttention(nn.Module):
    """Multi-head self-attention without a mask: [B, N, D] -> [B, N, D]."""
    width: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = self.width // self.heads
        split = lambda t: t.reshape(t.shape[:-1] + (self.heads, d))  # noqa: E731
        q = split(nn.Dense(self.width, name="query")(x))
        k = split(nn.Dense(self.width, name="key")(x))
        v = split(nn.Dense(self.width, name="value")(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)
        return nn.Dense(self.width, name="out")(out)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1 x), then + c_proj(QuickGELU(c_fc(ln_2 x)))."""
    width: int
    heads: int
    mlp_dim: int
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + SelfAttention(self.width, self.heads, name="attn")(_layer_norm(self.eps, "ln_1")(x))
        h = nn.Dense(self.mlp_dim, name="c_fc")(_layer_norm(self.eps, "ln_2")(x))
        return x + nn.Dense(self.width, name="c_proj")(quick_gelu(h))


class ClipVisionTransformer(nn.Module):
    """CLIP's ViT image tower. `apply(v, images)` -> image_embeds [B, E];
    `apply(v, images, method="tokens")` -> tokens [B, N, D] (last block, before ln_post).

    Parameter names follow OpenAI's state dict (`visual.` prefix dropped, block i is
    `resblocks_{i}`, attn in_proj split into query/key/value, out_proj -> out).
    """
    config: ClipVisionConfig

    def setup(self):
        c = self.config
        c.check()
        scale = c.width ** -0.5
        self.conv1 = nn.Conv(c.width, (c.patch_size, c.patch_size),
                             strides=(c.patch_size, c.patch_size), padding="VALID",
                             use_bias=False)
        self.class_embedding = self.param("class_embedding", nn.initializers.normal(scale),
                                          (c.width,))
        self.positional_embedding = self.param(
            "positional_embedding", nn.initializers.normal(scale), (c.num_tokens, c.width))
        self.ln_pre = _layer_norm(c.layer_norm_eps, "ln_pre")
        self.resblocks = [ResidualAttentionBlock(c.width, c.heads, c.mlp_dim, c.layer_norm_eps,
                                                 name=f"resblocks_{i}") for i in range(c.layers)]
        self.ln_post = _layer_norm(c.layer_norm_eps, "ln_post")
        self.proj = self.param("proj", nn.initializers.normal(scale), (c.width, c.embed_dim))

    def tokens(self, images: jax.Array) -> jax.Array:
        """[B, S, S, 3] CLIP-normalised images -> [B, N, D] output of the last block."""
        c = self.config
        if images.shape[1:] != (c.image_size, c.image_size, 3):
            raise ValueError(f"CLIP tower needs [B, {c.image_size}, {c.image_size}, 3] images, "
                             f"got {images.shape}; resize with fdm.nn.clip_preprocess")
        x = self.conv1(images)
        x = x.reshape(x.shape[0], -1, c.width)
        cls = jnp.broadcast_to(self.class_embedding, (x.shape[0], 1, c.width))
        x = jnp.concatenate([cls.astype(x.dtype), x], axis=1) + self.positional_embedding
        x = self.ln_pre(x)
        for block in self.resblocks:
            x = block(x)
        return x

    def project(self, tokens: jax.Array) -> jax.Array:
        """[B, N, D] tokens -> [B, E] image_embeds = ln_post(tokens[:, 0]) @ proj."""
        return self.ln_post(tokens[:, 0]) @ self.proj

    def __call__(self, images: jax.Array) -> jax.Array:
        """[B, S, S, 3] CLIP-normalised images -> [B, E] projected embeddings."""
        return self.project(self.tokens(images))


def image_features(config: ClipVisionConfig, params, images: jax.Array,
                   feature: str = "projected") -> jax.Array:
    """[B, S, S, 3] CLIP-normalised images -> [B, E] ("projected") or [B, D] ("final_cls")."""
    model = ClipVisionTransformer(config)
    if feature == "projected":
        return model.apply({"params": params}, images)
    if feature == "final_cls":
        return model.apply({"params": params}, images, method="tokens")[:, 0]
    raise ValueError(f"feature {feature!r} is not one of {FEATURES}")


def unit_vectors(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """x / max(||x||, eps) over the last axis (the normalisation of torch cosine_similarity)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def make_image_encoder(config: ClipVisionConfig, feature: str = "projected",
                       resize_method: str = "bilinear") -> Callable[[Any, jax.Array], jax.Array]:
    """The encoder phi as a function `(params, image) -> unit vector`.

    Returns f(params, images): images [B, H, W, 3] RGB in [0, 1] (any H, W) -> [B, F]
    unit vectors, F = E for "projected", D for "final_cls": `clip_preprocess` (resize to
    image_size with `resize_method`, centre crop, CLIP normalisation), the tower, then
    `unit_vectors`. Differentiable in the images. The params are an argument, not closed
    over, so that a jitted caller passes them as an input instead of baking ~88M
    constants (ViT-B/32) into the compiled program.
    """
    if feature not in FEATURES:
        raise ValueError(f"feature {feature!r} is not one of {FEATURES}")

    def encode(params, images: jax.Array) -> jax.Array:
        x = clip_preprocess(images, config.image_size, resize_method)
        return unit_vectors(image_features(config, params, x, feature))

    return encode
