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

    def foreground_results(self) -> dict:
        """seg_acc / seg_iou / seg_dice (percent) and the chosen mapping, flat:
        seg_region{k}_is_fg = 1 where region k was called foreground."""
        conf_fg = np.stack([self.conf[:, 0], self.conf[:, 1:].sum(1)], axis=1)
        mapping, scores = best_foreground_mapping(conf_fg)
        out = {"seg_acc": 100 * scores.acc, "seg_iou": 100 * scores.iou,
               "seg_dice": 100 * scores.dice}
        out.update({f"seg_region{k}_is_fg": int(fg) for k, fg in enumerate(mapping)})
        return out

    def multiclass_results(self) -> dict:
        """seg_miou / seg_acc_matched (percent) after Hungarian matching, and
        seg_region{k}_class = the class region k was matched to."""
        miou, acc, assignment = hungarian_miou(self.conf)
        out = {"seg_miou": 100 * miou, "seg_acc_matched": 100 * acc}
        out.update({f"seg_region{k}_class": c for k, c in assignment.items()})
        return out


def trivial_baselines(target: np.ndarray) -> dict[str, float]:
    """Scores of masks that look at no image: all-foreground and a centre prior.

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
    for name, pred in (("all_fg", np.ones_like(fg)), ("centre", np.broadcast_to(box, fg.shape))):
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
