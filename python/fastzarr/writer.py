"""``fastzarr.to_zarr``: write an xarray Dataset as a Zarr store, in parallel, verified, atomically.

The dataset is CF-encoded by xarray's own functions (the ones ``Dataset.to_zarr`` uses), so
``xr.open_zarr`` gives back the same values, coordinates, attributes and encodings. The chunks
are encoded on all cores by fastzarr's Rust core (GIL released) and written to a temporary
sibling directory; every chunk's stored size and CRC-32C are kept, the files and directories are
fsynced, every chunk is re-read and checked, and only then is the directory renamed into place
(with ``mode="w"``, atomically exchanged with the store it replaces). A crash or Ctrl-C at any
moment leaves the old store or the new one, never a half-written store at ``url``.

Dask-backed variables are computed here, a chunk-aligned slab at a time under ``max_memory``:
never written as references.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import xarray as xr
from xarray import conventions
from xarray.backends.zarr import FillValueCoder, encode_zarr_attr_value, encode_zarr_variable

from fastzarr import _core

__all__ = ["ChunkRecord", "Codec", "WriteResult", "to_zarr", "write_store"]

ChunkRecord = tuple[str, str, int, int]
"""``(array path, chunk key, stored size, CRC-32C)`` of one stored chunk."""

MODES = ("w-", "w")
_DATAARRAY_NAME = "__xarray_dataarray_variable__"  # what xarray's DataArray.to_zarr uses
_SHUFFLES = {
    "noshuffle": "noshuffle",
    "shuffle": "shuffle",
    "byteshuffle": "shuffle",
    "bitshuffle": "bitshuffle",
}
_V2_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_DEFAULT_SLAB = 256 * 2**20
_AUTO_CHUNK_BYTES = 4 * 2**20
_STORE_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


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
# codecs and metadata


@dataclass(frozen=True)
class Codec:
    """A parsed codec string: ``"blosc:zstd:3:shuffle"``, ``"zstd:3"``, ``"gzip:5"`` or ``"none"``."""

    name: str
    cname: str = "zstd"
    level: int = 3
    shuffle: str = "shuffle"

    @classmethod
    def parse(cls, text: str) -> Codec:
        name, *args = text.split(":")
        try:
            if name == "none" and not args:
                return cls("none")
            if name == "blosc" and len(args) <= 3:
                shuffle = _SHUFFLES[args[2]] if len(args) > 2 else "shuffle"
                return cls(
                    "blosc", args[0] if args else "zstd", int(args[1]) if len(args) > 1 else 5, shuffle
                )
            if name in ("zstd", "gzip") and len(args) <= 1:
                return cls(name, level=int(args[0]) if args else (3 if name == "zstd" else 5))
        except (KeyError, ValueError):
            pass
        raise ValueError(
            f"codec must look like 'blosc:zstd:3:shuffle', 'zstd:3', 'gzip:5' or 'none', not {text!r}"
        )

    def v3(self, dtype: np.dtype[Any]) -> list[dict[str, Any]]:
        """The v3 codec list (bytes codec first) for arrays of ``dtype``."""
        serializer: dict[str, Any] = {"name": "bytes"}
        if dtype.itemsize > 1 or dtype.kind == "U":
            serializer["configuration"] = {"endian": "little"}
        if self.name == "none":
            return [serializer]
        if self.name == "blosc":
            config = {
                "cname": self.cname,
                "clevel": self.level,
                "shuffle": self.shuffle,
                "typesize": dtype.itemsize,
                "blocksize": 0,
            }
            return [serializer, {"name": "blosc", "configuration": config}]
        if self.name == "zstd":
            return [serializer, {"name": "zstd", "configuration": {"level": self.level, "checksum": False}}]
        return [serializer, {"name": "gzip", "configuration": {"level": self.level}}]

    def v2(self) -> dict[str, Any] | None:
        """The v2 ``compressor``."""
        if self.name == "none":
            return None
        if self.name == "blosc":
            return {
                "id": "blosc",
                "cname": self.cname,
                "clevel": self.level,
                "shuffle": _V2_SHUFFLES[self.shuffle],
                "blocksize": 0,
            }
        return {"id": self.name, "level": self.level}


def _json_float(value: Any) -> Any:
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


_JSON_SCALARS: dict[str, Callable[[Any], Any]] = {"b": bool, "i": int, "u": int, "U": str, "f": _json_float}


def _json_fill(value: Any, dtype: np.dtype[Any], zarr_format: int) -> Any:
    """A fill value as Zarr metadata JSON spells it (the same in both formats for these types)."""
    del zarr_format
    if dtype.kind == "c":
        return [_json_float(np.real(value)), _json_float(np.imag(value))]
    if dtype.kind not in _JSON_SCALARS:
        raise TypeError(f"no fill value for dtype {dtype}")
    return _JSON_SCALARS[dtype.kind](value)


def _v3_data_type(dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "U":
        return {"name": "fixed_length_utf32", "configuration": {"length_bytes": dtype.itemsize}}
    names = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex"}
    if dtype.kind not in names:
        raise TypeError(f"dtype {dtype} cannot be written")
    return "bool" if dtype.kind == "b" else f"{names[dtype.kind]}{dtype.itemsize * 8}"


def _v2_dtype(dtype: np.dtype[Any]) -> str:
    if dtype.itemsize == 1 and dtype.kind != "U":
        return "|" + dtype.str[1:]
    return "<" + dtype.str[1:]


@dataclass
class _Variable:
    """One encoded variable, ready to write."""

    name: str
    data: Any  # numpy, dask, or a lazy xarray array
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    chunks: tuple[int, ...]
    attrs: dict[str, Any]
    fill_value: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    rust_metadata: str = ""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _attr_value(value: Any) -> Any:
    """An attribute value as JSON (numpy arrays and scalars become lists and numbers), as xarray does."""
    return encode_zarr_attr_value(value)  # type: ignore[no-untyped-call]


def _auto_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of at most ~4 MB: the whole array if it fits, else leading axes halved."""
    chunks = [max(n, 1) for n in shape]
    axis = 0
    while math.prod(chunks) * itemsize > _AUTO_CHUNK_BYTES and any(c > 1 for c in chunks):
        if chunks[axis] > 1:
            chunks[axis] = math.ceil(chunks[axis] / 2)
        axis = (axis + 1) % len(chunks)
        if all(c == 1 for c in chunks[:axis]) and chunks[axis] == 1:
            axis = next(i for i, c in enumerate(chunks) if c > 1)
    return tuple(chunks)


