"""Seed studies (fdm/seed_study.py, experiments/seed_study.py): the pure pieces on
hand-made inputs, the runner with a fake subprocess, and one end-to-end study of a
tiny FDM through the command line (train, evaluate at a step, resume)."""
import json
import os
import subprocess
import sys
import time

import pytest

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
    # The first row with baselines (seed 0 failed and has none).
    assert summary["baselines_seed"] == 1
    assert summary["baselines"] == {"baseline_all_fg_iou": 30.0, "baseline_centre_iou": 60.0}
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
    assert "Trivial baselines (seed 1): baseline_all_fg_iou 30.0, baseline_centre_iou 60.0" in md
    assert "seed 0 failed: evaluate exited with code 1: x" in md


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
    results.json at the newest checkpoint; seed `fail_seed` fails its first evaluate."""
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
