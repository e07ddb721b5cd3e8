"""Colour-histogram pixel classifier: how strong is a dataset's colour cue?

The classifier sees nothing but a pixel's colour, and it is fitted *with the
labels*: RGB is quantised into B^3 bins (B = `baselines.histogram_bins` per
channel, bin of value v = floor(v * B / 256)), the foreground (mask > 0) and
background pixels of the baseline train images (`BaselineData.train`, split of
`common`) are counted per bin, and a pixel is called foreground when its bin
holds more foreground than background training pixels. That is the maximum
a-posteriori pixel classifier with the training class frequencies as prior
(p(fg | bin) ∝ n_fg(bin) / N_fg * N_fg / N); ties, and bins no training pixel
fell into, go to background.

Being supervised and free to carve colour space into any of 2^(B^3) fg/bg
sets, it is an upper bound on what a colour key (chroma key, colour
thresholding, any per-pixel colour rule) can do on the dataset: where its IoU is
high, colour alone names the object and an unsupervised segmenter may win by
colour; where it is low, figure/ground needs shape, texture or place. SPEC
requires the procedural "object" shapes to sit between 0.5 and 0.85 object IoU
under it. Scored as GrabCut (`class_scores`: 1 = fg, no remapping).
Pure numpy; a few seconds for thousands of 32x32 images.
"""
from __future__ import annotations

import numpy as np

from fdm.baselines.common import BaselineData, class_scores, split_results
from fdm.errors import UserError


def _check(images: np.ndarray, bins: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"the histogram baseline takes uint8 images, got {images.dtype}; "
                        "convert with fdm.viz.to_uint8")
    if not 1 <= int(bins) <= 256:
        raise UserError(f"baselines.histogram_bins={bins} must be in [1, 256]")
    return images


def bin_index(images: np.ndarray, bins: int) -> np.ndarray:
    """uint8 images [N, S, S, 3] (RGB) -> colour bin int [N, S, S] in [0, bins^3):
    (r_bin * bins + g_bin) * bins + b_bin, channel bin = floor(v * bins / 256)."""
    images = _check(images, bins)
    q = (images.astype(np.int64) * int(bins)) >> 8
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


def fit_histograms(images: np.ndarray, masks: np.ndarray, bins: int) -> np.ndarray:
    """Training pixel counts int64 [2, bins^3] per colour bin: row 0 background
    (mask == 0), row 1 foreground (mask > 0)."""
    index = bin_index(images, bins).ravel()
    fg = np.asarray(masks).ravel() > 0
    if index.shape != fg.shape:
        raise UserError(f"images {np.shape(images)} and masks {np.shape(masks)} differ in size")
    size = int(bins) ** 3
    return np.stack([np.bincount(index[~fg], minlength=size),
                     np.bincount(index[fg], minlength=size)]).astype(np.int64)


def predict(counts: np.ndarray, images: np.ndarray, bins: int) -> np.ndarray:
    """int32 [N, S, S]: 1 where the pixel's bin has more fg than bg training pixels."""
    counts = np.asarray(counts)
    if counts.shape != (2, int(bins) ** 3):
        raise UserError(f"histogram counts {counts.shape} do not match bins={bins} "
                        f"(expected (2, {int(bins) ** 3}))")
    fg_bins = (counts[1] > counts[0]).astype(np.int32)
    return fg_bins[bin_index(images, bins)]


def run_histogram(config, data: BaselineData, seed: int = 0) -> dict:
    """Fit on data.train, predict every evaluation image, scored as fg/bg (no remapping).
    Deterministic: `seed` is accepted for the runner's common signature only."""
    del seed
    bins = int(config.baselines.histogram_bins)
    counts = fit_histograms(data.train.images, data.train.masks, bins)
    pred = predict(counts, data.evaluation.images, bins)
    return split_results(pred, data, class_scores)
