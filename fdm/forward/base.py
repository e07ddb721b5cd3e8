"""The forward-model interface and the observation tuples of diffusion with forward models
(seed 003, Sec. 2.2).

Notation:
  S       the unobserved signal, [B, *signal_shape] (a latent w, an image, a scene).
  phi     the forward model's parameters of one observation (patch rows, crop offset,
          camera), int or float arrays [B, ...].
  O       an observation, O = forward(S, phi), [B, *obs_shape].
  canvas  an observation pasted into the full view it was taken from, with a mask
          channel: the denoiser's input form of (O, phi) (brief D4).

A `ForwardModel` maps S to O for a batch and pastes O back into its canvas:

    apply(S [B, *signal_shape], phi [B, ...]) -> O [B, *obs_shape]     (forward(S, phi))
    paste(O [B, *obs_shape], phi [B, ...])   -> (canvas [B, *view_shape],
                                                 mask [B, *view_shape[:-1], 1] or [B, m])

`apply` is differentiable in S (the losses Eq. 8-9 train the denoiser through it).
Implementations are `flax.struct.dataclass`es, so that an operator (its matrix, its
sizes) travels through `jax.jit` as a pytree.

An `ObservationTuple` holds the three views of one signal the model is trained on:
the context (O^ctxt, phi^ctxt), the target (O^trgt, phi^trgt), diffused (Eq. 1), and
the novel view (O^novel, phi^novel) of Eq. 9. In a batch dict they are the keys of
`VIEW_KEYS` ('ctxt', 'ctxt_phi', 'trgt', 'trgt_phi', 'novel', 'novel_phi').
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

import flax.struct
import jax

from fdm.errors import UserError

VIEWS = ("ctxt", "trgt", "novel")
VIEW_KEYS = tuple(k for v in VIEWS for k in (v, f"{v}_phi"))


class ForwardModel(Protocol):
    """forward(S, phi) -> O for a batch, and the canvas form of O (module doc)."""

    def apply(self, signal: jax.Array, phi: Any) -> jax.Array:
        """O [B, *obs_shape] = forward(S [B, *signal_shape], phi [B, ...])."""

    def paste(self, obs: jax.Array, phi: Any) -> tuple[jax.Array, jax.Array]:
        """(canvas, mask) of O [B, *obs_shape] taken with phi [B, ...]."""


@flax.struct.dataclass
class View:
    """One observation: obs O [B, *obs_shape] and its forward-model parameters phi [B, ...]."""
    obs: jax.Array
    phi: Any


@flax.struct.dataclass
class ObservationTuple:
    """The views of one signal per example: ctxt (given), trgt (diffused, Eq. 8), novel
    (Eq. 9); each a `View` with batch axis B."""
    ctxt: View
    trgt: View
    novel: View

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any]) -> "ObservationTuple":
        """The tuple of a batch dict with the keys `VIEW_KEYS` (UserError naming a missing one)."""
        missing = [k for k in VIEW_KEYS if k not in batch]
        if missing:
            raise UserError(f"the batch has no {missing}; a forward-model dataset yields "
                            f"{list(VIEW_KEYS)} (fdm.data.inverse_toys)")
        return cls(**{v: View(batch[v], batch[f"{v}_phi"]) for v in VIEWS})


def take_rows(tree: Any, rows) -> Any:
    """Every leaf of a pytree (a View, an ObservationTuple) indexed by `rows` on axis 0."""
    return jax.tree_util.tree_map(lambda a: a[rows], tree)
