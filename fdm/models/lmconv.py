"""Locally masked PixelCNN family (`model.family = "lmconv"`; seed 004 ch. 2, Jain et al. 2020).

Notation: x [B, H, W, C] in [-1, 1] on n = model.num_bins levels (the batches are
snapped to the bin centres); D = H W pixels; K = model.num_orders training orders, the
first K dihedral variants of model.order (`fdm.autoregressive.orders.variants`);
log p(x; π) = Σ_p log p(x_p | x_π(<rank p)) (Eq. 2.1). Network: `fdm.nn.lmconv_net`;
conditionals: the discretized logistic mixture with RGB coupling, or a softmax over the
n levels for one-channel binary data (model.likelihood, `fdm.autoregressive.
logistic_mixture`).

Training (order-agnostic, Eq. 2.6): one order per batch, drawn uniformly from the K with
the step key; loss = mean NLL in nats per image; logged `bpd` (bits per dimension,
D C dims). Adam at train.learning_rate times (1 - train.lr_decay)^step, gradients clipped
at train.grad_clip (the paper's 2e6 is on a batch *sum*; divide by the batch size here).

Evaluation (`evaluate`, results.json; bits per image `nll_bits_*`, per dimension `bpd_*`,
means over the first eval.num_examples eval images; per-image arrays in
DIR/lmconv_eval.npz):
  order{k}             each training order; `orders_mean` their mean
  ensemble (= `bpd`)   logsumexp_k log p(x; π_k) - log K, the joint-level ensemble
  NAME                 each novel order of eval.novel_orders (its base order)
  {top,left,bottom}_max_context[_ensemble], _adversarial
                       NLL of a hidden half given the rest (Table 2.3): under the first
                       training order that generates the rest first (max-context), the
                       ensemble of all such orders, and the first order that generates
                       the half first (adversarial; its NLL is the half's marginal);
                       teacher-forced with the true hidden pixels. Without such a training
                       order, the first one with the observed (hidden) pixels moved first.
  ensemble_bounds_hold fraction of images with min_k NLL_k <= NLL_ens <= min(mean_k NLL_k,
                       min_k NLL_k + log2 K) (1 by construction).
  On a dataset with a known answer (`KNOWN_ANSWERS`: rectangles) its entropies are added
  (entropy_bits, entropy_half_bits, entropy_half_given_rest_bits).
Sampling (`sample`, DIR/samples/): eval.num_samples images along training order 0
(grid.png) and, for eval.num_completions eval images evenly spaced over the split,
every half completed
along its max-context and adversarial orders (completions_{half}.png: the observed
input with the hidden half in red, both completions, the truth), samples.npz.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdm import config_rules as rules, viz
from fdm.autoregressive import inference, logistic_mixture as lm, orders as orders_lib
from fdm.data import rectangles
from fdm.errors import UserError
from fdm.host import to_host, write_npz_atomic
from fdm.models.base import LossOutput, ModelFamily
from fdm.nn.lmconv import METHODS, LMConvMasks, masks_for_order, stack_masks
from fdm.nn.lmconv_net import LocallyMaskedPixelCNN

LIKELIHOODS = ("logistic_mixture", "categorical")
KNOWN_ANSWERS = {"rectangles": rectangles.entropies}
HIDDEN_COLOUR = np.array([220, 40, 40], np.uint8)


def _odd(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value % 2


def _likelihood_ok(value, config) -> bool:
    return value in LIKELIHOODS and (value != "categorical" or config.model.channels == 1)


def _novel_orders_ok(value) -> bool:
    return isinstance(value, (tuple, list)) and all(v in orders_lib.ORDERS for v in value)


LMCONV_RULES = {
    "model.features": rules.int_at_least(2),
    "model.num_res": rules.int_at_least(1),
    "model.kernel_size": rules.rule(_odd, "an odd integer >= 1", 2),
    "model.dilation": rules.int_at_least(1),
    "model.method": rules.one_of(*METHODS),
    "model.channels": rules.int_at_least(1),
    "model.num_bins": rules.int_at_least(2),
    "model.likelihood": rules.Rule(f"one of {list(LIKELIHOODS)} ('categorical' needs "
                                   "model.channels=1)", _likelihood_ok, "no_such_choice"),
    "model.num_mix": rules.int_at_least(1),
    "model.order": rules.one_of(*orders_lib.ORDERS),
    "model.num_orders": rules.rule(lambda v: isinstance(v, int) and 1 <= v <= 8,
                                   "an integer in [1, 8]", 9),
    "train.lr_decay": rules.fraction(),
    "eval.num_examples": rules.int_at_least(1),
    "eval.batch_size": rules.int_at_least(1),
    "eval.novel_orders": rules.rule(_novel_orders_ok,
                                    f"a tuple of order names from {list(orders_lib.ORDERS)}",
                                    ("no_such_order",)),
    "eval.num_samples": rules.int_at_least(0),
    "eval.num_completions": rules.int_at_least(0),
}


class LMConvFamily(ModelFamily):
    """Locally Masked PixelCNN with order-agnostic training (module doc)."""
    config_defaults = "configs.lmconv:lmconv_defaults"
    config_rules = {**ModelFamily.config_rules, **LMCONV_RULES}

    def __init__(self, config):
        super().__init__(config)
        m = config.model
        self.size = int(config.data.image_size)
        self.net = LocallyMaskedPixelCNN(
            out_channels=self._out_channels(), features=m.features, num_res=m.num_res,
            kernel_size=m.kernel_size, dilation=m.dilation, method=m.method)
        self.orders = orders_lib.variants(m.order, self.size, self.size, m.num_orders)
        self.train_masks = stack_masks(self.orders, self.size, self.size, m.kernel_size,
                                       m.dilation)

    def _out_channels(self) -> int:
        m = self.config.model
        if m.likelihood == "categorical":
            return int(m.num_bins)
        return lm.num_params(int(m.channels), int(m.num_mix))

    def order_masks(self, order) -> LMConvMasks:
        """LMConvMasks of one order [D] (numpy or traced)."""
        m = self.config.model
        return masks_for_order(order, self.size, self.size, m.kernel_size, m.dilation)

    @property
    def num_dims(self) -> int:
        return self.size * self.size * int(self.config.model.channels)

    # ---- likelihood ------------------------------------------------------
    def quantize(self, x: jax.Array) -> jax.Array:
        """x [B, H, W, C] in [-1, 1] snapped to the model.num_bins bin centres."""
        n = int(self.config.model.num_bins)
        return lm.from_bins(lm.to_bins(x, n), n)

    def pixel_log_probs(self, params, x: jax.Array, masks: LMConvMasks) -> jax.Array:
        """log p(x_p | x_π(<rank p)) [B, H, W] (nats) under the order of `masks`; x on the
        bin centres [B, H, W, C]."""
        out = self.net.apply({"params": params}, x, masks)
        m = self.config.model
        if m.likelihood == "categorical":
            return lm.categorical_log_prob(out, x, m.num_bins)
        return lm.log_prob(lm.split_params(out, m.channels, m.num_mix), x, m.num_bins)

    def draw(self, params, x: jax.Array, masks: LMConvMasks, key: jax.Array) -> jax.Array:
        """A sample of every pixel from its conditional given x [B, H, W, C] (`inference.
        sample_in_order` keeps the one generated next)."""
        out = self.net.apply({"params": params}, x, masks)
        m = self.config.model
        if m.likelihood == "categorical":
            return lm.categorical_sample(out, key, m.num_bins)
        return lm.sample(lm.split_params(out, m.channels, m.num_mix), key, m.num_bins)

    # ---- training --------------------------------------------------------
    def init_params(self, rng, batch):
        """Network parameters from one dummy image shaped like batch['image'][:1]."""
        shape = tuple(batch["image"].shape[1:])
        expected = (self.size, self.size, int(self.config.model.channels))
        if shape != expected:
            raise UserError(f"the images are {shape} but the model expects {expected} "
                            "(data.image_size, model.channels); set them to the data's")
        x = jnp.zeros((1,) + shape, jnp.float32)
        return self.net.init({"params": rng}, x, self.train_masks.select(0))["params"]

    def loss_fn(self, params, batch, rng, train, step=0):
        """Mean NLL (nats per image) under one training order drawn with `rng` (Eq. 2.6)."""
        index = jax.random.randint(rng, (), 0, len(self.orders))
        x = self.quantize(batch["image"])
        nll = -self.pixel_log_probs(params, x, self.train_masks.select(index)).sum((1, 2))
        loss = nll.mean()
        return LossOutput(loss, {"bpd": loss / (self.num_dims * inference.LN2),
                                 "order": index.astype(jnp.float32)})

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at learning_rate (1 - lr_decay)^step (the authors' per-step decay), after
        global-norm clipping at train.grad_clip (0: none)."""
        tc = self.config.train
        schedule = optax.exponential_decay(tc.learning_rate, 1, 1.0 - tc.lr_decay)
        clip = [optax.clip_by_global_norm(tc.grad_clip)] if tc.grad_clip else []
        return optax.chain(*clip, optax.inject_hyperparams(optax.adam)(learning_rate=schedule))

    # ---- evaluation ------------------------------------------------------
    @functools.cached_property
    def _log_probs_fn(self):
        return jax.jit(self.pixel_log_probs)

    def image_log_probs(self, params, images: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Per-pixel log-probabilities [N, H, W] (nats) of images [N, H, W, C] (on the bin
        centres) under `order` [D], in fixed-size batches of eval.batch_size."""
        masks = self.order_masks(order)
        b = int(self.config.eval.batch_size)
        out = []
        for start in range(0, len(images), b):
            chunk = images[start:start + b]
            padded = np.concatenate([chunk, np.zeros((b - len(chunk),) + chunk.shape[1:],
                                                     chunk.dtype)])
            out.append(to_host(self._log_probs_fn(params, jnp.asarray(padded), masks))
                       [:len(chunk)])
        return np.concatenate(out)

    def eval_images(self, batches) -> np.ndarray:
        """The first eval.num_examples valid eval images, on the bin centres [N, H, W, C]."""
        num, images = int(self.config.eval.num_examples), []
        for batch in batches:
            x = to_host(batch["image"])
            valid = to_host(batch["valid"]).astype(bool) if "valid" in batch else \
                np.ones(len(x), bool)
            images.append(x[valid])
            if sum(map(len, images)) >= num:
                break
        if not images or not sum(map(len, images)):
            raise UserError("the evaluation split is empty; check data.dataset / data.data_dir")
        return np.asarray(self.quantize(jnp.asarray(np.concatenate(images)[:num])))

    def completion_orders(self) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
        """{half: (max-context orders [D] (every training order that generates the rest
        first, else the first one with the rest moved first), adversarial order [D])}."""
        out = {}
        for half, hidden in orders_lib.half_regions(self.size, self.size).items():
            best, worst = orders_lib.completion_orders(self.orders, ~hidden)
            max_context = [self.orders[k] for k in best] or \
                [orders_lib.observed_first(self.orders[0], ~hidden)]
            adversarial = self.orders[worst[0]] if worst else \
                orders_lib.observed_first(self.orders[0], hidden)
            out[half] = (max_context, adversarial)
        return out

    def evaluate(self, params, batches, workdir, rng):
        """The metrics of the module doc; per-image NLLs (bits) in DIR/lmconv_eval.npz."""
        images = self.eval_images(batches)
        nll = self.per_image_nll_bits(params, images)
        metrics = summarize(nll, self.num_dims, self.size, len(self.orders))
        if self.config.data.dataset in KNOWN_ANSWERS:
            metrics.update(KNOWN_ANSWERS[self.config.data.dataset](self.size))
        write_npz_atomic(os.path.join(workdir, "lmconv_eval.npz"), **nll)
        return metrics

    def per_image_nll_bits(self, params, images: np.ndarray) -> dict[str, np.ndarray]:
        """{name: NLL in bits [N]} for the names of the module doc ('orders': [N, K])."""
        cache = {}

        def log_probs(order):        # [N, H, W], each order evaluated once
            key = np.asarray(order).tobytes()
            if key not in cache:
                cache[key] = self.image_log_probs(params, images, order)
            return cache[key]

        bits = lambda log_p: -np.asarray(log_p) / inference.LN2
        joint = np.stack([log_probs(o).sum(axis=(1, 2)) for o in self.orders], axis=1)
        nll = {"orders": bits(joint), "ensemble": bits(inference.ensemble_log_prob(joint))}
        for name in self.config.eval.novel_orders:
            order = orders_lib.base_order(name, self.size, self.size)
            nll[name] = bits(log_probs(order).sum(axis=(1, 2)))
        regions = orders_lib.half_regions(self.size, self.size)
        for half, (max_context, adversarial) in self.completion_orders().items():
            region = lambda o: inference.region_log_prob(log_probs(o), regions[half])
            best = np.stack([region(o) for o in max_context], axis=1)
            nll[f"{half}_max_context"] = bits(best[:, 0])
            nll[f"{half}_max_context_ensemble"] = bits(inference.ensemble_log_prob(best))
            nll[f"{half}_adversarial"] = bits(region(adversarial))
        return nll

    # ---- sampling --------------------------------------------------------
    @functools.cached_property
    def _sample_fn(self):
        def run(params, x, order, start, stop, key):
            masks = self.order_masks(order)
            draw = lambda x, k: self.draw(params, x, masks, k)
            return inference.sample_in_order(draw, x, order, start, stop, key)
        return jax.jit(run)

    def sample_along(self, params, x: np.ndarray, order: np.ndarray, key: jax.Array,
                     hidden: np.ndarray | None = None) -> np.ndarray:
        """x [B, H, W, C] with its `hidden` pixels (bool [H, W]; None: all) sampled along
        `order` [D], which generates them first or last; the others are kept (the observed
        pixels of a completion) -> numpy [B, H, W, C]."""
        d = self.size * self.size
        n = d if hidden is None else int(np.sum(hidden))
        first = hidden is None or orders_lib.generates_first(order, hidden)
        start, stop = (0, n) if first else (d - n, d)
        return to_host(self._sample_fn(params, jnp.asarray(x, jnp.float32),
                                       jnp.asarray(order, jnp.int32), jnp.int32(start),
                                       jnp.int32(stop), key))

    def sample(self, params, workdir, rng):
        """DIR/samples/grid.png, completions_{half}.png and samples.npz (module doc)."""
        e, out_dir = self.config.eval, os.path.join(workdir, "samples")
        shape = (int(e.num_samples), self.size, self.size, int(self.config.model.channels))
        arrays = {}
        if e.num_samples:
            arrays["samples"] = self.sample_along(params, np.zeros(shape), self.orders[0],
                                                  jax.random.fold_in(rng, 0))
            viz.save_png(os.path.join(out_dir, "grid.png"),
                         viz.make_grid(viz.upscale_nearest(viz.to_uint8(arrays["samples"]),
                                                           viz.upscale_factor(self.size, 32))))
        if e.num_completions:
            from fdm.data import load_split_arrays
            images = load_split_arrays(self.config, "eval")["image"]
            picks = np.linspace(0, len(images) - 1, int(e.num_completions)).round()
            truth = images[np.unique(picks.astype(int))]
            truth = np.asarray(self.quantize(jnp.asarray(truth / 127.5 - 1.0, jnp.float32)))
            arrays.update(self._completions(params, truth, out_dir, rng))
        viz.save_npz(os.path.join(out_dir, "samples.npz"), **arrays)

    def _completions(self, params, truth: np.ndarray, out_dir: str, rng) -> dict:
        """Completes every half of `truth` [N, H, W, C] with its max-context and adversarial
        orders; writes completions_{half}.png; returns the completions by name."""
        arrays, regions = {}, orders_lib.half_regions(self.size, self.size)
        for i, (half, (max_context, adversarial)) in enumerate(
                self.completion_orders().items()):
            hidden = regions[half]
            observed = np.where(hidden[None, :, :, None], 0.0, truth)
            done = {kind: self.sample_along(params, observed, o,
                                            jax.random.fold_in(rng, 10 * i + j + 1), hidden)
                    for j, (kind, o) in enumerate((("max_context", max_context[0]),
                                                   ("adversarial", adversarial)))}
            arrays.update({f"{half}_{k}": v for k, v in done.items()})
            columns = [_paint(viz.to_uint8(observed), hidden), viz.to_uint8(done["max_context"]),
                       viz.to_uint8(done["adversarial"]), viz.to_uint8(truth)]
            viz.save_png(os.path.join(out_dir, f"completions_{half}.png"), viz.titled_columns(
                [_rgb(c) for c in columns],
                ["input", "max-ctx", "advers.", "truth"], min_tile=64))
        return arrays


def _rgb(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 1 or 3] -> [N, H, W, 3]."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _paint(images: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] as RGB with the hidden pixels (bool [H, W]) in red."""
    return np.where(hidden[None, :, :, None], HIDDEN_COLOUR, _rgb(images))


def summarize(nll: dict[str, np.ndarray], num_dims: int, size: int,
              num_orders: int) -> dict[str, float]:
    """Means of the per-image NLLs (bits) as nll_bits_NAME and bpd_NAME (module doc)."""
    orders = nll["orders"]
    metrics = {}
    for k in range(num_orders):
        metrics[f"nll_bits_order{k}"] = float(orders[:, k].mean())
    metrics["nll_bits_orders_mean"] = float(orders.mean())
    for name, value in nll.items():
        if name != "orders":
            metrics[f"nll_bits_{name}"] = float(value.mean())
    half_dims = num_dims // 2
    for name in list(metrics):
        dims = half_dims if name.split("_")[2] in ("top", "left", "bottom") else num_dims
        metrics["bpd_" + name[len("nll_bits_"):]] = metrics[name] / dims
    lo = orders.min(axis=1)
    hi = np.minimum(orders.mean(axis=1), lo + math.log2(num_orders))
    ens = nll["ensemble"]
    tol = 1e-4 + 1e-6 * np.abs(lo)          # float32 sums of D per-pixel terms
    metrics["ensemble_bounds_hold"] = float(np.mean((lo - tol <= ens) & (ens <= hi + tol)))
    metrics["bpd"] = metrics["bpd_ensemble"]
    return metrics
