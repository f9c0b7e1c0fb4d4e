"""fastzarr.rewrite: re-encoded, re-chunked stores read back by xr.open_zarr as the source reads."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from fastzarr.rewriting import SLAB_SHARE, RewriteReport, _read_chunks, rewrite
from fastzarr.testing import make_batches

from tests.conftest import quiet_zarr

SMALL = {"batches": 1, "variables": 3, "file_ids": 3, "steps": 4, "lat": 16, "lon": 24}
CF_KEYS = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")


def open_xr(path: str | Path) -> xr.Dataset:
    """xarray's reader (zarr-python), the reference."""
    with quiet_zarr(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_zarr(path)


def batch(tmp_path: Path, zarr_format: int = 2, **kwargs: Any) -> Path:
    """One seed-like store (float32 variables over file_id, step, lat, lon; CF attributes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [path] = make_batches(tmp_path / "src", zarr_format=zarr_format, **{**SMALL, **kwargs})
    return path


def cf_store(path: Path, zarr_format: int) -> Path:
    """A store written by xarray with the CF encodings users rely on: packed int16 with
    scale_factor/add_offset/_FillValue, times with units and calendar, NaNs, string coordinates."""
    rng = np.random.default_rng(1)
    t2m = np.round(rng.uniform(250, 300, (6, 8, 10)), 2)
    t2m[0, 0, :3] = np.nan
    precip = rng.gamma(1.0, 2.0, (6, 8, 10)).astype("f4")
    precip[2, 4, 4] = np.nan
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), t2m, {"units": "K", "long_name": "2 m temperature"}),
            "tp": (("time", "lat", "lon"), precip, {"units": "mm"}),
            "mask": (("lat", "lon"), rng.integers(0, 2, (8, 10)).astype("i1")),
        },
        coords={
            "time": pd.date_range("2020-01-01", periods=6, freq="6h"),
            "lat": np.linspace(60, 25, 8),
            "lon": np.linspace(-10, 35, 10),
            "station": ("lon", [f"s{i}" for i in range(10)]),
        },
        attrs={"title": "cf sample", "history": "made by test_rewrite", "levels": [1, 2, 3]},
    )
    ds["t2m"].encoding = {
        "dtype": "i2",
        "scale_factor": 0.01,
        "add_offset": 273.15,
        "_FillValue": -32767,
        "chunks": (1, 8, 10),
    }
    ds["tp"].encoding = {"chunks": (2, 4, 5)}
    ds["time"].encoding = {
        "units": "hours since 2000-01-01",
        "calendar": "proleptic_gregorian",
        "dtype": "i8",
    }
    with quiet_zarr():
        ds.to_zarr(path, zarr_format=zarr_format, consolidated=True)
    return path


def assert_same_cf_encodings(ours: xr.Dataset, reference: xr.Dataset) -> None:
    """The encodings that decide what users read (not the chunks or codecs) are the same."""
    for name, var in reference.variables.items():
        for key in CF_KEYS:
            want, got = var.encoding.get(key), ours[name].encoding.get(key)
            if isinstance(want, float | np.floating) and np.isnan(want):
                assert isinstance(got, float | np.floating), (name, key, got)
                assert np.isnan(got), (name, key, got)
            else:
                assert got == want, (name, key, got, want)


def zarr_chunks(path: Path, name: str) -> tuple[int, ...]:
    with quiet_zarr():
        return tuple(zarr.open_array(path / name, mode="r").chunks)


def stored_format(path: Path) -> int:
    with quiet_zarr():
        return int(zarr.open_group(path, mode="r").metadata.zarr_format)


@pytest.mark.parametrize(("source_format", "target_format"), [(2, 3), (3, 2)])
def test_cf_store_identical_across_formats(tmp_path: Path, source_format: int, target_format: int) -> None:
    src = cf_store(tmp_path / "src.zarr", source_format)
    dst = tmp_path / "dst.zarr"
    report = rewrite(src, dst, zarr_format=target_format, codec="zstd:5")
    assert isinstance(report, RewriteReport)
    assert stored_format(dst) == target_format
    reference, ours = open_xr(src), open_xr(dst)
    xr.testing.assert_identical(ours.load(), reference.load())
    assert_same_cf_encodings(ours, reference)
    assert ours["t2m"].encoding["dtype"] == np.dtype("i2")
    assert ours["t2m"].encoding["scale_factor"] == 0.01
    assert ours["time"].encoding["units"] == "hours since 2000-01-01"
    # The stored integers themselves are the source's: no float round trip lost a step.
    with quiet_zarr():
        raw_src = zarr.open_array(src / "t2m", mode="r")[...]
        raw_dst = zarr.open_array(dst / "t2m", mode="r")[...]
    np.testing.assert_array_equal(raw_dst, raw_src)
    # Chunks kept (none asked); the codec is the one asked for.
    assert zarr_chunks(dst, "t2m") == (1, 8, 10)
    assert zarr_chunks(dst, "tp") == (2, 4, 5)
    if target_format == 3:
        codecs = json.loads((dst / "t2m" / "zarr.json").read_text())["codecs"]
        assert codecs[-1] == {"name": "zstd", "configuration": {"level": 5, "checksum": False}}
    else:
        assert json.loads((dst / "t2m" / ".zarray").read_text())["compressor"] == {"id": "zstd", "level": 5}
    assert set(report.variables) == {str(n) for n in reference.variables}
    assert report.chunks_written > 0
    assert report.bytes_written > 0


def test_rechunk_batches_for_time_series(tmp_path: Path) -> None:
    src = batch(tmp_path)
    dst = tmp_path / "ts.zarr"
    report = rewrite(src, dst, chunks={"step": -1, "lat": 8, "lon": 8})
    reference, ours = open_xr(src), open_xr(dst)
    xr.testing.assert_identical(ours.load(), reference.load())
    # dimensions left out keep the source's chunk length (file_id: 1)
    assert zarr_chunks(dst, "var0000") == (1, 4, 8, 8)
    assert ours["var0000"].encoding["chunks"] == (1, 4, 8, 8)
    assert report.chunks["var0000"] == (1, 4, 8, 8)
    assert stored_format(dst) == 3
    # 3 file_ids x 2 x 3 chunks for each of 3 variables, plus the coordinates' chunks
    coordinate_chunks = report.chunks_written - 3 * 3 * 2 * 3
    assert coordinate_chunks == sum(
        -(-reference.sizes[d] // report.chunks[d][0]) for d in ("file_id", "step", "lat", "lon")
    )
    assert report.source_chunks == 3 * 3 + 4  # one chunk per file_id per variable, one per coordinate
    assert report.source_bytes > 0


def test_variables_subset_keeps_coordinates(tmp_path: Path) -> None:
    src = cf_store(tmp_path / "src.zarr", 3)
    dst = tmp_path / "sub.zarr"
    rewrite(src, dst, variables=["tp"])
    reference, ours = open_xr(src), open_xr(dst)
    assert list(ours.data_vars) == ["tp"]
    assert set(ours.coords) == set(reference.coords) == {"time", "lat", "lon", "station"}
    xr.testing.assert_identical(ours.load(), reference[["tp"]].load())
    assert ours.attrs == reference.attrs
    with pytest.raises(KeyError, match=r"\['nope'\] are not data variables of .*src.zarr"):
        rewrite(src, tmp_path / "bad.zarr", variables=["tp", "nope"])
    assert not (tmp_path / "bad.zarr").exists()


def test_small_max_memory_reads_in_slabs(tmp_path: Path) -> None:
    src = batch(tmp_path, lat=32, lon=48)
    one_chunk = 4 * 32 * 48 * 4  # (1, step, lat, lon) float32: the source's chunk
    dst = tmp_path / "slabs.zarr"
    report = rewrite(src, dst, chunks={"lat": 8, "lon": 8}, max_memory=SLAB_SHARE * one_chunk)
    # one slab per file_id per variable (a slab is one source chunk here), one per coordinate
    assert report.slabs == 3 * 3 + 4
    assert report.max_memory == SLAB_SHARE * one_chunk
    xr.testing.assert_identical(open_xr(dst).load(), open_xr(src).load())
    roomy = rewrite(src, tmp_path / "roomy.zarr", chunks={"lat": 8, "lon": 8}, max_memory="1GB")
    assert roomy.slabs == 3 + 4  # a whole variable at a time
    assert roomy.max_memory == 10**9


def test_max_memory_smaller_than_a_chunk_raises(tmp_path: Path) -> None:
    src = batch(tmp_path)
    dst = tmp_path / "never.zarr"
    # small destination chunks, but the source's (1, 4, 16, 24) float32 chunk must be decoded whole
    with pytest.raises(fz.MemoryBudgetError, match=r"too small to rewrite 'var0000': one source chunk"):
        rewrite(src, dst, chunks={"lat": 2, "lon": 2}, max_memory=SLAB_SHARE * 4 * 4 * 2 * 2)
    # a destination chunk too large for the budget, although the source's chunks fit
    one_chunk = 4 * 16 * 24 * 4
    with pytest.raises(fz.MemoryBudgetError, match="one destination chunk"):
        rewrite(src, dst, chunks={"file_id": -1}, max_memory=SLAB_SHARE * one_chunk)
    assert not dst.exists()
    assert not list(tmp_path.glob(".never.zarr*"))
    with pytest.raises(ValueError, match="invalid max_memory 'lots'"):
        rewrite(src, dst, max_memory="lots")
    with pytest.raises(ValueError, match="invalid max_memory 0"):
        rewrite(src, dst, max_memory=0)


def test_mode_w_dash_refuses_existing_and_w_replaces(tmp_path: Path) -> None:
    src = batch(tmp_path)
    dst = tmp_path / "out.zarr"
    rewrite(src, dst, codec="zstd:1")
    before = (dst / "zarr.json").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        rewrite(src, dst)
    assert (dst / "zarr.json").read_bytes() == before
    rewrite(src, dst, mode="w", zarr_format=2)
    assert stored_format(dst) == 2
    xr.testing.assert_identical(open_xr(dst).load(), open_xr(src).load())
    with pytest.raises(ValueError, match="mode must be one of"):
        rewrite(src, tmp_path / "x.zarr", mode="a")


def test_rewrite_in_place(tmp_path: Path) -> None:
    src = batch(tmp_path)
    expected = open_xr(src).load()
    rewrite(src, src, mode="w", chunks={"step": -1, "lat": 4}, codec="gzip:1")
    for thread in threading.enumerate():  # the replaced store is deleted in the background
        if thread.name == "fastzarr-discard":
            thread.join()
    assert stored_format(src) == 3
    assert zarr_chunks(src, "var0001") == (1, 4, 4, 24)
    xr.testing.assert_identical(open_xr(src).load(), expected)


def test_bad_source_and_arguments(tmp_path: Path) -> None:
    absent = tmp_path / "absent.zarr"
    with pytest.raises(fz.StoreNotFoundError, match=str(absent)):
        rewrite(absent, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    src = batch(tmp_path)
    with pytest.raises(ValueError, match="chunks names dimension 'time'"):
        rewrite(src, tmp_path / "out.zarr", chunks={"time": 4})
    with pytest.raises(ValueError, match="positive int or -1"):
        rewrite(src, tmp_path / "out.zarr", chunks={"lat": 0})
    with pytest.raises(ValueError, match="codec must look like"):
        rewrite(src, tmp_path / "out.zarr", codec="snappy")
    with pytest.raises(ValueError, match="writes local stores only"):
        rewrite(src, "s3://bucket/out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_report_and_public_name(tmp_path: Path) -> None:
    assert fz.rewrite is rewrite
    assert {"rewrite", "RewriteReport"} <= set(fz.__all__)
    src = batch(tmp_path)
    report = fz.rewrite(src, tmp_path / "r.zarr", chunks={"lat": 8}, progress=False)
    text = repr(report)
    assert text.startswith("<fastzarr.RewriteReport>")
    assert "chunks written" in text
    assert "var0002  1x4x8x24" in text
    assert "<table>" in report._repr_html_()
    data = report.as_dict()
    json.dumps(data)
    assert data["chunks"]["var0002"] == [1, 4, 8, 24]
    assert data["bytes_encoded"] == sum(v.size * v.dtype.itemsize for v in open_xr(src).variables.values())
    assert set(data["seconds"]) == {"open", "plan", "write", "total"}


def test_read_tasks_are_multiples_of_stored_chunks(tmp_path: Path) -> None:
    src = batch(tmp_path, steps=8, chunks={"file_id": 1, "step": 1})
    ds = fz.open_zarr(src)
    field = 16 * 24 * 4  # one stored chunk: a (lat, lon) float32 field
    assert _read_chunks(ds, 1) == {}  # one task per stored chunk
    assert _read_chunks(ds, 3 * field) == {"step": 3}  # the last dimensions grow first
    assert _read_chunks(ds, 12 * field) == {"step": 8}  # whole steps; two file_ids would not fit
    assert _read_chunks(ds, 30 * field) == {"step": 8, "file_id": 3}  # capped at the dimensions
    # tasks of 2 fields (1/8 of a slab), 2 slabs per variable: still the source's values
    report = rewrite(src, tmp_path / "out.zarr", chunks={"lat": 4}, max_memory=SLAB_SHARE * 16 * field)
    assert report.slabs == 3 * 2 + 4
    xr.testing.assert_identical(open_xr(tmp_path / "out.zarr").load(), open_xr(src).load())
