"""Seed studies: train N seeds of one config, evaluate each, report how many succeed.

A claim about learning ("segmentation masks emerge", "the cameras register") is a rate
over seeds, never one run. `run_study` trains every seed in its own workdir
`DIR/seed_{s}/` by calling the normal entry point `python -m experiments.main` as
subprocesses, so each seed is exactly what a user gets from the command line with
`--config.train.seed=s` (model init and training noise; `data.seed` is untouched, so
the data stay the same). The user's `--config.*` overrides are forwarded verbatim to
every subprocess.

Criteria. What "a seed succeeds" means depends on the family (`criterion_for`, from
`model.family`); a `Criterion` names the per-seed columns read from results.json, the
trivial baselines, the headline metric (the `@N` columns of --eval_at legs and the
"seed s done" line), the rule, its thresholds and the word of the count:
  * SEGMENTATION (every other family: FDM, DDPM, ...): seg_iou >= min_iou (percent, default
    70) and > the centre-prior baseline; "segments: k of n seeds". None (unknown)
    without seg_iou (a DDPM).
  * REGISTRATION (`model.family` "nerf_lifting", e.g. configs/lego.py:cpu): the aligned
    median rotation error of the held-out cameras pose_rot_err_deg_median <=
    max_pose_err (degrees, default 10) and, when min_psnr is given, psnr >= min_psnr;
    "registers: k of n seeds". None without pose_rot_err_deg_median (supervised runs).
  * REPRESENTATION (`model.family` "pdae": PDAE, DiffSiam, SimSiam-only on the factors
    data): the seed-002 issue's bar on linear probes of z: the mean probe at least
    min_mean_gain (0.10) above the random-init encoder's, shape and stripe above the
    raw-pixel probe, object hue >= min_obj_hue (0.90), z lowering the loss in the
    noisiest quarter of t by >= min_z_gain (0.10); "represents: k of n seeds". The
    trivial baselines are another run's (--baselines_from: the `configs/pdae.py
    :random_encoder` run, which probes the random-init encoder and the raw pixels);
    None while a probe or a baseline is missing.
  * SEPARATION (`model.family` "dfm", diffusion through a forward model, on the
    hidden-sides scenes): samples that agree where the context sees and differ where
    it does not, inside each pixel class (the `_interior` scores of
    `fdm.forward.scenes`): sample_std_hidden_interior >= min_contrast (default 2) x
    sample_std_seen_interior and > 0; "separates: k of n seeds". Baselines: the known
    answer prior_std_hidden_interior and the copy / mean-view errors of the run itself,
    the deterministic model's errors with --baselines_from (a `:hidden_sides_deterministic`
    run). None without the interior scores (the other forward-model experiments).
The thresholds live in the `Study` (--min_iou, --max_pose_err, --min_psnr,
--min_contrast) and are recorded in seed_study.json with the criterion's name.

Baselines from another run (--baselines_from=DIR). Where a family's trivial baseline is
a run of its own (the random-init encoder, the deterministic model), the criterion's
`baseline_run` turns that run's results.json (and config.json, checked to be the right
kind of run) into baseline keys; `build_row` reads each seed's results with those keys
underneath (a seed's own keys win), so the rule and the "Trivial baselines" line see
them. A family without `baseline_run` rejects the flag.

Label-free selection (--select_by=KEY, "-KEY": lower is better). The success criteria
use labels (masks, true cameras) a user of a new scene does not have. `select_summary`
names the seed with the best value of a results.json KEY among the seeds that have it
(ties: the lower seed) and whether it succeeds, and counts exactly over all pairs of
those seeds how often the better of the two succeeds ("best of 2 by psnr registers in 6
of 6 pairs"): the rate of the protocol "train 2 seeds, keep the best by KEY". On Lego
the held-out psnr (renders from the encoder's own cameras, no pose labels) is such a
KEY: failed registrations render worse.

Legs. A seed is a chain of legs, each "train to step N, then `--mode=evaluate`":
one per `--eval_at` step (trained with `--config.train.num_steps=N`) and the final
leg at `train.num_steps`. The trainer resumes from the newest checkpoint and always
checkpoints its last step, so each leg continues exactly where the previous one
stopped and its evaluation scores step N. An intermediate leg's `results.json` is
kept as `results_step{N}.json`; the final leg's stays `results.json`.

Resuming. A leg is done when its results file exists with "step" equal to the leg's
step; done legs are skipped, so rerunning the same command only does what is missing
(an interrupted training resumes from its checkpoint by itself). Once the final leg is
done nothing more runs in that seed: a missing intermediate leg is reported unavailable,
as it is when the newest checkpoint is past its step. So finished runs can be studied
in place: make `DIR/seed_{s}` a symlink to a workdir whose results.json has "step" ==
train.num_steps and the study only reads it (nothing in it is written). `timing.json`
accumulates the wall time of the subprocesses, so a resumed study still reports the
total. Subprocess output is appended to `DIR/seed_{s}/log.txt`.

Report. `build_row` turns one seed's result dicts into a row (None where a family
does not write a key), `summarise` gives mean / sample std per numeric column, the
trivial baselines, "k of n seeds" and the selection, `render_markdown` makes the
table; `run_study` writes `DIR/seed_study.json` and `DIR/seed_study.md`. Each row also
names the machines its seed trained on (`fdm.provenance`, from the seed's
environment.jsonl), and the report says when the seeds trained on different machines.

Everything above `run_seed` is pure (or only reads files); the runner is a thread pool
around `subprocess.run`, at most `parallel` seeds at once. This module needs no JAX.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import queue
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, NamedTuple, Optional, Sequence

from fdm import provenance
from fdm.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_FILE = "results.json"
TIMING_FILE = "timing.json"
LOG_FILE = "log.txt"
STUDY_JSON = "seed_study.json"
STUDY_MD = "seed_study.md"
MISSING = "–"
# Segmentation: per-seed metric columns read from results.json (in table order; the
# seg_iou@N columns follow seg_iou), the baselines, the criterion and the legend.
METRICS = ("seg_iou", "seg_iou_per_image", "seg_ari", "mask_entropy", "mask_shift_error",
           "eval_loss")
BASELINES = ("baseline_all_fg_iou", "baseline_centre_iou", "baseline_mask_prior_iou")
CRITERION = "seg_iou >= {min_iou:g} and > the centre prior"
LEGEND = ("seg_iou: global fg IoU (%, the paper's protocol); seg_iou@N: at step N; "
          "mask_shift_error: label-free translation-equivariance error of the masks "
          "(lower is better); train min: wall time of the training subprocesses.")
# Registration (NeRF lifting, fdm/models/lifting.py `evaluate`): the same for poses.
POSE_METRICS = ("psnr", "psnr_refined", "pose_rot_err_deg_median",
                "pose_refined_rot_err_deg_median", "pose_train_rot_err_deg_median",
                "pose_spread_ratio", "cam_region_acc")
POSE_BASELINES = ("mean_image_psnr", "pose_const_baseline_deg")
POSE_LEGEND = ("psnr: held-out views rendered from the encoder's predicted cameras (dB, no "
               "pose labels used); psnr_refined: after test-time camera refinement; "
               "pose_rot_err_deg_median: median rotation error (deg) of the held-out "
               "cameras after the similarity alignment to the true ones (@N: at step N); "
               "pose_refined_/pose_train_: of the refined held-out / the training "
               "cameras; pose_spread_ratio: predicted / true camera-centre spread "
               "(~1; far below: collapsed); cam_region_acc: aligned centres in the true "
               "camera's octant / quadrant; baselines: mean_image_psnr (the mean training image), "
               "pose_const_baseline_deg (one constant rotation); train min: wall time of "
               "the training subprocesses.")
LIFTING_FAMILIES = ("nerf_lifting",)   # model.family values scored by REGISTRATION
# Representation (PDAE / DiffSiam, fdm/models/pdae.py `evaluate`; the factors data).
PROBE_METRICS = ("probe_mean", "probe_bg_hue", "probe_quadrant", "probe_shape",
                 "probe_obj_hue", "probe_stripe", "z_gain_q3", "z_invariance_colour",
                 "z_invariance_view", "eval_loss")
PROBE_BASELINES = ("random_encoder_probe_mean", "probe_pixels_mean", "probe_pixels_shape",
                   "probe_pixels_stripe")
BEAT_PIXELS = ("shape", "stripe")       # factors whose probe must beat the raw pixels'
PROBE_LEGEND = ("probe_<factor>: linear-probe test accuracy on z (fraction); probe_mean: "
                "their mean; z_gain_q3: how much z lowers the loss in the noisiest quarter "
                "of t; z_invariance_colour / _view: how little the views' colour jitter / a "
                "whole view moves z (1: not at all, 0: as far as another image); "
                "baselines: random_encoder_probe_mean (the random-init encoder's mean "
                "probe), probe_pixels_<factor> (the same probe on raw pixels); train min: "
                "wall time of the training subprocesses.")
REPRESENTATION_FAMILIES = ("pdae",)
# Separation (diffusion through a forward model, fdm/forward/scenes.py; hidden-sides).
SEPARATION_METRICS = ("interior_contrast", "sample_std_seen_interior",
                      "sample_std_hidden_interior", "spread_skill_seen_interior",
                      "spread_skill_hidden_interior", "rmse_trgt_seen_interior",
                      "rmse_trgt_hidden_interior", "fd_pixels_trgt")
SEPARATION_BASELINES = ("prior_std_hidden_interior", "rmse_context_warp_seen_interior",
                        "rmse_mean_image_seen_interior", "rmse_mean_image_hidden_interior",
                        "deterministic_rmse_trgt_seen_interior",
                        "deterministic_rmse_trgt_hidden_interior",
                        "deterministic_fd_pixels_trgt")
SEPARATION_LEGEND = ("sample_std_*_interior: the samples' per-pixel std at the target view "
                     "([-1, 1]) over the seen / hidden pixels off their class's outline; "
                     "interior_contrast: hidden / seen; rmse_trgt_*: the samples' error "
                     "([0, 1]); baselines: prior_std_hidden_interior (the known answer's "
                     "hidden spread; the seen one is 0), the context warped along the true "
                     "geometry, the mean view, the deterministic model (deterministic_*); "
                     "train min: wall time of the training subprocesses.")
SEPARATION_FAMILIES = ("dfm",)
# results.json keys computed without labels (masks, true cameras): --select_by on one
# of them is a protocol a user can apply to a new scene.
LABEL_FREE_KEYS = ("psnr", "ssim", "lpips", "psnr_refined", "ssim_refined", "eval_loss",
                   "mask_entropy", "mask_shift_error", "cam_cls_acc")


# ---- input -------------------------------------------------------------------------------

def parse_seeds(text: Optional[str]) -> list[int]:
    """'N' -> [0, ..., N-1]; '3,7,9' (any comma) -> [3, 7, 9]; UserError otherwise."""
    fix = "pass --seeds=N (seeds 0..N-1, N >= 1) or a comma list such as --seeds=3,7,9"
    if text is None or not str(text).strip():
        raise UserError(f"missing --seeds; {fix}")
    text = str(text).strip()
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return list(range(n))
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"bad --seeds={text}; {fix}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"bad --seeds={text} (need distinct seeds >= 0); {fix}")
    return seeds


def parse_eval_at(text: Optional[str], num_steps: int) -> list[int]:
    """'300,1000' -> [300, 1000] (sorted, distinct); each step must lie in (0, num_steps)."""
    if text is None or not str(text).strip():
        return []
    fix = f"pass steps between 1 and {num_steps - 1} (train.num_steps={num_steps})"
    try:
        steps = sorted({int(s) for s in str(text).split(",") if s.strip()})
    except ValueError:
        raise UserError(f"bad --eval_at={text}; {fix}, e.g. --eval_at=300,1000") from None
    for step in steps:
        if not 0 < step < num_steps:
            raise UserError(f"--eval_at step {step} is outside (0, {num_steps}); {fix}")
    return steps


def parse_parallel(value: int) -> int:
    """--parallel as given; UserError below 1."""
    if value is None or value < 1:
        raise UserError(f"bad --parallel={value}; pass --parallel=P with P >= 1 "
                        "(seeds trained at once)")
    return int(value)


def parse_min_iou(value: float) -> float:
    """--min_iou in percent; UserError outside [0, 100]."""
    if value is None or not 0 <= value <= 100:
        raise UserError(f"bad --min_iou={value}; pass a percentage in [0, 100] like seg_iou, "
                        "e.g. --min_iou=70")
    return float(value)


def parse_max_pose_err(value: float) -> float:
    """--max_pose_err in degrees; UserError unless a finite number > 0."""
    if value is None or not 0 < value < math.inf:
        raise UserError(f"bad --max_pose_err={value}; pass the largest median rotation "
                        "error (degrees > 0) that counts as registered, e.g. --max_pose_err=10")
    return float(value)


def parse_min_psnr(value: Optional[float]) -> Optional[float]:
    """--min_psnr in dB, None when not given; UserError unless a finite number >= 0."""
    if value is None:
        return None
    if not 0 <= value < math.inf:
        raise UserError(f"bad --min_psnr={value}; pass a PSNR in dB >= 0 that a registered "
                        "seed must also reach, e.g. --min_psnr=19, or leave it out")
    return float(value)


class Selection(NamedTuple):
    """--select_by: the results.json key seeds are picked by, and its direction."""
    key: str
    higher_is_better: bool = True

    def flag(self) -> str:
        """The --select_by value: 'key', or '-key' when lower is better."""
        return self.key if self.higher_is_better else f"-{self.key}"


def parse_select_by(text: Optional[str]) -> Optional[Selection]:
    """'' -> None (off); 'psnr' -> higher is better; '-eval_loss' -> lower is better."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    key = text[1:] if text.startswith("-") else text
    if not re.fullmatch(r"[A-Za-z_][\w.@]*", key):
        raise UserError(f"bad --select_by={text}; pass a results.json key, e.g. "
                        "--select_by=psnr (higher is better) or --select_by=-eval_loss "
                        "(a leading '-': lower is better)")
    return Selection(key, not text.startswith("-"))


