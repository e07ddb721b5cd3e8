"""Shape, composition and behaviour tests of fdm.nn (pure JAX, small configs)."""
import functools
import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.nn import (Attention, Downsample, GroupNorm, ResBlock, TimeEmbed, UNet, group_norm,
                    UNetDecoder, UNetEncoder, UNetMiddle, Upsample, timestep_embedding,
                    decoder_features, unet_from_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1,
             num_groups=4)
CIFAR10 = dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
               dropout=0.1, num_groups=32)


def load_config(name):
    """configs/ddpm.py's config (name "ddpm_cifar10") or its variant "tiny" ("ddpm_tiny")."""
    spec = importlib.util.spec_from_file_location("ddpm", os.path.join(ROOT, "configs", "ddpm.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("tiny" if name == "ddpm_tiny" else "")


def count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def random_params(model, *args, seed=0, scale=0.1):
    """Random parameters of the right shapes (no zero layers, no RNG compile)."""
    shapes = jax.eval_shape(lambda *a: model.init(jax.random.PRNGKey(0), *a), *args)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(
        (1.0 if s.ndim == 1 else 0.0) + scale * rng.standard_normal(s.shape), jnp.float32), shapes)


@functools.lru_cache(maxsize=None)
def _jitted_apply(model, train):
    kw = {"train": True} if train else {}
    return jax.jit(lambda p, rng, *a: model.apply({"params": p}, *a, **kw, rngs={"dropout": rng}))


def apply(model, params, *args, train=False, seed=0):
    """Jitted `model.apply` (one XLA program instead of op-by-op dispatch)."""
    return _jitted_apply(model, train)(params, jax.random.PRNGKey(seed), *args)


@pytest.fixture(scope="module")
def small():
    model = UNet(**SMALL, num_classes=3)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    t = jnp.array([3, 700])
    y = jnp.array([0, 2])
    return model, random_params(model, x, t, y), x, t, y


def test_cifar10_param_count():
    shapes = jax.eval_shape(lambda: UNet(**CIFAR10).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32)))
    assert count(shapes["params"]) == 35_746_307


def test_timestep_embedding_values():
    emb = np.asarray(timestep_embedding(jnp.array([0, 5]), 8))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
    np.testing.assert_allclose(emb[1], np.concatenate([np.sin(5 * freqs), np.cos(5 * freqs)]),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_group_norm_matches_flax():
    x = 3.0 + jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16)) * 2.0
    ours = GroupNorm(4, 1e-6)
    ref = nn.GroupNorm(num_groups=4, epsilon=1e-6, use_fast_variance=False)
    scale, bias = jnp.linspace(0.5, 2.0, 16), jnp.linspace(-1.0, 1.0, 16)
    params = {"scale": scale, "bias": bias}
    out = jax.jit(ours.apply)({"params": params}, x)
    np.testing.assert_allclose(out, jax.jit(ref.apply)({"params": params}, x), atol=1e-5)


def test_layer_shapes():
    key, x = jax.random.PRNGKey(0), jnp.ones((2, 8, 8, 16))
    temb = jnp.ones((2, 32))
    for mod, args, shape in [
        (ResBlock(32, num_groups=4), (x, temb), (2, 8, 8, 32)),
        (Attention(num_groups=4), (x,), (2, 8, 8, 16)),
        (Downsample(), (x,), (2, 4, 4, 16)),
        (Upsample(), (x,), (2, 16, 16, 16)),
        (TimeEmbed(8, num_classes=2), (jnp.array([1, 2]), jnp.array([0, 1])), (2, 32)),
    ]:
        out, _ = jax.eval_shape(lambda: mod.init_with_output(key, *args))
        assert out.shape == shape


def test_unet_and_skip_shapes(small):
    model, params, x, t, y = small
    assert apply(model, params, x, t, y).shape == (2, 16, 16, 3)
    temb = apply(TimeEmbed(16, 3), params["time_embed"], t, y)
    kw = {k: v for k, v in SMALL.items()}
    h, skips = apply(UNetEncoder(**kw), params["encoder"], x, temb)
    assert [s.shape for s in skips] == [(2, 16, 16, 16), (2, 16, 16, 16), (2, 8, 8, 16),
                                        (2, 8, 8, 32)]
    assert h.shape == (2, 8, 8, 32)


def test_parts_compose_to_unet(small):
    model, params, x, t, y = small
    full = apply(model, params, x, t, y)
    temb = apply(TimeEmbed(16, 3), params["time_embed"], t, y)
    h, skips = apply(UNetEncoder(**SMALL), params["encoder"], x, temb)
    h = apply(UNetMiddle(**SMALL), params["middle"], h, temb)
    out = apply(UNetDecoder(**SMALL), params["decoder"], h, skips, temb)
    np.testing.assert_allclose(out, full, atol=1e-5)


