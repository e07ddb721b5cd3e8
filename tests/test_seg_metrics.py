"""Segmentation metrics against a hand-computed example, sklearn, and brute force."""
import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from fdm.metrics import segmentation as seg


def test_hand_computed_example():
    # 1 image, 2x4 pixels. Region 1 is the object; region 0 background.
    pred = np.array([[[0, 1, 1, 0], [0, 1, 1, 1]]])
    target = np.array([[[0, 1, 1, 0], [0, 0, 1, 1]]])
    acc = seg.SegmentationAccumulator(num_regions=2)
    acc.update(pred, target)
    out = acc.foreground_results()
    # tp=4, fp=1, fn=0, tn=3 -> acc 7/8, iou 4/5, dice 8/9
    assert out["seg_acc"] == pytest.approx(100 * 7 / 8)
    assert out["seg_iou"] == pytest.approx(100 * 4 / 5)
    assert out["seg_dice"] == pytest.approx(100 * 8 / 9)
    assert (out["seg_region0_is_fg"], out["seg_region1_is_fg"]) == (0, 1)


def test_mapping_is_label_permutation_invariant():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, (3, 8, 8))
    pred = np.where(target > 0, 2, rng.integers(0, 2, target.shape))
    a, b = seg.SegmentationAccumulator(3), seg.SegmentationAccumulator(3)
    a.update(pred, target)
    b.update((pred + 1) % 3, target)   # relabelled regions
    ra, rb = a.foreground_results(), b.foreground_results()
    assert ra["seg_iou"] == pytest.approx(100.0)
    assert rb["seg_iou"] == pytest.approx(ra["seg_iou"])
    assert rb["seg_region0_is_fg"] == 1 and ra["seg_region2_is_fg"] == 1


@pytest.mark.parametrize("seed", range(5))
def test_fg_metrics_match_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    k = 3
    pred = rng.integers(0, k, (4, 16, 16))
    target = rng.integers(0, 2, (4, 16, 16))
    acc = seg.SegmentationAccumulator(k)
    acc.update(pred[:2], target[:2])
    acc.update(pred[2:], target[2:])   # streaming over batches
    out = acc.foreground_results()
    fg_regions = [r for r in range(k) if out[f"seg_region{r}_is_fg"]]
    binary_pred = np.isin(pred, fg_regions).ravel()
    y = target.ravel()
    assert out["seg_acc"] == pytest.approx(100 * skm.accuracy_score(y, binary_pred))
    assert out["seg_iou"] == pytest.approx(100 * skm.jaccard_score(y, binary_pred))
    assert out["seg_dice"] == pytest.approx(100 * skm.f1_score(y, binary_pred))


@pytest.mark.parametrize("seed", range(5))
def test_global_mapping_is_best_of_all_assignments(seed):
    rng = np.random.default_rng(seed)
    k = 4
    pred = rng.integers(0, k, (2, 12, 12))
    target = (rng.random((2, 12, 12)) < rng.random()).astype(int)
    mapping, scores = seg.best_foreground_mapping(
        seg.confusion_matrix(pred, target, k, 2))
    best = max(skm.jaccard_score(target.ravel(), np.isin(pred, s).ravel(), zero_division=1.0)
               for n in range(k + 1) for s in itertools.combinations(range(k), n))
    assert scores.iou == pytest.approx(best)


def test_hungarian_miou_against_brute_force_and_sklearn():
    rng = np.random.default_rng(1)
    k, c = 3, 3
    target = rng.integers(0, c, (2, 10, 10))
    perm = np.array([2, 0, 1])
    pred = np.where(rng.random(target.shape) < 0.7, perm[target], rng.integers(0, k, target.shape))
    acc = seg.SegmentationAccumulator(k, num_classes=c)
    acc.update(pred, target)
    out = acc.multiclass_results()
    best = 0.0
    for p in itertools.permutations(range(c)):
        relabelled = np.asarray(p)[pred]
        best = max(best, skm.jaccard_score(target.ravel(), relabelled.ravel(), average="macro"))
    assert out["seg_miou"] == pytest.approx(100 * best)
    assert [out[f"seg_region{r}_class"] for r in range(k)] == list(np.argsort(perm))


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(2)
    pred, target = rng.integers(0, 3, 500), rng.integers(0, 2, 500)
    ours = seg.confusion_matrix(pred, target, 3, 2)
    ref = skm.confusion_matrix(pred, target, labels=[0, 1, 2])[:, :2]
    np.testing.assert_array_equal(ours, ref)


