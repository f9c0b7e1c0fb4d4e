"""xarray integration: engine="fastzarr", fastzarr.open_zarr and fastzarr.load against xr.open_zarr."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
import zarr.errors
from dask.base import tokenize
from fastzarr.xarray_backend import FastzarrArrayWrapper, FastzarrBackendEntrypoint
from xarray.backends import ZarrStore
from xarray.backends.zarr import FillValueCoder
from xarray.core import indexing

# The encodings users rely on, compared key by key with xr.open_zarr's.
ENCODING_KEYS = (
    "dtype",
    "_FillValue",
    "scale_factor",
    "add_offset",
    "units",
    "calendar",
    "chunks",
    "preferred_chunks",
    "shards",
    "fill_value",
    "coordinates",
    "compressors",
    "filters",
    "serializer",
)


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """zarr-python warns when writing consolidated v3 metadata and fixed-width unicode to v3:
    silence only those, only while writing test data."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
        warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
        yield


def sample_dataset(seed: int = 0) -> xr.Dataset:
    """Floats with NaN, CF-packed ints, plain ints, bools, datetime and timedelta coordinates,
    fixed-width and variable-length strings, attributes."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(280, 5, (6, 4, 5)).astype("f4")
    temp[0, 0, 0] = np.nan
    precip = np.round(rng.gamma(1.0, 2.0, (6, 4, 5)), 2)
    precip[1, 1, :] = np.nan
    return xr.Dataset(
        {
            "temp": (("time", "y", "x"), temp, {"units": "K", "long_name": "air temperature"}),
            "precip": (("time", "y", "x"), precip, {"units": "mm"}),
            "count": (("y", "x"), np.arange(20, dtype="i4").reshape(4, 5) - 7),
            "flag": (("x",), np.array([True, False, True, True, False])),
            "label": (("y",), np.array(["north", "n", "", "south pole"], dtype=object)),
        },
        coords={
            "time": pd.date_range("2001-02-03", periods=6, freq="6h"),
            "y": np.linspace(50.0, 53.0, 4),
            "x": np.arange(5) * 10,
            "station": ("x", np.array(["ab", "cd", "éf", "gh", "ij"], dtype="<U4")),
            "lead": ("time", pd.to_timedelta(np.arange(6), "h")),
        },
        attrs={"title": "fastzarr test", "answer": 42, "tags": ["a", "b"]},
    )


def sample_encoding(zarr_format: int) -> dict[str, dict[str, Any]]:
    temp: dict[str, Any] = {"chunks": (3, 2, 5)}
    if zarr_format == 3:
        temp["shards"] = (6, 4, 5)
    return {
        "temp": temp,
        "precip": {
            "dtype": "int16",
            "scale_factor": 0.01,
            "add_offset": 1.0,
            "_FillValue": -32768,
            "chunks": (2, 2, 5),
        },
        "count": {"chunks": (2, 3)},
    }


def write_store(
    path: Path,
    zarr_format: int,
    *,
    consolidated: bool,
    groups: tuple[str, ...] = (),
) -> dict[str, xr.Dataset]:
    """Writes the sample dataset at the root and at each of ``groups``; consolidates at the end."""
    written = {}
    with quiet_zarr():
        for i, group in enumerate(("", *groups)):
            ds = sample_dataset(seed=i)
            ds.attrs["group"] = group
            ds.to_zarr(
                path,
                group=group or None,
                mode="w" if not group else "a",
                zarr_format=zarr_format,
                consolidated=False,
                encoding=sample_encoding(zarr_format),
            )
            written[group] = ds
        if consolidated:
            zarr.consolidate_metadata(str(path), zarr_format=zarr_format)
    return written


STORES = [(2, False), (2, True), (3, False), (3, True)]
STORE_IDS = ["v2", "v2-consolidated", "v3", "v3-consolidated"]


@pytest.fixture(scope="module", params=STORES, ids=STORE_IDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bool]:
    zarr_format, consolidated = request.param
    path = tmp_path_factory.mktemp("xr") / "sample.zarr"
    write_store(path, zarr_format, consolidated=consolidated, groups=("a", "a/b"))
    return str(path), consolidated


@pytest.fixture(scope="module")
def v3_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("xr3") / "plain.zarr"
    write_store(path, 3, consolidated=True)
    return str(path)


def reference(path: str, consolidated: bool, **kwargs: Any) -> xr.Dataset:
    """xr.open_zarr, told whether the store is consolidated (so that it does not warn)."""
    return xr.open_zarr(path, consolidated=consolidated, **kwargs)


def assert_same_dataset(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Identical after loading both, with the same encodings users rely on."""
    xr.testing.assert_identical(actual.load(), expected.load())
    for name, variable in expected.variables.items():
        got = actual.variables[name].encoding
        for key in ENCODING_KEYS:
            assert (key in got) == (key in variable.encoding), (name, key, got, variable.encoding)
            if key in got:
                want = variable.encoding[key]
                if isinstance(want, float | np.floating) and np.isnan(want):
                    assert np.isnan(got[key]), (name, key)
                else:
                    assert got[key] == want, (name, key, got[key], want)
                    assert type(got[key]) is type(want) or key == "dtype", (name, key, got[key], want)


