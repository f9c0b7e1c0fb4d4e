"""Where every variable of a lazy Zarr-backed Dataset comes from, exactly enough to be a cache key.

:func:`fastzarr.load` with ``cache=`` may return stored data only when that data is what loading
the Dataset would give. The key is therefore built from what determines the result, variable by
variable, never from names or reprs that could coincide:

- in memory (index coordinates, computed values): the values themselves (dtype, shape, digest);
- lazily indexed (``chunks=None``): the whole chain of xarray's lazy wrappers down to the backend
  array: every indexer (slices, integer arrays by digest), every CF decoding step (the function
  and its parameters: scale factors, fill values, time units, dtypes), and the Zarr array read
  (store URL, array path, shape, dtype);
- dask-backed: the dask array's name (dask's own hash of the operations and their inputs), its
  chunks, and the chain of every ``getter`` task that reads a Zarr array, as above.

Plus each store's fingerprint (``fastzarr.cache.source_fingerprint``: sizes, mtimes, inodes and
ctimes of every file), so a source changed after caching is a miss. Anything that cannot be pinned down (a
closure, an unknown wrapper, a remote store, a backend fastzarr does not know) raises
`CacheError` instead of risking a wrong hit.
"""

from __future__ import annotations

import functools
import json
import sys
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from xarray.core import indexing

from fastzarr._compat import xarray as compat_xr
from fastzarr._urls import is_remote
from fastzarr.cache import canonical, canonical_array, source_fingerprint
from fastzarr.errors import CacheError
from fastzarr.xarray_backend import FastzarrArrayWrapper

__all__ = ["load_key_params"]

_MAX_DEPTH = 64
_SKIPPED_ATTRIBUTES = frozenset({"array", "_copied"})  # the chain itself; copy-on-write state
_PLAIN = (bool, int, float, str, type(None))


class _UnpinnedError(Exception):
    """Something that shapes a variable's values cannot be turned into key material."""


