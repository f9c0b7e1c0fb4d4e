"""dask: chunked datasets read through fastzarr, deterministic graph names, dask.distributed."""

from __future__ import annotations

import operator
from typing import Any

import dask
import dask.array as da
import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
from dask._task_spec import DataNode
from fastzarr.testing import make_batches
from fastzarr.xarray_backend import FastzarrArrayWrapper, configure_for_dask_worker
from test_xarray import quiet_zarr, write_store
from xarray.core import indexing


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dask") / "sample.zarr"
    write_store(path, 3, consolidated=True)
    return str(path)


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A seed-like store: float32 variables over (file_id, step, lat, lon), one file_id per chunk."""
    with quiet_zarr():
        paths = make_batches(
            tmp_path_factory.mktemp("batches"), batches=1, variables=5, file_ids=4, steps=2, lat=8, lon=16
        )
    return str(paths[0])


def backend_arrays(array: da.Array) -> list[Any]:
    """The backend arrays at the bottom of the xarray chains a dask graph reads from."""
    found = []
    for node in dict(array.__dask_graph__()).values():
        obj = node.value if isinstance(node, DataNode) else node
        for _ in range(32):
            if obj is None or isinstance(obj, FastzarrArrayWrapper):
                break
            obj = getattr(obj, "array", None)
        if isinstance(obj, FastzarrArrayWrapper):
            found.append(obj)
    return found


@pytest.mark.parametrize(
    "chunks", [{}, "auto", {"time": 6, "y": 4}, -1], ids=["stored", "auto", "dict", "one"]
)
def test_chunked_results(sample: str, chunks: Any) -> None:
    drop = ["label"]  # dask cannot auto-chunk object (variable-length string) arrays
    actual = fz.open_zarr(sample, chunks=chunks, drop_variables=drop)
    expected = xr.open_zarr(sample, chunks=chunks, drop_variables=drop, consolidated=True)
    for name, variable in actual.data_vars.items():
        assert isinstance(variable.data, da.Array), name
        assert variable.chunks == expected[name].chunks, name
        assert backend_arrays(variable.data), name  # its tasks read through fastzarr
    xr.testing.assert_identical(actual.compute(), expected.compute())
    reduced = actual.precip.mean(["y", "x"]).compute()
    xr.testing.assert_identical(reduced, expected.precip.mean(["y", "x"]).compute())
    selected = actual.isel(time=[1, 4], x=slice(1, 4)).compute()
    xr.testing.assert_identical(selected, expected.isel(time=[1, 4], x=slice(1, 4)).compute())


def test_preferred_chunks_follow_storage(sample: str) -> None:
    ds = fz.open_zarr(sample)
    assert ds.precip.chunks == ((2, 2, 2), (2, 2), (5,))
    assert ds.precip.encoding["preferred_chunks"] == {"time": 2, "y": 2, "x": 5}
    assert ds.temp.chunks == ((3, 3), (2, 2), (5,))


def test_graph_names_are_deterministic(sample: str) -> None:
    first = fz.open_zarr(sample, chunks={})
    second = fz.open_zarr(sample, chunks={})
    for name in first.data_vars:
        assert first[name].data.name == second[name].data.name
    assert first.temp.data.name != first.precip.data.name
    assert dask.base.tokenize(first.temp.data) == dask.base.tokenize(second.temp.data)


def test_lazy_dataset_chunks_deterministically(sample: str) -> None:
    """Chunking a lazily indexed dataset tokenizes the backend array (store, path, metadata)."""
    first = fz.open_zarr(sample, chunks=None).chunk({"time": 3})
    second = fz.open_zarr(sample, chunks=None).chunk({"time": 3})
    assert first.temp.data.name == second.temp.data.name


def test_worker_threads_untouched_outside_distributed(fresh_threads: None) -> None:
    fz.set_num_threads(2)
    configure_for_dask_worker()
    assert fz.get_num_threads() == 2


def test_distributed(client: Any, batch: str, sample: str) -> None:
    """Two worker processes, one thread each: results equal xarray's, and every worker sizes
    fastzarr's pool to its one thread."""
    ds = fz.open_zarr(batch, chunks={})
    expected = xr.open_zarr(batch, chunks=None, consolidated=True).load()

    reduced = ds.mean(["step", "lat", "lon"]).compute()
    xr.testing.assert_allclose(reduced, expected.mean(["step", "lat", "lon"]), rtol=1e-6)
    selected = ds.isel(file_id=[3, 0], lat=slice(2, 6)).compute()
    xr.testing.assert_identical(selected, expected.isel(file_id=[3, 0], lat=slice(2, 6)))

    cf = fz.open_zarr(sample, chunks={}, drop_variables=["label"])
    cf_expected = xr.open_zarr(sample, chunks=None, consolidated=True, drop_variables=["label"]).load()
    xr.testing.assert_identical(cf.isel(y=[3, 1]).compute(), cf_expected.isel(y=[3, 1]))
    total = cf.precip.sum().compute()
    np.testing.assert_allclose(total.values, cf_expected.precip.sum().values)

    wrapper = FastzarrArrayWrapper(fz.open_array(batch, path="var0000"))
    key = indexing.BasicIndexer((0, 0, slice(None), slice(None)))
    workers = list(client.scheduler_info()["workers"])
    assert len(workers) == 2
    for address in workers:
        block = client.submit(operator.getitem, wrapper, key, workers=[address], pure=False).result()
        np.testing.assert_array_equal(block, expected.var0000.values[0, 0])
    assert set(client.run(fz.get_num_threads).values()) == {1}
