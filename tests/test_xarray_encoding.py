"""engine="fastzarr" gives the encodings engine="zarr" gives (codec objects included), so that
``to_zarr`` writes the same arrays whichever engine read the Dataset."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr.codecs.numcodecs as znc
import zarr.errors
from fastzarr import _codec_encoding
from fastzarr.xarray_backend import FastzarrArrayWrapper, FastzarrStore
from xarray.core import indexing
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    TransposeCodec,
    ZstdCodec,
)

CODEC_KEYS = ("compressors", "filters", "serializer")


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """zarr-python warns when it writes or reads numcodecs' codecs in v3: silence only that,
    only around zarr-python's own writes and reads (fastzarr's reads must not warn)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
        yield


def reference(path: Path, **kwargs: Any) -> xr.Dataset:
    """The Dataset xarray's own zarr engine opens."""
    with quiet_zarr():
        return xr.open_dataset(path, engine="zarr", consolidated=False, **kwargs)


def sample_dataset(nan: bool = True) -> xr.Dataset:
    """Floats (with a NaN unless ``nan`` is false), CF-packed values, small and wide integers,
    bytes-sized data and times."""
    rng = np.random.default_rng(7)
    temp = rng.normal(280, 5, (8, 6)).astype("f4")
    if nan:
        temp[0, 0] = np.nan
    return xr.Dataset(
        {
            "temp": (("t", "x"), temp, {"units": "K"}),
            "precip": (("t", "x"), np.round(rng.gamma(1.0, 2.0, (8, 6)), 2), {"units": "mm"}),
            "count": (("t", "x"), np.arange(48, dtype="i4").reshape(8, 6) - 9),
            "small": (("t", "x"), (np.arange(48) % 200).astype("u1").reshape(8, 6)),
        },
        coords={"t": pd.date_range("2020-01-01", periods=8, freq="D"), "x": np.arange(6) * 2.5},
    )


# Per case: the encoding of every data variable (chunks added below), by name.
V2_CASES: dict[str, dict[str, Any]] = {
    "blosc-lz4-shuffle": {"compressors": [numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1)]},
    "blosc-zstd-bitshuffle": {"compressors": [numcodecs.Blosc(cname="zstd", clevel=3, shuffle=2)]},
    "blosc-blosclz-noshuffle": {"compressors": [numcodecs.Blosc(cname="blosclz", clevel=9, shuffle=0)]},
    "blosc-lz4hc-autoshuffle": {"compressors": [numcodecs.Blosc(cname="lz4hc", shuffle=-1)]},
    "blosc-zlib": {"compressors": [numcodecs.Blosc(cname="zlib", clevel=1)]},
    "zstd": {"compressors": [numcodecs.Zstd(level=7)]},
    "gzip": {"compressors": [numcodecs.GZip(level=4)]},
    "zlib": {"compressors": [numcodecs.Zlib(level=2)]},
    "none": {"compressors": None},
    "delta": {"filters": [numcodecs.Delta(dtype="<f4")], "compressors": [numcodecs.Zstd(level=1)]},
    "fixedscaleoffset": {
        "filters": [numcodecs.FixedScaleOffset(offset=270, scale=100, dtype="<f4", astype="<i4")],
        "compressors": [numcodecs.Blosc(cname="lz4", shuffle=1)],
    },
}

