"""Every command line in README.md parses: its --config file (with the variant) loads,
each --config.key=value override names a declared key and keeps the family's value
rules (fdm.config_rules), and every other flag is defined by the command's module
with a value its parser accepts. Placeholder lines (configs/NAME.py, [optional]
flags) are skipped. Nothing is trained: this checks the README against the code.
"""
import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

import experiments.baselines  # noqa: F401  (defines --baseline, --ddpm_workdir)
import experiments.ddpm_likelihood  # noqa: F401  (defines --diffusers)
import experiments.main  # noqa: F401  (defines --mode, --input, ...)
import experiments.seed_study  # noqa: F401  (defines --seeds, --parallel, ...)
from fdm import models

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
MODULES = ("experiments.main", "experiments.seed_study", "experiments.baselines",
           "experiments.ddpm_likelihood")


def readme_commands() -> list[str]:
    """The `python -m experiments.<main|seed_study|baselines|ddpm_likelihood>` lines of
    README's code blocks, continuation lines joined and trailing comments dropped."""
    with open(README) as f:
        blocks = re.findall(r"```\n(.*?)```", f.read(), re.S)
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(tuple(f"python -m {m} " for m in MODULES)) \
                    and "NAME.py" not in line and "[" not in line:
                commands.append(line)
    return commands


def parse_config(config_args: list[str]):
    """The config of `--config=FILE[:VARIANT] --config.a.b=v ...`, parsed by a fresh
    config flag (as the command line does)."""
    argv = ["readme"] + config_args
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    return values.config


COMMANDS = readme_commands()


def test_readme_has_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS, ids=[c[10:70] for c in COMMANDS])
def test_readme_command_parses(command):
    args = shlex.split(command)[3:]
    config_args = [a for a in args if a.startswith("--config")]
    models.check_config(parse_config(config_args))
    for arg in args:
        if arg.startswith("--config"):
            continue
        name, _, value = arg[2:].partition("=")
        assert name in flags.FLAGS, f"{arg}: no such flag"
        if value:
            flags.FLAGS[name].parser.parse(value)
