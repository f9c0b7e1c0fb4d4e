"""fastzarr.testing (make_batches, the assertions) and the pytest plugin's fixtures."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dask.array as da
import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
import zarr
from fastzarr.testing import (
    assert_cache_valid,
    assert_materialized,
    assert_not_all_nan,
    assert_same_as_xarray,
    assert_unique,
    make_batches,
)

SMALL: dict[str, Any] = {"batches": 2, "variables": 2, "file_ids": 3, "steps": 2, "lat": 4, "lon": 8}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_batches(tmp_path_factory.mktemp("testing"), **SMALL)


@pytest.fixture(scope="module")
def store(stores: list[Path]) -> Path:
    return stores[0]


# --------------------------------------------------------------------------------------------
# make_batches

# (zarr_format, codec, what the stored metadata says)
CODECS = [
    (2, "blosc:zstd:3:shuffle", {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1}),
    (2, "blosc:lz4:5:bitshuffle", {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2}),
    (2, "zstd:3", {"id": "zstd", "level": 3}),
    (2, "gzip:5", {"id": "gzip", "level": 5}),
    (2, "lz4", {"id": "lz4"}),
    (2, "none", None),
    (3, "blosc:zstd:3:shuffle", {"name": "blosc", "cname": "zstd", "clevel": 3, "shuffle": "shuffle"}),
    (3, "zstd:3", {"name": "zstd", "level": 3}),
    (3, "gzip:5", {"name": "gzip", "level": 5}),
    (3, "none", None),
]


def stored_compressor(array_dir: Path, zarr_format: int) -> dict[str, Any] | None:
    if zarr_format == 2:
        return json.loads((array_dir / ".zarray").read_text())["compressor"]
    codecs = json.loads((array_dir / "zarr.json").read_text())["codecs"]
    rest = [c for c in codecs if c["name"] != "bytes"]
    return None if not rest else {"name": rest[0]["name"], **rest[0].get("configuration", {})}


@pytest.mark.parametrize(
    ("zarr_format", "codec", "expected"), CODECS, ids=[f"v{f}-{c}" for f, c, _ in CODECS]
)
def test_make_batches(tmp_path: Path, zarr_format: int, codec: str, expected: dict[str, Any] | None) -> None:
    paths = make_batches(tmp_path, zarr_format=zarr_format, codec=codec, **SMALL)
    assert paths == [tmp_path / "batch_000.zarr", tmp_path / "batch_001.zarr"]
    opened = []
    for batch, path in enumerate(paths):
        # consolidated=True: xarray raises when the consolidated metadata is missing.
        ds = xr.open_zarr(path, consolidated=True, chunks=None, zarr_format=zarr_format).load()
        opened.append(ds)
        assert list(ds.data_vars) == ["var0000", "var0001"]
        assert dict(ds.sizes) == {"file_id": 3, "step": 2, "lat": 4, "lon": 8}
        assert ds.file_id.values.tolist() == [2 * batch, 2 * batch + 1, 2 * batch + 2]
        for name in ds.data_vars:
            assert ds[name].dims == ("file_id", "step", "lat", "lon")
            assert ds[name].dtype == np.float32
            assert ds[name].attrs == {"units": "K", "long_name": f"feature {int(str(name)[3:])}"}
            assert ds[name].encoding["chunks"] == (1, 2, 4, 8)
            assert np.isfinite(ds[name].values).all()
            got = stored_compressor(path / str(name), zarr_format)
            assert got is None if expected is None else got.items() >= expected.items(), got
        assert ds.lat.attrs["standard_name"] == "latitude"
        assert ds.lat.attrs["units"] == "degrees_north"
        assert ds.lon.attrs["units"] == "degrees_east"
        assert ds.attrs["Conventions"] == "CF-1.8"
    # The overlap: file_id 2 ends batch 0 and starts batch 1, with the same values.
    shared = opened[0].sel(file_id=2)
    xr.testing.assert_identical(shared.drop_attrs(), opened[1].sel(file_id=2).drop_attrs())
    assert not opened[0].var0000.sel(file_id=1).equals(opened[0].var0000.sel(file_id=2))
    # And fastzarr reads them as xarray does.
    assert_same_as_xarray(paths[1])


def test_make_batches_chunks_overlap_seed(tmp_path: Path) -> None:
    tiny = {"variables": 1, "steps": 2, "lat": 8, "lon": 16}
    paths = make_batches(
        tmp_path / "a", batches=3, file_ids=4, overlap=2, chunks={"step": 1, "lat": 2}, **tiny
    )
    ids = [xr.open_zarr(p, chunks=None).file_id.values.tolist() for p in paths]
    assert ids == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert xr.open_zarr(paths[0]).var0000.encoding["chunks"] == (1, 1, 2, 16)
    # Values depend on (seed, file_id, variable) only: same arguments, same bytes; another seed differs.
    again = make_batches(tmp_path / "b", batches=1, file_ids=4, **tiny)
    twice = make_batches(tmp_path / "c", batches=1, file_ids=4, **tiny)
    assert (again[0] / "var0000/3.0.0.0").read_bytes() == (twice[0] / "var0000/3.0.0.0").read_bytes()
    first = xr.open_zarr(paths[0], chunks=None).var0000.values
    np.testing.assert_array_equal(xr.open_zarr(again[0], chunks=None).var0000.values, first)
    other_seed = make_batches(tmp_path / "d", batches=1, file_ids=4, seed=1, **tiny)
    assert not np.array_equal(xr.open_zarr(other_seed[0], chunks=None).var0000.values, first)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 4}, r"overlap must be .* smaller than file_ids \(4\), not 4"),
        ({"overlap": -1}, "overlap must be at least 0"),
        ({"variables": 0}, "variables must be at least 1"),
        ({"chunks": {"time": 1}}, r"chunks names unknown dimensions \['time'\]"),
        ({"chunks": {"lat": 0}}, "chunk lengths must be positive integers"),
        ({"zarr_format": 4}, "zarr_format must be 2 or 3"),
        ({"codec": "snappy"}, "unknown codec 'snappy'"),
        ({"codec": "lz4", "zarr_format": 3}, "unknown codec 'lz4' for Zarr v3"),
        ({"codec": "blosc:zstd:3:sideways"}, "unknown blosc shuffle 'sideways'"),
    ],
)
def test_make_batches_rejects(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_batches(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------------------------
# assert_materialized


def test_materialized_passes(store: Path) -> None:
    loaded = fz.load(fz.open_zarr(store))
    assert_materialized(loaded)
    assert_materialized(loaded["var0000"])
    assert_materialized(loaded["var0000"].variable)
    assert_materialized(xr.open_zarr(store).load())
    assert_materialized(xr.open_zarr(store, chunks=None).isel(lat=0).compute())
    assert_materialized(np.zeros(3))
    # Values read through xarray's MemoryCachedArray stay cached there: in memory.
    lazy = xr.open_zarr(store, chunks=None)
    for name in lazy.data_vars:
        assert lazy[name].values.size
    assert_materialized(lazy)


@pytest.mark.parametrize(
    ("open_lazy", "backing"),
    [
        (xr.open_zarr, "a dask array"),
        (fz.open_zarr, "a dask array"),
        (lambda p: xr.open_zarr(p, chunks=None), r"lazy, backed by MemoryCachedArray > CopyOnWriteArray"),
        (lambda p: fz.open_zarr(p, chunks=None), r"FastzarrArrayWrapper"),
        (lambda p: xr.open_zarr(p, chunks=None).isel(file_id=[0, 2]), r"LazilyIndexedArray"),
        (lambda p: fz.open_zarr(p, chunks=None).sel(lat=slice(0, 90)), r"LazilyIndexedArray"),
    ],
    ids=["xr-dask", "fz-dask", "xr-lazy", "fz-lazy", "xr-isel", "fz-sel"],
)
def test_materialized_fails_on_lazy(store: Path, open_lazy: Any, backing: str) -> None:
    ds = open_lazy(store)
    with pytest.raises(
        AssertionError, match=r"2 of 6 variables in .*batch_000.zarr are not in memory"
    ) as info:
        assert_materialized(ds)
    message = str(info.value)
    assert "  var0000: " in message
    assert "  var0001: " in message
    assert "file_id:" not in message  # index coordinates are in memory
    assert all(line.startswith("  var") for line in message.splitlines()[1:])
    assert re.search(backing, message), message
    with pytest.raises(AssertionError, match=r"^1 of 5 variables is not in memory .*\n  var0001: "):
        assert_materialized(ds["var0001"])
    # Loading one variable leaves the other lazy.
    ds["var0000"].load()
    with pytest.raises(AssertionError, match=r"1 of 6 variables .* is not in memory .*\n  var0001: [^\n]*$"):
        assert_materialized(ds)


def test_materialized_names_lazy_coordinates() -> None:
    ds = xr.Dataset({"t": ("x", np.arange(3.0))}, coords={"station": ("x", da.arange(3, chunks=2))})
    with pytest.raises(
        AssertionError, match=r"^1 of 2 variables is not in memory .*\n  station: a dask array"
    ):
        assert_materialized(ds)
    with pytest.raises(AssertionError, match=r"station: a dask array"):
        assert_materialized(ds["t"])


def test_materialized_fails_on_other_objects(store: Path) -> None:
    with pytest.raises(AssertionError, match="got Array: a zarr array"):
        assert_materialized(zarr.open_array(store / "var0000", mode="r"))
    with pytest.raises(AssertionError, match="got Array: a dask array"):
        assert_materialized(da.zeros(3))
    with pytest.raises(AssertionError, match=r"got list: a builtins\.list, not a numpy array"):
        assert_materialized([1, 2])


# --------------------------------------------------------------------------------------------
# assert_unique


def test_unique(stores: list[Path]) -> None:
    one = xr.open_zarr(stores[0])
    assert_unique(one, "file_id")
    assert_unique(one["var0000"], "lat")
    both = xr.concat([one, xr.open_zarr(stores[1])], dim="file_id")
    with pytest.raises(AssertionError) as info:
        assert_unique(both, "file_id")
    assert str(info.value) == (
        f"'file_id' in {stores[0]} has 1 repeated label (1 duplicate entry among 6):\n"
        "  2 x2 at positions [2, 3]"
    )
    assert_unique(both, "lat")


def test_unique_lists_each_repeat() -> None:
    values = [5, 1, 5, 7, 7, 7, 9, 1]
    ds = xr.Dataset({"v": ("file_id", np.arange(8.0))}, coords={"file_id": values})
    with pytest.raises(AssertionError) as info:
        assert_unique(ds, "file_id")
    assert str(info.value).splitlines() == [
        "'file_id' has 3 repeated labels (4 duplicate entries among 8):",
        "  5 x2 at positions [0, 2]",
        "  1 x2 at positions [1, 7]",
        "  7 x3 at positions [3, 4, 5]",
    ]
    # NaN labels repeat too; a non-dimension coordinate works as well.
    nan_labels = xr.DataArray(
        np.arange(3), dims="x", coords={"x": [0.5, np.nan, np.nan], "s": ("x", list("aba"))}
    )
    with pytest.raises(AssertionError, match=r"nan x2 at positions \[1, 2\]"):
        assert_unique(nan_labels, "x")
    with pytest.raises(AssertionError, match=r"'s' has 1 repeated label .*\n  'a' x2 at positions \[0, 2\]"):
        assert_unique(nan_labels, "s")
    with pytest.raises(ValueError, match="'y' is not a coordinate"):
        assert_unique(nan_labels, "y")


# --------------------------------------------------------------------------------------------
# assert_not_all_nan


def nan_dataset() -> xr.Dataset:
    quarter = np.arange(8.0).reshape(2, 4)
    quarter[0, :2] = np.nan
    return xr.Dataset(
        {
            "quarter": (("y", "x"), quarter),
            "empty": (("y", "x"), np.full((2, 4), np.nan, dtype="f4")),
            "fine": (("y", "x"), np.ones((2, 4))),
            "count": (("y", "x"), np.zeros((2, 4), dtype="i4")),
            "when": ("x", np.array(["NaT"] * 4, dtype="datetime64[ns]")),
        }
    )


def test_not_all_nan(store: Path) -> None:
    assert_not_all_nan(xr.open_zarr(store))
    assert_not_all_nan(fz.load(fz.open_zarr(store)), max_fraction=0.0)
    ds = nan_dataset()
    with pytest.raises(AssertionError) as info:
        assert_not_all_nan(ds)
    assert str(info.value).splitlines() == [
        "2 variables are all NaN:",
        "  empty: 100.0% NaN (8 of 8 values)",
        "  when: 100.0% NaN (4 of 4 values)",
    ]
    assert_not_all_nan(ds, variables=["quarter", "fine", "count"])
    assert_not_all_nan(ds, variables=["quarter", "fine"], max_fraction=0.25)
    with pytest.raises(
        AssertionError, match=r"1 variable is more than 20.0% NaN, or all NaN:\n  quarter: 25.0%"
    ):
        assert_not_all_nan(ds, variables=["quarter", "fine", "count"], max_fraction=0.2)
    with pytest.raises(AssertionError, match=r"empty: 100.0% NaN"):
        assert_not_all_nan(ds["empty"])
    with pytest.raises(AssertionError, match=r"empty: 100.0% NaN"):
        assert_not_all_nan(ds.chunk({"y": 1}), variables="empty")  # dask-backed: computed
    with pytest.raises(AssertionError, match=r"variables \['rain'\] are missing"):
        assert_not_all_nan(ds, variables=["fine", "rain"])
    with pytest.raises(ValueError, match="max_fraction must be between 0 and 1"):
        assert_not_all_nan(ds, max_fraction=1.5)


def test_not_all_nan_names_the_store(tmp_path: Path) -> None:
    path = tmp_path / "holes.zarr"
    nan_dataset().to_zarr(path, zarr_format=2, consolidated=True)
    with pytest.raises(AssertionError, match=rf"2 variables in {path} are all NaN:\n  empty: "):
        assert_not_all_nan(xr.open_zarr(path))


# --------------------------------------------------------------------------------------------
# assert_same_as_xarray


@pytest.mark.parametrize(
    "selection",
    [
        {},
        {"file_id": slice(1, 2)},
        {"isel": {"lat": [0, 3], "step": 1}},
        {"lat": 10.0, "lon": [40.0, 200.0], "method": "nearest"},
        {"variables": ["var0001"], "file_id": 0},
    ],
    ids=["all", "sel-slice", "isel", "nearest", "one-variable"],
)
def test_same_as_xarray_passes(store: Path, selection: dict[str, Any]) -> None:
    assert_same_as_xarray(store, **selection)


def test_same_as_xarray_with_nan_fill_and_v3(tmp_path: Path) -> None:
    values = np.arange(24, dtype="f4").reshape(2, 3, 4)
    values[1, 2, 3] = np.nan
    ds = xr.Dataset({"t": (("a", "b", "c"), values, {"units": "K"})}, coords={"a": [10, 20]}, attrs={"x": 1})
    for fmt in (2, 3):
        path = tmp_path / f"v{fmt}.zarr"
        # v3 without consolidated metadata (zarr-python warns when consolidating v3).
        consolidated = fmt == 2
        make = {"zarr_format": fmt, "consolidated": consolidated, "encoding": {"t": {"chunks": (1, 2, 3)}}}
        ds.to_zarr(path, **make)
        assert_same_as_xarray(path, consolidated=consolidated)
        assert_same_as_xarray(path, consolidated=consolidated, a=20, isel={"b": slice(1, None)})


def test_same_as_xarray_group(tmp_path: Path) -> None:
    path = tmp_path / "grouped.zarr"
    inner = xr.Dataset({"t": (("y", "x"), np.arange(6.0).reshape(2, 3))}, coords={"y": [1, 2]})
    xr.Dataset({"top": ("z", np.ones(2))}).to_zarr(path, zarr_format=2, consolidated=False)
    inner.to_zarr(path, group="inner", zarr_format=2, consolidated=False)
    assert_same_as_xarray(path, group="inner", consolidated=False, y=2)
    assert_same_as_xarray(path, consolidated=False)


def corrupt_load(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """fastzarr.load, with ``change`` applied to its result: a read that differs from xarray's."""
    real = fz.load

    def load(ds: Any) -> Any:
        return change(real(ds))

    monkeypatch.setattr(fz, "load", load, raising=False)


