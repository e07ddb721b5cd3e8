"""Seed studies (fdm/seed_study.py, experiments/seed_study.py): the pure pieces on
hand-made inputs (the four criteria, --select_by, --baselines_from), the runner with a
fake subprocess (including seed directories linked to finished runs), and one
end-to-end study of a tiny FDM through the command line (train, evaluate at a step, resume)."""
import itertools
import json
import os
import random
import subprocess
import sys
import time

import pytest

from fdm import provenance
from fdm import seed_study as ss
from fdm.errors import UserError
from tests import helpers


# ---- input -------------------------------------------------------------------------------

def test_parse_seeds():
    assert ss.parse_seeds("5") == [0, 1, 2, 3, 4]
    assert ss.parse_seeds(" 3,7,9 ") == [3, 7, 9]
    assert ss.parse_seeds("4,") == [4]


@pytest.mark.parametrize("text", [None, "", "0", "-2", "abc", "1.5", "1,1", "2,-1", "a,b", ","])
def test_parse_seeds_rejects(text):
    with pytest.raises(UserError, match="--seeds"):
        ss.parse_seeds(text)


def test_parse_eval_at():
    assert ss.parse_eval_at("", 1000) == []
    assert ss.parse_eval_at(None, 1000) == []
    assert ss.parse_eval_at("300,100,300", 1000) == [100, 300]
    for bad in ("0", "1000", "1200", "-5", "x", "100,abc"):
        with pytest.raises(UserError, match="--eval_at"):
            ss.parse_eval_at(bad, 1000)


def test_parse_parallel_and_min_iou():
    assert ss.parse_parallel(3) == 3
    assert ss.parse_min_iou(55) == 55.0
    for bad in (0, -1):
        with pytest.raises(UserError, match="--parallel"):
            ss.parse_parallel(bad)
    for bad in (-1, 101):
        with pytest.raises(UserError, match="--min_iou"):
            ss.parse_min_iou(bad)


def test_parse_max_pose_err_and_min_psnr():
    assert ss.parse_max_pose_err(10) == 10.0 and ss.parse_max_pose_err(0.5) == 0.5
    for bad in (0, -3, float("nan"), float("inf"), None):
        with pytest.raises(UserError, match="--max_pose_err"):
            ss.parse_max_pose_err(bad)
    assert ss.parse_min_psnr(None) is None and ss.parse_min_psnr(19) == 19.0
    assert ss.parse_min_psnr(0) == 0.0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="--min_psnr"):
            ss.parse_min_psnr(bad)


def test_parse_select_by():
    assert ss.parse_select_by("") is None and ss.parse_select_by(None) is None
    assert ss.parse_select_by(" psnr ") == ss.Selection("psnr", True)
    assert ss.parse_select_by("-eval_loss") == ss.Selection("eval_loss", False)
    assert ss.parse_select_by("-eval_loss").flag() == "-eval_loss"
    assert ss.parse_select_by("psnr").flag() == "psnr"
    for bad in ("-", "--psnr", "1psnr", "ps nr", "+psnr"):
        with pytest.raises(UserError, match="--select_by"):
            ss.parse_select_by(bad)


def test_threshold_flags_of_the_other_criterion_are_rejected():
    ss.check_threshold_flags(ss.SEGMENTATION, ["min_iou"], "fdm")
    ss.check_threshold_flags(ss.REGISTRATION, ["max_pose_err", "min_psnr"], "nerf_lifting")
    with pytest.raises(UserError, match="--min_psnr does not apply to model.family='fdm'"):
        ss.check_threshold_flags(ss.SEGMENTATION, ["min_psnr"], "fdm")
    with pytest.raises(UserError, match="--min_iou .*--max_pose_err, --min_psnr"):
        ss.check_threshold_flags(ss.REGISTRATION, ["min_iou"], "nerf_lifting")


def test_config_overrides_are_collected_verbatim():
    argv = ["prog", "--config=configs/shapes.py", "--workdir=w", "--config.model.ch=8",
            "--seeds=2", "--config.model.ch_mult=(1,)", "--config.train.num_steps", "40",
            "--noconfig.data.random_flip", "--config.eval.at_end"]
    assert ss.config_overrides(argv) == [
        "--config.model.ch=8", "--config.model.ch_mult=(1,)", "--config.train.num_steps=40",
        "--noconfig.data.random_flip", "--config.eval.at_end"]
    with pytest.raises(UserError, match="train.seed"):
        ss.config_overrides(["prog", "--config.train.seed=3"])


def test_config_file_arg():
    assert ss.config_file_arg(["p", "--config=a.py", "--config.x=1"]) == "a.py"
    assert ss.config_file_arg(["p", "--config", "b.py:arg"]) == "b.py:arg"
    assert ss.config_file_arg(["p", "--workdir=w"]) is None


# ---- legs -------------------------------------------------------------------------------

def test_plan_legs():
    assert ss.plan_legs(1000) == [ss.Leg(1000, "results.json", True)]
    assert ss.plan_legs(1000, [600, 300]) == [
        ss.Leg(300, "results_step300.json", False), ss.Leg(600, "results_step600.json", False),
        ss.Leg(1000, "results.json", True)]


def test_leg_done_reads_the_step(tmp_path):
    leg = ss.Leg(300, "results_step300.json", False)
    assert not ss.leg_done(str(tmp_path), leg)
    (tmp_path / "results_step300.json").write_text("{not json")
    assert not ss.leg_done(str(tmp_path), leg)
    ss.write_json({"step": 200, "seg_iou": 1.0}, str(tmp_path / "results_step300.json"))
    assert not ss.leg_done(str(tmp_path), leg)
    ss.write_json({"step": 300, "seg_iou": 1.0}, str(tmp_path / "results_step300.json"))
    assert ss.leg_done(str(tmp_path), leg)
    assert ss.leg_results(str(tmp_path), leg)["seg_iou"] == 1.0


