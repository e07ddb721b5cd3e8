"""Command line: `python -m experiments.main --config=configs/NAME.py --workdir=DIR`.

  [--mode=train|evaluate|sample|segment|render|landscape] [--input=FILE_OR_GLOB]
  [--config.key=value ...]
  [--distributed] [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Thin: parses flags and calls `fdm.run.run`. Bad input (unknown config key,
missing --workdir, a `UserError` from the library) ends with ONE line on stderr
and exit code 2; a non-finite loss ends with one line and exit code 1.
"""
import logging as std_logging

from absl import app, flags

from experiments import cli  # first: defines --config/--workdir, quiets TF's banner
from fdm import run as run_lib
from fdm.errors import NonFiniteLossError, UserError

_MODE = flags.DEFINE_enum("mode", "train", run_lib.MODES, "What to do.")
_INPUT = flags.DEFINE_string("input", None, "Image file or glob for --mode=segment.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host; auto-detected "
    "on Cloud TPU/Slurm). Implied by --coordinator_address.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for manual multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")


def _init_distributed() -> None:
    """jax.distributed.initialize() when asked for (before any JAX computation)."""
    if _DISTRIBUTED.value or _COORDINATOR.value:
        import jax
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)


def main(argv: list[str]) -> None:
    # "Unable to initialize backend 'tpu'" on every CPU/GPU host: not worth a log line.
    std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
    cli.reject_positional(argv)
    try:
        workdir = cli.workdir()
        config = cli.load_config()
        _init_distributed()
        run_lib.run(config, workdir, _MODE.value, _INPUT.value)
    except UserError as e:
        cli.fail(str(e), 2)
    except NonFiniteLossError as e:
        cli.fail(str(e), 1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