def _chunks_for(
    var: xr.Variable, chunks: Mapping[Hashable, int] | int | None, encoded: Mapping[str, Any]
) -> tuple[int, ...]:
    """The chunk shape: ``chunks`` (per dim, or one int for all), the variable's encoding, its
    uniform dask chunks, or an automatic choice."""
    if var.ndim == 0:
        return ()
    itemsize = var.dtype.itemsize
    if chunks is not None:
        if isinstance(chunks, int):
            asked = dict.fromkeys(var.dims, chunks)
        else:
            asked = {d: chunks[d] for d in var.dims if d in chunks}
        base = _chunks_for(var, None, encoded) if len(asked) < var.ndim else var.shape
        return tuple(
            max(1, min(int(asked.get(d, c)), max(n, 1))) if asked.get(d, c) != -1 else max(n, 1)
            for d, c, n in zip(var.dims, base, var.shape, strict=True)
        )
    enc = encoded.get("chunks")
    if isinstance(enc, tuple | list) and len(enc) == var.ndim and all(isinstance(c, int) for c in enc):
        return tuple(max(1, min(int(c), max(n, 1))) for c, n in zip(enc, var.shape, strict=True))
    if var.chunks is not None:
        first = tuple(int(c[0]) if c else 1 for c in var.chunks)
        uniform = all(all(x == c[0] for x in c[:-1]) and (not c or c[-1] <= c[0]) for c in var.chunks)
        if uniform:
            return tuple(max(1, f) for f in first)
    return _auto_chunks(var.shape, itemsize)


