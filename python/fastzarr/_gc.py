"""Pausing Python's cyclic garbage collector while many small objects are made at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Runs the block with the cyclic collector off (as it was before, after).

    Describing a store of thousands of arrays, or planning a dask graph of thousands of
    variables, makes tens of thousands of small objects, none of them in a cycle; each 700 of
    them start a collection, and a full one walks every object of the process (xarray, pandas,
    numpy): about a fifth of the time spent describing, more than the reads when planning."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
