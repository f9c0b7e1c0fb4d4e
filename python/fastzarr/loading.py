"""``fastzarr.load``: materialize a Zarr-backed xarray object in one parallel read.

xarray's ``Dataset.load()`` reads variables one after another (xarray#8965) and dask reads one
chunk per task. :func:`load` finds, for every variable, the Zarr array and selection behind it,
hands every selection of every variable to :func:`fastzarr.read_many` at once (one parallel
pass over all chunks), then lets xarray's own lazy wrappers apply what sits on top of the raw
read (CF decoding: masking, scale/offset, times; later selections; dask operations).

How a variable is mapped back to its store:

- lazily indexed (``chunks=None``, from ``fastzarr.open_zarr`` or ``xr.open_zarr``): xarray
  keeps a chain of lazy wrappers (``MemoryCachedArray``, ``CopyOnWriteArray``, CF decoding
  ``_ElementwiseFunctionArray``, ``LazilyIndexedArray`` holding the composed selection) around a
  backend array (fastzarr's ``FastzarrArrayWrapper`` or xarray's ``ZarrArrayWrapper``). The chain
  is copied with the backend array swapped for a planning stand-in: a first evaluation records
  the selection the backend array is asked for (and stops there, reading nothing), a second,
  after ``read_many``, serves the decoded chunks and runs the decoding wrappers as xarray would.
- dask-backed (``chunks={}``, ``"auto"``, a dict, also after ``isel``/``sel`` or arithmetic):
  every ``getter`` task of the (culled) graph that reads from such a chain is planned the same
  way; the decoded blocks replace those tasks, and the rest of the graph (slicing, arithmetic)
  runs in a small synchronous executor (see ``fastzarr._compat.dask``). Each getter reads a
  whole dask block, as dask would: with the default ``chunks={}`` a block is a stored chunk.

Anything else (in-memory data, other backends, dask graphs without a Zarr read, zarr-python
stores fastzarr cannot open, variables fastzarr cannot decode) is loaded by xarray itself; the
result is numpy either way.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import xarray as xr

import fastzarr as fz
from fastzarr import _gc
from fastzarr._compat import xarray as compat_xr
from fastzarr._progress import Progress, Stages, progress_enabled
from fastzarr._sizes import parse_size
from fastzarr.cache import Cache
from fastzarr.xarray_backend import FastzarrArrayWrapper, Request, fetch, normalize_url

__all__ = ["load"]

T_Xarray = TypeVar("T_Xarray", xr.Dataset, xr.DataArray)

_MAX_DEPTH = 64
_DATAARRAY_NAME = "dataarray"  # zarrs refuses member names starting with "__"


class _Probe(BaseException):
    """Raised by a planning leaf to stop an evaluation once it knows the selection it needs.

    A ``BaseException`` so that no ``except Exception`` on the way up swallows it."""


class _PlannedLeaf(FastzarrArrayWrapper):
    """Stands in for the backend array of one evaluation: first records, then serves."""

    __slots__ = ("requests", "results", "serving")

    def __init__(self, array: fz.Array, dtype: np.dtype[Any]) -> None:
        super().__init__(array, dtype)
        self.requests: list[Request] = []
        self.results: list[npt.NDArray[Any]] = []
        self.serving = False

    def _fetch(self, request: Request) -> npt.NDArray[Any]:
        if not self.serving:
            self.requests.append(request)
            raise _Probe
        if self.results and _same_request(request, self.requests[0], self.shape):
            self.requests.pop(0)
            return self.results.pop(0)
        # Asked for something else (a guessed request that was wrong) or for more: read it.
        self.requests.clear()
        self.results.clear()
        return fetch(self._array, request)


def _same_part(a: Any, b: Any, n: int) -> bool:
    if isinstance(a, slice) and isinstance(b, slice):
        return a.indices(n) == b.indices(n)
    if isinstance(a, np.ndarray | list) or isinstance(b, np.ndarray | list):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, int | np.integer) and isinstance(b, int | np.integer):
        return int(a) == int(b)
    return False


def _same_request(asked: Request, planned: Request, shape: tuple[int, ...]) -> bool:
    """Whether a serving leaf is asked for the request it was planned (or guessed) to serve."""
    if asked is planned:
        return True
    if len(asked) != len(planned) or len(asked[0]) != len(shape) or len(planned[0]) != len(shape):
        return False
    if not all(_same_part(a, b, n) for a, b, n in zip(asked[0], planned[0], shape, strict=True)):
        return False
    if len(asked) == 2 and len(planned) == 2:
        points_a, points_b = asked[1], planned[1]
        return points_a.keys() == points_b.keys() and all(
            np.array_equal(points_a[k], points_b[k]) for k in points_a
        )
    return True


def _reads_whole_leaf(source: Any, leaf: Any, shape: tuple[int, ...]) -> bool:
    """Whether reading all of ``source`` (of ``shape``) reads all of ``leaf``: same shape, and
    every lazy selection on the way down selects everything."""
    if tuple(leaf.shape) != tuple(shape):
        return False
    obj = source
    for _ in range(_MAX_DEPTH):
        if obj is leaf:
            return True
        selection = compat_xr.lazy_selection(obj)
        if selection is not None:
            key, full = selection
            if len(key) != len(full) or not all(
                _same_part(k, slice(None), n) for k, n in zip(key, full, strict=True)
            ):
                return False
        elif not compat_xr.is_lazy_wrapper(obj) or compat_xr.is_lazy_vectorized(obj):
            return False
        obj = compat_xr.wrapped(obj)
        if obj is None:
            return False
    return False


class _Evaluation:
    """``fn(chain)`` where ``chain`` is a copy of a lazy xarray chain with its leaf replaced."""

    __slots__ = ("_fn", "_guess", "_leaf_obj", "_source", "leaf", "value")

    def __init__(
        self,
        source: Any,
        leaf_obj: Any,
        array: fz.Array,
        fn: Callable[[Any], Any],
        dtype: np.dtype[Any],
        *,
        guess: Request | None = None,
    ) -> None:
        self._source = source
        self._leaf_obj = leaf_obj
        self._fn = fn
        self._guess = guess
        self.leaf = _PlannedLeaf(array, dtype)
        self.value: Any = None

    def probe(self) -> list[tuple[Any, ...]]:
        """Runs until the leaf is asked for data; returns the ``read_many`` requests it made.

        With a guess (the whole leaf, for a whole read through selection-free wrappers) the
        chain is not run: serving checks the guess against what the chain asks for and reads
        anything else directly, so a wrong guess costs a read, never a wrong value."""
        if self._guess is not None:
            self.leaf.requests = [self._guess]
            return [(self.leaf.get_array(), *self._guess)]
        with contextlib.suppress(_Probe):
            self.value = self._fn(compat_xr.replace_leaf(self._source, self._leaf_obj, self.leaf))
        array = self.leaf.get_array()
        return [(array, *request) for request in self.leaf.requests]

    def serve(self, results: list[npt.NDArray[Any]]) -> Any:
        """Runs again with the decoded ``results`` of the probe's requests; returns the value."""
        if not self.leaf.requests:
            return self.value
        self.leaf.results = list(results)
        self.leaf.serving = True
        self.value = self._fn(compat_xr.replace_leaf(self._source, self._leaf_obj, self.leaf))
        return self.value


