"""PDAE and DiffSiam (seed 002; brief `shared/design/seed002.md` S1-S3): representation
learning on a frozen diffusion model, as a model family (model.family = "pdae").

Notation: x0 [B, S, S, C] in [-1, 1]; t [B] int32 in [0, T) (0-indexed); eps ~ N(0, I);
x_t = q_sample(x0, t, eps). Networks:
  u_theta   the frozen DM: a DDPM `fdm.nn.UNet` eps-predictor, eps_theta(x_t, t); its
            weights are `frozen_params()['dm']`, read from model.frozen_dm_workdir (a
            DDPM workdir, EMA params of its newest checkpoint) or model.frozen_dm_diffusers
            (a local diffusers UNet2DModel directory, e.g. google/ddpm-cifar10-32, through
            `fdm.nn.convert_diffusers`); never trained, never checkpointed here. Its
            schedule must be diffusion.* (checked for a DDPM workdir).
  f_omega   the encoder x0 -> z [B, d] (`fdm.nn.pdae.ResNetEncoder`, GroupNorm; params
            'encoder').
  g_phi     the decoder g(x_t, z, t) [B, S, S, C] (`fdm.nn.pdae.ShiftDecoder`, params
            'decoder'): reads the frozen U-Net encoder's skips and timestep embedding of
            x_t, trainable z-modulated copies of the middle and decoder; g = 0 at
            initialisation (zero output conv).
  p_gamma   the SimSiam heads (`fdm.models.simsiam.SimSiamHeads`, params 'heads'; only
            when train.ssl_weight > 0). Their normalisation (model.head_norm) is by
            default BatchNorm with each batch's own statistics and no running averages
            (the trainer keeps none, and the heads are discarded after training; under
            jit over a sharded batch it is SyncBN), or GroupNorm ("group").

Loss (Eq. 3.12): L = w_diff L_diffusion + w_ssl L_SimSiam (train.diffusion_weight,
train.ssl_weight; brief D6: both 1).
  L_diffusion (Eq. 3.11 in PDAE's eps form, `fdm.diffusion.pdae.pdae_loss`): per example
    (t, k) ~ `sample_stages` (model.stage_map: "bins", k = floor(t n / T) + 1, the
    authors' code and the default, brief D1; "alg1_literal": Alg. 1 as printed), and
      lambda_t mean_pixels (eps - (eps_theta(x_t, t) + s_t g(x_t, z_bar_k, t)))^2
    with z_bar_k = `masked_z(f(x0), k, n, model.segment_mode, model.detach_prev)`
    (hierarchical [z_1..z_k, 0..] or sequential [0.., z_k, ..0]; n = model.num_segments;
    n = 1 is PDAE). x0 is the batch image (flipped by the pipeline, data.random_flip:
    brief D8). With g = 0 it is the frozen DM's lambda-weighted loss bit for bit.
  L_SimSiam (Eq. 3.9-3.10): two views v1, v2 of x0 (`fdm.models.simsiam.two_views`,
    random resized crop, flip, colour jitter, grayscale), z_i = f(v_i), (q_i, p_i) =
    heads(z_i) (projection, prediction), mean of D(p1, sg(q2)) / 2 + D(p2, sg(q1)) / 2.
A zero weight skips its branch (SimSiam-only: train.diffusion_weight = 0; PDAE:
model.num_segments = 1 and train.ssl_weight = 0).

Parameters: {'encoder', 'decoder', 'heads'}; the frozen DM is `frozen_params()`, which
the trainer merges into the params loss_fn sees ({..., 'dm'}) and never optimises,
stores or averages; the host-side modes merge it themselves (`full_params`). The run
records which DM step it was trained on (DIR/frozen_dm.json, `save_inputs`), and loading
it later restores that step. model.g_init = "copy_dm" starts g's middle and decoder at
the DM's weights (output conv still 0; brief D9; "random" is PDAE's init).

Optimiser (brief D7): g by Adam at train.learning_rate; f and the heads by
train.encoder_optimizer: "sgd" (SimSiam's: momentum 0.9, cosine decay from
train.encoder_learning_rate to 0 over train.num_steps, weight decay
train.encoder_weight_decay) or "adam" (AdamW, constant rate). Global-norm clipping at
train.grad_clip (0: none) over all of them.

Evaluation (`evaluate`, EMA params):
  * the diffusion loss of the first eval.num_examples eval images, each at one
    t ~ U{0..T-1} (fixed keys) with its stage k, three ways on the same x_t: with z_bar_k
    (eval_loss), with z = 0 (eval_loss_zero) and with g = 0, the frozen DM alone
    (eval_loss_dm); each also per quarter of t (_q0.._q3, q3 the noisiest), and
    z_gain_q{j} = 1 - eval_loss_q{j} / eval_loss_zero_q{j} (the issue's check: z_gain_q3
    >= 0.1);
  * z of the whole eval split and of the first eval.feature_examples train images (0: all),
    written to DIR/z.npz ('eval_z' [N, d], 'train_z' [M, d], and 'eval_<name>' /
    'train_<name>' for every integer label column the batches carry, e.g. the factors
    of `fdm.data.factors`);
  * for every label column: a linear probe (`fdm.metrics.probes.factor_probes`; fitted on
    the train features but their last eval.probe_val_examples, which choose the l2
    strength, scored on the eval split; eval.probe_refit: the chosen strength refitted on
    train + val, the transfer suite's protocol; eval.probe_metric: 'accuracy' or
    'mean_per_class'): probe_<name> (test score); with
    eval.probe_segments = m > 0 also probes on groups of the m equal parts of z
    (eval.probe_segment_groups, 0-based): probe_<name>_seg<g>; with eval.pixel_probes
    the same probes on the raw pixels of the same images instead of z
    (`fdm.metrics.probes.pixel_features`, the trivial baseline): probe_pixels_<name>;
  * few-shot episodes (Table 4.2, `fdm.metrics.probes.few_shot_eval`) on the eval split's
    z, standardised by the train z, for every label column and for the combination of
    the columns eval.few_shot_joint (one class per combination), at C in
    eval.few_shot_shots with eval.few_shot_queries queries per class and
    eval.few_shot_episodes episodes: 5-way, or all the classes that have C + queries
    examples when fewer than 5 do (skipped, with a log line, below 2):
    fewshot_<name>_<ways>way_<C>shot (mean query accuracy) and ..._ci95;
  * with eval.invariance_examples > 0, how far the views move z on that many eval images
    (`fdm.metrics.invariance`; 1: not at all, 0: as far as another image):
    z_invariance_colour (the views' colour jitter alone, always applied) and
    z_invariance_view (one whole SimSiam view), the thesis's argument measured directly;
  * eval.num_samples > 0: DDIM reconstructions (eval.sample_steps steps, eta 0) of the
    first eval images from the same noise x_T: plain (the DM alone) and guided by z(x0):
    recon_mse_plain, recon_mse_guided (mean squared error to x0).
Sampling (`sample`), into DIR/samples/:
  * recon.png, rows of x0 | plain DDIM from x_T | guided DDIM from x_T | guided DDIM from
    the DM's DDIM inversion of x0 (Alg. 2 with lambda = 0), and recon.npz;
  * counterfactual.png (Alg. 2, `counterfactuals`): x0 = eval image i, x0' = eval image
    P + i (P = eval.counterfactual_pairs), one pair per row; titled columns x0, x0', then
    the counterfactuals of x0 at every lambda of eval.counterfactual_scales for S = the
    coarse segments, S = the fine ones and S = all (`counterfactual_subsets`): guided DDIM
    from slerp(x_T, x'_T; lambda) (the DM's inversions) guided by z_S = lerp(z, z', S;
    lambda); and counterfactual.npz;
  * manipulation.png (Alg. 3, `manipulations`): for every (label column, class) of
    eval.manipulate_attributes present in the data, a one-vs-rest linear classifier on the
    train z with eval.manipulate_nonzero non-zero weights (ProbMask,
    `fdm.metrics.probmask`); its first eval.manipulate_examples eval images not of the class
    are rows (attribute after attribute); titled columns x0, then guided DDIM from x_T
    guided by z + lambda sigma * w / ||w|| for every lambda of eval.manipulate_scales
    (sigma the train z's std); and manipulation.npz. Without label columns it is skipped
    with a log line.
Guided sampling uses eps_hat = eps_theta + s_t g(x_t, z_g, t), i.e. x0_hat = u_theta + w_t
g (Alg. 2/3 with the training w_t, brief D11); z_g is z_bar_{k(t)} with the bins map k(t),
as in training (eval.guidance_z = "masked", brief D10), or all of z at every t ("full",
Alg. 2/3 as printed).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util

from fdm import config_rules as rules, viz
from fdm.diffusion import DiffusionSchedule, ddim_invert, ddim_sample, mean_flat, q_sample
from fdm.diffusion.pdae import (SEGMENT_MODES, STAGE_MAPS, guided_eps, lerp_segments, masked_z,
                                pdae_loss, pdae_weight, sample_stages, segment_of_dims,
                                simsiam_loss, slerp, stage_of_timestep)
from fdm.diffusion.reverse import LEARNED_VARIANCES
from fdm.errors import UserError
from fdm.host import to_host, write_json_atomic
from fdm.metrics import invariance, probes
from fdm.models.base import LossOutput, ModelFamily, with_frozen
from fdm.models.simsiam import (HEAD_NORMS, SimSiamHeads, colour_views, two_views,
                                view_spec_from_config)
from fdm.nn.pdae import ResNetEncoder, ShiftDecoder
from fdm.nn.unet import UNet, unet_from_config

FROZEN_KEY = "dm"
DM_FILE = "frozen_dm.json"
Z_FILE = "z.npz"
G_INITS = ("random", "copy_dm")
ENCODER_OPTIMIZERS = ("sgd", "adam")
GUIDANCE_Z = ("masked", "full")
FEW_SHOT_MAX_WAYS = 5
SGD_MOMENTUM = 0.9
NUM_T_BINS = 4
SCHEDULE_KEYS = ("num_timesteps", "beta_schedule", "beta_start", "beta_end")
DM_TRAIN_HINT = ("train it first: python -m experiments.main --config=configs/ddpm.py:factors "
                 "--workdir=DIR, then pass --config.model.frozen_dm_workdir=DIR")


def _positive_ints() -> rules.Rule:
    """A non-empty tuple of positive integers (the encoder's stage widths, blocks)."""
    return rules.rule(lambda v: len(v) > 0 and all(isinstance(n, int) and n > 0 for n in v),
                      "a non-empty tuple of positive integers", ())


def _one_dm_source() -> rules.Rule:
    """model.frozen_dm_workdir: a path exactly when model.frozen_dm_diffusers is ''."""
    def ok(value, config):
        return isinstance(value, str) and bool(value) != bool(config.model.frozen_dm_diffusers)
    return rules.Rule("a DDPM workdir, or '' with model.frozen_dm_diffusers set (exactly one "
                      "of the two)", ok, "", bad_with={"model.frozen_dm_diffusers": ""})


def _groups_rule() -> rules.Rule:
    """eval.probe_segment_groups: tuples of 0-based part indices below eval.probe_segments
    (unread when that is 0)."""
    def ok(value, config):
        m = config.eval.probe_segments
        return m == 0 or isinstance(value, (tuple, list)) and all(
            isinstance(g, (tuple, list)) and len(g) and all(
                isinstance(i, int) and 0 <= i < m for i in g) for g in value)
    return rules.Rule("non-empty tuples of part indices in [0, eval.probe_segments)", ok,
                      ((-1,),), bad_with={"eval.probe_segments": 2})


def _z_dims_rule() -> rules.Rule:
    """eval.manipulate_nonzero: d' in [0, d], d the dimensions of z."""
    def ok(value, config):
        m = config.model
        d = m.z_dim or (m.encoder_widths[-1] if len(m.encoder_widths) else 0)
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= d
    return rules.Rule("an integer in [0, d] (d: model.z_dim, or model.encoder_widths[-1] "
                      "when that is 0; 0: a dense classifier)", ok, -1)


def _numbers(ok_each, allowed: str, bad, empty_ok: bool = False) -> rules.Rule:
    """A tuple of numbers, each with ok_each (non-empty unless empty_ok)."""
    return rules.rule(lambda v: isinstance(v, (tuple, list)) and (empty_ok or len(v) > 0)
                      and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                              and ok_each(x) for x in v), allowed, bad)


