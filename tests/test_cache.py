"""fastzarr.Cache: validated entries, rebuilt when damaged, refused when all-NaN, LRU, locking."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
from fastzarr.cache import Cache, CacheWarning, SuspiciousDataError
from fastzarr.extract import extract_points
from fastzarr.testing import make_batches

SMALL = {"variables": 3, "file_ids": 3, "steps": 2, "lat": 8, "lon": 12, "batches": 2}
POINTS = {"lat": [10.0, -20.0, 33.0], "lon": [5.0, 100.0, 200.0]}


def batches(path: Path, **kwargs: Any) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [str(p) for p in make_batches(path, **(SMALL | kwargs))]


def extract(sources: list[str], cache: Cache | None, **kwargs: Any) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fz.DuplicateWarning)
        result = extract_points(sources, points=POINTS, cache=cache, **kwargs)
    assert isinstance(result, xr.Dataset)
    return result


@pytest.fixture
def sources(tmp_path: Path) -> list[str]:
    return batches(tmp_path / "src")


def test_cold_and_warm_equal_uncached(tmp_path: Path, sources: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    expected = extract(sources, None)
    cold = extract(sources, cache)
    xr.testing.assert_identical(cold, expected)
    assert (cache.stats.hits, cache.stats.misses) == (0, 3)  # two sources and the whole result
    warm = extract(sources, cache)
    xr.testing.assert_identical(warm, expected)
    assert (cache.stats.hits, cache.stats.misses) == (1, 3)
    assert cache.stats.bytes_served > 0
    entries = per_source(cache)
    assert len(entries) == 2
    assert {e.source for e in entries} == {os.path.abspath(s) for s in sources}
    assert all(e.size > 0 and e.params["method"] == "nearest" for e in entries)
    assert cache.size == sum(e.size for e in cache.entries())
    # without the whole result, the per-source entries serve the call
    remove_combined(cache)
    xr.testing.assert_identical(extract(sources, cache), expected)
    assert (cache.stats.hits, cache.stats.misses) == (3, 4)
    # another point is another entry; a scalar selection too
    other = extract_points(sources[:1], points={"lat": 0.0, "lon": 7.0}, cache=cache)
    assert isinstance(other, xr.Dataset)
    assert len(per_source(cache)) == 3


def per_source(cache: Cache) -> list[Any]:
    return [e for e in cache.entries() if e.params.get("operation") == "extract_points"]


def remove_combined(cache: Cache) -> None:
    for e in cache.entries():
        if e.params.get("operation") == "extract_points/combined":
            cache.remove(e)


def test_entry_is_a_verified_zarr_store_with_manifest(tmp_path: Path, sources: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    extract(sources[:1], cache)
    (entry,) = per_source(cache)
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["key"] == entry.key
    assert manifest["fastzarr_version"] == fz.__version__
    assert set(manifest["nan_fraction"]) == {"var0000", "var0001", "var0002"}
    assert all(len(c) == 4 for c in manifest["chunks"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = xr.open_zarr(entry.path)
    assert json.loads((entry.path / "zarr.json").read_text())["zarr_format"] == 3
    assert stored["var0000"].encoding["compressors"][0].cname.value == "zstd"
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700


def _chunk_of(entry_path: Path) -> Path:
    manifest = json.loads((entry_path / "manifest.json").read_text())
    key = next(k for a, k, *_ in manifest["chunks"] if a.startswith("var"))
    return entry_path / key


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest", "foreign", "metadata"])
def test_damaged_entries_are_detected_and_rebuilt(
    tmp_path: Path, sources: list[str], damage: str, combined: bool
) -> None:
    cache = Cache(tmp_path / "cache")
    expected = extract(sources, cache)
    first, second = sorted(per_source(cache), key=lambda e: e.source)
    if combined:  # damage the whole result's entry (which a rerun reads first)
        first = next(e for e in cache.entries() if e.params.get("operation") != "extract_points")
    else:  # damage a source's entry, and make the rerun need it
        remove_combined(cache)
    if damage == "flip":
        _flip(_chunk_of(first.path))
    elif damage == "truncate":
        _truncate(_chunk_of(first.path))
    elif damage == "delete":
        _chunk_of(first.path).unlink()
    elif damage == "manifest":
        (first.path / "manifest.json").write_text("{not json")
    elif damage == "foreign":  # the manifest of another key
        shutil.copy(second.path / "manifest.json", first.path / "manifest.json")
    elif damage == "metadata":  # the consolidated metadata reads use
        meta = first.path / "zarr.json"
        meta.write_text(meta.read_text().replace('"float32"', '"int32"', 1))
    with pytest.warns(CacheWarning, match=f"{first.key}.*invalid.*rebuilt"):
        again = extract(sources, cache)
    xr.testing.assert_identical(again, expected)
    assert cache.stats.rebuilt == 1
    assert cache.verify() == {}
    # and the rebuilt entry is served next time
    hits = cache.stats.hits
    xr.testing.assert_identical(extract(sources, cache), expected)
    assert cache.stats.hits == hits + 1


def test_verify_reports_and_prune_removes(tmp_path: Path, sources: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    extract(sources, cache)
    victim = per_source(cache)[0]
    _flip(_chunk_of(victim.path))
    problems = cache.verify()
    assert list(problems) == [victim.key]
    assert "CRC-32C" in problems[victim.key]
    assert len(cache.entries()) == 2
    # verify() also checks every array's own zarr.json (reads use the consolidated copy)
    damaged = cache.entries()[0]
    meta = damaged.path / "var0002" / "zarr.json"
    meta.write_text(meta.read_text().replace('"K"', '"C"'))
    assert list(cache.verify()) == [damaged.key]
    assert len(cache.entries()) == 1
    # prune deletes (and counts) the entries verify set aside
    assert sorted(cache.prune()) == sorted([victim.key, damaged.key])
    assert not any((tmp_path / "cache" / "invalid").iterdir())
    assert cache.prune() == []
    cache.remove(cache.entries()[0])
    assert cache.entries() == []
    extract(sources, cache)
    cache.clear()
    assert cache.entries() == []
    assert cache.size == 0


def test_all_nan_is_refused(tmp_path: Path) -> None:
    ds = xr.Dataset(
        {"good": (("file_id", "lat", "lon"), np.ones((2, 4, 4), "f4")),
         "bad": (("file_id", "lat", "lon"), np.full((2, 4, 4), np.nan, "f4"))},
        coords={"file_id": [0, 1], "lat": np.arange(4.0), "lon": np.arange(4.0)},
    )  # fmt: skip
    ds.to_zarr(tmp_path / "nan.zarr", zarr_format=2, consolidated=True)
    cache = Cache(tmp_path / "cache")
    src = [str(tmp_path / "nan.zarr")]
    with pytest.raises(SuspiciousDataError, match=r"bad \(100% NaN\)"):
        extract_points(src, points={"lat": [1.0], "lon": [2.0]}, cache=cache)
    assert cache.entries() == []
    result = extract_points(src, points={"lat": [1.0], "lon": [2.0]}, cache=cache, allow_nan=True)
    assert isinstance(result, xr.Dataset)
    assert np.isnan(result["bad"].values).all()
    strict = Cache(tmp_path / "strict", max_nan_fraction=0.0)
    with pytest.raises(SuspiciousDataError):
        strict.get_or_build({"x": 1}, lambda: ds.isel(lat=[0]).where(ds.lon > 0), source="s")


def test_source_changed_after_caching_is_a_miss(tmp_path: Path, sources: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    before = extract(sources, cache)
    # rewrite one variable of the first source in place, with other values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(sources[0]).load()
        ds["var0001"] = ds["var0001"] + 100
        ds[["var0001"]].to_zarr(sources[0], mode="r+", zarr_format=2)
    misses = cache.stats.misses
    after = extract(sources, cache)
    assert cache.stats.misses == misses + 2  # the changed source's entry and the whole result
    xr.testing.assert_identical(after, extract(sources, None))
    assert not after["var0001"].equals(before["var0001"])


CONCURRENT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, xarray as xr
    from fastzarr.cache import Cache
    root, marker = sys.argv[1], sys.argv[2]
    def build():
        with open(marker, "a") as f:
            f.write("built\\n")
        time.sleep(1.0)
        return xr.Dataset({"v": ("x", np.arange(1000.0))})
    ds, _ = Cache(root).get_or_build({"name": "shared"}, build, source="test")
    print(json.dumps(float(ds["v"].sum())))
    """
)


