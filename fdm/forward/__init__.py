"""Forward models for diffusion with forward models (seed 003): forward(S, phi) -> O.

  base.py             the `ForwardModel` protocol, `View` (O, phi) and `ObservationTuple`
                      (ctxt, trgt, novel); notation of the whole package
  linear.py           `LinearOperator`: (A w)[phi], phi = observed rows
  crop.py             `CropOperator`: the h x w window of S at integer offset phi
  gaussian.py         Gaussian conditioning and the Gaussian W2 distance (numpy float64)
  linear_gaussian.py  the linear-Gaussian inversion problem: generator A, patches, exact
                      posterior, scores of samples
  glyph_mosaic.py     the glyph mosaic seen through crops: glyphs, the 16 signals, the
                      enumerated posterior, scores of samples
  splatting.py        forward softmax splatting (Niklaus & Liu 2020) of an image by a flow
  motion.py           textures moved by one of four global flows through a splatting warp
                      (single-image motion, T3): S = (context, flow), scores of samples
  pixelnerf.py        a pixel-aligned, time-conditioned NeRF (Sec. 4.1, Eq. 10-14): feature
                      lookup at projected points, the field, the denoiser, S's layout
  scenes.py           inverse graphics on random toy scenes: S the conditioned field,
                      forward = its volume rendering (`SceneOperator`, learned MLP bound
                      from the params), regularisers, scores of samples, figures
  problems.py         `model.forward` name -> ForwardProblem (operator, scoring, figures)

Pure math: imports nothing from fdm.models, fdm.train or the entry points.
"""
from fdm.forward.base import VIEW_KEYS, VIEWS, ForwardModel, ObservationTuple, View, take_rows
from fdm.forward.crop import CropOperator
from fdm.forward.gaussian import condition, gaussian_w2, moments, sqrtm_psd
from fdm.forward.linear import LinearOperator, all_rows
from fdm.forward.motion import MotionOperator
from fdm.forward.problems import PROBLEMS, ForwardProblem, get as get_problem
from fdm.forward.scenes import SceneOperator
from fdm.forward.splatting import softmax_splat, summation_splat

__all__ = ["CropOperator", "ForwardModel", "ForwardProblem", "LinearOperator",
           "MotionOperator", "ObservationTuple", "PROBLEMS", "SceneOperator", "VIEWS",
           "VIEW_KEYS", "View", "all_rows", "condition", "gaussian_w2", "get_problem",
           "moments", "softmax_splat", "sqrtm_psd", "summation_splat", "take_rows"]
