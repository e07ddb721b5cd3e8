"""Diffusion with forward models (Tewari, Yin et al. 2023; seed 003 Sec. 2.2) as a model
family (model.family = "dfm"): denoise -> S -> forward.

Notation (`fdm.forward.base`): every example is an ObservationTuple of views (O, phi)
of one signal S that is never observed directly: ctxt, trgt and novel; forward is the
ForwardModel of the problem named by model.forward (`fdm.forward.problems`); t [B]
int in [0, T); O^trgt_t = q_sample(O^trgt, t, eps) (Eq. 1), only the target is diffused.

Denoiser (Eq. 3-4; input form of brief D4): the context and the noisy target pasted
into their canvases with masks, concatenated on the last axis ([B, 4m] for vector
views, [B, H, W, 2C + 2] for images), and t go through the network (model.network)
to the problem's output [B, *network_shape] (`ForwardProblem.network_shape`: S itself,
or the part of S the context does not give) and S = `ForwardProblem.signal_from`(output,
context) (the motion problem: S = (O^ctxt, S_m), Sec. 4.2):
  "mlp"   `fdm.nn.mlp.TimeMLP` on the flattened input (model.mlp.*);
  "unet"  `fdm.nn.unet.UNet` on the image input (model.unet.*), for an image output
          [H, W, C] whose canvases are H x W (a crop: the glyph mosaic; the motion
          frames): out_ch = C;
  "pixelnerf"  the problem's own denoiser (`ForwardProblem.network`; the scenes of
          Sec. 4.1, `fdm.forward.pixelnerf`: model.pixelnerf.*, its encoder model.unet.*),
          called on the views themselves, network(ctxt, O^trgt_t, phi^trgt, t, keep) -> S,
          and the only network such a problem takes. Its forward model is partly learned
          (the field's MLP): every forward(S, phi) below is that of the problem bound to
          the current params (`ForwardProblem.bound`).

    S = denoise_theta(O^ctxt, O^trgt_t; t, phi^ctxt, phi^trgt)                 (Eq. 3)
    O_hat^trgt = forward(S, phi^trgt)                                         (Eq. 4)

As a sampler denoiser (`fdm.diffusion.samplers`) it returns (O_hat^trgt, aux = S): an
x0-prediction (diffusion.prediction = "x0") whose side output is the signal.

Loss per example (L2 means, `fdm.diffusion.diffusion_loss` with x0 and "simple"):
    L^trgt  = mean (O^trgt - forward(S, phi^trgt))^2                          (Eq. 8)
    L^novel = mean (O^novel - forward(S, phi^novel))^2, with the same S        (Eq. 9)
    L = L^trgt + train.novel_weight L^novel + the problem's regularisers
train.novel_weight = 0 is the no-L^novel ablation (L^novel is still logged).
diffusion.loss = "min_snr" weights L^trgt (only) by clip(SNR_t, diffusion.min_snr_floor,
diffusion.min_snr_gamma) (Min-SNR-gamma with floor 0, `fdm.diffusion.losses`): the
low-noise steps, where the denoiser must reproduce the target it is shown, count up to
gamma times, the noisiest SNR_t times (floor 0) or the floor's times (floor 1: as in the
simple loss); eval_loss_trgt is then in that weighting too. The
regularisers (`ForwardProblem.regularizers`; the scenes': L_cond, depth smoothness and
distortion, and the opacity entropy (not in the paper) at train.{cond, depth_smoothness,
distortion, opacity_entropy}_weight) are logged by name.

Sampling (brief D1, D5): O^trgt_T ~ N(0, I), then eval.sample_steps (50) steps on DDIM's
grid of the update eval.sampler, x0_hat clipped to [-1, 1] per diffusion.clip_x0; the
sample is the S of the last denoiser call (t = 0 on DDIM's grid):
  "ddim"     `ddim_sample` with eta = eval.ddim_eta (the paper's results, brief D1);
  "renoise"  `renoise_sample`, the paper's Eq. 6: O_hat^trgt re-noised to the next
             timestep, O^trgt_{t-1} ~ N(sqrt(abar_{t-1}) O_hat^trgt, (1 - abar_{t-1}) I);
             with a Bayes-optimal denoiser it under-disperses (Gaussian data: 0.47 of
             the variance at 50 steps, -> 1/2; tests/test_forward_sampling.py).
At every step O_hat^trgt = x0_hat is, in this order (`sampler_denoiser`),
  guided     eval.guidance_scale = w != 1: O_hat = O_hat_u + w (O_hat_c - O_hat_u) from the
             conditional (c) and null-context (u) predictions; S is mixed the same way,
             so forward(S) = O_hat for a linear forward model
             (`fdm.diffusion.guidance.GuidedDenoiser`);
  thresholded  diffusion.dynamic_threshold = p > 0: Imagen's dynamic thresholding at
             percentile p (`fdm.diffusion.guidance.dynamic_threshold`; the authors' code
             uses p = 0.95); S is not changed, so it steers the trajectory, and the
             output lies in [-1, 1] (diffusion.clip_x0 then changes nothing).
DDIM's eps_hat is computed from the guided, thresholded O_hat (as lucidrains'
`model_predictions`, which the authors' code builds on, recomputes it from the clipped
x0).

Classifier-free guidance (supp. §2.4, the RealEstate10K setting w = 2, 10 % dropout):
in training each example's context is replaced, with probability train.context_dropout,
by the null context: a zero canvas and a zero mask (`network_input(keep=False)`; the
draws from fold_in(rng, CONTEXT_DROPOUT_STREAM), `context_keep`). The
mask is the flag: a real context always has mask 1 somewhere, so the null context is
distinguishable without a learned token and the network's input shape is unchanged.
The unconditional prediction of guidance is the network on the null context. Eval
losses never drop the context.

Deterministic baseline (model.deterministic = True): the same network with the noisy
target zeroed and t = 0, trained on the same loss without noise, so it predicts S from
the context alone (the posterior mean when forward is linear and the target identifies
S); each of its "samples" is that one S. A problem's own denoiser reads the flag itself
(the scenes: pixelNeRF on the context alone, `fdm.forward.pixelnerf`).

Evaluation (`evaluate`): eval_loss_trgt and eval_loss_novel over the eval tuples, then
eval.samples_per_context samples for each of the first eval.num_contexts eval contexts,
scored by the problem (`ForwardProblem.score`: e.g. W2 to the exact posterior; the
scenes: PSNR of the sampled renders against the held-out views) and
kept in DIR/posterior_samples.npz; for a problem with `score_given_target`, also the S of
every eval example with its target given (`given_target_signal`) against its true
'signal' and its views. `sample`: DIR/samples/samples.npz and grid.png
(per context: its canvas, the true signal, NUM_FIGURE_SAMPLES samples).

Rescoring (eval.reuse_samples = True): `evaluate` scores the posterior samples already
in DIR/posterior_samples.npz instead of drawing them again (the DDIM chains are most of
an evaluation's time), e.g. after a score was added; the file must hold
eval.samples_per_context samples of the same first eval.num_contexts contexts, else a
one-line error. Sampling is deterministic, so the scores equal a fresh evaluation's.

One-step spread (eval.one_step_t = (t, ...), empty = off): for each listed timestep t the
same contexts' true targets are noised to t, x_t = sqrt(abar_t) O^trgt + sqrt(1 - abar_t)
eps with eval.samples_per_context draws of eps each, and the denoiser's S from each x_t
is scored by the problem like the posterior samples, as one_step_t{t}_<score>
(`one_step_signals`). It measures the denoiser without the sampler: where the context
determines a pixel, its prediction should not move with eps (the scenes: sample_std_seen
below sample_std_unseen already in one step); at large t it approaches the context-only
prediction. Its predictions are posterior means of different x_t, not posterior
samples, so a calibration score such as spread_skill_* reads below 1 even for an exact
denoiser. The deterministic model, whose S does not read the target, skips it.

Batches (`fdm.data.inverse_toys`, `fdm.data.scene_tuples`): the keys
`fdm.forward.VIEW_KEYS`, 'signal' (read only by evaluation: the given-target scores and
`ForwardProblem.score`) and 'valid' in eval batches.

Config keys: model.{forward, network, deterministic, mlp.{width, depth,
time_embed_dim}, unet.{ch, ch_mult, num_res_blocks, attn_resolutions, num_groups},
pixelnerf.{features, det_features, width, view_blocks, joint_blocks, num_freqs,
num_samples, det_samples, time_mlp, image_features, density_from_context}},
diffusion.{num_timesteps, beta_schedule, beta_start, beta_end, prediction, clip_x0,
dynamic_threshold}, train.{novel_weight, context_dropout, lr_final_factor, cond_weight,
depth_smoothness_weight, distortion_weight, opacity_entropy_weight}, eval.{batch_size, num_contexts,
samples_per_context, sampler, sample_steps, ddim_eta, guidance_scale, num_examples,
one_step_t, reuse_samples};
declared in configs/fdm_common.py:dfm_config.
"""
from __future__ import annotations

