"""The given-mask probe (`fdm.models.mask_probe`): masks, wiring into the loss, end to end."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.fdm_common import given_mask_keys
from fdm import run as run_lib
from fdm.diffusion import diffusion_loss
from fdm.errors import UserError
from fdm.models import get_family
from fdm.models.mask_probe import given_masks
from fdm.nn.factorized import FactorizedUNet
from tests.test_fdm_family import SIZE, tiny_config
from tests.test_fdm_model import KW, X, T, init, randomize


def slow_given_masks(labels, k, alpha, shift):
    """The probe's masks written as a loop over pixels (numpy)."""
    b, s, _ = labels.shape
    out = np.full((b, s, s, k), (1.0 - alpha) / k)
    for n in range(b):
        for i in range(s):
            for j in range(s):
                out[n, i, j, labels[n, (i - shift) % s, (j - shift) % s]] += alpha
    return out


@pytest.mark.parametrize("alpha,shift", [(1.0, 0), (1.0, 2), (0.5, 1), (0.0, 3)])
def test_given_masks_match_a_pixel_loop_and_sum_to_one(alpha, shift):
    labels = np.random.default_rng(0).integers(0, 3, (2, 7, 7))
    m = given_masks(jnp.asarray(labels), 3, alpha, shift)
    np.testing.assert_allclose(m, slow_given_masks(labels, 3, alpha, shift), atol=1e-6)
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-6)


def test_decoding_with_the_generated_masks_reproduces_the_model():
    model = FactorizedUNet(**KW, num_masks=3)
    params = randomize(init(model), seed=4)
    out = model.apply(params, X, T)
    given = model.apply(params, X, T, masks=out.masks)
    np.testing.assert_allclose(given.eps, out.eps, atol=1e-5)
    np.testing.assert_array_equal(given.masks, out.masks)


def test_given_masks_bypass_the_mask_generator():
    model = FactorizedUNet(**KW, num_masks=2)
    params = randomize(init(model), seed=5)
    masks = jax.nn.one_hot((X[..., 0] > 0).astype(jnp.int32), 2)
    other = dict(params["params"], mask_generator=randomize(
        params["params"]["mask_generator"], seed=6))
    a = model.apply(params, X, T, masks=masks).eps
    b = model.apply({"params": other}, X, T, masks=masks).eps
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, model.apply(params, X, T).eps, atol=1e-3)


def probe_config(**model):
    c = given_mask_keys(tiny_config())
    c.model.update(model)
    c.train.update(num_steps=2, ema_decay=0.9, log_every=1, checkpoint_every=2, image_every=2)
    c.eval.update(at_end=True)
    return c


def test_probe_loss_feeds_the_decoder_masks_built_from_the_ground_truth():
    family = get_family(probe_config(given_mask_alpha=0.7, given_mask_shift=1))
    params = randomize(family.init_params(jax.random.PRNGKey(0),
                                          {"image": jnp.zeros((1, SIZE, SIZE, 3))}))
    rng = np.random.default_rng(2)
    batch = {"image": jnp.asarray(rng.uniform(-1, 1, (4, SIZE, SIZE, 3)), jnp.float32),
             "mask": jnp.asarray(rng.integers(0, 3, (4, SIZE, SIZE)), jnp.int32)}
    masks = jnp.asarray(slow_given_masks(np.asarray(batch["mask"]), 3, 0.7, 1), jnp.float32)

    def reference_denoiser(x_t, t):
        return family.model.apply({"params": params}, x_t, t, masks=masks).eps, None

    key = jax.random.PRNGKey(3)
    got = family.per_example_loss(params, batch, key, train=False).loss
    want = diffusion_loss(family.schedule, reference_denoiser, batch["image"],
                          jax.random.split(key)[0]).loss
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_probe_trains_and_writes_its_losses(tmp_path):
    workdir = str(tmp_path / "wd")
    run_lib.run(probe_config(given_mask_alpha=0.0), workdir, "train")
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["step"] == 2 and results["given_mask_alpha"] == 0.0
    assert np.isfinite(results["eval_loss"]) and np.isfinite(results["train_loss"])
    assert not os.path.exists(os.path.join(workdir, "samples"))
    with pytest.raises(UserError, match="cannot sample"):
        run_lib.run(probe_config(), workdir, "sample")


def test_probe_reports_the_loss_per_quarter_of_t(tmp_path):
    """eval_loss_q{k} are means over the eval examples whose t falls in quarter k: their
    count-weighted mean is eval_loss (recomputed here from the same fixed keys)."""
    from fdm.data import make_iterator
    family = get_family(probe_config(decoding="concat"))
    params = randomize(family.init_params(jax.random.PRNGKey(0),
                                          {"image": jnp.zeros((1, SIZE, SIZE, 3))}))
    metrics = family.evaluate(params, make_iterator(family.config, "eval"), str(tmp_path),
                              jax.random.PRNGKey(5))
    losses, t, _ = family._example_losses(params, make_iterator(family.config, "eval"),
                                          family.config.eval.num_examples,
                                          jax.random.fold_in(jax.random.PRNGKey(5), 0))
    quarter = t * 4 // family.schedule.num_timesteps
    assert metrics["eval_loss"] == pytest.approx(losses.mean(), rel=1e-6)
    for k in range(4):
        if np.any(quarter == k):
            assert metrics[f"eval_loss_q{k}"] == pytest.approx(losses[quarter == k].mean(),
                                                               rel=1e-6)
        else:
            assert f"eval_loss_q{k}" not in metrics               # no NaN in results.json


def test_concat_control_sees_the_same_masks_through_one_decoder():
    """decoding='concat' with given masks: one decoder, masks as extra channels; the output
    depends on the given masks and not on the mask generator."""
    family = get_family(probe_config(decoding="concat"))
    params = randomize(family.init_params(jax.random.PRNGKey(0),
                                          {"image": jnp.zeros((1, SIZE, SIZE, 3))}))
    assert "decoder" in params and "decoder_1" not in params
    labels = jnp.asarray(np.random.default_rng(3).integers(0, 3, (2, SIZE, SIZE)))
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, SIZE, SIZE, 3)), jnp.float32)
    t = jnp.array([1, 5])
    eps = lambda m: family.apply_model(params, x, t, masks=given_masks(m, 3))[0]
    assert not np.allclose(eps(labels), eps((labels + 1) % 3), atol=1e-4)


@pytest.mark.parametrize("model,named", [
    (dict(given_mask_alpha=1.5), "given_mask_alpha"),
    (dict(hierarchical=True), "hierarchical"),
    (dict(num_masks=2), "num_regions")])
def test_probe_rejects_bad_settings_in_one_line(model, named):
    with pytest.raises(UserError, match=named):
        get_family(probe_config(**model))