def is_numpy(obj: xr.Dataset | xr.DataArray) -> bool:
    variables = obj.variables if isinstance(obj, xr.Dataset) else {"": obj.variable, **obj.coords.variables}
    return all(isinstance(v._data, np.ndarray) or v._in_memory for v in variables.values()) and all(
        not isinstance(v.data, type(xr.DataArray([1]).chunk().data)) for v in variables.values()
    )


# ---------------------------------------------------------------------------------------------
# the engine


def test_engine_is_registered() -> None:
    engines = xr.backends.list_engines()
    assert isinstance(engines["fastzarr"], FastzarrBackendEntrypoint)


def test_guess_can_open_leaves_zarr_stores_to_xarray(tmp_path: Path) -> None:
    entry = FastzarrBackendEntrypoint()
    for candidate in ("data.zarr", "data.zarr/", tmp_path / "x.zarr", "s3://bucket/x.zarr", "x.nc"):
        assert entry.guess_can_open(candidate) is False


def test_open_dataset_parameters_are_explicit() -> None:
    params = FastzarrBackendEntrypoint.open_dataset_parameters
    assert params is not None
    for name in (
        "mask_and_scale",
        "decode_times",
        "decode_timedelta",
        "use_cftime",
        "drop_variables",
        "group",
    ):
        assert name in params
    assert "chunks" not in params
    assert "cache" not in params


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy", "dask"])
def test_open_zarr_matches_xarray(store: tuple[str, bool], chunks: dict[str, int] | None) -> None:
    path, consolidated = store
    actual = fz.open_zarr(path, chunks=chunks, consolidated=consolidated)
    expected = reference(path, consolidated, chunks=chunks)
    assert actual.encoding["source"] == expected.encoding["source"]
    for name, variable in actual.data_vars.items():
        if chunks is None:
            assert not variable.variable._in_memory, name
        else:
            assert variable.chunks == expected[name].chunks, name
    assert_same_dataset(actual, expected)


def test_open_dataset_engine(store: tuple[str, bool]) -> None:
    path, consolidated = store
    actual = xr.open_dataset(path, engine="fastzarr", consolidated=consolidated)
    expected = xr.open_dataset(path, engine="zarr", consolidated=consolidated)
    assert_same_dataset(actual, expected)


@pytest.mark.parametrize("group", ["a", "a/b", "/a/b"])
def test_nested_groups(store: tuple[str, bool], group: str) -> None:
    path, consolidated = store
    actual = fz.open_zarr(path, group=group, chunks=None, consolidated=consolidated)
    assert actual.attrs["group"] == group.strip("/")
    assert_same_dataset(actual, reference(path, consolidated, group=group, chunks=None))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decode_cf": False},
        {"mask_and_scale": False},
        {"decode_times": False},
        {"decode_timedelta": False},
        {"decode_times": xr.coders.CFDatetimeCoder(use_cftime=False)},
        {"decode_times": xr.coders.CFDatetimeCoder(time_unit="s")},
        {"drop_variables": ["precip", "station"]},
        {"decode_coords": False},
        {"use_zarr_fill_value_as_mask": False},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_decoding_options(store: tuple[str, bool], kwargs: dict[str, Any]) -> None:
    path, consolidated = store
    actual = fz.open_zarr(path, chunks=None, consolidated=consolidated, **kwargs)
    expected = reference(path, consolidated, chunks=None, **kwargs)
    if "use_zarr_fill_value_as_mask" in kwargs and "_FillValue" not in actual.temp.encoding:
        # xarray's zarr engine ignores this argument (it always uses the format's default);
        # fastzarr honours it: v2 arrays keep their zarr fill values unmasked.
        assert np.isnan(actual.temp[0, 0, 0])
        return
    assert_same_dataset(actual, expected)


