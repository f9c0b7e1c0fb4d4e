"""fastzarr: read Zarr arrays into numpy, decoding chunks in parallel on every core.

>>> import fastzarr as fz
>>> arr = fz.open_array("data.zarr/temperature")
>>> block = arr[0, :, 10:20]          # a numpy array, decoded on all cores
>>> many = fz.read_many([(a, ...) for a in fz.open_group("data.zarr").values()])
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastzarr import _fork  # noqa: F401  (registers the fork warning)
from fastzarr._core import (
    Array,
    CorruptChunkError,
    FastzarrError,
    Group,
    InvalidPathError,
    MemberNotFoundError,
    MemoryBudgetError,
    MetadataError,
    OuterIndexer,
    ReadStats,
    SelectionError,
    StoreChangedError,
    StoreNotFoundError,
    TimeoutError,
    UnsupportedCodecError,
    VectorIndexer,
    __version__,
    get_io_concurrency,
    get_num_threads,
    get_partial_decoding,
    open_array,
    open_array_async,
    open_group,
    read_many,
    read_many_async,
    set_io_concurrency,
    set_num_threads,
    set_partial_decoding,
)
from fastzarr._progress import configure_from_env as _configure_logging
from fastzarr.errors import (
    AppendError,
    CacheError,
    CacheWarning,
    DuplicateError,
    DuplicateWarning,
    EncodingUnavailableError,
    SourceMismatchError,
    SuspiciousDataError,
)
from fastzarr.inspection import InspectReport, inspect
from fastzarr.report import DuplicateRecord, ExtractReport, Report

_configure_logging()  # FASTZARR_LOG=debug shows fastzarr's stage logs without code

if TYPE_CHECKING:
    from fastzarr.batches import BatchGenerator
    from fastzarr.cache import Cache
    from fastzarr.extract import ExtractionPlan, extract_points, extract_points_async
    from fastzarr.features import to_features
    from fastzarr.loader import Loader, LoaderStats
    from fastzarr.loading import load
    from fastzarr.rewriting import RewriteReport, rewrite
    from fastzarr.writer import to_zarr
    from fastzarr.xarray_backend import open_zarr

# xarray is optional: its integration is imported on first use of these names.
_XARRAY_NAMES = {
    "BatchGenerator": "fastzarr.batches",
    "Loader": "fastzarr.loader",
    "LoaderStats": "fastzarr.loader",
    "load": "fastzarr.loading",
    "open_zarr": "fastzarr.xarray_backend",
    "extract_points": "fastzarr.extract",
    "ExtractionPlan": "fastzarr.extract",
    "extract_points_async": "fastzarr.extract",
    "to_features": "fastzarr.features",
    "to_zarr": "fastzarr.writer",
    "rewrite": "fastzarr.rewriting",
    "RewriteReport": "fastzarr.rewriting",
    "Cache": "fastzarr.cache",
}


def __getattr__(name: str) -> Any:
    module = _XARRAY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'fastzarr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


# A Group is a read-only mapping of its members: make isinstance(g, Mapping) true.
Mapping.register(Group)

__all__ = [
    "AppendError",
    "Array",
    "BatchGenerator",
    "Cache",
    "CacheError",
    "CacheWarning",
    "CorruptChunkError",
    "DuplicateError",
    "DuplicateRecord",
    "DuplicateWarning",
    "EncodingUnavailableError",
    "ExtractReport",
    "ExtractionPlan",
    "FastzarrError",
    "Group",
    "InspectReport",
    "InvalidPathError",
    "Loader",
    "LoaderStats",
    "MemberNotFoundError",
    "MemoryBudgetError",
    "MetadataError",
    "OuterIndexer",
    "ReadStats",
    "Report",
    "RewriteReport",
    "SelectionError",
    "SourceMismatchError",
    "StoreChangedError",
    "StoreNotFoundError",
    "SuspiciousDataError",
    "TimeoutError",
    "UnsupportedCodecError",
    "VectorIndexer",
    "__version__",
    "extract_points",
    "extract_points_async",
    "get_io_concurrency",
    "get_num_threads",
    "get_partial_decoding",
    "inspect",
    "load",
    "open_array",
    "open_array_async",
    "open_group",
    "open_zarr",
    "read_many",
    "read_many_async",
    "rewrite",
    "set_io_concurrency",
    "set_num_threads",
    "set_partial_decoding",
    "to_features",
    "to_zarr",
]
