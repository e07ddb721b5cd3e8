"""The DDPM variational bound (fdm.diffusion.likelihood, .reverse) against independent
references: torch's Gaussian KL, scipy's normal CDF, and the closed forms of seed 004's
brief (part B), computed in float64.

Known answers: for x_0 ~ N(0, s^2) every term of the bound is a quadratic form in
(x_0, eps), so its expectation is exactly the mean over the four points
(x_0, eps) = (+-s, +-1) (equal second moments, zero first and cross moments): the
"cubature" rows below give the exact bound, with no Monte Carlo error.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fdm.diffusion import (BoundTerms, DiffusionSchedule, ancestral_sample, ancestral_step,
                           bound_metrics, bpd_loop, decoder_nll, diffusion_loss,
                           discretized_gaussian_log_likelihood, eps_loss, make_betas, normal_kl,
                           predict_x0_from_eps, prior_bpd, q_sample, rate_distortion_table,
                           vb_term_bpd, with_x0_hat)
from fdm.diffusion.likelihood import LN2, rate_distortion_curve
from fdm.diffusion.reverse import p_mean_variance, reverse_log_variance
from fdm.errors import UserError

T = 1000


def schedule64() -> DiffusionSchedule:
    """The paper's schedule (linear 1e-4..0.02, T = 1000) in float64 (inside enable_x64)."""
    return DiffusionSchedule.from_betas(make_betas("linear", T), dtype=jnp.float64)


def gaussian_moments(s: float):
    """Float64 numpy closed forms for x_0 ~ N(0, s^2), index t in [0, T):
    abar, v_t = Var(x_t), the exact reverse variance Var(x_{t-1} | x_t) and the mutual
    information I(x_0; x_t) in bits per dimension."""
    betas = make_betas("linear", T)
    alphas, abar = 1.0 - betas, np.cumprod(1.0 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    v, v_prev = abar * s * s + 1 - abar, abar_prev * s * s + 1 - abar_prev
    exact_var = v_prev - alphas * v_prev ** 2 / v
    info = 0.5 * np.log2(1.0 + abar / (1.0 - abar) * s * s)
    return abar, v, exact_var, info


def cubature_terms(s: float, variance: str, log_var=None):
    """(terms [T] bits/dim, prior bits/dim, mse [T]) of the exact-mean Gaussian reverse
    process: row t holds the four cubature points at timestep t (module doc)."""
    sch = schedule64()
    abar, v, _, _ = gaussian_moments(s)
    x0 = jnp.asarray(np.tile([s, s, -s, -s], (T, 1)))
    eps = jnp.asarray(np.tile([1.0, -1.0, 1.0, -1.0], (T, 1)))
    t = jnp.arange(T)
    x_t = q_sample(sch, x0, t, eps)
    x0_hat = jnp.asarray(np.sqrt(abar) * s * s / v)[:, None] * x_t     # E[x_0 | x_t]
    out = x0_hat if log_var is None else jnp.concatenate(
        [x0_hat, jnp.broadcast_to(jnp.asarray(log_var)[:, None], x0.shape)], axis=-1)
    terms, pred = vb_term_bpd(sch, out, x0, x_t, t, prediction="x0", variance=variance,
                              clip_x0=False, num_bins=None)
    prior = prior_bpd(sch, jnp.asarray([[s, -s]]))[0]
    return np.asarray(terms), float(prior), np.asarray(jnp.mean((pred - x0) ** 2, axis=1))


def exact_bound_nats(s: float) -> float:
    """h(x_0) + KL(q(x_T) || N(0, 1)) per dimension: the bound of the exact reverse process."""
    _, v, _, _ = gaussian_moments(s)
    return 0.5 * math.log(2 * math.pi * math.e * s * s) + 0.5 * (v[-1] - 1 - math.log(v[-1]))


# ----------------------------------------------------------------------------- pieces


def test_normal_kl_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(2, 50))
    lv1, lv2 = rng.uniform(-6, 2, size=(2, 50))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(m1), torch.tensor(np.exp(0.5 * lv1))),
        torch.distributions.Normal(torch.tensor(m2), torch.tensor(np.exp(0.5 * lv2)))).numpy()
    with jax.enable_x64(True):
        ours = np.asarray(normal_kl(jnp.asarray(m1), jnp.asarray(lv1), jnp.asarray(m2),
                                    jnp.asarray(lv2)))
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mean,scale", [(0.0, 0.01), (0.37, 0.2), (-0.99, 0.004), (2.0, 0.5),
                                        (0.5, 0.05)])
