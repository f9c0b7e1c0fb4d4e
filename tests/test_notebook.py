"""notebooks/quickstart.ipynb: committed with its outputs, its checks in one hidden cell, and
re-executed here in a fresh kernel, where its outputs must have the committed structure."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _refresh_module():
    spec = importlib.util.spec_from_file_location("notebook_refresh", ROOT / "notebooks" / "refresh.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code(nb: NotebookNode) -> list[NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _shape(cell: NotebookNode) -> list[tuple[str, ...]]:
    """A cell's outputs without their text: stream names (consecutive writes merged) and the
    MIME types of displayed values."""
    shape: list[tuple[str, ...]] = []
    for output in cell.outputs:
        if output.output_type == "stream":
            entry: tuple[str, ...] = ("stream", output.name)
            if shape and shape[-1] == entry:
                continue
        else:
            entry = (output.output_type, *sorted(output.get("data", {})))
        shape.append(entry)
    return shape


def _html(nb: NotebookNode) -> str:
    return "".join(
        o.get("data", {}).get("text/html", "")
        for c in _code(nb)
        for o in c.outputs
        if o.output_type in ("execute_result", "display_data")
    )


def test_committed_with_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = _code(nb)
    # Run top to bottom once, in order, without errors.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    # Every cell but the last (clean-up) shows something; nothing shows a temporary path.
    assert all(c.outputs for c in code[:-1])
    assert "fastzarr-quickstart-" not in str([c.outputs for c in code])
    assert all("execution" not in c.metadata for c in code)  # no run timestamps committed
    assert "fastzarr.InspectReport" in _html(nb)
    assert "fastzarr.ExtractReport" in _html(nb)
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the series and the timing comparison


def test_checks_kept_out_of_the_way() -> None:
    """The asserts live in one hidden cell before the clean-up, not in the cells a reader reads."""
    code = _code(nbformat.read(NOTEBOOK, as_version=4))
    checks = [c for c in code if "checks" in c.metadata.get("tags", [])]
    assert len(checks) == 1
    assert checks[0] is code[-2]
    assert checks[0].metadata["jupyter"]["source_hidden"] is True
    assert checks[0].outputs[0].text == "all checks passed\n"
    assert [c.source for c in code if "assert" in c.source] == [checks[0].source]
    for name in ("open_array", "read_many", "fz.load(", "extract_points", "Cache(", "to_zarr", "Loader("):
        assert any(name in c.source for c in code[:-2]), name


def test_quickstart_executes_as_committed(tmp_path: Path) -> None:
    committed = nbformat.read(NOTEBOOK, as_version=4)
    nb = _refresh_module().execute(NOTEBOOK, tmp_path)
    fresh = _code(nb)
    assert not [o for c in fresh for o in c.outputs if o.output_type == "error"]
    assert [_shape(c) for c in fresh] == [_shape(c) for c in _code(committed)]
    text = "".join(o.get("text", "") for c in fresh for o in c.outputs if o.output_type == "stream")
    assert "DuplicateWarning: 3 repeated 'file_id' labels dropped" in text  # the warning is visible
    assert "all checks passed" in text
    assert "fastzarr.ExtractReport" in _html(nb)
    assert os.listdir(tmp_path) == []  # the notebook cleans up after itself
