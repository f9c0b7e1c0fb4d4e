"""fastzarr: read Zarr arrays into numpy, decoding chunks in parallel on every core.

>>> import fastzarr as fz
>>> arr = fz.open_array("data.zarr/temperature")
>>> block = arr[0, :, 10:20]          # a numpy array, decoded on all cores
>>> many = fz.read_many([(a, ...) for a in fz.open_group("data.zarr").values()])
"""

from __future__ import annotations

from collections.abc import Mapping

from fastzarr._core import (
    Array,
    CorruptChunkError,
    FastzarrError,
    Group,
    MetadataError,
    OuterIndexer,
    ReadStats,
    SelectionError,
    StoreNotFoundError,
    TimeoutError,
    UnsupportedCodecError,
    __version__,
    get_num_threads,
    open_array,
    open_group,
    read_many,
    set_num_threads,
)

# A Group is a read-only mapping of its members: make isinstance(g, Mapping) true.
Mapping.register(Group)

__all__ = [
    "Array",
    "CorruptChunkError",
    "FastzarrError",
    "Group",
    "MetadataError",
    "OuterIndexer",
    "ReadStats",
    "SelectionError",
    "StoreNotFoundError",
    "TimeoutError",
    "UnsupportedCodecError",
    "__version__",
    "get_num_threads",
    "open_array",
    "open_group",
    "read_many",
    "set_num_threads",
]
