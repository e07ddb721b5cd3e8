"""`run(config, workdir, mode)`: what `python -m experiments.main` does, importable.

Modes (SPEC "Command-line contract"):
  train     train, resuming from the newest checkpoint in `workdir`; with eval.at_end,
            then evaluate and sample, unless a SIGTERM stopped training short.
  evaluate  EMA params of the newest checkpoint -> `family.evaluate` ->
            `workdir/results.json` = {metric: number, "step": s, "config": name}; the
            machine and software that scored it appended to `workdir/environment.jsonl`
            (`fdm.provenance`, as training does).
  sample / segment / render: EMA params -> the family's hook, which writes to
            `workdir/samples/`, `workdir/segment/`, `workdir/render/`.
  landscape EMA params + the eval split -> `family.landscape` (NeRF lifting: pose
            landscapes in `workdir/landscape/`, `fdm.models.lifting_landscape`).
`likelihood(config, workdir, diffusers)` (experiments/ddpm_likelihood.py): the DDPM
bound alone, of a trained workdir or a local diffusers checkpoint -> likelihood.json.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Iterator

import jax
from absl import logging
import ml_collections
import numpy as np

from fdm import provenance
from fdm.checkpoint_io import restore_ema_params
from fdm.errors import UserError
from fdm.host import write_json_atomic
from fdm.train import mesh as mesh_lib

MODES = ("train", "evaluate", "sample", "segment", "render", "landscape")
RESULTS_FILE = "results.json"
LIKELIHOOD_FILE = "likelihood.json"


def eval_batches(config: ml_collections.ConfigDict) -> Iterator[dict[str, jax.Array]]:
    """The 'eval' split as global arrays [B, ...] split over the mesh axis `data`."""
    from fdm import data
    mesh = mesh_lib.make_mesh()
    local = data.make_iterator(config, "eval", jax.process_index(), jax.process_count())
    return (mesh_lib.global_batch(b, mesh) for b in local)


def _as_number(value: Any) -> float | int:
    """A metric value (python/numpy/jax scalar) as a JSON number."""
    return np.asarray(value).item()


def evaluate(config: ml_collections.ConfigDict, workdir: str, family, params: Any,
             step: int, rng: jax.Array) -> dict[str, Any]:
    """Runs `family.evaluate` and writes `workdir/results.json` atomically."""
    metrics = family.evaluate(params, eval_batches(config), workdir, rng)
    results = {k: _as_number(v) for k, v in metrics.items()}
    results.update(step=int(step), config=config.name)
    write_json_atomic(results, os.path.join(workdir, RESULTS_FILE))
    provenance.record(workdir, "evaluate", step)
    return results


def finish_with_evaluation(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """`eval.at_end`: after training, evaluate (results.json) and sample (figures) when
    the family can."""
    from fdm.models import get_family
    family = get_family(config, workdir)
    params, step = restore_ema_params(workdir)
    family.set_step(step)
    key = jax.random.PRNGKey(config.train.seed)
    results = evaluate(config, workdir, family, params, step, jax.random.fold_in(key, 1))
    if family.can_sample:
        family.sample(params, workdir, jax.random.fold_in(key, 2))
    logging.info("results: %s", results)
    return results


def likelihood(config: ml_collections.ConfigDict, workdir: str, diffusers: str = "") -> dict:
    """The DDPM bound alone (experiments/ddpm_likelihood.py): bits/dim of the first
    eval.bpd_examples eval images (`DDPMFamily.evaluate_likelihood`) with the EMA params of
    the newest checkpoint in `workdir`, or with a local diffusers UNet2DModel directory
    `diffusers` (step 0). Writes workdir/likelihood.json (the metrics, "step", "config",
    "checkpoint") and workdir/rate_distortion.json."""
    from fdm.models import get_family
    from fdm.models.ddpm import DDPMFamily
    if not config.eval.bpd_examples:
        raise UserError("eval.bpd_examples=0: pass --config.eval.bpd_examples=N, the number "
                        "of eval images whose bound to compute")
    family = get_family(config, None if diffusers else workdir)
    if not isinstance(family, DDPMFamily):
        raise UserError(f"model.family={config.model.family!r} has no likelihood; use a DDPM "
                        "or FDM config")
    if diffusers:
        params, step = family.params_from_diffusers(diffusers), 0
    else:
        params, step = restore_ema_params(workdir)
        family.set_step(step)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.train.seed), len(MODES))
    metrics = family.evaluate_likelihood(params, eval_batches(config), workdir, rng)
    results = {k: _as_number(v) for k, v in metrics.items()}
    results.update(step=int(step), config=config.name, checkpoint=diffusers or workdir)
    write_json_atomic(results, os.path.join(workdir, LIKELIHOOD_FILE))
    provenance.record(workdir, "likelihood", step)
    return results


def _check_input(input_glob: str | None) -> None:
    """UserError unless `--input` names at least one existing file."""
    if not input_glob:
        raise UserError("--mode=segment needs images; pass --input=FILE_OR_GLOB")
    if not glob.glob(input_glob):
        raise UserError(f"no file matches --input={input_glob}; pass an existing "
                        "image file or a glob such as 'images/*.png'")


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = "train",
        input_glob: str | None = None) -> Any:
    """Dispatches `mode`; returns the train state (train), the results dict (evaluate)."""
    from fdm.models import get_family
    from fdm.train import trainer
    if mode not in MODES:
        raise UserError(f"unknown --mode={mode}; use one of {', '.join(MODES)}")
    if mode == "train":
        state = trainer.train(config, workdir)
        if config.eval.at_end and trainer.stopped_short(state, config):
            logging.warning("stopped at step %d of %d (SIGTERM): no evaluation; the same "
                            "command resumes", int(state.step), config.train.num_steps)
        elif config.eval.at_end:
            finish_with_evaluation(config, workdir)
        return state
    if mode == "segment":
        _check_input(input_glob)
    family = get_family(config, workdir)
    params, step = restore_ema_params(workdir)
    family.set_step(step)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.train.seed), MODES.index(mode))
    if mode == "evaluate":
        return evaluate(config, workdir, family, params, step, rng)
    if mode == "segment":
        return family.segment(params, input_glob, workdir, rng)
    if mode == "landscape":
        return family.landscape(params, eval_batches(config), workdir, rng)
    return getattr(family, mode)(params, workdir, rng)
