"""fdm.baselines: split, scores, DatasetDDPM-unsup k-means, supervised U-Net, GrabCut, CLI."""
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

import fdm
from configs import shapes
from configs.fdm_common import fdm_config
from fdm.baselines import common, histogram, kmeans, run_baseline, supervised
from fdm.data import load_split_arrays
from fdm.errors import UserError
from fdm.models import get_family
from fdm.models import segmenter as segmenter_lib
from fdm.nn.unet import decoder_features
from tests import helpers

S = 16


def disk_images(n: int, size: int = S, seed: int = 0):
    """Noisy dark-green images with a bright red disk of random centre/radius:
    (uint8 [n, size, size, 3], int32 masks [n, size, size], 1 = disk)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (rng.uniform(0.15, 0.3) * size) ** 2
        image = (np.where(mask[..., None], [220, 40, 40], [30, 90, 40])
                 + rng.normal(0, 12, (size, size, 3)))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask.astype(np.int32))
    return np.stack(images), np.stack(masks)


def small_config(data_dir="", **baselines):
    """A folder-data FDM-style config with a tiny U-Net (the supervised net's sizes)."""
    c = fdm_config("baseline_test", dataset="folder", data_dir=data_dir, image_size=S,
                   ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_steps=1,
                   batch_size=4)
    c.model.num_groups = 4
    c.eval.batch_size = 8
    c.baselines.update(baselines)
    return c


def write_folder(root, images, masks=None):
    """images/NAME.png (+ masks/NAME.png, 255 = fg) in the folder-dataset layout."""
    os.makedirs(root / "images")
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / "images" / f"im{i:03d}.png")
        if masks is not None:
            os.makedirs(root / "masks", exist_ok=True)
            mask = Image.fromarray((255 * masks[i]).astype(np.uint8))
            mask.save(root / "masks" / f"im{i:03d}.png")
    return str(root)


# --- split and scores ---------------------------------------------------------------------

def test_split_first_n_train_rest_test(tmp_path):
    images, masks = disk_images(5)
    root = write_folder(tmp_path / "data", images, masks)
    data = common.load_baseline_data(small_config(root, num_train_images=3))
    np.testing.assert_array_equal(data.train.images, images[:3])
    np.testing.assert_array_equal(data.train.masks, masks[:3])
    np.testing.assert_array_equal(data.evaluation.masks, masks)
    np.testing.assert_array_equal(data.test_rows, [3, 4])
    whole = common.load_baseline_data(small_config(root, num_train_images=0))
    np.testing.assert_array_equal(whole.test_rows, np.arange(5))
    with pytest.raises(UserError, match="leaves no test image"):
        common.load_baseline_data(small_config(root, num_train_images=5))
    no_masks = write_folder(tmp_path / "no_masks", images)
    with pytest.raises(UserError, match="has no masks"):
        common.load_baseline_data(small_config(no_masks))


def test_class_scores_by_hand():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, (4, 8, 8))
    pred = np.where(rng.random((4, 8, 8)) < 0.7, target, rng.integers(0, 3, (4, 8, 8)))
    out = common.class_scores(pred, target)
    p, t = pred > 0, target > 0
    assert out["seg_acc"] == pytest.approx(100 * np.mean(p == t))
    assert out["seg_iou"] == pytest.approx(100 * (p & t).sum() / (p | t).sum())
    assert out["seg_dice"] == pytest.approx(200 * (p & t).sum() / (p.sum() + t.sum()))
    ious = [((pred == c) & (target == c)).sum() / ((pred == c) | (target == c)).sum()
            for c in range(3)]
    assert out["seg_miou"] == pytest.approx(100 * np.mean(ious))
    assert out["seg_acc_matched"] == pytest.approx(100 * np.mean(pred == target))
    per_image = [(a & b).sum() / (a | b).sum() for a, b in zip(p, t)]
    assert out["seg_iou_per_image"] == pytest.approx(100 * np.mean(per_image))
    aris = [skm.adjusted_rand_score(b.ravel(), a.ravel()) for a, b in zip(pred, target)]
    assert out["seg_ari"] == pytest.approx(100 * np.mean(aris))
    flipped = common.class_scores(1 - (target > 0), target > 0)   # no remapping: all wrong
    assert flipped["seg_acc"] == 0 and "baseline_centre_iou" in flipped
    assert flipped["seg_iou_per_image"] == 0 and flipped["seg_ari"] == pytest.approx(100)