def test_cf_decoding_values(v3_store: str) -> None:
    ds = fz.open_zarr(v3_store, chunks=None)
    written = sample_dataset()
    assert ds.precip.dtype == np.float64
    assert ds.precip.encoding["dtype"] == np.dtype("int16")
    assert ds.precip.encoding["scale_factor"] == 0.01
    assert ds.precip.encoding["add_offset"] == 1.0
    assert ds.precip.encoding["_FillValue"] == -32768
    assert np.isnan(ds.precip[1, 1]).all()
    np.testing.assert_allclose(ds.precip.values, written.precip.values, atol=0.006)
    assert ds.time.dtype.kind == "M"
    assert "units" in ds.time.encoding
    assert "calendar" in ds.time.encoding
    np.testing.assert_array_equal(ds.time.values, written.time.values)
    assert ds.lead.dtype.kind == "m"
    assert ds.station.dtype == np.dtype("<U4")
    np.testing.assert_array_equal(ds.label.values.astype(object), written.label.values)
    assert ds.temp.encoding["shards"] == (6, 4, 5)
    assert ds.temp.encoding["preferred_chunks"] == {"time": 3, "y": 2, "x": 5}


def test_raw_values_without_decoding(v3_store: str) -> None:
    ds = fz.open_zarr(v3_store, chunks=None, decode_cf=False)
    raw = zarr.open_array(v3_store, path="precip", mode="r")[...]
    np.testing.assert_array_equal(ds.precip.values, raw)
    assert ds.precip.attrs["_FillValue"] == -32768


def test_consolidated_true_requires_consolidated_metadata(tmp_path: Path) -> None:
    write_store(tmp_path / "s.zarr", 2, consolidated=False)
    with pytest.raises(ValueError, match="consolidated"):
        fz.open_zarr(tmp_path / "s.zarr", consolidated=True)


def test_zarr_format_mismatch(v3_store: str) -> None:
    with pytest.raises(FileNotFoundError):
        fz.open_zarr(v3_store, zarr_format=2)
    assert fz.open_zarr(v3_store, zarr_format=3, chunks=None).sizes["time"] == 6


def test_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fz.open_zarr(tmp_path / "nope.zarr")


def test_missing_group(v3_store: str) -> None:
    with pytest.raises(KeyError, match="no group 'nope'"):
        fz.open_zarr(v3_store, group="nope")
    with pytest.raises(FileNotFoundError, match="not a group"):
        fz.open_zarr(v3_store, group="temp")


def test_unknown_keyword(v3_store: str) -> None:
    with pytest.raises(TypeError, match="unexpected keyword"):
        fz.open_zarr(v3_store, bogus=1)


def test_missing_dimension_names(tmp_path: Path) -> None:
    with quiet_zarr():
        root = zarr.open_group(str(tmp_path / "nodims.zarr"), mode="w", zarr_format=2)
        root.create_array("a", shape=(3,), dtype="f4")
    with pytest.raises(KeyError, match="_ARRAY_DIMENSIONS"):
        fz.open_zarr(tmp_path / "nodims.zarr", chunks=None, consolidated=False)


def test_variable_length_strings_need_no_zarr(monkeypatch: pytest.MonkeyPatch, v3_store: str) -> None:
    """fastzarr's core decodes variable-length strings itself: without zarr-python installed,
    they open and read as xarray's engine reads them."""
    expected = reference(v3_store, True, chunks=None).load()
    assert expected.label.dtype.kind == "T"
    monkeypatch.setitem(sys.modules, "zarr", None)
    ds = fz.open_zarr(v3_store, chunks=None)
    assert ds.label.dtype == expected.label.dtype
    xr.testing.assert_identical(ds.load(), expected)


# ---------------------------------------------------------------------------------------------
# laziness and selections


def corrupt_chunk(path: str, zarr_format: int) -> None:
    """Overwrites the precip chunk holding time 4..5, y 2..3 with garbage."""
    chunk = Path(path) / ("precip/2.1.0" if zarr_format == 2 else "precip/c/2/1/0")
    assert chunk.exists()
    chunk.write_bytes(b"\x02\x01garbage" * 7)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_reads_only_touched_chunks(tmp_path: Path, zarr_format: int) -> None:
    path = str(tmp_path / "s.zarr")
    write_store(Path(path), zarr_format, consolidated=True)
    corrupt_chunk(path, zarr_format)
    ds = fz.open_zarr(path, chunks=None)  # metadata only: the corrupt chunk is not touched
    expected = xr.open_zarr(path, chunks=None, consolidated=True)
    for select in (
        lambda d: d.isel(time=slice(0, 4)),
        lambda d: d.isel(y=[0, 1]),
        lambda d: d.sel(time="2001-02-04T06:00", y=51.0),
    ):
        xr.testing.assert_identical(select(ds).precip.load(), select(expected).precip.load())
        xr.testing.assert_identical(fz.load(select(ds)), select(expected).load())
    with pytest.raises(fz.FastzarrError):
        ds.precip.load()
    with pytest.raises(fz.FastzarrError):
        fz.load(fz.open_zarr(path, chunks=None))


