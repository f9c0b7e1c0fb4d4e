"""``max_memory``: a read that would need more memory than allowed is refused with
``fastzarr.MemoryBudgetError`` before anything is allocated; within the budget it reads as usual."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import write_array

SHAPE = (64, 48)
CHUNKS = (8, 8)
CHUNK_BYTES = 8 * 8 * 8
OUTPUT_BYTES = 64 * 48 * 8


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    data = np.arange(np.prod(SHAPE), dtype="f8").reshape(SHAPE)
    return write_array(tmp_path_factory.mktemp("budget") / "a.zarr", data, chunks=CHUNKS, zarr_format=3)


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An 8 TB array (metadata only): reading it whole cannot even be allocated here."""
    path = tmp_path_factory.mktemp("budget") / "huge.zarr"
    shape = (1_000_000, 1_000_000)
    zarr.create_array(str(path), shape=shape, chunks=(1000, 1000), dtype="f8", fill_value=1.0)
    return str(path)


def threads_bytes() -> int:
    return fz.get_num_threads() * CHUNK_BYTES


def test_read_within_budget_equals_unbounded_read(store: str) -> None:
    arr = fz.open_array(store)
    expected = arr[...]
    budget = OUTPUT_BYTES + threads_bytes()
    np.testing.assert_array_equal(arr.read(max_memory=budget), expected)
    np.testing.assert_array_equal(fz.read_many([(arr, ...)], max_memory=budget)[0], expected)
    np.testing.assert_array_equal(arr.read(max_memory="1GB"), expected)


def test_over_budget_raises_before_reading(store: str) -> None:
    arr = fz.open_array(store)
    budget = OUTPUT_BYTES + threads_bytes() - 1
    for read in (
        lambda: arr.read(max_memory=budget),
        lambda: fz.read_many([(arr, (slice(0, 8), ...)), (arr, ...)], max_memory=budget),
    ):
        with pytest.raises(fz.MemoryBudgetError) as info:
            read()
        assert isinstance(info.value, MemoryError)
        assert isinstance(info.value, fz.FastzarrError)
        message = str(info.value)
        assert "max_memory" in message, message
        assert "decoded chunk" in message, message


def test_the_budget_counts_only_chunks_the_read_touches(store: str) -> None:
    """One element touches one chunk: its footprint is one decoded chunk, not one per thread."""
    arr = fz.open_array(store)
    assert arr.read((3, 5), max_memory=CHUNK_BYTES + 8) == arr[3, 5]
    with pytest.raises(fz.MemoryBudgetError):
        arr.read((3, 5), max_memory=CHUNK_BYTES + 7)


def test_out_buffer_is_not_counted(store: str) -> None:
    arr = fz.open_array(store)
    out = np.empty(SHAPE, "f8")
    arr.read(out=out, max_memory=threads_bytes())
    np.testing.assert_array_equal(out, arr[...])
    with pytest.raises(fz.MemoryBudgetError):
        arr.read(max_memory=threads_bytes())


def test_huge_read_is_refused_not_attempted(huge: str) -> None:
    arr = fz.open_array(huge)
    with pytest.raises(fz.MemoryBudgetError, match=r"8\.0 TB"):
        arr.read(max_memory="2GB")
    with pytest.raises(fz.MemoryBudgetError):
        fz.read_many([(arr, ...)], max_memory=2 * 10**9)
    # A small corner of it fits.
    np.testing.assert_array_equal(arr.read((slice(0, 2), slice(0, 3)), max_memory="2GB"), np.ones((2, 3)))


def test_async_reads_take_the_budget(store: str) -> None:
    arr = fz.open_array(store)

    async def main() -> None:
        with pytest.raises(fz.MemoryBudgetError):
            await arr.read_async(max_memory=16)
        with pytest.raises(fz.MemoryBudgetError):
            await fz.read_many_async([(arr, ...)], max_memory=16)
        np.testing.assert_array_equal(await arr.read_async(max_memory="1MB"), arr[...])

    asyncio.run(main())


