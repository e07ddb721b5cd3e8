"""CLIP's image preprocessing as pure JAX functions (differentiable, jit-able).

Notation:
  images [B, H, W, 3] float RGB in [0, 1] (NHWC); S the encoder's input side
  (224 for ViT-B/32); returned images are [B, S, S, 3].

Resizing follows torch `F.interpolate(x, size, mode, align_corners=False)`
(antialias=False) to float32 rounding: output pixel o samples the input at
  s = (o + 1/2) * (in / out) - 1/2
  * "bilinear": s is clamped to >= 0; taps floor(s) and floor(s) + 1 (the last
    one clamped to in - 1) with weights 1 - t and t, t = s - floor(s);
  * "bicubic": Keys' cubic convolution with a = -0.75 on the 4 taps
    floor(s) - 1 .. floor(s) + 2, indices clamped to [0, in - 1] (border
    replicated); no clamping of the result.
Height and width are resized separately (the kernels are separable).

Which resize:
  * DietNeRF's code resizes rendered and training images (float tensors) with
    `F.interpolate(..., (224, 224), mode=pixel_interp_mode)` (the 168^2 ray grid
    up, the 400^2 training views down); its argparse default is "bicubic", but all
    16 DietNeRF configs (configs/dietnerf_8v/*, dietnerf_ft_8v/*) set
    `pixel_interp_mode = bilinear`, and the design brief
    (seed004 part C) says bilinear: "bilinear" is the default here.
  * OpenAI CLIP's own pipeline for PIL images is Resize(S, BICUBIC) of the
    shorter side with PIL (antialiased when downsampling, a = -0.5), then
    CenterCrop(S), ToTensor, Normalize. `clip_preprocess(method="bicubic")`
    has the same geometry (shorter side, centre crop) but torch's
    non-antialiased a = -0.75 kernel, so it is close to, not equal to, the PIL
    pipeline when downsampling.

Normalisation: (x - CLIP_MEAN) / CLIP_STD per channel (OpenAI clip.py).
"""
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_METHODS = ("bilinear", "bicubic")
_CUBIC_A = -0.75  # torch's bicubic coefficient (PIL uses -0.5)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """[out, 4] Keys cubic-convolution weights (a = -0.75) of taps -1, 0, 1, 2 at offset t."""
    a = np.float32(_CUBIC_A)
    one, two = np.float32(1), np.float32(2)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):   # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + one), near(t), near(one - t), far(two - t)], axis=-1)


def resize_taps(in_size: int, out_size: int, method: str) -> Tuple[np.ndarray, np.ndarray]:
    """Input indices [out, T] (int32) and weights [out, T] (float32) of one axis.

    T = 2 for "bilinear", 4 for "bicubic"; output pixel o = sum_j w[o, j] * x[idx[o, j]],
    as torch `F.interpolate(align_corners=False)` (see the module docstring). Sample
    positions are rounded to float32 once, as ATen's float32 kernels do (scale * (o + 1/2)
    - 1/2 in one fused multiply-add), and weights computed in float32 from them: with
    exact positions the bilinear weights would differ from torch's by up to 2e-5 at the
    far end of a 400-pixel axis; this way they are bit-identical.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method {method!r} is not one of {RESIZE_METHODS}")
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    src = (np.float64(scale) * (np.arange(out_size) + 0.5) - 0.5).astype(f32)  # one rounding (FMA)
    if method == "bilinear":
        src = np.maximum(src, f32(0))
    i0 = np.minimum(np.floor(src), in_size - 1).astype(np.int64)
    t = np.clip(src - i0.astype(f32), f32(0), f32(1))
    if method == "bilinear":
        idx = np.stack([i0, np.minimum(i0 + 1, in_size - 1)], axis=-1)
        w = np.stack([f32(1) - t, t], axis=-1)
    else:
        idx = np.clip(i0[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
        w = _cubic_weights(t)
    return idx.astype(np.int32), w.astype(f32)


def _resize_axis(x: jax.Array, axis: int, out_size: int, method: str) -> jax.Array:
    """Resizes `x` along `axis` (1 = height, 2 = width of NHWC) to out_size."""
    if x.shape[axis] == out_size:
        return x
    idx, w = resize_taps(x.shape[axis], out_size, method)
    gathered = jnp.take(x, jnp.asarray(idx), axis=axis)      # axis -> (out, T)
    shape = [1] * gathered.ndim
    shape[axis], shape[axis + 1] = w.shape
    return jnp.sum(gathered * jnp.asarray(w, x.dtype).reshape(shape), axis=axis + 1)


def resize(images: jax.Array, size: Tuple[int, int], method: str = "bilinear") -> jax.Array:
    """[B, H, W, C] -> [B, h, w, C] with size = (h, w); equals torch
    `F.interpolate(nchw, size, mode=method, align_corners=False)` (no antialiasing)."""
    h, w = size
    return _resize_axis(_resize_axis(images, 1, h, method), 2, w, method)


def shorter_side_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(h, w) with the shorter side = size and the aspect ratio kept, as torchvision
    Resize(size): the longer side is int(size * long / short)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_crop(images: jax.Array, size: int) -> jax.Array:
    """[B, H, W, C] -> [B, size, size, C], the centre window as torchvision CenterCrop:
    top = round((H - size) / 2), left = round((W - size) / 2) (H, W >= size)."""
    _, height, width, _ = images.shape
    if height < size or width < size:
        raise ValueError(f"center_crop of {size} from a {height}x{width} image")
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return images[:, top:top + size, left:left + size, :]


def normalize(images: jax.Array) -> jax.Array:
    """[..., 3] RGB in [0, 1] -> (x - CLIP_MEAN) / CLIP_STD."""
    mean = jnp.asarray(CLIP_MEAN, images.dtype)
    std = jnp.asarray(CLIP_STD, images.dtype)
    return (images - mean) / std


def clip_preprocess(images: jax.Array, size: int = 224, method: str = "bilinear") -> jax.Array:
    """[B, H, W, 3] in [0, 1] -> [B, size, size, 3] CLIP encoder input.

    Shorter side resized to `size` (`resize`, F.interpolate semantics), centre crop,
    CLIP normalisation. For square inputs (DietNeRF's renders) this is
    `normalize(resize(images, (size, size), method))`, the authors' code exactly.
    """
    _, height, width, _ = images.shape
    resized = resize(images, shorter_side_size(height, width, size), method)
    return normalize(center_crop(resized, size))
