"""xarray integration: the ``fastzarr`` engine and :func:`open_zarr`.

``xr.open_dataset(url, engine="fastzarr")`` and ``fastzarr.open_zarr(url, ...)`` build the same
Dataset as ``xr.open_zarr(url, ...)`` (variables, dimension names, attributes, CF decoding and
the encodings, zarr-python's codec objects included where zarr-python is installed, so that
``to_zarr`` writes the same codecs back; see ``fastzarr._codec_encoding``), and warn as it does
when ``consolidated=None`` finds no consolidated metadata; but every read goes through
fastzarr's parallel Rust core:

- opening reads metadata only (from consolidated metadata when the store has it);
- ``.isel``/``.sel`` then ``.load()`` reads only the chunks the selection touches, each read
  decoding its chunks in parallel;
- ``await ds.load_async()`` reads all variables concurrently;
- ``chunks={}``, ``"auto"`` or a dict give dask arrays whose tasks read through fastzarr; the
  backend array pickles to (URL, options, path), so a ``dask.distributed`` cluster can run them.

Indexing: integers, positive-step slices and sorted 1-D integer arrays on every axis go straight
to the Rust core (``Array.oindex``); negative steps and unsorted or repeated indices are
decomposed by xarray (``IndexingSupport.OUTER``: the core reads the sorted unique indices, numpy
reorders them in memory). Vectorized (pointwise) keys become one point read
(``read_many([(array, selection, {axis: indices})])``), which decodes only the chunks that hold
points.

Variables fastzarr's core cannot decode (``|O`` arrays of other object codecs than ``vlen-utf8``
and ``vlen-bytes``, structured data types) are read through zarr-python for that variable only,
exactly as ``xr.open_zarr`` reads them; if zarr-python is not installed, opening raises
:class:`fastzarr.UnsupportedCodecError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import xarray as xr
from xarray.backends import (
    AbstractDataStore,
    BackendArray,
    BackendEntrypoint,
    StoreBackendEntrypoint,
    ZarrStore,
)
from xarray.core import indexing

import fastzarr as fz
from fastzarr import _gc
from fastzarr._codec_encoding import codec_encoding
from fastzarr._compat import xarray as compat_xr
from fastzarr._fill_values import decode_fill_value

__all__ = ["FastzarrArrayWrapper", "FastzarrBackendEntrypoint", "FastzarrStore", "open_zarr"]

DIMENSION_KEY = "_ARRAY_DIMENSIONS"
INDEXING_SUPPORT = indexing.IndexingSupport.OUTER


# --------------------------------------------------------------------------------------------
# one decode pool per dask worker process, sized to the worker's threads


_configured_pid: int | None = None


def configure_for_dask_worker() -> None:
    """Inside a ``dask.distributed`` worker, size fastzarr's pool to the worker's threads.

    Runs once per process (cheap to call before every read): a worker with ``n`` threads runs
    ``n`` tasks at once, and each task's read then shares a pool of ``n`` decode threads instead
    of every process using all the machine's cores.
    """
    global _configured_pid  # noqa: PLW0603 - one flag per process
    pid = os.getpid()
    if _configured_pid == pid:
        return
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return
    try:
        worker = distributed.get_worker()
    except ValueError:
        return
    state = getattr(worker, "state", worker)
    nthreads = getattr(state, "nthreads", None) or getattr(worker, "nthreads", None)
    if isinstance(nthreads, int) and nthreads > 0:
        fz.set_num_threads(nthreads)
    _configured_pid = pid


# --------------------------------------------------------------------------------------------
# the backend array


def metadata_fingerprint(array: fz.Array) -> str:
    """A short hash of an array's stored metadata (shape, chunks, codecs, attributes)."""
    text = json.dumps(array.metadata, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _is_outer_key(key: tuple[Any, ...]) -> bool:
    return any(isinstance(k, np.ndarray | list) for k in key)


# What the Rust core is asked for: ``(selection,)`` (ints, slices, 1-D integer arrays with outer
# semantics) or ``(selection, {axis: indices})`` (points: one output axis where the first point
# axis was, see ``fastzarr.read_many``).
Request = tuple[tuple[Any, ...]] | tuple[tuple[Any, ...], dict[int, npt.NDArray[np.int64]]]


def fetch(array: fz.Array, request: Request) -> npt.NDArray[Any]:
    """Reads one :data:`Request` from ``array``."""
    if len(request) == 2:
        return fz.read_many([(array, request[0], request[1])])[0]
    key = request[0]
    if _is_outer_key(key):
        return array.oindex[key]
    return array[key]


def points_request(
    key: tuple[Any, ...],
) -> tuple[Request, Callable[[npt.NDArray[Any]], npt.NDArray[Any]]] | None:
    """A vectorized (pointwise) key as a point read, and how to shape its result the way xarray
    orders it (broadcast index dimensions first, then the sliced axes); ``None`` if the key
    has no points."""
    array_axes = [axis for axis, k in enumerate(key) if isinstance(k, np.ndarray)]
    if not array_axes:
        return None
    arrays = np.broadcast_arrays(*(key[axis] for axis in array_axes))
    shape = arrays[0].shape
    if arrays[0].size == 0:
        return None
    points = {
        axis: np.ascontiguousarray(a.ravel(), dtype=np.int64)
        for axis, a in zip(array_axes, arrays, strict=True)
    }
    selection = tuple(slice(None) if isinstance(k, np.ndarray) else k for k in key)
    first = array_axes[0]

    def arrange(result: npt.NDArray[Any]) -> npt.NDArray[Any]:
        moved = np.moveaxis(result, first, 0)
        return moved.reshape(shape + moved.shape[1:])

    return (selection, points), arrange


class FastzarrArrayWrapper(BackendArray):
    """An xarray ``BackendArray`` over a :class:`fastzarr.Array`.

    Basic and outer keys go to the core as they are (xarray's ``OUTER`` support makes slices'
    steps positive and integer arrays sorted); vectorized keys become one point read that
    decodes only the chunks holding points. Pickles to the fastzarr Array (URL, storage options,
    path) and tokenizes for dask from the store URL, the array path and a metadata fingerprint.
    """

    __slots__ = ("_array", "_preloaded", "dtype", "shape")

    def __init__(self, array: fz.Array, dtype: np.dtype[Any] | None = None) -> None:
        self._array = array
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype: np.dtype[Any] = array.dtype if dtype is None else np.dtype(dtype)
        # The whole array, when it was read ahead with its group's other index coordinates.
        self._preloaded: npt.NDArray[Any] | None = None

    def preload(self, values: npt.NDArray[Any]) -> None:
        """Serves every later read from ``values`` (the whole array, already read)."""
        if values.shape != self.shape:
            raise ValueError(f"preloaded shape {values.shape} is not the array's {self.shape}")
        self._preloaded = values

    def get_array(self) -> fz.Array:
        """The fastzarr Array this wrapper reads from."""
        return self._array

    def _fetch(self, request: Request) -> npt.NDArray[Any]:
        """Every read goes through here (``fastzarr.load`` plans reads by overriding it)."""
        configure_for_dask_worker()
        return fetch(self._array, request)

    async def _async_fetch(self, request: Request) -> npt.NDArray[Any]:
        return await asyncio.to_thread(self._fetch, request)

    def _raw_outer(self, key: tuple[Any, ...]) -> npt.NDArray[Any]:
        return self._fetch((key,))

    async def _async_raw_outer(self, key: tuple[Any, ...]) -> npt.NDArray[Any]:
        return await self._async_fetch((key,))

    @staticmethod
    def _index_preloaded(values: npt.NDArray[Any], key: indexing.ExplicitIndexer) -> Any:
        # Basic indexing here; xarray applies any outer or vectorized rest to the result in numpy.
        return indexing.explicit_indexing_adapter(
            key, values.shape, indexing.IndexingSupport.BASIC, values.__getitem__
        )

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        if self._preloaded is not None:
            return self._index_preloaded(self._preloaded, key)
        if isinstance(key, indexing.VectorizedIndexer):
            planned = points_request(key.tuple)
            if planned is not None:
                request, arrange = planned
                return arrange(self._fetch(request))
        return indexing.explicit_indexing_adapter(key, self.shape, INDEXING_SUPPORT, self._raw_outer)

    async def async_getitem(self, key: indexing.ExplicitIndexer) -> Any:
        """Reads in a worker thread (the Rust core releases the GIL), so variables load concurrently."""
        if self._preloaded is not None:
            return self._index_preloaded(self._preloaded, key)
        if isinstance(key, indexing.VectorizedIndexer):
            planned = points_request(key.tuple)
            if planned is not None:
                request, arrange = planned
                return arrange(await self._async_fetch(request))
        return await compat_xr.async_explicit_indexing(
            key, self.shape, INDEXING_SUPPORT, self._raw_outer, self._async_raw_outer
        )

    def __reduce__(self) -> tuple[Any, tuple[fz.Array, np.dtype[Any]]]:
        return (type(self), (self._array, self.dtype))

    def __dask_tokenize__(self) -> tuple[str, str, str, str, str]:
        array = self._array
        return (
            "fastzarr.FastzarrArrayWrapper",
            array.url,
            array.path,
            metadata_fingerprint(array),
            str(self.dtype),
        )

    def __repr__(self) -> str:
        return f"FastzarrArrayWrapper(url={self._array.url!r}, path={self._array.path!r}, shape={self.shape})"


# --------------------------------------------------------------------------------------------
# the data store


def normalize_url(url: str | os.PathLike[str]) -> str:
    """Local paths become absolute (they must mean the same file in a dask worker); URLs stay."""
    text = os.fspath(url)
    if "://" in text:
        return text
    return os.path.abspath(os.path.expanduser(text))


def _names(names: str | Iterable[str] | None) -> frozenset[str]:
    if names is None:
        return frozenset()
    if isinstance(names, str):
        return frozenset([names])
    return frozenset(str(n) for n in names)


def _group_path(group: str | None) -> str:
    return (group or "").strip("/")


def _v2_fill_value(array: fz.Array, meta: Mapping[str, Any]) -> Any:
    """zarr-python's ``fill_value`` of a v2 array: ``None`` where the metadata says null."""
    return None if meta.get("fill_value") is None else array.fill_value


def _stored_dtype(array: fz.Array, meta: Mapping[str, Any]) -> np.dtype[Any]:
    """The stored data type (v2 keeps the byte order zarr-python reports; reads are native)."""
    if array.zarr_format == 2 and array.dtype.kind not in "OT":
        declared = meta.get("dtype")
        if isinstance(declared, str):
            try:
                stored = np.dtype(declared)
            except TypeError:
                return array.dtype
            if stored.newbyteorder("=") == array.dtype.newbyteorder("="):
                return stored
    return array.dtype


def dims_and_attrs(
    zarr_format: int, ndim: int, attrs: dict[str, Any], meta: Mapping[str, Any], name: str
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Dimension names and user attributes (``attrs``, taken over), the way xarray's zarr backend
    finds them; ``meta`` is the array's metadata document."""
    if zarr_format == 3:
        dims = tuple(str(d) for d in (meta.get("dimension_names") or ()))
        if len(dims) != ndim:
            raise KeyError(
                f"Zarr array {name!r} is missing the `dimension_names` metadata which is "
                "required for xarray to determine variable dimensions."
            )
        return dims, attrs
    if DIMENSION_KEY in attrs:
        names = attrs.pop(DIMENSION_KEY)
        dims = tuple(d if type(d) is str else str(d) for d in names)
    else:
        nczarr = meta.get("_NCZARR_ARRAY")
        if not isinstance(nczarr, dict) or "dimrefs" not in nczarr:
            raise KeyError(
                f"Zarr array {name!r} is missing the attribute `{DIMENSION_KEY}` and the NCZarr "
                "metadata, which are required for xarray to determine variable dimensions."
            )
        dims = tuple(os.path.basename(str(d)) for d in nczarr["dimrefs"])
    # NetCDF's own attributes are rare: the dict is copied only when it holds one.
    if any(k.lower().startswith("_nc") for k in attrs):
        attrs = {k: v for k, v in attrs.items() if not k.lower().startswith("_nc")}
    return dims, attrs


class _Layout(NamedTuple):
    """What every array with one metadata layout (its document without attributes) shares."""

    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    dtype: np.dtype[Any]
    stored_dtype: np.dtype[Any]
    fill_value: Any
    codecs: dict[str, Any]
    meta: dict[str, Any]


def _layout_of(array: fz.Array) -> _Layout:
    meta = array.metadata
    zarr_format = array.zarr_format
    shards = array.shards
    return _Layout(
        zarr_format=zarr_format,
        shape=tuple(map(int, array.shape)),
        chunks=tuple(map(int, array.chunks)),
        shards=None if shards is None else tuple(map(int, shards)),
        dtype=array.dtype,
        stored_dtype=_stored_dtype(array, meta),
        fill_value=_v2_fill_value(array, meta) if zarr_format == 2 else array.fill_value,
        codecs=codec_encoding(meta),
        meta=meta,
    )


def _encoding_of(layout: _Layout, dims: tuple[str, ...], fill_value_as_mask: bool) -> dict[str, Any]:
    """The encoding xarray's ZarrStore gives every variable of ``layout`` over ``dims``, with
    keys in the order its ``open_store_variable`` sets them."""
    encoding: dict[str, Any] = {
        "chunks": layout.chunks,
        "preferred_chunks": dict(zip(dims, layout.chunks, strict=True)),
    }
    if layout.dtype.kind == "T":
        # xarray keeps a StringDType variable as StringDType when its encoding says so.
        encoding["dtype"] = layout.dtype
    codecs = layout.codecs
    encoding.update((key, codecs[key]) for key in ("compressors", "filters") if key in codecs)
    encoding["shards"] = layout.shards
    if "serializer" in codecs:
        encoding["serializer"] = codecs["serializer"]
    if not fill_value_as_mask and layout.zarr_format == 3:
        encoding["fill_value"] = layout.fill_value
    return encoding


class StoredVariable(NamedTuple):
    """An array as xarray's ZarrStore describes it, before CF decoding: all but the data."""

    dims: tuple[Hashable, ...]
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    attrs: dict[str, Any]
    encoding: dict[str, Any]

    @property
    def sizes(self) -> dict[Hashable, int]:
        """Length per dimension name."""
        return dict(zip(self.dims, self.shape, strict=True))


class FastzarrStore(AbstractDataStore):
    """A read-only xarray data store over a :class:`fastzarr.Group`."""

    __slots__ = (
        "_consolidated",
        "_drop",
        "_encodings",
        "_group",
        "_group_path",
        "_layouts",
        "_preloaded",
        "_storage_options",
        "_timeout",
        "_url",
        "_use_zarr_fill_value_as_mask",
        "_zarr_format",
        "_zarr_store",
    )

    def __init__(
        self,
        group: fz.Group,
        *,
        url: str,
        group_path: str = "",
        storage_options: dict[str, Any] | None = None,
        use_zarr_fill_value_as_mask: bool | None = None,
        drop_variables: str | Iterable[str] | None = None,
        timeout: float | None = None,
        preloaded: Mapping[str, npt.NDArray[Any]] | None = None,
    ) -> None:
        self._group = group
        self._timeout = timeout
        # Whole arrays the caller already read (dimension coordinates of many stores in one pass).
        self._preloaded = dict(preloaded or {})
        self._drop = _names(drop_variables)
        self._url = url
        self._group_path = group_path
        self._storage_options = storage_options
        self._zarr_format = group.zarr_format
        self._consolidated = group.consolidated
        if use_zarr_fill_value_as_mask is None:
            use_zarr_fill_value_as_mask = group.zarr_format == 2
        self._use_zarr_fill_value_as_mask = use_zarr_fill_value_as_mask
        self._zarr_store: ZarrStore | None = None
        # Descriptions shared by arrays with equal metadata but for their attributes.
        self._layouts: dict[str, _Layout] = {}
        self._encodings: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str],
        *,
        group: str | None = None,
        consolidated: bool | None = None,
        storage_options: dict[str, Any] | None = None,
        zarr_format: int | None = None,
        use_zarr_fill_value_as_mask: bool | None = None,
        drop_variables: str | Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> FastzarrStore:
        """Opens the group at ``group`` of the store at ``url`` (metadata only); arrays named in
        ``drop_variables`` are never opened. ``timeout`` bounds the open and each member's."""
        location = normalize_url(url)
        use_consolidated = False if consolidated is False else None
        root = fz.open_group(
            location, storage_options=storage_options, use_consolidated=use_consolidated, timeout=timeout
        )
        if consolidated and not root.consolidated:
            raise ValueError(f"consolidated=True but the store {location!r} has no consolidated metadata")
        if zarr_format is not None and root.zarr_format != zarr_format:
            raise FileNotFoundError(
                f"no Zarr v{zarr_format} group at {location!r} (found a v{root.zarr_format} group)"
            )
        path = _group_path(group)
        try:
            node = root[path] if path else root
        except KeyError:
            raise _missing_group(root, path, location) from None
        if not isinstance(node, fz.Group):
            raise fz.StoreNotFoundError(f"{path!r} in {location!r} is an array, not a group")
        return cls(
            node,
            url=location,
            group_path=path,
            storage_options=storage_options,
            use_zarr_fill_value_as_mask=use_zarr_fill_value_as_mask,
            drop_variables=drop_variables,
            timeout=timeout,
        )

    @property
    def group(self) -> fz.Group:
        """The fastzarr Group this store reads."""
        return self._group

    @property
    def consolidated(self) -> bool:
        """Whether the group's metadata was read from the store's consolidated metadata."""
        return bool(self._consolidated)

    def subgroup(self, name: str, group: fz.Group) -> FastzarrStore:
        """A store over ``group``, this store's member ``name``, opened with the same options."""
        return FastzarrStore(
            group,
            url=self._url,
            group_path=f"{self._group_path}/{name}".strip("/"),
            storage_options=self._storage_options,
            use_zarr_fill_value_as_mask=self._use_zarr_fill_value_as_mask,
            drop_variables=self._drop,
            timeout=self._timeout,
        )

    def load(self) -> tuple[Mapping[str, xr.Variable], Mapping[str, Any]]:
        """Variables and attributes (xarray's one entry point), the dimension coordinates read
        ahead in one pass: xarray reads each of them to build its indexes, one after another,
        which over object storage costs a round trip per coordinate."""
        variables, attributes = super().load()  # type: ignore[no-untyped-call]
        _preload_dimension_coordinates(variables, self._timeout, self._preloaded)
        return variables, attributes

    def get_variables(self) -> dict[str, xr.Variable]:
        """One lazily indexed variable per array in the group (sub-groups are not variables),
        every array described by one call to the core (`fastzarr.Group.describe`)."""
        names = [name for name in self._group.array_keys() if name not in self._drop]
        return {name: self._variable(name, found) for name, found in self._describe(names).items()}

    def open_store_variable(self, name: str) -> xr.Variable:
        """The variable for array ``name``, not yet CF-decoded (as xarray's ZarrStore builds it)."""
        return self._variable(name, self._describe([name])[name])

    def describe_variable(self, name: str) -> StoredVariable:
        """What ``open_store_variable(name)`` would hold, without a lazy array to read it with
        (cheaper where the data are read some other way)."""
        return self.describe_variables([name])[name]

    def describe_variables(self, names: Iterable[str]) -> dict[str, StoredVariable]:
        """`describe_variable` of each of ``names``, in one call to the core."""
        described = {}
        for name, found in self._describe(list(names)).items():
            if found is None:
                v = self._zarr_python_variable(name)
                described[name] = StoredVariable(v.dims, v.shape, v.dtype, dict(v.attrs), dict(v.encoding))
            else:
                described[name] = found[1]
        return described

    def _variable(self, name: str, found: tuple[fz.Array, StoredVariable] | None) -> xr.Variable:
        if found is None:
            return self._zarr_python_variable(name)
        member, described = found
        data = indexing.LazilyIndexedArray(FastzarrArrayWrapper(member, described.dtype))
        return xr.Variable(described.dims, data, described.attrs, described.encoding)

    def _describe(self, names: list[str]) -> dict[str, tuple[fz.Array, StoredVariable] | None]:
        """Each array of ``names`` and its description, from one `fastzarr.Group.describe` call;
        None for an array fastzarr cannot decode (read through zarr-python instead)."""
        described: dict[str, tuple[fz.Array, StoredVariable] | None] = {}
        with _gc.paused():
            for name, found in self._group.describe(names).items():
                if isinstance(found, fz.UnsupportedCodecError):
                    described[name] = None
                elif isinstance(found, BaseException):
                    raise found
                else:
                    member, layout_key, attributes, _ = found
                    described[name] = (member, self._stored(member, name, layout_key, attributes))
        return described

    def _stored(
        self, member: fz.Array, name: str, layout_key: str, attributes: dict[str, Any]
    ) -> StoredVariable:
        """Dims, stored dtype, attributes and encoding of ``member`` as xarray's ZarrStore has them.
        What depends on the metadata but not the attributes is worked out once per layout: a
        store of thousands of features repeats a few."""
        layout = self._layouts.get(layout_key)
        if layout is None:
            layout = self._layouts[layout_key] = _layout_of(member)
        dims, attrs = dims_and_attrs(layout.zarr_format, len(layout.shape), attributes, layout.meta, name)
        template = self._encodings.get((layout_key, dims))
        if template is None:
            mask = self._use_zarr_fill_value_as_mask
            template = self._encodings[layout_key, dims] = _encoding_of(layout, dims, mask)
        encoding = dict(template)
        encoding["preferred_chunks"] = dict(template["preferred_chunks"])
        if self._use_zarr_fill_value_as_mask:
            if layout.fill_value is not None:
                attrs["_FillValue"] = layout.fill_value
        elif "_FillValue" in attrs:
            attrs["_FillValue"] = decode_fill_value(attrs["_FillValue"], layout.dtype)
        return StoredVariable(dims, layout.shape, layout.stored_dtype, attrs, encoding)

    def _zarr_python_variable(self, name: str) -> xr.Variable:
        """Reads an array fastzarr's core cannot decode through zarr-python, as xr.open_zarr does."""
        try:
            importlib.import_module("zarr")
        except ImportError as err:
            raise fz.UnsupportedCodecError(
                f"fastzarr cannot decode array {name!r} of {self._url!r} (e.g. pickled "
                "objects); install zarr-python to read such variables through it"
            ) from err
        if self._zarr_store is None:
            self._zarr_store = ZarrStore.open_group(
                self._url,
                group=self._group_path or None,
                mode="r",
                consolidated=self._consolidated,
                storage_options=self._storage_options or None,
                zarr_format=self._zarr_format,
                use_zarr_fill_value_as_mask=self._use_zarr_fill_value_as_mask,
            )
        variable: xr.Variable = self._zarr_store.open_store_variable(name)
        return variable

    def get_attrs(self) -> dict[str, Any]:
        """The group's attributes, without NCZarr's private ones."""
        return {k: v for k, v in self._group.attrs.items() if not k.lower().startswith("_nc")}

    def get_dimensions(self) -> dict[str, int]:
        """Dimension lengths over all arrays; conflicting lengths raise ``ValueError``."""
        dimensions: dict[str, int] = {}
        for name, variable in self.get_variables().items():
            for dim, size in zip(variable.dims, variable.shape, strict=True):
                if dimensions.setdefault(str(dim), size) != size:
                    raise ValueError(
                        f"found conflicting lengths for dimension {dim} in {name!r} "
                        f"({size} != {dimensions[str(dim)]})"
                    )
        return dimensions

    def close(self) -> None:
        """Nothing to release: fastzarr arrays hold no open files."""
        if self._zarr_store is not None:
            self._zarr_store.close()


_PRELOAD_LIMIT = 64 * 2**20
"""Bytes of dimension coordinates read ahead at most (beyond, xarray reads them as usual)."""


def _preload_dimension_coordinates(
    variables: Mapping[str, xr.Variable],
    timeout: float | None,
    already_read: Mapping[str, npt.NDArray[Any]],
) -> None:
    """Has every 1-D dimension coordinate (``name == dim``) of ``variables`` served from memory:
    from ``already_read`` where the caller read it (with the right shape), the others read here
    in one pass."""
    wrappers: dict[str, FastzarrArrayWrapper] = {}
    for name, variable in variables.items():
        data = compat_xr.variable_data(variable)  # the lazy array this backend built
        if variable.dims != (name,) or not isinstance(data, indexing.LazilyIndexedArray):
            continue
        wrapper = compat_xr.wrapped(data)
        if isinstance(wrapper, FastzarrArrayWrapper) and wrapper._preloaded is None:
            values = already_read.get(name)
            if values is not None and values.shape == wrapper.shape:
                wrapper.preload(values)
            else:
                wrappers[name] = wrapper
    nbytes = sum(w.dtype.itemsize * int(np.prod(w.shape)) for w in wrappers.values())
    if len(wrappers) < 2 or nbytes > _PRELOAD_LIMIT:
        return
    arrays = fz.read_many([(w.get_array(), (slice(None),)) for w in wrappers.values()], timeout=timeout)
    for wrapper, values in zip(wrappers.values(), arrays, strict=True):
        wrapper.preload(values)


# --------------------------------------------------------------------------------------------
# the entry point


#: xarray's zarr engine's words, kept the same so that filters written for its warning match.
UNCONSOLIDATED_MESSAGE = (
    "Failed to open Zarr store with consolidated metadata, "
    "but successfully read with non-consolidated metadata. "
    "This is typically much slower for opening a dataset. "
    "To silence this warning, consider:\n"
    "1. Consolidating metadata in this existing store with "
    "zarr.consolidate_metadata().\n"
    "2. Explicitly setting consolidated=False, to avoid trying "
    "to read consolidate metadata, or\n"
    "3. Explicitly setting consolidated=True, to raise an "
    "error in this case instead of falling back to try "
    "reading non-consolidated metadata."
)

_LIBRARY_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (xr, fz)
    if module.__file__ is not None  # a namespace package has none
)


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside xarray and fastzarr (as xarray's warnings
    point at the user's line, not at library code)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


@contextlib.contextmanager
def unconsolidated_quietly() -> Iterator[None]:
    """Silences :func:`warn_unconsolidated` for fastzarr's own reads of a store (appending to
    it, rewriting it), whose callers have no ``consolidated`` argument to act on the advice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
        yield


def warn_unconsolidated(store: FastzarrStore, consolidated: bool | None) -> None:
    """Warns as xarray's zarr engine does when ``consolidated=None`` (try consolidated metadata)
    found none and the group was read array by array."""
    if consolidated is None and not store.consolidated:
        warnings.warn(UNCONSOLIDATED_MESSAGE, RuntimeWarning, stacklevel=_user_stacklevel())


_LISTED_GROUPS = 12
"""Group paths a "no group" message lists: enough to spot a typo, not a screenful."""


def _missing_group(root: fz.Group, path: str, location: str) -> fz.MemberNotFoundError:
    """The error for ``group=path`` missing from the store: the groups it has, closest first."""
    found: list[str] = []
    pending = [("", root)]
    while pending and len(found) < 1000:  # a bounded walk: metadata only, consolidated when it can
        prefix, group = pending.pop()
        for name in group.group_keys():
            child = f"{prefix}{name}"
            found.append(child)
            member = group[name]
            if isinstance(member, fz.Group):
                pending.append((f"{child}/", member))
    if not found:
        return fz.MemberNotFoundError(
            f"no group {path!r} in the store {location!r}, which has no groups below its root "
            f"(open it without group= to read the root group's arrays)"
        )
    wanted = path.lower()
    found.sort(key=lambda g: (-difflib.SequenceMatcher(None, wanted, g.lower()).ratio(), g))
    shown = ", ".join(found[:_LISTED_GROUPS])
    more = f", ... ({len(found) - _LISTED_GROUPS} more)" if len(found) > _LISTED_GROUPS else ""
    return fz.MemberNotFoundError(
        f"no group {path!r} in the store {location!r}; its groups, closest first: {shown}{more}"
    )


class FastzarrBackendEntrypoint(BackendEntrypoint):
    """xarray backend ``engine="fastzarr"``: Zarr v2/v3 stores read by fastzarr's Rust core."""

    description = "Open Zarr stores (v2 and v3) with fastzarr's parallel Rust reader"
    url = "https://github.com/fastzarr/fastzarr"
    open_dataset_parameters: ClassVar[tuple[str, ...] | None] = (
        "filename_or_obj",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "drop_variables",
        "use_cftime",
        "decode_timedelta",
        "group",
        "consolidated",
        "storage_options",
        "zarr_format",
        "use_zarr_fill_value_as_mask",
        "timeout",
    )

    supports_groups: ClassVar[bool] = True

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Never: ``.zarr`` paths stay with xarray's zarr engine unless ``engine="fastzarr"``."""
        return False

    def open_groups_as_dict(  # type: ignore[override]
        self, filename_or_obj: str | os.PathLike[str], *, group: str | None = None, **options: Any
    ) -> dict[str, xr.Dataset]:
        """Every group at and below ``group``, each as the Dataset ``open_dataset`` gives for it
        (``options`` are its keyword arguments), keyed by its path as
        ``xr.open_groups(..., engine="zarr")`` keys them: ``"/"``, ``"/a"``, ``"/a/b"``, or
        relative to ``group`` when one is given (``"."``, ``"b"``)."""
        opening = {k: options.pop(k) for k in _STORE_OPTIONS if k in options}
        top = FastzarrStore.open(filename_or_obj, group=group, **opening)
        warn_unconsolidated(top, opening.get("consolidated"))
        datasets: dict[str, xr.Dataset] = {}
        try:
            for path, store in _group_stores(top):
                # Named as xarray's zarr engine names them: absolute below the root, relative
                # (with "." for the group itself) below a group asked for.
                name = path if not group else (path.lstrip("/") or ".")
                datasets[name] = self.open_dataset(
                    store, drop_variables=opening.get("drop_variables"), **options
                )
        except BaseException:
            for dataset in datasets.values():
                dataset.close()
            raise
        return datasets

    def open_datatree(  # type: ignore[override]
        self, filename_or_obj: str | os.PathLike[str], **kwargs: Any
    ) -> xr.DataTree:
        """The groups of ``open_groups_as_dict`` as one DataTree; closing the tree closes them."""
        datasets = self.open_groups_as_dict(filename_or_obj, **kwargs)
        try:
            tree = xr.DataTree.from_dict(datasets)
        except BaseException:
            for dataset in datasets.values():
                dataset.close()
            raise
        for name, dataset in datasets.items():
            tree[name].set_close(dataset.close)
        return tree

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str] | FastzarrStore,
        *,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool | Literal["coordinates", "all"] = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        group: str | None = None,
        consolidated: bool | None = None,
        storage_options: dict[str, Any] | None = None,
        zarr_format: int | None = None,
        use_zarr_fill_value_as_mask: bool | None = None,
        timeout: float | None = None,
    ) -> xr.Dataset:
        """Opens a Zarr group as a lazily loaded Dataset, decoded like ``xr.open_zarr``;
        ``timeout`` (seconds) bounds the metadata reads (``fastzarr.TimeoutError``)."""
        if isinstance(filename_or_obj, FastzarrStore):
            store = filename_or_obj
        elif isinstance(filename_or_obj, str | os.PathLike):
            store = FastzarrStore.open(
                filename_or_obj,
                group=group,
                consolidated=consolidated,
                storage_options=storage_options,
                zarr_format=zarr_format,
                use_zarr_fill_value_as_mask=use_zarr_fill_value_as_mask,
                drop_variables=drop_variables,
                timeout=timeout,
            )
            warn_unconsolidated(store, consolidated)
        else:
            raise TypeError(f"engine='fastzarr' opens a URL or path, not {type(filename_or_obj).__name__}")
        try:
            return StoreBackendEntrypoint().open_dataset(
                store,
                mask_and_scale=mask_and_scale,
                decode_times=decode_times,
                concat_characters=concat_characters,
                decode_coords=decode_coords,
                drop_variables=drop_variables,
                use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
            )
        except BaseException:
            store.close()
            raise


