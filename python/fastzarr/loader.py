"""``fz.Loader``: shuffled training epochs over Zarr stores, as numpy batches, with no worker
processes.

Samples are grouped by the chunk they lie in; an epoch visits the groups in a shuffled order, a
window of groups at a time (as many as ``max_memory`` allows), mixes each window's samples and
reads the window in one fastzarr pass (every chunk decoded once per epoch) while the batches of
the ones before are served. Each sample is decoded straight into its row of its batch's arrays, so
nothing is copied after decoding and a batch owns its memory.

Reads run ahead on a background thread (two for stores read over the network, so that one
read's round trip overlaps the other's decoding), ``prefetch`` windows ahead of the one served
(two by default, so that a read has two windows' training steps to finish in), and across the
end of an epoch: once an epoch's last window is under way, the first windows of the epoch the
next iteration is expected to ask for are read, so its first batches need not wait.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

import fastzarr as fz
from fastzarr._epochs import Ids, SampleSpace, Shuffle, epoch_windows, rank_share
from fastzarr._patches import patch_selectors
from fastzarr._sizes import parse_size
from fastzarr._sources import GroupReader, Source, Target, open_sources
from fastzarr.cache import Cache
from fastzarr.report import format_size

__all__ = ["Loader", "LoaderStats"]

Batch = dict[str, npt.NDArray[Any]]
#: Chunk groups' values: by group, each sampled variable's, sample dimensions flattened first.
_Groups = dict[int, dict[str, npt.NDArray[Any]]]
#: Memory for the windows held at once (the one served and those read ahead) by default.
_DEFAULT_BUDGET = 512 * 2**20


@dataclass
class LoaderStats:
    """What the current (or last) epoch did: samples and batches handed out, wall time, the time
    the consumer waited for data, windows read, and the reads' chunks and bytes."""

    epoch: int = 0
    samples: int = 0
    batches: int = 0
    windows: int = 0
    seconds: float = 0.0
    waited_seconds: float = 0.0
    chunks: int = 0
    bytes_read: int = 0
    bytes_decoded: int = 0
    _started: float = field(default=0.0, repr=False)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        out["samples_per_second"] = self.samples_per_second
        return out


@dataclass
class _Window:
    """A window's samples, read: each chunk group's values (rows in C order over its box), and
    per sample (in serving order) its group, its row there and its patch."""

    values: _Groups
    group: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]
    patch: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.group)


#: What an epoch's reads are set by: the process that reads, the epoch's number, the seed, this
#: reader's rank and world size (a torch worker's share counted in), the batches skipped on
#: resuming, and the batch size, drop_last and shuffle (public attributes a caller may change).
_EpochKey = tuple[Any, ...]
#: A window's read: what it yields to the epoch's server, and what the read did (ReadStats fields).
_ReadResult = tuple[Any, Mapping[str, float]]


@dataclass
class _EpochReads:
    """One epoch's windows and the reads of them submitted so far (in order, from the first)."""

    key: _EpochKey
    windows: list[Ids]
    skip: int  # samples of the first window already served before a resume
    read: Callable[[int], _ReadResult]
    submitted: list[Future[_ReadResult]] = field(default_factory=list)
    taken: int = 0  # windows handed to the epoch's server
    released: int = 0  # samples (counted from the first window's start) the loader holds no more

    def __post_init__(self) -> None:
        self.bounds: list[int] = [0, *itertools.accumulate(len(w) for w in self.windows)]
        self.released = self.skip

    def held(self) -> int:
        """Samples of this epoch the loader holds: being served, read, or being read."""
        return max(0, self.bounds[len(self.submitted)] - self.released)

    def cancel(self) -> None:
        """Drops the reads not started; those under way finish and are forgotten."""
        if self.key[0] == os.getpid():  # a forked child must not touch its parent's futures
            for read in self.submitted:
                read.cancel()


