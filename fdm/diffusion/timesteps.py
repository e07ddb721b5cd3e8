"""Timestep distributions for the diffusion loss: uniform, or importance sampling from the
history of the loss itself.

The bound L_vlb = Σ_t L_t (`fdm.diffusion.likelihood`) trained with t ~ U{0..T-1} has
gradients dominated by a few small-t terms whose weights are orders of magnitude above
the rest (Nichol & Dhariwal 2021, "Improved DDPM", §3.3 and Fig. 2), so the mid-t terms
learn slowly. Their remedy, the *loss-aware sampler*, draws

    t ~ p_t ∝ sqrt(E[L_t²]),       loss = L_t / (T p_t)                          (IDDPM Eq. 18)

which keeps the estimate of (1/T) Σ_t L_t unbiased while lowering its variance. E[L_t²]
is the mean of the last H recorded values of L_t² for each t (H = 10 there); until every
t has H values, sampling is uniform; p is mixed with a uniform floor of weight 1e-3 so no
t starves.

Notation: T timesteps, H history length, B batch size.
"""
import flax
import jax
import jax.numpy as jnp

UNIFORM_FLOOR = 1e-3  # weight of the uniform distribution mixed into p (IDDPM's code)


@flax.struct.dataclass
class LossHistory:
    """The last H values of L_t² for every t (`fdm.models.base.ModelFamily.init_stats`).

    squares: float32 [T, H]  recorded L_t², slot count % H written next (a ring buffer;
                             the order inside a row does not matter, only its mean).
    count:   int32 [T]       values recorded for each t so far.
    """
    squares: jnp.ndarray
    count: jnp.ndarray


def init_history(num_timesteps: int, history: int) -> LossHistory:
    """An empty history: zeros [T, H], counts 0."""
    return LossHistory(squares=jnp.zeros((num_timesteps, history), jnp.float32),
                       count=jnp.zeros((num_timesteps,), jnp.int32))


def importance_probs(hist: LossHistory, uniform_floor: float = UNIFORM_FLOOR) -> jnp.ndarray:
    """p [T]: uniform until every t has H recorded losses, then
    (1 - floor) · sqrt(mean L_t²) / Σ_s sqrt(mean L_s²) + floor / T (IDDPM Eq. 18)."""
    num_t, h = hist.squares.shape
    rms = jnp.sqrt(jnp.mean(hist.squares, axis=1))
    p = rms / jnp.maximum(jnp.sum(rms), 1e-30)
    p = (1.0 - uniform_floor) * p + uniform_floor / num_t
    warm = jnp.all(hist.count >= h)
    return jnp.where(warm, p, jnp.full((num_t,), 1.0 / num_t))


def sample_timesteps(key: jax.Array, probs: jnp.ndarray, batch: int) -> jnp.ndarray:
    """t [B] int32 drawn i.i.d. from probs [T]."""
    return jax.random.categorical(key, jnp.log(probs), shape=(batch,)).astype(jnp.int32)


def importance_weights(probs: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
    """1 / (T p_t) [B]: with t ~ p, E[w_t L_t] = (1/T) Σ_t L_t (the uniform mean)."""
    return 1.0 / (probs.shape[0] * probs[t])


def record_losses(hist: LossHistory, t: jnp.ndarray, losses: jnp.ndarray,
                  valid: jnp.ndarray | None = None) -> LossHistory:
    """The history with L² of each valid example written, in batch order, to the next slot
    of its t (repeated t in one batch each get their own slot).

    t: int32 [B]; losses: [B] (not differentiated); valid: [B] bool/0-1 or None (all).
    """
    losses = jax.lax.stop_gradient(losses).astype(jnp.float32)
    valid = jnp.ones(t.shape, bool) if valid is None else valid.astype(bool)
    h = hist.squares.shape[1]

    def write(carry, example):
        squares, count = carry
        ti, li, vi = example
        slot = count[ti] % h
        squares = squares.at[ti, slot].set(jnp.where(vi, li * li, squares[ti, slot]))
        count = count.at[ti].add(vi.astype(jnp.int32))
        return (squares, count), None

    (squares, count), _ = jax.lax.scan(write, (hist.squares, hist.count), (t, losses, valid))
    return LossHistory(squares=squares, count=count)
