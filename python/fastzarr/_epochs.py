"""The order of an epoch's samples for :class:`fastzarr.Loader`: which samples exist, which chunk
each lies in, the windows of chunks read together, and each rank's share.

A sample is one index along every sample dimension of one source (times one patch position when
patches are cut). Its global id counts sources first, then the sample dimensions in storage (C)
order, then patches. Samples that share a chunk along every sample dimension form a group: the
unit that is read, and so decoded, once per epoch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64]
Shuffle = bool | Literal["full"]


@dataclass(frozen=True)
class SampleSpace:
    """Sample ids and their chunk groups.

    ``sizes``: per source, its length along each sample dimension; ``chunks``: the length of a
    chunk group along each sample dimension; ``patches``: samples per index (patch positions)."""

    sizes: tuple[tuple[int, ...], ...]
    chunks: tuple[int, ...]
    patches: int = 1

    @property
    def offsets(self) -> list[int]:
        """The first global id of each source, and the total count last."""
        counts = [math.prod(s) * self.patches for s in self.sizes]
        return [0, *np.cumsum(counts).tolist()]

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, ids: Ids) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """For each id: its source, its index along every sample dimension (one row per id) and
        its patch."""
        offsets = np.asarray(self.offsets, dtype=np.int64)
        source = np.searchsorted(offsets, ids, side="right") - 1
        local = ids - offsets[source]
        patch = local % self.patches
        flat = local // self.patches
        index = np.zeros((len(ids), len(self.chunks)), dtype=np.int64)
        for s in np.unique(source):
            mine = source == s
            index[mine] = np.stack(np.unravel_index(flat[mine], self.sizes[s]), axis=-1)
        return source, index, patch

    def _grid(self, source: int) -> tuple[int, ...]:
        """Chunk groups of one source along each sample dimension."""
        return tuple(-(-n // c) for n, c in zip(self.sizes[source], self.chunks, strict=True))

    def group_offsets(self) -> list[int]:
        """The number of the first group of each source, and the total count last."""
        return [0, *np.cumsum([math.prod(self._grid(s)) for s in range(len(self.sizes))]).tolist()]

    def group_box(self, group: int) -> tuple[int, list[npt.NDArray[np.int64]]]:
        """A group's source and its indices along every sample dimension (a box)."""
        offsets = self.group_offsets()
        source = int(np.searchsorted(offsets, group, side="right") - 1)
        corner = [int(k) for k in np.unravel_index(group - offsets[source], self._grid(source))]
        ranges = [
            np.arange(k * c, min((k + 1) * c, n), dtype=np.int64)
            for k, c, n in zip(corner, self.chunks, self.sizes[source], strict=True)
        ]
        return source, ranges

    def group_of(self, ids: Ids) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """For each id: its group, and its row in that group's box (C order over the box)."""
        source, index, _ = self.locate(ids)
        group = np.zeros(len(ids), dtype=np.int64)
        row = np.zeros(len(ids), dtype=np.int64)
        offsets = self.group_offsets()
        chunks = np.asarray(self.chunks, dtype=np.int64)
        for s in np.unique(source):
            mine = source == s
            corner = index[mine] // chunks
            group[mine] = offsets[s] + np.ravel_multi_index(tuple(corner.T), self._grid(int(s)))
            start = corner * chunks
            box = np.minimum(start + chunks, np.asarray(self.sizes[s])) - start
            local = index[mine] - start
            row[mine] = [
                int(np.ravel_multi_index(tuple(at), tuple(b))) for at, b in zip(local, box, strict=True)
            ]
        return group, row

    def groups(self) -> list[Ids]:
        """Every chunk group's sample ids, groups in storage order, ids ascending. The same for
        every epoch: computed once (a frozen dataclass's ``__dict__`` holds it)."""
        cached: list[Ids] | None = self.__dict__.get("_groups")
        if cached is None:
            cached = self._all_groups()
            self.__dict__["_groups"] = cached
        return cached

    def _all_groups(self) -> list[Ids]:
        members: list[Ids] = []
        counts: list[npt.NDArray[np.int64]] = []
        chunks = np.asarray(self.chunks, dtype=np.int64)
        for source, sizes in enumerate(self.sizes):
            flat = np.arange(math.prod(sizes), dtype=np.int64)
            corner = np.stack(np.unravel_index(flat, sizes), axis=-1).reshape(-1, len(sizes)) // chunks
            grid = self._grid(source)
            group = np.ravel_multi_index(tuple(corner.T), grid) if len(flat) else flat
            order = np.argsort(group, kind="stable")  # ids stay ascending within a group
            base = self.offsets[source] + flat[order] * self.patches
            members.append((base[:, None] + np.arange(self.patches)).reshape(-1))
            counts.append(np.bincount(group, minlength=math.prod(grid)) * self.patches)
        ids = np.concatenate(members) if members else np.zeros(0, np.int64)
        bounds = np.cumsum(np.concatenate(counts)) if counts else np.zeros(0, np.int64)
        return np.split(ids.astype(np.int64, copy=False), bounds[:-1])


def epoch_windows(
    space: SampleSpace, *, shuffle: Shuffle, seed: int, epoch: int, window: int, first: int = 1
) -> list[Ids]:
    """The epoch's samples in serving order, cut into windows of up to ``window`` chunk groups.
    The first window has ``first`` groups (enough for one batch, so that the consumer waits for
    little before its first one) and each next one twice as many as the one before until they
    reach ``window``: each is read while the batches of the ones before it are served.

    ``shuffle=False``: storage order. ``True``: groups in a shuffled order, samples mixed within
    each window (every group is read by exactly one window). ``"full"``: one uniform permutation,
    as a single window (read through a cache of groups rather than window by window)."""
    groups = space.groups()
    rng = np.random.default_rng([seed, epoch])
    if shuffle is False:
        order = groups
    elif shuffle is True:
        order = [groups[g] for g in rng.permutation(len(groups))]
    elif shuffle == "full":
        return [rng.permutation(len(space)).astype(np.int64)]
    else:
        raise ValueError(f"shuffle must be True, False or 'full', not {shuffle!r}")
    starts = []
    start, size = 0, max(1, min(first, window))
    while start < len(order):
        starts.append(start)
        start += size
        size = min(2 * size, window)
    windows = []
    for start, stop in itertools.pairwise([*starts, len(order)]):
        ids = np.concatenate(order[start:stop])
        windows.append(rng.permutation(ids).astype(np.int64) if shuffle else ids.astype(np.int64))
    return windows


def rank_share(windows: list[Ids], *, rank: int, world_size: int, drop_last: bool) -> list[Ids]:
    """This rank's contiguous share of the epoch, windows kept (so a rank reads its own chunks).

    As torch's ``DistributedSampler``: every rank gets the same number of samples; with
    ``drop_last`` the tail that does not divide evenly is dropped, otherwise the order is padded
    from its start."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), not {rank}")
    total = sum(len(w) for w in windows)
    if world_size == 1:
        return windows
    per_rank = total // world_size if drop_last else -(-total // world_size)
    flat = np.concatenate(windows) if windows else np.zeros(0, np.int64)
    if not drop_last and per_rank * world_size > total and total:
        flat = np.resize(flat, per_rank * world_size)  # repeats from the start, as torch pads
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    bounds = np.cumsum([0, *[len(w) for w in windows]])
    shares = []
    for k in range(len(windows)):
        a, b = max(bounds[k], lo), min(bounds[k + 1], hi)
        if a < b:
            shares.append(flat[a:b])
    if hi > total:  # the padding, as a window of its own
        shares.append(flat[max(lo, total) : hi])
    return shares
