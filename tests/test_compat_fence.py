"""xarray's and dask's private names are used only inside ``fastzarr._compat``.

Outside it, fastzarr uses xarray's public API and what xarray's guide for backend authors
documents (``BackendArray``, ``BackendEntrypoint`` and a few names of ``xarray.core.indexing``),
and dask's public API."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "fastzarr"

PUBLIC_MODULES = {"xarray", "xarray.backends", "xarray.testing", "dask", "dask.array", "dask.distributed"}
"""Modules of xarray and dask that may be imported outside ``_compat``."""
DOCUMENTED_INDEXING = {
    "BasicIndexer",
    "ExplicitIndexer",
    "IndexingSupport",
    "LazilyIndexedArray",
    "OuterIndexer",
    "VectorizedIndexer",
    "explicit_indexing_adapter",
}
"""The names of ``xarray.core.indexing`` that xarray's backend guide documents."""
PRIVATE_ATTRIBUTES = {
    "_construct_direct",
    "_data",
    "_in_memory",
    "_to_temp_dataset",
    "_from_temp_dataset",
    "_variables",
    "_coord_names",
    "_indexes",
    "_replace",
    "_to_dataset_whole",
    "_close",
}
"""Private attributes of xarray's and dask's objects (fastzarr's own underscored names are its
own business, so only these are looked for)."""


def violations(source: str, where: str) -> list[str]:
    """``where:line: what`` for every use of a private xarray or dask name in ``source``."""
    found: list[str] = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{where}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in ("xarray", "dask")
        ):
            indexing = node.module == "xarray.core" and [a.name for a in node.names] == ["indexing"]
            if node.module == "xarray.core.indexing":
                for alias in node.names:
                    if alias.name not in DOCUMENTED_INDEXING:
                        report(node, f"xarray.core.indexing.{alias.name}")
            elif not indexing and node.module not in PUBLIC_MODULES:
                report(node, f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("xarray", "dask") and alias.name not in PUBLIC_MODULES:
                    report(node, f"import {alias.name}")
        elif isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name) and base.id == "indexing" and node.attr not in DOCUMENTED_INDEXING:
                report(node, f"indexing.{node.attr}")
            if node.attr in PRIVATE_ATTRIBUTES and not (isinstance(base, ast.Name) and base.id == "self"):
                report(node, f".{node.attr}")
            if isinstance(base, ast.Name) and base.id == "copy" and node.attr == "copy":
                report(node, "copy.copy (copying xarray's lazy wrappers)")
        elif isinstance(node, ast.keyword) and node.arg == "fastpath":
            report(node, "fastpath=")
    return found


def test_private_names_only_in_compat() -> None:
    files = [p for p in PACKAGE.rglob("*.py") if "_compat" not in p.relative_to(PACKAGE).parts]
    assert len(files) > 20
    found = [v for p in sorted(files) for v in violations(p.read_text(), str(p.relative_to(PACKAGE)))]
    assert found == [], "\n".join(found)
    compat = "".join(p.read_text() for p in (PACKAGE / "_compat").glob("*.py"))
    assert len(violations(compat, "_compat")) > 10  # they live there


def test_the_check_finds_each_kind_of_use() -> None:
    source = (
        "import copy\n"
        "from dask._task_spec import Task\n"
        "import xarray.namedarray.parallelcompat\n"
        "from xarray.core import indexing\n"
        "from xarray.core.indexing import MemoryCachedArray, OuterIndexer\n"
        "x = indexing.NumpyIndexingAdapter(v)\n"
        "k = indexing.OuterIndexer(key)\n"
        "ds = xr.Dataset._construct_direct(v)\n"
        "d = var._data\n"
        "own = self._data\n"
        "v = xr.Variable(d, a, fastpath=True)\n"
        "c = copy.copy(v)\n"
    )
    assert sorted(f.split(": ", 1)[1] for f in violations(source, "sample")) == sorted(
        [
            "from dask._task_spec import ...",
            "import xarray.namedarray.parallelcompat",
            "xarray.core.indexing.MemoryCachedArray",
            "indexing.NumpyIndexingAdapter",
            "._construct_direct",
            "._data",
            "fastpath=",
            "copy.copy (copying xarray's lazy wrappers)",
        ]
    )