def _to_fixed_size(var: xr.Variable, name: str) -> xr.Variable:
    """Variable-length strings become fixed-width unicode (fastzarr writes fixed-size types)."""
    kind = var.dtype.kind
    if kind in "OT":
        values = np.asarray(var.values)
        try:
            fixed = values.astype(str) if values.size else values.astype("U1")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"variable {name!r} has dtype {var.dtype}, which fastzarr cannot write") from exc
        return xr.Variable(var.dims, fixed, var.attrs, var.encoding)
    if kind == "S":
        return xr.Variable(var.dims, np.char.decode(np.asarray(var.values), "utf-8"), var.attrs, var.encoding)
    if kind not in "biufcU":
        raise TypeError(f"variable {name!r} has dtype {var.dtype}, which fastzarr cannot write")
    return var


def _encode(
    ds: xr.Dataset, *, zarr_format: int, codec: Codec, chunks: Mapping[Hashable, int] | int | None
) -> tuple[list[_Variable], dict[str, Any]]:
    """CF-encodes ``ds`` the way ``Dataset.to_zarr`` does and builds every array's metadata."""
    variables, attrs = conventions.encode_dataset_coordinates(ds)
    out = []
    for name, original in variables.items():
        if not isinstance(name, str):
            raise TypeError(f"variable names must be strings, not {name!r}")
        var = encode_zarr_variable(original, name=name, zarr_format=cast(Literal[2, 3], zarr_format))
        var = _to_fixed_size(var, name)
        dtype = var.dtype.newbyteorder("=") if var.dtype.itemsize > 1 else var.dtype
        var_attrs = {k: _attr_value(v) for k, v in var.attrs.items()}
        fill_value: Any = var.encoding.get("fill_value")
        if "_FillValue" in var_attrs:
            fv = var_attrs.pop("_FillValue")
            if fv is not None:
                if zarr_format == 2:
                    fill_value = fv
                else:
                    var_attrs["_FillValue"] = FillValueCoder.encode(fv, dtype)
        if fill_value is None and zarr_format == 3:
            # xarray's defaults: NaN for floats (pydata/xarray#10646), else Zarr's zero values
            fill_value = np.nan if dtype.kind == "f" else {"b": False, "U": ""}.get(dtype.kind, 0)
        out.append(
            _Variable(
                name=name,
                data=var.data,
                dtype=dtype,
                shape=tuple(var.shape),
                dims=tuple(str(d) for d in var.dims),
                chunks=_chunks_for(var, chunks, original.encoding),
                attrs=var_attrs,
                fill_value=fill_value,
            )
        )
    for v in out:
        _build_metadata(v, zarr_format, codec)
    group_attrs = {str(k): _attr_value(v) for k, v in attrs.items()}
    return out, group_attrs


def _build_metadata(v: _Variable, zarr_format: int, codec: Codec) -> None:
    """Fills in ``v.metadata`` (what goes in the store) and ``v.rust_metadata`` (what the encoder reads)."""
    chunks = list(v.chunks) if v.shape else []
    shape = list(v.shape)
    # A zero-length axis still needs a non-zero chunk length.
    chunks = [max(1, c) for c in chunks]
    if zarr_format == 3:
        v.metadata = {
            "shape": shape,
            "data_type": _v3_data_type(v.dtype),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": _json_fill(v.fill_value, v.dtype, 3),
            "codecs": codec.v3(v.dtype),
            "attributes": v.attrs,
            "dimension_names": list(v.dims),
            "zarr_format": 3,
            "node_type": "array",
            "storage_transformers": [],
        }
        v.rust_metadata = json.dumps(v.metadata, allow_nan=False)
    else:
        v.metadata = {
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": _v2_dtype(v.dtype),
            "compressor": codec.v2(),
            "fill_value": None if v.fill_value is None else _json_fill(v.fill_value, v.dtype, 2),
            "order": "C",
            "filters": None,
            "dimension_separator": ".",
        }
        # The encoder pads edge chunks with the fill value; a null one pads with zeros.
        padding = v.metadata["fill_value"]
        if padding is None:
            padding = _json_fill(np.zeros((), v.dtype)[()], v.dtype, 2)
        v.rust_metadata = json.dumps({**v.metadata, "fill_value": padding}, allow_nan=False)


# --------------------------------------------------------------------------------------------
# data


def _is_dask(data: Any) -> bool:
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(data, dask_array.Array)


