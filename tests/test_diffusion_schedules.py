"""Schedules, forward process and losses against diffusers' DDPMScheduler and closed forms."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

from fdm.diffusion import (
    DiffusionSchedule,
    diffusion_loss,
    eps_loss,
    min_snr_weight,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    vlb_weight,
    x0_loss,
)
from fdm.errors import UserError

# (our name, diffusers beta_schedule, beta_start, beta_end)
SCHEDULES = [
    ("linear", "linear", 1e-4, 0.02),
    ("quadratic", "scaled_linear", 8.5e-4, 0.012),
    ("cosine", "squaredcos_cap_v2", 1e-4, 0.02),
]


def to_float64(scheduler):
    """diffusers builds betas with its own formulas (float32) but then takes 1 - abar in float32,
    which loses ~1e-3 relative precision at small t. Keep its betas, redo the products in float64
    so the comparison tests conventions and formulas, not float32 round-off."""
    scheduler.betas = scheduler.betas.double()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    return scheduler


def _pair(name, hf_name, b0, b1, T=1000):
    ours = DiffusionSchedule.create(name, T, b0, b1)
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=hf_name, beta_start=b0,
                        beta_end=b1, clip_sample=False)
    return ours, to_float64(ref)


@pytest.mark.parametrize("name,hf_name,b0,b1", SCHEDULES)
def test_schedule_arrays_match_diffusers(name, hf_name, b0, b1):
    s, ref = _pair(name, hf_name, b0, b1)
    assert s.num_timesteps == 1000
    for field in ("betas", "alphas_cumprod", "posterior_variance", "sqrt_alphas_cumprod"):
        assert getattr(s, field).dtype == jnp.float32 and getattr(s, field).shape == (1000,)
    np.testing.assert_allclose(s.betas, ref.betas.numpy(), rtol=1e-6)
    np.testing.assert_allclose(s.alphas, ref.alphas.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(1 - s.alphas_cumprod[:3], 1 - ref.alphas_cumprod.numpy()[:3],
                               rtol=1e-3)
    np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod,
                               np.sqrt(1 - ref.alphas_cumprod.numpy()), rtol=1e-6)
    # Posterior variance beta~ as diffusers computes it ("fixed_small"; t=0 clamps 0 -> 1e-20).
    hf_var = np.array([float(ref._get_variance(t)) for t in range(1, 1000, 37)])
    np.testing.assert_allclose(s.posterior_variance[1::37], hf_var, rtol=1e-6)
    assert float(s.posterior_variance[0]) == 0.0
    np.testing.assert_allclose(s.posterior_log_variance_clipped[0],
                               np.log(s.posterior_variance[1]), rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1], rtol=1e-7)
    assert float(s.alphas_cumprod_prev[0]) == 1.0


def test_cosine_is_capped_and_ignores_beta_range():
    s = DiffusionSchedule.create("squaredcos_cap_v2", 1000, 0.5, 0.6)
    assert float(s.betas.max()) == pytest.approx(0.999, rel=1e-6)
    np.testing.assert_array_equal(s.betas, DiffusionSchedule.create("cosine", 1000).betas)


@pytest.mark.parametrize("name,hf_name,b0,b1", SCHEDULES)
def test_q_sample_matches_add_noise(name, hf_name, b0, b1):
    s, ref = _pair(name, hf_name, b0, b1)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (6, 4, 4, 3)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([0, 1, 17, 500, 998, 999])
    ours = q_sample(s, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))
    theirs = ref.add_noise(torch.from_numpy(x0).double(), torch.from_numpy(noise).double(),
                           torch.from_numpy(t))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,hf_name,b0,b1", SCHEDULES)
def test_posterior_mean_matches_ddpm_step(name, hf_name, b0, b1, monkeypatch):
    """diffusers' step with an x0 ("sample") output, no clipping and zero noise is mu~(x_t, x0)."""
    s, ref = _pair(name, hf_name, b0, b1)
    ref.register_to_config(prediction_type="sample")
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor",
                        lambda shape, **kw: torch.zeros(shape, dtype=kw.get("dtype")))
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (2, 3, 5)).astype(np.float32)
    x_t = rng.standard_normal(x0.shape).astype(np.float32)
    for t in (0, 1, 2, 250, 999):
        theirs = ref.step(torch.from_numpy(x0).double(), t,
                          torch.from_numpy(x_t).double()).prev_sample.numpy()
        mean, var, logvar = q_posterior(s, jnp.asarray(x0), jnp.asarray(x_t), jnp.full((2,), t))
        np.testing.assert_allclose(mean, theirs, rtol=1e-6, atol=1e-6)
        assert var.shape == (2, 1, 1) and logvar.shape == (2, 1, 1)