def test_discretized_decoder_is_the_normal_mass_of_each_bin(mean, scale):
    """Eq. 3.13 vs scipy.stats.norm: every bin's mass, edges to +-inf, sum 1 over 256 bins."""
    x = np.arange(256) / 127.5 - 1.0
    lo, hi = x - 1 / 255, x + 1 / 255
    lo[0], hi[-1] = -np.inf, np.inf
    ref = np.where(hi <= mean,                      # each tail from its own side: no cancellation
                   stats.norm.cdf(hi, mean, scale) - stats.norm.cdf(lo, mean, scale),
                   stats.norm.sf(lo, mean, scale) - stats.norm.sf(hi, mean, scale))
    with jax.enable_x64(True):
        logp = np.asarray(discretized_gaussian_log_likelihood(
            jnp.asarray(x), mean, jnp.log(scale)))
        tanh = np.asarray(discretized_gaussian_log_likelihood(
            jnp.asarray(x), mean, jnp.log(scale), cdf="tanh"))
    assert np.all(np.isfinite(logp))
    np.testing.assert_allclose(np.exp(logp), ref, rtol=1e-7, atol=1e-300)  # 1e-100 tails
    sig = ref > 1e-30
    np.testing.assert_allclose(logp[sig], np.log(ref[sig]), rtol=1e-9, atol=1e-9)
    assert abs(np.exp(logp).sum() - 1.0) < 1e-12
    assert np.abs(np.exp(tanh) - ref).max() < 2e-3            # Ho et al.'s approximation


def test_decoder_far_tails_stay_finite_in_float32():
    x = jnp.asarray([-1.0, -0.5, 0.0, 0.5, 1.0], jnp.float32)
    for mean, log_scale in ((1.0, -7.0), (-1.0, -7.0), (0.0, 10.0)):
        logp = discretized_gaussian_log_likelihood(x, mean, jnp.float32(log_scale))
        assert np.all(np.isfinite(np.asarray(logp)))
        grad = jax.grad(lambda m: discretized_gaussian_log_likelihood(x, m, log_scale).sum())
        assert np.isfinite(float(grad(jnp.float32(mean))))


def test_schedule_and_decoder_floor_known_answers():
    """Brief: abar_T, beta~_2, the decoder floor with an exact mean (interior / edge) for
    beta_1 and for beta~_2, L_T at x_0 = +-1."""
    with jax.enable_x64(True):
        s = schedule64()
        assert float(s.alphas_cumprod[-1]) == pytest.approx(4.0358e-5, rel=1e-4)
        assert float(jnp.exp(s.log_betas_clipped[0])) == pytest.approx(5.4532e-5, rel=1e-4)
        x = jnp.asarray([[0.2, -1.0]])
        for log_var, floor in ((jnp.log(s.betas[0]), (1.7128, 0.6159)),
                               (s.log_betas_clipped[0], (1.3054, 0.5098))):
            bits = np.asarray(decoder_nll(x, x, log_var)[0]) / LN2
            np.testing.assert_allclose(bits, floor, atol=1e-4)
        prior = np.asarray(prior_bpd(s, jnp.asarray([[1.0, -1.0]])))
    np.testing.assert_allclose(prior, [2.911e-5], rtol=1e-3)


def test_reverse_variances():
    """fixed_large: beta_t with beta~_1 at t = 0 (not beta_1); learned_range spans
    [log beta~_t, log beta_t]; learned is the raw log-variance."""
    s = DiffusionSchedule.create()
    t = jnp.asarray([0, 1, 500, 999])
    large = np.asarray(reverse_log_variance(s, t, "fixed_large"))
    np.testing.assert_allclose(np.exp(large), [s.posterior_variance[1], *s.betas[t[1:]]],
                               rtol=1e-5)
    small = np.asarray(reverse_log_variance(s, t, "fixed_small"))
    ones = jnp.ones((4, 2))
    np.testing.assert_allclose(reverse_log_variance(s, t, "learned_range", -ones),
                               np.broadcast_to(small[:, None], (4, 2)), rtol=1e-6)
    np.testing.assert_allclose(reverse_log_variance(s, t, "learned_range", ones),
                               np.broadcast_to(np.log(s.betas[t])[:, None], (4, 2)), rtol=1e-6)
    np.testing.assert_array_equal(reverse_log_variance(s, t, "learned", 3 * ones), 3 * ones)
    with pytest.raises(UserError):
        reverse_log_variance(s, t, "learned")


