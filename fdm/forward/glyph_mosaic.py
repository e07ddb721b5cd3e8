"""The glyph mosaic seen through crops (seed 003 brief T2): a signal with a multimodal
posterior known by enumeration, whose coupled cells test Eq. 9.

Notation:
  glyph   an 8 x 8 image in {-1, +1} (+1 the stroke), GLYPHS [4, 8, 8]: 0 horizontal bar
          (rows 3-4), 1 vertical bar (columns 3-4), 2 diagonal (|y - x| <= 1), 3 ring
          (the border of the square of rows and columns 1-6). Any two differ in >= 24
          pixels.
  S       [SIDE, SIDE, 1] = [16, 16, 1]: four CELL x CELL cells in the order CELLS = (TL,
          TR, BL, BR), cell k at the offset CELL_OFFSETS[k], each showing one glyph.
  prior   a, b ~ U{0..3}; the glyphs of (TL, TR, BL, BR) are (a, b, b, (a + 2) mod 4):
          NUM_SIGNALS = 16 signals, all equally likely; signal 4 a + b (`signal_glyphs`,
          `prior_signals`).
  phi     int32 [2] (row, column): forward(S, phi) = the CELL x CELL crop of S at phi in
          {0..SIDE - CELL}^2 (`operator`, `fdm.forward.crop.CropOperator`; `crop` is its
          numpy form).
  test    the context is the TL cell (phi TEST_CTXT_PHI = (0, 0)), the target the TR
          cell (TEST_TRGT_PHI = (0, 8)); the eval tuples' novel view is the BL cell
          (TEST_NOVEL_PHI = (8, 0)).

Exact posterior (`posterior`): uniform over the signals whose crop at phi is the context
(the enumeration). For the TL cell showing glyph a: TL = a, BR = (a + 2) mod 4, TR uniform
over the 4 glyphs and BL = TR in every signal. The posterior mean (`posterior_mean`, what
a deterministic model regresses to) shows the mean glyph in TR and BL, one glyph after
classification.

Scores of samples [N, M, 16, 16, 1] of N TL contexts (`score`), every cell of every sample
classified to its nearest glyph (`classify`), averaged over the contexts:
  observed_accuracy  P(TL = a), a the context's glyph
  coupled_accuracy   P(BR = (a + 2) mod 4)
  consistency        P(BL = TR)
  tr_tv              total variation between the empirical distribution of TR and uniform
                     (0.75 for a point mass: the deterministic model)
  tr_tv_max          its largest value over the contexts
  tr_tv_floor        E[tr_tv] of M exact posterior samples (seeded Monte Carlo; ~0.04 at
                     M = 256): what a perfect sampler scores
  posterior_tv       TV between the empirical distribution of the classified signals
                     (cell 4-tuples; a tuple outside the prior's 16 is mass off the
                     posterior) and the enumerated posterior
  valid_rmse         sqrt(mean over samples and pixels of (S - its nearest of the 16
                     signals)^2): how far the samples are from being glyph mosaics
  rmse_tl, rmse_tr, rmse_bl, rmse_br  sqrt(mean over samples and pixels of (cell - its
                     nearest glyph)^2) per cell: where the samples are blurred (the
                     cells outside the target window are fitted by Eq. 9 alone)
Success (brief): observed >= 0.99, coupled >= 0.95, consistency >= 0.90, tr_tv <= 0.10,
valid_rmse <= 0.1.
"""
from __future__ import annotations

import numpy as np

from fdm.errors import UserError
from fdm.forward.base import View
from fdm.forward.crop import CropOperator

CELL = 8
SIDE = 2 * CELL
NUM_GLYPHS = 4
NUM_SIGNALS = NUM_GLYPHS * NUM_GLYPHS
CELLS = ("TL", "TR", "BL", "BR")
CELL_OFFSETS = np.array([[0, 0], [0, CELL], [CELL, 0], [CELL, CELL]], np.int32)
TEST_CTXT_PHI = (0, 0)
TEST_TRGT_PHI = (0, CELL)
TEST_NOVEL_PHI = (CELL, 0)
FLOOR_DRAWS = 4096
FLOOR_SEED = 0


def glyphs() -> np.ndarray:
    """GLYPHS float32 [4, CELL, CELL] in {-1, +1} (module doc)."""
    y, x = np.mgrid[0:CELL, 0:CELL]
    strokes = [(y == 3) | (y == 4), (x == 3) | (x == 4), np.abs(y - x) <= 1,
               (np.maximum(np.abs(y - 3.5), np.abs(x - 3.5)) == 2.5)]
    return np.where(np.stack(strokes), 1.0, -1.0).astype(np.float32)