def config_overrides(argv: Sequence[str]) -> list[str]:
    """The `--config.key=value` arguments of a command line, verbatim and in order
    (`--config.key value` is joined to `--config.key=value`; `--noconfig.key` kept).
    UserError for `--config.train.seed`, which --seeds sets per seed."""
    out, args, i = [], list(argv[1:]), 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        name = arg.split("=", 1)[0].lstrip("-")
        if name.startswith(("config.", "noconfig.")):
            if ("=" not in arg and name.startswith("config.") and i + 1 < len(args)
                    and not args[i + 1].startswith("-")):
                arg, i = f"{arg}={args[i + 1]}", i + 1
            if name.split(".", 1)[1] == "train.seed":
                raise UserError(f"{arg} conflicts with --seeds, which sets train.seed per "
                                "seed; drop it and list the seeds in --seeds")
            out.append(arg)
        i += 1
    return out


def config_file_arg(argv: Sequence[str]) -> Optional[str]:
    """The value of the last `--config=FILE` (or `--config FILE`) in argv, else None."""
    value, args = None, list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, eq, rest = arg.partition("=")
        if name.lstrip("-") == "config" and name.startswith("-"):
            if eq:
                value = rest
            elif i + 1 < len(args):
                value = args[i + 1]
    return value


# ---- legs ------------------------------------------------------------------------------

