"""NeRF lifting (seed 000 ch. 3): pose encoder heads, Eq. 3.4's gradient routing, training
and evaluation of a tiny model on the procedural toy scene."""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import toy_scene
from fdm.data import load_scene, make_iterator
from fdm.errors import UserError
from fdm.models import check_config, get_family
from fdm.models import lifting
from fdm.nerf import cameras, views
from fdm.nerf.field import NeRFMLP
from fdm.nn.pose_encoder import AxisAngleHead, CandidateHead

CONFIGS = ("toy_scene", "lego", "drums", "shapenet_car", "llff_fern")
POSE_KEYS = ("rot_err_deg", "rot_err_deg_median", "rot_err_deg_unaligned",
             "rot_err_deg_unaligned_median", "const_baseline_deg", "const_baseline_deg_median",
             "spread_ratio", "alignment_orientation_only", "trans_err", "rot_err_deg_pseudo")
FERN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "data", "nerf_llff_data", "fern")


def tiny_config(**model) -> ml_collections.ConfigDict:
    """configs/toy_scene.py:tiny (16x16 views) with model overrides."""
    c = toy_scene.get_config("tiny")
    for key, value in model.items():
        c.model[key] = value
    return c


def first_batch(config) -> dict:
    return next(make_iterator(config, "train"))


@pytest.fixture(scope="module")
def family():
    return get_family(tiny_config())


@pytest.fixture(scope="module")
def batch(family):
    return first_batch(family.config)


def train_steps(fam, batch, num_steps: int, key=jax.random.PRNGKey(0)) -> dict:
    """Adam steps on one batch with one loss key: {'losses': [num_steps + 1] the loss
    before each step, 'first_grads': gradients at the initial parameters, 'params':
    after num_steps + 1 updates}."""
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    tx = fam.optimizer()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: fam.loss_fn(p, batch, key, True).loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    params, opt_state, loss, first_grads = step(params, tx.init(params))
    losses = [float(loss)]
    for _ in range(num_steps):
        params, opt_state, loss, _ = step(params, opt_state)
        losses.append(float(loss))
    return {"losses": losses, "first_grads": first_grads, "params": params}


@pytest.fixture(scope="module")
def trained(family, batch):
    return train_steps(family, batch, 10)


# ---------------------------------------------------------------- pose encoder


def test_axis_angle_head_gives_orthonormal_rotations():
    head = AxisAngleHead()
    f = jax.random.normal(jax.random.PRNGKey(0), (3, 32))
    params = head.init(jax.random.PRNGKey(1), f)
    # Zero-initialised layer -> identity cameras; random weights -> generic rotations.
    np.testing.assert_allclose(head.apply(params, f).c2w[:, 0], np.broadcast_to(np.eye(4),
                                                                               (3, 4, 4)))
    dense = params["params"]["pose"]
    dense["kernel"] = jax.random.normal(jax.random.PRNGKey(2), dense["kernel"].shape)
    pred = head.apply(params, f)
    assert pred.c2w.shape == (3, 1, 4, 4) and pred.scores.shape == (3, 1)
    rot = np.asarray(pred.c2w[:, 0, :3, :3])
    assert np.ptp(rot, axis=0).max() > 0.1                      # input-dependent cameras
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


def test_candidate_head_starts_spread_in_quadrants_looking_at_origin():
    head = CandidateHead(num_candidates=12, layout="quadrant")
    f = jnp.zeros((2, 32))                                      # initial cameras = the biases
    pred = head.apply(head.init(jax.random.PRNGKey(0), f), f)
    assert pred.c2w.shape == (2, 12, 4, 4) and pred.scores.shape == (2, 12)
    centres = np.asarray(pred.c2w[0, :, :3, 3])
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.0, rtol=1e-5)
    signs = cameras.candidate_signs(12, "quadrant")
    assert np.all(np.sign(centres) == signs)
    assert len(np.unique(np.round(centres, 3), axis=0)) == 12  # symmetry broken
    back = np.asarray(pred.c2w[0, :, :3, 2])                    # camera +z points away from 0
    np.testing.assert_allclose(back, centres / 4.0, atol=1e-5)