def test_kl_terms_are_eq_3_12_plus_a_constant():
    """For t > 0, eps prediction, a fixed variance and no clipping, the bound's term is the
    weighted eps loss (Eq. 3.12) plus 0.5 (log sigma^2/beta~ + beta~/sigma^2 - 1) per dim."""
    s = DiffusionSchedule.create()
    rng = np.random.default_rng(1)
    x0, eps = rng.uniform(-1, 1, (6, 4, 4, 3)), rng.normal(size=(6, 4, 4, 3))
    eps_hat = jnp.asarray(eps + 0.3 * rng.normal(size=eps.shape), jnp.float32)
    x0, eps = jnp.asarray(x0, jnp.float32), jnp.asarray(eps, jnp.float32)
    t = jnp.asarray([1, 2, 10, 300, 700, 999])
    x_t = q_sample(s, x0, t, eps)
    for variance in ("fixed_small", "fixed_large"):
        term, _ = vb_term_bpd(s, eps_hat, x0, x_t, t, variance=variance, clip_x0=False)
        ratio = np.exp(np.asarray(reverse_log_variance(s, t, variance, ndim=1))
                       - np.log(np.asarray(s.posterior_variance[t])))
        const = 0.5 * (np.log(ratio) + 1.0 / ratio - 1.0)
        weighted = np.asarray(eps_loss(s, eps_hat, eps, t, "weighted", variance)) / 48
        np.testing.assert_allclose(np.asarray(term) * LN2, const + weighted, rtol=2e-3)


# ----------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("s,expected", [(1.0, 1.418938), (0.5, 0.725791)])
def test_gaussian_exact_reverse_process_bound_is_entropy_plus_prior(s, expected):
    _, _, exact_var, _ = gaussian_moments(s)
    with jax.enable_x64(True):
        terms, prior, _ = cubature_terms(s, "learned", np.log(exact_var))
    bound = (terms.sum() + prior) * LN2
    assert abs(bound - exact_bound_nats(s)) < 1e-5
    assert abs(bound - expected) < 1e-6


@pytest.mark.parametrize("s,gap_beta,gap_beta_tilde", [(1.0, 0.0, 0.5786), (0.5, 0.0011, 0.5699)])
def test_fixed_variance_gaps(s, gap_beta, gap_beta_tilde):
    """Optimal mean with sigma^2 = beta_t (also at t = 0): gap 0 at s = 1 (the choice that
    is optimal for N(0, I) data, §3.3.2); with beta~_t ('fixed_small') 0.5786 nats/dim."""
    _, _, exact_var, _ = gaussian_moments(s)
    with jax.enable_x64(True):
        exact = cubature_terms(s, "learned", np.log(exact_var))[0].sum()
        beta = cubature_terms(s, "learned", np.log(make_betas("linear", T)))[0].sum()
        small = cubature_terms(s, "fixed_small")[0].sum()
    assert abs((beta - exact) * LN2 - gap_beta) < 1e-4
    assert abs((small - exact) * LN2 - gap_beta_tilde) < 1e-4


def test_progressive_coding_traces_the_gaussian_rate_distortion_curve():
    """Exact reverse process: rate(s) = I(x_0; x_s) + KL_T and MSE(s) = s^2 2^(-2 I), the
    Gaussian R(D); at s = 0.5, index 99: 0.83396 bits and MSE 0.07868."""
    s = 0.5
    _, v, exact_var, info = gaussian_moments(s)
    with jax.enable_x64(True):
        terms, prior, mse = cubature_terms(s, "learned", np.log(exact_var))
    bound = BoundTerms(total=np.asarray([terms.sum() + prior]), terms=terms[None],
                       prior=np.asarray([prior]), mse=mse[None])
    rate, distortion = rate_distortion_curve(bound)
    kl_t = 0.5 * (v[-1] - 1 - math.log(v[-1])) / LN2
    np.testing.assert_allclose(rate, info + kl_t, atol=1e-9)
    np.testing.assert_allclose((distortion / 127.5) ** 2, s * s * 2.0 ** (-2 * info), rtol=1e-9)
    assert rate[99] == pytest.approx(0.83396, abs=2e-5)
    assert (distortion[99] / 127.5) ** 2 == pytest.approx(0.07868, abs=1e-5)


