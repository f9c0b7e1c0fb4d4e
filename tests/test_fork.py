"""fastzarr keeps working in child processes, whichever way they are started, after the parent
has already used (and so started) its thread pool."""

from __future__ import annotations

import ast
import contextlib
import multiprocessing
import pathlib
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import fastzarr as fz
import numpy as np
import pytest
from conftest import write_array
from fastzarr.testing import make_batches

TIMEOUT = 60
SHAPE = (64, 48)


def expected_data() -> np.ndarray:
    return (np.arange(np.prod(SHAPE), dtype="f8").reshape(SHAPE) % 97) * 0.5


# --- workers: module level so that spawn/forkserver children can import them -----------------


def read_sum(path: str) -> float:
    return float(fz.open_array(path)[...].sum())


def read_slice_sum(path: str, row: int) -> float:
    arr = fz.open_array(path)
    return float(arr[row, ::-1].sum() + arr[..., row % SHAPE[1]].sum())


def read_pickled_array(arr: fz.Array) -> float:
    return float(arr[...].sum())


def read_many_with_threads(path: str, threads: int) -> tuple[int, float]:
    fz.set_num_threads(threads)
    arr = fz.open_array(path)
    parts = fz.read_many([(arr, (slice(i, i + 8), ...)) for i in range(0, SHAPE[0], 8)])
    return fz.get_num_threads(), float(sum(p.sum() for p in parts))


def child_num_threads_and_sum(path: str) -> tuple[int, float]:
    return fz.get_num_threads(), read_sum(path)


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fork_warnings_ignored() -> Iterator[None]:
    """Python 3.12+ warns (DeprecationWarning) when forking a process that has threads: that is
    exactly the situation under test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\).*", category=DeprecationWarning)
        # fastzarr's own warning when a fork happens mid-read (tested on its own below).
        warnings.filterwarnings("ignore", message="fastzarr: the process forks", category=RuntimeWarning)
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_array(
        tmp_path_factory.mktemp("fork") / "a.zarr", expected_data(), chunks=(8, 8), zarr_format=3
    )
    # Use fastzarr in the parent first so that its thread pool exists before any fork.
    assert float(fz.open_array(path)[...].sum()) == float(expected_data().sum())
    return path


METHODS = [m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]


@pytest.mark.parametrize("method", METHODS)
def test_pool_children_read_correctly(store: str, method: str) -> None:
    fz.open_array(store)[:8]  # the pool is warm right now
    ctx = multiprocessing.get_context(method)
    expected = float(expected_data().sum())
    with fork_warnings_ignored():
        pool = ctx.Pool(2)
    try:
        results = [pool.apply_async(read_sum, (store,)) for _ in range(4)]
        assert [r.get(timeout=TIMEOUT) for r in results] == [expected] * 4
        data = expected_data()
        rows = [0, 17, 63]
        got = pool.starmap_async(read_slice_sum, [(store, r) for r in rows]).get(timeout=TIMEOUT)
        assert got == [float(data[r, ::-1].sum() + data[:, r % SHAPE[1]].sum()) for r in rows]
    finally:
        pool.terminate()
        pool.join()
    # and the parent still works afterwards
    assert float(fz.open_array(store)[...].sum()) == expected


@pytest.mark.parametrize("method", METHODS)
def test_executor_children_with_pickled_arrays(store: str, method: str) -> None:
    arr = fz.open_array(store)
    arr[...]
    expected = float(expected_data().sum())
    with (
        fork_warnings_ignored(),
        ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as ex,
    ):
        futures = [ex.submit(read_pickled_array, arr) for _ in range(3)]
        futures.append(ex.submit(read_many_with_threads, store, 1))
        futures.append(ex.submit(read_many_with_threads, store, 3))
        results = [f.result(timeout=TIMEOUT) for f in futures]
    assert results[:3] == [expected] * 3
    assert results[3] == (1, expected)
    assert results[4] == (3, expected)


def test_fork_while_parent_is_reading(store: str) -> None:
    """Fork while another parent thread is in the middle of parallel reads: the child must not
    inherit a lock held by a pool thread that no longer exists."""
    if "fork" not in METHODS:
        pytest.fail("fork start method unavailable")  # pragma: no cover - Linux always has it
    expected = float(expected_data().sum())
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        arr = fz.open_array(store)
        try:
            while not stop.is_set():
                assert float(arr[...].sum()) == expected
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    ctx = multiprocessing.get_context("fork")
    try:
        for _ in range(3):
            with fork_warnings_ignored():
                pool = ctx.Pool(2)
            try:
                results = [pool.apply_async(read_sum, (store,)) for _ in range(4)]
                assert [r.get(timeout=TIMEOUT) for r in results] == [expected] * 4
            finally:
                pool.terminate()
                pool.join()
    finally:
        stop.set()
        thread.join(timeout=TIMEOUT)
    assert not thread.is_alive()
    assert errors == []


def test_thread_count_survives_fork(store: str, fresh_threads: None) -> None:
    """A forked child keeps the parent's configured pool size, and its pool works."""
    fz.set_num_threads(3)
    fz.open_array(store)[...]
    ctx = multiprocessing.get_context("fork")
    with fork_warnings_ignored():
        pool = ctx.Pool(1)
    try:
        threads, total = pool.apply_async(child_num_threads_and_sum, (store,)).get(timeout=TIMEOUT)
    finally:
        pool.terminate()
        pool.join()
    assert threads == 3
    assert total == float(expected_data().sum())


