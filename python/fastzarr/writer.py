"""``fastzarr.to_zarr``: write an xarray Dataset as a Zarr store, in parallel, verified, atomically.

The dataset is CF-encoded by xarray's own functions (the ones ``Dataset.to_zarr`` uses), so
``xr.open_zarr`` gives back the same values, coordinates, attributes and encodings. The chunks
are encoded on all cores by fastzarr's Rust core (GIL released) and written to a temporary
sibling directory; every chunk's stored size and CRC-32C are kept, the files and directories are
fsynced, every chunk is re-read and checked, and only then is the directory renamed into place
(with ``mode="w"``, atomically exchanged with the store it replaces). A crash or Ctrl-C at any
moment leaves the old store or the new one, never a half-written store at ``url``.

``mode="a"`` appends along a dimension with the same guarantees (see ``fastzarr.appending``).

Dask-backed variables are computed here, a chunk-aligned slab at a time under ``max_memory``:
never written as references.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import xarray as xr

from fastzarr import _core, _gc
from fastzarr._atomic import publish, remove_leftovers, temp_store
from fastzarr._encoding import Codec, Variable, encode
from fastzarr._sizes import parse_size

__all__ = [
    "ChunkRecord",
    "Codec",
    "Region",
    "RegionCallback",
    "WriteResult",
    "to_zarr",
    "write_passes",
    "write_store",
]

ChunkRecord = tuple[str, str, int, int]
"""``(array path, chunk key, stored size, CRC-32C)`` of one stored chunk."""

MODES = ("w-", "w", "a")
_DATAARRAY_NAME = "__xarray_dataarray_variable__"  # what xarray's DataArray.to_zarr uses
DEFAULT_SLAB = 256 * 2**20


@dataclass
class WriteResult:
    """What :func:`to_zarr` wrote: the store, every chunk's record, and how long it took."""

    path: Path
    chunks: list[ChunkRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        """Stored bytes of all chunks."""
        return sum(r[2] for r in self.chunks)


# --------------------------------------------------------------------------------------------
# data


def is_dask(data: Any) -> bool:
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(data, dask_array.Array)


def slab_regions(
    shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, budget: int
) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned regions covering ``shape``, each within ``budget`` bytes where a chunk allows."""

    def rec(axis: int, prefix: tuple[slice, ...]) -> Iterator[tuple[slice, ...]]:
        if axis == len(shape):
            yield prefix
            return
        rest = math.prod(shape[axis + 1 :]) * itemsize
        step_bytes = chunks[axis] * rest
        if step_bytes <= budget or axis == len(shape) - 1:
            steps = max(1, budget // max(step_bytes, 1))
            size = steps * chunks[axis]
            for start in range(0, max(shape[axis], 1), size):
                yield (
                    *prefix,
                    slice(start, min(start + size, shape[axis])),
                    *(slice(None),) * (len(shape) - axis - 1),
                )
            return
        for start in range(0, shape[axis], chunks[axis]):
            yield from rec(axis + 1, (*prefix, slice(start, min(start + chunks[axis], shape[axis]))))

    if not shape:
        yield ()
        return
    if 0 in shape:
        return
    yield from rec(0, ())


def materialize(data: Any, region: tuple[slice, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """One region of a variable's data as a C-contiguous numpy array of ``dtype`` (native order)."""
    part = data[region] if region else data
    if is_dask(part):
        part = part.compute()
    values = np.asarray(part)
    if values.dtype.kind in "OT" or (values.dtype.kind == "S" and dtype.kind == "U"):
        values = values.astype(dtype)
    # ascontiguousarray makes 0-d arrays 1-d: put the shape back
    return np.ascontiguousarray(values, dtype=dtype).reshape(values.shape)


def _region_start(region: tuple[slice, ...], shape: tuple[int, ...]) -> list[int]:
    return [s.indices(n)[0] for s, n in zip(region, shape, strict=True)]


RegionCallback = Callable[[Variable, tuple[slice, ...], list[ChunkRecord]], None]
"""Called for each region once its pass is written: the variable, the region, its chunks."""


Region = tuple[str, str, npt.NDArray[Any], list[int]]
"""One region for the core to write: ``(array path, metadata JSON, values, start)``."""

Tag = TypeVar("Tag")


def _time_left(deadline: float | None) -> float | None:
    """The core's timeout for a step of a write due by ``deadline`` (None: none); at least a
    millisecond, so that a step begun just past the deadline still fails as a timeout."""
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)


