"""Extraction on a dask.distributed cluster: tasks that each open one source, read and decode a
share of its variables on a worker, the results gathered here.

With fewer sources than workers, a source's variables are split into contiguous shares so that
every worker reads some of its chunks: a single store of thousands of variables (a batch store
of an archive) is read by the whole cluster, not by one worker. The shares of a source are merged
back in the order of its variables.

Kept apart because what crosses to the workers must be picklable by reference (a module-level
task function, the `Job`, the `Done` it returns), and ``distributed`` is imported only when a
client is given.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from typing import Any

import xarray as xr

from fastzarr import _core
from fastzarr.extract._assembly import Done, read_decoded
from fastzarr.extract._opening import Opened, open_source
from fastzarr.extract._planning import Job


def _read_source_task(source: str, job: Job, remaining: float | None) -> Done:
    """One source's extraction on a dask.distributed worker (opened, read and decoded there)."""
    from fastzarr.xarray_backend import configure_for_dask_worker  # noqa: PLC0415

    configure_for_dask_worker()
    deadline = None if remaining is None else time.perf_counter() + remaining
    opened = open_source(source, list(job.positions), job.concat_dim, job.storage_options, deadline=deadline)
    return read_decoded([opened], job, progress=False, deadline=deadline)


def _workers(client: Any) -> int:
    """The cluster's workers now (at least 1)."""
    try:
        return max(1, len(client.scheduler_info().get("workers", {})))
    except Exception:  # a client without scheduler information: one task per source
        return 1


def _shares(names: list[str], count: int) -> list[list[str]]:
    """``names`` in ``count`` contiguous shares of nearly equal length (fewer if there are fewer
    names), in order."""
    count = max(1, min(count, len(names)))
    size, extra = divmod(len(names), count)
    out, start = [], 0
    for k in range(count):
        stop = start + size + (k < extra)
        out.append(names[start:stop])
        start = stop
    return out


def _merge(parts: list[xr.Dataset]) -> xr.Dataset:
    """The shares of one source's selection as one dataset, variables in the shares' order."""
    if len(parts) == 1:
        return parts[0]
    merged = xr.merge(parts, compat="identical", join="exact", combine_attrs="override")
    order = [n for p in parts for n in p.data_vars]
    return merged[order]


def read_distributed(client: Any, opened: list[Opened], job: Job, deadline: float | None) -> Done:
    """Reads the sources' variables in tasks on the cluster (each source split into as many shares
    of its variables as there are workers per source) and gathers the decoded selections."""
    start = time.perf_counter()
    remaining = None if deadline is None else max(deadline - start, 0.0)
    per_source = -(-_workers(client) // max(len(opened), 1))
    tasks = [
        (i, dataclasses.replace(job, names=share))
        for i, o in enumerate(opened)
        # A source holding none of the variables still answers (with `missing="fill"`).
        for share in _shares([n for n in job.names if n in o.stored] or job.names, per_source)
    ]
    futures = [
        client.submit(_read_source_task, opened[i].name, share_job, remaining, pure=False)
        for i, share_job in tasks
    ]
    try:
        if remaining is not None:
            from distributed import wait  # noqa: PLC0415

            wait(futures, timeout=remaining)  # type: ignore[no-untyped-call,unused-ignore]
        done: list[Done] = client.gather(futures)
    except builtins.TimeoutError as exc:
        raise _core.TimeoutError(f"extract_points did not finish within {job.timeout} s") from exc
    finally:
        client.cancel(futures)
    totals: dict[str, float] = {}
    for d in done:
        for key, value in d.totals.items():
            totals[key] = totals.get(key, 0) + value
    plan = max((d.plan_seconds for d in done), default=0.0)
    by_source: list[list[xr.Dataset]] = [[] for _ in opened]
    for (i, _), d in zip(tasks, done, strict=True):
        by_source[i].append(d.parts[0])
    parts = [_merge(p) for p in by_source]
    return Done(parts, totals, sum(d.batches for d in done), plan, decoded=True)
