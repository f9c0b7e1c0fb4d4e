"""No fastzarr module imports another module's private names (``from fastzarr.x import _name``
or ``x._name``); private modules themselves (``fastzarr._sizes``) are the package's to share.

The Rust core's underscored functions (``fastzarr._core._write_regions``) are its internal API
for the Python package, declared in ``_core.pyi``, and are not looked at."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "fastzarr"


def _is_module(dotted: str) -> bool:
    if dotted == "fastzarr._core":  # the compiled extension
        return True
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def crossings(source: str, where: str) -> list[str]:
    """``where:line: module.name`` for every private name of another fastzarr module used."""
    tree = ast.parse(source)
    found: list[str] = []
    modules: dict[str, str] = {}  # local alias -> fastzarr module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fastzarr":
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _is_module(dotted):
                    modules[alias.asname or alias.name] = dotted
                elif _private(alias.name) and node.module != "fastzarr._core":
                    found.append(f"{where}:{node.lineno}: {node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fastzarr" and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and modules[node.value.id] != "fastzarr._core"
        ):
            found.append(f"{where}:{node.lineno}: {modules[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [c for p in files for c in crossings(p.read_text(), str(p.relative_to(PACKAGE)))]
    assert found == [], "\n".join(found)


def test_the_check_finds_each_kind_of_crossing() -> None:
    source = (
        "from fastzarr.cache import _canonical, Cache\n"
        "from fastzarr import writer, _sizes\n"
        "from fastzarr._core import _write_regions\n"
        "import fastzarr.loading as loading\n"
        "writer._slabs(1)\n"
        "loading._find_leaf(x)\n"
        "_sizes.parse_size(1)\n"
    )
    assert sorted(c.split(": ", 1)[1] for c in crossings(source, "sample")) == [
        "fastzarr.cache._canonical",
        "fastzarr.loading._find_leaf",
        "fastzarr.writer._slabs",
    ]
