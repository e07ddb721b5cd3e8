"""Pixel generation orders of an autoregressive image model (seed 004 §2.3-2.4, Fig. 2.2, 5.1).

Notation: an image has H rows and W columns, D = H * W pixels; pixel (r, c) has the
flat index r * W + c. An *order* π is an int64 array [D] of flat indices: π[i] is the
pixel generated i-th, so p(x) = Π_i p(x_π(i) | x_π(<i)) (Eq. 2.1). Its *rank grid*
[H, W] holds, at each pixel, the step i at which it is generated (the inverse
permutation); `fdm.nn.lmconv.order_masks` builds the masks of Alg. 2 from it.

Orders (all pure numpy, deterministic):
  raster    row-major, left to right (the PixelCNN order).
  s_curve   rows in alternating directions (a 4-adjacent Hamiltonian path).
  hilbert   the generalised Hilbert curve ("gilbert2d", Jakub Červený, BSD-2; the
            Hilbert curve itself when H = W is a power of two, §5.4), any H x W.
The 8 dihedral variants of a base order (`variants`, Fig. 5.1) follow the authors'
`augment_orders`: variant k = 4 * transpose + flip_rows + 2 * flip_cols (`VARIANTS`),
variant 0 is the base order; for the S-curve they start in each corner, row- or
column-wise.

Image completion (§2.3): with the observed set O, a *max-context* order generates
every pixel of O before any hidden one ({π(1..|O|)} = O), an *adversarial* one
generates the hidden pixels first; `completion_orders` picks both kinds among a
list of trained orders, `observed_first` turns any order into a max-context one.
"""
from __future__ import annotations

import numpy as np

from fdm.errors import UserError

ORDERS = ("raster", "s_curve", "hilbert")
# (transpose, flip_rows, flip_cols) of variant k: the authors' `augment_orders` list
# [id, reflect_rows, reflect_cols, reflect_all, transpose, then the same four].
VARIANTS = tuple((t, fr, fc) for t in (False, True)
                 for fr, fc in ((False, False), (True, False), (False, True), (True, True)))


def raster(height: int, width: int) -> np.ndarray:
    """Row-major order [D]: (0, 0), (0, 1), ..., (H-1, W-1)."""
    return np.arange(height * width, dtype=np.int64)


def s_curve(height: int, width: int) -> np.ndarray:
    """Rows top to bottom, even rows left to right and odd rows right to left [D]."""
    grid = np.arange(height * width, dtype=np.int64).reshape(height, width)
    grid[1::2] = grid[1::2, ::-1]
    return grid.reshape(-1)


