"""Segmentation emerges on the procedural shapes data (the README's main job).

Trains `configs/shapes.py` as `make demo` does (about 15-20 minutes on 2 CPU
cores), then reads the `results.json` the run writes at the end. The learned
masks must beat both trivial baselines that `evaluate` reports by a clear
margin. Slow: run with `make test-slow`.
"""
import json
import os

import pytest

from tests import helpers

# The bar the issue sets ("clearly beats the trivial baselines"); strict xfail
# until the demo reaches it, so that passing is noticed.
MIN_MARGIN_OVER_BASELINES = 10.0   # IoU points


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="open (FDM issue): masks followed objects in one exploratory "
                   "seed of five, never in the main job; see README 'What the main job shows today'")
def test_main_job_segments_better_than_trivial_baselines(tmp_path):
    workdir = str(tmp_path / "shapes")
    proc = helpers.run_main("--config=configs/shapes.py", f"--workdir={workdir}", timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        r = json.load(f)
    best_baseline = max(r["baseline_all_fg_iou"], r["baseline_centre_iou"])
    assert r["seg_iou"] >= best_baseline + MIN_MARGIN_OVER_BASELINES, r
    for name in ("grid.png", "masks.png", "refinement.png"):
        assert os.path.exists(os.path.join(workdir, "samples", name))
    assert os.path.exists(os.path.join(workdir, "segment", "eval_overlays.png"))