def _attributes_ok(value) -> bool:
    """(label column, class) pairs: a string and an integer >= 0 each."""
    return isinstance(value, (tuple, list)) and all(
        isinstance(a, (tuple, list)) and len(a) == 2 and isinstance(a[0], str)
        and isinstance(a[1], int) and not isinstance(a[1], bool) and a[1] >= 0 for a in value)


# Valid values of the keys configs/pdae.py:pdae_config declares (fdm.config_rules).
PDAE_RULES = {
    "model.frozen_dm_workdir": _one_dm_source(),
    "model.encoder_widths": _positive_ints(),
    "model.encoder_blocks": _positive_ints(),
    "model.encoder_groups": rules.int_at_least(1),
    "model.z_dim": rules.int_at_least(0),
    "model.num_segments": rules.int_at_least(1),
    "model.segment_mode": rules.one_of(*SEGMENT_MODES),
    "model.stage_map": rules.one_of(*STAGE_MAPS),
    "model.loss_gamma": rules.at_least(0.0),
    "model.g_init": rules.one_of(*G_INITS),
    "model.proj_dim": rules.int_at_least(1),
    "model.pred_hidden": rules.int_at_least(1),
    "model.head_norm": rules.one_of(*HEAD_NORMS),
    "model.head_groups": rules.int_at_least(1),
    "model.aug_crop_scale": rules.number_pair(lambda a, b: 0 < a <= b <= 1,
                                              "a pair (a, b) with 0 < a <= b <= 1", (0.5, 0.2)),
    "model.aug_jitter": rules.rule(lambda v: len(v) == 4 and all(
        isinstance(s, (int, float)) and 0 <= s for s in v) and v[0] <= 1 and v[1] <= 1
        and v[2] <= 1 and v[3] <= 0.5,
        "(brightness, contrast, saturation, hue) in [0, 1]^3 x [0, 0.5]", (0.4, 0.4, 0.4, 0.6)),
    "model.aug_jitter_prob": rules.in_range(0.0, 1.0),
    "model.aug_gray_prob": rules.in_range(0.0, 1.0),
    "diffusion.num_timesteps": rules.int_at_least(2),
    "train.diffusion_weight": rules.at_least(0.0),
    "train.ssl_weight": rules.at_least(0.0),
    "train.encoder_optimizer": rules.one_of(*ENCODER_OPTIMIZERS),
    "train.encoder_learning_rate": rules.above(0.0),
    "train.encoder_weight_decay": rules.at_least(0.0),
    "eval.num_examples": rules.int_at_least(1),
    "eval.batch_size": rules.int_at_least(1),
    "eval.feature_examples": rules.int_at_least(0),
    "eval.probe_val_examples": rules.int_at_least(1),
    "eval.probe_metric": rules.one_of(*probes.METRICS),
    "eval.probe_segments": rules.int_at_least(0),
    "eval.probe_segment_groups": _groups_rule(),
    "eval.invariance_examples": rules.int_at_least(0),
    "eval.num_samples": rules.int_at_least(0),
    "eval.sample_steps": rules.int_at_least(1),
    "eval.few_shot_shots": _numbers(lambda c: isinstance(c, int) and c >= 1,
                                    "a tuple of integers >= 1 (() for none)", (0,),
                                    empty_ok=True),
    "eval.few_shot_episodes": rules.int_at_least(1),
    "eval.few_shot_queries": rules.int_at_least(1),
    "eval.few_shot_joint": rules.rule(lambda v: isinstance(v, (tuple, list)) and len(v) != 1
                                      and all(isinstance(n, str) for n in v),
                                      "() or a tuple of two or more label column names",
                                      ("shape",)),
    "eval.guidance_z": rules.one_of(*GUIDANCE_Z),
    "eval.counterfactual_pairs": rules.int_at_least(0),
    "eval.counterfactual_scales": _numbers(lambda x: 0 <= x <= 1,
                                           "a non-empty tuple of numbers in [0, 1]", (2.0,)),
    "eval.counterfactual_subset_fraction": rules.rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
        "a number in (0, 1]", 0.0),
    "eval.manipulate_attributes": rules.rule(
        _attributes_ok, "a tuple of (label column, class >= 0) pairs (() for every label "
        "column with class 1)", (("shape", -1),)),
    "eval.manipulate_nonzero": _z_dims_rule(),
    "eval.manipulate_scales": _numbers(lambda x: True, "a non-empty tuple of numbers", ()),
    "eval.manipulate_examples": rules.int_at_least(0),
}


