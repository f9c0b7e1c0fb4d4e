"""The order of an epoch's samples for :class:`fastzarr.Loader`: which samples exist, which chunk
each lies in, the windows of chunks read together, and each rank's share.

A sample is one index along every sample dimension of one source (times one patch position when
patches are cut). Its global id counts sources first, then the sample dimensions in storage (C)
order, then patches. Samples that share a chunk along every sample dimension form a group: the
unit that is read, and so decoded, once per epoch.
"""

from __future__ import annotations

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

    def groups(self) -> list[Ids]:
        """Every chunk group's sample ids, groups in storage order, ids ascending."""
        out: list[Ids] = []
        for s, sizes in enumerate(self.sizes):
            starts = [range(0, n, c) for n, c in zip(sizes, self.chunks, strict=True)]
            for corner in np.ndindex(*(len(r) for r in starts)):
                ranges = [
                    np.arange(r[k], min(r[k] + c, n))
                    for r, k, c, n in zip(starts, corner, self.chunks, sizes, strict=True)
                ]
                grid = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, len(sizes))
                flat = np.ravel_multi_index(tuple(grid.T), sizes)
                base = self.offsets[s] + flat.astype(np.int64) * self.patches
                ids = (base[:, None] + np.arange(self.patches)).reshape(-1)
                out.append(np.sort(ids))
        return out


def epoch_windows(space: SampleSpace, *, shuffle: Shuffle, seed: int, epoch: int, window: int) -> list[Ids]:
    """The epoch's samples in serving order, cut into windows of ``window`` chunk groups.

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
    windows = []
    for start in range(0, len(order), window):
        ids = np.concatenate(order[start : start + window])
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
