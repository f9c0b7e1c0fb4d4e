"""The sources of :class:`fastzarr.Loader` and how a chunk group of samples is read from them.

A source is a store fastzarr opened (its arrays are then read directly, in one ``read_many``
pass for all the groups asked for, and CF-decoded as xarray decodes them) or an xarray Dataset
a caller passed (read through :func:`fastzarr.load`). Either way a group comes back as one array
per variable with the group's samples on the first axis, in C order over the sample dimensions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

import fastzarr as fz
from fastzarr import _core
from fastzarr._compat import xarray as compat_xr
from fastzarr._urls import is_remote
from fastzarr.errors import DuplicateError, DuplicateWarning
from fastzarr.loading import load_counting
from fastzarr.xarray_backend import FastzarrStore, StoredVariable

__all__ = ["GroupReader", "Source", "Target", "open_sources"]

#: A group: its source and its indices along every sample dimension.
Box = tuple[int, list[npt.NDArray[np.int64]]]
#: A group's values: per variable, its samples first.
Values = dict[str, npt.NDArray[Any]]
#: The dimension a group's samples are decoded along.
_SAMPLE = "__fastzarr_sample__"


@dataclass
class Source:
    """One source: the lazy Dataset (sizes, coordinates), and for a store fastzarr opened the
    arrays behind its variables and how xarray describes them (read and decoded directly)."""

    ds: xr.Dataset
    kept: dict[Hashable, npt.NDArray[np.int64]]
    arrays: dict[str, fz.Array] = field(default_factory=dict)
    stored: dict[str, StoredVariable] = field(default_factory=dict)


def open_sources(
    source: Any,
    concat_dim: Hashable,
    duplicates: str,
    storage_options: dict[str, Any] | None,
    timeout: float | None,
) -> list[Source]:
    """The sources: Datasets as given, stores opened by fastzarr (their arrays at hand), with
    the rows kept along ``concat_dim`` where labels repeat."""
    if isinstance(source, xr.Dataset):
        return [Source(source, {})]
    urls = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not urls:
        raise ValueError("Loader needs at least one source")
    parts = []
    for url in urls:
        store = FastzarrStore.open(url, storage_options=storage_options, timeout=timeout)
        ds = xr.open_dataset(store, engine="fastzarr")
        arrays = {str(n): store.group[str(n)] for n in ds.variables if str(n) in store.group.array_keys()}
        stored = store.describe_variables(arrays)
        parts.append(Source(ds, {}, {n: a for n, a in arrays.items() if isinstance(a, fz.Array)}, stored))
    if duplicates == "keep" or any(concat_dim not in p.ds.indexes for p in parts):
        return parts
    seen: set[Any] = set()
    repeated: list[str] = []
    for k, part in enumerate(parts):
        rows = []
        for row, label in enumerate(part.ds.indexes[concat_dim]):
            if label in seen:
                repeated.append(f"{label!r} in {os.fspath(urls[k])}")
            else:
                seen.add(label)
                rows.append(row)
        if len(rows) < part.ds.sizes[concat_dim]:
            part.kept[concat_dim] = np.asarray(rows, dtype=np.int64)
    if repeated:
        message = f"{len(repeated)} repeated {concat_dim!r} labels: " + ", ".join(repeated[:20])
        if duplicates == "raise":
            raise DuplicateError(message)
        warnings.warn(message + " (later ones dropped)", DuplicateWarning, stacklevel=3)
    return parts


class GroupReader:
    """Reads chunk groups of samples of ``names`` from ``sources``."""

    def __init__(
        self,
        sources: list[Source],
        sample_dims: tuple[Hashable, ...],
        names: list[str],
        timeout: float | None,
        max_memory: int | None,
    ) -> None:
        self.sources = sources
        self.sample_dims = sample_dims
        self.names = names
        self.timeout = timeout
        self.max_memory = max_memory
        # Each variable's dtype in every batch: the one that holds it decoded from every source
        # (sources may store it differently), whichever sources a window draws on.
        self.dtypes = {
            name: np.result_type(*(part.ds[name].dtype for part in sources if name in part.ds.variables))
            for name in names
        }

    def read(
        self, boxes: Mapping[int, Box]
    ) -> tuple[dict[int, dict[str, npt.NDArray[Any]]], dict[str, float]]:
        """Each group's values, and what the reads did (``ReadStats`` fields, summed)."""
        totals: dict[str, float] = {}
        direct = [g for g, (source, _) in boxes.items() if self.sources[source].arrays]
        out = self._read_direct(direct, boxes, totals) if direct else {}
        for g, box in boxes.items():
            if g not in out:
                out[g] = self._read_through_xarray(*box, totals)
        return out, totals

    @property
    def reads_in_order(self) -> bool:
        """Whether samples can be decoded straight into the order they are served in: every source
        a store fastzarr opened, every variable of fixed-size elements."""
        return all(
            name in part.arrays and part.arrays[name].dtype.kind not in "OT"
            for part in self.sources
            for name in self.names
        )

    @property
    def remote(self) -> bool:
        """Whether a source is a store read over the network."""
        return any(is_remote(array.url) for part in self.sources for array in list(part.arrays.values())[:1])

    def allocate(self, count: int) -> dict[str, npt.NDArray[Any]]:
        """Arrays for ``count`` samples of every variable, as a batch holds them: samples first,
        in the dtype of every batch."""
        out = {}
        for name in self.names:
            stored = self.sources[0].stored[name]
            rest = [n for d, n in zip(stored.dims, stored.shape, strict=True) if d not in self.sample_dims]
            out[name] = np.empty((count, *rest), self.dtypes[name])
        return out

    def read_in_order(
        self, source: npt.NDArray[np.int64], index: npt.NDArray[np.int64], targets: Sequence[Target]
    ) -> dict[str, float]:
        """Reads samples (sample ``k``: source ``source[k]``, indices ``index[k]`` along the sample
        dimensions, rows dropped as duplicates skipped) into ``targets``' arrays (as
        :meth:`allocate` makes them), in one pass that decodes every chunk they touch once.

        A variable stored alike in every source and decoded as it is stored is decoded straight
        into the targets' rows; others are read into one array, CF-decoded as xarray decodes
        them, then copied there. Returns what the read did (``ReadStats`` fields)."""
        positions = np.empty_like(index)
        members = {int(s): np.flatnonzero(source == s) for s in np.unique(source)}
        for s, mine in members.items():
            kept = self.sources[s].kept
            for k, d in enumerate(self.sample_dims):
                positions[mine, k] = kept[d][index[mine, k]] if d in kept else index[mine, k]
        # Each target's samples from each source, and the rows they go to there.
        pieces = [
            (target, s, wanted, target.row + wanted - target.start)
            for target in targets
            for s, mine in members.items()
            if len(wanted := mine[(mine >= target.start) & (mine < target.stop)])
        ]
        requests: list[tuple[Any, ...]] = []
        staged = {}
        for name in self.names:
            if name not in self._direct:
                staged[name] = self._outputs(name, members, positions, requests)
                continue
            axes = self._direct[name]
            for target, s, wanted, rows in pieces:
                points = {axis: positions[wanted, k] for axis, k in axes.items()}
                requests.append((self.sources[s].arrays[name], ..., points, target.arrays[name], rows))
        stats = _core._read_points_into(requests, timeout=self.timeout, max_memory=self.max_memory)
        totals: dict[str, float] = {}
        _add(totals, stats.as_dict())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=xr.SerializationWarning)
            for name, outputs in staged.items():
                values = self._assemble(name, outputs, len(source))
                for target in targets:
                    end = target.row + target.stop - target.start
                    target.arrays[name][target.row : end] = values[target.start : target.stop]
        return totals

    @cached_property
    def _direct(self) -> dict[str, dict[int, int]]:
        """The variables decoded straight into batches, each with its point axes (array axis ->
        sample dimension number): stored alike in every source, decoded as stored, and with a
        sample dimension first (the points' axis is then the batch axis)."""
        out = {}
        for name in self.names:
            described = [part.stored[name] for part in self.sources]
            first = described[0]
            alike = all(_decoding_key(d) == _decoding_key(first) and d.dims == first.dims for d in described)
            as_stored = _decodes_as_is(first) and self.dtypes[name] == first.dtype
            if alike and as_stored and first.dims[0] in self.sample_dims:
                out[name] = {
                    first.dims.index(d): k for k, d in enumerate(self.sample_dims) if d in first.dims
                }
        return out

    def _outputs(
        self,
        name: str,
        members: Mapping[int, npt.NDArray[np.int64]],
        positions: npt.NDArray[np.int64],
        requests: list[tuple[Any, ...]],
    ) -> list[_RawOutput]:
        """The outputs of one variable's samples (``members[s]``: the rows of source ``s``'s),
        and their requests added to ``requests``. Sources that store and describe the variable
        alike share one output of every row; others (another dtype, other CF attributes) each get
        their own, decoded apart and then put together."""
        count = sum(len(rows) for rows in members.values())
        classes: dict[tuple[str, str], list[int]] = {}
        for s in members:
            stored = self.sources[s].stored[name]
            classes.setdefault(_decoding_key(stored), []).append(s)
        outputs = []
        for alike in classes.values():
            stored = self.sources[alike[0]].stored[name]
            axes = {stored.dims.index(d): k for k, d in enumerate(self.sample_dims) if d in stored.dims}
            shared = len(classes) == 1
            rows = np.sort(np.concatenate([members[s] for s in alike]))
            place = np.empty(count, dtype=np.int64)  # window row -> row of this output
            place[rows] = np.arange(len(rows))
            raw = np.empty(
                _points_shape(stored, self.sample_dims, count if shared else len(rows)), stored.dtype
            )
            for s in alike:
                points = {axis: positions[members[s], k] for axis, k in axes.items()}
                target = members[s] if shared else place[members[s]]
                requests.append((self.sources[s].arrays[name], ..., points, raw, target))
            outputs.append(_RawOutput(raw, None if shared else rows, stored))
        return outputs

    def _assemble(self, name: str, outputs: list[_RawOutput], count: int) -> npt.NDArray[Any]:
        """One variable's ``count`` samples, decoded, in the dtype of every batch."""
        decoded = [(_decoded(name, output, self.sample_dims), output.rows) for output in outputs]
        if len(decoded) == 1:
            return decoded[0][0].astype(self.dtypes[name], copy=False)
        whole = np.empty((count, *decoded[0][0].shape[1:]), self.dtypes[name])
        for values, rows in decoded:
            whole[rows] = values
        return whole

    def _positions(self, source: int, ranges: list[npt.NDArray[np.int64]]) -> dict[Hashable, Any]:
        """A box as positions in the source (rows dropped as duplicates skipped), slices where
        contiguous."""
        kept = self.sources[source].kept
        out: dict[Hashable, Any] = {}
        for d, r in zip(self.sample_dims, ranges, strict=True):
            positions = kept[d][r] if d in kept else r
            contiguous = len(positions) and positions[-1] - positions[0] == len(positions) - 1
            out[d] = slice(int(positions[0]), int(positions[-1]) + 1) if contiguous else positions
        return out

    def _read_direct(
        self, groups: list[int], boxes: Mapping[int, Box], totals: dict[str, float]
    ) -> dict[int, dict[str, npt.NDArray[Any]]]:
        """Groups of stores fastzarr opened: one ``read_many`` pass over every (group, variable),
        then xarray's CF decoding of each variable over all groups at once."""
        requests, where = [], []
        for g in groups:
            source, ranges = boxes[g]
            part = self.sources[source]
            positions = self._positions(source, ranges)
            for name in self.names:
                dims = part.stored[name].dims
                requests.append((part.arrays[name], tuple(positions.get(d, slice(None)) for d in dims)))
                where.append((g, name, dims, [len(r) for r in ranges]))
        arrays, stats = fz.read_many(
            requests, return_stats=True, timeout=self.timeout, max_memory=self.max_memory
        )
        _add(totals, stats.as_dict())
        out: dict[int, dict[str, npt.NDArray[Any]]] = {g: {} for g in groups}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=xr.SerializationWarning)
            for array, (g, name, dims, box) in zip(arrays, where, strict=True):
                # Decoded group by group, variable by variable: stacking them first would copy.
                stored = self.sources[boxes[g][0]].stored[name]
                values = _samples_first(array, dims, self.sample_dims, box)
                out[g][name] = _cf_decoded(name, values, stored, self.sample_dims)
        return out

    def _read_through_xarray(
        self, source: int, ranges: list[npt.NDArray[np.int64]], totals: dict[str, float]
    ) -> dict[str, Any]:
        """A group of a Dataset given as the source: ``fastzarr.load`` of its box."""
        part = self.sources[source].ds
        box = part[[n for n in self.names if n in part.data_vars]]
        box = box.assign_coords({c: part.coords[c] for c in self.names if c in part.coords})
        box = box.isel(self._positions(source, ranges))
        _add(totals, load_counting(box, progress=False, timeout=self.timeout, max_memory=self.max_memory))
        sizes = [len(r) for r in ranges]
        return {
            n: _samples_first(np.asarray(box[n].values), box[n].dims, self.sample_dims, sizes)
            for n in self.names
        }