def test_two_processes_fill_one_entry_once(tmp_path: Path) -> None:
    script = tmp_path / "fill.py"
    script.write_text(CONCURRENT)
    marker = tmp_path / "built.txt"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "cache"), str(marker)], stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [json.loads(o) for o in outputs] == [499500.0, 499500.0]
    assert marker.read_text() == "built\n"
    assert len(Cache(tmp_path / "cache").entries()) == 1


def test_lock_timeout(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", lock_timeout=0.2)
    # flock is per open file: a second open in the same process conflicts like another process
    with cache._lock("k"), pytest.raises(fz.CacheError, match="timed out"), cache._lock("k"):
        pass


def _small(i: int) -> xr.Dataset:
    return xr.Dataset({"v": ("x", np.random.default_rng(i).standard_normal(20_000))})


def test_lru_eviction_order(tmp_path: Path) -> None:
    probe = Cache(tmp_path / "probe")
    probe.get_or_build({"i": 0}, lambda: _small(0), source="s")
    one = probe.size
    cache = Cache(tmp_path / "cache", max_size=int(one * 3.5))
    for i in range(3):
        cache.get_or_build({"i": i}, lambda i=i: _small(i), source=f"s{i}")
        time.sleep(0.02)
    cache.get_or_build({"i": 0}, lambda: _small(0), source="s0")  # a hit: 0 is now the most recent
    time.sleep(0.02)
    cache.get_or_build({"i": 3}, lambda: _small(3), source="s3")  # over the limit: 1 goes
    assert [e.source for e in cache.entries()] == ["s2", "s0", "s3"]
    assert cache.size <= cache.max_size  # type: ignore[operator]
    cache.get_or_build({"i": 4}, lambda: _small(4), source="s4")
    assert [e.source for e in cache.entries()] == ["s0", "s3", "s4"]


def test_root_and_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTZARR_CACHE_DIR", str(tmp_path / "env"))
    assert Cache().root == tmp_path / "env"
    assert Cache(tmp_path / "c", max_size="50GB").max_size == 50 * 10**9
    assert Cache(tmp_path / "c", max_size="1.5GiB").max_size == int(1.5 * 2**30)
    assert Cache(tmp_path / "c", max_size=123).max_size == 123
    with pytest.raises(ValueError, match="invalid max_size 'lots'"):
        Cache(tmp_path / "c", max_size="lots")
    assert "Cache(" in repr(Cache(tmp_path / "c", max_size="1MB"))


FILLER = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("ignore")
    from fastzarr.cache import Cache
    from fastzarr.extract import extract_points
    root, *sources = sys.argv[1:]
    print("ready", flush=True)
    for i in range(1000):
        extract_points(sources, points={"lat": [float(i % 80)], "lon": [5.0]}, cache=Cache(root))
    """
)


def test_kill_during_fill_never_leaves_a_wrong_entry(tmp_path: Path, sources: list[str]) -> None:
    script = tmp_path / "filler.py"
    script.write_text(FILLER)
    root = tmp_path / "cache"
    rng = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(root), *sources], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.5, 4.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    cache = Cache(root)
    assert cache.verify() == {}  # every entry that exists is complete and valid
    assert cache.entries()
    for entry in per_source(cache):
        lat = entry.params["points"]["lat"]["dataarray"]
        assert lat["dtype"] == "<f8"
    # and what they hold is what the sources give
    for i in range(3):
        pts = {"lat": [float(i)], "lon": [5.0]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fz.DuplicateWarning)
            xr.testing.assert_identical(
                extract_points(sources, points=pts, cache=cache), extract_points(sources, points=pts)
            )


def test_verify_timeout(tmp_path: Path, sources: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    extract(sources, cache)
    with pytest.raises(fz.TimeoutError, match="verification"):
        cache.verify(timeout=1e-9)
    assert cache.verify(timeout=60) == {}
    assert len(cache.entries()) == len(sources) + 1


@pytest.mark.parametrize("how", ["rewritten-in-place", "copied-over-with-cp-p"])
def test_source_rewritten_with_old_sizes_and_mtimes_is_a_miss(tmp_path: Path, how: str) -> None:
    """``cp -p``, ``rsync -a`` and ``tar x`` restore mtimes: a chunk rewritten with other values
    of the same size and its old mtime put back must still change the fingerprint (its ctime, and
    its inode where the file was replaced, cannot be restored)."""
    source = tmp_path / "src.zarr"
    values = np.arange(4 * 6, dtype="f8").reshape(4, 6)
    fz.to_zarr(xr.Dataset({"v": (("y", "x"), values)}), source, codec="none", chunks={"y": 2, "x": 3})
    cache = Cache(tmp_path / "cache")
    first = fz.load(fz.open_zarr(source), cache=cache)
    np.testing.assert_array_equal(first["v"].values, values)
    chunk = source / "v" / "c" / "0" / "0"
    before = chunk.stat()
    changed = (np.frombuffer(chunk.read_bytes(), dtype="<f8") + 1000).astype("<f8").tobytes()
    assert len(changed) == before.st_size
    if how == "rewritten-in-place":
        chunk.write_bytes(changed)
    else:
        staged = tmp_path / "staged"
        staged.write_bytes(changed)
        os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))
        shutil.copy2(staged, chunk)  # what cp -p does
    os.utime(chunk, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (chunk.stat().st_size, chunk.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    misses = cache.stats.misses
    again = fz.load(fz.open_zarr(source), cache=cache)
    assert cache.stats.misses == misses + 1
    expected = values.copy()
    expected[0:2, 0:3] += 1000
    np.testing.assert_array_equal(again["v"].values, expected)
