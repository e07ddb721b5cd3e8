"""NeRF lifting (seed 000 ch. 3): pose encoder heads, Eq. 3.4's gradient routing, training
and evaluation of a tiny model on the procedural toy scene."""
import importlib
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import toy_scene
from fdm.data import make_iterator
from fdm.data.scenes import load_scene
from fdm.errors import UserError
from fdm.models import get_family
from fdm.models import lifting
from fdm.nerf import cameras
from fdm.nerf.field import NeRFMLP
from fdm.nn.pose_encoder import AxisAngleHead, CandidateHead

CONFIGS = ("toy_scene", "lego", "drums", "shapenet_car", "llff_fern")
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
    return lifting.LiftingFamily(tiny_config())


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
    rs = lifting.RenderSettings(8, 8, 10.0, 2.0, 6.0, 8, 0, True, False, False, 64)
    nerf = NeRFMLP(depth=2, width=16, skips=(), pos_max_deg=3, use_viewdirs=False)
    params = nerf.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 3)))["params"]
    xy = lifting.pixel_xy(jnp.arange(0, 64, 4)[None].repeat(2, 0), 8)
    target = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 3), minval=-1.0, maxval=1.0)

    def camera_loss(p, c2w):
        outs = lifting.render_pixels(lambda x, d: nerf.apply({"params": p}, x, d), c2w, xy, rs,
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
    fam = lifting.LiftingFamily(tiny_config(supervised=True, num_importance=8))
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
    fam = lifting.LiftingFamily(tiny_config(autoencoder=True))
    x_t, t = fam.noisy_input(batch["image"], jnp.full((4,), 50), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(x_t, batch["image"])
    np.testing.assert_array_equal(t, 0)


# ---------------------------------------------------------------- evaluation


def test_evaluate_returns_finite_metrics_and_figures(family, trained, tmp_path):
    metrics = family.evaluate(trained["params"],
                              make_iterator(family.config, "eval"),
                              str(tmp_path), jax.random.PRNGKey(0))
    for key in ("psnr", "ssim", "pose_rot_err_deg", "pose_trans_err", "cam_cls_acc",
                "cam_region_acc"):
        assert np.isfinite(metrics[key]), key
    assert "lpips" not in metrics and metrics["num_eval_views"] == 4
    assert os.path.isfile(tmp_path / "eval" / "renders.png")
    assert os.path.isfile(tmp_path / "eval" / "cameras.png")


def test_align_cameras_exact_and_degenerate():
    true = np.asarray(cameras.orbit_path(6, 4.0, 30.0, 20.0))
    rot = np.asarray(cameras.rodrigues(jnp.array([0.3, -0.2, 0.5])))
    pred = true.copy()
    pred[:, :3, :3] = rot @ true[:, :3, :3]
    pred[:, :3, 3] = 0.5 * true[:, :3, 3] @ rot.T + 1.0
    np.testing.assert_allclose(lifting.align_cameras(pred, true), true, atol=1e-4)
    same = np.broadcast_to(pred[:1], pred.shape).copy()           # untrained encoder
    aligned = lifting.align_cameras(same, true)
    assert np.all(np.isfinite(aligned))
    np.testing.assert_allclose(aligned[:, :3, 3], np.broadcast_to(true[:, :3, 3].mean(0), (6, 3)),
                               atol=1e-5)


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


@pytest.mark.skipif(not os.path.isdir(FERN), reason=f"shared fern not at {FERN}")
def test_fern_config_evaluates_on_views_the_shared_copy_has():
    c = importlib.import_module("configs.llff_fern").get_config()
    c.data.data_dir, c.data.image_size = FERN, (48, 64)
    held_out, train = load_scene(c.data, "eval"), load_scene(c.data, "train")
    assert len(held_out.images) == 3 and len(train.images) == 14


def test_bad_config_values_raise_user_error():
    with pytest.raises(UserError, match="camera_head"):
        lifting.LiftingFamily(tiny_config(camera_head="quaternion"))
    c = tiny_config()
    c.data.image_size = 24
    with pytest.raises(UserError, match="divisible by 16"):
        get_family(c)
