"""Supervised U-Net segmenter (seed 000 Tables 2.3-2.5): the upper reference of the
unsupervised methods, and the judge of masks generated with images (Table 2.5 bottom).

The network, its loss, loading, prediction and the judging of generated masks are the
model family `fdm.models.segmenter` (model.family = "segmenter"); this baseline trains
it with the generic trainer `fdm.train` into the baseline's workdir (config.json and
checkpoints, read back with `fdm.load` or `load_segmenter`) and scores it.

Derived config (`segmenter_config`): the experiment's config with model.family =
"segmenter", model.num_seg_classes = C = max(2, largest class in the train masks + 1),
train.num_steps / batch_size / learning_rate = baselines.supervised_steps /
supervised_batch_size / supervised_learning_rate, plain Adam (no clipping, warm-up or
per-subtree rates), no EMA (train.ema_decay = 0: the evaluated parameters are the
trained ones) and eval.at_end = False. Batches: the train images of `common.load_baseline_data` (train split,
or the first baselines.num_train_images eval images), handed to the trainer as a
stream of `fdm.data.pipeline.train_batches` with random horizontal flips.
"""
from __future__ import annotations

from typing import Callable, Iterator

import ml_collections
import numpy as np

from fdm.baselines.common import BaselineData, LabelledImages, class_scores, split_results
from fdm.data import pipeline
from fdm.errors import TrainingStopped
from fdm.models.segmenter import FAMILY, load_segmenter, predict
from fdm.train import trainer


def num_classes(masks: np.ndarray) -> int:
    """C of int masks [N, S, S] in [0, C): at least 2 (background and foreground)."""
    return max(2, int(masks.max()) + 1)


def segmenter_config(config: ml_collections.ConfigDict,
                     num_seg_classes: int) -> ml_collections.ConfigDict:
    """The config the trainer gets (module doc); `config` is left unchanged."""
    c = ml_collections.ConfigDict(config.to_dict())
    b = config.baselines
    c.model.family = FAMILY
    c.model.num_seg_classes = num_seg_classes
    c.train.num_steps = int(b.supervised_steps)
    c.train.batch_size = int(b.supervised_batch_size)
    c.train.learning_rate = float(b.supervised_learning_rate)
    c.train.ema_decay = 0.0
    c.train.grad_clip = 0.0
    c.train.warmup_steps = 0
    c.train.lr_multipliers = ml_collections.ConfigDict()
    c.train.frozen_steps = ml_collections.ConfigDict()
    c.eval.at_end = False            # the family has no evaluate: the baseline scores it
    return c


def train_stream(train: LabelledImages) -> Callable[..., Iterator[dict]]:
    """A `make_iterator` for `fdm.train.train` that streams `train`'s images and masks:
    host batches {'image' float32 [b, S, S, 3] in [-1, 1], 'mask' int32 [b, S, S]}."""
    arrays = {"image": train.images, "mask": train.masks}

    def make_iterator(config, split: str, process_index: int = 0, process_count: int = 1,
                      start_step: int = 0) -> Iterator[dict]:
        return pipeline.train_batches(arrays, config.train.batch_size, config.data.seed,
                                      process_index, process_count, start_step,
                                      random_flip=True)
    return make_iterator


def run_supervised(config, data: BaselineData, workdir: str) -> dict:
    """Trains the segmenter on the train images into `workdir` (resuming a run there;
    Table 2.5's `eval.segmenter_workdir`), predicts the evaluation set with the saved
    one, scores it (no remapping)."""
    seg_config = segmenter_config(config, num_classes(data.train.masks))
    state = trainer.train(seg_config, workdir, make_iterator=train_stream(data.train))
    if trainer.stopped_short(state, seg_config):
        raise TrainingStopped(f"the segmenter stopped at step {int(state.step)} of "
                              f"{seg_config.train.num_steps} (SIGTERM); nothing scored, "
                              "the same command resumes")
    segmenter = load_segmenter(workdir)
    pred = predict(segmenter, data.evaluation.images, int(config.eval.batch_size))
    return split_results(pred, data, class_scores)
