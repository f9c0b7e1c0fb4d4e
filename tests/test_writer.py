"""fastzarr.to_zarr: round trips against xarray and zarr-python, dask input, atomic replacement."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from fastzarr import _core
from fastzarr.writer import to_zarr

from tests.conftest import quiet_zarr

ENCODING_KEYS = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar", "chunks")


def open_xr(path: Path, **kwargs: Any) -> xr.Dataset:
    with quiet_zarr(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_zarr(path, **kwargs)


def sample_dataset(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    temp = rng.standard_normal((5, 7, 9)).astype("f4")
    temp[0, 0, :3] = np.nan
    scaled = np.round(rng.uniform(0, 100, (5, 7)), 1)
    scaled[1, 2] = np.nan
    ds = xr.Dataset(
        {
            "temp": (("time", "lat", "lon"), temp, {"units": "K", "long_name": "temperature"}),
            "scaled": (("time", "lat"), scaled, {"note": "packed as int16"}),
            "count": (("lat",), np.arange(7, dtype="i8")),
            "flag": (("lon",), np.arange(9) % 2 == 0),
            "delay": (("time",), pd.to_timedelta(np.arange(5), "h").to_numpy()),
        },
        coords={
            "time": pd.date_range("2001-02-03", periods=5, freq="6h"),
            "lat": np.linspace(-30, 30, 7),
            "lon": np.arange(9, dtype="f4") * 10,
            "station": ("lon", [f"st{i}" for i in range(9)]),
            "height": 2.0,
        },
        attrs={"title": "sample", "version": 3, "levels": [1, 2, 3]},
    )
    ds["scaled"].encoding = {"dtype": "i2", "scale_factor": 0.1, "add_offset": 5.0, "_FillValue": -999}
    ds["temp"].encoding = {"chunks": (2, 7, 5)}
    return ds


def wait_for_discards() -> None:
    """Replaced stores are deleted by background threads; wait for them."""
    for thread in threading.enumerate():
        if thread.name == "fastzarr-discard":
            thread.join()


def assert_round_trip(back: xr.Dataset, ds: xr.Dataset) -> None:
    """Identical to ``ds``, except "scaled", packed into int16 by its encoding, which may differ by
    the packing's rounding."""
    xr.testing.assert_identical(back.drop_vars("scaled"), ds.drop_vars("scaled"))
    xr.testing.assert_allclose(back["scaled"], ds["scaled"], atol=0.051)
    assert back["scaled"].attrs == ds["scaled"].attrs


def assert_same_encodings(ours: xr.Dataset, reference: xr.Dataset) -> None:
    for name, var in reference.variables.items():
        for key in ENCODING_KEYS:
            if key in var.encoding:
                a, b = ours[name].encoding.get(key), var.encoding[key]
                if isinstance(b, float | np.floating) and np.isnan(b):
                    assert isinstance(a, float | np.floating), (name, key, a, b)
                    assert np.isnan(a), (name, key, a, b)
                else:
                    assert a == b, (name, key, a, b)
            else:
                assert key not in ours[name].encoding or key == "chunks", (name, key)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_round_trip_matches_xarray(tmp_path: Path, zarr_format: int) -> None:
    ds = sample_dataset()
    result = to_zarr(ds, tmp_path / "fz.zarr", zarr_format=zarr_format)
    assert result.path == tmp_path / "fz.zarr"
    assert result.nbytes > 0
    assert len(result.chunks) > 0
    with quiet_zarr():
        ds.to_zarr(tmp_path / "xr.zarr", zarr_format=zarr_format, consolidated=True)
    ours, reference = open_xr(tmp_path / "fz.zarr"), open_xr(tmp_path / "xr.zarr")
    # "scaled" is packed into int16 (lossy by design): it must equal xarray's own round trip
    xr.testing.assert_identical(ours.drop_vars("scaled"), ds.drop_vars("scaled"))
    xr.testing.assert_identical(ours.load(), reference.load())
    assert_same_encodings(ours, reference)
    assert ours["temp"].encoding["chunks"] == (2, 7, 5)
    # fastzarr's own reader and zarr-python read the same numbers
    group = fz.open_group(tmp_path / "fz.zarr")
    np.testing.assert_array_equal(group["temp"][...], ds["temp"].values)
    with quiet_zarr():
        z = zarr.open_group(tmp_path / "fz.zarr", mode="r")
        np.testing.assert_array_equal(z["temp"][...], ds["temp"].values)


