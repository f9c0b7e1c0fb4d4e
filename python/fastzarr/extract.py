"""Point extraction across many batch stores in one parallel read pass.

`extract_points` returns exactly what xarray returns for
``xr.concat([xr.open_zarr(s).sel(**points, method=method) for s in sources], dim=concat_dim)``
(after repeated ``concat_dim`` labels are handled), but reads only the chunks that hold a point,
each once, for all variables of all sources together. xarray does the indexing arithmetic (on the
small coordinates only) and the CF decoding, so the result matches by construction.

`to_features` flattens such a result into a 2-D float matrix for scikit-learn or torch.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import time
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xarray as xr

from fastzarr import _core
from fastzarr._compat import xarray as compat_xr
from fastzarr._core import FastzarrError
from fastzarr._decoding import decode_cf
from fastzarr._progress import Progress, log_stage, progress_enabled
from fastzarr._redact import redact_url, url_digest
from fastzarr._sizes import available_memory, parse_size
from fastzarr.cache import Cache, make_key
from fastzarr.errors import DuplicateError, DuplicateWarning, MemoryBudgetError, SourceMismatchError
from fastzarr.features import plain_label, to_features
from fastzarr.report import DuplicateRecord, ExtractReport, peak_memory_bytes
from fastzarr.xarray_backend import FastzarrBackendEntrypoint, FastzarrStore, StoredVariable, normalize_url

__all__ = [
    "DuplicateError",
    "DuplicateWarning",
    "MemoryBudgetError",
    "SourceMismatchError",
    "extract_points",
    "to_features",
]

Source = str | os.PathLike[str]


@dataclass
class _Opened:
    """One source after the metadata stage."""

    name: str
    raw: xr.Dataset
    """The group's attributes and its dimension coordinates (indexed, undecoded), as
    ``xr.open_zarr(decode_cf=False)`` has them; the other arrays are only described in ``stored``."""
    group: _core.Group
    coords: xr.Dataset
    """The point and concat dims' coordinates, CF-decoded."""
    stored: dict[Hashable, StoredVariable]
    """Every array of the group (dims, stored dtype, attributes, encoding), in the group's order."""
    sizes: dict[Hashable, int]

    @property
    def data_names(self) -> list[Hashable]:
        """What ``xr.open_zarr(decode_cf=False)`` would list as data variables."""
        return [n for n in self.stored if n not in self.raw.variables]


@dataclass
class _Request:
    """One variable of one source to read, and how its result maps onto xarray's dims."""

    source: int
    name: str
    request: tuple[Any, ...]
    out_dims: tuple[Hashable, ...]
    nbytes: int


def _source_name(src: Source) -> str:
    """A source as a plain string (paths and URLs alike)."""
    return os.fspath(src)


def _sizes(source: str, stored: Mapping[Hashable, StoredVariable]) -> dict[Hashable, int]:
    """Length per dimension over all arrays; conflicting lengths raise ValueError as xarray does."""
    sizes: dict[Hashable, int] = {}
    owner: dict[Hashable, Hashable] = {}
    for name, v in stored.items():
        for d, n in zip(v.dims, v.shape, strict=True):
            if sizes.setdefault(d, n) != n:
                raise ValueError(
                    f"conflicting sizes for dimension {d!r} in {source}: length {n} on {name!r} and "
                    f"length {sizes[d]} on {owner[d]!r}"
                )
            owner.setdefault(d, name)
    return sizes


def _open(
    src: Source,
    point_dims: Sequence[Hashable],
    concat_dim: Hashable,
    storage_options: Mapping[str, Any] | None = None,
    *,
    deadline: float | None = None,
    group: _core.Group | None = None,
    preloaded: Mapping[str, npt.NDArray[Any]] | None = None,
) -> _Opened:
    """Opens a source: every array described from its metadata (no lazy variable per array: with
    thousands of arrays that was most of the cost of opening), the dimension coordinates opened
    by xarray (they become indexes, as in ``xr.open_zarr``) and those of the point and concat dims
    CF-decoded.

    Metadata and coordinates are read by fastzarr itself, so every URL fastzarr reads (local,
    s3, gs, az, http, memory) works, with ``storage_options``.
    """
    name = _source_name(src)
    options = dict(storage_options) if storage_options else None
    if group is None:
        group = _core.open_group(normalize_url(name), storage_options=options, timeout=_remaining(deadline))

    def store(drop: list[Hashable] | None = None) -> FastzarrStore:
        return FastzarrStore(
            group,
            url=normalize_url(name),
            storage_options=options,
            drop_variables=[str(n) for n in drop] if drop else None,
            timeout=_remaining(deadline),
            preloaded=preloaded,
        )

    described = store()
    stored: dict[Hashable, StoredVariable] = {n: described.describe_variable(n) for n in group.array_keys()}
    sizes = _sizes(redact_url(name), stored)
    # xarray makes the arrays named like one of their dims coordinates (and refuses those with
    # more than that dim): only those go through its open_dataset.
    others = [n for n, v in stored.items() if n not in v.dims]
    raw = xr.open_dataset(store(others), engine=FastzarrBackendEntrypoint, decode_cf=False, chunks=None)
    wanted = [d for d in (*point_dims, concat_dim) if d in raw.xindexes]
    coords = xr.decode_cf(xr.Dataset(coords={d: raw.variables[d] for d in wanted}))
    return _Opened(name, raw, group, coords, stored, sizes)


