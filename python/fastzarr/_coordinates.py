"""Coordinate selections like zarr-python's: ``array.vindex[...]`` and N-dimensional boolean
masks in ``array[mask]``.

The points are grouped by the chunk that holds them; each chunk's bounding box of points is
read once, all of them in one parallel ``read_many``, and the points gathered from the boxes.
Memory stays within the chunks touched, however scattered the points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ._core import Array, SelectionError, read_many


def _as_tuple(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


def _points(array: Array, coords: tuple[npt.NDArray[np.int64], ...]) -> npt.NDArray[Any]:
    """The values at the points ``coords`` (one 1-D integer array per leading axis, already
    within bounds), each point with every element of the remaining axes."""
    shape = tuple(map(int, array.shape))
    axes = len(coords)
    rest = shape[axes:]
    count = len(coords[0]) if axes else 0
    out = np.empty((count, *rest), dtype=array.dtype)
    if count == 0:
        return out
    chunks = tuple(map(int, array.chunks))[:axes]
    chunk_of = np.stack([c // size for c, size in zip(coords, chunks, strict=True)], axis=1)
    _, group = np.unique(chunk_of, axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    members = np.split(order, starts[1:])
    requests = []
    origins = []
    for points in members:
        low = [int(c[points].min()) for c in coords]
        high = [int(c[points].max()) + 1 for c in coords]
        region = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True)) + (slice(None),) * len(rest)
        requests.append((array, region))
        origins.append(low)
    for points, low, block in zip(members, origins, read_many(requests), strict=True):
        out[points] = block[tuple(c[points] - lo for c, lo in zip(coords, low, strict=True))]
    return out


def _within_bounds(index: npt.NDArray[Any], size: int, axis: int) -> npt.NDArray[np.int64]:
    index = index.astype(np.int64, copy=False)
    if index.size and (index.min() < -size or index.max() >= size):
        bad = index[(index < -size) | (index >= size)][0]
        raise SelectionError(f"index {bad} is out of bounds for axis {axis} with size {size}")
    return np.where(index < 0, index + size, index)


def mask_selection(array: Array, mask: Any) -> npt.NDArray[Any]:
    """``array[mask]`` for a boolean ``mask`` over the leading axes (numpy's result: one row
    per true element, in C order, with the remaining axes)."""
    mask = np.asarray(mask, dtype=bool)
    shape = tuple(map(int, array.shape))
    if mask.ndim > len(shape) or mask.shape != shape[: mask.ndim]:
        raise SelectionError(
            f"boolean index of shape {mask.shape} does not match the array's leading axes {shape}"
        )
    return _points(array, tuple(c.astype(np.int64) for c in mask.nonzero()))


def vindex(array: Array, key: Any) -> npt.NDArray[Any]:
    """zarr-python's ``vindex``: one boolean array of the array's shape (mask selection), or one
    integer array per axis, broadcast together (coordinate selection; the result has their
    broadcast shape)."""
    items = _as_tuple(key)
    shape = tuple(map(int, array.shape))
    if not shape:
        raise SelectionError("vindex needs an array of at least one dimension")
    if len(items) == 1 and np.asarray(items[0]).dtype == bool:
        mask = np.asarray(items[0])
        if mask.shape != shape:
            raise SelectionError(f"a vindex mask must have the array's shape {shape}, not {mask.shape}")
        return mask_selection(array, mask)
    if len(items) != len(shape):
        raise SelectionError(
            f"vindex needs one integer array per axis ({len(shape)}), got {len(items)} indices"
        )
    arrays = []
    for item in items:
        if isinstance(item, slice | type(Ellipsis) | bool | np.bool_):
            raise TypeError(f"vindex takes integer arrays only, not {type(item).__name__}")
        index = np.asarray(item)
        if index.dtype.kind not in "iu" and not (index.dtype.kind == "f" and index.size == 0):
            raise TypeError(f"vindex takes integer arrays only, not {index.dtype} values")
        arrays.append(index)
    try:
        broadcast = np.broadcast_arrays(*arrays)
    except ValueError as err:
        raise SelectionError(f"vindex arrays do not broadcast together: {err}") from None
    coords = tuple(
        _within_bounds(b.reshape(-1), size, axis)
        for axis, (b, size) in enumerate(zip(broadcast, shape, strict=True))
    )
    return _points(array, coords).reshape(broadcast[0].shape)
