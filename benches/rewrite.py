"""Benchmark ``fastzarr.rewrite`` against the ways people re-encode and re-chunk a store today.

Peers, each in a fresh subprocess (its time and peak RSS), on one seed-like v2 store whose chunks
are one (lat, lon) field each:

- ``fastzarr``: ``fz.rewrite(src, dst, chunks=..., max_memory="1GB")``;
- ``xarray + dask``: ``xr.open_zarr(src).chunk(target).to_zarr(dst)`` (the usual recipe);
- ``zarr-python``: array by array, ``dst[rows] = src[rows]`` in slabs of whole destination chunks.

``rechunker`` is not measured: its latest release (0.5.4) needs zarr-python < 3 (it fails with
``zarr.core has no attribute Array`` beside zarr 3), and installing it would downgrade zarr.

Two scenarios: ``rechunk`` (v2 -> v3, fields -> time series ``{step: -1, lat: 32, lon: 32}``)
and ``recode`` (v2 -> v3, same chunks, new codec). Every peer's output is checked against the
source with ``xr.open_zarr(...).load()`` and ``xr.testing.assert_identical``.

    .venv/bin/python benches/rewrite.py                   # prints a Markdown section
    .venv/bin/python benches/rewrite.py --quick           # small data, a smoke run
    .venv/bin/python benches/rewrite.py --write           # also appends it to benches/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "RESULTS.md"
CODEC = "blosc:zstd:3:shuffle"
#: ``make_batches`` arguments: 8 variables x 8 file_ids x 24 steps x 181 x 360 float32 (400 MB
#: decoded), one chunk per (file_id, step): a 260 KB field.
DATA = {
    "full": {"variables": 8, "file_ids": 8, "steps": 24, "lat": 181, "lon": 360},
    "quick": {"variables": 2, "file_ids": 2, "steps": 6, "lat": 64, "lon": 96},
}
SOURCE_CHUNKS = {"file_id": 1, "step": 1}
SCENARIOS: dict[str, dict[str, int] | None] = {
    "rechunk": {"step": -1, "lat": 32, "lon": 32},
    "recode": None,
}


def _quiet() -> None:
    warnings.simplefilter("ignore")


def _target(ds: Any, chunks: dict[str, int] | None) -> dict[str, int]:
    """Every dimension's destination chunk length (the source's where ``chunks`` leaves it out)."""
    out = {}
    for name, var in ds.data_vars.items():
        for dim, size in zip(var.dims, var.encoding["chunks"], strict=True):
            out[str(dim)] = size
        del name
    for dim, size in (chunks or {}).items():
        out[dim] = ds.sizes[dim] if size == -1 else size
    return out


def run_fastzarr(src: str, dst: str, chunks: dict[str, int] | None) -> None:
    import fastzarr as fz  # noqa: PLC0415

    fz.rewrite(src, dst, chunks=chunks, codec=CODEC, max_memory="1GB", progress=False)


def run_xarray_dask(src: str, dst: str, chunks: dict[str, int] | None) -> None:
    import xarray as xr  # noqa: PLC0415
    from zarr.codecs import BloscCodec  # noqa: PLC0415

    ds = xr.open_zarr(src)
    target = _target(ds, chunks)
    for var in ds.variables.values():
        for key in ("chunks", "preferred_chunks", "compressors", "compressor", "filters"):
            var.encoding.pop(key, None)
    ds = ds.chunk({d: target[str(d)] for d in ds.dims})
    codec = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
    encoding = {name: {"compressors": [codec]} for name in ds.data_vars}
    ds.to_zarr(dst, mode="w-", zarr_format=3, consolidated=True, encoding=encoding)


def run_zarr_python(src: str, dst: str, chunks: dict[str, int] | None) -> None:
    import xarray as xr  # noqa: PLC0415
    import zarr  # noqa: PLC0415
    from zarr.codecs import BloscCodec  # noqa: PLC0415

    target = _target(xr.open_zarr(src), chunks)
    source = zarr.open_group(src, mode="r")
    out = zarr.open_group(dst, mode="w-", zarr_format=3, attributes=dict(source.attrs))
    codec = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
    for name, array in source.arrays():
        attrs = dict(array.attrs)
        dims = attrs.pop("_ARRAY_DIMENSIONS")
        new = out.create_array(
            name,
            shape=array.shape,
            dtype=array.dtype,
            chunks=tuple(min(target.get(d, n), n) for d, n in zip(dims, array.shape, strict=True)),
            compressors=[codec],
            fill_value=array.fill_value,
            attributes=attrs,
            dimension_names=dims,
        )
        rows = max(new.chunks[0], array.chunks[0]) if array.ndim else 0
        if not array.ndim:
            new[...] = array[...]
        for start in range(0, array.shape[0] if array.ndim else 0, rows):
            new[start : start + rows] = array[start : start + rows]
    zarr.consolidate_metadata(dst)


PEERS: dict[str, tuple[str, Callable[[str, str, dict[str, int] | None], None]]] = {
    "fastzarr": ("fastzarr (fz.rewrite)", run_fastzarr),
    "xarray-dask": ("xarray + dask (open_zarr.chunk.to_zarr)", run_xarray_dask),
    "zarr-python": ("zarr-python (array copy in slabs)", run_zarr_python),
}


def _peak_rss() -> int:
    """This process's peak RSS: ``VmHWM`` (``ru_maxrss`` would count the forking parent's memory,
    which Linux carries over fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(peer: str, scenario: str, src: str, dst: str) -> None:
    """One timed run in this (fresh) process; prints seconds and peak RSS as JSON."""
    _quiet()
    import fastzarr  # noqa: F401, PLC0415 - imports are not what is timed
    import xarray  # noqa: F401, PLC0415
    import zarr  # noqa: F401, PLC0415

    start = time.perf_counter()
    PEERS[peer][1](src, dst, SCENARIOS[scenario])
    seconds = time.perf_counter() - start
    peak = _peak_rss()
    print(json.dumps({"seconds": seconds, "peak_rss": peak}))