@flax.struct.dataclass
class DMOutput:
    """One pass of the frozen DM on x_t [B, S, S, C] at t [B]: eps [B, S, S, C] its
    prediction; h, skips the U-Net encoder's outputs and temb [B, 4C] the timestep
    embedding, what g reads."""
    eps: jax.Array
    h: jax.Array
    skips: list
    temb: jax.Array


@flax.struct.dataclass
class LossTerms:
    """Per-example terms of one batch: diffusion [B] (L_diffusion's, 0 when its weight is
    0), ssl [B] (L_SimSiam's, 0 when its weight is 0), t [B] the noise levels, z [B, d]
    = f(x0) and z_std [] the mean over dims of the batch std of z / ||z|| times sqrt(d)
    (SimSiam's collapse monitor, here on z: 0 when every z points the same way; SimSiam
    reads about 1 on its zero-mean projections, non-negative pooled ReLU features such as
    z stay lower when healthy)."""
    diffusion: jax.Array
    ssl: jax.Array
    t: jax.Array
    z: jax.Array
    z_std: jax.Array


@dataclasses.dataclass(frozen=True)
class FrozenDM:
    """The frozen DM's network and where its weights are: kind "workdir" (a DDPM workdir)
    or "diffusers" (a local diffusers directory), path."""
    unet: UNet
    kind: str
    path: str


def _dm_parts(module: UNet, x_t: jax.Array, t: jax.Array):
    """UNet.__call__ (no class label, eval mode) returning its intermediate values too:
    (eps, h, skips, temb); passed to `UNet.apply` as `method`."""
    temb = module.time_embed(t)
    h, skips = module.encoder(x_t, temb)
    return module.decoder(module.middle(h, temb), skips, temb), h, skips, temb


def frozen_dm(config) -> FrozenDM:
    """The frozen DM named by model.frozen_dm_workdir / model.frozen_dm_diffusers, its
    network built and checked against the config (image size and channels, an
    unconditional eps-predictor with a fixed variance, the same noise schedule); a
    one-line UserError with the fix otherwise. Reads configs only, not the weights."""
    m = config.model
    if m.frozen_dm_diffusers:
        return FrozenDM(_diffusers_unet(m.frozen_dm_diffusers, config), "diffusers",
                        m.frozen_dm_diffusers)
    return FrozenDM(_workdir_unet(m.frozen_dm_workdir, config), "workdir", m.frozen_dm_workdir)


def _workdir_unet(path: str, config) -> UNet:
    """The U-Net of the DDPM trained in `path` (its config.json) after the checks of
    `frozen_dm`."""
    from fdm.checkpoint_io import latest_step
    from fdm.models import fill_defaults
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file) or latest_step(path) is None:
        raise UserError(f"model.frozen_dm_workdir={path!r} holds no trained DDPM; {DM_TRAIN_HINT}")
    with open(cfg_file) as f:
        dm = ml_collections.ConfigDict(json.load(f))
    where = f"the frozen DM in {path}"
    if dm.model.family != "ddpm":
        raise UserError(f"{where} is a {dm.model.family!r} run; point "
                        "model.frozen_dm_workdir at a DDPM workdir (model.family='ddpm')")
    fill_defaults(dm)                  # keys added to the DDPM family since it was trained
    d = dm.diffusion
    if d.prediction != "eps" or d.variance in LEARNED_VARIANCES or dm.model.num_classes:
        raise UserError(f"{where} must be an unconditional eps-predictor with a fixed variance "
                        f"(it has diffusion.prediction={d.prediction!r}, diffusion.variance="
                        f"{d.variance!r}, model.num_classes={dm.model.num_classes}); train one "
                        "with configs/ddpm.py")
    for key in SCHEDULE_KEYS:
        if d[key] != config.diffusion[key]:
            raise UserError(f"{where} was trained with diffusion.{key}={d[key]!r}, the config "
                            f"has {config.diffusion[key]!r}; pass --config.diffusion.{key}="
                            f"{d[key]!r}")
    _check_size(dm.data.image_size, config, where)
    return unet_from_config(dm.model)


def _diffusers_unet(path: str, config) -> UNet:
    """The U-Net of the diffusers UNet2DModel directory `path` (its config.json; a
    pipeline directory with unet/ works too) after the size check of `frozen_dm`."""
    from fdm.nn.convert_diffusers import unet_kwargs_from_diffusers_config
    cfg_file = next((os.path.join(path, *sub, "config.json") for sub in ((), ("unet",))
                     if os.path.isfile(os.path.join(path, *sub, "config.json"))), None)
    if cfg_file is None:
        raise UserError(f"model.frozen_dm_diffusers={path!r} has no config.json; point it at a "
                        "local diffusers UNet2DModel directory (e.g. google/ddpm-cifar10-32)")
    with open(cfg_file) as f:
        raw = json.load(f)
    kwargs = unet_kwargs_from_diffusers_config(raw)
    if kwargs["num_classes"]:
        raise UserError(f"the diffusers U-Net in {path} is class-conditional; PDAE needs an "
                        "unconditional DM")
    size = raw.get("sample_size")
    _check_size(size[0] if isinstance(size, (list, tuple)) else size, config,
                f"the diffusers U-Net in {path}")
    return UNet(**kwargs)


def _check_size(size, config, where: str) -> None:
    if size and int(size) != int(config.data.image_size):
        raise UserError(f"{where} works on {size}x{size} images, the config has "
                        f"data.image_size={config.data.image_size}; pass "
                        f"--config.data.image_size={size}")


