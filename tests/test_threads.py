"""Many Python threads calling fastzarr at once, on the same and on different arrays, get the
same results as zarr-python; panics in Rust reach Python as FastzarrError."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
from conftest import write_array, zarr_read
from fastzarr import _core

THREADS = 16
ROUNDS = 6


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("threads")
    rng = np.random.default_rng(3)
    return [
        write_array(
            root / "a.zarr", rng.standard_normal((40, 50)).astype("f4"), chunks=(8, 16), zarr_format=2
        ),
        write_array(
            root / "b.zarr",
            rng.integers(0, 1000, (30, 20, 10)).astype("i8"),
            chunks=(7, 5, 10),
            zarr_format=3,
            compressors=None,
        ),
        write_array(
            root / "c.zarr",
            rng.standard_normal((64, 64)),
            chunks=(64, 64),
            zarr_format=2,
            compressors=numcodecs.Blosc(cname="zstd", shuffle=2, blocksize=1024),
        ),
    ]


def run_threads(work: Callable[[int], None]) -> None:
    """Starts every thread at once (a barrier) and re-raises the first failure."""
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def test_threads_on_the_same_array(stores: list[str]) -> None:
    arr = fz.open_array(stores[0])
    expected = zarr_read(stores[0])
    keys: list[Any] = [
        ...,
        (slice(3, 30), slice(None, None, -3)),
        (5,),
        (slice(None), 7),
        (slice(1, 40, 4), 2),
    ]

    def work(i: int) -> None:
        for r in range(ROUNDS):
            key = keys[(i + r) % len(keys)]
            np.testing.assert_array_equal(arr[key], expected[key])
            np.testing.assert_array_equal(arr.read(key, timeout=60), expected[key])

    run_threads(work)


def test_threads_on_different_arrays_and_read_many(stores: list[str]) -> None:
    expected = [zarr_read(s) for s in stores]

    def work(i: int) -> None:
        arrays = [fz.open_array(s) for s in stores]  # opened concurrently too
        for r in range(ROUNDS):
            which = (i + r) % len(stores)
            np.testing.assert_array_equal(arrays[which][...], expected[which])
            parts = fz.read_many([(a, (slice(r, r + 5),)) for a in arrays])
            for got, exp in zip(parts, expected, strict=True):
                np.testing.assert_array_equal(got, exp[r : r + 5])
            points = {0: np.array([0, r, 29]), 1: np.array([19, 0, r])}
            got = fz.read_many([(arrays[1], ..., points)])[0]
            np.testing.assert_array_equal(got, expected[1][[0, r, 29], [19, 0, r]])

    run_threads(work)


def test_threads_with_failures_and_timeouts_mixed_in(stores: list[str], tmp_path: Path) -> None:
    """Errors in some threads (bad selections, corrupt chunks, timeouts) leave the others'
    results intact."""
    bad = write_array(tmp_path / "bad.zarr", np.arange(20.0), chunks=(5,), zarr_format=3)
    (Path(bad) / "c" / "2").write_bytes(b"garbage")
    good = fz.open_array(stores[0])
    expected = zarr_read(stores[0])
    broken = fz.open_array(bad)

    def work(i: int) -> None:
        for _ in range(ROUNDS):
            if i % 4 == 0:
                with pytest.raises(fz.CorruptChunkError, match="c/2"):
                    broken[...]
            elif i % 4 == 1:
                with pytest.raises(IndexError):
                    good[100]
            elif i % 4 == 2:
                try:
                    got = fz.read_many([(good, ...)] * 50, timeout=0.001)
                except fz.TimeoutError:
                    pass
                else:
                    np.testing.assert_array_equal(got[-1], expected)
            else:
                np.testing.assert_array_equal(good[...], expected)

    run_threads(work)


# --- panics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("place", ["python", "detached", "pool"])
def test_panics_become_fastzarr_errors(place: str) -> None:
    """A Rust panic anywhere in a call (with the GIL, without it, in a pool task) is a
    FastzarrError (an Exception), not pyo3's PanicException (a BaseException)."""
    with pytest.raises(fz.FastzarrError, match=r"internal error.*debug panic") as info:
        _core._debug_panic(place)
    assert isinstance(info.value, Exception)
    # and the pool still works afterwards
    assert fz.get_num_threads() >= 1


def test_panics_in_threads_do_not_break_other_calls(stores: list[str]) -> None:
    arr = fz.open_array(stores[2])
    expected = zarr_read(stores[2])

    def work(i: int) -> None:
        for _ in range(ROUNDS):
            if i % 2:
                with pytest.raises(fz.FastzarrError):
                    _core._debug_panic("pool")
            else:
                np.testing.assert_array_equal(arr[...], expected)

    run_threads(work)
    assert _core._busy_count() == 0


def test_debug_hook_rejects_unknown_places() -> None:
    with pytest.raises(ValueError, match="place"):
        _core._debug_panic("nowhere")