class _ReadThreads:
    """The loader's background read threads (``workers`` of them), started on first use. A
    forked child has none of its parent's threads: it starts its own."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def submit(self, read: Callable[[int], _ReadResult], window: int) -> Future[_ReadResult]:
        if self._pool is None or self._pid != os.getpid():
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="fastzarr-loader")
            self._pid = os.getpid()
        return self._pool.submit(read, window)

    def close(self, *, wait: bool = True) -> None:
        """Cancels the reads queued and ends the threads, once the reads under way (waited for
        with ``wait``) are done. A later submit starts new threads."""
        pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.shutdown(wait=wait, cancel_futures=True)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the modules it needs may be gone
            self.close(wait=False)


class _GroupReads:
    """Windows read as whole chunk groups (with patches, a uniform permutation, or sources read
    through xarray): every group a window's samples lie in, in one fastzarr pass. ``keep`` groups
    (for a uniform permutation, whose batches come back to groups read before) are kept, the
    least recently used dropped first: a window reads only the groups not kept. Reads hold no
    reference to the Loader, so that one dropped is collected (and its reads ahead cancelled)."""

    def __init__(self, reader: GroupReader, space: SampleSpace, keep: int) -> None:
        self._reader = reader
        self._space = space
        self._keep = keep
        self._kept: OrderedDict[int, dict[str, npt.NDArray[Any]]] = OrderedDict()

    def read(self, ids: Ids) -> _ReadResult:
        group, row = self._space.group_of(ids)
        _, _, patch = self._space.locate(ids)
        values, totals = self._read_groups(sorted(set(group.tolist())))
        return _Window(values, group, row, patch), totals

    def _read_groups(self, groups: list[int]) -> tuple[_Groups, dict[str, float]]:
        boxes = {g: self._space.group_box(g) for g in groups}
        if not self._keep:
            return self._reader.read(boxes)
        kept = self._kept
        missing = {g: box for g, box in boxes.items() if g not in kept}
        fresh, totals = self._reader.read(missing) if missing else ({}, {})
        out = {}
        for g in groups:
            out[g] = kept.pop(g) if g in kept else fresh[g]
            kept[g] = out[g]  # most recently used last
        while len(kept) > self._keep:
            kept.popitem(last=False)
        return out, totals


def _cached_sources(
    sources: list[Source],
    variables: Sequence[str] | None,
    cache: Cache,
    budget: int | None,
    timeout: float | None,
) -> list[Source]:
    """Each source's selection, through ``cache``: read once into a validated entry, then held
    in memory (rows repeated along the concat dim already left out)."""
    out = []
    for k, part in enumerate(sources):
        names = [str(n) for n in part.ds.data_vars] if variables is None else list(variables)
        selection = part.ds[[n for n in names if n in part.ds.data_vars]]
        if part.kept:
            selection = selection.isel(part.kept)
        need = sum(v.size * v.dtype.itemsize for v in selection.variables.values())
        if budget is not None and need > budget:
            raise fz.MemoryBudgetError(
                f"Loader(cache=...) holds each source's selection in memory: source {k} needs "
                f"{format_size(need)}, above max_memory ({format_size(budget)})"
            )
        out.append(Source(fz.load(selection, cache=cache, timeout=timeout, progress=False), {}))
    return out


class Loader:
    """Batches of samples from Zarr stores for training: ``dict[str, numpy.ndarray]``, batch axis
    first, CF-decoded as xarray decodes them.

    ``source``: a store path or URL, a list of them concatenated along ``concat_dim`` (labels
    repeated along it are dropped with a :class:`fastzarr.DuplicateWarning`, as in
    :func:`fastzarr.extract_points`; ``duplicates="raise"`` or ``"keep"``), or an xarray Dataset.
    ``sample_dims``: one sample per index along each of these dimensions; every other dimension
    is whole, or cut into patches of ``input_dims`` (``{"lat": 32, "lon": 32}``, windows that do
    not fit are left out, as xbatcher does). ``variables``: the data variables (default all);
    ``coords=True`` adds the coordinates.

    ``shuffle=True`` visits the chunks in a shuffled order and mixes samples across a window of
    chunks, so each chunk is decoded once per epoch; ``"full"`` draws a uniform permutation,
    keeping the chunks read for its batches in a cache of the windows' size (a chunk that falls
    out of it is read again when a later batch needs it); ``False`` keeps storage order. ``seed`` and
    :meth:`set_epoch` make the order reproducible. ``rank``/``world_size`` (default: the
    ``RANK``/``WORLD_SIZE`` environment variables) give each rank a disjoint share of every
    epoch, of equal size as torch's ``DistributedSampler`` makes them; ``drop_last`` drops the
    uneven tail there and the last short batch.

    ``max_memory`` (bytes or "2GB") bounds the windows held at once: the one served and the
    ``prefetch`` next ones (fewer where a window would not hold a chunk group), read in the
    background while the training step runs; they share it equally.
    ``transform`` is applied to each batch. ``timeout`` (seconds) bounds each read. Reads also run
    ahead across the end of an epoch, into the one the next iteration is expected to ask for
    (the next epoch after a :meth:`set_epoch`, else the same order again); :meth:`close` (or
    leaving a ``with`` block) stops them, as does dropping the Loader.

    ``cache``: a :class:`fastzarr.Cache`. Each source's selected variables are read once into a
    validated entry (keyed by the source's fingerprint and the selection, as :func:`fastzarr.load`
    keys them) and every epoch is then served from memory: for remote sources read for many
    epochs. The selection must fit in memory (in ``max_memory`` when given).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | xr.Dataset,
        *,
        sample_dims: Sequence[Hashable],
        batch_size: int,
        variables: Sequence[str] | None = None,
        input_dims: Mapping[Hashable, int] | None = None,
        shuffle: Shuffle = True,
        seed: int = 0,
        drop_last: bool = False,
        prefetch: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
        max_memory: int | str | None = None,
        cache: Cache | None = None,
        transform: Callable[[Batch], Any] | None = None,
        timeout: float | None = None,
        coords: bool = False,
        concat_dim: Hashable = "file_id",
        duplicates: str = "drop",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be 1 or more, not {batch_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, not {prefetch}")
        if shuffle not in (True, False, "full"):
            raise ValueError(f"shuffle must be True, False or 'full', not {shuffle!r}")
        if duplicates not in ("drop", "raise", "keep"):
            raise ValueError(f"duplicates must be 'drop', 'raise' or 'keep', not {duplicates!r}")
        self.sample_dims = tuple(sample_dims)
        if not self.sample_dims:
            raise ValueError("sample_dims names at least one dimension")
        self.input_dims = dict(input_dims or {})
        self.batch_size = batch_size
        self.shuffle: Shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.transform = transform
        self.timeout = timeout
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.epoch = 0
        self.stats = LoaderStats()
        self._resume_batches = 0
        # A read is checked against the whole budget: its window and the chunks decoding for it.
        self._read_budget = parse_size(max_memory)
        self._sources = open_sources(source, concat_dim, duplicates, storage_options, timeout)
        if cache is not None:
            self._sources = _cached_sources(self._sources, variables, cache, self._read_budget, timeout)
        self._parts = [p.ds for p in self._sources]
        self._names = self._check_names(variables, coords)
        self._patches = _patch_grid(self._parts[0], self.input_dims)
        # Values without any sample dimension are the same for every sample: read once, here.
        self._fixed = {
            n: np.asarray(self._parts[0][n].values)
            for n in self._names
            if not set(self._parts[0][n].dims) & set(self.sample_dims)
        }
        self._sampled = [n for n in self._names if n not in self._fixed]
        self._reader = GroupReader(self._sources, self.sample_dims, self._sampled, timeout, self._read_budget)
        self._other_dims = {
            n: [d for d in self._parts[0][n].dims if d not in self.sample_dims] for n in self._names
        }
        sizes = tuple(
            tuple(len(p.kept[d]) if d in p.kept else p.ds.sizes[d] for d in self.sample_dims)
            for p in self._sources
        )
        self._space = SampleSpace(sizes, self._group_chunks(), max(len(self._patches), 1))
        self._space.groups()  # every epoch's order draws on them: found once, here
        budget = self._read_budget or _DEFAULT_BUDGET
        group_bytes = max(self._index_bytes() * math.prod(self._space.chunks), 1)
        # Chunks decode beside the windows (one per thread at most, each with up to a chunk of
        # decode scratch): they come off the budget.
        room = budget - 2 * fz.get_num_threads() * self._largest_chunk_bytes()
        held = 1 + _windows_ahead(prefetch, shuffle, room // group_bytes)
        self._window = max(1, room // held // group_bytes)
        # The samples the windows held at once may hold: the one served and those read ahead.
        self._held_samples = held * self._window * math.prod(self._space.chunks) * self._space.patches
        self._ahead: _EpochReads | None = None  # the next epoch's reads, begun at this one's end
        self._epoch_set = False  # set_epoch called since the last iteration began
        self._groups = _GroupReads(self._reader, self._space, self._window if shuffle == "full" else 0)
        # Without patches or a uniform permutation's group cache, a window's samples are decoded
        # straight into their batches: no sample is copied after it is decoded.
        self._in_order = not self._patches and shuffle != "full" and self._reader.reads_in_order
        # Over the network a window's read waits a round trip before it decodes: two reads at
        # once overlap one's wait with the other's decoding. Local reads decode at once, where a
        # second read would only slow the one served next.
        self._reads = _ReadThreads(2 if self._in_order and self._reader.remote else 1)

    # --- set-up ---------------------------------------------------------------------------

    def _check_names(self, variables: Sequence[str] | None, coords: bool) -> list[str]:
        first = self._parts[0]
        missing = [d for d in (*self.sample_dims, *self.input_dims) if d not in first.dims]
        if missing:
            raise ValueError(f"no dimension {missing} in the source (its dimensions: {list(first.dims)})")
        both = set(self.sample_dims) & set(self.input_dims)
        if both:
            raise ValueError(f"{sorted(map(str, both))} cannot be both sample_dims and input_dims")
        names = [str(n) for n in first.data_vars] if variables is None else list(variables)
        unknown = [n for n in names if n not in first.data_vars]
        if unknown:
            raise ValueError(f"no data variable {unknown} in the source (it has {list(first.data_vars)})")
        if coords:
            names += [str(c) for c in first.coords if c not in names]
        for k, part in enumerate(self._parts[1:], start=1):
            for name in names:
                here, there = first[name], part.get(name)
                if there is None or _static_sizes(there, self.sample_dims) != _static_sizes(
                    here, self.sample_dims
                ):
                    raise ValueError(f"source {k} differs from source 0 in {name!r} (or lacks it)")
        return names

    def _group_chunks(self) -> tuple[int, ...]:
        """The chunk group's length along each sample dimension: a multiple of every variable's
        chunk length there, so no chunk is shared by two groups."""
        lengths = []
        data_vars = [n for n in self._names if n in self._parts[0].data_vars]
        for d in self.sample_dims:
            length = 1
            for name in data_vars:  # coordinates are small: they never set the grouping
                var = self._parts[0][name].variable
                if d in var.dims:
                    length = math.lcm(length, _chunk_length(var, d))
            lengths.append(min(length, max(self._parts[0].sizes[d], 1)))
        return tuple(lengths)

    def _largest_chunk_bytes(self) -> int:
        largest = 0
        for name in self._names:
            var = self._parts[0][name].variable
            chunks = var.encoding.get("chunks") or var.shape
            largest = max(largest, var.dtype.itemsize * math.prod(chunks))
        return largest

    def _index_bytes(self) -> int:
        """Bytes of every variable at one index along the sample dimensions."""
        total = 0
        for name in self._names:
            var = self._parts[0][name].variable
            total += var.dtype.itemsize * math.prod(
                n for d, n in var.sizes.items() if d not in self.sample_dims
            )
        return total

    # --- the epoch ----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose order the next iteration follows (as ``DistributedSampler``)."""
        self.epoch = epoch
        self._epoch_set = True

    def close(self) -> None:
        """Stops reading ahead: reads queued for the next epoch are dropped and those under way
        are waited for. Iterating again starts reading again. A Loader that is dropped stops on
        its own (without waiting)."""
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None
        self._reads.close()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        total = sum(len(w) for w in self._windows(self.epoch))
        return total // self.batch_size if self.drop_last else -(-total // self.batch_size)

    def _share(self) -> tuple[int, int]:
        """This reader's rank and world size. In a torch DataLoader worker process, each worker
        takes its own share of this rank's."""
        rank, world_size = self.rank, self.world_size
        torch_data = sys.modules.get("torch.utils.data")
        info = torch_data.get_worker_info() if torch_data is not None else None
        if info is not None and info.num_workers > 1:
            rank, world_size = rank * info.num_workers + info.id, world_size * info.num_workers
        return rank, world_size

    def _windows(self, epoch: int) -> list[Ids]:
        # The first window holds a batch: the consumer waits for its read alone.
        per_group = max(1, len(self._space) // max(1, self._space.group_offsets()[-1]))
        shuffled = epoch_windows(
            self._space,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=epoch,
            window=self._window,
            first=-(-self.batch_size // per_group),
        )
        if self.shuffle == "full":  # read per batch, through no window order
            shuffled = [
                w[i : i + self.batch_size] for w in shuffled for i in range(0, len(w), self.batch_size)
            ]
        rank, world_size = self._share()
        return rank_share(shuffled, rank=rank, world_size=world_size, drop_last=self.drop_last)

    def state_dict(self) -> dict[str, int]:
        """Where the current epoch stands, for :meth:`load_state_dict`."""
        return {"epoch": self.epoch, "seed": self.seed, "batches": self.stats.batches}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resumes: the next iteration continues epoch ``state["epoch"]`` after its
        ``state["batches"]`` batches, with the same samples in the same order."""
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])
        self._resume_batches = int(state["batches"])

    def _key(self, epoch: int, resume: int) -> _EpochKey:
        return (
            os.getpid(),
            epoch,
            self.seed,
            *self._share(),
            resume,
            self.batch_size,
            self.drop_last,
            self.shuffle,
        )

    def _plan(self, epoch: int, resume: int) -> _EpochReads:
        """Epoch ``epoch``'s windows (after its first ``resume`` batches) and how to read each."""
        windows = self._windows(epoch)
        skip = resume * self.batch_size
        # Windows wholly before the resume point are not read at all.
        while windows and skip >= len(windows[0]):
            skip -= len(windows.pop(0))
        if self._in_order:
            read = self._in_order_reads(windows, skip)
        else:
            groups = self._groups

            def read(k: int) -> _ReadResult:
                return groups.read(windows[k])

        return _EpochReads(self._key(epoch, resume), windows, skip, read)

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume_batches = self._resume_batches, 0
        key = self._key(self.epoch, resume)
        planned, self._ahead = self._ahead, None
        if planned is not None and planned.key != key:
            planned.cancel()
            planned = None
        epoch = planned or self._plan(self.epoch, resume)
        # The next iteration is expected to follow set_epoch(epoch + 1) if this one followed a
        # set_epoch, or else to repeat this epoch's order (as DistributedSampler does).
        following = self.epoch + 1 if self._epoch_set else self.epoch
        self._epoch_set = False
        self.stats = LoaderStats(epoch=self.epoch, batches=resume)
        self.stats._started = time.perf_counter()
        if self._in_order:
            yield from self._serve_in_order(epoch, following)
            return
        pending: list[tuple[_Window, int]] = []  # windows being served, and where in each
        have, skip = 0, epoch.skip
        for window in self._read_windows(epoch, following):
            pending.append((window, skip))
            have += len(window) - skip
            skip = 0
            while have >= self.batch_size:
                yield self._emit(self._take(pending, self.batch_size))
                have -= self.batch_size
        if have and not self.drop_last:
            yield self._emit(self._take(pending, have))

    def _emit(self, batch: Batch) -> Any:
        self.stats.batches += 1
        self.stats.samples += len(next(iter(batch.values()))) if batch else 0
        self.stats.seconds = time.perf_counter() - self.stats._started
        return self.transform(batch) if self.transform is not None else batch

    def _in_order_reads(self, windows: list[Ids], skip: int) -> Callable[[int], _ReadResult]:
        """How to read window ``k`` of ``windows`` (their first ``skip`` samples left out): its
        samples decoded straight into the batches they belong to, each batch in arrays of its
        own; a read yields the batches it completed, with their sizes."""
        size = self.batch_size
        bounds = np.cumsum([0, *(len(w) for w in windows)]).tolist()
        total = bounds[-1]
        last = skip + (total - skip) // size * size if self.drop_last else total
        filling: dict[int, Batch] = {}  # batches under way, by number (touched by the reads only)
        lock = threading.Lock()  # two windows' reads may share a batch
        reader, space = self._reader, self._space  # not self: reads ahead must not keep it alive

        def samples(j: int) -> tuple[int, int]:
            """Where batch ``j`` starts and stops among the windows' samples."""
            return skip + j * size, min(skip + (j + 1) * size, last)

        def read(k: int) -> _ReadResult:
            lo, hi = max(bounds[k], skip), min(bounds[k + 1], last)
            touched = range((lo - skip) // size, -(-(hi - skip) // size)) if lo < hi else range(0)
            targets = []
            with lock:
                for j in touched:
                    start, stop = samples(j)
                    if j not in filling:
                        filling[j] = reader.allocate(stop - start)
                    first, end = max(lo, start), min(hi, stop)
                    targets.append(Target(first - bounds[k], end - bounds[k], filling[j], first - start))
            source, index, _ = space.locate(windows[k])
            totals = reader.read_in_order(source, index, targets)
            # The batches that end in this window: the server takes them once every window before
            # this one is read too (it takes the windows in order).
            with lock:
                done = [j for j in touched if samples(j)[1] <= bounds[k + 1]]
                return [(samples(j)[1] - samples(j)[0], filling.pop(j)) for j in done], totals

        return read

    def _serve_in_order(self, epoch: _EpochReads, following: int) -> Iterator[Any]:
        """The epoch's batches, as its windows' reads complete them. A batch handed out is the
        caller's: its samples no longer count against the windows' memory."""
        for batches in self._read_windows(epoch, following):
            for count, batch in batches:
                for name, values in self._fixed.items():
                    batch[name] = np.repeat(values[np.newaxis], count, axis=0)
                yield self._emit({name: batch[name] for name in self._names})
                epoch.released += count
                if self.prefetch:
                    self._submit_ahead(epoch, following)

    def _read_windows(self, epoch: _EpochReads, following: int) -> Iterator[Any]:
        """Each window of ``epoch``, read; with ``prefetch``, the windows after it are read on the
        loader's thread while the caller works, as many as the windows' memory holds, and once
        the last is under way, the first windows of epoch ``following`` (as the next iteration
        is expected to ask for)."""
        finished = False
        try:
            for k in range(len(epoch.windows)):
                began = time.perf_counter()
                if not self._in_order:  # a window's groups are held until it is served
                    epoch.released = max(epoch.released, epoch.bounds[k])
                if self.prefetch:
                    self._submit_ahead(epoch, following)
                    value, totals = epoch.submitted[k].result()
                else:
                    value, totals = epoch.read(k)
                epoch.taken = k + 1
                self.stats.waited_seconds += time.perf_counter() - began
                self.stats.windows += 1
                self._count(totals)
                yield value
            if self.prefetch:  # the epoch served: its memory is free for the next one's reads
                epoch.released = epoch.bounds[-1]
                self._submit_ahead(epoch, following)
            finished = True
        finally:
            if not finished:  # left mid-epoch: what comes next is unknown, so nothing is read
                epoch.cancel()
                if self._ahead is not None:
                    self._ahead.cancel()
                    self._ahead = None

    def _submit_ahead(self, epoch: _EpochReads, following: int) -> None:
        """Submits reads, in order, while the samples the loader holds (being served, read, or
        being read) fit in the windows' memory: the rest of ``epoch``'s windows, then epoch
        ``following``'s. The window the server is about to take is always submitted. A uniform
        permutation's windows (a batch each, whose groups may all differ) are read one ahead."""
        held = epoch.held()
        ahead = len(epoch.submitted) - epoch.taken
        plan = epoch
        while True:
            if len(plan.submitted) == len(plan.windows):
                if plan is not epoch:
                    return
                if self._ahead is None:
                    self._ahead = self._plan(following, 0)
                plan = self._ahead
                held += plan.held()
                ahead += len(plan.submitted)
                continue
            size = len(plan.windows[len(plan.submitted)])
            over = ahead >= 2 if self.shuffle == "full" else held + size > self._held_samples
            if over and not (plan is epoch and len(plan.submitted) == plan.taken):
                return
            plan.submitted.append(self._reads.submit(plan.read, len(plan.submitted)))
            held += size
            ahead += 1

    def _count(self, totals: Mapping[str, float]) -> None:
        self.stats.chunks += int(totals.get("chunks", 0))
        self.stats.bytes_read += int(totals.get("bytes_read", 0))
        self.stats.bytes_decoded += int(totals.get("bytes_decoded", 0))

    def _take(self, pending: list[tuple[_Window, int]], count: int) -> Batch:
        """The next ``count`` samples of the windows being served, as one batch."""
        pieces: list[Batch] = []
        while count:
            window, start = pending[0]
            stop = min(start + count, len(window))
            pieces.append(self._gather(window, start, stop))
            count -= stop - start
            if stop == len(window):
                pending.pop(0)  # served: its memory goes
            else:
                pending[0] = (window, stop)
        if len(pieces) == 1:
            return pieces[0]
        return {name: np.concatenate([p[name] for p in pieces]) for name in self._names}

    def _gather(self, window: _Window, start: int, stop: int) -> Batch:
        """Samples ``start:stop`` of the window, each copied once into its batch."""
        group, row, patch = window.group[start:stop], window.row[start:stop], window.patch[start:stop]
        batch: Batch = {}
        for name in self._names:
            dims = self._other_dims[name]
            cuts = (
                [tuple(p.get(d, slice(None)) for d in dims) for p in self._patches]
                if self._patches and any(d in self.input_dims for d in dims)
                else None
            )
            if name in self._fixed:
                sources = [self._fixed[name]] * (stop - start)
            else:
                sources = [window.values[int(g)][name][int(r)] for g, r in zip(group, row, strict=True)]
            if cuts is not None:
                sources = [values[cuts[int(p)]] for values, p in zip(sources, patch, strict=True)]
            dtype = self._reader.dtypes.get(name, sources[0].dtype)
            out = np.empty((stop - start, *sources[0].shape), dtype=dtype)
            for k, values in enumerate(sources):
                out[k] = values
            batch[name] = out
        return batch


def _windows_ahead(prefetch: int, shuffle: Shuffle, groups: int) -> int:
    """How many windows are read ahead of the one served, with the memory for ``groups`` chunk
    groups: ``prefetch``, fewer where each window would have less than a group, and one for a
    uniform permutation (its window is a cache of groups, read a batch at a time).

    A window is read whole before any of its batches is served, and the next read starts once
    the memory for it is free. With one window ahead, that is when the one before it is served,
    so the read of a window races the step over the window before it, with nothing to spare
    when a step is as long as a batch's read; with two ahead, a read has two windows' steps."""
    if not prefetch:
        return 0
    if shuffle == "full":
        return 1
    return max(1, min(prefetch, groups - 1))


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The rank and world size given, else torch's environment variables, else one process."""
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return rank, world_size


def _patch_grid(part: xr.Dataset, input_dims: Mapping[Hashable, int]) -> list[dict[Hashable, slice]]:
    """Every patch position (empty without ``input_dims``), the last dimension varying fastest."""
    if not input_dims:
        return []
    for d, n in input_dims.items():
        size = part.sizes[d]
        if not 0 < n <= size:
            raise ValueError(f"input_dims[{d!r}] = {n} does not fit the dimension's length {size}")
    return patch_selectors(part.sizes, input_dims, {})


def _chunk_length(var: xr.Variable, dim: Hashable) -> int:
    """The variable's stored chunk length along ``dim`` (its dask chunks' first, or 1 if it has
    neither, so that nothing is assumed shared)."""
    axis = var.dims.index(dim)
    chunks = var.encoding.get("chunks")
    if chunks:
        return int(chunks[axis])
    if var.chunks:
        return int(var.chunks[axis][0])
    return 1


def _static_sizes(var: xr.DataArray | xr.Variable, sample_dims: tuple[Hashable, ...]) -> dict[Hashable, int]:
    return {d: n for d, n in var.sizes.items() if d not in sample_dims}
