"""Opening the sources of an extraction, and the checks that they can be put together.

Only metadata and the small dimension coordinates are read here, never the data: the arrays are
described from their metadata rather than opened as lazy variables, because with thousands of
arrays building those was most of the cost of opening. The checks run before anything large is
read, so that sources which disagree (point coordinates, variables, dtypes) fail at once with a
message naming the source instead of as an xarray error after the read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from fastzarr import _core
from fastzarr._core import FastzarrError
from fastzarr._redact import redact_url
from fastzarr.errors import SourceMismatchError
from fastzarr.features import plain_label
from fastzarr.xarray_backend import FastzarrBackendEntrypoint, FastzarrStore, StoredVariable, normalize_url

Source = str | os.PathLike[str]


@dataclass
class ReadAhead:
    """What reading chunks' block tables ahead, while the sources were opened, cost (see
    `open_sources`): reads of the extraction, counted into its report."""

    requests: int = 0
    bytes: int = 0


@dataclass
class Opened:
    """One source after the metadata stage."""

    name: str
    raw: xr.Dataset
    """The group's attributes and its dimension coordinates (indexed, undecoded), as
    ``xr.open_zarr(decode_cf=False)`` has them; the other arrays are only described in ``stored``."""
    group: _core.Group
    coords: xr.Dataset
    """The point and concat dims' coordinates, CF-decoded."""
    stored: dict[Hashable, StoredVariable]
    """Every array of the group (dims, stored dtype, attributes, encoding), in the group's order."""
    sizes: dict[Hashable, int]

    @property
    def data_names(self) -> list[Hashable]:
        """What ``xr.open_zarr(decode_cf=False)`` would list as data variables."""
        return [n for n in self.stored if n not in self.raw.variables]


def source_name(src: Source) -> str:
    """A source as a plain string (paths and URLs alike)."""
    return os.fspath(src)


def _sizes(source: str, stored: Mapping[Hashable, StoredVariable]) -> dict[Hashable, int]:
    """Length per dimension over all arrays; conflicting lengths raise ValueError as xarray does."""
    sizes: dict[Hashable, int] = {}
    owner: dict[Hashable, Hashable] = {}
    for name, v in stored.items():
        for d, n in zip(v.dims, v.shape, strict=True):
            if sizes.setdefault(d, n) != n:
                raise ValueError(
                    f"conflicting sizes for dimension {d!r} in {source}: length {n} on {name!r} and "
                    f"length {sizes[d]} on {owner[d]!r}"
                )
            owner.setdefault(d, name)
    return sizes


def open_source(
    src: Source,
    point_dims: Sequence[Hashable],
    concat_dim: Hashable,
    storage_options: Mapping[str, Any] | None = None,
    *,
    deadline: float | None = None,
    group: _core.Group | None = None,
    preloaded: Mapping[str, npt.NDArray[Any]] | None = None,
) -> Opened:
    """Opens a source: every array described from its metadata (no lazy variable per array: with
    thousands of arrays that was most of the cost of opening), the dimension coordinates opened
    by xarray (they become indexes, as in ``xr.open_zarr``) and those of the point and concat dims
    CF-decoded.

    Metadata and coordinates are read by fastzarr itself, so every URL fastzarr reads (local,
    s3, gs, az, http, memory) works, with ``storage_options``.
    """
    name = source_name(src)
    options = dict(storage_options) if storage_options else None
    if group is None:
        group = _core.open_group(normalize_url(name), storage_options=options, timeout=_remaining(deadline))

    def store(drop: list[Hashable] | None = None) -> FastzarrStore:
        return FastzarrStore(
            group,
            url=normalize_url(name),
            storage_options=options,
            drop_variables=[str(n) for n in drop] if drop else None,
            timeout=_remaining(deadline),
            preloaded=preloaded,
        )

    described = store()
    stored: dict[Hashable, StoredVariable] = {}
    stored.update(described.describe_variables(group.array_keys()))
    sizes = _sizes(redact_url(name), stored)
    # xarray makes the arrays named like one of their dims coordinates (and refuses those with
    # more than that dim): only those go through its open_dataset.
    others = [n for n, v in stored.items() if n not in v.dims]
    raw = xr.open_dataset(store(others), engine=FastzarrBackendEntrypoint, decode_cf=False, chunks=None)
    wanted = [d for d in (*point_dims, concat_dim) if d in raw.xindexes]
    coords = xr.decode_cf(xr.Dataset(coords={d: raw.variables[d] for d in wanted}))
    return Opened(name, raw, group, coords, stored, sizes)


