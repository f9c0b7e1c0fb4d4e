"""Running the read passes and building each source's dataset from what they return, then CF
decoding and concatenating those datasets.

Each part is built directly from the arrays fastzarr read, with the coordinates from xarray's
``isel`` of the in-memory dimension coordinates, so they are exactly what ``sel`` gives. The parts
stay CF-encoded while every source is encoded alike, because decoding once after concatenation is
cheaper than decoding each part. Concatenation takes a numpy path for the usual shape of results
and leaves everything else to ``xr.concat``, a group of variables at a time.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from fastzarr import _core
from fastzarr._compat import xarray as compat_xr
from fastzarr._decoding import decode_cf
from fastzarr._progress import Progress, progress_enabled
from fastzarr.extract._opening import Opened, is_nan
from fastzarr.extract._planning import Job, Request, plan_batches, plan_variable, progress_groups
from fastzarr.xarray_backend import StoredVariable


@dataclass
class Done:
    """Per-source selections (CF-decoded or not yet) and what reading them took."""

    parts: list[xr.Dataset]
    totals: dict[str, float]
    batches: int
    plan_seconds: float
    decoded: bool


def _read(
    requests: list[Request],
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


def _selected_coords(o: Opened, present: Sequence[Hashable], positions: Mapping[Hashable, Any]) -> xr.Dataset:
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


def read_parts(opened: list[Opened], job: Job, *, progress: bool | None, deadline: float | None) -> Done:
    """Plans every variable of every source and reads them all in one pass per batch; returns
    each source's selection still CF-encoded (decoding once after concatenation is cheaper).

    The coordinates come from xarray's ``isel`` of the source's (in-memory) dimension coordinates,
    so they are exactly what ``sel`` gives; each data variable is built directly from what
    fastzarr read, with the dims xarray's indexing gives it and the stored attributes and encoding.
    """
    start = time.perf_counter()
    skeletons: list[tuple[xr.Dataset, list[str]]] = []
    requests: list[Request] = []
    dims_cache: dict[Any, tuple[Hashable, ...]] = {}
    plans: dict[Any, tuple[tuple[Any, ...], tuple[Hashable, ...], int]] = {}
    for i, o in enumerate(opened):
        data_names = set(o.data_names)
        present = [n for n in job.names if n in data_names]
        skeletons.append((_selected_coords(o, present, job.positions), present))
        requests.extend(plan_variable(i, o, n, job.positions, job.point_dim, cache=plans) for n in present)
    groups = plan_batches(requests, job.budget)
    if progress_enabled(progress):
        groups = progress_groups(groups)
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
    return Done(parts, totals, len(groups), plan_seconds, decoded=False)


def read_decoded(opened: list[Opened], job: Job, *, progress: bool | None, deadline: float | None) -> Done:
    """`read_parts`, each source's selection CF-decoded on its own (as a cache entry stores it)."""
    done = read_parts(opened, job, progress=progress, deadline=deadline)
    return Done([decode(p) for p in done.parts], done.totals, done.batches, done.plan_seconds, True)


def decode(part: xr.Dataset) -> xr.Dataset:
    """xarray's CF decoding of a selection read undecoded (alike variables decoded together)."""
    return decode_cf(part)


def same_encoding(parts: list[xr.Dataset]) -> bool:
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
    return type(a) is type(b) and (a == b or (is_nan(a) and is_nan(b)))


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


def concat(parts: list[xr.Dataset], concat_dim: Hashable) -> xr.Dataset:
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
