"""A store replaced under an open handle (``to_zarr(mode="w")``, ``rewrite``, an append) is never
read as fill values: every read of the old handle raises ``StoreChangedError`` naming the store,
and opening the store again reads the new one."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
import zarr

from tests.conftest import quiet_zarr


def dataset(offset: float) -> xr.Dataset:
    values = np.arange(6 * 8, dtype="f4").reshape(6, 8) + offset
    return xr.Dataset(
        {"temp": (("y", "x"), values)},
        coords={"y": np.arange(6), "x": np.arange(8)},
    )


def wait_for_discards() -> None:
    """Replaced stores are deleted by background threads; wait for them."""
    for thread in threading.enumerate():
        if thread.name == "fastzarr-discard":
            thread.join()


def replace_by_to_zarr(target: Path) -> None:
    fz.to_zarr(dataset(1000), target, mode="w", chunks={"y": 2, "x": 4})


def replace_by_rewrite(target: Path) -> None:
    source = target.with_name("other.zarr")
    fz.to_zarr(dataset(1000), source, chunks={"y": 2, "x": 4})
    fz.rewrite(source, target, mode="w", chunks={"y": 3, "x": 8})


def replace_by_append(target: Path) -> None:
    more = dataset(1000).isel(y=slice(0, 2)).assign_coords(y=[6, 7])
    fz.to_zarr(more, target, mode="a", append_dim="y")


REPLACERS: dict[str, Callable[[Path], None]] = {
    "to_zarr": replace_by_to_zarr,
    "rewrite": replace_by_rewrite,
    "append": replace_by_append,
}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    target = tmp_path / "s.zarr"
    fz.to_zarr(dataset(0), target, chunks={"y": 2, "x": 4})
    return target


def reads(arr: fz.Array) -> list[Callable[[], object]]:
    """Every way of reading an array: whole, a point, a box, oindex, read_many with points."""
    return [
        lambda: arr[...],
        lambda: arr[1, 2],
        lambda: arr[1:4, 2:7],
        lambda: arr.oindex[[0, 5], [1, 7]],
        arr.read,
        lambda: fz.read_many([(arr, (slice(None),), {0: [0, 3], 1: [1, 6]})]),
    ]


@pytest.mark.parametrize("replace", REPLACERS)
@pytest.mark.parametrize("discarded", [False, True], ids=["old-store-present", "old-store-deleted"])
def test_array_and_group_opened_before_a_replace_raise(store: Path, replace: str, discarded: bool) -> None:
    arr = fz.open_array(store / "temp")
    group = fz.open_group(store)
    member = group["temp"]
    assert isinstance(member, fz.Array)
    np.testing.assert_array_equal(arr[...], dataset(0)["temp"].values)
    REPLACERS[replace](store)
    if discarded:
        wait_for_discards()
    for handle in (arr, member):
        for read in reads(handle):
            with pytest.raises(fz.StoreChangedError, match=f"{store}.*replaced"):
                read()
    with pytest.raises(fz.StoreChangedError, match="replaced"):
        group["temp"][...]
    # Opened again, the store reads the new values.
    again = fz.open_array(store / "temp")
    with quiet_zarr():
        expected = zarr.open_array(store / "temp", mode="r")[...]
    np.testing.assert_array_equal(again[...], expected)
    assert expected.max() >= 1000  # the new values, not the old ones (all below 48)


@pytest.mark.parametrize("replace", REPLACERS)
def test_datasets_opened_before_a_replace_raise(store: Path, replace: str) -> None:
    engine = xr.open_dataset(store, engine="fastzarr", chunks=None)
    lazy = fz.open_zarr(store)
    REPLACERS[replace](store)
    wait_for_discards()
    with pytest.raises(fz.StoreChangedError, match="replaced"):
        engine["temp"].values  # noqa: B018 (reading is the point)
    with pytest.raises(fz.StoreChangedError, match="replaced"):
        fz.load(lazy)
    with pytest.raises(fz.StoreChangedError, match="replaced"):
        lazy["temp"].compute()
    assert float(fz.load(fz.open_zarr(store))["temp"].max()) >= 1000  # reopened: the new store


def test_a_deleted_store_raises_instead_of_fill_values(store: Path) -> None:
    arr = fz.open_array(store / "temp")
    shutil.rmtree(store)
    with pytest.raises(fz.StoreChangedError, match="deleted"):
        arr[...]


def test_a_store_changed_in_place_is_still_read(store: Path) -> None:
    """Writes inside the same directory (zarr-python updating a chunk, a chunk deleted on
    purpose) keep the store: the new values and the fill value, no error."""
    arr = fz.open_array(store / "temp")
    with quiet_zarr():
        z = zarr.open_array(store / "temp", mode="r+")
        z[0:2, 0:4] = -1
    (store / "temp" / "c" / "2" / "1").unlink()
    got = arr[...]
    with quiet_zarr():
        expected = zarr.open_array(store / "temp", mode="r")[...]
    np.testing.assert_array_equal(got, expected)
    assert (got[0:2, 0:4] == -1).all()


def test_store_changed_error_is_a_fastzarr_error() -> None:
    assert issubclass(fz.StoreChangedError, fz.FastzarrError)
    assert "StoreChangedError" in fz.__all__