def load_dm_params(dm: FrozenDM, step: int | None = None) -> tuple[Any, int]:
    """(the frozen DM's params, the checkpoint step): the EMA params of step `step` (None:
    the newest) of a DDPM workdir, or the converted diffusers weights (step 0)."""
    if dm.kind == "diffusers":
        from fdm.nn.convert_diffusers import load_diffusers_checkpoint
        return load_diffusers_checkpoint(dm.path).params, 0
    from fdm import checkpoint_io
    checkpoint_io.quiet_orbax_info()
    with checkpoint_io.open_manager(dm.path) as manager:
        steps = manager.all_steps()
        if not steps:
            raise UserError(f"model.frozen_dm_workdir={dm.path!r} has no checkpoint; "
                            f"{DM_TRAIN_HINT}")
        step = max(steps) if step is None else int(step)
        if step not in steps:
            raise UserError(f"this run was trained on the frozen DM's step {step}, which "
                            f"{dm.path} no longer has (it has {sorted(steps)}); point "
                            "model.frozen_dm_workdir at the DM it was trained with")
        tree = checkpoint_io.restore_tree(manager, checkpoint_io.replicated_sharding(), step)
    return tree["ema_params"], step


def _copy_dm_weights(g_params: dict, dm_params: dict) -> dict:
    """g's params with its middle and decoder set to the DM's (`model.g_init` "copy_dm"),
    except the decoder's output conv (kept at 0, so g = 0 at initialisation) and the
    z layers (z_embed, z_proj), which the DM lacks."""
    dm_flat = traverse_util.flatten_dict({"middle": dm_params["middle"],
                                          "decoder": dm_params["decoder"]})
    flat = traverse_util.flatten_dict(g_params)
    for path, value in flat.items():
        if path in dm_flat and path[:2] != ("decoder", "conv_out"):
            flat[path] = jnp.asarray(dm_flat[path], value.dtype)
    return traverse_util.unflatten_dict(flat)