class Leg(NamedTuple):
    """Train to `step`, evaluate, keep results as `results_name` (final: the last leg)."""
    step: int
    results_name: str
    final: bool


def plan_legs(num_steps: int, eval_at: Sequence[int] = ()) -> list[Leg]:
    """The legs of one seed: each --eval_at step, then the final leg at num_steps."""
    legs = [Leg(int(n), f"results_step{int(n)}.json", False) for n in sorted(set(eval_at))]
    return legs + [Leg(int(num_steps), RESULTS_FILE, True)]


def seed_dir(workdir: str, seed: int) -> str:
    """Where seed `seed` of a study in `workdir` trains."""
    return os.path.join(workdir, f"seed_{seed}")


def read_json(path: str) -> Optional[dict]:
    """The JSON object in `path`, or None when missing or unreadable."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_json(obj: dict, path: str) -> None:
    """Writes `obj` as JSON to `path` atomically (temp file + os.replace)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def leg_results(directory: str, leg: Leg) -> Optional[dict]:
    """The leg's results when done (its file exists with "step" == leg.step), else None."""
    results = read_json(os.path.join(directory, leg.results_name))
    return results if results is not None and results.get("step") == leg.step else None


def leg_done(directory: str, leg: Leg) -> bool:
    """Whether the leg's results file exists with "step" equal to the leg's step."""
    return leg_results(directory, leg) is not None


def latest_checkpoint_step(directory: str) -> Optional[int]:
    """The newest finalised checkpoint step in a workdir (integer-named directories)."""
    try:
        steps = [int(n) for n in os.listdir(os.path.join(directory, "checkpoints"))
                 if n.isdigit()]
    except OSError:
        return None
    return max(steps, default=None)


def main_command(config_arg: str, directory: str, seed: int, overrides: Sequence[str],
                 mode: str = "train", num_steps: Optional[int] = None,
                 at_end_key: bool = True) -> list[str]:
    """`python -m experiments.main` for one leg: train (or evaluate) seed `seed` in
    `directory` with the user's overrides; `num_steps` caps an intermediate leg (placed
    after the overrides so it wins). at_end_key: the config has eval.at_end (turned
    off: the study evaluates itself)."""
    cmd = [sys.executable, "-m", "experiments.main", f"--config={config_arg}",
           f"--workdir={directory}", f"--mode={mode}", f"--config.train.seed={seed}"]
    if at_end_key:
        cmd.append("--config.eval.at_end=False")
    cmd += list(overrides)
    if num_steps is not None:
        cmd.append(f"--config.train.num_steps={num_steps}")
    return cmd


# ---- criteria ----------------------------------------------------------------------------

