"""notebooks/lab5_part1.ipynb: committed without outputs, and runs headless from top to bottom.

The kernel is this test's own interpreter: a kernelspec written into a temporary JUPYTER_PATH
(nothing installed by hand, nothing written to the home folder), run by nbclient in a temporary
working folder (the notebook's runs/lab5/ goes there).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "lab5_part1.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 15
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert all(not c.get("attachments") for c in nb.cells)


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
    return "".join(parts)


@pytest.mark.slow
def test_notebook_runs_headless_with_the_labs_results(tmp_path, monkeypatch):
    kernel = tmp_path / "jupyter" / "kernels" / "cnnlab-test"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cnnlab (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / "work"
    work.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="cnnlab-test", timeout=300, startup_timeout=60,
                   resources={"metadata": {"path": str(work)}}).execute()

    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "[[25., 31.]," in text and "[43., 49.]]]" in text                       # 5.1.2
    assert "input's shape: [2, 8, 8], output's shape: [2, 4, 4]" in text          # 5.1.6
    assert "Total Flops: 423344     Total Params: 61706" in text                   # 5.3.2
    assert "conv3 [1, 16, 10, 10] [16, 6, 5, 5] [16]" in text
    tests = [float(a) for a in re.findall(r"\[Test\] accuracy/loss: ([0-9.]+)/", text)]
    assert len(tests) == 3 and all(a > 0.5 for a in tests), tests                  # 3 models
    assert text.count("[Train] Training done!") == 3
    figures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) >= 6   # edges, two digits, three training curves
    for name in ("lenet", "resnet18-plain", "resnet18"):
        assert (work / "runs" / "lab5" / name / "best.pt").is_file()