def test_latest_checkpoint_step(tmp_path):
    assert ss.latest_checkpoint_step(str(tmp_path)) is None
    for name in ("2", "10", "12.orbax-checkpoint-tmp-1"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert ss.latest_checkpoint_step(str(tmp_path)) == 10


def test_main_command():
    cmd = ss.main_command("c.py", "w/seed_3", 3, ["--config.train.num_steps=50"], "evaluate",
                          num_steps=20)
    assert cmd[1:3] == ["-m", "experiments.main"]
    assert {"--config=c.py", "--workdir=w/seed_3", "--mode=evaluate",
            "--config.train.seed=3", "--config.eval.at_end=False"} <= set(cmd)
    assert cmd[-2:] == ["--config.train.num_steps=50", "--config.train.num_steps=20"]
    assert "--config.eval.at_end=False" not in ss.main_command("c.py", "w", 0, [],
                                                               at_end_key=False)


# ---- report ------------------------------------------------------------------------------

FULL = {"step": 100, "config": "shapes", "seg_iou": 75.0, "seg_iou_per_image": 70.0,
        "seg_ari": 0.5, "mask_entropy": 0.3, "mask_shift_error": 0.05, "eval_loss": 0.04,
        "baseline_all_fg_iou": 30.0, "baseline_centre_iou": 60.0}


def test_segments_criterion():
    assert ss.segments(FULL, 70) is True
    assert ss.segments(FULL, 80) is False
    assert ss.segments(dict(FULL, baseline_centre_iou=75.0), 70) is False  # not > centre
    assert ss.segments({"seg_iou": 71.0}, 70) is True                    # no prior: IoU only
    assert ss.segments({"eval_loss": 0.1}, 70) is None                    # a DDPM: unknown
    assert ss.segments(None, 70) is None


def test_build_row():
    row = ss.build_row(2, FULL, {50: dict(FULL, step=50, seg_iou=40.0)},
                       {"train_wall_s": 120.0, "eval_wall_s": 30.0}, 70)
    assert row["seed"] == 2 and row["status"] == "ok" and row["segments"] is True
    assert row["seg_iou"] == 75.0 and row["seg_iou@50"] == 40.0
    assert row["train_min"] == 2.0 and row["eval_min"] == 0.5
    assert row["baseline_centre_iou"] == 60.0 and "baseline_mask_prior_iou" not in row
    sparse = ss.build_row(0, {"step": 100, "eval_loss": 0.1, "seg_iou": float("nan")})
    assert sparse["seg_iou"] is None and sparse["mask_shift_error"] is None
    assert sparse["segments"] is None and sparse["train_min"] is None
    failed = ss.build_row(1, None, {50: None}, {}, 70, error="train exited with code 1: boom")
    assert failed["status"] == "failed" and failed["segments"] is False
    assert failed["seg_iou@50"] is None and failed["error"].endswith("boom")


def _rows():
    return [ss.build_row(0, None, {50: None}, {}, 70, error="evaluate exited with code 1: x"),
            ss.build_row(1, FULL, {50: dict(FULL, seg_iou=40.0)}, {"train_wall_s": 60}, 70),
            ss.build_row(2, dict(FULL, seg_iou=65.0, baseline_mask_prior_iou=66.0),
                         {50: dict(FULL, seg_iou=50.0)}, {"train_wall_s": 180}, 70)]


def test_summarise():
    summary = ss.summarise(_rows(), [50], 70)
    assert summary["segments"] == 1 and summary["seeds"] == 3 and summary["failed"] == [0]
    assert summary["stats"]["seg_iou"] == {"mean": 70.0, "std": pytest.approx(7.0710678),
                                           "n": 2}
    assert summary["stats"]["seg_iou@50"]["mean"] == 45.0
    assert summary["stats"]["train_min"]["mean"] == 2.0
    # Each baseline from the first row with it (seed 0 failed and has none; only seed 2
    # has the mask prior).
    assert summary["baselines_seed"] == 1 and summary["baselines_seeds"] == [1, 2]
    assert summary["baselines"] == {"baseline_all_fg_iou": 30.0, "baseline_centre_iou": 60.0,
                                    "baseline_mask_prior_iou": 66.0}
    one = ss.summarise(_rows()[1:2], [50])
    assert one["stats"]["seg_iou"]["std"] is None and one["stats"]["seg_iou@50"]["n"] == 1
    none = ss.summarise(_rows()[:1], [50])
    assert none["stats"]["seg_iou@50"] == {"mean": None, "std": None, "n": 0}
    assert none["baselines"] == {} and none["segments"] == 0


def test_render_markdown():
    rows = _rows()
    study = {"config": "shapes", "config_file": "configs/shapes.py", "eval_at": [50],
             "rows": rows, "summary": ss.summarise(rows, [50], 70), "command": "python -m x"}
    md = ss.render_markdown(study)
    lines = md.splitlines()
    for seed in (0, 1, 2):
        assert any(l.startswith(f"| {seed} |") for l in lines), md
    assert "segments: 1 of 3 seeds (criterion: seg_iou >= 70 and > the centre prior)" in lines
    assert "| seed | seg_iou | seg_iou@50 | seg_iou_per_image |" in md
    assert next(l for l in lines if l.startswith("| 0 |")).endswith("| failed |")
    assert next(l for l in lines if l.startswith("| 1 |")).endswith("| yes |")
    assert next(l for l in lines if l.startswith("| 2 |")).endswith("| no |")
    assert ss.MISSING in md and "| mean | 70.0 | 45.0 |" in md
    assert ("Trivial baselines (seeds 1, 2): baseline_all_fg_iou 30.0, baseline_centre_iou "
            "60.0, baseline_mask_prior_iou 66.0") in md
    assert "seed 0 failed: evaluate exited with code 1: x" in md


def test_segmentation_output_is_unchanged():
    """The segmentation study renders as before the criteria existed (except that each
    baseline now comes from the first seed that has it)."""
    rows = _rows()
    summary = ss.summarise(rows, [50], 70)
    assert ss.summarise(rows, [50], 70, ss.SEGMENTATION) == summary
    assert summary["criterion"] == "seg_iou >= 70 and > the centre prior"
    assert summary["min_iou"] == 70 and summary["selection"] is None
    assert [r["segments"] for r in rows] == [False, True, False]
    assert all("registers" not in r for r in rows)
    assert ss.numeric_columns([50]) == ["seg_iou", "seg_iou@50", "seg_iou_per_image", "seg_ari",
                                        "mask_entropy", "mask_shift_error", "eval_loss",
                                        "train_min"]
    md = ss.render_markdown({"config": "shapes", "config_file": "configs/shapes.py",
                             "eval_at": [50], "rows": rows, "summary": summary})
    assert md == SEGMENTATION_MD
    outcome = ss.SeedOutcome(FULL, {}, {"train_wall_s": 120.0, "eval_wall_s": 12.0}, None, True)
    assert ss._done_line(0, outcome, "d") == "seed 0 done: seg_iou 75.0 (2.2 min)"
    assert ss._done_line(0, outcome._replace(ran=False), "d") == \
        "seed 0 done: seg_iou 75.0 (2.2 min, already complete)"


SEGMENTATION_MD = """## Seed study: shapes (configs/shapes.py), seeds 0,1,2

| seed | seg_iou | seg_iou@50 | seg_iou_per_image | seg_ari | mask_entropy | mask_shift_error | eval_loss | train min | segments |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| 0 | – | – | – | – | – | – | – | – | failed |
| 1 | 75.0 | 40.0 | 70.0 | 0.5 | 0.3 | 0.05 | 0.04 | 1 | yes |
| 2 | 65.0 | 50.0 | 70.0 | 0.5 | 0.3 | 0.05 | 0.04 | 3 | no |

| over seeds | seg_iou | seg_iou@50 | seg_iou_per_image | seg_ari | mask_entropy | mask_shift_error | eval_loss | train min |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| mean | 70.0 | 45.0 | 70.0 | 0.5 | 0.3 | 0.05 | 0.04 | 2 |
| std | 7.07 | 7.07 | 0 | 0 | 0 | 0 | 0 | 1.41 |
| n | 2 | 2 | 2 | 2 | 2 | 2 | 2 | 2 |

Trivial baselines (seeds 1, 2): baseline_all_fg_iou 30.0, baseline_centre_iou 60.0, baseline_mask_prior_iou 66.0

segments: 1 of 3 seeds (criterion: seg_iou >= 70 and > the centre prior)

""" + ss.LEGEND + """

seed 0 failed: evaluate exited with code 1: x
"""


# Lifting results.json (the keys of fdm/models/lifting.py `evaluate`), from Lego runs.
LEGO = {"step": 6000, "config": "lego_cpu", "psnr": 19.75, "psnr_refined": 20.67,
        "pose_rot_err_deg_median": 6.66, "pose_refined_rot_err_deg_median": 4.95,
        "pose_train_rot_err_deg_median": 4.25, "pose_spread_ratio": 1.01,
        "cam_region_acc": 0.92, "mean_image_psnr": 14.53, "pose_const_baseline_deg": 80.49}
LEGO_FAILED = dict(LEGO, psnr=17.07, psnr_refined=17.84, pose_rot_err_deg_median=138.6,
                   pose_refined_rot_err_deg_median=141.9, pose_train_rot_err_deg_median=125.8,
                   pose_spread_ratio=0.49, cam_region_acc=0.88)


def test_registers_criterion():
    assert ss.registers(LEGO, 10) is True
    assert ss.registers(LEGO_FAILED, 10) is False
    assert ss.registers(dict(LEGO, pose_rot_err_deg_median=10.0), 10) is True   # at the threshold
    assert ss.registers(dict(LEGO, pose_rot_err_deg_median=10.01), 10) is False
    assert ss.registers(LEGO, 5) is False
    assert ss.registers(LEGO, 10, min_psnr=19.75) is True                       # at the threshold
    assert ss.registers(LEGO, 10, min_psnr=19.8) is False
    assert ss.registers(LEGO_FAILED, 10, min_psnr=15) is False                  # psnr is not enough
    no_psnr = {k: v for k, v in LEGO.items() if k != "psnr"}
    assert ss.registers(no_psnr, 10) is True and ss.registers(no_psnr, 10, 15) is False
    assert ss.registers({"psnr": 30.0}, 10) is None        # supervised: no pose metrics
    assert ss.registers(dict(LEGO, pose_rot_err_deg_median=float("nan")), 10) is None
    assert ss.registers(None, 10) is None
    assert ss.REGISTRATION.succeeds(LEGO) is True
    assert ss.registration(10, 20).succeeds(LEGO) is False
    assert ss.REGISTRATION.succeeds(FULL) is None and ss.SEGMENTATION.succeeds(LEGO) is None


def test_criterion_for():
    assert ss.criterion_for("nerf_lifting") == ss.REGISTRATION
    assert ss.criterion_for("nerf_lifting").success == "registers"
    assert ss.criterion_for("pdae") == ss.REPRESENTATION
    assert ss.criterion_for("dfm") == ss.SEPARATION
    assert ss.criterion_for("dfm", min_contrast=3).thresholds == (("min_contrast", 3.0),)
    for family in ("fdm", "ddpm", "fdm_given_masks", ""):
        assert ss.criterion_for(family) == ss.SEGMENTATION
        assert ss.criterion_for(family).success == "segments"
    seg = ss.criterion_for("fdm", min_iou=55, max_pose_err=3, min_psnr=20)
    assert seg.thresholds == (("min_iou", 55.0),) and seg.description == CRITERION_55
    reg = ss.criterion_for("nerf_lifting", min_iou=55, max_pose_err=5, min_psnr=19.5)
    assert dict(reg.thresholds) == {"max_pose_err": 5.0, "min_psnr": 19.5}
    assert reg.description == "pose_rot_err_deg_median <= 5 deg and psnr >= 19.5"
    assert ss.REGISTRATION.description == "pose_rot_err_deg_median <= 10 deg"
    assert ss.REGISTRATION.headline == "pose_rot_err_deg_median"
    assert ss.REGISTRATION.metrics == (
        "psnr", "psnr_refined", "pose_rot_err_deg_median", "pose_refined_rot_err_deg_median",
        "pose_train_rot_err_deg_median", "pose_spread_ratio", "cam_region_acc")
    assert ss.REGISTRATION.baselines == ("mean_image_psnr", "pose_const_baseline_deg")
    assert ss.SEGMENTATION.metrics == ss.METRICS and ss.SEGMENTATION.baselines == ss.BASELINES
    study = ss.Study(config_arg="c.py", config_name="x", workdir="w", seeds=(0,), num_steps=1,
                     family="nerf_lifting", max_pose_err=7.0)
    assert study.criterion == ss.registration(7.0)


CRITERION_55 = "seg_iou >= 55 and > the centre prior"


# PDAE results.json (fdm/models/pdae.py `evaluate`), the 32 x 32 centre-placement runs of
# session 31 (DiffSiam, SimSiam only) and the :random_encoder run's keys.
FACTORS = ("bg_hue", "quadrant", "shape", "obj_hue", "stripe")
DIFFSIAM = {"step": 2000, "probe_bg_hue": 1.0, "probe_quadrant": 0.866, "probe_shape": 0.4405,
            "probe_obj_hue": 0.9505, "probe_stripe": 0.62, "probe_shape_seg0": 0.397,
            "probe_obj_hue_seg2": 0.844, "z_gain_q3": 0.437, "eval_loss": 0.004}
SIMSIAM = dict(DIFFSIAM, probe_quadrant=0.83, probe_shape=0.394, probe_obj_hue=0.9525,
               probe_stripe=0.5585, z_gain_q3=0.0)
RANDOM_ENCODER = {"step": 1, "probe_bg_hue": 0.853, "probe_quadrant": 0.845,
                  "probe_shape": 0.359, "probe_obj_hue": 0.579, "probe_stripe": 0.595,
                  "probe_shape_seg1": 0.3, "probe_pixels_bg_hue": 1.0,
                  "probe_pixels_quadrant": 0.938, "probe_pixels_shape": 0.3855,
                  "probe_pixels_obj_hue": 0.993, "probe_pixels_stripe": 0.521}
RANDOM_CONFIG = {"name": "random_encoder_factors", "train": {"num_steps": 1},
                 "data": {"dataset": "factors", "image_size": 32, "placement": "centre"}}


def _mean(results, prefix):
    return sum(results[prefix + f] for f in FACTORS) / len(FACTORS)


def test_probe_means_average_the_factors_only():
    means = ss.probe_means(RANDOM_ENCODER)
    assert means["probe_mean"] == pytest.approx((0.853 + 0.845 + 0.359 + 0.579 + 0.595) / 5)
    assert means["probe_pixels_mean"] == pytest.approx(
        (1.0 + 0.938 + 0.3855 + 0.993 + 0.521) / 5)
    # Segment groups, the pixel probes and an earlier mean do not enter the mean.
    assert ss.probe_means(dict(DIFFSIAM, probe_mean=0.0))["probe_mean"] == \
        pytest.approx(_mean(DIFFSIAM, "probe_"))
    assert ss.probe_means({"eval_loss": 0.1}) == {}


def test_random_encoder_baselines():
    base = ss.random_encoder_baselines(RANDOM_ENCODER, RANDOM_CONFIG)
    assert base["random_encoder_probe_mean"] == pytest.approx(_mean(RANDOM_ENCODER, "probe_"))
    assert base["probe_pixels_mean"] == pytest.approx(_mean(RANDOM_ENCODER, "probe_pixels_"))
    assert base["probe_pixels_shape"] == 0.3855 and "probe_shape" not in base
    trained = dict(RANDOM_CONFIG, train={"num_steps": 2000})
    with pytest.raises(UserError, match="not a random-init encoder"):
        ss.random_encoder_baselines(RANDOM_ENCODER, trained)
    no_pixels = {k: v for k, v in RANDOM_ENCODER.items() if "pixels" not in k}
    with pytest.raises(UserError, match="probe_pixels_\\* missing"):
        ss.random_encoder_baselines(no_pixels, RANDOM_CONFIG)


def test_represents_is_the_issue_bar():
    base = ss.random_encoder_baselines(RANDOM_ENCODER, RANDOM_CONFIG)
    rule = ss.REPRESENTATION
    assert rule.succeeds(rule.columns(DIFFSIAM, base)) is True
    # SimSiam alone: stripes below the raw pixels, z does not help denoising.
    assert rule.succeeds(rule.columns(SIMSIAM, base)) is False
    # Each bar alone fails it, at and just past its threshold.
    assert rule.succeeds(rule.columns(dict(DIFFSIAM, probe_shape=0.3855), base)) is False
    assert rule.succeeds(rule.columns(dict(DIFFSIAM, probe_stripe=0.5), base)) is False
    assert rule.succeeds(rule.columns(dict(DIFFSIAM, probe_obj_hue=0.9), base)) is True
    assert rule.succeeds(rule.columns(dict(DIFFSIAM, probe_obj_hue=0.899), base)) is False
    assert rule.succeeds(rule.columns(dict(DIFFSIAM, z_gain_q3=0.099), base)) is False
    low = dict(base, random_encoder_probe_mean=_mean(DIFFSIAM, "probe_") - 0.099)
    assert rule.succeeds(rule.columns(DIFFSIAM, low)) is False
    # Unknown without the baselines or a probe.
    assert rule.succeeds(rule.columns(DIFFSIAM)) is None
    assert rule.succeeds(rule.columns({"step": 2000, "eval_loss": 0.1}, base)) is None
    assert ss.represents(None, 0.1, 0.9, 0.1) is None
    # A run's own raw-pixel probes (eval.pixel_probes) win over the baseline run's.
    own = dict(DIFFSIAM, probe_pixels_shape=0.45)
    assert rule.succeeds(rule.columns(own, base)) is False
    assert rule.columns(own, base)["probe_pixels_shape"] == 0.45


# Forward-model scenes results.json (fdm/forward/scenes.py `_interior_scores`), from the
# hidden-sides runs of session 31 (paper's loss, 9600 steps; min_snr 2400 steps) and the
# deterministic model.
SCENES = {"step": 9600, "sample_std_seen_interior": 0.0726, "sample_std_hidden_interior": 0.246,
          "spread_skill_seen_interior": 0.549, "spread_skill_hidden_interior": 0.588,
          "rmse_trgt_seen_interior": 0.1475, "rmse_trgt_hidden_interior": 0.3502,
          "fd_pixels_trgt": 1.274, "prior_std_hidden_interior": 0.3173,
          "rmse_context_warp_seen_interior": 0.0503}
MIN_SNR = dict(SCENES, step=2400, sample_std_seen_interior=0.195,
               sample_std_hidden_interior=0.368)
DETERMINISTIC = dict(SCENES, step=2400, sample_std_seen_interior=0.0,
                     sample_std_hidden_interior=0.0, rmse_trgt_seen_interior=0.1403,
                     rmse_trgt_hidden_interior=0.2415, fd_pixels_trgt=1.837)


def test_separates_criterion():
    assert ss.separates(SCENES, 2.0) is True and ss.separates(SCENES, 3.5) is False
    assert ss.separates(MIN_SNR, 2.0) is False and ss.separates(MIN_SNR, 1.5) is True
    at = dict(SCENES, sample_std_hidden_interior=2 * 0.0726)
    assert ss.separates(at, 2.0) is True                        # at the threshold
    assert ss.separates(DETERMINISTIC, 1.0) is False            # no spread anywhere
    known_answer = dict(SCENES, sample_std_seen_interior=0.0, sample_std_hidden_interior=0.3)
    assert ss.separates(known_answer, 2.0) is True
    assert ss.separates({"sample_std_seen": 0.1}, 2.0) is None  # no interior scores
    assert ss.interior_contrast(SCENES) == {"interior_contrast": pytest.approx(0.246 / 0.0726)}
    assert ss.interior_contrast(known_answer) == {} and ss.interior_contrast({}) == {}


def test_deterministic_baselines():
    config = {"model": {"deterministic": True}, "data": {"hidden_sides": True}}
    base = ss.deterministic_baselines(DETERMINISTIC, config)
    assert base == {"deterministic_rmse_trgt_seen_interior": 0.1403,
                    "deterministic_rmse_trgt_hidden_interior": 0.2415,
                    "deterministic_fd_pixels_trgt": 1.837}
    with pytest.raises(UserError, match="not a deterministic model"):
        ss.deterministic_baselines(SCENES, {"model": {"deterministic": False}})
    row = ss.build_row(0, SCENES, criterion=ss.SEPARATION, baselines=base)
    assert row["separates"] is True and row["interior_contrast"] == pytest.approx(3.388, abs=1e-3)
    assert row["deterministic_rmse_trgt_seen_interior"] == 0.1403
    assert row["prior_std_hidden_interior"] == 0.3173


def test_read_baseline_run(tmp_path):
    run = tmp_path / "random"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(RANDOM_ENCODER))
    (run / "config.json").write_text(json.dumps(RANDOM_CONFIG))
    data = dict(RANDOM_CONFIG["data"])
    base = ss.read_baseline_run(str(run), ss.REPRESENTATION, data)
    assert base == ss.random_encoder_baselines(RANDOM_ENCODER, RANDOM_CONFIG)
    with pytest.raises(UserError, match=r"other data \(data.image_size 16 vs 32\)"):
        ss.read_baseline_run(str(run), ss.REPRESENTATION, dict(data, image_size=16))
    with pytest.raises(UserError, match="does not apply to the segmentation"):
        ss.read_baseline_run(str(run), ss.SEGMENTATION, data)
    with pytest.raises(UserError, match="no readable results.json"):
        ss.read_baseline_run(str(tmp_path / "nothing"), ss.REPRESENTATION, data)
    assert ss.data_differences({"crop": (1, 2), "a": 1}, {"crop": [1, 2], "b": 2}) == []


