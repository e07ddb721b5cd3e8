"""Rematerialisation (model.remat): the same parameters, loss and gradients (up to float32
rounding: the recomputed forward may fuse differently), and fewer activations kept for
the backward pass (the VJP's saved residuals, `jax.ad_checkpoint`: traced, not compiled;
the backend-independent measure benchmarks/memory_flops.py reports).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from configs import toy_scene
from fdm.data import make_iterator
from fdm.errors import UserError
from fdm.models import get_family
from fdm.nerf.field import NeRFMLP
from fdm.nerf.render import remat_chunks
from fdm.nn.factorized import FactorizedUNet
from fdm.nn.layers import ResBlock
from fdm.nn.unet import RematResBlock, UNet

NET = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4)
SMALL = dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_groups=4)


def inputs(batch: int = 4, size: int = 8):
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)),
                    jnp.float32)
    return x, jnp.arange(batch) * 3


@jax.jit
def perturbed(params):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [p + 0.1 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])


def mse(model, x, t):
    """params -> mean((eps_hat - noise)^2) of `model` (UNet or FactorizedUNet)."""
    noise = jax.random.normal(jax.random.PRNGKey(3), x.shape)

    def loss(params):
        out = model.apply({"params": params}, x, t, train=True,
                          rngs={"dropout": jax.random.PRNGKey(4)})
        return jnp.mean(((out if isinstance(out, jax.Array) else out.eps) - noise) ** 2)
    return loss


def abstract_params(model, x, t):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, t))["params"]


def residual_bytes(loss, params) -> int:
    """Bytes the VJP of loss(params) keeps for the backward pass (params not counted)."""
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize
               for a, source in saved_residuals(loss, params)
               if not source.startswith("from the argument"))


def activation_bytes(model, x, t) -> int:
    """Bytes the VJP of the model's loss keeps for the backward pass (params not counted)."""
    return residual_bytes(mse(model, x, t), abstract_params(model, x, t))


def assert_same_loss_and_grads(plain, rematted, x, t):
    params = perturbed(jax.jit(plain.init)(jax.random.PRNGKey(0), x, t)["params"])
    loss, grads = jax.jit(jax.value_and_grad(mse(plain, x, t)))(params)
    loss_r, grads_r = jax.jit(jax.value_and_grad(mse(rematted, x, t)))(params)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        np.testing.assert_allclose(g_r, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls,remat,bound", [(UNet, "resblock", 0.5),
                                             (FactorizedUNet, "resblock", 0.5),
                                             (FactorizedUNet, "branch", 0.5)])
def test_remat_keeps_the_parameters_and_stores_fewer_activations(cls, remat, bound):
    """Kept activations at most `bound` x without remat (16x16 images, two levels;
    measured 0.25 resblock, 0.17 branch)."""
    kw = dict(NET, num_masks=3) if cls is FactorizedUNet else NET
    x, t = inputs(size=16)
    plain, rematted = cls(**kw), cls(**kw, remat=remat)
    assert jax.tree.map(jnp.shape, abstract_params(rematted, x, t)) == \
        jax.tree.map(jnp.shape, abstract_params(plain, x, t))
    assert activation_bytes(rematted, x, t) < bound * activation_bytes(plain, x, t)


def test_bf16_stores_fewer_activations():
    """bfloat16 activations, GroupNorm's float32 internals recomputed: at most 0.6 x the
    float32 bytes (measured 0.46 on this U-Net)."""
    x, t = inputs(size=16)
    assert (activation_bytes(UNet(**NET, dtype=jnp.bfloat16), x, t)
            < 0.6 * activation_bytes(UNet(**NET), x, t))


