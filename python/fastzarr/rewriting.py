"""``fastzarr.rewrite``: re-encode and re-chunk a Zarr store through the verified atomic writer.

The source is opened lazily (dask-backed over its stored chunks, read by fastzarr) and handed to
`fastzarr.writer.write_store`, which computes it a chunk-aligned slab at a time, encodes the chunks
on all cores, verifies them and renames the finished store into place. Nothing here touches the
data itself: this module decides the slab size from ``max_memory``, refuses a budget that cannot
hold one chunk, and reports what was read and written.

Values, coordinates, attributes and the CF encodings users rely on (dtype, ``_FillValue``,
``scale_factor``, ``add_offset``, ``units``, ``calendar``) go through xarray's own decode and
encode, as ``xr.open_zarr(src).to_zarr(dst)`` would: ``xr.open_zarr(dst)`` gives back what
``xr.open_zarr(src)`` gives, with the new chunks and codec.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import xarray as xr

from fastzarr import _core
from fastzarr._encoding import Codec, Variable, encode
from fastzarr._progress import Progress, Stages
from fastzarr._sizes import parse_size
from fastzarr.errors import MemoryBudgetError
from fastzarr.report import Report, format_size, peak_memory_bytes
from fastzarr.writer import DEFAULT_SLAB, ChunkRecord, is_dask, slab_regions, target_path, write_store
from fastzarr.xarray_backend import open_zarr, unconsolidated_quietly

__all__ = ["RewriteReport", "rewrite"]

REWRITE_MODES = ("w-", "w")
"""A rewrite makes a whole store: refuse an existing one, or replace it (no appending)."""

SLAB_SHARE = 4
"""A slab gets a quarter of ``max_memory``: it exists decoded (dask's result), CF-encoded, copied
into a contiguous buffer and compressed at once, and the source chunks being decoded sit beside it."""

_TASKS_PER_SLAB = 8
"""A dask read task gets at most this share of a slab, so that slab boundaries, which may cut
through a task (then read once per slab it touches), waste little."""
_MAX_TASK_BYTES = 64 * 2**20
"""Larger read tasks would leave cores idle at the end of a slab."""

# Encodings that describe the source's layout, not its values: the destination gets its own.
# "fill_value" is v3's storage fill value, which xarray does not read as a mask; written into a
# v2 store it would become one (v2 has a single fill value), so it goes too. Every chunk is written,
# so the storage fill value never shows; the CF _FillValue stays.
_LAYOUT_ENCODINGS = (
    "fill_value",
    "preferred_chunks",
    "compressor",
    "compressors",
    "filters",
    "serializer",
    "shards",
    "write_empty_chunks",
)


@dataclass(frozen=True, repr=False)  # the repr is Report's
class RewriteReport(Report):
    """What one `rewrite` call read and wrote, and how long it took."""

    source: str
    """The source store, as given."""
    destination: str
    """The store written (absolute path)."""
    zarr_format: int
    """The destination's Zarr format."""
    codec: str
    """The destination's codec string."""
    variables: tuple[str, ...]
    """Every array written: data variables and coordinates."""
    chunks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """The destination's chunk shape per array."""
    source_chunks: int = 0
    """Stored chunks of the source arrays rewritten."""
    source_bytes: int = 0
    """Stored bytes of those chunks (each read at least once; a slab that cuts through a source
    chunk reads that chunk again for the next slab)."""
    chunks_written: int = 0
    """Chunks written (and verified) in the destination."""
    bytes_written: int = 0
    """Stored bytes of those chunks."""
    bytes_encoded: int = 0
    """Uncompressed bytes of the arrays written (in their stored dtypes)."""
    slabs: int = 0
    """Regions computed and written one at a time (more than one per array under ``max_memory``)."""
    max_memory: int | None = None
    """The memory budget in bytes (None: the writer's default slabs of 256 MiB)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: open, plan, write (read, encode, verify, rename), total."""
    peak_memory: int = 0
    """Peak resident memory of the process in bytes when the call finished."""

    _title: ClassVar[str] = "fastzarr.RewriteReport"

    def _rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs shared by the text and HTML forms."""
        ratio = self.bytes_encoded / self.bytes_written if self.bytes_written else float("nan")
        budget = "default" if self.max_memory is None else format_size(self.max_memory)
        return [
            ("source", self.source),
            ("destination", self.destination),
            ("format, codec", f"v{self.zarr_format}, {self.codec}"),
            ("arrays", str(len(self.variables))),
            ("source chunks", f"{self.source_chunks} ({format_size(self.source_bytes)} stored)"),
            ("chunks written", f"{self.chunks_written} ({format_size(self.bytes_written)} stored)"),
            ("uncompressed", f"{format_size(self.bytes_encoded)} (ratio {ratio:.2f})"),
            ("slabs", f"{self.slabs} (max_memory {budget})"),
            ("seconds", ", ".join(f"{k} {v:.3f}" for k, v in self.seconds.items())),
            ("peak memory", format_size(self.peak_memory)),
        ]

    def _tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """The destination's chunk shape per array."""
        body = [[name, "x".join(map(str, shape)) or "()"] for name, shape in self.chunks.items()]
        return [("chunks", ["array", "chunk shape"], body)]


def _select(ds: xr.Dataset, variables: str | Iterable[str] | None, src: str) -> xr.Dataset:
    """The data variables asked for, with every coordinate of the source."""
    if variables is None:
        return ds
    wanted = [variables] if isinstance(variables, str) else list(variables)
    unknown = [v for v in wanted if v not in ds.data_vars]
    if unknown:
        raise KeyError(
            f"variables {unknown} are not data variables of {src} (it has {sorted(map(str, ds.data_vars))})"
        )
    return ds.drop_vars([n for n in ds.data_vars if n not in wanted])


def _check_chunks(ds: xr.Dataset, chunks: Mapping[Hashable, int] | None, src: str) -> None:
    if chunks is None:
        return
    for dim, size in chunks.items():
        if dim not in ds.dims:
            raise ValueError(f"chunks names dimension {dim!r}, which {src} lacks (it has {list(ds.dims)})")
        if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
            raise ValueError(f"chunks[{dim!r}] must be a positive int or -1 (whole dimension), not {size!r}")


def _without_layout(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy whose encodings keep the values' encoding (dtype, fill value, scale, units,
    calendar, chunk shape as the default) and drop the source's codecs."""
    ds = ds.copy(deep=False)
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k not in _LAYOUT_ENCODINGS}
    return ds


