"""FDM search aids (fdm.models.fdm_search): the centred-blob warm start, the router
z-loss and the per-branch embedding, against closed forms and slow loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdm.errors import UserError
from fdm.models import check_config, fdm_search, get_family
from fdm.nn.factorized import FactorizedUNet
from tests.test_fdm_family import SIZE, tiny_config


def test_centre_blob_matches_a_pixel_loop():
    size, sigma = 6, 0.4
    blob = fdm_search.centre_blob(size, sigma)
    for i in range(size):
        for j in range(size):
            y, x = -1 + (2 * i + 1) / size, -1 + (2 * j + 1) / size
            assert blob[i, j] == pytest.approx(np.exp(-(x * x + y * y) / (2 * sigma ** 2)),
                                               rel=1e-6)
    np.testing.assert_allclose(blob, blob.T)
    np.testing.assert_allclose(blob, blob[::-1, ::-1])


@pytest.mark.parametrize("k", [2, 3, 4])
def test_prior_is_a_distribution_with_the_blob_on_the_figure_channel(k):
    prior = fdm_search.centre_blob_prior(8, k, 0.35)
    blob = fdm_search.centre_blob(8, 0.35)
    assert prior.shape == (8, 8, k) and prior.dtype == np.float32
    np.testing.assert_allclose(prior.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(prior[..., 1], blob, atol=1e-6)
    for ground in [0] + list(range(2, k)):          # the ground, shared equally
        np.testing.assert_allclose(prior[..., ground], (1 - blob) / (k - 1), atol=1e-6)


def test_prior_hard_labels_are_the_blob_above_one_half():
    labels = fdm_search.prior_hard_labels(16, 0.35)
    # b > 1/2  <=>  r < sigma * sqrt(2 ln 2)
    c = (np.arange(16) + 0.5) / 16 * 2 - 1
    r = np.sqrt(c[:, None] ** 2 + c[None] ** 2)
    np.testing.assert_array_equal(labels, (r < 0.35 * np.sqrt(2 * np.log(2))).astype(np.int32))


def test_prior_loss_is_the_cross_entropy_and_minimal_at_the_prior():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    prior = fdm_search.centre_blob_prior(4, 3, 0.5)
    m = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    want = -(prior * np.log(m)).sum(-1).mean(axis=(1, 2))
    np.testing.assert_allclose(fdm_search.mask_prior_loss(jnp.asarray(logits), prior), want,
                               rtol=1e-5)
    at_prior = fdm_search.mask_prior_loss(jnp.log(jnp.asarray(prior))[None], prior)
    entropy = -(prior * np.log(prior)).sum(-1).mean()
    np.testing.assert_allclose(at_prior, [entropy], rtol=1e-5)
    assert np.all(np.asarray(fdm_search.mask_prior_loss(jnp.asarray(logits), prior)) > entropy)


def test_z_loss_matches_the_closed_form():
    logits = np.random.default_rng(1).normal(size=(3, 2, 2, 4)).astype(np.float32)
    want = (np.log(np.exp(logits).sum(-1)) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(fdm_search.mask_z_loss(jnp.asarray(logits)), want, rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(mask_prior_steps=-1), dict(mask_prior_sigma=0.0),
                                 dict(mask_prior_weight=-1.0), dict(mask_z_loss=-0.1)])
def test_bad_settings_are_one_line_errors(bad):
    c = tiny_config()
    c.train.update(bad)
    with pytest.raises(UserError, match=list(bad)[0]):
        check_config(c)


def _family(**train):
    c = tiny_config()
    c.model.num_masks = 2
    c.train.update(train)
    family = get_family(c)
    batch = {"image": jnp.zeros((1, SIZE, SIZE, 3))}
    return family, family.init_params(jax.random.PRNGKey(0), batch)


def _batch():
    x = np.random.default_rng(3).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    return {"image": jnp.asarray(x)}


def test_warm_start_adds_the_prior_loss_only_before_its_last_step():
    family, params = _family(mask_prior_steps=5, mask_prior_weight=2.0)
    plain, _ = _family()
    key = jax.random.PRNGKey(4)
    base = plain.loss_fn(params, _batch(), key, train=True).scalars["loss"]
    for step, active in ((0, True), (4, True), (5, False), (100, False)):
        out = family.loss_fn(params, _batch(), key, train=True, step=jnp.int32(step))
        s = out.scalars
        np.testing.assert_allclose(s["loss_diffusion"], base, rtol=1e-6)
        np.testing.assert_allclose(out.loss, s["loss_diffusion"] + s["loss_mask_prior"],
                                   rtol=1e-6)
        assert (float(s["loss_mask_prior"]) > 0) == active


def test_warm_start_loss_is_the_cross_entropy_of_the_model_masks():
    family, params = _family(mask_prior_steps=5)
    key = jax.random.PRNGKey(4)
    out = family.loss_fn(params, _batch(), key, train=True, step=0)
    # the same t and noise as the loss: redo its draw (fdm.diffusion.diffusion_loss)
    key_loss, _ = jax.random.split(key)
    key_t, key_eps = jax.random.split(key_loss)
    x0 = _batch()["image"]
    t = jax.random.randint(key_t, (4,), 0, family.schedule.num_timesteps, dtype=jnp.int32)
    eps = jax.random.normal(key_eps, x0.shape)
    from fdm.diffusion import q_sample
    _, aux = family.apply_model(params, q_sample(family.schedule, x0, t, eps), t,
                                return_mask_logits=True)
    m = np.asarray(jax.nn.softmax(aux["mask_logits"]))
    prior = fdm_search.centre_blob_prior(SIZE, 2, 0.35)
    want = -(prior * np.log(m)).sum(-1).mean()
    np.testing.assert_allclose(out.scalars["loss_mask_prior"], want, rtol=1e-4)


def test_warm_start_moves_the_masks_towards_the_blob():
    import optax
    family, params = _family(mask_prior_steps=1000, mask_prior_weight=1.0)
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, k):
        loss, grads = jax.value_and_grad(lambda q: family.loss_fn(q, _batch(), k, True, 0).scalars
                                         ["loss_mask_prior"])(p)
        u, s = opt.update(grads, s, p)
        return optax.apply_updates(p, u), s, loss

    losses = []
    for i in range(40):
        params, state, loss = step(params, state, jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05
    masks = family.segment_fn(params, _batch()["image"], jax.random.PRNGKey(9))
    blob = fdm_search.prior_hard_labels(SIZE, 0.35)
    agree = (np.asarray(masks).argmax(-1) == blob[None]).mean()
    assert agree > 0.8


def test_z_loss_is_added_at_every_step():
    family, params = _family(mask_z_loss=0.5)
    out = family.loss_fn(params, _batch(), jax.random.PRNGKey(4), train=True, step=10_000)
    assert float(out.scalars["loss_mask_z"]) > 0
    np.testing.assert_allclose(out.loss, out.scalars["loss_diffusion"]
                               + out.scalars["loss_mask_z"], rtol=1e-6)


def test_paper_settings_add_nothing():
    family, params = _family()
    out = family.loss_fn(params, _batch(), jax.random.PRNGKey(4), train=True, step=0)
    assert "loss_mask_prior" not in out.scalars and "loss_mask_z" not in out.scalars
    assert "loss_diffusion" not in out.scalars


X = jnp.asarray(np.random.default_rng(5).normal(size=(2, 8, 8, 3)), jnp.float32)
T = jnp.array([3, 7])
KW = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_groups=4,
          num_masks=2)


def test_branch_embedding_is_a_learned_per_branch_shift_of_the_decoder_time_embedding():
    with_embed = FactorizedUNet(**KW, branch_embed_std=0.5)
    params = with_embed.init(jax.random.PRNGKey(0), X, T)["params"]
    assert params["branch_embed"].shape == (2, 4 * 8)
    assert 0.2 < float(jnp.std(params["branch_embed"])) < 1.0
    plain = FactorizedUNet(**KW)
    rest = {k: v for k, v in params.items() if k != "branch_embed"}
    zeroed = {**params, "branch_embed": jnp.zeros_like(params["branch_embed"])}
    np.testing.assert_allclose(with_embed.apply({"params": zeroed}, X, T).eps,
                               plain.apply({"params": rest}, X, T).eps, atol=1e-6)
    # a non-zero embedding reaches the output once the decoder's last conv is non-zero
    dec = jax.tree_util.tree_map(lambda a: a + 0.1, params["decoder"])
    out = lambda e: with_embed.apply({"params": {**params, "decoder": dec,
                                                 "branch_embed": e}}, X, T).eps
    assert float(jnp.abs(out(params["branch_embed"]) - out(zeroed["branch_embed"])).max()) > 1e-4


def test_mask_logits_are_returned_and_give_the_masks():
    fdm = FactorizedUNet(**KW)
    params = fdm.init(jax.random.PRNGKey(0), X, T)
    out = fdm.apply(params, X, T)
    np.testing.assert_allclose(jax.nn.softmax(out.mask_logits), out.masks, atol=1e-6)
    given = fdm.apply(params, X, T, masks=out.masks)
    assert given.mask_logits is None


def test_branch_embedding_with_concat_decoding_is_rejected():
    from fdm.nn.factorized import fdm_from_config
    cfg = tiny_config(**KW, decoding="concat", branch_embed_std=0.5).model
    with pytest.raises(UserError, match="branch_embed_std"):
        fdm_from_config(cfg)