def _open_sources(
    source_list: list[Source],
    point_dims: Sequence[Hashable],
    concat_dim: Hashable,
    storage_options: Mapping[str, Any] | None,
    deadline: float | None,
) -> list[_Opened]:
    """Opens every source (see `_open`) with as few waits on storage as there can be: the groups
    all at once, then the first source, then the dimension coordinates of all the others in one
    read pass. Over object storage that is four round trips for any number of sources instead of
    four per source."""
    names = [_source_name(s) for s in source_list]
    options = dict(storage_options) if storage_options else None
    groups = _core.open_groups(
        [normalize_url(n) for n in names], storage_options=options, timeout=_remaining(deadline)
    )
    first = _open(names[0], point_dims, concat_dim, storage_options, deadline=deadline, group=groups[0])
    if len(names) == 1:
        return [first]
    # The first source's dimension coordinates name the others' (a source without one of them
    # reads its own while opening).
    wanted = [str(d) for d in first.raw.xindexes if str(d) in first.raw.variables]
    requests: list[tuple[_core.Array, tuple[slice]]] = []
    owners: list[tuple[int, str]] = []
    for i, group in enumerate(groups[1:], start=1):
        keys = set(group.array_keys())
        for name in wanted:
            if name in keys:
                try:
                    member = group[name]
                except FastzarrError:
                    continue
                if isinstance(member, _core.Array) and member.ndim == 1:
                    requests.append((member, (slice(None),)))
                    owners.append((i, name))
    arrays = _core.read_many(requests, timeout=_remaining(deadline)) if requests else []
    preloaded: list[dict[str, npt.NDArray[Any]]] = [{} for _ in names]
    for (i, name), values in zip(owners, arrays, strict=True):
        preloaded[i][name] = values
    return [first] + [
        _open(
            names[i],
            point_dims,
            concat_dim,
            storage_options,
            deadline=deadline,
            group=groups[i],
            preloaded=preloaded[i],
        )
        for i in range(1, len(names))
    ]


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no deadline); TimeoutError once it has passed."""
    if deadline is None:
        return None
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        raise _core.TimeoutError("extract_points did not finish within its timeout")
    return remaining


def _indexers(points: Mapping[Hashable, Any]) -> tuple[dict[Hashable, Any], Hashable | None]:
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


def _positions(
    opened: _Opened, indexers: Mapping[Hashable, Any], method: str | None, tolerance: Any
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


def _raise_absent_label(opened: _Opened, labelled: Mapping[Hashable, Any]) -> None:
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


def _is_nan(x: Any) -> bool:
    """Whether a scalar is NaN or NaT (False for values that cannot be either)."""
    try:
        return bool(np.isnan(x))
    except TypeError:
        return False


def _describe_difference(a: xr.Variable, b: xr.Variable) -> str:
    """How two coordinate variables differ, in a few words."""
    if a.shape != b.shape:
        return f"length {b.size} instead of {a.size}"
    av, bv = np.asarray(a.values), np.asarray(b.values)
    for i, (x, y) in enumerate(zip(av.ravel(), bv.ravel(), strict=True)):
        if not (x == y or (_is_nan(x) and _is_nan(y))):
            return f"value {plain_label(y)!r} instead of {plain_label(x)!r} at index {i}"
    if a.dtype != b.dtype:
        return f"dtype {b.dtype} instead of {a.dtype}"
    return "different attributes"


def _check_sources(
    opened: list[_Opened], point_dims: Sequence[Hashable], names: list[str], missing: str
) -> None:
    """Raises SourceMismatchError when the sources disagree on point coordinates, variables or dtypes."""
    first = opened[0]
    for other in opened[1:]:
        for d in point_dims:
            in_first, in_other = d in first.coords.variables, d in other.coords.variables
            if in_first != in_other:
                raise SourceMismatchError(
                    f"source {other.name}: coordinate {d!r} is {'missing' if in_first else 'present'}, "
                    f"unlike in {first.name}"
                )
            if not in_first:
                if first.sizes.get(d) != other.sizes.get(d):
                    raise SourceMismatchError(
                        f"source {other.name}: dimension {d!r} has size {other.sizes.get(d)} "
                        f"instead of {first.sizes.get(d)} as in {first.name}"
                    )
                continue
            a, b = first.coords.variables[d], other.coords.variables[d]
            if not a.equals(b):  # type: ignore[no-untyped-call]
                raise SourceMismatchError(
                    f"source {other.name}: coordinate {d!r} differs from {first.name}: "
                    f"{_describe_difference(a, b)}"
                )
    for o in opened:
        if missing == "raise":
            absent = [n for n in names if n not in o.stored]
            if absent:
                raise SourceMismatchError(f"source {redact_url(o.name)} lacks variables {absent}")
    for n in names:
        dtypes = {(o.name, o.stored[n].dtype) for o in opened if n in o.stored}
        numeric = {dt.kind in "biufc" for _, dt in dtypes}
        kinds = {dt.kind for _, dt in dtypes}
        if len(numeric) > 1 or (not any(numeric) and len(kinds) > 1):
            described = ", ".join(f"{s}: {dt}" for s, dt in sorted(dtypes, key=str))
            raise SourceMismatchError(f"variable {n!r} has incompatible dtypes across sources ({described})")


def _select_variables(opened: list[_Opened], variables: Iterable[str] | None, missing: str) -> list[str]:
    """The variables to extract: those asked for, or the first source's (all sources' with fill)."""
    if variables is not None:
        names = [variables] if isinstance(variables, str) else list(variables)
        for n in names:
            if all(n not in o.stored for o in opened):
                raise KeyError(f"variable {n!r} is in none of the sources")
        return names
    names = [str(n) for n in opened[0].data_names]
    for o in opened[1:]:
        extra = [str(n) for n in o.data_names if n not in names]
        if extra and missing == "raise":
            raise SourceMismatchError(
                f"source {redact_url(o.name)} has variables {extra} that {redact_url(opened[0].name)} lacks"
            )
        names += extra
    return names


def _plan_variable(
    index: int,
    opened: _Opened,
    name: str,
    positions: Mapping[Hashable, Any],
    point_dim: Hashable | None,
    *,
    cache: dict[Any, tuple[tuple[Any, ...], tuple[Hashable, ...], int]],
) -> _Request:
    """The read_many request for one variable and the dims its result will have (worked out
    once per dims, shape and item size in ``cache``: thousands of variables share a few)."""
    var = opened.stored[name]
    key = (var.dims, var.shape, var.dtype.itemsize)
    if key not in cache:
        cache[key] = _plan_selection(var, positions, point_dim)
    selection, out_dims, nbytes = cache[key]
    return _Request(index, name, (opened.group[name], *selection), out_dims, nbytes)


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


def _memory_budget(max_memory: int | float | str | None) -> int:
    """The byte budget for one read pass: ``max_memory`` (see `parse_size`), else half the
    memory available now."""
    budget = parse_size(max_memory)
    return available_memory() // 2 if budget is None else budget


def _batches(requests: list[_Request], budget: int) -> list[list[int]]:
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


def _progress_groups(groups: list[list[int]]) -> list[list[int]]:
    """``groups`` cut into about `_PROGRESS_STEPS` passes in all, for a moving progress bar."""
    total = sum(len(g) for g in groups)
    if total < _PROGRESS_MIN_REQUESTS:
        return groups
    step = max(-(-total // _PROGRESS_STEPS), _PROGRESS_MIN_REQUESTS // 4)
    return [g[k : k + step] for g in groups for k in range(0, len(g), step)]


def _equal_rows(a: npt.NDArray[Any], b: npt.NDArray[Any], axis: int) -> npt.NDArray[np.bool_]:
    """Per row along ``axis``: whether ``a`` and ``b`` hold the same values, NaN equal to NaN."""
    eq = np.asarray(a == b)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        eq = eq | (np.isnan(a) & np.isnan(b))
    elif a.dtype.kind in "mM" and b.dtype.kind in "mM":
        eq = eq | (np.isnat(a) & np.isnat(b))
    moved = np.moveaxis(eq, axis, 0).reshape(eq.shape[axis], -1)
    return np.asarray(moved.all(axis=1))


def _compare_repeats(
    parts: list[xr.Dataset],
    names: list[str],
    concat_dim: Hashable,
    repeats: list[tuple[int, int, int, int, Any]],
) -> npt.NDArray[np.bool_]:
    """Per repeat (source, row, kept source, kept row, label): whether every variable's row matches."""
    identical = np.ones(len(repeats), dtype=bool)
    pairs: dict[tuple[int, int], list[int]] = {}
    for k, (i, _, j, _, _) in enumerate(repeats):
        pairs.setdefault((i, j), []).append(k)
    for (i, j), ks in pairs.items():
        rows_i = [repeats[k][1] for k in ks]
        rows_j = [repeats[k][3] for k in ks]
        for n in names:
            if n not in parts[i].variables or n not in parts[j].variables:
                continue
            va, vb = parts[i].variables[n], parts[j].variables[n]
            if concat_dim not in va.dims or va.dims != vb.dims or va.shape[1:] != vb.shape[1:]:
                if va.dims != vb.dims:
                    identical[ks] = False
                continue
            axis = va.dims.index(concat_dim)
            a = np.take(np.asarray(va.values), rows_i, axis=axis)
            b = np.take(np.asarray(vb.values), rows_j, axis=axis)
            if a.shape != b.shape:
                identical[ks] = False
                continue
            identical[ks] &= _equal_rows(a, b, axis)
    return identical


