"""Gaussian conditioning and W2 (fdm.forward.gaussian) and the linear-Gaussian posterior and
scores, against independent float64 references (scipy.linalg.sqrtm, the information form,
the pseudo-inverse, Monte Carlo)."""
import numpy as np
import pytest
import scipy.linalg

from fdm.errors import UserError
from fdm.forward import View, condition, gaussian_w2, moments, sqrtm_psd
from fdm.forward import linear_gaussian as lg


def _random_cov(rng, n, rank=None):
    f = rng.standard_normal((n, rank or n))
    return f @ f.T / n


def _w2_scipy(m1, c1, m2, c2):
    root2 = np.real(scipy.linalg.sqrtm(c2))
    cross = np.real(scipy.linalg.sqrtm(root2 @ c1 @ root2))
    return np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2.0 * cross))


def test_w2_matches_scipy_sqrtm_on_random_full_rank_gaussians():
    rng = np.random.default_rng(0)
    for n in (1, 3, 8):
        m1, m2 = rng.standard_normal(n), rng.standard_normal(n)
        c1, c2 = _random_cov(rng, n), _random_cov(rng, n)
        np.testing.assert_allclose(gaussian_w2(m1, c1, m2, c2), _w2_scipy(m1, c1, m2, c2),
                                   rtol=1e-8)
        assert gaussian_w2(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-6)


def test_w2_known_cases():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    delta = np.array([1.0, -2.0, 0.5])
    exact = np.sqrt(delta @ delta + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))   # commuting
    assert gaussian_w2(delta, np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(exact)
    # a rank-4 projection P against I_8: tr(P + I - 2 sqrt(P)) = 4 + 8 - 8
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((8, 4)))
    assert gaussian_w2(np.zeros(8), q @ q.T, np.zeros(8), np.eye(8)) == pytest.approx(2.0)
    # a point mass at the mean: W2 = sqrt(tr C), the deterministic baseline's score
    cov = _random_cov(np.random.default_rng(2), 5)
    assert gaussian_w2(np.ones(5), np.zeros((5, 5)), np.ones(5), cov) == pytest.approx(
        np.sqrt(np.trace(cov)))


def test_sqrtm_psd_matches_scipy_on_a_singular_matrix():
    cov = _random_cov(np.random.default_rng(3), 6, rank=3)
    root = sqrtm_psd(cov)
    np.testing.assert_allclose(root @ root, cov, atol=1e-10)
    np.testing.assert_allclose(root, np.real(scipy.linalg.sqrtm(cov)), atol=1e-6)