def test_pose_encoder_output_shapes(family, trained, batch):
    x = jnp.asarray(batch["image"])
    pred = jax.jit(family.predict_cameras)(trained["params"], x, jnp.arange(4))
    assert pred.c2w.shape == (4, 4, 4, 4) and pred.scores.shape == (4, 4)
    assert np.ptp(np.asarray(pred.c2w[:, 0, :3, 3]), axis=0).max() > 0  # depends on the image


# ------------------------------------------------------------------- Eq. 3.4


def _tiny_camera_loss():
    """camera_loss(params, c2w [B,4,4]) -> [B]: renders of a small NeRF at 16 pixels."""
    rs = views.RenderSettings(views.ViewGeometry(8, 8, 10.0, 2.0, 6.0, True), 8, 0, False,
                              False, 64)
    nerf = NeRFMLP(depth=2, width=16, skips=(), pos_max_deg=3, use_viewdirs=False)
    params = nerf.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 3)))["params"]
    xy = views.pixel_xy(jnp.arange(0, 64, 4)[None].repeat(2, 0), 8)
    target = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 3), minval=-1.0, maxval=1.0)

    def camera_loss(p, c2w):
        outs = views.render_pixels(lambda x, d: nerf.apply({"params": p}, x, d), c2w, xy, rs,
                                   jax.random.PRNGKey(2))
        return lifting.reconstruction_loss(outs, target)
    return camera_loss, params


def test_only_the_selected_candidate_receives_reconstruction_gradient():
    camera_loss, params = _tiny_camera_loss()
    logits = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 3))
    c2w = cameras.candidate_cameras(logits, cameras.candidate_signs(4, "quadrant"))
    scores = jax.random.normal(jax.random.PRNGKey(4), (2, 4))
    out = jax.jit(lambda c, s: lifting.candidate_loss(camera_loss, params, c, s, 0.1))(c2w, scores)
    direct = jax.jit(lambda c: jnp.stack([camera_loss(params, c[:, i]) for i in range(4)], 1))(c2w)
    np.testing.assert_allclose(out.losses, direct, rtol=1e-5)
    np.testing.assert_array_equal(out.selected, jnp.argmin(direct, 1))
    np.testing.assert_allclose(out.recon, jnp.min(direct, 1), rtol=1e-5)

    grad_cam, grad_scores = jax.jit(jax.grad(
        lambda c, s: lifting.candidate_loss(camera_loss, params, c, s, 0.1).loss,
        argnums=(0, 1)))(c2w, scores)
    norms = np.asarray(jnp.linalg.norm(grad_cam.reshape(2, 4, -1), axis=-1))
    for b in range(2):
        sel = int(out.selected[b])
        assert norms[b, sel] > 1e-6
        assert np.all(norms[b, np.arange(4) != sel] == 0.0)
    # CE gradient on the scores: softmax - onehot(selected), weighted by lambda / B.
    expected = 0.1 / 2 * (jax.nn.softmax(scores) - jax.nn.one_hot(out.selected, 4))
    np.testing.assert_allclose(grad_scores, expected, atol=1e-6)


def test_ce_gradient_reaches_the_score_head(trained):
    head = trained["first_grads"]["encoder"]["head"]
    assert np.abs(head["scores"]["kernel"]).max() > 0       # only the CE term feeds it
    assert np.abs(head["cameras"]["kernel"]).max() > 0      # the selected render feeds it


# ---------------------------------------------------------------- training


def test_pose_free_loss_decreases_on_the_toy_scene(trained):
    losses = trained["losses"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]


def test_supervised_baseline_loss_decreases():
    fam = get_family(tiny_config(supervised=True, num_importance=8))
    b = first_batch(fam.config)
    out = train_steps(fam, b, 10)
    assert set(out["params"]) == {"nerf"}
    assert out["losses"][-1] < 0.8 * out["losses"][0]


def test_optimizer_separate_adams_for_nerf_and_encoder(family, trained):
    params = trained["params"]
    tx = family.optimizer()
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    top = lambda tree: max(float(jnp.abs(a).max()) for a in jax.tree_util.tree_leaves(tree))
    tc = family.config.train
    np.testing.assert_allclose(top(updates["nerf"]), tc.learning_rate, rtol=1e-3)
    np.testing.assert_allclose(top(updates["encoder"]), tc.encoder_learning_rate, rtol=1e-3)


