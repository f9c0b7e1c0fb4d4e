"""fastzarr.to_zarr(mode="a", append_dim=...): against xarray's append and xr.concat, checks
before writing, duplicate labels, and atomicity when an append fails part-way."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import fastzarr as fz
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fastzarr import _core, appending
from fastzarr.writer import to_zarr

from tests.conftest import quiet_zarr
from tests.test_writer import open_xr, sample_dataset, wait_for_discards


def store_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a store, by relative path: the whole state a reader can see."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def pieces(ds: xr.Dataset, *bounds: int) -> list[xr.Dataset]:
    edges = [0, *bounds, ds.sizes["time"]]
    return [ds.isel(time=slice(a, b)) for a, b in itertools.pairwise(edges)]


def write_first(ds: xr.Dataset, path: Path, writer: str, zarr_format: int) -> None:
    if writer == "fastzarr":
        to_zarr(ds, path, zarr_format=zarr_format)
    else:
        with quiet_zarr():
            ds.to_zarr(path, zarr_format=zarr_format, consolidated=True)


@pytest.mark.parametrize("writer", ["fastzarr", "xarray"])
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_append_matches_xarray_and_concat(tmp_path: Path, writer: str, zarr_format: int) -> None:
    ds = sample_dataset().isel(time=[0, 1, 2, 3, 4, 0, 1, 2, 3])
    ds = ds.assign_coords(
        time=pd.date_range("2001-02-03", periods=9, freq="6h"), label=("time", [f"t{i}" for i in range(9)])
    )
    first, second, third = pieces(ds, 3, 4)
    ours, reference = tmp_path / "fz.zarr", tmp_path / "xr.zarr"
    write_first(first, ours, writer, zarr_format)
    write_first(first, reference, writer, zarr_format)
    stored_first = open_xr(ours).load()
    result = to_zarr(second, ours, mode="a", append_dim="time")
    assert result.chunks
    assert all(r[2] > 0 for r in result.chunks)
    # a dask-backed second append, in slabs smaller than a chunk
    to_zarr(third.chunk({"time": 1, "lat": 2}), ours, mode="a", append_dim="time", max_memory=1)
    with quiet_zarr():
        second.to_zarr(reference, mode="a", append_dim="time")
        third.to_zarr(reference, mode="a", append_dim="time")
    back = open_xr(ours).load()
    xr.testing.assert_identical(back, open_xr(reference).load())
    assert back.sizes["time"] == 9
    # what xr.concat gives for the stored first part and the appended parts ("scaled" is packed
    # into int16 by its encoding, so it is compared within the packing's rounding)
    expected = xr.concat([stored_first, second, third], dim="time", data_vars="minimal", coords="minimal")
    xr.testing.assert_identical(back.drop_vars("scaled"), expected.drop_vars("scaled"))
    xr.testing.assert_allclose(back["scaled"], expected["scaled"], atol=0.051)
    # the stored encodings are kept: chunks, packing, time units
    reopened = open_xr(ours)
    assert reopened["scaled"].encoding["dtype"] == np.dtype("i2")
    assert reopened["time"].encoding["units"] == open_xr(reference)["time"].encoding["units"]
    # every reader agrees: fastzarr's arrays and zarr-python
    group = fz.open_group(ours)
    with quiet_zarr():
        import zarr  # noqa: PLC0415

        z = zarr.open_group(ours, mode="r")
        np.testing.assert_array_equal(z["temp"][...], back["temp"].values)
    np.testing.assert_array_equal(group["temp"][...], back["temp"].values)
    wait_for_discards()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".fz.zarr.fastzarr-append.lock",
        "fz.zarr",
        "xr.zarr",
    ]


def test_append_creates_a_missing_store(tmp_path: Path) -> None:
    ds = sample_dataset()
    first, second = pieces(ds, 2)
    to_zarr(first, tmp_path / "new.zarr", mode="a", append_dim="time")
    to_zarr(second, tmp_path / "new.zarr", mode="a", append_dim="time")
    back = open_xr(tmp_path / "new.zarr").load()
    xr.testing.assert_identical(back.drop_vars("scaled"), ds.drop_vars("scaled"))


def _bad_inputs(ds: xr.Dataset) -> dict[str, tuple[xr.Dataset, str]]:
    new = ds.isel(time=slice(3, 5))
    other_lat = new.assign_coords(lat=new["lat"] + 1)
    renamed = new.rename({"temp": "temperature"})
    wrong_dtype = new.assign(count=new["count"].astype("i4"))
    other_attrs = new.copy()
    other_attrs["temp"].attrs["units"] = "degC"
    narrower = new.isel(lon=slice(0, 4))
    repacked = new.copy()
    repacked["scaled"].encoding = {"dtype": "i2", "scale_factor": 0.5}
    return {
        "coordinate": (other_lat, "'lat'"),
        "names": (renamed, "temperature"),
        "dtype": (wrong_dtype, "'count' has dtype int32"),
        "attrs": (other_attrs, "'temp' has attributes"),
        "size": (narrower, "'lon' has size 4"),
        "encoding": (repacked, "'scaled' has encoding scale_factor=0.5"),
        "no dim": (new.isel(time=0), "no dimension 'time'"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs(sample_dataset())))
def test_mismatch_is_refused_and_leaves_the_store_alone(tmp_path: Path, case: str) -> None:
    ds = sample_dataset()
    target = tmp_path / "s.zarr"
    to_zarr(ds.isel(time=slice(0, 3)), target)
    before = store_bytes(target)
    bad, message = _bad_inputs(ds)[case]
    with pytest.raises(fz.AppendError, match=message):
        to_zarr(bad, target, mode="a", append_dim="time")
    assert store_bytes(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_duplicate_labels_are_refused(tmp_path: Path) -> None:
    ds = sample_dataset()
    target = tmp_path / "d.zarr"
    to_zarr(ds.isel(time=slice(0, 3)), target)
    before = store_bytes(target)
    with pytest.raises(fz.DuplicateError, match="already in the store: 2001-02-03T12"):
        to_zarr(ds.isel(time=slice(2, 5)), target, mode="a", append_dim="time")
    with pytest.raises(fz.DuplicateError, match="repeated along 'time'"):
        to_zarr(ds.isel(time=[3, 4, 4]), target, mode="a", append_dim="time")
    assert store_bytes(target) == before


@pytest.mark.parametrize("failure", ["verify", "publish", "interrupt"])
def test_failed_append_leaves_the_old_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """An append that fails after its chunks are written (a corrupt chunk found by the check, a
    crash or Ctrl-C just before the swap) leaves the old store, byte for byte, and nothing else."""
    ds = sample_dataset()
    target = tmp_path / "c.zarr"
    to_zarr(ds.isel(time=slice(0, 3)), target, zarr_format=2)
    before, old = store_bytes(target), open_xr(target).load()

    def corrupt(*args: object, **kwargs: object) -> int:
        raise fz.CorruptChunkError("simulated bad chunk")

    def crash(*args: object) -> None:
        raise KeyboardInterrupt if failure == "interrupt" else OSError("simulated crash")

    if failure == "verify":
        monkeypatch.setattr(_core, "_verify_chunks", corrupt)
    else:
        monkeypatch.setattr(appending, "publish", crash)
    expected: type[BaseException] = {
        "verify": fz.CorruptChunkError,
        "publish": OSError,
        "interrupt": KeyboardInterrupt,
    }[failure]
    with pytest.raises(expected):
        to_zarr(ds.isel(time=slice(3, 5)), target, mode="a", append_dim="time")
    assert store_bytes(target) == before
    xr.testing.assert_identical(open_xr(target).load(), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.zarr.fastzarr-append.lock", "c.zarr"]
    monkeypatch.undo()
    to_zarr(ds.isel(time=slice(3, 5)), target, mode="a", append_dim="time")
    assert open_xr(target).sizes["time"] == 5


def test_concurrent_appends_both_land(tmp_path: Path) -> None:
    """Two appends at once take turns (the second is planned again on the store the first left):
    no rows lost, none duplicated; the same rows twice at once: one lands, one is refused."""
    ds = sample_dataset()
    target = tmp_path / "p.zarr"
    to_zarr(ds.isel(time=slice(0, 3)), target)
    errors: list[BaseException] = []

    def append(part: xr.Dataset) -> None:
        try:
            to_zarr(part, target, mode="a", append_dim="time")
        except BaseException as exc:
            errors.append(exc)

    parts = [ds.isel(time=[3]), ds.isel(time=[4]), ds.isel(time=[4])]
    threads = [threading.Thread(target=append, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1, errors
    assert isinstance(errors[0], fz.DuplicateError)
    back = open_xr(target).load().sortby("time")
    xr.testing.assert_identical(back.drop_vars("scaled"), ds.drop_vars("scaled"))


def test_append_dim_argument(tmp_path: Path) -> None:
    ds = sample_dataset()
    with pytest.raises(ValueError, match="append_dim is required"):
        to_zarr(ds, tmp_path / "a.zarr", mode="w", append_dim="time")
    to_zarr(ds, tmp_path / "a.zarr")
    with pytest.raises(fz.AppendError, match="no dimension 'depth'"):
        to_zarr(ds, tmp_path / "a.zarr", mode="a", append_dim="depth")


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_append_unnamed_dataarray(tmp_path: Path, zarr_format: int) -> None:
    """xarray stores an unnamed DataArray as "__xarray_dataarray_variable__" (a name zarrs' group
    reader refuses): appending to it works all the same."""
    da = sample_dataset()["temp"].rename(None)
    target = tmp_path / "u.zarr"
    to_zarr(da.isel(time=slice(0, 3)), target, zarr_format=zarr_format)
    to_zarr(da.isel(time=slice(3, 5)), target, mode="a", append_dim="time")
    with quiet_zarr():
        back = xr.open_dataarray(target, engine="zarr").load()
    xr.testing.assert_identical(back, da)


def test_append_to_big_endian_store_by_xarray(tmp_path: Path) -> None:
    ds = sample_dataset()[["temp"]]
    ds["temp"] = ds["temp"].astype(">f8")
    target = tmp_path / "be.zarr"
    with quiet_zarr():
        ds.isel(time=slice(0, 3)).to_zarr(target, zarr_format=2, consolidated=True)
    to_zarr(ds.isel(time=slice(3, 5)), target, mode="a", append_dim="time")
    assert json.loads((target / "temp" / ".zarray").read_text())["dtype"] == ">f8"
    xr.testing.assert_identical(open_xr(target).load(), ds)


APPENDER = textwrap.dedent(
    """
    import sys
    import numpy as np, xarray as xr
    from fastzarr.writer import to_zarr
    target = sys.argv[1]
    for step in range(1, 10_000):
        part = xr.Dataset(
            {f"v{i}": (("t", "b"), np.full((3, 500), step, "f4")) for i in range(8)},
            coords={"t": np.arange(3 * step, 3 * step + 3)},
        )
        to_zarr(part, target, mode="a", append_dim="t")
        if step == 1:
            print("ready", flush=True)  # imports done, one append made: the kills land in appends
    """
)


def test_kill_during_appends_leaves_whole_commits(tmp_path: Path) -> None:
    """kill -9 at random moments of a loop of appends: the store always opens as some number of
    whole appends (every variable the same length, every row written by its own append)."""
    target = tmp_path / "k.zarr"
    start = xr.Dataset(
        {f"v{i}": (("t", "b"), np.zeros((3, 500), "f4")) for i in range(8)}, coords={"t": np.arange(3)}
    )
    to_zarr(start, target, chunks={"t": 4})
    script = tmp_path / "appender.py"
    script.write_text(APPENDER)
    rng = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 1.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        back = open_xr(target).load()
        n = back.sizes["t"]
        assert n % 3 == 0
        np.testing.assert_array_equal(back["t"].values, np.arange(n))
        expected = np.repeat(np.arange(n // 3), 3)[:, None] * np.ones(500)
        for name in back.data_vars:
            np.testing.assert_array_equal(back[name].values, expected, err_msg=name)
        assert n >= 6  # the append before "ready"
        to_zarr(start, target, mode="w", chunks={"t": 4})  # the next attempt starts afresh
    wait_for_discards()  # the killed appenders' temporary siblings went with that last write
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".k.zarr.fastzarr-append.lock",
        "appender.py",
        "k.zarr",
    ]
