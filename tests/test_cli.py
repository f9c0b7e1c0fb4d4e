"""The fastzarr command line, run in subprocesses: help, version, inspect, extract, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fastzarr.cli import _SUBCOMMANDS, build_parser
from fastzarr.testing import make_batches

SMALL = {"variables": 2, "file_ids": 3, "steps": 2, "lat": 8, "lon": 12}


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m fastzarr ARGS`` (or ``python -c CODE ARGS``), as a user would run it."""
    env = {k: v for k, v in os.environ.items() if k != "FASTZARR_LOG"}
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "fastzarr", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [str(p) for p in make_batches(tmp_path_factory.mktemp("cli"), batches=2, **SMALL)]


def reference(stores: list[str], **points: Any) -> xr.Dataset:
    """xarray's answer: sel on each store, concat, repeated file_ids dropped (keep the first)."""
    parts = [xr.open_zarr(s).sel(points, method="nearest") for s in stores]
    ds = xr.concat(parts, dim="file_id", data_vars="all", coords="different", compat="equals", join="outer")
    _, first = np.unique(ds["file_id"].values, return_index=True)
    return ds.isel(file_id=np.sort(first)).load()


def test_console_script_version() -> None:
    script = Path(sys.executable).with_name("fastzarr")
    assert script.exists(), "the console script is installed with the package"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.strip() == f"fastzarr {fz.__version__}"


