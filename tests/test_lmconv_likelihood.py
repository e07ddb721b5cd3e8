"""The per-pixel likelihoods (fdm/autoregressive/logistic_mixture.py) against a float64
numpy transcription of the PixelCNN++ formula, normalisation over every bin (1-D, 8 bits;
RGB coupling, 2 bits), a chi-square test of the sampler; the ensemble and completion
helpers and sampling in order (fdm/autoregressive/inference.py)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from fdm.autoregressive import inference, logistic_mixture as lm, orders

log_prob = jax.jit(lm.log_prob, static_argnums=2)       # one compile instead of op-by-op
sample = jax.jit(lm.sample, static_argnums=2)


def random_params(shape, channels, num_mix, seed, log_scale_range=(-2.5, 0.0)):
    """MixtureParams of random network outputs [*shape, P]."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal(shape + (lm.num_params(channels, num_mix),)).astype(np.float32)
    params = lm.split_params(jnp.asarray(out), channels, num_mix)
    lo, hi = log_scale_range
    log_scales = rng.uniform(lo, hi, params.log_scales.shape).astype(np.float32)
    return params.replace(log_scales=jnp.asarray(log_scales),
                          means=params.means * 0.7)


def reference_log_prob(params, x, num_bins):
    """float64, pixel by pixel: log Σ_m π_m Π_c P_c with the coupled means and the
    rare-bin rule of the module doc."""
    p = {k: np.asarray(getattr(params, k), np.float64) for k in
         ("logits", "means", "log_scales", "coeffs")}
    x = np.asarray(x, np.float64)
    b, h, w, channels = x.shape
    num_mix = p["logits"].shape[-1]
    half = 1.0 / (num_bins - 1)
    out = np.zeros((b, h, w))
    for idx in np.ndindex(b, h, w):
        log_weights = p["logits"][idx] - special.logsumexp(p["logits"][idx])
        terms = []
        for m in range(num_mix):
            total, pair = log_weights[m], 0
            for c in range(channels):
                mean = p["means"][idx][c, m]
                for j in range(c):
                    mean += p["coeffs"][idx][pair, m] * x[idx][j]
                    pair += 1
                s = math.exp(p["log_scales"][idx][c, m])
                v = x[idx][c]
                k = round((v + 1) / 2 * (num_bins - 1))
                upper = 1.0 if k == num_bins - 1 else special.expit((v + half - mean) / s)
                lower = 0.0 if k == 0 else special.expit((v - half - mean) / s)
                mass = upper - lower
                if 0 < k < num_bins - 1 and mass <= 1e-5:
                    z = (v - mean) / s
                    mass = math.exp(z - 2 * np.logaddexp(0, z)) / s * 2 * half
                total += math.log(mass)
            terms.append(total)
        out[idx] = special.logsumexp(terms)
    return out


def random_levels(shape, num_bins, seed):
    k = np.random.default_rng(seed).integers(0, num_bins, shape)
    k[..., 0, 0, :] = 0                                    # edge bins included
    k[..., 0, 1, :] = num_bins - 1
    return (2.0 * k / (num_bins - 1) - 1.0).astype(np.float32)


@pytest.mark.parametrize("channels,num_bins", [(3, 256), (3, 4), (1, 256), (1, 17), (2, 5)])
def test_mixture_log_prob_matches_float64_numpy(channels, num_bins):
    params = random_params((2, 3, 4), channels, 5, seed=channels * num_bins)
    x = random_levels((2, 3, 4, channels), num_bins, seed=1)
    ours = log_prob(params, jnp.asarray(x), num_bins)
    np.testing.assert_allclose(ours, reference_log_prob(params, x, num_bins), rtol=1e-4,
                               atol=2e-4)


def test_rare_bins_use_the_density_times_the_bin_width():
    params = random_params((1, 1, 1), 1, 1, seed=3, log_scale_range=(-5.0, -5.0))
    params = params.replace(means=jnp.full((1, 1, 1, 1, 1), -0.9))
    x = jnp.full((1, 1, 1, 1), 0.6)                     # far in the tail: mass < 1e-5
    np.testing.assert_allclose(log_prob(params, x, 17),
                               reference_log_prob(params, np.asarray(x), 17), rtol=1e-5)
    assert float(log_prob(params, x, 17)[0, 0, 0]) < math.log(1e-5)


def _all_values(num_bins, channels):
    """Every combination of bin centres [num_bins^C, 1, 1, C]."""
    levels = 2.0 * np.arange(num_bins) / (num_bins - 1) - 1.0
    grid = np.stack(np.meshgrid(*[levels] * channels, indexing="ij"), -1)
    return grid.reshape(-1, 1, 1, channels).astype(np.float32)


