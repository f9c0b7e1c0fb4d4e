"""Point extraction across many batch stores in one parallel read pass.

`extract_points` returns exactly what xarray returns for
``xr.concat([xr.open_zarr(s).sel(**points, method=method) for s in sources], dim=concat_dim)``
(after repeated ``concat_dim`` labels are handled), but reads only the chunks that hold a point,
each once, for all variables of all sources together. xarray does the indexing arithmetic (on the
small coordinates only) and the CF decoding, so the result matches by construction.

`to_features` flattens such a result into a 2-D float matrix for scikit-learn or torch.

This module holds the call itself, which runs the stages in order; each stage's workings are in
a private submodule, so that each can be read (and changed) without the others: ``_opening``
(the sources' metadata and the checks that they agree), ``_planning`` (positions, requests, read
passes), ``_assembly`` (reading, building, decoding and concatenating the parts),
``_duplicates`` (repeated ``concat_dim`` labels), ``_cached`` (a `fastzarr.Cache`) and
``_distributed`` (a dask.distributed client).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

import xarray as xr

from fastzarr._progress import log_stage
from fastzarr._redact import redact_url
from fastzarr.cache import Cache
from fastzarr.errors import DuplicateError, DuplicateWarning, MemoryBudgetError, SourceMismatchError
from fastzarr.extract._assembly import Done, concat, decode, read_parts, same_encoding
from fastzarr.extract._cached import CacheLookup
from fastzarr.extract._distributed import read_distributed
from fastzarr.extract._dry_run import ExtractionPlan, plan_extraction
from fastzarr.extract._duplicates import concat_labels, duplicate_message, find_duplicates
from fastzarr.extract._opening import Opened, ReadAhead, Source, source_name
from fastzarr.extract._planning import Job, Query, locate_in, memory_budget, open_all, point_indexers
from fastzarr.extract._remembered import Remembered, key_of, recall, remember, same
from fastzarr.features import to_features
from fastzarr.report import DuplicateRecord, ExtractReport, peak_memory_bytes

__all__ = [
    "DuplicateError",
    "DuplicateWarning",
    "ExtractionPlan",
    "MemoryBudgetError",
    "SourceMismatchError",
    "extract_points",
    "to_features",
]


def _check_arguments(method: Any, duplicates: Any, missing: Any) -> None:
    """Raises ValueError for an unknown method, duplicates or missing policy."""
    if method not in ("nearest", None):
        raise ValueError(f"method must be 'nearest' or None, not {method!r}")
    if duplicates not in ("drop", "raise", "keep"):
        raise ValueError(f"duplicates must be 'drop', 'raise' or 'keep', not {duplicates!r}")
    if missing not in ("raise", "fill"):
        raise ValueError(f"missing must be 'raise' or 'fill', not {missing!r}")


def _query(
    sources: Source | Sequence[Source],
    points: Mapping[Hashable, Any],
    *,
    concat_dim: Hashable,
    variables: Iterable[str] | None,
    missing: str,
    method: str | None,
    tolerance: Any,
    storage_options: Mapping[str, Any] | None,
    deadline: float | None,
) -> Query:
    """The call's query, after checking the arguments that do not need the sources opened."""
    source_list = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    if not source_list:
        raise ValueError("no sources given")
    if not points:
        raise ValueError("points must name at least one dimension")
    if concat_dim in points:
        raise ValueError(f"points cannot select along concat_dim {concat_dim!r}")
    indexers, point_dim = point_indexers(points)
    if variables is not None and not isinstance(variables, str):
        variables = list(variables)
    return Query(
        source_list,
        indexers,
        point_dim,
        concat_dim,
        variables,
        missing,
        method,
        tolerance,
        storage_options,
        deadline,
    )


def _read_all(
    opened: list[Opened],
    job: Job,
    cached: CacheLookup | None,
    client: Any,
    *,
    progress: bool | None,
    deadline: float | None,
    allow_nan: bool,
) -> Done:
    """Every source's selection: through the cache or on a cluster (decoded), or in one local pass
    (still CF-encoded: see `Done.decoded`)."""
    if cached is not None:
        return cached.fill(opened, job, progress=progress, deadline=deadline, allow_nan=allow_nan)
    if client is None:
        return read_parts(opened, job, progress=progress, deadline=deadline)
    return read_distributed(client, opened, job, deadline)