def write_passes(
    store: Path,
    regions: Iterable[tuple[Tag, Region]],
    *,
    budget: int,
    fsync: bool,
    deadline: float | None,
) -> Iterator[tuple[Tag, list[ChunkRecord]]]:
    """Writes ``regions`` (each with a caller's tag) in as few passes of the core as ``budget``
    allows: regions are gathered until their values hold ``budget`` bytes, then encoded and
    written together in one parallel pass (each array's metadata parsed once). A store of
    thousands of small variables is one pass, not one per variable. Yields each region's tag
    and chunk records once its pass is written."""
    pending: list[tuple[Tag, Region]] = []
    held = 0

    def write_pending() -> list[tuple[Tag, list[ChunkRecord]]]:
        written = _core._write_regions(
            store, [r for _, r in pending], fsync=fsync, timeout=_time_left(deadline)
        )
        return [(tag, records) for (tag, _), records in zip(pending, written, strict=True)]

    for tag, region in regions:
        if pending and held + region[2].nbytes > budget:
            yield from write_pending()
            pending, held = [], 0
        pending.append((tag, region))
        held += region[2].nbytes
    if pending:
        yield from write_pending()


def _write_data(
    tmp: Path,
    variables: list[Variable],
    *,
    budget: int,
    fsync: bool,
    deadline: float | None,
    on_region: RegionCallback | None = None,
) -> list[ChunkRecord]:
    """Writes every variable's chunks (numpy data whole, other data in chunk-aligned slabs)."""

    def regions() -> Iterator[tuple[tuple[Variable, tuple[slice, ...]], Region]]:
        for v in variables:
            if v.data is None or 0 in v.shape:
                continue
            in_memory = isinstance(v.data, np.ndarray)
            limit = max(budget, v.nbytes) if in_memory else budget
            for region in slab_regions(v.shape, v.chunks, v.dtype.itemsize, limit):
                values = materialize(v.data, region, v.dtype)
                start = _region_start(region, v.shape) if region else []
                yield (v, region), (v.name, v.rust_metadata, values, start)

    records: list[ChunkRecord] = []
    for (v, region), written in write_passes(tmp, regions(), budget=budget, fsync=fsync, deadline=deadline):
        records += written
        if on_region is not None:
            on_region(v, region, written)
    return records


def verify_and_sync(tmp: Path, records: list[ChunkRecord], *, fsync: bool, deadline: float | None) -> None:
    """Re-reads and checks every chunk of ``records`` below ``tmp`` (`_core._verify_chunks`) while,
    with ``fsync``, the tree is made durable (`_core._sync_dirs`) on another thread: the sync
    mostly waits on the disk and the check reads the page cache, so side by side they take
    about the longer of the two, not their sum."""
    remaining = _time_left(deadline)
    if not fsync:
        _core._verify_chunks(tmp, records, timeout=remaining)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastzarr-sync") as pool:
        synced = pool.submit(_core._sync_dirs, tmp)
        _core._verify_chunks(tmp, records, timeout=remaining)
        synced.result()


# --------------------------------------------------------------------------------------------
# files, renames


def _document(value: Any) -> bytes:
    """A metadata document, compact: an indented one goes through json's pure-Python encoder,
    about a millisecond per array."""
    return json.dumps(value, allow_nan=False).encode()