V3_CASES: dict[str, dict[str, Any]] = {
    "blosc-lz4-shuffle": {"compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]},
    "blosc-zstd-bitshuffle": {"compressors": [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]},
    "blosc-blosclz-noshuffle": {"compressors": [BloscCodec(cname="blosclz", shuffle="noshuffle")]},
    "blosc-defaults": {"compressors": [BloscCodec()]},
    "zstd": {"compressors": [ZstdCodec(level=7)]},
    "zstd-checksum": {"compressors": [ZstdCodec(level=1, checksum=True)]},
    "gzip": {"compressors": [GzipCodec(level=4)]},
    "none": {"compressors": None},
    "crc32c": {"compressors": [ZstdCodec(level=2), Crc32cCodec()]},
    "crc32c-alone": {"compressors": [Crc32cCodec()]},
    "big-endian": {"serializer": BytesCodec(endian="big"), "compressors": [GzipCodec(level=1)]},
    "transpose": {"filters": [TransposeCodec(order=(1, 0))], "compressors": [ZstdCodec(level=3)]},
    "sharding": {"compressors": [BloscCodec(cname="lz4")], "shards": (8, 6)},
    "sharding-crc32c": {"compressors": [ZstdCodec(), Crc32cCodec()], "shards": (4, 6)},
    "sharding-none": {"compressors": None, "shards": (8, 3)},
}
with quiet_zarr():  # zarr-python warns as it builds numcodecs' codecs for v3
    # numcodecs' codecs as zarr-python names them in v3 ("numcodecs.zlib", ...)
    V3_CASES["numcodecs"] = {"compressors": [znc.Shuffle(elementsize=2), znc.Zlib(level=2)]}

CASES = [(2, name) for name in V2_CASES] + [(3, name) for name in V3_CASES]
IDS = [f"v{fmt}-{name}" for fmt, name in CASES]


def variable_encoding(zarr_format: int, case: str) -> dict[str, Any]:
    encoding = dict((V2_CASES if zarr_format == 2 else V3_CASES)[case])
    encoding["chunks"] = (2, 3)
    return encoding


def dataset_encoding(zarr_format: int, case: str) -> dict[str, dict[str, Any]]:
    encoding = {name: variable_encoding(zarr_format, case) for name in ("temp", "count", "small")}
    # CF packing on top of the codecs: dtype, scale_factor, add_offset, _FillValue.
    encoding["precip"] = {
        **variable_encoding(zarr_format, case),
        "dtype": "int16",
        "scale_factor": 0.01,
        "add_offset": 1.0,
        "_FillValue": -32768,
    }
    if case == "fixedscaleoffset":
        # The filter's dtype is the array's: only the float32 array takes it.
        for name in ("precip", "count", "small"):
            encoding[name]["filters"] = None
    if case == "delta":
        for name in ("precip", "count", "small"):
            encoding[name]["filters"] = [numcodecs.Delta(dtype=np.dtype(sample_dataset()[name].dtype).str)]
        encoding["precip"]["filters"] = [numcodecs.Delta(dtype="<i2")]
    return encoding


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The sample written through xarray's engine with one codec layout (no consolidated
    metadata, so both engines are opened with consolidated=False)."""
    zarr_format, case = request.param
    path = tmp_path_factory.mktemp("enc") / "p.zarr"
    # fixedscaleoffset packs floats into integers, where a NaN has no value.
    with quiet_zarr():
        sample_dataset(nan=case != "fixedscaleoffset").to_zarr(
            path,
            zarr_format=zarr_format,
            consolidated=False,
            encoding=dataset_encoding(zarr_format, case),
        )
    return path, zarr_format


def same_value(got: Any, want: Any) -> bool:
    """Equal, NaN matching NaN, of the same type (codec objects compare by configuration)."""
    if isinstance(want, float | np.floating) and math.isnan(want):
        return isinstance(got, float | np.floating) and math.isnan(got)
    if isinstance(want, np.dtype):  # '<f4' and 'float32' are the same dtype
        return isinstance(got, np.dtype) and got == want
    if isinstance(want, tuple):
        return (
            isinstance(got, tuple)
            and len(got) == len(want)
            and all(same_value(g, w) for g, w in zip(got, want, strict=True))
        )
    return type(got) is type(want) and bool(got == want)


def assert_same_encodings(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Every variable's encoding holds the same keys, in the same order, with equal values."""
    assert set(actual.variables) == set(expected.variables)
    for name, variable in expected.variables.items():
        got, want = actual.variables[name].encoding, variable.encoding
        assert list(got) == list(want), (name, list(got), list(want))
        for key, value in want.items():
            assert same_value(got[key], value), (name, key, got[key], value)


def assert_read_by_fastzarr(path: Path) -> None:
    """Every array is read by fastzarr's core (none fell back to zarr-python), so the encodings
    compared are fastzarr's own."""
    variables = FastzarrStore.open(path, consolidated=False).get_variables()
    assert variables
    for name, variable in variables.items():
        data = variable._data
        assert isinstance(data, indexing.LazilyIndexedArray), name
        assert isinstance(data.array, FastzarrArrayWrapper), name