@dataclass
class _Gathered:
    """The sources opened and read, and when each stage ended."""

    opened: list[Opened]
    names: list[str]
    done: Done
    t_metadata: float
    t_plan: float
    t_read: float


def _open_and_read(
    query: Query,
    *,
    max_memory: int | float | str | None,
    timeout: float | None,
    cached: CacheLookup | None,
    client: Any,
    progress: bool | None,
    allow_nan: bool,
    start: float,
) -> _Gathered:
    """Opens every source (metadata only), plans and reads all their variables; the parts come
    back decoded unless every source is encoded alike (then they are decoded once, concatenated)."""
    budget = memory_budget(max_memory)

    def read(opened: list[Opened]) -> tuple[list[str], Done, float]:
        """Plan and read from the sources ``opened``: one read pass over all variables of all
        sources (here, or one task per source on a cluster)."""
        names, positions = locate_in(query, opened)
        t_metadata = time.perf_counter()
        job = Job(names, positions, query.point_dim, query.concat_dim, budget, timeout, query.storage_options)
        done = _read_all(
            opened, job, cached, client, progress=progress, deadline=query.deadline, allow_nan=allow_nan
        )
        return names, done, t_metadata

    # Metadata: open every source, undecoded; decode only the small coordinates. Remote sources
    # opened by an earlier extraction are read from at once and opened again beside the read.
    key = key_of(query) if cached is None and client is None else None
    entry = recall(key) if key is not None else None
    # Remote sources read here: the chunks' block tables are read beside the coordinates.
    ahead = ReadAhead() if key is not None else None
    if key is not None and entry is not None:
        opened, names, done, t_metadata = _read_as_remembered(query, key, entry, read, ahead)
    else:
        opened = open_all(query, ahead)
        if key is not None:
            remember(key, Remembered(opened))
        names, done, t_metadata = read(opened)
    if ahead is not None and ahead.requests:
        totals = dict(done.totals)
        totals["requests"] = totals.get("requests", 0) + ahead.requests
        totals["bytes_read"] = totals.get("bytes_read", 0) + ahead.bytes
        done = replace(done, totals=totals)
    log_stage("extract_points", "metadata", t_metadata - start, sources=len(opened), variables=len(names))
    if not done.decoded and not same_encoding(done.parts):
        done = Done([decode(p) for p in done.parts], done.totals, done.batches, done.plan_seconds, True)
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


