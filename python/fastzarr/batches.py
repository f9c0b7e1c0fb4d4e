"""Training batches: :class:`BatchGenerator`, xbatcher 0.4's class batch for batch, with each
batch read in one fastzarr pass over all of its variables and the next batches read ahead while
the training step runs.

Swapping ``from xbatcher import BatchGenerator`` for ``from fastzarr import BatchGenerator`` is the
only change a training script needs: the constructor, ``len()``, indexing, iteration, the
``cache`` hooks and every batch (values, coordinates, attributes, the stacked ``sample``
dimension) are xbatcher's. What differs is how a batch is read: xbatcher asks xarray (and dask,
per chunk and per variable) for it; fastzarr reads the box every patch of the batch lies in, for
all variables at once (:func:`fastzarr.load`), and cuts the patches out of memory.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any, TypeAlias

import numpy as np
import xarray as xr

from fastzarr._patches import Selector, patch_selectors
from fastzarr.loading import load

XarrayObject: TypeAlias = xr.Dataset | xr.DataArray

__all__ = ["BatchGenerator"]


class _Schema:
    """Which patches make up each batch: xbatcher 0.4's ``BatchSchema`` rules, to the letter."""

    def __init__(
        self,
        sizes: Mapping[Hashable, int],
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int],
        batch_dims: Mapping[Hashable, int],
        concat_input_dims: bool,
    ) -> None:
        self.input_dims = dict(input_dims)
        self.input_overlap = dict(input_overlap)
        self.batch_dims = dict(batch_dims)
        self.concat_input_dims = concat_input_dims
        duplicate = {dim: n for dim, n in self.batch_dims.items() if self.input_dims.get(dim) is not None}
        unique = {dim: n for dim, n in self.batch_dims.items() if self.input_dims.get(dim) is None}
        sliced = {**unique, **self.input_dims}
        if duplicate and not concat_input_dims:
            warnings.warn(
                "The following dimensions were included in both ``input_dims`` "
                "and ``batch_dims``. Since ``concat_input_dims`` is ``False``, "
                f"these dimensions will not impact batch generation: {duplicate}",
                stacklevel=4,
            )
        patches = patch_selectors(sizes, sliced, self.input_overlap)
        self.selectors: dict[int, list[Selector]]
        if not concat_input_dims:
            self.selectors = {i: [patch] for i, patch in enumerate(patches)}
        elif not self.batch_dims:
            self.selectors = {0: patches}
        elif not duplicate:
            groups = itertools.groupby(patches, key=itemgetter(*self.batch_dims))
            self.selectors = dict(enumerate(list(group) for _, group in groups))
        else:
            self.selectors = self._grouped_by_input_and_batch_dims(sizes, sliced, patches)

    def _grouped_by_input_and_batch_dims(
        self, sizes: Mapping[Hashable, int], sliced: Mapping[Hashable, int], patches: list[Selector]
    ) -> dict[int, list[Selector]]:
        """Patches gathered into batches of ``batch_dims`` along a dimension that is also an
        input dimension; patches past the last whole batch are left out."""
        stride = {dim: n - self.input_overlap.get(dim, 0) for dim, n in self.input_dims.items()}
        per_batch = {dim: int(np.ceil(n / stride.get(dim, n))) for dim, n in self.batch_dims.items()}
        per_dim = {
            dim: int((sizes[dim] - self.input_overlap.get(dim, 0)) // (n - self.input_overlap.get(dim, 0)))
            for dim, n in sliced.items()
        }
        batches_per_dim = {dim: int(sizes[dim] // self.batch_dims.get(dim, sizes[dim])) for dim in sliced}
        batch_of_patch = np.array(
            list(
                itertools.product(
                    *(
                        np.floor(np.arange(0, n) / per_batch.get(dim, n + 1)).astype(np.int64)
                        for dim, n in per_dim.items()
                    )
                )
            )
        ).transpose()
        limit = np.fromiter(batches_per_dim.values(), dtype=int)
        limit = np.pad(limit, (0, len(per_dim) - len(batches_per_dim)), constant_values=1)
        in_range = np.all(batch_of_patch < limit[:, np.newaxis], axis=0)
        flat = np.ravel_multi_index(batch_of_patch, tuple(batches_per_dim.values()), mode="clip")
        selectors: dict[int, list[Selector]] = {
            k: [] for k in range(int(np.prod(list(batches_per_dim.values()))))
        }
        for i, patch in enumerate(patches):
            if in_range[i]:
                selectors[int(flat[i])].append(patch)
        return selectors


def _drop_input_dims(obj: XarrayObject, input_dims: Mapping[Hashable, int], suffix: str) -> XarrayObject:
    """The patch with each input dimension renamed ``<dim><suffix>``, its coordinate values kept
    under the old name (so patches concatenate along a new dimension without aligning)."""
    out = obj.copy()
    for dim in input_dims:
        new = f"{dim}{suffix}"
        out = out.rename({dim: new})
        # For a DataArray xbatcher's ``new in out`` looks at the values, never true for numbers
        # (and an error for dask): its patches keep ``<dim><suffix>`` as the dimension coordinate.
        if isinstance(out, xr.Dataset) and new in out:
            out = out.drop_vars(new)
            out.coords[dim] = new, obj[dim].data, obj[dim].attrs
    return out


def _stack_batch_dims(obj: XarrayObject, input_dims: list[Hashable]) -> XarrayObject:
    """Every dimension but the input ones stacked into ``sample``, first (when there are 2+)."""
    batch_dims = [d for d in obj.sizes if d not in input_dims]
    if len(batch_dims) < 2:
        return obj
    return obj.stack(sample=batch_dims).transpose("sample", *input_dims)


class BatchGenerator:
    """Batches of an xarray Dataset or DataArray for training, exactly as
    ``xbatcher.BatchGenerator`` (0.4) makes them, read by fastzarr.

    Parameters are xbatcher's: ``input_dims`` (the size of a sample along each dimension the model
    sees, e.g. ``{"lat": 32, "lon": 32}``), ``input_overlap``, ``batch_dims`` (dimensions always
    iterated over, with the batch's size along each), ``concat_input_dims`` (stack the patches of
    a batch into ``sample``, with an ``input_batch`` level), ``preload_batch`` (load each batch into
    numpy; ``False`` hands out lazy selections, as xbatcher does), ``cache`` (a mapping to store
    batches in as Zarr groups named by their index) and ``cache_preprocess`` (applied before
    caching).

    ``prefetch`` (fastzarr's own): batches are read this many at a time, in one pass (a chunk they
    share is decoded once), the next ones in the background while the caller works on these, so
    at most ``2 * prefetch`` batches are held at once. The reads release the GIL and decode on
    fastzarr's thread pool; ``0`` reads each batch when asked.

    Whatever backs ``ds`` (``engine="fastzarr"``, ``fz.open_zarr``, ``xr.open_zarr`` with or without
    dask, or memory), each batch is one :func:`fastzarr.load` of the box its patches lie in.
    """

    def __init__(  # noqa: PLR0917 - xbatcher's positional order
        self,
        ds: XarrayObject,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        batch_dims: Mapping[Hashable, int] | None = None,
        concat_input_dims: bool = False,
        preload_batch: bool = True,
        cache: MutableMapping[str, Any] | None = None,
        cache_preprocess: Callable[[XarrayObject], XarrayObject] | None = None,
        *,
        prefetch: int = 4,
    ) -> None:
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, not {prefetch}")
        self.ds = ds
        self.cache = cache
        self.cache_preprocess = cache_preprocess
        self.preload_batch = preload_batch
        self.prefetch = prefetch
        self._schema = _Schema(ds.sizes, input_dims, input_overlap or {}, batch_dims or {}, concat_input_dims)

    @property
    def input_dims(self) -> dict[Hashable, int]:
        return self._schema.input_dims

    @property
    def input_overlap(self) -> dict[Hashable, int]:
        return self._schema.input_overlap

    @property
    def batch_dims(self) -> dict[Hashable, int]:
        return self._schema.batch_dims

    @property
    def concat_input_dims(self) -> bool:
        return self._schema.concat_input_dims

    def __len__(self) -> int:
        return len(self._schema.selectors)

    def __getitem__(self, idx: int) -> XarrayObject:
        if not isinstance(idx, int):
            raise NotImplementedError(
                f"{type(self).__name__}.__getitem__ currently requires a single integer key"
            )
        if idx < 0:
            idx = list(self._schema.selectors)[idx]
        if idx not in self._schema.selectors:
            raise IndexError("list index out of range")
        if self.cache is not None and self._in_cache(idx):
            return self._cached(idx)
        batch = self._read(idx)
        if self.cache is not None:
            if self.cache_preprocess is not None:
                batch = self.cache_preprocess(batch)
            batch.to_zarr(self.cache, group=str(idx), mode="a")
        return batch

    def __iter__(self) -> Iterator[XarrayObject]:
        if not self.prefetch or not self.preload_batch or self.cache is not None:
            for idx in self._schema.selectors:
                yield self[idx]
            return
        yield from self._read_ahead(list(self._schema.selectors))

    def _read_ahead(self, order: list[int]) -> Iterator[XarrayObject]:
        """The batches of ``order`` read ``prefetch`` at a time in one pass each (a chunk that
        several of them share is decoded once), the next ``prefetch`` read while the caller works
        on these: at most ``2 * prefetch`` batches are held."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastzarr-batches")
        groups = [order[k : k + self.prefetch] for k in range(0, len(order), self.prefetch)]
        try:
            ahead = pool.submit(self._read_group, groups[0]) if groups else None
            for following in [*groups[1:], None]:
                assert ahead is not None
                batches = ahead.result()
                ahead = pool.submit(self._read_group, following) if following is not None else None
                yield from batches
                del batches
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _read(self, idx: int) -> XarrayObject:
        """Batch ``idx``: the box around its patches read in one pass, the patches cut from it."""
        return self._read_group([idx])[0]

    def _read_group(self, indices: list[int]) -> list[XarrayObject]:
        """Batches ``indices``, read in one pass of the box around all their patches when that box
        is not much more than theirs (each batch's own box otherwise)."""
        boxes = [_bounding_box(self._schema.selectors[idx]) for idx in indices]
        union = _bounding_box(boxes)
        if len(indices) > 1 and _volume(union) > 1.5 * sum(_volume(b) for b in boxes):
            return [batch for idx in indices for batch in self._read_group([idx])]
        region = self.ds.isel(union)
        if self.preload_batch:
            region = load(region, progress=False)  # type: ignore[type-var]
        return [self._cut(region, union, idx) for idx in indices]

    def _cut(self, region: XarrayObject, box: Selector, idx: int) -> XarrayObject:
        """Batch ``idx`` from ``region``, the data ``box`` selected."""
        patches = self._schema.selectors[idx]
        if not self.concat_input_dims:
            (patch,) = patches
            batch = region.isel(_within(patch, box))
            return _stack_batch_dims(batch, list(self.input_dims))
        suffix = "_input"
        pieces = [_drop_input_dims(region.isel(_within(p, box)), self.input_dims, suffix) for p in patches]
        # xarray's defaults of today spelled out: xbatcher's batches, without the warning that
        # they are about to change.
        stacked: XarrayObject = xr.concat(  # type: ignore[call-overload]
            pieces, dim="input_batch", data_vars="all", coords="different", compat="equals", join="outer"
        )
        return _stack_batch_dims(stacked, [f"{dim}{suffix}" for dim in self.input_dims])

    def _in_cache(self, idx: int) -> bool:
        assert self.cache is not None
        return f"{idx}/.zgroup" in self.cache or f"{idx}/zarr.json" in self.cache

    def _cached(self, idx: int) -> xr.Dataset:
        batch: xr.Dataset = xr.open_zarr(self.cache, group=str(idx))
        return batch.load() if self.preload_batch else batch


def _bounding_box(patches: list[Selector]) -> Selector:
    """The smallest slices holding every patch (``min()`` of nothing fails, as in xbatcher)."""
    dims = list(dict.fromkeys(dim for patch in patches for dim in patch))
    return {dim: slice(min(p[dim].start for p in patches), max(p[dim].stop for p in patches)) for dim in dims}


def _volume(box: Selector) -> int:
    return math.prod(s.stop - s.start for s in box.values())


def _within(patch: Selector, box: Selector) -> Selector:
    """``patch`` as slices of the region ``box`` selected."""
    return {dim: slice(s.start - box[dim].start, s.stop - box[dim].start) for dim, s in patch.items()}
