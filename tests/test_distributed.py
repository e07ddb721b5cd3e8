"""Two processes on localhost (`jax.distributed`, gloo CPU collectives) train the tiny
DDPM config and agree with one process running the same command."""
import socket
import subprocess

from tests import helpers

STEPS = 2
ATOL = 1e-5  # 2 processes x 1 device vs 1 device: batch reductions in another order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, *extra):
    args = [*helpers.DDPM_TINY, f"--config.train.num_steps={STEPS}",
            "--config.train.checkpoint_every=1000", f"--workdir={workdir}", *extra]
    return subprocess.Popen(helpers.main_command(*args), cwd=helpers.REPO,
                            env=helpers.subprocess_env(1), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_match_one_process(tmp_path):
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    coordinator = f"--coordinator_address=127.0.0.1:{_free_port()}"
    procs = [_start(multi, coordinator, "--num_processes=2", f"--process_id={i}")
             for i in range(2)]
    procs.append(_start(single))
    errors = [p.communicate(timeout=500)[1] for p in procs]
    for p, err in zip(procs, errors):
        assert p.returncode == 0, err[-3000:]
    assert "2 processes" in errors[0] and "1 processes" in errors[2]
    a, b = helpers.load_checkpoint(multi), helpers.load_checkpoint(single)
    assert int(a["step"]) == int(b["step"]) == STEPS
    diff = helpers.max_abs_diff(a["params"], b["params"])
    print(f"max |params(2 processes) - params(1 process)| = {diff:.3g}")
    assert diff <= ATOL
