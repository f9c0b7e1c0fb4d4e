"""extract_points equals xarray's sel + concat; duplicates, errors, batching, report and to_features."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import fastzarr.extract._assembly as assembly
import numcodecs
import numpy as np
import pytest
import xarray as xr
from fastzarr.extract import (
    DuplicateError,
    DuplicateWarning,
    MemoryBudgetError,
    SourceMismatchError,
    extract_points,
    to_features,
)
from fastzarr.report import DuplicateRecord, ExtractReport
from fastzarr.testing import make_batches

# xarray's current concat defaults, spelled out as extract_points does.
CONCAT: dict[str, Any] = {"data_vars": "all", "coords": "different", "compat": "equals", "join": "outer"}
SMALL = {"variables": 3, "file_ids": 3, "steps": 2, "lat": 8, "lon": 12}


def batches(path: Path, **kwargs: Any) -> list[str]:
    """make_batches with zarr/xarray write warnings silenced (only while writing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [str(p) for p in make_batches(path, **(SMALL | kwargs))]


def as_indexers(points: dict[str, Any]) -> dict[str, Any]:
    """Sequences become xr.DataArray(dims="point") indexers, as extract_points documents."""
    return {k: v if np.ndim(v) == 0 else xr.DataArray(np.asarray(v), dims="point") for k, v in points.items()}


def expected(
    sources: list[str],
    points: dict[str, Any],
    method: str | None = "nearest",
    drop: bool = True,
    concat_dim: str = "file_id",
    **kw: Any,
) -> xr.Dataset:
    """The xarray reference: sel on each source, concat, then keep the first of each file_id."""
    parts = [xr.open_zarr(s).sel(as_indexers(points), method=method, **kw) for s in sources]
    ds = xr.concat(parts, dim=concat_dim, **CONCAT).load()
    if drop:
        _, first = np.unique(ds[concat_dim].values, return_index=True)
        ds = ds.isel({concat_dim: np.sort(first)})
    return ds


def extract_quiet(*args: Any, **kwargs: Any) -> Any:
    """extract_points with the DuplicateWarning (expected for overlapping batches) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateWarning)
        return extract_points(*args, **kwargs)


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return batches(tmp_path_factory.mktemp("v2"), zarr_format=2)


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return batches(tmp_path_factory.mktemp("chunked"), zarr_format=3, chunks={"lat": 4, "lon": 5})


LAT = np.linspace(90, -90, 8, dtype=np.float32)
LON = np.linspace(0, 360, 12, endpoint=False, dtype=np.float32)

POINTS = [
    {"lat": 10.0, "lon": 100.0},
    {"lat": 90.0, "lon": 0.0},  # grid corner
    {"lat": -90.0, "lon": 359.0},  # opposite corner, nearest wraps to the last column
    {"lat": [10.0, -89.0, 90.0], "lon": [100.0, 0.0, 330.0]},
    {"lat": [float(LAT[3]), float(LAT[4])], "lon": [float(LON[4]), float(LON[5])]},  # chunk edges
    {"lat": 0.0, "lon": [0.0, 150.0, 151.0]},  # scalar and sequence together
    {"step": 1, "lat": 30.0, "lon": 200.0},
]


@pytest.mark.parametrize("points", POINTS)
def test_equals_xarray_v2(v2: list[str], points: dict[str, Any]) -> None:
    xr.testing.assert_identical(extract_quiet(v2, points=points), expected(v2, points))


@pytest.mark.parametrize("points", POINTS)
def test_equals_xarray_v3_chunked(chunked: list[str], points: dict[str, Any]) -> None:
    xr.testing.assert_identical(extract_quiet(chunked, points=points), expected(chunked, points))


def test_exact_method(chunked: list[str]) -> None:
    points = {"lat": [float(LAT[0]), float(LAT[7])], "lon": [float(LON[11]), float(LON[5])]}
    got = extract_quiet(chunked, points=points, method=None)
    xr.testing.assert_identical(got, expected(chunked, points, method=None))
    with pytest.raises(KeyError):
        extract_points(chunked, points={"lat": 10.0, "lon": float(LON[1])}, method=None)


def test_an_unknown_dimension_lists_the_store_dimensions(v2: list[str]) -> None:
    with pytest.raises(KeyError) as info:
        extract_points(v2, points={"latt": 0.0, "lon": 0.0}, progress=False)
    message = str(info.value.args[0])
    assert message == (
        f"points name ['latt'], not dimensions of {v2[0]}; "
        "its dimensions are ['file_id', 'lat', 'lon', 'step']"
    )
    assert "FrozenMapping" not in message


def test_an_exact_label_outside_the_coordinate_names_its_range(v2: list[str]) -> None:
    for points in ({"lat": 1000.0}, {"lat": [float(LAT[0]), 1000.0], "lon": [0.0, 0.0]}):
        with pytest.raises(KeyError) as info:
            extract_points(v2, points=points, method=None, progress=False)
        assert str(info.value.args[0]) == (
            f"1000.0 is not a label of dimension 'lat' in {v2[0]}: its coordinate runs from -90.0 to "
            "90.0 (8 labels); method='nearest' takes the nearest one"
        )


def test_tolerance(v2: list[str]) -> None:
    points = {"lat": float(LAT[2]) + 0.1, "lon": float(LON[2])}
    got = extract_quiet(v2, points=points, tolerance=0.5)
    xr.testing.assert_identical(got, expected(v2, points, tolerance=0.5))
    with pytest.raises(KeyError):
        extract_quiet(v2, points=points, tolerance=0.01)


@pytest.mark.parametrize(
    ("codec", "zarr_format"),
    [
        ("blosc:lz4:5:noshuffle", 2),
        ("blosc:zstd:3:shuffle", 3),
        ("blosc:blosclz:5:bitshuffle", 2),
        ("blosc:zlib:1:bitshuffle", 3),
        ("zstd:3", 3),
        ("gzip:5", 2),
    ],
)
def test_codecs(tmp_path: Path, codec: str, zarr_format: int) -> None:
    paths = batches(tmp_path, batches=2, variables=2, codec=codec, zarr_format=zarr_format)
    points = {"lat": [10.0, -90.0, 45.0], "lon": [0.0, 359.0, 200.0]}
    xr.testing.assert_identical(extract_quiet(paths, points=points), expected(paths, points))


def write_cf(path: Path, zarr_format: int, offset: int = 0, scale: float = 0.1) -> str:
    """A store with a CF-encoded int16 variable (scale, offset, fill), a time axis and a 0-d var."""
    rng = np.random.default_rng(offset)
    values = rng.uniform(-5, 5, (3, 4, 6)).round(1)
    values[0, 1, 2] = np.nan
    temp = xr.Variable(("file_id", "y", "x"), values, {"units": "degC"})
    temp.encoding = {"dtype": "int16", "scale_factor": scale, "add_offset": 2.0, "_FillValue": -32768}
    ds = xr.Dataset(
        {
            "temp": temp,
            "valid": (("file_id", "time"), np.arange(6).reshape(3, 2) + offset),
            "count": ((), np.int32(7)),
            "profile": (("y",), np.arange(4.0)),
        },
        coords={
            "file_id": np.arange(3) + offset,
            "y": np.arange(4) * 10.0,
            "x": np.arange(6) * 5.0,
            "time": np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ns]"),
        },
    )
    store = path / f"cf{zarr_format}_{offset}.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(store, zarr_format=zarr_format, mode="w", consolidated=True)
    return str(store)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("points", [{"y": 10.0, "x": 9.0}, {"y": [0.0, 30.0, 12.0], "x": [10.0, 25.0, 0.0]}])
def test_cf_decoding(tmp_path: Path, zarr_format: int, points: dict[str, Any]) -> None:
    paths = [write_cf(tmp_path, zarr_format, 0), write_cf(tmp_path, zarr_format, 3)]
    got = extract_points(paths, points=points)
    xr.testing.assert_identical(got, expected(paths, points))
    assert got["temp"].dtype == np.float64


@pytest.mark.parametrize("formats", [(2, 2), (2, 3)])
def test_sources_encoded_differently(tmp_path: Path, formats: tuple[int, int]) -> None:
    # Each source is decoded with its own scale_factor before concatenation; with equal formats
    # the other variables' metadata is equal, and shared between the sources when opening.
    paths = [write_cf(tmp_path, formats[0], 0, scale=0.1), write_cf(tmp_path, formats[1], 3, scale=0.05)]
    points = {"y": 10.0, "x": [9.0, 21.0]}
    xr.testing.assert_identical(extract_points(paths, points=points), expected(paths, points))


def test_duplicate_times_are_reported_decoded(tmp_path: Path) -> None:
    paths = []
    for start in ("2020-01-01", "2020-01-03"):
        time = np.arange(
            np.datetime64(start, "ns"),
            np.datetime64(start, "ns") + np.timedelta64(3, "D"),
            np.timedelta64(1, "D"),
        )
        ds = xr.Dataset(
            {"t2m": (("time", "y"), np.arange(6.0).reshape(3, 2))}, coords={"time": time, "y": [0, 1]}
        )
        ds["time"].encoding = {"units": "hours since 2000-01-01", "dtype": "int64"}
        store = tmp_path / f"t{start}.zarr"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.to_zarr(store, mode="w", consolidated=True)
        paths.append(str(store))
    with pytest.warns(DuplicateWarning, match="2020-01-03"):
        got, report = extract_points(paths, points={"y": 1}, concat_dim="time", return_report=True)
    assert [r.label for r in report.duplicates] == [np.datetime64("2020-01-03", "ns")]
    assert report.duplicates[0].identical is False
    xr.testing.assert_identical(got, expected(paths, {"y": 1}, concat_dim="time"))


def test_nan_point_is_masked(tmp_path: Path) -> None:
    paths = [write_cf(tmp_path, 2)]
    got = extract_points(paths, points={"y": 10.0, "x": 10.0})
    assert np.isnan(got["temp"].values[0])


def test_single_source_and_variables(v2: list[str]) -> None:
    got = extract_points(v2[0], points={"lat": 0.0, "lon": 0.0}, variables=["var0001"])
    assert list(got.data_vars) == ["var0001"]
    ref = xr.open_zarr(v2[0])[["var0001"]].sel(lat=0.0, lon=0.0, method="nearest")
    xr.testing.assert_identical(got, xr.concat([ref], dim="file_id", **CONCAT).load())


def conflicting(tmp_path: Path) -> list[str]:
    """Two batches whose shared file_id (2) holds different values (different seeds)."""
    first = batches(tmp_path / "a", batches=1, seed=0)
    second = batches(tmp_path / "b", batches=2, seed=1)[1:]
    return first + second


def test_duplicates_drop_warns_identical(v2: list[str]) -> None:
    with pytest.warns(DuplicateWarning, match="identical") as record:
        extract_points(v2, points={"lat": 0.0, "lon": 0.0})
    message = str(record[0].message)
    assert "CONFLICTING values" in message  # the header counts them: 0
    assert f"2 from {v2[1]}: identical" in message
    assert f"4 from {v2[2]}: identical" in message


def test_duplicates_conflicting(tmp_path: Path) -> None:
    paths = conflicting(tmp_path)
    points = {"lat": 0.0, "lon": [0.0, 10.0]}
    with pytest.warns(DuplicateWarning, match=r"2 from .*: CONFLICTING"):
        got, report = extract_points(paths, points=points, return_report=True)
    xr.testing.assert_identical(got, expected(paths, points))
    assert report.duplicates == (DuplicateRecord(2, paths[1], False),)
    with pytest.raises(DuplicateError, match="CONFLICTING"):
        extract_points(paths, points=points, duplicates="raise")
    kept = extract_points(paths, points=points, duplicates="keep")
    xr.testing.assert_identical(kept, expected(paths, points, drop=False))


def test_duplicates_within_one_source(tmp_path: Path) -> None:
    paths = batches(tmp_path, batches=1)
    with pytest.warns(DuplicateWarning, match="identical"):
        got = extract_points([paths[0], paths[0]], points={"lat": 0.0, "lon": 0.0})
    assert list(got["file_id"].values) == [0, 1, 2]


def test_mismatched_coordinates(tmp_path: Path, v2: list[str]) -> None:
    other = batches(tmp_path / "o", batches=1, lat=9)
    with pytest.raises(SourceMismatchError, match=rf"{other[0]}.*'lat'.*length 9 instead of 8"):
        extract_quiet([*v2, *other], points={"lat": 0.0, "lon": 0.0})
    shifted = write_cf(tmp_path, 2, 0)
    moved = xr.open_zarr(shifted).assign_coords(x=np.arange(6) * 5.0 + 1).load()
    moved_path = tmp_path / "moved.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        moved.to_zarr(moved_path, zarr_format=2, consolidated=True)
    with pytest.raises(SourceMismatchError, match=r"moved\.zarr.*'x'.*value 1\.0 instead of 0\.0 at index 0"):
        extract_points([shifted, str(moved_path)], points={"y": 0.0, "x": 0.0})


def test_missing_variable(tmp_path: Path, v2: list[str]) -> None:
    fewer = batches(tmp_path, batches=1, variables=2)
    with pytest.raises(SourceMismatchError, match=rf"{fewer[0]} lacks variables \['var0002'\]"):
        extract_quiet([v2[0], fewer[0]], points={"lat": 0.0, "lon": 0.0})
    with pytest.raises(SourceMismatchError, match="var0002"):
        extract_quiet([fewer[0], v2[0]], points={"lat": 0.0, "lon": 0.0})
    got = extract_quiet([v2[0], fewer[0]], points={"lat": 0.0, "lon": 0.0}, missing="fill")
    ref = xr.concat(
        [xr.open_zarr(p).sel(lat=0.0, lon=0.0, method="nearest") for p in [v2[0], fewer[0]]],
        "file_id",
        **CONCAT,
    )
    _, first = np.unique(ref["file_id"].values, return_index=True)
    xr.testing.assert_identical(got, ref.isel(file_id=np.sort(first)).load())
    assert np.isnan(got["var0002"].values[3:]).all()


def test_bad_arguments(v2: list[str]) -> None:
    with pytest.raises(ValueError, match="method"):
        extract_points(v2, points={"lat": 0.0}, method="pad")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicates"):
        extract_points(v2, points={"lat": 0.0}, duplicates="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no sources"):
        extract_points([], points={"lat": 0.0})
    with pytest.raises(ValueError, match="concat_dim"):
        extract_points(v2, points={"file_id": 0})
    with pytest.raises(ValueError, match="share one dimension"):
        extract_points(v2, points={"lat": [0.0, 1.0], "lon": [0.0]})
    with pytest.raises(KeyError):
        extract_points(v2, points={"lat": 0.0}, variables=["nope"])
    with pytest.raises(ValueError, match="max_memory"):
        extract_points(v2, points={"lat": 0.0}, max_memory="lots")


def test_memory_budget_batches(v2: list[str]) -> None:
    points = {"lat": [0.0, 10.0], "lon": [0.0, 20.0]}
    one = 3 * 2 * 2 * 4  # bytes of one variable of one source: file_id x step x point x float32
    got, report = extract_quiet(v2, points=points, max_memory=2 * one, return_report=True)
    assert report.batches == 9 * one // (2 * one) + 1
    xr.testing.assert_identical(got, expected(v2, points))
    with pytest.raises(MemoryBudgetError):
        extract_quiet(v2, points=points, max_memory=one - 1)
    _, report = extract_quiet(v2, points=points, max_memory="50%", return_report=True)
    assert report.batches == 1


def test_timeout(v2: list[str]) -> None:
    with pytest.raises(fz.TimeoutError):
        extract_quiet(v2, points={"lat": 0.0, "lon": 0.0}, timeout=1e-9)


def test_report_counts_chunks(chunked: list[str]) -> None:
    # lat chunks of 4 (2 chunks), lon chunks of 5 (3 chunks), one file_id per chunk, steps whole.
    lat_idx = np.array([0, 3, 4, 7, 3])
    lon_idx = np.array([0, 4, 5, 11, 0])
    points = {"lat": LAT[lat_idx].tolist(), "lon": LON[lon_idx].tolist()}
    got, report = extract_quiet(chunked, points=points, return_report=True)
    assert isinstance(report, ExtractReport)
    assert isinstance(report, fz.Report)
    distinct = len(set(zip(lat_idx // 4, lon_idx // 5, strict=True)))  # 4 distinct (lat, lon) chunks
    assert report.chunks == len(chunked) * 3 * 3 * distinct  # sources x variables x file_ids x chunks
    assert report.chunks_missing == 0
    assert report.sources == tuple(chunked)
    assert report.variables == ("var0000", "var0001", "var0002")
    assert report.bytes_returned == len(chunked) * 3 * got["var0000"].isel(file_id=slice(0, 3)).nbytes
    assert report.bytes_read > 0
    assert report.bytes_decoded > 0
    assert report.peak_memory > 0
    # Wall-clock stages add up to the total; fetch and decode are thread-seconds, labelled so.
    assert list(report.seconds) == ["metadata", "plan", "read", "assemble", "total"]
    assert all(v >= 0 for v in report.seconds.values())
    assert sum(v for k, v in report.seconds.items() if k != "total") == pytest.approx(report.seconds["total"])
    assert set(report.thread_seconds) == {"fetch", "decode"}
    assert report.thread_seconds["decode"] > 0
    assert len(report.duplicates) == 2
    assert all(d.identical for d in report.duplicates)
    text = repr(report)
    assert "chunks touched" in text
    assert "identical" in text
    assert f"= total {report.seconds['total']:.3f}" in text
    assert "thread-seconds" in text
    assert "summed over threads" in text
    assert report._repr_html_().startswith("<table>")
    assert report.as_dict()["chunks"] == report.chunks


def test_report_partial_blosc(tmp_path: Path) -> None:
    # One 128 KiB chunk per file_id in several blosc blocks: one point needs one block of each chunk.
    values = np.random.default_rng(0).standard_normal((2, 128, 256)).astype(np.float32)
    ds = xr.Dataset(
        {"t": (("file_id", "lat", "lon"), values)},
        coords={"file_id": [0, 1], "lat": np.arange(128.0), "lon": np.arange(256.0)},
    )
    blosc = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1, blocksize=16384)
    store = str(tmp_path / "blocks.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(store, zarr_format=2, encoding={"t": {"chunks": (1, 128, 256), "compressors": blosc}})
    got, report = extract_points(store, points={"lat": 64.0, "lon": 3.0}, return_report=True)
    np.testing.assert_array_equal(got["t"].values, values[:, 64, 3])
    assert report.chunks == 2
    assert report.chunks_partial == 2
    assert report.blocks_decoded == 2
    assert report.blocks_total > report.blocks_decoded  # blosc may enlarge the block size it was given


def test_to_features(v2: list[str]) -> None:
    ds = extract_quiet(v2, points={"lat": [0.0, 10.0], "lon": [0.0, 20.0]})
    x, names = to_features(ds)
    assert x.shape == (7, 3 * 2 * 2)
    assert x.dtype == np.float64
    assert names[:3] == ["var0000[step=0,point=0]", "var0000[step=0,point=1]", "var0000[step=1,point=0]"]
    assert len(set(names)) == len(names)
    np.testing.assert_array_equal(x[:, 5], ds["var0001"].isel(step=0, point=1).values)
    x2, names2 = to_features(ds.isel(step=1, point=0), sample_dims="file_id")
    assert names2 == ["var0000", "var0001", "var0002"]
    np.testing.assert_array_equal(x2[:, 0], ds["var0000"].isel(step=1, point=0).values)
    x3, _ = to_features(ds, sample_dims=("file_id", "point"))
    assert x3.shape == (14, 6)
    with pytest.raises(ValueError, match="lacks sample dims"):
        to_features(ds.assign(extra=("point", [1.0, 2.0])))
    with pytest.raises(ValueError, match="not a dimension"):
        to_features(ds, sample_dims=("nope",))


def test_sharded_v3(tmp_path: Path) -> None:
    values = np.random.default_rng(1).standard_normal((4, 16, 20)).astype(np.float32)
    ds = xr.Dataset(
        {"t": (("file_id", "lat", "lon"), values)},
        coords={"file_id": np.arange(4), "lat": np.arange(16.0), "lon": np.arange(20.0)},
    )
    store = str(tmp_path / "sharded.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(store, zarr_format=3, encoding={"t": {"chunks": (1, 4, 5), "shards": (2, 8, 10)}})
    points = {"lat": [0.0, 7.0, 8.0, 15.0], "lon": [0.0, 9.0, 10.0, 19.0]}
    got, report = extract_points(store, points=points, return_report=True)
    xr.testing.assert_identical(got, expected([store], points))
    assert 0 < report.chunks <= 4 * 4  # shards or inner chunks holding a point


def test_point_on_time_dim(tmp_path: Path) -> None:
    paths = [write_cf(tmp_path, 3, 0), write_cf(tmp_path, 3, 3)]
    points = {"time": "2020-01-02"}
    xr.testing.assert_identical(extract_points(paths, points=points), expected(paths, points))
    points = {"time": ["2020-01-02", "2020-01-01"], "y": [0.0, 20.0]}
    xr.testing.assert_identical(extract_points(paths, points=points), expected(paths, points))


def test_distributed_client(v2: list[str], tmp_path: Path, client: Any) -> None:
    conflicting_paths = conflicting(tmp_path)
    points = {"lat": [10.0, -90.0], "lon": [0.0, 200.0]}
    got, report = extract_quiet(v2, points=points, client=client, return_report=True)
    xr.testing.assert_identical(got, expected(v2, points))
    assert report.chunks == 3 * 3 * 3
    with pytest.warns(DuplicateWarning, match="CONFLICTING"):
        got = extract_points(conflicting_paths, points=points, client=client)
    xr.testing.assert_identical(got, expected(conflicting_paths, points))


def test_distributed_client_shares_one_store_among_the_workers(v2: list[str], client: Any) -> None:
    """One source and two workers: each worker reads a share of the store's variables (its chunks),
    and the result is the single-pass one, variables in the same order."""
    from distributed import get_task_stream  # noqa: PLC0415

    points = {"lat": [10.0, -90.0], "lon": [0.0, 200.0]}
    with get_task_stream(client) as stream:
        got, report = extract_quiet(v2[0], points=points, client=client, return_report=True)
    local, local_report = extract_quiet(v2[0], points=points, return_report=True)
    xr.testing.assert_identical(got, local)
    assert list(got.data_vars) == list(local.data_vars)
    assert report.chunks == local_report.chunks
    tasks = [t for t in stream.data if "read_source_task" in t["key"]]
    assert len(tasks) == 2
    assert len({t["worker"] for t in tasks}) >= 1


def test_dataarray_points_keep_their_coords(v2: list[str]) -> None:
    station = {"station": ["a", "b"]}
    points = {
        "lat": xr.DataArray([10.0, 20.0], dims="station", coords=station),
        "lon": xr.DataArray([100.0, 3.0], dims="station", coords=station),
    }
    got = extract_quiet(v2, points=points)
    ref = xr.concat([xr.open_zarr(p).sel(points, method="nearest") for p in v2], dim="file_id", **CONCAT)
    _, first = np.unique(ref["file_id"].values, return_index=True)
    xr.testing.assert_identical(got, ref.isel(file_id=np.sort(first)).load())
    assert list(got["station"].values) == ["a", "b"]


def test_concat_in_groups_is_exact(tmp_path: Path, v2: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # extract_points concatenates a few variables at a time: one at a time must change nothing.
    monkeypatch.setattr(assembly, "_CONCAT_GROUP", 1)
    cf = [write_cf(tmp_path, 2, 0), write_cf(tmp_path, 2, 3)]
    points = {"y": [0.0, 30.0], "x": [10.0, 25.0]}
    xr.testing.assert_identical(extract_points(cf, points=points), expected(cf, points))
    points = {"lat": 0.0, "lon": [0.0, 150.0]}
    xr.testing.assert_identical(extract_quiet(v2, points=points), expected(v2, points))
    fewer = batches(tmp_path / "fewer", batches=1, variables=2)
    got = extract_quiet([fewer[0], v2[0]], points=points, missing="fill")
    ref = xr.concat(
        [xr.open_zarr(p).sel(as_indexers(points), method="nearest") for p in [fewer[0], v2[0]]],
        "file_id",
        **CONCAT,
    )
    _, first = np.unique(ref["file_id"].values, return_index=True)
    xr.testing.assert_identical(got, ref.isel(file_id=np.sort(first)).load())
    assert list(got.data_vars) == ["var0000", "var0001", "var0002"]


def test_incompatible_dtypes(tmp_path: Path) -> None:
    stores = []
    for i, values in enumerate([np.arange(4.0), np.array(["a", "b", "c", "d"])]):
        ds = xr.Dataset({"v": (("file_id", "x"), np.stack([values, values]))}, coords={"x": np.arange(4.0)})
        store = tmp_path / f"s{i}.zarr"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.to_zarr(store, zarr_format=2, consolidated=True)
        stores.append(str(store))
    with pytest.raises(SourceMismatchError, match="'v' has incompatible dtypes"):
        extract_points(stores, points={"x": 1.0})


def test_one_source_with_a_variable_lacking_the_concat_dim(tmp_path: Path, v2: list[str]) -> None:
    """One source is returned as read when every data variable has the concat dim; a variable
    without it is broadcast along it, as xr.concat of that one source does."""
    points = {"lat": 10.0, "lon": 100.0}
    xr.testing.assert_identical(extract_points(v2[0], points=points), expected(v2[:1], points, drop=False))
    path = str(tmp_path / "static.zarr")
    ds = xr.open_zarr(v2[0]).load()
    ds["mask"] = ds["var0000"].isel(file_id=0, step=0, drop=True) > 0
    ds.to_zarr(path, mode="w", zarr_format=2)
    got = extract_points(path, points=points)
    assert got["mask"].dims[0] == "file_id"
    xr.testing.assert_identical(got, expected([path], points, drop=False))


def test_dims_without_coordinates_select_by_position_like_xarray(tmp_path: Path) -> None:
    """A dim without an index is selected by position (xarray's ``sel`` falls back to ``isel``);
    no range as long as the dim is built, and xarray's errors are kept."""
    data = np.arange(4 * 6 * 5, dtype="f4").reshape(4, 6, 5)
    ds = xr.Dataset(
        {"v": (("time", "y", "x"), data)},
        coords={"time": np.arange(4) * 10, "x": [0.5, 1.5, 2.5, 3.5, 4.5]},  # y has no index
    )
    path = str(tmp_path / "s.zarr")
    ds.to_zarr(path, encoding={"v": {"chunks": (2, 3, 5)}}, zarr_format=2, consolidated=True)
    for points in ({"y": [0, 5, -1], "x": [0.5, 4.5, 2.5]}, {"y": 2, "x": [1.5, 3.5]}, {"y": [1, 3]}):
        got = extract_points(path, points=points, method=None, concat_dim="file_id")
        want = xr.open_zarr(path).sel(as_indexers(points)).load()
        xr.testing.assert_identical(got.v.isel(file_id=0, drop=True), want.v)
    with pytest.raises(ValueError, match="no associated coordinate or index"):
        extract_points(path, points={"y": [0, 1]}, method="nearest")
    with pytest.raises(IndexError, match="out of bounds"):
        extract_points(path, points={"y": [0, 6]}, method=None)
    with pytest.raises(TypeError, match="integer dtype"):
        extract_points(path, points={"y": [0.5]}, method=None)


def test_dry_run_plans_the_read_from_metadata_alone(tmp_path: Path) -> None:
    """The plan counts the chunks the read touches, returns as many bytes, and fetches and decodes
    no more than it says; it needs no chunk of any data variable (here all of them are damaged)."""
    sources = batches(tmp_path / "b", batches=2, lat=64, lon=96)
    points = {"lat": [10.0, -30.0], "lon": [100.0, 200.0]}
    _, report = extract_quiet(sources, points=points, duplicates="keep", return_report=True)
    plan = extract_quiet(sources, points=points, duplicates="keep", dry_run=True)
    assert isinstance(plan, fz.ExtractionPlan)
    assert plan.sources == tuple(sources)
    assert plan.variables == len(report.variables) == 3
    assert plan.chunks == report.chunks > 0
    assert plan.bytes_out == report.bytes_returned
    assert plan.bytes_decoded >= report.bytes_decoded
    assert plan.bytes_fetched >= report.bytes_read
    assert plan.requests == plan.first_requests + plan.then_requests >= plan.chunks
    for source in sources:
        for name in ("var0000", "var0001", "var0002"):
            for chunk in (Path(source) / name).iterdir():
                if not chunk.name.startswith("."):
                    chunk.write_bytes(b"not a chunk")
    with pytest.raises(fz.CorruptChunkError):
        extract_quiet(sources, points=points, duplicates="keep")
    again = extract_quiet(sources, points=points, duplicates="keep", dry_run=True)
    assert {k: v for k, v in again.__dict__.items() if k != "metadata_seconds"} == {
        k: v for k, v in plan.__dict__.items() if k != "metadata_seconds"
    }
    text = str(plan)
    assert f"chunks       {plan.chunks:,}" in text
    assert "estimated" in text


def test_a_plans_estimate_counts_waves_of_requests_and_bytes() -> None:
    plan = fz.ExtractionPlan(
        sources=("s",), variables=1, chunks=100, partial_fetches=100, first_requests=100,
        then_requests=150, tables_remembered=0, remembered_requests=0, bytes_fetched=50_000_000,
        bytes_decoded=60_000_000, bytes_out=400, metadata_seconds=0.1,
    )  # fmt: skip
    assert plan.requests == 250
    # 100 headers in 2 waves of 64, 150 block requests in 3, then 50 MB at 100 MB/s.
    assert plan.seconds(latency=0.02, bandwidth=100e6, concurrency=64) == pytest.approx(5 * 0.02 + 0.5)
    assert plan.seconds(latency=0.1, bandwidth=1e9, concurrency=256) == pytest.approx(2 * 0.1 + 0.05)
    # 40 of the chunks with remembered tables (their 60 block requests need nothing first):
    # without the tables, 40 header requests more in the first waves and the blocks after them.
    warm = dataclasses.replace(
        plan,
        first_requests=120,
        then_requests=90,
        tables_remembered=40,
        remembered_requests=60,
        bytes_fetched=0,
    )
    assert warm.seconds(latency=0.02, bandwidth=1e9, concurrency=64) == pytest.approx(4 * 0.02)
    assert warm.seconds(latency=0.02, bandwidth=1e9, concurrency=64, tables=False) == pytest.approx(
        (2 + 3) * 0.02
    )
    assert "block tables 40 remembered" in str(warm)
    assert "without the tables" in str(warm)
    for bad in ({"latency": -1.0}, {"bandwidth": 0.0}, {"concurrency": -3}):
        with pytest.raises(ValueError, match=r"latency|concurrency"):
            plan.seconds(**bad)  # type: ignore[arg-type]


def test_only_remote_sources_are_remembered_and_only_the_latest_few() -> None:
    """Local sources cost no round trip to open: they are never read from remembered metadata.
    Remote ones are keyed by everything that shapes their opening, and the oldest is forgotten."""
    from fastzarr.extract import _planning, _remembered  # noqa: PLC0415 - the module under test

    def query(sources: list[str], **kwargs: Any) -> _planning.Query:
        fields = {
            "sources": sources,
            "indexers": {"lat": 1.0},
            "point_dim": None,
            "concat_dim": "file_id",
            "variables": None,
            "missing": "raise",
            "method": "nearest",
            "tolerance": None,
            "storage_options": None,
            "deadline": None,
        }
        return _planning.Query(**{**fields, **kwargs})

    assert _remembered.key_of(query(["/data/a.zarr"])) is None
    assert _remembered.key_of(query(["s3://b/a.zarr", "/data/a.zarr"])) is None
    remote = _remembered.key_of(query(["s3://b/a.zarr"]))
    assert remote is not None
    assert remote != _remembered.key_of(query(["s3://b/a.zarr"], storage_options={"region": "x"}))
    assert remote != _remembered.key_of(query(["s3://b/a.zarr"], indexers={"lon": 1.0}))
    _remembered.forget()
    keys = [_remembered.key_of(query([f"https://host/{i}.zarr"])) for i in range(_remembered.CAPACITY + 1)]
    for key in keys:
        assert key is not None
        _remembered.remember(key, _remembered.Remembered([]))
    assert _remembered.recall(keys[0]) is None  # the oldest, forgotten
    assert all(_remembered.recall(key) is not None for key in keys[1:])
    _remembered.forget()
    assert _remembered.recall(keys[-1]) is None
