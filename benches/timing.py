"""The timing helpers of the benchmarks: best wall time of repeated calls."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Best wall time of ``repeat`` calls (after one warm-up call, and a garbage collection
    before each timed one) and the last call's result."""
    result = fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def best_in_turn(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each of ``fns`` over ``repeat`` rounds in which each is called once in
    turn (after one warm-up call each, and a garbage collection before each timed one).

    Taking turns gives every function the same share of a machine whose state drifts during
    the run (a filesystem settling after deletions, other jobs), which timing one function's
    calls after the other's would give to one of them only."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}