def test_remat_resblock_same_value_and_gradients():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 8))
    temb = jnp.ones((2, 16)) * 0.3
    params = perturbed(jax.jit(ResBlock(16, num_groups=4).init, static_argnums=3)(
        jax.random.PRNGKey(1), x, temb, False))

    def grad(block):
        f = lambda p, x: jnp.mean(block.apply(p, x, temb, False) ** 2)
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, x)

    (loss, grads), (loss_r, grads_r) = grad(ResBlock(16, num_groups=4)), \
        grad(RematResBlock(16, num_groups=4))
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        np.testing.assert_allclose(g_r, g, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("cls,remat", [(UNet, "resblock"), (FactorizedUNet, "resblock"),
                                       (FactorizedUNet, "branch")])
def test_remat_same_loss_and_gradients(cls, remat):
    kw = dict(SMALL, num_masks=3) if cls is FactorizedUNet else SMALL
    assert_same_loss_and_grads(cls(**kw), cls(**kw, remat=remat), *inputs())


@pytest.mark.slow
@pytest.mark.parametrize("decoding", ["unshared", "concat"])
def test_branch_remat_same_loss_and_gradients_other_decodings(decoding):
    """'unshared' (K decoders) and 'concat' (one decoder) under remat='branch'."""
    kw = dict(SMALL, num_masks=2, decoding=decoding)
    assert_same_loss_and_grads(FactorizedUNet(**kw), FactorizedUNet(**kw, remat="branch"),
                               *inputs())


def test_unknown_remat_is_a_user_error():
    x, t = inputs()
    with pytest.raises(UserError, match="model.remat='branch' is unknown for the U-Net"):
        UNet(**NET, remat="branch").init(jax.random.PRNGKey(0), x, t)
    with pytest.raises(UserError, match="model.remat='chunk' is unknown"):
        FactorizedUNet(**NET, remat="chunk").init(jax.random.PRNGKey(0), x, t)
    with pytest.raises(UserError, match=r"^model.remat='resblock' is invalid; use one of "
                                        r"\['none', 'chunk'\]$"):
        get_family(lifting_config("resblock"))


# ----------------------------------------------------------------- NeRF lifting

# model.remat='chunk' of the lifting family: the field per model.remat_chunk rays. The tiny
# config's 4 x 64 loss rays make 3 chunks of 96, the last one padded.
LIFTING_CHUNK = 96
LIFTING_MODELS = {"pose_free": {}, "supervised_fine": dict(supervised=True, num_importance=8)}


def lifting_config(remat: str = "none", **model):
    """configs/toy_scene.py:tiny with model.remat, model overrides and model.remat_chunk 96."""
    c = toy_scene.get_config("tiny")
    c.model.update(dict(model, remat=remat))
    c.model.remat_chunk = LIFTING_CHUNK
    return c


def lifting_loss(family, batch):
    return lambda p: family.loss_fn(p, batch, jax.random.PRNGKey(2), train=True).loss


def test_remat_chunks_gives_the_fields_values_and_gradients():
    """`fdm.nerf.render.remat_chunks` on rays [2, 5] in chunks of 3 (4 chunks, the last
    padded), and on fewer rays than a chunk."""
    field = NeRFMLP(depth=2, width=16, skips=(1,), pos_max_deg=4, view_max_deg=2)
    pts = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 4, 3), minval=-1.5, maxval=1.5)
    dirs = pts / jnp.linalg.norm(pts, axis=-1, keepdims=True)
    params = jax.jit(field.init)(jax.random.PRNGKey(1), pts, dirs)

    def loss(p, chunk):
        fn = lambda x, d: field.apply(p, x, d)
        rgb, sigma = remat_chunks(fn, chunk)(pts, dirs) if chunk else fn(pts, dirs)
        return jnp.sum(rgb ** 2) + jnp.sum(sigma), (rgb, sigma)

    (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                  static_argnums=1)(params, 0)
    for chunk in (3, 64):
        (value_c, out_c), grads_c = jax.jit(jax.value_and_grad(loss, has_aux=True),
                                            static_argnums=1)(params, chunk)
        assert [a.shape for a in out_c] == [(2, 5, 4, 3), (2, 5, 4)]
        np.testing.assert_allclose(value_c, value, rtol=1e-6)
        for a, a_c in zip(jax.tree.leaves((out, grads)), jax.tree.leaves((out_c, grads_c))):
            np.testing.assert_allclose(a_c, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", LIFTING_MODELS.values(), ids=LIFTING_MODELS.keys())
def test_lifting_chunk_remat_stores_fewer_activations(model):
    """Kept activations of the lifting loss at most 0.5 x without remat (measured 0.21
    pose-free, where the encoder's remain, 0.06 supervised with a fine pass); the
    parameters unchanged."""
    plain, rematted = (get_family(lifting_config(r, **model)) for r in ("none", "chunk"))
    g = plain.scene.geometry
    batch = {"image": jnp.zeros((4, g.height, g.width, 3)),
             "c2w": jnp.tile(jnp.eye(4), (4, 1, 1))}
    params = jax.eval_shape(plain.init_params, jax.random.PRNGKey(0), batch)
    assert jax.tree.map(jnp.shape, jax.eval_shape(rematted.init_params, jax.random.PRNGKey(0),
                                                  batch)) == jax.tree.map(jnp.shape, params)
    assert (residual_bytes(lifting_loss(rematted, batch), params)
            < 0.5 * residual_bytes(lifting_loss(plain, batch), params))


@pytest.mark.slow
@pytest.mark.parametrize("model", LIFTING_MODELS.values(), ids=LIFTING_MODELS.keys())
def test_lifting_chunk_remat_same_loss_and_gradients(model):
    """NeRF lifting's training loss on one toy-scene batch (Eq. 3.4 over 4 candidates, or
    the supervised coarse + fine loss) with model.remat='chunk' against 'none'."""
    plain, rematted = (get_family(lifting_config(r, **model)) for r in ("none", "chunk"))
    batch = next(make_iterator(plain.config, "train"))
    params = perturbed(jax.jit(plain.init_params)(jax.random.PRNGKey(0), batch))
    loss, grads = jax.jit(jax.value_and_grad(lifting_loss(plain, batch)))(params)
    loss_r, grads_r = jax.jit(jax.value_and_grad(lifting_loss(rematted, batch)))(params)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        np.testing.assert_allclose(g_r, g, rtol=1e-4, atol=1e-6)
