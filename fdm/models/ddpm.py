"""DDPM model family (Ho et al. 2020; seed 004 ch. 3): a U-Net denoiser trained with L_simple
or the variational bound L.

Notation: x0 [B, H, W, C] data in [-1, 1] (C = model.out_ch); t [B] int32 in [0, T)
(0-indexed as in diffusers); y [B] int32 class labels (only when model.num_classes > 0).
The U-Net predicts eps or x0 (`diffusion.prediction`), plus C variance channels when
`diffusion.variance` is learned (`fdm.diffusion.reverse`), trained with `diffusion.loss`
in {"simple", "weighted", "vlb", "min_snr"} (`fdm.diffusion.losses`; "vlb": the bound's
terms in bits/dim with the discretized decoder, a learned variance trains only with it;
"min_snr": Min-SNR-gamma, the weight clip(SNR_t, diffusion.min_snr_floor,
diffusion.min_snr_gamma)).

Training timesteps: uniform, or with diffusion.t_sampling='loss_aware' importance-sampled
from the history of each t's loss (`fdm.diffusion.timesteps`, Improved DDPM §3.3; the
history is `TrainState.stats`), the loss then weighted by 1 / (T p_t) so that it still
estimates the uniform mean.

Logged scalars: `loss` (batch mean) and `loss_q0`..`loss_q3`, the mean loss of
the examples whose t falls in the k-th quarter [kT/4, (k+1)T/4) (0 when the
batch has none there).

Likelihood (`evaluate` when eval.bpd_examples > 0, `evaluate_likelihood`): the whole
bound of the first eval.bpd_examples eval images (`fdm.diffusion.likelihood.bpd_loop`,
x0_hat clipped per diffusion.clip_x0) as bpd, bpd_prior, bpd_decoder, bpd_rate,
distortion_rmse, and DIR/rate_distortion.json (seed 004 Table 6.2). `sample` adds
DIR/samples/progressive.png, x0_hat along the chain (Fig. 3.6) every eval.record_every steps.

Config keys used: model.* (U-Net, see `fdm.nn.unet`; out_ch = image channels C; dtype
and remat, the compute dtype and rematerialisation),
diffusion.{num_timesteps, beta_schedule, beta_start, beta_end, prediction, loss,
variance, clip_x0, decoder_cdf, t_sampling, t_history}, eval.{num_examples, batch_size, sampler (ancestral |
ddim), sample_steps (DDIM only; ancestral always takes T steps), ddim_eta, sample_stats
(default True), metric_weights ('' = no FID/KID; else the .npz of docs/METRICS.md),
num_fid_samples, bpd_examples, record_every}.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fdm import config_rules as rules, viz
from fdm.diffusion import (BoundTerms, DiffusionSchedule, SampleOutput, ancestral_sample,
                           bound_metrics, bpd_loop, ddim_sample, diffusion_loss,
                           importance_probs, importance_weights, init_history,
                           rate_distortion_table, record_losses, with_x0_hat)
from fdm.diffusion.likelihood import CDFS
from fdm.diffusion.losses import PREDICTIONS, WEIGHTINGS
from fdm.diffusion.reverse import LEARNED_VARIANCES, VARIANCES, output_channels
from fdm.errors import UserError
from fdm.host import to_host, write_json_atomic
from fdm.metrics.fid import fid_kid
from fdm.metrics.weights import load_metric_variables
from fdm.models.base import LossOutput, ModelFamily
from fdm.nn.convert_diffusers import load_diffusers_checkpoint
from fdm.nn.layers import DTYPES
from fdm.nn.unet import REMATS, UNet, unet_from_config

SAMPLERS = ("ancestral", "ddim")
T_SAMPLINGS = ("uniform", "loss_aware")
NUM_T_BINS = 4
NUM_SUMMARY_SAMPLES = 8
SUMMARY_DDIM_STEPS = 20
NUM_PROGRESSIVE_SAMPLES = 8
RATE_DISTORTION_FILE = "rate_distortion.json"


def _variance_rule() -> rules.Rule:
    """diffusion.variance: one of VARIANCES, a learned one only with diffusion.loss='vlb'."""
    def ok(value, config):
        return value in VARIANCES and (value not in LEARNED_VARIANCES
                                       or config.diffusion.loss == "vlb")
    return rules.Rule(f"one of {list(VARIANCES)} (learned ones with diffusion.loss='vlb')",
                      ok, "learned", bad_with={"diffusion.loss": "simple"})


# Valid values of the keys configs/fdm_common.py:ddpm_config declares (fdm.config_rules).
DDPM_RULES = {
    "model.ch": rules.int_at_least(1),
    "model.num_res_blocks": rules.int_at_least(1),
    "model.dropout": rules.fraction(),
    "model.num_classes": rules.int_at_least(0),
    "model.num_groups": rules.int_at_least(1),
    "model.out_ch": rules.int_at_least(1),
    "model.dtype": rules.one_of(*DTYPES),
    "model.remat": rules.one_of(*REMATS),
    "diffusion.num_timesteps": rules.int_at_least(2),
    "diffusion.prediction": rules.one_of(*PREDICTIONS),
    "diffusion.loss": rules.one_of(*WEIGHTINGS),
    "diffusion.min_snr_gamma": rules.above(0.0),
    "diffusion.min_snr_floor": rules.at_least(0.0),
    "diffusion.variance": _variance_rule(),
    "diffusion.decoder_cdf": rules.one_of(*CDFS),
    "diffusion.t_sampling": rules.one_of(*T_SAMPLINGS),
    "diffusion.t_history": rules.int_at_least(1),
    "train.warmup_steps": rules.int_at_least(0),     # ModelFamily.optimizer
    "eval.num_examples": rules.int_at_least(1),
    "eval.batch_size": rules.int_at_least(1),
    "eval.sampler": rules.one_of(*SAMPLERS),
    "eval.sample_steps": rules.int_at_least(1),
    "eval.ddim_eta": rules.at_least(0.0),
    "eval.num_fid_samples": rules.int_at_least(0),
    "eval.bpd_examples": rules.int_at_least(0),
    "eval.record_every": rules.int_at_least(0),
}


class DDPMFamily(ModelFamily):
    """U-Net eps/x0-predictor with the DDPM loss, ancestral/DDIM sampling and loss evaluation."""
    loss_batch_keys = ("image", "label")  # what the evaluation loss reads of a batch
    config_defaults = "configs.fdm_common:ddpm_defaults"
    config_rules = {**ModelFamily.config_rules, **DDPM_RULES}

    def __init__(self, config):
        super().__init__(config)
        self.model = self.build_model()
        self.schedule = DiffusionSchedule.from_config(config.diffusion)
        self._eval_losses = jax.jit(
            lambda p, b, k: _loss_and_t(self.per_example_loss(p, b, k, train=False)))
        self._bound = jax.jit(self._bound_terms)

    # ---- the network (subclasses swap it) -------------------------------
    def build_model(self):
        """The flax module; called once in __init__ (2C outputs with a learned variance)."""
        channels = output_channels(self.channels, self.config.diffusion.variance)
        return unet_from_config(self.config.model, out_ch=channels)

    @property
    def channels(self) -> int:
        """C: channels of the images (model.out_ch)."""
        return int(self.config.model.out_ch)

    def apply_model(self, params, x_t, t, y=None, train=False, rngs=None):
        """Denoiser call: (prediction [B,H,W,C], aux pytree or None)."""
        out = self.model.apply({"params": params}, x_t, t, y=y, train=train, rngs=rngs)
        return out, None

    def loss_scalars(self, loss_out, weight) -> dict:
        """Extra logged scalars from the DiffusionLossOutput (its aux); none for DDPM."""
        return {}

    def extra_losses(self, loss_out, weight, step) -> dict:
        """Terms added to the diffusion loss (name -> scalar), from the DiffusionLossOutput,
        the valid-row weights [B] and the update count; none for DDPM."""
        return {}

    # ---- training -----------------------------------------------------
    def init_params(self, rng, batch):
        """U-Net parameters from one dummy example shaped like batch['image'][:1]."""
        x = jnp.zeros((1,) + tuple(batch["image"].shape[1:]), jnp.float32)
        y = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        return self.model.init({"params": rng}, x, jnp.zeros((1,), jnp.int32), y=y)["params"]

    @property
    def num_classes(self) -> int:
        return int(self.config.model.num_classes)

    def _labels(self, batch):
        if not self.num_classes:
            return None
        if "label" not in batch:
            raise UserError(f"model.num_classes={self.num_classes} but the dataset "
                            f"{self.config.data.dataset!r} has no labels; set "
                            "--config.model.num_classes=0 or use a labelled dataset")
        return batch["label"]

    def denoiser_inputs(self, batch) -> dict:
        """Extra keyword inputs of `apply_model` taken from the batch in the loss; none here."""
        return {}

    def per_example_loss(self, params, batch, rng, train: bool, t_probs=None):
        """DiffusionLossOutput(loss [B], t [B]) of batch['image'] [B, H, W, C]; t uniform,
        or drawn from t_probs [T] (unweighted: the caller applies importance weights)."""
        key_loss, key_dropout = jax.random.split(rng)
        y = self._labels(batch)
        extra = self.denoiser_inputs(batch)

        def denoise(x_t, t):
            return self.apply_model(params, x_t, t, y=y, train=train,
                                    rngs={"dropout": key_dropout}, **extra)

        d = self.config.diffusion
        return diffusion_loss(self.schedule, denoise, batch["image"], key_loss,
                              prediction=d.prediction, weighting=d.loss, variance=d.variance,
                              cdf=d.decoder_cdf, t_probs=t_probs,
                              min_snr_gamma=d.min_snr_gamma, min_snr_floor=d.min_snr_floor)

    def loss_fn(self, params, batch, rng, train, step=0):
        """Mean loss over valid examples (t uniform) plus loss per t-quarter (see module
        doc); with `extra_losses` (a subclass's), `loss` is their sum and `loss_diffusion`
        the diffusion loss alone."""
        return self._weighted_loss(params, batch, rng, train, step)[0]

    def init_stats(self):
        """The per-t loss history (`fdm.diffusion.timesteps.LossHistory`) when
        diffusion.t_sampling='loss_aware'; {} otherwise."""
        d = self.config.diffusion
        if d.t_sampling == "uniform":
            return {}
        return init_history(self.schedule.num_timesteps, int(d.t_history))

    def train_loss(self, params, batch, rng, step, stats):
        """`loss_fn`, or with loss-aware sampling: t ~ p(stats), each example's loss
        weighted by 1 / (T p_t), and its unweighted loss recorded in the history."""
        if self.config.diffusion.t_sampling == "uniform":
            return super().train_loss(params, batch, rng, step, stats)
        probs = importance_probs(stats)
        out, per_example = self._weighted_loss(params, batch, rng, True, step, probs)
        return out, record_losses(stats, per_example.t, per_example.loss, batch.get("valid"))

    def _weighted_loss(self, params, batch, rng, train, step, t_probs=None):
        """(LossOutput, the DiffusionLossOutput): t uniform, or t ~ t_probs [T] with the
        importance weights 1 / (T p_t) in the differentiated mean (not in loss_q*)."""
        out = self.per_example_loss(params, batch, rng, train, t_probs)
        weight = batch.get("valid", jnp.ones_like(out.loss)).astype(jnp.float32)
        importance = 1.0 if t_probs is None else importance_weights(t_probs, out.t)
        loss = jnp.sum(out.loss * importance * weight) / jnp.maximum(jnp.sum(weight), 1.0)
        scalars = {"loss": loss, **self._binned_losses(out.loss, out.t, weight),
                   **self.loss_scalars(out, weight)}
        extra = self.extra_losses(out, weight, step)
        if extra:
            scalars.update(extra, loss_diffusion=loss)
            loss = loss + sum(extra.values())
            scalars["loss"] = loss
        return LossOutput(loss=loss, scalars=scalars), out

    def _binned_losses(self, losses, t, weight):
        """loss_q{k}: mean of `losses` [B] over examples with t [B] in quarter k."""
        bins = t * NUM_T_BINS // self.schedule.num_timesteps
        out = {}
        for k in range(NUM_T_BINS):
            w = weight * (bins == k)
            out[f"loss_q{k}"] = jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1.0)
        return out

    # ---- evaluation ---------------------------------------------------
    def evaluate(self, params, batches, workdir, rng):
        """eval_loss / train_loss: mean per-example loss over the first eval.num_examples
        images of each split, with the same fixed keys; plus sample statistics
        (`sample_stats`) against the eval images unless eval.sample_stats is False, and
        fid / kid / kid_std of eval.num_fid_samples samples vs all eval images when
        eval.metric_weights names the Inception weights (docs/METRICS.md); plus the bound
        (`evaluate_likelihood`) of the first eval.bpd_examples eval images when > 0."""
        return self._evaluate_with_samples(params, batches, workdir, rng)[0]

    def _evaluate_with_samples(self, params, batches, workdir, rng,
                               num_samples: int = 0) -> tuple[dict, SampleOutput | None]:
        """(the metrics of `evaluate`, the SampleOutput they were computed on, with at least
        `num_samples` samples for a subclass's own metrics; None when nothing sampled)."""
        e = self.config.eval
        inception = (load_metric_variables(e.metric_weights, "inception")
                     if e.metric_weights else None)  # a missing file fails before work
        batches = list(batches)
        metrics, eval_images = self._loss_metrics(params, batches, rng)
        if e.bpd_examples:
            metrics.update(self.evaluate_likelihood(params, batches, workdir,
                                                    jax.random.fold_in(rng, 2)))
        num_stats = len(eval_images) if e.sample_stats else 0
        num_fid = int(e.num_fid_samples) if inception else 0
        num = max(num_stats, num_fid, num_samples)
        if not num:
            return metrics, None
        # Batch i of samples depends on i only: one run serves every sample metric.
        out = self.generate(params, num, jax.random.fold_in(rng, 1))
        if num_stats:
            metrics.update(sample_stats(out.x0[:num_stats], eval_images))
        if num_fid:
            real = (to_host(b["image"])[_valid_rows(b)] for b in batches)
            metrics.update(fid_kid(real, out.x0[:num_fid], inception, self._batch_size()))
        return metrics, out

    def _loss_metrics(self, params, batches: list, rng) -> tuple[dict, np.ndarray]:
        """({'eval_loss', 'eval_loss_q0'..'eval_loss_q3', 'train_loss'}: mean loss over the
        first eval.num_examples images of each split with the same fixed keys, and over
        those eval images whose t falls in each quarter of [0, T) (a quarter no eval image
        fell in is left out), the eval images used
        [n, H, W, C])."""
        from fdm.data import make_iterator
        num, key = self.config.eval.num_examples, jax.random.fold_in(rng, 0)
        losses, t, eval_images = self._example_losses(params, iter(batches), num, key)
        metrics = {"eval_loss": float(losses.mean())}
        bins = t * NUM_T_BINS // self.schedule.num_timesteps
        for k in range(NUM_T_BINS):
            if np.any(bins == k):
                metrics[f"eval_loss_q{k}"] = float(losses[bins == k].mean())
        train_batches = make_iterator(self.config, "train", batch_size=self._batch_size())
        metrics["train_loss"] = float(self._example_losses(params, train_batches, num, key)[0]
                                      .mean())
        return metrics, eval_images

    def _example_losses(self, params, batches, num: int, rng):
        """(losses [n], their timesteps t [n], images [n,H,W,C]) of the first `num` valid
        examples of `batches`."""
        losses, ts, images = [], [], []
        for i, batch in enumerate(batches):
            inputs = {k: batch[k] for k in self.loss_batch_keys if k in batch}
            loss, t = map(to_host, self._eval_losses(params, inputs, jax.random.fold_in(rng, i)))
            valid = _valid_rows(batch)
            losses.append(loss[valid])
            ts.append(t[valid])
            images.append(to_host(batch["image"])[valid])
            if sum(map(len, losses)) >= num:
                break
        losses = np.concatenate(losses)[:num]
        if not len(losses):
            raise UserError("the evaluation split is empty; check data.num_eval / data.data_dir")
        return losses, np.concatenate(ts)[:num], np.concatenate(images)[:num]

    # ---- likelihood -----------------------------------------------------
    def _bound_terms(self, params, x0, y, rng) -> BoundTerms:
        """The bound of x0 [B, H, W, C] (labels y [B] or None) in bits/dim (jitted as _bound)."""
        d = self.config.diffusion
        fn = jax.tree_util.Partial(self._denoise, params, y)
        return bpd_loop(fn, self.schedule, x0, rng, prediction=d.prediction,
                        variance=d.variance, clip_x0=d.clip_x0, cdf=d.decoder_cdf)

    def bound(self, params, batches, num: int, rng) -> BoundTerms:
        """BoundTerms (numpy) of the first `num` valid examples of `batches`; batch i uses
        the key fold_in(rng, i)."""
        parts = []
        for i, batch in enumerate(batches):
            out = self._bound(params, batch["image"], self._labels(batch),
                              jax.random.fold_in(rng, i))
            valid = _valid_rows(batch)
            parts.append(jax.tree_util.tree_map(lambda a: to_host(a)[valid], out))
            if sum(len(p.total) for p in parts) >= num:
                break
        if not parts or not sum(len(p.total) for p in parts):
            raise UserError("the evaluation split is empty; check data.num_eval / data.data_dir")
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a)[:num], *parts)

    def params_from_diffusers(self, path: str):
        """U-Net params of a local diffusers UNet2DModel directory (e.g. google/ddpm-cifar10-32,
        `fdm.nn.convert_diffusers`), for this family's network: a UserError naming the first
        model.* key (or data.image_size) where the checkpoint differs from the config."""
        if not isinstance(self.model, UNet):
            raise UserError(f"diffusers weights fit the DDPM U-Net; model.family="
                            f"{self.config.model.family!r} builds {type(self.model).__name__}")
        ckpt = load_diffusers_checkpoint(path)
        theirs = {**ckpt.unet_kwargs, "image_size": ckpt.image_size}
        ours = {k: getattr(self.model, k) for k in ckpt.unet_kwargs}
        ours["image_size"] = self.config.data.image_size
        for key, value in theirs.items():
            mine = tuple(ours[key]) if isinstance(ours[key], (list, tuple)) else ours[key]
            if key != "dropout" and value is not None and mine != value:
                where = "data" if key == "image_size" else "model"
                raise UserError(f"the diffusers checkpoint {path} has {key}={value!r}, the "
                                f"config {where}.{key}={mine!r}; pass --config.{where}.{key}="
                                f"{value!r} or a config of that network")
        return ckpt.params

    def evaluate_likelihood(self, params, batches, workdir, rng) -> dict[str, float]:
        """bpd, bpd_prior, bpd_decoder, bpd_rate, distortion_rmse and bpd_num_examples of
        the first eval.bpd_examples examples of `batches` (`fdm.diffusion.bound_metrics`);
        writes DIR/rate_distortion.json (Table 6.2 layout, `rate_distortion_table`)."""
        bound = self.bound(params, batches, int(self.config.eval.bpd_examples), rng)
        write_json_atomic(rate_distortion_table(bound),
                          os.path.join(workdir, RATE_DISTORTION_FILE))
        return {**bound_metrics(bound), "bpd_num_examples": len(bound.total)}

    # ---- sampling -----------------------------------------------------
    def _batch_size(self) -> int:
        return int(self.config.eval.batch_size)

    def _denoise(self, params, y, x_t, t):
        """Sampler denoiser: (x_t [B,H,W,C], t [B]) -> (prediction [B,H,W,C], None)."""
        return self.apply_model(params, x_t, t, y=y, train=False)

    def sample_labels(self, num: int):
        """Class labels [num] cycling over the classes, or None when unconditional."""
        return np.arange(num, dtype=np.int32) % self.num_classes if self.num_classes else None

    def sample_batch(self, params, x_T, rng, y=None, sampler=None, num_steps=None,
                     progress=True, record_every=None) -> SampleOutput:
        """x_T [B, H, W, C] ~ N(0, I) -> SampleOutput(x0 [B, H, W, C], aux of the last
        denoiser call, trajectory every `record_every` steps or None); clipping per
        diffusion.clip_x0. A recorded trajectory's aux has 'x0_hat' (`with_x0_hat`)."""
        d, e = self.config.diffusion, self.config.eval
        fn = jax.tree_util.Partial(self._denoise, params, y)
        if record_every:
            fn = with_x0_hat(fn, self.schedule, d.prediction, d.variance, d.clip_x0)
        common = dict(prediction=d.prediction, variance=d.variance, clip_x0=d.clip_x0,
                      progress=progress, record_every=record_every)
        if (sampler or e.sampler) == "ancestral":
            return ancestral_sample(fn, self.schedule, x_T, rng, **common)
        return ddim_sample(fn, self.schedule, x_T, rng, num_steps or e.sample_steps,
                           e.ddim_eta, **common)

    def generate(self, params, num: int, rng, progress: bool = True,
                 record_every=None) -> SampleOutput:
        """`num` samples with eval.sampler as a SampleOutput of numpy arrays: x0 float32
        [num, S, S, C] in [-1, 1], aux leaves [num, ...], trajectory leaves [T', num, ...].
        Runs fixed-size batches of eval.batch_size (the last one padded) so the sampler
        compiles once."""
        b = self._batch_size()
        shape = (b, self.config.data.image_size, self.config.data.image_size, self.channels)
        labels = self.sample_labels(-(-num // b) * b)
        out = []
        for i, start in enumerate(range(0, num, b)):
            key_x, key_s = jax.random.split(jax.random.fold_in(rng, i))
            y = None if labels is None else jnp.asarray(labels[start:start + b])
            x_T = jax.random.normal(key_x, shape, jnp.float32)
            out.append(jax.device_get(self.sample_batch(params, x_T, key_s, y, progress=progress,
                                                        record_every=record_every)))
        return _concat_samples(out, num)

    def sample(self, params, workdir, rng):
        """Writes DIR/samples/grid.png and samples.npz ('images' float32 [N,S,S,C] in [-1, 1],
        'labels' int32 [N] when class-conditional), N = eval.num_examples, and
        progressive.png (`progressive_strip`) of 8 more samples when eval.record_every > 0."""
        num = self.config.eval.num_examples
        images = self.generate(params, num, rng).x0
        out_dir = os.path.join(workdir, "samples")
        arrays = {"images": images}
        if self.num_classes:
            arrays["labels"] = self.sample_labels(num)
        viz.save_npz(os.path.join(out_dir, "samples.npz"), **arrays)
        viz.save_png(os.path.join(out_dir, "grid.png"), viz.make_grid(viz.to_uint8(images)))
        if self.config.eval.record_every:
            viz.save_png(os.path.join(out_dir, "progressive.png"),
                         progressive_strip(self.progressive_generation(params, rng)))

    def progressive_generation(self, params, rng,
                               num: int = NUM_PROGRESSIVE_SAMPLES) -> SampleOutput:
        """`num` samples (eval.sampler) as numpy, the trajectory recorded every
        eval.record_every steps with aux['x0_hat'] (progressive generation, §3.4.3)."""
        size = self.config.data.image_size
        key_x, key_s = jax.random.split(jax.random.fold_in(rng, 1))
        labels = self.sample_labels(num)
        x_T = jax.random.normal(key_x, (num, size, size, self.channels))
        return jax.device_get(self.sample_batch(
            params, x_T, key_s, None if labels is None else jnp.asarray(labels),
            progress=False, record_every=int(self.config.eval.record_every)))

    def summary_images(self, params, batch, rng):
        """{'samples': a few quick DDIM samples [8, H, W, C] in [0, 1]} (EMA params)."""
        shape = (NUM_SUMMARY_SAMPLES,) + tuple(batch["image"].shape[1:])
        key_x, key_s = jax.random.split(rng)
        labels = self.sample_labels(NUM_SUMMARY_SAMPLES)
        steps = min(SUMMARY_DDIM_STEPS, self.schedule.num_timesteps)
        x = self.sample_batch(params, jax.random.normal(key_x, shape), key_s,
                              None if labels is None else jnp.asarray(labels), sampler="ddim",
                              num_steps=steps, progress=False).x0
        return {"samples": jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)}


def progressive_strip(out: SampleOutput) -> np.ndarray:
    """Progressive generation (seed 004 Fig. 3.6): per sample a row of x0_hat predicted
    along the chain (the recorded trajectory's aux['x0_hat'] [K, N, S, S, C]), then the
    final sample; uint8 grid of min(N, 8) rows and K + 1 columns."""
    n = NUM_PROGRESSIVE_SAMPLES
    x0_hat = np.asarray(out.trajectory.aux["x0_hat"])[:, :n]
    rows = np.concatenate([x0_hat, np.asarray(out.x0)[None, :n]], axis=0).swapaxes(0, 1)
    return viz.make_grid(viz.to_uint8(rows.reshape((-1,) + rows.shape[2:])),
                         ncol=rows.shape[1])


def _loss_and_t(out) -> tuple[jax.Array, jax.Array]:
    """(per-example loss [B], timesteps [B]) of a DiffusionLossOutput (drops its aux)."""
    return out.loss, out.t


def _valid_rows(batch) -> np.ndarray:
    """bool [B]: the rows of an eval batch that are data (not padding)."""
    if "valid" in batch:
        return to_host(batch["valid"]).astype(bool)
    return np.ones(batch["image"].shape[0], bool)


def _concat_samples(outs: list[SampleOutput], num: int) -> SampleOutput:
    """Joins per-batch SampleOutputs: batch axis 0 (x0, aux) or 1 (trajectory), first `num`."""
    join = lambda axis: (lambda *a: np.concatenate(a, axis)[(slice(None),) * axis + (slice(num),)])
    traj = None
    if outs[0].trajectory is not None:
        first = outs[0].trajectory
        traj = first.replace(
            x_t=join(1)(*[o.trajectory.x_t for o in outs]),
            aux=jax.tree_util.tree_map(join(1), *[o.trajectory.aux for o in outs]))
    return SampleOutput(x0=join(0)(*[o.x0 for o in outs]),
                        aux=jax.tree_util.tree_map(join(0), *[o.aux for o in outs]),
                        trajectory=traj)


def sample_stats(samples: np.ndarray, data: np.ndarray) -> dict[str, float]:
    """Cheap distribution checks of samples vs data (both [N, H, W, C] in [-1, 1]).

    sample_mean_err / sample_std_err: mean over channels of |difference| of the
    per-channel pixel mean / std; sample_pixel_w1: mean over channels of the
    1-D Wasserstein-1 distance between the pixel-value marginals. Not FID.
    """
    s, x = samples.reshape(-1, samples.shape[-1]), data.reshape(-1, data.shape[-1])
    levels = np.linspace(0.0, 1.0, 101)
    w1 = np.abs(np.quantile(s, levels, axis=0) - np.quantile(x, levels, axis=0)).mean()
    return {"sample_mean_err": float(np.abs(s.mean(0) - x.mean(0)).mean()),
            "sample_std_err": float(np.abs(s.std(0) - x.std(0)).mean()),
            "sample_pixel_w1": float(w1)}