def test_split_results_scores_test_rows_and_all():
    data = common.BaselineData(train=None, test_rows=np.array([2, 3]),
                               evaluation=common.LabelledImages(None, disk_images(4)[1]))
    pred = data.evaluation.masks.copy()
    pred[:2] = 1 - pred[:2]                               # wrong on the train rows only
    out = common.split_results(pred, data, common.class_scores)
    assert out["seg_iou"] == 100 and out["seg_num_images"] == 2
    assert out["all_seg_iou"] < 100 and out["all_seg_num_images"] == 4


# --- k-means (DatasetDDPM-unsup) ------------------------------------------------------------

def test_fit_kmeans_samples_pixels_across_batches_and_finds_colours():
    images, masks = disk_images(6)
    colours = [images[i:i + 4].astype(np.float32) for i in (0, 4)]   # 2 batches as "features"
    everything = kmeans.fit_kmeans(iter(colours), 6, 10 ** 6, 2, seed=0)
    pixels = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(everything[0].mean_, pixels.mean(0), rtol=1e-5)  # all pixels seen
    some = kmeans.fit_kmeans(iter(colours), 6, 100, 2, seed=0)
    assert some[0].n_samples_seen_ == 100
    pred = kmeans.predict_clusters(some, iter(colours))
    scores = common.region_scores(pred, masks, 2)
    assert pred.shape == masks.shape and scores["seg_iou"] > 95
    assert scores["seg_iou_per_image"] > 95 and scores["seg_ari"] > 90


def random_like(shapes, scale=0.3, seed=1):
    """N(0, scale²) arrays shaped like the tree `shapes` (no zero-initialised layers, so
    outputs depend on the input; no init compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), jnp.float32),
                        shapes)


@pytest.fixture(scope="module")
def ddpm():
    """A DDPM family (tiny U-Net, T = 20) with random parameters."""
    config = small_config()
    config.model.family = "ddpm"
    config.diffusion.num_timesteps = 20
    family = get_family(config)
    return family, random_like(jax.eval_shape(family.init_params, jax.random.PRNGKey(0),
                                              {"image": jnp.zeros((1, S, S, 3))}))


def test_pixel_features_are_upsampled_decoder_levels(ddpm):
    family, params = ddpm
    x0 = jnp.asarray(disk_images(2)[0], jnp.float32) / 127.5 - 1
    feats = kmeans.pixel_features(family, params, x0, (3, 11), jax.random.PRNGKey(5))
    assert feats.shape == (2, S, S, 2 * (8 + 16))          # 2 timesteps x (C_0 + C_1)
    t = jnp.full((2,), 11, jnp.int32)
    noise = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(5), 1), x0.shape)
    x_t = family.schedule.sqrt_alphas_cumprod[11] * x0 + \
        family.schedule.sqrt_one_minus_alphas_cumprod[11] * noise
    levels = decoder_features(family.model, params, x_t, t)
    np.testing.assert_allclose(feats[..., 24:32], levels["up_0"], atol=1e-5)
    coarse = np.asarray(levels["up_1"])                    # 8x8 -> 16x16, bilinear
    np.testing.assert_allclose(feats[:, 5:11, 5:11, 32:].mean(), coarse[:, 2:6, 2:6].mean(),
                               atol=0.05 * np.abs(coarse).mean())


def test_run_kmeans_scores_clusters_with_the_fdm_mapping(ddpm):
    family, params = ddpm
    images, masks = disk_images(6)
    config = small_config(kmeans_timesteps=(2, 10), kmeans_fit_pixels=500)
    data = common.BaselineData(common.LabelledImages(images[:4], masks[:4]),
                               common.LabelledImages(images, masks), np.array([4, 5]))
    out = kmeans.run_kmeans(config, data, family, params)
    assert out["seg_num_images"] == 2 and out["all_seg_num_images"] == 6
    assert {out[f"seg_region{k}_is_fg"] for k in range(3)} <= {0, 1}
    assert all(np.isfinite(out[k]) for k in ("seg_acc", "seg_iou", "all_seg_dice"))
    with pytest.raises(UserError, match="kmeans_timesteps"):
        kmeans.run_kmeans(small_config(kmeans_timesteps=(20,)), data, family, params)


def test_run_kmeans_scores_ddpm_samples_against_the_segmenter(monkeypatch, ddpm,
                                                              shapes_segmenter):
    """Table 2.5's DDPM row: DDPM samples, k-means masks, judged by the segmenter."""
    family, params = ddpm
    images, masks = disk_images(4)
    calls = []

    def fake_generate(p, num, rng, **kw):
        calls.append(num)
        return types.SimpleNamespace(x0=images[:num].astype(np.float32) / 127.5 - 1)
    monkeypatch.setattr(family, "generate", fake_generate)
    config = small_config(kmeans_timesteps=(2,), kmeans_fit_pixels=300)
    config.eval.update(segmenter_workdir=shapes_segmenter[0], num_gen_seg_samples=3)
    data = common.BaselineData(common.LabelledImages(images, masks),
                               common.LabelledImages(images, masks), np.array([3]))
    out = kmeans.run_kmeans(config, data, family, params)
    assert calls == [3]
    assert 0 <= out["gen_seg_acc"] <= 100 and np.isfinite(out["gen_seg_iou"])