def _lego_rows(criterion=ss.REGISTRATION, extra=()):
    return [ss.build_row(0, LEGO, {3000: dict(LEGO, pose_rot_err_deg_median=30.0)},
                         {"train_wall_s": 600}, criterion=criterion, extra=extra),
            ss.build_row(1, LEGO_FAILED, {3000: None}, {}, criterion=criterion, extra=extra),
            ss.build_row(2, None, {3000: None}, {}, error="train exited with code 1: x",
                         criterion=criterion, extra=extra),
            ss.build_row(3, {"step": 6000, "psnr": 25.0}, {}, criterion=criterion, extra=extra)]


def test_registration_rows_and_summary():
    rows = _lego_rows()
    assert [r["registers"] for r in rows] == [True, False, False, None]
    assert all("segments" not in r and "seg_iou" not in r for r in rows)
    assert rows[0]["pose_rot_err_deg_median"] == 6.66 and rows[0]["psnr"] == 19.75
    assert rows[0]["pose_rot_err_deg_median@3000"] == 30.0
    assert rows[1]["pose_rot_err_deg_median@3000"] is None
    assert rows[0]["mean_image_psnr"] == 14.53 and rows[0]["train_min"] == 10.0
    assert rows[3]["pose_spread_ratio"] is None and "mean_image_psnr" not in rows[3]
    assert ss.numeric_columns([3000], ss.REGISTRATION) == [
        "psnr", "psnr_refined", "pose_rot_err_deg_median", "pose_rot_err_deg_median@3000",
        "pose_refined_rot_err_deg_median", "pose_train_rot_err_deg_median",
        "pose_spread_ratio", "cam_region_acc", "train_min"]
    summary = ss.summarise(rows, [3000], criterion=ss.REGISTRATION)
    assert summary["registers"] == 1 and summary["seeds"] == 4 and summary["failed"] == [2]
    assert "segments" not in summary and "min_iou" not in summary
    assert summary["max_pose_err"] == 10.0 and summary["min_psnr"] is None
    assert summary["criterion_name"] == "registration" and summary["success"] == "registers"
    assert summary["stats"]["psnr"]["n"] == 3
    assert summary["stats"]["pose_rot_err_deg_median"]["mean"] == pytest.approx(72.63)
    assert summary["baselines"] == {"mean_image_psnr": 14.53, "pose_const_baseline_deg": 80.49}
    strict = ss.summarise(_lego_rows(ss.registration(10, 20)), [3000],
                          criterion=ss.registration(10, 20))
    assert strict["registers"] == 0 and strict["min_psnr"] == 20.0


