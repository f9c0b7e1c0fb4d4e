"""Runs notebooks/quickstart.ipynb top to bottom in a fresh kernel and saves it with its outputs,
so the committed notebook reads on a repository browser (`make notebook-outputs`).

`tests/test_notebook.py` runs it the same way and compares the outputs' structure with the
committed ones."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parent / "quickstart.ipynb"

# The kernel's environment: no jupyter_core path-migration notice, no frozen-modules note from the
# debugger, matplotlib's inline backend (PNGs), fastzarr's logging off.
QUIET = {"JUPYTER_PLATFORM_DIRS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
UNSET = ("MPLBACKEND", "FASTZARR_LOG")


def execute(path: Path, cwd: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, executed in a fresh kernel started in ``cwd``."""
    os.environ.update(QUIET)
    for name in UNSET:
        os.environ.pop(name, None)
    from nbclient import NotebookClient  # noqa: PLC0415 - after the environment is set

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps of an earlier run
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def main() -> int:
    with tempfile.TemporaryDirectory() as cwd:
        nb = execute(NOTEBOOK, Path(cwd))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    if errors:
        print(f"{NOTEBOOK.name}: {errors[0].ename}: {errors[0].evalue}", file=sys.stderr)
        return 1
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK} with its outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
