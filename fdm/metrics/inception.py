"""Inception-v3 as used by FID (Heusel et al. 2017), in Flax, NHWC.

This is the network of TensorFlow's original FID code (graph
"inception-2015-12-05", Szegedy et al. 2016, "Rethinking the Inception
Architecture"), in the layout of its PyTorch port (pytorch-fid,
`pt_inception-2015-12-05-6726825d.pth`), so that FID/KID computed here are
comparable to published numbers. It differs from torchvision's Inception-v3 in:
  * 1008 output classes (`fc`), no auxiliary classifier;
  * the pooling branch of blocks A, C and E_1 averages 3x3 windows over the
    valid (unpadded) pixels only (TF's average pooling);
  * the pooling branch of the last block (Mixed_7c, E_2) takes a 3x3 MAX pool.
Every convolution is `BasicConv2d`: conv without bias, BatchNorm (eps 1e-3,
running statistics), ReLU. Submodule names equal the PyTorch attribute names
(`Mixed_5b/branch1x1/conv`), which makes weight conversion a renaming.

Notation
  x      float32 [N, H, W, 3]   images in [-1, 1] (the network's input range)
  pool3  float32 [N, 2048]      global average of the last block: the FID features
  logits float32 [N, 1008]      `fc(pool3)`

`InceptionFeatureExtractor` streams images through the network in fixed-size
batches: optional 8-bit quantisation (as if the images were saved as PNG),
bilinear resize to 299x299 without antialiasing (= torch
`F.interpolate(mode="bilinear", align_corners=False)`, as pytorch-fid), pool3.
"""
from __future__ import annotations

import functools
from typing import Iterable, Iterator, Mapping, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_IMAGE_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
# No bf16/TF32 passes on TPU/GPU: metric values must not depend on the hardware.
_PRECISION = jax.lax.Precision.HIGHEST


def _pad(p: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric torch-style padding (ph, pw) -> flax ((ph, ph), (pw, pw))."""
    ph, pw = (p, p) if isinstance(p, int) else p
    return ((ph, ph), (pw, pw))


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3, running stats) -> ReLU.

    [N, H, W, Cin] -> [N, H', W', features].
    """
    features: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = (self.kernel, self.kernel) if isinstance(self.kernel, int) else self.kernel
        x = nn.Conv(self.features, kernel, strides=self.stride, padding=_pad(self.padding),
                    use_bias=False, precision=_PRECISION, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_valid_only(x: jax.Array) -> jax.Array:
    """3x3 stride-1 'same' average over unpadded pixels only (TF semantics)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1), count_include_pad=False)


def _max_pool_same(x: jax.Array) -> jax.Array:
    """3x3 stride-1 'same' max pool (padding never wins: it is -inf)."""
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1))


def _max_pool_reduce(x: jax.Array) -> jax.Array:
    """3x3 stride-2 max pool without padding: [N,H,W,C] -> [N,(H-3)//2+1,(W-3)//2+1,C]."""
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): channels 64 + 64 + 96 + pool_features."""
    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(64, 1, name="branch1x1")(x)
        b5 = BasicConv2d(48, 1, name="branch5x5_1")(x)
        b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool_valid_only(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): channels 384 + 96 + Cin."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x)
        bd = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_reduce(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e): 4 x 192 channels."""
    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, 1, name="branch1x1")(x)
        b7 = BasicConv2d(c7, 1, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, 1, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_valid_only(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): channels 320 + 192 + Cin."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(192, 1, name="branch3x3_1")(x)
        b3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_reduce(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 branches (Mixed_7b/c): 320 + 768 + 768 + 192 channels.

    pool: "avg" (E_1, valid-pixel average) or "max" (E_2, the FID graph's max pool).
    """
    pool: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(320, 1, name="branch1x1")(x)
        b3 = BasicConv2d(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = _max_pool_same(x) if self.pool == "max" else _avg_pool_valid_only(x)
        bp = BasicConv2d(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """FID Inception-v3.  x [N,H,W,3] in [-1,1] (H,W >= 75; 299 for FID) -> pool3 [N,2048].

    With return_logits=True returns (pool3, logits [N,1008]). Variables:
    'params' and 'batch_stats' (BatchNorm running mean/var).
    """

    @nn.compact
    def __call__(self, x: jax.Array, return_logits: bool = False):
        x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(_max_pool_reduce(x))
        x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_reduce(x)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, name=name)(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                         ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool3 = jnp.mean(x, axis=(1, 2))
        if not return_logits:
            return pool3
        return pool3, nn.Dense(NUM_CLASSES, precision=_PRECISION, name="fc")(pool3)


def variable_shapes() -> Mapping:
    """Shape/dtype tree of InceptionV3's variables (params incl. fc, batch_stats); no compute."""
    x = jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)
    return jax.eval_shape(functools.partial(InceptionV3().init, return_logits=True),
                          jax.random.PRNGKey(0), x)


def resize_bilinear(images: jax.Array, size: int) -> jax.Array:
    """[N,H,W,C] -> [N,size,size,C], bilinear, half-pixel centres, NO antialiasing.

    Equals torch `F.interpolate(mode="bilinear", align_corners=False)` (pytorch-fid's
    resize) for up- and downsampling.
    """
    n, _, _, c = images.shape
    return jax.image.resize(images, (n, size, size, c), method="bilinear", antialias=False)


def quantize_8bit(images: jax.Array) -> jax.Array:
    """[-1,1] images -> the nearest of the 256 levels of an 8-bit PNG, still in [-1,1]."""
    levels = jnp.round((jnp.clip(images, -1.0, 1.0) + 1.0) * 127.5)
    return levels / 127.5 - 1.0


@functools.partial(jax.jit, static_argnames=("quantize",))
def _pool3(variables: Mapping, images: jax.Array, quantize: bool) -> jax.Array:
    """[B,H,W,3] in [-1,1] -> pool3 [B,2048] of the images resized to 299x299."""
    x = quantize_8bit(images) if quantize else images
    return InceptionV3().apply(variables, resize_bilinear(x, FID_IMAGE_SIZE))


Images = Union[np.ndarray, Iterable[np.ndarray]]


def fixed_size_batches(images: Images, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (batch [batch_size, ...], n_valid): rows past n_valid are zero padding.

    images: one array [N, ...] or an iterable of arrays [B_i, ...] (e.g. a sampler's
    output stream); batches of any size are re-cut so that every batch has the same
    shape and the network compiles once.
    """
    chunks = (images,) if isinstance(images, (np.ndarray, jax.Array)) else images
    for chunk in chunks:
        chunk = np.asarray(chunk, np.float32)
        for start in range(0, len(chunk), batch_size):
            part = chunk[start:start + batch_size]
            pad = np.zeros((batch_size - len(part),) + part.shape[1:], np.float32)
            yield np.concatenate([part, pad]), len(part)


class InceptionFeatureExtractor:
    """Streams images through the FID Inception: images [N,H,W,3] in [-1,1] -> pool3 [N,2048].

    variables: from `fdm.metrics.weights.load_metric_variables(path, "inception")`.
    quantize: round to 8-bit levels first (FID is defined on saved uint8 images).
    """

    def __init__(self, variables: Mapping, batch_size: int = 50, quantize: bool = True):
        self.variables = jax.device_put(variables)
        self.batch_size = batch_size
        self.quantize = quantize

    def __call__(self, images: Images) -> np.ndarray:
        """float32 [N, 2048] for all images of the array or the stream of batches."""
        feats = [np.asarray(_pool3(self.variables, batch, self.quantize))[:n]
                 for batch, n in fixed_size_batches(images, self.batch_size)]
        return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM), np.float32)
