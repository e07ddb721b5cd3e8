"""The factorized U-Net (seed 000 Eq. 2.2-2.7): shapes, invariants, weight sharing, ablations."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdm.nn.factorized import FactorizedUNet, HierarchicalFDM, fdm_from_config
from fdm.nn.unet import TimeEmbed, UNet, UNetDecoder, UNetEncoder, UNetMiddle

KW = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_groups=8)
X = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
T = jnp.array([3, 700])


def randomize(params, seed=0):
    """Replaces every leaf (zero-initialised convs and norms too) by random values."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [0.2 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])


def init(model, x=X, t=T):
    return model.init(jax.random.PRNGKey(1), x, t)


@pytest.mark.parametrize("decoding", ["shared", "unshared", "mask_hmid", "concat"])
def test_output_shapes_and_masks_sum_to_one(decoding):
    model = FactorizedUNet(**KW, num_masks=3, decoding=decoding)
    params = randomize(init(model))
    out = model.apply(params, X, T, return_branches=True)
    assert out.eps.shape == X.shape
    assert out.masks.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(out.masks.sum(-1), 1.0, atol=1e-5)
    assert bool(jnp.all(out.masks >= 0))
    if decoding == "concat":
        assert out.branches is None
    else:
        assert out.branches.shape == (3, 2, 16, 16, 3)
        np.testing.assert_allclose(
            out.eps, (out.branches * jnp.moveaxis(out.masks, -1, 0)[..., None]).sum(0),
            atol=1e-5)


def test_branches_only_on_request():
    model = FactorizedUNet(**KW, num_masks=2)
    params = init(model)
    assert model.apply(params, X, T).branches is None


def test_k1_reduces_to_the_ddpm_unet():
    fdm = FactorizedUNet(**KW, num_masks=1)
    params = randomize(init(fdm), seed=3)
    unet_params = {"params": {k: v for k, v in params["params"].items() if k != "mask_generator"}}
    expected = UNet(**KW).apply(unet_params, X, T)
    np.testing.assert_allclose(fdm.apply(params, X, T).eps, expected, atol=1e-5)


def reference_masks(model, params, max_res):
    """m from the parts applied one by one, skips finer than max_res zeroed."""
    p, kw = params["params"], model.part_kwargs()
    temb = TimeEmbed(KW["ch"]).apply({"params": p["time_embed"]}, T, None)
    h, skips = UNetEncoder(**kw).apply({"params": p["encoder"]}, X, temb, False)
    h_mid = UNetMiddle(**kw).apply({"params": p["middle"]}, h, temb, False)
    skips = [s if s.shape[1] <= max_res else jnp.zeros_like(s) for s in skips]
    logits = UNetDecoder(**kw, out_ch=model.num_masks).apply(
        {"params": p["mask_generator"]}, h_mid, skips, temb, False)
    return jax.nn.softmax(logits, -1)


def test_coarse_mask_generator_reads_only_the_coarse_skips():
    full = FactorizedUNet(**KW, num_masks=2)
    params = randomize(init(full), seed=5)
    np.testing.assert_allclose(full.apply(params, X, T).masks,
                               reference_masks(full, params, 16), atol=1e-5)
    coarse = FactorizedUNet(**KW, num_masks=2, mask_skip_max_res=8)
    assert jax.tree_util.tree_structure(init(coarse)) == jax.tree_util.tree_structure(params)
    masks = coarse.apply(params, X, T).masks
    np.testing.assert_allclose(masks, reference_masks(coarse, params, 8), atol=1e-5)
    assert float(jnp.abs(masks - full.apply(params, X, T).masks).max()) > 1e-3


def test_shared_decoder_is_one_parameter_set_and_every_branch_trains_it():
    k = 3
    fdm = FactorizedUNet(**KW, num_masks=k)
    params = randomize(init(fdm), seed=4)
    unet_count = sum(l.size for l in jax.tree_util.tree_leaves(init(UNet(**KW))))
    mask_count = sum(l.size for l in jax.tree_util.tree_leaves(params["params"]["mask_generator"]))
    fdm_count = sum(l.size for l in jax.tree_util.tree_leaves(params))
    assert fdm_count == unet_count + mask_count    # no per-branch decoder copies

    def branch_loss(dec_params, branch):
        p = {"params": {**params["params"], "decoder": dec_params}}
        return jnp.sum(fdm.apply(p, X, T, return_branches=True).branches[branch] ** 2)

    grads = [jax.grad(branch_loss)(params["params"]["decoder"], b) for b in range(k)]
    flat = [np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(gr)]) for gr in grads]
    for g in flat:
        assert np.linalg.norm(g) > 0
    assert not np.allclose(flat[0], flat[1])


