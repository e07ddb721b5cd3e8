"""Seed studies: train N seeds of one config, evaluate each, report how many succeed.

A claim about learning ("segmentation masks emerge") is a rate over seeds, never one
run. `run_study` trains every seed in its own workdir `DIR/seed_{s}/` by calling the
normal entry point `python -m experiments.main` as subprocesses, so each seed is
exactly what a user gets from the command line with `--config.train.seed=s` (model
init and training noise; `data.seed` is untouched, so the data stay the same). The
user's `--config.*` overrides are forwarded verbatim to every subprocess.

Legs. A seed is a chain of legs, each "train to step N, then `--mode=evaluate`":
one per `--eval_at` step (trained with `--config.train.num_steps=N`) and the final
leg at `train.num_steps`. The trainer resumes from the newest checkpoint and always
checkpoints its last step, so each leg continues exactly where the previous one
stopped and its evaluation scores step N. An intermediate leg's `results.json` is
kept as `results_step{N}.json`; the final leg's stays `results.json`.

Resuming. A leg is done when its results file exists with "step" equal to the leg's
step; done legs are skipped, so rerunning the same command only does what is missing
(an interrupted training resumes from its checkpoint by itself). `timing.json`
accumulates the wall time of the subprocesses, so a resumed study still reports the
total. Subprocess output is appended to `DIR/seed_{s}/log.txt`.

Report. `build_row` turns one seed's result dicts into a row (None where a family
does not write a key), `summarise` gives mean / sample std per numeric column, the
trivial baselines and "k of n seeds segment" (seg_iou >= min_iou and > the
centre-prior baseline), `render_markdown` makes the table; `run_study` writes
`DIR/seed_study.json` and `DIR/seed_study.md`.

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

from fdm.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_FILE = "results.json"
TIMING_FILE = "timing.json"
LOG_FILE = "log.txt"
STUDY_JSON = "seed_study.json"
STUDY_MD = "seed_study.md"
MISSING = "–"
# Per-seed metric columns read from results.json (in table order after the seg_iou@N).
METRICS = ("seg_iou", "seg_iou_per_image", "seg_ari", "mask_entropy", "mask_shift_error",
           "eval_loss")
BASELINES = ("baseline_all_fg_iou", "baseline_centre_iou", "baseline_mask_prior_iou")
CRITERION = "seg_iou >= {min_iou:g} and > the centre prior"
LEGEND = ("seg_iou: global fg IoU (%, the paper's protocol); seg_iou@N: at step N; "
          "mask_shift_error: label-free translation-equivariance error of the masks "
          "(lower is better); train min: wall time of the training subprocesses.")


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


# ---- report ------------------------------------------------------------------------------

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


def at_column(step: int) -> str:
    """Column name of the seg_iou of an --eval_at step."""
    return f"seg_iou@{step}"


def numeric_columns(eval_at: Sequence[int] = ()) -> list[str]:
    """The numeric columns of a row, in table order."""
    return ["seg_iou", *[at_column(n) for n in eval_at], *METRICS[1:], "train_min"]


def build_row(seed: int, final: Optional[dict], at_steps: Optional[dict] = None,
              timing: Optional[dict] = None, min_iou: float = 70.0,
              error: Optional[str] = None) -> dict:
    """One seed's row: metrics of the final results (None where missing), seg_iou@N of
    each --eval_at results, wall times (min), the baselines, segments (None when
    unknown, False for a failed seed), status and error."""
    timing = timing or {}
    row = {"seed": int(seed), "status": "failed" if error else "ok", "error": error,
           "step": (final or {}).get("step")}
    row.update({k: _number(final, k) for k in METRICS})
    row.update({at_column(n): _number(r, "seg_iou") for n, r in sorted((at_steps or {}).items())})
    for key, column in (("train_wall_s", "train_min"), ("eval_wall_s", "eval_min")):
        seconds = _number(timing, key)
        row[column] = None if seconds is None else seconds / 60
    row.update({k: _number(final, k) for k in BASELINES if _number(final, k) is not None})
    row["segments"] = False if error else segments(final, min_iou)
    return row


def _mean_std(values: list[float]) -> dict:
    """{"mean", "std" (sample, n-1; None below 2 values), "n"}."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def summarise(rows: Sequence[dict], eval_at: Sequence[int] = (), min_iou: float = 70.0) -> dict:
    """Mean/std of each numeric column over the seeds that have it, the baselines of the
    first row that has them, and how many seeds segment."""
    stats = {c: _mean_std([r[c] for r in rows if r.get(c) is not None])
             for c in numeric_columns(eval_at)}
    baselines, baselines_seed = {}, None
    for row in rows:
        if any(k in row for k in BASELINES):
            baselines = {k: row[k] for k in BASELINES if k in row}
            baselines_seed = row["seed"]
            break
    return {"stats": stats, "baselines": baselines, "baselines_seed": baselines_seed,
            "segments": sum(r.get("segments") is True for r in rows), "seeds": len(rows),
            "failed": [r["seed"] for r in rows if r.get("status") == "failed"],
            "min_iou": min_iou, "criterion": CRITERION.format(min_iou=min_iou)}


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


