"""DietNeRF (seed 004 ch. 4): the semantic consistency loss and its identities, the pose
sampler's distribution, the strided jittered ray grid, the few-shot view selection, and
the DietNeRF mode of the lifting family trained end to end with a tiny random CLIP tower."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import dietnerf as dietnerf_config
from fdm import run as run_lib
from fdm.data import load_scene
from fdm.errors import UserError
from fdm.models import check_config, get_family
from fdm.models import lifting_semantic
from fdm.nerf import cameras, dietnerf, render, views
from fdm.nerf.rays import Rays
from fdm.nn.clip_vision import ClipVisionConfig, ClipVisionTransformer
from fdm.nn.convert_clip import ClipVisionCheckpoint, save_clip_npz

TINY_TOWER = ClipVisionConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2,
                              mlp_dim=32, embed_dim=8)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A random-weight CLIP tower (16^2 input, 8-d embedding) saved as a converted .npz."""
    params = jax.jit(ClipVisionTransformer(TINY_TOWER).init)(jax.random.PRNGKey(0),
                                                             jnp.zeros((1, 16, 16, 3)))["params"]
    path = str(tmp_path_factory.mktemp("clip") / "tiny_clip.npz")
    save_clip_npz(path, ClipVisionCheckpoint(TINY_TOWER, jax.device_get(params)))
    return path


def smoke_config(encoder: str):
    c = dietnerf_config.get_config("smoke")
    c.model.semantic_encoder = encoder
    return c


# ---------------------------------------------------------------- the loss


def test_loss_is_minus_lambda_for_equal_and_plus_lambda_for_opposite_embeddings():
    a = jax.random.normal(jax.random.PRNGKey(0), (5, 16))
    lam = 0.1
    np.testing.assert_allclose(dietnerf.semantic_consistency_loss(a, a, lam), -lam, rtol=1e-6)
    np.testing.assert_allclose(dietnerf.semantic_consistency_loss(a, -a, lam), lam, rtol=1e-6)
    np.testing.assert_allclose(dietnerf.semantic_consistency_loss(a, 3.0 * a, lam), -lam,
                               rtol=1e-6)      # cos: scale-free, unlike Eq. 4.4
    b = jax.random.normal(jax.random.PRNGKey(1), (5, 16))
    expected = -lam * np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    np.testing.assert_allclose(dietnerf.semantic_consistency_loss(a, b, lam), expected,
                               rtol=1e-5)


def test_eq_4_4_is_the_fixed_eq_4_5_plus_lambda_for_unit_vectors():
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    a = unit(jax.random.normal(jax.random.PRNGKey(2), (7, 32)))
    b = unit(jax.random.normal(jax.random.PRNGKey(3), (7, 32)))
    np.testing.assert_allclose(dietnerf.semantic_l2_loss(a, b, 0.3),
                               dietnerf.semantic_consistency_loss(a, b, 0.3) + 0.3, atol=1e-6)


def test_eq_4_4_with_identity_phi_is_the_full_image_mse_scaled():
    """phi(x) = x: L_SC,l2 = (lambda H W / 2) L_full, L_full = mean over the H W pixels
    of the squared colour error (Sec. 4.4.1's 'reduces to L_full up to a scaling')."""
    i, i_hat = jax.random.uniform(jax.random.PRNGKey(4), (2, 6, 5, 3))
    lam = 0.1
    l_full = jnp.mean(jnp.sum((i - i_hat) ** 2, -1))
    np.testing.assert_allclose(dietnerf.semantic_l2_loss(i.reshape(-1), i_hat.reshape(-1), lam),
                               lam * 6 * 5 / 2 * l_full, rtol=1e-5)


def test_gradient_reaches_the_render_not_the_target():
    t = jax.random.normal(jax.random.PRNGKey(5), (8,))
    r = jax.random.normal(jax.random.PRNGKey(6), (8,))
    g_t, g_r = jax.grad(dietnerf.semantic_consistency_loss, argnums=(0, 1))(t, r, 0.1)
    np.testing.assert_array_equal(g_t, 0.0)
    cos = t @ r / (jnp.linalg.norm(t) * jnp.linalg.norm(r))
    expected = -0.1 * (t / (jnp.linalg.norm(t) * jnp.linalg.norm(r)) - cos * r / (r @ r))
    np.testing.assert_allclose(g_r, expected, rtol=1e-5, atol=1e-7)
    stepped = r - 0.5 * g_r                  # the sign: descending it aligns the render
    assert dietnerf.cosine_similarity(t, stepped) > cos


