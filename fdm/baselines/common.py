"""What the segmentation baselines share: the train/test split and the scores.

Notation
  images uint8 [N, S, S, 3]   S = data.image_size
  masks  int32 [N, S, S]      ground truth: > 0 is foreground (fg/bg scores);
                              classes 0..C-1 for multi-class scores (C > 2)
  pred   int32 [N, S, S]      a baseline's prediction for every pixel

Split (`baselines.num_train_images` = n):
  n > 0   the images of the "eval" split, in the loader's order (sorted file names
          for image folders), rows [:n] train and rows [n:] test. Weizmann horse:
          n = 200, i.e. horse001-horse200 train, horse201-horse278 test.
  n = 0   the dataset's "train" split trains, its "eval" split tests.
In both cases the *evaluation set* is the whole "eval" split: the set the FDM's
`--mode=evaluate` scores, so `all_seg_*` are the numbers to put next to it.

Scores (percent, keys as the FDM's `evaluate`), for the test rows as `seg_*` and
for the whole evaluation set as `all_seg_*`:
  * `region_scores`: a prediction in K unnamed regions (k-means clusters) gets
    one global region -> {fg, bg} mapping (and a Hungarian region -> class
    matching when C > 2), exactly the FDM's scores
    (`fdm.metrics.segmentation.segmentation_metrics`);
  * `class_scores`: a prediction already in the target's classes (supervised
    U-Net: 0..C-1; GrabCut: 1 = fg) is scored as it is, no remapping.
Both add the per-image diagnostics `seg_iou_per_image` and `seg_ari` (for
`class_scores` the per-image IoU of pred > 0 as it is) and the all-foreground
and centre-prior scores (`baseline_*`).
"""
from __future__ import annotations

from typing import Callable

import flax
import numpy as np

from fdm.errors import UserError
from fdm.metrics import segmentation as seg_metrics


@flax.struct.dataclass
class LabelledImages:
    """images uint8 [N, S, S, 3] with their masks int32 [N, S, S]."""
    images: np.ndarray
    masks: np.ndarray

    def rows(self, index: np.ndarray) -> "LabelledImages":
        return LabelledImages(self.images[index], self.masks[index])


@flax.struct.dataclass
class BaselineData:
    """train: what supervised / fitted baselines learn from; evaluation: the whole
    "eval" split; test_rows: int [M] rows of `evaluation` never used for training."""
    train: LabelledImages
    evaluation: LabelledImages
    test_rows: np.ndarray


def _labelled(config, split: str) -> LabelledImages:
    """The split's images and masks; UserError when the dataset has no masks."""
    from fdm.data import load_split_arrays
    arrays = load_split_arrays(config, split)
    if "mask" not in arrays:
        raise UserError(f"the {split} split of data.dataset={config.data.dataset!r} has no "
                        "masks; the segmentation baselines need a dataset with masks")
    return LabelledImages(np.asarray(arrays["image"]), np.asarray(arrays["mask"], np.int32))


def load_baseline_data(config) -> BaselineData:
    """The train / evaluation / test split of the module doc."""
    evaluation = _labelled(config, "eval")
    n = int(config.baselines.num_train_images)
    if n <= 0:
        return BaselineData(_labelled(config, "train"), evaluation,
                            np.arange(len(evaluation.images)))
    if n >= len(evaluation.images):
        raise UserError(f"baselines.num_train_images={n} leaves no test image of the "
                        f"{len(evaluation.images)}; set it below {len(evaluation.images)}")
    return BaselineData(evaluation.rows(np.arange(n)), evaluation,
                        np.arange(n, len(evaluation.images)))


def region_scores(pred: np.ndarray, masks: np.ndarray, num_regions: int) -> dict:
    """Scores of K unnamed regions (global mapping; see module doc)."""
    return seg_metrics.segmentation_metrics(pred, masks, num_regions).metrics


def class_scores(pred: np.ndarray, masks: np.ndarray) -> dict:
    """Scores of a prediction in the masks' own classes (no remapping): fg/bg Acc / IoU /
    DICE of pred > 0 vs masks > 0; for C > 2 classes also seg_miou and the C-class pixel
    accuracy seg_acc_matched (same keys as the FDM's Hungarian-matched ones); the
    per-image seg_iou_per_image (pred > 0, no remapping) and seg_ari."""
    conf = seg_metrics.confusion_matrix(pred > 0, masks > 0, 2, 2)
    fg = seg_metrics.scores_for_mapping(conf, (False, True))
    out = {"seg_acc": 100 * fg.acc, "seg_iou": 100 * fg.iou, "seg_dice": 100 * fg.dice}
    if masks.max() > 1:
        num_classes = int(max(pred.max(), masks.max())) + 1
        conf = seg_metrics.confusion_matrix(pred, masks, num_classes, num_classes).astype(float)
        union = conf.sum(0) + conf.sum(1) - np.diag(conf)
        present = conf.sum(0) > 0                         # classes of the ground truth
        out["seg_miou"] = 100 * float(np.mean(np.diag(conf)[present] / union[present]))
        out["seg_acc_matched"] = 100 * float(np.trace(conf) / conf.sum())
    out.update(seg_metrics.fixed_prediction_scores(pred, masks))
    out.update(seg_metrics.trivial_baselines(masks))
    return out


def split_results(pred: np.ndarray, data: BaselineData,
                  score: Callable[[np.ndarray, np.ndarray], dict]) -> dict:
    """`score(pred, masks)` on the test rows (keys as returned) and on the whole
    evaluation set (keys prefixed `all_`); pred int [N_eval, S, S]."""
    masks = data.evaluation.masks
    test = score(pred[data.test_rows], masks[data.test_rows])
    test["seg_num_images"] = len(data.test_rows)
    whole = score(pred, masks)
    whole["seg_num_images"] = len(masks)
    return {**test, **{f"all_{k}": v for k, v in whole.items()}}