def _same_encoding(parts: list[xr.Dataset]) -> bool:
    """Whether every variable has the same dtype and attributes (scale, offset, fill value, time
    units, ...) in every part: then decoding the concatenation equals concatenating the decoded
    parts, and comparing stored values compares decoded ones."""
    first = parts[0]
    for part in parts[1:]:
        if list(part.variables) != list(first.variables):
            return False
        for name, var in part.variables.items():
            head = first.variables[name]
            if var.dtype != head.dtype or var.attrs.keys() != head.attrs.keys():
                return False
            if any(not _same_attr(var.attrs[k], head.attrs[k]) for k in head.attrs):
                return False
    return True


def _same_attr(a: Any, b: Any) -> bool:
    """Attribute values equal (arrays elementwise, NaN equal to NaN)."""
    if isinstance(a, np.ndarray | list | tuple) or isinstance(b, np.ndarray | list | tuple):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape or x.dtype.kind != y.dtype.kind:
            return False
        return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
    return type(a) is type(b) and (a == b or (_is_nan(a) and _is_nan(b)))


def _labels(part: xr.Dataset, concat_dim: Hashable, *, decoded: bool) -> Any:
    """The part's ``concat_dim`` labels as users see them (decoded, e.g. datetimes), or None."""
    if concat_dim not in part.indexes:
        return None
    if decoded:
        return part.indexes[concat_dim]
    return _decode(xr.Dataset(coords={concat_dim: part.variables[concat_dim]})).indexes[concat_dim]


def _find_duplicates(
    parts: list[xr.Dataset], labels: list[Any], names: list[str], concat_dim: Hashable, sources: list[str]
) -> tuple[list[list[int]], list[DuplicateRecord]]:
    """Rows to keep per source (first occurrence of each label) and the repeated labels found;
    ``labels`` are each part's decoded ``concat_dim`` index (None where it has none)."""
    seen: dict[Any, tuple[int, int]] = {}
    keep: list[list[int]] = []
    repeats: list[tuple[int, int, int, int, Any]] = []  # (source, row, kept source, kept row, label)
    for i, (part, index) in enumerate(zip(parts, labels, strict=True)):
        rows: list[int] = []
        if index is not None:
            for row, label in enumerate(index):
                key = label.to_datetime64() if hasattr(label, "to_datetime64") else label
                if key in seen:
                    repeats.append((i, row, *seen[key], key))
                else:
                    seen[key] = (i, row)
                    rows.append(row)
        else:
            rows = list(range(part.sizes.get(concat_dim, 1)))
        keep.append(rows)
    identical = _compare_repeats(parts, names, concat_dim, repeats)
    records = [
        DuplicateRecord(plain_label(label), sources[i], bool(identical[k]))
        for k, (i, _, _, _, label) in enumerate(repeats)
    ]
    return keep, records


def _duplicate_message(records: Sequence[DuplicateRecord], concat_dim: Hashable, action: str) -> str:
    """A readable list of repeated labels for warnings and errors."""
    conflicting = sum(not r.identical for r in records)
    lines = [
        f"{len(records)} repeated {concat_dim!r} labels {action} ({conflicting} with CONFLICTING values):"
    ]
    for r in records[:50]:
        lines.append(f"  {r.label!r} from {r.source}: {'identical' if r.identical else 'CONFLICTING'}")
    if len(records) > 50:
        lines.append(f"  ... and {len(records) - 50} more")
    return "\n".join(lines)


