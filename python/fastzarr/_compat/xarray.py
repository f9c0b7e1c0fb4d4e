"""xarray's private names, each behind a function with a public-API fallback.

``fastzarr._compat.USE_INTERNALS`` (true by default) lets the functions use the private fast path
when it exists; a test sets it false to run every fallback."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Hashable, Mapping
from typing import Any, cast

import numpy as np
import xarray as xr

from fastzarr._compat import internals
from fastzarr.errors import EncodingUnavailableError

_TEMP_NAME = "__fastzarr_dataarray__"
"""The data variable's name in the public fallback of :func:`temp_dataset` when the DataArray
has no name (or one of its coordinates' names)."""


def _internal(owner: Any, name: str) -> Any:
    """``owner.name`` when internals are in use and it exists, else ``None``."""
    return getattr(owner, name, None) if internals() else None


def dataset(
    variables: Mapping[Hashable, xr.Variable],
    *,
    coord_names: set[Hashable],
    sizes: Mapping[Hashable, int],
    attrs: Mapping[Any, Any],
    indexes: Mapping[Any, Any],
    encoding: Mapping[Any, Any] | None = None,
) -> xr.Dataset:
    """A Dataset of ``variables`` as they are (checked by the caller: consistent sizes, indexes
    built for the coordinates), in their order.

    Fast path: ``Dataset._construct_direct``, which skips xarray's alignment and checks (they
    cost more than the read for thousands of variables). Fallback: the public constructor."""
    construct = _internal(xr.Dataset, "_construct_direct")
    if construct is not None:
        return construct(  # type: ignore[no-any-return]
            dict(variables),
            coord_names=set(coord_names),
            dims=dict(sizes),
            attrs=dict(attrs),
            indexes=dict(indexes),
            encoding=dict(encoding or {}),
        )
    coords = xr.Coordinates(
        {n: v for n, v in variables.items() if n in coord_names},
        indexes={n: i for n, i in indexes.items() if n in coord_names},
    )
    data_vars = {n: v for n, v in variables.items() if n not in coord_names}
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
    ds.encoding = dict(encoding or {})
    return ds


def numpy_variable(
    dims: tuple[Hashable, ...], data: np.ndarray, attrs: Mapping[Any, Any], encoding: Mapping[Any, Any]
) -> xr.Variable:
    """A Variable over the numpy array ``data`` (not copied). Fast path: ``fastpath=True``, which
    skips xarray's conversion of the data; fallback: the public constructor."""
    if internals():
        try:
            return xr.Variable(dims, data, attrs, encoding, fastpath=True)
        except TypeError:  # a release without the keyword
            pass
    return xr.Variable(dims, data, attrs, encoding)


def temp_dataset(array: xr.DataArray) -> xr.Dataset:
    """A Dataset of ``array``'s variable and coordinates. Fast path:
    ``DataArray._to_temp_dataset``, which holds the same Variable objects (loading one loads the
    other); fallback: ``to_dataset`` under the array's name (or a placeholder name when it has
    none, or a coordinate's), which holds shallow copies of them."""
    to_temp = _internal(array, "_to_temp_dataset")
    if to_temp is not None:
        return to_temp()  # type: ignore[no-any-return]
    name = array.name if array.name is not None and array.name not in array.coords else _TEMP_NAME
    return array.to_dataset(name=name, promote_attrs=False)


def has_chunk_manager(chunked_array_type: str | None) -> bool:
    """Whether ``chunks=`` can make chunked arrays of ``chunked_array_type`` (None: the default,
    dask). Fast path: xarray's chunk-manager registry; fallback: whether dask is installed (the
    only chunk manager the fallback knows)."""
    if internals():
        try:
            from xarray.namedarray.parallelcompat import guess_chunkmanager  # noqa: PLC0415
        except ImportError:
            pass
        else:
            try:
                guess_chunkmanager(chunked_array_type)
            except (ValueError, ImportError):
                return False
            return True
    if chunked_array_type not in (None, "dask"):
        return False
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("dask") is not None


def decode_variable(name: Hashable, variable: xr.Variable) -> xr.Variable:
    """``variable`` CF-decoded as ``xr.decode_cf`` decodes it (masking, scale/offset, times).

    Fast path: ``xarray.conventions.decode_cf_variable``; fallback: ``xr.decode_cf`` of a
    one-variable Dataset."""
    if internals():
        try:
            from xarray.conventions import decode_cf_variable as decode  # noqa: PLC0415
        except ImportError:
            pass
        else:
            return decode(name, variable)
    return xr.decode_cf(xr.Dataset({name: variable}))[name].variable


# --------------------------------------------------------------------------------------------
# Lazy arrays: what a Variable holds, and xarray's chains of lazy wrappers over a backend array.
# Without the internals fastzarr does not look inside them: xarray loads them itself, and what
# needs to know where they read from (the cache's keys) says it cannot tell.

try:
    from xarray.backends.zarr import ZarrArrayWrapper as _ZarrArrayWrapper
    from xarray.core import indexing as _indexing

    _LAZY_WRAPPERS: tuple[type, ...] = (
        _indexing.ExplicitlyIndexed,
        _indexing.ImplicitToExplicitIndexingAdapter,
    )
    _MEMORY: tuple[type, ...] = (np.ndarray, np.generic, _indexing.PandasIndexingAdapter)
    _MEMORY_WRAPPERS: tuple[type, ...] = (
        _indexing.MemoryCachedArray,
        _indexing.CopyOnWriteArray,
        _indexing.NumpyIndexingAdapter,
    )
    _LAZY_INDEXED: Any = _indexing.LazilyIndexedArray
    _LAZY_VECTORIZED: Any = _indexing.LazilyVectorizedIndexedArray
    _AVAILABLE = True
except (ImportError, AttributeError):  # a release that moved them: the public fallbacks only
    _AVAILABLE = False


def _lazy_internals() -> bool:
    return internals() and _AVAILABLE


def variable_data(variable: xr.Variable) -> Any:
    """What ``variable`` holds without loading it: numpy, a dask array or xarray's lazy chain.
    Fallback: the dask array of a chunked variable, else ``None`` (unknown)."""
    if _lazy_internals():
        return variable._data
    return variable.data if variable.chunks is not None else None


def in_memory(variable: xr.Variable) -> bool:
    """Whether ``variable``'s values are in memory. Fallback: only index coordinates (held by
    pandas) are known to be; anything else counts as not loaded (loading it again is a no-op)."""
    if _lazy_internals():
        return bool(variable._in_memory)
    return isinstance(variable, xr.IndexVariable)


def is_lazy_wrapper(obj: Any) -> bool:
    """Whether ``obj`` is one of xarray's lazy wrappers (selection, CF decoding, caching)."""
    return _lazy_internals() and isinstance(obj, _LAZY_WRAPPERS)


def wrapped(obj: Any) -> Any:
    """The array a lazy wrapper wraps, or ``None``."""
    return getattr(obj, "array", None) if is_lazy_wrapper(obj) else None


def is_zarr_python_backend(obj: Any) -> bool:
    """Whether ``obj`` is the backend array of xarray's own zarr engine (over zarr-python)."""
    return _lazy_internals() and isinstance(obj, _ZarrArrayWrapper)


def lazy_selection(obj: Any) -> tuple[tuple[Any, ...], tuple[int, ...]] | None:
    """(key, shape of the wrapped array) of a lazy orthogonal selection, else ``None``."""
    if not (_lazy_internals() and isinstance(obj, _LAZY_INDEXED)):
        return None
    lazy: Any = obj
    return tuple(lazy.key.tuple), tuple(lazy.array.shape)


def is_lazy_vectorized(obj: Any) -> bool:
    """Whether ``obj`` is a lazy vectorized (point-wise) selection."""
    return _lazy_internals() and isinstance(obj, _LAZY_VECTORIZED)


def replace_leaf(obj: Any, leaf: Any, replacement: Any) -> Any:
    """A copy of the lazy chain ``obj`` down to ``leaf``, with ``leaf`` swapped for
    ``replacement`` (each wrapper shallow-copied; ``obj`` itself is left as it was)."""
    if obj is leaf:
        return replacement
    new = copy.copy(obj)
    new.array = replace_leaf(obj.array, leaf, replacement)
    return new


def memory_backing(data: Any) -> tuple[bool, list[str], Any]:
    """(in memory, names of the memory wrappers looked through, the innermost object) for what
    a Variable holds. Fallback: numpy arrays only are memory, nothing is looked through."""
    if not _lazy_internals():
        return isinstance(data, np.ndarray | np.generic), [], data
    names: list[str] = []
    for _ in range(64):
        if isinstance(data, _MEMORY):
            return True, names, data
        if not isinstance(data, _MEMORY_WRAPPERS):
            break
        names.append(type(data).__name__)
        data = cast(Any, data).array
    return False, names, data


async def async_explicit_indexing(
    key: Any, shape: tuple[int, ...], support: Any, raw: Any, async_raw: Any
) -> Any:
    """xarray's ``async_explicit_indexing_adapter``; fallback: the documented synchronous
    ``explicit_indexing_adapter`` over ``raw`` in a worker thread."""
    if _lazy_internals():
        adapter = getattr(_indexing, "async_explicit_indexing_adapter", None)
        if adapter is not None:
            return await adapter(key, shape, support, async_raw)
    import asyncio  # noqa: PLC0415

    from xarray.core.indexing import explicit_indexing_adapter  # noqa: PLC0415

    return await asyncio.to_thread(explicit_indexing_adapter, key, shape, support, raw)


# --------------------------------------------------------------------------------------------
# Writing: CF encoding as ``Dataset.to_zarr`` does it. xarray has no public function for it, so
# without these names fastzarr's writer refuses with a clear error instead of encoding
# differently from xarray.


def _encoder(module: str, name: str) -> Any:
    if internals():
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            found = None
        if found is not None:
            return found
    raise EncodingUnavailableError(
        f"fastzarr's writer encodes variables with xarray's {module}.{name}, which this xarray release "
        f"({xr.__version__}) does not provide; write with Dataset.to_zarr instead"
    )


def encode_dataset_coordinates(ds: xr.Dataset) -> tuple[dict[Hashable, xr.Variable], dict[Hashable, Any]]:
    """``ds``'s variables and attributes with the ``coordinates`` attributes CF writes."""
    result: tuple[dict[Hashable, xr.Variable], dict[Hashable, Any]] = _encoder(
        "xarray.conventions", "encode_dataset_coordinates"
    )(ds)
    return result


def encode_zarr_variable(variable: xr.Variable, *, name: str, zarr_format: int) -> xr.Variable:
    """``variable`` CF-encoded for Zarr as ``Dataset.to_zarr`` encodes it."""
    encoded: xr.Variable = _encoder("xarray.backends.zarr", "encode_zarr_variable")(
        variable, name=name, zarr_format=zarr_format
    )
    return encoded