def test_parent_threads_read_concurrently(store: str) -> None:
    """Several Python threads sharing one Array read correct, independent results."""
    arr = fz.open_array(store)
    data = expected_data()
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = arr[i::4, ::-1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert sorted(results) == list(range(8))
    for i, got in results.items():
        np.testing.assert_array_equal(got, data[i::4, ::-1])


# --- extract_points in children, and the fork warning -------------------------------------------


def extract_sum(paths: list[str]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DuplicateWarning for the overlapping batches
        ds = fz.extract_points(paths, points={"lat": [1.0, 5.0], "lon": [2.0, 40.0]})
    return float(sum(float(ds[v].sum()) for v in ds.data_vars))


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = make_batches(
            tmp_path_factory.mktemp("batches"), variables=3, file_ids=3, steps=2, lat=8, lon=12
        )
    return [str(p) for p in paths]


@pytest.mark.parametrize("method", METHODS)
def test_extract_points_in_executor_children(batches: list[str], method: str) -> None:
    """extract_points in the parent (pool warm), then in children of each start method."""
    expected = extract_sum(batches)
    with (
        fork_warnings_ignored(),
        ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as ex,
    ):
        futures = [ex.submit(extract_sum, batches) for _ in range(3)]
        assert [f.result(timeout=TIMEOUT) for f in futures] == [expected] * 3
    assert extract_sum(batches) == expected


def extract_cached_sum(paths: list[str], root: str) -> tuple[float, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = fz.Cache(root)
        ds = fz.extract_points(paths, points={"lat": [1.0, 5.0], "lon": [2.0, 40.0]}, cache=cache)
    return float(sum(float(ds[v].sum()) for v in ds.data_vars)), len(cache.verify())


@pytest.mark.parametrize("method", METHODS)
def test_children_fill_one_cache_together(batches: list[str], method: str, tmp_path: pathlib.Path) -> None:
    """Children of each start method, after the parent used fastzarr, fill the same cache at once:
    all finish, agree with the parent, and leave only entries that verify."""
    expected = extract_sum(batches)
    root = str(tmp_path / "cache")
    with (
        fork_warnings_ignored(),
        ProcessPoolExecutor(3, mp_context=multiprocessing.get_context(method)) as ex,
    ):
        futures = [ex.submit(extract_cached_sum, batches, root) for _ in range(3)]
        assert [f.result(timeout=TIMEOUT) for f in futures] == [(expected, 0)] * 3
    cache = fz.Cache(root)
    assert cache.verify() == {}
    assert len(cache.entries()) == len(batches) + 1  # one per source, one for the whole result
    assert extract_cached_sum(batches, root) == (expected, 0)


FORK_WARNING_SCRIPT = """
import os, sys, threading, time, warnings
import fastzarr as fz
from fastzarr import _core

warnings.simplefilter("always")
arr = fz.open_array(sys.argv[1])
arr[...]

def fork_and_wait():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
        if pid == 0:
            # Reading in a child forked mid-read is test_fork_while_parent_is_reading's job;
            # here only the warning is checked, so the child leaves at once.
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    ours = [w for w in caught if "fastzarr" in str(w.message)]
    return os.waitstatus_to_exitcode(status), len(ours), [str(w.message) for w in ours]

print("idle", *fork_and_wait()[:2])
stop = threading.Event()
def hammer():
    while not stop.is_set():
        fz.read_many([(arr, ...)] * 64)
thread = threading.Thread(target=hammer)
thread.start()
def wait_busy():
    deadline = time.monotonic() + 60
    while _core._busy_count() == 0:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.001)
wait_busy()
first = fork_and_wait()
wait_busy()
second = fork_and_wait()
stop.set()
thread.join()
print("busy", first[0], first[1], second[0], second[1])
print("message", first[2][0] if first[2] else "")
print("after", _core._busy_count())
"""


def test_fork_while_busy_warns_once(store: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK_WARNING_SCRIPT, store],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "idle 0 0"  # no warning when nothing runs
    assert lines[1] == "busy 0 1 0 0"  # warned on the first busy fork only
    assert "forkserver" in lines[2]
    assert lines[3] == "after 0"


OWN_THREADS_SCRIPT = """
import glob, os, sys, threading, time, warnings
import numpy as np, xarray as xr
import fastzarr as fz

def threads():
    return {t.rsplit("/", 2)[-2]: open(t).read().strip() for t in glob.glob("/proc/self/task/*/comm")}

before = threads()
store, batches, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
arr = fz.open_array(store)
arr[...]
arr.read((slice(0, 8), slice(None)), out=np.empty((8, arr.shape[1]), arr.dtype))
fz.read_many([(arr, ...), (arr, (0, 0))])
group = fz.open_group(batches[0])
[group[name][...] for name in group.array_keys()]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ds = fz.extract_points(batches, points={"lat": 1.0, "lon": 2.0})
fz.load(fz.open_zarr(batches[0]))
fz.to_zarr(ds, out, mode="w")
fz.inspect(batches[0])
# Python threads (the writer discards an old store in one) are not what this test is about.
for thread in threading.enumerate():
    if thread is not threading.main_thread():
        thread.join(30)
# A thread names itself once it first runs: on a busy machine a pool rebuilt just now (inspect
# changes the thread count and back) may not have yet, so unnamed ones get a few seconds.
for _ in range(100):
    new = {tid: name for tid, name in threads().items() if tid not in before}
    if all(name.startswith("fastzarr-") for name in new.values()):
        break
    time.sleep(0.05)
print(sorted(set(new.values())))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread names from /proc")
def test_every_thread_fastzarr_starts_is_its_own(
    store: str, batches: list[str], tmp_path: pathlib.Path
) -> None:
    """fastzarr starts only its own named pools, never rayon's global pool: that one cannot be
    rebuilt in a forked child, where any work sent to it waits forever (rayon#708). zarrs asks
    rayon for a thread count whenever it builds an array, which would start the global pool if
    it ran outside fastzarr's."""
    out = subprocess.run(
        [sys.executable, "-c", OWN_THREADS_SCRIPT, store, *batches, str(tmp_path / "out.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    names = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert names, "no thread started: the reads did not run"
    assert all(name.startswith("fastzarr-") for name in names), names