SELECTIONS: list[tuple[str, Callable[[xr.Dataset], xr.Dataset]]] = [
    ("slices", lambda d: d.isel(time=slice(1, 5), x=slice(0, 5, 2))),
    ("negative-step", lambda d: d.isel(time=slice(None, None, -2), y=slice(3, 0, -1))),
    ("ints", lambda d: d.isel(time=2, y=-1)),
    ("int-arrays", lambda d: d.isel(time=[4, 0, 2], x=[3, 1])),
    ("repeated", lambda d: d.isel(time=[1, 1, 5], y=[0, 0])),
    ("empty", lambda d: d.isel(time=[], x=slice(0, 0))),
    ("sel", lambda d: d.sel(time=slice("2001-02-03T06:00", "2001-02-04"), y=[51.0, 53.0])),
    ("chained", lambda d: d.isel(time=slice(1, None)).isel(time=[0, 2], x=slice(1, 4)).isel(y=1)),
    (
        "vectorized",
        lambda d: d.isel(time=xr.DataArray([0, 3, 5], dims="p"), x=xr.DataArray([4, 0, 2], dims="p")),
    ),
    (
        "vectorized-2d",
        lambda d: d.isel(
            time=xr.DataArray([[0, 5], [3, 3]], dims=("a", "b")),
            y=slice(None, None, -1),
            x=xr.DataArray([[4, 0], [1, -1]], dims=("a", "b")),
        ),
    ),
    ("vectorized-one-axis", lambda d: d.isel(y=xr.DataArray([[3, 0, 3]], dims=("a", "b")))),
]


@pytest.mark.parametrize("select", [s for _, s in SELECTIONS], ids=[n for n, _ in SELECTIONS])
@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy", "dask"])
def test_selections(store: tuple[str, bool], select: Callable[[xr.Dataset], xr.Dataset], chunks: Any) -> None:
    path, consolidated = store
    expected = select(reference(path, consolidated, chunks=chunks)).load()
    actual = fz.open_zarr(path, chunks=chunks, consolidated=consolidated)
    xr.testing.assert_identical(select(actual).load(), expected)
    loaded = fz.load(select(reference(path, consolidated, chunks=chunks)))
    assert is_numpy(loaded)
    xr.testing.assert_identical(loaded, expected)


def test_backend_array_indexing(v3_store: str) -> None:
    wrapper = FastzarrArrayWrapper(fz.open_array(v3_store, path="count"))
    values = zarr.open_array(v3_store, path="count", mode="r")[...]
    np.testing.assert_array_equal(wrapper[indexing.BasicIndexer((slice(None), slice(None)))], values)
    np.testing.assert_array_equal(wrapper[indexing.BasicIndexer((1, slice(None, None, -2)))], values[1, ::-2])
    rows, cols = np.array([3, 0, 0]), np.array([4, 1])
    np.testing.assert_array_equal(wrapper[indexing.OuterIndexer((rows, cols))], values[np.ix_(rows, cols)])
    np.testing.assert_array_equal(
        wrapper[indexing.VectorizedIndexer((np.array([[0, 3]]), np.array([[4, 2]])))],
        values[np.array([[0, 3]]), np.array([[4, 2]])],
    )


@pytest.mark.parametrize(
    "key",
    [
        (np.array([[0, 3], [2, 2]]), np.array([[4, 2], [0, 0]])),
        (slice(None, None, -1), np.array([[1, 4, 4]])),
        (np.array([3, 1]), slice(1, 4)),
        (np.array([], dtype=int), np.array([], dtype=int)),
        (slice(0, 4, 2), np.array([[[2]]])),
    ],
    ids=["2d-points", "slice-then-points", "points-then-slice", "no-points", "3d-index"],
)
def test_backend_vectorized_indexing(v3_store: str, key: tuple[Any, ...]) -> None:
    """Vectorized keys are point reads, ordered the way xarray orders them: index dims first."""
    wrapper = FastzarrArrayWrapper(fz.open_array(v3_store, path="count"))
    values = zarr.open_array(v3_store, path="count", mode="r")[...]
    indexer = indexing.VectorizedIndexer(key)
    expected = indexing.NumpyIndexingAdapter(values).vindex[indexer]
    got = wrapper[indexer]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    got_async = asyncio.run(wrapper.async_getitem(indexer))
    np.testing.assert_array_equal(got_async, expected)