def signal_glyphs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The glyphs int [..., 4] of (TL, TR, BL, BR) of the signals with a, b int [...]."""
    a, b = np.asarray(a), np.asarray(b)
    return np.stack([a, b, b, (a + 2) % NUM_GLYPHS], axis=-1)


def mosaic(cell_glyphs: np.ndarray) -> np.ndarray:
    """S float32 [..., SIDE, SIDE, 1] showing the glyphs int [..., 4] in (TL, TR, BL, BR)."""
    cells = glyphs()[np.asarray(cell_glyphs)]                   # [..., 4, CELL, CELL]
    top = np.concatenate([cells[..., 0, :, :], cells[..., 1, :, :]], axis=-1)
    bottom = np.concatenate([cells[..., 2, :, :], cells[..., 3, :, :]], axis=-1)
    return np.concatenate([top, bottom], axis=-2)[..., None]


def all_signal_glyphs() -> np.ndarray:
    """The glyphs int [16, 4] of the prior's signals; row 4 a + b is (a, b)."""
    a, b = np.divmod(np.arange(NUM_SIGNALS), NUM_GLYPHS)
    return signal_glyphs(a, b)


def prior_signals() -> np.ndarray:
    """The prior's 16 signals float32 [16, SIDE, SIDE, 1], each with probability 1/16."""
    return mosaic(all_signal_glyphs())


def operator() -> CropOperator:
    """forward(S, phi) = the CELL x CELL crop of S [B, SIDE, SIDE, 1] at phi [B, 2]."""
    return CropOperator(window=(CELL, CELL), signal_size=(SIDE, SIDE))


