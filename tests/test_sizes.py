"""Sizes (``max_memory``, ``max_size``, ``--max-memory``): one grammar and one error message at
every Python entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import fastzarr._sizes as sizes_module
import numpy as np
import pytest
import xarray as xr
from fastzarr._sizes import parse_size
from fastzarr.testing import make_batches

AVAILABLE = 10 * 10**9
"""What the memory available now is made to be, so that "20%" has one answer."""

ACCEPTED = {"20%": AVAILABLE // 5, "2GiB": 2 * 2**30, "512 MB": 512 * 10**6}
INVALID = 'invalid max_memory \'abc\': give bytes as an int, or a string like "2GB", "512 MiB" or "20%"'


@pytest.fixture(autouse=True)
def fixed_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sizes_module, "available_memory", lambda: AVAILABLE)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = tmp_path_factory.mktemp("sizes")
        return [
            str(p) for p in make_batches(path, batches=2, variables=2, file_ids=3, steps=2, lat=8, lon=12)
        ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2048, 2048),
        (2048.0, 2048),
        ("2048", 2048),
        (" 2048 B ", 2048),
        ("2GB", 2 * 10**9),
        ("2gb", 2 * 10**9),
        ("2GiB", 2 * 2**30),
        ("2 gib", 2 * 2**30),
        ("512 MB", 512 * 10**6),
        ("512 MiB", 512 * 2**20),
        ("1.5 GB", 1_500_000_000),
        ("100kB", 100_000),
        ("100KiB", 102_400),
        ("3TB", 3 * 10**12),
        ("1TiB", 2**40),
        ("20%", AVAILABLE // 5),
        ("100%", AVAILABLE),
        ("0.5%", AVAILABLE // 200),
        (None, None),
    ],
)
def test_the_grammar(value: Any, expected: int | None) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value",
    ["abc", "", "0", "0GB", "-5MB", "2 parsecs", "2G", "1.5", "0%", "150%", "20 %%", "1e9", 0, -1, 1.5, True,
     float("inf"), float("nan"), [2048]],
)  # fmt: skip
def test_anything_else_is_one_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="give bytes as an int") as info:
        parse_size(value)
    assert (
        str(info.value)
        == f'invalid max_memory {value!r}: give bytes as an int, or a string like "2GB", "512 MiB" or "20%"'
    )
    with pytest.raises(ValueError, match=r"^invalid max_size "):
        parse_size(value, name="max_size")


def test_extract_points(stores: list[str]) -> None:
    points = {"lat": [10.0, -40.0], "lon": 100.0}
    want = fz.extract_points(stores, points=points, duplicates="keep", progress=False)
    for size in ACCEPTED:
        got = fz.extract_points(stores, points=points, duplicates="keep", max_memory=size, progress=False)
        xr.testing.assert_identical(got, want)
    with pytest.raises(ValueError, match=r"^invalid max_memory") as info:
        fz.extract_points(stores, points=points, max_memory="abc")
    assert str(info.value) == INVALID


def test_load(stores: list[str]) -> None:
    want = xr.open_zarr(stores[0]).load()
    for size in ACCEPTED:
        got = fz.load(fz.open_zarr(stores[0]), max_memory=size)
        xr.testing.assert_identical(got, want)
    ds = fz.open_zarr(stores[0])
    with pytest.raises(ValueError, match=r"^invalid max_memory") as info:
        fz.load(ds, max_memory="abc")
    assert str(info.value) == INVALID
    assert not ds["var0000"].variable._in_memory


def test_cache_max_size(tmp_path: Path) -> None:
    for size, expected in ACCEPTED.items():
        assert fz.Cache(tmp_path / "cache", max_size=size).max_size == expected
    with pytest.raises(ValueError, match=r"^invalid max_size") as info:
        fz.Cache(tmp_path / "cache", max_size="abc")
    assert str(info.value) == INVALID.replace("max_memory", "max_size")


def test_rewrite(stores: list[str], tmp_path: Path) -> None:
    for k, (size, expected) in enumerate(ACCEPTED.items()):
        report = fz.rewrite(stores[0], tmp_path / f"out{k}.zarr", max_memory=size, progress=False)
        assert report.max_memory == expected
        xr.testing.assert_identical(
            xr.open_zarr(tmp_path / f"out{k}.zarr").load(), xr.open_zarr(stores[0]).load()
        )
    with pytest.raises(ValueError, match=r"^invalid max_memory") as info:
        fz.rewrite(stores[0], tmp_path / "never.zarr", max_memory="abc", progress=False)
    assert str(info.value) == INVALID
    assert not (tmp_path / "never.zarr").exists()


def test_to_zarr(tmp_path: Path) -> None:
    ds = xr.Dataset({"t": (("y", "x"), np.arange(12.0).reshape(3, 4))}).chunk({"y": 1})
    for k, size in enumerate(ACCEPTED):
        fz.to_zarr(ds, tmp_path / f"out{k}.zarr", max_memory=size)
        xr.testing.assert_identical(xr.open_zarr(tmp_path / f"out{k}.zarr").load(), ds.load())
    with pytest.raises(ValueError, match=r"^invalid max_memory") as info:
        fz.to_zarr(ds, tmp_path / "never.zarr", max_memory="abc")
    assert str(info.value) == INVALID


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FASTZARR_LOG"}
    command = [sys.executable, "-m", "fastzarr", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_cli_max_memory(stores: list[str], tmp_path: Path) -> None:
    for k, size in enumerate(ACCEPTED):
        out = tmp_path / f"points{k}.csv"
        done = run_cli("extract", *stores, "--point", "lat=10,lon=100", "-o", str(out), "--max-memory", size)
        assert done.returncode == 0, done.stderr
        assert out.exists()
        rewritten = tmp_path / f"out{k}.zarr"
        done = run_cli("rewrite", stores[0], str(rewritten), "--max-memory", size, "--json")
        assert done.returncode == 0, done.stderr
        assert rewritten.exists()
    for command in (
        ["extract", *stores, "--point", "lat=10", "-o", str(tmp_path / "x.csv")],
        ["rewrite", stores[0], str(tmp_path / "x.zarr")],
    ):
        done = run_cli(*command, "--max-memory", "abc")
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].endswith(INVALID.replace("max_memory", "--max-memory"))


def test_array_read_and_read_many(stores: list[str]) -> None:
    """Array.read and read_many parse their sizes themselves (in the compiled core): the same
    units, and a ValueError naming max_memory for anything else."""
    arr = fz.open_group(stores[0])["var0000"]
    assert isinstance(arr, fz.Array)
    want = arr[...]
    for size in ("2GiB", "512 MB", "1.5 GB", "100kB", "100KiB", "20480"):
        np.testing.assert_array_equal(arr.read(max_memory=size), want)
        np.testing.assert_array_equal(fz.read_many([(arr, ...)], max_memory=size)[0], want)
    for read in (lambda: arr.read(max_memory="abc"), lambda: fz.read_many([(arr, ...)], max_memory="abc")):
        with pytest.raises(ValueError, match="max_memory"):
            read()


def test_array_read_takes_a_percentage_and_whole_floats(stores: list[str]) -> None:
    arr = fz.open_group(stores[0])["var0000"]
    assert isinstance(arr, fz.Array)
    np.testing.assert_array_equal(arr.read(max_memory="20%"), arr[...])
    [many] = fz.read_many([(arr, ...)], max_memory=float(2**30))
    np.testing.assert_array_equal(many, arr[...])
