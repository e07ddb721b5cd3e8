"""Seed study: `python -m experiments.seed_study --config=configs/NAME.py --workdir=DIR --seeds=5`.

  [--parallel=1] [--nopin_cores] [--min_iou=70] [--eval_at=300,1000] [--config.key=value ...]

Trains seeds 0..N-1 (or --seeds=3,7,9) of any config, each in DIR/seed_{s}/ through
`python -m experiments.main` subprocesses (--config.train.seed=s and the --config.*
overrides given here), evaluates each (and at every --eval_at step), resumably, and
writes DIR/seed_study.json and DIR/seed_study.md: per-seed metrics, mean/std, the
trivial baselines and "segments: k of n seeds". The logic is `fdm.seed_study`.

Thin, like experiments/main.py: bad input ends with ONE line on stderr and exit code 2
before anything is written; a failed seed is reported and the others go on; the exit
code is 1 when any seed failed.
"""
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli  # first: defines --config/--workdir, quiets TF's banner
from fdm import seed_study
from fdm.errors import UserError

_SEEDS = flags.DEFINE_string(
    "seeds", None, "N (seeds 0..N-1) or a comma list such as 3,7,9; sets train.seed.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Seeds trained at the same time.")
_MIN_IOU = flags.DEFINE_float(
    "min_iou", 70.0, "A seed segments when seg_iou (percent) >= this and > the centre prior.")
_PIN_CORES = flags.DEFINE_bool(
    "pin_cores", True, "With --parallel > 1, give each running seed its own CPU cores.")
_EVAL_AT = flags.DEFINE_string(
    "eval_at", "", "Comma list of steps < train.num_steps also evaluated (seg_iou@N).")


def _config_arg() -> str:
    """--config as given on the command line (keeps a ':args' suffix), else the file."""
    return (seed_study.config_file_arg(sys.argv)
            or config_flags.get_config_filename(flags.FLAGS["config"]))


def study_from_flags() -> seed_study.Study:
    """The validated study the flags ask for; UserError (nothing written) otherwise."""
    config = cli.load_config()
    workdir = cli.workdir()
    seeds = seed_study.parse_seeds(_SEEDS.value)
    parallel = seed_study.parse_parallel(_PARALLEL.value)
    min_iou = seed_study.parse_min_iou(_MIN_IOU.value)
    num_steps = int(config.train.num_steps)
    eval_at = seed_study.parse_eval_at(_EVAL_AT.value, num_steps)
    overrides = seed_study.config_overrides(sys.argv)
    command = " ".join(["python -m experiments.seed_study",
                        *map(shlex.quote, sys.argv[1:])])
    return seed_study.Study(
        config_arg=_config_arg(), config_name=str(config.get("name", "")), workdir=workdir,
        seeds=tuple(seeds), num_steps=num_steps, eval_at=tuple(eval_at),
        overrides=tuple(overrides), min_iou=min_iou, parallel=parallel,
        at_end_key="at_end" in config.get("eval", {}), command=command,
        pin_cores=_PIN_CORES.value)


def main(argv: list[str]) -> None:
    cli.reject_positional(argv)
    try:
        study = study_from_flags()
    except UserError as e:
        cli.fail(str(e), 2)
    sys.exit(seed_study.run_study(study, out=lambda line: print(line, flush=True)))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
