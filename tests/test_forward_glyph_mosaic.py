"""The glyph mosaic seen through crops (seed 003 brief T2; fdm.forward.glyph_mosaic,
fdm.data.inverse_toys.glyph_mosaic, configs/forward_glyph_mosaic.py): the prior and its
enumerated posterior, the scores on constructed sample sets (exact posterior samples,
the all-mean-glyph samples of a deterministic model, samples that break BL = TR), the
exact denoiser through DDIM-50 (the sampler's floor), the tuples against numpy slicing,
and the smoke config through the command line."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.forward_glyph_mosaic import get_config
from fdm import data
from fdm.diffusion import DiffusionSchedule, ddim_sample
from fdm.errors import UserError
from fdm.forward import View, get_problem
from fdm.forward import glyph_mosaic as gm
from fdm.models import check_config, get_family
from tests import helpers

SCORES = {"observed_accuracy", "coupled_accuracy", "consistency", "tr_tv", "tr_tv_max",
          "tr_tv_floor", "posterior_tv", "valid_rmse", "rmse_tl", "rmse_tr", "rmse_bl",
          "rmse_br", "eval_loss_trgt", "eval_loss_novel"}
SAMPLES = 256


def _tl_contexts() -> View:
    """The TL cells of the signals a = 0..3 (b = 0) at phi (0, 0): obs [4, 8, 8, 1]."""
    signals = gm.prior_signals()[::gm.NUM_GLYPHS]
    phi = np.zeros((4, 2), np.int32)
    return View(gm.crop(signals, phi), phi)


def _samples(tr: np.ndarray, bl: np.ndarray) -> np.ndarray:
    """Mosaics [4, M, 16, 16, 1] with TL = a (row a), BR = (a + 2) mod 4 and the given
    TR, BL glyphs int [4, M]."""
    a = np.broadcast_to(np.arange(4)[:, None], tr.shape)
    return gm.mosaic(np.stack([a, tr, bl, (a + 2) % 4], axis=-1))


# ------------------------------------------------------------------ prior and posterior


def test_prior_enumerates_16_equally_likely_signals_with_the_coupling():
    glyphs = gm.glyphs()
    assert glyphs.shape == (4, 8, 8) and set(np.unique(glyphs)) == {-1.0, 1.0}
    differ = [np.sum(glyphs[i] != glyphs[j]) for i, j in itertools.combinations(range(4), 2)]
    assert min(differ) >= 24
    signals = gm.prior_signals()
    assert signals.shape == (16, 16, 16, 1)
    assert len(np.unique(signals.reshape(16, -1), axis=0)) == 16
    for a, b in itertools.product(range(4), range(4)):
        s = signals[4 * a + b, :, :, 0]
        for cell, glyph in zip(((0, 0), (0, 8), (8, 0), (8, 8)), (a, b, b, (a + 2) % 4)):
            np.testing.assert_array_equal(s[cell[0]:cell[0] + 8, cell[1]:cell[1] + 8],
                                          glyphs[glyph])
    np.testing.assert_array_equal(gm.classify_cells(signals), gm.all_signal_glyphs())
    drawn = data.load_split_arrays(get_config("smoke"), "train")["signal"]
    index = np.argmin(((drawn.reshape(len(drawn), 1, -1) - signals.reshape(1, 16, -1))**2)
                      .sum(-1), axis=1)
    np.testing.assert_array_equal(drawn, signals[index])          # only prior signals
    config = get_config("smoke")
    config.data.num_train = 16000
    big = data.load_split_arrays(config, "train")["signal"]
    counts = np.bincount(np.argmin(((big.reshape(len(big), 1, -1)
                                     - signals.reshape(1, 16, -1))**2).sum(-1), axis=1),
                         minlength=16)
    assert np.all(np.abs(counts / len(big) - 1 / 16) < 0.01)      # 5 sigma at N = 16000


def test_enumerated_posterior_is_brute_force_conditioning():
    signals = gm.prior_signals()
    rng = np.random.default_rng(0)
    for k, phi in zip(rng.integers(0, 16, 6), [(0, 0), (0, 8), (4, 4), (8, 3), (2, 6), (8, 8)]):
        obs = signals[k, phi[0]:phi[0] + 8, phi[1]:phi[1] + 8]
        same = [np.array_equal(s[phi[0]:phi[0] + 8, phi[1]:phi[1] + 8], obs) for s in signals]
        np.testing.assert_allclose(gm.posterior(obs, phi), np.array(same) / np.sum(same))
    tl = gm.posterior(signals[9, :8, :8], (0, 0))                # a = 2: signals 8..11
    np.testing.assert_allclose(tl, np.isin(np.arange(16), [8, 9, 10, 11]) / 4)
    mean = gm.posterior_mean(signals[9, :8, :8], (0, 0))
    np.testing.assert_array_equal(mean[:8, :8, 0], gm.glyphs()[2])
    np.testing.assert_array_equal(mean[8:, 8:, 0], gm.glyphs()[0])
    np.testing.assert_allclose(mean[:8, 8:, 0], gm.glyphs().mean(0))
    np.testing.assert_allclose(mean[8:, :8, 0], gm.glyphs().mean(0))
    with pytest.raises(UserError, match="no crop of a glyph mosaic"):
        gm.posterior(np.zeros((8, 8, 1)), (0, 0))


# ------------------------------------------------------------------ scores


def test_exact_posterior_samples_meet_the_success_bar():
    rng = np.random.default_rng(1)
    tr = rng.integers(0, 4, (4, SAMPLES))
    exact = _samples(tr, tr)
    out = gm.score(exact, _tl_contexts())
    assert out["observed_accuracy"] == out["coupled_accuracy"] == out["consistency"] == 1.0
    assert out["tr_tv"] <= 0.10 and out["valid_rmse"] == 0.0
    assert out["rmse_tl"] == out["rmse_tr"] == out["rmse_bl"] == out["rmse_br"] == 0.0
    assert out["posterior_tv"] == pytest.approx(out["tr_tv"])    # TR fixes the signal
    assert out["tr_tv_floor"] == pytest.approx(0.043, abs=0.005)  # the brief's floor ~ .05
    noisy = exact + 0.3 * rng.standard_normal(exact.shape).astype(np.float32)
    again = gm.score(noisy, _tl_contexts())                     # classification is robust
    assert again["consistency"] == 1.0 and again["tr_tv"] == pytest.approx(out["tr_tv"])
    assert again["valid_rmse"] == pytest.approx(0.3, rel=0.02)
    assert again["rmse_bl"] == pytest.approx(0.3, rel=0.02)


def test_all_mean_glyph_samples_score_tv_three_quarters():
    ctxt = _tl_contexts()
    mean = np.stack([np.repeat(gm.posterior_mean(o, p)[None], SAMPLES, 0)
                     for o, p in zip(ctxt.obs, ctxt.phi)])
    out = gm.score(mean, ctxt)
    assert out["tr_tv"] == out["tr_tv_max"] == pytest.approx(0.75)
    assert out["posterior_tv"] == pytest.approx(0.75)
    assert out["observed_accuracy"] == out["coupled_accuracy"] == 1.0
    assert out["valid_rmse"] > 0.1                                # not a mosaic
    assert out["rmse_tl"] == out["rmse_br"] == 0.0 and out["rmse_tr"] > 0.3


def test_samples_that_break_bl_equals_tr_fail_consistency():
    rng = np.random.default_rng(2)
    tr = rng.integers(0, 4, (4, SAMPLES))
    independent = gm.score(_samples(tr, rng.integers(0, 4, (4, SAMPLES))), _tl_contexts())
    assert independent["consistency"] == pytest.approx(0.25, abs=0.05)   # chance
    assert independent["tr_tv"] <= 0.10 and independent["posterior_tv"] > 0.7
    assert independent["valid_rmse"] > 0.1
    shifted = gm.score(_samples(tr, (tr + 1) % 4), _tl_contexts())
    assert shifted["consistency"] == 0.0 and shifted["posterior_tv"] == 1.0
    wrong_br = _samples(tr, tr)
    wrong_br[:, :, 8:, 8:] = gm.glyphs()[3][..., None]               # BR = ring everywhere
    out = gm.score(wrong_br, _tl_contexts())
    assert out["coupled_accuracy"] == 0.25 and out["consistency"] == 1.0


def test_scores_need_tl_contexts():
    ctxt = _tl_contexts()
    with pytest.raises(UserError, match="TL cell"):
        gm.score(np.zeros((4, 2, 16, 16, 1)), View(ctxt.obs, ctxt.phi + 1))


def _exact_denoiser(signals, ctxt_obs, ctxt_phi, trgt_phi, alphas_cumprod, x_t, t):
    """E[crop(S, trgt_phi) | ctxt, x_t] and E[S | ctxt, x_t] by enumeration: the
    Bayes-optimal x0 denoiser of the test protocol (a `ddim_sample` denoiser)."""
    op = gm.operator()
    crops = jax.vmap(lambda phi: op.apply(signals, jnp.broadcast_to(phi, (16, 2))))
    match = jnp.all(jnp.abs(crops(ctxt_phi) - ctxt_obs[:, None]) < 1e-3, axis=(2, 3, 4))
    abar = alphas_cumprod[t][:, None]
    d2 = jnp.sum((x_t[:, None] - jnp.sqrt(abar)[..., None, None, None] * crops(trgt_phi))**2,
                 axis=(2, 3, 4))
    weights = jax.nn.softmax(jnp.where(match, -d2 / (2 * (1 - abar)), -jnp.inf), axis=1)
    signal = jnp.einsum("bk,khwc->bhwc", weights, signals)
    return op.apply(signal, trgt_phi), signal


def test_exact_denoiser_through_ddim_50_meets_the_success_bar():
    """The sampler's floor: the DFM sampling protocol (x0 DDIM-50, cosine T = 1000,
    clipping) with the Bayes-optimal denoiser scores what exact samples score."""
    schedule = DiffusionSchedule.create("cosine", 1000)
    ctxt = _tl_contexts()
    out = []
    for a in range(4):
        fn = jax.tree_util.Partial(
            _exact_denoiser, jnp.asarray(gm.prior_signals()),
            jnp.repeat(jnp.asarray(ctxt.obs[a:a + 1]), SAMPLES, 0),
            jnp.zeros((SAMPLES, 2), jnp.int32),
            jnp.tile(jnp.asarray(gm.TEST_TRGT_PHI, jnp.int32), (SAMPLES, 1)),
            jnp.asarray(schedule.alphas_cumprod))
        x_T = jax.random.normal(jax.random.PRNGKey(a), (SAMPLES, 8, 8, 1))
        out.append(np.asarray(ddim_sample(fn, schedule, x_T, None, 50, 0.0, prediction="x0",
                                          progress=False).aux))
    scores = gm.score(np.stack(out), ctxt)
    assert scores["observed_accuracy"] == scores["coupled_accuracy"] == 1.0
    assert scores["consistency"] == 1.0 and scores["valid_rmse"] < 0.01
    assert scores["tr_tv"] <= 0.08


# ------------------------------------------------------------------ data and configs


def test_tuples_are_crops_of_their_signal():
    config = get_config("smoke")
    op = gm.operator()
    for split in data.SPLITS:
        arrays = data.load_split_arrays(config, split)
        for view in ("ctxt", "trgt", "novel"):
            obs, phi = arrays[view], arrays[f"{view}_phi"]
            assert obs.shape == (len(phi), 8, 8, 1) and phi.dtype == np.int32
            assert phi.min() >= 0 and phi.max() <= 8
            for s, o, (r, c) in zip(arrays["signal"], obs, phi):
                np.testing.assert_array_equal(o, s[r:r + 8, c:c + 8])
            np.testing.assert_array_equal(op.apply(arrays["signal"], phi), obs)
    train = data.load_split_arrays(config, "train")
    assert len(np.unique(train["ctxt_phi"], axis=0)) > 20           # uniform offsets ...
    aligned = np.all(np.isin(np.concatenate([train[f"{v}_phi"] for v in ("ctxt", "trgt",
                                                                        "novel")], 1),
                             (0, 8)), axis=1)
    assert 0.3 < aligned.mean() < 0.8                                # ... and cells (0.5)
    config.data.aligned_fraction = 1.0
    cells = data.load_split_arrays(config, "train")["trgt_phi"]
    assert np.isin(cells, (0, 8)).all() and len(np.unique(cells, axis=0)) == 4
    config.data.aligned_fraction = 1.5
    with pytest.raises(UserError, match="data.aligned_fraction=1.5"):
        data.load_split_arrays(config, "train")
    config.data.aligned_fraction = 0.5
    evals = data.load_split_arrays(config, "eval")
    for view, phi in (("ctxt", (0, 0)), ("trgt", (0, 8)), ("novel", (8, 0))):
        assert (evals[f"{view}_phi"] == phi).all()
    np.testing.assert_array_equal(gm.classify(evals["ctxt"][..., 0]), np.arange(8) % 4)
    config.data.image_size = 8
    with pytest.raises(UserError, match="data.image_size=8 is invalid for glyph_mosaic"):
        data.load_split_arrays(config, "train")


def test_variants_differ_only_where_named():
    base, det, no_novel, unet = (get_config(v) for v in ("", "deterministic", "no_novel",
                                                        "unet"))
    for c in (base, det, no_novel, unet, get_config("smoke")):
        check_config(c)
        assert c.model.forward == "glyph_mosaic" and c.data.dataset == "glyph_mosaic"
    assert det.model.deterministic and not base.model.deterministic
    assert no_novel.train.novel_weight == 0.0 and base.train.novel_weight == 1.0
    assert base.model.network == "mlp" and unet.model.network == "unet"
    assert base.eval.num_contexts == 4 and base.eval.samples_per_context == 256
    assert get_problem("glyph_mosaic").signal_shape == (16, 16, 1)


def test_unet_denoiser_maps_canvases_to_the_signal_image():
    config = get_config("smoke")
    config.model.network = "unet"
    u = config.model.unet
    u.ch, u.ch_mult, u.num_res_blocks, u.num_groups = 8, (1,), 1, 4
    family, batch, params, _, signal = helpers.forward_family_signal(config)
    assert signal.shape == (8, 16, 16, 1)
    grads = jax.jit(jax.grad(
        lambda p: family.loss_fn(p, batch, jax.random.PRNGKey(1), True).loss))(params)
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)) > 0
    config.model.unet.num_groups = 3
    with pytest.raises(UserError, match="model.unet.num_groups=3"):
        check_config(config)
    vector = get_config("smoke")
    vector.model.forward, vector.data.dataset = "linear_gaussian", "linear_gaussian"
    vector.model.network = "unet"
    with pytest.raises(UserError, match="needs an image signal"):
        get_family(vector)


def test_smoke_config_trains_evaluates_and_samples_through_the_command_line(tmp_path):
    results, samples, figure = helpers.run_forward_smoke(
        "configs/forward_glyph_mosaic.py:smoke", tmp_path / "wd", SCORES,
        "forward_glyph_mosaic_smoke")
    assert 0.0 <= results["tr_tv"] <= 0.75 and 0.0 <= results["consistency"] <= 1.0
    assert samples["signals"].shape == (4, 16, 16, 16, 1)
    assert figure["signals"].shape == (2, 8, 16, 16, 1)