def _add(totals: dict[str, float], more: Mapping[str, float]) -> None:
    for key, value in more.items():
        totals[key] = totals.get(key, 0) + value


# Attributes with which xarray's CF decoding may change values or their dtype.
_DECODING_ATTRS = frozenset(
    {"scale_factor", "add_offset", "missing_value", "calendar", "dtype", "_Unsigned", "_Encoding"}
)
_TIME_UNITS = frozenset(
    {"days", "hours", "minutes", "seconds", "milliseconds", "microseconds", "nanoseconds"}
)


def _decodes_as_is(stored: StoredVariable) -> bool:
    """Whether xarray's CF decoding returns a variable's values as they are: numbers, no
    scaling, no time units, and no fill value but NaN in floats (masked as NaN). Decoding
    would still copy every group's values (thousands of calls per epoch)."""
    attrs = stored.attrs
    if stored.dtype.kind not in "fiub" or _DECODING_ATTRS & attrs.keys():
        return False
    units = str(attrs.get("units", ""))
    if "since" in units or units.strip().lower() in _TIME_UNITS:
        return False
    if "_FillValue" not in attrs:
        return True
    fill = attrs["_FillValue"]
    return stored.dtype.kind == "f" and isinstance(fill, float | np.floating) and bool(np.isnan(fill))


