"""Factorized Diffusion Model family (seed 000 ch. 2, seed 001): DDPM training of the
factorized U-Net, unsupervised segmentation, and image+mask generation.

Notation: x0 [B, S, S, C] images in [-1, 1]; m [B, S, S, K] soft region masks
(softmax over K = model.num_masks); labels = argmax_k m, int [B, S, S].

  * Training: exactly the DDPM loss ‖ε − ε̂‖² (Eq. 2.8) of `DDPMFamily`, with the
    factorized U-Net as denoiser; no mask regulariser. Logged extra scalars:
    `mask_area_k` (mean of m_k) and `mask_entropy` (mean per-pixel entropy / log K).
    Optional search aids (`fdm_search`, off in the paper configs) add a warm-start
    cross-entropy to a centred blob for the first train.mask_prior_steps updates
    and/or a z-loss on the mask logits (logged as loss_mask_prior / loss_mask_z,
    the diffusion loss alone as loss_diffusion).
  * Segmentation of real images (§2.3.4): x_t = q_sample(x0, t_seg) with
    t_seg = eval.segment_t (30), one forward pass with the EMA params, read m.
  * Generation (Alg. 2): a sampler run whose last denoiser call (t = 0 here,
    t = 1 in the paper's 1-indexing) gives the masks; the mask trajectory is
    recorded every eval.record_every steps for the refinement strip (Fig. 2.10),
    with x0_hat for the progressive-generation strip (seed 004 Fig. 3.6).
  * Evaluation: fg/bg Acc / IoU / DICE with one global K→{fg, bg} mapping and
    mIoU with Hungarian matching, the per-image diagnostics seg_iou_per_image and
    seg_ari (`fdm.metrics.segmentation.segmentation_metrics`), next to the
    all-foreground and centre-prior baselines (and the warm start's blob as
    baseline_mask_prior_* when it is on), and two label-free diagnostics of the
    masks: mask_entropy and mask_shift_error (`fdm.metrics.mask_diagnostics`).
    With eval.segmenter_workdir (a `--baseline=supervised` workdir,
    experiments/baselines.py) also gen_seg_* (Table 2.5 bottom): the masks of eval.num_gen_seg_samples generated images
    scored against the supervised segmenter's prediction on those images. The DDPM
    likelihood (bpd, rate_distortion.json) as in `DDPMFamily` when eval.bpd_examples > 0;
    the reverse variance stays fixed (the masks mix the branches' eps predictions).
"""
from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np

from fdm import config_rules as rules, viz
from fdm.diffusion import q_sample
from fdm.diffusion.reverse import FIXED_VARIANCES
from fdm.errors import UserError
from fdm.metrics import mask_diagnostics
from fdm.metrics import segmentation as seg_metrics
from fdm.models import fdm_search
from fdm.models.ddpm import DDPMFamily, progressive_strip
from fdm.models.segmenter import generated_mask_agreement, load_segmenter
from fdm.nn.factorized import DECODINGS, REMATS, fdm_from_config

NUM_FIGURE_EXAMPLES = 16
# Valid values of the keys configs/fdm_common.py:fdm_config adds (fdm.config_rules).
FDM_RULES = {
    "model.num_masks": rules.int_at_least(1),
    "model.decoding": rules.one_of(*DECODINGS),
    "model.remat": rules.one_of(*REMATS),
    "model.mask_init_scale": rules.at_least(0.0),
    "model.mask_skip_max_res": rules.int_at_least(0),
    "model.branch_embed_std": rules.at_least(0.0),
    "model.level2_masks": rules.int_at_least(1),
    "eval.segment_t": rules.timestep(),
    # The masks mix the branches' eps, not variances: a fixed reverse variance only.
    "diffusion.variance": rules.one_of(*FIXED_VARIANCES),
    "eval.num_gen_seg_samples": rules.int_at_least(1),
    "baselines.num_train_images": rules.int_at_least(0),
    "baselines.kmeans_clusters": rules.int_at_least(2),
    "baselines.kmeans_fit_pixels": rules.int_at_least(1),
    "baselines.supervised_steps": rules.int_at_least(1),
    "baselines.supervised_batch_size": rules.int_at_least(1),
    "baselines.supervised_learning_rate": rules.above(0.0),
    "baselines.grabcut_size": rules.int_at_least(0),
    "baselines.grabcut_margin": rules.in_range(0.0, 0.5, include_hi=False),
    "baselines.grabcut_iters": rules.int_at_least(1),
    "baselines.histogram_bins": rules.int_at_least(1),
}


