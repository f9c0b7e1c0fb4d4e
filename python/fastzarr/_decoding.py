"""``xr.decode_cf`` for datasets of thousands of small, alike variables.

xarray decodes variable by variable, at about a tenth of a millisecond each whatever its size;
a point extracted from a store of 3,930 features is mostly that overhead. Variables whose
decoding depends only on their dtype, dims, shape and CF attributes (fill values, scale and
offset, units, ...) decode the same way, elementwise, so each such group is stacked, decoded by
xarray once, and split again. Everything else (coordinates, times, strings, booleans, variables
other variables point at) goes through ``xr.decode_cf`` itself, so the result is xarray's.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import xarray as xr

from fastzarr._compat import xarray as compat_xr

__all__ = ["decode_cf"]

#: Attributes xarray's decoding reads (coding/*.py, conventions.py); the others pass through.
_DECODING_ATTRS = frozenset(
    {
        "_FillValue",
        "missing_value",
        "scale_factor",
        "add_offset",
        "_Unsigned",
        "units",
        "calendar",
        "dtype",
        "_Encoding",
        "coordinates",
        "bounds",
        "char_dim_name",
        "original_shape",
    }
)
#: Attributes that make a variable's decoding depend on more than itself, or on its values
#: (times pick their resolution from the data): those variables are decoded by xarray alone.
_SOLO_ATTRS = frozenset({"calendar", "dtype", "_Encoding", "coordinates", "bounds"})
#: Words of time and timedelta units (``units="hours"`` decodes to timedelta64).
_TIME_WORDS = ("since", "day", "hour", "minute", "second")
#: Variables per group below which stacking does not pay.
_MIN_GROUP = 2


def _frozen(value: Any) -> Any:
    """A hashable stand-in for an attribute value, equal for equal values (NaN included) of the
    same type (numpy scalars and arrays by dtype and bytes)."""
    if isinstance(value, np.ndarray | np.generic | list | tuple):
        array = np.asarray(value)
        if array.dtype.kind == "O":
            return (type(value), repr(value))
        return (type(value), array.dtype.str, array.shape, array.tobytes())
    if isinstance(value, float) and np.isnan(value):
        return (float, "nan")
    return (type(value), value)


def _time_like(units: Any) -> bool:
    """Whether xarray may decode these units as datetimes or timedeltas."""
    return isinstance(units, str) and any(w in units.lower() for w in _TIME_WORDS)


def _referenced(ds: xr.Dataset) -> set[Hashable]:
    """Names other variables (or the dataset) point at through ``coordinates`` or ``bounds``."""
    names: set[Hashable] = set()
    for attrs in (ds.attrs, *(v.attrs for v in ds.variables.values())):
        for key in ("coordinates", "bounds"):
            value = attrs.get(key)
            if isinstance(value, str):
                names.update(value.split())
    return names


def _signature(var: xr.Variable) -> tuple[Any, ...] | None:
    """What a variable's decoding depends on, or None when it must be decoded on its own."""
    data = var.data
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu" or not data.dtype.isnative:
        return None
    attrs = var.attrs
    if _SOLO_ATTRS.intersection(attrs) or _time_like(attrs.get("units")):
        return None
    keyed = tuple((k, _frozen(v)) for k, v in attrs.items() if k in _DECODING_ATTRS)
    encoded = tuple(sorted((k, _frozen(v)) for k, v in var.encoding.items() if k in _DECODING_ATTRS))
    return (data.dtype, var.dims, var.shape, keyed, encoded)


def _decode_group(names: list[Hashable], ds: xr.Dataset) -> dict[Hashable, xr.Variable]:
    """Decodes alike variables as one stacked variable and splits the result."""
    members = [ds.variables[n] for n in names]
    rep = members[0]
    stacked = xr.Variable(
        ("__fastzarr_stack__", *rep.dims),
        np.stack([m.data for m in members]),
        dict(rep.attrs),
        dict(rep.encoding),
    )
    out = compat_xr.decode_variable(names[0], stacked)
    values = np.asarray(out.values)
    removed = rep.attrs.keys() - out.attrs.keys()
    added_attrs = {k: v for k, v in out.attrs.items() if k not in rep.attrs}
    added_encoding = {k: v for k, v in out.encoding.items() if k not in rep.encoding}
    decoded: dict[Hashable, xr.Variable] = {}
    for i, (name, member) in enumerate(zip(names, members, strict=True)):
        attrs = {
            k: (out.attrs[k] if k in _DECODING_ATTRS else v)
            for k, v in member.attrs.items()
            if k not in removed
        }
        attrs.update(added_attrs)
        encoding = {**member.encoding, **added_encoding}
        decoded[name] = compat_xr.numpy_variable(rep.dims, values[i], attrs, encoding)
    return decoded


def decode_cf(ds: xr.Dataset) -> xr.Dataset:
    """``xr.decode_cf(ds)`` (serialization warnings silenced), alike data variables decoded together.

    Meant for selections already in memory (``extract_points``' parts): only numpy-backed
    variables are stacked, and looking at a lazy one to find out would load it.
    """
    referenced = _referenced(ds)
    groups: dict[tuple[Any, ...], list[Hashable]] = {}
    coords = set(ds.coords)
    # ds.variables, not ds.data_vars.items(): the latter builds a DataArray per variable, each
    # scanning every variable (quadratic in the variables).
    for name, var in ds.variables.items():
        if name in referenced or name in coords:
            continue
        key = _signature(var)
        if key is not None:
            groups.setdefault(key, []).append(name)
    stacked = [names for names in groups.values() if len(names) >= _MIN_GROUP]
    fast_names = {n for names in stacked for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=xr.SerializationWarning)
        rest = xr.decode_cf(ds.drop_vars(fast_names) if fast_names else ds)
        if not fast_names:
            return rest
        fast: dict[Hashable, xr.Variable] = {}
        for names in stacked:
            fast.update(_decode_group(names, ds))
    # The input's order (xarray keeps it), then anything decoding renamed.
    variables: dict[Hashable, xr.Variable] = {}
    for n in ds.variables:
        if n in fast:
            variables[n] = fast[n]
        elif n in rest.variables:
            variables[n] = rest.variables[n]
    variables.update((n, v) for n, v in rest.variables.items() if n not in variables)
    sizes = dict(rest.sizes)
    for v in fast.values():
        sizes.update(v.sizes)
    return compat_xr.dataset(
        variables,
        coord_names=set(rest.coords),
        sizes=sizes,
        attrs=rest.attrs,
        indexes=dict(rest.xindexes),
        encoding=rest.encoding,
    )
