"""Sampling options of diffusion with forward models (seed 003): the re-noising update of
Eq. 6 (`fdm.diffusion.renoise_step` / `renoise_sample`), dynamic thresholding and
classifier-free guidance (`fdm.diffusion.guidance`), and their wiring in the dfm family
(eval.sampler, diffusion.dynamic_threshold, train.context_dropout, eval.guidance_scale).

References: the re-noise step's moments against q(x_{t-1} | x0_hat) (brief §5); dynamic
thresholding against a slow numpy loop with `np.quantile` (the Imagen formula); guidance
against its formula, w = 1 bit-exact; context dropout 1 against a changed context."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.forward_linear_gaussian import get_config
from fdm import data
from fdm.diffusion import (DiffusionSchedule, GuidedDenoiser, ThresholdedDenoiser,
                           ddim_sample, dynamic_threshold, guidance_mix, renoise_sample,
                           renoise_step)
from fdm.errors import UserError
from fdm.forward import ObservationTuple, View
from fdm.models import check_config, get_family
from fdm.models.dfm import context_keep


@pytest.fixture(scope="module")
def schedule():
    return DiffusionSchedule.create("cosine", 1000)


# ------------------------------------------------------------------ dynamic thresholding


def _threshold_loop(x, p):
    """The Imagen formula, one example at a time (numpy float64)."""
    out = np.empty_like(x, dtype=np.float64)
    for b in range(x.shape[0]):
        s = max(np.quantile(np.abs(x[b]).ravel(), p), 1.0)
        out[b] = np.clip(x[b], -s, s) / s
    return out


@pytest.mark.parametrize("p", [0.5, 0.95, 0.995, 1.0])
def test_dynamic_threshold_is_the_imagen_formula(p):
    rng = np.random.default_rng(0)
    scales = np.array([0.2, 0.9, 1.5, 4.0, 20.0])[:, None, None, None]   # s = 1 and s > 1
    x = (rng.standard_normal((5, 6, 5, 3)) * scales).astype(np.float32)
    got = np.asarray(dynamic_threshold(jnp.asarray(x), p))
    np.testing.assert_allclose(got, _threshold_loop(x.astype(np.float64), p),
                               rtol=2e-6, atol=2e-7)
    assert got.shape == x.shape and np.abs(got).max() <= 1.0
    np.testing.assert_array_equal(got[0], x[0])          # all |x| < 1: unchanged
    vec = rng.standard_normal((4, 7)) * 3.0              # [B, D] vectors too
    np.testing.assert_allclose(dynamic_threshold(jnp.asarray(vec, jnp.float32), p),
                               _threshold_loop(vec, p), rtol=2e-6, atol=2e-7)


def test_thresholded_denoiser_thresholds_pred_only():
    fn = ThresholdedDenoiser(fn=lambda x, t: (3.0 * x, {"s": 3.0 * x}), percentile=0.9)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 8)), jnp.float32)
    pred, aux = fn(x, jnp.zeros((3,), jnp.int32))
    np.testing.assert_allclose(pred, dynamic_threshold(3.0 * x, 0.9))
    np.testing.assert_array_equal(aux["s"], 3.0 * x)


# ------------------------------------------------------------------ the re-noise step


def test_renoise_step_has_the_moments_of_q_given_x0_hat(schedule):
    """x_{t_prev} ~ N(sqrt(abar_prev) x0_hat, (1 - abar_prev) I) whatever x_t is."""
    rng = np.random.default_rng(2)
    x0_hat = jnp.asarray(rng.uniform(-0.9, 0.9, (1, 6)), jnp.float32)
    n = 100_000
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    step = jax.jit(renoise_step)
    for t, t_prev in [(999, 979), (500, 480), (40, 20)]:
        x_t = jnp.asarray(rng.standard_normal((n, 6)) * 5.0, jnp.float32)   # irrelevant
        noise = jax.random.normal(jax.random.PRNGKey(t), (n, 6))
        x_prev, got_x0 = step(schedule, jnp.broadcast_to(x0_hat, (n, 6)), x_t,
                              jnp.full((n,), t), jnp.full((n,), t_prev), noise)
        np.testing.assert_array_equal(got_x0[0], x0_hat[0])
        mean = np.sqrt(abar[t_prev]) * np.asarray(x0_hat[0], np.float64)
        var = 1.0 - abar[t_prev]
        sample = np.asarray(x_prev, np.float64)
        np.testing.assert_allclose(sample.mean(0), mean, atol=5.0 * np.sqrt(var / n))
        np.testing.assert_allclose(sample.var(0), var, rtol=0.02)
        assert abs(np.corrcoef(sample[:, 0], np.asarray(x_t)[:, 0])[0, 1]) < 0.01
        mean_only, _ = renoise_step(schedule, x0_hat, x_t[:1], t, t_prev)
        np.testing.assert_allclose(mean_only[0], mean, rtol=1e-6)


def test_renoise_step_last_step_eps_prediction_and_clipping(schedule):
    x_t = jnp.asarray([[0.3, -2.0, 1.5]], jnp.float32)
    pred = jnp.asarray([[0.5, -1.7, 2.0]], jnp.float32)
    noise = jnp.ones_like(x_t)
    last, x0 = renoise_step(schedule, pred, x_t, 0, -1, noise)           # t_prev < 0: x0_hat
    np.testing.assert_array_equal(last, np.clip(pred, -1, 1))
    np.testing.assert_array_equal(x0, last)
    raw, _ = renoise_step(schedule, pred, x_t, 0, -1, noise, clip_x0=False)
    np.testing.assert_array_equal(raw, pred)
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    t, t_prev = 300, 280
    eps = pred
    want_x0 = (np.asarray(x_t) - np.sqrt(1 - abar[t]) * np.asarray(eps)) / np.sqrt(abar[t])
    got, got_x0 = renoise_step(schedule, eps, x_t, t, t_prev, noise, prediction="eps",
                               clip_x0=False)
    np.testing.assert_allclose(got_x0, want_x0, rtol=1e-5)
    np.testing.assert_allclose(got, np.sqrt(abar[t_prev]) * want_x0 + np.sqrt(1 - abar[t_prev]),
                               rtol=1e-5)


def _toy_denoiser(x_t, t):
    """An x0-prediction that depends on x_t and t; aux = the prediction."""
    pred = jnp.tanh(0.7 * x_t + 0.001 * t[:, None].astype(jnp.float32))
    return pred, {"pred": pred}


def test_renoise_sample_is_the_loop_of_renoise_steps(schedule):
    """The chunked jitted loop against a Python loop on DDIM's grid, with the documented
    per-step noise fold_in(rng, t)."""
    x_T = jax.random.normal(jax.random.PRNGKey(3), (4, 5))
    rng = jax.random.PRNGKey(4)
    out = renoise_sample(_toy_denoiser, schedule, x_T, rng, 7, chunk_size=3, progress=False)
    ts = list(range(6 * (1000 // 7), -1, -(1000 // 7)))
    x = x_T

    @jax.jit
    def step(x, t, t_prev):
        pred, aux = _toy_denoiser(x, jnp.full((4,), t, jnp.int32))
        noise = jax.random.normal(jax.random.fold_in(rng, t), x.shape)
        return renoise_step(schedule, pred, x, t, t_prev, noise)[0], aux
    for i, t in enumerate(ts):
        x, aux = step(x, t, ts[i + 1] if i + 1 < len(ts) else -1)
    np.testing.assert_allclose(out.x0, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.aux["pred"], aux["pred"], rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="rng"):
        renoise_sample(_toy_denoiser, schedule, x_T, None, 7, progress=False)


def test_renoise_sampler_with_the_exact_denoiser_of_gaussian_data_halves_the_variance(
        schedule):
    """x0 ~ N(0, 1): the Bayes-optimal x0_hat = sqrt(abar_t) x_t. Eq. 6 then gives
    Var x_prev = abar_prev abar_t Var x_t + 1 - abar_prev (the recursion the samples must
    follow), and the output sqrt(abar_t0) x_t0 has variance < 1: the fixed point
    1 - abar/(1 + abar) -> 1/2 with fine steps. DDIM-50 keeps it near 1 (README)."""
    def exact(x_t, t):
        pred = schedule.sqrt_alphas_cumprod[t][:, None] * x_t
        return pred, pred

    n, steps = 40_000, 50
    x_T = jax.random.normal(jax.random.PRNGKey(12), (n, 2))
    out = renoise_sample(exact, schedule, x_T, jax.random.PRNGKey(13), steps, clip_x0=False,
                         progress=False)
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    ts = list(range((steps - 1) * (1000 // steps), -1, -(1000 // steps)))
    var = 1.0
    for t, t_prev in zip(ts[:-1], ts[1:]):
        var = abar[t_prev] * abar[t] * var + 1.0 - abar[t_prev]
    var *= abar[ts[-1]]
    assert 0.45 < var < 0.5
    np.testing.assert_allclose(np.var(np.asarray(out.x0), axis=0), var, rtol=0.03)
    ddim = ddim_sample(exact, schedule, x_T, None, steps, prediction="x0", clip_x0=False,
                       progress=False)
    assert np.all(np.var(np.asarray(ddim.x0), axis=0) > 0.9)


# ------------------------------------------------------------------ guidance


def test_guidance_mix_is_the_formula_and_scale_one_is_the_conditional():
    def cond(x, t):
        return 2.0 * x, {"s": x + 1.0}

    def uncond(x, t):
        return -x, {"s": 3.0 * x}

    def never(x, t):
        raise AssertionError("w = 1 must not call the unconditional denoiser")

    x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 4)), jnp.float32)
    t = jnp.zeros((3,), jnp.int32)
    pred, aux = GuidedDenoiser(cond=cond, uncond=uncond, scale=2.5)(x, t)
    np.testing.assert_allclose(pred, -x + 2.5 * (2.0 * x + x), rtol=1e-6)
    np.testing.assert_allclose(aux["s"], 3.0 * x + 2.5 * (x + 1.0 - 3.0 * x), rtol=1e-6)
    zero = GuidedDenoiser(cond=cond, uncond=uncond, scale=0.0)(x, t)
    np.testing.assert_array_equal(zero[0], -x)
    one = GuidedDenoiser(cond=cond, uncond=never, scale=1.0)(x, t)
    np.testing.assert_array_equal(one[0], 2.0 * x)
    assert guidance_mix(None, (x, "c"), 1.0) == (x, "c")


def test_guided_samplers_with_scale_one_equal_the_unguided_ones_exactly(schedule):
    x_T = jax.random.normal(jax.random.PRNGKey(6), (3, 5))
    rng = jax.random.PRNGKey(7)
    guided = GuidedDenoiser(cond=_toy_denoiser, uncond=lambda x, t: (x, {"pred": x}),
                            scale=1.0)
    for sample in (lambda fn: ddim_sample(fn, schedule, x_T, rng, 10, 0.5, prediction="x0",
                                          progress=False),
                   lambda fn: renoise_sample(fn, schedule, x_T, rng, 10, progress=False)):
        a, b = sample(guided), sample(_toy_denoiser)
        np.testing.assert_array_equal(a.x0, b.x0)
        np.testing.assert_array_equal(a.aux["pred"], b.aux["pred"])


# ------------------------------------------------------------------ the dfm family


@pytest.fixture(scope="module")
def smoke():
    """(params, a train batch) of the smoke config's network: every family below has the
    same parameter shapes (the options change no layer)."""
    config = get_config("smoke")
    family = get_family(config)
    batch = next(data.make_iterator(config, "train"))
    return jax.jit(family.init_params)(jax.random.PRNGKey(0), batch), batch


def _family(**keys):
    """(config, family) of the smoke config with `keys` ('section__key': value)."""
    config = get_config("smoke")
    for key, value in keys.items():
        section, leaf = key.split("__")
        config[section][leaf] = value
    check_config(config)
    return config, get_family(config)


def _other_context(views: ObservationTuple) -> ObservationTuple:
    """The same tuples with a different context (new pixels, other patch rows)."""
    obs = np.asarray(views.ctxt.obs)
    ctxt = View(jnp.asarray(np.random.default_rng(8).standard_normal(obs.shape), obs.dtype),
                jnp.asarray(np.asarray(views.ctxt.phi)[::-1]))
    return ObservationTuple(ctxt=ctxt, trgt=views.trgt, novel=views.novel)


def test_context_dropout_one_never_shows_the_context(smoke):
    params, batch = smoke
    views = ObservationTuple.from_batch(batch)
    other = _other_context(views)
    rng = jax.random.PRNGKey(9)
    for deterministic in (False, True):
        _, family = _family(train__context_dropout=1.0, model__deterministic=deterministic)
        losses = jax.jit(family.per_example_losses, static_argnums=3)
        a, b = losses(params, views, rng, 1.0), losses(params, other, rng, 1.0)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    kept = losses(params, other, rng, 0.0)                  # control: the context matters
    assert not np.allclose(kept[0], a[0])
    _, family = _family(train__context_dropout=1.0)
    grad = jax.jit(jax.grad(lambda o: family.loss_fn(params, {**batch, "ctxt": o}, rng,
                                                     train=True).loss))(batch["ctxt"])
    np.testing.assert_array_equal(grad, 0.0)


def test_context_dropout_drops_each_context_with_its_probability():
    """0: no mask at all (the plain loss, no key drawn); p: a fraction p; 1: every one."""
    rng = jax.random.PRNGKey(10)
    assert context_keep(rng, 8, 0.0) is None
    keep = context_keep(rng, 20000, 0.3)
    assert keep.shape == (20000,) and keep.dtype == jnp.bool_
    assert abs(float(jnp.mean(~keep)) - 0.3) < 0.015
    assert not np.asarray(context_keep(rng, 64, 1.0)).any()


def test_family_sampler_options(smoke):
    """eval.guidance_scale = 1 samples with the plain denoiser; w = 2 with
    diffusion.dynamic_threshold mixes the conditional and null-context predictions, then
    thresholds O_hat (S mixed, not thresholded); eval.sampler = renoise runs
    `renoise_sample`."""
    params, batch = smoke
    views = ObservationTuple.from_batch(batch)
    config, family = _family(train__context_dropout=0.1)
    rng = jax.random.PRNGKey(11)
    key_x, key_s = jax.random.split(rng)
    x_T = jax.random.normal(key_x, views.trgt.obs.shape, jnp.float32)
    plain = jax.tree_util.Partial(family._denoise, params, views.ctxt, views.trgt.phi)
    null = jax.tree_util.Partial(family._denoise_null, params, views.ctxt, views.trgt.phi)
    steps, clip = config.eval.sample_steps, config.diffusion.clip_x0
    base = family.sample_signals(params, views, rng)
    want = ddim_sample(plain, family.schedule, x_T, key_s, steps, 0.0, prediction="x0",
                       clip_x0=clip, progress=False).aux
    np.testing.assert_array_equal(base, want)

    family.config.eval.guidance_scale = 2.0
    family.config.diffusion.dynamic_threshold = 0.9
    guided_fn = family.sampler_denoiser(params, views.ctxt, views.trgt.phi)
    call = jax.jit(lambda fns, x, t: [fn(x, t) for fn in fns])
    t, x_t = jnp.full((8,), 7, jnp.int32), 3.0 * x_T
    (pc, sc), (pu, su), (pred, signal) = call([plain, null, guided_fn], x_t, t)
    guided = pu + 2.0 * (pc - pu)
    np.testing.assert_allclose(signal, su + 2.0 * (sc - su), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred, dynamic_threshold(guided, 0.9), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(family.operator.apply(signal, views.trgt.phi), guided,
                               rtol=1e-4, atol=1e-5)          # a linear forward model

    family.config.eval.guidance_scale = 1.0
    family.config.diffusion.dynamic_threshold = 0.0
    family.config.eval.sampler = "renoise"
    renoised = family.sample_signals(params, views, rng)
    want = renoise_sample(plain, family.schedule, x_T, key_s, steps, prediction="x0",
                          clip_x0=clip, progress=False).aux
    np.testing.assert_array_equal(renoised, want)
    assert renoised.shape == base.shape and not np.allclose(renoised, base)


def test_new_keys_have_rules():
    ok = get_config("smoke")
    ok.eval.sampler, ok.eval.guidance_scale, ok.train.context_dropout = "renoise", 2.0, 0.1
    ok.diffusion.dynamic_threshold = 0.95
    check_config(ok)
    for key, value, match in [("eval.guidance_scale", 2.0, "train.context_dropout > 0"),
                              ("eval.guidance_scale", -1.0, "eval.guidance_scale=-1.0"),
                              ("eval.sampler", "ancestral", "renoise"),
                              ("diffusion.dynamic_threshold", 1.5, "percentile"),
                              ("train.context_dropout", 1.5, "train.context_dropout")]:
        c = get_config("smoke")
        section, leaf = key.split(".")
        c[section][leaf] = value
        with pytest.raises(UserError, match=match):
            check_config(c)