def _read(
    requests: list[_Request],
    groups: list[list[int]],
    progress: bool | None,
    deadline: float | None,
    timeout: float | None,
) -> tuple[list[npt.NDArray[Any]], dict[str, float]]:
    """Runs the read passes; returns each request's array and the summed read statistics."""
    results: list[npt.NDArray[Any] | None] = [None] * len(requests)
    totals: dict[str, float] = {}
    with Progress(progress, total=len(groups), desc="fastzarr extract", unit="pass") as bar:
        for group in groups:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise _core.TimeoutError(f"extract_points did not finish within {timeout} s")
            arrays, stats = _core.read_many(
                [requests[k].request for k in group], return_stats=True, timeout=remaining
            )
            for k, arr in zip(group, arrays, strict=True):
                results[k] = arr
            for key, value in stats.as_dict().items():
                totals[key] = totals.get(key, 0) + value
            bar.update(nbytes=stats.bytes_decoded, chunks=stats.chunks)
    done = [r for r in results if r is not None]
    assert len(done) == len(results)
    return done, totals


@dataclass
class _Done:
    """Per-source selections (CF-decoded or not yet) and what reading them took."""

    parts: list[xr.Dataset]
    totals: dict[str, float]
    batches: int
    plan_seconds: float
    decoded: bool


@dataclass(frozen=True)
class _Job:
    """What to read from every source (picklable, for dask.distributed tasks)."""

    names: list[str]
    positions: Mapping[Hashable, Any]
    point_dim: Hashable | None
    concat_dim: Hashable
    budget: int
    timeout: float | None
    storage_options: Mapping[str, Any] | None = None


def _selected_dims(
    var: StoredVariable, positions: Mapping[Hashable, Any], cache: dict[Any, tuple[Hashable, ...]]
) -> tuple[Hashable, ...]:
    """The dims ``var.isel(positions)`` has (where vectorized indexing puts the point dim), worked
    out by xarray once per (dims, shape) on a zero-strided stand-in instead of per variable."""
    key = (var.dims, var.shape)
    if key not in cache:
        stand_in = np.broadcast_to(np.zeros((), dtype=np.int8), var.shape)
        probe = xr.Dataset({"v": (var.dims, stand_in)})
        cache[key] = probe.isel({d: p for d, p in positions.items() if d in var.dims})["v"].dims
    return cache[key]


def _decode(part: xr.Dataset) -> xr.Dataset:
    """xarray's CF decoding of a selection read undecoded (alike variables decoded together)."""
    return decode_cf(part)


def _selected_coords(
    o: _Opened, present: Sequence[Hashable], positions: Mapping[Hashable, Any]
) -> xr.Dataset:
    """The coordinates ``raw[present].isel(positions)`` has: those whose dims the variables use
    (as ``ds[names]`` keeps them), indexed like the variables (indexers' own coordinates added)."""
    used: dict[Hashable, int] = {}
    for n in present:
        used.update(o.stored[n].sizes)
    keep = [c for c, v in o.raw.variables.items() if set(v.dims) <= used.keys()]
    # A zero-strided stand-in carries every used dim, so indexers along dims without a coordinate
    # still bring their own coordinates.
    frame = o.raw[keep].assign(
        {_DIMS_STAND_IN: (tuple(used), np.broadcast_to(np.zeros((), np.int8), tuple(used.values())))}
    )
    selection = {d: p for d, p in positions.items() if d in used}
    return frame.isel(selection).drop_vars(_DIMS_STAND_IN)


_DIMS_STAND_IN = "__fastzarr_dims__"


def _assemble(
    data_vars: Mapping[Hashable, xr.Variable], coords: xr.Dataset, attrs: Mapping[Any, Any]
) -> xr.Dataset:
    """``xr.Dataset(data_vars, coords=coords.coords, attrs=attrs)`` without xarray's per-variable
    merge (a tenth of a millisecond a variable, most of building a result of thousands of them):
    the coordinates come with their indexes, the data variables only need their sizes checked.
    Anything unusual (a name clash, a size conflict) goes through xarray's constructor."""
    sizes = dict(coords.sizes)
    for name, v in data_vars.items():
        if name in coords.variables or any(sizes.setdefault(d, n) != n for d, n in v.sizes.items()):
            return xr.Dataset(data_vars, coords=coords.coords, attrs=attrs)
    variables = {**data_vars, **coords.variables}
    return compat_xr.dataset(
        variables,
        coord_names=set(coords.coords),
        sizes=sizes,
        attrs=attrs,
        indexes=dict(coords.xindexes),
    )


def _read_parts(opened: list[_Opened], job: _Job, *, progress: bool | None, deadline: float | None) -> _Done:
    """Plans every variable of every source and reads them all in one pass per batch; returns
    each source's selection still CF-encoded (decoding once after concatenation is cheaper).

    The coordinates come from xarray's ``isel`` of the source's (in-memory) dimension coordinates,
    so they are exactly what ``sel`` gives; each data variable is built directly from what
    fastzarr read, with the dims xarray's indexing gives it and the stored attributes and encoding.
    """
    start = time.perf_counter()
    skeletons: list[tuple[xr.Dataset, list[str]]] = []
    requests: list[_Request] = []
    dims_cache: dict[Any, tuple[Hashable, ...]] = {}
    plans: dict[Any, tuple[tuple[Any, ...], tuple[Hashable, ...], int]] = {}
    for i, o in enumerate(opened):
        data_names = set(o.data_names)
        present = [n for n in job.names if n in data_names]
        skeletons.append((_selected_coords(o, present, job.positions), present))
        requests.extend(_plan_variable(i, o, n, job.positions, job.point_dim, cache=plans) for n in present)
    groups = _batches(requests, job.budget)
    if progress_enabled(progress):
        groups = _progress_groups(groups)
    plan_seconds = time.perf_counter() - start
    results, totals = _read(requests, groups, progress, deadline, job.timeout)
    data_vars: list[dict[Hashable, xr.Variable]] = [{} for _ in opened]
    for req, arr in zip(requests, results, strict=True):
        stored = opened[req.source].stored[req.name]
        dims = _selected_dims(stored, job.positions, dims_cache)
        data = np.transpose(arr, [req.out_dims.index(d) for d in dims])
        variable = compat_xr.numpy_variable(dims, data, stored.attrs, stored.encoding)
        data_vars[req.source][req.name] = variable
    parts = [
        _assemble({n: read[n] for n in present}, coords, o.raw.attrs)
        for (coords, present), o, read in zip(skeletons, opened, data_vars, strict=True)
    ]
    return _Done(parts, totals, len(groups), plan_seconds, decoded=False)