import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdm import config_rules as rules, viz
from fdm.diffusion import (DiffusionSchedule, GuidedDenoiser, ThresholdedDenoiser, ddim_sample,
                           diffusion_loss, mean_flat, renoise_sample)
from fdm.diffusion.process import q_sample
from fdm.diffusion.schedules import SCHEDULE_ALIASES
from fdm.errors import UserError
from fdm.forward import PROBLEMS, VIEW_KEYS, ObservationTuple, View, get_problem, take_rows
from fdm.host import to_host, write_npz_atomic
from fdm.models.base import LossOutput, ModelFamily, decayed_adam
from fdm.nn.mlp import TIME_CONDITIONINGS, TimeMLP
from fdm.nn.unet import UNet

NETWORKS = ("mlp", "unet", "pixelnerf")
PROBLEM_NETWORK = "pixelnerf"  # model.network of a problem with its own denoiser
SAMPLERS = ("ddim", "renoise")
CONTEXT_DROPOUT_STREAM = 1    # fold_in(rng, this): the key of the training context dropout
NUM_FIGURE_SAMPLES = 8
FIGURE_UPSCALE = 4
FIGURE_PAD_VALUE = 128       # mid grey between tiles: signals with a -1 (black) background
POSTERIOR_SAMPLES_FILE = "posterior_samples.npz"


