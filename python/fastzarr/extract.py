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
import os
import sys
import time
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xarray as xr

from fastzarr import _core
from fastzarr._core import FastzarrError
from fastzarr.report import DuplicateRecord, Report, peak_memory_bytes

__all__ = [
    "DuplicateError",
    "DuplicateWarning",
    "MemoryBudgetError",
    "SourceMismatchError",
    "extract_points",
    "to_features",
]

Source = str | os.PathLike[str]


class DuplicateError(FastzarrError):
    """Raised with ``duplicates="raise"`` when a ``concat_dim`` label occurs more than once."""


class DuplicateWarning(UserWarning):
    """Warned with ``duplicates="drop"`` when repeated ``concat_dim`` labels were dropped."""


class SourceMismatchError(FastzarrError):
    """The sources disagree: point coordinates, variables or data types differ."""


class MemoryBudgetError(FastzarrError, MemoryError):
    """One read request alone is larger than the ``max_memory`` budget."""


@dataclass
class _Opened:
    """One source after the metadata stage."""

    name: str
    raw: xr.Dataset
    group: _core.Group
    coords: xr.Dataset


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


def _open(
    src: Source,
    point_dims: Sequence[Hashable],
    concat_dim: Hashable,
    storage_options: Mapping[str, Any] | None = None,
) -> _Opened:
    """Opens a source lazily, undecoded, and decodes only the coordinates of the point and concat dims.

    Metadata and coordinates are read by fastzarr itself, so every URL fastzarr reads (local,
    s3, gs, az, http, memory) works, with ``storage_options``.
    """
    from fastzarr.xarray_backend import normalize_url, open_zarr  # noqa: PLC0415

    name = _source_name(src)
    options = dict(storage_options) if storage_options else None
    raw = open_zarr(name, decode_cf=False, chunks=None, storage_options=options)
    group = _core.open_group(normalize_url(name), storage_options=options)
    wanted = [d for d in (*point_dims, concat_dim) if d in raw.xindexes]
    coords = xr.decode_cf(xr.Dataset(coords={d: raw.variables[d] for d in wanted}))
    return _Opened(name, raw, group, coords)


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
    """Integer positions for the point dims, computed by xarray's own ``sel`` on the coordinates."""
    sizes = opened.raw.sizes
    positions = xr.Dataset(
        {f"__pos_{d}": (d, np.arange(sizes[d])) for d in indexers if d in sizes},
        coords=opened.coords.coords,
    )
    selected = positions.sel(indexers, method=method, tolerance=tolerance)
    out: dict[Hashable, Any] = {}
    for d in indexers:
        pos = selected[f"__pos_{d}"]
        if pos.ndim == 0:
            out[d] = int(pos.values)
        else:  # keep the indexers' own coordinates (e.g. station names), as sel does
            own = {k: v.variable for k, v in pos.coords.items() if k not in positions.variables}
            out[d] = xr.DataArray(pos.values, dims=pos.dims, coords=own)
    return out


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
            return f"value {_label(y)!r} instead of {_label(x)!r} at index {i}"
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
                if first.raw.sizes.get(d) != other.raw.sizes.get(d):
                    raise SourceMismatchError(
                        f"source {other.name}: dimension {d!r} has size {other.raw.sizes.get(d)} "
                        f"instead of {first.raw.sizes.get(d)} as in {first.name}"
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
            absent = [n for n in names if n not in o.raw.variables]
            if absent:
                raise SourceMismatchError(f"source {o.name} lacks variables {absent}")
    for n in names:
        dtypes = {(o.name, o.raw.variables[n].dtype) for o in opened if n in o.raw.variables}
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
            if all(n not in o.raw.variables for o in opened):
                raise KeyError(f"variable {n!r} is in none of the sources")
        return names
    names = [str(n) for n in opened[0].raw.data_vars]
    for o in opened[1:]:
        extra = [str(n) for n in o.raw.data_vars if n not in names]
        if extra and missing == "raise":
            raise SourceMismatchError(f"source {o.name} has variables {extra} that {opened[0].name} lacks")
        names += extra
    return names


def _plan_variable(
    index: int, opened: _Opened, name: str, positions: Mapping[Hashable, Any], point_dim: Hashable | None
) -> _Request:
    """The read_many request for one variable and the dims its result will have."""
    var = opened.raw.variables[name]
    dims = var.dims
    present = [d for d in dims if d in positions]
    sequences = [d for d in present if not isinstance(positions[d], int)]
    array = opened.group[name]
    out_dims: list[Hashable] = []
    if sequences:
        n = positions[sequences[0]].size
        axes = {
            dims.index(d): np.broadcast_to(np.asarray(positions[d], dtype=np.int64), (n,)).copy()
            for d in present
        }
        request: tuple[Any, ...] = (array, (), axes)
        for d in dims:
            if d not in present:
                out_dims.append(d)
            elif point_dim not in out_dims:
                out_dims.append(point_dim)
        shape = [n if d == point_dim else var.sizes[d] for d in out_dims]
    elif present:
        request = (array, tuple(positions[d] if d in present else slice(None) for d in dims))
        out_dims = [d for d in dims if d not in present]
        shape = [var.sizes[d] for d in out_dims]
    else:
        request = (array, ...)
        out_dims = list(dims)
        shape = list(var.shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * var.dtype.itemsize
    return _Request(index, name, request, tuple(out_dims), nbytes)


def _memory_budget(max_memory: int | float | str | None) -> int:
    """The byte budget for one read pass: an int, a fraction like "20%" of RAM, or half the free RAM."""
    page = os.sysconf("SC_PAGE_SIZE")
    if max_memory is None:
        try:
            import psutil  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415

            return int(psutil.virtual_memory().available // 2)
        except ImportError:
            return int(os.sysconf("SC_AVPHYS_PAGES") * page // 2)
    if isinstance(max_memory, str):
        text = max_memory.strip()
        if not text.endswith("%"):
            raise ValueError(f"max_memory must be bytes or a percentage like '20%', not {max_memory!r}")
        fraction = float(text[:-1]) / 100
        if not 0 < fraction <= 1:
            raise ValueError(f"max_memory percentage must be in (0, 100], not {max_memory!r}")
        return int(os.sysconf("SC_PHYS_PAGES") * page * fraction)
    if max_memory <= 0:
        raise ValueError(f"max_memory must be positive, not {max_memory!r}")
    return int(max_memory)


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


def _progress_bar(progress: bool | None, total: int) -> Any:
    """A tqdm.auto bar over read passes, or None (tqdm missing and not asked for, or not interactive)."""
    if progress is False:
        return None
    if progress is None and not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
    except ImportError:
        if progress:
            raise ImportError("progress=True needs tqdm: pip install tqdm") from None
        return None
    return tqdm(total=total, desc="fastzarr extract", unit="pass")


def _equal_rows(a: npt.NDArray[Any], b: npt.NDArray[Any], axis: int) -> npt.NDArray[np.bool_]:
    """Per row along ``axis``: whether ``a`` and ``b`` hold the same values, NaN equal to NaN."""
    eq = np.asarray(a == b)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        eq = eq | (np.isnan(a) & np.isnan(b))
    elif a.dtype.kind in "mM" and b.dtype.kind in "mM":
        eq = eq | (np.isnat(a) & np.isnat(b))
    moved = np.moveaxis(eq, axis, 0).reshape(eq.shape[axis], -1)
    return np.asarray(moved.all(axis=1))


def _label(value: Any) -> Any:
    """A numpy scalar label as a plain Python value where that stays readable."""
    if isinstance(value, np.generic) and value.dtype.kind not in "mM":
        return value.item()
    return value


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


def _find_duplicates(
    parts: list[xr.Dataset], names: list[str], concat_dim: Hashable, sources: list[str]
) -> tuple[list[list[int]], list[DuplicateRecord]]:
    """Rows to keep per source (first occurrence of each label) and the repeated labels found."""
    seen: dict[Any, tuple[int, int]] = {}
    keep: list[list[int]] = []
    repeats: list[tuple[int, int, int, int, Any]] = []  # (source, row, kept source, kept row, label)
    for i, part in enumerate(parts):
        rows: list[int] = []
        if concat_dim in part.indexes:
            for row, label in enumerate(part.indexes[concat_dim]):
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
        DuplicateRecord(_label(label), sources[i], bool(identical[k]))
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
    bar = _progress_bar(progress, len(groups))
    try:
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
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    done = [r for r in results if r is not None]
    assert len(done) == len(results)
    return done, totals


@dataclass
class _Done:
    """Decoded per-source selections and what reading them took."""

    decoded: list[xr.Dataset]
    totals: dict[str, float]
    batches: int
    plan_seconds: float


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


def _read_decoded(
    opened: list[_Opened], job: _Job, *, progress: bool | None, deadline: float | None
) -> _Done:
    """Plans every variable of every source, reads them all in one pass per batch, decodes each source.

    The undecoded lazy selection ``raw.isel(positions)`` gives the result's structure (dims,
    coordinates, attributes); the numbers read by fastzarr replace its lazy data; xarray decodes.
    """
    start = time.perf_counter()
    parts: list[xr.Dataset] = []
    requests: list[_Request] = []
    for i, o in enumerate(opened):
        present = [n for n in job.names if n in o.raw.variables]
        part = o.raw[present].isel({d: p for d, p in job.positions.items() if d in o.raw.dims})
        parts.append(part)
        for n in part.variables:
            if n in o.raw.variables and n not in o.raw.xindexes:  # skip in-memory indexes
                requests.append(_plan_variable(i, o, str(n), job.positions, job.point_dim))
    groups = _batches(requests, job.budget)
    plan_seconds = time.perf_counter() - start
    results, totals = _read(requests, groups, progress, deadline, job.timeout)
    filled = [p.copy(deep=False) for p in parts]
    for req, arr in zip(requests, results, strict=True):
        var = filled[req.source].variables[req.name]
        order = [req.out_dims.index(d) for d in var.dims]
        var.data = np.transpose(arr, order)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=xr.SerializationWarning)
        decoded = [xr.decode_cf(p) for p in filled]
    return _Done(decoded, totals, len(groups), plan_seconds)


def _read_source_task(source: str, job: _Job, remaining: float | None) -> _Done:
    """One source's extraction on a dask.distributed worker (opened, read and decoded there)."""
    from fastzarr.xarray_backend import configure_for_dask_worker  # noqa: PLC0415

    configure_for_dask_worker()
    deadline = None if remaining is None else time.perf_counter() + remaining
    opened = _open(source, list(job.positions), job.concat_dim, job.storage_options)
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
    return _Done([d.decoded[0] for d in done], totals, sum(d.batches for d in done), plan)


_CONCAT_GROUP = 64
"""Variables per ``xr.concat`` call: its cost grows with the square of the variables per call."""


def _concat(parts: list[xr.Dataset], concat_dim: Hashable) -> xr.Dataset:
    """``xr.concat(parts, dim=concat_dim)`` with today's defaults, a group of variables at a time.

    Each variable is concatenated on its own (data_vars="all") and the coordinates are decided the
    same way in every group (each group carries all coordinates), so the groups' data variables
    put together under the first group's coordinates are exactly the one-call result.
    """
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
    opened: list[_Opened],
    names: list[str],
    totals: Mapping[str, float],
    batches: int,
    seconds: dict[str, float],
    records: list[DuplicateRecord],
) -> Report:
    """The Report of one extraction."""
    return Report(
        sources=tuple(o.name for o in opened),
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
        duplicates=tuple(records),
        peak_memory=peak_memory_bytes(),
    )


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
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset | tuple[xr.Dataset, Report]:
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
        max_memory: bytes, or a percentage of RAM like ``"20%"``, that one read pass may return;
            half the available memory by default. Larger work is split into several passes.
        progress: a tqdm bar over read passes; by default shown when stderr is a terminal.
        timeout: seconds for the whole call (`fastzarr.TimeoutError`).
        return_report: also return a `fastzarr.report.Report`.
        client: a ``dask.distributed.Client``: each source is read by one task on the cluster's
            workers (with fastzarr there) and the result assembled here; the same result.
        storage_options: object_store options for remote sources (``endpoint``, ``region``,
            ``skip_signature``, credentials, ``timeout``...), the same for every source.

    Returns:
        The dataset, or ``(dataset, report)`` with ``return_report=True``.
    """
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    _check_arguments(method, duplicates, missing)
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    source_list = list(sources)
    if not source_list:
        raise ValueError("no sources given")
    if not points:
        raise ValueError("points must name at least one dimension")
    if concat_dim in points:
        raise ValueError(f"points cannot select along concat_dim {concat_dim!r}")
    indexers, point_dim = _indexers(points)

    # Metadata: open every source lazily, undecoded; decode only the small coordinates.
    opened = [_open(s, list(indexers), concat_dim, storage_options) for s in source_list]
    names = _select_variables(opened, variables, missing)
    _check_sources(opened, list(indexers), names, missing)
    t_metadata = time.perf_counter()

    # Plan, read, decode: positions by xarray's own sel (the sources agree on them), then one
    # read pass over all variables of all sources (here, or one task per source on a cluster).
    positions = _positions(opened[0], indexers, method, tolerance)
    job = _Job(names, positions, point_dim, concat_dim, _memory_budget(max_memory), timeout, storage_options)
    if client is None:
        done = _read_decoded(opened, job, progress=progress, deadline=deadline)
    else:
        done = _read_distributed(client, opened, job, deadline)
    decoded, totals = done.decoded, done.totals
    t_plan = t_metadata + done.plan_seconds
    t_read = time.perf_counter()

    # Assemble: repeated labels, then xarray's concat.
    keep, records = _find_duplicates(decoded, names, concat_dim, [o.name for o in opened])
    if records and duplicates == "raise":
        raise DuplicateError(_duplicate_message(records, concat_dim, "found"))
    if records and duplicates == "drop":
        warnings.warn(_duplicate_message(records, concat_dim, "dropped"), DuplicateWarning, stacklevel=2)
        decoded = [
            d.isel({concat_dim: rows}) if concat_dim in d.dims and len(rows) < d.sizes[concat_dim] else d
            for d, rows in zip(decoded, keep, strict=True)
        ]
    result = _concat(decoded, concat_dim)
    end = time.perf_counter()
    if not return_report:
        return result
    seconds = {
        "metadata": t_metadata - start,
        "plan": t_plan - t_metadata,
        "fetch": float(totals.get("fetch_seconds", 0.0)),
        "decode": float(totals.get("decode_seconds", 0.0)),
        "read": t_read - t_plan,
        "assemble": end - t_read,
        "total": end - start,
    }
    report = _make_report(
        opened=opened, names=names, totals=totals, batches=done.batches, seconds=seconds, records=records
    )
    return result, report


def _feature_labels(da: xr.DataArray, dims: Sequence[Hashable]) -> list[list[str]]:
    """Per feature dim, a readable label per position: the coordinate value, or the position."""
    labels = []
    for d in dims:
        if d in da.coords and da.coords[d].dims == (d,):
            values = da.coords[d].values
            labels.append([f"{d}={_label(v)}" for v in values])
        else:
            labels.append([f"{d}={i}" for i in range(da.sizes[d])])
    return labels


def to_features(
    ds: xr.Dataset, sample_dims: Sequence[Hashable] | Hashable = ("file_id",)
) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Flattens a dataset into ``(X, names)``: one row per sample, one column per feature.

    Rows run over ``sample_dims`` (stacked in C order); every data variable contributes one column
    per position of its other dims, named like ``var0003`` or ``var0003[step=5,point=1]`` (a dim's
    coordinate value where it has one, else the position). ``X`` is float64, ready for
    scikit-learn or torch. A data variable lacking a sample dim, or not numeric, raises ValueError.
    """
    if isinstance(sample_dims, str) or not isinstance(sample_dims, Sequence):
        sample_dims = (sample_dims,)
    sample_dims = tuple(sample_dims)
    for d in sample_dims:
        if d not in ds.dims:
            raise ValueError(f"sample dim {d!r} is not a dimension of the dataset")
    n_samples = int(np.prod([ds.sizes[d] for d in sample_dims], dtype=np.int64))
    columns: list[npt.NDArray[np.float64]] = []
    names: list[str] = []
    for name, da in ds.data_vars.items():
        absent = [d for d in sample_dims if d not in da.dims]
        if absent:
            raise ValueError(f"variable {name!r} lacks sample dims {absent}")
        if da.dtype.kind not in "biuf":
            raise ValueError(f"variable {name!r} has non-numeric dtype {da.dtype}")
        feature_dims = [d for d in da.dims if d not in sample_dims]
        values = np.asarray(da.transpose(*sample_dims, *feature_dims).values, dtype=np.float64)
        columns.append(values.reshape(n_samples, -1))
        if not feature_dims:
            names.append(str(name))
            continue
        labels = _feature_labels(da, feature_dims)
        for idx in np.ndindex(*(len(lab) for lab in labels)):
            names.append(f"{name}[{','.join(lab[i] for lab, i in zip(labels, idx, strict=True))}]")
    X = np.concatenate(columns, axis=1) if columns else np.empty((n_samples, 0), dtype=np.float64)  # noqa: N806
    return X, names


async def extract_points_async(
    sources: Source | Sequence[Source], **kwargs: Any
) -> xr.Dataset | tuple[xr.Dataset, Report]:
    """`extract_points` as an awaitable: it runs in a worker thread (fastzarr releases the GIL
    while it reads), so a running event loop (Jupyter's) stays free. Takes the same arguments."""
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(extract_points, sources, **kwargs)
