"""DDPMFamily on a tiny U-Net: init, loss, gradients, optimisation, evaluate and sample."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs.fdm_common import ddpm_config
from fdm.errors import UserError
from fdm.models import get_family

SIZE = 8


def tiny_config(**sections):
    c = ddpm_config("ddpm_tiny_test", dataset="shapes", data_dir="", image_size=SIZE, ch=4,
                    ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.1,
                    num_steps=2, batch_size=4)
    c.data.update(dict(num_regions=2, num_train=16, num_eval=6, random_flip=False))
    c.model.num_groups = 2
    c.diffusion.update(dict(num_timesteps=20, beta_end=0.2))
    c.train.learning_rate, c.train.grad_clip = 1e-2, 0.0
    c.eval.update(dict(num_examples=5, batch_size=4, sampler="ddim", sample_steps=3))
    for name, values in sections.items():
        c[name].update(values)
    return c


def fixed_batch(n=4, labels=False):
    x = np.random.default_rng(0).uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    batch = {"image": jnp.asarray(x)}
    if labels:
        batch["label"] = jnp.arange(n, dtype=jnp.int32) % 3
    return batch


@pytest.fixture(scope="module")
def family_and_params():
    family = get_family(tiny_config())
    # An rbg key: XLA compiles threefry-based init ~4x slower on CPU; values don't matter here.
    key = jax.random.key(0, impl="rbg")
    return family, jax.jit(family.init_params)(key, fixed_batch())


@pytest.fixture(scope="module")
def loss_and_grad(family_and_params):
    """jit((params, batch, rng) -> ((loss, scalars), grads)) with train=True, compiled once."""
    family, _ = family_and_params

    def loss(params, batch, rng):
        out = family.loss_fn(params, batch, rng, train=True)
        return out.loss, out.scalars

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def test_init_shapes(family_and_params):
    family, params = family_and_params
    assert set(params) == {"time_embed", "encoder", "middle", "decoder"}
    out = jax.jit(family.model.apply)({"params": params}, fixed_batch()["image"],
                                      jnp.zeros(4, jnp.int32))
    assert out.shape == (4, SIZE, SIZE, 3)


def test_loss_finite_and_gradients_nonzero(family_and_params, loss_and_grad):
    _, params = family_and_params
    (loss, scalars), grads = loss_and_grad(params, fixed_batch(), jax.random.PRNGKey(1))
    assert set(scalars) == {"loss", "loss_q0", "loss_q1", "loss_q2", "loss_q3"}
    assert 0.5 < float(loss) < 2.0                  # zero-initialised output: loss ~ E[eps^2] = 1
    assert float(optax.global_norm(grads)) > 0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_binned_losses_average_to_loss(family_and_params):
    family, _ = family_and_params
    losses = jnp.arange(8, dtype=jnp.float32)
    t = jnp.array([0, 4, 5, 9, 10, 11, 12, 19])              # T = 20: quarters of 5 steps
    bins = family._binned_losses(losses, t, jnp.ones(8))
    np.testing.assert_allclose([float(bins[f"loss_q{k}"]) for k in range(4)], [0.5, 2.5, 5, 7])
    masked = family._binned_losses(losses, t, jnp.array([1, 0, 1, 1, 1, 1, 1, 1.0]))
    assert float(masked["loss_q0"]) == 0.0


def test_valid_mask_excludes_padding(family_and_params):
    family, params = family_and_params
    loss = jax.jit(lambda b: family.loss_fn(params, b, jax.random.PRNGKey(3), False).loss)
    valid = jnp.array([True, True, False, False])
    a = dict(fixed_batch(), valid=valid)
    b = dict(image=a["image"].at[2:].set(0.5), valid=valid)
    np.testing.assert_allclose(float(loss(a)), float(loss(b)), rtol=1e-6)


def test_adam_steps_lower_loss_on_fixed_batch(family_and_params, loss_and_grad):
    family, params = family_and_params
    batch, rng = fixed_batch(), jax.random.PRNGKey(4)
    tx = family.optimizer()

    @jax.jit
    def update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state, losses = tx.init(params), []
    for _ in range(8):
        (loss, _), grads = loss_and_grad(params, batch, rng)
        params, opt_state = update(grads, opt_state, params)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]


def test_x0_weighted_and_class_conditional():
    family = get_family(tiny_config(diffusion=dict(prediction="x0", loss="weighted"),
                                    model=dict(num_classes=3)))
    batch = fixed_batch(labels=True)
    params = jax.jit(family.init_params)(jax.random.key(0, impl="rbg"), batch)
    assert params["time_embed"]["class_embed"]["embedding"].shape[0] == 3
    loss = jax.jit(lambda p, b: family.loss_fn(p, b, jax.random.PRNGKey(0), True).loss)
    assert np.isfinite(float(loss(params, batch)))
    with pytest.raises(UserError, match="num_classes"):
        loss(params, fixed_batch())


@pytest.mark.parametrize("section, key, value", [
    ("diffusion", "prediction", "v"), ("diffusion", "loss", "l1"),
    ("diffusion", "variance", "learned"), ("eval", "sampler", "euler")])
def test_bad_choices_are_user_errors(section, key, value):
    with pytest.raises(UserError, match=f"{section}.{key}"):
        get_family(tiny_config(**{section: {key: value}}))


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_sample_writes_grid_and_npz(tmp_path, family_and_params, sampler):
    family, params = family_and_params
    if sampler != family.config.eval.sampler:
        family = get_family(tiny_config(eval=dict(sampler=sampler)))
    family.sample(params, str(tmp_path), jax.random.PRNGKey(5))
    images = np.load(tmp_path / "samples" / "samples.npz")["images"]
    assert images.shape == (5, SIZE, SIZE, 3) and np.isfinite(images).all()
    assert np.abs(images).max() <= 1.0                        # clip_x0
    grid = np.asarray(Image.open(tmp_path / "samples" / "grid.png"))
    assert grid.shape == (2 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2, 3)   # 5 images, 3 columns
    assert sorted(os.listdir(tmp_path / "samples")) == ["grid.png", "progressive.png",
                                                        "samples.npz"]


def test_generate_is_deterministic_and_compiles_once(family_and_params):
    family, params = family_and_params
    first = family.generate(params, 7, jax.random.PRNGKey(6), progress=False)
    from fdm.diffusion import samplers
    compiled = samplers._run_chunk._cache_size()
    again = family.generate(params, 7, jax.random.PRNGKey(6), progress=False)
    assert first.x0.shape == (7, SIZE, SIZE, 3)
    np.testing.assert_array_equal(first.x0, again.x0)
    assert samplers._run_chunk._cache_size() == compiled


def test_evaluate_and_summary_images(tmp_path, family_and_params):
    family, params = family_and_params
    from fdm.data import make_iterator
    metrics = family.evaluate(params, make_iterator(family.config, "eval", batch_size=4),
                              str(tmp_path), jax.random.PRNGKey(7))
    quarters = {k for k in metrics if k.startswith("eval_loss_q")}
    assert quarters and quarters <= {f"eval_loss_q{k}" for k in range(4)}
    assert set(metrics) - quarters == {"eval_loss", "train_loss", "sample_mean_err",
                                       "sample_std_err", "sample_pixel_w1"}
    assert all(np.isfinite(v) for v in metrics.values())
    again = family.evaluate(params, make_iterator(family.config, "eval", batch_size=4),
                            str(tmp_path), jax.random.PRNGKey(7))
    assert again == metrics                                    # fixed keys: reproducible
    images = family.summary_images(params, fixed_batch(), jax.random.PRNGKey(8))["samples"]
    assert images.shape == (8, SIZE, SIZE, 3)
    assert 0 <= float(images.min()) <= float(images.max()) <= 1
