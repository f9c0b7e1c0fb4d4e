"""No fastzarr module imports another module's private names (``from fastzarr.x import _name``,
``from .x import _name`` or ``x._name``); private modules themselves (``fastzarr._sizes``,
``fastzarr.extract._planning``) are the package's to share, so what a subpackage's modules share
is public within them.

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


def module_of(path: Path) -> str:
    """The dotted name of a file of the package (a package's ``__init__.py`` is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    """The module an import takes names from, relative imports resolved against ``module``."""
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def crossings(
    source: str, where: str, module: str = "fastzarr.sample", is_package: bool = False
) -> list[str]:
    """``where:line: module.name`` for every private name of another fastzarr module used;
    ``module`` is the file's own dotted name (``is_package`` for an ``__init__.py``), against
    which its relative imports are resolved."""
    tree = ast.parse(source)
    found: list[str] = []
    modules: dict[str, str] = {}  # local alias -> fastzarr module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            origin = _absolute(node, module, is_package)
            if not origin or origin.split(".")[0] != "fastzarr":
                continue
            for alias in node.names:
                dotted = f"{origin}.{alias.name}"
                if _is_module(dotted):
                    modules[alias.asname or alias.name] = dotted
                elif _private(alias.name) and origin != "fastzarr._core":
                    found.append(f"{where}:{node.lineno}: {origin}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fastzarr":
                    # ``import fastzarr.x`` binds ``fastzarr``; ``import fastzarr.x as y`` binds y.
                    modules[alias.asname or "fastzarr"] = alias.name if alias.asname else "fastzarr"

    def resolve(node: ast.expr) -> str | None:
        """The fastzarr module an expression names (``x``, ``fastzarr.extract._planning``), or None."""
        if isinstance(node, ast.Name):
            return modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = resolve(node.value)
            if base is not None and _is_module(f"{base}.{node.attr}"):
                return f"{base}.{node.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = resolve(node.value)
            if base is not None and base != "fastzarr._core" and not _is_module(f"{base}.{node.attr}"):
                found.append(f"{where}:{node.lineno}: {base}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    assert any(p.parent != PACKAGE for p in files)  # subpackages are looked at too
    found = [
        c
        for p in files
        for c in crossings(
            p.read_text(), str(p.relative_to(PACKAGE)), module_of(p), is_package=p.name == "__init__.py"
        )
    ]
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


def test_the_check_understands_subpackages() -> None:
    source = (
        "from ._planning import _plain, Job\n"
        "from . import _assembly\n"
        "from .. import _sizes, errors\n"
        "from .._core import _exchange\n"
        "from fastzarr.extract._opening import _remaining\n"
        "import fastzarr.extract._cached\n"
        "_assembly._CONCAT_GROUP\n"
        "_assembly.concat(p, d)\n"
        "errors._hidden\n"
        "_sizes.parse_size(1)\n"
        "fastzarr.extract._cached._source_key(n)\n"
        "fastzarr.extract._distributed.read_distributed\n"
    )
    assert module_of(PACKAGE / "extract" / "_opening.py") == "fastzarr.extract._opening"
    assert module_of(PACKAGE / "extract" / "__init__.py") == "fastzarr.extract"
    found = crossings(source, "sample", "fastzarr.extract._duplicates")
    assert sorted(c.split(": ", 1)[1] for c in found) == [
        "fastzarr.errors._hidden",
        "fastzarr.extract._assembly._CONCAT_GROUP",
        "fastzarr.extract._cached._source_key",
        "fastzarr.extract._opening._remaining",
        "fastzarr.extract._planning._plain",
    ]
    # In a package's __init__.py, "." is the package itself.
    found = crossings("from ._planning import _plain\n", "sample", "fastzarr.extract", is_package=True)
    assert [c.split(": ", 1)[1] for c in found] == ["fastzarr.extract._planning._plain"]
