"""xarray's private names, each behind a function with a public-API fallback.

``fastzarr._compat.USE_INTERNALS`` (true by default) lets the functions use the private fast path
when it exists; a test sets it false to run every fallback."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from fastzarr._compat import internals

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
