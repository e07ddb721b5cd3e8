"""Single-image motion through a splatting warp (seed 003 brief T3; fdm.forward.motion,
fdm.data.inverse_toys.motion, configs/forward_motion.py): the tuples against exact
shifts, their determinism and uniform flows, the scores on constructed sample sets
(uniform, collapsed on one flow, collapsed on no motion), the exact denoiser through
DDIM-50 (the sampler's floor), the family's S = (O^ctxt, S_m), and the smoke config
through the command line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.forward_motion import get_config
from fdm import data
from fdm.data import inverse_toys
from fdm.diffusion import DiffusionSchedule, ddim_sample
from fdm.errors import UserError
from fdm.forward import View, get_problem
from fdm.forward import motion as mo
from fdm.models import check_config, get_family
from tests import helpers

SCORES = {"flow_tv", "flow_tv_max", "flow_tv_floor", "still_fraction", "mean_flow_norm",
          "flow_rmse", "given_target_flow_rmse", "given_target_accuracy",
          "eval_loss_trgt", "eval_loss_novel"}
SAMPLES = 256


def _signals(flow_index: np.ndarray, seed: int = 0) -> np.ndarray:
    """Signals [N, M, 16, 16, 5]: context n's texture (one per row) with the flows
    FLOWS[flow_index] (int [N, M])."""
    n, m = flow_index.shape
    texture = mo.textures(np.random.default_rng(seed), n)
    flows = mo.flow_fields(flow_index.reshape(-1)).reshape(n, m, 16, 16, 2)
    return np.concatenate([np.broadcast_to(texture[:, None], (n, m, 16, 16, 3)), flows], -1)


def _contexts(signals: np.ndarray) -> View:
    return View(signals[:, 0, ..., :3], np.zeros(len(signals), np.float32))


# ------------------------------------------------------------------ data


def test_tuples_are_exact_shifts_of_the_context_and_the_operator_reproduces_them():
    config = get_config("smoke")
    op = get_problem("motion").operator
    for split in data.SPLITS:
        arrays = data.load_split_arrays(config, split)
        signal, n = arrays["signal"], len(arrays["signal"])
        assert signal.shape == (n, 16, 16, 5) and signal.dtype == np.float32
        np.testing.assert_array_equal(arrays["ctxt"], signal[..., :3])
        flow = signal[..., 3:]
        assert np.all(flow == flow[:, :1, :1])                       # uniform fields
        index = mo.nearest_flow(flow[:, 0, 0])
        np.testing.assert_array_equal(flow[:, 0, 0], mo.FLOWS[index])
        for view, phi in (("ctxt", 0.0), ("trgt", 1.0), ("novel", 0.5)):
            obs = arrays[view]
            assert obs.shape == (n, 16, 16, 3) and obs.dtype == np.float32
            assert arrays[f"{view}_phi"].dtype == np.float32
            assert np.all(arrays[f"{view}_phi"] == phi)
            for o, s, k in zip(obs, signal, index):                  # np.roll, then zero
                dx, dy = (phi * mo.FLOWS[k]).astype(int)
                expected = np.roll(s[..., :3], (dy, dx), axis=(0, 1))
                if dy:
                    expected[(slice(0, dy) if dy > 0 else slice(dy, None))] = 0
                if dx:
                    expected[:, (slice(0, dx) if dx > 0 else slice(dx, None))] = 0
                np.testing.assert_array_equal(o, expected)
            out = op.apply(jnp.asarray(signal), jnp.asarray(arrays[f"{view}_phi"]))
            np.testing.assert_allclose(out, obs, atol=1e-6)
    evals = data.load_split_arrays(config, "eval")
    np.testing.assert_array_equal(mo.nearest_flow(evals["signal"][:, 0, 0, 3:]),
                                  np.arange(8) % 4)


def test_tuples_are_deterministic_and_flows_uniform_and_independent_of_the_texture():
    args = dict(root=None, image_size=16, num_train=16000, num_eval=8)
    first = inverse_toys.motion(split="train", seed=0, **args)
    again = inverse_toys.motion(split="train", seed=0, **args)
    other = inverse_toys.motion(split="train", seed=1, **args)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["ctxt"], other["ctxt"])
    assert not np.array_equal(first["ctxt"][:8], inverse_toys.motion(split="eval", seed=0,
                                                                      **args)["ctxt"])
    index = mo.nearest_flow(first["signal"][:, 0, 0, 3:])
    share = np.bincount(index, minlength=4) / len(index)
    assert np.all(np.abs(share - 0.25) < 5 * np.sqrt(0.25 * 0.75 / len(index)))
    texture = first["ctxt"]
    assert abs(texture.std() - mo.TEXTURE_STD) < 0.05 and np.abs(texture).max() <= 1.0
    means = [texture[index == k].mean() for k in range(4)]
    stds = [texture[index == k].std() for k in range(4)]
    assert np.ptp(means) < 0.01 and np.ptp(stds) < 0.01            # same texture law


def test_the_target_identifies_the_flow():
    """Every texture's four targets differ clearly: the posterior given the target is one
    flow (what Eq. 8 trains), given the context alone uniform."""
    ctxt = data.load_split_arrays(get_config("smoke"), "eval")["ctxt"]
    targets = np.stack([mo.observe(ctxt, np.full(len(ctxt), k), 1.0) for k in range(4)], 1)
    rms = np.sqrt(np.mean((targets[:, :, None] - targets[:, None]) ** 2, axis=(3, 4, 5)))
    assert rms[:, ~np.eye(4, dtype=bool)].min() > 0.2


def test_bad_data_options_are_user_errors():
    config = get_config("smoke")
    config.data.image_size = 8
    with pytest.raises(UserError, match="data.image_size=8 is invalid for motion"):
        data.load_split_arrays(config, "train")
    with pytest.raises(UserError, match="data.num_eval=0"):
        inverse_toys.motion(None, 16, "eval", num_train=4, num_eval=0, seed=0)


# ------------------------------------------------------------------ scores


def test_uniform_samples_score_zero_tv_and_full_motion():
    balanced = np.tile(np.repeat(np.arange(4), SAMPLES // 4), (4, 1))
    signals = _signals(balanced)
    out = mo.score(signals, _contexts(signals))
    assert out["flow_tv"] == out["flow_tv_max"] == 0.0
    assert out["still_fraction"] == 0.0 and out["flow_rmse"] == 0.0
    assert out["mean_flow_norm"] == pytest.approx(2.0)
    assert out["flow_tv_floor"] == pytest.approx(0.043, abs=0.005)
    drawn = _signals(np.random.default_rng(1).integers(0, 4, (4, SAMPLES)))
    assert mo.score(drawn, _contexts(drawn))["flow_tv"] <= 0.10
    noisy = signals.copy()
    noisy[..., 3:] += 0.3 * np.random.default_rng(2).standard_normal(noisy[..., 3:].shape)
    again = mo.score(noisy, _contexts(noisy))
    assert again["flow_tv"] == 0.0                                  # the mean is robust
    assert again["flow_rmse"] == pytest.approx(0.3 * np.sqrt(2), rel=0.02)


def test_collapsed_samples_score_the_expected_tv():
    one = _signals(np.zeros((4, SAMPLES), int))                     # all "right"
    out = mo.score(one, _contexts(one))
    assert out["flow_tv"] == out["flow_tv_max"] == pytest.approx(0.75)
    assert out["still_fraction"] == 0.0
    still = one.copy()
    still[..., 3:] = 0.0                                            # the deterministic collapse
    out = mo.score(still, _contexts(still))
    assert out["flow_tv"] == pytest.approx(1.0) and out["still_fraction"] == 1.0
    assert out["mean_flow_norm"] == 0.0 and out["flow_rmse"] == pytest.approx(2.0)
    half = one.copy()
    half[:, SAMPLES // 2:, ..., 3:] = 0.0                           # half right, half still
    assert mo.score(half, _contexts(half))["flow_tv"] == pytest.approx(0.75)
    border = one.copy()
    border[:, :, :2, :, 3:] = -50.0                                 # outside the interior
    assert mo.score(border, _contexts(border))["flow_rmse"] == 0.0


def test_given_target_scores():
    truth = _signals(np.arange(8)[None] % 4)[0]
    assert mo.score_given_target(truth, None, truth) == {"given_target_flow_rmse": 0.0,
                                                   "given_target_accuracy": 1.0}
    still = truth.copy()
    still[..., 3:] = 0.0
    out = mo.score_given_target(still, None, truth)
    assert out["given_target_flow_rmse"] == pytest.approx(2.0)
    assert out["given_target_accuracy"] == 0.0
    wrong = np.concatenate([truth[:, ..., :3], mo.flow_fields((np.arange(8) + 1) % 4)], -1)
    assert mo.score_given_target(wrong, None, truth)["given_target_accuracy"] == 0.0


def _exact_denoiser(ctxt, targets, alphas_cumprod, x_t, t):
    """E[O^trgt | ctxt, x_t] and E[S | ctxt, x_t] over the 4 equally likely flows (targets
    [B, 4, 16, 16, 3]): the Bayes-optimal x0 denoiser (a `ddim_sample` denoiser)."""
    abar = alphas_cumprod[t][:, None]
    d2 = jnp.sum((x_t[:, None] - jnp.sqrt(abar)[..., None, None, None] * targets) ** 2,
                 axis=(2, 3, 4))
    weights = jax.nn.softmax(-d2 / (2 * (1 - abar)), axis=1)
    flow = jnp.einsum("bk,kc->bc", weights, jnp.asarray(mo.FLOWS, jnp.float32))
    field = jnp.broadcast_to(flow[:, None, None, :], ctxt.shape[:-1] + (2,))
    return (jnp.einsum("bk,bkhwc->bhwc", weights, targets),
            jnp.concatenate([ctxt, field], axis=-1))


def test_exact_denoiser_through_ddim_50_samples_uniform_flows():
    """The sampler's floor: x0 DDIM-50 on cosine T = 1000 with the Bayes-optimal denoiser
    samples the four flows uniformly."""
    schedule = DiffusionSchedule.create("cosine", 1000)
    ctxt = data.load_split_arrays(get_config("smoke"), "eval")["ctxt"][:4]
    out = []
    for i, c in enumerate(ctxt):
        targets = np.stack([mo.observe(c[None], np.array([k]), 1.0)[0] for k in range(4)])
        fn = jax.tree_util.Partial(
            _exact_denoiser, jnp.broadcast_to(jnp.asarray(c), (SAMPLES, 16, 16, 3)),
            jnp.broadcast_to(jnp.asarray(targets), (SAMPLES, 4, 16, 16, 3)),
            jnp.asarray(schedule.alphas_cumprod))
        x_T = jax.random.normal(jax.random.PRNGKey(i), (SAMPLES, 16, 16, 3))
        out.append(np.asarray(ddim_sample(fn, schedule, x_T, None, 50, 0.0, prediction="x0",
                                          progress=False).aux))
    scores = mo.score(np.stack(out), View(ctxt, np.zeros(4, np.float32)))
    assert scores["still_fraction"] == 0.0 and scores["flow_rmse"] < 1e-3
    assert scores["flow_tv"] <= 0.10


def test_figures_show_the_warp_and_the_motion():
    truth = _signals(np.arange(4)[None])[0]
    images = mo.render(truth)
    assert images.shape == (4, 16, 32, 3)
    np.testing.assert_allclose(images[..., :16, :],
                               mo.observe(truth[..., :3], np.arange(4), 1.0), atol=1e-6)
    np.testing.assert_allclose(images[0, 0, 16], [1.0, -1.0, -1.0])      # right: red
    np.testing.assert_allclose(images[1, 0, 16], [-1.0, 1.0, 1.0])       # left: cyan
    assert len({tuple(images[k, 0, 16]) for k in range(4)}) == 4
    context = mo.canvas_image(truth[..., :3])
    assert context.shape == (4, 16, 32, 3) and np.all(context[..., 16:, :] == 1.0)
    half = mo.flow_colour(np.array([[1.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(half, [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # pale red, white


# ------------------------------------------------------------------ family and configs


def test_variants_differ_only_where_named():
    base, det, smoke = get_config(), get_config("deterministic"), get_config("smoke")
    for c in (base, det, smoke):
        check_config(c)
        assert c.model.forward == "motion" and c.data.dataset == "motion"
        assert c.model.network == "unet" and c.train.novel_weight == 1.0
    assert det.model.deterministic and not base.model.deterministic
    assert base.eval.num_contexts == 4 and base.eval.samples_per_context == 256
    problem = get_problem("motion")
    assert problem.signal_shape == (16, 16, 5) and problem.network_shape() == (16, 16, 2)


def test_the_denoiser_outputs_the_flow_and_s_carries_the_context():
    config = get_config("smoke")
    family, batch, params, views, signal = helpers.forward_family_signal(config)
    assert signal.shape == (8, 16, 16, 5)
    np.testing.assert_array_equal(signal[..., :3], batch["ctxt"])
    np.testing.assert_array_equal(family.given_target_signal(params, views)[..., :3],
                                  batch["ctxt"])
    grads = jax.jit(jax.grad(
        lambda p: family.loss_fn(p, batch, jax.random.PRNGKey(1), True).loss))(params)
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)) > 0
    out = jax.tree_util.tree_leaves(params["decoder"]["conv_out"])
    assert out[0].shape[-1] == 2                                     # out_ch = 2: S_m
    config.model.deterministic = True                                # the target is ignored
    det = get_family(config)
    np.testing.assert_array_equal(det.given_target_signal(params, views),
                                  det.deterministic_signal(params, views.ctxt, views.trgt))


def test_smoke_config_trains_evaluates_and_samples_through_the_command_line(tmp_path):
    results, samples, figure = helpers.run_forward_smoke(
        "configs/forward_motion.py:smoke", tmp_path / "wd", SCORES, "forward_motion_smoke")
    assert 0.0 <= results["flow_tv"] <= 1.0 and 0.0 <= results["still_fraction"] <= 1.0
    assert samples["signals"].shape == (4, 16, 16, 16, 5)
    np.testing.assert_allclose(samples["signals"][..., :3],
                               np.broadcast_to(samples["ctxt"][:, None], (4, 16, 16, 16, 3)))
    assert figure["signals"].shape == (2, 8, 16, 16, 5)
