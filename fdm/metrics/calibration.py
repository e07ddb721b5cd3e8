"""Calibration of a conditional sampler: does its spread match its error?

A posterior sampler should be as unsure as it is wrong. For M samples s_1 .. s_M of one
condition and the truth x it was conditioned on, at each position p (a pixel) with C
channels, s_bar the samples' mean:

  spread^2(p) = 1 / (M - 1) sum_i |s_i(p) - s_bar(p)|^2 / C    (unbiased variance, mean
                                                                  over the channels)
  error^2(p)  = |s_bar(p) - x(p)|^2 / C

If x is one more draw from the distribution the samples come from (a calibrated
sampler), E error^2 = (1 + 1 / M) E spread^2: the ensemble forecasters' spread-skill
relation with its finite-M factor (Fortin et al. 2014, "Why should ensemble spread match
the RMSE of the ensemble mean?"). So

  spread_skill_ratio = sqrt((1 + 1 / M) mean_p spread^2 / mean_p error^2)

is 1 for a calibrated sampler, below 1 when the samples agree more than their error
warrants (under-dispersed, over-confident; a deterministic model scores 0), above 1 when
they scatter more. It reads calibration, not accuracy: samples can be calibrated and far
off, or close and over-confident. The error includes the model's bias, so a model that is
sampled exactly but is wrong in a way its spread does not represent also scores below 1.
The ratio is scale-free (images on [-1, 1] or [0, 1] score the same).
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def spread_and_error(samples: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(spread^2, error^2) [N, ...] of samples [N, M, ..., C] (M >= 2) of the truths
    [N, ..., C], each a mean over the C channels (module doc)."""
    samples = np.asarray(samples, np.float64)
    if samples.shape[1] < 2:
        raise ValueError(f"a spread needs M >= 2 samples per truth, got {samples.shape[1]}")
    mean = samples.mean(1)
    spread = np.mean(np.var(samples, axis=1, ddof=1), axis=-1)
    error = np.mean(np.square(mean - np.asarray(truth, np.float64)), axis=-1)
    return spread, error


def spread_skill_ratio(samples: np.ndarray, truth: np.ndarray,
                       mask: Optional[np.ndarray] = None) -> float:
    """sqrt((1 + 1/M) mean spread^2 / mean error^2) (module doc) of samples [N, M, ..., C]
    of the truths [N, ..., C], over the positions where mask [N, ...] (all if None); NaN
    when no position is selected or the samples' mean is exact there."""
    spread, error = spread_and_error(samples, truth)
    mask = np.ones(spread.shape, bool) if mask is None else np.asarray(mask, bool)
    if not mask.any() or not error[mask].sum() > 0.0:
        return float("nan")
    m = np.shape(samples)[1]
    return float(np.sqrt((1.0 + 1.0 / m) * spread[mask].mean() / error[mask].mean()))