class FDMFamily(DDPMFamily):
    """The factorized U-Net trained as a DDPM; segments images and generates image+mask."""
    config_defaults = "configs.fdm_common:fdm_defaults"
    config_rules = {**DDPMFamily.config_rules, **FDM_RULES, **fdm_search.SEARCH_RULES}

    def __init__(self, config):
        super().__init__(config)
        self.search = fdm_search.search_settings(config.train)

    def build_model(self):
        return fdm_from_config(self.config.model)

    def apply_model(self, params, x_t, t, y=None, train=False, rngs=None, masks=None,
                    return_mask_logits=False):
        """(ε̂ [B,S,S,C], {'masks': m [B,S,S,K], 'fine_masks' (hierarchical),
        'mask_logits' [B,S,S,K] (when return_mask_logits)}).

        masks: [B,S,S,K] to decode with in place of the generated ones, or None.
        """
        given = {} if masks is None else {"masks": masks}
        out = self.model.apply({"params": params}, x_t, t, y=y, train=train, rngs=rngs, **given)
        aux = {"masks": out.masks}
        if out.fine_masks is not None:
            aux["fine_masks"] = out.fine_masks
        if return_mask_logits:
            aux["mask_logits"] = out.mask_logits
        return out.eps, aux

    def denoiser_inputs(self, batch) -> dict:
        """Asks for the mask logits when a search aid penalises them (fdm_search)."""
        return {"return_mask_logits": True} if self.search.active else {}

    def extra_losses(self, loss_out, weight, step) -> dict:
        """loss_mask_prior (the warm start) and loss_mask_z, as configured (fdm_search)."""
        s, logits = self.search, loss_out.aux.get("mask_logits")
        mean = lambda v: jnp.sum(v * weight) / jnp.maximum(jnp.sum(weight), 1.0)
        out = {}
        if s.prior_steps > 0:
            prior = fdm_search.centre_blob_prior(logits.shape[1], self.num_masks, s.prior_sigma)
            out["loss_mask_prior"] = (s.prior_weight * fdm_search.prior_active(step, s.prior_steps)
                                      * mean(fdm_search.mask_prior_loss(logits, prior)))
        if s.z_loss > 0:
            out["loss_mask_z"] = s.z_loss * mean(fdm_search.mask_z_loss(logits))
        return out

    @property
    def num_masks(self) -> int:
        return int(self.config.model.num_masks)

    def loss_scalars(self, loss_out, weight):
        """Mask statistics: mask_area_k and the normalised mask entropy (batch means)."""
        m = loss_out.aux["masks"]
        w = weight[:, None, None] / jnp.maximum(jnp.sum(weight), 1.0) / (m.shape[1] * m.shape[2])
        area = jnp.einsum("bhwk,bhw->k", m, jnp.broadcast_to(w, m.shape[:3]))
        ent = -jnp.sum(m * jnp.log(m + 1e-8), -1) / np.log(max(self.num_masks, 2))
        scalars = {f"mask_area_{k}": area[k] for k in range(self.num_masks)}
        scalars["mask_entropy"] = jnp.sum(ent * w)
        return scalars

    # ---- segmentation ---------------------------------------------------
    def segment_fn(self, params, x0, rng, y=None):
        """Soft masks m [B,S,S,K] of clean images x0 [B,S,S,C] in [-1, 1] (§2.3.4)."""
        t = jnp.full((x0.shape[0],), self.segment_t, jnp.int32)
        x_t = q_sample(self.schedule, x0, t, jax.random.normal(rng, x0.shape, x0.dtype))
        return self.apply_model(params, x_t, t, y=y, train=False)[1]["masks"]

    @property
    def segment_t(self) -> int:
        return int(self.config.eval.segment_t)

    def segment_images(self, params, images, rng, labels=None) -> tuple[np.ndarray, np.ndarray]:
        """Segments uint8 images [N, S, S, 3] (S = data.image_size).

        Returns (hard labels int32 [N, S, S], soft masks float32 [N, S, S, K]).
        Runs in batches of eval.batch_size with one compiled function.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise UserError(f"segment_images takes uint8 images [N, H, W, 3], got "
                            f"{images.dtype} {images.shape}; convert with fdm.viz.to_uint8")
        if not hasattr(self, "_segment_jit"):
            self._segment_jit = jax.jit(self.segment_fn)
        x0 = images.astype(np.float32) / 127.5 - 1.0
        masks = self._in_batches(
            lambda i, x, y: self._segment_jit(params, x, jax.random.fold_in(rng, i), y),
            x0, labels)
        return masks.argmax(-1).astype(np.int32), masks

    def _in_batches(self, fn, x, labels=None) -> np.ndarray:
        """Concatenated fn(i, x batch, labels batch or None) over batches i of
        eval.batch_size rows of x [N, ...], the last zero-padded (one compilation)."""
        b, out = self._batch_size(), []
        for i, start in enumerate(range(0, len(x), b)):
            chunk = _pad_rows(x[start:start + b], b)
            y = None if labels is None else jnp.asarray(_pad_rows(labels[start:start + b], b))
            out.append(np.asarray(fn(i, jnp.asarray(chunk), y))[:len(x[start:start + b])])
        return np.concatenate(out)

    def mask_shift_error(self, params, images, rng, num_images: int = 128) -> float:
        """Label-free translation-equivariance error of the masks on the first `num_images`
        uint8 images [N, S, S, 3] (fdm.metrics.mask_diagnostics): shifts of one and two
        coarsest strides along each axis, the same noise at t = eval.segment_t on the
        padded canvas for both windows. In [0, 1]; 0 = masks move with the content."""
        x0 = images[:num_images].astype(np.float32) / 127.5 - 1.0
        size, stride = x0.shape[1], 2 ** (len(self.config.model.ch_mult) - 1)
        t_seg = lambda n: jnp.full((n,), self.segment_t, jnp.int32)
        if not hasattr(self, "_noisy_masks_jit"):
            self._noisy_masks_jit = jax.jit(
                lambda p, x_t: self.apply_model(p, x_t, t_seg(x_t.shape[0]))[1]["masks"])
        masks = lambda x_t: self._in_batches(lambda i, x, y: self._noisy_masks_jit(params, x),
                                             x_t)
        errors = []
        for d in (stride, 2 * stride):
            canvas = mask_diagnostics.shift_canvas(x0, d)
            noise = jax.random.normal(jax.random.fold_in(rng, d), canvas.shape)
            x_t = np.asarray(q_sample(self.schedule, jnp.asarray(canvas), t_seg(len(canvas)),
                                      noise))
            m_a = masks(mask_diagnostics.window(x_t, 0, 0, size))
            for dy, dx in ((d, 0), (0, d)):
                m_b = masks(mask_diagnostics.window(x_t, dy, dx, size))
                errors.append(mask_diagnostics.shift_error(m_a, m_b, dy, dx))
        return float(np.mean(errors))

    # ---- evaluation -----------------------------------------------------
    def evaluate(self, params, batches, workdir, rng):
        """DDPM metrics plus segmentation metrics on every eval image that has a mask, and
        gen_seg_* of generated images when eval.segmenter_workdir is set (module doc)."""
        batches = list(batches)
        segmenter, num_gen = self._eval_segmenter()  # a missing file fails before any work
        metrics, samples = self._evaluate_with_samples(params, iter(batches), workdir, rng,
                                                       num_gen)
        if segmenter is not None:
            metrics.update(generated_mask_agreement(
                segmenter, viz.to_uint8(samples.x0[:num_gen]),
                samples.aux["masks"][:num_gen].argmax(-1), self.num_masks))
        images, targets = _valid_images_and_masks(batches)
        if targets is None:
            return metrics
        pred, masks = self.segment_images(params, images, jax.random.fold_in(rng, 7))
        report = seg_metrics.segmentation_metrics(pred, targets, self.num_masks)
        metrics.update(report.metrics)
        metrics["seg_num_images"] = len(images)
        if self.search.prior_steps > 0:   # the warm start's own, data-independent masks
            prior = fdm_search.prior_hard_labels(targets.shape[1], self.search.prior_sigma)
            metrics.update(seg_metrics.trivial_baselines(targets, {"mask_prior": prior}))
        metrics["mask_entropy"] = mask_diagnostics.mask_entropy(masks)
        metrics["mask_shift_error"] = self.mask_shift_error(params, images,
                                                            jax.random.fold_in(rng, 8))
        metrics.update(self._per_class_scores(report.foreground, pred, targets, batches))
        write_segmentation_figure(os.path.join(workdir, "segment", "eval_overlays.png"),
                                  images, targets, pred, masks)
        return metrics

    def _per_class_scores(self, foreground: tuple[bool, ...], pred, targets, batches) -> dict:
        """Table 2.7: seg_{acc,iou,miou}_voc{c} per VOC class (and their means) under
        the global mapping `foreground` (K bools, `SegmentationReport.foreground`), when
        the eval batches carry 'voc_class'. pred, targets int [N, S, S]."""
        classes = _valid_column(batches, "voc_class")
        if classes is None:
            return {}
        per_class = seg_metrics.group_scores(pred, targets, classes, foreground)
        out = {f"seg_{name}_voc{c}": v for c, s in per_class.items() for name, v in s.items()}
        for name in ("acc", "iou", "miou"):
            out[f"seg_{name}_voc_mean"] = float(np.mean([s[name] for s in per_class.values()]))
        return out

    def _eval_segmenter(self):
        """(the supervised segmenter of eval.segmenter_workdir, eval.num_gen_seg_samples),
        or (None, 0) when unset; UserError for a segmenter trained at another image size."""
        e = self.config.eval
        workdir, num = e.segmenter_workdir, int(e.num_gen_seg_samples)
        if not workdir:
            return None, 0
        segmenter = load_segmenter(workdir)
        if segmenter.image_size != self.config.data.image_size:
            raise UserError(f"the segmenter in {workdir} was trained on {segmenter.image_size}px "
                            f"images, data.image_size is {self.config.data.image_size}; train it "
                            "with this config (experiments/baselines.py --baseline=supervised)")
        return segmenter, num

    # ---- generation -----------------------------------------------------
    def sample(self, params, workdir, rng):
        """Writes DIR/samples/: grid.png, masks.png (overlays), mask_channels.png (Fig. 2.9),
        refinement.png (Fig. 2.10), progressive.png (x0_hat along the chain, seed 004
        Fig. 3.6) and samples.npz (images, masks, labels, trajectory)."""
        every = int(self.config.eval.record_every) or None
        out = self.generate(params, self.config.eval.num_examples, rng, record_every=every)
        out_dir = os.path.join(workdir, "samples")
        write_generation_figures(out_dir, out.x0, out.aux["masks"], out.trajectory)
        if out.trajectory is not None:
            viz.save_png(os.path.join(out_dir, "progressive.png"), progressive_strip(out))
        arrays = {"images": out.x0, "masks": out.aux["masks"],
                  "labels": out.aux["masks"].argmax(-1).astype(np.int32)}
        if out.trajectory is not None:
            arrays.update(trajectory_t=out.trajectory.t,
                          trajectory_masks=out.trajectory.aux["masks"])
        viz.save_npz(os.path.join(out_dir, "samples.npz"), **arrays)

    def segment(self, params, input_glob, workdir, rng):
        """Writes DIR/segment/NAME_labels.png (labels 0..K-1), NAME_mask.png (colours)
        and NAME_overlay.png for every image matching `input_glob`."""
        from fdm.data import folder
        paths = sorted(glob.glob(input_glob))
        size = self.config.data.image_size
        images = np.stack([folder.load_image(p, size) for p in paths])
        labels, _ = self.segment_images(params, images, rng)
        out_dir = os.path.join(workdir, "segment")
        palette = viz.default_palette(self.num_masks)
        for path, image, lab in zip(paths, images, labels):
            stem = os.path.splitext(os.path.basename(path))[0]
            viz.save_png(os.path.join(out_dir, f"{stem}_labels.png"), lab.astype(np.uint8))
            viz.save_png(os.path.join(out_dir, f"{stem}_mask.png"), viz.colorize_mask(lab, palette))
            viz.save_png(os.path.join(out_dir, f"{stem}_overlay.png"),
                         viz.overlay(image, lab, palette=palette))
        return labels

    def summary_images(self, params, batch, rng):
        """Quick samples with their mask overlays, and segmentations of the batch."""
        images = super().summary_images(params, batch, rng)
        n = min(NUM_FIGURE_EXAMPLES, batch["image"].shape[0])
        x0 = batch["image"][:n]
        m = self.segment_fn(params, x0, jax.random.fold_in(rng, 1))
        images["segmentation"] = _overlay01(x0, m)
        return images


def _overlay01(x0, masks):
    """Overlay of argmax masks on images in [-1, 1], as float [N, S, S, 3] in [0, 1]."""
    lab = np.asarray(masks).argmax(-1)
    return viz.overlay(np.asarray(x0), lab).astype(np.float32) / 255.0


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """Pads axis 0 of `a` to n rows with zeros."""
    out = np.zeros((n,) + a.shape[1:], a.dtype)
    out[:len(a)] = a
    return out


def _valid_images_and_masks(batches) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 images [N,S,S,3], int masks [N,S,S] or None) of the valid eval rows."""
    images, masks = [], []
    for b in batches:
        valid = np.asarray(b.get("valid", np.ones(len(b["image"]), bool)))
        images.append(viz.to_uint8(np.asarray(b["image"])[valid]))
        if "mask" in b:
            masks.append(np.asarray(b["mask"])[valid])
    images = np.concatenate(images)
    return images, (np.concatenate(masks) if masks else None)