#: open_dataset's arguments that say how to open the store (the others say how to decode).
_STORE_OPTIONS = (
    "consolidated",
    "storage_options",
    "zarr_format",
    "use_zarr_fill_value_as_mask",
    "drop_variables",
    "timeout",
)


def _group_stores(top: FastzarrStore, path: str = "/") -> Iterator[tuple[str, FastzarrStore]]:
    """``top`` (named ``path``) and a store for every group below it, depth first in name order
    as xarray's zarr engine walks them."""
    yield path, top
    for key in sorted(top.group.group_keys()):
        member = top.group[key]
        assert isinstance(member, fz.Group)
        yield from _group_stores(top.subgroup(key, member), f"{path.rstrip('/')}/{key}")


class _Default:
    """Marks ``chunks`` left out: dask chunks when dask is installed, as in ``xr.open_zarr``."""

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT_CHUNKS: Any = _Default()


def _default_chunks(chunked_array_type: str | None) -> dict[str, Any] | None:
    return {} if compat_xr.has_chunk_manager(chunked_array_type) else None


def open_zarr(  # noqa: PLR0917 - the positional order of xr.open_zarr
    store: str | os.PathLike[str],
    group: str | None = None,
    chunks: int | dict[Any, Any] | Literal["auto"] | None = _DEFAULT_CHUNKS,
    decode_cf: bool = True,
    mask_and_scale: bool = True,
    decode_times: bool = True,
    concat_characters: bool = True,
    decode_coords: bool | Literal["coordinates", "all"] = True,
    drop_variables: str | Iterable[str] | None = None,
    consolidated: bool | None = None,
    overwrite_encoded_chunks: bool = False,
    storage_options: dict[str, Any] | None = None,
    decode_timedelta: bool | None = None,
    use_cftime: bool | None = None,
    zarr_format: int | None = None,
    use_zarr_fill_value_as_mask: bool | None = None,
    chunked_array_type: str | None = None,
    from_array_kwargs: Mapping[str, Any] | None = None,
    create_default_indexes: bool = True,
    timeout: float | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Opens a Zarr store as an xarray Dataset read by fastzarr: a drop-in for ``xr.open_zarr``.

    Takes the arguments of ``xr.open_zarr`` with the same meaning and defaults (``chunks``
    defaults to ``{}``, the stored chunks, when dask is installed, else ``None``) and returns
    the Dataset ``xr.open_zarr`` returns, lazily indexed or dask-backed. ``storage_options`` are
    fastzarr's (object_store) options. ``consolidated=False`` ignores consolidated metadata;
    ``consolidated=True`` on a store without it raises ``ValueError``; ``None`` uses it where
    the store has it and otherwise warns (``RuntimeWarning``) as ``xr.open_zarr`` does. Load it with
    :func:`fastzarr.load` (all variables in one parallel pass) or with xarray's ``.load()`` /
    ``await .load_async()``. ``timeout`` (seconds) bounds opening (the metadata reads) with
    ``fastzarr.TimeoutError``; loads take their own (``fastzarr.load(ds, timeout=...)``).
    """
    if kwargs:
        raise TypeError("open_zarr() got unexpected keyword arguments " + ",".join(kwargs))
    if isinstance(chunks, _Default):
        chunks = _default_chunks(chunked_array_type)
    backend_kwargs: dict[str, Any] = {
        "consolidated": consolidated,
        "storage_options": storage_options,
        "zarr_format": zarr_format,
        "use_zarr_fill_value_as_mask": use_zarr_fill_value_as_mask,
        "overwrite_encoded_chunks": overwrite_encoded_chunks,
        "timeout": timeout,
    }
    return xr.open_dataset(
        normalize_url(store),
        group=group,
        decode_cf=decode_cf,
        mask_and_scale=mask_and_scale,
        decode_times=decode_times,
        concat_characters=concat_characters,
        decode_coords=decode_coords,
        engine=FastzarrBackendEntrypoint,
        chunks=chunks,
        drop_variables=drop_variables,
        create_default_indexes=create_default_indexes,
        chunked_array_type=chunked_array_type,
        from_array_kwargs=dict(from_array_kwargs or {}),
        backend_kwargs=backend_kwargs,
        decode_timedelta=decode_timedelta,
        use_cftime=use_cftime,
    )