# --------------------------------------------------------------------------------------------
# lazy xarray chains


def _find_leaf(obj: Any) -> Any:
    """The backend array at the bottom of a chain of xarray lazy wrappers, or ``None``."""
    for _ in range(_MAX_DEPTH):
        if isinstance(obj, FastzarrArrayWrapper) or compat_xr.is_zarr_python_backend(obj):
            return obj
        obj = compat_xr.wrapped(obj)
        if obj is None:
            return None
    return None


class _Resolver:
    """Maps backend arrays to fastzarr Arrays, opening each store once per :func:`load` call."""

    def __init__(self) -> None:
        self._groups: dict[str, fz.Group | None] = {}
        # id(leaf) -> (leaf, its Array): planning asks for each leaf twice; the leaf is kept so
        # its id cannot be reused by another object during the call
        self._leaves: dict[int, tuple[Any, fz.Array | None]] = {}

    def __call__(self, leaf: Any) -> fz.Array | None:
        known = self._leaves.get(id(leaf))
        if known is None:
            known = self._leaves[id(leaf)] = (leaf, self._resolve(leaf))
        return known[1]

    def _resolve(self, leaf: Any) -> fz.Array | None:
        if isinstance(leaf, FastzarrArrayWrapper):
            return leaf.get_array()
        if not compat_xr.is_zarr_python_backend(leaf):
            return None
        dtype = np.dtype(leaf.dtype)
        if dtype.kind not in "biufcUV":
            return None
        zarr_wrapper: Any = leaf
        location = zarr_location(zarr_wrapper.get_array())
        if location is None:
            return None
        array = self._open(*location)
        if (
            array is None
            or tuple(array.shape) != tuple(leaf.shape)
            or array.dtype.newbyteorder("=") != dtype.newbyteorder("=")
        ):
            return None
        return array

    def _open(self, url: str, path: str) -> fz.Array | None:
        if url not in self._groups:
            try:
                self._groups[url] = fz.open_group(url)
            except (fz.FastzarrError, OSError):
                self._groups[url] = None
        group = self._groups[url]
        try:
            member = group[path] if group is not None else fz.open_array(url, path=path)
        except (fz.FastzarrError, KeyError, OSError):
            return None
        return member if isinstance(member, fz.Array) else None