def test_pointwise_selection_reads_points(tmp_path: Path, count_reads: list[int]) -> None:
    """A pointwise selection decodes only the chunks holding points: the rest may be corrupt."""
    path = str(tmp_path / "s.zarr")
    write_store(Path(path), 2, consolidated=True)
    corrupt_chunk(path, 2)  # precip chunk for time 4..5, y 2..3
    points = {"time": xr.DataArray([0, 5, 2], dims="p"), "y": xr.DataArray([3, 0, 1], dims="p")}
    expected = xr.open_zarr(path, chunks=None, consolidated=True).precip.isel(points).load()
    ds = fz.open_zarr(path, chunks=None)
    assert len(count_reads) == 1  # the dimension coordinates, read ahead in one pass
    count_reads.clear()
    xr.testing.assert_identical(ds.precip.isel(points).load(), expected)
    xr.testing.assert_identical(fz.load(ds.precip.isel(points)), expected)
    assert len(count_reads) == 2  # one point read by .load(), one pass by fastzarr.load


@pytest.mark.parametrize(
    "select", [SELECTIONS[3][1], SELECTIONS[-2][1]], ids=[SELECTIONS[3][0], SELECTIONS[-2][0]]
)
def test_load_async(store: tuple[str, bool], select: Callable[[xr.Dataset], xr.Dataset]) -> None:
    path, consolidated = store
    ds = select(fz.open_zarr(path, chunks=None, consolidated=consolidated))
    loaded = asyncio.run(ds.load_async())
    assert all(v._in_memory for v in loaded.variables.values())
    expected = select(reference(path, consolidated, chunks=None)).load()
    xr.testing.assert_identical(loaded, expected)


# ---------------------------------------------------------------------------------------------
# fastzarr.load


