"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel; its cells assert what they show."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def test_committed_with_outputs_cleared() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)


def test_quickstart_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path migration notice
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws PNGs
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # the debugger's frozen-modules note
    monkeypatch.delenv("FASTZARR_LOG", raising=False)
    from nbclient import NotebookClient  # noqa: PLC0415 - after the environment is set

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "DuplicateWarning: 3 repeated 'file_id' labels dropped" in text  # the warning is visible
    html = "".join(
        o.get("data", {}).get("text/html", "")
        for o in outputs
        if o.output_type in ("execute_result", "display_data")
    )
    assert "fastzarr.InspectReport" in html
    assert "fastzarr.ExtractReport" in html
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the time series and the timing comparison
    assert os.listdir(tmp_path) == []  # the notebook cleans up after itself