def point_set_denoiser(schedule, points):
    """Oracle x0-prediction for data uniform on `points` [K, D]: the posterior mean."""
    def fn(x_t, t):
        a = schedule.sqrt_alphas_cumprod[t][:, None, None]
        b = schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
        dist = jnp.sum((x_t[:, None, :] - a * points[None]) ** 2, -1) / (2 * b ** 2)
        return jax.nn.softmax(-dist, axis=-1) @ points, None
    return jax.tree_util.Partial(fn)


@pytest.mark.parametrize("num_points,rate_fixed_small,rate_fixed_large",
                         [(8, 3.018, 10.76), (64, 5.992, None)])
def test_point_source_rate_approaches_log2_k(num_points, rate_fixed_small, rate_fixed_large):
    """K points on the 8-bit grid in D = 16 with the oracle denoiser (fixed_small): the rate
    L_1 + ... + L_T -> log2 K bits per image (brief: 3.018 for K = 8, 5.992 for K = 64;
    fixed_large 10.76); the decoder costs ~1.305 bits/dim; total >= log2 K."""
    s = DiffusionSchedule.create()
    rng = np.random.default_rng(0)
    points = jnp.asarray(rng.integers(1, 255, (num_points, 16)) / 127.5 - 1.0, jnp.float32)
    x0 = points[rng.integers(0, num_points, 256)]
    fn = point_set_denoiser(s, points)
    for variance, expected in (("fixed_small", rate_fixed_small),
                               ("fixed_large", rate_fixed_large)):
        if expected is None:
            continue
        b = bpd_loop(fn, s, x0, jax.random.PRNGKey(0), prediction="x0", variance=variance)
        rate = 16 * float(np.mean(b.prior + b.terms[:, 1:].sum(1)))
        assert abs(rate - expected) < 0.1 * max(1.0, expected / 3), (variance, rate)
        assert 16 * float(b.total.mean()) >= math.log2(num_points)
        assert float(b.terms[:, 0].mean()) == pytest.approx(1.3054, abs=0.01)


# ----------------------------------------------------------------------------- the loop


def gaussian_eps_denoiser(schedule, s):
    """Exact E[eps | x_t] for x_0 ~ N(0, s^2)."""
    def fn(x_t, t):
        a = schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (x_t.ndim - 1))
        return jnp.sqrt(1 - a) * x_t / (a * s ** 2 + 1 - a), None
    return jax.tree_util.Partial(fn)


def test_bpd_loop_equals_its_terms_and_estimates_the_bound():
    """bpd_loop == vb_term_bpd at each t with noise normal(fold_in(rng, t)); its Monte
    Carlo bound of Gaussian data is -log N(x_0; 0, s^2) + the fixed_large gap within its
    error (~0.009 nats/dim at 2^16 dimensions)."""
    s, std = DiffusionSchedule.create(), 0.5
    x0 = jnp.asarray(np.random.default_rng(2).normal(0, std, (2, 128, 256)), jnp.float32)
    fn, key = gaussian_eps_denoiser(s, std), jax.random.PRNGKey(3)
    b = bpd_loop(fn, s, x0, key, variance="fixed_large", clip_x0=False, num_bins=None)
    assert b.terms.shape == (2, T) and b.mse.shape == (2, T) and b.prior.shape == (2,)
    # float32 sums of T = 1000 positive terms in two orders: |err| <= T * eps32 ~ 6e-5 relative
    np.testing.assert_allclose(b.total, b.terms.sum(1) + b.prior, rtol=1e-4)
    for t in (0, 1, 500, 999):
        tb = jnp.full((2,), t)
        x_t = q_sample(s, x0, tb, jax.random.normal(jax.random.fold_in(key, t), x0.shape))
        term, x0_hat = vb_term_bpd(s, fn(x_t, tb)[0], x0, x_t, tb, variance="fixed_large",
                                   clip_x0=False, num_bins=None)
        np.testing.assert_allclose(b.terms[:, t], term, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b.mse[:, t], jnp.mean((x0_hat - x0) ** 2, (1, 2)), rtol=1e-4)
    nll = 0.5 * math.log(2 * math.pi * std ** 2) + float(jnp.mean(x0 ** 2)) / (2 * std ** 2)
    expected = nll + 0.11467                             # brief: the fixed_large gap at 0.5
    assert abs(float(b.total.mean()) * LN2 - expected) < 0.035


