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

from fdm.errors import UserError
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


def activation_bytes(model, x, t) -> int:
    """Bytes the VJP of the model's loss keeps for the backward pass (params not counted)."""
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize
               for a, source in saved_residuals(mse(model, x, t), abstract_params(model, x, t))
               if not source.startswith("from the argument"))


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
