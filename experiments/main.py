"""Command line: `python -m experiments.main --config=configs/NAME.py --workdir=DIR`.

  [--mode=train|evaluate|sample|segment|render] [--input=FILE_OR_GLOB]
  [--config.key=value ...]
  [--distributed] [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Thin: parses flags and calls `fdm.run.run`. Bad input (unknown config key,
missing --workdir, a `UserError` from the library) ends with ONE line on stderr
and exit code 2; a non-finite loss ends with one line and exit code 1.
"""
import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TF's import banner off stderr

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from fdm import run as run_lib  # noqa: E402
from fdm.errors import NonFiniteLossError, UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/ddpm_tiny.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (checkpoints, logs).")
_MODE = flags.DEFINE_enum("mode", "train", run_lib.MODES, "What to do.")
_INPUT = flags.DEFINE_string("input", None, "Image file or glob for --mode=segment.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host; auto-detected "
    "on Cloud TPU/Slurm). Implied by --coordinator_address.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for manual multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")


def _fail(message: str, code: int = 2) -> None:
    """Prints `error: message` as one line on stderr and exits with `code`."""
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    sys.exit(code)


def _override_for_key(argv: list[str], key: str) -> str:
    """The `--config.a.b=v` argument in argv whose dotted path contains `key`."""
    for arg in argv:
        path = arg.split("=", 1)[0]
        if path.startswith("--config.") and key in path[len("--config."):].split("."):
            return arg
    return "--config." + key


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors (exit code 2) instead of usage dumps."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:  # config override naming no existing key
        key = str(e).strip("'\"")
        _fail(f"unknown config key {key!r} in {_override_for_key(argv, key)}; "
              "use a key defined in the --config file (check the spelling)")
    except OSError as e:  # overrides given for a config file that does not load
        _fail(f"cannot load --config: {str(e).splitlines()[-1].strip()}; "
              "pass an existing configs/NAME.py")
    except flags.Error as e:
        _fail(f"{e}; see --helpfull for the flags")


def _load_config():
    """The parsed config; UserError if --config is missing or does not load."""
    config = _CONFIG.value
    if config is None:
        raise UserError("missing --config; pass --config=configs/NAME.py")
    try:
        config.keys()  # a config file that failed to load raises here
    except OSError as e:
        raise UserError(f"cannot load --config: {str(e).splitlines()[-1].strip()}; "
                        "pass an existing configs/NAME.py") from e
    return config


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
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    try:
        if not _WORKDIR.value:
            raise UserError("missing --workdir; pass --workdir=DIR (created if needed)")
        config = _load_config()
        _init_distributed()
        run_lib.run(config, _WORKDIR.value, _MODE.value, _INPUT.value)
    except UserError as e:
        _fail(str(e), 2)
    except NonFiniteLossError as e:
        _fail(str(e), 1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
