"""Timeouts, Ctrl-C and thread settings: reads stop promptly and the next call works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
from conftest import write_array
from fastzarr.testing import make_batches


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    data = np.random.default_rng(0).standard_normal((64, 128, 128)).astype("f4")
    return write_array(tmp_path_factory.mktemp("big") / "a.zarr", data, chunks=(1, 128, 128), zarr_format=2)


def test_timeout_raises_fastzarr_timeout_error(big: str) -> None:
    arr = fz.open_array(big)
    requests = [(arr, ...)] * 200
    with pytest.raises(fz.TimeoutError) as caught:
        fz.read_many(requests, timeout=0.01)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, fz.FastzarrError)
    np.testing.assert_array_equal(arr.read(timeout=60), arr[...])


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_invalid_timeouts(big: str, timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        fz.open_array(big).read(timeout=timeout)


def test_ctrl_c_interrupts_a_long_read_within_a_second(big: str) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, threading, time
        import fastzarr as fz
        fz.set_num_threads(1)
        arr = fz.open_array({big!r})
        requests = [(arr, ...)] * 2000
        signalled = []
        def interrupt():
            signalled.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
        threading.Timer(0.3, interrupt).start()
        try:
            fz.read_many(requests)
            print("finished")
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - signalled[0])
        print("next", float(arr[0, 0, 0]) == float(fz.read_many([(arr, (0, 0, 0))])[0]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0].startswith("interrupted"), out.stdout
    assert float(lines[0].split()[1]) < 1.0  # under a second from the signal
    assert lines[1] == "next True"


@pytest.mark.parametrize("value", ["0", "-2", "abc", ""])
def test_invalid_thread_environment_is_an_error(tmp_path: Path, value: str) -> None:
    code = textwrap.dedent(
        """
        import fastzarr as fz
        try:
            fz.get_num_threads()
        except ValueError as e:
            print("error", e)
        """
    )
    env = {**os.environ, "FASTZARR_NUM_THREADS": value}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("error FASTZARR_NUM_THREADS must be a positive integer")


def interrupted_run(script: str, *args: str) -> list[str]:
    """Runs ``script`` in a fresh interpreter that Ctrl-Cs itself; checks it printed
    ``interrupted <seconds since the signal>`` first, under a second, and returns the other lines."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("interrupted"), out.stdout
    assert float(lines[0].split()[1]) < 1.0, out.stdout
    return lines[1:]


CTRL_C_CACHE_SCRIPT = """
import os, signal, sys, threading, time, warnings
import xarray as xr
import fastzarr as fz
warnings.simplefilter("ignore")
root, sources = sys.argv[1], sys.argv[2:]
fz.set_num_threads(1)
cache = fz.Cache(root)
points = {"lat": [1.0, 7.0], "lon": [2.0, 40.0]}
sent = []

def interrupt_once_filling():
    # Ctrl-C once a few sources are cached: in the middle of filling the next entries.
    while len(cache.entries()) < 3:
        time.sleep(0.01)
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)

os.makedirs(root, exist_ok=True)
threading.Thread(target=interrupt_once_filling, daemon=True).start()
try:
    fz.extract_points(sources, points=points, cache=cache)
    print("finished")
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - sent[0])
print("entries", len(cache.entries()), "bad", sorted(cache.verify()))
got = fz.extract_points(sources, points=points, cache=cache)
xr.testing.assert_identical(got, fz.extract_points(sources, points=points))
print("next", len(cache.entries()), sorted(cache.verify()))
"""


def test_ctrl_c_while_extract_points_fills_a_cache(tmp_path: Path) -> None:
    """SIGINT in the middle of filling one cache entry per source: KeyboardInterrupt within a
    second, every entry left behind verifies, and the next call completes and is right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources = make_batches(tmp_path / "src", batches=40, variables=4, file_ids=2, steps=4, lat=16, lon=48)
    lines = interrupted_run(CTRL_C_CACHE_SCRIPT, str(tmp_path / "cache"), *map(str, sources))
    entries, bad = lines[0].split(" bad ")
    assert 0 < int(entries.split()[1]) < len(sources), lines
    assert bad == "[]", lines
    # One entry per source, and one for the whole call's result.
    assert lines[1] == f"next {len(sources) + 1} []", lines


CTRL_C_REWRITE_SCRIPT = """
import os, signal, sys, threading, time
import xarray as xr
import fastzarr as fz
src, dst = sys.argv[1], sys.argv[2]
parent = os.path.dirname(dst)
fz.set_num_threads(1)
sent = []

