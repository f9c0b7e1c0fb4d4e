"""fz.Loader: every sample once per epoch with xarray's values, each chunk decoded once when
shuffled chunk-aware, reproducible orders, disjoint even rank shares, patches, resumption."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import sys
import threading
import time
import types
import warnings
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
from fastzarr._epochs import SampleSpace, epoch_windows, rank_share
from fastzarr._sizes import parse_size
from fastzarr._sources import GroupReader
from fastzarr.loader import _windows_ahead
from fastzarr.testing import make_batches

FILE_IDS, STEPS = 4, 6
CHUNKS = {"file_id": 1, "step": 3}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three batch stores, consecutive ones repeating one file_id (identical values)."""
    root = tmp_path_factory.mktemp("loader")
    paths = make_batches(
        root, batches=3, variables=4, file_ids=FILE_IDS, steps=STEPS, lat=8, lon=12, chunks=CHUNKS
    )
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def reference(stores: list[str]) -> xr.Dataset:
    """xarray's view of the stores: concatenated, the repeated file_ids dropped, loaded."""
    ds = xr.concat([xr.open_zarr(s) for s in stores], dim="file_id").load()
    return ds.isel(file_id=~ds.indexes["file_id"].duplicated())


def loader(stores: list[str], **kwargs: Any) -> fz.Loader:
    options: dict[str, Any] = {"sample_dims": ("file_id", "step"), "batch_size": 5, "coords": True}
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fz.DuplicateWarning)
        return fz.Loader(stores, **options)


def samples(batches: list[dict[str, np.ndarray]]) -> list[tuple[int, int]]:
    return [(int(f), int(s)) for b in batches for f, s in zip(b["file_id"], b["step"], strict=True)]


@pytest.mark.parametrize("shuffle", [True, False, "full"])
def test_every_sample_once_with_xarrays_values(
    stores: list[str], reference: xr.Dataset, shuffle: Any
) -> None:
    batches = list(loader(stores, shuffle=shuffle))
    seen = samples(batches)
    expected = [(int(f), int(s)) for f in reference.file_id.values for s in reference.step.values]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))
    assert [len(b["file_id"]) for b in batches] == [5] * (len(seen) // 5) + (
        [len(seen) % 5] if len(seen) % 5 else []
    )
    for batch in batches:
        assert set(batch) == {"var0000", "var0001", "var0002", "var0003", "file_id", "step", "lat", "lon"}
        for i, (f, s) in enumerate(zip(batch["file_id"], batch["step"], strict=True)):
            row = reference.sel(file_id=f, step=s)
            for name in ("var0000", "var0003"):
                np.testing.assert_array_equal(batch[name][i], row[name].values)
            np.testing.assert_array_equal(batch["lat"][i], reference.lat.values)
    if shuffle is False:
        assert seen == sorted(seen)
    else:
        assert seen != sorted(seen)