def _read_decoded(
    opened: list[_Opened], job: _Job, *, progress: bool | None, deadline: float | None
) -> _Done:
    """`_read_parts`, each source's selection CF-decoded on its own (as a cache entry stores it)."""
    done = _read_parts(opened, job, progress=progress, deadline=deadline)
    return _Done([_decode(p) for p in done.parts], done.totals, done.batches, done.plan_seconds, True)


def _read_source_task(source: str, job: _Job, remaining: float | None) -> _Done:
    """One source's extraction on a dask.distributed worker (opened, read and decoded there)."""
    from fastzarr.xarray_backend import configure_for_dask_worker  # noqa: PLC0415

    configure_for_dask_worker()
    deadline = None if remaining is None else time.perf_counter() + remaining
    opened = _open(source, list(job.positions), job.concat_dim, job.storage_options, deadline=deadline)
    return _read_decoded([opened], job, progress=False, deadline=deadline)


def _read_distributed(client: Any, opened: list[_Opened], job: _Job, deadline: float | None) -> _Done:
    """Reads each source in its own task on the cluster and gathers the decoded selections."""
    start = time.perf_counter()
    remaining = None if deadline is None else max(deadline - start, 0.0)
    futures = [client.submit(_read_source_task, o.name, job, remaining, pure=False) for o in opened]
    try:
        if remaining is not None:
            from distributed import wait  # noqa: PLC0415

            wait(futures, timeout=remaining)  # type: ignore[no-untyped-call,unused-ignore]
        done: list[_Done] = client.gather(futures)
    except builtins.TimeoutError as exc:
        raise _core.TimeoutError(f"extract_points did not finish within {job.timeout} s") from exc
    finally:
        client.cancel(futures)
    totals: dict[str, float] = {}
    for d in done:
        for key, value in d.totals.items():
            totals[key] = totals.get(key, 0) + value
    plan = max((d.plan_seconds for d in done), default=0.0)
    return _Done([d.parts[0] for d in done], totals, sum(d.batches for d in done), plan, decoded=True)


_CONCAT_GROUP = 64
"""Variables per ``xr.concat`` call: its cost grows with the square of the variables per call."""


def _concat_along_existing(parts: list[xr.Dataset], concat_dim: Hashable) -> xr.Dataset | None:
    """``xr.concat(parts, dim=concat_dim)`` by numpy, for the usual shape of extraction results:
    every part has the same variables, every data variable has ``concat_dim`` (in the same place),
    and coordinates without it are equal across parts. None when the parts are not of that shape
    (then xarray's concat decides: broadcasting, outer joins, differing coordinates).

    xarray's concat spends most of its time aligning and merging per variable; here each variable
    is one ``np.concatenate``, with the first part's attributes and encoding, as xarray keeps them.
    """
    first = parts[0]
    if concat_dim not in first.dims:
        return None
    names = list(first.variables)
    if any(list(p.variables) != names or list(p.coords) != list(first.coords) for p in parts[1:]):
        return None
    variables: dict[Hashable, xr.Variable] = {}
    for name in names:
        column = [p.variables[name] for p in parts]
        head = column[0]
        if concat_dim in head.dims:
            axis = head.dims.index(concat_dim)
            if any(v.dims != head.dims or v.dtype != head.dtype for v in column[1:]):
                return None
            data = np.concatenate([np.asarray(v.values) for v in column], axis=axis)
            variables[name] = xr.Variable(head.dims, data, head.attrs, head.encoding)
        elif name in first.data_vars or any(not head.equals(v) for v in column[1:]):  # type: ignore[no-untyped-call]
            return None  # xarray would broadcast a data variable, or concatenate differing coords
        else:
            variables[name] = head
    coords = {n: variables[n] for n in first.coords}
    data_vars = {n: variables[n] for n in first.data_vars}
    return xr.Dataset(data_vars, coords=coords, attrs=first.attrs)


def _concat(parts: list[xr.Dataset], concat_dim: Hashable) -> xr.Dataset:
    """``xr.concat(parts, dim=concat_dim)`` with today's defaults, a group of variables at a time.

    Each variable is concatenated on its own (data_vars="all") and the coordinates are decided the
    same way in every group (each group carries all coordinates), so the groups' data variables
    put together under the first group's coordinates are exactly the one-call result.
    """
    only = parts[0]
    if len(parts) == 1 and all(concat_dim in only.variables[n].dims for n in only.data_vars):
        # What xr.concat of one dataset gives when its data variables all have the dim already
        # (one lacking it would be broadcast along it: then xarray's path below decides).
        return only
    fast = _concat_along_existing(parts, concat_dim)
    if fast is not None:
        return fast
    names = list(dict.fromkeys(n for p in parts for n in p.data_vars))
    pieces = []
    for start in range(0, max(len(names), 1), _CONCAT_GROUP):
        group = names[start : start + _CONCAT_GROUP]
        subsets = [
            xr.Dataset({n: p.variables[n] for n in group if n in p.data_vars}, coords=p.coords, attrs=p.attrs)
            for p in parts
        ]
        # xarray's defaults today, spelled out (they are about to change, with a FutureWarning).
        pieces.append(
            xr.concat(
                subsets, dim=concat_dim, data_vars="all", coords="different", compat="equals", join="outer"
            )
        )
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0]
    data_vars = {n: piece.variables[n] for piece in pieces for n in piece.data_vars}
    return xr.Dataset(data_vars, coords=first.coords, attrs=first.attrs)


