"""``fastzarr.inspect``: what a store holds, what reading it costs, and how to make it cheaper.

For every array: shape, dtype, chunk shape and bytes, codecs, stored vs decoded size (one
listing of each array's chunk objects, in parallel), missing chunks, what a single-point read
touches (measured with ``read_many(..., return_stats=True)``, so partial blosc decoding shows),
what a point's series along the non-spatial axes and a full read touch (arithmetic on the
chunk grid), and decode throughput measured on a sample of chunks on one core and on all
cores. Plain-language advice follows from those numbers. (The module is not called ``inspect``
so as not to shadow the standard library's.)"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fastzarr import _core
from fastzarr._progress import Progress, Stages
from fastzarr.advice import advise, is_coordinate
from fastzarr.report import Report, format_size

__all__ = ["ArrayInfo", "InspectReport", "Throughput", "inspect"]

_SPATIAL = {"lat", "lon", "latitude", "longitude", "x", "y", "rlat", "rlon", "south_north", "west_east"}
"""Dimension names taken as the horizontal axes of a field (else the last two axes are)."""


@dataclass(frozen=True)
class Throughput:
    """Read-and-decode speed measured on a sample of chunks sharing one layout (codecs, dtype, chunks)."""

    layout: str
    """``codecs | dtype | chunk shape``."""
    arrays: tuple[str, ...]
    """The arrays with this layout."""
    chunks: int
    """Chunks in the sample (each read whole)."""
    bytes_stored: int
    """Stored bytes of the sampled chunks."""
    bytes_decoded: int
    """Decoded bytes of the sampled chunks (absent chunks decode nothing)."""
    seconds_one: float
    """Wall seconds to read the sample on one thread (warm cache)."""
    seconds_all: float
    """Wall seconds to read the sample on all threads (warm cache)."""
    threads: int
    """fastzarr's thread count for the all-threads measurement."""

    @property
    def one_core(self) -> float | None:
        """Decoded bytes per second on one thread, or None when nothing was decoded."""
        return self.bytes_decoded / self.seconds_one if self.bytes_decoded and self.seconds_one else None

    @property
    def all_cores(self) -> float | None:
        """Decoded bytes per second on all threads, or None when nothing was decoded."""
        return self.bytes_decoded / self.seconds_all if self.bytes_decoded and self.seconds_all else None


