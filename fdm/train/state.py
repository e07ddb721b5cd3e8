"""The train state pytree and the pure functions that create and advance it.

`TrainState.step` counts optimizer updates done so far: a checkpoint "at step s"
holds the state after s updates, and the update that turns step s into s+1
uses data batch number s and the key `fold_in(rng, s)`.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

Params = Any


@flax.struct.dataclass
class TrainState:
    """Everything the train loop carries between steps (all leaves are arrays).

    step:       int32 []   number of updates applied.
    params:     pytree     current parameters.
    ema_params: pytree     exponential moving average of `params` (used for evaluation).
    opt_state:  pytree     optimizer state of `tx`.
    rng:        uint32 [2] base key; per-step keys are `fold_in(rng, step)`.
    stats:      pytree     the family's running statistics (`ModelFamily.init_stats`),
                           updated by `ModelFamily.train_loss`, not by gradients; {} for
                           most families.
    """
    step: jnp.ndarray
    params: Params
    ema_params: Params
    opt_state: optax.OptState
    rng: jnp.ndarray
    stats: Any

    def step_key(self) -> jax.Array:
        """The key for the update at the current step: fold_in(rng, step)."""
        return jax.random.fold_in(self.rng, self.step)


def create_state(init_params: Callable[[jax.Array], Params],
                 tx: optax.GradientTransformation, seed: int, stats: Any = None) -> TrainState:
    """A fresh state from `train.seed`: params from init_params(key), EMA = params, the
    family's initial `stats` ({} when None)."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(init_key)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.array, params),
        opt_state=tx.init(params),
        rng=train_key,
        stats={} if stats is None else stats)


def ema_update(ema: Params, params: Params, decay: float) -> Params:
    """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
