"""Search aids for FDM's mask generator: options that change how the masks leave their
near-uniform start, never the objective they converge under. All off in the paper
configs (seed 000 trains with ‖ε − ε̂‖² alone); the README's shapes study says which
the embedded demo uses and why.

Notation: logits [B, S, S, K] the mask generator's output, m = softmax(logits);
(x, y) pixel-centre coordinates in [-1, 1] (x columns, y rows); step: updates done.

  * Centred-blob warm start (`train.mask_prior_steps` = N > 0): for the first N
    updates the loss gains w · CE(π, m), the per-pixel cross-entropy of the masks
    to a data-independent prior π, then the FDM loss alone takes over. π puts a
    centred isotropic Gaussian b(x, y) = exp(−(x² + y²) / (2σ²)) on channel 1 (the
    figure) and 1 − b on the ground (σ = `train.mask_prior_sigma`, a fraction of
    the half-width; w = `train.mask_prior_weight`); with K > 2 the ground is shared
    equally by channel 0 and channels 2..K−1, so the figure sits in one channel
    (a figure shared by two channels is a saddle: the K = 3 run of session 8
    ended with both near 1/3 on the objects and no figure/ground split), and the
    FDM loss is free to split the ground. It plays the role of IEM's centred-square start:
    where objects sit near the centre, the masks start in object/background
    form with a consistent channel for the object, and the FDM loss moves the
    blob onto the objects (object masks, once reached, are a stable point of it).
  * Router z-loss (`train.mask_z_loss` = w > 0): w · mean (logsumexp_k logits)²
    (as in mixture-of-experts routers) keeps the logits small so the softmax
    does not saturate early; an alternative to holding the mask generator.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fdm import config_rules as rules

# Valid values of the train.mask_* keys (configs/fdm_common.py:fdm_config; fdm.config_rules).
SEARCH_RULES = {
    "train.mask_prior_steps": rules.int_at_least(0),    # 0: no warm start
    "train.mask_prior_sigma": rules.above(0.0),
    "train.mask_prior_weight": rules.above(0.0),
    "train.mask_z_loss": rules.at_least(0.0),           # 0: no z-loss
}


@flax.struct.dataclass
class SearchSettings:
    """The search aids of a run (config `train.*`, module doc); all 0 = the paper."""
    prior_steps: int = 0
    prior_sigma: float = 0.35
    prior_weight: float = 1.0
    z_loss: float = 0.0

    @property
    def active(self) -> bool:
        """Whether the loss needs the mask logits."""
        return self.prior_steps > 0 or self.z_loss > 0


def search_settings(train_cfg) -> SearchSettings:
    """SearchSettings from `config.train` (values checked by SEARCH_RULES)."""
    return SearchSettings(prior_steps=int(train_cfg.mask_prior_steps),
                          prior_sigma=float(train_cfg.mask_prior_sigma),
                          prior_weight=float(train_cfg.mask_prior_weight),
                          z_loss=float(train_cfg.mask_z_loss))


def centre_blob(size: int, sigma: float) -> np.ndarray:
    """b(x, y) = exp(−(x² + y²) / (2σ²)) on the pixel centres: float32 [S, S] in (0, 1]."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    return np.exp(-r2 / (2.0 * sigma ** 2)).astype(np.float32)


def centre_blob_prior(size: int, num_masks: int, sigma: float) -> np.ndarray:
    """π [S, S, K]: channel 1 = b (the figure); channel 0 and channels 2..K−1
    share the ground 1 − b equally (module doc)."""
    b = centre_blob(size, sigma)[..., None]
    ground = (1.0 - b) / (num_masks - 1)
    rest = np.broadcast_to(ground, b.shape[:2] + (num_masks - 2,))
    return np.concatenate([ground, b, rest], axis=-1).astype(np.float32)


def prior_hard_labels(size: int, sigma: float) -> np.ndarray:
    """The prior's own segmentation, argmax over π's background/object split:
    int32 [S, S], 1 where b > 1/2 (object), else 0."""
    return (centre_blob(size, sigma) > 0.5).astype(np.int32)


def mask_prior_loss(logits: jax.Array, prior: jax.Array) -> jax.Array:
    """Per-example cross-entropy −Σ_k π_k log m_k averaged over pixels.

    logits: [B, S, S, K]; prior: [S, S, K] -> [B].
    """
    log_m = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.sum(prior * log_m, axis=-1), axis=(1, 2))


def mask_z_loss(logits: jax.Array) -> jax.Array:
    """Per-example mean over pixels of (logsumexp_k logits)²: [B, S, S, K] -> [B]."""
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) ** 2, axis=(1, 2))


def prior_active(step: jax.Array | int, num_steps: int) -> jax.Array:
    """1.0 while step < num_steps (the warm start), else 0.0: float32 []."""
    return (jnp.asarray(step) < num_steps).astype(jnp.float32)