def test_dataarray_and_chunks_argument(tmp_path: Path) -> None:
    da = sample_dataset()["temp"]
    to_zarr(da, tmp_path / "named.zarr", chunks={"time": 1, "lon": -1})
    back = open_xr(tmp_path / "named.zarr")
    xr.testing.assert_identical(back["temp"], da)
    assert back["temp"].encoding["chunks"] == (1, 7, 9)
    to_zarr(da.rename(None), tmp_path / "unnamed.zarr")
    with quiet_zarr():
        opened = xr.open_dataarray(tmp_path / "unnamed.zarr", engine="zarr")
    xr.testing.assert_identical(opened.load(), da.rename(None))


@pytest.mark.parametrize("max_memory", [1, 10_000, 10**9])
def test_dask_input_is_computed_in_slabs(tmp_path: Path, max_memory: int) -> None:
    ds = sample_dataset()
    lazy = ds.chunk({"time": 2, "lat": 3})
    result = to_zarr(lazy, tmp_path / "d.zarr", max_memory=max_memory)
    back = open_xr(tmp_path / "d.zarr")
    assert_round_trip(back, ds)
    # uniform dask chunks become the Zarr chunks unless an encoding says otherwise
    assert back["count"].encoding["chunks"] == (3,)
    # every chunk of every array was written as data: no references, no missing chunks
    for name, var in back.variables.items():
        expected = int(np.prod([-(-n // c) for n, c in zip(var.shape, var.encoding["chunks"], strict=True)]))
        assert sum(1 for r in result.chunks if r[0] == name) == expected, name


def test_lazy_zarr_backed_input(tmp_path: Path) -> None:
    ds = sample_dataset()
    to_zarr(ds, tmp_path / "a.zarr")
    to_zarr(open_xr(tmp_path / "a.zarr"), tmp_path / "b.zarr")
    to_zarr(open_xr(tmp_path / "a.zarr", chunks=None), tmp_path / "c.zarr")
    assert_round_trip(open_xr(tmp_path / "b.zarr"), ds)
    assert_round_trip(open_xr(tmp_path / "c.zarr"), ds)


@pytest.mark.parametrize("codec", ["zstd:1", "gzip:2", "none", "blosc:lz4:5:bitshuffle"])
def test_codecs(tmp_path: Path, codec: str) -> None:
    ds = sample_dataset()
    to_zarr(ds, tmp_path / "c.zarr", codec=codec)
    assert_round_trip(open_xr(tmp_path / "c.zarr"), ds)


def test_modes(tmp_path: Path) -> None:
    ds, other = sample_dataset(0), sample_dataset(1)
    target = tmp_path / "m.zarr"
    to_zarr(ds, target)
    with pytest.raises(FileExistsError, match="already exists"):
        to_zarr(other, target)
    to_zarr(other, target, mode="w")
    assert_round_trip(open_xr(target), other)
    wait_for_discards()
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]  # no temporary sibling left
    with pytest.raises(ValueError, match="mode must be one of"):
        to_zarr(ds, target, mode="r+")
    with pytest.raises(ValueError, match="append_dim is required"):
        to_zarr(ds, target, mode="a")
    with pytest.raises(ValueError, match="codec must look like"):
        to_zarr(ds, tmp_path / "x.zarr", codec="brotli")
    precious = tmp_path / "not_a_store"
    precious.mkdir()
    (precious / "thesis.tex").write_text("important")
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        to_zarr(ds, precious, mode="w")
    assert (precious / "thesis.tex").read_text() == "important"


def test_verify_detects_corruption(tmp_path: Path) -> None:
    result = to_zarr(sample_dataset(), tmp_path / "v.zarr")
    assert _core._verify_chunks(result.path, result.chunks) == result.nbytes
    array, key, _, _ = next(r for r in result.chunks if r[0] == "temp")
    chunk = result.path / key
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(fz.CorruptChunkError, match=rf"{key}.*{array}.*CRC-32C"):
        _core._verify_chunks(result.path, result.chunks)
    chunk.write_bytes(bytes(data[:-3]))
    with pytest.raises(fz.CorruptChunkError, match="bytes stored"):
        _core._verify_chunks(result.path, result.chunks)
    chunk.unlink()
    with pytest.raises(fz.CorruptChunkError, match="missing"):
        _core._verify_chunks(result.path, result.chunks)


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, xarray as xr
    from fastzarr.writer import to_zarr
    seed, target = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(seed)
    ds = xr.Dataset({f"v{i}": (("a", "b"), rng.standard_normal((64, 256)).astype("f4") + seed)
                     for i in range(10)}, attrs={"seed": seed})
    print("ready", flush=True)
    while True:
        to_zarr(ds, target, mode="w", chunks={"a": 8})
    """
)


def test_kill_during_write_leaves_old_or_new(tmp_path: Path) -> None:
    """kill -9 at random moments of repeated replacing writes: the store always opens as one
    complete version (seed 0 or 1), never a mixture, never a half store."""
    target = tmp_path / "k.zarr"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(5)
    seen = set()
    for attempt in range(6):
        seed = attempt % 2
        proc = subprocess.Popen([sys.executable, str(script), str(seed), str(target)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 2.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if not target.exists():
            continue
        back = open_xr(target).load()
        version = back.attrs["seed"]
        assert sorted(back.data_vars) == sorted(f"v{i}" for i in range(10))
        for name in back.data_vars:
            assert abs(float(back[name].mean()) - version) < 0.2, name
        seen.add(version)
    assert seen, "no write finished in any attempt"
    # leftovers of the killed writers are removed by the next write
    to_zarr(xr.Dataset({"x": ("a", np.arange(3))}), target, mode="w")
    wait_for_discards()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.zarr", "writer.py"]


LOCK_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_sweep_keeps_temp_stores_whose_writer_holds_its_lock(tmp_path: Path) -> None:
    """A writer in another PID namespace or on another host sharing the directory is alive while
    it holds the lock beside its temporary store, whatever its process id says here: the sweep of
    leftovers keeps its store, and removes one whose lock no one holds."""
    target = tmp_path / "s.zarr"
    unused_pid = 2**22 + 7  # above Linux's largest pid_max: no such process here
    live = tmp_path / f".s.zarr.fastzarr-tmp-{unused_pid}-aaaaaaaa"
    dead = tmp_path / f".s.zarr.fastzarr-tmp-{unused_pid}-bbbbbbbb"
    for leftover in (live, dead):
        leftover.mkdir()
        (leftover / "chunk").write_bytes(b"data")
    Path(f"{dead}.lock").touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, f"{live}.lock"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == b"locked"
        to_zarr(sample_dataset(0), target)
        assert (live / "chunk").read_bytes() == b"data"
        assert Path(f"{live}.lock").exists()
        assert not dead.exists()
        assert not Path(f"{dead}.lock").exists()
    finally:
        holder.stdin.close()
        holder.wait()
        holder.stdout.close()
    # Its writer gone (the kernel dropped the lock), the next write removes it.
    to_zarr(sample_dataset(1), target, mode="w")
    wait_for_discards()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    assert_round_trip(open_xr(target), sample_dataset(1))


def test_a_replaced_store_is_deleted_once_under_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store a mode="w" write replaced is deleted in the background under a lock of its own:
    a write beside it meanwhile (here the sweep of leftovers) leaves it to that thread instead of
    deleting it a second time, and afterwards neither it nor its lock file is left."""
    import fastzarr._atomic as atomic  # noqa: PLC0415

    target = tmp_path / "s.zarr"
    to_zarr(sample_dataset(0), target)
    release = threading.Event()
    real_rmtree = atomic.shutil.rmtree
    deleted: list[str] = []

    def slow_rmtree(path: Any, ignore_errors: bool = False) -> None:
        if threading.current_thread().name == "fastzarr-discard":
            release.wait(30)
        deleted.append(Path(path).name)
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(atomic.shutil, "rmtree", slow_rmtree)
    try:
        to_zarr(sample_dataset(1), target, mode="w")
        (old,) = [p for p in tmp_path.iterdir() if "-old-" in p.name and not p.name.endswith(".lock")]
        assert Path(f"{old}.lock").exists()
        atomic.remove_leftovers(target)
        assert old.exists(), "the sweep deleted a store another thread is deleting"
    finally:
        release.set()
        wait_for_discards()
    assert deleted == [old.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    assert_round_trip(open_xr(target), sample_dataset(1))


def test_two_rename_replace_never_shows_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where directories cannot be exchanged (NFS and the like) a replace is two renames, and for a
    moment there is no store at the path: an open in that moment waits for the new store."""
    from fastzarr import _atomic  # noqa: PLC0415

    target = tmp_path / "r.zarr"
    to_zarr(sample_dataset(0), target)
    monkeypatch.setattr(_atomic, "FORCE_TWO_RENAMES", True)
    moved_aside, resume = threading.Event(), threading.Event()
    rename = os.rename

    def slow_rename(src: Any, dst: Any) -> None:
        rename(src, dst)
        if Path(src) == target:  # the old store is aside, the new one not yet in place
            moved_aside.set()
            resume.wait(10)

    monkeypatch.setattr(os, "rename", slow_rename)
    replacing = threading.Thread(target=to_zarr, args=(sample_dataset(1), target), kwargs={"mode": "w"})
    replacing.start()
    try:
        assert moved_aside.wait(30)
        assert not target.exists()
        threading.Timer(0.05, resume.set).start()
        group = fz.open_group(target)
        np.testing.assert_array_equal(group["temp"][...], sample_dataset(1)["temp"].values)
    finally:
        resume.set()
        replacing.join()
    wait_for_discards()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]