def segments_line(summary: dict) -> str:
    """'segments: k of n seeds (criterion: ...)'."""
    return (f"segments: {summary['segments']} of {summary['seeds']} seeds "
            f"(criterion: {summary['criterion']})")


def render_markdown(study: dict) -> str:
    """The study as markdown: per-seed table, mean/std table, baselines, k-of-n line,
    failures and the command line. `study` as written to seed_study.json."""
    rows, summary, eval_at = study["rows"], study["summary"], study.get("eval_at", [])
    columns = numeric_columns(eval_at)
    header = ["seed", *[c.replace("_min", " min") for c in columns], "segments"]
    seed_lines = [[str(r["seed"]), *[fmt(r.get(c)) for c in columns],
                   "failed" if r.get("status") == "failed" else fmt(r.get("segments"))]
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
        out += [f"Trivial baselines (seed {summary['baselines_seed']}): {cells}", ""]
    out += [segments_line(summary), "", LEGEND, ""]
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
    min_iou: float = 70.0
    parallel: int = 1
    at_end_key: bool = True       # the config has eval.at_end
    command: str = ""
    pin_cores: bool = True        # parallel > 1: each running seed gets its own CPU cores


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
        log(f"seed {seed}: step {leg.step} done: {at_column(leg.step)} "
            f"{fmt(_number(results, 'seg_iou'))}")
    return None


def run_seed(study: Study, seed: int, log: Callable[[str], None] = print,
             cores: Sequence[int] = ()) -> SeedOutcome:
    """Runs the legs of one seed that are not done yet (on `cores`); stops at the first
    failure."""
    directory = seed_dir(study.workdir, seed)
    os.makedirs(directory, exist_ok=True)
    error, ran = None, False
    for leg in plan_legs(study.num_steps, study.eval_at):
        if leg_done(directory, leg):
            continue
        ckpt = latest_checkpoint_step(directory)
        if not leg.final and ckpt is not None and ckpt > leg.step:
            log(f"seed {seed}: checkpoint at step {ckpt} is past {leg.step}; "
                f"{at_column(leg.step)} unavailable (use a fresh --workdir to get it)")
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


def _done_line(seed: int, outcome: SeedOutcome, directory: str) -> str:
    """'seed 3 done: seg_iou 71.2 (12.3 min)' or 'seed 3 FAILED: ...'."""
    if outcome.error:
        return f"seed {seed} FAILED: {outcome.error} (log: {os.path.join(directory, LOG_FILE)})"
    minutes = sum(_number(outcome.timing, k) or 0.0 for k in ("train_wall_s", "eval_wall_s")) / 60
    note = "" if outcome.ran else ", already complete"
    return f"seed {seed} done: seg_iou {fmt(_number(outcome.final, 'seg_iou'))} " \
           f"({minutes:.1f} min{note})"


def eta_minutes(durations: Sequence[float], remaining: int, parallel: int) -> Optional[float]:
    """Minutes left: mean wall time of the seeds run so far x rounds of `parallel` left."""
    if not durations or remaining <= 0:
        return None if remaining > 0 else 0.0
    return statistics.fmean(durations) * math.ceil(remaining / parallel) / 60


def study_document(study: Study, outcomes: dict) -> dict:
    """seed_study.json: the rows, the summary, the command line and the config."""
    rows = [build_row(s, o.final, o.at_steps, o.timing, study.min_iou, o.error)
            for s, o in sorted(outcomes.items())]
    return {"config": study.config_name, "config_file": study.config_arg,
            "workdir": study.workdir, "seeds": list(study.seeds), "eval_at": list(study.eval_at),
            "num_steps": study.num_steps, "overrides": list(study.overrides),
            "min_iou": study.min_iou, "command": study.command, "rows": rows,
            "summary": summarise(rows, study.eval_at, study.min_iou)}


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
            log(_done_line(seed, outcome, seed_dir(study.workdir, seed)))
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