def _function(func: Any) -> Any:
    if isinstance(func, functools.partial):
        return {
            "partial": _function(func.func),
            "args": [_value(a) for a in func.args],
            "keywords": {k: _value(v) for k, v in sorted(func.keywords.items())},
        }
    if isinstance(func, types.FunctionType) and (func.__closure__ or "<" in func.__qualname__):
        # a lambda or closure: its behaviour depends on more than its name
        raise _UnpinnedError(f"the function {func.__qualname__} (a lambda or closure)")
    if isinstance(func, types.FunctionType | types.BuiltinFunctionType | np.ufunc | type):
        return {"function": f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', func)}"}
    raise _UnpinnedError(f"the callable {func!r}")


def _scalar(value: Any) -> Any:
    """Key material for a scalar-like value, or ``NotImplemented``."""
    if isinstance(value, _PLAIN):
        return {"float": repr(value)} if isinstance(value, float) else value  # repr keeps NaN, inf
    if isinstance(value, np.generic | np.ndarray):
        return canonical_array(np.asarray(value))
    if isinstance(value, np.dtype):
        return {"dtype": value.str}
    if isinstance(value, slice):
        return {"slice": [_value(value.start), _value(value.stop), _value(value.step)]}
    return NotImplemented


def _value(value: Any) -> Any:
    """Key material for one attribute of a wrapper: exact, or `_UnpinnedError`."""
    scalar = _scalar(value)
    if scalar is not NotImplemented:
        return scalar
    if isinstance(value, indexing.ExplicitIndexer):
        material: Any = {"indexer": type(value).__name__, "key": [_value(k) for k in value.tuple]}
    elif isinstance(value, list | tuple):
        material = [_value(v) for v in value]
    elif isinstance(value, set | frozenset):
        material = {"set": sorted((_value(v) for v in value), key=json.dumps)}
    elif isinstance(value, Mapping):
        material = {str(k): _value(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    elif callable(value):
        material = _function(value)
    else:
        raise _UnpinnedError(f"a {type(value).__name__} inside the lazy array")
    return material


def _attributes(node: Any) -> dict[str, Any]:
    names: list[str] = []
    for cls in type(node).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    names += list(getattr(node, "__dict__", {}))
    return {
        n: getattr(node, n) for n in sorted(set(names)) if n not in _SKIPPED_ATTRIBUTES and hasattr(node, n)
    }


def _leaf(node: Any, sources: set[str]) -> Any:
    """The Zarr array a chain reads: its store, path, shape and dtype."""
    if isinstance(node, FastzarrArrayWrapper):
        array = node.get_array()
        url, path = array.url, array.path
    elif compat_xr.is_zarr_python_backend(node):
        from fastzarr.loading import zarr_location  # noqa: PLC0415 (loading imports this module)

        wrapper: Any = node  # xarray's ZarrArrayWrapper is untyped
        location = zarr_location(wrapper.get_array())
        if location is None:
            raise _UnpinnedError("a zarr-python array on a store that is not a local directory")
        url, path = location
    else:
        raise _UnpinnedError(f"a {type(node).__name__} backend array (only Zarr stores are cached)")
    sources.add(url)
    return {"store": url, "path": path, "shape": list(node.shape), "dtype": np.dtype(node.dtype).str}


def chain(data: Any, sources: set[str]) -> list[Any]:
    """Key material for a chain of xarray lazy wrappers, top to bottom, leaf included."""
    out = []
    node = data
    for _ in range(_MAX_DEPTH):
        if isinstance(node, FastzarrArrayWrapper) or compat_xr.is_zarr_python_backend(node):
            out.append(_leaf(node, sources))
            return out
        if not compat_xr.is_lazy_wrapper(node):
            raise _UnpinnedError(f"a {type(node).__name__} inside the lazy array")
        attributes = {k: _value(v) for k, v in _attributes(node).items()}
        out.append({"wrapper": f"{type(node).__module__}.{type(node).__qualname__}", **attributes})
        inner = compat_xr.wrapped(node)
        if inner is None:
            raise _UnpinnedError(f"a {type(node).__name__} without a backend array")
        node = inner
    raise _UnpinnedError("a chain of lazy wrappers too deep to follow")


def _dask(data: Any, sources: set[str]) -> Any:
    """Key material for a dask array: its name and chunks, and every Zarr read in its graph."""
    from fastzarr._compat import dask as compat_dask  # noqa: PLC0415 (dask is optional)

    found = compat_dask.zarr_read_sources(data)
    if found is None:
        raise _UnpinnedError("a dask array whose graph this dask release does not let fastzarr read")
    reads: dict[int, str] = {}  # by the chain object: every block of a variable reads the same
    for source in found:
        if id(source) not in reads:
            reads[id(source)] = json.dumps(chain(source, sources), sort_keys=True)
    if not reads:
        raise _UnpinnedError("a dask array that reads no Zarr array")
    return {
        "dask": str(data.name),
        "chunks": [list(c) for c in data.chunks],
        "reads": sorted(set(reads.values())),
    }


def _variable(name: str, var: xr.Variable, sources: set[str]) -> Any:
    material: dict[str, Any] = {
        "dims": [str(d) for d in var.dims],
        "shape": list(var.shape),
        "dtype": var.dtype.str,
        "attrs": canonical(var.attrs),
    }
    data = compat_xr.variable_data(var)
    dask_array = sys.modules.get("dask.array")
    try:
        if dask_array is not None and isinstance(data, dask_array.Array):
            material["data"] = _dask(data, sources)
        elif compat_xr.in_memory(var):
            material["data"] = canonical_array(np.asarray(var.values))
        elif data is None:
            raise _UnpinnedError("a lazily loaded array this xarray release does not let fastzarr look into")
        else:
            material["data"] = chain(data, sources)
    except _UnpinnedError as exc:
        raise CacheError(
            f"fastzarr.load(cache=): cannot tell exactly where variable {name!r} comes from ({exc}); "
            "open the dataset with fastzarr.open_zarr or xr.open_zarr on a local store, or load it "
            "without cache="
        ) from None
    return material


def load_key_params(ds: xr.Dataset) -> tuple[dict[str, Any], list[str]]:
    """The key parameters of loading ``ds`` and the stores it reads (raises `CacheError` if its
    provenance cannot be pinned down)."""
    sources: set[str] = set()
    variables = {str(n): _variable(str(n), v, sources) for n, v in ds.variables.items()}
    if not sources:
        raise CacheError("fastzarr.load(cache=): the dataset reads no Zarr store; there is nothing to cache")
    fingerprints = {}
    for url in sorted(sources):
        if is_remote(url):
            raise CacheError(f"fastzarr.load(cache=): only local stores can be fingerprinted, not {url}")
        fingerprints[url] = source_fingerprint(url)
    params = {
        "operation": "load",
        "sources": sorted(sources),
        "fingerprints": fingerprints,
        "variables": variables,
        "coords": sorted(str(c) for c in ds.coords),
        "attrs": canonical(ds.attrs),
    }
    return params, sorted(sources)