def test_conditioning_matches_the_information_form_and_monte_carlo():
    rng = np.random.default_rng(4)
    m, prior_mean, prior_cov = rng.standard_normal((3, 5)), rng.standard_normal(5), \
        _random_cov(rng, 5) + 0.1 * np.eye(5)
    obs, noise = rng.standard_normal(3), 0.3
    mean, cov = condition(m, obs, prior_mean, prior_cov, noise_var=noise)
    precision = np.linalg.inv(prior_cov) + m.T @ m / noise
    ref_cov = np.linalg.inv(precision)
    ref_mean = ref_cov @ (np.linalg.solve(prior_cov, prior_mean) + m.T @ obs / noise)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-10)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-10)
    # Monte Carlo: regress w on o over joint draws; the residual covariance is cov
    w = rng.multivariate_normal(prior_mean, prior_cov, 200_000)
    o = w @ m.T + np.sqrt(noise) * rng.standard_normal((200_000, 3))
    design = np.concatenate([o, np.ones((len(o), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, w, rcond=None)
    np.testing.assert_allclose(np.r_[obs, 1.0] @ coef, mean, atol=0.02)
    np.testing.assert_allclose(np.cov((w - design @ coef).T), cov, atol=0.02)


def test_noise_free_posterior_is_the_pseudo_inverse_projection():
    a = lg.generator_matrix()
    rows = lg.patch_rows(np.array([[3, 5]]), 2)[0]
    w = np.random.default_rng(5).standard_normal(8)
    mean, cov = lg.posterior(a, rows, a[rows] @ w)
    pinv = np.linalg.pinv(a[rows])
    np.testing.assert_allclose(mean, pinv @ a[rows] @ w, atol=1e-8)
    np.testing.assert_allclose(cov, np.eye(8) - pinv @ a[rows], atol=1e-8)
    assert np.trace(cov) == pytest.approx(4.0) and np.linalg.matrix_rank(cov, 1e-8) == 4
    with pytest.raises(UserError, match="singular"):
        condition(np.ones((2, 3)), np.zeros(2))


def test_scores_of_exact_posterior_samples_and_of_the_posterior_mean():
    rng = np.random.default_rng(6)
    a = lg.generator_matrix()
    rows = lg.random_patch_rows(rng, 3, 2)
    obs = np.stack([a[r] @ rng.standard_normal(8) for r in rows])
    exact, point = [], []
    for r, o in zip(rows, obs):
        mean, cov = lg.posterior(a, r, o)
        exact.append(rng.multivariate_normal(mean, cov, 4000))
        point.append(np.tile(mean, (10, 1)))
    good = lg.score(np.stack(exact), View(obs, rows))
    assert good["w2"] < 0.1 and abs(good["trace_ratio"] - 1.0) < 0.05
    assert good["context_rmse"] < 1e-6 and good["w2_posterior_mean"] == pytest.approx(2.0)
    assert good["w2_prior"] > 2.0
    det = lg.score(np.stack(point), View(obs, rows))
    assert det["w2"] == pytest.approx(2.0) and det["trace_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert det["w2_max"] == pytest.approx(2.0) and det["mean_error"] < 1e-8


def test_moments_are_numpy_mean_and_unbiased_covariance():
    x = np.random.default_rng(7).standard_normal((50, 3))
    mean, cov = moments(x)
    np.testing.assert_allclose(mean, x.mean(0))
    np.testing.assert_allclose(cov, np.cov(x.T))
    with pytest.raises(UserError):
        moments(x[:1])


def _exact_denoiser(matrix, rows, obs, schedule):
    """E[w | o, x_t] of the linear-Gaussian problem as a sampler denoiser (x_t [B, 64], t [B])
    -> (A w_hat, w_hat): the posterior N(mean, C) of w | o conditioned on
    x_t = sqrt(abar_t) A w + sqrt(1 - abar_t) eps, tabulated for every t."""
    import jax.numpy as jnp
    mean, cov = lg.posterior(matrix, rows, obs)
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    gains = []
    for t in range(schedule.num_timesteps):
        h = np.sqrt(abar[t]) * matrix
        gains.append(cov @ h.T @ np.linalg.inv(h @ cov @ h.T + (1.0 - abar[t]) * np.eye(64)))
    gains, a = jnp.asarray(np.stack(gains), jnp.float32), jnp.asarray(matrix, jnp.float32)
    mu, root = jnp.asarray(mean, jnp.float32), jnp.sqrt(jnp.asarray(abar, jnp.float32))

    def denoise(x_t, t):
        w = mu + jnp.einsum("bij,bj->bi", gains[t], x_t - root[t][:, None] * (a @ mu))
        return w @ a.T, w
    return denoise


def test_ddim50_with_the_exact_denoiser_samples_the_posterior():
    """The sampler path of the family (x0 = forward(S), S = aux of the last call) with the
    Bayes-optimal denoiser: W2 near the 1000-sample floor, so the model is what is scored."""
    import jax
    from fdm.diffusion import DiffusionSchedule, ddim_sample
    schedule = DiffusionSchedule.create("cosine", 1000)
    rng = np.random.default_rng(8)
    a = lg.generator_matrix()
    rows = lg.random_patch_rows(rng, 1, 2)[0]
    obs = a[rows] @ rng.standard_normal(8)
    fn = _exact_denoiser(a, rows, obs, schedule)
    out = ddim_sample(fn, schedule, jax.random.normal(jax.random.PRNGKey(0), (1000, 64)),
                      num_steps=50, prediction="x0", clip_x0=False, progress=False)
    scores = lg.score(np.asarray(out.aux)[None], View(obs[None], rows[None]))
    assert scores["w2"] < 0.15 and 0.85 < scores["trace_ratio"] < 1.1
    assert scores["context_rmse"] < 1e-3
