"""Planning an extraction: from the caller's points to `fastzarr._core.read_many` requests, cut
into read passes.

Labels become positions through xarray's own ``sel`` on the in-memory coordinates, so the
selection is the one xarray would make. A selection is worked out once per dims, shape and item
size rather than per variable, because thousands of variables share a few. The requests are cut
into passes that fit the memory budget, and, with a progress bar, into enough passes for the bar
to move.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from fastzarr import _gc
from fastzarr._redact import redact_url
from fastzarr._sizes import available_memory, parse_size
from fastzarr.errors import MemoryBudgetError
from fastzarr.extract._opening import (
    Opened,
    ReadAhead,
    Source,
    check_sources,
    open_sources,
    select_variables,
)
from fastzarr.xarray_backend import StoredVariable


@dataclass(frozen=True)
class Query:
    """What an extraction asks for, its arguments checked: the same for a read and a dry run."""

    sources: list[Source]
    indexers: dict[Hashable, Any]
    point_dim: Hashable | None
    concat_dim: Hashable
    variables: list[str] | str | None
    missing: str
    method: str | None
    tolerance: Any
    storage_options: Mapping[str, Any] | None
    deadline: float | None


def locate(query: Query) -> tuple[list[Opened], list[str], dict[Hashable, Any]]:
    """The metadata stage: every source opened and checked, the variables to read, and the points'
    positions (by xarray's own ``sel`` on the first source's coordinates: the sources agree)."""
    opened = open_all(query)
    return opened, *locate_in(query, opened)


def open_all(
    query: Query, read_ahead: ReadAhead | None = None, as_before: list[Opened] | None = None
) -> list[Opened]:
    """Every source of the query opened (its metadata and dimension coordinates read); with
    ``read_ahead``, the block tables of the chunks the read will need read meanwhile, and with
    ``as_before``, the coordinates read as those sources were opened (see `open_sources`)."""
    variables = [query.variables] if isinstance(query.variables, str) else query.variables
    with _gc.paused():  # thousands of variables' descriptions: see _gc
        return open_sources(
            query.sources,
            list(query.indexers),
            query.concat_dim,
            query.storage_options,
            query.deadline,
            read_ahead=read_ahead,
            variables=variables,
            as_before=as_before,
        )


def locate_in(query: Query, opened: list[Opened]) -> tuple[list[str], dict[Hashable, Any]]:
    """The variables to read from the sources ``opened`` (checked to agree) and the points'
    positions in them."""
    with _gc.paused():
        names = select_variables(opened, query.variables, query.missing)
        check_sources(opened, list(query.indexers), names, query.missing)
    return names, point_positions(opened[0], query.indexers, query.method, query.tolerance)


@dataclass
class Request:
    """One variable of one source to read, and how its result maps onto xarray's dims."""

    source: int
    name: str
    request: tuple[Any, ...]
    out_dims: tuple[Hashable, ...]
    nbytes: int


@dataclass(frozen=True)
class Job:
    """What to read from every source (picklable, for dask.distributed tasks)."""

    names: list[str]
    positions: Mapping[Hashable, Any]
    point_dim: Hashable | None
    concat_dim: Hashable
    budget: int
    timeout: float | None
    storage_options: Mapping[str, Any] | None = None


def point_indexers(points: Mapping[Hashable, Any]) -> tuple[dict[Hashable, Any], Hashable | None]:
    """xarray indexers for ``points``: scalars stay scalars, sequences become one shared point dim."""
    out: dict[Hashable, Any] = {}
    point_dim: Hashable | None = None
    length: int | None = None
    for dim, value in points.items():
        if isinstance(value, xr.DataArray):
            indexer = value
        elif np.ndim(value) == 0:
            out[dim] = value
            continue
        else:
            indexer = xr.DataArray(np.asarray(value), dims="point")
        if indexer.ndim == 0:
            out[dim] = indexer
            continue
        if indexer.ndim != 1:
            raise ValueError(f"points[{dim!r}] must be a scalar or 1-D, not {indexer.ndim}-D")
        if point_dim is None:
            point_dim, length = indexer.dims[0], indexer.size
        elif indexer.dims[0] != point_dim or indexer.size != length:
            raise ValueError(
                f"all sequences in points must share one dimension and length; points[{dim!r}] has "
                f"dim {indexer.dims[0]!r} and length {indexer.size}, expected {point_dim!r} and {length}"
            )
        out[dim] = indexer
    return out, point_dim