def zarr_location(zarr_array: Any) -> tuple[str, str] | None:
    """(store URL, array path) of a zarr-python array on a local store; ``None`` otherwise."""
    store = getattr(zarr_array, "store", None)
    path = str(getattr(zarr_array, "path", "")).strip("/")
    root = getattr(store, "root", None)  # zarr.storage.LocalStore
    if root is not None and type(store).__name__ == "LocalStore":
        return normalize_url(str(root)), path
    fs = getattr(store, "fs", None)  # zarr.storage.FsspecStore over the local filesystem
    if fs is not None and type(store).__name__ == "FsspecStore":
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol in ("file", "local"):
            return normalize_url(str(getattr(store, "path", ""))), path
    return None


def _duck_array(chain: Any) -> Any:
    return chain.get_duck_array()


# --------------------------------------------------------------------------------------------
# the public function


def _variables(obj: xr.Dataset | xr.DataArray) -> Iterable[xr.Variable]:
    if isinstance(obj, xr.Dataset):
        return obj.variables.values()
    if isinstance(obj, xr.DataArray):
        return [obj.variable, *obj.coords.variables.values()]
    raise TypeError(f"fastzarr.load takes an xarray Dataset or DataArray, not {type(obj).__name__}")


def _is_dask(data: Any) -> bool:
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(data, dask_array.Array)


