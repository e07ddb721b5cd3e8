"""Diffusion with forward models (fdm.models.dfm) on the linear-Gaussian tuples
(fdm.data.inverse_toys): data consistency, the losses Eq. 8 / 9, sampling, and one
train + evaluate + sample step through fdm.run on the smoke config."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.forward_linear_gaussian import get_config
from fdm import data, run
from fdm.diffusion import diffusion_loss
from fdm.errors import UserError
from fdm.forward import ObservationTuple
from fdm.forward import linear_gaussian as lg
from fdm.models import check_config, get_family

SCORES = {"w2", "w2_max", "trace_ratio", "mean_error", "context_rmse", "w2_posterior_mean",
          "w2_prior", "eval_loss_trgt", "eval_loss_novel"}


@pytest.fixture(scope="module")
def smoke():
    """(config, family, params, a train batch) of the smoke variant."""
    config = get_config("smoke")
    family = get_family(config)
    batch = next(data.make_iterator(config, "train"))
    return config, family, family.init_params(jax.random.PRNGKey(0), batch), batch


def test_tuples_are_the_forward_model_of_their_signal():
    config = get_config("smoke")
    arrays = data.load_split_arrays(config, "train")
    op = lg.operator()
    for view in ("ctxt", "trgt", "novel"):
        np.testing.assert_allclose(op.apply(arrays["signal"], arrays[f"{view}_phi"]),
                                   arrays[view], rtol=1e-5, atol=1e-5)
    assert arrays["ctxt"].shape == (64, 4) and arrays["trgt"].shape == (64, 64)
    eval_arrays = data.load_split_arrays(config, "eval")
    assert not np.allclose(eval_arrays["signal"], arrays["signal"][:4])
    batches = list(data.make_iterator(config, "eval"))
    assert len(batches) == 1 and batches[0]["valid"].all()      # no 'image' key needed
    config.data.image_size = 16
    with pytest.raises(UserError, match="data.image_size=16"):
        data.load_split_arrays(config, "train")


def test_losses_are_eq8_plus_weighted_eq9(smoke):
    config, family, params, batch = smoke
    rng = jax.random.PRNGKey(1)
    views = ObservationTuple.from_batch(batch)
    loss_trgt, loss_novel = jax.jit(family.per_example_losses)(params, views, rng)
    out = jax.jit(lambda p, b: family.loss_fn(p, b, rng, train=True))(params, batch)
    expected = np.mean(loss_trgt) + config.train.novel_weight * np.mean(loss_novel)
    np.testing.assert_allclose(out.loss, expected, rtol=1e-6)
    grads = jax.jit(jax.grad(lambda p: family.loss_fn(p, batch, rng, train=True).loss))(params)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)) > 0


@pytest.mark.parametrize("floor", [0.0, 1.0])
def test_min_snr_weights_eq8_alone_by_the_clamped_snr_of_its_t(smoke, floor):
    """diffusion.loss='min_snr': with the same rng (same t and eps), each example's L^trgt
    is the simple one times clip(SNR_t, floor, gamma), SNR from the betas in float64 at
    the t that `diffusion_loss` draws from that rng; L^novel is unchanged."""
    config, family, params, batch = smoke
    views, rng = ObservationTuple.from_batch(batch), jax.random.PRNGKey(3)
    weighted_config = get_config("smoke")
    weighted_config.diffusion.loss, weighted_config.diffusion.min_snr_gamma = "min_snr", 2.0
    weighted_config.diffusion.min_snr_floor = floor
    weighted = get_family(weighted_config)
    simple_trgt, simple_novel = jax.jit(family.per_example_losses)(params, views, rng)
    min_snr_trgt, min_snr_novel = jax.jit(weighted.per_example_losses)(params, views, rng)
    np.testing.assert_array_equal(min_snr_novel, simple_novel)
    t = np.asarray(diffusion_loss(family.schedule, lambda x, t: (x, None), views.trgt.obs,
                                  rng, prediction="x0").t)
    abar = np.cumprod(1.0 - np.asarray(family.schedule.betas, np.float64))
    weights = np.clip(abar / (1.0 - abar), floor, 2.0)[t]
    assert (weights < 2.0).any() and (weights == 2.0).any()       # both sides of the clamp
    assert (weights == 1.0).any() == (floor == 1.0)               # the floor reached
    # two float32 losses and a float32 abar (cumprod of <= T factors) against float64
    np.testing.assert_allclose(np.asarray(min_snr_trgt, np.float64),
                               weights * np.asarray(simple_trgt, np.float64), rtol=5e-4)
    bad = get_config("smoke")
    bad.diffusion.loss = "weighted"
    with pytest.raises(UserError, match="diffusion.loss='weighted'"):
        check_config(bad)


def test_sampled_signal_is_the_last_denoiser_output_and_deterministic_is_context_only(smoke):
    config, family, params, batch = smoke
    views = ObservationTuple.from_batch(batch)
    signals = family.sample_signals(params, views, jax.random.PRNGKey(2))
    assert signals.shape == (8, lg.LATENTS) and np.isfinite(signals).all()
    again = family.sample_signals(params, views, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(signals, again)
    det = family.deterministic_signal(params, views.ctxt, views.trgt)
    t0 = jnp.zeros((8,), jnp.int32)
    manual = family.predict_signal(params, views.ctxt, jnp.zeros_like(views.trgt.obs),
                                   views.trgt.phi, t0)
    np.testing.assert_array_equal(det, manual)


def test_bad_values_are_one_line_user_errors():
    config = get_config("smoke")
    config.model.forward = "no_such_problem"
    with pytest.raises(UserError, match="model.forward='no_such_problem'"):
        check_config(config)
    config = get_config("smoke")
    config.eval.sample_steps = config.diffusion.num_timesteps + 1
    with pytest.raises(UserError, match="eval.sample_steps"):
        check_config(config)


def test_smoke_config_trains_evaluates_and_samples(tmp_path):
    workdir = str(tmp_path / "wd")
    run.run(get_config("smoke"), workdir, "train")        # eval.at_end: evaluate + sample
    results = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert SCORES <= set(results) and results["config"] == "forward_linear_gaussian_smoke"
    assert results["w2_posterior_mean"] == pytest.approx(2.0)
    assert np.isfinite([results[k] for k in SCORES]).all()
    samples = np.load(os.path.join(workdir, "posterior_samples.npz"))
    assert samples["signals"].shape == (2, 16, lg.LATENTS)
    figure = np.load(os.path.join(workdir, "samples", "samples.npz"))
    assert figure["signals"].shape == (2, 8, lg.LATENTS)
    assert os.path.exists(os.path.join(workdir, "samples", "grid.png"))


def test_reuse_samples_scores_the_saved_samples_and_checks_them(tmp_path):
    config = get_config("smoke")
    family = get_family(config)
    params = family.init_params(jax.random.PRNGKey(0), next(data.make_iterator(config, "train")))
    evaluate = lambda: family.evaluate(params, data.make_iterator(config, "eval"), str(tmp_path),
                                       jax.random.PRNGKey(3))
    with pytest.raises(UserError, match="does not exist"):
        config.eval.reuse_samples = True
        evaluate()
    config.eval.reuse_samples = False
    fresh = evaluate()
    path = tmp_path / "posterior_samples.npz"
    saved = dict(np.load(path))
    config.eval.reuse_samples = True
    assert evaluate() == fresh                           # sampling is deterministic anyway
    np.savez(path, **{**saved, "signals": np.repeat(saved["signals"][:, :1], 16, 1)})
    collapsed = evaluate()                                # the file's samples are what is scored
    assert collapsed["trace_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert np.load(path)["signals"].shape == saved["signals"].shape
    config.eval.samples_per_context = 8
    with pytest.raises(UserError, match="holds 16 samples of 2 contexts"):
        evaluate()
    config.eval.samples_per_context = 16
    np.savez(path, **{**saved, "ctxt": saved["ctxt"] + 1.0})
    with pytest.raises(UserError, match="not this config's eval contexts"):
        evaluate()


def test_deterministic_model_samples_one_signal_per_context(tmp_path):
    config = get_config("smoke")
    config.model.deterministic = True
    family = get_family(config)
    batch = next(data.make_iterator(config, "train"))
    params = family.init_params(jax.random.PRNGKey(0), batch)
    metrics = family.evaluate(params, data.make_iterator(config, "eval"), str(tmp_path),
                              jax.random.PRNGKey(3))
    assert metrics["trace_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["w2"] >= 2.0 - 1e-6             # a point mass: W2^2 = |mean err|^2 + tr Sigma