def check(src: Path, dst: Path, chunks: dict[str, int] | None) -> None:
    """The peer's output reads as the source reads, with the chunks asked for."""
    import xarray as xr  # noqa: PLC0415

    reference, got = xr.open_zarr(src), xr.open_zarr(dst)
    target = _target(reference, chunks)
    for name, var in got.data_vars.items():
        want = tuple(min(target[str(d)], n) for d, n in zip(var.dims, var.shape, strict=True))
        assert var.encoding["chunks"] == want, (name, var.encoding["chunks"], want)
    xr.testing.assert_identical(got.load(), reference.load())


def stored_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per peer (best is reported)")
    parser.add_argument("--write", action="store_true", help="append the section to benches/RESULTS.md")
    parser.add_argument(
        "--child", nargs=4, metavar=("PEER", "SCENARIO", "SRC", "DST"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    _quiet()
    import fastzarr as fz  # noqa: PLC0415
    from fastzarr.testing import make_batches  # noqa: PLC0415

    shape = DATA["quick" if args.quick else "full"]
    work = Path(tempfile.mkdtemp(prefix="fastzarr-rewrite-bench-"))
    try:
        [src] = make_batches(
            work / "src", batches=1, chunks=SOURCE_CHUNKS, zarr_format=2, codec=CODEC, **shape
        )
        decoded = shape["variables"] * shape["file_ids"] * shape["steps"] * shape["lat"] * shape["lon"] * 4
        lines = [
            f"## rewrite: {dt.date.today().isoformat()}",
            "",
            f"`benches/rewrite.py{' --quick' if args.quick else ''} --repeat {args.repeat}`: one v2 store, "
            f"{shape['variables']} variables x {shape['file_ids']} file_ids x {shape['steps']} steps x "
            f"{shape['lat']} x {shape['lon']} float32 ({decoded / 1e6:.0f} MB decoded, "
            f"{stored_bytes(src) / 1e6:.0f} MB stored), one chunk per (file_id, step) field, "
            f"{CODEC}; written as v3 {CODEC}. Machine: {os.cpu_count()} cores, 23.5 GiB, shared and "
            f"contended (other builds and tests ran beside it); fastzarr threads: "
            f"{fz.get_num_threads()}. Best of {args.repeat} fresh processes, peers taking turns; every "
            "output checked with `xr.testing.assert_identical` against the source. fastzarr also fsyncs "
            "every file and re-reads every chunk's checksum before renaming; the peers do neither. "
            "rechunker 0.5.4 needs zarr < 3: not measured.",
        ]
        for scenario, chunks in SCENARIOS.items():
            what = f"chunks {chunks}" if chunks else "same chunks, new codec"
            lines += [
                "",
                f"### {scenario}: v2 -> v3, {what}",
                "",
                "| peer | best s | median s | MB/s decoded | peak RSS MB | output MB | fastzarr speedup |",
                "|:---|---:|---:|---:|---:|---:|---:|",
            ]
            # Peers take turns (A B C A B C ...), so that load from other processes on this shared
            # machine falls on all of them alike.
            runs: dict[str, list[dict[str, float]]] = {peer: [] for peer in PEERS}
            sizes: dict[str, int] = {}
            for i, peer in itertools.product(range(args.repeat), PEERS):
                dst = work / f"{scenario}-{peer}-{i}.zarr"
                done = subprocess.run(
                    [sys.executable, __file__, "--child", peer, scenario, str(src), str(dst)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"{peer} failed on {scenario}:\n{done.stderr[-3000:]}")
                runs[peer].append(json.loads(done.stdout.strip().splitlines()[-1]))
                if i == 0:
                    check(src, dst, chunks)
                    sizes[peer] = stored_bytes(dst)
                shutil.rmtree(dst)
            results = {}
            for peer, peer_runs in runs.items():
                times = sorted(r["seconds"] for r in peer_runs)
                results[peer] = (times, max(r["peak_rss"] for r in peer_runs), sizes[peer])
                print(f"{scenario} {peer}: {times}", file=sys.stderr)
            best_fz = results["fastzarr"][0][0]
            for peer, (times, peak, size) in results.items():
                median = statistics.median(times)
                speedup = "—" if peer == "fastzarr" else f"{times[0] / best_fz:.2f}x"
                lines.append(
                    f"| {PEERS[peer][0]} | {times[0]:.2f} | {median:.2f} | {decoded / 1e6 / times[0]:.0f} "
                    f"| {peak / 1e6:,.0f} | {size / 1e6:.0f} | {speedup} |"
                )
        lines += [
            "",
            f"1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        ]
        section = "\n".join(lines) + "\n"
        print(section)
        if args.write:
            with open(RESULTS_PATH, "a") as f:
                f.write("\n" + section)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