def _number(results: Optional[dict], key: str) -> Optional[float]:
    """results[key] when it is a finite number, else None."""
    value = (results or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def segments(results: Optional[dict], min_iou: float) -> Optional[bool]:
    """seg_iou >= min_iou and > baseline_centre_iou (when present); None without seg_iou."""
    iou = _number(results, "seg_iou")
    if iou is None:
        return None
    centre = _number(results, "baseline_centre_iou")
    return iou >= min_iou and (centre is None or iou > centre)


def registers(results: Optional[dict], max_pose_err: float,
              min_psnr: Optional[float] = None) -> Optional[bool]:
    """pose_rot_err_deg_median <= max_pose_err and (min_psnr given) psnr >= min_psnr;
    None without pose_rot_err_deg_median (a missing psnr fails a min_psnr)."""
    err = _number(results, "pose_rot_err_deg_median")
    if err is None:
        return None
    if min_psnr is not None:
        psnr = _number(results, "psnr")
        if psnr is None or psnr < min_psnr:
            return False
    return err <= max_pose_err


def _mean_of(results: dict, prefix: str) -> Optional[float]:
    """The mean of the finite numbers results[prefix + factor] over the factors (keys
    `prefix<name>` whose name is not 'mean', has no '_seg<g>' tail and does not start
    with 'pixels_'); None without any."""
    values = [_number(results, k) for k in results
              if k.startswith(prefix) and not re.search(r"_seg\d+$", k)
              and k[len(prefix):] != "mean" and not k[len(prefix):].startswith("pixels_")]
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def probe_means(results: dict) -> dict:
    """probe_mean and probe_pixels_mean (the mean linear probe over the factors of z and
    of the raw pixels), the ones the results allow."""
    means = {"probe_mean": _mean_of(results, "probe_"),
             "probe_pixels_mean": _mean_of(results, "probe_pixels_")}
    return {k: v for k, v in means.items() if v is not None}


def represents(results: Optional[dict], min_mean_gain: float, min_obj_hue: float,
               min_z_gain: float) -> Optional[bool]:
    """probe_mean >= random_encoder_probe_mean + min_mean_gain, probe_<f> >
    probe_pixels_<f> for f in BEAT_PIXELS, probe_obj_hue >= min_obj_hue and z_gain_q3 >=
    min_z_gain; None when any of these numbers is missing."""
    r = {**(results or {}), **probe_means(results or {})}
    keys = ["probe_mean", "random_encoder_probe_mean", "probe_obj_hue", "z_gain_q3",
            *[f"probe_{f}" for f in BEAT_PIXELS], *[f"probe_pixels_{f}" for f in BEAT_PIXELS]]
    v = {k: _number(r, k) for k in keys}
    if any(x is None for x in v.values()):
        return None
    return (v["probe_mean"] >= v["random_encoder_probe_mean"] + min_mean_gain
            and all(v[f"probe_{f}"] > v[f"probe_pixels_{f}"] for f in BEAT_PIXELS)
            and v["probe_obj_hue"] >= min_obj_hue and v["z_gain_q3"] >= min_z_gain)


def random_encoder_baselines(results: dict, config: dict) -> dict:
    """The trivial baselines of a `configs/pdae.py:random_encoder` run: its mean probe as
    random_encoder_probe_mean, and its raw-pixel probes; UserError for another run."""
    steps = recorded(config, "train", "num_steps")
    pixels = "present" if "probe_pixels_shape" in results else "missing"
    if steps is None or steps > 1 or pixels == "missing":
        raise UserError(
            "the --baselines_from run is not a random-init encoder with raw-pixel probes "
            f"(train.num_steps={steps}, probe_pixels_* {pixels}); pass the workdir of a "
            "configs/pdae.py:random_encoder run on the same data")
    means = probe_means(results)
    return {"random_encoder_probe_mean": means.get("probe_mean"),
            **{k: v for k, v in results.items() if k.startswith("probe_pixels_")},
            "probe_pixels_mean": means["probe_pixels_mean"]}


def interior_contrast(results: dict) -> dict:
    """{"interior_contrast": hidden / seen interior sample std} when both are there and
    the seen one is > 0, else {}."""
    seen = _number(results, "sample_std_seen_interior")
    hidden = _number(results, "sample_std_hidden_interior")
    return {"interior_contrast": hidden / seen} if hidden is not None and seen else {}


def separates(results: Optional[dict], min_contrast: float) -> Optional[bool]:
    """sample_std_hidden_interior > 0 and >= min_contrast x sample_std_seen_interior;
    None without them."""
    seen = _number(results, "sample_std_seen_interior")
    hidden = _number(results, "sample_std_hidden_interior")
    if seen is None or hidden is None:
        return None
    return hidden > 0 and hidden >= min_contrast * seen


def deterministic_baselines(results: dict, config: dict) -> dict:
    """The deterministic model's interior errors and FD (deterministic_<key>) from a
    `configs/forward_scenes.py:hidden_sides_deterministic` run; UserError for another."""
    if not recorded(config, "model", "deterministic"):
        raise UserError("the --baselines_from run is not a deterministic model "
                        "(model.deterministic is not True in its config.json); pass the "
                        "workdir of a configs/forward_scenes.py:hidden_sides_deterministic run")
    keys = ("rmse_trgt_seen_interior", "rmse_trgt_hidden_interior", "fd_pixels_trgt")
    return {f"deterministic_{k}": results[k] for k in keys if k in results}


@dataclasses.dataclass(frozen=True)
class Criterion:
    """What "a seed succeeds" means for a family, and the columns that show it.

    metrics: the per-seed columns read from results.json, in table order (the @N
    columns of --eval_at legs follow `headline`); baselines: trivial-baseline keys,
    reported once; headline: the metric of the @N columns and of the "seed s done"
    line; rule(results, **thresholds) -> True / False / None (unknown); description:
    the "(criterion: ...)" of the summary line; success: the name of the success column
    and of the count ("segments: k of n seeds"); derive(results) -> columns computed
    from the results (probe_mean); baseline_run(results, config) -> the baseline keys
    of a --baselines_from run (None: the family takes none)."""
    name: str
    metrics: tuple[str, ...]
    baselines: tuple[str, ...]
    headline: str
    rule: Callable[..., Optional[bool]]
    thresholds: tuple[tuple[str, Optional[float]], ...]
    description: str
    legend: str
    success: str
    derive: Callable[[dict], dict] = lambda results: {}
    baseline_run: Optional[Callable[[dict, dict], dict]] = None

    def succeeds(self, results: Optional[dict]) -> Optional[bool]:
        """Whether a seed with these final results succeeds; None when unknown."""
        return self.rule(results, **dict(self.thresholds))

    def columns(self, results: Optional[dict], baselines: Optional[dict] = None) -> dict:
        """The results with the baselines underneath (the results' own keys win) and the
        derived columns on top; {} for no results and no baselines."""
        merged = {**(baselines or {}), **(results or {})}
        return {**merged, **self.derive(merged)} if merged else {}


def segmentation(min_iou: float = 70.0) -> Criterion:
    """The segmentation criterion (`segments`) at min_iou percent."""
    return Criterion("segmentation", METRICS, BASELINES, "seg_iou", segments,
                     (("min_iou", float(min_iou)),), CRITERION.format(min_iou=min_iou),
                     LEGEND, "segments")


def registration(max_pose_err: float = 10.0, min_psnr: Optional[float] = None) -> Criterion:
    """The registration criterion (`registers`) at max_pose_err degrees (and min_psnr dB)."""
    description = f"pose_rot_err_deg_median <= {max_pose_err:g} deg" + (
        "" if min_psnr is None else f" and psnr >= {min_psnr:g}")
    return Criterion("registration", POSE_METRICS, POSE_BASELINES, "pose_rot_err_deg_median",
                     registers, (("max_pose_err", float(max_pose_err)),
                                 ("min_psnr", None if min_psnr is None else float(min_psnr))),
                     description, POSE_LEGEND, "registers")


def representation(min_mean_gain: float = 0.10, min_obj_hue: float = 0.90,
                   min_z_gain: float = 0.10) -> Criterion:
    """The representation criterion (`represents`): the seed-002 issue's bar."""
    description = (f"probe_mean >= the random encoder's + {min_mean_gain:g}, "
                   + " and ".join(BEAT_PIXELS) + f" > raw pixels, obj_hue >= {min_obj_hue:g}, "
                   f"z_gain_q3 >= {min_z_gain:g}")
    return Criterion("representation", PROBE_METRICS, PROBE_BASELINES, "probe_mean",
                     represents, (("min_mean_gain", float(min_mean_gain)),
                                  ("min_obj_hue", float(min_obj_hue)),
                                  ("min_z_gain", float(min_z_gain))),
                     description, PROBE_LEGEND, "represents", probe_means,
                     random_encoder_baselines)


def separation(min_contrast: float = 2.0) -> Criterion:
    """The separation criterion (`separates`) at min_contrast."""
    return Criterion("separation", SEPARATION_METRICS, SEPARATION_BASELINES,
                     "interior_contrast", separates, (("min_contrast", float(min_contrast)),),
                     f"sample_std_hidden_interior >= {min_contrast:g} x "
                     "sample_std_seen_interior", SEPARATION_LEGEND, "separates",
                     interior_contrast, deterministic_baselines)


SEGMENTATION = segmentation()
REGISTRATION = registration()
REPRESENTATION = representation()
SEPARATION = separation()
CRITERIA = {"segmentation": segmentation, "registration": registration,
            "representation": representation, "separation": separation}


def parse_min_contrast(value: float) -> float:
    """--min_contrast; UserError unless a finite number >= 1."""
    if value is None or not 1 <= value < math.inf:
        raise UserError(f"bad --min_contrast={value}; pass how many times the hidden "
                        "pixels' sample std must exceed the seen pixels' (>= 1), e.g. "
                        "--min_contrast=2")
    return float(value)


def criterion_for(family: str, min_iou: float = 70.0, max_pose_err: float = 10.0,
                  min_psnr: Optional[float] = None, min_contrast: float = 2.0) -> Criterion:
    """REGISTRATION (max_pose_err, min_psnr) for a NeRF-lifting model.family,
    REPRESENTATION for PDAE, SEPARATION (min_contrast) for diffusion through a forward
    model, else SEGMENTATION (min_iou)."""
    family = str(family)
    if family in LIFTING_FAMILIES:
        return registration(max_pose_err, min_psnr)
    if family in REPRESENTATION_FAMILIES:
        return representation()
    if family in SEPARATION_FAMILIES:
        return separation(min_contrast)
    return segmentation(min_iou)


def data_differences(ours: dict, theirs: dict) -> list[str]:
    """The data.* keys two configs both declare with different values (as JSON: tuples
    and lists alike), sorted."""
    ours, theirs = json.loads(json.dumps(ours)), json.loads(json.dumps(theirs))
    return sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])


