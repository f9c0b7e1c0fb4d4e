"""Every exception and warning fastzarr raises, in one place (``fastzarr`` re-exports them all).

The errors of reading come from the Rust core; those of the xarray side (duplicates, appends,
the cache) are defined here, so that importing them needs neither xarray nor the modules that
raise them. All errors derive from `FastzarrError`; where a builtin fits too, they derive from
it as well (`StoreNotFoundError` is a `FileNotFoundError`, `MemberNotFoundError` a `KeyError`,
`SelectionError` an `IndexError`, `TimeoutError` the builtin `TimeoutError`)."""

from __future__ import annotations

from fastzarr._core import (
    CorruptChunkError,
    FastzarrError,
    InvalidPathError,
    MemberNotFoundError,
    MemoryBudgetError,
    MetadataError,
    SelectionError,
    StoreChangedError,
    StoreNotFoundError,
    TimeoutError,
    UnsupportedCodecError,
)

__all__ = [
    "AppendError",
    "CacheError",
    "CacheWarning",
    "CorruptChunkError",
    "DuplicateError",
    "DuplicateWarning",
    "EncodingUnavailableError",
    "FastzarrError",
    "InvalidPathError",
    "MemberNotFoundError",
    "MemoryBudgetError",
    "MetadataError",
    "SelectionError",
    "SourceMismatchError",
    "StoreChangedError",
    "StoreNotFoundError",
    "SuspiciousDataError",
    "TimeoutError",
    "UnsupportedCodecError",
]


class DuplicateError(FastzarrError):
    """Raised with ``duplicates="raise"`` when a ``concat_dim`` label occurs more than once."""


class DuplicateWarning(UserWarning):
    """Warned with ``duplicates="drop"`` when repeated ``concat_dim`` labels were dropped."""


class SourceMismatchError(FastzarrError):
    """The sources disagree: point coordinates, variables or data types differ."""


class AppendError(FastzarrError, ValueError):
    """The data cannot be appended to the store: variables, dimensions, dtypes, coordinates,
    attributes or encodings differ (the message names the variable and what differs)."""


class CacheError(FastzarrError):
    """The cache cannot be used: a lock not obtained in time, an unusable root directory."""


class SuspiciousDataError(FastzarrError, ValueError):
    """A result that looks wrong (variables entirely NaN, or above ``max_nan_fraction``) was refused."""


class CacheWarning(UserWarning):
    """An invalid cache entry was found and is being rebuilt."""


class EncodingUnavailableError(FastzarrError):
    """This xarray release lacks the zarr encoder fastzarr's writer uses (``fastzarr.to_zarr``
    refuses rather than encode differently from ``Dataset.to_zarr``)."""
