"""Extraction on a dask.distributed cluster: one task per source, which opens, reads and decodes
it on a worker, the results gathered here.

Kept apart because what crosses to the workers must be picklable by reference (a module-level
task function, the `Job`, the `Done` it returns), and ``distributed`` is imported only when a
client is given.
"""

from __future__ import annotations

import builtins
import time
from typing import Any

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


def read_distributed(client: Any, opened: list[Opened], job: Job, deadline: float | None) -> Done:
    """Reads each source in its own task on the cluster and gathers the decoded selections."""
    start = time.perf_counter()
    remaining = None if deadline is None else max(deadline - start, 0.0)
    futures = [client.submit(_read_source_task, o.name, job, remaining, pure=False) for o in opened]
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
    return Done([d.parts[0] for d in done], totals, sum(d.batches for d in done), plan, decoded=True)
