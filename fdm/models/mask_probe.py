"""The given-mask probe: how much does the FDM objective reward a segmentation?

FDM learns masks only through the denoising loss (seed 000 Eq. 2.8), so whether
segmentation can emerge depends on how much lower that loss is with masks that
follow the regions than with masks that do not. The probe measures it: the
factorized U-Net is trained with its decoder fed masks built from the data's
ground-truth regions instead of the mask generator's,

  m = α · onehot(shift(labels)) + (1 − α) / K        [B, S, S, K]

where labels [B, S, S] int in [0, K) are the regions, shift(·) rolls them by
`model.given_mask_shift` pixels down and right (cyclically; a deliberately
misplaced segmentation) and α = `model.given_mask_alpha` in [0, 1] blends with
uniform masks (α = 1: exact hard masks; α = 0: uniform masks, i.e. a U-Net
whose decoder runs K times on the same input). Everything else is the FDM
training of `FDMFamily`. Compare `eval_loss` of runs that differ only in (α,
shift, decoding): the evaluation uses the same images, timesteps and noise in
every run.

The control: masks made from the clean image carry information that x_t does
not (at mid and high t, where the object's outline is buried in noise), so part
of the loss gain of true masks over uniform ones is side information, not the
factorisation's reward. `model.decoding = "concat"` feeds the same masks to one
ordinary decoder as extra channels (Eq. 2.5: same information, no per-region
branches); the factorisation's own reward is the gain of "shared" over "concat"
with the same masks, read per band of t (`eval_loss_q0`..`eval_loss_q3`, the
quarters of [0, T)).

Config: `model.family = "fdm_given_masks"`, model.given_mask_alpha (default 1),
model.given_mask_shift (default 0), model.decoding ("shared", "unshared",
"mask_hmid" or "concat"), data with masks (e.g. shapes); see
configs/shapes_mask_probe.py. The probe cannot sample or segment (there are no
masks without data); `evaluate` writes eval_loss (overall and per t quarter) /
train_loss only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fdm import config_rules as rules
from fdm.errors import UserError
from fdm.models.fdm import FDMFamily


def given_masks(labels: jax.Array, num_masks: int, alpha: float = 1.0,
                shift: int = 0) -> jax.Array:
    """α · onehot(labels rolled by `shift` px down and right) + (1 − α)/K.

    labels: int [B, S, S] in [0, num_masks) -> float32 [B, S, S, num_masks], summing to one.
    """
    rolled = jnp.roll(labels, (shift, shift), axis=(1, 2))
    return alpha * jax.nn.one_hot(rolled, num_masks) + (1.0 - alpha) / num_masks


class GivenMaskFDMFamily(FDMFamily):
    """FDM whose decoder is fed masks derived from the ground truth (module doc)."""
    loss_batch_keys = ("image", "label", "mask")
    config_defaults = "configs.fdm_common:given_mask_defaults"
    config_rules = {**FDMFamily.config_rules,
                    "model.given_mask_alpha": rules.in_range(0.0, 1.0)}   # 1 exact, 0 uniform
    can_sample = False

    def __init__(self, config):
        super().__init__(config)
        m = config.model
        self.alpha = float(m.given_mask_alpha)
        self.shift = int(m.given_mask_shift)
        regions = int(config.data.num_regions)
        if regions > self.num_masks:
            raise UserError(f"data.num_regions={regions} exceeds model.num_masks="
                            f"{self.num_masks}; set model.num_masks >= data.num_regions")
        if m.hierarchical:
            raise UserError("model.family='fdm_given_masks' needs a one-level FDM; "
                            "set model.hierarchical=False")
        if self.search.active:
            raise UserError("model.family='fdm_given_masks' has no mask logits to penalise; "
                            "set train.mask_prior_steps=0 and train.mask_z_loss=0")

    def denoiser_inputs(self, batch) -> dict:
        """{'masks': [B, S, S, K]} from batch['mask'] (module doc)."""
        if "mask" not in batch:
            raise UserError(f"model.family='fdm_given_masks' needs ground-truth masks, which "
                            f"data.dataset={self.config.data.dataset!r} does not have; "
                            "use a dataset with masks (e.g. shapes)")
        return {"masks": given_masks(batch["mask"], self.num_masks, self.alpha, self.shift)}

    def evaluate(self, params, batches, workdir, rng):
        """eval_loss / train_loss with the given masks (and the probe's settings)."""
        metrics, _ = self._loss_metrics(params, list(batches), rng)
        metrics.update(given_mask_alpha=self.alpha, given_mask_shift=self.shift)
        return metrics

    def sample(self, params, workdir, rng):
        raise UserError("the given-mask probe decodes with masks taken from the data and "
                        "cannot sample; train model.family='fdm' to generate")

    def segment(self, params, input_glob, workdir, rng):
        raise UserError("the given-mask probe has no trained mask generator and cannot "
                        "segment; train model.family='fdm' to segment")

    def summary_images(self, params, batch, rng):
        return {}
