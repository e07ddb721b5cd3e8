"""Metric writers for training: TensorBoard + `metrics.jsonl` + the absl log.

Only process 0 writes files; other processes only log. `metrics.jsonl` holds one
JSON object per write, `{"step": s, name: value, ...}`; on resume, lines past the
restored step (written after the last checkpoint of a killed run) are dropped so
the file describes exactly one training history.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


def _drop_lines_after(path: str, step: int) -> None:
    """Rewrites the JSON-lines file `path` without records whose step > `step`."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
    if len(kept) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)


def _make_jsonl_writer(path: str, resume_step: int):
    """A clu MetricWriter that appends scalars to `path` (images etc. are ignored)."""
    from clu import metric_writers

    class JsonLinesWriter(metric_writers.MetricWriter):
        """Appends `{"step": s, **scalars}` per `write_scalars` call, flushed at once."""

        def __init__(self):
            _drop_lines_after(path, resume_step)
            self._file = open(path, "a")

        def write_scalars(self, step: int, scalars: Mapping[str, Any]):
            record = {"step": int(step)}
            record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

        def write_summaries(self, step, values, metadata=None):
            """Not recorded: metrics.jsonl holds scalars only (as do the others below)."""

        def write_images(self, step, images):
            pass

        def write_videos(self, step, videos):
            pass

        def write_audios(self, step, audios, *, sample_rate):
            pass

        def write_texts(self, step, texts):
            pass

        def write_histograms(self, step, arrays, num_buckets=None):
            pass

        def write_hparams(self, hparams):
            pass

        def flush(self):
            self._file.flush()

        def close(self):
            self._file.close()

    return JsonLinesWriter()


def create_writer(workdir: str, resume_step: int = 0):
    """TensorBoard + JSON-lines + logging writer on process 0; logging only elsewhere.

    clu (and with it TensorFlow) is imported here, not at module import, so that
    command-line errors raised before training are quick and quiet.
    """
    from clu import metric_writers
    if jax.process_index() > 0:
        return metric_writers.create_default_writer(just_logging=True)
    tensorboard = metric_writers.create_default_writer(workdir)
    jsonl = _make_jsonl_writer(os.path.join(workdir, METRICS_FILE), resume_step)
    return metric_writers.MultiWriter([tensorboard, jsonl])