def _write_metadata(
    tmp: Path,
    variables: list[Variable],
    attrs: dict[str, Any],
    *,
    zarr_format: int,
    consolidated: bool,
    fsync: bool,
    deadline: float | None,
) -> None:
    """Writes the group's and every array's metadata documents in one parallel pass of the core
    (made durable, with the chunks, by `write_store`'s one sync of the whole tree)."""
    documents: dict[str, Any] = {}
    if zarr_format == 3:
        for v in variables:
            documents[f"{v.name}/zarr.json"] = v.metadata
        group: dict[str, Any] = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
        if consolidated:
            group["consolidated_metadata"] = {
                "kind": "inline",
                "must_understand": False,
                "metadata": {v.name: v.metadata for v in variables},
            }
        documents["zarr.json"] = group
    else:
        meta: dict[str, Any] = {".zgroup": {"zarr_format": 2}, ".zattrs": attrs}
        for v in variables:
            zattrs = {**v.attrs, "_ARRAY_DIMENSIONS": list(v.dims)}
            documents[f"{v.name}/.zarray"] = v.metadata
            documents[f"{v.name}/.zattrs"] = zattrs
            meta[f"{v.name}/.zarray"] = v.metadata
            meta[f"{v.name}/.zattrs"] = zattrs
        documents[".zgroup"] = {"zarr_format": 2}
        documents[".zattrs"] = attrs
        if consolidated:
            documents[".zmetadata"] = {"zarr_consolidated_format": 1, "metadata": meta}
    with _gc.paused():
        files = [(key, _document(value)) for key, value in documents.items()]
    _core._write_files(tmp, files, fsync=fsync, timeout=_time_left(deadline))


def target_path(url: str | os.PathLike[str]) -> Path:
    text = os.fspath(url)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme != "file":
            raise ValueError(f"fastzarr.to_zarr writes local stores only, not {text!r}")
        text = rest
    return Path(text).absolute()


def _as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        if obj.name is None:
            return obj.to_dataset(name=_DATAARRAY_NAME)
        return obj.to_dataset()
    raise TypeError(f"to_zarr takes an xarray Dataset or DataArray, not {type(obj).__name__}")


