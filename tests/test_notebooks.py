"""The Colab notebooks run top to bottom on tiny configurations (the segmentation one
trains, segments and samples the shapes model for 3 minutes on 2 cores: `make test-slow`)."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_notebook(name: str, monkeypatch, **env: str) -> str:
    """Executes colab/<name> with the environment `env`; returns its printed output."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


@pytest.mark.slow
def test_fdm_segmentation_notebook_executes(tmp_path, monkeypatch):
    outputs = run_notebook("fdm_segmentation.ipynb", monkeypatch, FDM_NOTEBOOK_STEPS="2",
                           FDM_NOTEBOOK_WORKDIR=str(tmp_path / "work"))
    assert "labels (8, 32, 32)" in outputs
    assert "samples (8, 32, 32, 3)" in outputs


def test_nerf_lifting_notebook_executes(tmp_path, monkeypatch):
    outputs = run_notebook("nerf_lifting.ipynb", monkeypatch, FDM_NOTEBOOK_CONFIG="tiny",
                           FDM_NOTEBOOK_STEPS="4", FDM_NOTEBOOK_WORKDIR=str(tmp_path / "work"))
    assert "step 4" in outputs
    assert "pose_rot_err_deg" in outputs and "psnr" in outputs
    assert "frames 4" in outputs
    assert "samples (2, 16, 16, 3) cameras (2, 4, 4)" in outputs
    for path in ("eval/renders.png", "eval/cameras.png", "render/video.gif",
                 "samples/grid.png", "samples/trajectory.png"):
        assert os.path.isfile(tmp_path / "work" / path), path