def read_baseline_run(directory: str, criterion: Criterion,
                      data: Optional[dict] = None) -> dict:
    """The baseline keys of the finished run in `directory` (--baselines_from); UserError
    when the criterion takes none, the run has no results.json / config.json, is the
    wrong kind of run, or (data: the study's data config) saw other data."""
    if criterion.baseline_run is None:
        raise UserError(f"--baselines_from does not apply to the {criterion.name} "
                        "criterion (its baselines are in every run's results); drop it")
    results = read_json(os.path.join(directory, RESULTS_FILE))
    config = read_json(os.path.join(directory, "config.json"))
    if results is None or config is None:
        raise UserError(f"--baselines_from={directory} has no readable results.json and "
                        "config.json; pass the workdir of a finished baseline run")
    theirs = recorded(config, "data") or {}
    differ = data_differences(data or {}, theirs)
    if differ:
        cells = ", ".join(f"data.{k} {data[k]!r} vs {theirs[k]!r}" for k in differ)
        raise UserError(f"the --baselines_from run saw other data ({cells}); pass a "
                        "baseline run made with the same --config.data.* flags")
    return criterion.baseline_run(results, config)


def check_threshold_flags(criterion: Criterion, given: Sequence[str], family: str) -> None:
    """UserError when a threshold flag in `given` (names without '--') is not one of the
    criterion's: it would be silently ignored."""
    own = [name for name, _ in criterion.thresholds]
    for name in given:
        if name not in own:
            raise UserError(f"--{name} does not apply to model.family={family!r} (criterion "
                            f"{criterion.name}: {', '.join('--' + n for n in own)}); drop "
                            f"--{name}")


def document_criterion(study: dict) -> Criterion:
    """The criterion a seed_study.json document was scored by (its "criterion" and
    "thresholds"; segmentation at the summary's min_iou when it has none)."""
    name = study.get("criterion") or "segmentation"
    thresholds = study.get("thresholds") or {"min_iou": study["summary"].get("min_iou", 70.0)}
    return CRITERIA[name](**thresholds)


# ---- report ------------------------------------------------------------------------------

def at_column(step: int, criterion: Criterion = SEGMENTATION) -> str:
    """Column name of the headline metric of an --eval_at step (seg_iou@N)."""
    return f"{criterion.headline}@{step}"


def numeric_columns(eval_at: Sequence[int] = (),
                    criterion: Criterion = SEGMENTATION) -> list[str]:
    """The numeric columns of a row, in table order (the @N columns after the headline)."""
    cut = criterion.metrics.index(criterion.headline) + 1
    return [*criterion.metrics[:cut], *[at_column(n, criterion) for n in eval_at],
            *criterion.metrics[cut:], "train_min"]


def build_row(seed: int, final: Optional[dict], at_steps: Optional[dict] = None,
              timing: Optional[dict] = None, min_iou: float = 70.0,
              error: Optional[str] = None, criterion: Optional[Criterion] = None,
              extra: Sequence[str] = (), baselines: Optional[dict] = None) -> dict:
    """One seed's row: the criterion's metrics of the final results (None where
    missing), the headline of each --eval_at results (@N), wall times (min), the
    baselines, the `extra` keys (--select_by) and the success column (None when
    unknown, False for a failed seed), status and error. criterion: default
    segmentation at min_iou; baselines: a --baselines_from run's keys, read under each
    results (`Criterion.columns`)."""
    criterion = criterion or segmentation(min_iou)
    timing = timing or {}
    row = {"seed": int(seed), "status": "failed" if error else "ok", "error": error,
           "step": (final or {}).get("step")}
    final = criterion.columns(final, baselines) if final is not None else baselines
    row.update({k: _number(final, k) for k in criterion.metrics})
    row.update({at_column(n, criterion): _number(criterion.columns(r), criterion.headline)
                for n, r in sorted((at_steps or {}).items())})
    for key, column in (("train_wall_s", "train_min"), ("eval_wall_s", "eval_min")):
        seconds = _number(timing, key)
        row[column] = None if seconds is None else seconds / 60
    row.update({k: _number(final, k) for k in criterion.baselines
                if _number(final, k) is not None})
    for key in extra:
        row.setdefault(key, _number(final, key))
    row[criterion.success] = False if error else criterion.succeeds(final)
    return row