def set_value(ds: xr.Dataset, name: str, index: Any, value: Any) -> xr.Dataset:
    values = ds[name].values.copy()
    values[index] = value
    changed = ds[name].variable.copy(data=values)
    return ds.assign_coords({name: changed}) if name in ds.coords else ds.assign({name: changed})


def test_same_as_xarray_names_the_first_difference(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt_load(
        monkeypatch, lambda ds: set_value(set_value(ds, "var0001", (1, 0, 2, 3), 0.0), "lat", 0, 0.0)
    )
    expected = xr.open_zarr(store, chunks=None)
    want = expected.var0001.values[1, 0, 2, 3]
    with pytest.raises(AssertionError) as info:
        assert_same_as_xarray(store)
    message = str(info.value)
    lat, lon = expected.lat.values[2], expected.lon.values[3]
    assert message == (
        f"fastzarr's read of {store} differs from xr.open_zarr's: variable 'var0001' differs at index "
        f"(1, 0, 2, 3) (file_id=1, step=0, lat={float(lat)!r}, lon={float(lon)!r}): "
        f"fastzarr read np.float32(0.0) (bits 0x0), xarray read {want!r} "
        f"(bits {int(np.float32(want).view(np.uint32)):#x}); 1 of 192 values differ\n"
        "  also differing: ['lat']"
    )
    # With a selection, the index is within the selection and the message says which.
    with pytest.raises(AssertionError, match=r"of .*batch_000.zarr \[file_id=slice\(1, 2, None\)\] differs"):
        assert_same_as_xarray(store, file_id=slice(1, 2))


def test_same_as_xarray_nan_bits_dtype_attrs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nan.zarr"
    values = np.ones((2, 3), dtype="f4")
    values[1, 1] = np.nan
    xr.Dataset({"t": (("y", "x"), values, {"units": "K"})}).to_zarr(path, zarr_format=2, consolidated=True)
    other_nan = np.array([0x7FC00001], dtype=np.uint32).view(np.float32)[0]
    with monkeypatch.context() as m:
        corrupt_load(m, lambda ds: set_value(ds, "t", (1, 1), other_nan))
        with pytest.raises(
            AssertionError,
            match=r"'t' differs at index \(1, 1\) \(y=1, x=1\): fastzarr read "
            r"np.float32\(nan\) \(bits 0x7fc00001\), xarray read np.float32\(nan\) \(bits 0x7fc00000\)",
        ):
            assert_same_as_xarray(path)
    with monkeypatch.context() as m:
        corrupt_load(m, lambda ds: ds.astype("f8", keep_attrs=True))
        with pytest.raises(AssertionError, match="'t' has dtype float64 instead of float32"):
            assert_same_as_xarray(path)
    with monkeypatch.context() as m:
        corrupt_load(m, lambda ds: ds.assign_attrs(extra=1))
        with pytest.raises(AssertionError, match=r"dataset attributes \{'extra': 1\} instead of \{\}"):
            assert_same_as_xarray(path)
    with monkeypatch.context() as m:
        corrupt_load(m, lambda ds: ds.drop_vars("t"))
        with pytest.raises(
            AssertionError, match=r"data variables: only fastzarr has \[\], only xarray has \['t'\]"
        ):
            assert_same_as_xarray(path)
    with monkeypatch.context() as m:
        corrupt_load(m, lambda ds: ds.chunk())
        with pytest.raises(AssertionError, match=r"fastzarr\.load's result for .* is not in memory"):
            assert_same_as_xarray(path)
    assert_same_as_xarray(path)


# --------------------------------------------------------------------------------------------
# assert_cache_valid: the interface of Cache.verify() ({key: problem} for invalid entries); the
# test against a real fastzarr.Cache comes with the cache.


class FakeCache:
    def __init__(self, result: Any) -> None:
        self.result = result

    def __repr__(self) -> str:
        return "Cache('/tmp/c')"

    def verify(self) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_cache_valid() -> None:
    assert_cache_valid(FakeCache({}))
    with pytest.raises(AssertionError) as info:
        assert_cache_valid(
            FakeCache({"ab12": "chunk var0000/0.0 checksum mismatch", "cd34": "manifest missing"})
        )
    assert str(info.value).splitlines() == [
        "Cache('/tmp/c'): 2 invalid entries (moved aside by verify()):",
        "  ab12: chunk var0000/0.0 checksum mismatch",
        "  cd34: manifest missing",
    ]
    with pytest.raises(AssertionError, match=r"Cache\('/tmp/c'\): verify\(\) failed: OSError: disk gone"):
        assert_cache_valid(FakeCache(OSError("disk gone")))


def test_cache_valid_on_a_real_cache(tmp_path: Path) -> None:
    sources = [str(p) for p in make_batches(tmp_path / "src", batches=2, variables=2, lat=8, lon=8)]
    cache = fz.Cache(tmp_path / "cache")
    with pytest.warns(fz.DuplicateWarning):
        fz.extract_points(sources, points={"lat": 0.0, "lon": 0.0}, cache=cache)
    assert_cache_valid(cache)  # fresh entries pass
    entry = next(e for e in cache.entries() if e.source == os.path.abspath(sources[0]))
    manifest = json.loads((entry.path / "manifest.json").read_text())
    chunk = entry.path / next(k for a, k, *_ in manifest["chunks"] if a.startswith("var"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match=rf"1 invalid entries.*\n  {entry.key}: "):
        assert_cache_valid(cache)
    assert_cache_valid(cache)  # the damaged entry was moved aside by verify()


# --------------------------------------------------------------------------------------------
# the pytest plugin


def test_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in points if p.name == "fastzarr"] == ["fastzarr.pytest_plugin"]
    assert pytestconfig.pluginmanager.has_plugin("fastzarr")


def test_plugin_loads_without_optional_modules() -> None:
    code = (
        "import sys, fastzarr.pytest_plugin\n"
        "print(sorted(m for m in ('xarray', 'zarr', 'dask', 'moto', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


PROJECT_INI = """
[pytest]
addopts = --strict-markers -ra -p no:cacheprovider
filterwarnings = error
"""

PROJECT_TESTS = """
from pathlib import Path

import fastzarr as fz
import xarray as xr
from fastzarr.testing import assert_materialized, assert_not_all_nan, assert_same_as_xarray, assert_unique


def test_batches(fastzarr_batches):
    assert [p.name for p in fastzarr_batches] == ["batch_000.zarr", "batch_001.zarr", "batch_002.zarr"]
    ds = fz.load(fz.open_zarr(fastzarr_batches[1]))
    assert_materialized(ds)
    assert_unique(ds, "file_id")
    assert_not_all_nan(ds)
    assert ds.file_id.values.tolist() == [3, 4, 5, 6]
    assert_same_as_xarray(fastzarr_batches[2], file_id=slice(6, 7))


def test_batches_are_per_session(fastzarr_batches, tmp_path_factory):
    assert fastzarr_batches[0].parent.parent == tmp_path_factory.getbasetemp()


def test_s3(fastzarr_s3, fastzarr_batches):
    assert fastzarr_s3.urls == [f"s3://fastzarr-test/{p.name}" for p in fastzarr_batches]
    assert fastzarr_s3.url == fastzarr_s3.urls[0]
    options = fastzarr_s3.storage_options
    assert options["endpoint"] == fastzarr_s3.endpoint_url
    assert options["endpoint"].startswith("http://127.0.0.1:")
    assert options["allow_http"] == "true"
    Path("endpoint.txt").write_text(fastzarr_s3.endpoint_url)
    client = fastzarr_s3.client()
    for local in fastzarr_batches:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket="fastzarr-test", Prefix=local.name + "/"
        )
        listed = {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
        files = {
            f"{local.name}/{p.relative_to(local).as_posix()}": p for p in local.rglob("*") if p.is_file()
        }
        assert listed == {key: path.stat().st_size for key, path in files.items()}
        for key in (f"{local.name}/.zmetadata", f"{local.name}/var0002/3.0.0.0"):
            body = client.get_object(Bucket="fastzarr-test", Key=key)["Body"].read()
            assert body == files[key].read_bytes()
    # xarray reads the uploaded store through s3fs exactly as the local one.
    options = fastzarr_s3.fsspec_storage_options
    remote = xr.open_zarr(fastzarr_s3.urls[2], storage_options=options, chunks=None)
    xr.testing.assert_identical(remote.load(), xr.open_zarr(fastzarr_batches[2], chunks=None).load())
    # ... and so does fastzarr, bit for bit against xarray through s3fs.
    assert_same_as_xarray(
        fastzarr_s3.urls[1],
        storage_options=fastzarr_s3.storage_options,
        xarray_storage_options=fastzarr_s3.fsspec_storage_options,
        lat=slice(60, 0),
    )
"""


def test_fixtures_in_a_throwaway_project(pytester: pytest.Pytester) -> None:
    pytester.makeini(PROJECT_INI)
    pytester.makepyfile(test_pipeline=PROJECT_TESTS)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=3)
    # The S3 server listened on 127.0.0.1 and was stopped at the end of the session.
    endpoint = urlsplit((pytester.path / "endpoint.txt").read_text())
    assert endpoint.hostname == "127.0.0.1"
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((endpoint.hostname, endpoint.port), 5),
    ):
        pass