def test_table_6_2_layout():
    """rate_distortion.json rows: reverse process times T, 0.9T, ..., 0.1T; at time T the
    rate is L_1 + ... + L_T and the distortion comes from x_1 (the paper's 1.78 / 0.95)."""
    rng = np.random.default_rng(4)
    terms, prior, mse = rng.uniform(0, 1e-3, (3, T)), rng.uniform(0, 1e-5, 3), \
        rng.uniform(0, 1e-2, (3, T))
    bound = BoundTerms(total=terms.sum(1) + prior, terms=terms, prior=prior, mse=mse)
    table = rate_distortion_table(bound)
    assert table["columns"] == ["reverse_process_time", "rate_bpd", "distortion_rmse"]
    assert [r[0] for r in table["rows"]] == list(range(1000, 0, -100))
    metrics = bound_metrics(bound)
    assert table["rows"][0][1] == pytest.approx(metrics["bpd_rate"])
    assert table["rows"][0][2] == pytest.approx(metrics["distortion_rmse"])
    assert metrics["bpd"] == pytest.approx(metrics["bpd_rate"] + metrics["bpd_decoder"])
    last = table["rows"][-1]                                  # time 100: x_900 received
    assert last[1] == pytest.approx(np.mean(prior + terms[:, 901:].sum(1)))
    assert last[2] == pytest.approx(127.5 * np.sqrt(mse[:, 900].mean()))
    assert len(table["curve"]["rate_bpd"]) == T and table["num_examples"] == 3


# ----------------------------------------------------------------------------- loss, sampler


def test_vlb_loss_is_the_bound_term_and_learned_variance_needs_it():
    s = DiffusionSchedule.create()
    x0 = jnp.asarray(np.random.default_rng(5).integers(0, 256, (64, 4, 4, 3)) / 127.5 - 1.0,
                     jnp.float32)
    fn = gaussian_eps_denoiser(s, 0.5)
    out = diffusion_loss(s, fn, x0, jax.random.PRNGKey(6), weighting="vlb",
                         variance="fixed_large")
    key_t, key_eps = jax.random.split(jax.random.PRNGKey(6))
    x_t = q_sample(s, x0, out.t, jax.random.normal(key_eps, x0.shape))
    term, _ = vb_term_bpd(s, fn(x_t, out.t)[0], x0, x_t, out.t, variance="fixed_large",
                          clip_x0=False)
    np.testing.assert_allclose(out.loss, term, rtol=1e-5)
    with pytest.raises(UserError, match="vlb"):
        diffusion_loss(s, fn, x0, jax.random.PRNGKey(6), variance="learned")


def test_learned_variance_in_the_sampler_and_the_x0_hat_aux():
    """ancestral_step with learned log-variance channels = beta~_t is the fixed_small step;
    with_x0_hat records x0_hat(x_t) (Eq. 3.15) along the chain."""
    s = DiffusionSchedule.create("linear", 100, 1e-4, 0.2)
    rng = np.random.default_rng(7)
    x_t, pred, noise = (jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32) for _ in range(3))
    t = jnp.asarray([0, 5, 99])
    log_var = jnp.broadcast_to(s.posterior_log_variance_clipped[t][:, None, None, None],
                               x_t.shape)
    learned = ancestral_step(s, jnp.concatenate([pred, log_var], -1), x_t, t, noise,
                             variance="learned")
    fixed = ancestral_step(s, pred, x_t, t, noise, variance="fixed_small")
    np.testing.assert_allclose(learned[0], fixed[0], rtol=1e-5, atol=1e-6)
    step = p_mean_variance(s, pred, x_t, t)
    np.testing.assert_allclose(step.mean, ancestral_step(s, pred, x_t, t)[0], rtol=1e-6)

    fn = with_x0_hat(gaussian_eps_denoiser(s, 0.5), s)
    out = ancestral_sample(fn, s, jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
                           jax.random.PRNGKey(0), record_every=10, progress=False)
    traj = out.trajectory
    assert traj.aux["x0_hat"].shape == (10, 2, 3)
    t_rec = jnp.broadcast_to(traj.t[:, None], (10, 2)).reshape(-1)
    expected = jnp.clip(predict_x0_from_eps(
        s, traj.x_t.reshape(20, 3), t_rec,
        gaussian_eps_denoiser(s, 0.5)(traj.x_t.reshape(20, 3), t_rec)[0]), -1, 1)
    np.testing.assert_allclose(traj.aux["x0_hat"].reshape(20, 3), expected, rtol=1e-5,
                               atol=5e-5)           # x_t / sqrt(abar_T): float32 cancellation