def test_chunk_aware_shuffle_decodes_each_chunk_once(stores: list[str], reference: xr.Dataset) -> None:
    # Windows of 3 chunk groups (of 1 file_id x 3 steps; three held: the one served and two read
    # ahead), the first of 2 (a batch of 5 needs two groups), the next of at most twice as many:
    # 7 windows for 20 groups.
    group = 3 * 8 * 12 * 4 * 4  # steps x lat x lon x 4 bytes x 4 variables
    chunks_in_flight = 2 * fz.get_num_threads() * 3 * 8 * 12 * 4
    run = loader(stores, coords=False, max_memory=3 * 3 * group + chunks_in_flight)
    batches = list(run)
    chunks_per_variable = reference.sizes["file_id"] * (STEPS // CHUNKS["step"])
    assert run.stats.windows == 7
    assert run.stats.chunks == 4 * chunks_per_variable
    assert run.stats.samples == sum(len(b["var0000"]) for b in batches) == 60
    assert run.stats.batches == len(batches) == len(run) == 12
    # Each window is a set of whole chunk groups: samples of one group come out in one window.
    assert run.stats.bytes_decoded == 4 * 60 * 8 * 12 * 4


def test_orders_are_reproducible_and_change_with_epoch_and_seed(stores: list[str]) -> None:
    first = samples(list(loader(stores, seed=1)))
    assert samples(list(loader(stores, seed=1))) == first
    assert samples(list(loader(stores, seed=2))) != first
    moved = loader(stores, seed=1)
    moved.set_epoch(1)
    assert samples(list(moved)) != first
    moved.set_epoch(0)
    assert samples(list(moved)) == first


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_ranks_share_each_epoch_disjointly_and_evenly(
    stores: list[str], world_size: int, drop_last: bool
) -> None:
    shares = [
        samples(list(loader(stores, rank=r, world_size=world_size, drop_last=drop_last, batch_size=4)))
        for r in range(world_size)
    ]
    counts = {len(s) for s in shares}
    total = 60
    if drop_last:
        per_rank = total // world_size
        assert counts == {per_rank - per_rank % 4}  # the last short batch dropped too
        together = [x for s in shares for x in s]
        assert len(together) == len(set(together))
    else:
        per_rank = -(-total // world_size)
        assert counts == {per_rank}
        together = Counter(x for s in shares for x in s)
        assert len(together) == total  # every sample somewhere
        assert sum(together.values()) - total == per_rank * world_size - total  # only the padding repeats


def test_rank_and_world_size_from_the_environment(stores: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    from_env = samples(list(loader(stores)))
    assert from_env == samples(list(loader(stores, rank=1, world_size=2)))
    assert len(from_env) == 30


def test_patches_cut_by_input_dims(stores: list[str], reference: xr.Dataset) -> None:
    run = loader(stores, input_dims={"lat": 4, "lon": 6}, shuffle=False, batch_size=8)
    batches = list(run)
    assert len(run) == len(batches) == 60 * 4 // 8
    first = batches[0]
    assert first["var0001"].shape == (8, 4, 6)
    # Storage order: sample (file_id, step) then patches, the last dimension fastest.
    f, s = int(first["file_id"][0]), int(first["step"][0])
    field = reference["var0001"].sel(file_id=f, step=s).values
    for k, (lat0, lon0) in enumerate([(0, 0), (0, 6), (4, 0), (4, 6)]):
        np.testing.assert_array_equal(first["var0001"][k], field[lat0 : lat0 + 4, lon0 : lon0 + 6])


def test_resumes_mid_epoch_exactly(stores: list[str]) -> None:
    whole = list(loader(stores, seed=5))
    run = loader(stores, seed=5)
    taken = []
    for batch in run:
        taken.append(batch)
        if len(taken) == 5:
            break
    state = run.state_dict()
    resumed = loader(stores, seed=0)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert samples(taken + rest) == samples(whole)
    np.testing.assert_array_equal(rest[-1]["var0002"], whole[-1]["var0002"])


def _count_reads(run: fz.Loader, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the loader's window reads as they happen (on its read thread), whichever path."""
    calls: list[int] = []
    for owner, name in ((run._reader, "read_in_order"), (run._groups, "read")):
        original = getattr(owner, name)

        def counted(*args: Any, _original: Any = original) -> Any:
            calls.append(1)
            return _original(*args)

        monkeypatch.setattr(owner, name, counted)
    return calls


def _wait_for(calls: list[int], count: int) -> None:
    deadline = time.monotonic() + 30
    while len(calls) < count and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.mark.parametrize(
    "options",
    [{}, {"shuffle": False}, {"shuffle": "full"}, {"input_dims": {"lat": 4, "lon": 6}}],
    ids=["chunk-aware", "storage-order", "full", "patches"],
)
def test_the_next_epoch_is_read_ahead_and_served_as_if_it_were_not(
    stores: list[str], options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once an epoch's reads are done, the next epoch's first windows are read in the background
    (set_epoch(e + 1) expected after a set_epoch, the same epoch otherwise). The epoch then
    served, and one that was not expected, are the ones a fresh Loader serves: same samples,
    same values, same chunks read."""

    def fresh(epoch: int, resume: int = 0) -> tuple[list[dict[str, np.ndarray]], fz.LoaderStats]:
        run = loader(stores, seed=3, **options)
        run.set_epoch(epoch)
        if resume:
            run.load_state_dict({"epoch": epoch, "seed": 3, "batches": resume})
        return list(run), run.stats

    def check(ours: list[dict[str, np.ndarray]], stats: fz.LoaderStats, epoch: int, resume: int = 0) -> None:
        theirs, their_stats = fresh(epoch, resume)
        assert samples(ours) == samples(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(mine["var0001"], other["var0001"])
        assert (stats.windows, stats.samples) == (their_stats.windows, their_stats.samples)
        if options.get("shuffle") == "full":  # its chunks kept from the epochs before are not read
            assert stats.chunks <= their_stats.chunks
        else:
            assert stats.chunks == their_stats.chunks

    run = loader(stores, seed=3, **options)
    calls = _count_reads(run, monkeypatch)
    run.set_epoch(0)
    check(list(run), run.stats, 0)
    in_epoch = run.stats.windows
    _wait_for(calls, in_epoch + 1)
    assert len(calls) > in_epoch  # the next epoch's first window, read before it was asked for
    run.set_epoch(1)  # as expected
    check(list(run), run.stats, 1)
    run.set_epoch(4)  # not as expected: what was read ahead for epoch 2 is dropped
    check(list(run), run.stats, 4)
    # No set_epoch: the same order again (read ahead as such), then a resume mid-epoch.
    check(list(run), run.stats, 4)
    run.load_state_dict({"epoch": 4, "seed": 3, "batches": 2})
    check(list(run), run.stats, 4, resume=2)
    # A batch size changed between epochs: what was read ahead in the old one is dropped.
    run.batch_size = 4
    changed = list(run)
    assert [len(b["var0001"]) for b in changed[:-1]] == [4] * (len(changed) - 1)
    fresh_run = loader(stores, seed=3, batch_size=4, **options)
    fresh_run.set_epoch(4)
    assert samples(changed) == samples(list(fresh_run))


def test_leaving_an_epoch_early_reads_nothing_more(
    stores: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An epoch left mid-way (a break) cancels the reads queued ahead; the next iteration serves
    a whole epoch, as a fresh Loader does."""
    budget = 2 * 3 * 8 * 12 * 4 * 4 + 2 * fz.get_num_threads() * 3 * 8 * 12 * 4  # a group a window
    run = loader(stores, max_memory=budget, batch_size=3)
    calls = _count_reads(run, monkeypatch)
    for k, _ in enumerate(run):
        if k == 2:
            break
    time.sleep(0.2)
    assert len(calls) <= 4  # of 20 windows: served, and one read ahead of the one served
    again = list(run)
    assert samples(again) == samples(list(loader(stores, max_memory=budget, batch_size=3)))
    assert run.stats.windows == 20


def test_close_and_dropping_stop_the_reads_ahead(stores: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """close() (or leaving a ``with`` block) drops the next epoch's queued reads and waits for the
    one under way; the Loader can be iterated again. A dropped Loader is collected at once (its
    reads hold no reference to it) and stops its thread."""
    budget = 2 * 3 * 8 * 12 * 4 * 4 + 2 * fz.get_num_threads() * 3 * 8 * 12 * 4  # a group a window
    with loader(stores, max_memory=budget, batch_size=3) as run:
        calls = _count_reads(run, monkeypatch)
        first = samples(list(run))
    done = len(calls)
    time.sleep(0.2)
    assert len(calls) == done <= 20 + 2  # the epoch, and at most two windows ahead
    assert samples(list(run)) == first
    run.close()
    threads = {t for t in threading.enumerate() if t.name.startswith("fastzarr-loader")}
    dropped = loader(stores, max_memory=budget, batch_size=3)
    list(dropped)
    gone = weakref.ref(dropped)
    del dropped
    assert gone() is None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if {t for t in threading.enumerate() if t.name.startswith("fastzarr-loader")} <= threads:
            break
        time.sleep(0.01)
    assert {t for t in threading.enumerate() if t.name.startswith("fastzarr-loader")} <= threads


def test_a_forked_child_serves_its_own_epochs(stores: list[str]) -> None:
    """A child forked after the parent read an epoch ahead starts its own read thread and serves
    the epoch as the parent would (the parent's queued reads are not its own)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    run = loader(stores, seed=9)
    expected = samples(list(run))  # and the same order read ahead in the background
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()

    def serve() -> None:
        queue.put(samples(list(run)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fastzarr's warning of a fork mid-read
        child = context.Process(target=serve)
        child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert queue.get() == expected
    assert samples(list(run)) == expected


def test_duplicates_as_extract_points(stores: list[str]) -> None:
    with pytest.warns(fz.DuplicateWarning, match="2 repeated 'file_id' labels"):
        fz.Loader(stores, sample_dims=("file_id", "step"), batch_size=4)
    with pytest.raises(fz.DuplicateError, match="repeated 'file_id'"):
        fz.Loader(stores, sample_dims=("file_id", "step"), batch_size=4, duplicates="raise")
    kept = loader(stores, duplicates="keep")
    assert len(samples(list(kept))) == 3 * FILE_IDS * STEPS


def test_a_dataset_source_and_a_transform(stores: list[str], reference: xr.Dataset) -> None:
    ds = xr.open_zarr(stores[0])  # dask-backed
    run = fz.Loader(
        ds,
        sample_dims=("file_id",),
        batch_size=3,
        variables=["var0002"],
        transform=lambda b: b["var0002"].mean(axis=(1, 2, 3)),
        shuffle=False,
    )
    means = np.concatenate(list(run))
    np.testing.assert_allclose(means, ds["var0002"].mean(("step", "lat", "lon")).values, rtol=1e-6)


def test_reading_ahead_overlaps_the_training_step(stores: list[str]) -> None:
    """With prefetch, a window is read while the caller works on the previous one: the caller
    waits for the first window only."""
    group = 3 * 8 * 12 * 4 * 4
    budget = 2 * group + 2 * fz.get_num_threads() * 3 * 8 * 12 * 4  # one group a window
    run = loader(stores, coords=False, max_memory=budget, batch_size=3)
    for _ in run:
        time.sleep(0.02)
    assert run.stats.windows == 20
    eager = loader(stores, coords=False, max_memory=budget, batch_size=3, prefetch=0)
    for _ in eager:
        time.sleep(0.02)
    assert run.stats.waited_seconds < eager.stats.waited_seconds


def test_prefetch_windows_share_the_memory(stores: list[str], reference: xr.Dataset) -> None:
    """The window served and the ``prefetch`` read ahead share max_memory: more read ahead,
    smaller windows, the same samples and chunks."""
    group = 3 * 8 * 12 * 4 * 4
    budget = 6 * group + 2 * fz.get_num_threads() * 3 * 8 * 12 * 4  # room for 6 groups
    runs = {ahead: loader(stores, coords=False, max_memory=budget, prefetch=ahead) for ahead in (1, 2, 5)}
    epochs = {ahead: list(run) for ahead, run in runs.items()}
    # Windows of 3, 2 and 1 groups (the first of 2 at most): 7, 10 and 20 windows for 20 groups.
    assert {ahead: run.stats.windows for ahead, run in runs.items()} == {1: 7, 2: 10, 5: 20}
    chunks = 4 * reference.sizes["file_id"] * (STEPS // CHUNKS["step"])
    assert all(run.stats.chunks == chunks for run in runs.values())
    for batches in epochs.values():
        assert sum(len(b["var0000"]) for b in batches) == 60


def test_windows_read_ahead() -> None:
    assert _windows_ahead(0, True, 100) == 0
    assert _windows_ahead(2, True, 100) == 2
    assert _windows_ahead(2, False, 100) == 2
    assert _windows_ahead(8, True, 5) == 4  # each window holds a group at least
    assert _windows_ahead(2, True, 1) == 1  # one ahead even then (windows of a group each)
    assert _windows_ahead(2, "full", 100) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sample_dims": ("file_id", "nope")}, ValueError, r"no dimension \['nope'\].*file_id"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"shuffle": "sometimes"}, ValueError, "shuffle"),
        ({"variables": ["t2m"]}, ValueError, r"no data variable \['t2m'\]"),
        ({"input_dims": {"lat": 9}}, ValueError, "does not fit"),
        ({"max_memory": "lots"}, ValueError, "invalid max_memory 'lots'"),
        ({"rank": 2, "world_size": 2}, ValueError, "rank 2"),
    ],
)
def test_bad_arguments(stores: list[str], kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        loader(stores, **kwargs)


def test_epoch_windows_hold_whole_groups() -> None:
    space = SampleSpace(sizes=((5, 4), (3, 4)), chunks=(2, 4), patches=2)
    groups = space.groups()
    assert sum(len(g) for g in groups) == len(space) == (20 + 12) * 2
    windows = epoch_windows(space, shuffle=True, seed=3, epoch=0, window=2)
    owner = {int(i): k for k, g in enumerate(groups) for i in g}
    for window in windows:
        members = Counter(owner[int(i)] for i in window)
        assert all(members[g] == len(groups[g]) for g in members)  # whole groups only
    source, index, patch = space.locate(np.arange(len(space)))
    assert source.tolist() == [0] * 40 + [1] * 24
    assert index[41].tolist() == [0, 0]
    assert patch[41] == 1


def test_rank_share_pads_like_distributed_sampler() -> None:
    windows = [np.arange(0, 4), np.arange(4, 7)]
    shares = [np.concatenate(rank_share(windows, rank=r, world_size=2, drop_last=False)) for r in range(2)]
    assert shares[0].tolist() == [0, 1, 2, 3]
    assert shares[1].tolist() == [4, 5, 6, 0]
    dropped = [np.concatenate(rank_share(windows, rank=r, world_size=2, drop_last=True)) for r in range(2)]
    assert [d.tolist() for d in dropped] == [[0, 1, 2], [3, 4, 5]]


def test_memory_size_strings() -> None:
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("512 MB") == 512 * 10**6
    assert parse_size(1234) == 1234
    assert 0 < parse_size("20%") <= parse_size("40%")  # type: ignore[operator]
    for bad in ("0", "-5MB", "12 parsecs", "150%"):
        with pytest.raises(ValueError, match="max_memory"):
            parse_size(bad)


def test_two_reads_at_once_finishing_out_of_order_serve_the_same_batches(
    stores: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores read over the network have two windows read at once. Whichever read finishes
    first, the caller gets the batches one read at a time gives, in the same order (batches of 7
    straddle windows, whose reads both write into them)."""
    group = 3 * 8 * 12 * 4 * 4
    options: dict[str, Any] = {"coords": False, "batch_size": 7, "seed": 5}
    options["max_memory"] = 3 * 3 * group + 2 * fz.get_num_threads() * 3 * 8 * 12 * 4
    one_at_a_time = loader(stores, **options)
    expected = list(one_at_a_time)
    monkeypatch.setattr(GroupReader, "remote", property(lambda self: True))
    read, calls, finished = GroupReader.read_in_order, itertools.count(), []

    def slow_then_fast(self: GroupReader, *args: Any) -> dict[str, float]:
        call = next(calls)
        time.sleep(0.05 if call % 2 == 0 else 0.0)  # every other read finishes after the next one
        totals = read(self, *args)
        finished.append(call)
        return totals

    monkeypatch.setattr(GroupReader, "read_in_order", slow_then_fast)
    two_at_once = loader(stores, **options)
    batches = list(two_at_once)
    assert finished != sorted(finished)  # reads did finish out of order
    assert len(batches) == len(expected) == 9
    for ours, theirs in zip(batches, expected, strict=True):
        assert ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name])
    assert two_at_once.stats.chunks == one_at_a_time.stats.chunks
    two_at_once.close()


def test_remote_sources_read_like_local_ones(fastzarr_s3: Any, fastzarr_batches: list[Any]) -> None:
    """Stores on S3 (a moto server on 127.0.0.1) give the epoch the local copies give."""
    options = {"sample_dims": ("file_id", "step"), "batch_size": 6, "coords": True, "seed": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fz.DuplicateWarning)
        remote = fz.Loader(fastzarr_s3.urls, storage_options=fastzarr_s3.storage_options, **options)
        local = fz.Loader([str(p) for p in fastzarr_batches], **options)
    remote_batches, local_batches = list(remote), list(local)
    assert len(remote_batches) == len(local_batches) > 1
    for ours, theirs in zip(remote_batches, local_batches, strict=True):
        assert ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name])
    assert remote.stats.chunks == local.stats.chunks
    assert remote.stats.bytes_read == local.stats.bytes_read > 0


def test_full_shuffle_keeps_chunks_it_read_within_the_budget(stores: list[str]) -> None:
    """A uniform permutation reads a chunk again only when its cache of chunks is too small."""
    group = 3 * 8 * 12 * 4 * 4
    slack = 2 * fz.get_num_threads() * 3 * 8 * 12 * 4
    roomy = loader(stores, shuffle="full", coords=False, max_memory=2 * 20 * group + slack)
    tight = loader(stores, shuffle="full", coords=False, max_memory=2 * 5 * group + slack)  # 1 batch
    assert sum(len(b["var0000"]) for b in roomy) == sum(len(b["var0000"]) for b in tight) == 60
    per_variable = 20  # chunk groups of one file_id x 3 steps
    assert roomy.stats.chunks == 4 * per_variable  # every chunk read once: all kept
    assert tight.stats.chunks > 2 * roomy.stats.chunks  # five kept: most read again


def test_torch_dataloader_workers_take_disjoint_shares(
    stores: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a torch DataLoader worker (as its worker info says), each worker iterates its own
    share: torch itself is not a test dependency, its ``get_worker_info`` is stood in for."""
    run = loader(stores, world_size=2, rank=1)
    shares = []
    for worker in range(3):
        info = types.SimpleNamespace(num_workers=3, id=worker)
        data = types.ModuleType("torch.utils.data")
        data.get_worker_info = lambda info=info: info  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "torch.utils.data", data)
        shares.append(samples(list(run)))
    monkeypatch.delitem(sys.modules, "torch.utils.data")
    whole_rank = samples(list(run))
    together = [s for share in shares for s in share]
    assert sorted(together) == sorted(whole_rank)
    assert len(set(together)) == len(together) == 30


def test_a_cache_serves_later_loaders_the_same_batches(stores: list[str], tmp_path: Any) -> None:
    """With a cache, each source's selection is read once into a validated entry: a second
    Loader (another process in practice) reads no source chunk and yields the same batches; a
    changed source misses."""
    stores = [str(shutil.copytree(s, tmp_path / Path(s).name)) for s in stores]  # one changes below
    cache = fz.Cache(tmp_path / "cache")
    plain = list(loader(stores, variables=["var0001"], seed=3))
    first = loader(stores, variables=["var0001"], seed=3, cache=cache)
    assert (cache.stats.hits, cache.stats.misses) == (0, 3)
    second_cache = fz.Cache(tmp_path / "cache")
    second = loader(stores, variables=["var0001"], seed=3, cache=second_cache)
    assert (second_cache.stats.hits, second_cache.stats.misses) == (3, 0)
    for run in (first, second):
        batches = list(run)
        assert run.stats.bytes_read == 0  # served from the entries held in memory
        assert len(batches) == len(plain)
        for got, want in zip(batches, plain, strict=True):
            assert set(got) == set(want)
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
    # The second store's values change: its entry misses, the others hit.
    changed = xr.open_zarr(stores[1]).load()
    changed["var0001"] = changed["var0001"] + 1
    changed.to_zarr(stores[1], mode="a")
    third_cache = fz.Cache(tmp_path / "cache")
    third = loader(stores, variables=["var0001"], seed=3, cache=third_cache)
    assert (third_cache.stats.hits, third_cache.stats.misses) == (2, 1)
    row = next(iter(third))
    ref = xr.concat([xr.open_zarr(s) for s in stores], dim="file_id").load()
    ref = ref.isel(file_id=~ref.indexes["file_id"].duplicated())
    for i, (f, s) in enumerate(zip(row["file_id"], row["step"], strict=True)):
        np.testing.assert_array_equal(row["var0001"][i], ref["var0001"].sel(file_id=f, step=s).values)


def test_a_cache_refuses_a_selection_above_max_memory(stores: list[str], tmp_path: Any) -> None:
    with pytest.raises(fz.MemoryBudgetError, match="holds each source's selection in memory"):
        loader(stores, cache=fz.Cache(tmp_path / "cache"), max_memory=1000)


def test_batches_are_cf_decoded_as_xarray_decodes_them(tmp_path: Any) -> None:
    """Scaled integers with a fill value, time offsets, a float with a non-NaN fill value, and
    a float with NaN as fill value (returned as stored): each equal to xarray's decoding."""
    rng = np.random.default_rng(5)
    raw = rng.integers(-1000, 1000, size=(6, 4, 3)).astype("i2")
    raw[0, 0, 0] = -9999
    hours = np.arange(6 * 4 * 3, dtype="i8").reshape(6, 4, 3)
    ds = xr.Dataset(
        {
            "packed": (
                ("sample", "y", "x"),
                raw,
                {"scale_factor": 0.01, "add_offset": 273.15, "_FillValue": -9999},
            ),
            "when": (("sample", "y", "x"), hours, {"units": "hours since 2000-01-01"}),
            "filled": (("sample", "y", "x"), raw.astype("f4"), {"_FillValue": np.float32(-9999)}),
            "plain": (("sample", "y", "x"), raw.astype("f4"), {"units": "K"}),
        },
        coords={"sample": np.arange(6)},
    )
    path = str(tmp_path / "cf.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.decode_cf(ds).to_zarr(path, zarr_format=2, consolidated=True)  # encoded back as ds
        expected = xr.open_zarr(path).load()
    run = fz.Loader(path, sample_dims=("sample",), batch_size=6, shuffle=False)
    (batch,) = list(run)
    for name in ("packed", "when", "filled", "plain"):
        assert batch[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(batch[name], expected[name].values)
    assert np.isnan(batch["filled"][0, 0, 0])
    assert np.isnan(batch["packed"][0, 0, 0])


@pytest.mark.parametrize("shuffle", [True, False, "full"])
def test_sources_stored_differently_and_samples_not_first(tmp_path: Any, shuffle: Any) -> None:
    """Two stores whose variable differs in dtype and scaling, and a variable whose sample
    dimension is not its first: every sample equal to xarray's decoding of its own store, in one
    dtype in every batch. (Shuffled or in order, samples are decoded straight into serving
    order; ``"full"`` reads chunk groups and copies samples out of them.)"""
    rng = np.random.default_rng(11)
    paths, expected = [], {}
    for k, (dtype, attrs) in enumerate(
        [("i2", {"scale_factor": 0.5, "add_offset": 1.0}), ("f4", {"units": "K"})]
    ):
        values = rng.integers(-100, 100, size=(5, 3, 4)).astype(dtype)
        ds = xr.Dataset(
            {
                "packed": (("sample", "y", "x"), values, attrs),
                "across": (("y", "sample", "x"), values.transpose(1, 0, 2).astype("f8")),
            },
            coords={"sample": np.arange(5) + 10 * k},
        )
        path = str(tmp_path / f"s{k}.zarr")
        ds.to_zarr(path, zarr_format=3, consolidated=False, encoding={"packed": {"chunks": (2, 3, 4)}})
        paths.append(path)
        loaded = xr.open_zarr(path, consolidated=False).load()
        for i, label in enumerate(loaded.sample.values):
            expected[int(label)] = {n: loaded[n].isel(sample=i).values for n in ("packed", "across")}
    # Batches of 8 of the 2 x 5 samples: the first window holds both stores.
    run = fz.Loader(
        paths,
        sample_dims=("sample",),
        batch_size=8,
        coords=True,
        concat_dim="sample",
        seed=3,
        shuffle=shuffle,
    )
    seen = []
    for batch in run:
        # Each store's values as xarray decodes them, in one dtype that holds both.
        assert batch["packed"].dtype == np.result_type(*(e["packed"].dtype for e in expected.values()))
        assert batch["across"].shape[1:] == (3, 4)
        for name in ("packed", "across"):
            assert batch[name].flags.c_contiguous
        for i, label in enumerate(batch["sample"]):
            seen.append(int(label))
            for name in ("packed", "across"):
                np.testing.assert_array_equal(batch[name][i], expected[int(label)][name])
    assert sorted(seen) == sorted(expected)


@pytest.mark.parametrize("shuffle", [True, "full"])
def test_variables_without_sample_dims_alone(tmp_path: Any, shuffle: Any) -> None:
    """Only a variable that no sample dimension runs along: each batch repeats it once per sample."""
    ds = xr.Dataset({"static": (("y",), np.arange(3.0)), "x": (("sample", "y"), np.ones((5, 3)))})
    path = str(tmp_path / "s.zarr")
    ds.to_zarr(path, zarr_format=3, consolidated=False)
    run = fz.Loader(path, sample_dims=("sample",), batch_size=2, variables=["static"], shuffle=shuffle)
    batches = [b["static"] for b in run]
    assert [len(b) for b in batches] == [2, 2, 1]
    for batch in batches:
        np.testing.assert_array_equal(batch, np.broadcast_to(ds.static.values, batch.shape))