def _check_arguments(method: Any, duplicates: Any, missing: Any) -> None:
    """Raises ValueError for an unknown method, duplicates or missing policy."""
    if method not in ("nearest", None):
        raise ValueError(f"method must be 'nearest' or None, not {method!r}")
    if duplicates not in ("drop", "raise", "keep"):
        raise ValueError(f"duplicates must be 'drop', 'raise' or 'keep', not {duplicates!r}")
    if missing not in ("raise", "fill"):
        raise ValueError(f"missing must be 'raise' or 'fill', not {missing!r}")


def _make_report(
    *,
    opened: Sequence[_Opened | str],
    names: list[str],
    totals: Mapping[str, float],
    batches: int,
    seconds: dict[str, float],
    thread_seconds: dict[str, float],
    records: list[DuplicateRecord],
) -> ExtractReport:
    """The report of one extraction."""
    return ExtractReport(
        sources=tuple(redact_url(o if isinstance(o, str) else o.name) for o in opened),
        variables=tuple(names),
        chunks=int(totals.get("chunks", 0)),
        chunks_missing=int(totals.get("chunks_missing", 0)),
        chunks_partial=int(totals.get("chunks_partial", 0)),
        blocks_decoded=int(totals.get("blocks_decoded", 0)),
        blocks_total=int(totals.get("blocks_total", 0)),
        bytes_read=int(totals.get("bytes_read", 0)),
        bytes_decoded=int(totals.get("bytes_decoded", 0)),
        bytes_returned=int(totals.get("bytes_out", 0)),
        batches=batches,
        seconds=seconds,
        thread_seconds=thread_seconds,
        duplicates=tuple(records),
        peak_memory=peak_memory_bytes(),
    )


def _source_key(name: str) -> dict[str, str]:
    """A source as cache key material: its absolute path, or its URL with credentials redacted (the
    manifest stores the key material) plus a hash of the whole URL where anything was redacted."""
    if "://" not in name:
        return {"source": os.path.abspath(name)}
    shown = redact_url(name)
    return {"source": shown} if shown == name else {"source": shown, "source_sha256": url_digest(name)}