def open_sources(
    source_list: list[Source],
    point_dims: Sequence[Hashable],
    concat_dim: Hashable,
    storage_options: Mapping[str, Any] | None,
    deadline: float | None,
    *,
    read_ahead: ReadAhead | None = None,
    variables: Sequence[str] | None = None,
    as_before: Sequence[Opened] | None = None,
) -> list[Opened]:
    """Opens every source (see `open_source`) with as few waits on storage as there can be: the groups
    all at once, then the first source, then the dimension coordinates of all the others in one
    read pass. Over object storage that is four round trips for any number of sources instead of
    four per source.

    With ``read_ahead``, the block tables of the chunks a point read of ``variables`` (default:
    every array) is sure to need are read meanwhile, once the groups are open (see
    `fastzarr._core._read_ahead_tables`), and what that cost is added to ``read_ahead``: the read
    then asks for the blocks alone, one round trip less.

    With ``as_before`` (these sources as an earlier call opened them), the dimension coordinates
    are read through the arrays opened then, beside the groups' documents rather than after them:
    one round trip less. Those values are right only where every document read now equals the
    one read then: the caller compares them (`_remembered.same`) and opens again without
    ``as_before`` where they differ."""
    names = [source_name(s) for s in source_list]
    options = dict(storage_options) if storage_options else None
    helped = read_ahead is not None or as_before is not None
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastzarr-open") if helped else None
    try:
        guessed = (
            pool.submit(_coordinates_of, as_before, deadline) if pool and as_before is not None else None
        )
        groups = _core.open_groups(
            [normalize_url(n) for n in names], storage_options=options, timeout=_remaining(deadline)
        )
        tables = (
            pool.submit(
                _core._read_ahead_tables,
                groups,
                [str(d) for d in point_dims],
                None if variables is None else list(variables),
                timeout=_remaining(deadline),
            )
            if pool and read_ahead is not None
            else None
        )
        opened = _open_from_groups(
            names,
            groups,
            point_dims=point_dims,
            concat_dim=concat_dim,
            storage_options=storage_options,
            deadline=deadline,
            preloaded=_fitting(guessed, groups) if guessed is not None else None,
        )
        if tables is not None and read_ahead is not None:
            requests, nbytes = tables.result()
            read_ahead.requests += requests
            read_ahead.bytes += nbytes
    finally:
        if pool is not None:
            pool.shutdown(wait=False)
    return opened


Coordinates = dict[str, npt.NDArray[Any]]
"""A source's dimension coordinates, by name, as stored (undecoded)."""


def _coordinates_of(opened: Sequence[Opened], deadline: float | None) -> list[Coordinates]:
    """The dimension coordinates of the sources ``opened`` read again, in one pass, through the
    arrays opened then (their metadata as it was)."""
    wanted = [
        (i, source.group, str(name)) for i, source in enumerate(opened) for name in source.raw.variables
    ]
    return _read_coordinates(wanted, [{} for _ in opened], deadline)


def _read_coordinates(
    wanted: Iterable[tuple[int, _core.Group, str]], into: list[Coordinates], deadline: float | None
) -> list[Coordinates]:
    """Reads, in one pass, the array ``name`` of ``group`` into ``into[i][name]`` for each
    ``(i, group, name)`` of ``wanted`` that is a one-dimensional array; returns ``into``."""
    requests: list[tuple[_core.Array, tuple[slice]]] = []
    owners: list[tuple[int, str]] = []
    for i, group, name in wanted:
        try:
            member = group[name]
        except (FastzarrError, KeyError):
            continue
        if isinstance(member, _core.Array) and member.ndim == 1:
            requests.append((member, (slice(None),)))
            owners.append((i, name))
    values = _core.read_many(requests, timeout=_remaining(deadline)) if requests else []
    for (i, name), array in zip(owners, values, strict=True):
        into[i][name] = array
    return into


def _fitting(guessed: Future[list[Coordinates]], groups: list[_core.Group]) -> list[Coordinates] | None:
    """The coordinates read as before that fit the arrays of ``groups`` (same shape and data
    type); None when that read failed (the coordinates are then read as usual)."""
    try:
        values = guessed.result()
    except Exception:  # e.g. a source replaced since: its documents will say so
        return None
    if len(values) != len(groups):
        return None
    out: list[Coordinates] = []
    for group, coordinates in zip(groups, values, strict=True):
        keys = set(group.array_keys())
        fits: Coordinates = {}
        for name, array in coordinates.items():
            member = group[name] if name in keys else None
            if (
                isinstance(member, _core.Array)
                and member.shape == array.shape
                and member.dtype == array.dtype
            ):
                fits[name] = array
        out.append(fits)
    return out