OPENERS: dict[str, Callable[..., xr.Dataset]] = {
    "xr-dask": lambda p, c: reference(p, c, chunks={}),
    "xr-lazy": lambda p, c: reference(p, c, chunks=None),
    "fz-dask": lambda p, c: fz.open_zarr(p, chunks={}, consolidated=c),
    "fz-lazy": lambda p, c: fz.open_zarr(p, chunks=None, consolidated=c),
    # dask cannot auto-chunk variable-length strings (object dtype)
    "xr-auto": lambda p, c: reference(p, c, chunks="auto", drop_variables=["label"]),
    "fz-auto": lambda p, c: fz.open_zarr(p, chunks="auto", drop_variables=["label"], consolidated=c),
    "fz-dict": lambda p, c: fz.open_zarr(p, chunks={"time": 6, "y": 4}, consolidated=c),
}


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts fz.read_many calls (and the requests of each) made by fastzarr.load."""
    calls: list[int] = []
    real = fz.read_many

    def counting(requests: Any, **kwargs: Any) -> Any:
        calls.append(len(requests))
        return real(requests, **kwargs)

    monkeypatch.setattr(fz, "read_many", counting)
    return calls


@pytest.mark.parametrize("opener", list(OPENERS), ids=list(OPENERS))
def test_load_one_pass(store: tuple[str, bool], opener: str, count_reads: list[int]) -> None:
    path, consolidated = store
    ds = OPENERS[opener](path, consolidated).isel(time=slice(1, 5), x=[0, 3, 4])
    assert len(count_reads) == (opener.startswith("fz"))  # fastzarr reads dimension coords in one pass
    count_reads.clear()
    expected = reference(path, consolidated, chunks=None).isel(time=slice(1, 5), x=[0, 3, 4]).load()
    expected = expected[list(ds.variables)]
    result = fz.load(ds)
    assert result is ds
    assert is_numpy(result)
    xr.testing.assert_identical(result, expected)
    assert len(count_reads) == 1  # every variable in one read_many pass
    assert count_reads[0] >= len(ds.data_vars)  # variable-length strings included


def test_load_dataarray(store: tuple[str, bool], count_reads: list[int]) -> None:
    path, consolidated = store
    da = reference(path, consolidated, chunks={}).precip.isel(y=[2, 0])
    result = fz.load(da)
    assert isinstance(result, xr.DataArray)
    assert is_numpy(result)
    expected = reference(path, consolidated, chunks=None).precip.isel(y=[2, 0]).load()
    xr.testing.assert_identical(result, expected)
    assert len(count_reads) == 1


def test_load_computed_and_in_memory_variables(store: tuple[str, bool]) -> None:
    path, consolidated = store
    for chunks in (None, {}):
        ds = reference(path, consolidated, chunks=chunks)
        ds["double"] = ds.precip * 2 + ds.temp  # dask arithmetic (or in memory for chunks=None)
        ds["numbers"] = ("x", np.arange(5.0))
        ds["mean"] = ds.temp.mean("time")
        ones = xr.DataArray(np.ones((6, 4, 5)), dims=("time", "y", "x"))
        ds["mixed"] = ds.temp + (ones.chunk({"time": 3}) if chunks is not None else ones)
        expected = ds.copy(deep=True).load()
        result = fz.load(ds)
        assert is_numpy(result)
        xr.testing.assert_identical(result, expected)


def test_load_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="Dataset or DataArray"):
        fz.load(np.arange(3))  # type: ignore[type-var]


def test_load_non_zarr_dataset() -> None:
    ds = sample_dataset().chunk({"time": 2})
    expected = sample_dataset()
    result = fz.load(ds)
    assert is_numpy(result)
    xr.testing.assert_identical(result, expected)


# ---------------------------------------------------------------------------------------------
# pickling and tokens


def test_backend_array_pickles(v3_store: str) -> None:
    wrapper = FastzarrArrayWrapper(fz.open_array(v3_store, path="precip"))
    clone = pickle.loads(pickle.dumps(wrapper))
    assert isinstance(clone, FastzarrArrayWrapper)
    assert clone.shape == wrapper.shape
    assert clone.dtype == wrapper.dtype
    assert clone.get_array().url == wrapper.get_array().url
    key = indexing.BasicIndexer((slice(None), 1, slice(None)))
    np.testing.assert_array_equal(clone[key], wrapper[key])


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy", "dask"])
def test_dataset_pickles(v3_store: str, chunks: Any) -> None:
    ds = fz.open_zarr(v3_store, chunks=chunks).isel(time=[1, 3])
    clone = pickle.loads(pickle.dumps(ds))
    xr.testing.assert_identical(clone.load(), ds.load())


def test_dask_tokenize(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    write_store(path, 3, consolidated=True)
    first = FastzarrArrayWrapper(fz.open_array(str(path), path="temp"))
    second = FastzarrArrayWrapper(fz.open_array(str(path), path="temp"))
    other = FastzarrArrayWrapper(fz.open_array(str(path), path="precip"))
    assert tokenize(first) == tokenize(second)
    assert tokenize(first) != tokenize(other)
    before = tokenize(first)
    with quiet_zarr():
        zarr.open_array(str(path), path="temp", mode="r+").attrs["units"] = "degC"
    assert tokenize(FastzarrArrayWrapper(fz.open_array(str(path), path="temp"))) != before


@pytest.mark.parametrize("opener", list(OPENERS), ids=list(OPENERS))
def test_load_whole_variables_one_pass(store: tuple[str, bool], opener: str, count_reads: list[int]) -> None:
    """Untouched variables (dask ``from_array`` straight over the store, or lazily indexed) are
    planned as whole reads without running xarray's chain twice; the values are xarray's."""
    path, consolidated = store
    ds = OPENERS[opener](path, consolidated)
    assert len(count_reads) == (opener.startswith("fz"))  # fastzarr reads dimension coords in one pass
    count_reads.clear()
    expected = reference(path, consolidated, chunks=None).load()[list(ds.variables)]
    result = fz.load(ds)
    assert is_numpy(result)
    xr.testing.assert_identical(result, expected)
    assert len(count_reads) == 1


def test_load_wrong_whole_read_guess_reads_what_is_asked(
    store: tuple[str, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole-read guess that is wrong (forced here: the chain selects part of the array) is
    caught when the chain asks for its real selection, which is then read: a wasted read, never
    a wrong value."""
    from fastzarr import loading  # noqa: PLC0415

    monkeypatch.setattr(loading, "_reads_whole_leaf", lambda source, leaf, shape: True)
    path, consolidated = store
    lazy = reference(path, consolidated, chunks=None).isel(time=slice(1, 5), y=[2, 0])
    ds = lazy.drop_vars(["label"], errors="ignore").chunk({})
    expected = lazy.drop_vars(["label"], errors="ignore").load()
    result = fz.load(ds)
    assert is_numpy(result)
    xr.testing.assert_identical(result, expected)


# --- groups as a DataTree ----------------------------------------------------------------------


