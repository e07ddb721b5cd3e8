"""FDMFamily: loss and mask statistics, segmentation, evaluation metrics, figures."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs.fdm_common import fdm_config
from fdm.errors import UserError
from fdm.models import get_family

SIZE = 16


def tiny_config(**model):
    c = fdm_config("fdm_tiny_test", dataset="shapes", data_dir="", image_size=SIZE, ch=8,
                   ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_steps=2,
                   batch_size=4)
    c.data.update(dict(num_regions=3, num_train=16, num_eval=6, random_flip=False))
    c.model.update(dict(num_groups=4, level2_masks=2))
    c.model.update(model)
    c.diffusion.update(dict(num_timesteps=20, beta_end=0.2))
    c.train.learning_rate, c.train.grad_clip = 1e-2, 0.0
    c.eval.update(dict(num_examples=3, batch_size=4, sampler="ddim", sample_steps=4,
                       segment_t=3, record_every=2, sample_stats=False))
    return c


@pytest.fixture(scope="module")
def family_and_params():
    family = get_family(tiny_config())
    batch = {"image": jnp.zeros((1, SIZE, SIZE, 3))}
    params = jax.jit(family.init_params)(jax.random.key(0, impl="rbg"), batch)
    # Random values everywhere so that masks are not uniform (zero-init output convs).
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [0.3 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])
    return family, params


def test_loss_logs_mask_statistics(family_and_params):
    family, params = family_and_params
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, SIZE, SIZE, 3)), jnp.float32)
    out = family.loss_fn(params, {"image": x}, jax.random.PRNGKey(2), train=True)
    areas = [float(out.scalars[f"mask_area_{k}"]) for k in range(3)]
    assert np.isfinite(float(out.loss))
    assert sum(areas) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= float(out.scalars["mask_entropy"]) <= 1.0


def test_segment_images_shapes_and_determinism(family_and_params):
    family, params = family_and_params
    images = np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    labels, masks = family.segment_images(params, images, jax.random.PRNGKey(3))
    assert labels.shape == (6, SIZE, SIZE) and masks.shape == (6, SIZE, SIZE, 3)
    np.testing.assert_allclose(masks.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, masks.argmax(-1))
    again, _ = family.segment_images(params, images, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(labels, again)
    with pytest.raises(UserError):
        family.segment_images(params, images.astype(np.float32), jax.random.PRNGKey(3))


def test_evaluate_reports_segmentation_with_mapping(tmp_path, family_and_params):
    from fdm.data import make_iterator
    family, params = family_and_params
    metrics = family.evaluate(params, make_iterator(family.config, "eval"), str(tmp_path),
                              jax.random.PRNGKey(4))
    for key in ("seg_acc", "seg_iou", "seg_dice", "seg_miou", "eval_loss", "train_loss",
                "seg_iou_per_image", "seg_ari", "baseline_all_fg_iou", "baseline_centre_iou",
                "eval_loss_q0", "mask_entropy", "mask_shift_error"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["mask_entropy"] <= 1 and 0 <= metrics["mask_shift_error"] <= 1
    assert "baseline_mask_prior_iou" not in metrics     # no warm start configured
    assert metrics["seg_num_images"] == 6          # padding rows of the eval pass excluded
    assert {metrics[f"seg_region{k}_is_fg"] for k in range(3)} <= {0, 1}
    assert os.path.exists(tmp_path / "segment" / "eval_overlays.png")


def test_evaluate_breaks_scores_out_per_voc_class(tmp_path, family_and_params):
    """Table 2.7: with a 'voc_class' column, per-class scores under the global mapping."""
    from fdm.data import make_iterator
    from fdm.metrics import segmentation as seg
    family, params = family_and_params
    batches = [dict(b, voc_class=np.arange(len(b["image"])) % 2 + 1)
               for b in make_iterator(family.config, "eval")]
    metrics = family.evaluate(params, iter(batches), str(tmp_path), jax.random.PRNGKey(4))
    assert {k for k in metrics if k.startswith("seg_iou_voc")} == {
        "seg_iou_voc1", "seg_iou_voc2", "seg_iou_voc_mean"}
    assert metrics["seg_miou_voc_mean"] == np.mean([metrics["seg_miou_voc1"],
                                                    metrics["seg_miou_voc2"]])
    # one class holding every image reproduces the pooled fg/bg scores
    whole = seg.group_scores(np.zeros((2, 4, 4), int), np.ones((2, 4, 4), int), np.ones(2),
                             (True,) + (False,) * (family.num_masks - 1))
    assert whole[1]["iou"] == 100.0 and whole[1]["acc"] == 100.0


def test_evaluate_scores_generated_masks_with_a_saved_segmenter(tmp_path, monkeypatch,
                                                               family_and_params):
    from fdm.data import make_iterator
    from tests import helpers
    family, params = family_and_params
    images = np.random.default_rng(2).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    masks = (images.mean(-1) > 128).astype(np.int32)
    helpers.train_segmenter(str(tmp_path / "supervised"), images, masks)
    config = tiny_config()
    config.eval.update(segmenter_workdir=str(tmp_path / "supervised"), num_gen_seg_samples=5,
                       sample_stats=True)
    monkeypatch.setattr(family, "config", config)  # the fixture's compiled functions
    generate, calls = family.generate, []
    monkeypatch.setattr(family, "generate",
                        lambda p, num, *a, **k: calls.append(num) or generate(p, num, *a, **k))
    metrics = family.evaluate(params, make_iterator(config, "eval"), str(tmp_path / "run"),
                              jax.random.PRNGKey(4))
    for key in ("gen_seg_acc", "gen_seg_iou", "gen_seg_dice", "sample_mean_err", "seg_iou"):
        assert np.isfinite(metrics[key]), key
    assert calls == [5]                          # one sampling run serves all sample metrics
    config.eval.segmenter_workdir = str(tmp_path / "none")
    with pytest.raises(UserError, match="--baseline=supervised"):
        family.evaluate(params, iter([]), str(tmp_path), jax.random.PRNGKey(4))


def test_sample_writes_images_masks_and_trajectory(tmp_path, family_and_params):
    family, params = family_and_params
    family.sample(params, str(tmp_path), jax.random.PRNGKey(5))
    files = sorted(os.listdir(tmp_path / "samples"))
    assert files == ["grid.png", "mask_channels.png", "masks.png", "progressive.png",
                     "refinement.png", "samples.npz"]
    data = np.load(tmp_path / "samples" / "samples.npz")
    assert data["images"].shape == (3, SIZE, SIZE, 3)
    assert data["masks"].shape == (3, SIZE, SIZE, 3)
    assert data["trajectory_masks"].shape == (2, 3, SIZE, SIZE, 3)   # 4 steps, every 2
    np.testing.assert_array_equal(data["labels"], data["masks"].argmax(-1))


def test_segment_mode_writes_masks_and_overlays(tmp_path, family_and_params):
    family, params = family_and_params
    for i in range(2):
        Image.fromarray(np.full((40, 30, 3), 60 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    family.segment(params, str(tmp_path / "im*.png"), str(tmp_path), jax.random.PRNGKey(6))
    out = sorted(os.listdir(tmp_path / "segment"))
    assert out == ["im0_labels.png", "im0_mask.png", "im0_overlay.png",
                   "im1_labels.png", "im1_mask.png", "im1_overlay.png"]
    labels = np.asarray(Image.open(tmp_path / "segment" / "im0_labels.png"))
    assert labels.shape == (SIZE, SIZE) and labels.max() < 3


@pytest.mark.parametrize("model", [dict(decoding="unshared"), dict(hierarchical=True)])
def test_variants_build_through_the_family(model):
    family = get_family(tiny_config(**model))
    params = jax.jit(family.init_params)(jax.random.key(0, impl="rbg"),
                                         {"image": jnp.zeros((1, SIZE, SIZE, 3))})
    out = family.loss_fn(params, {"image": jnp.zeros((2, SIZE, SIZE, 3))},
                         jax.random.PRNGKey(0), train=True)
    assert np.isfinite(float(out.loss))


def test_mask_shift_error_tells_content_masks_from_positional_ones(family_and_params):
    """Through the family's own noising and batching: a mask generator replaced by one
    that reads the pixel colours scores ~0, one that ignores the image scores > 0.1."""
    family, params = family_and_params
    images = np.random.default_rng(5).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    square = np.zeros((SIZE, SIZE), np.float32)
    square[4:12, 4:12] = 1

    def with_masks(masks_fn):
        f = get_family(tiny_config())
        f.apply_model = lambda p, x_t, t, **kw: (x_t, {"masks": masks_fn(x_t)})
        return f.mask_shift_error(params, images, jax.random.PRNGKey(0))

    content = lambda x: jax.nn.softmax(jnp.stack([x[..., 0], x[..., 1], x[..., 2]], -1))
    fixed = lambda x: jnp.broadcast_to(jnp.stack([square, 1 - square, 0 * square], -1),
                                       x.shape[:3] + (3,))
    assert with_masks(content) < 1e-6
    assert with_masks(fixed) > 0.1


def test_evaluate_reports_the_warm_start_prior_as_a_baseline(tmp_path, family_and_params,
                                                            monkeypatch):
    from fdm.data import make_iterator
    from fdm.metrics import segmentation as seg
    from fdm.models import fdm_search
    family, params = family_and_params
    monkeypatch.setattr(family, "search", fdm_search.SearchSettings(prior_steps=10,
                                                                    prior_sigma=0.5))
    metrics = family.evaluate(params, make_iterator(family.config, "eval"), str(tmp_path),
                              jax.random.PRNGKey(4))
    targets = np.concatenate([np.asarray(b["mask"])[np.asarray(b["valid"])]
                              for b in make_iterator(family.config, "eval")])
    blob = fdm_search.prior_hard_labels(SIZE, 0.5).astype(bool)
    fg = targets > 0
    pred = np.broadcast_to(blob, fg.shape)
    want = 100 * (pred & fg).sum() / (pred | fg).sum()
    assert metrics["baseline_mask_prior_iou"] == pytest.approx(want)