def _points_shape(stored: StoredVariable, sample_dims: Sequence[Hashable], count: int) -> tuple[int, ...]:
    """The shape of ``count`` points of a variable read on its sample dimensions: one axis of
    points where its first sample dimension is, its other dimensions whole."""
    first = min(stored.dims.index(d) for d in sample_dims if d in stored.dims)
    return tuple(
        count if k == first else n
        for k, (d, n) in enumerate(zip(stored.dims, stored.shape, strict=True))
        if k == first or d not in sample_dims
    )


def _decoding_key(stored: StoredVariable) -> tuple[str, str]:
    """What CF decoding depends on, comparable (a NaN fill value equal to another NaN)."""
    return stored.dtype.str, repr(sorted(stored.attrs.items(), key=lambda item: str(item[0])))


@dataclass
class Target:
    """Where samples ``start:stop`` of a read go: rows ``row`` onwards of ``arrays``."""

    start: int
    stop: int
    arrays: dict[str, npt.NDArray[Any]]
    row: int


@dataclass
class _RawOutput:
    """One output of :meth:`GroupReader.read_in_order`: the stored values of the samples at
    ``rows`` of the window (all of them when None), as ``stored`` describes them."""

    values: npt.NDArray[Any]
    rows: npt.NDArray[np.int64] | None
    stored: StoredVariable