def interrupt_once_writing():
    # Ctrl-C once the rewrite's temporary sibling exists: in the middle of writing chunks.
    name = "." + os.path.basename(dst) + ".fastzarr-tmp-"
    while not any(n.startswith(name) for n in os.listdir(parent)):
        time.sleep(0.005)
    time.sleep(0.2)
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt_once_writing, daemon=True).start()
try:
    fz.rewrite(src, dst, chunks={"step": -1, "lat": 32, "lon": 32}, max_memory="64MB", progress=False)
    print("finished")
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - sent[0])
print("exists", os.path.exists(dst))
fz.rewrite(src, dst, chunks={"step": -1, "lat": 32, "lon": 32}, max_memory="64MB", progress=False)
xr.testing.assert_identical(xr.open_zarr(dst).load(), xr.open_zarr(src).load())
print("next ok", sorted(n for n in os.listdir(parent) if n.startswith(".")))
"""


def test_ctrl_c_during_a_rewrite(tmp_path: Path) -> None:
    """SIGINT while a rewrite writes: KeyboardInterrupt within a second, no store at the
    destination (nothing half-written opens), and the next rewrite completes and is identical."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [src] = make_batches(tmp_path / "src", batches=1, variables=16, file_ids=4, steps=12, lat=96, lon=128)
    dst = tmp_path / "out" / "ts.zarr"
    dst.parent.mkdir()
    lines = interrupted_run(CTRL_C_REWRITE_SCRIPT, str(src), str(dst))
    assert lines[0] == "exists False", lines
    assert lines[1] == "next ok []", lines  # no temporary sibling left behind


CTRL_C_ONE_CHUNK_SCRIPT = """
import os, signal, sys, threading, time
import fastzarr as fz
fz.set_num_threads(1)
arr = fz.open_array(sys.argv[1])
started = time.perf_counter()
arr[...]
whole = time.perf_counter() - started
sent = []

def interrupt():
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)

# Ctrl-C a fifth of the way into the same read: inside the one chunk's decoding.
threading.Timer(whole / 5, interrupt).start()
try:
    arr[...]
    print("finished")
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - sent[0], whole)
"""


@pytest.mark.parametrize(
    ("compressor", "elements"),
    [(numcodecs.BZ2(), 1 << 20), (numcodecs.Zstd(level=3), 1 << 24), (numcodecs.GZip(), 1 << 22)],
    ids=["bz2-4MB", "zstd-64MB", "gzip-16MB"],
)
def test_ctrl_c_stops_inside_one_big_chunk(tmp_path: Path, compressor: Any, elements: int) -> None:
    """A read of one big chunk of a slow codec stops soon after Ctrl-C, not after decoding the
    rest of the chunk: well within half the chunk's decode time, and under half a second (the
    decoders check for cancellation every few milliseconds of work)."""
    rng = np.random.default_rng(5)
    data = np.round(rng.standard_normal(elements).cumsum(), 2).astype("f4")
    if isinstance(compressor, numcodecs.BZ2):
        data = rng.standard_normal(elements).astype("f4")  # slowest for bz2: ~1 s on a busy core
    path = write_array(tmp_path / "one.zarr", data, chunks=data.shape, zarr_format=2, compressors=compressor)
    out = subprocess.run(
        [sys.executable, "-c", CTRL_C_ONE_CHUNK_SCRIPT, path],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "interrupted", out.stdout
    stopped, whole = float(words[1]), float(words[2])
    assert stopped < min(0.5, whole / 2), out.stdout
