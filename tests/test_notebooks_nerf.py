"""The NeRF-lifting Colab notebook runs top to bottom on the tiny toy-scene config."""
import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_nerf_lifting_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("FDM_NOTEBOOK_CONFIG", "tiny")
    monkeypatch.setenv("FDM_NOTEBOOK_STEPS", "4")
    monkeypatch.setenv("FDM_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    nb = nbformat.read(os.path.join(ROOT, "colab", "nerf_lifting.ipynb"), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "step 4" in outputs
    assert "pose_rot_err_deg" in outputs and "psnr" in outputs
    assert "frames 4" in outputs
    assert "samples (2, 16, 16, 3) cameras (2, 4, 4)" in outputs
    for path in ("eval/renders.png", "eval/cameras.png", "render/video.gif",
                 "samples/grid.png", "samples/trajectory.png"):
        assert os.path.isfile(tmp_path / "work" / path), path