def _data(seed, shape):
    """Numpy test inputs (numpy RNG: no per-shape PRNG compilation)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, shape).astype(np.float32),
            rng.standard_normal(shape).astype(np.float32))


def test_eps_x0_conversions_roundtrip():
    s = DiffusionSchedule.create()
    x0, eps = _data(0, (5, 8, 8, 3))
    t = np.array([0, 3, 100, 600, 999])

    @jax.jit
    def run(x0, eps, t):
        x_t = q_sample(s, x0, t, eps)
        return (predict_x0_from_eps(s, x_t, t, eps), predict_eps_from_x0(s, x_t, t, x0),
                q_sample(s, x0, 7, eps), q_sample(s, x0, jnp.full((5,), 7), eps))

    x0_rec, eps_rec, scalar_t, vector_t = run(x0, eps, t)
    np.testing.assert_allclose(x0_rec, x0, atol=2e-3)
    np.testing.assert_allclose(eps_rec, eps, atol=2e-3)
    np.testing.assert_allclose(scalar_t, vector_t)  # a scalar t broadcasts


def test_errors_and_config():
    with pytest.raises(UserError, match="unknown beta schedule 'sigmoid'"):
        DiffusionSchedule.create("sigmoid")
    with pytest.raises(UserError):
        DiffusionSchedule.create("linear", 1000, 0.02, 1e-4)
    cfg = ml_collections.ConfigDict(dict(num_timesteps=100, beta_schedule="quadratic",
                                         beta_start=1e-4, beta_end=0.05))
    s = DiffusionSchedule.from_config(cfg)
    np.testing.assert_allclose(s.betas,
                               DiffusionSchedule.create("quadratic", 100, 1e-4, 0.05).betas)
    # a pytree with a static T: usable as a jit argument
    total = jax.jit(lambda sch: sch.betas.sum() * sch.num_timesteps)(s)
    assert np.isfinite(float(total))


def test_vlb_weights_equal_kl_between_posterior_means():
    """Weighted eps/x0 losses == ||mu~(x_t, x0) - mu~(x_t, x0_hat)||^2 / (2 sigma^2) (Eq. 3.8)."""
    s = DiffusionSchedule.create()
    x0, eps = _data(3, (6, 4, 4, 1))
    eps_hat = eps + 0.1 * _data(4, x0.shape)[1]
    t = np.array([0, 1, 10, 300, 700, 999])

    @jax.jit
    def run(x0, eps, eps_hat, t):
        x_t = q_sample(s, x0, t, eps)
        x0_hat = predict_x0_from_eps(s, x_t, t, eps_hat)
        sq = jnp.sum((q_posterior(s, x0, x_t, t)[0] - q_posterior(s, x0_hat, x_t, t)[0]) ** 2,
                     axis=(1, 2, 3))
        out = {}
        # Both with beta~_1 at t = 0 (the decoder variance of Ho et al.'s code).
        large = jnp.where(t == 0, s.posterior_variance[1], s.betas[t])
        for variance, sigma2 in (("fixed_small", jnp.exp(s.posterior_log_variance_clipped[t])),
                                 ("fixed_large", large)):
            out[variance] = (sq / (2 * sigma2), eps_loss(s, eps_hat, eps, t, "weighted", variance),
                             x0_loss(s, x0_hat, x0, t, "weighted", variance))
        return out, vlb_weight(s, jnp.arange(1000))

    out, weights = run(x0, eps, eps_hat, t)
    for kl, eps_weighted, x0_weighted in out.values():
        np.testing.assert_allclose(eps_weighted, kl, rtol=2e-3)
        np.testing.assert_allclose(x0_weighted, kl, rtol=2e-3)
    assert np.all(np.isfinite(weights))


def test_min_snr_losses_are_the_clamped_snr_weight_in_x0_and_eps_forms():
    """Min-SNR-gamma (Hang et al. 2023): the x0 form is min(SNR_t, gamma) times the mean
    squared error, SNR_t = abar_t / (1 - abar_t) from the betas in float64; the eps form
    of the same prediction is the same loss (eps error^2 = SNR_t x0 error^2)."""
    s = DiffusionSchedule.create("cosine", 1000)
    abar = np.cumprod(1.0 - np.asarray(s.betas, np.float64))
    gamma = 5.0
    want_weight = np.minimum(abar / (1.0 - abar), gamma)
    # abar in float32 (a product of up to 1000 factors: ~1000 ulps, 6e-5) against float64
    np.testing.assert_allclose(min_snr_weight(s, jnp.arange(1000), "x0", gamma), want_weight,
                               rtol=5e-4)
    assert want_weight[0] == gamma and want_weight[-1] < 1e-3        # both ends reached
    x0, eps = _data(5, (6, 4, 4, 3))
    x0_hat = x0 + 0.1 * _data(6, x0.shape)[1]
    t = np.array([0, 50, 200, 500, 800, 999])
    x_t = q_sample(s, x0, t, eps)
    eps_hat = predict_eps_from_x0(s, x_t, t, x0_hat)
    x0_form = np.asarray(x0_loss(s, x0_hat, x0, t, "min_snr", min_snr_gamma=gamma))
    mse = np.mean((np.asarray(x0_hat, np.float64) - x0) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(x0_form, want_weight[t] * mse, rtol=5e-4)
    eps_form = np.asarray(eps_loss(s, eps_hat, eps, t, "min_snr", min_snr_gamma=gamma))
    # eps_hat carries x_t's float32 round-off times 1 / sqrt(1 - abar): 1e-3 at t <= 800
    np.testing.assert_allclose(eps_form[:-1], x0_form[:-1], rtol=1e-3)
    # unclamped: SNR_t itself; 1 - abar_0 (4e-5) in float32 has ~5e-4 relative round-off
    np.testing.assert_allclose(x0_loss(s, x0_hat, x0, t, "min_snr", min_snr_gamma=1e9),
                               np.asarray(abar[t] / (1 - abar[t])) * mse, rtol=1e-3)


def test_min_snr_floor_clips_the_weight_from_below_and_one_with_no_ceiling_is_truncated_snr():
    """floor f: weight clip(SNR_t, f, gamma) (float64 SNR from the betas); f = 1 with
    gamma = inf is Salimans & Ho's max(||x0 - x0_hat||^2, ||eps - eps_hat||^2) per
    example, computed here from the two errors of the same prediction; f > gamma is a
    one-line error."""
    s = DiffusionSchedule.create("cosine", 1000)
    abar = np.cumprod(1.0 - np.asarray(s.betas, np.float64))
    snr = abar / (1.0 - abar)
    weight = np.asarray(min_snr_weight(s, jnp.arange(1000), "x0", 5.0, 1.0))
    np.testing.assert_allclose(weight, np.clip(snr, 1.0, 5.0), rtol=5e-4)
    assert weight[0] == 5.0 and weight[-1] == 1.0 and ((weight > 1) & (weight < 5)).any()
    # floor 0: Hang et al.'s min(SNR_t, gamma) from the same float32 abar (two roundings)
    abar32 = np.asarray(s.alphas_cumprod, np.float64)
    np.testing.assert_allclose(min_snr_weight(s, jnp.arange(1000), "x0", 5.0, 0.0),
                               np.minimum(abar32 / (1.0 - abar32), 5.0), rtol=1e-6)
    x0, eps = _data(5, (6, 4, 4, 3))
    x0_hat = x0 + 0.1 * _data(6, x0.shape)[1]
    t = np.array([0, 50, 200, 500, 800, 999])
    x_t = q_sample(s, x0, t, eps)
    eps_hat = predict_eps_from_x0(s, x_t, t, x0_hat)
    truncated = np.asarray(x0_loss(s, x0_hat, x0, t, "min_snr", min_snr_gamma=np.inf,
                                   min_snr_floor=1.0))
    x0_mse = np.mean((np.asarray(x0_hat, np.float64) - x0) ** 2, axis=(1, 2, 3))
    eps_mse = np.mean((np.asarray(eps_hat, np.float64) - eps) ** 2, axis=(1, 2, 3))
    # eps_hat's float32 round-off (see above): 1e-3 below t = 999
    np.testing.assert_allclose(truncated[:-1], np.maximum(x0_mse, eps_mse)[:-1], rtol=1e-3)
    np.testing.assert_allclose(
        eps_loss(s, eps_hat, eps, t, "min_snr", min_snr_gamma=5.0, min_snr_floor=1.0)[:-1],
        x0_loss(s, x0_hat, x0, t, "min_snr", min_snr_gamma=5.0, min_snr_floor=1.0)[:-1],
        rtol=1e-3)
    with pytest.raises(UserError, match="min_snr_floor=6.0 must lie in"):
        min_snr_weight(s, jnp.arange(3), "x0", 5.0, 6.0)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_diffusion_loss_oracle_and_zero_denoisers(prediction):
    s = DiffusionSchedule.create()
    x0 = jnp.asarray(_data(0, (512, 4, 4, 3))[0])

    def oracle(x_t, t):
        eps = predict_eps_from_x0(s, x_t, t, x0)
        return (eps if prediction == "eps" else x0), {"t": t}

    def zero(x_t, t):
        return jnp.zeros_like(x_t), None

    @jax.jit
    def run(key):
        return (diffusion_loss(s, oracle, x0, key, prediction),
                diffusion_loss(s, zero, x0, key, prediction).loss,
                diffusion_loss(s, zero, x0, key, prediction, "weighted").loss)

    out, simple, weighted = run(jax.random.PRNGKey(1))
    assert out.loss.shape == (512,) and out.t.shape == (512,) and out.t.dtype == jnp.int32
    assert int(out.t.min()) >= 0 and int(out.t.max()) < 1000 and len(np.unique(out.t)) > 300
    np.testing.assert_array_equal(out.aux["t"], out.t)
    assert float(out.loss.max()) < 1e-3
    expected = 1.0 if prediction == "eps" else float(jnp.mean(x0**2))  # E[eps^2] or E[x0^2]
    assert float(simple.mean()) == pytest.approx(expected, rel=0.03)
    assert weighted.shape == (512,) and np.all(np.isfinite(weighted))
    with pytest.raises(UserError):
        diffusion_loss(s, zero, x0, jax.random.PRNGKey(2), "v")
