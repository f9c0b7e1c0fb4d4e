"""Sample data and assertions for test suites that guard pipelines built on fastzarr.

>>> import fastzarr as fz
>>> from fastzarr.testing import make_batches, assert_materialized, assert_unique
>>> paths = make_batches("sample", batches=2, variables=3)   # seed-like weather batch stores
>>> ds = fz.load(fz.open_zarr(paths[0]))
>>> assert_materialized(ds)          # numpy, not dask or a lazy backend array
>>> assert_unique(ds, "file_id")     # no repeated labels

The pytest fixtures ``fastzarr_batches``, ``fastzarr_cache`` and ``fastzarr_s3`` come from the
plugin :mod:`fastzarr.pytest_plugin`, registered by entry point. Needs xarray and zarr-python
(``pip install fastzarr[testing]``).
"""

from __future__ import annotations

from fastzarr.testing.assertions import (
    assert_cache_valid,
    assert_materialized,
    assert_not_all_nan,
    assert_same_as_xarray,
    assert_unique,
)
from fastzarr.testing.batches import make_batches, parse_codec

__all__ = [
    "assert_cache_valid",
    "assert_materialized",
    "assert_not_all_nan",
    "assert_same_as_xarray",
    "assert_unique",
    "make_batches",
    "parse_codec",
]