def _open_from_groups(
    names: list[str],
    groups: list[_core.Group],
    *,
    point_dims: Sequence[Hashable],
    concat_dim: Hashable,
    storage_options: Mapping[str, Any] | None,
    deadline: float | None,
    preloaded: list[Coordinates] | None = None,
) -> list[Opened]:
    """`open_sources` once the groups are open (and, with ``preloaded``, some of their dimension
    coordinates read)."""
    loaded: list[Coordinates] = preloaded if preloaded is not None else [{} for _ in names]
    first = open_source(
        names[0],
        point_dims,
        concat_dim,
        storage_options,
        deadline=deadline,
        group=groups[0],
        preloaded=loaded[0],
    )
    if len(names) == 1:
        return [first]
    # The first source's dimension coordinates name the others' (a source without one of them
    # reads its own while opening).
    names_wanted = [str(d) for d in first.raw.xindexes if str(d) in first.raw.variables]
    wanted = []
    for i, group in enumerate(groups[1:], start=1):
        keys = set(group.array_keys())
        wanted += [(i, group, name) for name in names_wanted if name in keys and name not in loaded[i]]
    _read_coordinates(wanted, loaded, deadline)
    return [first] + [
        open_source(
            names[i],
            point_dims,
            concat_dim,
            storage_options,
            deadline=deadline,
            group=groups[i],
            preloaded=loaded[i],
        )
        for i in range(1, len(names))
    ]


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (None: no deadline); TimeoutError once it has passed."""
    if deadline is None:
        return None
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        raise _core.TimeoutError("extract_points did not finish within its timeout")
    return remaining


def is_nan(x: Any) -> bool:
    """Whether a scalar is NaN or NaT (False for values that cannot be either)."""
    try:
        return bool(np.isnan(x))
    except TypeError:
        return False


def _describe_difference(a: xr.Variable, b: xr.Variable) -> str:
    """How two coordinate variables differ, in a few words."""
    if a.shape != b.shape:
        return f"length {b.size} instead of {a.size}"
    av, bv = np.asarray(a.values), np.asarray(b.values)
    for i, (x, y) in enumerate(zip(av.ravel(), bv.ravel(), strict=True)):
        if not (x == y or (is_nan(x) and is_nan(y))):
            return f"value {plain_label(y)!r} instead of {plain_label(x)!r} at index {i}"
    if a.dtype != b.dtype:
        return f"dtype {b.dtype} instead of {a.dtype}"
    return "different attributes"


def check_sources(
    opened: list[Opened], point_dims: Sequence[Hashable], names: list[str], missing: str
) -> None:
    """Raises SourceMismatchError when the sources disagree on point coordinates, variables or dtypes."""
    first = opened[0]
    for other in opened[1:]:
        for d in point_dims:
            in_first, in_other = d in first.coords.variables, d in other.coords.variables
            if in_first != in_other:
                raise SourceMismatchError(
                    f"source {other.name}: coordinate {d!r} is {'missing' if in_first else 'present'}, "
                    f"unlike in {first.name}"
                )
            if not in_first:
                if first.sizes.get(d) != other.sizes.get(d):
                    raise SourceMismatchError(
                        f"source {other.name}: dimension {d!r} has size {other.sizes.get(d)} "
                        f"instead of {first.sizes.get(d)} as in {first.name}"
                    )
                continue
            a, b = first.coords.variables[d], other.coords.variables[d]
            if not a.equals(b):  # type: ignore[no-untyped-call]
                raise SourceMismatchError(
                    f"source {other.name}: coordinate {d!r} differs from {first.name}: "
                    f"{_describe_difference(a, b)}"
                )
    for o in opened:
        if missing == "raise":
            absent = [n for n in names if n not in o.stored]
            if absent:
                raise SourceMismatchError(f"source {redact_url(o.name)} lacks variables {absent}")
    for n in names:
        dtypes = {(o.name, o.stored[n].dtype) for o in opened if n in o.stored}
        numeric = {dt.kind in "biufc" for _, dt in dtypes}
        kinds = {dt.kind for _, dt in dtypes}
        if len(numeric) > 1 or (not any(numeric) and len(kinds) > 1):
            described = ", ".join(f"{s}: {dt}" for s, dt in sorted(dtypes, key=str))
            raise SourceMismatchError(f"variable {n!r} has incompatible dtypes across sources ({described})")


def select_variables(opened: list[Opened], variables: Iterable[str] | None, missing: str) -> list[str]:
    """The variables to extract: those asked for, or the first source's (all sources' with fill)."""
    if variables is not None:
        names = [variables] if isinstance(variables, str) else list(variables)
        for n in names:
            if all(n not in o.stored for o in opened):
                raise KeyError(f"variable {n!r} is in none of the sources")
        return names
    names = [str(n) for n in opened[0].data_names]
    for o in opened[1:]:
        extra = [str(n) for n in o.data_names if n not in names]
        if extra and missing == "raise":
            raise SourceMismatchError(
                f"source {redact_url(o.name)} has variables {extra} that {redact_url(opened[0].name)} lacks"
            )
        names += extra
    return names