def _mean_std(values: list[float]) -> dict:
    """{"mean", "std" (sample, n-1; None below 2 values), "n"}."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def rank_by(rows: Sequence[dict], selection: Selection) -> list[dict]:
    """The rows that have selection.key, best first (ties: the lower seed first)."""
    sign = -1.0 if selection.higher_is_better else 1.0
    have = [r for r in rows if r.get(selection.key) is not None]
    return sorted(have, key=lambda r: (sign * r[selection.key], r["seed"]))


def best_of(ranked_success: Sequence[Optional[bool]], k: int = 2) -> tuple[int, int]:
    """(subsets whose best member succeeds, all subsets) over the k-subsets of seeds
    ranked best first: the seed at rank i is the best of the C(n-1-i, k-1) subsets
    drawn from it and the seeds below it."""
    n = len(ranked_success)
    hits = sum(math.comb(n - 1 - i, k - 1) for i, ok in enumerate(ranked_success) if ok is True)
    return hits, math.comb(n, k)


def select_summary(rows: Sequence[dict], selection: Optional[Selection],
                   success: str) -> Optional[dict]:
    """--select_by: the best seed by selection.key among the rows that have it, its
    value and success, and best_of_2 = {"succeed", "pairs"} over all pairs of those
    seeds (None below 2); None when off."""
    if selection is None:
        return None
    ranked = rank_by(rows, selection)
    best = ranked[0] if ranked else {}
    pairs = None
    if len(ranked) >= 2:
        hits, total = best_of([r.get(success) for r in ranked], 2)
        pairs = {"succeed": hits, "pairs": total}
    return {"key": selection.key, "higher_is_better": selection.higher_is_better,
            "label_free": selection.key in LABEL_FREE_KEYS, "candidates": len(ranked),
            "seed": best.get("seed"), "value": best.get(selection.key),
            "succeeds": best.get(success), "best_of_2": pairs}


def summarise(rows: Sequence[dict], eval_at: Sequence[int] = (), min_iou: float = 70.0,
              criterion: Optional[Criterion] = None,
              selection: Optional[Selection] = None) -> dict:
    """Mean/std of each numeric column over the seeds that have it, each baseline from
    the first row that has it (baselines_seeds: those rows' seeds), how many seeds
    succeed (under the criterion's success word, e.g. "segments") and the --select_by
    pick. criterion: default segmentation at min_iou."""
    criterion = criterion or segmentation(min_iou)
    stats = {c: _mean_std([r[c] for r in rows if r.get(c) is not None])
             for c in numeric_columns(eval_at, criterion)}
    baselines, sources = {}, {}
    for key in criterion.baselines:
        row = next((r for r in rows if r.get(key) is not None), None)
        if row is not None:
            baselines[key], sources[key] = row[key], row["seed"]
    seeds = sorted(set(sources.values()))
    return {"stats": stats, "baselines": baselines,
            "baselines_seed": seeds[0] if seeds else None, "baselines_seeds": seeds,
            criterion.success: sum(r.get(criterion.success) is True for r in rows),
            "seeds": len(rows), "failed": [r["seed"] for r in rows if r.get("status") == "failed"],
            **dict(criterion.thresholds), "criterion": criterion.description,
            "criterion_name": criterion.name, "success": criterion.success,
            "selection": select_summary(rows, selection, criterion.success)}


def fmt(value) -> str:
    """A table cell: '–' for None, 1 decimal from 10 up, else 3 significant digits."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines: header, right-aligned rule, rows."""
    out = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    return out + ["| " + " | ".join(cells) + " |" for cells in lines]


def success_line(summary: dict) -> str:
    """'segments: k of n seeds (criterion: ...)' (or 'registers: ...')."""
    word = summary.get("success", "segments")
    return (f"{word}: {summary[word]} of {summary['seeds']} seeds "
            f"(criterion: {summary['criterion']})")


def selection_lines(summary: dict) -> list[str]:
    """'selected by psnr (label-free, higher is better): seed 2 (psnr 19.8), registers:
    yes' and 'best of 2 by psnr registers in 6 of 6 pairs'; [] without --select_by."""
    sel, word = summary.get("selection"), summary.get("success", "segments")
    if not sel:
        return []
    key = sel["key"]
    how = ("label-free, " if sel["label_free"] else "") + \
        f"{'higher' if sel['higher_is_better'] else 'lower'} is better"
    if sel["seed"] is None:
        return [f"selected by {key} ({how}): no seed has {key}"]
    verdict = "unknown" if sel["succeeds"] is None else fmt(sel["succeeds"])
    out = [f"selected by {key} ({how}): seed {sel['seed']} ({key} {fmt(sel['value'])}), "
           f"{word}: {verdict}"]
    if sel["best_of_2"]:
        out.append(f"best of 2 by {key} {word} in {sel['best_of_2']['succeed']} of "
                   f"{sel['best_of_2']['pairs']} pairs")
    return out


def machine_lines(rows: Sequence[dict]) -> list[str]:
    """'Trained on: LABEL (every seed)' when every seed trained on one machine, else
    which seeds trained where (float rounding differs between machines, so a seed need
    not repeat across them; `fdm.provenance`), seeds without a record (runs older than
    the record) named as such; [] when no seed recorded its machine."""
    unknown = "not recorded"
    where: dict[str, list[int]] = {}
    for r in rows:
        where.setdefault(" + ".join(r.get("machines") or []) or unknown, []).append(r["seed"])
    machines = [label for label in where if label != unknown]
    if not machines:
        return []
    parts = [("seed " if len(s) == 1 else "seeds ") + ", ".join(map(str, s)) + f": {label}"
             for label, s in where.items()]
    if len(where) == 1:
        return [f"Trained on: {machines[0]} (every seed)"]
    if len(machines) == 1:
        return ["Trained on: " + "; ".join(parts)]
    return ["Trained on different machines (float rounding differs between them, so a seed "
            "need not repeat across them): " + "; ".join(parts)]


def render_markdown(study: dict) -> str:
    """The study as markdown: per-seed table, mean/std table, baselines, k-of-n line,
    the --select_by pick, failures and the command line. `study` as written to
    seed_study.json (its criterion: `document_criterion`)."""
    rows, summary, eval_at = study["rows"], study["summary"], study.get("eval_at", [])
    criterion = document_criterion(study)
    columns = numeric_columns(eval_at, criterion)
    header = ["seed", *["train min" if c == "train_min" else c for c in columns],
              criterion.success]
    seed_lines = [[str(r["seed"]), *[fmt(r.get(c)) for c in columns],
                   "failed" if r.get("status") == "failed" else fmt(r.get(criterion.success))]
                  for r in rows]
    stats = summary["stats"]
    stat_lines = [[name, *[fmt(stats[c][name]) for c in columns]] for name in ("mean", "std")]
    stat_lines.append(["n", *[str(stats[c]["n"]) for c in columns]])
    seeds = ",".join(str(r["seed"]) for r in rows)
    out = [f"## Seed study: {study.get('config', '?')} ({study.get('config_file', '?')}), "
           f"seeds {seeds}", "", *_table(header, seed_lines), "",
           *_table(["over seeds", *header[1:-1]], stat_lines), ""]
    if summary["baselines"]:
        cells = ", ".join(f"{k} {fmt(v)}" for k, v in summary["baselines"].items())
        seeds = summary.get("baselines_seeds") or [summary["baselines_seed"]]
        source = ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds)) + (
            f" and the run in {study['baselines_from']}" if study.get("baselines_from") else "")
        out += [f"Trivial baselines ({source}): {cells}", ""]
    out += [success_line(summary), ""]
    for line in selection_lines(summary):
        out += [line, ""]
    for line in machine_lines(rows):
        out += [line, ""]
    out += [criterion.legend, ""]
    for r in rows:
        if r.get("status") == "failed":
            out += [f"seed {r['seed']} failed: {r.get('error')}", ""]
    if study.get("command"):
        out += [f"Command: `{study['command']}`", ""]
    return "\n".join(out)