# --- supervised U-Net -----------------------------------------------------------------------

def random_segmenter(num_classes: int = 2) -> segmenter_lib.Segmenter:
    """The small config's segmenter net with random parameters, for S x S images."""
    net = segmenter_lib.build_net(supervised.segmenter_config(small_config(), num_classes).model)
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, S, S, 3)),
                            jnp.zeros((1,), jnp.int32))["params"]
    return segmenter_lib.Segmenter(net, random_like(shapes), S)


def test_generated_mask_agreement_maps_regions_globally():
    segmenter = random_segmenter()
    images = disk_images(3)[0]
    reference = segmenter_lib.predict(segmenter, images, batch_size=2)
    assert reference.shape == (3, S, S) and 0 < reference.mean() < 1
    regions = np.where(reference == 1, 2, np.where(np.arange(S) % 2, 0, 1))  # fg -> region 2
    out = segmenter_lib.generated_mask_agreement(segmenter, images, regions, 3)
    assert out["gen_seg_acc"] == 100 and out["gen_seg_region2_is_fg"] == 1
    with pytest.raises(UserError, match="uint8"):
        segmenter_lib.predict(segmenter, images.astype(np.float32))


def shapes_config(**baselines):
    """configs/shapes.py shrunk: 16 px, a one-level 8-channel U-Net, 16 + 8 images."""
    c = shapes.get_config()
    c.data.update(image_size=S, num_train=16, num_eval=8)
    c.model.update(ch=8, ch_mult=(1,), attn_resolutions=(), num_groups=4)
    c.train.update(log_every=1, checkpoint_every=2)
    c.eval.batch_size = 4
    c.baselines.update(baselines)
    return c


@pytest.fixture(scope="module")
def shapes_segmenter(tmp_path_factory):
    """(workdir, config, results) of `--baseline=supervised` end to end on the shrunk
    shapes data: the segmenter family trained 3 steps by `fdm.train`, then scored."""
    workdir = str(tmp_path_factory.mktemp("segmenter"))
    config = shapes_config(supervised_steps=3, supervised_batch_size=4)
    return workdir, config, run_baseline("supervised", config, workdir)


def test_run_baseline_supervised_end_to_end(shapes_segmenter):
    workdir, _, out = shapes_segmenter
    written = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert written == out and written["baseline"] == "supervised" and written["step"] == 3
    assert written["config"] == "shapes" and 0 <= written["seg_iou"] <= 100
    assert written["seg_num_images"] == 8 and written["all_seg_num_images"] == 8
    assert helpers.checkpoint_steps(workdir) == [2, 3]
    logged = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert all(np.isfinite(r["pixel_acc"]) for r in logged if "pixel_acc" in r)


def test_segmenter_family_loads_and_predicts(shapes_segmenter):
    workdir, config, _ = shapes_segmenter
    model = fdm.load(workdir)
    assert isinstance(model.family, segmenter_lib.SegmenterFamily) and model.step == 3
    assert model.family.config.model.num_seg_classes == 2
    images = load_split_arrays(config, "eval")["image"]
    pred = segmenter_lib.predict(model.family.segmenter(model.params), images, batch_size=4)
    assert pred.shape == (8, S, S) and pred.dtype == np.int32 and set(np.unique(pred)) <= {0, 1}
    judge = segmenter_lib.load_segmenter(workdir)        # eval.segmenter_workdir's path
    assert judge.net == model.family.net and judge.image_size == S
    np.testing.assert_array_equal(segmenter_lib.predict(judge, images, batch_size=4), pred)