@pytest.mark.parametrize("bad", [0, -5, True, "lots", "0GB", 1.5])
def test_invalid_budgets_are_value_errors(store: str, bad: object) -> None:
    arr = fz.open_array(store)
    with pytest.raises(ValueError, match="max_memory"):
        arr.read(max_memory=bad)  # type: ignore[arg-type]


def test_load_with_budget(tmp_path: Path) -> None:
    data = np.arange(40 * 30, dtype="f4").reshape(40, 30)
    xr.Dataset({"t": (("y", "x"), data)}).to_zarr(
        tmp_path / "d.zarr", encoding={"t": {"chunks": (10, 10)}}, zarr_format=2
    )
    ds = fz.open_zarr(tmp_path / "d.zarr", chunks=None)
    with pytest.raises(fz.MemoryBudgetError):
        fz.load(ds, max_memory=1000)
    assert not ds["t"].variable._in_memory  # nothing was loaded
    loaded = fz.load(ds, max_memory="1MB")
    xr.testing.assert_identical(loaded, xr.open_zarr(tmp_path / "d.zarr").load())


def test_blosc_decode_scratch_is_counted(tmp_path: Path) -> None:
    """Decoding a blosc chunk needs an unshuffle block besides the chunk: the budget counts it
    (at most one chunk's size per chunk in flight), and names it when it refuses."""
    data = np.arange(np.prod(SHAPE), dtype="f8").reshape(SHAPE)
    path = write_array(
        tmp_path / "b.zarr",
        data,
        chunks=CHUNKS,
        zarr_format=2,
        compressors=numcodecs.Blosc(cname="zstd", shuffle=1),
    )
    arr = fz.open_array(path)
    with_scratch = OUTPUT_BYTES + 2 * threads_bytes()
    np.testing.assert_array_equal(arr.read(max_memory=with_scratch), data)
    with pytest.raises(fz.MemoryBudgetError, match="decode scratch"):
        arr.read(max_memory=with_scratch - 1)
    assert arr.read((3, 5), max_memory=2 * CHUNK_BYTES + 8) == data[3, 5]
    with pytest.raises(fz.MemoryBudgetError):
        arr.read((3, 5), max_memory=2 * CHUNK_BYTES + 7)


@pytest.fixture(scope="module")
def long_axis(tmp_path_factory: pytest.TempPathFactory) -> str:
    """10^8 float32 elements on one axis, all missing chunks (metadata only)."""
    path = tmp_path_factory.mktemp("budget") / "long.zarr"
    zarr.create_array(str(path), shape=(10**8,), chunks=(10**6,), dtype="f4", fill_value=0.0)
    return str(path)


@pytest.mark.parametrize("index", ["mask", "integers"])
def test_budget_is_checked_before_index_lists_are_built(long_axis: str, index: str) -> None:
    """A mask (or integer array) of 10^8 elements is refused from its size, in O(1) memory:
    not after turning it into 800 MB of indices."""
    arr = fz.open_array(long_axis)
    key = np.ones(10**8, bool) if index == "mask" else np.arange(10**8)
    tracemalloc.start()
    try:
        for read in (
            lambda: arr.read(key, max_memory="10MB"),
            lambda: fz.read_many([(arr, key)], max_memory="10MB"),
        ):
            with pytest.raises(fz.MemoryBudgetError, match=r"index lists 800\.0 MB"):
                read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak


def test_index_lists_count_in_the_budget(store: str) -> None:
    """With `out` given nothing new holds the result, but the listed indices still count."""
    arr = fz.open_array(store)
    rows = np.arange(64).repeat(1000)
    out = np.empty((rows.size, 48), "f8")
    with pytest.raises(fz.MemoryBudgetError, match=r"index lists 512\.0 kB"):
        arr.read((rows,), out=out, max_memory=500_000)
    mask = np.arange(64) % 3 == 0
    np.testing.assert_array_equal(arr.read((mask,), max_memory="1MB"), arr[...][mask])
