"""fdm.nn.mlp.TimeMLP: both time conditionings against a numpy forward pass."""
import jax
import numpy as np
import pytest

from fdm.nn.mlp import TimeMLP


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _sinusoid(t, dim):
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))
    args = np.asarray(t, np.float64)[:, None] * freqs[None]
    return np.concatenate([np.sin(args), np.cos(args)], -1)


def _numpy_mlp(p, x, t, depth, embed, conditioning):
    dense = lambda name, h: h @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(
        p[name]["bias"], np.float64)
    s = _sinusoid(t, embed)
    h = np.concatenate([x, s], -1) if conditioning == "input" else np.asarray(x, np.float64)
    e = _silu(dense("time", s)) if conditioning == "film" else None
    for i in range(depth):
        h = dense(f"dense_{i}", h)
        if conditioning == "film":
            film = dense(f"film_{i}", e)
            h = h * (1.0 + film[:, :h.shape[1]]) + film[:, h.shape[1]:]
        h = _silu(h)
    return dense("out", h)


def _randomised(params, key):
    """Every leaf redrawn (the film layers start at zero, which would hide them)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [0.3 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])


@pytest.mark.parametrize("conditioning", ["input", "film"])
def test_time_mlp_matches_a_numpy_forward_pass(conditioning):
    net = TimeMLP(out_dim=5, width=16, depth=3, time_embed_dim=8,
                  time_conditioning=conditioning)
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    t = np.array([0, 10, 500, 999], np.int32)
    params = _randomised(net.init(jax.random.PRNGKey(0), x, t)["params"], jax.random.PRNGKey(1))
    out = net.apply({"params": params}, x, t)
    np.testing.assert_allclose(out, _numpy_mlp(params, x, t, 3, 8, conditioning),
                               rtol=1e-4, atol=1e-5)


def test_film_starts_blind_to_time_and_learns_to_see_it():
    """Zero-initialised modulation: at initialisation the output ignores t, and the
    modulation's kernels get gradient."""
    net = TimeMLP(out_dim=3, width=16, depth=2, time_embed_dim=8, time_conditioning="film")
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    params = net.init(jax.random.PRNGKey(0), x, np.zeros(2, np.int32))["params"]
    out = lambda p, t: net.apply({"params": p}, x, np.full(2, t, np.int32))
    np.testing.assert_array_equal(out(params, 3), out(params, 900))
    grads = jax.grad(lambda p: (out(p, 3) ** 2).sum())(params)
    assert all(np.abs(grads[f"film_{i}"]["kernel"]).max() > 0 for i in range(2))