def _sample_steps_rule() -> rules.Rule:
    """eval.sample_steps: DDIM steps in [1, diffusion.num_timesteps]."""
    def ok(value, config):
        return (isinstance(value, int) and not isinstance(value, bool)
                and 1 <= value <= int(config.diffusion.num_timesteps))
    return rules.Rule("an integer in [1, diffusion.num_timesteps]", ok, 0)


def _guidance_scale_rule() -> rules.Rule:
    """eval.guidance_scale: w >= 0, other than 1 only for a model trained with context
    dropout (without it the null-context prediction is untrained)."""
    def ok(value, config):
        return (rules.at_least(0.0).ok(value, config)
                and (value == 1.0 or float(config.train.context_dropout) > 0.0))
    return rules.Rule("a number >= 0, other than 1 only with train.context_dropout > 0", ok,
                      2.0, bad_with={"train.context_dropout": 0.0})


def _one_step_t_rule() -> rules.Rule:
    """eval.one_step_t: a tuple of timesteps in [0, diffusion.num_timesteps)."""
    def ok(value, config):
        return (isinstance(value, (tuple, list))
                and all(rules.timestep().ok(t, config) for t in value))
    return rules.Rule("a tuple of integers in [0, diffusion.num_timesteps)", ok, (-1,))


def _num_groups_rule() -> rules.Rule:
    """model.unet.num_groups: GroupNorm groups, dividing model.unet.ch (every level's width
    is a multiple of it)."""
    def ok(value, config):
        return (isinstance(value, int) and not isinstance(value, bool) and value >= 1
                and int(config.model.unet.ch) % value == 0)
    return rules.Rule("an integer >= 1 dividing model.unet.ch", ok, 0)


# Valid values of the keys configs/fdm_common.py:dfm_config declares (fdm.config_rules).
DFM_RULES = {
    "model.forward": rules.one_of(*sorted(PROBLEMS)),
    "model.network": rules.one_of(*NETWORKS),
    "model.mlp.width": rules.int_at_least(1),
    "model.mlp.depth": rules.int_at_least(1),
    "model.mlp.time_embed_dim": rules.int_at_least(2),
    "model.mlp.time_conditioning": rules.one_of(*TIME_CONDITIONINGS),
    "model.unet.ch": rules.int_at_least(1),
    "model.unet.num_res_blocks": rules.int_at_least(1),
    "model.unet.num_groups": _num_groups_rule(),
    "model.pixelnerf.features": rules.int_at_least(1),
    "model.pixelnerf.det_features": rules.int_at_least(0),
    "model.pixelnerf.width": rules.int_at_least(1),
    "model.pixelnerf.view_blocks": rules.int_at_least(1),
    "model.pixelnerf.joint_blocks": rules.int_at_least(0),
    "model.pixelnerf.num_freqs": rules.int_at_least(0),
    "model.pixelnerf.num_samples": rules.int_at_least(1),
    "model.pixelnerf.det_samples": rules.int_at_least(1),
    "model.pixelnerf.time_mlp": rules.boolean(),
    "model.pixelnerf.image_features": rules.boolean(),
    "model.pixelnerf.density_from_context": rules.boolean(),
    "diffusion.num_timesteps": rules.int_at_least(2),
    "diffusion.beta_schedule": rules.one_of(*sorted(SCHEDULE_ALIASES)),
    "diffusion.prediction": rules.one_of("x0"),            # the denoiser outputs forward(S)
    "diffusion.loss": rules.one_of("simple", "min_snr"),   # Eq. 8's weighting over t
    "diffusion.min_snr_gamma": rules.above(0.0),
    "diffusion.min_snr_floor": rules.at_least(0.0),
    "diffusion.dynamic_threshold": rules.rule(                # percentile p; 0: off
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
        "0 (off) or a percentile in (0, 1]", 1.5),
    "train.novel_weight": rules.at_least(0.0),              # weight of Eq. 9
    "train.context_dropout": rules.in_range(0.0, 1.0),      # 1: never sees the context
    "train.lr_final_factor": rules.above(0.0),              # 1: a constant learning rate
    "train.cond_weight": rules.at_least(0.0),               # the scenes' regularisers
    "train.depth_smoothness_weight": rules.at_least(0.0),
    "train.distortion_weight": rules.at_least(0.0),
    "train.opacity_entropy_weight": rules.at_least(0.0),
    "eval.batch_size": rules.int_at_least(1),
    "eval.num_contexts": rules.int_at_least(1),
    "eval.samples_per_context": rules.int_at_least(2),      # a covariance needs two
    "eval.sampler": rules.one_of(*SAMPLERS),
    "eval.sample_steps": _sample_steps_rule(),
    "eval.ddim_eta": rules.at_least(0.0),
    "eval.guidance_scale": _guidance_scale_rule(),
    "eval.one_step_t": _one_step_t_rule(),
    "eval.num_examples": rules.int_at_least(1),
}