def _decoded(name: str, raw: _RawOutput, sample_dims: Sequence[Hashable]) -> npt.NDArray[Any]:
    """An output's values, samples first, CF-decoded as xarray decodes the variable."""
    stored = raw.stored
    first = min(stored.dims.index(d) for d in sample_dims if d in stored.dims)
    values = np.moveaxis(raw.values, sum(1 for d in stored.dims[:first] if d not in sample_dims), 0)
    return _cf_decoded(name, values, stored, sample_dims)


def _cf_decoded(
    name: str, values: npt.NDArray[Any], stored: StoredVariable, sample_dims: Sequence[Hashable]
) -> npt.NDArray[Any]:
    """``values`` of a variable (samples first, its other dimensions after), CF-decoded as xarray
    decodes it; as they are where decoding would return them unchanged."""
    if _decodes_as_is(stored):
        return values
    rest = [d for d in stored.dims if d not in sample_dims]
    variable = xr.Variable((_SAMPLE, *rest), values, stored.attrs, stored.encoding)
    return np.asarray(compat_xr.decode_variable(name, variable).values)


def _samples_first(
    array: npt.NDArray[Any], dims: Sequence[Hashable], sample_dims: Sequence[Hashable], box: Sequence[int]
) -> npt.NDArray[Any]:
    """``array`` (of a box, with ``dims``) with its samples on one first axis, in C order over
    the sample dimensions; a sample dimension it lacks repeats its values."""
    present = [d for d in sample_dims if d in dims]
    moved = np.moveaxis(array, [list(dims).index(d) for d in present], list(range(len(present))))
    inner = moved.shape[len(present) :]
    shape = [box[k] if d in present else 1 for k, d in enumerate(sample_dims)]
    full = np.broadcast_to(moved.reshape(*shape, *inner), (*box, *inner))
    return np.ascontiguousarray(full).reshape(-1, *inner)
