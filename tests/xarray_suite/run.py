"""Runs xarray's zarr backend tests (from the installed xarray) through fastzarr.

    python tests/xarray_suite/run.py [--keep DIR]

1. Every selected test runs once with the ``xarray_routing`` plugin routing xarray's
   read-only opens of local Zarr stores to ``engine="fastzarr"``; the plugin records how many
   opens each test routed.
2. The tests that routed at least one open run again with xarray's own zarr engine: the
   baseline. A test that routed nothing ran exactly as it does with xarray's engine (the
   routing entrypoint then only calls xarray's), so its first outcome is its baseline outcome.

Fails (exit status 1) when a test that passes with xarray's engine and is not listed in
``not_applicable.txt`` fails through fastzarr or passes without reaching fastzarr, and when a
listed test passes through fastzarr (its entry is stale). Prints the counts.

The selection: ``ZarrBase``'s suite over a local directory (``TestZarrDirectoryStore``); of the
classes that inherit it, only the tests they add (their inherited tests are the same tests
over the same local directory, or over in-memory stores no open of which can reach
fastzarr); xarray's other zarr test classes and zarr test functions; and the zarr DataTree
tests.
"""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from xarray.tests import test_backends, test_backends_datatree
from xarray_routing import read_outcomes

HERE = Path(__file__).resolve().parent
NOT_APPLICABLE = HERE / "not_applicable.txt"
XARRAY = Path(test_backends.__file__).resolve().parent.parent

#: Classes whose every test is selected.
WHOLE_CLASSES = {
    test_backends: (
        "TestZarrDirectoryStore",
        "TestInstrumentedZarrStore",
        "TestDataArrayToZarr",
        "TestZarrRectilinearChunksRead",
        "TestNCZarr",
        "TestZarrRegionAuto",
    ),
    test_backends_datatree: ("TestZarrDatatreeIO",),
}
#: ``ZarrBase`` subclasses of which only the tests they define themselves are selected.
OWN_TESTS_ONLY = ("TestZarrWriteEmpty", "TestZarrDictStore", "TestZarrNoConsolidatedMetadataSupport")


def _file_id(module: object) -> str:
    return Path(inspect.getfile(module)).resolve().relative_to(XARRAY).as_posix()  # type: ignore[arg-type]


def selection() -> list[str]:
    """Node ids (classes, tests) of the tests to run, relative to the xarray package."""
    selected: list[str] = []
    for module, classes in WHOLE_CLASSES.items():
        selected.extend(f"{_file_id(module)}::{name}" for name in classes if hasattr(module, name))
    file_id = _file_id(test_backends)
    for name in OWN_TESTS_ONLY:
        cls = getattr(test_backends, name, None)
        if cls is not None:
            selected.extend(f"{file_id}::{name}::{test}" for test in vars(cls) if test.startswith("test"))
    selected.extend(
        f"{file_id}::{name}"
        for name, value in vars(test_backends).items()
        if name.startswith("test") and "zarr" in name and inspect.isfunction(value)
    )
    return selected


def read_not_applicable(path: Path = NOT_APPLICABLE) -> dict[str, str]:
    """Entries of the list: node id (a test, every parameter of a test, or a class) -> reason."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        nodeid, sep, reason = text.partition(" # ")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}:{number}: an entry is 'NODEID # REASON'")
        if nodeid.strip() in entries:
            raise SystemExit(f"{path}:{number}: {nodeid.strip()} is listed twice")
        entries[nodeid.strip()] = reason.strip()
    return entries


def listed_reason(nodeid: str, entries: dict[str, str]) -> str | None:
    """The reason ``nodeid`` is listed (by itself, without its parameters, or by its class)."""
    candidates = [nodeid, nodeid.split("[", 1)[0]]
    parts = candidates[1].split("::")
    candidates.extend("::".join(parts[:i]) for i in range(len(parts) - 1, 1, -1))
    for candidate in candidates:
        if candidate in entries:
            return entries[candidate]
    return None


def run_pytest(nodeids: Sequence[str], outcomes: Path, *, route: bool) -> float:
    """Runs the tests in a fresh interpreter; returns the wall time in seconds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(HERE / "pytest.ini"),
        "--rootdir",
        str(XARRAY),
        "-q",
        "--disable-warnings",
        "--no-header",
        "--tb=short",
        "-p",
        "no:cacheprovider",
        "--outcomes-json",
        str(outcomes),
        *(["--route-to-fastzarr"] if route else []),
        *(str(XARRAY / nodeid) for nodeid in nodeids),
    ]
    start = time.monotonic()
    subprocess.run(command, cwd=HERE, env=env, check=False)
    if not outcomes.exists():
        raise SystemExit(f"pytest wrote no outcomes ({' '.join(command)})")
    return time.monotonic() - start


def _show(title: str, nodeids: Iterable[str]) -> None:
    ordered = sorted(nodeids)
    if ordered:
        print(f"\n{title} ({len(ordered)}):")
        for nodeid in ordered:
            print(f"  {nodeid}")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs both passes, prints the counts; 1 when a baseline-passing test regressed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write the passes' outcomes (JSON) into this folder")
    args = parser.parse_args(argv)
    entries = read_not_applicable()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        print("== xarray's zarr backend tests, opens routed to fastzarr")
        run_pytest(selection(), folder / "fastzarr.json", route=True)
        routed = read_outcomes(folder / "fastzarr.json")
        reached = sorted(nodeid for nodeid, record in routed.items() if record["routed"])
        print(f"\n== the {len(reached)} tests that reached fastzarr, with xarray's zarr engine")
        baseline = {nodeid: record for nodeid, record in routed.items() if not record["routed"]}
        if reached:
            run_pytest(reached, folder / "baseline.json", route=False)
            baseline.update(read_outcomes(folder / "baseline.json"))
    wall = time.monotonic() - start

    baseline_passed = {n for n, r in baseline.items() if r["outcome"] == "passed"}
    through = {n for n, r in routed.items() if r["outcome"] == "passed" and r["routed"]}
    listed = {n: reason for n in routed if (reason := listed_reason(n, entries)) is not None}
    regressed = {n for n in baseline_passed - through - set(listed) if routed.get(n, {}).get("routed")}
    unreached = {n for n in baseline_passed - through - set(listed) if not routed.get(n, {}).get("routed")}
    stale = {n for n in listed if n in through}
    unused = {e for e in entries if not any(listed_reason(n, {e: ""}) is not None for n in routed)}

    _show("FAILED through fastzarr, passes with xarray's engine, not listed", regressed)
    _show("passes without reaching fastzarr, not listed (list it with its reason)", unreached)
    _show("listed but passes through fastzarr (remove its entry)", stale)
    _show("entries that name no test that ran (remove them)", unused)
    by_reason = Counter(reason.split(":", 1)[0] for n, reason in listed.items() if n in baseline_passed)
    print(f"\nxarray's zarr backend tests, {len(routed)} run ({wall:.0f} s):")
    print(f"  {len(baseline_passed)} pass with xarray's zarr engine (the baseline)")
    print(f"  {len(through & baseline_passed)} of them pass through fastzarr")
    print(f"  {sum(by_reason.values())} of them are listed in {NOT_APPLICABLE.name}:")
    for reason, count in sorted(by_reason.items(), key=lambda item: (-item[1], item[0])):
        print(f"    {count:4d}  {reason}")
    problems = len(regressed) + len(unreached) + len(stale) + len(unused)
    if problems:
        print(f"  {problems} problems (above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