def test_trivial_baselines():
    target = np.zeros((2, 10, 10), int)
    target[:, 3:7, 3:7] = 1          # centred 4x4 object: 16% of pixels
    out = seg.trivial_baselines(target)
    assert out["baseline_all_fg_iou"] == pytest.approx(16.0)
    assert out["baseline_all_fg_acc"] == pytest.approx(16.0)
    assert out["baseline_centre_iou"] == pytest.approx(100.0)


def test_group_scores_match_sklearn_per_group_with_a_fixed_mapping():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 3, (6, 5, 5))
    target = rng.integers(0, 2, (6, 5, 5))
    groups = np.array([4, 4, 9, 9, 9, 1])
    foreground = (False, True, True)
    got = seg.group_scores(pred, target, groups, foreground)
    assert sorted(got) == [1, 4, 9]
    for g, scores in got.items():
        p = np.isin(pred[groups == g], [1, 2]).ravel()
        t = target[groups == g].ravel().astype(bool)
        assert scores["acc"] == pytest.approx(100 * skm.accuracy_score(t, p))
        assert scores["iou"] == pytest.approx(100 * skm.jaccard_score(t, p))
        assert scores["miou"] == pytest.approx(100 * skm.jaccard_score(t, p, average="macro"))


# --- per-image diagnostics ---------------------------------------------------------------

def slow_per_image_iou(pred, target, num_regions):
    """Per image: the best foreground IoU over all region subsets, by boolean masks."""
    ious = []
    for p, t in zip(pred, target > 0):
        best = 0.0
        for flags in itertools.product((False, True), repeat=num_regions):
            called = np.isin(p, [k for k in range(num_regions) if flags[k]])
            union = (called | t).sum()
            best = max(best, (called & t).sum() / union if union else 1.0)
        ious.append(best)
    return 100 * np.mean(ious)


def sklearn_mean_ari(pred, target):
    return 100 * np.mean([skm.adjusted_rand_score(t.ravel(), p.ravel())
                          for p, t in zip(pred, target)])


@pytest.mark.parametrize("seed", range(6))
def test_per_image_scores_match_sklearn_ari_and_brute_force_iou(seed):
    rng = np.random.default_rng(seed)
    k, c = 2 + seed % 3, 2 + seed % 2
    target = rng.integers(0, c, (5, 9, 11))
    pred = np.where(rng.random(target.shape) < rng.random(), target % k,
                    rng.integers(0, k, target.shape))
    out = seg.per_image_scores(pred, target, k)
    assert out["seg_ari"] == pytest.approx(sklearn_mean_ari(pred, target), abs=1e-9)
    assert out["seg_iou_per_image"] == pytest.approx(slow_per_image_iou(pred, target, k))


def test_ari_degenerate_images_match_sklearn():
    target = np.zeros((6, 4, 4), int)
    target[[1, 3, 5], :, :2] = 2                      # images 1, 3, 5: two target classes
    pred = np.zeros((6, 4, 4), int)
    pred[[2, 3], 1:, :] = 1                           # images 2, 3: two regions
    pred[4] = 1                                       # image 4: one cluster labelled 1
    for i in range(len(pred)):
        got = seg.per_image_scores(pred[i:i + 1], target[i:i + 1], 2)["seg_ari"]
        assert got == pytest.approx(100 * skm.adjusted_rand_score(target[i].ravel(),
                                                                  pred[i].ravel())), i
    ids = seg.per_image_scores(pred, target, 2)["seg_ari"]
    assert ids == pytest.approx(sklearn_mean_ari(pred, target))
    assert seg.per_image_scores(pred[[0, 4]], target[[0, 4]], 2)["seg_ari"] == 100.0