def _slabs(
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


def _materialize(data: Any, region: tuple[slice, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """One region of a variable's data as a C-contiguous numpy array of ``dtype`` (native order)."""
    part = data[region] if region else data
    if _is_dask(part):
        part = part.compute()
    values = np.asarray(part)
    if values.dtype.kind in "OT" or (values.dtype.kind == "S" and dtype.kind == "U"):
        values = values.astype(dtype)
    # ascontiguousarray makes 0-d arrays 1-d: put the shape back
    return np.ascontiguousarray(values, dtype=dtype).reshape(values.shape)


def _region_start(region: tuple[slice, ...], shape: tuple[int, ...]) -> list[int]:
    return [s.indices(n)[0] for s, n in zip(region, shape, strict=True)]


def _write_data(
    tmp: Path, variables: list[_Variable], *, budget: int, fsync: bool, deadline: float | None
) -> list[ChunkRecord]:
    """Writes every variable's chunks; numpy data in one go, other data in slabs."""
    records: list[ChunkRecord] = []
    for v in variables:
        if v.data is None or 0 in v.shape:
            continue
        in_memory = isinstance(v.data, np.ndarray)
        limit = max(budget, v.nbytes) if in_memory else budget
        for region in _slabs(v.shape, v.chunks, v.dtype.itemsize, limit):
            values = _materialize(v.data, region, v.dtype)
            remaining = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
            start = _region_start(region, v.shape) if region else []
            records += _core._write_region(
                tmp, v.name, v.rust_metadata, values, start, fsync=fsync, timeout=remaining
            )
    return records


# --------------------------------------------------------------------------------------------
# files, renames


def _write_json(path: Path, value: Any, fsync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2, allow_nan=False)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def _write_metadata(
    tmp: Path,
    variables: list[_Variable],
    attrs: dict[str, Any],
    *,
    zarr_format: int,
    consolidated: bool,
    fsync: bool,
) -> None:
    if zarr_format == 3:
        for v in variables:
            _write_json(tmp / v.name / "zarr.json", v.metadata, fsync)
        group: dict[str, Any] = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
        if consolidated:
            group["consolidated_metadata"] = {
                "kind": "inline",
                "must_understand": False,
                "metadata": {v.name: v.metadata for v in variables},
            }
        _write_json(tmp / "zarr.json", group, fsync)
        return
    meta: dict[str, Any] = {".zgroup": {"zarr_format": 2}, ".zattrs": attrs}
    for v in variables:
        zattrs = {**v.attrs, "_ARRAY_DIMENSIONS": list(v.dims)}
        _write_json(tmp / v.name / ".zarray", v.metadata, fsync)
        _write_json(tmp / v.name / ".zattrs", zattrs, fsync)
        meta[f"{v.name}/.zarray"] = v.metadata
        meta[f"{v.name}/.zattrs"] = zattrs
    _write_json(tmp / ".zgroup", {"zarr_format": 2}, fsync)
    _write_json(tmp / ".zattrs", attrs, fsync)
    if consolidated:
        _write_json(tmp / ".zmetadata", {"zarr_consolidated_format": 1, "metadata": meta}, fsync)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.fastzarr-{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _remove_leftovers(target: Path) -> None:
    """Deletes temporary siblings of ``target`` left by writers that died (their pid is gone)."""
    prefix = f".{target.name}.fastzarr-"
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(target.parent):
            if not entry.name.startswith(prefix):
                continue
            parts = entry.name[len(prefix) :].split("-")
            if len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
                shutil.rmtree(entry.path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process already has libc loaded
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def _is_store_or_empty(path: Path) -> bool:
    return not any(path.iterdir()) or any((path / m).exists() for m in _STORE_MARKERS)


def _publish(tmp: Path, target: Path, mode: str) -> None:
    """Moves the finished ``tmp`` to ``target``: a plain rename, or an exchange with the old store."""
    if not target.exists():
        try:
            os.rename(tmp, target)
        except OSError:
            if mode == "w-" or not target.exists():
                raise
        else:
            _fsync_dir(target.parent)
            return
    if mode == "w-":
        raise FileExistsError(f"{target} already exists (mode='w-'); use mode='w' to replace it")
    if not target.is_dir() or not _is_store_or_empty(target):
        raise FileExistsError(f"{target} exists and is not a Zarr store: refusing to replace it")
    if _exchange(tmp, target):
        old = tmp  # after the exchange, tmp's name holds the old store
    else:
        old = _sibling(target, "old")
        os.rename(target, old)
        os.rename(tmp, target)
    _fsync_dir(target.parent)
    _discard(old)


def _discard(path: Path) -> None:
    """Deletes a replaced store in a background thread: on some filesystems every ``rmdir`` costs
    milliseconds, and the new store is already in place. If the process ends first, the leftover
    is removed by the next write next to it (its writer's pid is gone)."""
    threading.Thread(target=shutil.rmtree, args=(path, True), name="fastzarr-discard").start()


def _target_path(url: str | os.PathLike[str]) -> Path:
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
    max_memory: int = _DEFAULT_SLAB,
    timeout: float | None = None,
) -> WriteResult:
    """Writes ``obj`` as a Zarr store at ``url``: parallel, verified, atomic.

    Args:
        obj: a Dataset or DataArray, numpy- or dask-backed (dask is computed here in chunk-aligned
            slabs of at most ``max_memory`` bytes; lazily indexed data is read slab by slab too).
        url: a local path (or ``file://`` URL) of the store to create.
        mode: ``"w-"`` creates and fails if ``url`` exists; ``"w"`` replaces an existing Zarr store
            (atomically). Appending (``"a"``) is not supported yet.
        zarr_format: 3 (default) or 2.
        codec: ``"blosc:<cname>:<level>:<shuffle>"``, ``"zstd:<level>"``, ``"gzip:<level>"`` or ``"none"``.
        chunks: chunk length per dimension (``-1`` for the whole dimension) or one int for all;
            by default a variable's ``encoding["chunks"]``, its uniform dask chunks, or ~4 MB chunks.
        consolidated: also write consolidated metadata.
        fsync: flush every file and directory to disk before the store is renamed into place.
        max_memory: bytes of data materialized at a time for dask-backed or lazy variables.
        timeout: seconds for the whole write (`fastzarr.TimeoutError`); Ctrl-C stops it too.

    Returns:
        A `WriteResult`: the store's path and every chunk's ``(array, key, size, crc32c)``.

    Raises:
        FileExistsError: ``url`` exists with ``mode="w-"``, or is not a Zarr store with ``mode="w"``.
        fastzarr.CorruptChunkError: the written chunks did not read back as written.
    """
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (appending is not supported yet), not {mode!r}")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")
    if max_memory <= 0:
        raise ValueError(f"max_memory must be positive, not {max_memory!r}")
    parsed = Codec.parse(codec)
    ds = _as_dataset(obj)
    target = _target_path(url)
    if mode == "w-" and target.exists():
        raise FileExistsError(f"{target} already exists (mode='w-'); use mode='w' to replace it")
    records = write_store(
        ds,
        target,
        mode=mode,
        zarr_format=zarr_format,
        codec=parsed,
        chunks=chunks,
        consolidated=consolidated,
        fsync=fsync,
        max_memory=max_memory,
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
    max_memory: int = _DEFAULT_SLAB,
    deadline: float | None = None,
    before_publish: Callable[[Path, list[ChunkRecord]], None] | None = None,
) -> list[ChunkRecord]:
    """The body of :func:`to_zarr` for a Dataset and a local target; ``before_publish(tmp, records)``
    may add files to the verified store before it is renamed into place (the cache's manifest)."""
    variables, attrs = _encode(ds, zarr_format=zarr_format, codec=codec, chunks=chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    tmp = _sibling(target, "tmp")
    tmp.mkdir()
    try:
        records = _write_data(tmp, variables, budget=max_memory, fsync=fsync, deadline=deadline)
        _write_metadata(
            tmp, variables, attrs, zarr_format=zarr_format, consolidated=consolidated, fsync=fsync
        )
        remaining = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
        _core._verify_chunks(tmp, records, timeout=remaining)
        if before_publish is not None:
            before_publish(tmp, records)
        if fsync:
            _core._sync_dirs(tmp)
        _publish(tmp, target, mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return records