def test_load_segmenter_one_line_errors(tmp_path, shapes_segmenter):
    with pytest.raises(UserError) as error:
        segmenter_lib.load_segmenter(str(tmp_path / "none"))
    message = str(error.value)
    assert "\n" not in message and "--baseline=supervised" in message
    assert str(tmp_path / "none" / "config.json") in message
    config = fdm.api.load_config(shapes_segmenter[0])
    config.model.family = "fdm"
    (tmp_path / "config.json").write_text(config.to_json())
    with pytest.raises(UserError, match="not a segmenter"):
        segmenter_lib.load_segmenter(str(tmp_path))
    with pytest.raises(UserError, match="num_seg_classes=1"):
        segmenter_lib.SegmenterFamily(supervised.segmenter_config(shapes_config(), 1))


def test_segmenter_config_maps_the_baseline_keys():
    config = shapes_config(supervised_steps=7, supervised_batch_size=6,
                           supervised_learning_rate=2e-3)
    derived = supervised.segmenter_config(config, 3)
    assert derived.model.family == "segmenter" and derived.model.num_seg_classes == 3
    assert (derived.train.num_steps, derived.train.batch_size) == (7, 6)
    assert derived.train.learning_rate == 2e-3 and derived.train.ema_decay == 0
    assert config.model.family == "fdm" and config.train.batch_size == 16   # unchanged
    assert supervised.num_classes(np.zeros((2, 3, 3), np.int32)) == 2
    assert supervised.num_classes(np.full((2, 3, 3), 2, np.int32)) == 3


@pytest.mark.slow
def test_supervised_segmenter_learns_disks(tmp_path):
    images, masks = disk_images(40, seed=1)
    config = small_config(supervised_steps=150, supervised_batch_size=8,
                          supervised_learning_rate=3e-3)
    data = common.BaselineData(common.LabelledImages(images[:32], masks[:32]),
                               common.LabelledImages(images, masks), np.arange(32, 40))
    out = supervised.run_supervised(config, data, str(tmp_path))
    assert out["seg_iou"] > 80, out                     # held-out disks
    assert helpers.checkpoint_steps(str(tmp_path)) == [150]
    assert out["seg_iou"] > out["baseline_centre_iou"] + 10


# --- GrabCut -------------------------------------------------------------------------------

def test_grabcut_segments_a_red_disk():
    pytest.importorskip("cv2", reason="GrabCut needs opencv-python-headless (extra 'baselines')")
    from fdm.baselines import grabcut
    assert grabcut.init_rectangle(40, 20, 0.1) == (2, 4, 16, 32)
    images, masks = disk_images(3, size=48)
    pred = grabcut.grabcut_masks(images, margin=0.1, iters=5)
    assert common.class_scores(pred, masks)["seg_iou"] > 85
    np.testing.assert_array_equal(pred, grabcut.grabcut_masks(images, 0.1, 5))  # seeded
    with pytest.raises(UserError, match="grabcut_margin"):
        grabcut.init_rectangle(8, 8, 0.5)


# --- colour histogram -------------------------------------------------------------------

def coloured_images(n: int, fg_colours, bg_colours, seed: int = 0):
    """disk_images' masks with per-pixel colours: fg pixels drawn by fg_colours(rng, k),
    bg pixels by bg_colours(rng, k) (uint8 [k, 3] each)."""
    rng = np.random.default_rng(seed)
    masks = disk_images(n, seed=seed)[1]
    images = np.zeros(masks.shape + (3,), np.uint8)
    fg = masks > 0
    images[fg] = fg_colours(rng, int(fg.sum()))
    images[~fg] = bg_colours(rng, int((~fg).sum()))
    return images, masks


def histogram_data(images, masks, num_train):
    """Train on rows [:num_train], evaluate all, test rows [num_train:]."""
    return common.BaselineData(common.LabelledImages(images[:num_train], masks[:num_train]),
                               common.LabelledImages(images, masks),
                               np.arange(num_train, len(images)))


def test_histogram_separates_red_from_blue():
    def noisy(colour):          # +-7 around a bin centre: stays in one bin of 16 per channel
        return lambda rng, k: (np.array(colour) + rng.integers(-7, 8, (k, 3))).astype(np.uint8)
    images, masks = coloured_images(12, noisy([200, 24, 24]), noisy([24, 24, 200]))
    out = histogram.run_histogram(small_config(), histogram_data(images, masks, 8))
    assert out["seg_iou"] == 100 and out["all_seg_iou"] == 100 and out["seg_acc"] == 100
    assert out["seg_num_images"] == 4 and out["all_seg_num_images"] == 12


