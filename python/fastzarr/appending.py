"""``fastzarr.to_zarr(..., mode="a", append_dim=...)``: append along a dimension, atomically.

A Zarr store has no transaction, so an append is made one by copying: the store is mirrored
into a temporary sibling with hard links (no chunk data is copied), the chunks along
``append_dim`` that change (the partially filled last chunk, rewritten with the old values plus
the new ones, and the new chunks) are encoded in parallel into a scratch directory, moved over
their links in the mirror (a rename replaces the link, never the old store's file), the metadata
files are rewritten with the longer shape (unlinked first, for the same reason), every new
chunk is re-read and checked, and the mirror is exchanged with the store. A crash or Ctrl-C at
any moment leaves the old store or the new one at ``url``.

Nothing is written before the new data has been checked against the store: the same variables
with the same dimensions and dtypes, equal coordinates and variables along the other
dimensions, equal attributes, no conflicting encodings, no label along ``append_dim`` that is
already stored or repeated. The appended values are CF-encoded with the store's own encodings
(time units, scale factors, fill values), as ``xr.Dataset.to_zarr(mode="a")`` does.

Appends to one store take turns on a lock file beside it (``.<name>.fastzarr-append.lock``): a
second appender waits, then plans again on the store the first one left, so concurrent appends
neither lose nor duplicate rows. The cost of atomicity: each append makes one hard link per file
of the store (no data is copied but the rewritten last chunks).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

import fastzarr as fz
from fastzarr._atomic import exclusive_lock, publish, remove_leftovers, temp_store
from fastzarr._encoding import Codec, encode, json_fill
from fastzarr.errors import AppendError, DuplicateError
from fastzarr.writer import ChunkRecord, Region, materialize, slab_regions, verify_and_sync, write_passes

__all__ = ["AppendError", "append_store"]

# Encoding keys that change the stored values: a new variable that sets one differently from the
# store would be stored under the wrong decoding. Time units and calendars are not among them:
# the new times are encoded in the store's units, as xarray does.
_VALUE_ENCODINGS = ("dtype", "scale_factor", "add_offset", "_FillValue", "missing_value")
_CF_ENCODINGS = (*_VALUE_ENCODINGS, "units", "calendar")
_MAX_LABELS_SHOWN = 10


@dataclass
class _StoredArray:
    """One array of the store, as its metadata file says."""

    name: str
    metadata_file: str  # relative to the store root
    metadata: dict[str, Any]

    @property
    def shape(self) -> list[int]:
        return list(self.metadata["shape"])

    def chunk_shape(self) -> list[int]:
        if self.metadata.get("zarr_format") == 3:
            grid = self.metadata.get("chunk_grid", {})
            if grid.get("name") != "regular":
                raise AppendError(f"variable {self.name!r}: only regular chunk grids can be appended to")
            return list(grid["configuration"]["chunk_shape"])
        return list(self.metadata["chunks"])

    def with_shape(self, shape: list[int]) -> dict[str, Any]:
        return {**self.metadata, "shape": shape}

    def encoder_metadata(self, shape: list[int]) -> str:
        """The metadata the Rust encoder reads: a null v2 fill value pads edge chunks with zeros."""
        meta = self.with_shape(shape)
        if meta.get("zarr_format") == 2 and meta.get("fill_value") is None:
            dtype = np.dtype(meta["dtype"])
            meta["fill_value"] = json_fill(np.zeros((), dtype)[()], dtype, 2)
        return json.dumps(meta)


def _read_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        value: dict[str, Any] = json.load(f)
    return value


def _stored_arrays(target: Path, names: list[str]) -> dict[str, _StoredArray]:
    """The metadata of the arrays ``names`` (root members) as their files say."""
    zarr_format = 3 if (target / "zarr.json").exists() else 2
    arrays = {}
    for name in names:
        file = f"{name}/zarr.json" if zarr_format == 3 else f"{name}/.zarray"
        if not (target / file).exists():
            raise AppendError(f"variable {name!r} has no {file} in {target}: cannot append to it")
        arrays[name] = _StoredArray(name, file, _read_json(target / file))
    return arrays


def _same_value(a: Any, b: Any) -> bool:
    """Equality of attribute and encoding values: arrays elementwise, NaN equal to NaN."""
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    except TypeError:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _same_dtype(new: np.dtype[Any], old: np.dtype[Any]) -> bool:
    if new.kind in "OUST" and old.kind in "OUST":
        return True  # strings: the width is checked when the values are encoded
    if new.kind in "mM" or old.kind in "mM":
        return new.kind == old.kind  # decoded time resolutions may differ; the encoding decides
    return new.newbyteorder("=") == old.newbyteorder("=")  # byte order is the store's business


def _labels(values: npt.NDArray[Any]) -> str:
    shown = [str(v) for v in values[:_MAX_LABELS_SHOWN]]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _check_labels(old: xr.Dataset, ds: xr.Dataset, append_dim: str) -> None:
    """Labels along ``append_dim`` must be new and unique: appending never duplicates rows."""
    if append_dim not in ds.indexes or append_dim not in old.indexes:
        return
    new = pd.Index(ds.indexes[append_dim])
    repeated = new[new.duplicated()].unique()
    if len(repeated):
        raise DuplicateError(
            f"labels repeated along {append_dim!r} in the data to append: {_labels(np.asarray(repeated))}"
        )
    stored = new[new.isin(old.indexes[append_dim])]
    if len(stored):
        raise DuplicateError(
            f"labels along {append_dim!r} already in the store: {_labels(np.asarray(stored))}"
        )


def _check_variable(name: str, new: xr.Variable, old: xr.Variable, append_dim: str) -> None:
    if new.dims != old.dims:
        raise AppendError(f"variable {name!r} has dimensions {new.dims}, the store's has {old.dims}")
    for dim, n, m in zip(new.dims, new.shape, old.shape, strict=True):
        if dim != append_dim and n != m:
            raise AppendError(f"variable {name!r}: dimension {dim!r} has size {n}, the store's has {m}")
    if not _same_dtype(new.dtype, old.dtype):
        raise AppendError(f"variable {name!r} has dtype {new.dtype}, the store's has {old.dtype}")
    if new.attrs.keys() != old.attrs.keys() or not all(
        _same_value(new.attrs[k], old.attrs[k]) for k in new.attrs
    ):
        raise AppendError(f"variable {name!r} has attributes {new.attrs}, the store's has {old.attrs}")
    for key in _VALUE_ENCODINGS:
        if key in new.encoding and not (
            key in old.encoding and _same_value(new.encoding[key], old.encoding[key])
        ):
            raise AppendError(
                f"variable {name!r} has encoding {key}={new.encoding[key]!r}, "
                f"the store's has {old.encoding.get(key, 'none')!r}"
            )
    if append_dim not in new.dims and not new.equals(old):  # type: ignore[no-untyped-call]
        raise AppendError(
            f"variable {name!r} does not have {append_dim!r} and its values differ from the store's"
        )


def _validate(old: xr.Dataset, ds: xr.Dataset, append_dim: str) -> list[str]:
    """Checks ``ds`` against the store; the names of the variables along ``append_dim``."""
    if append_dim not in old.dims:
        raise AppendError(f"the store has no dimension {append_dim!r} to append along")
    if append_dim not in ds.dims:
        raise AppendError(f"the data to append has no dimension {append_dim!r}")
    missing = sorted(str(n) for n in set(old.variables) - set(ds.variables))
    extra = sorted(str(n) for n in set(ds.variables) - set(old.variables))
    if missing or extra:
        raise AppendError(
            "the variables differ from the store's: "
            f"missing {missing or 'none'}, not in the store {extra or 'none'}"
        )
    if ds.attrs.keys() != old.attrs.keys() or not all(
        _same_value(ds.attrs[k], old.attrs[k]) for k in ds.attrs
    ):
        raise AppendError(f"the dataset's attributes {ds.attrs} differ from the store's {old.attrs}")
    for name in ds.variables:
        _check_variable(str(name), ds.variables[name], old.variables[name], append_dim)
    _check_labels(old, ds, append_dim)
    return [str(n) for n in ds.variables if append_dim in ds.variables[n].dims]


class _Appended:
    """The region written along the append axis: the stored tail of the last, partially filled
    chunk followed by the new (encoded, possibly lazy) values; indexed slab by slab."""

    def __init__(self, tail: npt.NDArray[Any], new: Any, axis: int, dtype: np.dtype[Any]) -> None:
        self.tail, self.new, self.axis, self.dtype = tail, new, axis, dtype
        shape = list(tail.shape)
        shape[axis] += int(new.shape[axis])
        self.shape = tuple(shape)

    def __getitem__(self, region: tuple[slice, ...]) -> npt.NDArray[Any]:
        start, stop, _ = region[self.axis].indices(self.shape[self.axis])
        n = self.tail.shape[self.axis]
        parts = []
        if start < n:
            parts.append(self.tail[self._along(region, start, min(stop, n))])
        if stop > n:
            parts.append(materialize(self.new, self._along(region, max(start, n) - n, stop - n), self.dtype))
        return np.concatenate(parts, axis=self.axis) if len(parts) > 1 else parts[0]

    def _along(self, region: tuple[slice, ...], start: int, stop: int) -> tuple[slice, ...]:
        return (*region[: self.axis], slice(start, stop), *region[self.axis + 1 :])


def _encoded(ds: xr.Dataset, old: xr.Dataset, names: list[str]) -> dict[str, Any]:
    """The variables along ``append_dim`` CF-encoded with the store's encodings: name → Variable."""
    subset = xr.Dataset({n: ds.variables[n].copy(deep=False) for n in names}, attrs=ds.attrs)
    for n in names:
        stored = old.variables[n].encoding
        subset.variables[n].encoding = {k: stored[k] for k in _CF_ENCODINGS if k in stored}
        if "coordinates" in ds.variables[n].encoding:
            subset.variables[n].encoding["coordinates"] = ds.variables[n].encoding["coordinates"]
    variables, _ = encode(subset, zarr_format=3, codec=Codec("none"), chunks=None)
    return {v.name: v for v in variables}


