"""Assertions for test suites that guard data pipelines: fail in CI, not six hours into a run.

Each raises ``AssertionError`` with a message that says what is wrong and where (the variables,
the labels, the index), so that a failing CI log is enough to act on.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

from fastzarr._compat import xarray as compat_xr

__all__ = [
    "assert_cache_valid",
    "assert_materialized",
    "assert_not_all_nan",
    "assert_same_as_xarray",
    "assert_unique",
]

_LISTED = 10  # how many offenders a message spells out before "... and N more"
_MAX_DEPTH = 64


def _where(obj: Any) -> str:
    """`` in <source>`` for objects opened from a store, else nothing."""
    source = getattr(obj, "encoding", {}).get("source")
    return f" in {source}" if source else ""


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {plural or word + 's'}"


def _is_are(count: int) -> str:
    return "is" if count == 1 else "are"


def _label(value: Any) -> str:
    """A label as users write it: ``2``, ``nan``, ``'a'``, ``2020-01-01T00:00``."""
    if isinstance(value, np.datetime64 | np.timedelta64):
        return str(value)
    if isinstance(value, np.generic):
        return repr(value.item())
    return repr(value)


def _named_variables(obj: xr.Dataset | xr.DataArray | xr.Variable) -> list[tuple[str, xr.Variable]]:
    """Every variable of ``obj``, data and coordinates, with a name for messages."""
    if isinstance(obj, xr.Dataset):
        return [(str(name), var) for name, var in obj.variables.items()]
    if isinstance(obj, xr.DataArray):
        own = str(obj.name) if obj.name is not None else "<DataArray>"
        return [(own, obj.variable), *((str(n), c.variable) for n, c in obj.coords.items())]
    return [("<Variable>", obj)]


def _lazy_backing(data: Any) -> str | None:
    """None when ``data`` (what a Variable holds) is numpy memory, else what it is instead."""
    memory, chain, data = compat_xr.memory_backing(data)
    if memory:
        return None
    module = type(data).__module__.split(".")[0]
    if module == "dask":
        chunks = getattr(data, "chunksize", None)
        return f"a dask array (chunks of {chunks}): nothing is read until it is computed"
    if module == "zarr":
        return f"a zarr array ({type(data).__name__}): every access reads the store"
    if compat_xr.is_lazy_wrapper(data) or isinstance(data, xr.backends.BackendArray):
        lazy = [type(data).__name__]
        inner = compat_xr.wrapped(data)
        for _ in range(_MAX_DEPTH):
            if inner is None:
                break
            lazy.append(type(inner).__name__)
            inner = compat_xr.wrapped(inner)
        return "lazy, backed by " + " > ".join(chain + lazy) + ": not read from the store yet"
    return f"a {type(data).__module__}.{type(data).__name__}, not a numpy array"


def _variable_backing(var: xr.Variable) -> str | None:
    """None when ``var`` holds numpy memory (or is an index), else what it holds instead."""
    if compat_xr.in_memory(var):
        return None
    data = compat_xr.variable_data(var)
    if data is None:
        return "cannot tell whether it is in memory: this xarray release hides its lazy arrays"
    return _lazy_backing(data)


def assert_materialized(obj: Any) -> None:
    """Asserts that every variable and coordinate of ``obj`` holds numpy memory.

    Fails on dask arrays, xarray's lazily indexed backend arrays (``LazilyIndexedArray``, a
    ``MemoryCachedArray`` over a store not read yet, fastzarr's or xarray's Zarr backend
    arrays), zarr arrays and other non-numpy arrays; names each such variable and what backs
    it. Index coordinates (held by pandas) count as memory. Reads nothing.

    Args:
        obj: an ``xarray.Dataset``, ``DataArray`` or ``Variable`` (or a numpy array, which
            passes).
    """
    if isinstance(obj, np.ndarray):
        return
    if not isinstance(obj, xr.Dataset | xr.DataArray | xr.Variable):
        reason = _lazy_backing(obj) or "not an xarray object"
        raise AssertionError(f"expected a numpy-backed xarray object, got {type(obj).__name__}: {reason}")
    variables = _named_variables(obj)
    lazy = [(name, why) for name, var in variables if (why := _variable_backing(var)) is not None]
    if lazy:
        lines = [f"  {name}: {why}" for name, why in lazy[:_LISTED]]
        if len(lazy) > _LISTED:
            lines.append(f"  ... and {len(lazy) - _LISTED} more")
        raise AssertionError(
            f"{len(lazy)} of {_plural(len(variables), 'variable')}{_where(obj)} {_is_are(len(lazy))} "
            "not in memory "
            "(load them first, e.g. fastzarr.load(obj)):\n" + "\n".join(lines)
        )


def assert_unique(obj: xr.Dataset | xr.DataArray, dim: Hashable) -> None:
    """Asserts that the labels of ``dim`` (a dimension coordinate, or any 1-D coordinate) are
    unique; the message lists each repeated label with its count and positions."""
    if dim not in obj.coords:
        raise ValueError(f"{dim!r} is not a coordinate{_where(obj)}; coordinates: {list(obj.coords)}")
    coord = obj.coords[dim]
    if coord.ndim != 1:
        raise ValueError(f"coordinate {dim!r}{_where(obj)} has {coord.ndim} dimensions, not 1")
    labels = coord.to_index() if dim in obj.dims else pd.Index(np.asarray(coord.values))
    codes, uniques = pd.factorize(labels, use_na_sentinel=False)
    counts = np.bincount(codes, minlength=len(uniques))
    repeated = np.flatnonzero(counts > 1)
    if not len(repeated):
        return
    # In order of first appearance, as the labels are.
    lines = []
    for u in repeated[:_LISTED]:
        positions = np.flatnonzero(codes == u).tolist()
        shown = positions if len(positions) <= _LISTED else [*positions[:_LISTED], "..."]
        lines.append(f"  {_label(uniques[u])} x{counts[u]} at positions {shown}")
    if len(repeated) > _LISTED:
        lines.append(f"  ... and {len(repeated) - _LISTED} more repeated labels")
    extra = int(counts[repeated].sum() - len(repeated))
    raise AssertionError(
        f"{dim!r}{_where(obj)} has {_plural(len(repeated), 'repeated label')} "
        f"({_plural(extra, 'duplicate entry', 'duplicate entries')} among {len(labels)}):\n"
        + "\n".join(lines)
    )


def assert_not_all_nan(
    obj: xr.Dataset | xr.DataArray,
    variables: str | Iterable[Hashable] | None = None,
    max_fraction: float = 1.0,
) -> None:
    """Asserts that no variable is entirely missing (NaN / NaT), nor more than ``max_fraction``.

    With the default ``max_fraction=1.0`` only all-NaN variables fail; ``0.0`` fails on any
    NaN. An all-NaN variable always fails: leave it out with ``variables`` if it is expected.

    Args:
        obj: a Dataset (its data variables are checked) or a DataArray. Lazy data is computed.
        variables: names to check (default: every data variable); a missing one fails too.
        max_fraction: the largest tolerated fraction of missing values, in [0, 1].
    """
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be between 0 and 1, not {max_fraction}")
    if isinstance(obj, xr.DataArray):
        own: Hashable = obj.name if obj.name is not None else "<DataArray>"
        candidates = {own: obj.variable, **{n: c.variable for n, c in obj.coords.items()}}
        default: list[Hashable] = [own]
    else:
        candidates = dict(obj.variables)
        default = list(obj.data_vars)
    names = default if variables is None else [variables] if isinstance(variables, str) else list(variables)
    missing = [n for n in names if n not in candidates]
    if missing:
        raise AssertionError(f"variables {missing} are missing{_where(obj)}; it has {list(candidates)}")
    bad = []
    for name in names:
        var = candidates[name]
        if var.size == 0:
            continue
        nans = int(var.isnull().sum().values)
        fraction = nans / var.size
        if fraction > max_fraction or nans == var.size:
            bad.append((fraction, str(name), nans, var.size))
    if bad:
        bad.sort(key=lambda b: (-b[0], b[1]))
        lines = [f"  {n}: {f:.1%} NaN ({k:,} of {size:,} values)" for f, n, k, size in bad[:_LISTED]]
        if len(bad) > _LISTED:
            lines.append(f"  ... and {len(bad) - _LISTED} more")
        limit = "all NaN" if max_fraction == 1.0 else f"more than {max_fraction:.1%} NaN, or all NaN"
        raise AssertionError(
            f"{_plural(len(bad), 'variable')}{_where(obj)} {_is_are(len(bad))} {limit}:\n" + "\n".join(lines)
        )


def assert_cache_valid(cache: Any) -> None:
    """Runs ``cache.verify()`` (a full verification of every entry of a :class:`fastzarr.Cache`)
    and fails listing the invalid entries and what is wrong with each.

    ``verify()`` moves invalid entries aside (they are rebuilt on next use) and returns
    ``{key: problem}`` for them; an exception from it fails the assertion too.
    """
    try:
        result = cache.verify()
    except Exception as exc:
        raise AssertionError(f"{cache!r}: verify() failed: {type(exc).__name__}: {exc}") from exc
    if result is None or result is True:
        return
    if result is False:
        raise AssertionError(f"{cache!r}: verify() reports the cache invalid")
    problems = list(result.items()) if isinstance(result, Mapping) else [(p, "") for p in result]
    if problems:
        lines = [f"  {key}: {why}" if why else f"  {key}" for key, why in problems[:_LISTED]]
        if len(problems) > _LISTED:
            lines.append(f"  ... and {len(problems) - _LISTED} more")
        raise AssertionError(
            f"{cache!r}: {len(problems)} invalid entries (moved aside by verify()):\n" + "\n".join(lines)
        )


def assert_same_as_xarray(
    url: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    xarray_storage_options: Mapping[str, Any] | None = None,
    group: str | None = None,
    consolidated: bool | None = None,
    variables: Iterable[Hashable] | None = None,
    isel: Mapping[Hashable, Any] | None = None,
    method: str | None = None,
    **selection: Any,
) -> None:
    """Asserts that fastzarr reads the store at ``url`` exactly as ``xr.open_zarr`` does.

    fastzarr's read is ``fastzarr.load(fastzarr.open_zarr(url)[variables].isel(isel).sel(...))``;
    the reference is the same selection of ``xr.open_zarr(url, chunks=None)``, loaded by
    xarray. They must have the same variables, coordinates, dimensions, dtypes, attributes and
    values bit for bit (NaN positions and payloads, -0.0 included); fastzarr's result must be
    numpy-backed. The message names the first differing variable, its index and labels.

    Args:
        storage_options: fastzarr's options for remote stores (object_store keys).
        xarray_storage_options: xarray's (fsspec) options; default ``storage_options``.
        group, consolidated: as for ``xr.open_zarr``, passed to both readers.
        variables: the variables to compare (default all).
        isel: positional selection, applied before ``selection``.
        method: ``Dataset.sel``'s method for ``selection`` (e.g. ``"nearest"``).
        selection: label-based selection, as for ``Dataset.sel``: ``lat=slice(10, 20)``.
    """
    import fastzarr as fz  # noqa: PLC0415 - fastzarr imports this module's package lazily

    def select(ds: xr.Dataset) -> xr.Dataset:
        if variables is not None:
            ds = ds[list(variables)]
        if isel:
            ds = ds.isel(isel)
        if selection:
            ds = ds.sel(selection, method=method)
        return ds

    opened = fz.open_zarr(
        url, group=group, consolidated=consolidated, storage_options=dict(storage_options or {}) or None
    )
    actual = fz.load(select(opened))
    xr_options = storage_options if xarray_storage_options is None else xarray_storage_options
    reference = xr.open_zarr(
        url,
        group=group,
        consolidated=consolidated,
        chunks=None,
        storage_options=dict(xr_options or {}) or None,
    )
    expected = select(reference).load()
    shown = ", ".join(
        [*(f"{k}={v!r}" for k, v in (isel or {}).items()), *(f"{k}={v!r}" for k, v in selection.items())]
    )
    where = f"{os.fspath(url)}" + (f" [{shown}]" if shown else "")
    try:
        assert_materialized(actual)
    except AssertionError as exc:
        raise AssertionError(f"fastzarr.load's result for {where} is not in memory: {exc}") from None
    compare_datasets(actual, expected, where=where)


def compare_datasets(actual: xr.Dataset, expected: xr.Dataset, *, where: str = "") -> None:
    """Asserts that ``actual`` (fastzarr's read) equals ``expected`` (xarray's) bit for bit:
    variables, coordinates, dimensions, dtypes, attributes, values (NaN payloads too)."""
    head = f"fastzarr's read of {where} differs from xr.open_zarr's" if where else "the datasets differ"
    for kind, a_names, e_names in (
        ("data variables", list(actual.data_vars), list(expected.data_vars)),
        ("coordinates", list(actual.coords), list(expected.coords)),
    ):
        if set(a_names) != set(e_names):
            only_a = [n for n in a_names if n not in e_names]
            only_e = [n for n in e_names if n not in a_names]
            raise AssertionError(f"{head}: {kind}: only fastzarr has {only_a}, only xarray has {only_e}")
    if dict(actual.sizes) != dict(expected.sizes):
        raise AssertionError(f"{head}: dimensions {dict(actual.sizes)} instead of {dict(expected.sizes)}")
    if not _attrs_equal(actual.attrs, expected.attrs):
        raise AssertionError(f"{head}: dataset attributes {actual.attrs} instead of {expected.attrs}")
    differing = []
    for name in [*expected.data_vars, *expected.coords]:
        problem = _variable_difference(actual.variables[name], expected.variables[name], expected)
        if problem is not None:
            differing.append((str(name), problem))
    if differing:
        name, problem = differing[0]
        others = [n for n, _ in differing[1:]]
        also = f"\n  also differing: {others}" if others else ""
        raise AssertionError(f"{head}: variable {name!r} {problem}{also}")


def _attrs_equal(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> bool:
    if set(a) != set(b):
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, np.ndarray | list | tuple) or isinstance(other, np.ndarray | list | tuple):
            if not np.array_equal(np.asarray(value), np.asarray(other)):
                return False
        elif isinstance(value, float) and isinstance(other, float) and np.isnan(value) and np.isnan(other):
            continue
        elif value != other:
            return False
    return True


def _variable_difference(actual: xr.Variable, expected: xr.Variable, labels: xr.Dataset) -> str | None:
    """What differs between two variables, or None."""
    if actual.dims != expected.dims:
        return f"has dimensions {actual.dims} instead of {expected.dims}"
    if actual.dtype != expected.dtype:
        return f"has dtype {actual.dtype} instead of {expected.dtype}"
    if actual.shape != expected.shape:
        return f"has shape {actual.shape} instead of {expected.shape}"
    if not _attrs_equal(actual.attrs, expected.attrs):
        return f"has attributes {actual.attrs} instead of {expected.attrs}"
    a, e = np.asarray(actual.values), np.asarray(expected.values)
    differs = _elementwise_differs(a, e)
    count = int(np.count_nonzero(differs))
    if not count:
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(differs)), a.shape))
    at = ", ".join(
        f"{dim}={_label(labels.indexes[dim][i])}" if dim in labels.indexes else f"{dim}={i}"
        for dim, i in zip(expected.dims, index, strict=True)
    )
    return (
        f"differs at index {index} ({at}): fastzarr read {_show(a[index])}, xarray read {_show(e[index])}; "
        f"{count:,} of {a.size:,} values differ"
    )


def _elementwise_differs(a: npt.NDArray[Any], e: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Where the elements differ: by their bytes for fixed-size dtypes (so NaN payloads and -0.0
    count), by equality (with missing == missing) for objects."""
    if a.dtype.kind == "O":
        flat = [
            not (x is y or (_is_missing(x) and _is_missing(y)) or _object_equal(x, y))
            for x, y in zip(a.ravel().tolist(), e.ravel().tolist(), strict=True)
        ]
        return np.array(flat, dtype=bool).reshape(a.shape)
    size = a.dtype.itemsize
    if size == 0:
        return np.zeros(a.shape, dtype=bool)
    a_bytes = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(*a.shape, size)
    e_bytes = np.ascontiguousarray(e).reshape(-1).view(np.uint8).reshape(*e.shape, size)
    differs: npt.NDArray[np.bool_] = (a_bytes != e_bytes).any(axis=-1)
    return differs


def _is_missing(x: Any) -> bool:
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):  # array-likes: not a missing scalar
        return False


def _object_equal(x: Any, y: Any) -> bool:
    try:
        return bool(x == y)
    except (TypeError, ValueError):
        return bool(np.array_equal(np.asarray(x), np.asarray(y)))


def _show(value: Any) -> str:
    """A value and, for numbers, its bits (two NaNs or zeros can differ only there)."""
    if isinstance(value, np.generic) and value.dtype.kind in "fc":
        size = value.dtype.itemsize
        raw = np.asarray(value).reshape(-1)
        bits = raw.view(f"u{size}")[0] if size in {2, 4, 8} else raw.tobytes().hex()
        return f"{value!r} (bits {bits:#x})" if size in {2, 4, 8} else f"{value!r} (bytes {bits})"
    return repr(value)
