"""Loss-aware timestep sampling (`fdm.diffusion.timesteps`) against slow references: a
per-t list history (Improved DDPM's LossSecondMomentResampler, written as loops), the
closed form of the importance-weighted mean, and the DDPM family's train_loss."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.diffusion import timesteps as ts
from fdm.models import get_family
from tests.test_ddpm_family import fixed_batch, tiny_config

T, H = 7, 3


def _reference_history(t, losses, valid):
    """{t: last H values of L²} and counts, appended one example at a time."""
    hist, count = collections.defaultdict(list), np.zeros(T, int)
    for ti, li, vi in zip(t, losses, valid):
        if vi:
            hist[ti] = (hist[ti] + [li * li])[-H:]
            count[ti] += 1
    return hist, count


def test_record_losses_keeps_the_last_h_squares_per_t_including_repeats():
    rng = np.random.default_rng(0)
    hist = ts.init_history(T, H)
    all_t, all_l, all_v = [], [], []
    for _ in range(6):  # batches with repeated t
        t = rng.integers(0, T, 8)
        losses = rng.uniform(0.1, 2.0, 8).astype(np.float32)
        valid = rng.uniform(size=8) > 0.2
        hist = ts.record_losses(hist, jnp.asarray(t), jnp.asarray(losses), jnp.asarray(valid))
        all_t += list(t); all_l += list(losses); all_v += list(valid)
    ref, count = _reference_history(all_t, all_l, all_v)
    np.testing.assert_array_equal(np.asarray(hist.count), count)
    for ti in range(T):
        if count[ti] >= H:  # full rows: the same multiset of the last H squares
            np.testing.assert_allclose(np.sort(np.asarray(hist.squares[ti])),
                                       np.sort(ref[ti]), rtol=1e-6)


def test_probs_are_uniform_until_every_t_is_warm_then_follow_the_rms_loss():
    hist = ts.init_history(T, H)
    t = jnp.asarray(np.repeat(np.arange(T - 1), H))  # the last t never recorded
    losses = jnp.asarray(np.repeat(np.arange(1.0, T), H), jnp.float32)
    hist = ts.record_losses(hist, t, losses)
    np.testing.assert_allclose(ts.importance_probs(hist), np.full(T, 1 / T), rtol=1e-6)
    hist = ts.record_losses(hist, jnp.full((H,), T - 1), jnp.full((H,), 10.0))
    rms = np.array([1, 2, 3, 4, 5, 6, 10.0])
    expected = (1 - ts.UNIFORM_FLOOR) * rms / rms.sum() + ts.UNIFORM_FLOOR / T
    np.testing.assert_allclose(ts.importance_probs(hist), expected, rtol=1e-6)


def test_importance_weighted_mean_is_the_uniform_mean():
    probs = jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(T)), jnp.float32)
    f = jnp.linspace(0.5, 3.0, T)
    w = ts.importance_weights(probs, jnp.arange(T))
    np.testing.assert_allclose(jnp.sum(probs * w * f), jnp.mean(f), rtol=1e-5)  # exact
    t = ts.sample_timesteps(jax.random.PRNGKey(0), probs, 200_000)
    freq = np.bincount(np.asarray(t), minlength=T) / t.shape[0]
    np.testing.assert_allclose(freq, probs, atol=4e-3)
    mc = float(jnp.mean(ts.importance_weights(probs, t) * f[t]))
    assert abs(mc - float(jnp.mean(f))) < 0.02


@pytest.fixture(scope="module")
def ddpm_family():
    family = get_family(tiny_config(diffusion=dict(loss="vlb", t_sampling="loss_aware",
                                                   t_history=2)))
    params = jax.jit(family.init_params)(jax.random.key(0, impl="rbg"), fixed_batch())
    return family, params


def test_ddpm_train_loss_records_history_and_weights_the_mean(ddpm_family):
    family, params = ddpm_family
    stats = family.init_stats()
    assert stats.squares.shape == (20, 2)
    batch = {**fixed_batch(), "valid": jnp.asarray([1, 1, 1, 0], jnp.int32)}
    step = jax.jit(family.train_loss)
    warm = ts.LossHistory(squares=jnp.linspace(0.1, 4.0, 40).reshape(20, 2),
                          count=jnp.full((20,), 2, jnp.int32))
    out, new = step(params, batch, jax.random.PRNGKey(3), 0, warm)
    per_example = family.per_example_loss(params, batch, jax.random.PRNGKey(3), True,
                                          ts.importance_probs(warm))
    w = ts.importance_weights(ts.importance_probs(warm), per_example.t)
    expected = jnp.sum((per_example.loss * w)[:3]) / 3
    np.testing.assert_allclose(out.loss, expected, rtol=1e-4)  # jitted vs eager U-Net: float32 fusion order
    assert int(jnp.sum(new.count - warm.count)) == 3  # the padded row is not recorded
    _, fresh = step(params, batch, jax.random.PRNGKey(3), 0, stats)
    assert int(jnp.sum(fresh.count)) == 3


def test_uniform_sampling_has_no_stats_and_train_loss_is_loss_fn():
    family = get_family(tiny_config())
    assert family.init_stats() == {}
    params = jax.jit(family.init_params)(jax.random.key(0, impl="rbg"), fixed_batch())
    out, stats = family.train_loss(params, fixed_batch(), jax.random.PRNGKey(0), 0, {})
    ref = family.loss_fn(params, fixed_batch(), jax.random.PRNGKey(0), train=True)
    assert stats == {} and float(out.loss) == float(ref.loss)