def _read_chunks(ds: xr.Dataset, target: int) -> dict[Hashable, int]:
    """Dask chunk lengths that read several stored chunks per task (one fastzarr call decodes them
    in parallel, with far less per-task overhead than one task per chunk): multiples of the stored
    chunks, each at most ``target`` bytes, grown from the last dimension so that the writer's
    slabs (split along the leading dimensions) cut through few of them. Dimensions whose stored
    chunk length differs between variables (coordinates read lazily too) keep the stored chunks:
    xarray warns when asked for chunks that split stored ones."""
    stored: dict[Hashable, int | None] = {}
    lazy = [v for v in ds.variables.values() if v.chunks is not None and v.ndim]
    for var in lazy:
        for dim, size in (var.encoding.get("preferred_chunks") or {}).items():
            stored[dim] = size if stored.get(dim, size) == size else None
    if not lazy:
        return {}
    biggest = max(lazy, key=lambda v: v.size * v.dtype.itemsize)
    chunk = {d: stored.get(d) for d in biggest.dims}
    if any(c is None for c in chunk.values()):
        return {}  # variables disagree on this layout: one task per stored chunk
    grown: dict[Hashable, int] = {d: int(c) for d, c in chunk.items() if c is not None}
    for dim in reversed(biggest.dims):
        nbytes = math.prod(grown.values()) * biggest.dtype.itemsize
        times = max(1, target // max(nbytes, 1))
        grown[dim] = min(grown[dim] * times, ds.sizes[dim])
        if grown[dim] < ds.sizes[dim]:
            break
    return {d: n for d, n in grown.items() if n != stored[d]}


def _largest_block(data: Any) -> tuple[int, ...]:
    """The largest dask block's shape: the most a read task decodes at once."""
    return tuple(max(c) if c else 0 for c in data.chunks)


def _check_budget(ds: xr.Dataset, planned: list[Variable], slab_budget: int, budget: int) -> None:
    """Raises MemoryBudgetError where one source or destination chunk alone exceeds a slab."""
    for v in planned:
        if not is_dask(v.data):
            continue  # already in memory (index coordinates)
        source = ds.variables[v.name]
        block = _largest_block(source.data)
        sizes = {
            "source": (block, math.prod(block) * source.dtype.itemsize),
            "destination": (v.chunks, math.prod(v.chunks) * v.dtype.itemsize),
        }
        for which, (shape, nbytes) in sizes.items():
            if nbytes > slab_budget:
                raise MemoryBudgetError(
                    f"max_memory of {budget} bytes is too small to rewrite {v.name!r}: one {which} chunk "
                    f"{shape} holds {nbytes} bytes, and a slab gets 1/{SLAB_SHARE} of max_memory; "
                    f"give at least {nbytes * SLAB_SHARE} bytes or smaller chunks"
                )


def _source_inventory(
    src: str, names: list[str], storage_options: Mapping[str, Any] | None
) -> tuple[int, int]:
    """Stored chunk count and bytes of the source arrays that are rewritten."""
    group = _core.open_group(src, storage_options=dict(storage_options) if storage_options else None)
    arrays = [a for a in (group.get(n) for n in names) if isinstance(a, _core.Array)]
    inventory = _core._chunk_inventory(arrays) if arrays else []
    return sum(c for c, _ in inventory), sum(b for _, b in inventory)


def rewrite(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    codec: str = "blosc:zstd:3:shuffle",
    chunks: Mapping[Hashable, int] | None = None,
    zarr_format: int = 3,
    variables: str | Iterable[str] | None = None,
    max_memory: int | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    timeout: float | None = None,
    mode: str = "w-",
) -> RewriteReport:
    """Re-encodes and re-chunks the Zarr store ``src`` into a new store ``dst``.

    Every variable, coordinate and attribute is kept, with its CF encoding (dtype, ``_FillValue``,
    ``scale_factor``, ``add_offset``, ``units``, ``calendar``): ``xr.open_zarr(dst)`` equals
    ``xr.open_zarr(src)`` in values, coordinates and attributes; only chunks and codecs differ.
    The source is read lazily, slab by slab; the chunks are encoded on all cores and verified, and
    ``dst`` appears only when complete (see `fastzarr.to_zarr`).

    Args:
        src: the store to read (a path or URL; remote with ``storage_options``).
        dst: the local store to create.
        codec: ``"blosc:<cname>:<level>:<shuffle>"``, ``"zstd:<level>"``, ``"gzip:<level>"`` or ``"none"``.
        chunks: dimension name -> chunk length (``-1``: the whole dimension), e.g.
            ``{"step": -1, "lat": 32, "lon": 32}`` for time-series reads; dimensions left out keep
            the source's chunk length.
        zarr_format: 3 (default) or 2.
        variables: the data variables to keep (all by default); coordinates are always kept.
        max_memory: bytes, a size like ``"2GB"`` or ``"2GiB"`` (decimal units are powers of 1000,
            binary ones of 1024) or a percentage of the memory available now like ``"20%"``: the data
            held at once. A slab gets a quarter of it (`SLAB_SHARE`); a budget whose quarter cannot
            hold one source or destination chunk raises `fastzarr.MemoryBudgetError`. By default
            slabs of 256 MiB. Re-chunking across the source's chunks may read a source chunk once
            per slab that cuts through it: a larger budget reads less.
        storage_options: object_store options for a remote ``src``.
        progress: a tqdm bar over the slabs with bytes and chunks per second; by default shown when
            stderr is a terminal or in a notebook (and tqdm is installed).
        timeout: seconds for the whole call (`fastzarr.TimeoutError`).
        mode: ``"w-"`` refuses an existing ``dst``; ``"w"`` replaces an existing Zarr store
            atomically (``dst`` may be ``src`` itself: it is replaced only once fully written).

    Returns:
        A `RewriteReport`: source and destination chunks and bytes, slabs, seconds, peak memory.

    Raises:
        fastzarr.StoreNotFoundError: ``src`` does not exist.
        FileExistsError: ``dst`` exists with ``mode="w-"``, or is not a Zarr store with ``mode="w"``.
        fastzarr.MemoryBudgetError: ``max_memory`` cannot hold one chunk.
        KeyError: a name in ``variables`` is not a data variable of ``src``.
    """
    stages = Stages("rewrite")
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    if mode not in REWRITE_MODES:
        raise ValueError(f"mode must be one of {REWRITE_MODES}, not {mode!r}")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")
    parsed = Codec.parse(codec)
    budget = parse_size(max_memory)
    slab_budget = DEFAULT_SLAB if budget is None else max(budget // SLAB_SHARE, 1)
    target = target_path(dst)
    if mode == "w-" and target.exists():
        raise FileExistsError(f"{target} already exists (mode='w-'); use mode='w' to replace it")
    source = os.fspath(src)

    options = dict(storage_options) if storage_options else None
    with unconsolidated_quietly():  # a source without consolidated metadata is read as it is
        ds = _select(open_zarr(source, chunks={}, storage_options=options), variables, source)
        read_chunks = _read_chunks(ds, min(slab_budget // _TASKS_PER_SLAB, _MAX_TASK_BYTES))
        if read_chunks:
            ds = _select(open_zarr(source, chunks=read_chunks, storage_options=options), variables, source)
    ds = _without_layout(ds)
    _check_chunks(ds, chunks, source)
    stages.done("open")

    # Encoding is lazy for dask-backed data: this plan is what write_store will write.
    planned, _ = encode(ds, zarr_format=zarr_format, codec=parsed, chunks=chunks)
    if budget is not None:
        _check_budget(ds, planned, slab_budget, budget)
    names = [v.name for v in planned]
    source_chunks, source_bytes = _source_inventory(source, names, storage_options)
    total_slabs = sum(
        len(list(slab_regions(v.shape, v.chunks, v.dtype.itemsize, slab_budget))) if is_dask(v.data) else 1
        for v in planned
        if v.data is not None and 0 not in v.shape
    )
    stages.done("plan", slabs=total_slabs)

    slabs = 0
    with Progress(progress, total=total_slabs, desc="fastzarr rewrite", unit="slab") as bar:

        def on_region(v: Variable, region: tuple[slice, ...], written: list[ChunkRecord]) -> None:
            nonlocal slabs
            slabs += 1
            size = math.prod(len(range(*s.indices(n))) for s, n in zip(region, v.shape, strict=True))
            bar.update(1, nbytes=size * v.dtype.itemsize, chunks=len(written))

        records = write_store(
            ds,
            target,
            mode=mode,
            zarr_format=zarr_format,
            codec=parsed,
            chunks=chunks,
            max_memory=slab_budget,
            deadline=deadline,
            on_region=on_region,
        )
    stages.done("write", chunks=len(records))
    stages.seconds["total"] = stages.total()
    return RewriteReport(
        source=source,
        destination=str(target),
        zarr_format=zarr_format,
        codec=codec,
        variables=tuple(names),
        chunks={v.name: v.chunks for v in planned},
        source_chunks=source_chunks,
        source_bytes=source_bytes,
        chunks_written=len(records),
        bytes_written=sum(r[2] for r in records),
        bytes_encoded=sum(v.nbytes for v in planned),
        slabs=slabs,
        max_memory=budget,
        seconds=dict(stages.seconds),
        peak_memory=peak_memory_bytes(),
    )