@pytest.fixture(params=[2, 3], ids=["v2", "v3"])
def tree_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store of nested groups written by xarray: data at the root, two levels below, an empty one."""
    tree = xr.DataTree.from_dict(
        {
            "/": xr.Dataset(
                {"a": ("x", np.arange(3.0), {"units": "K"})}, coords={"x": [10, 20, 30]}, attrs={"title": "r"}
            ),
            "/child": xr.Dataset({"b": ("y", np.arange(4, dtype="i2"))}, coords={"y": list("pqrs")}),
            "/child/grand": xr.Dataset(
                {"c": ("x", [1.0, np.nan, 3.0])},
                coords={"time": ("x", pd.date_range("2026-01-01", periods=3))},
            ),
            "/other": xr.Dataset(attrs={"empty": 1}),
        }
    )
    path = str(tmp_path / "tree.zarr")
    with warnings.catch_warnings():
        # Fixed-length strings and consolidated v3 metadata have no stable v3 spec yet.
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
        tree.to_zarr(path, zarr_format=request.param)
    return path


@pytest.mark.parametrize("group", [None, "child", "/child/grand"])
def test_open_groups_matches_xarrays_zarr_engine(tree_store: str, group: str | None) -> None:
    expected = xr.open_groups(tree_store, engine="zarr", group=group)
    got = xr.open_groups(tree_store, engine="fastzarr", group=group)
    assert list(got) == list(expected)
    for name, dataset in expected.items():
        xr.testing.assert_identical(got[name].load(), dataset.load())


@pytest.mark.parametrize("group", [None, "child"])
def test_open_datatree_matches_xarrays_zarr_engine(tree_store: str, group: str | None) -> None:
    expected = xr.open_datatree(tree_store, engine="zarr", group=group)
    with xr.open_datatree(tree_store, engine="fastzarr", group=group) as got:
        xr.testing.assert_identical(got.load(), expected.load())
        assert got.groups == expected.groups


def test_open_datatree_reads_without_zarr_python(tree_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every group is opened and read by fastzarr: zarr-python is never asked."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("zarr-python was asked to open a node")

    expected = xr.open_datatree(tree_store, engine="zarr").load()
    for name in ("open_group", "open_array", "open"):
        monkeypatch.setattr(zarr, name, refuse)
    got = xr.open_datatree(tree_store, engine="fastzarr").load()
    xr.testing.assert_identical(got, expected)


def test_open_datatree_of_a_missing_group(tree_store: str) -> None:
    with pytest.raises(KeyError, match="nowhere"):
        xr.open_datatree(tree_store, engine="fastzarr", group="nowhere")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_unnamed_dataarray_with_reserved_name_opens_everywhere(tmp_path: Path, zarr_format: int) -> None:
    """An unnamed ``DataArray.to_zarr()`` writes ``__xarray_dataarray_variable__``: a name zarrs
    refuses (the v3 specification reserves ``__``), but zarr-python writes and reads it."""
    path = str(tmp_path / "unnamed.zarr")
    values = np.arange(24.0).reshape(4, 6)
    da = xr.DataArray(values, dims=("y", "x"), coords={"y": np.arange(4), "x": np.arange(6) * 10})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        da.chunk({"y": 2, "x": 3}).to_zarr(path, zarr_format=zarr_format, consolidated=False)
    name = "__xarray_dataarray_variable__"
    expected = xr.open_dataarray(path, engine="zarr", consolidated=False).load()

    got = xr.open_dataarray(path, engine="fastzarr", consolidated=False).load()
    xr.testing.assert_identical(got, expected)
    np.testing.assert_array_equal(fz.open_array(path, path=name)[...], values)
    np.testing.assert_array_equal(fz.open_array(f"{path}/{name}")[1:3, 2:5], values[1:3, 2:5])
    group = fz.open_group(path)
    assert name in group
    np.testing.assert_array_equal(group[name][...], values)
    points = fz.extract_points(path, points={"y": [1, 3], "x": [10, 50]})
    np.testing.assert_array_equal(points[name].values, [values[[1, 3], [1, 5]]])  # one store
    report = fz.inspect(path)
    assert name in {a.name for a in report.arrays}


# --- Zarr fill values as masks -----------------------------------------------------------------


def fill_value_store(path: Path, zarr_format: int) -> None:
    """Arrays whose Zarr fill values occur in their data and fill their unwritten chunks, one
    with a CF ``_FillValue`` of its own besides."""
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)

    def dims(*names: str) -> dict[str, Any]:
        if zarr_format == 3:
            return {"dimension_names": names}
        return {"attributes": {"_ARRAY_DIMENSIONS": list(names)}}

    count = root.create_array("count", shape=(6,), chunks=(3,), dtype="i4", fill_value=7, **dims("x"))
    count[:3] = [7, 1, 2]  # the second chunk is never written
    temp = root.create_array("temp", shape=(6,), chunks=(3,), dtype="f4", fill_value=-9999.0, **dims("x"))
    temp[:] = [-9999.0, np.nan, 3.0, 4.0, 5.0, 6.0]
    level = root.create_array("level", shape=(6,), chunks=(6,), dtype="i2", fill_value=0, **dims("x"))
    level[:] = [0, -1, 2, 3, -1, 5]
    # xarray's own spelling of a CF fill value in each format's attributes
    level.attrs["_FillValue"] = -1 if zarr_format == 2 else FillValueCoder.encode(-1, np.dtype("i2"))


@pytest.mark.parametrize("flag", [None, True, False], ids=lambda f: f"mask={f}")
@pytest.mark.parametrize("zarr_format", [2, 3], ids=["v2", "v3"])
def test_use_zarr_fill_value_as_mask_like_xarrays_store(
    tmp_path: Path, zarr_format: int, flag: bool | None
) -> None:
    path = tmp_path / "fill.zarr"
    fill_value_store(path, zarr_format)
    actual = xr.open_dataset(path, engine="fastzarr", consolidated=False, use_zarr_fill_value_as_mask=flag)
    # engine="zarr" accepts the argument but opens its ZarrStore with None whatever it is given
    # (pydata/xarray#10269); the reference is that store opened with the argument, which is
    # what xr.open_zarr's documentation says the argument does.
    zarr_store = ZarrStore.open_group(str(path), consolidated=False, use_zarr_fill_value_as_mask=flag)
    expected = xr.open_dataset(path, engine="zarr", store=zarr_store)
    assert_same_dataset(actual, expected)
    masked = zarr_format == 2 if flag is None else flag
    # 7 is count's Zarr fill value: missing where it masks, data where it does not.
    assert bool(np.isnan(actual["count"].values[0])) is masked
    assert actual["count"].values[1] == 1
    assert ("_FillValue" in actual["count"].encoding) is masked
    assert ("fill_value" in actual["count"].encoding) is (zarr_format == 3 and not masked)
    xr.testing.assert_identical(
        fz.open_zarr(path, chunks=None, consolidated=False, use_zarr_fill_value_as_mask=flag), actual
    )
    if masked == (zarr_format == 2):
        # The format's default: what engine="zarr" gives too.
        assert_same_dataset(actual, xr.open_dataset(path, engine="zarr", consolidated=False))


# --- stores without consolidated metadata --------------------------------------------------------


def _close(opened: Any) -> None:
    for dataset in opened.values() if isinstance(opened, dict) else [opened]:
        dataset.close()


OPENINGS: dict[str, Callable[[str, str, bool | None], Any]] = {
    "open_dataset": lambda path, engine, c: xr.open_dataset(path, engine=engine, consolidated=c),
    "open_dataset-group": lambda path, engine, c: xr.open_dataset(
        path, engine=engine, consolidated=c, group="a/b"
    ),
    "open_zarr": lambda path, engine, c: (fz.open_zarr if engine == "fastzarr" else xr.open_zarr)(
        path, consolidated=c, chunks=None
    ),
    "open_datatree": lambda path, engine, c: xr.open_datatree(path, engine=engine, consolidated=c),
    "open_groups": lambda path, engine, c: xr.open_groups(path, engine=engine, consolidated=c),
}


def warnings_of(opening: Callable[[], Any]) -> list[tuple[type[Warning], str, str]]:
    """The warnings an opening emits: category, message and the file it points at."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _close(opening())
    return [(w.category, str(w.message), w.filename) for w in caught]


