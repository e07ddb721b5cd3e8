"""Segmentation metrics for unsupervised region masks (SPEC "FDM" decisions).

Notation
  pred   int [N, H, W]  predicted region of each pixel, in {0, ..., K-1}
                        (argmax over the K soft masks m_k).
  target int [N, H, W]  ground truth, in {0, ..., C-1}; for foreground/background
                        evaluation target > 0 is foreground.
  M      int [K, C]     confusion matrix summed over the whole evaluation set:
                        M[k, c] = #pixels with pred = k and target = c.

An unsupervised model does not know which of its K regions is the object, so
the regions are mapped to ground truth once for the whole evaluation set:
  * foreground/background: the subset S of regions called foreground is the one
    of all 2^K subsets that maximises foreground IoU (`best_foreground_mapping`);
  * multi-class: a one-to-one Hungarian matching of regions to classes that
    maximises the summed IoU (`hungarian_miou`).
Acc = pixel accuracy, IoU = |F̂ ∩ F| / |F̂ ∪ F|, DICE = 2|F̂ ∩ F| / (|F̂| + |F|).
`segmentation_metrics` reports all of these (and the trivial baselines) at once, with
the foreground mapping as a value (`SegmentationReport`).

Per-image diagnostics (`per_image_scores`), next to the global numbers:
  M_n    int [N, K, C]  the confusion matrix of image n alone.
  * seg_iou_per_image: for every image its own best K -> {fg, bg} mapping (all
    2^K subsets, as above, on M_n), its foreground IoU, averaged over images;
  * seg_ari: the adjusted Rand index between pred and the full target labels
    (all C classes) of each image, averaged over images (as
    sklearn.metrics.adjusted_rand_score; 1 when both are one cluster).
Both are x100. The global mapping alone cannot tell "no split" from "a good
split whose labels are inconsistent across images": the true partition with
its region labels flipped at random per image scores, under the one global
mapping, about the all-foreground IoU (calling both regions foreground is then
the best single mapping), yet it scores 100 on both per-image diagnostics.
They are diagnostics, not the paper's metrics: per image, any split that is
right up to relabelling scores high, whether or not the model knows which
region is the object. `fixed_prediction_scores` gives the same two keys for a
prediction already in the target's classes (no remapping).
"""
from __future__ import annotations

import itertools