def _mirror(target: Path, tmp: Path) -> None:
    """A copy of the store at ``tmp`` made of hard links (copies where links are refused)."""
    for root, dirs, files in os.walk(target):
        here = tmp / os.path.relpath(root, target)
        for d in dirs:
            (here / d).mkdir()
        for f in files:
            try:
                os.link(os.path.join(root, f), here / f)
            except OSError:
                shutil.copy2(os.path.join(root, f), here / f)


def _replace_json(path: Path, value: Any, fsync: bool) -> None:
    """Writes a new file in place of ``path``'s hard link (the old store keeps its own file)."""
    path.unlink(missing_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def _update_metadata(
    tmp: Path, arrays: Mapping[str, _StoredArray], shapes: Mapping[str, list[int]], fsync: bool
) -> None:
    """The longer shapes in every array's metadata file and in the consolidated metadata."""
    for name, shape in shapes.items():
        _replace_json(tmp / arrays[name].metadata_file, arrays[name].with_shape(shape), fsync)
    if (tmp / "zarr.json").exists():
        group = _read_json(tmp / "zarr.json")
        consolidated = (group.get("consolidated_metadata") or {}).get("metadata")
        if consolidated is not None:
            for name, shape in shapes.items():
                if name in consolidated:
                    consolidated[name] = {**consolidated[name], "shape": shape}
            _replace_json(tmp / "zarr.json", group, fsync)
    if (tmp / ".zmetadata").exists():
        zmeta = _read_json(tmp / ".zmetadata")
        for name, shape in shapes.items():
            key = f"{name}/.zarray"
            if key in zmeta.get("metadata", {}):
                zmeta["metadata"][key] = {**zmeta["metadata"][key], "shape": shape}
        _replace_json(tmp / ".zmetadata", zmeta, fsync)


def _snapshot(target: Path, arrays: Mapping[str, _StoredArray]) -> dict[str, bytes]:
    """The bytes of the store's metadata files, to notice a writer that changed it meanwhile."""
    files = [a.metadata_file for a in arrays.values()] + ["zarr.json", ".zmetadata"]
    return {f: (target / f).read_bytes() for f in files if (target / f).exists()}


@dataclass
class _Work:
    """One array to extend: its stored metadata, the stored tail of its last chunk along the
    append axis (rewritten with the new values), the new encoded values and the axis."""

    stored: _StoredArray
    tail: npt.NDArray[Any]
    new: Any
    axis: int


def _append_regions(
    work: _Work, shapes: dict[str, list[int]], *, budget: int
) -> Iterator[tuple[None, Region]]:
    """The regions of one array to encode (its rewritten last chunks and the new ones); records
    its new shape in ``shapes``."""
    stored, axis = work.stored, work.axis
    old_len = stored.shape[axis]
    first = old_len - work.tail.shape[axis]
    shape = stored.shape
    shape[axis] = old_len + int(work.new.shape[axis])
    shapes[stored.name] = shape
    dtype = work.tail.dtype
    data = _Appended(work.tail, work.new, axis, dtype)
    metadata = stored.encoder_metadata(shape)
    in_memory = isinstance(work.new, np.ndarray)
    limit = max(budget, math.prod(data.shape) * dtype.itemsize) if in_memory else budget
    for region in slab_regions(data.shape, tuple(stored.chunk_shape()), dtype.itemsize, limit):
        start = [s.indices(n)[0] for s, n in zip(region, data.shape, strict=True)]
        start[axis] += first
        yield None, (stored.name, metadata, data[region], start)


def _plan(ds: xr.Dataset, target: Path, append_dim: str) -> tuple[list[_Work], dict[str, _StoredArray]]:
    """Checks ``ds`` against the store and gathers, per array along ``append_dim``, what to write."""
    old = _open_store(target)
    names = _validate(old, ds, append_dim)
    arrays = _stored_arrays(target, names)
    encoded = _encoded(ds, old, names)
    plan = []
    for name in names:
        stored, var = arrays[name], encoded[name]
        axis = var.dims.index(append_dim)
        member = fz.open_array(target / name)  # not through the group: zarrs refuses "__" names
        if list(member.shape) != stored.shape:
            raise AppendError(f"variable {name!r}: the store's metadata files disagree on its shape")
        stored_dtype = member.dtype.newbyteorder("=")
        if var.dtype.kind == "U" and stored_dtype.kind == "U" and var.dtype.itemsize <= stored_dtype.itemsize:
            var.dtype = stored_dtype  # shorter strings fit the stored width
        if var.dtype != stored_dtype:
            raise AppendError(
                f"variable {name!r} encodes to dtype {var.dtype}, the store holds {member.dtype}"
            )
        chunk, old_len = stored.chunk_shape()[axis], stored.shape[axis]
        tail_region = tuple(
            slice((old_len // chunk) * chunk, old_len) if a == axis else slice(None)
            for a in range(len(stored.shape))
        )
        tail = np.ascontiguousarray(member[tail_region], dtype=var.dtype)
        plan.append(_Work(stored, tail, var.data, axis))
    return plan, arrays


def _open_store(target: Path) -> xr.Dataset:
    """The store as xarray decodes it (lazily): through fastzarr's backend, or through
    zarr-python for what fastzarr's group reader refuses (member names starting with "__")."""
    # imports the backend on use
    from fastzarr.xarray_backend import open_zarr, unconsolidated_quietly  # noqa: PLC0415

    try:
        with unconsolidated_quietly():  # appending reads the store as it is
            return open_zarr(target, chunks=None)
    except fz.MetadataError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr-python's notes on v3 data types and codecs
            opened: xr.Dataset = xr.open_zarr(target, chunks=None)
            return opened


def append_store(
    ds: xr.Dataset,
    target: Path,
    *,
    append_dim: str,
    fsync: bool = True,
    max_memory: int,
    deadline: float | None = None,
) -> list[ChunkRecord]:
    """The body of ``to_zarr(mode="a")`` for an existing local store; the new chunks' records.

    Checked first without the lock (a mismatch leaves no trace), then under it: if another append
    landed meanwhile, the plan is made again against the store as it is now."""
    plan, arrays = _plan(ds, target, append_dim)
    planned = _snapshot(target, arrays)
    with _append_lock(target, deadline):
        if _snapshot(target, arrays) != planned:
            plan, arrays = _plan(ds, target, append_dim)
        return _commit(target, plan, arrays, fsync=fsync, max_memory=max_memory, deadline=deadline)


def _append_lock(target: Path, deadline: float | None) -> contextlib.AbstractContextManager[None]:
    """One append at a time per store: two appenders would both copy the old store and the second
    swap would silently drop the first one's rows. A lock on a sibling file."""
    return exclusive_lock(
        target.parent / f".{target.name}.fastzarr-append.lock",
        expired=lambda: deadline is not None and time.perf_counter() >= deadline,
        timed_out=lambda: fz.TimeoutError(f"timed out waiting for another append to {target}"),
    )


def _commit(
    target: Path,
    plan: list[_Work],
    arrays: Mapping[str, _StoredArray],
    *,
    fsync: bool,
    max_memory: int,
    deadline: float | None,
) -> list[ChunkRecord]:
    """Writes the planned chunks into a hard-linked copy of the store, verifies it, swaps it in."""
    before = _snapshot(target, arrays)
    remove_leftovers(target)
    with temp_store(target) as tmp:
        try:
            _mirror(target, tmp)
            scratch = tmp / ".fastzarr-append"
            scratch.mkdir()
            # The rewritten and new chunks of every array are encoded into ``scratch`` in one
            # pass where memory allows, then moved over their places in the mirror ``tmp``.
            records: list[ChunkRecord] = []
            shapes: dict[str, list[int]] = {}
            regions = itertools.chain.from_iterable(
                _append_regions(work, shapes, budget=max_memory) for work in plan
            )
            for _, written in write_passes(
                scratch, regions, budget=max_memory, fsync=fsync, deadline=deadline
            ):
                records += written
            for _, key, _, _ in records:
                (tmp / key).parent.mkdir(parents=True, exist_ok=True)
                os.replace(scratch / key, tmp / key)  # replaces the link, not the old store's file
            shutil.rmtree(scratch)
            _update_metadata(tmp, arrays, shapes, fsync)
            verify_and_sync(tmp, records, fsync=fsync, deadline=deadline)
            _check_opens(tmp, shapes)
            if _snapshot(target, arrays) != before:
                raise AppendError(
                    f"{target} was changed by another writer during the append: nothing appended"
                )
            publish(tmp, target, "w", fsync)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return records


def _check_opens(tmp: Path, shapes: Mapping[str, list[int]]) -> None:
    """The new store opens with the new shapes (the metadata as written is the metadata read)."""
    for name, shape in shapes.items():
        member = fz.open_array(tmp / name)
        if list(member.shape) != shape:
            raise fz.CorruptChunkError(f"{tmp}: array {name!r} does not read back with shape {shape}")