def _lego_document(criterion=ss.REGISTRATION, selection=None):
    rows = _lego_rows(criterion, (selection.key,) if selection else ())
    return {"config": "lego_cpu", "config_file": "configs/lego.py:cpu", "eval_at": [3000],
            "criterion": criterion.name, "thresholds": dict(criterion.thresholds),
            "rows": rows, "summary": ss.summarise(rows, [3000], criterion=criterion,
                                                  selection=selection)}


def test_render_markdown_registration():
    md = ss.render_markdown(_lego_document(ss.registration(10, 19)))
    lines = md.splitlines()
    assert ("registers: 1 of 4 seeds (criterion: pose_rot_err_deg_median <= 10 deg and "
            "psnr >= 19)") in lines
    assert "segments" not in md and "seg_iou" not in md
    assert lines[2].startswith("| seed | psnr | psnr_refined | pose_rot_err_deg_median | "
                               "pose_rot_err_deg_median@3000 | pose_refined_rot_err_deg_median")
    assert lines[2].endswith("| train min | registers |")
    assert next(l for l in lines if l.startswith("| 0 |")).endswith("| yes |")
    assert next(l for l in lines if l.startswith("| 1 |")).endswith("| no |")
    assert next(l for l in lines if l.startswith("| 2 |")).endswith("| failed |")
    assert next(l for l in lines if l.startswith("| 3 |")).endswith(f"| {ss.MISSING} |")
    assert ("Trivial baselines (seed 0): mean_image_psnr 14.5, pose_const_baseline_deg 80.5"
            in lines)
    assert ss.POSE_LEGEND in lines and ss.LEGEND not in lines
    assert not any(l.startswith(("selected by", "best of")) for l in lines)
    default = ss.render_markdown(_lego_document())
    assert "registers: 1 of 4 seeds (criterion: pose_rot_err_deg_median <= 10 deg)" in default
    done = ss.SeedOutcome(LEGO, {}, {}, None, False)
    assert ss._done_line(0, done, "d", ss.REGISTRATION) == \
        "seed 0 done: pose_rot_err_deg_median 6.66 (already complete)"


