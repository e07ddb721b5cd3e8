"""benchmarks/sampling.py and benchmarks/mfu.py: the sampler names parsed, one small
end-to-end sampling row whose fdm and diffusers images from the same x_T must agree (few
steps: no chaotic growth), and the MFU script on a tiny config (no peak on a CPU)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import sampling  # noqa: E402


def test_sampler_names():
    assert sampling.sampler_spec("ddim50") == ("ddim", 50)
    assert sampling.sampler_spec("ancestral") == ("ancestral", 0)
    for bad in ("ddim", "ddimx", "pndm"):
        with pytest.raises(SystemExit, match="unknown sampler"):
            sampling.sampler_spec(bad)


def test_diffusers_counterpart_only_for_plain_ddpm():
    assert sampling.has_diffusers_counterpart(sampling.case_config("tiny32", "float32"))
    assert not sampling.has_diffusers_counterpart(sampling.case_config("fdm32", "float32"))


@pytest.mark.slow
def test_tiny_ddim_row_matches_diffusers(capsys):
    rows = sampling.main(["--cases=tiny32", "--samplers=ddim3", "--batch=2", "--iters=0"])
    (row,) = rows
    assert row["case"] == "tiny32" and row["sampler"] == "ddim3"
    assert row["fdm_s"] > 0 and row["diffusers_s"] > 0
    assert row["max_diff"] < 1e-3 and row["max_diff_perturbed"] < 1e-3
    assert "| tiny32 | ddim3 |" in capsys.readouterr().out


def test_unknown_case_is_one_line():
    with pytest.raises(SystemExit, match="unknown case"):
        sampling.main(["--cases=nope", "--samplers=ddim2"])


def test_mfu_on_a_tiny_config():
    import mfu
    assert mfu.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert mfu.peak_tflops("cpu", "bfloat16") is None
    (row,) = mfu.main(["--configs=ddpm:tiny", "--batch=2", "--steps=1", "--warmup=1",
                       "--dtype=float32"])
    assert row["gflop"] > 0 and row["step_s"] > 0 and row["mfu"] != row["mfu"]  # NaN: no peak
    with pytest.raises(SystemExit, match="unknown config"):
        mfu.load_config("nope", 0, "float32", "none")