def test_unshared_has_k_decoders():
    fdm = FactorizedUNet(**KW, num_masks=3, decoding="unshared")
    params = init(fdm)["params"]
    shared = init(FactorizedUNet(**KW, num_masks=3))["params"]["decoder"]
    assert "decoder" not in params
    for k in range(3):
        assert (jax.tree_util.tree_structure(params[f"decoder_{k}"])
                == jax.tree_util.tree_structure(shared))
    first, second = (jax.tree_util.tree_leaves(params[f"decoder_{k}"]) for k in (0, 1))
    assert any(float(jnp.abs(a - b).max()) > 0 for a, b in zip(first, second))


def test_masks_depend_on_the_input():
    fdm = FactorizedUNet(**KW, num_masks=3)
    params = randomize(init(fdm), seed=5)
    a = fdm.apply(params, X, T).masks
    b = fdm.apply(params, -X, T).masks
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_hierarchical_output():
    model = HierarchicalFDM(level1=dict(KW, num_masks=3), level2_masks=2)
    params = randomize(init(model), seed=6)
    out = model.apply(params, X, T, return_branches=True)
    assert out.eps.shape == X.shape and out.masks.shape == (2, 16, 16, 3)
    assert out.fine_masks.shape == (2, 16, 16, 6)
    np.testing.assert_allclose(out.fine_masks.sum(-1), 1.0, atol=1e-5)
    # level-1 mask i splits into its K2 level-2 children
    np.testing.assert_allclose(out.fine_masks.reshape(2, 16, 16, 3, 2).sum(-1), out.masks,
                               atol=1e-5)


@pytest.mark.parametrize("variant", [dict(decoding="shared"), dict(decoding="concat"),
                                     dict(decoding="mask_hmid"), dict(decoding="unshared"),
                                     dict(hierarchical=True, level2_masks=2)])
def test_each_variant_trains_a_step(variant):
    from tests.test_fdm_family import tiny_config
    cfg = tiny_config(**KW, dropout=0.1, num_masks=3, **variant).model
    model = fdm_from_config(cfg)
    params = jax.jit(model.init)({"params": jax.random.PRNGKey(0),
                                  "dropout": jax.random.PRNGKey(1)}, X, T)
    opt = optax.adam(1e-3)
    noise = jax.random.normal(jax.random.PRNGKey(2), X.shape)

    def loss_fn(p):
        out = model.apply(p, X, T, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
        return jnp.mean((out.eps - noise) ** 2)

    @jax.jit
    def step(p):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, _ = opt.update(grads, opt.init(p))
        return loss, optax.global_norm(grads), loss_fn(optax.apply_updates(p, updates))

    loss0, grad_norm, loss1 = step(params)
    assert np.isfinite(float(loss0)) and np.isfinite(float(loss1))
    assert float(grad_norm) > 0


def test_fresh_mask_init_breaks_symmetry_and_uniform_masks_are_stuck():
    """Exactly uniform masks are a fixed point (every branch sees the same input,
    so the gradient w.r.t. the masks vanishes); the small random init of the mask
    generator's output starts off it. The decoder is randomised, as after a few
    steps (its zero-initialised output conv alone would hide any mask gradient)."""
    noise = jax.random.normal(jax.random.PRNGKey(7), X.shape)

    def mask_grad_norm(mask_init_scale):
        fdm = FactorizedUNet(**KW, num_masks=3, mask_init_scale=mask_init_scale)
        params = init(fdm)["params"]
        params = {**params, "decoder": randomize(params["decoder"], seed=8)}

        def loss(mask_params):
            p = {"params": {**params, "mask_generator": mask_params}}
            return jnp.mean((fdm.apply(p, X, T).eps - noise) ** 2)

        masks = fdm.apply({"params": params}, X, T).masks
        grads = jax.grad(loss)(params["mask_generator"])
        # max |m - 1/K|: exact, unlike a std whose mean carries summation rounding
        return float(jnp.max(jnp.abs(masks - 1 / 3))), float(optax.global_norm(grads))

    spread, grad = mask_grad_norm(1e-2)
    assert spread > 1e-4 and grad > 0
    spread, grad = mask_grad_norm(0.0)
    assert spread < 1e-6 and grad < 1e-6