# ---- label-free selection --------------------------------------------------------------------

def test_select_by_higher_is_better():
    doc = _lego_document(selection=ss.Selection("psnr", True))
    sel = doc["summary"]["selection"]
    # Seed 3 (psnr 25, unknown registration) is best; seed 2 (failed) has no psnr.
    assert sel["seed"] == 3 and sel["value"] == 25.0 and sel["succeeds"] is None
    assert sel["candidates"] == 3 and sel["label_free"] is True
    # Pairs of {0, 1, 3}: the better by psnr registers only in (0, 1).
    assert sel["best_of_2"] == {"succeed": 1, "pairs": 3}
    lines = ss.render_markdown(doc).splitlines()
    assert ("selected by psnr (label-free, higher is better): seed 3 (psnr 25.0), "
            "registers: unknown") in lines
    assert "best of 2 by psnr registers in 1 of 3 pairs" in lines
    only_lego = ss.select_summary(_lego_rows()[:2], ss.Selection("psnr"), "registers")
    assert only_lego["seed"] == 0 and only_lego["succeeds"] is True
    assert only_lego["best_of_2"] == {"succeed": 1, "pairs": 1}


def test_select_by_lower_is_better():
    rows = _rows()    # segmentation: seed 0 failed; eval_loss 0.04 for seeds 1 and 2
    rows[2]["eval_loss"] = 0.03
    sel = ss.select_summary(rows, ss.Selection("eval_loss", False), "segments")
    assert sel["seed"] == 2 and sel["succeeds"] is False and sel["higher_is_better"] is False
    assert sel["best_of_2"] == {"succeed": 0, "pairs": 1}
    rows[2]["eval_loss"] = 0.05
    sel = ss.select_summary(rows, ss.Selection("eval_loss", False), "segments")
    assert sel["seed"] == 1 and sel["succeeds"] is True
    assert sel["best_of_2"] == {"succeed": 1, "pairs": 1}
    rows[2]["eval_loss"] = 0.04               # a tie: the lower seed
    assert ss.select_summary(rows, ss.Selection("eval_loss", False), "segments")["seed"] == 1
    summary = ss.summarise(rows, [50], 70, selection=ss.Selection("eval_loss", False))
    lines = ss.selection_lines(summary)
    assert lines == ["selected by eval_loss (label-free, lower is better): seed 1 "
                     "(eval_loss 0.04), segments: yes",
                     "best of 2 by eval_loss segments in 1 of 1 pairs"]
    labelled = ss.summarise(rows, [50], 70, selection=ss.Selection("seg_iou", True))
    assert ss.selection_lines(labelled)[0].startswith(
        "selected by seg_iou (higher is better): seed 1")   # not label-free: not called so


