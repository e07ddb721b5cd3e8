"""Registry of forward problems: a name (`model.forward`) -> the forward model and what
evaluation knows about the signals (their exact posterior, how to draw them).

A `ForwardProblem` holds
  operator      the `ForwardModel` (fdm.forward.base) the model family renders S with;
  signal_shape  the shape of one S;
  score         (signals [N, M, *signal_shape] numpy: M samples for each of N contexts,
                 ctxt: View of the N contexts, numpy) -> {metric: number}, the samples
                 scored against the exact posterior;
  render        signals [N, *signal_shape] -> images [N, H, W, C] in about [-1, 1];
  canvas_image  canvases [N, *view_shape] (`ForwardModel.paste`) -> images [N, H, W, C];
and, where S is more than what the denoiser outputs or more can be scored,
  output_shape  the shape of the denoiser's output (None: S itself, signal_shape);
  assemble      (output [B, *output_shape], ctxt: View) -> S [B, *signal_shape] (None: S
                is the output; the motion problem: S = (O^ctxt, S_m), Sec. 4.2);
  score_given_target  (signals [N, *signal_shape] predicted from the context and the clean
                target, truth [N, *signal_shape] numpy) -> {metric: number} (None: none).
The datasets that produce a problem's observation tuples are in fdm.data.inverse_toys.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from fdm.errors import UserError
from fdm.forward import glyph_mosaic, linear_gaussian, motion
from fdm.forward.base import View


@dataclasses.dataclass(frozen=True)
class ForwardProblem:
    """A forward model with its evaluation (module doc)."""
    operator: Any
    signal_shape: tuple[int, ...]
    score: Callable[..., dict]
    render: Callable[[np.ndarray], np.ndarray]
    canvas_image: Callable[[np.ndarray], np.ndarray]
    output_shape: tuple[int, ...] | None = None
    assemble: Callable[[Any, View], Any] | None = None
    score_given_target: Callable[[np.ndarray, np.ndarray], dict] | None = None

    def network_shape(self) -> tuple[int, ...]:
        """The shape of one denoiser output: output_shape, or signal_shape when None."""
        return self.signal_shape if self.output_shape is None else self.output_shape

    def signal_from(self, output, ctxt: View):
        """S [B, *signal_shape] of the denoiser's output [B, *network_shape()] and the
        context (`assemble`; the output itself when None)."""
        return output if self.assemble is None else self.assemble(output, ctxt)


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


def _motion() -> ForwardProblem:
    return ForwardProblem(
        operator=motion.operator(), signal_shape=motion.SIGNAL_SHAPE, score=motion.score,
        render=motion.render, canvas_image=motion.canvas_image,
        output_shape=motion.NETWORK_SHAPE, assemble=motion.assemble,
        score_given_target=motion.score_given_target)


PROBLEMS: dict[str, Callable[[], ForwardProblem]] = {"linear_gaussian": _linear_gaussian,
                                                     "glyph_mosaic": _glyph_mosaic,
                                                     "motion": _motion}


def get(name: str) -> ForwardProblem:
    """The problem registered as `name` (UserError naming the known ones)."""
    if name not in PROBLEMS:
        raise UserError(f"unknown model.forward {name!r}; use one of {sorted(PROBLEMS)}")
    return PROBLEMS[name]()