def test_help_on_every_subcommand() -> None:
    names = list(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert names[:2] == ["inspect", "extract"]  # and whatever subcommands are added later
    assert len(_SUBCOMMANDS) == len(names)
    for args in (["--help"], *([n, "--help"] for n in names)):
        done = run(*args)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: fastzarr")
    assert "inspect" in run("--help").stdout


def test_usage_errors_exit_2(stores: list[str]) -> None:
    assert run().returncode == 2
    assert run("frobnicate").returncode == 2
    bad_point = run("extract", stores[0], "--point", "lat", "-o", "x.csv")
    assert bad_point.returncode == 2
    assert "NAME=VALUE" in bad_point.stderr
    mixed = run("extract", stores[0], "--point", "lat=1,lon=2", "--point", "lat=3", "-o", "x.csv")
    assert mixed.returncode == 2
    assert "same dimensions" in mixed.stderr


def test_inspect_text_and_json(stores: list[str]) -> None:
    text = run("inspect", stores[0], "--sample", "2")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("<fastzarr.InspectReport>")
    assert "var0001" in text.stdout
    done = run("inspect", stores[0], "--json", "--sample", "0")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    expected = fz.inspect(stores[0], sample=0).as_dict()
    assert [a["name"] for a in data["arrays"]] == [a["name"] for a in expected["arrays"]]
    for got, want in zip(data["arrays"], expected["arrays"], strict=True):
        assert got["shape"] == want["shape"]
        assert got["stored_bytes"] == want["stored_bytes"]
        assert got["chunks_missing"] == want["chunks_missing"] == 0


def test_user_error_is_one_line_unless_debug(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.zarr")
    done = run("inspect", absent)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fastzarr: error: StoreNotFoundError: ")
    assert absent in lines[0]
    debug = run("--debug", "inspect", absent)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert run("inspect", absent, "--debug").returncode == 1  # --debug after the subcommand too


def test_extract_to_zarr_matches_xarray(stores: list[str], tmp_path: Path) -> None:
    out = tmp_path / "point.zarr"
    done = run("extract", *stores, "--point", "lat=10.0,lon=100.0", "-o", str(out), "--report")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (zarr): 2 variables, file_id=5, step=2")
    # The duplicate file_id between the batches is dropped with a warning the user sees.
    assert "fastzarr: warning: DuplicateWarning: 1 repeated 'file_id' labels dropped" in done.stderr
    assert "<fastzarr.ExtractReport>" in done.stderr
    got = xr.open_zarr(out).load()
    xr.testing.assert_identical(got, reference(stores, lat=10.0, lon=100.0))
    again = run("extract", *stores, "--point", "lat=10.0,lon=100.0", "-o", str(out))
    assert again.returncode == 1
    assert "exists (use --overwrite" in again.stderr
    assert run("extract", *stores, "--point", "lat=1,lon=1", "-o", str(out), "--overwrite").returncode == 0


def test_extract_dry_run_prints_the_plan(stores: list[str]) -> None:
    plan = fz.extract_points(stores, points={"lat": 10.0, "lon": 100.0}, dry_run=True)
    assert isinstance(plan, fz.ExtractionPlan)
    done = run("extract", *stores, "--point", "lat=10.0,lon=100.0", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"extraction plan: 2 source(s), {plan.variables} variable(s)")
    assert f"chunks       {plan.chunks:,} (" in done.stdout
    assert "estimated" in done.stdout
    missing = run("extract", *stores, "--point", "lat=10.0,lon=100.0")
    assert missing.returncode == 2
    assert "-o/--output" in missing.stderr


def test_extract_formats(stores: list[str], tmp_path: Path) -> None:
    points = ["--point", "lat=10,lon=100", "--point", "lat=-30,lon=200"]
    expected, _ = fz.extract_points(
        stores, points={"lat": [10, -30], "lon": [100, 200]}, duplicates="keep", return_report=True
    )
    common = [*points, "--variables", "var0000,var0001", "--duplicates", "keep"]
    nc = tmp_path / "p.nc"
    assert run("extract", *stores, *common, "-o", str(nc)).returncode == 0
    xr.testing.assert_identical(xr.open_dataset(nc).load(), expected.drop_encoding())
    csv = tmp_path / "p.csv"
    assert run("extract", *stores, *common, "-o", str(csv)).returncode == 0
    frame = pd.read_csv(csv)
    want = expected.to_dataframe().reset_index()
    assert list(frame.columns) == list(want.columns)
    np.testing.assert_allclose(frame["var0000"], want["var0000"], rtol=1e-6)
    pq = tmp_path / "p.parquet"
    assert run("extract", *stores, *common, "-o", str(pq)).returncode == 0
    pd.testing.assert_frame_equal(pd.read_parquet(pq), expected.to_dataframe())
    unknown = run("extract", *stores, *common, "-o", str(tmp_path / "p.txt"))
    assert unknown.returncode == 1
    assert "--format" in unknown.stderr
    assert run("extract", *stores, *common, "-o", str(tmp_path / "p.txt"), "--format", "csv").returncode == 0


def test_extract_errors(stores: list[str], tmp_path: Path) -> None:
    raised = run(
        "extract", *stores, "--point", "lat=0,lon=0", "--duplicates", "raise", "-o", str(tmp_path / "r.csv")
    )
    assert raised.returncode == 1
    assert raised.stderr.startswith("fastzarr: error: DuplicateError: 1 repeated 'file_id' labels found")
    # the whole message: its header, the repeated label and its store, then the hint
    assert raised.stderr.strip().splitlines()[1:] == [
        f"  2 from {stores[1]}: identical",
        "fastzarr: --debug shows the traceback",
    ]
    missing = run(
        "extract", *stores, "--point", "lat=0,lon=0", "--variables", "nope", "-o", str(tmp_path / "m.csv")
    )
    assert missing.returncode == 1
    assert "variable 'nope' is in none of the sources" in missing.stderr
    # Parquet without pyarrow or fastparquet: a clear message, not an ImportError traceback.
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['fastparquet'] = None; "
        "from fastzarr.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    no_arrow = run(
        "extract", stores[0], "--point", "lat=0,lon=0", "-o", str(tmp_path / "p.parquet"), code=code
    )
    assert no_arrow.returncode == 1
    assert (
        "fastzarr: error: writing Parquet needs pyarrow or fastparquet: pip install pyarrow"
        in no_arrow.stderr
    )


# --- rewrite ---------------------------------------------------------------------------------


def test_rewrite_rechunks_and_converts(stores: list[str], tmp_path: Path) -> None:
    out = tmp_path / "ts.zarr"
    done = run(
        "rewrite", stores[0], str(out), "--chunks", "step=-1,lat=4", "--chunks", "lon=6",
        "--zarr-format", "2", "--codec", "zstd:1", "--variables", "var0001", "--max-memory", "1MB",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<fastzarr.RewriteReport>")
    assert "v2, zstd:1" in done.stdout
    reference = xr.open_zarr(stores[0])[["var0001"]].load()
    got = xr.open_zarr(out)
    xr.testing.assert_identical(got.load(), reference)
    assert got["var0001"].encoding["chunks"] == (1, 2, 4, 6)
    assert json.loads((out / "var0001" / ".zarray").read_text())["compressor"] == {"id": "zstd", "level": 1}
    # an existing DST is refused unless --overwrite; --json prints the report's values
    again = run("rewrite", stores[0], str(out))
    assert again.returncode == 1
    assert again.stderr.strip() == f"fastzarr: error: {out} exists (use --overwrite to replace it)"
    replaced = run("rewrite", stores[0], str(out), "--overwrite", "--json")
    assert replaced.returncode == 0, replaced.stderr
    report = json.loads(replaced.stdout)
    assert report["zarr_format"] == 3
    assert report["chunks"]["var0000"] == [1, 2, 8, 12]  # the source's chunks
    xr.testing.assert_identical(xr.open_zarr(out).load(), xr.open_zarr(stores[0]).load())


def test_rewrite_errors(stores: list[str], tmp_path: Path) -> None:
    out = str(tmp_path / "never.zarr")
    for usage in (
        ["--chunks", "lat=x"],
        ["--chunks", "lat"],
        ["--max-memory", "lots"],
        ["--zarr-format", "4"],
    ):
        done = run("rewrite", stores[0], out, *usage)
        assert done.returncode == 2, (usage, done.stderr)
        assert done.stderr.startswith("usage: fastzarr rewrite")
    assert run("rewrite", stores[0]).returncode == 2  # DST missing
    absent = str(tmp_path / "absent.zarr")
    missing = run("rewrite", absent, out)
    assert missing.returncode == 1
    assert missing.stderr.startswith("fastzarr: error: StoreNotFoundError: ")
    assert absent in missing.stderr
    small = run("rewrite", stores[0], out, "--max-memory", "100")
    assert small.returncode == 1
    lines = small.stderr.strip().splitlines()
    assert len(lines) == 1, small.stderr
    assert lines[0].startswith("fastzarr: error: MemoryBudgetError: max_memory of 100 bytes is too small")
    unknown = run("rewrite", stores[0], out, "--variables", "var0000,nope")
    assert unknown.returncode == 1
    assert "['nope'] are not data variables" in unknown.stderr
    assert not os.path.exists(out)


# --- cache -----------------------------------------------------------------------------------


@pytest.fixture
def filled_cache(stores: list[str], tmp_path: Path) -> fz.Cache:
    cache = fz.Cache(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fz.DuplicateWarning)
        fz.extract_points(stores, points={"lat": [10.0], "lon": [100.0]}, cache=cache)
    assert len(cache.entries()) == 3  # one per source and the combined result
    return cache


def test_cache_ls_text_and_json(filled_cache: fz.Cache) -> None:
    root = str(filled_cache.root)
    done = run("cache", "ls", "--root", root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["KEY", "SOURCE", "SIZE", "CREATED"]
    entries = filled_cache.entries()
    for line, entry in zip(lines[1:-1], entries, strict=True):
        assert line.startswith(entry.key[:12])
        assert entry.created[:19] in line
    assert lines[-1].startswith(f"3 entries, {fz.report.format_size(filled_cache.size)}, in {root}")
    listed = run("cache", "--root", root, "ls", "--json")  # --root before the action too
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["root"] == root
    assert [e["key"] for e in data["entries"]] == [e.key for e in entries]
    assert [e["size"] for e in data["entries"]] == [e.size for e in entries]
    assert all(e["size"] > 0 for e in data["entries"])
    # the default root comes from FASTZARR_CACHE_DIR
    env_code = f"import os, sys; os.environ['FASTZARR_CACHE_DIR'] = {root!r}; " + (
        "from fastzarr.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    assert run("cache", "ls", code=env_code).stdout.strip().splitlines()[-1].startswith("3 entries")


def test_cache_verify_prune_clear(filled_cache: fz.Cache) -> None:
    root = str(filled_cache.root)
    ok = run("cache", "verify", "--root", root)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"3 entries valid in {root}"
    victim = filled_cache.entries()[0]
    manifest = json.loads((victim.path / "manifest.json").read_text())
    chunk = victim.path / next(k for a, k, *_ in manifest["chunks"] if a.startswith("var"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    bad = run("cache", "verify", "--root", root)
    assert bad.returncode == 1
    assert bad.stdout.startswith(f"invalid {victim.key}: ")
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert lines[0].startswith("fastzarr: error: 1 of 3 cache entries are invalid")
    assert lines[0].endswith(victim.key)
    # verify moved it aside: the cache is usable, prune deletes the leftovers
    assert victim.key not in [e.key for e in filled_cache.entries()]
    assert len(filled_cache.entries()) == 2
    assert any((filled_cache.root / "invalid").iterdir())
    pruned = run("cache", "prune", "--root", root)
    assert pruned.returncode == 0, pruned.stderr
    # the entry verify set aside is among those prune removes, and counted
    assert pruned.stdout.strip().splitlines() == [
        f"removed {victim.key}",
        f"removed 1 entry; 2 left in {root}",
    ]
    again = run("cache", "prune", "--root", root)
    assert again.stdout.strip() == f"removed 0 entries; 2 left in {root}"
    assert not any((filled_cache.root / "invalid").iterdir())
    assert run("cache", "verify", "--root", root).returncode == 0
    cleared = run("cache", "clear", "--root", root)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == f"cleared 2 entries from {root}"
    assert filled_cache.entries() == []
    assert run("cache", "ls", "--root", root).stdout.strip().startswith("0 entries, 0 B")


def test_cache_usage_and_help() -> None:
    assert run("cache").returncode == 2
    assert run("cache", "frobnicate").returncode == 2
    assert run("cache", "ls", "--bogus").returncode == 2
    for action in ("ls", "verify", "prune", "clear"):
        done = run("cache", action, "--help")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: fastzarr cache {action}")
        assert "--root DIR" in done.stdout


def test_cache_ls_does_not_create_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "never" / "cache"
    done = run("cache", "ls", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"0 entries, 0 B, in {root} (least recently used first)"
    listed = run("cache", "ls", "--json", "--root", str(root))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"root": str(root), "entries": []}
    assert not (tmp_path / "never").exists()


def test_cache_ls_help_names_the_default_root(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FASTZARR_LOG"}
    env |= {"FASTZARR_CACHE_DIR": str(tmp_path / "my-cache"), "COLUMNS": "300"}
    command = [sys.executable, "-m", "fastzarr", "cache", "ls", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"(default: {tmp_path / 'my-cache'}: $FASTZARR_CACHE_DIR when set" in done.stdout
    assert not (tmp_path / "my-cache").exists()


def test_cache_ls_into_a_closed_pipe_is_quiet(filled_cache: fz.Cache) -> None:
    """``fastzarr cache ls | head -1``: the reader leaves early; no traceback follows."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails as it does once head has exited
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fastzarr", "cache", "ls", "--root", str(filled_cache.root)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""


def test_a_duplicate_error_is_printed_whole(stores: list[str], tmp_path: Path) -> None:
    out = str(tmp_path / "never.csv")
    done = run("extract", *stores, "--point", "lat=10,lon=100", "-o", out, "--duplicates", "raise")
    assert done.returncode == 1
    try:
        fz.extract_points(stores, points={"lat": 10, "lon": 100}, duplicates="raise", progress=False)
    except fz.DuplicateError as exc:
        message = str(exc)
    else:
        pytest.fail("the stores repeat a file_id")
    assert len(message.splitlines()) > 1  # a header, then one line per repeated label
    assert (
        done.stderr == f"fastzarr: error: DuplicateError: {message}\nfastzarr: --debug shows the traceback\n"
    )
    assert "more lines" not in done.stderr
    assert not os.path.exists(out)
