"""fdm.provenance: where a run ran, recorded per run and read back by the seed study."""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata

import jax
import pytest

import fdm
from fdm import provenance as pv
from fdm import seed_study as ss

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_tile

processor\t: 1
model name\t: Some Other CPU
flags\t\t: fpu sse4_2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
CPU part\t: 0xd0c
"""


def test_parse_cpuinfo_reads_the_first_processor():
    model, isa = pv.parse_cpuinfo(INTEL)
    assert model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert isa == ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                   "avx512_bf16", "avx512_fp16", "amx_tile")
    assert pv.parse_cpuinfo(ARM) == ("", ())


def test_environment_matches_independent_sources():
    env = pv.environment()
    assert env.fdm_version == fdm.__version__
    assert env.packages["jax"] == metadata.version("jax")
    assert env.packages["flax"] == metadata.version("flax")
    assert env.backend == jax.default_backend() == "cpu"
    assert env.device_count == len(jax.devices()) and env.process_count == 1
    assert env.python == ".".join(map(str, sys.version_info[:3]))
    assert env.xla_flags == os.environ.get("XLA_FLAGS", "").strip()
    assert env.hostname == platform.node()
    if os.path.exists("/proc/cpuinfo"):
        text = open("/proc/cpuinfo").read()
        names = re.findall(r"^model name\s*:\s*(.*)$", text, flags=re.M)
        if names:
            assert env.cpu_model == " ".join(names[0].split())
        flags = set(re.findall(r"^flags\s*:\s*(.*)$", text, flags=re.M)[0].split())
        assert set(env.cpu_isa) == flags & set(pv.ISA_FLAGS)
    assert pv.Environment.from_record(json.loads(json.dumps(env.as_record()))) == env


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_of_a_checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True,  # noqa: E731
                                    capture_output=True)
    git("init", "-q")
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    ref = (repo / ".git" / "HEAD").read_text().split()[-1]
    commit = (repo / ".git" / ref).read_text().strip()
    assert pv.git_revision(str(repo)) == (commit, False)
    (repo / "new.txt").write_text("untracked\n")
    assert pv.git_revision(str(repo)) == (commit, False)
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert pv.git_revision(str(repo)) == (commit, True)
    assert pv.git_revision(str(repo / "pkg")) == (None, None)   # inside, not the top
    assert pv.git_revision(str(tmp_path)) == (None, None)


def _env(**kw):
    base = dict(packages={"jaxlib": "0.10.2"}, backend="cpu", device_kind="cpu",
                device_count=1, cpu_model="AMD EPYC", cpu_isa=("sse4_2", "avx", "avx2", "fma"),
                hostname="a", git_commit="abc")
    return pv.Environment(**{**base, **kw})


def test_machine_key_and_label():
    assert _env().machine_key == _env(hostname="b", git_commit="def", python="3.12").machine_key
    for change in (dict(cpu_isa=("avx2", "avx512f")), dict(packages={"jaxlib": "0.10.3"}),
                   dict(device_count=2), dict(cpu_model="Intel Xeon"), dict(xla_flags="--x")):
        assert _env(**change).machine_key != _env().machine_key, change
    assert _env().label == "cpu x1 (AMD EPYC, avx2), jaxlib 0.10.2"
    assert _env(cpu_isa=("sse4_2", "avx", "avx2")).label == (   # no fma: every flag shows
        "cpu x1 (AMD EPYC, sse4_2, avx, avx2), jaxlib 0.10.2")
    gpu = _env(backend="gpu", device_kind="NVIDIA H100 80GB HBM3", xla_flags="--x=1")
    assert gpu.label == ("gpu NVIDIA H100 80GB HBM3 x1 (AMD EPYC, avx2), jaxlib 0.10.2, "
                         "XLA_FLAGS=--x=1")


def test_record_appends_and_reads_back(tmp_path):
    workdir = str(tmp_path)
    first = pv.record(workdir, "train", 0, _env())
    pv.record(workdir, "evaluate", 7, _env())
    with open(os.path.join(workdir, pv.ENVIRONMENT_FILE), "a") as f:
        f.write("not json\n")
    pv.record(workdir, "train", 7, _env(cpu_model="Intel Xeon", cpu_isa=("avx512f",)))
    pv.record(workdir, "train", 9, _env(hostname="another host of the same kind"))
    records = pv.read_records(workdir)
    assert [(r["mode"], r["step"]) for r in records] == [("train", 0), ("evaluate", 7),
                                                        ("train", 7), ("train", 9)]
    assert records[0] == first and re.match(r"\d{4}-\d\d-\d\dT", first["time"])
    assert pv.Environment.from_record(records[1]) == _env()
    assert os.listdir(workdir) == [pv.ENVIRONMENT_FILE]       # no temporary file left
    assert pv.training_machines(workdir) == ["cpu x1 (AMD EPYC, avx2), jaxlib 0.10.2",
                                             "cpu x1 (Intel Xeon, avx512f), jaxlib 0.10.2"]
    assert pv.read_records(str(tmp_path / "none")) == []
    assert pv.training_machines(str(tmp_path / "none")) == []


def test_seed_study_says_where_seeds_trained():
    a, b = "cpu x1 (AMD EPYC, avx2), jaxlib 0.10.2", "cpu x1 (Intel Xeon, avx512f), jaxlib 0.10.2"
    assert ss.machine_lines([{"seed": 0, "machines": []}, {"seed": 1}]) == []
    assert ss.machine_lines([{"seed": 0, "machines": [a]}, {"seed": 1, "machines": [a]}]) == [
        f"Trained on: {a} (every seed)"]
    mixed = ss.machine_lines([{"seed": 0, "machines": [a]}, {"seed": 1, "machines": [b]},
                              {"seed": 2, "machines": [a]}, {"seed": 3, "machines": [a, b]},
                              {"seed": 4}])
    assert len(mixed) == 1 and mixed[0].startswith("Trained on different machines")
    assert mixed[0].endswith(f"seeds 0, 2: {a}; seed 1: {b}; seed 3: {a} + {b}; "
                             "seed 4: not recorded")
    assert ss.machine_lines([{"seed": 0}, {"seed": 1, "machines": [a]},
                             {"seed": 2, "machines": [a]}]) == [
        f"Trained on: seed 0: not recorded; seeds 1, 2: {a}"]
