"""The FDM Colab notebook runs top to bottom on a tiny training run."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fdm_segmentation_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("FDM_NOTEBOOK_STEPS", "2")
    monkeypatch.setenv("FDM_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    nb = nbformat.read(os.path.join(ROOT, "colab", "fdm_segmentation.ipynb"), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "labels (8, 32, 32)" in outputs
    assert "samples (8, 32, 32, 3)" in outputs