def test_histogram_without_colour_cue_is_near_all_background():
    def uniform(rng, k):
        return rng.integers(0, 256, (k, 3)).astype(np.uint8)
    images, masks = coloured_images(240, uniform, uniform, seed=3)
    out = histogram.run_histogram(small_config(histogram_bins=8),
                                  histogram_data(images, masks, 200))
    assert out["seg_iou"] < 15, out                        # all background: IoU 0
    assert out["seg_iou"] < out["baseline_all_fg_iou"], out


def test_histogram_predict_matches_a_pixel_loop():
    rng = np.random.default_rng(0)
    bins = 4
    images = rng.integers(0, 256, (3, 5, 5, 3)).astype(np.uint8)
    masks = rng.integers(0, 3, (3, 5, 5))
    counts = histogram.fit_histograms(images, masks, bins)
    assert counts.shape == (2, bins ** 3) and counts.sum() == masks.size
    assert counts[1].sum() == (masks > 0).sum()

    def colour_bin(pixel):
        return tuple(int(v) * bins // 256 for v in pixel)
    slow_counts = {}                                       # bin -> [bg, fg] training pixels
    for image, mask in zip(images, masks):
        for pixel, label in zip(image.reshape(-1, 3), mask.ravel()):
            slow_counts.setdefault(colour_bin(pixel), [0, 0])[int(label > 0)] += 1
    test = rng.integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    for data in (images, test):                            # test: some bins never seen
        expected = np.zeros(data.shape[:3], np.int32)
        for i, y, x in np.ndindex(*data.shape[:3]):
            bg, fg = slow_counts.get(colour_bin(data[i, y, x]), (0, 0))
            expected[i, y, x] = fg > bg
        got = histogram.predict(counts, data, bins)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(UserError, match="uint8"):
        histogram.bin_index(images.astype(np.float32), bins)
    with pytest.raises(UserError, match="bins"):
        histogram.predict(counts, test, 8)


def test_run_baseline_histogram_on_shapes(tmp_path):
    config = small_config(histogram_bins=8)
    config.data.update(dataset="shapes", num_train=48, num_eval=16, num_regions=2)
    out = run_baseline("histogram", config, str(tmp_path / "run"))
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written == out and written["baseline"] == "histogram" and written["step"] == 0
    assert written["seg_num_images"] == 16 and written["all_seg_num_images"] == 16
    assert 0 < written["seg_iou"] <= 100 and written["seg_iou"] == written["all_seg_iou"]


# --- runner ---------------------------------------------------------------------------------

def test_run_baseline_writes_results_json(tmp_path):
    pytest.importorskip("cv2", reason="GrabCut needs opencv-python-headless (extra 'baselines')")
    images, masks = disk_images(5, size=32)
    root = write_folder(tmp_path / "data", images, masks)
    config = small_config(root, num_train_images=3, grabcut_size=32, grabcut_margin=0.1)
    out = run_baseline("grabcut", config, str(tmp_path / "run"))
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written == out and written["baseline"] == "grabcut" and written["step"] == 0
    assert {"seg_acc", "seg_iou", "seg_dice", "all_seg_iou", "wall_s"} <= set(written)
    with pytest.raises(UserError, match="--ddpm_workdir"):
        run_baseline("kmeans", config, str(tmp_path / "k"))


def test_cli_one_line_errors(tmp_path):
    args = ["--config=configs/weizmann_horse.py", f"--workdir={tmp_path}"]
    for extra, needle in ((["--baseline=kmeans"], "--ddpm_workdir"), ([], "missing --baseline")):
        proc = subprocess.run([sys.executable, "-m", "experiments.baselines", *args, *extra],
                              cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert needle in proc.stderr


def test_a_segmenter_stopped_short_is_not_scored(monkeypatch, tmp_path):
    """A SIGTERM during the segmenter's training (the trainer returns early) raises
    TrainingStopped instead of scoring a half-trained net under the full step count."""
    import types
    from fdm.errors import TrainingStopped
    images, masks = disk_images(4, seed=0)
    data = common.BaselineData(common.LabelledImages(images, masks),
                               common.LabelledImages(images, masks), np.arange(2, 4))
    monkeypatch.setattr(supervised.trainer, "train",
                        lambda c, w, make_iterator: types.SimpleNamespace(step=2))
    with pytest.raises(TrainingStopped, match="step 2 of 5"):
        supervised.run_supervised(small_config(supervised_steps=5), data, str(tmp_path))
