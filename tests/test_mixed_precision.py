"""Mixed precision (model.dtype, `fdm.nn.layers`): bfloat16 compute against float32 on the
same parameters and batch, parameters and optimizer state kept float32, float32 outputs.

Bounds (perturbed parameters, fixed keys; measured on XLA:CPU, bounds >= 5x the largest
measured error):
  loss:      |L_bf16 / L_f32 - 1| < 5e-3      (measured 3e-4 blocks, 9e-4 DDPM family,
                                               3e-4 FDM family; 2e-4 / 4e-4 on two-level
                                               16x16 U-Net / FDM; NeRF lifting, tiny toy
                                               scene: 6e-4 pose-free, 1.4e-4 supervised
                                               with a fine pass)
  gradients: cosine(g_bf16, g_f32) > 0.995    (measured 0.9996 to 0.99999; NeRF lifting
                                               0.9996 pose-free, 0.9990 supervised)
bfloat16 keeps 8 bits of mantissa, a relative error of ~2^-9 per rounding that averages
out over the loss's many terms; the gradient's direction is what Adam follows.

Structural checks (dtypes of parameters, activations and outputs) trace with
`jax.eval_shape` and compile nothing; the numeric comparisons compile a network twice
(bfloat16 compiles slowly on XLA:CPU), the family-level ones are marked slow.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import toy_scene
from configs.fdm_common import ddpm_config, fdm_config
from fdm.data import make_iterator
from fdm.errors import UserError
from fdm.models import get_family
from fdm.nerf.field import NeRFMLP
from fdm.nerf.views import pixel_xy, render_pixels
from fdm.nn.factorized import FactorizedUNet
from fdm.nn.layers import Attention, ResBlock
from fdm.nn.pdae import ResNetEncoder, ShiftDecoder
from fdm.nn.pose_encoder import PoseTrunk
from fdm.nn.unet import UNet, UNetEncoder
from fdm.train.state import create_state

SIZE = 8
LOSS_RTOL = 5e-3
GRAD_COSINE = 0.995
NET = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4)
BF16 = jnp.bfloat16


def tiny_config(family: str, dtype: str = "float32"):
    """A DDPM or FDM config of a one-level ch-8 U-Net on 8x8 images (no data is read)."""
    build = fdm_config if family == "fdm" else ddpm_config
    c = build(f"{family}_mp_test", dataset="shapes", data_dir="", image_size=SIZE, ch=8,
              ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_steps=2, batch_size=4)
    c.model.update(dict(num_groups=4, dtype=dtype))
    c.diffusion.update(dict(num_timesteps=20, beta_end=0.2))
    if family == "fdm":
        c.model.num_masks = 2
        c.eval.segment_t = 3
    return c


def lifting_config(dtype: str = "float32", **model):
    """configs/toy_scene.py:tiny (16x16 views, 4 candidates, a 2 x 32 field, 16 samples
    and 64 loss pixels per view) with model overrides."""
    c = toy_scene.get_config("tiny")
    c.model.update(dict(model, dtype=dtype))
    return c


@jax.jit
def perturbed(params, scale: float = 0.1):
    """params + scale * N(0, 1) (zero-initialised output convs would hide the network)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [p + scale * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])