def point_positions(
    opened: Opened, indexers: Mapping[Hashable, Any], method: str | None, tolerance: Any
) -> dict[Hashable, Any]:
    """Integer positions for the point dims, computed by xarray's own ``sel`` on the coordinates.

    A dim without an index is selected by position, as xarray's ``sel`` does, without building a
    range as long as the dim (a dim's length comes from metadata and may be any size)."""
    sizes = opened.sizes
    indexed = opened.coords.indexes
    unknown = [d for d in indexers if d not in sizes]
    if unknown:
        raise KeyError(
            f"points name {unknown}, not dimensions of {redact_url(opened.name)}; "
            f"its dimensions are {list(sizes)}"
        )
    out: dict[Hashable, Any] = {}
    for d in indexers:
        if d in sizes and d not in indexed:
            out[d] = _positional(d, indexers[d], sizes[d], method, tolerance)
    labelled = {d: v for d, v in indexers.items() if d not in out}
    positions = xr.Dataset(
        {f"__pos_{d}": (d, np.arange(sizes[d])) for d in labelled if d in sizes},
        coords=opened.coords.coords,
    )
    try:
        selected = positions.sel(labelled, method=method, tolerance=tolerance)
    except KeyError:
        if method is None:
            _raise_absent_label(opened, labelled)
        raise
    for d in labelled:
        pos = selected[f"__pos_{d}"]
        if pos.ndim == 0:
            out[d] = int(pos.values)
        else:  # keep the indexers' own coordinates (e.g. station names), as sel does
            own = {k: v.variable for k, v in pos.coords.items() if k not in positions.variables}
            out[d] = xr.DataArray(pos.values, dims=pos.dims, coords=own)
    return out


def _plain(value: Any) -> str:
    """A label as users write it: ``-90.0``, not ``np.float32(-90.0)``."""
    return str(value.item() if isinstance(value, np.generic) else value)


def _raise_absent_label(opened: Opened, labelled: Mapping[Hashable, Any]) -> None:
    """Raises a KeyError naming the first label that is not in its coordinate (``method=None``
    matches labels exactly), with the coordinate's range and the store; returns if none is."""
    for d, indexer in labelled.items():
        index = opened.coords.indexes[d]
        values = np.atleast_1d(np.asarray(indexer))
        absent = values[index.get_indexer(values) < 0]
        if absent.size:
            raise KeyError(
                f"{_plain(absent[0])} is not a label of dimension {d!r} in "
                f"{redact_url(opened.name)}: its coordinate runs from {_plain(index.min())} to "
                f"{_plain(index.max())} ({len(index)} labels); method='nearest' takes the nearest one"
            ) from None


def _positional(dim: Hashable, indexer: Any, size: int, method: str | None, tolerance: Any) -> Any:
    """Positions for a dim without an index, with xarray's errors: labels are positions."""
    if method is not None or tolerance is not None:
        raise ValueError(
            f"cannot supply selection options {{'method': {method!r}, 'tolerance': {tolerance!r}}} "
            f"for dimension {dim!r} that has no associated coordinate or index"
        )
    values = np.asarray(indexer)
    if values.dtype.kind not in "iu":
        raise TypeError(f"invalid indexer array, does not have integer dtype: {values!r}")
    out_of_bounds = (values < -size) | (values >= size)
    if np.any(out_of_bounds):
        bad = values[out_of_bounds].flat[0]
        raise IndexError(f"index {bad} is out of bounds for axis 0 with size {size}")
    positions = np.where(values < 0, values + size, values).astype(np.int64)
    if positions.ndim == 0:
        return int(positions)
    own = {k: v.variable for k, v in indexer.coords.items()} if isinstance(indexer, xr.DataArray) else {}
    return xr.DataArray(positions, dims=indexer.dims, coords=own)