class PDAEFamily(ModelFamily):
    """PDAE / DiffSiam on a frozen DDPM (module docstring)."""
    config_defaults = "configs.pdae:pdae_defaults"
    config_rules = {**ModelFamily.config_rules, **PDAE_RULES}

    def __init__(self, config, dm_step: int | None = None):
        """dm_step: the frozen DM checkpoint step this run was trained on (`inputs`), None
        for the newest."""
        super().__init__(config)
        m = config.model
        self.dm = frozen_dm(config)
        self.unet = self.dm.unet
        self.schedule = DiffusionSchedule.from_config(config.diffusion)
        self.encoder = ResNetEncoder(widths=tuple(m.encoder_widths),
                                     blocks=tuple(m.encoder_blocks), z_dim=m.z_dim or None,
                                     num_groups=m.encoder_groups)
        self.z_dim = int(m.z_dim or m.encoder_widths[-1])
        segment_of_dims(self.z_dim, int(m.num_segments))      # a UserError when it does not split
        self.decoder = ShiftDecoder(**self.unet.part_kwargs(), out_ch=self.unet.out_ch)
        self.heads = SimSiamHeads(m.proj_dim, m.pred_hidden, m.head_norm, m.head_groups)
        self.views = view_spec_from_config(m)
        self.dm_step = dm_step
        self._frozen = None
        if m.g_init == "copy_dm":      # init_params reads the DM under jit: load it now
            self.frozen_params()
        self._jit_eval_terms = jax.jit(self._eval_terms)
        self._jit_encode = jax.jit(self.encode)
        self._jit_view_codes = jax.jit(self.view_codes)

    # ---- the frozen DM (inputs, frozen params) --------------------------
    @classmethod
    def inputs(cls, config, workdir=None) -> dict:
        """{'dm_step': the DM step recorded in DIR/frozen_dm.json} for a trained workdir."""
        path = os.path.join(workdir, DM_FILE) if workdir else ""
        if not path or not os.path.isfile(path):
            return {}
        with open(path) as f:
            return {"dm_step": int(json.load(f)["step"])}

    def save_inputs(self, workdir: str) -> None:
        """Writes DIR/frozen_dm.json (the DM's kind, path and step); a UserError when the
        run was started on another step of the DM (a resumed run must keep its DM)."""
        path = os.path.join(workdir, DM_FILE)
        record = {"kind": self.dm.kind, "path": self.dm.path, "step": self.frozen_step()}
        if os.path.isfile(path):
            with open(path) as f:
                saved = json.load(f)
            if saved["step"] != record["step"] or saved["path"] != record["path"]:
                raise UserError(f"{workdir} was trained on the frozen DM {saved['path']} at step "
                                f"{saved['step']}, now {record['path']} is at step "
                                f"{record['step']}; use a new --workdir")
        write_json_atomic(record, path)

    def frozen_step(self) -> int:
        """The frozen DM's checkpoint step (loads the DM)."""
        self.frozen_params()
        return int(self.dm_step)

    def frozen_params(self) -> dict:
        """{'dm': the frozen DM's U-Net params}, loaded on the first call (`load_dm_params`
        at `dm_step`)."""
        if self._frozen is None:
            params, self.dm_step = load_dm_params(self.dm, self.dm_step)
            self._frozen = {FROZEN_KEY: params}
        return self._frozen

    def full_params(self, params) -> dict:
        """The trained params with the frozen DM merged in (what loss_fn reads)."""
        return with_frozen(params, self.frozen_params())

    # ---- parameters and optimiser ---------------------------------------
    def init_params(self, rng, batch):
        """{'encoder', 'decoder', 'heads' (when train.ssl_weight > 0)}; g's middle and
        decoder copied from the DM when model.g_init = 'copy_dm'."""
        x = jnp.zeros((1,) + tuple(batch["image"].shape[1:]), jnp.float32)
        if x.shape[-1] != self.unet.out_ch:
            raise UserError(f"the images have {x.shape[-1]} channels, the frozen DM "
                            f"{self.unet.out_ch}; use the DM's dataset")
        t = jnp.zeros((1,), jnp.int32)
        shapes = jax.eval_shape(lambda: self.unet.init_with_output(
            jax.random.PRNGKey(0), x, t, method=_dm_parts)[0])
        _, h, skips, temb = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        z = jnp.zeros((1, self.z_dim), jnp.float32)
        params = {"encoder": self.encoder.init(jax.random.fold_in(rng, 0), x)["params"],
                  "decoder": self.decoder.init(jax.random.fold_in(rng, 1), h, skips, temb,
                                               z)["params"]}
        if self.config.model.g_init == "copy_dm":
            params["decoder"] = _copy_dm_weights(params["decoder"],
                                                 self.frozen_params()[FROZEN_KEY])
        if self.config.train.ssl_weight > 0:
            params["heads"] = self.heads.init(jax.random.fold_in(rng, 2), z)["params"]
        return params

    def optimizer(self) -> optax.GradientTransformation:
        """Adam for 'decoder', train.encoder_optimizer for 'encoder' and 'heads' (module
        docstring), after global-norm clipping at train.grad_clip."""
        tc = self.config.train
        if tc.encoder_optimizer == "sgd":
            schedule = optax.cosine_decay_schedule(tc.encoder_learning_rate,
                                                   max(int(tc.num_steps), 1))
            encoder_tx = optax.chain(
                optax.add_decayed_weights(tc.encoder_weight_decay),
                optax.inject_hyperparams(optax.sgd)(learning_rate=schedule,
                                                    momentum=SGD_MOMENTUM))
        else:
            encoder_tx = optax.adamw(tc.encoder_learning_rate,
                                     weight_decay=tc.encoder_weight_decay)
        txs = {"decoder": optax.adam(tc.learning_rate), "encoder": encoder_tx}
        labels = lambda params: {k: jax.tree.map(  # noqa: E731
            lambda _: "decoder" if k == "decoder" else "encoder", v) for k, v in params.items()}
        chain = [optax.clip_by_global_norm(tc.grad_clip)] if tc.grad_clip else []
        return optax.chain(*chain, optax.multi_transform(txs, labels))

    # ---- networks ---------------------------------------------------------
    def encode(self, params, x) -> jax.Array:
        """z = f(x): x [B, S, S, C] -> [B, d]."""
        return self.encoder.apply({"params": params["encoder"]}, x)

    def dm_forward(self, params, x_t, t) -> DMOutput:
        """The frozen DM (params['dm']) on x_t [B, S, S, C] at t [B] (eval mode)."""
        return DMOutput(*self.unet.apply({"params": params[FROZEN_KEY]}, x_t, t,
                                         method=_dm_parts))

    def shift(self, params, out: DMOutput, z, train: bool = False, rng=None) -> jax.Array:
        """g(x_t, z, t) [B, S, S, C] from the DM pass `out` of x_t and z [B, d]."""
        rngs = {"dropout": rng} if train and rng is not None else None
        return self.decoder.apply({"params": params["decoder"]}, out.h, out.skips, out.temb,
                                  z, train, rngs=rngs)

    def mask(self, z, k) -> jax.Array:
        """z_bar_k [B, d] of z [B, d] at stages k [B] (model.segment_mode, detach_prev)."""
        m = self.config.model
        return masked_z(z, k, int(m.num_segments), m.segment_mode, bool(m.detach_prev))

    # ---- the loss -----------------------------------------------------------
    def diffusion_loss(self, params, x0, z, t, k, eps, train: bool = False,
                       rng=None) -> jax.Array:
        """L_diffusion per example [B] (Eq. 3.11, eps form): x0 [B, S, S, C], z [B, d],
        t, k [B] (noise levels, stages), eps [B, S, S, C]; params with 'dm'."""
        out = self.dm_forward(params, q_sample(self.schedule, x0, t, eps), t)
        g = self.shift(params, out, self.mask(z, k), train, rng)
        return pdae_loss(self.schedule, eps, out.eps, g, t, self.config.model.loss_gamma)

    def ssl_loss(self, params, z1, z2) -> jax.Array:
        """L_SimSiam per example [B] (Eq. 3.9) of the two views' codes z1, z2 [B, d]."""
        q1, p1 = self.heads.apply({"params": params["heads"]}, z1)
        q2, p2 = self.heads.apply({"params": params["heads"]}, z2)
        return simsiam_loss(p1, p2, q1, q2)

    def loss_terms(self, params, x0, rng, train: bool) -> LossTerms:
        """LossTerms of x0 [B, S, S, C]; keys fold_in(rng, i): i = 0 stages, 1 noise,
        2 views, 3 dropout. f runs once on [x0, v1, v2] (GroupNorm: no batch coupling)."""
        tc, b = self.config.train, x0.shape[0]
        with_diffusion, with_ssl = tc.diffusion_weight > 0, tc.ssl_weight > 0
        inputs = [x0]
        if with_ssl:
            inputs += list(two_views(jax.random.fold_in(rng, 2), x0, self.views))
        codes = self.encode(params, jnp.concatenate(inputs))
        z = codes[:b]
        zeros = jnp.zeros((b,), jnp.float32)
        t, k = sample_stages(jax.random.fold_in(rng, 0), b, self.schedule.num_timesteps,
                             int(self.config.model.num_segments), self.config.model.stage_map)
        diffusion = zeros
        if with_diffusion:
            eps = jax.random.normal(jax.random.fold_in(rng, 1), x0.shape, x0.dtype)
            diffusion = self.diffusion_loss(params, x0, z, t, k, eps, train,
                                            jax.random.fold_in(rng, 3))
        ssl = self.ssl_loss(params, codes[b:2 * b], codes[2 * b:]) if with_ssl else zeros
        unit = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-8)
        z_std = jnp.mean(jnp.std(unit, axis=0)) * jnp.sqrt(float(z.shape[-1]))
        return LossTerms(diffusion=diffusion, ssl=ssl, t=t, z=z, z_std=z_std)

    def loss_fn(self, params, batch, rng, train, step=0):
        """Eq. 3.12 on batch['image'] (mean over valid rows; params with 'dm'). Scalars:
        loss, loss_diffusion, loss_ssl, loss_q0..q3 (L_diffusion per quarter of t),
        z_std (`LossTerms`)."""
        if FROZEN_KEY not in params:
            raise ValueError("PDAE's loss reads params['dm']: pass family.full_params(params) "
                             "(the trainer merges frozen_params())")
        tc = self.config.train
        terms = self.loss_terms(params, batch["image"], rng, train)
        weight = batch.get("valid", jnp.ones_like(terms.t)).astype(jnp.float32)
        mean = lambda v: jnp.sum(v * weight) / jnp.maximum(jnp.sum(weight), 1.0)  # noqa: E731
        diffusion, ssl = mean(terms.diffusion), mean(terms.ssl)
        loss = tc.diffusion_weight * diffusion + tc.ssl_weight * ssl
        bins = terms.t * NUM_T_BINS // self.schedule.num_timesteps
        quarters = {f"loss_q{j}": jnp.sum(terms.diffusion * weight * (bins == j))
                    / jnp.maximum(jnp.sum(weight * (bins == j)), 1.0) for j in range(NUM_T_BINS)}
        return LossOutput(loss=loss, scalars={"loss": loss, "loss_diffusion": diffusion,
                                              "loss_ssl": ssl, "z_std": terms.z_std, **quarters})

    # ---- evaluation -------------------------------------------------------
    def _eval_terms(self, params, x0, rng):
        """(t [B], loss with z_bar_k, with z = 0, with g = 0 [B] each) on one x_t per
        example (module docstring); params with 'dm'."""
        b = x0.shape[0]
        t, k = sample_stages(jax.random.fold_in(rng, 0), b, self.schedule.num_timesteps,
                             int(self.config.model.num_segments), self.config.model.stage_map)
        eps = jax.random.normal(jax.random.fold_in(rng, 1), x0.shape, x0.dtype)
        out = self.dm_forward(params, q_sample(self.schedule, x0, t, eps), t)
        z = self.encode(params, x0)
        gamma = self.config.model.loss_gamma
        loss = lambda g: pdae_loss(self.schedule, eps, out.eps, g, t, gamma)  # noqa: E731
        return (t, loss(self.shift(params, out, self.mask(z, k))),
                loss(self.shift(params, out, jnp.zeros_like(z))),
                pdae_weight(self.schedule, t, gamma) * mean_flat(jnp.square(eps - out.eps)))

    def diffusion_metrics(self, params, batches: list, rng) -> dict[str, float]:
        """eval_loss, eval_loss_zero, eval_loss_dm, their quarters and z_gain_q* (module
        docstring) over the first eval.num_examples valid examples of `batches`; batch i
        uses the key fold_in(rng, i). params with 'dm'."""
        num, parts = int(self.config.eval.num_examples), []
        for i, batch in enumerate(batches):
            out = map(to_host, self._jit_eval_terms(params, batch["image"],
                                                    jax.random.fold_in(rng, i)))
            valid = _valid_rows(batch)
            parts.append([a[valid] for a in out])
            if sum(len(p[0]) for p in parts) >= num:
                break
        if not parts or not sum(len(p[0]) for p in parts):
            raise UserError("the evaluation split is empty; check the data.* split sizes")
        t, with_z, zero, dm = (np.concatenate(a)[:num] for a in zip(*parts))
        metrics = {"eval_loss": float(with_z.mean()), "eval_loss_zero": float(zero.mean()),
                   "eval_loss_dm": float(dm.mean())}
        bins = t * NUM_T_BINS // self.schedule.num_timesteps
        for j in range(NUM_T_BINS):
            sel = bins == j
            if np.any(sel):
                metrics.update({f"eval_loss_q{j}": float(with_z[sel].mean()),
                                f"eval_loss_zero_q{j}": float(zero[sel].mean()),
                                f"eval_loss_dm_q{j}": float(dm[sel].mean()),
                                f"z_gain_q{j}": float(1.0 - with_z[sel].mean() / zero[sel].mean())})
        return metrics

    def features(self, params, batches, num: int = 0,
                 pixels: bool = False) -> dict[str, np.ndarray]:
        """{'z': [N, d], and every integer label column [N] of the batches} of the first
        `num` valid examples (0: all) of `batches`; with pixels also 'pixels' [N, S S C],
        the images flattened (`fdm.metrics.probes.pixel_features`)."""
        parts = []
        for batch in batches:
            valid = _valid_rows(batch)
            row = {"z": to_host(self._jit_encode(params, batch["image"]))[valid]}
            row.update({k: to_host(v)[valid] for k, v in batch.items() if _is_label(k, v)})
            if pixels:
                row["pixels"] = probes.pixel_features(to_host(batch["image"])[valid])
            parts.append(row)
            if num and sum(len(p["z"]) for p in parts) >= num:
                break
        if not parts:
            raise UserError("a feature split is empty; check the data.* split sizes")
        return {k: np.concatenate([p[k] for p in parts])[:num or None] for k in parts[0]}

    def train_features(self, params, pixels: bool = False) -> dict[str, np.ndarray]:
        """`features` of the first eval.feature_examples train images (0: all)."""
        from fdm.data import load_split_arrays, pipeline
        e = self.config.eval
        batches = pipeline.eval_batches(load_split_arrays(self.config, "train"),
                                        int(e.batch_size))
        return self.features(params, batches, int(e.feature_examples), pixels)

    def evaluate(self, params, batches, workdir, rng):
        """The metrics of the module docstring; writes DIR/z.npz."""
        e = self.config.eval
        full = self.full_params(params)
        batches = list(batches)
        metrics = self.diffusion_metrics(full, batches, jax.random.fold_in(rng, 0))
        pixels = bool(e.pixel_probes)
        test = self.features(full, batches, pixels=pixels)
        train = self.train_features(full, pixels)
        arrays = {**{f"eval_{k}": v for k, v in test.items() if k != "pixels"},
                  **{f"train_{k}": v for k, v in train.items() if k != "pixels"}}
        viz.save_npz(os.path.join(workdir, Z_FILE), **arrays)
        metrics.update(self.probe_metrics(train, test))
        if pixels:
            metrics.update(self.probe_metrics(train, test, "pixels"))
        metrics.update(self.few_shot_metrics(train, test))
        metrics.update(self.invariance_metrics(full, batches, jax.random.fold_in(rng, 2)))
        if e.num_samples:
            x0 = jnp.asarray(_first_images(batches, int(e.num_samples)))
            recon = self.reconstructions(full, x0, jax.random.fold_in(rng, 1), invert=False)
            metrics.update({f"recon_mse_{k}": float(np.mean(np.square(recon[k] - recon["x0"])))
                            for k in ("plain", "guided")})
        return metrics

    def probe_metrics(self, train: dict, test: dict, feature: str = "z") -> dict[str, float]:
        """probe_<name> and probe_<name>_seg<g> (module docstring) for every label column
        of `train` / `test` (`features` outputs); {} when there is none. feature 'pixels':
        the raw-pixel baseline probe_pixels_<name> (no segments)."""
        e = self.config.eval
        names = [k for k in _label_columns(test) if k in train]
        if not names:
            return {}
        num_val = int(e.probe_val_examples)
        if len(train["z"]) <= num_val:
            raise UserError(f"eval.probe_val_examples={num_val} leaves no train features to fit "
                            f"the probes on ({len(train['z'])} extracted); lower it or raise "
                            "eval.feature_examples")
        split = lambda d, rows: (d[feature][rows], {n: d[n][rows] for n in names})  # noqa: E731
        fit, val = split(train, slice(None, -num_val)), split(train, slice(-num_val, None))
        held = split(test, slice(None))
        protocol = {"refit": bool(e.probe_refit), "metric": str(e.probe_metric)}
        prefix = "probe" if feature == "z" else f"probe_{feature}"
        metrics = {f"{prefix}_{n}": r.accuracy
                   for n, r in probes.factor_probes(fit, val, held, **protocol).items()}
        if e.probe_segments and feature == "z":
            groups = [tuple(g) for g in e.probe_segment_groups]
            for n in names:
                results = probes.segment_probes(fit[0], fit[1][n], val[0], val[1][n], held[0],
                                                held[1][n], int(e.probe_segments), groups,
                                                **protocol)
                metrics.update({f"probe_{n}_seg{i}": r.accuracy for i, r in enumerate(results)})
        return metrics

    def invariance_metrics(self, params, batches, rng) -> dict[str, float]:
        """z_invariance_colour and z_invariance_view (`fdm.metrics.invariance`) of the first
        eval.invariance_examples valid images of `batches` ({} when 0): z against z of one
        draw of the views' colour jitter alone (`simsiam.colour_views`) and of one whole
        SimSiam view (`simsiam.two_views`, model.aug_*), per image."""
        num, size = int(self.config.eval.invariance_examples), int(self.config.eval.batch_size)
        if not num:
            return {}
        images = _first_images(batches, num)
        if len(images) < 2:
            raise UserError(f"eval.invariance_examples={num}: the eval split has "
                            f"{len(images)} valid image(s); the invariance needs two")
        parts = [self._jit_view_codes(params, jnp.asarray(images[i:i + size]),
                                      jax.random.fold_in(rng, i))
                 for i in range(0, len(images), size)]
        z, colour, view = (np.concatenate([to_host(p[j]) for p in parts]) for j in range(3))
        return {"z_invariance_colour": invariance.relative_invariance(z, colour),
                "z_invariance_view": invariance.relative_invariance(z, view)}

    def view_codes(self, params, x, key) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(z, z of colour_views, z of the first of two_views) [B, d] of x [B, S, S, C]."""
        colour = colour_views(jax.random.fold_in(key, 0), x, self.views)
        view = two_views(jax.random.fold_in(key, 1), x, self.views)[0]
        return self.encode(params, x), self.encode(params, colour), self.encode(params, view)

    def few_shot_label_sets(self, test: dict) -> dict[str, np.ndarray]:
        """{name: int labels [N]} of the few-shot episodes: every label column of `test`
        (`features` output) and, with eval.few_shot_joint, '<a>_x_<b>...' (one class per
        combination of those columns; skipped with a log line when one is missing)."""
        sets = {k: test[k] for k in _label_columns(test)}
        joint = [str(n) for n in self.config.eval.few_shot_joint]
        if joint and all(n in sets for n in joint):
            combos = np.stack([sets[n] for n in joint], axis=1)
            sets["_x_".join(joint)] = np.unique(combos, axis=0, return_inverse=True)[1].ravel()
        elif joint:
            logging.info("few-shot: eval.few_shot_joint=%s skipped, the data label only %s",
                         joint, sorted(sets))
        return sets

    def few_shot_metrics(self, train: dict, test: dict) -> dict[str, float]:
        """fewshot_<name>_<ways>way_<C>shot and _ci95 (module docstring) on the eval z of
        `test` standardised by the train z of `train` (`features` outputs)."""
        e = self.config.eval
        shots, queries = [int(c) for c in e.few_shot_shots], int(e.few_shot_queries)
        sets = self.few_shot_label_sets(test)
        if not shots or not sets:
            return {}
        mean, scale = probes.standardizer(train["z"])
        feats = ((test["z"] - mean) / scale).astype(np.float32)
        metrics = {}
        for name, labels in sets.items():
            for c in shots:
                ways = min(FEW_SHOT_MAX_WAYS, int(np.sum(np.bincount(labels) >= c + queries)))
                if ways < 2:
                    logging.info("few-shot: %s %d-shot skipped, fewer than 2 classes have %d "
                                 "eval examples", name, c, c + queries)
                    continue
                result = probes.few_shot_eval(feats, labels, int(e.few_shot_episodes), ways, c,
                                              queries, seed=int(self.config.train.seed))
                key = f"fewshot_{name}_{ways}way_{c}shot"
                metrics.update({key: result.mean, f"{key}_ci95": result.ci95})
        return metrics

    # ---- guided sampling --------------------------------------------------
    def _dm_eps(self, params, x_t, t):
        """The plain DM denoiser: (eps_theta(x_t, t), None); params with 'dm'."""
        return self.unet.apply({"params": params[FROZEN_KEY]}, x_t, t), None

    def _guided_eps(self, params, z, x_t, t):
        """The guided denoiser: (eps_theta + s_t g(x_t, z_g, t), None) with z_g =
        z_bar_{k(t)} by the bins map, or z itself with eval.guidance_z = "full" (module
        docstring); params with 'dm', z [B, d]."""
        out = self.dm_forward(params, x_t, t)
        if self.config.eval.guidance_z == "masked":
            z = self.mask(z, stage_of_timestep(t, self.schedule.num_timesteps,
                                               int(self.config.model.num_segments)))
        return guided_eps(self.schedule, out.eps, self.shift(params, out, z), t), None

    def dm_denoiser(self, params):
        """`fdm.diffusion.samplers` denoiser of the frozen DM alone (params with 'dm')."""
        return jax.tree_util.Partial(self._dm_eps, params)

    def guided_denoiser(self, params, z):
        """`fdm.diffusion.samplers` denoiser guided by z [B, d] (params with 'dm')."""
        return jax.tree_util.Partial(self._guided_eps, params, z)

    def ddim(self, denoiser, x_T) -> jax.Array:
        """x0 [B, S, S, C]: DDIM (eval.sample_steps, eta 0) of `denoiser` from x_T."""
        return ddim_sample(denoiser, self.schedule, x_T, None, int(self.config.eval.sample_steps),
                           progress=False).x0

    def invert(self, params, x0) -> jax.Array:
        """x_T [B, S, S, C]: the frozen DM's DDIM inversion of x0 [B, S, S, C]
        (eval.sample_steps, the first line of Alg. 2/3); params with 'dm'."""
        return ddim_invert(self.dm_denoiser(params), self.schedule, x0,
                           int(self.config.eval.sample_steps), progress=False).x_t

    def guided_ddim(self, params, z, x_T) -> jax.Array:
        """x0 [B, S, S, C]: DDIM from x_T [B, S, S, C] guided by z [B, d] (the loop of
        Alg. 2/3); params with 'dm'."""
        return self.ddim(self.guided_denoiser(params, z), x_T)

    def reconstructions(self, params, x0, rng, invert: bool = True) -> dict[str, np.ndarray]:
        """DDIM (eval.sample_steps, eta 0) from x_T ~ N(0, I) (key rng) of the DM alone
        ('plain') and guided by z(x0) ('guided'), and with `invert` guided from the DM's
        DDIM inversion of x0 ('inverted'); with 'x0'; numpy [B, S, S, C] each."""
        z = self.encode(params, x0)
        x_T = jax.random.normal(rng, x0.shape, jnp.float32)
        out = {"x0": x0, "plain": self.ddim(self.dm_denoiser(params), x_T),
               "guided": self.guided_ddim(params, z, x_T)}
        if invert:
            out["inverted"] = self.guided_ddim(params, z, self.invert(params, x0))
        return {k: np.asarray(to_host(v)) for k, v in out.items()}

    def counterfactuals(self, params, x0, x0_other, subsets, scales) -> np.ndarray:
        """Alg. 2: the counterfactuals of x0 towards x0_other (both [B, S, S, C]) for every
        subset S (1-based segment indices; `lerp_segments`) and scale lambda of `scales`:
        guided DDIM from slerp(x_T, x'_T; lambda) (the DM's inversions) guided by z_S =
        lerp(z, z', S; lambda), all in one batch. params with 'dm'. Returns numpy
        [len(subsets), len(scales), B, S, S, C]."""
        x_T, x_T_other = self.invert(params, x0), self.invert(params, x0_other)
        z, z_other = self.encode(params, x0), self.encode(params, x0_other)
        n = int(self.config.model.num_segments)
        grid = [(subset, float(lam)) for subset in subsets for lam in scales]
        starts = jnp.concatenate([slerp(x_T, x_T_other, lam) for _, lam in grid])
        codes = jnp.concatenate([lerp_segments(z, z_other, subset, lam, n)
                                 for subset, lam in grid])
        out = np.asarray(to_host(self.guided_ddim(params, codes, starts)))
        return out.reshape((len(subsets), len(scales)) + tuple(x0.shape))

    def manipulations(self, params, x0, directions, scales) -> np.ndarray:
        """Alg. 3: guided DDIM from the DM's inversion x_T of x0 [B, S, S, C] guided by
        z' = z + lambda directions (directions [B, d] or [d], sigma * w / ||w|| of
        `fdm.metrics.probmask.SparseClassifier.direction`) for every lambda of `scales`,
        in one batch. params with 'dm'. Returns numpy [len(scales), B, S, S, C]."""
        x_T, z = self.invert(params, x0), self.encode(params, x0)
        codes = jnp.concatenate([z + float(lam) * directions for lam in scales])
        out = self.guided_ddim(params, codes, jnp.concatenate([x_T] * len(scales)))
        return np.asarray(to_host(out)).reshape((len(scales),) + tuple(x0.shape))

    def sample(self, params, workdir, rng):
        """DIR/samples/: recon, counterfactual and manipulation .png and .npz (module
        docstring)."""
        from fdm.data import load_split_arrays
        full = self.full_params(params)
        out_dir = os.path.join(workdir, "samples")
        arrays = load_split_arrays(self.config, "eval")
        self.sample_reconstructions(full, arrays["image"], out_dir, rng)
        self.sample_counterfactuals(full, arrays["image"], out_dir)
        self.sample_manipulations(full, arrays, out_dir)

    def sample_reconstructions(self, params, images, out_dir: str, rng) -> None:
        """recon.png and recon.npz of the first eval.num_samples (8 when 0) of the uint8
        images [N, S, S, C]."""
        num = int(self.config.eval.num_samples) or 8
        recon = self.reconstructions(params, _model_space(images[:num]), rng)
        viz.save_npz(os.path.join(out_dir, "recon.npz"), **recon)
        rows = np.stack([recon[k] for k in ("x0", "plain", "guided", "inverted")], axis=1)
        viz.save_png(os.path.join(out_dir, "recon.png"),
                     viz.make_grid(viz.to_uint8(rows.reshape((-1,) + rows.shape[2:])), ncol=4))

    def sample_counterfactuals(self, params, images, out_dir: str) -> None:
        """counterfactual.png and .npz (module docstring) from the uint8 eval images
        [N, S, S, C]; fewer pairs when N < 2 eval.counterfactual_pairs."""
        e = self.config.eval
        pairs = min(int(e.counterfactual_pairs), len(images) // 2)
        if not pairs:
            logging.info("counterfactuals skipped: eval.counterfactual_pairs=%d, %d eval images",
                         e.counterfactual_pairs, len(images))
            return
        x0, x0_other = _model_space(images[:pairs]), _model_space(images[pairs:2 * pairs])
        subsets = counterfactual_subsets(int(self.config.model.num_segments),
                                         float(e.counterfactual_subset_fraction))
        scales = [float(lam) for lam in e.counterfactual_scales]
        out = self.counterfactuals(params, x0, x0_other, list(subsets.values()), scales)
        columns = [x0, x0_other] + [out[i, j] for i in range(len(subsets))
                                    for j in range(len(scales))]
        titles = ["x0", "x0'"] + [f"{name} {lam:g}" for name in subsets for lam in scales]
        viz.save_png(os.path.join(out_dir, "counterfactual.png"),
                     viz.titled_columns([viz.to_uint8(np.asarray(c)) for c in columns], titles))
        viz.save_npz(os.path.join(out_dir, "counterfactual.npz"), x0=np.asarray(x0),
                     x0_other=np.asarray(x0_other), images=out, scales=np.asarray(scales),
                     **{f"subset_{k}": np.asarray(v, np.int32) for k, v in subsets.items()})

    def attribute_directions(self, train: dict,
                             test: dict) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
        """[(name, class, eval rows int [<= eval.manipulate_examples], direction [d])] of
        eval.manipulate_attributes (every label column with class 1 when ()): the ProbMask
        classifier (`fdm.metrics.probmask`) of label == class on the train z of `train`,
        and the first eval rows of `test` not of that class (`features` outputs). Missing
        columns and one-class labels are skipped with a log line."""
        from fdm.metrics import probmask
        e = self.config.eval
        labels = [k for k in _label_columns(train) if k in test]
        attributes = [(str(a[0]), int(a[1])) for a in e.manipulate_attributes] or [
            (name, 1) for name in labels]
        seg = np.asarray(segment_of_dims(self.z_dim, int(self.config.model.num_segments)))
        out = []
        for name, cls in attributes:
            if name not in labels:
                logging.info("manipulation: %s skipped, the data label only %s", name, labels)
                continue
            y = train[name] == cls
            if not y.any() or y.all():
                logging.info("manipulation: %s=%d skipped, one class in the train labels",
                             name, cls)
                continue
            clf = probmask.fit_sparse_classifier(train["z"], y, int(e.manipulate_nonzero),
                                                 seed=int(self.config.train.seed))
            rows = np.flatnonzero(test[name] != cls)[:int(e.manipulate_examples)]
            logging.info("manipulation: %s=%d, d'=%d dims in segments %s, eval accuracy %.3f",
                         name, cls, len(clf.support), sorted(set(seg[clf.support].tolist())),
                         clf.accuracy(test["z"], test[name] == cls))
            out.append((name, cls, rows, clf.direction()))
        return out

    def sample_manipulations(self, params, arrays: dict, out_dir: str) -> None:
        """manipulation.png and .npz (module docstring) from the eval split `arrays`
        ('image' uint8 [N, S, S, C] and its label columns) and the train z; skipped with a
        log line when eval.manipulate_examples is 0 or no attribute is labelled."""
        from fdm.data import pipeline
        e = self.config.eval
        if not e.manipulate_examples:
            logging.info("attribute manipulation skipped: eval.manipulate_examples=0")
            return
        if not any(_is_label(k, v) for k, v in arrays.items()):
            logging.info("attribute manipulation skipped: the data carry no labels")
            return
        test = self.features(params, pipeline.eval_batches(arrays, int(e.batch_size)))
        found = self.attribute_directions(self.train_features(params), test)
        rows = np.concatenate([r for _, _, r, _ in found] or [np.zeros(0, np.int64)])
        if not len(rows):
            logging.info("attribute manipulation skipped: no attribute to manipulate")
            return
        directions = np.concatenate([np.repeat(d[None], len(r), 0) for _, _, r, d in found])
        scales = [float(lam) for lam in e.manipulate_scales]
        x0 = _model_space(arrays["image"][rows])
        out = self.manipulations(params, x0, jnp.asarray(directions), scales)
        titles = ["x0"] + [f"lambda {lam:+g}" for lam in scales]
        viz.save_png(os.path.join(out_dir, "manipulation.png"), viz.titled_columns(
            [viz.to_uint8(np.asarray(c)) for c in [x0, *out]], titles))
        names = np.concatenate([[f"{n}={c}"] * len(r) for n, c, r, _ in found])
        viz.save_npz(os.path.join(out_dir, "manipulation.npz"), x0=np.asarray(x0), images=out,
                     scales=np.asarray(scales), attribute=names, directions=directions)


def counterfactual_subsets(num_segments: int, fraction: float) -> dict[str, tuple[int, ...]]:
    """The segment subsets S (1-based) of the counterfactual figure: {'coarse': the last c
    segments, 'fine': the first c, 'all': 1..n}, c = max(1, floor(fraction n + 1/2)). The
    bins map gives segment 1 the least noisy t (fine attributes, lost first) and segment
    n the noisiest (coarse ones); for PDAE (n = 1) the three are the same."""
    c = max(1, int(np.floor(fraction * num_segments + 0.5)))
    every = tuple(range(1, num_segments + 1))
    return {"coarse": every[-c:], "fine": every[:c], "all": every}


def _model_space(images) -> jax.Array:
    """uint8 images [N, S, S, C] -> float32 in [-1, 1]."""
    return jnp.asarray(np.asarray(images).astype(np.float32) / 127.5 - 1.0)


def _is_label(key: str, value) -> bool:
    """Whether batch[key] is an integer label column [B] (not the 'valid' flags)."""
    return key != "valid" and np.ndim(value) == 1 and np.issubdtype(value.dtype, np.integer)


def _label_columns(features: dict) -> list[str]:
    """The label columns [N] of a `PDAEFamily.features` output (not 'z' or 'pixels')."""
    return [k for k, v in features.items() if _is_label(k, v)]


def _valid_rows(batch) -> np.ndarray:
    """bool [B]: the rows of an eval batch that are data (not padding)."""
    if "valid" in batch:
        return to_host(batch["valid"]).astype(bool)
    return np.ones(batch["image"].shape[0], bool)


def _first_images(batches, num: int) -> np.ndarray:
    """The first `num` valid images [num, S, S, C] of `batches` (reads no further)."""
    parts, have = [], 0
    for batch in batches:
        parts.append(to_host(batch["image"])[_valid_rows(batch)])
        have += len(parts[-1])
        if have >= num:
            break
    return np.concatenate(parts)[:num]
