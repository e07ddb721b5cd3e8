"""What the command lines of experiments/ share: --config and --workdir, flag parsing
with one-line errors (exit code 2) and the parsed config.

Importing this module defines exactly those two flags; each command line adds its own.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TF's import banner off stderr

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from fdm.errors import UserError  # noqa: E402

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/shapes.py or configs/ddpm.py:tiny (a variant).", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (checkpoints, logs).")


def fail(message: str, code: int = 2) -> None:
    """Prints `error: message` as one line on stderr and exits with `code`."""
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    sys.exit(code)


def reject_positional(argv: list[str]) -> None:
    """Fails when argv (after absl parsing) holds anything but the program name."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")


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
        fail(f"unknown config key {key!r} in {_override_for_key(argv, key)}; "
             "use a key defined in the --config file (check the spelling)")
    except OSError as e:  # overrides given for a config file that does not load
        fail(f"cannot load --config: {str(e).splitlines()[-1].strip()}; "
             "pass an existing configs/NAME.py")
    except flags.Error as e:
        fail(f"{e}; see --helpfull for the flags")


def workdir() -> str:
    """The --workdir value; UserError when it is missing."""
    if not WORKDIR.value:
        raise UserError("missing --workdir; pass --workdir=DIR (created if needed)")
    return WORKDIR.value


def load_config():
    """The parsed config; UserError if --config is missing or does not load."""
    config = CONFIG.value
    if config is None:
        raise UserError("missing --config; pass --config=configs/NAME.py")
    try:
        config.keys()  # a config file that failed to load raises here
    except OSError as e:
        raise UserError(f"cannot load --config: {str(e).splitlines()[-1].strip()}; "
                        "pass an existing configs/NAME.py") from e
    return config
