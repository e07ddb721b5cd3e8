"""Command-line contract: one-line errors with exit code 2, and train -> evaluate."""
import json
import os

import pytest

from tests import helpers

ERROR_CASES = {
    "unknown_key": (["--config.no_such_key=1"], "no_such_key"),
    "missing_workdir": (["--no-workdir"], "--workdir"),
    "unreadable_data_dir": (["--config.data.dataset=folder",
                             "--config.data.data_dir=/nonexistent/fdm_data"],
                            "/nonexistent/fdm_data"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_input_gives_one_line_error_and_exit_code_2(tmp_path, case):
    extra, named = ERROR_CASES[case]
    workdir = tmp_path / "wd"
    args = ["--config=configs/ddpm.py:tiny", *extra]
    if "--no-workdir" in extra:
        args.remove("--no-workdir")
    else:
        args.append(f"--workdir={workdir}")
    proc = helpers.run_main(*args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert named in lines[0] and "; " in lines[0]  # the problem; the fix
    assert not workdir.exists()


@pytest.mark.parametrize("override,named", [
    ("--config.model.num_masks=0", "model.num_masks=0 is invalid; use an integer >= 1"),
    ("--config.no_such_key=1", "no_such_key")])
def test_bad_value_on_the_main_job_is_one_line_and_writes_nothing(tmp_path, override, named):
    workdir = tmp_path / "wd"
    proc = helpers.run_main("--config=configs/shapes.py", override, f"--workdir={workdir}",
                            timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], proc.stderr
    assert not workdir.exists()


def test_size_variant_of_a_paper_config_loads(tmp_path):
    """`--config=configs/ffhq.py:128` selects the 128x128 model (a one-line data error
    follows, as FFHQ is not here; nothing is written)."""
    workdir = tmp_path / "wd"
    proc = helpers.run_main("--config=configs/ffhq.py:128", "--config.data.data_dir=/nonexistent",
                            f"--workdir={workdir}", timeout=120)
    assert proc.returncode == 2 and "/nonexistent" in proc.stderr, proc.stderr
    assert not workdir.exists()


def test_train_one_step_then_evaluate(tmp_path):
    workdir = str(tmp_path / "wd")
    train = helpers.run_main(*helpers.DDPM_TINY, "--config.train.num_steps=1",
                             f"--workdir={workdir}")
    assert train.returncode == 0, train.stderr[-3000:]
    assert helpers.checkpoint_steps(workdir) == [1]
    evaluate = helpers.run_main(*helpers.DDPM_TINY, "--mode=evaluate", f"--workdir={workdir}")
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["step"] == 1 and results["config"] == "ddpm_tiny"
    assert {"eval_loss", "train_loss"} <= set(results)
    assert all(isinstance(v, (int, float)) for k, v in results.items() if k != "config")
    from fdm import provenance
    records = provenance.read_records(workdir)       # where each mode ran
    assert [(r["mode"], r["step"]) for r in records] == [("train", 0), ("evaluate", 1)]
    assert all(r["backend"] == "cpu" and r["packages"]["jax"] for r in records)
    assert "--xla_backend_optimization_level=0" in records[0]["xla_flags"]   # the suite's


@pytest.mark.parametrize("stopped_at, evaluated", [(3, False), (6, True)])
def test_the_at_end_evaluation_waits_for_the_last_step(monkeypatch, stopped_at, evaluated):
    """A run that a SIGTERM stopped short (the trainer returns its state early) is not
    evaluated: its results.json would describe an unfinished model."""
    import types
    import ml_collections
    from fdm import run
    from fdm.train import trainer
    config = ml_collections.ConfigDict({"train": {"num_steps": 6}, "eval": {"at_end": True}})
    calls = []
    monkeypatch.setattr(trainer, "train", lambda c, w: types.SimpleNamespace(step=stopped_at))
    monkeypatch.setattr(run, "finish_with_evaluation", lambda c, w: calls.append(w))
    assert run.run(config, "/nonexistent/wd", "train").step == stopped_at
    assert calls == (["/nonexistent/wd"] if evaluated else [])