def _read_as_remembered(
    query: Query,
    key: tuple[Hashable, ...],
    entry: Remembered,
    read: Callable[[list[Opened]], tuple[list[str], Done, float]],
    ahead: ReadAhead | None,
) -> tuple[list[Opened], list[str], Done, float]:
    """Reads from the sources as remembered while they are opened again; keeps the read when
    they are unchanged, else reads again from what was opened (see `_remembered`). The sources
    are opened again with their coordinates read through the arrays remembered, beside the
    documents (see `open_sources`): that opening stands only where it is the one remembered,
    and otherwise the sources are opened afresh."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastzarr-metadata")
    try:
        reopening = pool.submit(open_all, query, ahead, entry.opened)
        try:
            names, done, t_metadata = read(entry.opened)
            failure: Exception | None = None
        except Exception as error:  # judged once the sources are known unchanged
            failure = error
        try:
            fresh: Remembered | None = Remembered(reopening.result())
        except Exception:  # e.g. a source replaced by another: opened afresh below
            fresh = None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if fresh is not None and same(entry, fresh):
        if failure is not None:
            raise failure
        return fresh.opened, names, done, t_metadata
    fresh = Remembered(open_all(query, ahead))
    remember(key, fresh)
    names, done, t_metadata = read(fresh.opened)
    return fresh.opened, names, done, t_metadata


def _make_report(
    *,
    opened: Sequence[Opened | str],
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
        requests=int(totals.get("requests", 0)),
        bytes_decoded=int(totals.get("bytes_decoded", 0)),
        bytes_returned=int(totals.get("bytes_out", 0)),
        batches=batches,
        seconds=seconds,
        thread_seconds=thread_seconds,
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
    cache: Cache | None = None,
    allow_nan: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> xr.Dataset | tuple[xr.Dataset, ExtractReport] | ExtractionPlan:
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
            For remote sources it also keeps the blosc block tables read, so that another
            extraction from the same chunks (another point, the next process) asks for their
            blocks at once: one request per chunk instead of two.
        allow_nan: with ``cache``, store results whose variables are entirely NaN instead of
            raising `fastzarr.SuspiciousDataError`.
        storage_options: object_store options for remote sources (``endpoint``, ``region``,
            ``skip_signature``, credentials, ``timeout``...), the same for every source.
        dry_run: read nothing but the sources' metadata and dimension coordinates, and return
            a `fastzarr.ExtractionPlan`: the chunks, requests and bytes the extraction would
            take, and its estimated time at a given latency and bandwidth
            (``plan.seconds(latency=0.02, bandwidth=100e6)``). ``client`` is ignored; of
            ``cache``, only the block tables kept for the sources count (the plan is of the
            reads themselves, as if no result were stored).

    Returns:
        The dataset, or ``(dataset, report)`` with ``return_report=True``, or the plan with
        ``dry_run=True``.
    """
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    _check_arguments(method, duplicates, missing)
    query = _query(
        sources,
        points,
        concat_dim=concat_dim,
        variables=variables,
        missing=missing,
        method=method,
        tolerance=tolerance,
        storage_options=storage_options,
        deadline=deadline,
    )
    if dry_run:
        return plan_extraction(query, cache)

    cached: CacheLookup | None = None
    if cache is not None:
        if client is not None:
            raise ValueError("cache= and client= cannot be combined yet")
        arguments = {
            "points": query.indexers,
            "method": method,
            "tolerance": tolerance,
            "variables": query.variables,
        }
        cached = CacheLookup(
            cache, query.sources, {**arguments, "concat_dim": concat_dim, "missing": missing}, storage_options
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
        opened_names: Sequence[Opened | str] = [source_name(s) for s in query.sources]
        t_metadata = t_plan = t_read = time.perf_counter()
        done = Done(parts, {}, 0, 0.0, decoded=True)
    else:
        gathered = _open_and_read(
            query,
            max_memory=max_memory,
            timeout=timeout,
            cached=cached,
            client=client,
            progress=progress,
            allow_nan=allow_nan,
            start=start,
        )
        opened_names, names, done = gathered.opened, gathered.names, gathered.done
        parts, decoded = done.parts, done.decoded
        t_metadata, t_plan, t_read = gathered.t_metadata, gathered.t_plan, gathered.t_read

    # Assemble: repeated labels, then xarray's concat.
    source_names = [redact_url(o if isinstance(o, str) else o.name) for o in opened_names]
    labels = [concat_labels(p, concat_dim, decoded=decoded) for p in parts]
    keep, records = find_duplicates(parts, labels, names, concat_dim, source_names)
    if records and duplicates == "raise":
        raise DuplicateError(duplicate_message(records, concat_dim, "found"))
    if records and duplicates == "drop":
        warnings.warn(duplicate_message(records, concat_dim, "dropped"), DuplicateWarning, stacklevel=2)
        parts = [
            d.isel({concat_dim: rows}) if concat_dim in d.dims and len(rows) < d.sizes[concat_dim] else d
            for d, rows in zip(parts, keep, strict=True)
        ]
    result = concat(parts, concat_dim)
    if not decoded:
        result = decode(result)
    if cached is not None and not return_report:
        message = (
            duplicate_message(records, concat_dim, "dropped") if records and duplicates == "drop" else None
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
        "fetch": float(done.totals.get("fetch_seconds", 0.0)),
        "decode": float(done.totals.get("decode_seconds", 0.0)),
    }
    report = _make_report(
        opened=opened_names,
        names=names,
        totals=done.totals,
        batches=done.batches,
        seconds=seconds,
        thread_seconds=thread_seconds,
        records=records,
    )
    return result, report


async def extract_points_async(
    sources: Source | Sequence[Source], **kwargs: Any
) -> xr.Dataset | tuple[xr.Dataset, ExtractReport] | ExtractionPlan:
    """`extract_points` as an awaitable: it runs in a worker thread (fastzarr releases the GIL
    while it reads), so a running event loop (Jupyter's) stays free. Takes the same arguments."""
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(extract_points, sources, **kwargs)