def images(batch: int = 4, size: int = SIZE):
    return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)),
                       jnp.float32)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def cosine(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_close(loss_16, loss_32, grad_16, grad_32):
    assert abs(float(loss_16) / float(loss_32) - 1) < LOSS_RTOL, (loss_16, loss_32)
    assert cosine(flat(grad_16), flat(grad_32)) > GRAD_COSINE
    assert float(loss_16) != float(loss_32)          # bfloat16 did run


# ----------------------------------------------------------------- numerics


def test_bf16_resblock_and_attention_match_float32():
    """A z-modulated ResBlock then Attention, loss mean(out^2): the blocks every network
    here is made of (GroupNorm statistics and the softmax in float32)."""
    x = images(2)[..., :2].repeat(4, -1)                              # [2, 8, 8, 8]
    temb, zemb = jnp.ones((2, 16)) * 0.3, jnp.ones((2, 8)) * -0.2

    def loss(p, dtype):
        h = ResBlock(8, num_groups=4, dtype=dtype).apply(p["res"], x, temb, False, zemb)
        return jnp.mean(Attention(4, dtype=dtype).apply(p["attn"], h).astype(jnp.float32) ** 2)

    params = perturbed({
        "res": jax.jit(ResBlock(8, num_groups=4).init, static_argnums=3)(
            jax.random.PRNGKey(0), x, temb, False, zemb),
        "attn": jax.jit(Attention(4).init)(jax.random.PRNGKey(1), x)})
    both = jax.jit(lambda p: [jax.value_and_grad(loss)(p, d) for d in (jnp.float32, BF16)])
    (loss_32, grad_32), (loss_16, grad_16) = both(params)
    assert_close(loss_16, loss_32, grad_16, grad_32)


@pytest.mark.slow
@pytest.mark.parametrize("family_name", ["ddpm", "fdm"])
def test_bf16_family_loss_and_gradients_match_float32(family_name):
    """The family's training loss (DDPM: L_simple; FDM: the same through the masks)."""
    assert_families_close(get_family(tiny_config(family_name)),
                          get_family(tiny_config(family_name, "bfloat16")), {"image": images()})


def assert_families_close(f32, bf16, batch):
    """The training loss and its gradient of two families (float32, bfloat16) at the same
    perturbed float32 parameters on `batch`, within `assert_close`'s tolerances."""
    params = perturbed(jax.jit(f32.init_params)(jax.random.PRNGKey(0), batch))

    def loss_and_grad(family):
        f = lambda p: family.loss_fn(p, batch, jax.random.PRNGKey(2), train=True).loss
        return jax.jit(jax.value_and_grad(f))(params)

    (loss_32, grad_32), (loss_16, grad_16) = loss_and_grad(f32), loss_and_grad(bf16)
    assert_close(loss_16, loss_32, grad_16, grad_32)


@pytest.mark.slow
def test_bf16_train_step_keeps_a_float32_state():
    """One update of the FDM family in bfloat16 (its optimizer, train_loss): finite loss,
    the state (params, EMA, Adam moments) float32 before and after, params moved."""
    family = get_family(tiny_config("fdm", "bfloat16"))
    tx = family.optimizer()
    batch = {"image": images()}
    state = jax.jit(lambda: create_state(lambda k: family.init_params(k, batch), tx, 0,
                                         family.init_stats()))()

    @jax.jit
    def step(state, batch):
        def loss(params):
            return family.train_loss(params, batch, state.step_key(), state.step,
                                     state.stats)[0].loss
        value, grads = jax.value_and_grad(loss)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state, step=state.step + 1), value

    new, loss = step(state, batch)
    assert np.isfinite(float(loss))
    for s in (state, new):
        floats = [x for x in jax.tree.leaves((s.params, s.ema_params, s.opt_state))
                  if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert np.abs(flat(new.params) - flat(state.params)).max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", [{}, dict(supervised=True, num_importance=8)],
                         ids=["pose_free", "supervised_fine"])
def test_bf16_lifting_loss_and_gradients_match_float32(model):
    """NeRF lifting's training loss on one toy-scene batch: Eq. 3.4 over 4 candidates
    (pose-free), or the posed coarse + fine loss (supervised); bfloat16 field and encoder
    trunk, float32 rendering and loss."""
    f32 = get_family(lifting_config(**model))
    assert_families_close(f32, get_family(lifting_config("bfloat16", **model)),
                          next(make_iterator(f32.config, "train")))


def test_nerf_field_bf16_is_close_to_float32_and_returns_float32():
    """Same parameters: rgb within 0.02 and density within 5% + 0.02 of float32 (measured
    1.3e-3 and 0.5%), both float32, so transmittance and weights are computed in float32."""
    pts = jax.random.uniform(jax.random.PRNGKey(0), (256, 3), minval=-1.5, maxval=1.5)
    dirs = pts / jnp.linalg.norm(pts, axis=-1, keepdims=True)
    kw = dict(depth=3, width=32, skips=(2,), pos_max_deg=6, view_max_deg=2)
    params = jax.jit(NeRFMLP(**kw).init)(jax.random.PRNGKey(1), pts, dirs)
    rgb_32, sigma_32 = jax.jit(NeRFMLP(**kw).apply)(params, pts, dirs)
    rgb_16, sigma_16 = jax.jit(NeRFMLP(**kw, dtype=BF16).apply)(params, pts, dirs)
    assert rgb_16.dtype == sigma_16.dtype == jnp.float32
    np.testing.assert_allclose(rgb_16, rgb_32, atol=0.02)
    np.testing.assert_allclose(sigma_16, sigma_32, rtol=0.05, atol=0.02)


# ----------------------------------------------------------------- dtypes (traced only)


def shapes_of(module, *args):
    """(output, variables) of module.init_with_output, as ShapeDtypeStructs."""
    return jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), *args))


