"""Type stubs for fastzarr's Rust extension module."""

import builtins
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, final, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "Array",
    "CorruptChunkError",
    "FastzarrError",
    "Group",
    "InvalidPathError",
    "MemberNotFoundError",
    "MemoryBudgetError",
    "MetadataError",
    "OuterIndexer",
    "ReadStats",
    "SelectionError",
    "StoreChangedError",
    "StoreNotFoundError",
    "TimeoutError",
    "UnsupportedCodecError",
    "VectorIndexer",
    "__version__",
    "_block_tables",
    "_busy_count",
    "_checksum_files",
    "_chunk_inventory",
    "_debug_panic",
    "_exchange",
    "_forget_block_tables",
    "_host_answers",
    "_plan_reads",
    "_read_ahead_tables",
    "_read_points_into",
    "_remember_block_tables",
    "_reopen_array",
    "_reopen_group",
    "_store_listing",
    "_sync_dirs",
    "_tree_listing",
    "_verify_chunks",
    "_write_files",
    "_write_regions",
    "get_io_concurrency",
    "get_num_threads",
    "get_partial_decoding",
    "open_array",
    "open_array_async",
    "open_group",
    "open_groups",
    "read_many",
    "read_many_async",
    "set_io_concurrency",
    "set_num_threads",
    "set_partial_decoding",
]
__version__: str

class FastzarrError(Exception): ...
class MetadataError(FastzarrError): ...
class UnsupportedCodecError(FastzarrError): ...
class CorruptChunkError(FastzarrError): ...

class StoreChangedError(FastzarrError):
    """The store was replaced or deleted after it was opened: open it again to read the new one."""

class StoreNotFoundError(FastzarrError, FileNotFoundError): ...
class SelectionError(FastzarrError, IndexError): ...
class TimeoutError(FastzarrError, builtins.TimeoutError): ...
class MemoryBudgetError(FastzarrError, MemoryError): ...
class InvalidPathError(FastzarrError, ValueError): ...
class MemberNotFoundError(FastzarrError, KeyError): ...

@final
class OuterIndexer:
    """``array.oindex``: each integer array in the key indexes its own axis."""

    def __getitem__(self, key: Any, /) -> npt.NDArray[Any]: ...

@final
class VectorIndexer:
    """``array.vindex``: integer arrays, one per axis, broadcast together into points, or a
    boolean mask of the array's shape."""

    def __getitem__(self, key: Any, /) -> npt.NDArray[Any]: ...

@final
class Array:
    """A Zarr array (v2 or v3). Cheap to create and to pickle; reads return numpy arrays.

    A local array stays bound to the store directory it was opened from: once that store is
    replaced (``fastzarr.to_zarr(mode="w")``, an append, ``fastzarr.rewrite``) or deleted, its
    reads raise `StoreChangedError` instead of reading the old directory as it is deleted (its
    chunks would read as fill values). Open the store again to read the new one."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def ndim(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def chunks(self) -> tuple[int, ...]: ...
    @property
    def shards(self) -> tuple[int, ...] | None: ...
    @property
    def fill_value(self) -> Any: ...
    @property
    def attrs(self) -> dict[str, Any]: ...
    @property
    def dimension_names(self) -> list[str | None] | None: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def zarr_format(self) -> int: ...
    @property
    def codecs(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def oindex(self) -> OuterIndexer: ...
    @property
    def vindex(self) -> VectorIndexer: ...
    def __getitem__(self, key: Any, /) -> npt.NDArray[Any]: ...
    def read(
        self,
        selection: Any = None,
        *,
        out: npt.NDArray[Any] | None = None,
        timeout: float | None = None,
        max_memory: int | float | str | None = None,
    ) -> npt.NDArray[Any]: ...
    def read_async(
        self,
        selection: Any = None,
        *,
        timeout: float | None = None,
        max_memory: int | float | str | None = None,
    ) -> Awaitable[npt.NDArray[Any]]:
        """``read`` as an awaitable: the event loop stays free while fastzarr reads."""
    def __len__(self) -> int: ...
    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, str], str]]: ...

@final
class Group(Mapping[str, Array | Group]):
    """A Zarr group: a read-only mapping of member arrays and groups."""

    def __getitem__(self, key: str, /) -> Array | Group: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> list[str]: ...  # type: ignore[override]
    def values(self) -> list[Array | Group]: ...  # type: ignore[override]
    def items(self) -> list[tuple[str, Array | Group]]: ...  # type: ignore[override]
    def get(self, name: str, default: Any = None) -> Any: ...
    def array_keys(self) -> list[str]: ...
    def group_keys(self) -> list[str]: ...
    def describe(
        self, names: Sequence[str] | None = None
    ) -> dict[str, tuple[Array, str, dict[str, Any], list[str | None] | None] | FastzarrError]:
        """The member arrays ``names`` (default: every one) in one call: ``{name: (array, layout,
        attributes, dimension_names)}``, ``layout`` being the array's metadata document without
        its attributes as compact JSON (equal layouts: equal data type, chunks, codecs and fill
        value), or ``{name: exception}`` for a member that cannot be opened (not raised)."""
    @property
    def attrs(self) -> dict[str, Any]: ...
    @property
    def path(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def zarr_format(self) -> int: ...
    @property
    def consolidated(self) -> bool: ...
    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, str], str, bool]]: ...

def open_array(
    url: str | PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    path: str = "",
    timeout: float | None = None,
) -> Array: ...
def open_group(
    url: str | PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    path: str = "",
    use_consolidated: bool | None = None,
    timeout: float | None = None,
) -> Group:
    """``timeout`` (seconds) bounds the open and, later, each access to a member."""

def open_groups(
    urls: Sequence[str | PathLike[str]],
    *,
    storage_options: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> list[Group]:
    """Opens several groups at once (their metadata requests overlapped); ``timeout`` bounds
    the whole call and, later, each access to a member."""

@final
class ReadStats:
    """What one ``read_many`` pass did."""

    @property
    def chunks(self) -> int: ...
    @property
    def chunks_missing(self) -> int: ...
    @property
    def chunks_partial(self) -> int: ...
    @property
    def bytes_read(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def bytes_decoded(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def blocks_decoded(self) -> int: ...
    @property
    def blocks_total(self) -> int: ...
    @property
    def fetch_seconds(self) -> float: ...
    @property
    def decode_seconds(self) -> float: ...
    @property
    def wall_seconds(self) -> float: ...
    def as_dict(self) -> dict[str, int | float]: ...

_Request = tuple[Array, Any] | tuple[Array, Any, Mapping[int, Any] | None]
"""``(array, selection)``, or ``(array, selection, {axis: indices})`` for points on those axes."""

@overload
def read_many(
    requests: Sequence[_Request],
    *,
    return_stats: Literal[False] = False,
    timeout: float | None = None,
    max_memory: int | float | str | None = None,
) -> list[npt.NDArray[Any]]: ...
@overload
def read_many(
    requests: Sequence[_Request],
    *,
    return_stats: Literal[True],
    timeout: float | None = None,
    max_memory: int | float | str | None = None,
) -> tuple[list[npt.NDArray[Any]], ReadStats]: ...
def _plan_reads(requests: Sequence[tuple[Any, ...]]) -> dict[str, int]: ...
def _read_points_into(
    requests: Sequence[tuple[Array, Any, Mapping[int, Any], npt.NDArray[Any], Any]],
    *,
    timeout: float | None = None,
    max_memory: int | float | str | None = None,
) -> ReadStats:
    """Points read straight into the callers' outputs: ``(array, selection, points, out, rows)``,
    point ``p`` to row ``rows[p]`` of ``out``'s point axis; requests may share an ``out``."""

