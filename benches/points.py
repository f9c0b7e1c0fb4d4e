"""Point extraction peers for ``benches/compare.py``: one coordinate's series out of every store.

Every peer returns, per data variable, the values at the grid point nearest to ``POINT`` from
every store, concatenated along ``file_id`` (repeated file_ids kept, as ``xr.concat`` keeps
them), so results compare byte for byte across peers. ``fastzarr, 100 points`` reads
``POINTS`` (100 points at once) and is compared with the one-point read only in time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

# A store to read: its path and the names of its data variables (as in compare.py).
StoreSpec = tuple[str, list[str]]
Loaded = dict[str, npt.NDArray[Any]]

#: The point every single-point peer reads; chosen off grid midpoints so "nearest" has no ties.
POINT = {"lat": 51.37, "lon": 0.13}
#: 100 points for the many-points row (fastzarr only): a fixed pseudo-random sample.
_rng = np.random.default_rng(7)
POINTS = {
    "lat": np.round(_rng.uniform(-80, 80, 100), 3).tolist(),
    "lon": np.round(_rng.uniform(0, 359, 100), 3).tolist(),
}


def _names(stores: list[StoreSpec]) -> list[str]:
    """The data variables (the same in every store of a dataset)."""
    return stores[0][1]


def extract_fastzarr(stores: list[StoreSpec]) -> Loaded:
    """``fz.extract_points`` over all stores at once (one parallel pass, partial blosc decoding)."""
    fz = importlib.import_module("fastzarr")
    names = _names(stores)
    ds = fz.extract_points([path for path, _ in stores], points=POINT, variables=names, duplicates="keep")
    return {name: ds.variables[name].values for name in names}


def extract_fastzarr_100(stores: list[StoreSpec]) -> Loaded:
    """``fz.extract_points`` of 100 points at once (a ``point`` dimension)."""
    fz = importlib.import_module("fastzarr")
    names = _names(stores)
    ds = fz.extract_points([path for path, _ in stores], points=POINTS, variables=names, duplicates="keep")
    return {name: ds.variables[name].values for name in names}


def _extract_xarray(stores: list[StoreSpec], **open_kwargs: Any) -> Loaded:
    """``xr.concat([xr.open_zarr(s).sel(point, method="nearest") for s], "file_id").load()``."""
    xr = importlib.import_module("xarray")
    names = _names(stores)
    parts = [xr.open_zarr(path, **open_kwargs)[names].sel(POINT, method="nearest") for path, _ in stores]
    ds = xr.concat(parts, dim="file_id").load()
    return {name: ds.variables[name].values for name in names}


def extract_xarray_dask(stores: list[StoreSpec]) -> Loaded:
    """xarray with its default dask chunks."""
    return _extract_xarray(stores)


def extract_xarray_nodask(stores: list[StoreSpec]) -> Loaded:
    """xarray without dask (``chunks=None``)."""
    return _extract_xarray(stores, chunks=None)


def _nearest(coord: npt.NDArray[Any], value: float) -> int:
    """Index of the coordinate nearest to ``value`` (no ties at ``POINT``)."""
    return int(np.argmin(np.abs(coord.astype(np.float64) - value)))


def extract_zarrs(stores: list[StoreSpec]) -> Loaded:
    """zarr-python with the zarrs pipeline: ``array.oindex[:, :, i, j]`` per variable and store."""
    zarr = importlib.import_module("zarr")
    names = _names(stores)
    parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in names}
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        for path, _ in stores:
            group = zarr.open_group(path, mode="r")
            i = _nearest(group["lat"][...], POINT["lat"])
            j = _nearest(group["lon"][...], POINT["lon"])
            for name in names:
                parts[name].append(group[name].oindex[:, :, i, j])
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def extract_tensorstore(stores: list[StoreSpec]) -> Loaded:
    """tensorstore: every variable of every store opened, then all point reads issued as futures."""
    ts = importlib.import_module("tensorstore")
    zarr = importlib.import_module("zarr")
    context = ts.Context()
    names = _names(stores)
    reads: dict[str, list[Any]] = {name: [] for name in names}
    for path, _ in stores:
        group = zarr.open_group(path, mode="r")
        i = _nearest(group["lat"][...], POINT["lat"])
        j = _nearest(group["lon"][...], POINT["lon"])
        opens = {
            name: ts.open(
                {"driver": "zarr", "kvstore": {"driver": "file", "path": f"{path}/{name}"}},
                read=True,
                context=context,
            )
            for name in names
        }
        for name, future in opens.items():
            reads[name].append(future.result()[:, :, i, j].read())
    return {name: np.concatenate([f.result() for f in futures]) for name, futures in reads.items()}


class PointPeer:
    """A point reader: label, modules to import before timing, the function, and whether its
    result is checked against fastzarr's (the 100-point row reads different points)."""

    def __init__(
        self, label: str, modules: tuple[str, ...], load: Callable[[list[StoreSpec]], Loaded], checked: bool
    ) -> None:
        self.label = label
        self.modules = modules
        self.load = load
        self.checked = checked


POINT_PEERS: dict[str, PointPeer] = {
    "fastzarr": PointPeer("fastzarr (extract_points)", ("fastzarr", "xarray"), extract_fastzarr, True),
    "fastzarr-100": PointPeer(
        "fastzarr, 100 points at once", ("fastzarr", "xarray"), extract_fastzarr_100, False
    ),
    "xarray-dask": PointPeer(
        "xarray + dask (sel + concat)", ("xarray", "dask.array", "zarr"), extract_xarray_dask, True
    ),
    "xarray": PointPeer("xarray, no dask", ("xarray", "zarr"), extract_xarray_nodask, True),
    "zarrs": PointPeer("zarr-python + zarrs pipeline", ("zarr", "zarrs"), extract_zarrs, True),
    "tensorstore": PointPeer("tensorstore", ("tensorstore", "zarr"), extract_tensorstore, True),
}