def test_select_by_without_the_key():
    rows = _lego_rows(extra=("ssim",))
    assert all(r["ssim"] is None for r in rows)
    summary = ss.summarise(rows, criterion=ss.REGISTRATION, selection=ss.Selection("ssim"))
    assert summary["selection"]["seed"] is None and summary["selection"]["best_of_2"] is None
    assert ss.selection_lines(summary) == [
        "selected by ssim (label-free, higher is better): no seed has ssim"]
    one = ss.summarise(rows[:1], criterion=ss.REGISTRATION, selection=ss.Selection("psnr"))
    assert one["selection"]["seed"] == 0 and one["selection"]["best_of_2"] is None
    assert len(ss.selection_lines(one)) == 1


def _slow_best_of_2(rows, key, higher, success):
    """Every pair by brute force: the pick is the better value, the lower seed on a tie."""
    have = [r for r in rows if r.get(key) is not None]
    hits = 0
    for a, b in itertools.combinations(have, 2):
        if a[key] == b[key]:
            pick = a if a["seed"] < b["seed"] else b
        elif (a[key] > b[key]) == higher:
            pick = a
        else:
            pick = b
        hits += pick.get(success) is True
    return {"succeed": hits, "pairs": len(have) * (len(have) - 1) // 2}


def test_best_of_2_counts_every_pair():
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randint(0, 9)
        seeds = rng.sample(range(40), n)
        rows = [{"seed": s, "psnr": rng.choice([None, 17.0, 18.5, 19.6, 20.0, rng.random()]),
                 "registers": rng.choice([True, False, None])} for s in seeds]
        for higher in (True, False):
            sel = ss.select_summary(rows, ss.Selection("psnr", higher), "registers")
            have = [r for r in rows if r["psnr"] is not None]
            want = _slow_best_of_2(rows, "psnr", higher, "registers")
            assert sel["best_of_2"] == (want if len(have) >= 2 else None), (trial, rows)
            if have:
                best = max(have, key=lambda r: (r["psnr"] if higher else -r["psnr"], -r["seed"]))
                assert sel["seed"] == best["seed"]
    # Lego: two registered seeds at 19.6-20.0 dB and one failure at 17-18.6 dB.
    rows = [{"seed": 0, "psnr": 19.6, "registers": True}, {"seed": 1, "psnr": 20.0,
            "registers": True}, {"seed": 2, "psnr": 18.6, "registers": False}]
    assert ss.select_summary(rows, ss.Selection("psnr"), "registers")["best_of_2"] == {
        "succeed": 3, "pairs": 3}
    # Triples of ranks 0-3: three hold rank 0 (succeeds); {1, 2, 3} is picked as rank 1.
    assert ss.best_of([True, False, True, None], 3) == (3, 4)


def test_last_error_line():
    assert ss.last_error_line("a\nerror: bad key; fix it\nI0 shutdown\n") == "error: bad key; fix it"
    tb = ("Traceback (most recent call last):\n  File x\nValueError: nope\n"
          "--------------------\nFor simplicity, JAX has removed its internal frames\n")
    assert ss.last_error_line(tb) == "ValueError: nope"
    assert ss.last_error_line("one\ntwo\n\n") == "two"
    assert ss.last_error_line("") == "(no output)"


# ---- runner with a fake subprocess ---------------------------------------------------------

def _fake_call(calls, fail_seed=None):
    """A stand-in for `ss.call`: train makes checkpoints/<num_steps>, evaluate writes
    results.json at the newest checkpoint; seed `fail_seed` fails its first evaluate.
    `calls` collects (seed, mode, num_steps)."""
    def call(cmd, log_path, env, cores=()):
        args = dict(a.split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
        workdir, seed = args["--workdir"], int(args["--config.train.seed"])
        calls.append((seed, args["--mode"], int(args.get("--config.train.num_steps", 0))))
        if args["--mode"] == "train":
            os.makedirs(os.path.join(workdir, "checkpoints", args["--config.train.num_steps"]),
                        exist_ok=True)
            return 0, 60.0, ""
        if seed == fail_seed:
            return 1, 6.0, "error: boom"
        step = ss.latest_checkpoint_step(workdir)
        ss.write_json({"step": step, "seg_iou": 50.0 + step / 10 + seed,
                       "baseline_centre_iou": 55.0}, os.path.join(workdir, "results.json"))
        return 0, 6.0, ""
    return call


def _study(tmp_path, **kw):
    # The fake reads num_steps from the command: the final leg passes it as an override.
    kw = {"seeds": (0, 1, 2), "num_steps": 200, "eval_at": (100,), "min_iou": 70.0,
          "overrides": ("--config.train.num_steps=200",), **kw}
    return ss.Study(config_arg="c.py", config_name="fake", workdir=str(tmp_path / "study"),
                    **kw)


def test_run_study_with_fake_subprocess_resumes_and_reports(tmp_path, monkeypatch):
    calls, lines = [], []
    monkeypatch.setattr(ss, "call", _fake_call(calls, fail_seed=1))
    study = _study(tmp_path)
    assert ss.run_study(study, out=lines.append) == 1      # seed 1 failed
    seed0 = [c for c in calls if c[0] == 0]
    assert seed0 == [(0, "train", 100), (0, "evaluate", 100), (0, "train", 200),
                     (0, "evaluate", 200)]
    assert [c for c in calls if c[0] == 1] == [(1, "train", 100), (1, "evaluate", 100)]
    d0 = os.path.join(study.workdir, "seed_0")
    assert ss.read_json(os.path.join(d0, "results_step100.json"))["step"] == 100
    assert ss.read_json(os.path.join(d0, "results.json"))["step"] == 200
    assert ss.read_json(os.path.join(d0, "timing.json")) == {"train_wall_s": 120.0,
                                                             "eval_wall_s": 12.0}
    doc = ss.read_json(os.path.join(study.workdir, "seed_study.json"))
    assert [r["status"] for r in doc["rows"]] == ["ok", "failed", "ok"]
    assert doc["rows"][1]["error"] == "evaluate exited with code 1: error: boom"
    assert doc["rows"][2]["seg_iou"] == 72.0 and doc["rows"][2]["seg_iou@100"] == 62.0
    assert [r["segments"] for r in doc["rows"]] == [True, False, True]  # >= 70, > 55
    assert any(l.startswith("seed 1 FAILED: evaluate exited with code 1: error: boom")
               for l in lines)
    assert any(l.startswith("seed 0 done: seg_iou 70.0 (2.2 min)") for l in lines)
    assert any("ETA" in l for l in lines)
    with open(os.path.join(study.workdir, "seed_study.md")) as f:
        assert "segments: 2 of 3 seeds" in f.read()
    # Again: seeds 0 and 2 are done; seed 1 re-runs its evaluate (train is a no-op).
    calls.clear()
    monkeypatch.setattr(ss, "call", _fake_call(calls))
    assert ss.run_study(study, out=lines.append) == 0
    assert calls == [(1, "train", 100), (1, "evaluate", 100), (1, "train", 200),
                     (1, "evaluate", 200)]
    assert ss.read_json(os.path.join(d0, "timing.json"))["train_wall_s"] == 120.0
    assert ss.read_json(os.path.join(study.workdir, "seed_study.json"))["summary"][
        "segments"] == 3


def test_leg_behind_the_checkpoint_is_skipped(tmp_path, monkeypatch):
    calls, lines = [], []
    monkeypatch.setattr(ss, "call", _fake_call(calls))
    study = _study(tmp_path, seeds=(0,))
    os.makedirs(os.path.join(study.workdir, "seed_0", "checkpoints", "150"))
    outcome = ss.run_seed(study, 0, lines.append)
    assert calls == [(0, "train", 200), (0, "evaluate", 200)]
    assert outcome.error is None and outcome.at_steps == {100: None}
    assert any("unavailable" in l for l in lines)


def _tree(directory):
    """{path: (mtime, size, link target)} of everything under `directory`."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            out[path] = (st.st_mtime_ns, st.st_size,
                         os.readlink(path) if os.path.islink(path) else None)
    return out


def test_linked_finished_runs_are_only_reported(tmp_path, monkeypatch):
    """DIR/seed_{s} -> finished lifting workdirs (results.json at train.num_steps): no
    subprocess runs, nothing in them is written, the study reports registration."""
    runs = {}
    for seed, results, trained_with in ((0, LEGO, 0), (4, LEGO_FAILED, 2),
                                        (7, dict(LEGO, psnr=19.9), 7)):
        run = tmp_path / "runs" / f"lego_s{seed}"
        (run / "checkpoints" / "6000").mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(results))
        (run / "config.json").write_text(json.dumps({"train": {"seed": trained_with}}))
        runs[seed] = run
    study = _study(tmp_path, seeds=(0, 4, 7), num_steps=6000, eval_at=(3000,),
                   family="nerf_lifting", select_by=ss.Selection("psnr"), overrides=())
    os.makedirs(study.workdir)
    for seed, run in runs.items():
        os.symlink(run, ss.seed_dir(study.workdir, seed))
    (runs[7] / "checkpoints" / "6000").rmdir()    # no checkpoints: still nothing retrains
    before = _tree(str(tmp_path / "runs"))
    calls, lines = [], []
    monkeypatch.setattr(ss, "call", _fake_call(calls))
    assert ss.run_study(study, out=lines.append) == 0
    assert calls == [] and _tree(str(tmp_path / "runs")) == before
    assert all(os.path.islink(ss.seed_dir(study.workdir, s)) for s in runs)
    assert "seed 0 done: pose_rot_err_deg_median 6.66 (already complete)" in lines
    assert any(l.startswith("seed 4: note: ") and "train.seed=2" in l for l in lines)
    assert sum("pose_rot_err_deg_median@3000 unavailable" in l for l in lines) == 3
    doc = ss.read_json(os.path.join(study.workdir, "seed_study.json"))
    assert doc["criterion"] == "registration" and doc["family"] == "nerf_lifting"
    assert doc["thresholds"] == {"max_pose_err": 10.0, "min_psnr": None}
    assert doc["select_by"] == "psnr"
    assert [r["registers"] for r in doc["rows"]] == [True, False, True]
    assert doc["summary"]["registers"] == 2
    assert doc["summary"]["selection"]["seed"] == 7
    assert doc["summary"]["selection"]["best_of_2"] == {"succeed": 3, "pairs": 3}
    md = (tmp_path / "study" / "seed_study.md").read_text()
    assert "registers: 2 of 3 seeds (criterion: pose_rot_err_deg_median <= 10 deg)" in md
    assert "selected by psnr (label-free, higher is better): seed 7 (psnr 19.9), registers: yes" \
        in md
    assert "best of 2 by psnr registers in 3 of 3 pairs" in md


def test_linked_pdae_runs_with_baselines_from(tmp_path, monkeypatch):
    """DiffSiam / SimSiam workdirs linked as seeds, the random-encoder run as
    --baselines_from: "represents: 1 of 2 seeds" with the baselines in every row."""
    runs = {}
    for seed, results in ((0, DIFFSIAM), (1, SIMSIAM)):
        run = tmp_path / "runs" / f"s{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(results))
        runs[seed] = run
    base = ss.random_encoder_baselines(RANDOM_ENCODER, RANDOM_CONFIG)
    study = _study(tmp_path, seeds=(0, 1), num_steps=2000, eval_at=(), family="pdae",
                   overrides=(), baselines_from="runs/random", baselines=base)
    os.makedirs(study.workdir)
    for seed, run in runs.items():
        os.symlink(run, ss.seed_dir(study.workdir, seed))
    calls, lines = [], []
    monkeypatch.setattr(ss, "call", _fake_call(calls))
    assert ss.run_study(study, out=lines.append) == 0 and calls == []
    assert "seed 0 done: probe_mean 0.775 (already complete)" in lines
    doc = ss.read_json(os.path.join(study.workdir, "seed_study.json"))
    assert doc["criterion"] == "representation" and doc["baselines_from"] == "runs/random"
    assert [r["represents"] for r in doc["rows"]] == [True, False]
    assert all(r["probe_pixels_shape"] == 0.3855 for r in doc["rows"])
    assert doc["summary"]["stats"]["probe_shape"]["mean"] == pytest.approx((0.4405 + 0.394) / 2)
    md = (tmp_path / "study" / "seed_study.md").read_text()
    assert ("represents: 1 of 2 seeds (criterion: probe_mean >= the random encoder's + 0.1, "
            "shape and stripe > raw pixels, obj_hue >= 0.9, z_gain_q3 >= 0.1)") in md
    assert "Trivial baselines (seed 0 and the run in runs/random): random_encoder_probe_mean " \
        "0.646, probe_pixels_mean 0.767, probe_pixels_shape 0.386, probe_pixels_stripe 0.521" in md
    assert "| seed | probe_mean | probe_bg_hue |" in md


def test_dangling_seed_link_fails_that_seed(tmp_path, monkeypatch):
    calls, lines = [], []
    monkeypatch.setattr(ss, "call", _fake_call(calls))
    study = _study(tmp_path, seeds=(0, 1), eval_at=())
    os.makedirs(study.workdir)
    os.symlink(tmp_path / "gone", ss.seed_dir(study.workdir, 0))
    assert ss.run_study(study, out=lines.append) == 1
    assert [c[0] for c in calls] == [1, 1] and not (tmp_path / "gone").exists()
    doc = ss.read_json(os.path.join(study.workdir, "seed_study.json"))
    failed = doc["rows"][0]
    assert failed["status"] == "failed" and "links to the missing" in failed["error"]
    assert doc["rows"][1]["segments"] is True


# ---- command line --------------------------------------------------------------------------

def _study_command(*args):
    return [sys.executable, "-m", "experiments.seed_study", *args]


def _run_study(*args, timeout=400):
    return subprocess.run(_study_command(*args), cwd=helpers.REPO, env=helpers.subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


BAD_INPUT = {
    "no_config": (["--seeds=2"], "--config"),
    "zero_seeds": (["--config=configs/shapes.py", "--seeds=0"], "--seeds"),
    "garbage_seeds": (["--config=configs/shapes.py", "--seeds=two"], "--seeds"),
    "parallel": (["--config=configs/shapes.py", "--seeds=2", "--parallel=0"], "--parallel"),
    "eval_at": (["--config=configs/shapes.py", "--seeds=2", "--eval_at=3000"], "--eval_at"),
    "max_pose_err": (["--config=configs/lego.py:cpu", "--seeds=2", "--max_pose_err=0"],
                     "--max_pose_err"),
    "min_psnr": (["--config=configs/lego.py:cpu", "--seeds=2", "--min_psnr=-3"], "--min_psnr"),
    "foreign_threshold": (["--config=configs/shapes.py", "--seeds=2", "--max_pose_err=5"],
                          "--max_pose_err"),
    "select_by": (["--config=configs/lego.py:cpu", "--seeds=2", "--select_by=-"],
                  "--select_by"),
    "min_contrast": (["--config=configs/forward_scenes.py:hidden_sides", "--seeds=2",
                      "--min_contrast=0.5"], "--min_contrast"),
    "foreign_baselines_from": (["--config=configs/shapes.py", "--seeds=2",
                                "--baselines_from=."], "--baselines_from"),
    "missing_baselines_from": (["--config=configs/pdae.py", "--seeds=2",
                                "--baselines_from=no_such_run"], "--baselines_from"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_one_line_exit_2(tmp_path, case):
    args, named = BAD_INPUT[case]
    workdir = tmp_path / "study"
    proc = _run_study(*args, f"--workdir={workdir}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert named in lines[0] and "; " in lines[0]
    assert not workdir.exists()


TINY_FDM = '''
from configs.fdm_common import fdm_config


def get_config():
    c = fdm_config("seed_study_tiny", dataset="shapes", data_dir="", image_size=16, ch=8,
                   ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_steps=4,
                   batch_size=4, num_masks=2)
    c.data.style = "object"
    c.data.num_regions = 2
    c.data.num_train = 16
    c.data.num_eval = 4
    c.model.num_groups = 4
    c.diffusion.num_timesteps = 20
    c.diffusion.beta_end = 0.2
    c.train.learning_rate = 1e-3
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.image_every = 1000
    c.eval.num_examples = 4
    c.eval.batch_size = 4
    c.eval.sampler = "ddim"
    c.eval.sample_steps = 2
    c.eval.segment_t = 3
    c.eval.record_every = 1
    c.eval.sample_stats = False
    c.eval.at_end = True   # the study turns it off
    return c
'''


def test_end_to_end_two_seeds_eval_at_and_resume(tmp_path):
    config = tmp_path / "tiny_fdm.py"
    config.write_text(TINY_FDM)
    workdir = tmp_path / "study"
    args = [f"--config={config}", f"--workdir={workdir}", "--seeds=2", "--parallel=2",
            "--eval_at=2", "--min_iou=0", "--config.train.learning_rate=0.002"]
    first = _run_study(*args, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    doc = json.loads((workdir / "seed_study.json").read_text())
    assert doc["config"] == "seed_study_tiny" and doc["seeds"] == [0, 1]
    assert doc["eval_at"] == [2] and "--eval_at=2" in doc["command"]
    assert doc["overrides"] == ["--config.train.learning_rate=0.002"]
    assert [r["status"] for r in doc["rows"]] == ["ok", "ok"]
    for row in doc["rows"]:
        assert row["step"] == 4 and row["seg_iou"] is not None
        assert row["seg_iou@2"] is not None and row["train_min"] > 0
    md = (workdir / "seed_study.md").read_text()
    assert "| 0 |" in md and "| 1 |" in md and "seg_iou@2" in md
    assert "segments: " in md and " of 2 seeds (criterion: seg_iou >= 0 " in md
    assert md.strip() in first.stdout
    seed_config = {}
    for seed in (0, 1):
        d = workdir / f"seed_{seed}"
        assert json.loads((d / "results_step2.json").read_text())["step"] == 2
        assert json.loads((d / "results.json").read_text())["step"] == 4
        assert helpers.checkpoint_steps(str(d)) == [2, 4]
        seed_config[seed] = json.loads((d / "config.json").read_text())
        assert seed_config[seed]["train"]["seed"] == seed
        assert seed_config[seed]["train"]["learning_rate"] == 0.002
        assert seed_config[seed]["eval"]["at_end"] is False
        assert "--mode=evaluate" in (d / "log.txt").read_text()
        assert [(r["mode"], r["step"]) for r in provenance.read_records(str(d))] == [
            ("train", 0), ("evaluate", 2), ("train", 2), ("evaluate", 4)]
    machine = provenance.training_machines(str(workdir / "seed_0"))
    assert [r["machines"] for r in doc["rows"]] == [machine, machine] and len(machine) == 1
    assert f"Trained on: {machine[0]} (every seed)" in md
    timing = {s: (workdir / f"seed_{s}" / "timing.json").read_text() for s in (0, 1)}
    # Again: everything is done, nothing retrains.
    start = time.time()
    second = _run_study(*args, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert time.time() - start < 60
    assert "already complete" in second.stdout and "training to" not in second.stdout
    for seed in (0, 1):
        d = workdir / f"seed_{seed}"
        assert (d / "timing.json").read_text() == timing[seed]
        assert helpers.checkpoint_steps(str(d)) == [2, 4]


@pytest.mark.parametrize("parallel,available,want", [
    (1, [0, 1], [()]),
    (2, [0, 1], [(0,), (1,)]),
    (2, [4, 5, 6, 7], [(4, 5), (6, 7)]),
    (3, [0, 1, 2, 3, 4, 5, 6], [(0, 1), (2, 3, 4), (5, 6)]),
    (3, [0, 1], [(), (), ()])])
def test_core_slots_split_the_cores_among_parallel_seeds(parallel, available, want):
    assert ss.core_slots(parallel, available) == want


def test_call_pins_the_subprocess_to_its_cores(tmp_path):
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux with two cores")
    core = min(os.sched_getaffinity(0))
    cmd = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    log = str(tmp_path / "log.txt")
    rc, _, _ = ss.call(cmd, log, dict(os.environ), (core,))
    assert rc == 0 and open(log).read().strip().endswith(f"[{core}]")