# ---------------------------------------------------------------- the poses


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0)])
def test_pose_sampler_distribution_and_look_at(up):
    n = 4000
    sample = jax.jit(dietnerf.sample_poses, static_argnums=(1, 2, 3, 4))
    c2w = np.asarray(sample(jax.random.PRNGKey(0), n, (0.0, 90.0), (3.5, 4.5), up), np.float64)
    eye, rot = c2w[:, :3, 3], c2w[:, :3, :3]
    w = np.asarray(up) / np.linalg.norm(up)
    frame = np.asarray(dietnerf.up_frame(up), np.float64)
    radius = np.linalg.norm(eye, axis=-1)
    elevation = np.rad2deg(np.arcsin(eye @ w / radius))
    azimuth = np.rad2deg(np.arctan2(eye @ frame[1], eye @ frame[0]))
    for values, lo, hi in ((radius, 3.5, 4.5), (elevation, 0.0, 90.0), (azimuth, -180.0, 180.0)):
        assert values.min() >= lo - 1e-4 and values.max() <= hi + 1e-4
        assert stats.kstest(values, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    np.testing.assert_allclose(-rot[:, :, 2], -eye / radius[:, None], atol=1e-5)  # looks at 0
    assert np.abs(rot[:, :, 0] @ w).max() < 1e-4                                 # no roll
    assert np.all(rot[:, :, 1] @ w >= -1e-5)                                     # image up


def test_pose_sampler_matches_the_codes_pose_spherical():
    """The authors' pose_spherical(theta, phi, r): eye = r (cos e sin theta, cos e cos theta,
    sin e) with e = -phi, and the same level camera as look_at (rotation columns)."""
    theta, phi, r = 40.0, -30.0, 4.0
    th, ph = np.deg2rad(theta), np.deg2rad(phi)
    trans = np.eye(4)
    trans[2, 3] = r
    rot_phi = np.array([[1, 0, 0, 0], [0, np.cos(ph), -np.sin(ph), 0],
                        [0, np.sin(ph), np.cos(ph), 0], [0, 0, 0, 1]])
    rot_theta = np.array([[np.cos(th), 0, -np.sin(th), 0], [0, 1, 0, 0],
                          [np.sin(th), 0, np.cos(th), 0], [0, 0, 0, 1]])
    flip = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    code = flip @ rot_theta @ rot_phi @ trans
    azimuth = np.rad2deg(np.arctan2(code[1, 3], code[0, 3]))
    eye = dietnerf.spherical_eyes(jnp.array([azimuth]), jnp.array([-phi]), jnp.array([r]))
    ours = cameras.look_at(eye)[0]
    np.testing.assert_allclose(ours, code, atol=1e-5)


# ---------------------------------------------------------------- the ray grid


def test_paper_grid_has_stride_2_and_offsets_in_0_64():
    offsets = []
    grid = jax.jit(dietnerf.jittered_grid, static_argnums=(1, 2, 3))
    for i in range(200):
        xy = np.asarray(grid(jax.random.PRNGKey(i), 400, 400, 168))
        assert xy.shape == (168, 168, 2)
        np.testing.assert_allclose(np.diff(xy[..., 0], axis=1), 2.0, atol=1e-4)
        np.testing.assert_allclose(np.diff(xy[..., 1], axis=0), 2.0, atol=1e-4)
        np.testing.assert_array_equal(xy[:, :1, 0], xy[:, 1:2, 0] - 2.0)   # x per column
        offsets.append((xy[0, 0, 0] - 0.5, xy[0, 0, 1] - 0.5))
    offsets = np.asarray(offsets)
    assert offsets.min() >= 0.0 and offsets.max() < 64.0
    assert stats.kstest(offsets.reshape(-1), stats.uniform(0, 64).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(offsets.T)[0, 1]) < 0.3                        # drawn per axis
    assert np.asarray(grid(jax.random.PRNGKey(0), 400, 400, 168)).max() < 400
    assert round(168 ** 2 / 400 ** 2, 3) == 0.176                        # of the rays


def test_grid_without_key_is_centred_and_strides_follow_each_axis():
    xy = np.asarray(dietnerf.jittered_grid(None, 200, 100, 40))
    np.testing.assert_allclose(xy[:, 0, 1], 0.5 + 5.0 * np.arange(40))    # 200 // 40, span 0
    np.testing.assert_allclose(xy[0, :, 0], 0.5 + 10.0 + 2.0 * np.arange(40))  # span 20
    assert dietnerf.grid_stride(32, 13) == (2, 6)
    with pytest.raises(ValueError, match="grid"):
        dietnerf.grid_stride(16, 17)


def test_crop_pixels_stay_in_the_centre_window():
    idx = np.asarray(views.crop_pixels(jax.random.PRNGKey(0), 3, 40, 20, 500, 0.5))
    rows, cols = idx // 20, idx % 20
    assert rows.min() == 10 and rows.max() == 29 and cols.min() == 5 and cols.max() == 14


def test_separate_fine_network_renders_the_fine_pass():
    rays = Rays(jnp.array([[0.0, 0.0, 4.0]]), jnp.array([[0.0, 0.0, -1.0]]),
                jnp.array([[0.0, 0.0, -1.0]]))
    grey = lambda x, d: (jnp.full(x.shape, 0.5), jnp.full(x.shape[:-1], 5.0))  # noqa: E731
    red = lambda x, d: (jnp.zeros(x.shape).at[..., 0].set(1.0),                # noqa: E731
                        jnp.full(x.shape[:-1], 5.0))
    hierarchical = jax.jit(render.render_rays_hierarchical, static_argnums=(0, 2, 3, 4, 5),
                           static_argnames="fine_fn")
    one = hierarchical(grey, rays, 2.0, 6.0, 8, 8)
    two = hierarchical(grey, rays, 2.0, 6.0, 8, 8, fine_fn=red)
    np.testing.assert_allclose(two[0].rgb, one[0].rgb)
    np.testing.assert_allclose(two[1].rgb, [[1.0, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(one[1].rgb, [[0.5, 0.5, 0.5]], atol=1e-6)


# ---------------------------------------------------------------- few-shot views


def test_num_train_views_keeps_a_seeded_subset_of_the_training_split():
    c = dietnerf_config.get_config("toy")
    c.data.image_size = 8
    few = load_scene(c, "train")
    c.data.num_train_views = 0
    full = load_scene(c, "train")
    keep = np.sort(np.random.default_rng(0).choice(100, 8, replace=False))
    assert len(few.images) == 8 and len(full.images) == 100
    np.testing.assert_array_equal(few.c2w, full.c2w[keep])
    assert len(load_scene(c, "eval").images) == 20                      # eval untouched
    c.data.num_train_views = 101
    with pytest.raises(UserError, match="num_train_views=101"):
        load_scene(c, "train")


# ---------------------------------------------------------------- the family


def test_schedule_every_k_and_mse_only_at_the_end():
    c = dietnerf_config.get_config("toy")
    s = lifting_semantic.SemanticSettings.from_config(c)
    active = np.asarray([s.active(i) for i in range(3000)])
    assert np.flatnonzero(active)[:3].tolist() == [9, 19, 29]
    assert active[:2500].sum() == 250 and not active[2500:].any()
    c.model.semantic_weight = 0.0
    assert lifting_semantic.SemanticSettings.from_config(c) is None


def test_semantic_loss_reaches_both_networks_and_not_the_encoder(tiny_encoder):
    from fdm.data import make_iterator
    fam = get_family(smoke_config(tiny_encoder))
    batch = next(make_iterator(fam.config, "train"))
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    prior = fam.frozen_params()["semantic"]
    assert prior.targets.shape == (4, TINY_TOWER.embed_dim)    # the 4 training views

    @jax.jit
    def loss_and_grads(p, q):
        def loss(p, q):
            return lifting_semantic.semantic_loss(
                fam.field_fn(p["nerf"]), fam.fine_fn(p), q, fam.semantic, fam.settings,
                jax.random.PRNGKey(1))
        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(p, q)

    (sc, cos), (grads, prior_grads) = loss_and_grads(params, prior)
    assert -0.2 <= float(sc) < 0.0 and 0.0 < float(cos) <= 1.0   # lambda 0.1, coarse + fine
    for name in ("nerf", "nerf_fine"):
        assert float(tree_norm(grads[name])) > 0.0, name
    assert float(tree_norm(prior_grads.params)) == 0.0          # stop-gradient targets, and
    assert float(tree_norm(prior_grads.targets)) == 0.0         # the encoder is not trained
    with pytest.raises(ValueError, match="frozen_params"):
        fam.loss_fn(params, batch, jax.random.PRNGKey(1), True, 0)


def tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(tree)))


def test_bad_dietnerf_settings_are_one_line_errors(tmp_path):
    c = dietnerf_config.get_config("smoke")
    c.model.supervised = False
    with pytest.raises(UserError, match="model.semantic_weight=0.1 is invalid"):
        check_config(c)
    c = smoke_config(str(tmp_path / "missing.npz"))
    with pytest.raises(UserError) as info:
        run_lib.run(c, str(tmp_path / "workdir"), "train")
    message = str(info.value)
    assert "convert_clip" in message and "ViT-B-32.pt" in message and "\n" not in message
    assert not os.path.exists(tmp_path / "workdir")              # nothing written before
    c.model.semantic_size = 17
    with pytest.raises(UserError, match="semantic_size=17 exceeds"):
        get_family(c)


def test_smoke_config_trains_and_evaluates_through_run(tiny_encoder, tmp_path):
    workdir = str(tmp_path / "run")
    c = smoke_config(tiny_encoder)
    state = run_lib.run(c, workdir, "train")
    assert int(state.step) == 2 and set(state.params) == {"nerf", "nerf_fine"}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    rows = [row for row in logged if "sc_loss" in row]
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[0]["sc_loss"] < 0.0 and rows[1]["sc_loss"] == 0.0   # K = 1, then MSE only
    for row in rows:
        np.testing.assert_allclose(row["loss"], row["recon"] + row["sc_loss"], rtol=1e-5)
    c.model.semantic_encoder = str(tmp_path / "moved.npz")   # evaluation needs no encoder
    results = run_lib.run(c, workdir, "evaluate")
    assert np.isfinite(results["psnr"]) and results["num_eval_views"] == 2