def test_fixture_parameters_and_missing_moto(pytester: pytest.Pytester) -> None:
    pytester.makeini(PROJECT_INI)
    pytester.makeconftest(
        """
        import sys

        import pytest

        sys.modules["moto"] = None  # as if moto were not installed


        @pytest.fixture(scope="session")
        def fastzarr_batch_params():
            return {"batches": 1, "variables": 2, "file_ids": 2, "lat": 4, "lon": 4, "steps": 1}
        """
    )
    pytester.makepyfile(
        test_params="""
        import xarray as xr

        def test_params(fastzarr_batches):
            (path,) = fastzarr_batches
            assert dict(xr.open_zarr(path).sizes) == {"file_id": 2, "step": 1, "lat": 4, "lon": 4}

        def test_s3(fastzarr_s3):
            raise AssertionError("not reached: skipped")
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*SKIPPED*fastzarr_s3 needs moto[[]server[]] and boto3: pip install 'fastzarr[[]testing[]]'*"]
    )


def test_cache_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeini(PROJECT_INI)
    pytester.makepyfile(
        test_cache="""
        from pathlib import Path

        import fastzarr

        def test_cache(fastzarr_cache, tmp_path):
            assert isinstance(fastzarr_cache, fastzarr.Cache)
            assert Path(fastzarr_cache.root) == tmp_path / "fastzarr-cache"
            assert list(fastzarr_cache.entries()) == []
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_readme_example(pytester: pytest.Pytester) -> None:
    """The example test of the README's "Guard your pipeline in CI" runs and passes as printed."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Guard your pipeline in CI", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.splitlines()) <= 20
    pytester.makeini(PROJECT_INI)
    pytester.makepyfile(test_readme=example)
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