import flax
import numpy as np
import scipy.optimize


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_pred: int,
                     num_target: int) -> np.ndarray:
    """M[k, c] = #pixels with pred == k and target == c.  Returns int64 [K, C]."""
    pred = np.asarray(pred, np.int64).ravel()
    target = np.asarray(target, np.int64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred and target sizes differ: {pred.size} vs {target.size}")
    flat = np.bincount(pred * num_target + target, minlength=num_pred * num_target)
    return flat.reshape(num_pred, num_target)


def image_confusion_matrices(pred: np.ndarray, target: np.ndarray, num_pred: int,
                             num_target: int, chunk_pixels: int = 1 << 22) -> np.ndarray:
    """M_n[k, c] = #pixels of image n with pred == k and target == c.

    pred, target: int [N, H, W].  Returns int64 [N, K, C]; one bincount over
    (image, pred, target) triples per chunk of about `chunk_pixels` pixels.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    n = pred.shape[0]
    pixels = max(1, int(np.prod(pred.shape[1:])))
    cells = num_pred * num_target
    step = max(1, chunk_pixels // pixels)
    out = np.zeros((n, num_pred, num_target), np.int64)
    for start in range(0, n, step):
        p = pred[start:start + step].reshape(-1, pixels).astype(np.int64)
        t = target[start:start + step].reshape(-1, pixels).astype(np.int64)
        image = np.arange(len(p), dtype=np.int64)[:, None]
        flat = np.bincount((image * cells + p * num_target + t).ravel(), minlength=len(p) * cells)
        out[start:start + len(p)] = flat.reshape(len(p), num_pred, num_target)
    return out


def foreground_confusion(conf: np.ndarray) -> np.ndarray:
    """[..., K, C] confusion -> [..., K, 2] against (background, foreground) = (c = 0, c > 0)."""
    return np.stack([conf[..., 0], conf[..., 1:].sum(-1)], axis=-1)


@flax.struct.dataclass
class BinaryScores:
    """Foreground/background scores (fractions in [0, 1])."""
    acc: float
    iou: float
    dice: float


def binary_scores(tp: float, fp: float, fn: float, tn: float) -> BinaryScores:
    """Pixel accuracy, foreground IoU and DICE from the 2x2 pixel counts."""
    total = tp + fp + fn + tn
    union = tp + fp + fn
    return BinaryScores(
        acc=float((tp + tn) / total) if total else 0.0,
        iou=float(tp / union) if union else 1.0,
        dice=float(2 * tp / (2 * tp + fp + fn)) if union else 1.0)


def scores_for_mapping(conf_fg: np.ndarray, foreground: tuple[bool, ...]) -> BinaryScores:
    """Scores when the regions flagged in `foreground` are called foreground.

    conf_fg: [K, 2] confusion against (background, foreground) ground truth.
    """
    is_fg = np.asarray(foreground, bool)
    tp, fp = conf_fg[is_fg, 1].sum(), conf_fg[is_fg, 0].sum()
    fn, tn = conf_fg[~is_fg, 1].sum(), conf_fg[~is_fg, 0].sum()
    return binary_scores(tp, fp, fn, tn)


def best_foreground_mapping(conf_fg: np.ndarray) -> tuple[tuple[bool, ...], BinaryScores]:
    """The K -> {fg, bg} assignment (of all 2^K) with the highest foreground IoU."""
    num_regions = conf_fg.shape[0]
    best = None
    for foreground in itertools.product((False, True), repeat=num_regions):
        scores = scores_for_mapping(conf_fg, foreground)
        if best is None or scores.iou > best[1].iou:
            best = (foreground, scores)
    return best


def foreground_subsets(num_regions: int) -> np.ndarray:
    """All 2^K region -> {fg, bg} assignments, bool [2^K, K], in itertools.product order."""
    return np.array(list(itertools.product((False, True), repeat=num_regions)),
                    bool).reshape(-1, num_regions)


def subset_ious(conf_fg: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Foreground IoU of each image under each assignment (1 for an empty union).

    conf_fg: [N, K, 2] per-image confusion against (background, foreground);
    subsets: bool [S, K], True = region called foreground.  Returns float [N, S].
    """
    conf_fg = conf_fg.astype(np.float64)
    chosen = subsets.astype(np.float64).T                  # [K, S]
    tp = conf_fg[:, :, 1] @ chosen
    fp = conf_fg[:, :, 0] @ chosen
    fn = conf_fg[:, :, 1].sum(1, keepdims=True) - tp
    union = tp + fp + fn
    return np.divide(tp, union, out=np.ones_like(union), where=union > 0)


def adjusted_rand_indices(conf: np.ndarray) -> np.ndarray:
    """Adjusted Rand index of each image from its contingency table, as
    sklearn.metrics.adjusted_rand_score: its pair-confusion form (ordered pixel
    pairs), and 1.0 when the two partitions are identical (e.g. both one cluster).

    conf: [N, K, C] per-image confusion of pred (rows) vs target (columns).
    Returns float [N], at most 1 (0 in expectation for independent labellings).
    """
    conf = conf.astype(np.float64)
    n = conf.sum((1, 2))
    sum_squares = (conf ** 2).sum((1, 2))
    tp = sum_squares - n
    fp = (conf.sum(2) ** 2).sum(1) - sum_squares           # same region, other class
    fn = (conf.sum(1) ** 2).sum(1) - sum_squares           # same class, other region
    tn = n ** 2 - fp - fn - sum_squares
    denom = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    identical = (fp == 0) & (fn == 0)
    return np.divide(2.0 * (tp * tn - fn * fp), denom, out=np.ones_like(denom),
                     where=~identical)


def hungarian_miou(conf: np.ndarray) -> tuple[float, float, dict[int, int]]:
    """Mean IoU over ground-truth classes after a one-to-one region->class matching.

    conf: [K, C].  Classes left unmatched (K < C) score IoU 0; regions left
    unmatched (K > C) count as errors.  Returns (miou, pixel_acc, {region: class}).
    """
    conf = conf.astype(np.float64)
    pred_sizes, target_sizes = conf.sum(1, keepdims=True), conf.sum(0, keepdims=True)
    union = pred_sizes + target_sizes - conf
    iou = np.divide(conf, union, out=np.zeros_like(conf), where=union > 0)
    rows, cols = scipy.optimize.linear_sum_assignment(iou, maximize=True)
    miou = iou[rows, cols].sum() / conf.shape[1]
    acc = conf[rows, cols].sum() / max(conf.sum(), 1.0)
    return float(miou), float(acc), {int(r): int(c) for r, c in zip(rows, cols)}


def foreground_metrics(mapping: tuple[bool, ...], scores: BinaryScores) -> dict:
    """seg_acc / seg_iou / seg_dice (percent) and the mapping of K regions, flat:
    seg_region{k}_is_fg = 1 where region k was called foreground."""
    out = {"seg_acc": 100 * scores.acc, "seg_iou": 100 * scores.iou,
           "seg_dice": 100 * scores.dice}
    out.update({f"seg_region{k}_is_fg": int(fg) for k, fg in enumerate(mapping)})
    return out


class SegmentationAccumulator:
    """Accumulates the confusion matrix over batches, then maps regions globally."""

    def __init__(self, num_regions: int, num_classes: int = 2):
        self.num_regions = num_regions
        self.num_classes = num_classes
        self.conf = np.zeros((num_regions, num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """pred [N,H,W] in [0,K); target [N,H,W] in [0,C) (C=2: target>0 is fg)."""
        if self.num_classes == 2:
            target = (np.asarray(target) > 0).astype(np.int64)
        self.conf += confusion_matrix(pred, target, self.num_regions, self.num_classes)

    def foreground_mapping(self) -> tuple[tuple[bool, ...], BinaryScores]:
        """The global K -> {fg, bg} mapping (`best_foreground_mapping`) and its scores."""
        return best_foreground_mapping(foreground_confusion(self.conf))

    def foreground_results(self) -> dict:
        """`foreground_metrics` of the global mapping."""
        return foreground_metrics(*self.foreground_mapping())

    def multiclass_results(self) -> dict:
        """seg_miou / seg_acc_matched (percent) after Hungarian matching, and
        seg_region{k}_class = the class region k was matched to."""
        miou, acc, assignment = hungarian_miou(self.conf)
        out = {"seg_miou": 100 * miou, "seg_acc_matched": 100 * acc}
        out.update({f"seg_region{k}_class": c for k, c in assignment.items()})
        return out


def trivial_baselines(target: np.ndarray,
                      fixed: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Scores of masks that look at no image: all-foreground, a centre prior, and any
    `fixed` ones (name -> bool [H, W] foreground, the same for every image), as
    baseline_{name}_{acc,iou,dice}.

    target: [N, H, W] with target > 0 foreground.  The centre prior calls
    foreground a centred box whose area is the mean foreground fraction of the
    set (generous: it knows the object size).  Returns percent values.
    """
    fg = np.asarray(target) > 0
    n, h, w = fg.shape
    frac = fg.mean()
    side = np.sqrt(max(frac, 1e-6))
    bh, bw = max(1, round(h * side)), max(1, round(w * side))
    box = np.zeros((h, w), bool)
    box[(h - bh) // 2:(h - bh) // 2 + bh, (w - bw) // 2:(w - bw) // 2 + bw] = True
    out = {}
    named = {"all_fg": np.ones((h, w), bool), "centre": box, **(fixed or {})}
    for name, pred in named.items():
        pred = np.broadcast_to(np.asarray(pred, bool), fg.shape)
        tp, fp = (pred & fg).sum(), (pred & ~fg).sum()
        fn, tn = (~pred & fg).sum(), (~pred & ~fg).sum()
        scores = binary_scores(tp, fp, fn, tn)
        out.update({f"baseline_{name}_acc": 100 * scores.acc,
                    f"baseline_{name}_iou": 100 * scores.iou,
                    f"baseline_{name}_dice": 100 * scores.dice})
    return out


def group_scores(pred: np.ndarray, target: np.ndarray, groups: np.ndarray,
                 foreground: tuple[bool, ...]) -> dict[int, dict[str, float]]:
    """Per-group scores under ONE fixed K -> {fg, bg} mapping (Table 2.7: per VOC class).

    pred [N,H,W] in [0,K); target [N,H,W] (> 0 is fg); groups [N] int (e.g. the
    VOC class of each example); foreground: K bools (the global mapping).
    Returns {group: {'acc', 'iou' (foreground), 'miou' (mean of fg and bg IoU)}},
    percent.
    """
    pred, target, groups = np.asarray(pred), np.asarray(target) > 0, np.asarray(groups)
    out = {}
    for g in np.unique(groups):
        sel = groups == g
        conf = confusion_matrix(pred[sel], target[sel], len(foreground), 2)
        fg = scores_for_mapping(conf, tuple(foreground))
        bg = scores_for_mapping(conf[:, ::-1], tuple(not f for f in foreground))
        out[int(g)] = {"acc": 100 * fg.acc, "iou": 100 * fg.iou,
                       "miou": 50 * (fg.iou + bg.iou)}
    return out


def per_image_scores(pred: np.ndarray, target: np.ndarray, num_regions: int) -> dict:
    """Per-image diagnostics (module doc), percent: seg_iou_per_image (each image's own
    best K -> {fg, bg} mapping) and seg_ari (against all target classes).

    pred int [N, H, W] in [0, K); target int [N, H, W] in [0, C), > 0 is fg.
    """
    num_classes = int(np.max(target)) + 1
    conf = image_confusion_matrices(pred, target, num_regions, num_classes)
    ious = subset_ious(foreground_confusion(conf), foreground_subsets(num_regions)).max(1)
    return _per_image_means(ious, adjusted_rand_indices(conf))


def fixed_prediction_scores(pred: np.ndarray, target: np.ndarray) -> dict:
    """The keys of `per_image_scores` for a prediction already in the target's classes:
    seg_iou_per_image of the fixed binary prediction pred > 0 vs target > 0 (no
    remapping), seg_ari of pred vs target.  pred, target int [N, H, W], >= 0."""
    pred, target = np.asarray(pred, np.int64), np.asarray(target, np.int64)
    num_labels = int(max(pred.max(), target.max())) + 1
    conf = image_confusion_matrices(pred, target, num_labels, num_labels)
    called_fg = (np.arange(num_labels) > 0)[None]          # [1, K]: label > 0 is fg
    ious = subset_ious(foreground_confusion(conf), called_fg)[:, 0]
    return _per_image_means(ious, adjusted_rand_indices(conf))


def _per_image_means(ious: np.ndarray, aris: np.ndarray) -> dict:
    """float [N] per-image IoU and ARI fractions -> their means in percent."""
    return {"seg_iou_per_image": 100 * float(np.mean(ious)),
            "seg_ari": 100 * float(np.mean(aris))}


@flax.struct.dataclass
class SegmentationReport:
    """What `segmentation_metrics` finds for K unnamed regions.

    metrics: the flat results keys (percent), as the evaluation writes them (module
      doc; the mapping also as seg_region{k}_is_fg);
    foreground: K bools, the global K -> {fg, bg} mapping (True = called foreground),
      e.g. for `group_scores` under the same mapping.
    """
    metrics: dict[str, float]
    foreground: tuple[bool, ...] = flax.struct.field(pytree_node=False)


def segmentation_metrics(pred: np.ndarray, target: np.ndarray,
                         num_masks: int) -> SegmentationReport:
    """Everything the evaluation reports for K = num_masks unnamed regions, percent:
    fg/bg metrics under the global mapping (target > 0 is fg), mIoU over the target's
    classes when C > 2, the per-image diagnostics and the trivial baselines; and the
    global mapping itself.

    pred int [N, H, W] in [0, K); target int [N, H, W] in [0, C).
    """
    fg = SegmentationAccumulator(num_masks, num_classes=2)
    fg.update(pred, target)
    mapping, scores = fg.foreground_mapping()
    out = foreground_metrics(mapping, scores)
    num_classes = int(target.max()) + 1
    if num_classes > 2:
        mc = SegmentationAccumulator(num_masks, num_classes=num_classes)
        mc.update(pred, target)
        out.update(mc.multiclass_results())
    out.update(per_image_scores(pred, target, num_masks))
    out.update(trivial_baselines(target))
    return SegmentationReport(metrics=out, foreground=mapping)