def test_encodings_equal_xarrays(written: tuple[Path, int]) -> None:
    path, zarr_format = written
    actual = xr.open_dataset(path, engine="fastzarr", consolidated=False, cache=False)
    expected = reference(path, cache=False)
    assert_read_by_fastzarr(path)
    assert_same_encodings(actual, expected)
    for name in actual.data_vars:
        encoding = actual[name].encoding
        assert {"compressors", "filters"} <= set(encoding), name
        assert ("serializer" in encoding) == (zarr_format == 3), name
    xr.testing.assert_identical(actual.load(), expected.load())


def test_decode_cf_false_encodings_equal_xarrays(written: tuple[Path, int]) -> None:
    path, _ = written
    actual = xr.open_dataset(path, engine="fastzarr", consolidated=False, decode_cf=False)
    expected = reference(path, decode_cf=False)
    assert_same_encodings(actual, expected)


def stored_arrays(path: Path, zarr_format: int) -> dict[str, dict[str, Any]]:
    """Each array's metadata document, by array name."""
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    found = {}
    for meta in sorted(path.glob(f"*/{name}")):
        document = json.loads(meta.read_text())
        if zarr_format == 3 and document["node_type"] != "array":
            continue
        found[meta.parent.name] = document
    assert found
    return found


def codec_metadata(document: dict[str, Any], zarr_format: int) -> dict[str, Any]:
    """What says how an array's chunks are encoded: codecs and chunk layout."""
    if zarr_format == 2:
        keys = ("compressor", "filters", "chunks", "dtype", "order")
    else:
        keys = ("codecs", "chunk_grid", "data_type")
    return {key: document.get(key) for key in keys}


def test_round_trip_writes_the_same_codecs(written: tuple[Path, int], tmp_path: Path) -> None:
    path, zarr_format = written
    through_fastzarr, through_xarray = tmp_path / "q.zarr", tmp_path / "r.zarr"
    with xr.open_dataset(path, engine="fastzarr", consolidated=False) as ds, quiet_zarr():
        ds.to_zarr(through_fastzarr, zarr_format=zarr_format, consolidated=False)
    with reference(path) as ds, quiet_zarr():
        ds.to_zarr(through_xarray, zarr_format=zarr_format, consolidated=False)
    source = stored_arrays(path, zarr_format)
    got = stored_arrays(through_fastzarr, zarr_format)
    # Everything xarray's engine writes back (codecs, fill values, attributes) ...
    assert got == stored_arrays(through_xarray, zarr_format)
    # ... and the codecs the source was written with.
    assert {k: codec_metadata(v, zarr_format) for k, v in got.items()} == {
        k: codec_metadata(v, zarr_format) for k, v in source.items()
    }
    with xr.open_dataset(through_fastzarr, engine="fastzarr", consolidated=False) as back:
        xr.testing.assert_identical(back.load(), reference(path).load())


def test_without_zarr_python_the_codec_keys_are_left_out(
    written: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without zarr-python the encodings lack only the codec objects."""
    path, _ = written
    expected = reference(path)
    _codec_encoding._parse.cache_clear()
    monkeypatch.setitem(sys.modules, "zarr.core.metadata", None)  # import raises ImportError
    try:
        actual = xr.open_dataset(path, engine="fastzarr", consolidated=False)
    finally:
        _codec_encoding._parse.cache_clear()
    for name, variable in expected.variables.items():
        want = {k: v for k, v in variable.encoding.items() if k not in CODEC_KEYS}
        got = actual.variables[name].encoding
        assert list(got) == list(want), (name, list(got), list(want))
        for key, value in want.items():
            assert same_value(got[key], value), (name, key, got[key], value)
    xr.testing.assert_identical(actual.load(), expected.load())


def test_arrays_of_one_layout_share_one_parse(tmp_path: Path) -> None:
    """Same-chunked arrays of different lengths parse their codecs once."""
    path = tmp_path / "s.zarr"
    ds = xr.Dataset({f"v{i}": ((f"d{i}",), np.arange(10 + i, dtype="f4")) for i in range(5)})
    ds.to_zarr(path, zarr_format=3, consolidated=False, encoding={v: {"chunks": (4,)} for v in ds})
    _codec_encoding._parse.cache_clear()
    opened = xr.open_dataset(path, engine="fastzarr", consolidated=False)
    info = _codec_encoding._parse.cache_info()
    assert len(opened.variables) == 5
    assert (info.misses, info.hits) == (1, 4)
    assert_same_encodings(opened, reference(path))
