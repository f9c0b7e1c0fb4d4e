"""The grouped CF decoder equals xr.decode_cf: values, dtypes, attributes, encodings, coordinates."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import fastzarr._decoding as decoding
import numpy as np
import pytest
import xarray as xr
from fastzarr import extract_points

N = 4  # alike variables per kind: every kind below forms a stacked group


def _encoded_variables() -> dict[str, xr.Variable]:
    """Raw (undecoded) variables of every kind xarray's decoding treats differently."""
    rng = np.random.default_rng(0)
    out: dict[str, xr.Variable] = {}
    dims = ("file_id", "step")
    for i in range(N):
        # Differing descriptive attributes do not split a group; their values stay per variable.
        info = {"long_name": f"feature {i}", "comment": "x" * i}
        floats = rng.normal(size=(3, 2)).astype(np.float32)
        floats[0, i % 2] = np.nan
        out[f"f{i}"] = xr.Variable(dims, floats, {**info, "units": "K", "_FillValue": np.float32(np.nan)})
        packed = rng.integers(-100, 100, size=(3, 2)).astype(np.int16)
        packed[1, 0] = -32768
        out[f"p{i}"] = xr.Variable(
            dims,
            packed,
            {**info, "scale_factor": 0.5, "add_offset": 10.0, "_FillValue": np.int16(-32768), "units": "m"},
        )
        out[f"u{i}"] = xr.Variable(
            dims, np.array([[0, -1], [-2, 5], [7, -128]], np.int8), {"_Unsigned": "true", "_FillValue": -1}
        )
        missing = np.array([[1.0, 9.0], [2.0, 9.0], [3.0, 4.0]])
        out[f"mv{i}"] = xr.Variable(dims, missing, {"missing_value": 9.0})
        out[f"hours{i}"] = xr.Variable(dims, np.arange(6, dtype=np.int64).reshape(3, 2), {"units": "hours"})
        out[f"time{i}"] = xr.Variable(
            dims, np.arange(6, dtype=np.int64).reshape(3, 2) + 100 * i, {"units": "days since 2000-01-01"}
        )
        out[f"flag{i}"] = xr.Variable(dims, np.array([[0, 1], [1, 0], [0, 0]], np.int8), {"dtype": "bool"})
        out[f"big{i}"] = xr.Variable(dims, np.arange(6, dtype=">f4").reshape(3, 2), {"_FillValue": np.nan})
        out[f"plain{i}"] = xr.Variable((), np.float64(i), {})
        chars = np.array([[b"a", b"b"], [b"c", b""], [b"d", b"e"]])
        out[f"chars{i}"] = xr.Variable(("file_id", "nchar"), chars)
    out["unique"] = xr.Variable(dims, np.ones((3, 2), np.float32), {"scale_factor": np.float32(2.0)})
    # A variable another one names as its coordinate, and one naming it.
    out["station_height"] = xr.Variable(("file_id",), np.array([1.0, 2.0, 3.0]))
    out["obs0"] = xr.Variable(dims, np.ones((3, 2)), {"coordinates": "station_height", "units": "1"})
    out["obs1"] = xr.Variable(dims, np.ones((3, 2)) * 2, {"coordinates": "station_height", "units": "1"})
    # Time bounds: xarray copies the time's units onto the bounds variable.
    out["tb0"] = xr.Variable(("file_id", "nv"), np.array([[0, 1], [1, 2], [2, 3]]))
    out["tb1"] = xr.Variable(("file_id", "nv"), np.array([[0, 1], [1, 2], [2, 4]]))
    out["t_with_bounds"] = xr.Variable(
        ("file_id",), np.array([0, 1, 2]), {"units": "days since 2001-01-01", "bounds": "tb0"}
    )
    return out


def _raw_dataset() -> xr.Dataset:
    coords = {
        "file_id": xr.Variable(("file_id",), np.array([10, 11, 12])),
        "step": xr.Variable(("step",), np.array([0, 6]), {"units": "hours"}),
    }
    return xr.Dataset(_encoded_variables(), coords=coords, attrs={"title": "t"})


