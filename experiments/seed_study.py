"""Seed study: `python -m experiments.seed_study --config=configs/NAME.py --workdir=DIR --seeds=5`.

  [--parallel=1] [--nopin_cores] [--eval_at=300,1000] [--select_by=[-]KEY]
  [--min_iou=70 | --max_pose_err=10 [--min_psnr=19] | --min_contrast=2]
  [--baselines_from=DIR] [--config.key=value ...]

Trains seeds 0..N-1 (or --seeds=3,7,9) of any config, each in DIR/seed_{s}/ through
`python -m experiments.main` subprocesses (--config.train.seed=s and the --config.*
overrides given here), evaluates each (and at every --eval_at step), resumably, and
writes DIR/seed_study.json and DIR/seed_study.md: per-seed metrics, mean/std, the
trivial baselines and "k of n seeds" succeed. The logic is `fdm.seed_study`.

The criterion follows model.family: NeRF lifting (configs/lego.py:cpu, ...) counts
"registers: k of n seeds" (pose_rot_err_deg_median <= --max_pose_err degrees, and
psnr >= --min_psnr when given); PDAE (configs/pdae.py) "represents" (the seed-002
issue's bar on linear probes; --baselines_from=the workdir of a :random_encoder run on
the same data); diffusion through a forward model (configs/forward_scenes.py
:hidden_sides) "separates" (hidden-side sample std >= --min_contrast x the seen side's,
inside each pixel class; --baselines_from=a :hidden_sides_deterministic run adds the
deterministic model's errors); every other family "segments: k of n seeds" (seg_iou
>= --min_iou and > the centre prior). A threshold flag of another criterion is an
error, as is --baselines_from where the baselines are in every run. --select_by=KEY
(a results.json key; -KEY: lower is better) adds the label-free pick: the seed with
the best KEY, whether it succeeds, and in how many pairs of seeds the better by KEY
succeeds (e.g. --select_by=psnr on Lego). A seed directory that
already holds final results (say a symlink DIR/seed_2 -> an earlier run's workdir) is
only reported, never retrained or written.

Thin, like experiments/main.py: bad input ends with ONE line on stderr and exit code 2
before anything is written; a failed seed is reported and the others go on; the exit
code is 1 when any seed failed.
"""
import os
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
    "min_iou", 70.0, "Segmentation: a seed segments when seg_iou (percent) >= this and > "
    "the centre prior.")
_PIN_CORES = flags.DEFINE_bool(
    "pin_cores", True, "With --parallel > 1, give each running seed its own CPU cores.")
_EVAL_AT = flags.DEFINE_string(
    "eval_at", "", "Comma list of steps < train.num_steps also evaluated (seg_iou@N).")
_MAX_POSE_ERR = flags.DEFINE_float(
    "max_pose_err", 10.0, "NeRF lifting: a seed registers when pose_rot_err_deg_median "
    "(degrees) <= this.")
_MIN_PSNR = flags.DEFINE_float(
    "min_psnr", None, "NeRF lifting: a registered seed must also reach this held-out psnr "
    "(dB); default: not required.")
_SELECT_BY = flags.DEFINE_string(
    "select_by", "", "A results.json key to pick the best seed by (higher is better; "
    "-KEY: lower is better), e.g. psnr or -eval_loss; reports the pick and best-of-2.")
_MIN_CONTRAST = flags.DEFINE_float(
    "min_contrast", 2.0, "Forward-model scenes: a seed separates when the hidden pixels' "
    "interior sample std is >= this times the seen pixels'.")
_BASELINES_FROM = flags.DEFINE_string(
    "baselines_from", "", "The workdir of a finished baseline run whose results give the "
    "trivial baselines (PDAE: a :random_encoder run; forward scenes: a deterministic run).")
THRESHOLD_FLAGS = ("min_iou", "max_pose_err", "min_psnr", "min_contrast")


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
    max_pose_err = seed_study.parse_max_pose_err(_MAX_POSE_ERR.value)
    min_psnr = seed_study.parse_min_psnr(_MIN_PSNR.value)
    min_contrast = seed_study.parse_min_contrast(_MIN_CONTRAST.value)
    select_by = seed_study.parse_select_by(_SELECT_BY.value)
    family = str(config.get("model", {}).get("family", ""))
    criterion = seed_study.criterion_for(family, min_iou, max_pose_err, min_psnr, min_contrast)
    seed_study.check_threshold_flags(
        criterion, [name for name in THRESHOLD_FLAGS if flags.FLAGS[name].present], family)
    baselines_from = os.path.abspath(_BASELINES_FROM.value) if _BASELINES_FROM.value else ""
    baselines = (seed_study.read_baseline_run(baselines_from, criterion,
                                              config.data.to_dict())
                 if baselines_from else None)
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
        pin_cores=_PIN_CORES.value, family=family, max_pose_err=max_pose_err,
        min_psnr=min_psnr, select_by=select_by, min_contrast=min_contrast,
        baselines_from=baselines_from, baselines=baselines)


def main(argv: list[str]) -> None:
    cli.reject_positional(argv)
    try:
        study = study_from_flags()
    except UserError as e:
        cli.fail(str(e), 2)
    sys.exit(seed_study.run_study(study, out=lambda line: print(line, flush=True)))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
