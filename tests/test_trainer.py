"""Trainer tests on a tiny test-only model family (tests/helpers.py).

In-process: checkpoints/logs/resume and the NaN stop. Subprocesses: 4 simulated
CPU devices vs 1, SIGKILL + restart (bit-identical), SIGTERM (checkpoint of the
current step).
"""
import json
import os
import signal

import jax
import numpy as np
import pytest

from fdm.errors import NonFiniteLossError, UserError
from tests import helpers

REF_STEPS = 24
REF = [f"train.num_steps={REF_STEPS}", "train.checkpoint_every=4", "train.log_every=2"]
SHARDED_ATOL = 1e-5  # 4 devices vs 1: only the order of the batch reduction differs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 1-device subprocess run of REF: its final checkpoint (numpy)."""
    workdir = str(tmp_path_factory.mktemp("reference") / "wd")
    helpers.run_tiny(workdir, REF)
    return helpers.load_checkpoint(workdir)


def _loss_steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [r["step"] for r in records if "loss" in r], records


def test_train_writes_checkpoints_config_metrics_and_resumes(tmp_path):
    workdir = str(tmp_path / "wd")
    state = helpers.train_tiny(workdir)
    assert int(state.step) == 6
    assert helpers.checkpoint_steps(workdir) == [3, 6]  # keep_checkpoints=2
    assert json.load(open(os.path.join(workdir, "config.json")))["name"] == "tiny_test"
    events = [n for n in os.listdir(workdir) if n.startswith("events.out.tfevents")]
    with open(os.path.join(workdir, events[0]), "rb") as f:
        assert b"pred" in f.read()  # the LossOutput image summary
    steps, records = _loss_steps(workdir)
    assert steps == [2, 4, 6]
    assert {"loss", "mse", "grad_norm", "param_norm", "update_norm",
            "learning_rate"} <= set(records[-1])
    assert any("steps_per_sec" in r for r in records)
    saved = helpers.load_checkpoint(workdir)
    assert helpers.max_abs_diff(saved["params"], state.params) == 0.0
    assert helpers.max_abs_diff(saved["ema_params"], state.params) > 0.0

    config = helpers.tiny_config()
    config.train.num_steps = 8
    resumed = helpers.train_tiny(workdir, config)  # continues from step 6
    assert int(resumed.step) == 8 and _loss_steps(workdir)[0] == [2, 4, 6, 8]


def test_nan_loss_stops_and_last_checkpoint_restores(tmp_path):
    workdir = str(tmp_path / "wd")
    config = helpers.tiny_config()
    config.data.nan_at_batch = 4
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        helpers.train_tiny(workdir, config)
    assert helpers.checkpoint_steps(workdir) == [3]
    saved = helpers.load_checkpoint(workdir)
    assert int(saved["step"]) == 3
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved))
    config.data.nan_at_batch = -1
    assert int(helpers.train_tiny(workdir, config).step) == 6  # resumes from step 3


def test_four_devices_match_one_device(tmp_path, reference):
    workdir = str(tmp_path / "wd")
    log = helpers.run_tiny(workdir, REF, num_devices=4)
    assert "4 devices" in log
    sharded = helpers.load_checkpoint(workdir)
    assert int(sharded["step"]) == REF_STEPS
    diff = helpers.max_abs_diff(sharded["params"], reference["params"])
    print(f"max |params(4 devices) - params(1 device)| = {diff:.3g}")
    assert diff <= SHARDED_ATOL


