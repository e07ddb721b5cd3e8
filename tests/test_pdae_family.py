"""The PDAE / DiffSiam family (`fdm.models.pdae`, configs/pdae.py) on a tiny frozen DDPM:
g = 0 makes the loss the frozen DM's weighted loss and guided DDIM plain DDIM, bit for
bit; the stage map and segment masks route the gradient; the frozen DM stays out of the
trained state; the SimSiam views; the smoke config end to end through the command line.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddpm as ddpm_configs, pdae as pdae_configs
from fdm import data, run
from fdm.data import factors
from fdm.diffusion import ddim_sample, mean_flat, q_sample
from fdm.diffusion.pdae import pdae_weight, sample_stages, segment_of_dims, stage_of_timestep
from fdm.errors import UserError
from fdm.metrics import probes
from fdm.models import get_family
from fdm.models import simsiam
from fdm.models.pdae import FROZEN_KEY, PDAEFamily
from tests import helpers

T = 10  # the tiny DM's number of timesteps


def tiny_dm_config(num_timesteps: int = T):
    """configs/ddpm.py:factors shrunk: 8x8 factors images, an 8-channel one-level U-Net."""
    c = ddpm_configs.get_config("factors")
    c.data.image_size, c.data.num_train, c.data.num_val, c.data.num_test = 8, 32, 8, 16
    c.model.ch, c.model.ch_mult, c.model.num_groups = 8, (1,), 4
    c.diffusion.num_timesteps = num_timesteps
    c.train.num_steps, c.train.batch_size, c.train.log_every = 1, 8, 1
    c.eval.at_end = False
    return c


@pytest.fixture(scope="module")
def dm_workdir(tmp_path_factory) -> str:
    """A DDPM trained for one step (configs/ddpm.py:factors, shrunk): the frozen DM."""
    workdir = str(tmp_path_factory.mktemp("pdae") / "dm")
    run.run(tiny_dm_config(), workdir)
    return workdir


def smoke_config(dm_workdir: str, **model):
    c = pdae_configs.get_config("smoke")
    c.model.frozen_dm_workdir = dm_workdir
    c.model.update(model)
    return c


def init(family: PDAEFamily, seed: int = 0):
    """(params with the frozen DM merged in, a train batch [8, 8, 8, 3])."""
    batch = next(data.make_iterator(family.config, "train"))
    params = jax.jit(family.init_params)(jax.random.PRNGKey(seed), batch)
    return family.full_params(params), batch


def perturbed(params, scale: float = 0.1, seed: int = 7):
    """params with every leaf of 'decoder' moved by scale * N(0, 1) (g depends on z)."""
    leaves, tree = jax.tree.flatten(params["decoder"])
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    moved = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return {**params, "decoder": jax.tree.unflatten(tree, moved)}


def test_zero_g_loss_is_the_frozen_dms_weighted_loss_bit_for_bit(dm_workdir):
    """At initialisation (g = 0) loss_fn's L_diffusion is lambda_t mean (eps -
    UNet(x_t, t))^2 with the DM called as a plain UNet, per example and in the mean."""
    config = smoke_config(dm_workdir)
    config.train.ssl_weight = 0.0
    family = get_family(config)
    params, batch = init(family)
    rng = jax.random.PRNGKey(3)
    terms = jax.jit(lambda p, x: family.loss_terms(p, x, rng, True))(params, batch["image"])
    out = jax.jit(lambda p, b: family.loss_fn(p, b, rng, True))(params, batch)

    @jax.jit
    def reference(dm_params, x0):
        t, _ = sample_stages(jax.random.fold_in(rng, 0), x0.shape[0], T, 4)
        eps = jax.random.normal(jax.random.fold_in(rng, 1), x0.shape)
        eps_pred = family.unet.apply({"params": dm_params},
                                     q_sample(family.schedule, x0, t, eps), t)
        return pdae_weight(family.schedule, t) * mean_flat(jnp.square(eps - eps_pred))

    expected = reference(params[FROZEN_KEY], batch["image"])
    np.testing.assert_array_equal(terms.diffusion, expected)
    assert float(out.loss) == float(jnp.sum(expected) / expected.shape[0])
    assert float(out.scalars["loss_diffusion"]) == float(out.loss)


def test_guided_ddim_with_zero_g_is_plain_ddim(dm_workdir):
    family = get_family(smoke_config(dm_workdir))
    params, batch = init(family)
    x0 = batch["image"][:4]
    z = family.encode(params, x0)
    x_T = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    ddim = lambda fn: ddim_sample(fn, family.schedule, x_T, None, 5, progress=False).x0  # noqa
    plain = ddim(family.dm_denoiser(params))
    np.testing.assert_array_equal(ddim(family.guided_denoiser(params, z)), plain)
    assert np.max(np.abs(ddim(family.guided_denoiser(perturbed(params), z)) - plain)) > 1e-4


@pytest.mark.parametrize("mode,detach", [("sequential", False), ("hierarchical", False),
                                         ("hierarchical", True)])
def test_only_the_stage_segments_get_gradient(dm_workdir, mode, detach):
    """d L_diffusion / d z at t: nonzero only in the segments g sees at k(t): z_k
    (sequential, or hierarchical with detach_prev), z_1..z_k (hierarchical). (t = 0 is
    left out: s_0 = 0, g does not enter the loss there.)"""
    family = get_family(smoke_config(dm_workdir, segment_mode=mode, detach_prev=detach))
    params, batch = init(family)
    params = perturbed(params)
    x0 = batch["image"]
    t = jnp.asarray([1, 3, 5, 8, 2, 4, 7, 9], jnp.int32)
    k = stage_of_timestep(t, T, 4)
    np.testing.assert_array_equal(k, [1, 2, 3, 4, 1, 2, 3, 4])
    z = family.encode(params, x0)
    eps = jax.random.normal(jax.random.PRNGKey(2), x0.shape)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(family.diffusion_loss(params, x0, z, t, k, eps))))(z)
    seg = np.asarray(segment_of_dims(z.shape[-1], 4))
    for row, stage in zip(np.asarray(grad), np.asarray(k)):
        sees = (seg == stage) if mode == "sequential" or detach else (seg <= stage)
        assert np.all(row[~sees] == 0.0)
        for s in np.unique(seg[sees]):
            assert np.any(row[seg == s] != 0.0), (stage, s)


def test_copy_dm_init_keeps_g_zero(dm_workdir):
    family = get_family(smoke_config(dm_workdir, g_init="copy_dm"))
    params, _ = init(family)
    g, dm = params["decoder"], params[FROZEN_KEY]
    np.testing.assert_array_equal(g["middle"]["res_0"]["conv1"]["kernel"],
                                  dm["middle"]["res_0"]["conv1"]["kernel"])
    np.testing.assert_array_equal(g["decoder"]["conv_out"]["kernel"], 0.0)
    assert "z_proj" in g["middle"]["res_0"]


def test_frozen_dm_errors_are_one_line_with_the_fix(dm_workdir, tmp_path):
    with pytest.raises(UserError, match=r"configs/ddpm.py:factors") as info:
        get_family(smoke_config(str(tmp_path / "missing")))
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(UserError, match=r"diffusion.num_timesteps=10"):
        c = smoke_config(dm_workdir)
        c.diffusion.num_timesteps = 1000
        get_family(c)
    with pytest.raises(UserError, match=r"data.image_size=8"):
        c = smoke_config(dm_workdir)
        c.data.image_size = 16
        get_family(c)
    with pytest.raises(UserError, match=r"model.frozen_dm_diffusers="):
        c = smoke_config("")
        c.model.frozen_dm_diffusers = str(tmp_path)
        get_family(c)
    with pytest.raises(UserError, match=r"exactly one of"):
        c = smoke_config(dm_workdir)
        c.model.frozen_dm_diffusers = str(tmp_path)
        get_family(c)


def test_views_are_deterministic_and_in_range():
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3), minval=-1.0, maxval=1.0)
    spec = simsiam.ViewSpec()
    v1, v2 = simsiam.two_views(jax.random.PRNGKey(1), x, spec)
    w1, _ = simsiam.two_views(jax.random.PRNGKey(1), x, spec)
    np.testing.assert_array_equal(v1, w1)
    assert v1.shape == x.shape and float(jnp.max(jnp.abs(v1 - v2))) > 0.1
    assert float(jnp.min(v1)) >= -1.0 and float(jnp.max(v1)) <= 1.0
    # the full window is the identity; a zero-strength jitter too
    full = simsiam.resized_crop(x[0], jnp.asarray([0.0, 0.0, 1.0, 1.0]))
    np.testing.assert_allclose(full, x[0], atol=1e-5)
    x01 = (x[0] + 1) / 2
    np.testing.assert_allclose(simsiam.color_jitter(jax.random.PRNGKey(2), x01, (0, 0, 0, 0)),
                               x01, atol=1e-5)


def test_colour_views_jitter_colour_only():
    """colour_views: the views' colour jitter per example (deterministic, in range); a
    hue-only jitter keeps each pixel's saturation and value and moves its hue; zero
    strengths are the identity."""
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3), minval=-1.0, maxval=1.0)
    hue_only = simsiam.ViewSpec(jitter=(0.0, 0.0, 0.0, 0.3))
    v = simsiam.colour_views(jax.random.PRNGKey(1), x, hue_only)
    np.testing.assert_array_equal(v, simsiam.colour_views(jax.random.PRNGKey(1), x, hue_only))
    assert float(jnp.min(v)) >= -1.0 and float(jnp.max(v)) <= 1.0
    hsv, hsv_v = (simsiam.rgb_to_hsv((a + 1) / 2) for a in (x, v))
    np.testing.assert_allclose(hsv_v[..., 1:], hsv[..., 1:], atol=1e-5)
    turn = jnp.abs(hsv_v[..., 0] - hsv[..., 0])
    assert float(jnp.max(jnp.minimum(turn, 1 - turn))) > 0.05
    still = simsiam.colour_views(jax.random.PRNGKey(1), x, simsiam.ViewSpec(jitter=(0,) * 4))
    np.testing.assert_allclose(still, x, atol=1e-5)


def test_invariance_metrics_of_an_identity_jitter(dm_workdir):
    """With zero jitter strengths the colour views are the images, so z_invariance_colour is
    1; a whole view moves z (crop, flip), so z_invariance_view is below 1."""
    family = get_family(smoke_config(dm_workdir, aug_jitter=(0.0, 0.0, 0.0, 0.0)))
    params, _ = init(family)
    batches = list(run.eval_batches(family.config))
    metrics = family.invariance_metrics(params, batches, jax.random.PRNGKey(0))
    assert metrics["z_invariance_colour"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["z_invariance_view"] < 0.999


def test_hsv_matches_colorsys():
    import colorsys
    rgb = np.random.default_rng(0).uniform(size=(64, 3)).astype(np.float32)
    hsv = np.asarray(simsiam.rgb_to_hsv(jnp.asarray(rgb)))
    np.testing.assert_allclose(hsv, [colorsys.rgb_to_hsv(*p) for p in rgb], atol=1e-5)
    np.testing.assert_allclose(simsiam.hsv_to_rgb(jnp.asarray(hsv)), rgb, atol=1e-5)


def test_batch_stat_norm_normalises_each_feature_over_the_batch():
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 6)) * 3.0 + 2.0
    norm = simsiam.BatchStatNorm(affine=False)
    y = norm.apply({}, x)
    np.testing.assert_allclose(jnp.mean(y, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(y, 0), 1.0, atol=1e-3)
    heads = simsiam.SimSiamHeads(dim=8, hidden=4, norm="group", groups=2)
    params = heads.init(jax.random.PRNGKey(1), x)
    proj, pred = heads.apply(params, x)
    assert proj.shape == pred.shape == (16, 8)


def test_smoke_config_trains_and_evaluates_through_the_command_line(dm_workdir, tmp_path):
    """configs/pdae.py:smoke: train 2 steps, evaluate and sample at the end; the frozen DM is
    in no checkpoint; the DM step is recorded for later loads. The raw-pixel probes
    (eval.pixel_probes) equal `fdm.metrics.probes.pixel_probes` on the generated images."""
    workdir = str(tmp_path / "pdae")
    args = ("--config=configs/pdae.py:smoke", f"--config.model.frozen_dm_workdir={dm_workdir}",
            f"--workdir={workdir}", "--config.eval.pixel_probes=True")
    proc = helpers.run_main(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["step"] == 2
    for key in ("eval_loss", "eval_loss_zero", "eval_loss_dm", "recon_mse_plain",
                "recon_mse_guided", "probe_shape", "probe_obj_hue", "probe_stripe_seg1",
                "fewshot_stripe_2way_1shot", "z_invariance_colour", "z_invariance_view"):
        assert np.isfinite(results[key]), key
    assert any(k.startswith("z_gain_q") for k in results)
    z = np.load(os.path.join(workdir, "z.npz"))
    assert z["eval_z"].shape == (16, 8) and z["train_z"].shape == (32, 8)
    assert z["eval_shape"].shape == (16,) and not any("pixels" in k for k in z)
    train, test = factors.generate(32, 8, 0, "train"), factors.generate(16, 8, 0, "test")
    fit = lambda d, rows: (d["image"][rows], {n: d[n][rows] for n in factors.FACTORS})
    expected = probes.pixel_probes(fit(train, slice(None, 24)), fit(train, slice(24, None)),
                                   fit(test, slice(None)))
    for name, result in expected.items():
        assert results[f"probe_pixels_{name}"] == result.accuracy, name
    for name in ("recon", "counterfactual", "manipulation"):
        assert os.path.isfile(os.path.join(workdir, "samples", f"{name}.png")), name
    with open(os.path.join(workdir, "frozen_dm.json")) as f:
        assert json.load(f)["step"] == 1
    state = helpers.load_checkpoint(workdir)
    for part in ("params", "ema_params", "opt_state"):
        assert f"'{FROZEN_KEY}'" not in str(jax.tree_util.tree_structure(state[part]))
    assert set(state["params"]) == {"encoder", "decoder", "heads"}
    assert PDAEFamily.inputs(None, workdir) == {"dm_step": 1}   # what a later load reads


def test_simsiam_loss_has_a_finite_gradient_at_a_zero_prediction():
    """A predictor whose ReLU layer is all zero for an example outputs its bias (0 at
    init): the loss's gradient there must be finite (it was NaN with jnp.linalg.norm)."""
    from fdm.diffusion.pdae import simsiam_loss
    p = jnp.zeros((2, 4)).at[1].set(1.0)
    q = jnp.ones((2, 4))
    grad = jax.grad(lambda p: jnp.sum(simsiam_loss(p, p, q, q)))(p)
    assert np.all(np.isfinite(grad))


def test_a_diffusers_checkpoint_is_a_frozen_dm(tmp_path):
    """model.frozen_dm_diffusers: a local diffusers UNet2DModel directory, converted by
    `fdm.nn.convert_diffusers`; the family's DM pass is that U-Net's."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from fdm.nn.convert_diffusers import diffusers_config_from_unet_kwargs
    kwargs = dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                  num_groups=4)
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(**diffusers_config_from_unet_kwargs(kwargs, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(tmp_path / "dm"))
    config = smoke_config("")
    config.model.frozen_dm_diffusers = str(tmp_path / "dm")
    family = get_family(config)
    params, batch = init(family)
    x = torch.tensor(np.asarray(batch["image"]).transpose(0, 3, 1, 2))
    t = np.arange(8, dtype=np.int32)
    with torch.no_grad():
        expected = model(x, torch.tensor(t)).sample.numpy().transpose(0, 2, 3, 1)
    ours = family.dm_forward(params, batch["image"], jnp.asarray(t)).eps
    np.testing.assert_allclose(ours, expected, atol=1e-4)
