"""Label-free diagnostics of soft region masks: how decided they are and whether they
follow the image content or the pixel position.

Notation: m [N, S, S, K] soft masks (summing to one over K); x [N, S, S, C] images.

  * Mask entropy: the mean over pixels of −Σ_k m_k log m_k / log K, in [0, 1]
    (1 = uniform masks, 0 = one-hot masks).
  * Shift error: masks computed from content should move with it. The image is
    reflect-padded by d at the bottom and right into a canvas, and two S×S windows
    are cropped from it, A at (0, 0) and B at (dy, dx), so B is A's content
    shifted by (−dy, −dx). With m_A = masks(A), m_B = masks(B), the error is the
    mean over the overlap of the total-variation distance ½ Σ_k |m_A[i + dy,
    j + dx] − m_B[i, j]|, in [0, 1]: 0 for masks that move with the content,
    large for masks that are a function of position (a fixed blob, a band). Shifts
    should be multiples of the network's coarsest stride, so both windows share
    its downsampling grid. Constant masks score 0 as well: read it together with
    the entropy.
"""
from __future__ import annotations

import numpy as np


def mask_entropy(masks: np.ndarray) -> float:
    """Mean normalised per-pixel entropy of m [N, S, S, K], in [0, 1]."""
    m = np.asarray(masks, np.float64)
    k = m.shape[-1]
    ent = -np.sum(m * np.log(np.clip(m, 1e-12, 1.0)), axis=-1)
    return float(ent.mean() / np.log(max(k, 2)))


def shift_canvas(x: np.ndarray, shift: int) -> np.ndarray:
    """x [N, S, S, C] reflect-padded by `shift` at the bottom and right: [N, S+d, S+d, C]."""
    return np.pad(x, ((0, 0), (0, shift), (0, shift), (0, 0)), mode="reflect")


def window(canvas: np.ndarray, dy: int, dx: int, size: int) -> np.ndarray:
    """The size×size window of canvas [N, H, W, ...] at offset (dy, dx)."""
    return canvas[:, dy:dy + size, dx:dx + size]


def shift_error(m_a: np.ndarray, m_b: np.ndarray, dy: int, dx: int) -> float:
    """Mean TV distance between m_a [N,S,S,K] at (i+dy, j+dx) and m_b at (i, j) over
    the overlap (module doc)."""
    s = m_a.shape[1]
    a = np.asarray(m_a)[:, dy:, dx:]
    b = np.asarray(m_b)[:, :s - dy, :s - dx]
    return float(0.5 * np.abs(a - b).sum(-1).mean())