@pytest.mark.parametrize("channels,num_bins", [(1, 256), (3, 4)])
def test_mixture_sums_to_one_over_all_bins(channels, num_bins):
    values = _all_values(num_bins, channels)
    params = random_params((1, 1, 1), channels, 4, seed=7, log_scale_range=(-1.5, 0.5))
    tiled = jax.tree_util.tree_map(lambda a: jnp.repeat(a, len(values), axis=0), params)
    total = special.logsumexp(np.asarray(log_prob(tiled, jnp.asarray(values), num_bins),
                                         np.float64))
    assert abs(total) < 1e-4


def test_categorical_sums_to_one_and_picks_its_bin():
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((1, 1, 1, 3)), jnp.float32)
    values = _all_values(3, 1)
    lp = lm.categorical_log_prob(jnp.repeat(logits, 3, axis=0), jnp.asarray(values), 3)
    np.testing.assert_allclose(lp[:, 0, 0], jax.nn.log_softmax(logits[0, 0, 0]), rtol=1e-6)


def test_samples_follow_the_mixture_chi_square():
    num_bins, n = 4, 20_000
    params = random_params((1, 1, 1), 3, 3, seed=11, log_scale_range=(-1.0, 0.0))
    values = _all_values(num_bins, 3)
    tiled = jax.tree_util.tree_map(lambda a: jnp.repeat(a, len(values), axis=0), params)
    probs = np.exp(np.asarray(log_prob(tiled, jnp.asarray(values), num_bins),
                              np.float64)[:, 0, 0])
    many = jax.tree_util.tree_map(lambda a: jnp.repeat(a, n, axis=0), params)
    x = np.asarray(sample(many, jax.random.PRNGKey(0), num_bins))[:, 0, 0]   # [n, 3]
    k = np.round((x + 1) / 2 * (num_bins - 1)).astype(int)
    assert np.allclose(x, 2 * k / (num_bins - 1) - 1)                     # bin centres
    counts = np.bincount((k[:, 0] * num_bins + k[:, 1]) * num_bins + k[:, 2],
                         minlength=num_bins ** 3)
    assert stats.chisquare(counts, probs / probs.sum() * n).pvalue > 1e-3


def test_categorical_samples_are_bin_centres():
    logits = jnp.log(jnp.asarray([[[[0.2, 0.8]]]]))
    x = lm.categorical_sample(jnp.repeat(logits, 4000, 0), jax.random.PRNGKey(1), 2)
    assert set(np.unique(np.asarray(x))) <= {-1.0, 1.0}
    assert abs(float((x == 1.0).mean()) - 0.8) < 0.03


def test_output_layout():
    assert lm.num_params(3, 10) == 100 and lm.num_params(1, 10) == 30
    out = jnp.arange(2 * 2 * 2 * 20, dtype=jnp.float32).reshape(2, 2, 2, 20)
    p = lm.split_params(out, 3, 2)
    assert p.logits.shape == (2, 2, 2, 2) and p.means.shape == (2, 2, 2, 3, 2)
    assert p.coeffs.shape == (2, 2, 2, 3, 2)
    np.testing.assert_array_equal(p.means[0, 0, 0], [[2, 3], [4, 5], [6, 7]])
    assert float(jnp.min(lm.split_params(-100.0 * jnp.ones((1, 1, 1, 20)), 3, 2)
                         .log_scales)) == lm.LOG_SCALE_MIN


def test_ensemble_is_log_mean_exp_within_its_bounds():
    log_p = np.random.default_rng(0).normal(-50, 5, (100, 8))
    ens = np.asarray(inference.ensemble_log_prob(jnp.asarray(log_p)))
    np.testing.assert_allclose(ens, special.logsumexp(log_p, axis=1) - math.log(8), rtol=1e-5)
    nll, nll_ens = -log_p, -ens
    assert np.all(nll.min(1) - 1e-3 <= nll_ens)
    assert np.all(nll_ens <= np.minimum(nll.mean(1), nll.min(1) + math.log(8)) + 1e-3)


def test_region_log_prob_sums_the_region():
    lp = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4, 4)), jnp.float32)
    top = orders.half_regions(4, 4)["top"]
    np.testing.assert_allclose(inference.region_log_prob(lp, top), lp[:, :2].sum((1, 2)),
                               rtol=1e-6)


def test_sampling_in_order_writes_pixels_in_the_order():
    h, w = 4, 5
    order = orders.variant("hilbert", h, w, 3)

    def draw(x, key):        # every pixel proposes 1 + the number of pixels written so far
        return jnp.full_like(x, 1.0 + jnp.sum(x != 0) / x.shape[0])

    x = inference.sample_in_order(draw, jnp.zeros((2, h, w, 1)), jnp.asarray(order), 0,
                                  h * w, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(x[0, ..., 0], orders.rank_grid(order, h, w) + 1)
    part = inference.sample_in_order(draw, jnp.zeros((1, h, w, 1)), jnp.asarray(order), 3, 7,
                                     jax.random.PRNGKey(0))
    written = np.zeros(h * w, bool)
    written[order[3:7]] = True
    np.testing.assert_array_equal(np.asarray(part[0, ..., 0]).reshape(-1) != 0, written)