def hilbert(height: int, width: int) -> np.ndarray:
    """The generalised Hilbert curve over H x W [D] (a port of gilbert2d; for H = W = 2^p
    the Hilbert curve, pixel (row, col) = (y, x) of `hilbertcurve`'s point (x, y))."""
    coords: list[tuple[int, int]] = []
    if width >= height:
        _gilbert(coords, 0, 0, width, 0, 0, height)
    else:
        _gilbert(coords, 0, 0, 0, height, width, 0)
    xy = np.asarray(coords, dtype=np.int64)
    return xy[:, 1] * width + xy[:, 0]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _gilbert(coords: list, x: int, y: int, ax: int, ay: int, bx: int, by: int) -> None:
    """Appends the (x, y) cells of the rectangle spanned from (x, y) by the major axis
    (ax, ay) and the minor axis (bx, by) in generalised-Hilbert order (gilbert2d)."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day, dbx, dby = _sign(ax), _sign(ay), _sign(bx), _sign(by)
    if h == 1 or w == 1:                     # a single row or column: fill it
        step = (dax, day) if h == 1 else (dbx, dby)
        coords.extend((x + i * step[0], y + i * step[1]) for i in range(max(w, h)))
        return
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    if 2 * w > 3 * h:                        # long rectangle: split in two along the major axis
        if abs(ax2 + ay2) % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day
        _gilbert(coords, x, y, ax2, ay2, bx, by)
        _gilbert(coords, x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
        return
    if abs(bx2 + by2) % 2 and h > 2:         # standard case: up, across, down
        bx2, by2 = bx2 + dbx, by2 + dby
    _gilbert(coords, x, y, bx2, by2, ax2, ay2)
    _gilbert(coords, x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
    _gilbert(coords, x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
             -bx2, -by2, -(ax - ax2), -(ay - ay2))


def base_order(name: str, height: int, width: int) -> np.ndarray:
    """The order `name` (one of ORDERS) over H x W [D]; UserError for an unknown name."""
    builders = {"raster": raster, "s_curve": s_curve, "hilbert": hilbert}
    if name not in builders:
        raise UserError(f"unknown generation order {name!r}; use one of {list(ORDERS)}")
    return builders[name](height, width)


def variant(name: str, height: int, width: int, index: int) -> np.ndarray:
    """Dihedral variant `index` in [0, 8) of order `name` over H x W [D] (`VARIANTS`):
    the base order of the transposed W x H grid when transposing, then its rows and/or
    columns reflected."""
    transpose, flip_rows, flip_cols = VARIANTS[index]
    rows, cols = (width, height) if transpose else (height, width)
    r, c = np.divmod(base_order(name, rows, cols), cols)
    if transpose:
        r, c = c, r
    if flip_rows:
        r = height - 1 - r
    if flip_cols:
        c = width - 1 - c
    return r * width + c


def variants(name: str, height: int, width: int, num: int = 8) -> np.ndarray:
    """The first `num` dihedral variants of order `name` [num, D] (the training orders of
    order-agnostic training, Eq. 2.6, with num = 8)."""
    return np.stack([variant(name, height, width, k) for k in range(num)])


def rank_grid(order: np.ndarray, height: int, width: int) -> np.ndarray:
    """int64 [H, W]: the step at which each pixel is generated (the inverse of π)."""
    ranks = np.empty(height * width, np.int64)
    ranks[np.asarray(order)] = np.arange(height * width)
    return ranks.reshape(height, width)


def is_permutation(order: np.ndarray, num_pixels: int) -> bool:
    """Whether `order` [D] lists each of the `num_pixels` flat indices exactly once."""
    order = np.asarray(order)
    return order.shape == (num_pixels,) and np.array_equal(np.sort(order), np.arange(num_pixels))


def is_adjacent_path(order: np.ndarray, width: int) -> bool:
    """Whether consecutive pixels of `order` [D] are 4-neighbours (a Hamiltonian path of
    the pixel grid: a convolutional model has no blind spot under it, §2.4)."""
    r, c = np.divmod(np.asarray(order), width)
    return bool(np.all(np.abs(np.diff(r)) + np.abs(np.diff(c)) == 1))


def observed_first(order: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """`order` [D] with the observed pixels moved to the front, each group keeping its
    relative order (a max-context order); observed: bool [H, W]."""
    order = np.asarray(order)
    seen = np.asarray(observed).reshape(-1)[order]
    return np.concatenate([order[seen], order[~seen]])


def generates_first(order: np.ndarray, region: np.ndarray) -> bool:
    """Whether the first |region| pixels of `order` [D] are exactly `region` (bool [H, W])."""
    region = np.asarray(region).reshape(-1)
    return bool(np.all(region[np.asarray(order)[:int(region.sum())]]))


def completion_orders(orders: np.ndarray, observed: np.ndarray) -> tuple[list[int], list[int]]:
    """(indices of the max-context orders, indices of the adversarial orders) among
    `orders` [K, D] for the observed pixels `observed` bool [H, W] (§2.3, Table 2.3)."""
    observed = np.asarray(observed, bool)
    max_context = [k for k, o in enumerate(orders) if generates_first(o, observed)]
    adversarial = [k for k, o in enumerate(orders) if generates_first(o, ~observed)]
    return max_context, adversarial


def half_regions(height: int, width: int) -> dict[str, np.ndarray]:
    """The hidden halves of Table 2.3 as bool [H, W] (True = hidden): 'top', 'left',
    'bottom'."""
    rows, cols = np.mgrid[:height, :width]
    return {"top": rows < height // 2, "left": cols < width // 2,
            "bottom": rows >= height - height // 2}


__all__ = ["ORDERS", "VARIANTS", "base_order", "completion_orders", "generates_first",
           "half_regions", "hilbert", "is_adjacent_path", "is_permutation", "observed_first",
           "rank_grid", "raster", "s_curve", "variant", "variants"]