def test_decoder_with_branches_folded_into_batch(small):
    """FDM use: K masked copies of the skips folded into the batch axis."""
    model, params, x, t, y = small
    temb = apply(TimeEmbed(16, 3), params["time_embed"], t, y)
    h, skips = apply(UNetEncoder(**SMALL), params["encoder"], x, temb)
    dec = UNetDecoder(**SMALL, out_ch=5)
    dparams = random_params(dec, h, skips, temb)
    scales = [0.5, 2.0]                                  # stand-ins for masks m_k
    folded = apply(dec, dparams, jnp.concatenate([h, h]),
                       [jnp.concatenate([s * a for a in scales]) for s in skips],
                       jnp.concatenate([temb, temb]))
    for k, a in enumerate(scales):
        one = apply(dec, dparams, h, [s * a for s in skips], temb)
        np.testing.assert_allclose(folded[2 * k:2 * k + 2], one, atol=1e-5)
    assert folded.shape == (4, 16, 16, 5)


def test_class_conditioning_changes_output(small):
    model, params, x, t, y = small
    out = apply(model, params, x, t, y)
    other = apply(model, params, x, t, (y + 1) % 3)
    uncond = apply(model, params, x, t)
    assert float(jnp.abs(out - other).max()) > 1e-3
    assert float(jnp.abs(out - uncond).max()) > 1e-3


def test_fresh_init_zeroes_residual_branches_and_output():
    model = UNet(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,), num_groups=4)
    x, t = jnp.ones((1, 8, 8, 3)), jnp.array([10])
    with jax.threefry_partitionable(False):      # 3x faster RNG compile on CPU
        out, variables = jax.jit(model.init_with_output)(jax.random.PRNGKey(0), x, t)
    enc, dec = variables["params"]["encoder"], variables["params"]["decoder"]
    assert float(jnp.abs(out).max()) == 0.0
    for kernel in (dec["conv_out"]["kernel"], enc["down_0_res_0"]["conv2"]["kernel"],
                   enc["down_0_attn_0"]["proj_out"]["kernel"]):
        assert float(jnp.abs(kernel).max()) == 0.0
    assert float(jnp.abs(enc["down_0_res_0"]["conv1"]["kernel"]).max()) > 0.0


def test_dropout_only_in_train(small):
    model, params, x, t, y = small
    a = apply(model, params, x, t, y, train=True, seed=0)
    b = apply(model, params, x, t, y, train=True, seed=1)
    assert float(jnp.abs(a - b).max()) > 1e-4
    np.testing.assert_array_equal(apply(model, params, x, t, y, seed=0),
                                  apply(model, params, x, t, y, seed=1))


def test_attention_placed_by_feature_map_size():
    x, t = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32)
    shapes = jax.eval_shape(lambda: UNet(**CIFAR10).init(jax.random.PRNGKey(0), x, t))["params"]
    enc_attn = sorted(k for k in shapes["encoder"] if "attn" in k)
    dec_attn = sorted(k for k in shapes["decoder"] if "attn" in k)
    assert enc_attn == ["down_1_attn_0", "down_1_attn_1"]
    assert dec_attn == ["up_1_attn_0", "up_1_attn_1", "up_1_attn_2"]
    assert "attn" in shapes["middle"]


@pytest.mark.parametrize("name", ["ddpm_tiny", "ddpm_cifar10"])
def test_unet_from_config(name):
    cfg = load_config(name)
    model = unet_from_config(cfg.model)
    assert model.ch == cfg.model.ch and tuple(model.ch_mult) == tuple(cfg.model.ch_mult)
    assert model.num_groups == cfg.model.num_groups and model.dropout == cfg.model.dropout
    if name == "ddpm_cifar10":
        assert (cfg.train.batch_size, cfg.train.num_steps, cfg.train.warmup_steps) == (
            128, 800_000, 5000)
        assert UNet.from_config(cfg.model) == model


def test_group_norm_exact_for_large_mean():
    """Two-pass statistics: no cancellation when |mean| >> std."""
    x = 1000.0 + jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
    out = jax.jit(lambda x: group_norm(x, jnp.ones(16), jnp.zeros(16), 4, 1e-6))(x)
    xg = np.asarray(x, np.float64).reshape(2, -1, 4, 4)
    ref = (xg - xg.mean((1, 3), keepdims=True)) / np.sqrt(xg.var((1, 3), keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, ref.reshape(x.shape), atol=2e-3)


def test_decoder_features_are_the_levels_before_the_output_head(small):
    """decoder_features: one entry per level; up_0 through norm_out/conv_out is the output."""
    model, params, x, t, y = small
    feats = decoder_features(model, params, x, t, y)
    assert {k: v.shape for k, v in feats.items()} == {"up_1": (2, 8, 8, 32),
                                                      "up_0": (2, 16, 16, 16)}
    dec = params["decoder"]
    h = nn.swish(apply(GroupNorm(4), dec["norm_out"], feats["up_0"]))
    head = nn.Conv(3, (3, 3), padding=((1, 1), (1, 1)))
    np.testing.assert_allclose(apply(head, dec["conv_out"], h), apply(model, params, x, t, y),
                               atol=1e-5)