class DFMFamily(ModelFamily):
    """denoise -> S -> forward, trained on observations only (module doc)."""
    config_defaults = "configs.fdm_common:dfm_defaults"
    config_rules = {**ModelFamily.config_rules, **DFM_RULES}

    def __init__(self, config):
        super().__init__(config)
        self.problem = get_problem(config.model.forward, config)
        self.operator = self.problem.operator
        self.schedule = DiffusionSchedule.from_config(config.diffusion)
        self.network = _build_network(config.model, self.problem)
        self._eval_losses = jax.jit(self.per_example_losses)
        self._deterministic_signal = jax.jit(self.deterministic_signal)
        self._given_target_signal = jax.jit(self.given_target_signal)
        self._one_step_signal = jax.jit(self._one_step)

    # ---- the denoiser ---------------------------------------------------
    def network_input(self, ctxt: View, x_t: jax.Array, phi_trgt,
                      keep: jax.Array | None = None) -> jax.Array:
        """[ctxt canvas, ctxt mask, x_t canvas, x_t mask] on the last axis (brief D4) of the
        context and the noisy target x_t [B, *obs_shape] taken with phi_trgt. keep: bool
        [B] or None (all True); where False the context is the null context (zero canvas
        and mask; module doc)."""
        ctxt_canvas, ctxt_mask = self.operator.paste(ctxt.obs, ctxt.phi)
        if keep is not None:
            keep = keep.reshape((-1,) + (1,) * (ctxt_canvas.ndim - 1))
            ctxt_canvas = jnp.where(keep, ctxt_canvas, 0.0)
            ctxt_mask = jnp.where(keep, ctxt_mask, 0.0)
        trgt_canvas, trgt_mask = self.operator.paste(x_t, phi_trgt)
        return jnp.concatenate([ctxt_canvas, ctxt_mask, trgt_canvas, trgt_mask], axis=-1)

    def predict_signal(self, params, ctxt: View, x_t: jax.Array, phi_trgt,
                       t: jax.Array, keep: jax.Array | None = None) -> jax.Array:
        """S [B, *signal_shape] = denoise_theta(O^ctxt, x_t; t, phi^ctxt, phi^trgt) (Eq. 3);
        x_t [B, *obs_shape], t [B] int, keep [B] bool or None (`network_input`)."""
        if self.problem.network is not None:
            return self.network.apply({"params": params}, ctxt, x_t, phi_trgt, t, keep)
        x = self.network_input(ctxt, x_t, phi_trgt, keep)
        out = self.network.apply({"params": params}, self._network_form(x), t)
        return self.problem.signal_from(
            out.reshape((x.shape[0],) + self.problem.network_shape()), ctxt)

    def _network_form(self, x: jax.Array) -> jax.Array:
        """The network input [B, ...] (`network_input`) as model.network reads it: flattened
        [B, D] for the MLP, the image [B, H, W, C_in] for the U-Net."""
        return x if self.config.model.network == "unet" else x.reshape(x.shape[0], -1)

    def _denoise(self, params, ctxt: View, phi_trgt, x_t, t, keep=None):
        """Sampler denoiser: (x_t [B, *obs_shape], t [B]) -> (forward(S, phi^trgt), S)
        (Eq. 3-4); keep as in `network_input`."""
        signal = self.predict_signal(params, ctxt, x_t, phi_trgt, t, keep)
        return self.problem.bound(params).operator.apply(signal, phi_trgt), signal

    def _denoise_null(self, params, ctxt: View, phi_trgt, x_t, t):
        """`_denoise` on the null context: the unconditional model of guidance."""
        return self._denoise(params, ctxt, phi_trgt, x_t, t,
                             jnp.zeros((x_t.shape[0],), bool))

    def sampler_denoiser(self, params, ctxt: View, phi_trgt):
        """The denoiser the samplers call, (x_t, t) -> (O_hat^trgt, S): `_denoise`, guided
        when eval.guidance_scale != 1, then thresholded when diffusion.dynamic_threshold
        > 0 (module doc)."""
        fn = jax.tree_util.Partial(self._denoise, params, ctxt, phi_trgt)
        scale = float(self.config.eval.guidance_scale)
        if scale != 1.0:
            null = jax.tree_util.Partial(self._denoise_null, params, ctxt, phi_trgt)
            fn = GuidedDenoiser(cond=fn, uncond=null, scale=scale)
        percentile = float(self.config.diffusion.dynamic_threshold)
        if percentile > 0.0:
            fn = ThresholdedDenoiser(fn=fn, percentile=percentile)
        return fn

    def deterministic_signal(self, params, ctxt: View, trgt: View,
                             keep: jax.Array | None = None) -> jax.Array:
        """The deterministic baseline's S [B, ...] from the context alone: the network with
        the noisy target zeroed and t = 0 (`trgt.obs` gives only the target's shape);
        keep as in `network_input`."""
        zeros = jnp.zeros_like(trgt.obs)
        t = jnp.zeros((zeros.shape[0],), jnp.int32)
        return self.predict_signal(params, ctxt, zeros, trgt.phi, t, keep)

    def given_target_signal(self, params, views: ObservationTuple) -> jax.Array:
        """S [B, ...] with the target given: the denoiser on the clean O^trgt at t = 0 (the
        deterministic baseline: its S from the context alone)."""
        if self.config.model.deterministic:
            return self.deterministic_signal(params, views.ctxt, views.trgt)
        t = jnp.zeros((views.trgt.obs.shape[0],), jnp.int32)
        return self.predict_signal(params, views.ctxt, views.trgt.obs, views.trgt.phi, t)

    # ---- training -----------------------------------------------------
    def init_params(self, rng, batch):
        """Network parameters from the first example of `batch`."""
        views = take_rows(ObservationTuple.from_batch(batch), slice(0, 1))
        if self.problem.network is not None:
            return self.network.init(rng, views.ctxt, views.trgt.obs, views.trgt.phi,
                                     jnp.zeros((1,), jnp.int32))["params"]
        x = self.network_input(views.ctxt, views.trgt.obs, views.trgt.phi)
        return self.network.init(rng, self._network_form(x),
                                 jnp.zeros((1,), jnp.int32))["params"]

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at train.learning_rate decayed exponentially to train.lr_final_factor times
        it at train.num_steps, after global-norm clipping at train.grad_clip (0: none)."""
        return decayed_adam(self.config.train.learning_rate, self.config.train)

    def per_example_losses(self, params, views: ObservationTuple, rng,
                           context_dropout: float = 0.0) -> tuple[jax.Array, jax.Array]:
        """(L^trgt [B], L^novel [B]) (Eq. 8, 9) of a batch of tuples; t and eps from rng.
        context_dropout (a Python float): each example's context is the null context
        with this probability (`context_keep`; module doc)."""
        return self._losses(params, views, rng, context_dropout)[:2]

    def _losses(self, params, views: ObservationTuple, rng, context_dropout: float):
        """(L^trgt [B], L^novel [B], the S [B, ...] they render) (`per_example_losses`)."""
        trgt, operator = views.trgt, self.problem.bound(params).operator
        keep = context_keep(rng, trgt.obs.shape[0], context_dropout)
        if self.config.model.deterministic:
            signal = self.deterministic_signal(params, views.ctxt, trgt, keep)
            loss_trgt = mean_flat(jnp.square(operator.apply(signal, trgt.phi) - trgt.obs))
        else:
            denoise = jax.tree_util.Partial(self._denoise, params, views.ctxt, trgt.phi,
                                            keep=keep)
            d = self.config.diffusion
            out = diffusion_loss(self.schedule, denoise, trgt.obs, rng, prediction="x0",
                                 weighting=d.loss, min_snr_gamma=d.min_snr_gamma,
                                 min_snr_floor=d.min_snr_floor)
            loss_trgt, signal = out.loss, out.aux
        novel = operator.apply(signal, views.novel.phi)
        return loss_trgt, mean_flat(jnp.square(novel - views.novel.obs)), signal

    def loss_fn(self, params, batch, rng, train, step=0):
        """L = mean(L^trgt + train.novel_weight L^novel + the problem's regularisers), with
        train.context_dropout when `train`; logs loss_trgt, loss_novel and each
        regulariser."""
        dropout = float(self.config.train.context_dropout) if train else 0.0
        views = ObservationTuple.from_batch(batch)
        loss_trgt, loss_novel, signal = self._losses(params, views, rng, dropout)
        problem = self.problem.bound(params)
        terms = {} if problem.regularizers is None else problem.regularizers(views, signal)
        total = loss_trgt + self.config.train.novel_weight * loss_novel + sum(terms.values())
        scalars = {"loss_trgt": jnp.mean(loss_trgt), "loss_novel": jnp.mean(loss_novel)}
        scalars.update({name: jnp.mean(term) for name, term in terms.items()})
        return LossOutput(loss=jnp.mean(total), scalars=scalars)

    # ---- sampling -----------------------------------------------------
    def sample_signals(self, params, views: ObservationTuple, rng) -> jax.Array:
        """One sample S [B, *signal_shape] of p(S | O^ctxt) per example of `views` (only its
        ctxt and trgt.phi are read; trgt.obs gives the target's shape)."""
        if self.config.model.deterministic:
            return self._deterministic_signal(params, views.ctxt, views.trgt)
        d, e = self.config.diffusion, self.config.eval
        key_x, key_s = jax.random.split(rng)
        x_T = jax.random.normal(key_x, views.trgt.obs.shape, jnp.float32)
        fn = self.sampler_denoiser(params, views.ctxt, views.trgt.phi)
        if e.sampler == "renoise":
            out = renoise_sample(fn, self.schedule, x_T, key_s, e.sample_steps,
                                 prediction="x0", clip_x0=d.clip_x0, progress=False)
        else:
            out = ddim_sample(fn, self.schedule, x_T, key_s, e.sample_steps, e.ddim_eta,
                              prediction="x0", clip_x0=d.clip_x0, progress=False)
        return out.aux

    def posterior_samples(self, params, views: ObservationTuple, num: int,
                          rng) -> np.ndarray:
        """`num` samples of S for each of the N examples of `views`: numpy [N, num, ...];
        example i uses the key fold_in(rng, i), one batch of `num` per example."""
        return _per_example(views, num, rng,
                            lambda one, key: self.sample_signals(params, one, key))

    def one_step_signals(self, params, views: ObservationTuple, t: int, num: int,
                         rng) -> np.ndarray:
        """S [N, num, ...] of the N examples of `views`, each predicted in one denoiser call
        from its true target noised to timestep t with `num` draws of eps (module doc:
        one-step spread); example i uses the key fold_in(rng, i)."""
        return _per_example(views, num, rng,
                            lambda one, key: self._one_step_signal(params, one, t, key))

    def _one_step(self, params, views: ObservationTuple, t: jax.Array, rng) -> jax.Array:
        """S [B, ...] from x_t = q_sample(O^trgt, t, eps), eps ~ N(0, I) from rng; t [] int."""
        trgt = views.trgt
        ts = jnp.full((trgt.obs.shape[0],), t, jnp.int32)
        x_t = q_sample(self.schedule, trgt.obs,
                       ts, jax.random.normal(rng, trgt.obs.shape, trgt.obs.dtype))
        return self.predict_signal(params, views.ctxt, x_t, trgt.phi, ts)

    # ---- evaluation -----------------------------------------------------
    def evaluate(self, params, batches, workdir, rng):
        """eval_loss_trgt / eval_loss_novel (means over the valid eval rows) and the
        problem's scores of the posterior samples of the first eval.num_contexts eval
        contexts (module doc); writes DIR/posterior_samples.npz."""
        e, problem = self.config.eval, self.problem.bound(params)
        losses, views, truth, given = self._eval_pass(params, batches,
                                                      jax.random.fold_in(rng, 0))
        metrics = {"eval_loss_trgt": float(losses[0].mean()),
                   "eval_loss_novel": float(losses[1].mean())}
        if given is not None:
            metrics.update(problem.score_given_target(given, views, truth))
        num = int(e.num_contexts)
        contexts = _first_rows(views, num, "eval.num_contexts")
        signals = (saved_posterior_samples(workdir, contexts, int(e.samples_per_context))
                   if e.reuse_samples else
                   self.posterior_samples(params, contexts, int(e.samples_per_context),
                                          jax.random.fold_in(rng, 1)))
        contexts_truth = None if truth is None else truth[:num]
        metrics.update(problem.score(signals, contexts, contexts_truth))
        for j, t in enumerate(() if self.config.model.deterministic else e.one_step_t):
            one_step = self.one_step_signals(params, contexts, int(t), int(e.samples_per_context),
                                             jax.random.fold_in(rng, 2 + j))
            metrics.update({f"one_step_t{int(t)}_{k}": v for k, v in
                            problem.score(one_step, contexts, contexts_truth).items()})
        if not e.reuse_samples:
            write_npz_atomic(os.path.join(workdir, POSTERIOR_SAMPLES_FILE), signals=signals,
                             ctxt=contexts.ctxt.obs, ctxt_phi=contexts.ctxt.phi)
        return metrics

    def _eval_pass(self, params, batches, rng):
        """(losses [2, n]: L^trgt and L^novel of the n valid eval rows, their tuples as
        numpy, their true 'signal' [n, ...] (None when the batches have none), and for a
        problem with `score_given_target` S [n, ...] with the target given, else None);
        batch i uses the key fold_in(rng, i)."""
        scored = self.problem.score_given_target is not None
        losses, rows, given, truth = [], [], [], []
        for i, batch in enumerate(batches):
            views = ObservationTuple.from_batch({k: batch[k] for k in VIEW_KEYS})
            valid = _valid_rows(batch)
            out = self._eval_losses(params, views, jax.random.fold_in(rng, i))
            losses.append(np.stack([to_host(x) for x in out])[:, valid])
            rows.append(take_rows(jax.tree_util.tree_map(to_host, views), valid))
            if scored:
                given.append(to_host(self._given_target_signal(params, views))[valid])
            if "signal" in batch:
                truth.append(to_host(batch["signal"])[valid])
        if not rows or not sum(len(r.ctxt.obs) for r in rows):
            raise UserError("the evaluation split is empty; check data.num_eval")
        joined = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *rows)
        return (np.concatenate(losses, axis=1), joined,
                np.concatenate(truth) if truth else None,
                np.concatenate(given) if scored else None)

    def sample(self, params, workdir, rng):
        """DIR/samples/samples.npz ('signals' [N, K, ...]: K = NUM_FIGURE_SAMPLES samples
        of each of the first N = eval.num_examples eval contexts, 'signal' [N, ...] the
        true signals, 'ctxt', 'ctxt_phi') and grid.png (per context a row: its canvas,
        the true signal, the K samples; `ForwardProblem.render`)."""
        from fdm.data import load_split_arrays
        arrays = load_split_arrays(self.config, "eval")
        num = int(self.config.eval.num_examples)
        views = _first_rows(ObservationTuple.from_batch(arrays), num, "eval.num_examples")
        truth = np.asarray(arrays["signal"][:num])
        signals = self.posterior_samples(params, views, NUM_FIGURE_SAMPLES, rng)
        out_dir = os.path.join(workdir, "samples")
        viz.save_npz(os.path.join(out_dir, "samples.npz"), signals=signals, signal=truth,
                     ctxt=views.ctxt.obs, ctxt_phi=views.ctxt.phi)
        canvas, _ = self.operator.paste(jnp.asarray(views.ctxt.obs), jnp.asarray(views.ctxt.phi))
        viz.save_png(os.path.join(out_dir, "grid.png"),
                     _figure(self.problem.bound(params), to_host(canvas), truth, signals))


def _figure(problem, canvas: np.ndarray, truth: np.ndarray, signals: np.ndarray) -> np.ndarray:
    """uint8 grid, a row per context: its canvas [N, ...], the true signal [N, ...] and
    its samples [N, K, ...] as images (`ForwardProblem.canvas_image`, `truth_image`,
    `render` of the bound `problem`)."""
    num, k = signals.shape[:2]
    samples = problem.render(signals.reshape((num * k,) + signals.shape[2:]))
    tiles = np.concatenate([problem.canvas_image(canvas)[:, None],
                            problem.truth_image(truth)[:, None],
                            samples.reshape((num, k) + samples.shape[1:])], axis=1)
    images = viz.to_uint8(np.clip(tiles.reshape((-1,) + tiles.shape[2:]), -1.0, 1.0))
    return viz.make_grid(viz.upscale_nearest(images, FIGURE_UPSCALE), ncol=k + 2,
                         pad_value=FIGURE_PAD_VALUE)


def _build_network(m, problem):
    """The flax module model.network maps (input, t) to the problem's output (S or its
    non-context part; flattened for the MLP), or the problem's own denoiser
    (model.network = PROBLEM_NETWORK, for a problem that has one and only then)."""
    if (m.network == PROBLEM_NETWORK) != (problem.network is not None):
        raise UserError(f"model.network={m.network!r} does not fit model.forward="
                        f"{m.forward!r}; a problem with its own denoiser (scenes) takes "
                        f"model.network={PROBLEM_NETWORK!r}, the others 'mlp' or 'unet'")
    if problem.network is not None:
        return problem.network
    output_shape = problem.network_shape()
    if m.network == "mlp":
        return TimeMLP(out_dim=math.prod(output_shape), width=m.mlp.width, depth=m.mlp.depth,
                       time_embed_dim=m.mlp.time_embed_dim,
                       time_conditioning=m.mlp.time_conditioning)
    if m.network == "unet":
        if len(output_shape) != 3:
            raise UserError(f"model.network='unet' needs an image signal [H, W, C]; "
                            f"model.forward={m.forward!r} has signals of shape "
                            f"{output_shape}, use model.network='mlp'")
        u = m.unet
        return UNet(ch=u.ch, ch_mult=tuple(u.ch_mult), num_res_blocks=u.num_res_blocks,
                    attn_resolutions=tuple(u.attn_resolutions), out_ch=output_shape[-1],
                    num_groups=u.num_groups)
    raise UserError(f"model.network={m.network!r} is invalid; use one of {list(NETWORKS)}")


def context_keep(rng, batch: int, dropout: float) -> jax.Array | None:
    """bool [batch]: False where an example's context is dropped, each with probability
    `dropout` (a Python float) from the key fold_in(rng, CONTEXT_DROPOUT_STREAM); None
    (keep all, no key used) when dropout = 0."""
    if dropout == 0.0:
        return None
    key = jax.random.fold_in(rng, CONTEXT_DROPOUT_STREAM)
    return jax.random.uniform(key, (batch,)) >= dropout


def _per_example(views: ObservationTuple, num: int, rng,
                 fn: Callable[[ObservationTuple, jax.Array], jax.Array]) -> np.ndarray:
    """numpy [N, num, ...]: for each example i of `views`, fn(num copies of it,
    fold_in(rng, i))."""
    return np.stack([to_host(fn(take_rows(views, np.full(num, i)), jax.random.fold_in(rng, i)))
                     for i in range(views.ctxt.obs.shape[0])])


def saved_posterior_samples(workdir: str, contexts: ObservationTuple, per_context: int) -> np.ndarray:
    """The signals [N, per_context, ...] of DIR/posterior_samples.npz, checked to be
    samples of `contexts` (N rows; module doc: rescoring)."""
    path = os.path.join(workdir, POSTERIOR_SAMPLES_FILE)
    if not os.path.exists(path):
        raise UserError(f"eval.reuse_samples: {path} does not exist; evaluate once without "
                        "it (--mode=evaluate) to draw the samples")
    with np.load(path) as saved:
        signals, ctxt, ctxt_phi = saved["signals"], saved["ctxt"], saved["ctxt_phi"]
    num = contexts.ctxt.obs.shape[0]
    if signals.shape[:2] != (num, per_context):
        raise UserError(f"eval.reuse_samples: {path} holds {signals.shape[1]} samples of "
                        f"{signals.shape[0]} contexts, the config asks for {per_context} of "
                        f"{num}; set eval.num_contexts / eval.samples_per_context to match or "
                        "evaluate without reuse_samples")
    if not (np.allclose(ctxt, contexts.ctxt.obs, atol=1e-6)
            and np.allclose(ctxt_phi, contexts.ctxt.phi, atol=1e-6)):
        raise UserError(f"eval.reuse_samples: the contexts in {path} are not this config's "
                        "eval contexts (different data settings?); evaluate without "
                        "reuse_samples")
    return signals


def _first_rows(views: ObservationTuple, num: int, key: str) -> ObservationTuple:
    """The first `num` examples of numpy tuples (UserError naming `key` when fewer)."""
    have = len(views.ctxt.obs)
    if have < num:
        raise UserError(f"{key}={num} exceeds the {have} eval examples; lower it or raise "
                        "data.num_eval")
    return take_rows(views, slice(0, num))


def _valid_rows(batch) -> np.ndarray:
    """bool [B]: the rows of an eval batch that are data (not padding)."""
    if "valid" in batch:
        return to_host(batch["valid"]).astype(bool)
    return np.ones(len(to_host(batch["ctxt"])), bool)
