"""Registry of forward problems: a name (`model.forward`) -> the forward model and what
evaluation knows about the signals (their exact posterior, how to draw them).

A `ForwardProblem` holds
  operator      the `ForwardModel` (fdm.forward.base) the model family renders S with;
  signal_shape  the shape of one S;
  score         (signals [N, M, *signal_shape] numpy: M samples for each of N contexts,
                 views: the ObservationTuple of the N eval tuples, numpy, truth: their
                 true 'signal' rows [N, ...] numpy) -> {metric: number}, the samples scored
                 against the exact posterior (the toys read the contexts alone) or, for
                 the scenes, against the held-out views;
  render        signals [N, *signal_shape] -> images [N, H, W, C] in about [-1, 1];
  canvas_image  canvases [N, *view_shape] (`ForwardModel.paste`) -> images [N, H, W, C];
and, where S is more than what the denoiser outputs or more can be scored,
  output_shape  the shape of the denoiser's output (None: S itself, signal_shape);
  assemble      (output [B, *output_shape], ctxt: View) -> S [B, *signal_shape] (None: S
                is the output; the motion problem: S = (O^ctxt, S_m), Sec. 4.2);
  score_given_target  (signals [N, *signal_shape] predicted from the context and the clean
                target, views: their ObservationTuple, numpy, truth [N, ...] numpy: the
                data's 'signal') -> {metric: number} (None: none);
  render_truth  the data's true signals [N, ...] -> images like `render`'s (None: `render`;
                the scenes, whose truth is the scene's primitives, not an S);
and, for a problem whose forward model is partly learned (the scenes: the pixelNeRF MLP),
  network       its own denoiser, a flax module called as network(ctxt: View, x_t, phi^trgt,
                t, keep) -> S (`fdm.forward.pixelnerf.SceneDenoiser`), in place of
                model.network's;
  bind          the network's params -> the problem whose operator, scores and figures
                use them (`bound`); the unbound operator only pastes;
  regularizers  (views: ObservationTuple, S [B, ...]) -> {name: weighted term [B]}, added
                to the training loss (on the bound problem).
Problems are built from the config (`get`); the toys ignore it.
The datasets that produce a problem's observation tuples are in fdm.data.inverse_toys.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from fdm.errors import UserError
from fdm.forward import glyph_mosaic, linear_gaussian, motion, scenes
from fdm.forward.base import ObservationTuple, View


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
    score_given_target: Callable[..., dict] | None = None
    render_truth: Callable[[np.ndarray], np.ndarray] | None = None
    network: Any = None
    bind: Callable[[Any], "ForwardProblem"] | None = None
    regularizers: Callable[[ObservationTuple, Any], dict] | None = None

    def network_shape(self) -> tuple[int, ...]:
        """The shape of one denoiser output: output_shape, or signal_shape when None."""
        return self.signal_shape if self.output_shape is None else self.output_shape

    def signal_from(self, output, ctxt: View):
        """S [B, *signal_shape] of the denoiser's output [B, *network_shape()] and the
        context (`assemble`; the output itself when None)."""
        return output if self.assemble is None else self.assemble(output, ctxt)

    def bound(self, params) -> "ForwardProblem":
        """The problem with the trained params of its learned forward model (`bind`; the
        problem itself when its forward model has none)."""
        return self if self.bind is None else self.bind(params)

    def truth_image(self, truth: np.ndarray) -> np.ndarray:
        """The data's true signals [N, ...] as images (`render_truth`, else `render`)."""
        return (self.render if self.render_truth is None else self.render_truth)(truth)


def _on_contexts(score: Callable[[np.ndarray, View], dict]) -> Callable[..., dict]:
    """A score of (signals, contexts) as a `ForwardProblem.score` (views and truth unread:
    the exact posterior depends on the context alone)."""
    return lambda signals, views, truth: score(signals, views.ctxt)


def _linear_gaussian(config=None) -> ForwardProblem:
    del config
    op = linear_gaussian.operator()
    matrix = np.asarray(op.matrix)
    return ForwardProblem(
        operator=op, signal_shape=(linear_gaussian.LATENTS,),
        score=_on_contexts(linear_gaussian.score),
        render=lambda w: linear_gaussian.image(np.asarray(w) @ matrix.T),
        canvas_image=linear_gaussian.image)


def _glyph_mosaic(config=None) -> ForwardProblem:
    del config
    return ForwardProblem(
        operator=glyph_mosaic.operator(),
        signal_shape=(glyph_mosaic.SIDE, glyph_mosaic.SIDE, 1),
        score=_on_contexts(glyph_mosaic.score),
        render=glyph_mosaic.image, canvas_image=glyph_mosaic.image)


def _motion(config=None) -> ForwardProblem:
    del config
    return ForwardProblem(
        operator=motion.operator(), signal_shape=motion.SIGNAL_SHAPE,
        score=_on_contexts(motion.score),
        render=motion.render, canvas_image=motion.canvas_image,
        output_shape=motion.NETWORK_SHAPE, assemble=motion.assemble,
        score_given_target=motion.score_given_target)


def _scenes(config) -> ForwardProblem:
    """The scenes problem of `config` (data.image_size, model.pixelnerf.*, model.unet.*,
    model.deterministic, train.{cond, depth_smoothness, distortion,
    opacity_entropy}_weight)."""
    if config is None:
        raise UserError("model.forward='scenes' is built from a config: "
                        "fdm.forward.get_problem('scenes', config)")
    m, p, size = config.model, config.model.pixelnerf, int(config.data.image_size)
    network = scenes.denoiser(
        size, p.features, p.det_features, p.det_samples, bool(p.image_features),
        dict(width=p.width, view_blocks=p.view_blocks, joint_blocks=p.joint_blocks,
             num_freqs=p.num_freqs, time_mlp=bool(p.time_mlp),
             density_from_context=bool(p.density_from_context)),
        dict(ch=m.unet.ch, ch_mult=tuple(m.unet.ch_mult), num_res_blocks=m.unet.num_res_blocks,
             attn_resolutions=tuple(m.unet.attn_resolutions), num_groups=m.unet.num_groups),
        bool(m.deterministic))
    weights = scenes.RegularizerWeights(float(config.train.cond_weight),
                                        float(config.train.depth_smoothness_weight),
                                        float(config.train.distortion_weight),
                                        float(config.train.opacity_entropy_weight))

    def build(op: scenes.SceneOperator) -> ForwardProblem:
        part = lambda fn, *args: functools.partial(fn, op, *args)
        return ForwardProblem(
            operator=op, signal_shape=scenes.signal_shape(size, network.signal_features),
            score=part(scenes.score), render=part(scenes.render),
            canvas_image=scenes.canvas_image,
            score_given_target=part(scenes.score_given_target),
            render_truth=scenes.render_truth,
            network=network, bind=lambda params: build(op.bind(params["field"])),
            regularizers=part(scenes.regularizers, weights, p.det_samples,
                              bool(m.deterministic)))

    return build(scenes.SceneOperator(None, network.field, p.num_samples))


PROBLEMS: dict[str, Callable[[Any], ForwardProblem]] = {"linear_gaussian": _linear_gaussian,
                                                        "glyph_mosaic": _glyph_mosaic,
                                                        "motion": _motion,
                                                        "scenes": _scenes}


def get(name: str, config=None) -> ForwardProblem:
    """The problem registered as `name`, built from `config` (the model's; the toys need
    none) (UserError naming the known ones)."""
    if name not in PROBLEMS:
        raise UserError(f"unknown model.forward {name!r}; use one of {sorted(PROBLEMS)}")
    return PROBLEMS[name](config)