def _valid_column(batches, key: str) -> np.ndarray | None:
    """Column `key` [N] of the valid eval rows, or None when the batches lack it."""
    if not batches or key not in batches[0]:
        return None
    return np.concatenate([np.asarray(b[key])[np.asarray(b.get("valid", np.ones(len(b[key]),
                                                                               bool)))]
                           for b in batches])


def write_segmentation_figure(path, images, targets, pred, masks) -> None:
    """One row per example (up to 16), titled columns image | truth | argmax (predicted
    overlay) | soft masks, tiles upscaled to >= 128 px (viz.titled_columns)."""
    n = min(NUM_FIGURE_EXAMPLES, len(images))
    palette = viz.default_palette(max(masks.shape[-1], int(targets.max()) + 1))
    cols = [images[:n], viz.colorize_mask(targets[:n], palette),
            viz.overlay(images[:n], pred[:n], palette=palette),
            viz.soft_mask_to_rgb(masks[:n], palette[:masks.shape[-1]])]
    viz.save_png(path, viz.titled_columns(cols, ["image", "truth", "argmax", "soft masks"]))


def write_generation_figures(out_dir, x0, masks, trajectory) -> None:
    """Sample grid; masks.png: one row per sample (up to 16), titled columns sample |
    argmax overlay | soft masks, upscaled (viz.titled_columns); per-channel masks of
    4 samples; refinement strip."""
    images = viz.to_uint8(x0)
    labels = masks.argmax(-1)
    viz.save_png(os.path.join(out_dir, "grid.png"), viz.make_grid(images))
    n = min(NUM_FIGURE_EXAMPLES, len(images))
    viz.save_png(os.path.join(out_dir, "masks.png"),
                 viz.titled_columns([images[:n], viz.overlay(images[:n], labels[:n]),
                                     viz.soft_mask_to_rgb(masks[:n])],
                                    ["sample", "argmax", "soft masks"]))
    channels = [np.concatenate([images[i:i + 1], viz.mask_channels(masks[i])])
                for i in range(min(4, len(images)))]
    viz.save_png(os.path.join(out_dir, "mask_channels.png"),
                 viz.make_grid(np.concatenate(channels), ncol=masks.shape[-1] + 1))
    if trajectory is not None:
        viz.save_png(os.path.join(out_dir, "refinement.png"), refinement_strip(trajectory))


def refinement_strip(trajectory, num_examples: int = 4) -> np.ndarray:
    """Fig. 2.10: per example, a row of x_t and a row of its mask along the reverse process."""
    x_t = np.asarray(trajectory.x_t)                  # [T', N, S, S, C]
    masks = np.asarray(trajectory.aux["masks"])        # [T', N, S, S, K]
    rows = []
    for i in range(min(num_examples, x_t.shape[1])):
        rows.append(viz.to_uint8(np.clip(x_t[:, i], -1, 1)))
        rows.append(viz.soft_mask_to_rgb(masks[:, i]))
    return viz.make_grid(np.concatenate(rows), ncol=x_t.shape[0])