@dataclass(frozen=True)
class ArrayInfo:
    """One array of an inspected store."""

    name: str
    """Path of the array inside the store."""
    shape: tuple[int, ...]
    dtype: str
    dims: tuple[str | None, ...] | None
    """Dimension names (v3 ``dimension_names`` or v2 ``_ARRAY_DIMENSIONS``), if any."""
    chunks: tuple[int, ...]
    """Chunk shape (inner chunks of a sharded array)."""
    shards: tuple[int, ...] | None
    """Shard shape of a sharded array."""
    chunk_bytes: int
    """Decoded bytes of one chunk."""
    codecs: str
    """The codec chain with its settings."""
    zarr_format: int
    fill_value: Any
    objects_total: int
    """Chunk objects in the grid (shards for a sharded array)."""
    objects_stored: int | None
    """Chunk objects present in the store; None when the store cannot be listed (plain HTTP)."""
    stored_bytes: int | None
    """Bytes the present chunk objects take in the store (None: not listable)."""
    decoded_bytes: int | None
    """Bytes the present chunk objects decode to (None: not listable)."""
    point_chunks: int
    """Chunks a point read touches: the centre of the spatial axes across one chunk of its series
    (every other axis), which is what `extract_points` reads of each chunk for one point. Measured
    in one pass over all arrays sharing this array's layout, averaged over them; without spatial
    axes, the centre element."""
    point_bytes_read: int
    """Bytes that read fetched (measured)."""
    point_bytes_decoded: int
    """Bytes that read decoded (measured; below ``chunk_bytes`` when blosc decodes only the blocks
    holding the point)."""
    series_dims: tuple[str, ...]
    """The axes a point's series runs along (all but the spatial ones); empty when not applicable."""
    series_chunks: int
    """Chunks one point's series along ``series_dims`` touches."""
    spatial_dims: tuple[str, ...]
    """The axes taken as the field's horizontal axes."""
    layout: str
    """Key into `InspectReport.throughput`."""

    @property
    def chunks_missing(self) -> int | None:
        """Chunk objects of the grid absent from the store (they read as the fill value); None
        when the store cannot be listed."""
        if self.objects_stored is None:
            return None
        return max(self.objects_total - self.objects_stored, 0)

    @property
    def nbytes(self) -> int:
        """Decoded bytes of the whole array (what a full read returns)."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def ratio(self) -> float | None:
        """Compression ratio (decoded / stored) of the present chunks, or None when nothing is stored."""
        if not self.stored_bytes or self.decoded_bytes is None:
            return None
        return self.decoded_bytes / self.stored_bytes

    @property
    def full_chunks(self) -> int:
        """Chunks a full read touches: every chunk of the grid."""
        return _grid_count(self.shape, self.chunks)


def _grid_count(shape: Sequence[int], chunks: Sequence[int]) -> int:
    """Chunks in the grid of ``shape`` cut into ``chunks``."""
    return math.prod(-(-s // c) if c else 1 for s, c in zip(shape, chunks, strict=True))


@dataclass(frozen=True, repr=False)  # the repr is Report's
class InspectReport(Report):
    """What `fastzarr.inspect` found (``repr`` for a terminal, an HTML table in Jupyter)."""

    url: str
    arrays: tuple[ArrayInfo, ...]
    throughput: tuple[Throughput, ...]
    advice: tuple[str, ...]
    """Plain-language suggestions, each naming the arrays it applies to."""
    threads: int
    """fastzarr's thread count."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per stage of the inspection."""

    _title: ClassVar[str] = "fastzarr.InspectReport"
    _MAX_ROWS: ClassVar[int] = 20

    def _rows(self) -> list[tuple[str, str]]:
        total = sum(a.objects_total for a in self.arrays)
        rows = [("store", self.url), ("arrays", str(len(self.arrays)))]
        if any(a.objects_stored is None for a in self.arrays):
            rows.append(("stored", "unknown: the store cannot be listed (plain HTTP)"))
        else:
            stored = sum(a.stored_bytes or 0 for a in self.arrays)
            decoded = sum(a.decoded_bytes or 0 for a in self.arrays)
            missing = sum(a.chunks_missing or 0 for a in self.arrays)
            ratio = f" (ratio {decoded / stored:.2f})" if stored else ""
            rows.append(("stored", f"{format_size(stored)} -> {format_size(decoded)} decoded{ratio}"))
            rows.append(("missing chunks", f"{missing} of {total}"))
        for t in self.throughput:
            if t.one_core is None or t.all_cores is None:
                continue
            names = t.arrays[0] if len(t.arrays) == 1 else f"{t.arrays[0]} ... {t.arrays[-1]}"
            rows.append(
                (
                    "decode speed",
                    f"{format_size(t.one_core)}/s on 1 thread, {format_size(t.all_cores)}/s on "
                    f"{t.threads} threads ({t.chunks} chunks of {len(t.arrays)} arrays: {names})",
                )
            )
        return rows

    def _tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        header = ["array", "shape", "dtype", "chunks", "chunk", "codecs", "stored", "ratio"]
        header += ["missing", "point read", "series read"]
        rows = []
        for a in self.arrays[: self._MAX_ROWS]:
            ratio = f"{a.ratio:.2f}" if a.ratio is not None else "-"
            series = "-"
            if a.series_dims:
                series = f"{a.series_chunks} chunks ({','.join(a.series_dims)})"
            rows.append(
                [
                    a.name,
                    "x".join(map(str, a.shape)) or "()",
                    a.dtype,
                    "x".join(map(str, a.chunks)) or "()",
                    format_size(a.chunk_bytes),
                    a.codecs,
                    "?" if a.stored_bytes is None else format_size(a.stored_bytes),
                    ratio,
                    "?" if a.chunks_missing is None else str(a.chunks_missing),
                    f"{a.point_chunks} chunk, {format_size(a.point_bytes_decoded)} decoded",
                    series,
                ]
            )
        if len(self.arrays) > self._MAX_ROWS:
            rows.append([f"... and {len(self.arrays) - self._MAX_ROWS} more", *[""] * (len(header) - 1)])
        return [("arrays", header, rows)]

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON, with the derived figures (missing chunks, ratios, speeds) spelled out."""
        data = super().as_dict()
        for entry, info in zip(data["arrays"], self.arrays, strict=True):
            entry.update(
                chunks_missing=info.chunks_missing,
                ratio=info.ratio,
                nbytes=info.nbytes,
                full_chunks=info.full_chunks,
            )
        for entry, t in zip(data["throughput"], self.throughput, strict=True):
            entry.update(one_core_bytes_per_second=t.one_core, all_cores_bytes_per_second=t.all_cores)
        return data

    def _details(self) -> list[str]:
        return [f"advice: {a}" for a in self.advice] or [
            "advice: none, the layout suits point and full reads"
        ]


def _walk(node: _core.Group | _core.Array) -> Iterator[_core.Array]:
    """Every array below a group (depth first, sorted by name), or the array itself."""
    if isinstance(node, _core.Array):
        yield node
        return
    for name in sorted(node.keys()):
        yield from _walk(node[name])


def _open(
    url: str, storage_options: dict[str, Any] | None, timeout: float | None = None
) -> _core.Group | _core.Array:
    """The group at ``url``, or the array when ``url`` is one."""
    try:
        return _core.open_group(url, storage_options=storage_options, timeout=timeout)
    except _core.MetadataError as group_error:
        try:
            return _core.open_array(url, storage_options=storage_options, timeout=timeout)
        except _core.MetadataError:
            # Not an array either: the group's own error (a member's broken metadata, say)
            # is the one that says what is wrong, not "is a group, not an array".
            raise group_error from None


def _spatial_axes(array: _core.Array) -> list[int]:
    """The horizontal axes: named like lat/lon/x/y, else the last two of a 3-D or larger array."""
    names = array.dimension_names or []
    named = [i for i, n in enumerate(names) if n is not None and n.lower() in _SPATIAL]
    if named:
        return named
    return list(range(array.ndim - 2, array.ndim)) if array.ndim >= 3 else []


def _dim_name(array: _core.Array, axis: int) -> str:
    names = array.dimension_names
    name = names[axis] if names is not None else None
    return name if name is not None else f"dim_{axis}"


def _layout(array: _core.Array) -> str:
    """``codecs | dtype | chunk shape``: arrays alike in what reading them costs."""
    return f"{array.codecs} | {array.dtype} | {'x'.join(map(str, array.chunks))}"


def _point(array: _core.Array) -> tuple[int | slice, ...]:
    """The read measured for every array: what `extract_points` reads of one chunk for one point.

    That is the centre of the spatial axes and, along every other axis, the stretch of the chunk
    holding the centre (the point's series within one chunk), so the bytes it decodes are what an
    extraction decodes per chunk. Without spatial axes it is the centre element."""
    spatial = _spatial_axes(array)
    if not spatial:
        return tuple(s // 2 for s in array.shape)
    selection: list[int | slice] = []
    for axis, (size, chunk) in enumerate(zip(array.shape, array.chunks, strict=True)):
        if axis in spatial:
            selection.append(size // 2)
        else:
            start = size // 2 // chunk * chunk
            selection.append(slice(start, min(start + chunk, size)))
    return tuple(selection)


class _Deadline:
    """The time left of an inspection's ``timeout`` (None: no limit), for each call it makes."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        if self.end is None:
            return None
        left = self.end - time.monotonic()
        if left <= 0:
            raise _core.TimeoutError(f"inspect did not finish within {self.timeout} s")
        return left


_SLICE = 64
"""Arrays listed and point-read together in one step (one progress update)."""


def _measure(
    arrays: Sequence[_core.Array], deadline: _Deadline
) -> list[tuple[int | None, int | None, tuple[int, int, int]]]:
    """Per array: (chunk objects stored, their bytes, (point chunks, bytes read, bytes decoded)).

    The listing runs for all arrays in parallel; the centre points of arrays sharing a layout
    are read in one pass, and each gets the pass's average (they cost the same by layout)."""
    inventory: list[tuple[int | None, int | None]]
    try:
        inventory = list(_core._chunk_inventory(list(arrays), timeout=deadline.remaining()))
    except _core.FastzarrError:
        if not arrays or not arrays[0].url.startswith(("http://", "https://")):
            raise
        # Plain HTTP servers cannot list a store: what is stored stays unknown, not an error.
        inventory = [(None, None)] * len(arrays)
    points: list[tuple[int, int, int]] = [(0, 0, 0)] * len(arrays)
    by_layout: dict[str, list[int]] = {}
    for i, array in enumerate(arrays):
        if array.size:
            by_layout.setdefault(_layout(array), []).append(i)
    for members in by_layout.values():
        _, stats = _core.read_many(
            [(arrays[i], _point(arrays[i])) for i in members], return_stats=True, timeout=deadline.remaining()
        )
        n = len(members)
        average = (
            round(stats.chunks / n),
            round(stats.bytes_read / n),
            round(stats.bytes_decoded / n),
        )
        for i in members:
            points[i] = average
    return [(stored, nbytes, point) for (stored, nbytes), point in zip(inventory, points, strict=True)]


def _describe(
    array: _core.Array, stored: int | None, stored_bytes: int | None, point: tuple[int, int, int]
) -> ArrayInfo:
    """One array's facts from its metadata, its inventory and the measured point read."""
    shape = tuple(array.shape)
    chunks = tuple(array.chunks)
    shards = array.shards
    itemsize = array.dtype.itemsize
    chunk_bytes = math.prod(chunks) * itemsize
    object_shape = tuple(shards) if shards is not None else chunks
    objects_total = _grid_count(shape, object_shape)
    point_chunks, point_read, point_decoded = point
    spatial = _spatial_axes(array)
    series_axes = [i for i in range(array.ndim) if i not in spatial] if spatial else []
    series_chunks = math.prod(-(-shape[i] // chunks[i]) for i in series_axes) if series_axes else 0
    dims = array.dimension_names
    return ArrayInfo(
        name=array.path or os.path.basename(os.fspath(array.url).rstrip("/")),
        shape=shape,
        dtype=str(array.dtype),
        dims=tuple(dims) if dims is not None else None,
        chunks=chunks,
        shards=tuple(shards) if shards is not None else None,
        chunk_bytes=chunk_bytes,
        codecs=array.codecs,
        zarr_format=array.zarr_format,
        fill_value=_plain(array.fill_value),
        objects_total=objects_total,
        objects_stored=stored,
        stored_bytes=stored_bytes,
        decoded_bytes=None if stored is None else stored * math.prod(object_shape) * itemsize,
        point_chunks=point_chunks,
        point_bytes_read=point_read,
        point_bytes_decoded=point_decoded,
        series_dims=tuple(_dim_name(array, i) for i in series_axes),
        series_chunks=series_chunks,
        spatial_dims=tuple(_dim_name(array, i) for i in spatial),
        layout=_layout(array),
    )


def _plain(value: Any) -> Any:
    """A fill value as a JSON-friendly Python value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes | complex):
        return repr(value)
    return value


def _sample_requests(arrays: Sequence[_core.Array], sample: int) -> list[tuple[_core.Array, Any]]:
    """Up to ``sample`` whole-chunk selections spread evenly over the arrays and their chunk grids."""
    per_array = max(1, -(-sample // len(arrays)))
    requests: list[tuple[_core.Array, Any]] = []
    for array in arrays:
        chunks = tuple(array.chunks)
        grid = [-(-s // c) for s, c in zip(array.shape, chunks, strict=True)]
        n = math.prod(grid)
        if n == 0:
            continue
        picks = sorted({int(i) for i in np.linspace(0, n - 1, min(per_array, n))})
        for flat in picks:
            index = np.unravel_index(flat, grid) if grid else ()
            requests.append(
                (array, tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=True)))
            )
    return requests[:sample]


def _throughput(
    layout: str, arrays: Sequence[_core.Array], names: Sequence[str], sample: int, deadline: _Deadline
) -> Throughput:
    """Reads a sample of whole chunks once to warm caches, then on one thread and on all threads."""
    requests = _sample_requests(arrays, sample)
    threads = _core.get_num_threads()
    _, warm = _core.read_many(requests, return_stats=True, timeout=deadline.remaining())
    _core.set_num_threads(1)
    try:
        _, one = _core.read_many(requests, return_stats=True, timeout=deadline.remaining())
    finally:
        _core.set_num_threads(threads)
    _, every = _core.read_many(requests, return_stats=True, timeout=deadline.remaining())
    return Throughput(
        layout=layout,
        arrays=tuple(names),
        chunks=len(requests),
        bytes_stored=warm.bytes_read,
        bytes_decoded=every.bytes_decoded,
        seconds_one=one.wall_seconds,
        seconds_all=every.wall_seconds,
        threads=threads,
    )


def inspect(
    url: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    sample: int = 32,
    progress: bool | None = None,
    timeout: float | None = None,
) -> InspectReport:
    """Describes every array of the store (or the array) at ``url``, measures reads, and advises.

    Args:
        url: a store, group or array path/URL.
        storage_options: passed to `fastzarr.open_group` / `fastzarr.open_array`.
        sample: chunks read per layout (codecs, dtype, chunk shape) to measure decode throughput,
            on one thread and on all threads; 0 skips the measurement.
        progress: a tqdm bar over the arrays; by default shown in a terminal or notebook.
        timeout: seconds for the whole inspection (`fastzarr.TimeoutError`); Ctrl-C stops it too.

    Returns:
        An `InspectReport` (a `fastzarr.Report`): ``print(report)``, display it in Jupyter, or
        ``report.as_dict()`` for JSON.
    """
    if sample < 0:
        raise ValueError(f"sample must be 0 or more, not {sample}")
    stages = Stages("inspect")
    deadline = _Deadline(timeout)
    text_url = os.fspath(url)
    arrays = list(_walk(_open(text_url, storage_options, deadline.remaining())))
    stages.done("metadata", arrays=len(arrays))
    infos: list[ArrayInfo] = []
    with Progress(progress, total=len(arrays), desc="fastzarr inspect", unit="array") as bar:
        for start in range(0, len(arrays), _SLICE):
            part = arrays[start : start + _SLICE]
            measured = _measure(part, deadline)
            infos += [_describe(a, *m) for a, m in zip(part, measured, strict=True)]
            bar.update(
                len(part), nbytes=sum(m[2][2] for m in measured), chunks=sum(m[2][0] for m in measured)
            )
    stages.done("inventory and point reads")
    layouts: dict[str, list[int]] = {}
    for i, info in enumerate(infos):
        if arrays[i].size and not is_coordinate(info):
            layouts.setdefault(info.layout, []).append(i)
    throughput = []
    if sample:
        for layout, members in layouts.items():
            throughput.append(
                _throughput(
                    layout, [arrays[i] for i in members], [infos[i].name for i in members], sample, deadline
                )
            )
    stages.done("throughput", layouts=len(layouts))
    seconds = dict(stages.seconds)
    seconds["total"] = stages.total()
    return InspectReport(
        url=text_url,
        arrays=tuple(infos),
        throughput=tuple(throughput),
        advice=tuple(advise(infos, {t.layout: t for t in throughput})),
        threads=_core.get_num_threads(),
        seconds=seconds,
    )
