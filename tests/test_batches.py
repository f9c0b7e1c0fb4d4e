"""fz.BatchGenerator against xbatcher 0.4's BatchGenerator: the same batches, batch for batch,
over every way a dataset can be backed, each batch one fastzarr read, the next read ahead."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastzarr as fz
import fastzarr.batches
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import xbatcher
import zarr.errors


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(3)
    time_ = pd.date_range("2026-01-01", periods=12, freq="6h")
    lat = np.linspace(50, 53, 10)
    lon = np.linspace(-2, 2, 8)
    t2m = rng.standard_normal((12, 10, 8)).astype("f4") + 280
    t2m[0, 0, :3] = np.nan
    precip = rng.gamma(1.0, 2.0, (12, 10, 8))
    return xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), t2m, {"units": "K"}),
            "precip": (("time", "lat", "lon"), precip, {"units": "mm"}),
            "elevation": (("lat", "lon"), rng.integers(0, 900, (10, 8)).astype("i2")),
        },
        coords={"time": time_, "lat": lat, "lon": lon, "station": ("lat", np.arange(10))},
        attrs={"title": "batches"},
    )


@pytest.fixture(scope="module", params=[2, 3], ids=["v2", "v3"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("loader") / "data.zarr")
    encoding = {name: {"chunks": (4, 5, 4)} for name in ("t2m", "precip")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        _dataset().to_zarr(path, zarr_format=request.param, encoding=encoding, consolidated=True)
    return path


OPENERS: dict[str, Callable[[str], xr.Dataset]] = {
    "engine": lambda p: xr.open_dataset(p, engine="fastzarr"),
    "fz.open_zarr": fz.open_zarr,
    "xr.open_zarr-dask": xr.open_zarr,
    "xr.open_zarr-lazy": lambda p: xr.open_zarr(p, chunks=None),
    "memory": lambda p: xr.open_zarr(p).load(),
}

OPTIONS: list[dict[str, Any]] = [
    {"input_dims": {"lat": 5, "lon": 4}},
    {"input_dims": {"lat": 4, "lon": 4}, "input_overlap": {"lat": 2, "lon": 1}},
    {"input_dims": {"time": 3}},
    {"input_dims": {"lat": 5}, "batch_dims": {"time": 4}},
    {"input_dims": {"lat": 5, "lon": 4}, "batch_dims": {"time": 6}, "concat_input_dims": True},
    {"input_dims": {"lat": 5, "lon": 8}, "concat_input_dims": True},
    {"input_dims": {"lat": 3}, "input_overlap": {"lat": 1}, "concat_input_dims": True},
    {"input_dims": {"time": 2, "lat": 5}, "batch_dims": {"time": 4}, "concat_input_dims": True},
    {"input_dims": {"lat": 5}, "preload_batch": False},
]


def _ids(options: dict[str, Any]) -> str:
    return "-".join(f"{k}={v}" for k, v in options.items()).replace(" ", "")


def _reference(theirs: xbatcher.BatchGenerator, idx: int) -> Any:
    """xbatcher's batch; its concat warns that xarray's defaults will change (ours spells them out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return theirs[idx]


def assert_same_batches(ours: fz.BatchGenerator, theirs: xbatcher.BatchGenerator) -> None:
    assert len(ours) == len(theirs)
    got = list(ours)
    assert len(got) == len(theirs)
    for i, batch in enumerate(got):
        xr.testing.assert_identical(batch, _reference(theirs, i))
    if len(theirs):
        xr.testing.assert_identical(ours[-1], _reference(theirs, -1))
        xr.testing.assert_identical(ours[0], _reference(theirs, 0))


@pytest.mark.parametrize("opener", list(OPENERS))
@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_batches_equal_xbatchers(store: str, opener: str, options: dict[str, Any]) -> None:
    ds = OPENERS[opener](store)
    assert_same_batches(fz.BatchGenerator(ds, **options), xbatcher.BatchGenerator(ds, **options))


@pytest.mark.parametrize("opener", ["fz.open_zarr", "memory"])
@pytest.mark.parametrize("options", OPTIONS, ids=_ids)
def test_dataarray_batches_equal_xbatchers(store: str, opener: str, options: dict[str, Any]) -> None:
    da = OPENERS[opener](store)["t2m"]
    ours = fz.BatchGenerator(da, **options)
    if options.get("concat_input_dims") and opener != "memory":
        # xbatcher cannot concatenate dask-backed DataArray patches (it tests a name against the
        # values): compare with its batches of the same DataArray in memory.
        da = da.load()
    assert_same_batches(ours, xbatcher.BatchGenerator(da, **options))


def test_a_dimension_in_input_and_batch_dims_warns_as_xbatcher(store: str) -> None:
    ds = fz.open_zarr(store)
    options = {"input_dims": {"time": 3}, "batch_dims": {"time": 6}}
    with pytest.warns(UserWarning, match="will not impact batch generation") as ours:
        generator = fz.BatchGenerator(ds, **options)
    with pytest.warns(UserWarning, match="will not impact batch generation") as theirs:
        reference = xbatcher.BatchGenerator(ds, **options)
    assert str(ours[0].message) == str(theirs[0].message)
    assert_same_batches(generator, reference)


@pytest.mark.parametrize(
    "options",
    [
        {"input_dims": {"lat": 11}},
        {"input_dims": {"lat": 4}, "input_overlap": {"lat": 4}},
    ],
    ids=_ids,
)
def test_bad_sizes_raise_as_xbatcher(store: str, options: dict[str, Any]) -> None:
    ds = fz.open_zarr(store)
    with pytest.raises(ValueError, match="input") as theirs:
        xbatcher.BatchGenerator(ds, **options)
    with pytest.raises(ValueError, match="input") as ours:
        fz.BatchGenerator(ds, **options)
    assert str(ours.value) == str(theirs.value)


def test_indexing_errors_as_xbatcher(store: str) -> None:
    generator = fz.BatchGenerator(fz.open_zarr(store), input_dims={"lat": 5})
    assert len(generator) == 2  # lat 10 in windows of 5; the other dimensions become "sample"
    with pytest.raises(IndexError, match="list index out of range"):
        generator[2]
    with pytest.raises(IndexError):
        generator[-3]
    with pytest.raises(NotImplementedError, match="single integer key"):
        generator[1:3]  # type: ignore[index]
    assert generator.input_dims == {"lat": 5}
    assert generator.batch_dims == {}
    assert generator.input_overlap == {}
    assert generator.concat_input_dims is False
    assert generator.preload_batch is True


def test_batches_are_numpy_backed(store: str) -> None:
    """A preloaded batch holds numpy arrays, whatever backed the dataset (dask included)."""
    for batch in fz.BatchGenerator(xr.open_zarr(store), input_dims={"lat": 5, "lon": 4}):
        for variable in batch.variables.values():
            assert isinstance(variable.data, np.ndarray), type(variable.data)


def test_each_batch_is_one_load_of_all_variables(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = fastzarr.batches.load

    def spy(obj: Any, **kwargs: Any) -> Any:
        calls.append(sorted(obj.data_vars))
        return real(obj, **kwargs)

    monkeypatch.setattr(fastzarr.batches, "load", spy)
    generator = fz.BatchGenerator(
        xr.open_zarr(store), input_dims={"lat": 5, "lon": 4}, batch_dims={"time": 6}, concat_input_dims=True
    )
    batches = list(generator)
    assert len(batches) == 2
    assert calls == [["elevation", "precip", "t2m"]]  # both batches in one pass
    calls.clear()
    one_at_a_time = fz.BatchGenerator(
        xr.open_zarr(store),
        input_dims={"lat": 5, "lon": 4},
        batch_dims={"time": 6},
        concat_input_dims=True,
        prefetch=1,
    )
    assert len(list(one_at_a_time)) == 2
    assert calls == [["elevation", "precip", "t2m"]] * 2


def test_reads_ahead_within_the_bound(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are read ``prefetch`` at a time; while the caller holds one, the next group is
    read, and never more: at most ``2 * prefetch`` batches are held."""
    started: list[list[int]] = []
    lock = threading.Lock()
    real = fz.BatchGenerator._read_group

    def tracking(self: fz.BatchGenerator, indices: list[int]) -> Any:
        with lock:
            started.append(list(indices))
        return real(self, indices)

    monkeypatch.setattr(fz.BatchGenerator, "_read_group", tracking)
    generator = fz.BatchGenerator(fz.open_zarr(store), input_dims={"time": 1}, prefetch=3)
    seen_ahead = []
    for consumed, _batch in enumerate(generator):
        time.sleep(0.05)  # the training step: the reads ahead finish meanwhile
        with lock:
            ahead = max(i for group in started for i in group) - consumed
        seen_ahead.append(ahead)
        assert ahead <= 2 * 3 - 1
    assert started == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert max(seen_ahead) == 5


def test_batches_sharing_chunks_are_read_in_one_pass(store: str) -> None:
    """Four batches of one time step each share their chunk (4 steps): read together, each chunk
    is decoded once for all four, where reading them one by one decodes it four times."""
    together = fz.BatchGenerator(fz.open_zarr(store, chunks=None), input_dims={"time": 1}, prefetch=4)
    one_by_one = fz.BatchGenerator(fz.open_zarr(store, chunks=None), input_dims={"time": 1}, prefetch=0)
    stats_together = _decoded_chunks(lambda: list(together))
    stats_alone = _decoded_chunks(lambda: list(one_by_one))
    chunks = 3 * (10 // 5) * (8 // 4)  # time chunks x lat chunks x lon chunks, per variable
    # t2m and precip; elevation and the station coordinate (no time dimension) are loaded in
    # place by the first read, as xarray's load does, and not read again.
    assert stats_together == 2 * chunks + 2
    assert stats_alone == 4 * 2 * chunks + 2


def _decoded_chunks(run: Callable[[], Any]) -> int:
    """Chunks decoded by ``run`` (summed over its read passes)."""
    counted = [0]
    real = fz.read_many

    def counting(requests: Any, **kwargs: Any) -> Any:
        kwargs["return_stats"] = True
        arrays, stats = real(requests, **kwargs)
        counted[0] += stats.chunks
        return arrays, stats

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fz, "read_many", counting)
        run()
    return counted[0]


def test_stopping_early_cancels_the_reads_ahead(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[int]] = []
    real = fz.BatchGenerator._read_group

    def tracking(self: fz.BatchGenerator, indices: list[int]) -> Any:
        started.append(list(indices))
        time.sleep(0.05)
        return real(self, indices)

    monkeypatch.setattr(fz.BatchGenerator, "_read_group", tracking)
    iterator: Iterator[Any] = iter(fz.BatchGenerator(fz.open_zarr(store), input_dims={"time": 1}, prefetch=2))
    next(iterator)
    iterator.close()  # type: ignore[attr-defined]
    assert len(started) <= 2


def test_errors_of_a_read_ahead_reach_the_caller(tmp_path: Path) -> None:
    path = str(tmp_path / "broken.zarr")
    _dataset().to_zarr(path, zarr_format=2, encoding={"t2m": {"chunks": (4, 10, 8)}})
    (Path(path) / "t2m" / "1.0.0").write_bytes(b"not a chunk")
    generator = fz.BatchGenerator(fz.open_zarr(path), input_dims={"time": 1})
    batches = iter(generator)
    for _ in range(4):  # the batches of the first chunk come through first
        next(batches)
    with pytest.raises(fz.CorruptChunkError, match=r"1\.0\.0"):
        next(batches)


def test_cache_hooks_as_xbatcher(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = fz.open_zarr(store)

    def double(batch: Any) -> Any:
        return batch * 2

    options: dict[str, Any] = {"input_dims": {"lat": 5, "lon": 4}, "cache_preprocess": double}
    ours_cache: dict[str, Any] = {}
    theirs_cache: dict[str, Any] = {}
    # The batches keep the store's codecs in their encoding (as from xr.open_zarr), and
    # to_zarr writes them back: numcodecs' codecs of a v2 store only go into a v2 cache, for
    # xbatcher as for fastzarr, so each cache is written in its store's format.
    zarr_format = fz.open_group(store).zarr_format
    with warnings.catch_warnings(), zarr.config.set({"default_zarr_format": zarr_format}):
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
        ours = fz.BatchGenerator(ds, cache=ours_cache, **options)
        theirs = xbatcher.BatchGenerator(ds, cache=theirs_cache, **options)
        first = [ours[i] for i in range(3)]
        for i, batch in enumerate(first):
            xr.testing.assert_identical(batch, theirs[i])
        assert sorted(ours_cache) == sorted(theirs_cache)

        def no_read(self: fz.BatchGenerator, idx: int) -> Any:
            raise AssertionError(f"batch {idx} was read again instead of served from the cache")

        # A second look is served from the cache, Zarr v2 or v3 groups alike.
        monkeypatch.setattr(fz.BatchGenerator, "_read", no_read)
        for i, batch in enumerate(first):
            xr.testing.assert_allclose(ours[i], batch)
