"""``fastzarr._compat``: every fallback to public xarray API gives what the private fast path
gives, and fastzarr's reads, loads and writes stay right with the fallbacks alone."""

from __future__ import annotations

import asyncio
import math
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import fastzarr._compat
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fastzarr._compat import xarray as compat_xr
from fastzarr._fill_values import decode_fill_value, encode_fill_value
from fastzarr.testing import make_batches
from xarray.backends.zarr import FillValueCoder


@pytest.fixture
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``_compat`` function on its public fallback."""
    monkeypatch.setattr(fastzarr._compat, "USE_INTERNALS", False)


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = make_batches(tmp_path_factory.mktemp("compat"), batches=2, variables=3, file_ids=3, steps=2)
    return [str(p) for p in paths]


def _both(fn: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """``fn()`` on the fast path, then on the fallbacks."""
    fast = fn()
    monkeypatch.setattr(fastzarr._compat, "USE_INTERNALS", False)
    try:
        return fast, fn()
    finally:
        monkeypatch.setattr(fastzarr._compat, "USE_INTERNALS", True)


FILL_VALUES: list[tuple[Any, str]] = [
    (0.0, "f4"),
    (-0.0, "f8"),
    (float("nan"), "f4"),
    (float("inf"), "f8"),
    (-float("inf"), "f2"),
    (1e-300, "f8"),
    (np.float32(3.5), "f4"),
    (7, "f8"),
    (-9999, "i2"),
    (2**63 - 1, "i8"),
    (2**64 - 1, "u8"),
    (np.int16(-3), "i2"),
    (3.0, "i4"),
    (True, "b1"),
    (complex(1.5, -2.0), "c16"),
    (np.complex64(complex(float("nan"), 1)), "c8"),
    (b"\x00ab", "S3"),
    ("text", "U4"),
]


@pytest.mark.parametrize(("value", "dtype"), FILL_VALUES)
def test_fill_values_as_xarray_writes_and_reads_them(value: Any, dtype: str) -> None:
    encoded = encode_fill_value(value, np.dtype(dtype))
    assert encoded == FillValueCoder.encode(value, np.dtype(dtype))
    try:
        expected = FillValueCoder.decode(encoded, dtype)
    except ValueError:  # xarray decodes no fixed-width strings or bytes: neither does fastzarr
        with pytest.raises(ValueError, match="no fill value decoding for dtype"):
            decode_fill_value(encoded, dtype)
        return
    decoded = decode_fill_value(encoded, dtype)
    assert type(decoded) is type(expected)
    np.testing.assert_equal(decoded, expected)  # NaN equals NaN here
    if isinstance(decoded, float) and decoded == 0:
        assert math.copysign(1, decoded) == math.copysign(1, expected)  # -0.0 stays negative


def test_fill_values_of_v3_strings_and_bytes() -> None:
    assert decode_fill_value("x", "string") == FillValueCoder.decode("x", "string") == "x"
    assert decode_fill_value("AGFi", "bytes") == FillValueCoder.decode("AGFi", "bytes") == b"\x00ab"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encode_fill_value("1", np.dtype("f8")), "must be a number"),
        (lambda: encode_fill_value(1.0, np.dtype("S3")), "must be bytes"),
        (lambda: encode_fill_value(1.0, np.dtype("c16")), "must be complex"),
        (lambda: decode_fill_value(1.0, "f8"), "stored as base64 text"),
        (lambda: decode_fill_value(["AA=="], "c16"), "two base64 texts"),
        (lambda: decode_fill_value("7", "i4"), "stored as a number"),
        (lambda: decode_fill_value(7, "bytes"), "stored as base64 text"),
    ],
)
def test_fill_value_type_errors_as_xarrays(call: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call()


def test_fill_value_dtype_without_encoding() -> None:
    with pytest.raises(ValueError, match="no fill value encoding for dtype"):
        encode_fill_value(1, np.dtype("M8[ns]"))
    with pytest.raises(ValueError, match="Unsupported dtype"):
        FillValueCoder.encode(1, np.dtype("M8[ns]"))


def test_dataset_fallback_is_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    source = xr.Dataset(
        {"t": (("x", "y"), np.arange(6.0).reshape(2, 3), {"units": "K"}), "u": ("x", [1, 2])},
        coords={"x": [10, 20], "y": pd.Index(["a", "b", "c"]), "label": ("x", ["p", "q"])},
        attrs={"title": "t"},
    )
    source.encoding = {"source": "here"}

    def build() -> xr.Dataset:
        return compat_xr.dataset(
            dict(source.variables),
            coord_names=set(source.coords),
            sizes=dict(source.sizes),
            attrs=source.attrs,
            indexes=dict(source.xindexes),
            encoding=source.encoding,
        )

    fast, public = _both(build, monkeypatch)
    xr.testing.assert_identical(fast, source)
    xr.testing.assert_identical(public, source)
    assert public.encoding == fast.encoding == {"source": "here"}
    assert set(public.coords) == {"x", "y", "label"}
    assert public.xindexes["y"].equals(source.xindexes["y"])


def test_numpy_variable_fallback_keeps_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.arange(4.0)
    fast, public = _both(
        lambda: compat_xr.numpy_variable(("x",), data, {"a": 1}, {"dtype": "f4"}), monkeypatch
    )
    xr.testing.assert_identical(fast, public)
    assert public.encoding == {"dtype": "f4"}
    assert np.shares_memory(public.values, data)
    assert np.shares_memory(fast.values, data)


@pytest.mark.parametrize("name", ["t", None, "x"])  # named, unnamed, named like a coordinate
def test_temp_dataset_fallback(name: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    array = xr.DataArray(np.arange(3.0), dims="x", coords={"x": [1, 2, 3], "c": ("x", [4, 5, 6])}, name=name)
    fast, public = _both(lambda: compat_xr.temp_dataset(array), monkeypatch)
    (fast_name,) = fast.data_vars
    assert fast.variables[fast_name] is array.variable  # the fast path shares the variables
    (public_name,) = public.data_vars
    xr.testing.assert_identical(public[public_name].variable, array.variable)
    xr.testing.assert_identical(public.coords.to_dataset(), array.coords.to_dataset())
    if name == "t":
        assert public_name == "t"


def test_chunk_manager_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    for use_internals in (True, False):
        monkeypatch.setattr(fastzarr._compat, "USE_INTERNALS", use_internals)
        assert compat_xr.has_chunk_manager(None)  # dask is installed in the test environment
        assert compat_xr.has_chunk_manager("dask")
        assert not compat_xr.has_chunk_manager("no-such-manager")


@pytest.mark.parametrize(
    "variable",
    [
        xr.Variable(
            "t", np.array([0, 1, -1], "i2"), {"scale_factor": 0.5, "add_offset": 10.0, "_FillValue": -1}
        ),
        xr.Variable("t", np.array([0, 24, 48]), {"units": "hours since 2000-01-01", "calendar": "standard"}),
        xr.Variable("t", np.array([1.0, np.nan, 3.0], "f4"), {"missing_value": 3.0}),
    ],
    ids=["scaled", "times", "missing"],
)
def test_decode_variable_fallback_is_xarrays_decoding(
    variable: xr.Variable, monkeypatch: pytest.MonkeyPatch
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xr.SerializationWarning)
        fast, public = _both(lambda: compat_xr.decode_variable("v", variable), monkeypatch)
        expected = xr.decode_cf(xr.Dataset({"v": variable}))["v"].variable
    xr.testing.assert_identical(fast, expected)
    xr.testing.assert_identical(public, expected)
    assert public.encoding.keys() == fast.encoding.keys()


@pytest.mark.usefixtures("public_only")
def test_reads_and_writes_with_the_fallbacks_alone(batches: list[str], tmp_path: Path) -> None:
    point = {"lat": 5.0, "lon": 20.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fz.DuplicateWarning)
        got = fz.extract_points(batches, points=point, progress=False)
    parts = [xr.open_zarr(s).sel(point, method="nearest") for s in batches]
    expected = xr.concat(
        parts, dim="file_id", data_vars="all", coords="different", compat="equals", join="outer"
    )
    xr.testing.assert_identical(got, expected.drop_duplicates("file_id").load())

    reference = xr.open_zarr(batches[0]).load()
    xr.testing.assert_identical(fz.load(xr.open_zarr(batches[0]), progress=False), reference)
    xr.testing.assert_identical(fz.load(fz.open_zarr(batches[0]), progress=False), reference)
    engine = xr.open_dataset(batches[0], engine="fastzarr")
    xr.testing.assert_identical(engine.load(), reference)
    array = fz.load(xr.open_zarr(batches[0])["var0001"], progress=False)
    xr.testing.assert_identical(array, reference["var0001"])
    # dask-backed, after a selection and arithmetic: computed by dask itself, right all the same.
    dasked = fz.load(xr.open_zarr(batches[0], chunks={}).isel(step=1) * 2, progress=False)
    xr.testing.assert_identical(dasked, reference.isel(step=1) * 2)
    assert not dasked.chunks  # numpy, no dask left
    # Without the graph's internals, where a dask array reads from cannot be pinned down: the
    # cache refuses (a clear error, never a wrong hit).
    with pytest.raises(fz.CacheError, match="this dask release does not let fastzarr read"):
        fz.load(xr.open_zarr(batches[0]), cache=fz.Cache(tmp_path / "cache"), progress=False)

    # Writing needs xarray's zarr encoder, which has no public equivalent: a clear refusal.
    with pytest.raises(fz.EncodingUnavailableError, match=r"write with Dataset\.to_zarr instead"):
        fz.to_zarr(reference, tmp_path / "out.zarr", mode="w")
    assert not (tmp_path / "out.zarr").exists()


def test_fill_value_codec_in_a_write_and_read(batches: list[str], tmp_path: Path) -> None:
    """A NaN fill value goes through fastzarr's own fill-value codec both ways, as xarray's."""
    reference = xr.open_zarr(batches[0]).load()
    written = reference.copy()
    written["var0000"].encoding["_FillValue"] = np.float32("nan")
    for zarr_format in (2, 3):
        out = tmp_path / f"out{zarr_format}.zarr"
        fz.to_zarr(written, out, mode="w", zarr_format=zarr_format)
        back = xr.open_zarr(out)
        assert np.isnan(back["var0000"].encoding["_FillValue"])
        xr.testing.assert_identical(back.load(), reference)
        xr.testing.assert_identical(xr.open_dataset(out, engine="fastzarr").load(), reference)


@pytest.mark.usefixtures("public_only")
def test_lazy_arrays_with_the_fallbacks_alone(batches: list[str], tmp_path: Path) -> None:
    reference = xr.open_zarr(batches[0]).load()
    # The engine's async reads go through the documented synchronous adapter in a thread.
    opened = xr.open_dataset(batches[0], engine="fastzarr")
    selection = {"file_id": [0, 2], "lat": slice(1, 5), "lon": [3, 1, 7]}
    loaded = asyncio.run(opened.isel(selection).load_async())
    xr.testing.assert_identical(loaded, reference.isel(selection))
    # Dimension coordinates served from memory, indexed every way xarray indexes them.
    points = xr.DataArray([0, 2, 1], dims="p")
    xr.testing.assert_identical(opened.lat[points].load(), reference.lat[points])
    xr.testing.assert_identical(opened.isel(lat=[5, 1]).lat, reference.isel(lat=[5, 1]).lat)

    # Where a lazily indexed variable reads from cannot be seen: the cache refuses, clearly.
    with pytest.raises(fz.CacheError, match="this xarray release does not let fastzarr look into"):
        fz.load(fz.open_zarr(batches[0], chunks=None), cache=fz.Cache(tmp_path / "cache"), progress=False)
    # ... and assert_materialized says it cannot tell instead of passing or guessing.
    with pytest.raises(AssertionError, match="cannot tell whether it is in memory"):
        fz.testing.assert_materialized(fz.open_zarr(batches[0], chunks=None))


def test_lazy_array_helpers_on_the_fast_path(batches: list[str]) -> None:
    """What the fallbacks give up, the fast path sees: the chain, its selection, its leaf."""
    variable = fz.open_zarr(batches[0], chunks=None).isel(lat=slice(2, 6)).variables["var0000"]
    data = compat_xr.variable_data(variable)
    assert compat_xr.is_lazy_wrapper(data)
    assert not compat_xr.in_memory(variable)
    selections = []
    node = data
    while not isinstance(node, fz.xarray_backend.FastzarrArrayWrapper):
        assert compat_xr.is_lazy_wrapper(node)
        if (found := compat_xr.lazy_selection(node)) is not None:
            selections.append(found)
        node = compat_xr.wrapped(node)
    assert isinstance(node, fz.xarray_backend.FastzarrArrayWrapper)
    (key, shape), *_ = selections
    assert shape == tuple(node.shape)
    assert key[2] == slice(2, 6, 1)
    with pytest.raises(AssertionError, match="lazy, backed by"):
        fz.testing.assert_materialized(fz.open_zarr(batches[0], chunks=None))
    fz.testing.assert_materialized(fz.load(fz.open_zarr(batches[0]), progress=False))
