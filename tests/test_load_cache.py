"""fastzarr.load(ds, cache=): whole selections cached, keyed by their exact provenance."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
import zarr
from fastzarr.cache import Cache, CacheError, CacheWarning, SuspiciousDataError
from fastzarr.writer import to_zarr
from xarray.coding.variables import lazy_elemwise_func

from tests.conftest import quiet_zarr
from tests.test_writer import open_xr, sample_dataset

Opener = Callable[[Path], xr.Dataset]

OPENERS: dict[str, Opener] = {
    "fastzarr lazy": lambda p: fz.open_zarr(p, chunks=None),
    "fastzarr dask": fz.open_zarr,
    "engine=fastzarr": lambda p: xr.open_dataset(p, engine="fastzarr"),
    "xarray dask": open_xr,
    "xarray lazy": lambda p: open_xr(p, chunks=None),
}


def select(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(time=slice(1, 4), lat=[0, 2, 5])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    to_zarr(sample_dataset(), tmp_path / "s.zarr")
    return tmp_path / "s.zarr"


def numpy_backed(ds: xr.Dataset) -> bool:
    return all(isinstance(v._data, np.ndarray) or v._in_memory for v in ds.variables.values())


@pytest.mark.parametrize("opener", list(OPENERS))
def test_hit_equals_uncached_load(tmp_path: Path, store: Path, opener: str) -> None:
    open_ = OPENERS[opener]
    cache = Cache(tmp_path / "cache")
    expected = select(open_(store)).load()
    cold = fz.load(select(open_(store)), cache=cache)
    assert (cache.stats.misses, cache.stats.hits) == (1, 0)
    warm = fz.load(select(open_(store)), cache=cache)
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    for result in (cold, warm):
        xr.testing.assert_identical(result, expected)
        assert numpy_backed(result)
    assert len(cache.entries()) == 1
    # a DataArray of the same store is a selection of its own
    da = fz.load(select(open_(store))["temp"], cache=cache)
    xr.testing.assert_identical(da, expected["temp"])
    assert fz.load(select(open_(store))["temp"], cache=cache).equals(expected["temp"])
    assert cache.stats.hits == 2


HIT_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import sys
    import fastzarr as fz
    store, root = sys.argv[1], sys.argv[2]
    cache = fz.Cache(root)
    fz.load(fz.open_zarr(store).isel(time=slice(1, 4), lat=[0, 2, 5]), cache=cache)
    print(cache.stats.hits, cache.stats.misses)
    """
)


def test_the_key_is_the_same_in_another_process(tmp_path: Path, store: Path) -> None:
    """Dask names and lazy chains are hashed by content, not by object identity: a new process
    opening the same store hits the entry made by this one."""
    cache = Cache(tmp_path / "cache")
    fz.load(select(fz.open_zarr(store)), cache=cache)
    out = subprocess.run(
        [sys.executable, "-c", HIT_IN_ANOTHER_PROCESS, str(store), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["1", "0"]


def test_what_shapes_the_result_is_in_the_key(tmp_path: Path, store: Path) -> None:
    cache = Cache(tmp_path / "cache")
    base = fz.open_zarr(store, chunks=None)
    variants = {
        "selection": select(base),
        "other selection": base.isel(time=slice(1, 4), lat=[0, 2, 6]),
        "other variables": select(base)[["temp", "count"]],
        "other coordinate values": select(base).assign_coords(lat=select(base)["lat"] + 1),
        "not decoded": select(fz.open_zarr(store, chunks=None, mask_and_scale=False)),
        "other attributes": select(base).assign_attrs(title="other"),
    }
    for n, (name, ds) in enumerate(variants.items(), start=1):
        expected = ds.copy(deep=True).load()
        result = fz.load(ds, cache=cache)
        assert cache.stats.misses == n, name
        xr.testing.assert_identical(result, expected)
    assert len(cache.entries()) == len(variants)
    # each of them is now a hit, with its own values
    scaled = fz.load(select(fz.open_zarr(store, chunks=None, mask_and_scale=False)), cache=cache)
    assert scaled["scaled"].dtype == np.dtype("i2")
    assert cache.stats.hits == 1


def test_changed_source_is_a_miss(tmp_path: Path, store: Path) -> None:
    cache = Cache(tmp_path / "cache")
    before = fz.load(select(fz.open_zarr(store)), cache=cache)
    to_zarr(sample_dataset(seed=1), store, mode="w")
    after = fz.load(select(fz.open_zarr(store)), cache=cache)
    assert cache.stats.misses == 2
    xr.testing.assert_identical(after, select(fz.open_zarr(store)).load())
    assert not after["temp"].equals(before["temp"])
    # appending (same selection, longer store) is a change of the source too
    more = sample_dataset(seed=2).isel(time=[0])
    more = more.assign_coords(time=more["time"] + np.timedelta64(30, "D"))
    to_zarr(more, store, mode="a", append_dim="time")
    fz.load(select(fz.open_zarr(store)), cache=cache)
    assert cache.stats.misses == 3


def test_unknown_provenance_is_refused(tmp_path: Path, store: Path) -> None:
    cache = Cache(tmp_path / "cache")
    with pytest.raises(CacheError, match="reads no Zarr store"):
        fz.load(sample_dataset(), cache=cache)
    memory = zarr.storage.MemoryStore()
    with quiet_zarr():
        sample_dataset().to_zarr(memory, zarr_format=3, consolidated=True)
        in_memory_store = xr.open_zarr(memory, chunks=None)
    with pytest.raises(CacheError, match="not a local directory"):
        fz.load(in_memory_store, cache=cache)
    lazy = fz.open_zarr(store, chunks=None)
    var = lazy["temp"].variable
    # lazily computed by a lambda: its result depends on more than any name says
    shifted = xr.Variable(var.dims, lazy_elemwise_func(var._data, lambda b: b + 1, var.dtype), var.attrs)
    computed = lazy.assign(temp=shifted)
    with pytest.raises(CacheError, match=r"variable 'temp'.*lambda"):
        fz.load(computed, cache=cache)
    assert cache.entries() == []


def test_damaged_entry_is_rebuilt(tmp_path: Path, store: Path) -> None:
    cache = Cache(tmp_path / "cache")
    expected = select(fz.open_zarr(store)).load()
    fz.load(select(fz.open_zarr(store)), cache=cache)
    (entry,) = cache.entries()
    chunk = max((p for p in entry.path.rglob("*") if p.is_file() and "c" in p.parts), key=os.path.getsize)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="invalid"):
        again = fz.load(select(fz.open_zarr(store)), cache=cache)
    xr.testing.assert_identical(again, expected)
    assert cache.stats.misses == 2


def test_all_nan_is_refused(tmp_path: Path) -> None:
    ds = sample_dataset()[["temp"]]
    ds["temp"][:] = np.nan
    to_zarr(ds, tmp_path / "nan.zarr")
    cache = Cache(tmp_path / "cache")
    with pytest.raises(SuspiciousDataError, match="temp"):
        fz.load(fz.open_zarr(tmp_path / "nan.zarr"), cache=cache)
    loaded = fz.load(fz.open_zarr(tmp_path / "nan.zarr"), cache=cache, allow_nan=True)
    assert bool(loaded["temp"].isnull().all())
