"""Segmentation baselines of seed 000's tables, run by `experiments/baselines.py`.

  kmeans      DatasetDDPM-unsup: k-means (K = 3) on DDPM decoder features (`kmeans`),
              needs a DDPM workdir (`--ddpm_workdir`, trained with a model.family="ddpm"
              config such as configs/ddpm_horse.py) - Tables 2.3/2.4; with
              eval.segmenter_workdir also the DDPM row of Table 2.5 (its samples
              masked by the k-means, judged by the supervised segmenter: gen_seg_*)
  supervised  U-Net trained with cross-entropy on image/mask pairs (`supervised`)
              - Tables 2.3-2.5: the model family "segmenter" trained by `fdm.train`
              into workdir (config.json + checkpoints, `fdm.load`), the judge of
              generated masks (FDM `--mode=evaluate` with eval.segmenter_workdir)
  grabcut     OpenCV GrabCut from a centred rectangle (`grabcut`) - Tables 2.1/2.2
  histogram   colour-histogram pixel classifier fitted with the labels on the train
              images (`histogram`): the strength of the dataset's colour cue, an
              upper bound on any colour key (SPEC: procedural shapes' object IoU
              in [0.5, 0.85])

`run_baseline` writes `workdir/results.json` with the FDM evaluation's keys
(`seg_acc`, `seg_iou`, `seg_dice`, ...: test split; `all_seg_*`: the whole eval
split, see `common`), plus "baseline", "config", "step" (DDPM checkpoint step for
kmeans, training steps for supervised, 0 for grabcut and histogram) and "wall_s".
"""
from __future__ import annotations

import os
import time

import numpy as np

from fdm import provenance
from fdm.baselines.common import load_baseline_data
from fdm.errors import UserError
from fdm.host import write_json_atomic

BASELINES = ("kmeans", "supervised", "grabcut", "histogram")
RESULTS_FILE = "results.json"


def _compute(name: str, config, data, workdir: str,
             ddpm_workdir: str | None) -> tuple[dict, int]:
    """(metrics, step) of one baseline (the supervised one also trains its net in workdir)."""
    if name == "kmeans":
        import fdm
        from fdm.baselines.kmeans import run_kmeans
        ddpm = fdm.load(ddpm_workdir)
        return run_kmeans(config, data, ddpm.family, ddpm.params, config.train.seed), ddpm.step
    if name == "supervised":
        from fdm.baselines.supervised import run_supervised
        return run_supervised(config, data, workdir), config.baselines.supervised_steps
    if name == "histogram":
        from fdm.baselines.histogram import run_histogram
        return run_histogram(config, data, config.train.seed), 0
    from fdm.baselines.grabcut import run_grabcut
    return run_grabcut(config, data, config.train.seed), 0


def run_baseline(name: str, config, workdir: str, ddpm_workdir: str | None = None) -> dict:
    """Runs baseline `name` on config's data; writes and returns workdir/results.json."""
    if name not in BASELINES:
        raise UserError(f"unknown --baseline={name}; use one of {', '.join(BASELINES)}")
    if name == "kmeans" and not ddpm_workdir:
        raise UserError("--baseline=kmeans needs a trained DDPM; pass --ddpm_workdir=DIR "
                        "(trained with e.g. --config=configs/ddpm_horse.py)")
    if "baselines" not in config:
        raise UserError(f"config {config.name!r} has no baselines section; use a config "
                        "built with configs/fdm_common.py (e.g. configs/weizmann_horse.py)")
    start = time.time()
    metrics, step = _compute(name, config, load_baseline_data(config), workdir, ddpm_workdir)
    results = {k: np.asarray(v).item() for k, v in metrics.items()}
    results.update(baseline=name, config=config.name, step=int(step),
                   wall_s=round(time.time() - start, 1))
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(results, os.path.join(workdir, RESULTS_FILE))
    provenance.record(workdir, f"baseline {name}", step)
    return results