def plan_variable(
    index: int,
    opened: Opened,
    name: str,
    positions: Mapping[Hashable, Any],
    point_dim: Hashable | None,
    *,
    cache: dict[Any, tuple[tuple[Any, ...], tuple[Hashable, ...], int]],
) -> Request:
    """The read_many request for one variable and the dims its result will have (worked out
    once per dims, shape and item size in ``cache``: thousands of variables share a few)."""
    var = opened.stored[name]
    key = (var.dims, var.shape, var.dtype.itemsize)
    if key not in cache:
        cache[key] = _plan_selection(var, positions, point_dim)
    selection, out_dims, nbytes = cache[key]
    return Request(index, name, (opened.group[name], *selection), out_dims, nbytes)


def _plan_selection(
    var: StoredVariable, positions: Mapping[Hashable, Any], point_dim: Hashable | None
) -> tuple[tuple[Any, ...], tuple[Hashable, ...], int]:
    """A variable's read_many selection (after the array), its result's dims and its size."""
    dims = var.dims
    sizes = var.sizes
    present = [d for d in dims if d in positions]
    sequences = [d for d in present if not isinstance(positions[d], int)]
    out_dims: list[Hashable] = []
    if sequences:
        n = positions[sequences[0]].size
        axes = {
            dims.index(d): np.broadcast_to(np.asarray(positions[d], dtype=np.int64), (n,)).copy()
            for d in present
        }
        selection: tuple[Any, ...] = ((), axes)
        for d in dims:
            if d not in present:
                out_dims.append(d)
            elif point_dim not in out_dims:
                out_dims.append(point_dim)
        shape = [n if d == point_dim else sizes[d] for d in out_dims]
    elif present:
        selection = (tuple(positions[d] if d in present else slice(None) for d in dims),)
        out_dims = [d for d in dims if d not in present]
        shape = [sizes[d] for d in out_dims]
    else:
        selection = (...,)
        out_dims = list(dims)
        shape = list(var.shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * var.dtype.itemsize
    return selection, tuple(out_dims), nbytes


def memory_budget(max_memory: int | float | str | None) -> int:
    """The byte budget for one read pass: ``max_memory`` (see `parse_size`), else half the
    memory available now."""
    budget = parse_size(max_memory)
    return available_memory() // 2 if budget is None else budget


def plan_batches(requests: list[Request], budget: int) -> list[list[int]]:
    """Consecutive groups of request indices whose output bytes stay within the budget."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, r in enumerate(requests):
        if r.nbytes > budget:
            raise MemoryBudgetError(
                f"reading {r.name!r} from {r.source}-th source needs {r.nbytes} bytes, more than the "
                f"max_memory budget of {budget} bytes"
            )
        if current and total + r.nbytes > budget:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += r.nbytes
    if current:
        groups.append(current)
    return groups


_PROGRESS_STEPS = 20
"""With a progress bar, a read pass of many requests is cut into about this many passes, so the
bar moves; each pass still reads its chunks in parallel."""


_PROGRESS_MIN_REQUESTS = 64
"""Passes with fewer requests than this are not cut (the bar would not be worth the passes)."""


def progress_groups(groups: list[list[int]]) -> list[list[int]]:
    """``groups`` cut into about `_PROGRESS_STEPS` passes in all, for a moving progress bar."""
    total = sum(len(g) for g in groups)
    if total < _PROGRESS_MIN_REQUESTS:
        return groups
    step = max(-(-total // _PROGRESS_STEPS), _PROGRESS_MIN_REQUESTS // 4)
    return [g[k : k + step] for g in groups for k in range(0, len(g), step)]