# ---- runner ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Study:
    """What one seed-study command line asks for (validated by experiments/seed_study.py)."""
    config_arg: str               # --config as given (a file path, maybe with ":args")
    config_name: str              # config.name
    workdir: str
    seeds: tuple
    num_steps: int                # train.num_steps after the overrides
    eval_at: tuple = ()
    overrides: tuple = ()         # the --config.* arguments, verbatim
    min_iou: float = 70.0         # segmentation: seg_iou threshold (percent)
    parallel: int = 1
    at_end_key: bool = True       # the config has eval.at_end
    command: str = ""
    pin_cores: bool = True        # parallel > 1: each running seed gets its own CPU cores
    family: str = ""              # model.family: picks the criterion (`criterion_for`)
    max_pose_err: float = 10.0    # registration: pose_rot_err_deg_median threshold (deg)
    min_psnr: Optional[float] = None  # registration: psnr threshold (dB), None = none
    select_by: Optional[Selection] = None  # --select_by, None = off
    min_contrast: float = 2.0     # separation: hidden / seen interior sample std
    baselines_from: str = ""      # --baselines_from: the baseline run's workdir, "" = none
    baselines: Optional[dict] = None  # its baseline keys (`read_baseline_run`)

    @property
    def criterion(self) -> Criterion:
        """The success criterion of this study's family and thresholds."""
        return criterion_for(self.family, self.min_iou, self.max_pose_err, self.min_psnr,
                             self.min_contrast)


class SeedOutcome(NamedTuple):
    """What `run_seed` found: final results (None unless done), {step: results or None},
    timing, the error line (None when it worked), whether a subprocess ran."""
    final: Optional[dict]
    at_steps: dict
    timing: dict
    error: Optional[str]
    ran: bool


