"""Data types zarr-python writes natively, read by fastzarr itself: datetime64 and timedelta64
(v2 ``<M8[ns]``, v3 ``numpy.datetime64``...) and fixed bytes (v2 ``|S``, v3
``null_terminated_bytes``), equal to zarr-python on every read path, fill values included, and
through the xarray engine without falling back to zarr-python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastzarr as fz
import fastzarr.xarray_backend as backend
import numpy as np
import pytest
import xarray as xr
import zarr

from tests.conftest import quiet_zarr

SHAPE, CHUNKS = (6, 5), (4, 2)

VALUES: dict[str, np.ndarray] = {
    "<M8[ns]": np.array(
        ["2020-01-01T00:00:00.000000001", "NaT", "1969-12-31", "2262-04-11", "1677-09-22", "2001-02-03"] * 5,
        dtype="<M8[ns]",
    ).reshape(SHAPE),
    "<M8[s]": (np.arange(30, dtype="i8") * 86_400 - 10**9).astype("<M8[s]").reshape(SHAPE),
    ">M8[ms]": (np.arange(30, dtype="i8") * 1_000_003).astype(">M8[ms]").reshape(SHAPE),
    "<m8[s]": (np.arange(30, dtype="i8") - 15).astype("<m8[s]").reshape(SHAPE),
    "<m8[us]": np.where(np.arange(30) % 7 == 0, np.timedelta64("NaT"), np.arange(30) * 999)
    .astype("<m8[us]")
    .reshape(SHAPE),
    "|S5": np.array([b"", b"a", b"hello", b"ab\x00c", b"\xff\xfe"] * 6, dtype="S5").reshape(SHAPE),
    "|S1": np.array([b"x", b"", b"\x00"] * 10, dtype="S1").reshape(SHAPE),
}

FILLS: dict[str, Any] = {
    "<M8[ns]": np.datetime64("NaT", "ns"),
    "<M8[s]": np.datetime64("2000-01-01", "s"),
    ">M8[ms]": None,
    "<m8[s]": np.timedelta64(-3, "s"),
    "<m8[us]": np.timedelta64("NaT", "us"),
    "|S5": b"ab",
    "|S1": None,
}


def write(root: Path, dtype: str, zarr_format: int) -> tuple[str, np.ndarray]:
    """An array with one chunk never written (read as the fill value)."""
    data = VALUES[dtype].copy()
    path = root / f"{list(VALUES).index(dtype)}-{zarr_format}.zarr"
    options: dict[str, Any] = {}
    if FILLS[dtype] is not None:
        options["fill_value"] = FILLS[dtype]
    with quiet_zarr():
        z = zarr.create_array(
            path, shape=SHAPE, chunks=CHUNKS, dtype=data.dtype, zarr_format=zarr_format, **options
        )
        z[:4, :2] = data[:4, :2]
        z[:, 2:] = data[:, 2:]
        z[4:, :2] = data[4:, :2]
        # chunk (0, 0) written, then deleted: its values are the fill value for every reader
        z[:4, :2] = data[:4, :2]
    chunk = path / ("0.0" if zarr_format == 2 else "c/0/0")
    chunk.unlink()
    with quiet_zarr():
        expected = zarr.open_array(path, mode="r")[...]
    return str(path), expected


@pytest.fixture(scope="module", params=[2, 3], ids=["v2", "v3"])
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dtypes")
    return {dtype: write(root, dtype, request.param) for dtype in VALUES}


def same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype.newbyteorder("=") or got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.astype(expected.dtype), expected)
    # bit for bit, NaT included
    assert got.astype(expected.dtype).tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", VALUES)
def test_every_read_path_equals_zarr_python(stores: dict[str, Any], dtype: str) -> None:
    path, expected = stores[dtype]
    arr = fz.open_array(path)
    assert arr.dtype == np.dtype(dtype).newbyteorder("=")
    same(arr[...], expected)
    same(np.asarray(arr[1, 3]), np.asarray(expected[1, 3], dtype=expected.dtype))
    same(arr[1:5, ::2], expected[1:5, ::2])
    same(arr.oindex[[0, 5, 2], [4, 0]], expected[np.ix_([0, 5, 2], [4, 0])])
    [many] = fz.read_many([(arr, (slice(None), 1))])
    same(many, expected[:, 1])
    with quiet_zarr():
        their_fill = zarr.open_array(path, mode="r").fill_value
    if FILLS[dtype] is None and arr.fill_value is None:
        return  # v2 null fill: both read zeros (checked in the values above)
    ours = np.asarray(arr.fill_value, dtype=arr.dtype)
    assert ours.tobytes() == np.asarray(their_fill, dtype=arr.dtype).tobytes()


@pytest.mark.parametrize("dtype", ["<M8[ns]", "<m8[s]", "|S5"])
def test_the_engine_reads_them_itself_like_xarrays(
    stores: dict[str, Any], dtype: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A native datetime64 (or bytes) array, as zarr-python writes it (no CF units)."""
    path, expected = stores[dtype]
    group = tmp_path / "g.zarr"
    with quiet_zarr():
        zarr_format = zarr.open_array(path, mode="r").metadata.zarr_format
        root = zarr.open_group(group, mode="w", zarr_format=zarr_format)
        names = {"dimension_names": ["y", "x"]} if zarr_format == 3 else {}
        v = root.create_array("v", shape=SHAPE, chunks=CHUNKS, dtype=expected.dtype, **names)
        if zarr_format == 2:
            v.attrs["_ARRAY_DIMENSIONS"] = ["y", "x"]
        v[...] = expected
        zarr.consolidate_metadata(group)

    def no_fallback(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read through zarr-python")

    monkeypatch.setattr(backend.FastzarrStore, "_zarr_python_variable", no_fallback)
    for decode_times in (True, False):
        ours = xr.open_dataset(group, engine="fastzarr", decode_times=decode_times).load()
        with quiet_zarr():
            theirs = xr.open_dataset(group, engine="zarr", decode_times=decode_times).load()
        xr.testing.assert_identical(ours, theirs)


def test_bad_time_units_and_fill_values_are_metadata_errors(tmp_path: Path) -> None:
    path, _ = write(tmp_path, "<M8[s]", 2)
    meta = json.loads((Path(path) / ".zarray").read_text())
    meta["dtype"] = "<M8[fortnights]"
    (Path(path) / ".zarray").write_text(json.dumps(meta))
    with pytest.raises(fz.UnsupportedCodecError, match="fortnights"):
        fz.open_array(path)
    path, _ = write(tmp_path, "|S1", 2)
    meta = json.loads((Path(path) / ".zarray").read_text())
    meta["fill_value"] = "YWJj"  # three bytes for a one-byte item
    (Path(path) / ".zarray").write_text(json.dumps(meta))
    with pytest.raises(fz.MetadataError, match="more than 1 bytes"):
        fz.open_array(path)
