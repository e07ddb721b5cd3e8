"""Where a run ran: the software and the machine behind its numbers.

Training is reproducible bit for bit on one machine with one software stack, not
across them: another CPU (its vector ISA selects other convolution kernels, so other
float rounding), another accelerator, device count or jaxlib sums floats in another
order, and a few thousand SGD steps can grow that into a different model (README, the
32 x 32 SimSiam reruns: the same seed and code gave object hue 95.2 % in one session and
51.1 % in a later one on another machine, which repeats its own run bit for bit). So
every run records where it ran, and the seed study says when its seeds trained on
different machines.

  environment()             `Environment` of this process: fdm version and git commit,
                            Python and package versions, JAX backend and devices, CPU
                            model and vector ISA, XLA_FLAGS, host name.
  record(workdir, mode, step)  appends {"time", "mode", "step", **environment} as one
                            JSON line to DIR/environment.jsonl (process 0): one line per
                            train (or resume), evaluate, likelihood, so a run resumed
                            elsewhere shows both machines.
  read_records(workdir)     those lines (oldest first; [] without the file).
  Environment.machine_key   what decides float rounding (backend, device kind and count,
                            CPU model and ISA, jaxlib, XLA_FLAGS): runs with equal keys
                            repeat each other; `label` is its short human form.

Only `environment` and `record` import JAX (lazily): the seed study reads records
without it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Optional

ENVIRONMENT_FILE = "environment.jsonl"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
# /proc/cpuinfo flags that change which float kernels XLA and its libraries pick.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
AVX2_IMPLIES = ("sse4_2", "avx", "fma")   # left out of a label that names avx2
GIT_TIMEOUT_S = 5
# The checkout holding the fdm package (git_revision's root). The root package fdm is
# initialised before any of its modules, so `environment` reads its version from
# sys.modules without importing a layer above this one.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Environment:
    """The software and machine of one process (module docstring)."""
    fdm_version: str = ""
    git_commit: Optional[str] = None     # None outside a git checkout of fdm
    git_dirty: Optional[bool] = None     # tracked files changed since git_commit
    python: str = ""
    packages: dict = dataclasses.field(default_factory=dict)   # name -> version or None
    backend: str = ""                    # jax.default_backend(): "cpu", "gpu", "tpu"
    device_kind: str = ""                # jax.devices()[0].device_kind
    device_count: int = 0                # jax.device_count(), over all processes
    process_count: int = 0
    cpu_model: str = ""
    cpu_isa: tuple = ()                  # the ISA_FLAGS this CPU has, in ISA_FLAGS order
    xla_flags: str = ""
    hostname: str = ""

    @classmethod
    def from_record(cls, record: dict) -> "Environment":
        """The Environment of a record line (keys it lacks keep their defaults; extra
        keys such as "time" are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        if "cpu_isa" in values:
            values["cpu_isa"] = tuple(values["cpu_isa"] or ())
        return cls(**values)

    def as_record(self) -> dict:
        """A JSON-ready dict (cpu_isa as a list)."""
        out = dataclasses.asdict(self)
        out["cpu_isa"] = list(self.cpu_isa)
        return out

    @property
    def machine_key(self) -> tuple:
        """What decides float rounding; equal keys: runs repeat each other bit for bit."""
        return (self.backend, self.device_kind, self.device_count, self.cpu_model,
                tuple(self.cpu_isa), self.packages.get("jaxlib"), self.xla_flags)

    @property
    def label(self) -> str:
        """E.g. 'cpu x1 (AMD EPYC, avx2), jaxlib 0.10.2'; the XLA_FLAGS when set. Every
        part of `machine_key` shows (the ISA flags but those every AVX2 CPU has)."""
        implied = AVX2_IMPLIES if {"avx2", *AVX2_IMPLIES} <= set(self.cpu_isa) else ()
        isa = [f for f in self.cpu_isa if f not in implied]
        cpu = ", ".join([self.cpu_model or "unknown CPU", *isa])
        device = (f"{self.backend} x{self.device_count}" if self.backend == "cpu" else
                  f"{self.backend} {self.device_kind} x{self.device_count}")
        text = f"{device} ({cpu}), jaxlib {self.packages.get('jaxlib') or '?'}"
        return text + (f", XLA_FLAGS={self.xla_flags}" if self.xla_flags else "")


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model name, the ISA_FLAGS present) from the text of /proc/cpuinfo: the first
    processor's "model name" and "flags" lines; ("", ()) where they are absent (ARM
    lists "Features", whose names differ)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = " ".join(value.split())
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, tuple(f for f in ISA_FLAGS if f in flags)


def cpu_description() -> tuple[str, tuple[str, ...]]:
    """(CPU model, ISA flags) of this machine: /proc/cpuinfo on Linux, else the model
    platform.processor() gives and no flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model, isa = parse_cpuinfo(f.read())
    except OSError:
        model, isa = "", ()
    return model or platform.processor() or platform.machine(), isa


def _git(args: list[str], cwd: str) -> Optional[str]:
    """stdout of `git args` in cwd (stripped), None when git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_revision(source_root: str) -> tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the git checkout whose top level is `source_root`; (None,
    None) when source_root is not the top of a checkout (e.g. fdm installed into a
    site-packages that happens to sit inside another repository)."""
    top = _git(["rev-parse", "--show-toplevel"], source_root)
    if top is None or os.path.realpath(top) != os.path.realpath(source_root):
        return None, None
    commit = _git(["rev-parse", "HEAD"], source_root)
    status = _git(["status", "--porcelain", "--untracked-files=no"], source_root)
    return commit, None if status is None else bool(status)


def package_versions(names=PACKAGES) -> dict:
    """{name: installed version or None}."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment() -> Environment:
    """This process's Environment (starts the JAX backend if it has not started)."""
    import jax
    commit, dirty = git_revision(SOURCE_ROOT)
    model, isa = cpu_description()
    return Environment(
        fdm_version=sys.modules["fdm"].__version__, git_commit=commit, git_dirty=dirty,
        python=platform.python_version(), packages=package_versions(),
        backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
        device_count=jax.device_count(), process_count=jax.process_count(),
        cpu_model=model, cpu_isa=isa, xla_flags=os.environ.get("XLA_FLAGS", "").strip(),
        hostname=platform.node())


def read_records(workdir: str) -> list[dict]:
    """The records of DIR/environment.jsonl, oldest first; [] without the file; lines
    that are not JSON objects are skipped."""
    path = os.path.join(workdir, ENVIRONMENT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def record(workdir: str, mode: str, step: int, env: Optional[Environment] = None) -> dict:
    """Appends {"time" (UTC, ISO 8601), "mode", "step", **env} to DIR/environment.jsonl
    (rewritten atomically, process 0 only); env defaults to `environment()`. Returns
    the record."""
    import jax
    from fdm.host import write_text_atomic
    env = env or environment()
    entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "mode": mode, "step": int(step), **env.as_record()}
    if jax.process_index() == 0:
        lines = [json.dumps(r, sort_keys=True) for r in read_records(workdir)]
        lines.append(json.dumps(entry, sort_keys=True))
        write_text_atomic("\n".join(lines) + "\n", os.path.join(workdir, ENVIRONMENT_FILE))
    return entry


def training_machines(workdir: str) -> list[str]:
    """The labels of the distinct machines (`machine_key`) of DIR's train records, in
    order of first use ([] when none was recorded, e.g. a run older than this module)."""
    machines = {}
    for entry in read_records(workdir):
        if entry.get("mode") == "train":
            env = Environment.from_record(entry)
            machines.setdefault(env.machine_key, env.label)
    return list(machines.values())