def crop(signal: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """The numpy forward model: crops [N, CELL, CELL, C] of S [N, SIDE, SIDE, C] at phi
    int [N, 2]."""
    phi = np.asarray(phi)
    rows = phi[:, :1, None] + np.arange(CELL)[None, :, None]     # [N, CELL, 1]
    cols = phi[:, 1:, None] + np.arange(CELL)[None, None, :]     # [N, 1, CELL]
    return np.asarray(signal)[np.arange(len(phi))[:, None, None], rows, cols]


def random_offsets(rng: np.random.Generator, aligned: np.ndarray) -> np.ndarray:
    """phi int32 [num, 2]: where aligned (bool [num]) the offset of a uniform cell, else
    uniform on {0..SIDE - CELL}^2."""
    num = len(aligned)
    cells = CELL_OFFSETS[rng.integers(0, len(CELL_OFFSETS), num)]
    anywhere = rng.integers(0, SIDE - CELL + 1, (num, 2))
    return np.where(np.asarray(aligned)[:, None], cells, anywhere).astype(np.int32)


def classify(cells: np.ndarray) -> np.ndarray:
    """The nearest glyph int [...] (squared distance; ties to the lower index) of cells
    [..., CELL, CELL]."""
    diff = np.asarray(cells, np.float64)[..., None, :, :] - glyphs()
    return np.argmin(np.sum(diff**2, axis=(-2, -1)), axis=-1)


def cells_of(samples: np.ndarray) -> np.ndarray:
    """The cells [M, 4, CELL, CELL] in (TL, TR, BL, BR) order of signals [M, SIDE, SIDE, 1]."""
    samples = np.asarray(samples)[..., 0]
    return np.stack([samples[:, r:r + CELL, c:c + CELL] for r, c in CELL_OFFSETS], axis=1)


def classify_cells(samples: np.ndarray) -> np.ndarray:
    """The glyphs int [M, 4] of (TL, TR, BL, BR) of signals [M, SIDE, SIDE, 1]."""
    return classify(cells_of(samples))


def glyph_code(cell_glyphs: np.ndarray) -> np.ndarray:
    """Glyph 4-tuples int [..., 4] as integers [...] in [0, 4^4) (base-4 digits)."""
    return np.asarray(cell_glyphs) @ (NUM_GLYPHS ** np.arange(3, -1, -1))


def posterior(obs: np.ndarray, phi, tol: float = 1e-3) -> np.ndarray:
    """The exact posterior float64 [16] over the prior's signals given the crop obs
    [CELL, CELL, 1] at phi [2]: uniform over the signals whose crop there is within RMS
    `tol` of obs (UserError when none is: obs is no crop of a glyph mosaic)."""
    everything = prior_signals()
    crops = crop(everything, np.tile(np.asarray(phi, np.int32), (NUM_SIGNALS, 1)))
    rms = np.sqrt(np.mean((crops - np.asarray(obs, np.float32)) ** 2, axis=(1, 2, 3)))
    match = rms <= tol
    if not match.any():
        raise UserError(f"a context at phi {tuple(np.asarray(phi))} is no crop of a glyph "
                        f"mosaic (nearest RMS {rms.min():.3g})")
    return match / match.sum()


def posterior_mean(obs: np.ndarray, phi) -> np.ndarray:
    """E[S | crop at phi = obs] float32 [SIDE, SIDE, 1] by enumeration: what a deterministic
    model regresses to (`posterior` weights the 16 signals)."""
    return np.einsum("k,khwc->hwc", posterior(obs, phi), prior_signals()).astype(np.float32)


def total_variation(counts: np.ndarray, probs: np.ndarray) -> float:
    """TV = 1/2 sum |counts / sum(counts) - probs| of counts and probs [K] (same bins)."""
    counts = np.asarray(counts, np.float64)
    return 0.5 * float(np.abs(counts / counts.sum() - probs).sum())


def uniform_tv_floor(num_samples: int, draws: int = FLOOR_DRAWS,
                     seed: int = FLOOR_SEED) -> float:
    """E[TV] of the empirical distribution of num_samples uniform draws from 4 glyphs to
    uniform (`draws` seeded multinomial draws)."""
    counts = np.random.default_rng(seed).multinomial(
        num_samples, np.full(NUM_GLYPHS, 1.0 / NUM_GLYPHS), size=draws)
    return float(np.mean(0.5 * np.abs(counts / num_samples - 1.0 / NUM_GLYPHS).sum(axis=1)))


def valid_rmse(samples: np.ndarray) -> float:
    """sqrt(mean over samples [M, SIDE, SIDE, 1] and pixels of the squared distance to
    the nearest of the prior's 16 signals)."""
    flat = np.asarray(samples, np.float64).reshape(len(samples), -1)
    everything = prior_signals().reshape(NUM_SIGNALS, -1).astype(np.float64)
    d2 = (np.sum(flat**2, axis=1)[:, None] - 2.0 * flat @ everything.T
          + np.sum(everything**2, axis=1)[None, :])
    return float(np.sqrt(max(np.mean(np.min(d2, axis=1)), 0.0) / flat.shape[1]))


def score_context(samples: np.ndarray, obs: np.ndarray, phi) -> dict[str, float]:
    """The scores (module doc, but tr_tv_max / tr_tv_floor) of samples [M, SIDE, SIDE, 1]
    of the TL context obs [CELL, CELL, 1] (phi must be TEST_CTXT_PHI)."""
    if tuple(int(p) for p in np.asarray(phi)) != TEST_CTXT_PHI:
        raise UserError(f"glyph_mosaic scores contexts at the TL cell, phi {TEST_CTXT_PHI}; "
                        f"got phi {tuple(np.asarray(phi))} (the eval split of "
                        "fdm.data.inverse_toys.glyph_mosaic has them)")
    exact = np.zeros(NUM_GLYPHS**4)
    exact[glyph_code(all_signal_glyphs())] = posterior(obs, phi)
    a = int(classify(np.asarray(obs)[..., 0]))
    pixels = cells_of(samples)
    cells = classify(pixels)
    cell_rmse = np.sqrt(np.mean((pixels - glyphs()[cells]) ** 2, axis=(0, 2, 3)))
    scores = {"observed_accuracy": float(np.mean(cells[:, 0] == a)),
              "coupled_accuracy": float(np.mean(cells[:, 3] == (a + 2) % NUM_GLYPHS)),
              "consistency": float(np.mean(cells[:, 2] == cells[:, 1])),
              "tr_tv": total_variation(np.bincount(cells[:, 1], minlength=NUM_GLYPHS),
                                       np.full(NUM_GLYPHS, 1.0 / NUM_GLYPHS)),
              "posterior_tv": total_variation(
                  np.bincount(glyph_code(cells), minlength=NUM_GLYPHS**4), exact),
              "valid_rmse": valid_rmse(samples)}
    return {**scores, **{f"rmse_{name.lower()}": float(e) for name, e in zip(CELLS, cell_rmse)}}


def score(signals: np.ndarray, ctxt: View) -> dict[str, float]:
    """Scores (module doc) averaged over N contexts of samples [N, M, SIDE, SIDE, 1] of the
    TL contexts ctxt (obs [N, CELL, CELL, 1], phi [N, 2], numpy)."""
    per_context = [score_context(s, o, p)
                   for s, o, p in zip(signals, np.asarray(ctxt.obs), np.asarray(ctxt.phi))]
    metrics = {k: float(np.mean([c[k] for c in per_context])) for k in per_context[0]}
    metrics["tr_tv_max"] = float(np.max([c["tr_tv"] for c in per_context]))
    metrics["tr_tv_floor"] = uniform_tv_floor(signals.shape[1])
    return metrics


def image(canvas: np.ndarray) -> np.ndarray:
    """Signals or canvases [N, SIDE, SIDE, 1] as images in [-1, 1] (they already are)."""
    return np.asarray(canvas, np.float32)
