"""Registry of forward problems: a name (`model.forward`) -> the forward model and what
evaluation knows about the signals (their exact posterior, how to draw them).

A `ForwardProblem` holds
  operator      the `ForwardModel` (fdm.forward.base) the model family renders S with;
  signal_shape  the shape of one S;
  score         (signals [N, M, *signal_shape] numpy: M samples for each of N contexts,
                 ctxt: View of the N contexts, numpy) -> {metric: number}, the samples
                 scored against the exact posterior;
  render        signals [N, *signal_shape] -> images [N, H, W, C] in about [-1, 1];
  canvas_image  canvases [N, *view_shape] (`ForwardModel.paste`) -> images [N, H, W, C].
The datasets that produce a problem's observation tuples are in fdm.data.inverse_toys.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from fdm.errors import UserError
from fdm.forward import glyph_mosaic, linear_gaussian


@dataclasses.dataclass(frozen=True)
class ForwardProblem:
    """A forward model with its evaluation (module doc)."""
    operator: Any
    signal_shape: tuple[int, ...]
    score: Callable[..., dict]
    render: Callable[[np.ndarray], np.ndarray]
    canvas_image: Callable[[np.ndarray], np.ndarray]


def _linear_gaussian() -> ForwardProblem:
    op = linear_gaussian.operator()
    matrix = np.asarray(op.matrix)
    return ForwardProblem(
        operator=op, signal_shape=(linear_gaussian.LATENTS,), score=linear_gaussian.score,
        render=lambda w: linear_gaussian.image(np.asarray(w) @ matrix.T),
        canvas_image=linear_gaussian.image)


def _glyph_mosaic() -> ForwardProblem:
    return ForwardProblem(
        operator=glyph_mosaic.operator(),
        signal_shape=(glyph_mosaic.SIDE, glyph_mosaic.SIDE, 1), score=glyph_mosaic.score,
        render=glyph_mosaic.image, canvas_image=glyph_mosaic.image)


PROBLEMS: dict[str, Callable[[], ForwardProblem]] = {"linear_gaussian": _linear_gaussian,
                                                     "glyph_mosaic": _glyph_mosaic}


def get(name: str) -> ForwardProblem:
    """The problem registered as `name` (UserError naming the known ones)."""
    if name not in PROBLEMS:
        raise UserError(f"unknown model.forward {name!r}; use one of {sorted(PROBLEMS)}")
    return PROBLEMS[name]()