def child_env(parallel: int = 1) -> dict:
    """The subprocesses' environment: ours, the repo on PYTHONPATH, and (parallel > 1)
    no GPU memory preallocation, so several seeds share one accelerator."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    if parallel > 1:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")
_NOISE = ("For simplicity, JAX has removed", "-----")


def last_error_line(text: str) -> str:
    """The line of a failed subprocess's output that says why: its last 'error: ...'
    line (experiments/cli.py), else the last exception line of a traceback, else the
    last non-empty line (JAX's traceback-filtering note skipped)."""
    lines = [l.strip() for l in text.splitlines()
             if l.strip() and not l.strip().startswith(_NOISE)]
    for pick in (lambda l: l.startswith("error:"), _EXCEPTION_LINE.match):
        picked = [l for l in lines if pick(l)]
        if picked:
            return picked[-1]
    return (lines or ["(no output)"])[-1]


def core_slots(parallel: int, available: Sequence[int]) -> list[tuple[int, ...]]:
    """The CPU cores of each of `parallel` concurrent seeds: `available` split into
    contiguous, disjoint slices (two XLA:CPU processes sharing every core thrash each
    other's thread pools; one core each ran 1.5x faster here). () = no pinning: with
    one seed at a time, or fewer cores than seeds."""
    cores = sorted(available)
    if parallel <= 1 or len(cores) < parallel:
        return [()] * max(parallel, 1)
    bounds = [round(i * len(cores) / parallel) for i in range(parallel + 1)]
    return [tuple(cores[bounds[i]:bounds[i + 1]]) for i in range(parallel)]


def call(cmd: Sequence[str], log_path: str, env: dict,
         cores: Sequence[int] = ()) -> tuple[int, float, str]:
    """Runs cmd (on `cores` only, when given) with stdout+stderr appended to log_path:
    (exit code, wall s, last line)."""
    pin = (lambda: os.sched_setaffinity(0, set(cores))) if cores else None
    with open(log_path, "a") as log:
        log.write(f"\n$ {shlex.join(cmd)}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.flush()
        start_offset, start = log.tell(), time.time()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=pin).returncode
    wall = time.time() - start
    with open(log_path, "rb") as f:
        f.seek(max(start_offset, os.path.getsize(log_path) - 65536))
        tail = f.read().decode("utf-8", "replace")
    return rc, wall, last_error_line(tail) if rc else ""


def add_timing(directory: str, key: str, seconds: float) -> dict:
    """Adds `seconds` to timing.json[key] (train_wall_s / eval_wall_s); returns it."""
    path = os.path.join(directory, TIMING_FILE)
    timing = {"train_wall_s": 0.0, "eval_wall_s": 0.0, **(read_json(path) or {})}
    timing[key] = float(timing.get(key, 0.0)) + seconds
    write_json(timing, path)
    return timing


def _run_leg(study: Study, seed: int, leg: Leg, log: Callable[[str], None],
             cores: Sequence[int] = ()) -> Optional[str]:
    """Trains and evaluates one leg (on `cores`); the error line, or None when it worked."""
    directory, env = seed_dir(study.workdir, seed), child_env(study.parallel)
    log_path = os.path.join(directory, LOG_FILE)
    num_steps = None if leg.final else leg.step
    for mode, key, verb in (("train", "train_wall_s", "training to"),
                            ("evaluate", "eval_wall_s", "evaluating")):
        log(f"seed {seed}: {verb} step {leg.step} ...")
        cmd = main_command(study.config_arg, directory, seed, study.overrides, mode,
                           num_steps, study.at_end_key)
        rc, wall, last = call(cmd, log_path, env, cores)
        add_timing(directory, key, wall)
        if rc:
            return f"{mode} exited with code {rc}: {last}"
    results = read_json(os.path.join(directory, RESULTS_FILE)) or {}
    if results.get("step") != leg.step:
        return (f"evaluate scored step {results.get('step')}, expected {leg.step}; "
                f"see {log_path}")
    if not leg.final:
        write_json(results, os.path.join(directory, leg.results_name))
        criterion = study.criterion
        log(f"seed {seed}: step {leg.step} done: {at_column(leg.step, criterion)} "
            f"{fmt(_number(criterion.columns(results), criterion.headline))}")
    return None


def recorded(config: Optional[dict], section: str, key: Optional[str] = None):
    """config[section][key] (or the section, key None) of the config.json an earlier run
    wrote: a plain dict that may lack the section or key (an older version wrote it);
    None then."""
    part = (config or {}).get(section)
    return part if key is None else (part or {}).get(key)


def recorded_seed(directory: str) -> Optional[int]:
    """train.seed of the config.json a run wrote in `directory`, None without one."""
    value = recorded(read_json(os.path.join(directory, "config.json")), "train", "seed")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_seed(study: Study, seed: int, log: Callable[[str], None] = print,
             cores: Sequence[int] = ()) -> SeedOutcome:
    """Runs the legs of one seed that are not done yet (on `cores`); stops at the first
    failure. Once the final leg is done nothing runs: a seed directory holding
    finished results (e.g. a symlink to an earlier run) is only read."""
    directory = seed_dir(study.workdir, seed)
    if os.path.islink(directory) and not os.path.isdir(directory):
        return SeedOutcome(None, {}, {}, f"{directory} links to the missing "
                           f"{os.readlink(directory)}; fix or remove the link", False)
    os.makedirs(directory, exist_ok=True)
    recorded = recorded_seed(directory)
    if recorded is not None and recorded != seed:
        log(f"seed {seed}: note: {directory}/config.json has train.seed={recorded} "
            f"(reported as seed {seed})")
    error, ran = None, False
    final_done = leg_done(directory, plan_legs(study.num_steps)[-1])
    for leg in plan_legs(study.num_steps, study.eval_at):
        if leg_done(directory, leg):
            continue
        ckpt = latest_checkpoint_step(directory)
        if not leg.final and (final_done or (ckpt is not None and ckpt > leg.step)):
            past = "the final results exist" if final_done else \
                f"checkpoint at step {ckpt} is past {leg.step}"
            log(f"seed {seed}: {past}; {at_column(leg.step, study.criterion)} unavailable "
                "(use a fresh --workdir to get it)")
            continue
        ran = True
        try:
            error = _run_leg(study, seed, leg, log, cores)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
        if error:
            break
    at_steps = {leg.step: leg_results(directory, leg)
                for leg in plan_legs(study.num_steps, study.eval_at) if not leg.final}
    final = leg_results(directory, plan_legs(study.num_steps)[-1])
    timing = read_json(os.path.join(directory, TIMING_FILE)) or {}
    return SeedOutcome(final, at_steps, timing, error, ran)


def _done_line(seed: int, outcome: SeedOutcome, directory: str,
               criterion: Criterion = SEGMENTATION) -> str:
    """'seed 3 done: seg_iou 71.2 (12.3 min)' (the criterion's headline; no minutes
    without timing.json, e.g. a linked earlier run) or 'seed 3 FAILED: ...'."""
    if outcome.error:
        return f"seed {seed} FAILED: {outcome.error} (log: {os.path.join(directory, LOG_FILE)})"
    walls = [_number(outcome.timing, k) for k in ("train_wall_s", "eval_wall_s")]
    minutes = sum(w or 0.0 for w in walls) / 60
    notes = ([] if all(w is None for w in walls) else [f"{minutes:.1f} min"]) + \
        ([] if outcome.ran else ["already complete"])
    value = fmt(_number(criterion.columns(outcome.final), criterion.headline))
    return f"seed {seed} done: {criterion.headline} {value}" + (
        f" ({', '.join(notes)})" if notes else "")


def eta_minutes(durations: Sequence[float], remaining: int, parallel: int) -> Optional[float]:
    """Minutes left: mean wall time of the seeds run so far x rounds of `parallel` left."""
    if not durations or remaining <= 0:
        return None if remaining > 0 else 0.0
    return statistics.fmean(durations) * math.ceil(remaining / parallel) / 60


def study_document(study: Study, outcomes: dict) -> dict:
    """seed_study.json: the rows, the summary, the criterion (name, thresholds), the
    --select_by key, the command line and the config."""
    criterion, selection = study.criterion, study.select_by
    extra = (selection.key,) if selection else ()
    rows = [build_row(s, o.final, o.at_steps, o.timing, study.min_iou, o.error, criterion,
                      extra, study.baselines) for s, o in sorted(outcomes.items())]
    for row in rows:
        row["machines"] = provenance.training_machines(seed_dir(study.workdir, row["seed"]))
    return {"config": study.config_name, "config_file": study.config_arg,
            "workdir": study.workdir, "seeds": list(study.seeds), "eval_at": list(study.eval_at),
            "num_steps": study.num_steps, "overrides": list(study.overrides),
            "family": study.family, "criterion": criterion.name,
            "thresholds": dict(criterion.thresholds), "min_iou": study.min_iou,
            "select_by": selection.flag() if selection else "",
            "baselines_from": study.baselines_from, "command": study.command, "rows": rows,
            "summary": summarise(rows, study.eval_at, study.min_iou, criterion, selection)}


def run_study(study: Study, out: Callable[[str], None] = print) -> int:
    """Runs every seed (at most study.parallel at once), writes seed_study.json/.md,
    prints progress and the table; returns the exit code (1 if any seed failed)."""
    os.makedirs(study.workdir, exist_ok=True)
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            out(line)

    outcomes, durations, slots = {}, [], queue.Queue()
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
    for cores in core_slots(study.parallel if study.pin_cores else 1, available):
        slots.put(cores)
    with concurrent.futures.ThreadPoolExecutor(max_workers=study.parallel) as pool:
        started = {pool.submit(_timed_seed, study, s, log, slots): s for s in study.seeds}
        for future in concurrent.futures.as_completed(started):
            seed = started[future]
            outcome, wall = future.result()
            outcomes[seed] = outcome
            if outcome.ran:
                durations.append(wall)
            log(_done_line(seed, outcome, seed_dir(study.workdir, seed), study.criterion))
            remaining = len(study.seeds) - len(outcomes)
            eta = eta_minutes(durations, remaining, study.parallel)
            log(f"study: {len(outcomes)} of {len(study.seeds)} seeds finished"
                + (f", ETA {eta:.1f} min" if remaining and eta is not None else ""))
    document = study_document(study, outcomes)
    markdown = render_markdown(document)
    write_json(document, os.path.join(study.workdir, STUDY_JSON))
    with open(os.path.join(study.workdir, STUDY_MD), "w") as f:
        f.write(markdown)
    out(markdown)
    return 1 if document["summary"]["failed"] else 0


def _timed_seed(study: Study, seed: int, log: Callable[[str], None],
                slots: queue.Queue) -> tuple:
    """(run_seed's outcome, its wall seconds), on a core slot taken from `slots` for the
    duration; an unexpected exception fails the seed."""
    start, cores = time.time(), slots.get()
    try:
        outcome = run_seed(study, seed, log, cores)
    except Exception as e:  # noqa: BLE001 -- one seed's crash must not stop the others
        outcome = SeedOutcome(None, {}, {}, f"{type(e).__name__}: {e}", True)
    finally:
        slots.put(cores)
    return outcome, time.time() - start