def test_image_without_foreground_scores_100_per_image():
    target = np.zeros((2, 4, 4), int)
    target[1, :2] = 1
    pred = np.zeros((2, 4, 4), int)
    pred[:, 2:] = 1                                   # image 0: empty target, split prediction
    out = seg.per_image_scores(pred, target, 2)
    assert out["seg_iou_per_image"] == pytest.approx(100.0)
    assert out["seg_iou_per_image"] == pytest.approx(slow_per_image_iou(pred, target, 2))


def test_image_confusion_matrices_chunked_match_per_image():
    rng = np.random.default_rng(4)
    pred, target = rng.integers(0, 3, (7, 5, 6)), rng.integers(0, 4, (7, 5, 6))
    got = seg.image_confusion_matrices(pred, target, 3, 4, chunk_pixels=64)   # 2 images a chunk
    for n in range(len(pred)):
        np.testing.assert_array_equal(got[n], seg.confusion_matrix(pred[n], target[n], 3, 4))


def test_flipped_labels_score_100_per_image_but_not_globally():
    """The motivating case: the true partition, its labels flipped in a random half of
    the images; the global mapping sees ~all-foreground, the per-image scores 100."""
    rng = np.random.default_rng(5)
    target = np.zeros((40, 16, 16), int)
    for n in range(len(target)):
        r, c, s = rng.integers(0, 8), rng.integers(0, 8), rng.integers(4, 9)
        target[n, r:r + s, c:c + s] = 1
    flip = rng.permutation(len(target)) < len(target) // 2
    pred = np.where(flip[:, None, None], 1 - target, target)
    out = seg.segmentation_metrics(pred, target, 2).metrics
    assert out["seg_iou_per_image"] == pytest.approx(100.0)
    assert out["seg_ari"] == pytest.approx(100.0)
    fg = target > 0
    all_fg_iou = 100 * fg.sum() / fg.size
    assert out["seg_iou"] <= all_fg_iou + 1.0
    assert out["seg_iou"] < 50


def test_segmentation_metrics_keys():
    rng = np.random.default_rng(6)
    target = rng.integers(0, 3, (3, 8, 8))
    pred = rng.integers(0, 4, (3, 8, 8))
    report = seg.segmentation_metrics(pred, target, 4)
    out = report.metrics
    assert {"seg_acc", "seg_iou", "seg_dice", "seg_miou", "seg_acc_matched",
            "seg_iou_per_image", "seg_ari", "baseline_all_fg_iou",
            "seg_region3_is_fg", "seg_region3_class"} <= set(out)
    assert out == pytest.approx({**seg.per_image_scores(pred, target, 4), **out})
    assert report.foreground == tuple(bool(out[f"seg_region{k}_is_fg"]) for k in range(4))


def test_report_mapping_is_the_best_foreground_mapping():
    rng = np.random.default_rng(8)
    target = rng.integers(0, 2, (3, 8, 8))
    pred = np.where(target > 0, rng.integers(1, 3, target.shape), 0)  # fg split over 1, 2
    report = seg.segmentation_metrics(pred, target, 3)
    assert report.foreground == (False, True, True)
    assert report.metrics["seg_iou"] == pytest.approx(100.0)


def test_fixed_prediction_scores_do_not_remap():
    rng = np.random.default_rng(7)
    target = rng.integers(0, 3, (4, 6, 6))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 3, target.shape))
    out = seg.fixed_prediction_scores(pred, target)
    ious = [((p > 0) & (t > 0)).sum() / ((p > 0) | (t > 0)).sum() for p, t in zip(pred, target)]
    assert out["seg_iou_per_image"] == pytest.approx(100 * np.mean(ious))
    assert out["seg_ari"] == pytest.approx(sklearn_mean_ari(pred, target))
    flipped = seg.fixed_prediction_scores(1 - (target > 0), target > 0)
    assert flipped["seg_iou_per_image"] == 0 and flipped["seg_ari"] == pytest.approx(100.0)