class _LoadPlan:
    """Every variable of one :func:`load` call, sorted by how it will be loaded."""

    def __init__(self) -> None:
        self.resolve = _Resolver()
        self.lazy: list[tuple[xr.Variable, _Evaluation]] = []
        self.fallback_lazy: list[xr.Variable] = []
        self.fallback_dask: list[xr.Variable] = []
        self.dask: Any = None  # a fastzarr._compat.dask.DaskPlan once a dask variable is seen
        self.totals: dict[str, float] = {}  # the ReadStats of every pass, summed

    def plan_chain(
        self, source: Any, fn: Callable[[Any], Any], whole: tuple[int, ...] | None = None
    ) -> _Evaluation | None:
        """An evaluation of ``fn(source)``; ``whole`` (the shape) says ``fn`` reads all of it."""
        leaf_obj = _find_leaf(source)
        if leaf_obj is None:
            return None
        array = self.resolve(leaf_obj)
        if array is None:
            return None
        guess: Request | None = None
        if whole is not None and _reads_whole_leaf(source, leaf_obj, whole):
            guess = (tuple(slice(0, n, 1) for n in whole),)
        return _Evaluation(source, leaf_obj, array, fn, np.dtype(leaf_obj.dtype), guess=guess)

    def mappable(self, source: Any) -> bool:
        """Whether ``source`` is a chain over a Zarr array fastzarr can read."""
        leaf_obj = _find_leaf(source)
        return leaf_obj is not None and self.resolve(leaf_obj) is not None

    def add(self, variable: xr.Variable, source: str | None = None) -> None:
        """Plans ``variable``; ``source`` (its dataset's store) names it in errors."""
        data = compat_xr.variable_data(variable)
        if _is_dask(data):
            if self.dask is None:
                from fastzarr._compat import dask as compat_dask  # noqa: PLC0415 - dask is optional

                self.dask = compat_dask.make_plan(self.plan_chain, self.mappable) or False
            if not self.dask or not self.dask.add(variable, data, source):
                self.fallback_dask.append(variable)
            return
        evaluation = self.plan_chain(data, _duck_array)
        if evaluation is None:
            self.fallback_lazy.append(variable)
        else:
            self.lazy.append((variable, evaluation))

    def read(
        self, progress: bool | None, deadline: float | None = None, max_memory: int | str | None = None
    ) -> int:
        """Probes every evaluation, reads all their requests in one pass, then serves them.

        With a progress bar, many requests are read in about 20 passes so that the bar moves.
        ``deadline`` (``time.monotonic()``) bounds all passes; ``max_memory`` is checked before
        anything is allocated. Returns the number of requests."""
        evaluations = [e for _, e in self.lazy]
        if self.dask:
            evaluations += self.dask.evaluations()
        requests_of = [e.probe() for e in evaluations]
        requests = [r for rs in requests_of for r in rs]
        step = len(requests) or 1
        # A budget covers every output, so it is checked on one pass over all of them.
        if progress_enabled(progress) and len(requests) >= 64 and max_memory is None:
            step = max(-(-len(requests) // 20), 16)
        results: list[Any] = []
        bar_on = progress if requests else False
        with Progress(bar_on, total=-(-len(requests) // step), desc="fastzarr load", unit="pass") as bar:
            for k in range(0, len(requests), step):
                remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
                arrays, stats = fz.read_many(
                    requests[k : k + step], return_stats=True, timeout=remaining, max_memory=max_memory
                )
                results += arrays
                for key, value in stats.as_dict().items():
                    self.totals[key] = self.totals.get(key, 0) + value
                bar.update(nbytes=stats.bytes_decoded, chunks=stats.chunks)
        start = 0
        for evaluation, own in zip(evaluations, requests_of, strict=True):
            evaluation.serve(results[start : start + len(own)])
            start += len(own)
        return len(requests)

    def store(self) -> None:
        """Puts the values read into their variables."""
        for variable, evaluation in self.lazy:
            variable.data = evaluation.value
        if self.dask:
            for variable, value in self.dask.finish():
                variable.data = value

    def load_rest(self) -> None:
        """Loads the variables no Zarr read was found for, the way xarray (or dask) would."""
        if self.fallback_dask:
            from fastzarr._compat import dask as compat_dask  # noqa: PLC0415 - dask is optional

            computed = compat_dask.compute([v.data for v in self.fallback_dask])  # dask arrays
            for variable, value in zip(self.fallback_dask, computed, strict=True):
                variable.data = value
        for variable in self.fallback_lazy:
            variable.load()


def load(
    obj: T_Xarray,
    *,
    progress: bool | None = None,
    timeout: float | None = None,
    max_memory: int | str | None = None,
    cache: Cache | None = None,
    allow_nan: bool = False,
) -> T_Xarray:
    """Loads every variable of ``obj`` into numpy, reading all of them in one parallel pass.

    ``obj`` is a Dataset or DataArray opened by :func:`fastzarr.open_zarr`,
    ``xr.open_dataset(..., engine="fastzarr")`` or ``xr.open_zarr`` (dask-backed or lazily
    indexed), after any ``isel``/``sel``. Like ``obj.load()``, it loads in place and returns
    ``obj``; every variable is then a numpy array, never dask, never lazy. Values are identical
    to xarray's. Variables that cannot be traced back to a Zarr array fastzarr reads (computed
    in memory, other backends, remote zarr-python stores, pickled objects) are loaded
    by xarray (or dask) itself.

    ``timeout``: seconds for the whole load (``fastzarr.TimeoutError``; Ctrl-C stops it too).
    ``max_memory``: what the Zarr reads may allocate, outputs and decode buffers together: bytes,
    a size like ``"2GB"`` or ``"2GiB"`` (decimal units are powers of 1000, binary ones of 1024)
    or a percentage of the memory available now like ``"20%"``; a load that needs more raises
    ``fastzarr.MemoryBudgetError`` before allocating.

    ``progress``: a tqdm bar with bytes and chunks per second; by default shown when stderr is
    a terminal or in a notebook (and tqdm is installed). Stage timings and memory go to
    ``logging.getLogger("fastzarr")`` at DEBUG level (``FASTZARR_LOG=debug``).

    ``cache``: a `fastzarr.Cache`. The loaded selection is stored as one validated entry, keyed
    by everything that shaped it: the stores read and their fingerprints (a store changed since
    is a miss), every variable's selection and CF decoding as xarray's lazy arrays (or dask
    graphs) record them, the in-memory coordinates' values, the attributes and fastzarr's cache
    format. A hit reads the entry (checksums and sizes checked) instead of the sources and gives
    the same values. A dataset whose provenance cannot be pinned down exactly (other backends,
    remote stores, values computed by lambdas) raises `fastzarr.CacheError` rather than risk a
    wrong hit. A variable that is entirely NaN raises `fastzarr.SuspiciousDataError` unless
    ``allow_nan``.
    """
    budget = parse_size(max_memory)  # here, so that a bad size fails before a cache lookup
    if cache is not None:
        return _load_cached(
            obj, cache, progress=progress, allow_nan=allow_nan, timeout=timeout, max_memory=budget
        )
    load_counting(obj, progress=progress, timeout=timeout, max_memory=budget)
    return obj


def load_counting(
    obj: xr.Dataset | xr.DataArray,
    *,
    progress: bool | None = None,
    timeout: float | None = None,
    max_memory: int | str | None = None,
) -> dict[str, float]:
    """:func:`load` without a cache, returning what its reads did: the :class:`ReadStats` fields
    summed over its passes (``chunks``, ``bytes_read``, ``bytes_decoded``, ...)."""
    stages = Stages("load")
    plan = _LoadPlan()
    source = getattr(obj, "encoding", {}).get("source")
    with _gc.paused():  # dask graphs of thousands of variables: see _gc
        seen: set[int] = set()
        for variable in _variables(obj):
            if id(variable) in seen or compat_xr.in_memory(variable):
                continue
            seen.add(id(variable))
            plan.add(variable, source)
        stages.done("plan", variables=len(seen))
        deadline = None if timeout is None else time.monotonic() + timeout
        # Sizes are parsed here rather than by the reads' own parser, which knows no "20%".
        requests = plan.read(progress, deadline, parse_size(max_memory))
        stages.done("read", requests=requests)
        plan.store()
    plan.load_rest()
    stages.done("store and rest")
    stages.total()
    return plan.totals


def _load_cached(
    obj: T_Xarray,
    cache: Cache,
    *,
    progress: bool | None,
    allow_nan: bool,
    timeout: float | None,
    max_memory: int | str | None,
) -> T_Xarray:
    """:func:`load` through ``cache``: on a miss ``obj`` is loaded and stored as an entry; on a
    hit the entry's values (validated as they are read) are put into ``obj``'s variables."""
    from fastzarr._provenance import load_key_params  # noqa: PLC0415

    ds = _as_dataset(obj)
    params, sources = load_key_params(ds)
    # a DataArray's own variable has a non-string name in its temporary Dataset
    stored_names = {n: n if isinstance(n, str) else _DATAARRAY_NAME for n in ds.variables}
    while _DATAARRAY_NAME in ds.variables:
        stored_names = {n: f"{v}_" if v == _DATAARRAY_NAME else v for n, v in stored_names.items()}

    def build() -> xr.Dataset:
        load(ds, progress=progress, timeout=timeout, max_memory=max_memory)
        # Only the values are taken from an entry (attributes and coordinates stay ``obj``'s):
        # stored without attributes or encodings, so that nothing in them (a scale_factor or
        # time units of an undecoded variable) is applied to the values on the way back.
        return xr.Dataset({stored_names[n]: xr.Variable(v.dims, v.values) for n, v in ds.variables.items()})

    entry, _ = cache.get_or_build(params, build, source=", ".join(sources), allow_nan=allow_nan)
    for name, variable in ds.variables.items():
        if not compat_xr.in_memory(variable):  # loaded by build() on a miss
            variable.data = entry.variables[stored_names[name]].values
    if isinstance(obj, xr.DataArray):
        _copy_values_back(ds, obj)
    return obj


def _copy_values_back(ds: xr.Dataset, array: xr.DataArray) -> None:
    """Puts the loaded values of ``ds`` (``array`` as a Dataset) into ``array``'s own variables,
    where ``ds`` holds copies of them rather than the same objects (xarray's public API copies)."""
    (name,) = ds.data_vars
    pairs = [(array.variable, ds.variables[name])]
    pairs += [(array.coords.variables[c], ds.variables[c]) for c in array.coords]
    for target, loaded in pairs:
        # Index coordinates are pandas indexes, in memory already (and their data is read-only).
        if target is not loaded and not isinstance(target, xr.IndexVariable):
            target.data = loaded.data


def _as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    """``obj`` as a Dataset sharing its variables (loading one loads the other)."""
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        return compat_xr.temp_dataset(obj)
    raise TypeError(f"fastzarr.load takes an xarray Dataset or DataArray, not {type(obj).__name__}")