def same_value(a: Any, b: Any) -> bool:
    """Equal values of the same type, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return bool(a == b) or bool(np.isnan(a) and np.isnan(b))


def assert_same_mapping(got: dict[Any, Any], want: dict[Any, Any], name: Any) -> None:
    assert list(got) == list(want) or set(got) == set(want), name
    for k, v in want.items():
        assert same_value(got[k], v), (name, k, got[k], v)


def assert_same_decoding(got: xr.Dataset, want: xr.Dataset) -> None:
    xr.testing.assert_identical(got, want)
    assert list(got.variables) == list(want.variables)
    assert set(got.coords) == set(want.coords)
    for name, v in want.variables.items():
        g = got.variables[name]
        assert g.dtype == v.dtype, name
        assert_same_mapping(g.encoding, v.encoding, name)
        assert_same_mapping(g.attrs, v.attrs, name)
        assert list(g.attrs) == list(v.attrs), name


def test_equals_xarray_on_every_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    stacked: list[list[Any]] = []
    original = decoding._decode_group

    def spy(names: list[Any], ds: xr.Dataset) -> dict[Any, xr.Variable]:
        stacked.append(list(names))
        return original(names, ds)

    monkeypatch.setattr(decoding, "_decode_group", spy)
    raw = _raw_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = xr.decode_cf(raw)
    assert_same_decoding(decoding.decode_cf(raw), want)
    groups = {tuple(sorted(map(str, g))) for g in stacked}
    # The alike kinds were decoded stacked, the ones xarray must see alone were not.
    for kind in ("f", "p", "u", "mv", "plain"):
        assert tuple(f"{kind}{i}" for i in range(N)) in groups
    alone = {"unique", "obs0", "obs1", "station_height", "tb0", "tb1", "t_with_bounds"}
    alone |= {f"{k}{i}" for k in ("hours", "time", "flag", "big", "chars") for i in range(N)}
    assert not alone & {n for g in groups for n in g}


def test_nothing_to_stack_is_xarray_itself() -> None:
    raw = xr.Dataset({"a": (("x",), np.arange(3.0), {"_FillValue": 1.0})}, coords={"x": [1, 2, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same_decoding(decoding.decode_cf(raw), xr.decode_cf(raw))


def test_fill_values_of_different_types_are_not_one_group() -> None:
    # NaN as a Python float and as float32 are different encodings: never decoded as one.
    raw = xr.Dataset(
        {
            "a": (("x",), np.array([1.0, np.nan]), {"_FillValue": np.nan}),
            "b": (("x",), np.array([1.0, np.nan]), {"_FillValue": np.float32(np.nan)}),
            "c": (("x",), np.array([1.0, 2.0]), {"_FillValue": 2.0}),
            "d": (("x",), np.array([1.0, 2.0]), {"_FillValue": 2.0}),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = xr.decode_cf(raw)
    got = decoding.decode_cf(raw)
    assert_same_decoding(got, want)
    assert np.isnan(got["c"].values[1])
    assert got["d"].values[0] == 1.0


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_extract_points_of_many_packed_variables(tmp_path: Path, zarr_format: int) -> None:
    rng = np.random.default_rng(1)
    data_vars = {}
    for i in range(12):
        values = rng.normal(size=(3, 4, 5)) * 10
        values[0, 0, i % 5] = np.nan
        da = xr.DataArray(values, dims=("file_id", "lat", "lon"), attrs={"long_name": f"v{i}"})
        if i % 3:
            da.encoding = {"dtype": "int16", "scale_factor": 0.01 * (i % 2 + 1), "_FillValue": -9999}
        data_vars[f"v{i}"] = da
    ds = xr.Dataset(
        data_vars,
        coords={"file_id": [1, 2, 3], "lat": np.linspace(-10, 10, 4), "lon": np.linspace(0, 40, 5)},
    )
    path = tmp_path / f"packed{zarr_format}.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, zarr_format=zarr_format, mode="w", consolidated=True)
    for points in ({"lat": 3.0, "lon": 22.0}, {"lat": [-10.0, 9.0], "lon": [0.0, 40.0]}):
        indexers = {k: v if np.ndim(v) == 0 else xr.DataArray(v, dims="point") for k, v in points.items()}
        want = xr.concat([xr.open_zarr(path).sel(indexers, method="nearest")], dim="file_id").load()
        got = extract_points([str(path)], points=points)
        xr.testing.assert_identical(got, want)
        for name in data_vars:
            assert got[name].dtype == want[name].dtype