class _CacheLookup:
    """The cache entries of one ``extract_points`` call: one per source, looked up before any
    source is opened (the key is the arguments and the source's fingerprint, not its contents)."""

    def __init__(
        self,
        cache: Cache,
        sources: Sequence[Source],
        arguments: Mapping[str, Any],
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        from fastzarr.cache import source_fingerprint  # noqa: PLC0415

        self.cache = cache
        self.params = [
            {
                "operation": "extract_points",
                **_source_key(_source_name(s)),
                "fingerprint": source_fingerprint(_source_name(s), storage_options),
                **arguments,
            }
            for s in sources
        ]
        self.found: list[tuple[xr.Dataset, dict[str, Any]] | None] = []

    def lookup(self, duplicates: str, *, combined: bool) -> xr.Dataset | None:
        """The whole call's stored result (with ``combined``), if there is one; otherwise reads (and
        validates) every source's entry that exists and returns None."""
        found = self.combined_hit(duplicates) if combined else None
        if found is None:
            self.found = [self.cache._try_read(make_key(p), p) for p in self.params]
        return found

    def combined_hit(self, duplicates: str) -> xr.Dataset | None:
        """The whole call's stored result (warning again about dropped duplicates), or None."""
        combined = self.combined_params(duplicates)
        found = self.cache._try_read(make_key(combined), combined)
        if found is None:
            return None
        message = found[1].get("extra", {}).get("duplicates")
        if message:
            warnings.warn(message, DuplicateWarning, stacklevel=4)
        return found[0]

    def store_combined(
        self, result: xr.Dataset, duplicates: str, labels: list[str], message: str | None, allow_nan: bool
    ) -> xr.Dataset:
        """Stores the whole call's result; returns it as read back from its entry."""
        stored, _ = self.cache.get_or_build(
            self.combined_params(duplicates),
            lambda: result,
            source=", ".join(labels),
            extra={"duplicates": message},
            allow_nan=allow_nan,
        )
        return stored

    def combined_params(self, duplicates: str) -> dict[str, Any]:
        """The key parameters of the whole call's result: every source's key, in order."""
        return {
            "operation": "extract_points/combined",
            "sources": [make_key(p) for p in self.params],
            "duplicates": duplicates,
        }

    def hits(self) -> list[xr.Dataset]:
        return [f[0] for f in self.found if f is not None]

    def all_hit(self, missing: str) -> bool:
        """Whether every source was found, and the entries agree (point coordinates, variables,
        dtypes) as the sources' own checks would demand; otherwise the sources are opened."""
        if any(f is None for f in self.found):
            return False
        extras = [f[1].get("extra", {}) for f in self.found if f is not None]
        if len({json.dumps(e.get("coords"), sort_keys=True) for e in extras}) > 1:
            return False
        if missing == "raise" and len({tuple(e.get("variables", ())) for e in extras}) > 1:
            return False
        kinds: dict[str, set[bool]] = {}
        for d in self.hits():
            for n, v in d.data_vars.items():
                kinds.setdefault(str(n), set()).add(v.dtype.kind in "biufc")
        return all(len(k) == 1 for k in kinds.values())

    def fill(
        self,
        opened: list[_Opened],
        job: _Job,
        *,
        progress: bool | None,
        deadline: float | None,
        allow_nan: bool,
    ) -> _Done:
        """Each source's result: its valid entry, or read now and stored before the next source."""
        decoded: list[xr.Dataset] = []
        totals: dict[str, float] = {}
        batches = 0
        plan = 0.0
        for o, params, found in zip(opened, self.params, self.found, strict=True):
            if found is not None:
                decoded.append(found[0])
                continue

            def build(o: _Opened = o) -> xr.Dataset:
                nonlocal batches, plan
                done = _read_decoded([o], job, progress=progress, deadline=deadline)
                for key, value in done.totals.items():
                    totals[key] = totals.get(key, 0) + value
                batches += done.batches
                plan += done.plan_seconds
                return done.parts[0]

            extra = {
                "coords": _coords_digest(o, job),
                "variables": sorted(n for n in job.names if n in o.stored),
            }
            ds, _ = self.cache.get_or_build(
                params, build, source=redact_url(o.name), extra=extra, allow_nan=allow_nan
            )
            decoded.append(ds)
        return _Done(decoded, totals, batches, plan, decoded=True)


def _coords_digest(opened: _Opened, job: _Job) -> str:
    """A digest of a source's point-dimension coordinates (which the sources must share)."""
    h = hashlib.sha256()
    for d in sorted(job.positions, key=str):
        h.update(f"{d}:{opened.sizes.get(d)}:".encode())
        if d in opened.coords.variables:
            values = np.ascontiguousarray(opened.coords.variables[d].values)
            h.update(values.dtype.str.encode())
            h.update(
                values.view(np.uint8).tobytes()
                if values.dtype.kind != "O"
                else repr(values.tolist()).encode()
            )
    return h.hexdigest()


def _source_list(
    sources: Source | Sequence[Source], points: Mapping[Hashable, Any], concat_dim: Hashable
) -> list[Source]:
    """The sources as a list, after checking the arguments that do not need them opened."""
    source_list = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    if not source_list:
        raise ValueError("no sources given")
    if not points:
        raise ValueError("points must name at least one dimension")
    if concat_dim in points:
        raise ValueError(f"points cannot select along concat_dim {concat_dim!r}")
    return source_list


def _read_all(
    opened: list[_Opened],
    job: _Job,
    cached: _CacheLookup | None,
    client: Any,
    *,
    progress: bool | None,
    deadline: float | None,
    allow_nan: bool,
) -> _Done:
    """Every source's selection: through the cache or on a cluster (decoded), or in one local pass
    (still CF-encoded: see `_Done.decoded`)."""
    if cached is not None:
        return cached.fill(opened, job, progress=progress, deadline=deadline, allow_nan=allow_nan)
    if client is None:
        return _read_parts(opened, job, progress=progress, deadline=deadline)
    return _read_distributed(client, opened, job, deadline)


@dataclass
class _Gathered:
    """The sources opened and read, and when each stage ended."""

    opened: list[_Opened]
    names: list[str]
    done: _Done
    t_metadata: float
    t_plan: float
    t_read: float


def _open_and_read(
    source_list: list[Source],
    indexers: Mapping[Hashable, Any],
    point_dim: Hashable | None,
    *,
    concat_dim: Hashable,
    variables: Iterable[str] | None,
    missing: str,
    method: str | None,
    tolerance: Any,
    max_memory: int | float | str | None,
    timeout: float | None,
    storage_options: Mapping[str, Any] | None,
    cached: _CacheLookup | None,
    client: Any,
    progress: bool | None,
    deadline: float | None,
    allow_nan: bool,
    start: float,
) -> _Gathered:
    """Opens every source (metadata only), plans and reads all their variables; the parts come
    back decoded unless every source is encoded alike (then they are decoded once, concatenated)."""
    # Metadata: open every source lazily, undecoded; decode only the small coordinates.
    opened = _open_sources(source_list, list(indexers), concat_dim, storage_options, deadline)
    names = _select_variables(opened, variables, missing)
    _check_sources(opened, list(indexers), names, missing)
    t_metadata = time.perf_counter()
    log_stage("extract_points", "metadata", t_metadata - start, sources=len(opened), variables=len(names))

    # Plan, read, decode: positions by xarray's own sel (the sources agree on them), then one
    # read pass over all variables of all sources (here, or one task per source on a cluster).
    positions = _positions(opened[0], indexers, method, tolerance)
    job = _Job(names, positions, point_dim, concat_dim, _memory_budget(max_memory), timeout, storage_options)
    done = _read_all(opened, job, cached, client, progress=progress, deadline=deadline, allow_nan=allow_nan)
    if not done.decoded and not _same_encoding(done.parts):
        done = _Done([_decode(p) for p in done.parts], done.totals, done.batches, done.plan_seconds, True)
    t_plan = t_metadata + done.plan_seconds
    t_read = time.perf_counter()
    log_stage("extract_points", "plan", t_plan - t_metadata)
    log_stage(
        "extract_points",
        "read",
        t_read - t_plan,
        passes=done.batches,
        chunks=int(done.totals.get("chunks", 0)),
        bytes_decoded=int(done.totals.get("bytes_decoded", 0)),
    )
    return _Gathered(opened, names, done, t_metadata, t_plan, t_read)


def extract_points(
    sources: Source | Sequence[Source],
    *,
    points: Mapping[Hashable, Any],
    method: Literal["nearest"] | None = "nearest",
    tolerance: Any = None,
    variables: Iterable[str] | None = None,
    concat_dim: Hashable = "file_id",
    duplicates: Literal["drop", "raise", "keep"] = "drop",
    missing: Literal["raise", "fill"] = "raise",
    max_memory: int | float | str | None = None,
    progress: bool | None = None,
    timeout: float | None = None,
    return_report: bool = False,
    client: Any = None,
    cache: Cache | None = None,
    allow_nan: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset | tuple[xr.Dataset, ExtractReport]:
    """Extracts points from one or many Zarr stores, reading only the chunks that hold them.

    The result equals ``xr.concat([xr.open_zarr(s).sel(**points, method=method, tolerance=tolerance)
    for s in sources], dim=concat_dim)`` (loaded, CF-decoded, with coordinates) once repeated
    ``concat_dim`` labels are handled. Scalars in ``points`` select one position (the dim is
    dropped, a scalar coordinate kept); sequences select points along one new ``point`` dimension,
    like xarray's vectorized ``sel`` with ``xr.DataArray(values, dims="point")``.

    Args:
        sources: a store path/URL or a sequence of them.
        points: dimension name -> scalar or sequence of coordinate labels.
        method: ``"nearest"`` or ``None`` for exact matches (a missing label raises KeyError).
        tolerance: the largest distance allowed with ``"nearest"``.
        variables: the variables to extract; all data variables by default.
        concat_dim: the dimension the sources are concatenated along.
        duplicates: repeated ``concat_dim`` labels: ``"drop"`` keeps the first and warns
            `DuplicateWarning`, ``"raise"`` raises `DuplicateError`, ``"keep"`` keeps them all.
        missing: a variable absent from a source: ``"raise"`` (`SourceMismatchError`) or ``"fill"``
            (NaN, as ``xr.concat`` fills it).
        max_memory: what one read pass may return: bytes, a size like ``"2GB"`` or ``"512 MiB"``
            (decimal units are powers of 1000, binary ones of 1024) or a percentage of the
            memory available now like ``"20%"``; half the available memory by default. Larger
            work is split into several passes.
        progress: a tqdm bar over read passes with bytes and chunks per second; by default shown
            when stderr is a terminal or in a notebook (and tqdm is installed). With a bar, a
            large pass is cut into about 20 passes so that the bar moves.
        timeout: seconds for the whole call (`fastzarr.TimeoutError`).
        return_report: also return a `fastzarr.report.ExtractReport` (a `fastzarr.Report`).
        client: a ``dask.distributed.Client``: each source is read by one task on the cluster's
            workers (with fastzarr there) and the result assembled here; the same result.
        cache: a `fastzarr.Cache`: each source's extraction is stored as one validated entry
            (keyed by the arguments and the source's fingerprint) as soon as it is read, so an
            interrupted run resumes with the sources already done, and a rerun reads the entries.
        allow_nan: with ``cache``, store results whose variables are entirely NaN instead of
            raising `fastzarr.SuspiciousDataError`.
        storage_options: object_store options for remote sources (``endpoint``, ``region``,
            ``skip_signature``, credentials, ``timeout``...), the same for every source.

    Returns:
        The dataset, or ``(dataset, report)`` with ``return_report=True``.
    """
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    _check_arguments(method, duplicates, missing)
    source_list = _source_list(sources, points, concat_dim)
    indexers, point_dim = _indexers(points)
    if variables is not None and not isinstance(variables, str):
        variables = list(variables)

    cached: _CacheLookup | None = None
    if cache is not None:
        if client is not None:
            raise ValueError("cache= and client= cannot be combined yet")
        arguments = {"points": indexers, "method": method, "tolerance": tolerance, "variables": variables}
        cached = _CacheLookup(
            cache, source_list, {**arguments, "concat_dim": concat_dim, "missing": missing}, storage_options
        )
        # The whole result is stored too: a rerun of the same call reads one entry, no concat.
        found = cached.lookup(duplicates, combined=not return_report)
        if found is not None:
            return found
    if cached is not None and cached.all_hit(missing):
        # Every source is in the cache, consistently: no source is opened at all.
        parts = cached.hits()
        decoded = True
        names = list(dict.fromkeys(str(n) for d in parts for n in d.data_vars))
        opened_names: Sequence[_Opened | str] = [_source_name(s) for s in source_list]
        t_metadata = t_plan = t_read = time.perf_counter()
        done = _Done(parts, {}, 0, 0.0, decoded=True)
    else:
        gathered = _open_and_read(
            source_list,
            indexers,
            point_dim,
            concat_dim=concat_dim,
            variables=variables,
            missing=missing,
            method=method,
            tolerance=tolerance,
            max_memory=max_memory,
            timeout=timeout,
            storage_options=storage_options,
            cached=cached,
            client=client,
            progress=progress,
            deadline=deadline,
            allow_nan=allow_nan,
            start=start,
        )
        opened_names, names, done = gathered.opened, gathered.names, gathered.done
        parts, decoded = done.parts, done.decoded
        t_metadata, t_plan, t_read = gathered.t_metadata, gathered.t_plan, gathered.t_read
    totals = done.totals

    # Assemble: repeated labels, then xarray's concat.
    source_names = [redact_url(o if isinstance(o, str) else o.name) for o in opened_names]
    labels = [_labels(p, concat_dim, decoded=decoded) for p in parts]
    keep, records = _find_duplicates(parts, labels, names, concat_dim, source_names)
    if records and duplicates == "raise":
        raise DuplicateError(_duplicate_message(records, concat_dim, "found"))
    if records and duplicates == "drop":
        warnings.warn(_duplicate_message(records, concat_dim, "dropped"), DuplicateWarning, stacklevel=2)
        parts = [
            d.isel({concat_dim: rows}) if concat_dim in d.dims and len(rows) < d.sizes[concat_dim] else d
            for d, rows in zip(parts, keep, strict=True)
        ]
    result = _concat(parts, concat_dim)
    if not decoded:
        result = _decode(result)
    if cached is not None and not return_report:
        message = (
            _duplicate_message(records, concat_dim, "dropped") if records and duplicates == "drop" else None
        )
        result = cached.store_combined(result, duplicates, source_names, message, allow_nan)
    end = time.perf_counter()
    log_stage("extract_points", "assemble", end - t_read, duplicates=len(records))
    log_stage("extract_points", "total", end - start)
    if not return_report:
        return result
    seconds = {
        "metadata": t_metadata - start,
        "plan": t_plan - t_metadata,
        "read": t_read - t_plan,
        "assemble": end - t_read,
        "total": end - start,
    }
    thread_seconds = {
        "fetch": float(totals.get("fetch_seconds", 0.0)),
        "decode": float(totals.get("decode_seconds", 0.0)),
    }
    report = _make_report(
        opened=opened_names,
        names=names,
        totals=totals,
        batches=done.batches,
        seconds=seconds,
        thread_seconds=thread_seconds,
        records=records,
    )
    return result, report


async def extract_points_async(
    sources: Source | Sequence[Source], **kwargs: Any
) -> xr.Dataset | tuple[xr.Dataset, ExtractReport]:
    """`extract_points` as an awaitable: it runs in a worker thread (fastzarr releases the GIL
    while it reads), so a running event loop (Jupyter's) stays free. Takes the same arguments."""
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(extract_points, sources, **kwargs)