def test_sigkill_then_restart_resumes_bit_identically(tmp_path, reference):
    workdir = str(tmp_path / "wd")
    command = REF + ["data.delay_s=0.05"]
    proc = helpers.start_tiny(workdir, command)
    helpers.wait_for(lambda: helpers.checkpoint_steps(workdir), 300, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = helpers.checkpoint_steps(workdir)[-1]
    assert 0 < killed_at < REF_STEPS

    log = helpers.run_tiny(workdir, command)
    assert f"Restoring checkpoint at step {killed_at}" in log
    resumed = helpers.load_checkpoint(workdir)
    assert helpers.max_abs_diff(resumed, reference) == 0.0  # params, EMA, Adam, rng, step
    assert _loss_steps(workdir)[0] == list(range(2, REF_STEPS + 1, 2))


def test_sigterm_saves_a_checkpoint_of_the_current_step(tmp_path):
    workdir = str(tmp_path / "wd")
    proc = helpers.start_tiny(workdir, ["train.num_steps=100000", "data.delay_s=0.02",
                                        "train.checkpoint_every=100000", "train.log_every=5"])
    metrics = os.path.join(workdir, "metrics.jsonl")
    helpers.wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics), 300, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0
    steps = helpers.checkpoint_steps(workdir)
    assert len(steps) == 1 and 5 <= steps[0] < 100000
    assert f"saving a checkpoint at step {steps[0]}" in helpers.read_log(workdir)
    assert int(helpers.load_checkpoint(workdir)["step"]) == steps[0]


def test_family_stats_are_carried_checkpointed_and_resumed(tmp_path):
    workdir = str(tmp_path / "wd")
    config = helpers.tiny_config()
    config.model.count_examples = True
    state = helpers.train_tiny(workdir, config)
    assert int(state.stats["seen"]) == 6 * config.train.batch_size
    assert int(helpers.load_checkpoint(workdir)["stats"]["seen"]) == 48
    config.train.num_steps = 8
    assert int(helpers.train_tiny(workdir, config).stats["seen"]) == 64


def test_checkpoint_without_stats_resumes_with_zero_stats(tmp_path):
    """A checkpoint of the layout before TrainState.stats (no 'stats' entry) resumes."""
    from fdm.train.checkpoint import Checkpointer
    workdir = str(tmp_path / "wd")
    state = helpers.train_tiny(workdir)
    legacy = str(tmp_path / "legacy")
    ckpt = Checkpointer(legacy)
    ckpt.save(6, {k: getattr(state, k) for k in ("step", "params", "ema_params",
                                                  "opt_state", "rng")})
    ckpt.close()
    config = helpers.tiny_config()
    config.model.count_examples, config.train.num_steps = True, 8
    resumed = helpers.train_tiny(legacy, config)
    assert int(resumed.step) == 8
    assert int(resumed.stats["seen"]) == 2 * config.train.batch_size


def test_warm_start_begins_at_the_ema_params_of_another_run(tmp_path):
    source = str(tmp_path / "source")
    helpers.train_tiny(source)
    ema = helpers.load_checkpoint(source)["ema_params"]
    config = helpers.tiny_config()
    config.train.init_from, config.train.num_steps = source, 0
    start = helpers.train_tiny(str(tmp_path / "zero"), config)
    assert int(start.step) == 0
    assert helpers.max_abs_diff(ema, start.params) == 0.0
    assert helpers.max_abs_diff(ema, start.ema_params) == 0.0
    fresh = helpers.TinyFamily(config).optimizer().init(start.params)
    assert helpers.max_abs_diff(fresh, start.opt_state) == 0.0

    workdir = str(tmp_path / "warm")
    config.train.num_steps = 3
    warm = helpers.train_tiny(workdir, config)
    cold = helpers.train_tiny(str(tmp_path / "cold"), helpers.tiny_config())
    assert helpers.max_abs_diff(warm.params, ema) < helpers.max_abs_diff(cold.params, ema)
    config.train.init_from, config.train.num_steps = str(tmp_path / "absent"), 6
    assert int(helpers.train_tiny(workdir, config).step) == 6   # resumes; init_from unread


def test_warm_start_from_another_model_or_nothing_is_a_one_line_error(tmp_path):
    source = str(tmp_path / "source")
    helpers.train_tiny(source)
    config = helpers.tiny_config()
    config.model.hidden, config.train.init_from = 8, source
    workdir = tmp_path / "new"
    with pytest.raises(UserError, match=r"params do not fit.*has shape \(16, 16\), not "
                                        r"\(8, 16\)"):
        helpers.train_tiny(str(workdir), config)
    config.model.hidden, config.train.init_from = 16, str(tmp_path / "empty")
    with pytest.raises(UserError, match="no checkpoint in .*train.init_from must name"):
        helpers.train_tiny(str(workdir), config)
    assert not workdir.exists()