def float_dtypes(tree) -> set:
    return {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_bf16_unet_and_fdm_have_float32_params_and_outputs():
    x, t = images(2), jnp.array([3, 15])
    for model in (UNet(**NET, dtype=BF16), FactorizedUNet(**NET, num_masks=2, dtype=BF16)):
        out, variables = shapes_of(model, x, t)
        assert float_dtypes(variables) == {jnp.dtype(jnp.float32)}
        leaves = [out] if isinstance(out, jax.ShapeDtypeStruct) else \
            [out.eps, out.masks, out.mask_logits]
        assert all(v.dtype == jnp.float32 for v in leaves), type(model).__name__


def test_bf16_activations_are_bf16():
    """What bfloat16 saves: the features between layers (encoder output and skips)."""
    temb = jnp.zeros((2, 32), jnp.float32)
    (h, skips), _ = shapes_of(UNetEncoder(**UNet(**NET, dtype=BF16).part_kwargs()),
                              images(2), temb)
    assert h.dtype == BF16 and {s.dtype for s in skips} == {jnp.dtype(BF16)}


def test_bf16_pdae_pose_and_nerf_networks_return_float32():
    x, t = images(2), jnp.array([3, 15])
    kw = UNet(**NET, dtype=BF16).part_kwargs()
    temb = jnp.zeros((2, 4 * NET["ch"]), BF16)
    z, variables = shapes_of(ResNetEncoder(widths=(4, 8), blocks=(1, 1), num_groups=2, z_dim=5,
                                           dtype=BF16), x)
    assert z.dtype == jnp.float32 and z.shape == (2, 5)
    assert float_dtypes(variables) == {jnp.dtype(jnp.float32)}

    def shift_decoder():
        (h, skips), _ = UNetEncoder(**kw).init_with_output(jax.random.PRNGKey(0), x, temb)
        return ShiftDecoder(**kw, out_ch=3).init_with_output(
            jax.random.PRNGKey(1), h, skips, temb, jnp.zeros((2, 5), jnp.float32))

    g, variables = jax.eval_shape(shift_decoder)
    assert g.dtype == jnp.float32 and g.shape == x.shape
    assert float_dtypes(variables) == {jnp.dtype(jnp.float32)}
    f, _ = shapes_of(PoseTrunk(ch=8, ch_mult=(1, 2), num_res_blocks=1, num_groups=4,
                               dtype=BF16), x, t)
    assert f.dtype == jnp.float32 and f.shape == (2, 16)
    pts = jnp.zeros((5, 3))
    (rgb, sigma), variables = shapes_of(NeRFMLP(depth=2, width=16, skips=(1,), dtype=BF16),
                                        pts, pts)
    assert rgb.dtype == sigma.dtype == jnp.float32
    assert float_dtypes(variables) == {jnp.dtype(jnp.float32)}


def test_bf16_lifting_keeps_float32_params_cameras_and_render_weights():
    """model.dtype=bfloat16 in NeRF lifting: the field and the encoder trunk compute in
    bfloat16; parameters, the encoder's cameras and scores, and every field of the
    coarse and fine renders (rgb, depth, opacity, compositing weights) are float32."""
    family = get_family(lifting_config("bfloat16", num_importance=8))
    assert family.nerf.dtype == BF16 and family.encoder.trunk.dtype == BF16
    g = family.scene.geometry
    x = jnp.zeros((2, g.height, g.width, 3), jnp.float32)
    params = jax.eval_shape(family.init_params, jax.random.PRNGKey(0), {"image": x})
    assert float_dtypes(params) == {jnp.dtype(jnp.float32)}
    xy = pixel_xy(jnp.tile(jnp.arange(8), (2, 1)), g.width)

    def cameras_and_renders(p):
        pred = family.predict_cameras(p, x, jnp.array([3, 15]))
        return pred, render_pixels(family.field_fn(p["nerf"]), pred.c2w[:, 0], xy,
                                   family.settings, jax.random.PRNGKey(0))

    pred, renders = jax.eval_shape(cameras_and_renders, params)
    assert float_dtypes(pred) == {jnp.dtype(jnp.float32)}
    assert len(renders) == 2 and float_dtypes(renders) == {jnp.dtype(jnp.float32)}
    assert {r.weights.shape for r in renders} == {(2, 8, 16), (2, 8, 24)}


@pytest.mark.parametrize("name", ["toy_scene", "lego", "llff_fern"])
def test_lifting_configs_default_to_float32_without_remat(name):
    model = importlib.import_module(f"configs.{name}").get_config().model
    assert (model.dtype, model.remat) == ("float32", "none")


def test_the_family_builds_its_network_in_the_configured_dtype():
    assert get_family(tiny_config("ddpm", "bfloat16")).model.dtype == BF16
    assert get_family(tiny_config("fdm", "bfloat16")).model.dtype == BF16
    assert get_family(tiny_config("fdm")).model.dtype == jnp.float32


@pytest.mark.parametrize("config", [lambda: tiny_config("ddpm", "float16"),
                                    lambda: lifting_config("float16")],
                         ids=["ddpm", "nerf_lifting"])
def test_unknown_dtype_is_a_one_line_error(config):
    with pytest.raises(UserError, match=r"^model.dtype='float16' is invalid; use one of "
                                        r"\['float32', 'bfloat16'\]$"):
        get_family(config())