@pytest.mark.parametrize("consolidated", [None, False], ids=lambda c: f"consolidated={c}")
@pytest.mark.parametrize("opening", list(OPENINGS), ids=list(OPENINGS))
def test_unconsolidated_warning_like_xarrays(
    store: tuple[str, bool], opening: str, consolidated: bool | None
) -> None:
    path, has_consolidated = store
    open_ = OPENINGS[opening]
    expected = warnings_of(lambda: open_(path, "zarr", consolidated))
    actual = warnings_of(lambda: open_(path, "fastzarr", consolidated))
    assert actual == expected
    if consolidated is None and not has_consolidated:
        # One RuntimeWarning, pointing at the line that opened the store.
        assert [(category, file) for category, _, file in actual] == [(RuntimeWarning, __file__)]
        assert actual[0][1].startswith("Failed to open Zarr store with consolidated metadata")
    else:
        assert actual == []


@pytest.mark.parametrize("opening", list(OPENINGS), ids=list(OPENINGS))
def test_consolidated_true_without_consolidated_metadata_raises(
    store: tuple[str, bool], opening: str
) -> None:
    path, has_consolidated = store
    open_ = OPENINGS[opening]
    if has_consolidated:
        assert warnings_of(lambda: open_(path, "fastzarr", True)) == []
        return
    with pytest.raises(ValueError, match=r"\.zmetadata|consolidated"):  # zarr-python: v2 | v3
        open_(path, "zarr", True)
    with pytest.raises(ValueError, match="consolidated"):
        open_(path, "fastzarr", True)


def test_warning_can_be_silenced_with_xarrays_filter(tmp_path: Path) -> None:
    """The message is xarray's, so a filter written for xarray's warning silences fastzarr's."""
    write_store(tmp_path / "s.zarr", 2, consolidated=False)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Failed to open Zarr store with consolidated metadata", category=RuntimeWarning
        )
        xr.open_dataset(tmp_path / "s.zarr", engine="zarr").close()
        xr.open_dataset(tmp_path / "s.zarr", engine="fastzarr").close()
