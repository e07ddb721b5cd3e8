"""Sampler steps vs diffusers' DDPM/DDIM schedulers; full loops, inversion, recording, chunking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

from fdm.diffusion import (
    DiffusionSchedule,
    ancestral_sample,
    ancestral_step,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    interpolate,
    q_sample,
)
from fdm.diffusion import samplers as samplers_lib
from fdm.errors import UserError

HF_PREDICTION = {"eps": "epsilon", "x0": "sample"}


def normal(seed, shape):
    """Standard-normal test input from numpy (no per-shape PRNG compilation)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def to_float64(scheduler):
    """Keep diffusers' betas, redo the products in float64 (see test_diffusion_schedules)."""
    scheduler.betas = scheduler.betas.double()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    return scheduler


def _t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _inputs(seed, shape=(3, 4, 4, 2)):
    rng = np.random.default_rng(seed)
    x_t = rng.standard_normal(shape).astype(np.float32)
    pred = (1.5 * rng.standard_normal(shape)).astype(np.float32)  # large enough to hit the clip
    noise = rng.standard_normal(shape).astype(np.float32)
    return x_t, pred, noise


def gaussian_denoiser(schedule, mu, s):
    """Exact eps-prediction E[eps | x_t] for data x0 ~ N(mu, s^2 I); aux = (t, x_t.sum())."""
    def fn(x_t, t):
        a = schedule.alphas_cumprod[t].reshape((-1,) + (1,) * (x_t.ndim - 1))
        eps = jnp.sqrt(1 - a) * (x_t - jnp.sqrt(a) * mu) / (a * s**2 + 1 - a)
        return eps, {"t": t, "sum": x_t.reshape(x_t.shape[0], -1).sum(1)}
    return fn


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_ancestral_step_matches_ddpm_scheduler(variance, prediction, monkeypatch):
    s = DiffusionSchedule.create("linear", 1000)
    ref = to_float64(DDPMScheduler(num_train_timesteps=1000, variance_type=variance,
                                   prediction_type=HF_PREDICTION[prediction], clip_sample=True))
    x_t, pred, noise = _inputs(0)
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda shape, **kw: _t64(noise))
    ts = np.array([0, 1, 2, 500, 999])
    step = jax.jit(lambda p, x, t, n: ancestral_step(s, p, x, t, n, prediction, variance, True))
    for t in ts:  # scalar t
        out = ref.step(_t64(pred), int(t), _t64(x_t))
        ours, x0_hat = step(pred, x_t, jnp.int32(t), noise)
        np.testing.assert_allclose(x0_hat, out.pred_original_sample.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours, out.prev_sample.numpy(), rtol=1e-5, atol=1e-5)
    # per-example t [B]: example b must equal diffusers' step at t[b]
    tb = np.array([0, 37, 999])
    ours, _ = step(pred, x_t, jnp.asarray(tb), noise)
    for b, t in enumerate(tb):
        out = ref.step(_t64(pred), int(t), _t64(x_t)).prev_sample.numpy()
        np.testing.assert_allclose(ours[b], out[b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_ddim_step_matches_ddim_scheduler(eta, prediction):
    s = DiffusionSchedule.create("linear", 1000)
    ref = to_float64(DDIMScheduler(num_train_timesteps=1000, clip_sample=True,
                                   prediction_type=HF_PREDICTION[prediction],
                                   set_alpha_to_one=True, steps_offset=0))
    ref.set_timesteps(50)
    ts = ddim_timesteps(1000, 50)
    np.testing.assert_array_equal(ts, ref.timesteps.numpy())
    x_t, pred, noise = _inputs(1)
    step = jax.jit(lambda p, x, t, tp, n: ddim_step(s, p, x, t, tp, n, eta, prediction, True))
    for i in (0, 1, 25, 48, 49):  # 49: last step, t_prev = -1 -> abar_prev = 1
        t, t_prev = int(ts[i]), (int(ts[i + 1]) if i < 49 else -1)
        out = ref.step(_t64(pred), t, _t64(x_t), eta=eta, variance_noise=_t64(noise))
        ours, x0_hat = step(pred, x_t, t, t_prev, noise)
        np.testing.assert_allclose(x0_hat, out.pred_original_sample.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours, out.prev_sample.numpy(), rtol=1e-5, atol=1e-5)


def test_ddim_timesteps_match_diffusers_leading_spacing():
    for T, n in ((1000, 7), (1000, 1000), (100, 30), (1000, 1)):
        ref = DDIMScheduler(num_train_timesteps=T)
        ref.set_timesteps(n)
        np.testing.assert_array_equal(ddim_timesteps(T, n), ref.timesteps.numpy())
    np.testing.assert_array_equal(ddim_timesteps(1000, 3, t_start=250), [250, 125, 0])
    with pytest.raises(UserError):
        ddim_timesteps(1000, 5, t_start=3)


def test_full_loops_match_diffusers_loops(monkeypatch):
    """Whole ancestral (T=100) and DDIM (20 steps, eta 0.5) loops vs diffusers' loops with the
    analytic Gaussian denoiser and our per-step noise fold_in(rng, t) fed to diffusers."""
    T, rng = 100, jax.random.PRNGKey(7)
    s = DiffusionSchedule.create("linear", T, 1e-4, 0.2)
    fn = gaussian_denoiser(s, 0.3, 0.5)
    x_T = normal(8, (4, 3, 3, 1))
    def noise_at(t):
        return _t64(jax.random.normal(jax.random.fold_in(rng, t), x_T.shape))

    ddpm = to_float64(DDPMScheduler(num_train_timesteps=T, beta_end=0.2, clip_sample=True))
    x = _t64(x_T)
    for t in range(T - 1, -1, -1):
        monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda shape, t=t, **kw: noise_at(t))
        eps, _ = fn(jnp.asarray(x.numpy(), jnp.float32), jnp.full((4,), t))
        x = ddpm.step(_t64(eps), t, x).prev_sample
    ours = ancestral_sample(fn, s, x_T, rng, progress=False).x0
    np.testing.assert_allclose(ours, x.numpy(), rtol=1e-4, atol=1e-4)

    ddim = to_float64(DDIMScheduler(num_train_timesteps=T, beta_end=0.2, clip_sample=True))
    ddim.set_timesteps(20)
    x = _t64(x_T)
    for t in ddim.timesteps.numpy():
        eps, _ = fn(jnp.asarray(x.numpy(), jnp.float32), jnp.full((4,), t))
        x = ddim.step(_t64(eps), int(t), x, eta=0.5, variance_noise=noise_at(int(t))).prev_sample
    ours = ddim_sample(fn, s, x_T, rng, num_steps=20, eta=0.5, progress=False).x0
    np.testing.assert_allclose(ours, x.numpy(), rtol=1e-4, atol=1e-4)


def _numpy_ddim_invert(x0, ab, ts, mu, s):
    """Float64 reference of the documented inversion: step to t_i calls eps(x_{t_(i-1)}, t_i)."""
    x, a_from = np.asarray(x0, np.float64), 1.0
    for t in ts:
        a = ab[t]
        eps = np.sqrt(1 - a) * (x - np.sqrt(a) * mu) / (a * s**2 + 1 - a)
        x = np.sqrt(a) * (x - np.sqrt(1 - a_from) * eps) / np.sqrt(a_from) + np.sqrt(1 - a) * eps
        a_from = a
    return x


@pytest.mark.parametrize("t_end,max_err", [(None, 0.06), (250, 0.012)])
def test_ddim_invert_then_sample_reconstructs(t_end, max_err):
    """Inversion matches a float64 reference; decoding the latent with the same grid gives x0
    back up to the O(1/N) error of evaluating eps one grid point early."""
    s = DiffusionSchedule.create("linear", 1000)
    fn = gaussian_denoiser(s, 0.2, 0.3)
    x0 = 0.2 + 0.3 * normal(0, (64, 2))
    inv = ddim_invert(fn, s, x0, num_steps=100, t_end=t_end, progress=False)
    assert inv.t == (990 if t_end is None else 250)
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    ref = _numpy_ddim_invert(x0, ab, ddim_timesteps(1000, 100, t_end)[::-1], 0.2, 0.3)
    np.testing.assert_allclose(inv.x_t, ref, atol=2e-4)
    if t_end is None:  # the latent is (close to) a standard normal draw
        assert 0.8 < float(jnp.std(inv.x_t)) < 1.2
    rec = ddim_sample(fn, s, inv.x_t, None, num_steps=100, t_start=t_end, clip_x0=False,
                      progress=False).x0
    err = float(jnp.max(jnp.abs(rec - x0)))
    assert err < max_err, err
    far = ddim_sample(fn, s, inv.x_t + 1.0, None, num_steps=100, t_start=t_end, clip_x0=False,
                      progress=False).x0
    assert float(jnp.max(jnp.abs(far - x0))) > 3 * max_err  # the check has teeth


def test_recording_aux_and_shapes():
    s = DiffusionSchedule.create("linear", 100, 1e-4, 0.2)
    fn = gaussian_denoiser(s, 0.0, 0.5)
    x_T = normal(0, (3, 4, 4, 2))
    out = ancestral_sample(fn, s, x_T, jax.random.PRNGKey(1), record_every=30, chunk_size=16,
                           progress=False)
    assert out.x0.shape == x_T.shape
    np.testing.assert_array_equal(out.aux["t"], [0, 0, 0])  # aux of the last call (t = 0)
    tr = out.trajectory
    np.testing.assert_array_equal(tr.t, [99, 69, 39, 9])
    assert tr.x_t.shape == (4, 3, 4, 4, 2) and tr.aux["t"].shape == (4, 3)
    np.testing.assert_array_equal(tr.x_t[0], x_T)  # the first record is the input x_T
    np.testing.assert_array_equal(tr.aux["t"][:, 0], tr.t)
    np.testing.assert_allclose(tr.aux["sum"], tr.x_t.reshape(4, 3, -1).sum(-1), atol=1e-5)
    out = ddim_sample(fn, s, x_T, None, num_steps=10, record_every=1, progress=False)
    np.testing.assert_array_equal(out.trajectory.t, ddim_timesteps(100, 10))
    np.testing.assert_array_equal(out.aux["t"], [0, 0, 0])
    assert ddim_sample(fn, s, x_T, None, num_steps=10, progress=False).trajectory is None


def test_chunking_invariance_and_single_compile():
    s = DiffusionSchedule.create("linear", 100, 1e-4, 0.2)
    x_T = normal(0, (2, 3, 3, 1))
    rng = jax.random.PRNGKey(5)

    def apply(params, x, t):
        return params["scale"] * jnp.tanh(x), {"t": t}

    fn = jax.tree_util.Partial(apply, {"scale": jnp.float32(0.5)})
    a = ancestral_sample(fn, s, x_T, rng, chunk_size=1, record_every=7, progress=False)
    b = ancestral_sample(fn, s, x_T, rng, chunk_size=1000, record_every=7, progress=True)
    np.testing.assert_array_equal(a.x0, b.x0)
    np.testing.assert_array_equal(a.trajectory.x_t, b.trajectory.x_t)
    np.testing.assert_array_equal(a.trajectory.aux["t"], b.trajectory.aux["t"])
    d1 = ddim_sample(fn, s, x_T, rng, num_steps=25, eta=1.0, chunk_size=1, progress=False)
    d2 = ddim_sample(fn, s, x_T, rng, num_steps=25, eta=1.0, chunk_size=1000, progress=False)
    np.testing.assert_array_equal(d1.x0, d2.x0)
    # New parameter values with the same structure reuse the compiled chunk.
    n_compiled = samplers_lib._run_chunk._cache_size()
    fn2 = jax.tree_util.Partial(apply, {"scale": jnp.float32(0.25)})
    e = ancestral_sample(fn2, s, x_T, rng, chunk_size=1000, record_every=7, progress=False)
    assert samplers_lib._run_chunk._cache_size() == n_compiled
    assert not np.array_equal(e.x0, b.x0)


def test_interpolate_shares_noise_and_decodes_endpoints():
    s = DiffusionSchedule.create("linear", 100, 1e-4, 0.2)
    fn = gaussian_denoiser(s, 0.0, 0.5)
    x0_a = jnp.full((2, 4, 4, 1), -0.5)
    x0_b = jnp.full((2, 4, 4, 1), 0.5)
    rng = jax.random.PRNGKey(3)
    out = interpolate(fn, s, x0_a, x0_b, 10, jnp.array([0.0, 0.5, 1.0]), rng, record_every=10,
                      clip_x0=False, progress=False)
    assert out.x0.shape == (3, 2, 4, 4, 1) and out.aux["t"].shape == (3, 2)
    assert out.trajectory.x_t.shape == (2, 3, 2, 4, 4, 1)
    # lambda = 0 is exactly ancestral decoding of x_t^a with the same keys.
    key_enc, key_dec = jax.random.split(rng)
    eps = jax.random.normal(key_enc, x0_a.shape)
    ref = ancestral_sample(fn, s, q_sample(s, x0_a, 10, eps), key_dec, t_start=10,
                           clip_x0=False, progress=False)
    np.testing.assert_allclose(out.x0[0], ref.x0, atol=1e-6)
    # Encoding and decoding noise are shared across lambdas: the difference between the
    # endpoints is then deterministic and for this linear denoiser symmetric around lambda=0.5.
    np.testing.assert_allclose(out.x0[1], 0.5 * (out.x0[0] + out.x0[2]), atol=1e-5)
    assert float(jnp.mean(out.x0[2] - out.x0[0])) > 0.5


def test_bad_arguments_raise_user_error():
    s = DiffusionSchedule.create("linear", 100, 1e-4, 0.2)
    fn = gaussian_denoiser(s, 0.0, 0.5)
    x = jnp.zeros((1, 2))
    with pytest.raises(UserError):
        ancestral_sample(fn, s, x, jax.random.PRNGKey(0), variance="no_such", progress=False)
    with pytest.raises(UserError, match="2 x 2 channels"):      # learned: pred needs 2C
        ancestral_sample(fn, s, x, jax.random.PRNGKey(0), variance="learned", progress=False)
    with pytest.raises(UserError):
        ddim_sample(fn, s, x, None, num_steps=101, progress=False)
    with pytest.raises(UserError):
        ddim_sample(fn, s, x, None, num_steps=10, eta=0.5, progress=False)
    with pytest.raises(UserError):
        ancestral_sample(fn, s, x, jax.random.PRNGKey(0), t_start=100, progress=False)