def test_autoencoder_ablation_feeds_the_clean_image(batch):
    fam = get_family(tiny_config(autoencoder=True))
    x_t, t = fam.noisy_input(batch["image"], jnp.full((4,), 50), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(x_t, batch["image"])
    np.testing.assert_array_equal(t, 0)


# ---------------------------------------------------------------- evaluation


def test_evaluate_returns_finite_metrics_and_figures(family, trained, tmp_path):
    metrics = family.evaluate(trained["params"],
                              make_iterator(family.config, "eval"),
                              str(tmp_path), jax.random.PRNGKey(0))
    for key in ("psnr", "ssim", "mean_image_psnr", "cam_cls_acc", "cam_region_acc"):
        assert np.isfinite(metrics[key]), key
    for prefix in ("pose_", "pose_train_"):          # the eval views, the 8 training views
        for key in POSE_KEYS:
            assert np.isfinite(metrics[prefix + key]), prefix + key
        assert metrics[prefix + "alignment_orientation_only"] in (0, 1)
    for key in ("pose_train_frame_offset_deg", "pose_rot_err_deg_train_frame",
                "pose_rot_err_deg_train_frame_median"):
        assert 0.0 <= metrics[key] <= 180.0, key
    assert metrics["pose_train_frame_scale"] >= 0.0
    assert metrics["pose_spread_ratio_train_frame"] == pytest.approx(   # s x the unaligned ratio
        metrics["pose_train_frame_scale"] * metrics["pose_spread_ratio"], rel=1e-12)
    assert "lpips" not in metrics and metrics["num_eval_views"] == 4
    for name in ("renders", "cameras", "cameras_train"):
        assert os.path.isfile(tmp_path / "eval" / f"{name}.png"), name


def _blender_scene(root, splits, num: int = 4, size: int = 16) -> str:
    """A fake nerf_synthetic scene: per split, num random RGBA views on a ring of radius 4."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for k, split in enumerate(splits):
        os.makedirs(os.path.join(root, split))
        c2w = np.asarray(cameras.orbit_path(num, 4.0, 20.0 + 15.0 * k), np.float64)
        frames = []
        for i in range(num):
            Image.fromarray(rng.integers(0, 256, (size, size, 4), np.uint8)).save(
                os.path.join(root, split, f"r_{i}.png"))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w[i].tolist()})
        with open(os.path.join(root, f"transforms_{split}.json"), "w") as f:
            json.dump({"camera_angle_x": 0.69, "frames": frames}, f)
    return str(root)


def test_supervised_evaluate_on_a_test_split_reports_the_mean_image_baseline(tmp_path):
    c = tiny_config(supervised=True)
    c.data.dataset, c.data.eval_split = "nerf_synthetic", "test"
    c.data.data_dir = _blender_scene(tmp_path / "scene", ("train", "test"))
    fam = get_family(c)
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), None)
    metrics = fam.evaluate(params, make_iterator(c, "eval"), str(tmp_path), jax.random.PRNGKey(1))
    assert metrics["num_eval_views"] == 4 and not any(k.startswith("pose_") for k in metrics)
    train, test = load_scene(c, "train").images, load_scene(c, "eval").images
    mse = np.mean((np.round(train * 255).mean(0) / 255 - np.round(test * 255) / 255) ** 2,
                  axis=(1, 2, 3))
    np.testing.assert_allclose(metrics["mean_image_psnr"], np.mean(-10 * np.log10(mse)),
                               rtol=1e-4)
    assert os.path.isfile(tmp_path / "eval" / "cameras.png")
    c.data.data_dir = _blender_scene(tmp_path / "no_test", ("train",))
    with pytest.raises(UserError, match="transforms_test.json"):
        make_iterator(c, "eval")


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_have_the_shared_keys(name):
    c = importlib.import_module(f"configs.{name}").get_config()
    for key in ("train.num_steps", "train.batch_size", "train.learning_rate", "train.ema_decay",
                "train.seed", "train.log_every", "train.checkpoint_every", "eval.num_examples",
                "data.image_size", "data.data_dir", "diffusion.num_timesteps"):
        section, leaf = key.split(".")
        assert leaf in c[section], key
    assert c.model.family == "nerf_lifting" and c.diffusion.num_timesteps == 100


@pytest.mark.parametrize("name,size", [("lego", 32), ("llff_fern", (48, 64))])
def test_cpu_variants_are_the_readme_runs_and_build(name, size):
    module = importlib.import_module(f"configs.{name}")
    c, paper = module.get_config("cpu"), module.get_config()
    assert c.name == f"{name}_cpu" and c.data.image_size == size
    assert c.model.encoder.ch == 16 and c.train.num_steps < paper.train.num_steps
    assert (c.model.camera_head, c.model.num_candidates) == (paper.model.camera_head,
                                                             paper.model.num_candidates)
    check_config(c)
    with pytest.raises(ValueError, match="variant"):
        module.get_config("gpu")


@pytest.mark.skipif(not os.path.isdir(FERN), reason=f"shared fern not at {FERN}")
def test_fern_config_evaluates_on_views_the_shared_copy_has():
    c = importlib.import_module("configs.llff_fern").get_config()
    c.data.data_dir, c.data.image_size = FERN, (48, 64)
    held_out, train = load_scene(c, "eval"), load_scene(c, "train")
    assert len(held_out.images) == 3 and len(train.images) == 14


def test_bad_config_values_raise_user_error():
    with pytest.raises(UserError, match="camera_head"):
        get_family(tiny_config(camera_head="quaternion"))
    c = tiny_config()
    c.data.image_size = 24
    with pytest.raises(UserError, match="divisible by 16"):
        get_family(c)


# ------------------------------------------------- registration aids (issue 15)


def test_eval_step_returns_the_pseudo_label_camera_and_candidate_losses(family, trained, batch):
    params, x0 = trained["params"], jnp.asarray(batch["image"])
    out = family._eval_step(params, x0, jax.random.PRNGKey(5))
    assert out["candidate_losses"].shape == (4, 4) and out["c2w_pseudo"].shape == (4, 4, 4)
    np.testing.assert_array_equal(out["pseudo"], np.argmin(out["candidate_losses"], -1))
    # The same noisy input as eval_step: t = eval.pose_t, noise from fold_in(rng, 0).
    t = jnp.full((4,), family.config.eval.pose_t)
    x_t, t = family.noisy_input(x0, t, jax.random.fold_in(jax.random.PRNGKey(5), 0))
    cands = family.predict_cameras(params, x_t, t).c2w
    np.testing.assert_allclose(out["c2w_pseudo"], cands[np.arange(4), out["pseudo"]], atol=1e-6)
    np.testing.assert_allclose(out["c2w"], cands[np.arange(4), out["best"]], atol=1e-6)
    # 16x16 views: the pseudo-labels use every pixel (stride max(1, 16 // 32) = 1).
    assert family.pseudo_label_stride() == 1
    full = views.grid_pixels(4, 16, 16, 1)
    xy, target = views.pixel_xy(full, 16), views.gather_pixels(x0, full)
    field = family.field_fn(params["nerf"])
    slow = np.stack([lifting.reconstruction_loss(
        views.render_pixels(field, cands[:, i], xy, family.settings, None), target)
        for i in range(4)], 1)
    np.testing.assert_allclose(out["candidate_losses"], slow, rtol=1e-4)


def test_eval_step_single_camera_head_pseudo_is_the_camera(batch):
    fam = get_family(tiny_config(camera_head="axis_angle", num_candidates=1))
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    out = fam._eval_step(params, jnp.asarray(batch["image"]), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(out["pseudo"], 0)
    np.testing.assert_array_equal(out["best"], 0)
    np.testing.assert_array_equal(out["c2w_pseudo"], out["c2w"])
    assert out["candidate_losses"].shape == (4, 1)


def test_grid_pixels_are_the_centres_of_a_downsampled_image():
    idx = views.grid_pixels(2, 8, 12, 4)
    assert idx.shape == (2, 6)
    xy = np.asarray(views.pixel_xy(idx, 12))[0]
    np.testing.assert_array_equal(xy[:, 0], [2.5, 6.5, 10.5] * 2)     # i * 4 + 2 + 0.5
    np.testing.assert_array_equal(xy[:, 1], [2.5] * 3 + [6.5] * 3)
    np.testing.assert_array_equal(views.grid_pixels(1, 3, 3, 1)[0], np.arange(9))


def test_select_stride_selects_the_grid_argmin_and_routes_gradient_to_it(batch):
    fam = get_family(tiny_config(select_stride=4))
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    x0, rs = jnp.asarray(batch["image"]), fam.settings
    logits = jax.random.normal(jax.random.PRNGKey(3), (4, 4, 3))
    c2w = cameras.candidate_cameras(logits, cameras.candidate_signs(4, "quadrant"), radius=4.0)
    scores = jax.random.normal(jax.random.PRNGKey(4), (4, 4))
    pixels = views.sample_pixels(jax.random.PRNGKey(6), 4, 16, 16, 8)   # the loss pixels
    loss_xy, loss_target = views.pixel_xy(pixels, 16), views.gather_pixels(x0, pixels)
    camera_loss = lambda p, c: lifting.reconstruction_loss(views.render_pixels(
        fam.field_fn(p["nerf"]), c, loss_xy, rs, jax.random.PRNGKey(7)), loss_target)
    run = lambda c, s: lifting.candidate_loss(camera_loss, params, c, s, 0.1,
                                              fam.grid_loss(x0, 4))
    out = jax.jit(run)(c2w, scores)
    # Slow loop: each candidate rendered at the 4x4 grid of pixel centres 2.5, 6.5, ...
    centres = np.arange(2, 16, 4) + 0.5
    xy = jnp.asarray(np.stack(np.meshgrid(centres, centres), -1).reshape(1, 16, 2).repeat(4, 0))
    target = x0[:, 2::4, 2::4].reshape(4, 16, 3)
    field = fam.field_fn(params["nerf"])
    slow = np.stack([lifting.reconstruction_loss(
        views.render_pixels(field, c2w[:, i], xy, rs, None), target) for i in range(4)], 1)
    np.testing.assert_allclose(out.losses, slow, rtol=1e-4)
    np.testing.assert_array_equal(out.selected, np.argmin(slow, 1))
    chosen = c2w[np.arange(4), out.selected]
    np.testing.assert_allclose(out.recon, camera_loss(params, chosen), rtol=1e-5)
    grad = jax.jit(jax.grad(lambda c: run(c, scores).loss))(c2w)
    norms = np.asarray(jnp.linalg.norm(grad.reshape(4, 4, -1), axis=-1))
    for b in range(4):
        sel = int(out.selected[b])
        assert norms[b, sel] > 1e-6 and np.all(norms[b, np.arange(4) != sel] == 0.0)


def test_coarse_to_fine_weights_closed_form():
    from fdm.nerf.field import coarse_to_fine_alpha, coarse_to_fine_weights
    w = np.asarray(coarse_to_fine_weights(jnp.float32(2.25), 5))
    np.testing.assert_allclose(w, [1.0, 1.0, (1 - np.cos(np.pi * 0.25)) / 2, 0.0, 0.0],
                               atol=1e-6)
    np.testing.assert_array_equal(coarse_to_fine_weights(jnp.float32(0.0), 4), 0.0)
    np.testing.assert_allclose(coarse_to_fine_weights(jnp.float32(4.0), 4), 1.0, atol=1e-7)
    alphas = [float(coarse_to_fine_alpha(s, 100, 300, 8)) for s in (0, 100, 200, 300, 900)]
    np.testing.assert_allclose(alphas, [0.0, 0.0, 4.0, 8.0, 8.0])


def test_annealed_encoding_zeroes_the_high_bands():
    from fdm.nerf.field import positional_encoding
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    full = positional_encoding(x, 0, 4)
    np.testing.assert_array_equal(positional_encoding(x, 0, 4, alpha=None), full)
    np.testing.assert_allclose(positional_encoding(x, 0, 4, alpha=jnp.float32(4.0)), full,
                               atol=1e-6)
    enc = np.asarray(positional_encoding(x, 0, 4, alpha=jnp.float32(1.5))).reshape(5, 9, 3)
    # Blocks: identity, sin bands 0..3, cos bands 0..3 (3 components each).
    np.testing.assert_array_equal(enc[:, 0], x)
    for block, weight in zip((1, 2, 3, 4), (1.0, 0.5, 0.0, 0.0)):
        np.testing.assert_allclose(enc[:, block], weight * np.sin(2.0 ** (block - 1) * x),
                                   atol=1e-6)
    # No gradient reaches the first-layer weights of the bands above alpha.
    nerf = NeRFMLP(depth=2, width=8, skips=(), pos_max_deg=4, use_viewdirs=False)
    params = nerf.init(jax.random.PRNGKey(1), x)["params"]
    grad = jax.grad(lambda p: jnp.sum(nerf.apply({"params": p}, x, None,
                                                 jnp.float32(1.5))[0]))(params)
    rows = np.abs(np.asarray(grad["trunk_0"]["kernel"])).sum(-1).reshape(9, 3)
    assert np.all(rows[[0, 1, 2, 5, 6]] > 0) and np.all(rows[[3, 4, 7, 8]] == 0)


def test_loss_depends_on_the_step_only_with_coarse_to_fine(family, trained, batch):
    on = get_family(tiny_config(coarse_to_fine=(0, 10)))
    key = jax.random.PRNGKey(2)
    for fam, changes in ((family, False), (on, True)):
        loss = jax.jit(lambda p, s: fam.loss_fn(p, batch, key, True, s).loss)
        early, late = float(loss(trained["params"], 0)), float(loss(trained["params"], 10))
        assert (early != late) == changes
    # Host-side modes render at the alpha of set_step's step, traced (not frozen by jit).
    c2w = jnp.asarray(batch["c2w"])
    renders = []
    for step in (0, 10, 0):
        on.set_step(step)
        renders.append(np.asarray(on._render(trained["params"], c2w).rgb))
    assert np.abs(renders[0] - renders[1]).max() > 1e-3
    np.testing.assert_array_equal(renders[0], renders[2])
    on.set_step(10)
    np.testing.assert_allclose(renders[1], family._render(trained["params"], c2w).rgb,
                               atol=1e-6)


def test_train_timesteps_follow_the_power_law():
    key = jax.random.PRNGKey(0)
    t = np.asarray(lifting.train_timesteps(key, 200_000, 60, 2.0))
    assert t.dtype == np.int32 and t.min() == 0 and t.max() == 59
    for k in (1, 6, 15, 30, 45):                   # P(t < k) = (k / t_max)^(1 / p)
        assert abs(np.mean(t < k) - (k / 60) ** 0.5) < 0.005, k
    uniform = lifting.train_timesteps(key, 1000, 100, 1.0)   # the paper's U[0, T)
    np.testing.assert_array_equal(uniform, jax.random.randint(key, (1000,), 0, 100))


@pytest.mark.parametrize("key,value,match", [
    ("select_stride", -1, "select_stride"), ("select_stride", 17, "select_stride"),
    ("coarse_to_fine", (10, 5), "coarse_to_fine"), ("coarse_to_fine", (5,), "coarse_to_fine"),
    ("train_t_max", 101, "train_t_max"), ("train_t_power", 0.0, "train_t_power"),
    ("view_warmup_steps", 10, "view_warmup_steps"),          # needs the axis-angle head
    ("view_warmup_steps", -1, "view_warmup_steps")])
def test_bad_registration_aid_values_raise_user_error(key, value, match):
    with pytest.raises(UserError, match=match):
        get_family(tiny_config(**{key: value}))


@pytest.mark.parametrize("name", CONFIGS)
def test_registration_aids_are_off_in_every_config(name):
    m = importlib.import_module(f"configs.{name}").get_config().model
    assert (m.select_stride, tuple(m.coarse_to_fine), m.train_t_max, m.train_t_power,
            m.view_warmup_steps) == (0, (0, 0), 0, 1.0, 0)


def _warmup_family(steps: int = 5):
    return get_family(tiny_config(camera_head="axis_angle", num_candidates=1,
                                  view_warmup_steps=steps))


def test_view_table_starts_at_identity_and_has_its_own_adam(batch):
    fam = _warmup_family()
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    table = params[lifting.VIEWS_KEY]
    assert table.shape == (len(fam.scene.train_c2w), 6)
    np.testing.assert_allclose(lifting.table_cameras(table), np.broadcast_to(
        np.eye(4, dtype=np.float32), (len(table), 4, 4)), atol=1e-7)
    state = fam.optimizer().init(params)
    assert lifting.VIEWS_KEY in state.inner_states


def test_view_warmup_routes_the_reconstruction_to_the_table_then_to_the_encoder(batch):
    """During the warm-up the NeRF loss reaches only the table rows of the batch's views
    and the encoder only through the distillation term; afterwards the table gets exactly
    zero gradient and the loss is the paper's Eq. 3.3 (same value as without a table)."""
    fam = _warmup_family(5)
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    rows = jax.random.normal(jax.random.PRNGKey(1), params[lifting.VIEWS_KEY].shape) * 0.1
    params = {**params, lifting.VIEWS_KEY: rows}
    key = jax.random.PRNGKey(3)
    grad = lambda step: jax.grad(lambda p: fam.loss_fn(p, batch, key, True, step).loss)(params)
    warm, after = grad(0), grad(5)
    views = np.asarray(warm[lifting.VIEWS_KEY])
    used = np.zeros(len(views), bool)
    used[np.asarray(batch["index"])] = True
    assert np.all(np.abs(views[used]).sum(-1) > 0) and np.all(views[~used] == 0)
    np.testing.assert_array_equal(after[lifting.VIEWS_KEY], 0)
    # the encoder (at the identity: its head is zero-initialised) regresses the table
    # rows; the NeRF gets gradient in both phases
    assert any(np.any(g != 0) for g in jax.tree_util.tree_leaves(warm["encoder"]))
    assert any(np.any(g != 0) for g in jax.tree_util.tree_leaves(after["nerf"]))
    paper = get_family(tiny_config(camera_head="axis_angle", num_candidates=1))
    loss = fam.loss_fn(params, batch, key, True, 5)
    plain = {k: v for k, v in params.items() if k != lifting.VIEWS_KEY}
    np.testing.assert_allclose(loss.loss, paper.loss_fn(plain, batch, key, True, 5).loss,
                               rtol=1e-6)


def test_mean_gauge_removes_the_tables_global_drift(batch):
    """view_gauge='mean': the rendered table is the rows minus their mean (numpy), so
    shifting every row by one vector (a global turn and shift of all cameras) changes
    nothing, and the table's gradient has no component along that direction."""
    fam = get_family(tiny_config(camera_head="axis_angle", num_candidates=1,
                                 view_warmup_steps=5, view_gauge="mean"))
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    rows = np.asarray(jax.random.normal(jax.random.PRNGKey(1), params[lifting.VIEWS_KEY].shape))
    rows = 0.1 * rows
    np.testing.assert_allclose(lifting.gauge_fixed_table(rows, "mean"),
                               rows - rows.mean(0), atol=1e-7)
    np.testing.assert_array_equal(lifting.gauge_fixed_table(rows, "free"), rows)
    key = jax.random.PRNGKey(3)
    loss = lambda table: fam.loss_fn({**params, lifting.VIEWS_KEY: table}, batch, key,
                                     True, 0).scalars["recon"]
    shift = np.array([0.05, -0.03, 0.02, 0.1, 0.0, -0.1], np.float32)
    np.testing.assert_allclose(loss(rows + shift), loss(rows), rtol=1e-5)
    grad = np.asarray(jax.grad(loss)(jnp.asarray(rows)))
    assert np.abs(grad).max() > 0
    np.testing.assert_allclose(grad.sum(0), 0.0, atol=1e-6 * np.abs(grad).max() * len(grad))


def test_view_warmup_distillation_is_the_camera_gap(batch):
    fam = _warmup_family(5)
    params = jax.jit(fam.init_params)(jax.random.PRNGKey(0), batch)
    rows = jax.random.normal(jax.random.PRNGKey(1), params[lifting.VIEWS_KEY].shape) * 0.1
    params = {**params, lifting.VIEWS_KEY: rows}
    key = jax.random.PRNGKey(3)
    out = fam.loss_fn(params, batch, key, True, 0)
    x_t, t = fam.noisy_input(jnp.asarray(batch["image"]), lifting.train_timesteps(
        jax.random.fold_in(key, 2), len(batch["image"]), 100, 1.0), jax.random.fold_in(key, 3))
    c2w = fam.predict_cameras(params, x_t, t, True, jax.random.fold_in(key, 4)).c2w[:, 0]
    table = np.asarray(lifting.table_cameras(rows[np.asarray(batch["index"])]))
    expected = np.mean((np.asarray(c2w)[:, :3] - table[:, :3]) ** 2)
    np.testing.assert_allclose(out.scalars["distill"], expected, rtol=1e-5)
    np.testing.assert_allclose(out.loss, out.scalars["recon"] + expected, rtol=1e-5)
    assert float(out.scalars["warm"]) == 1.0