def _block_tables(url: str) -> bytes: ...
def _read_ahead_tables(
    groups: Sequence[Group],
    point_dims: Sequence[str],
    names: Sequence[str] | None = None,
    *,
    timeout: float | None = None,
) -> tuple[int, int]: ...
def _remember_block_tables(url: str, tables: bytes) -> int: ...
def _forget_block_tables() -> int: ...
def _host_answers() -> dict[str, tuple[int, float]]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_io_concurrency(n: int) -> None:
    """Sets how many object-store requests fastzarr keeps in flight at most, over every host (default
    512, or half the open-file limit if lower); each host's own adaptive limit stays under it."""

def get_io_concurrency() -> int: ...
def set_partial_decoding(enabled: bool) -> None:
    """Allows or forbids decoding blosc chunks block by block for the reads started afterwards
    (default: allowed, unless `FASTZARR_PARTIAL_DECODING=0`). Forbidden, every read decodes
    and fetches whole chunks, so damage anywhere in a chunk is found by every read of it."""

def get_partial_decoding() -> bool:
    """Whether reads may decode blosc chunks block by block."""

def open_array_async(
    url: str | PathLike[str], *, storage_options: dict[str, Any] | None = None, path: str = ""
) -> Awaitable[Array]: ...
def read_many_async(
    requests: Sequence[_Request], *, timeout: float | None = None, max_memory: int | float | str | None = None
) -> Awaitable[list[npt.NDArray[Any]]]: ...
def _reopen_array(url: str, options: dict[str, str], path: str) -> Array: ...
def _reopen_group(url: str, options: dict[str, str], path: str, use_consolidated: bool | None) -> Group: ...
def _chunk_inventory(arrays: Sequence[Array], *, timeout: float | None = None) -> list[tuple[int, int]]: ...

_ChunkRecord = tuple[str, str, int, int]
"""``(array path, chunk key, stored size, CRC-32C)``."""

def _write_regions(
    store: str | PathLike[str],
    regions: Sequence[tuple[str, str, npt.NDArray[Any], Sequence[int]]],
    *,
    fsync: bool = True,
    timeout: float | None = None,
) -> list[list[_ChunkRecord]]: ...
def _write_files(
    store: str | PathLike[str],
    files: Sequence[tuple[str, bytes]],
    *,
    fsync: bool = True,
    timeout: float | None = None,
) -> None: ...
def _verify_chunks(
    store: str | PathLike[str], records: Sequence[_ChunkRecord], *, timeout: float | None = None
) -> int: ...
def _checksum_files(store: str | PathLike[str], keys: Sequence[str]) -> list[_ChunkRecord]: ...
def _exchange(a: str | PathLike[str], b: str | PathLike[str]) -> bool: ...
def _sync_dirs(path: str | PathLike[str]) -> None: ...
def _tree_listing(path: str | PathLike[str]) -> bytes: ...
def _store_listing(
    url: str | PathLike[str], storage_options: dict[str, Any] | None = None
) -> bytes | None: ...
def _debug_panic(place: str) -> None:
    """Internal test hook: panics in Rust on purpose ("python", "detached" or "pool")."""

def _busy_count() -> int:
    """Internal: fastzarr calls running without the GIL right now (for the fork warning)."""
