"""xarray's private names that fastzarr has fenced are used only inside ``fastzarr._compat``.

The fenced names so far: each has a function in ``fastzarr._compat.xarray`` with a public
fallback (``tests/test_compat.py`` runs them) or a fastzarr implementation of its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "fastzarr"

FENCED_MODULES = ("xarray.conventions", "xarray.namedarray")
"""Modules imported (or from which anything is imported) only in ``_compat``."""
FENCED_NAMES = {"FillValueCoder", "guess_chunkmanager", "decode_cf_variable"}
"""Names imported or used only in ``_compat``."""
FENCED_ATTRIBUTES = {"_construct_direct", "_to_temp_dataset", "_from_temp_dataset"}
"""Private attributes of xarray's objects accessed only in ``_compat``."""


def violations(source: str, where: str) -> list[str]:
    """``where:line: what`` for every use of a fenced name in ``source``."""
    found: list[str] = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{where}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(FENCED_MODULES):
                report(node, f"from {node.module} import ...")
            report_names = [a.name for a in node.names if a.name in FENCED_NAMES]
            for name in report_names:
                report(node, f"import of {name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(FENCED_MODULES):
                    report(node, f"import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in FENCED_ATTRIBUTES | FENCED_NAMES:
            report(node, f".{node.attr}")
        elif isinstance(node, ast.Name) and node.id in FENCED_NAMES:
            report(node, node.id)
        elif isinstance(node, ast.keyword) and node.arg == "fastpath":
            report(node, "fastpath=")
    return found


def test_fenced_names_only_in_compat() -> None:
    files = [p for p in PACKAGE.rglob("*.py") if "_compat" not in p.relative_to(PACKAGE).parts]
    assert len(files) > 20
    found = [v for p in sorted(files) for v in violations(p.read_text(), str(p.relative_to(PACKAGE)))]
    assert found == [], "\n".join(found)
    compat = "".join(p.read_text() for p in (PACKAGE / "_compat").glob("*.py"))
    assert violations(compat, "_compat")  # the names live there


def test_the_check_finds_each_kind_of_use() -> None:
    source = (
        "from xarray.conventions import decode_cf_variable\n"
        "import xarray.namedarray.parallelcompat\n"
        "from xarray.backends.zarr import FillValueCoder\n"
        "ds = xr.Dataset._construct_direct(v)\n"
        "t = da._to_temp_dataset()\n"
        "v = xr.Variable(d, a, fastpath=True)\n"
        "x = xarray.backends.zarr.FillValueCoder.decode(1, d)\n"
    )
    assert [f.split(": ", 1)[1] for f in violations(source, "sample")] == [
        "from xarray.conventions import ...",
        "import of decode_cf_variable",
        "import xarray.namedarray.parallelcompat",
        "import of FillValueCoder",
        "._construct_direct",
        "._to_temp_dataset",
        "fastpath=",
        ".FillValueCoder",
    ]
