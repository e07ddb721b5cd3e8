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