def to_zarr(
    obj: xr.Dataset | xr.DataArray,
    url: str | os.PathLike[str],
    *,
    mode: str = "w-",
    zarr_format: int = 3,
    codec: str = "blosc:zstd:3:shuffle",
    chunks: Mapping[Hashable, int] | int | None = None,
    consolidated: bool = True,
    fsync: bool = True,
    max_memory: int | str = DEFAULT_SLAB,
    timeout: float | None = None,
    append_dim: str | None = None,
) -> WriteResult:
    """Writes ``obj`` as a Zarr store at ``url``: parallel, verified, atomic.

    Args:
        obj: a Dataset or DataArray, numpy- or dask-backed (dask is computed here in chunk-aligned
            slabs of at most ``max_memory`` bytes; lazily indexed data is read slab by slab too).
        url: a local path (or ``file://`` URL) of the store to create.
        mode: ``"w-"`` creates and fails if ``url`` exists; ``"w"`` replaces an existing Zarr store
            (atomically); ``"a"`` appends along ``append_dim`` to an existing store (v2 or v3,
            written by fastzarr, xarray or zarr-python; created as with ``"w-"`` if absent). An
            append is checked against the store before anything is written (`fastzarr.AppendError`
            names the variable and what differs; `fastzarr.DuplicateError` names labels along
            ``append_dim`` already stored or repeated), encoded with the store's own codecs, chunks
            and CF encodings (``zarr_format``, ``codec`` and ``chunks`` are then not used),
            verified, and published atomically: the store opens as before or as after the append.
        zarr_format: 3 (default) or 2.
        codec: ``"blosc:<cname>:<level>:<shuffle>"``, ``"zstd:<level>"``, ``"gzip:<level>"`` or ``"none"``.
        chunks: chunk length per dimension (``-1`` for the whole dimension) or one int for all;
            by default a variable's ``encoding["chunks"]``, its uniform dask chunks, or ~4 MB chunks.
        consolidated: also write consolidated metadata.
        fsync: flush every file and directory to disk before the store is renamed into place.
        max_memory: data materialized at a time for dask-backed or lazy variables: bytes, a size
            like ``"256MB"`` or ``"256 MiB"`` or a percentage of the memory available now.
        timeout: seconds for the whole write (`fastzarr.TimeoutError`); Ctrl-C stops it too.
        append_dim: the dimension to append along; required with ``mode="a"``.

    Returns:
        A `WriteResult`: the store's path and every chunk's ``(array, key, size, crc32c)``.

    Raises:
        FileExistsError: ``url`` exists with ``mode="w-"``, or is not a Zarr store with ``mode="w"``.
        fastzarr.CorruptChunkError: the written chunks did not read back as written.
        fastzarr.AppendError: with ``mode="a"``, the data does not match the store (nothing written).
        fastzarr.DuplicateError: with ``mode="a"``, labels along ``append_dim`` are already stored
            or repeated (nothing written).
    """
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if (mode == "a") != (append_dim is not None):
        raise ValueError("append_dim is required with mode='a' and used only with it")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")
    budget = parse_size(max_memory) or DEFAULT_SLAB
    parsed = Codec.parse(codec)
    ds = _as_dataset(obj)
    target = target_path(url)
    if mode == "w-" and target.exists():
        raise FileExistsError(f"{target} already exists (mode='w-'); use mode='w' to replace it")
    if mode == "a" and append_dim is not None and target.exists():
        from fastzarr.appending import append_store  # noqa: PLC0415 (needs the xarray backend)

        records = append_store(
            ds, target, append_dim=append_dim, fsync=fsync, max_memory=budget, deadline=deadline
        )
        return WriteResult(target, records, time.perf_counter() - start)
    records = write_store(
        ds,
        target,
        mode="w-" if mode == "a" else mode,
        zarr_format=zarr_format,
        codec=parsed,
        chunks=chunks,
        consolidated=consolidated,
        fsync=fsync,
        max_memory=budget,
        deadline=deadline,
    )
    return WriteResult(target, records, time.perf_counter() - start)


def write_store(
    ds: xr.Dataset,
    target: Path,
    *,
    mode: str,
    zarr_format: int = 3,
    codec: Codec,
    chunks: Mapping[Hashable, int] | int | None = None,
    consolidated: bool = True,
    fsync: bool = True,
    max_memory: int = DEFAULT_SLAB,
    deadline: float | None = None,
    before_publish: Callable[[Path, list[ChunkRecord]], None] | None = None,
    on_region: RegionCallback | None = None,
) -> list[ChunkRecord]:
    """The body of :func:`to_zarr` for a Dataset and a local target; ``before_publish(tmp, records)``
    may add files to the verified store before it is renamed into place (the cache's manifest);
    ``on_region(variable, region, records)`` follows the writing (``fastzarr.rewrite``'s progress)."""
    with _gc.paused():
        variables, attrs = encode(ds, zarr_format=zarr_format, codec=codec, chunks=chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    with temp_store(target) as tmp:
        try:
            # The documents need nothing of the chunks: they are written on another thread
            # while the core's pass encodes the chunks (which leaves the GIL to it).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastzarr-metadata") as pool:
                documents = pool.submit(
                    _write_metadata,
                    tmp,
                    variables,
                    attrs,
                    zarr_format=zarr_format,
                    consolidated=consolidated,
                    fsync=fsync,
                    deadline=deadline,
                )
                records = _write_data(
                    tmp, variables, budget=max_memory, fsync=fsync, deadline=deadline, on_region=on_region
                )
                documents.result()
            if before_publish is not None:
                before_publish(tmp, records)
            verify_and_sync(tmp, records, fsync=fsync, deadline=deadline)
            publish(tmp, target, mode, fsync)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return records
