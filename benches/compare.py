"""Benchmark fastzarr against its peers on seed-like Zarr v2 stores, in three suites:

- ``load``: every data variable of every store into numpy (``read_many``, and the xarray paths
  ``fz.load(xr.open_zarr(p))`` / ``engine="fastzarr"``), against xarray, zarr-python,
  tensorstore and a single-thread floor;
- ``points``: one coordinate's series out of every store (``fz.extract_points``), against
  ``xr.concat`` of per-store ``sel``, zarr-python and tensorstore (peers in ``points.py``);
- ``latency``: the same kinds of reads over HTTP from a loopback server that waits
  ``--latency-ms`` (20) per request and counts requests, bytes and requests in flight: fastzarr
  against xarray over
  fsspec (dask and not) and tensorstore's http kvstore (server and peers in ``latency.py``); its
  section of RESULTS.md is replaced in place, so ``--suites latency`` alone updates just that.

Each (dataset, peer) pair runs in a fresh subprocess: one warm-up load (which also warms the
OS page cache), then ``--repeat`` timed loads; the best and median times and the process's
peak RSS are reported. Every peer's result is checked byte for byte against fastzarr's.

    .venv/bin/python benches/compare.py            # full run, writes benches/RESULTS.md
    .venv/bin/python benches/compare.py --quick    # smoke run on small data, prints only
    .venv/bin/python benches/compare.py --suites latency   # only the HTTP latency section
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import latency
import numpy as np
import numpy.typing as npt
from points import POINT_PEERS
from timing import best


class Target(NamedTuple):
    """A goal for fastzarr on one dataset: ``subject``'s speedup over ``peer`` (at least
    ``threshold``), or (peer None) peak RSS / output (at most ``threshold``)."""

    dataset: str
    peer: str | None
    threshold: float
    subject: str = "fastzarr"


#: What fastzarr should reach. Speedup = peer's best time / fastzarr's best time (at least
#: ``threshold``); the RSS target is fastzarr's peak RSS / decoded output size (at most).
TARGETS: dict[str, Target] = {
    "full load: >= 1.8x the single-thread floor": Target("batches", "floor", 1.8),
    "full load: >= 2.5x zarrs-python": Target("batches", "zarrs", 2.5),
    "full load: >= 7x xarray+dask": Target("batches", "xarray-dask", 7.0),
    "thousands of small variables: >= 2x tensorstore": Target("small-vars", "tensorstore", 2.0),
    "full load: peak RSS <= 1.1x output size": Target("batches", None, 1.1),
    "200 variables: fz.load(xr.open_zarr) >= 5x xarray+dask": Target(
        "vars-200", "xarray-dask", 5.0, "fz-load-xr"
    ),
    "thousands of variables: fz.load(xr.open_zarr) >= 20x xarray+dask": Target(
        "small-vars", "xarray-dask", 20.0, "fz-load-xr"
    ),
    '200 variables: open_dataset(engine="fastzarr").load() >= 5x xarray+dask': Target(
        "vars-200", "xarray-dask", 5.0, "fz-engine"
    ),
    'thousands of variables: open_dataset(engine="fastzarr").load() >= 20x xarray+dask': Target(
        "small-vars", "xarray-dask", 20.0, "fz-engine"
    ),
    "points, batches: >= 1.2x tensorstore": Target("points/batches", "tensorstore", 1.2),
    "points, batches: >= 5x xarray+dask": Target("points/batches", "xarray-dask", 5.0),
    "points, small variables: >= 2x tensorstore": Target("points/small-vars", "tensorstore", 2.0),
    "points, small variables: >= 50x xarray+dask": Target("points/small-vars", "xarray-dask", 50.0),
    "points, ERA5-like: >= 10x tensorstore": Target("points/era5", "tensorstore", 10.0),
}
#: 100 points at once should cost less than this many times one point (fastzarr, per dataset).
MANY_POINTS_MAX_RATIO = 2.0

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_PATH = BENCH_DIR / "RESULTS.md"
CODEC = "blosc:zstd:3:shuffle"
CHILD_TIMEOUT_S = 900
#: Other processes using less than this share of the cores count as a quiet machine.
QUIET_SHARE = 0.2

#: ``fastzarr.testing.make_batches`` arguments per dataset, full size and ``--quick``.
DATASETS: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "batches": {"batches": 3, "variables": 40, "file_ids": 8, "steps": 24, "lat": 96, "lon": 128},
        "small-vars": {"batches": 1, "variables": 3000, "file_ids": 4, "steps": 2, "lat": 8, "lon": 16},
        "vars-200": {"batches": 1, "variables": 200, "file_ids": 4, "steps": 24, "lat": 32, "lon": 64},
    },
    "quick": {
        "batches": {"batches": 2, "variables": 8, "file_ids": 4, "steps": 6, "lat": 32, "lon": 64},
        "small-vars": {"batches": 1, "variables": 300, "file_ids": 4, "steps": 2, "lat": 8, "lon": 16},
        "vars-200": {"batches": 1, "variables": 50, "file_ids": 4, "steps": 6, "lat": 32, "lon": 64},
    },
}


def _era5_like(variables: int, steps: int) -> dict[str, int]:
    """``make_batches`` arguments for one store whose every chunk is one 721 x 1440 field."""
    return {
        "batches": 1,
        "variables": variables,
        "file_ids": 1,
        "steps": steps,
        "lat": 721,
        "lon": 1440,
        "overlap": 0,
    }


#: Datasets of the points suite: the load suite's batches and small variables, plus an
#: ERA5-like store whose every chunk is one 721 x 1440 field (``chunks`` below).
POINT_DATASETS: dict[str, dict[str, dict[str, int]]] = {
    size: {
        "batches": DATASETS[size]["batches"],
        "small-vars": DATASETS[size]["small-vars"],
        "era5": _era5_like(**era5),
    }
    for size, era5 in {"full": {"variables": 2, "steps": 48}, "quick": {"variables": 1, "steps": 8}}.items()
}
#: Datasets of the latency suite alone: a point's series at archive scale, 2 stores x 20 variables
#: x 24 steps (960 chunks), where the number of requests decides: one 0.25-degree (721 x 1440)
#: field per chunk as ERA5 stores them (2.2 GB on disk), and one 1-degree field per chunk, whose
#: chunks are too small for a partial read.
LATENCY_DATASETS: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "era5-archive": {
            "batches": 2, "variables": 20, "file_ids": 1, "steps": 24, "lat": 721, "lon": 1440, "overlap": 0
        },
        "archive": {
            "batches": 2, "variables": 20, "file_ids": 1, "steps": 24, "lat": 181, "lon": 360, "overlap": 0
        },
    },
    "quick": {
        "era5-archive": {
            "batches": 2, "variables": 2, "file_ids": 1, "steps": 4, "lat": 721, "lon": 1440, "overlap": 0
        },
        "archive": {
            "batches": 2, "variables": 4, "file_ids": 1, "steps": 6, "lat": 181, "lon": 360, "overlap": 0
        },
    },
}  # fmt: skip
#: Chunking other than make_batches' default (one file_id per chunk).
DATASET_CHUNKS: dict[str, dict[str, int]] = {
    "era5": {"step": 1}, "era5-archive": {"step": 1}, "archive": {"step": 1}
}  # fmt: skip

DATASET_TITLES = {
    "batches": "Seed-like batch stores (full load)",
    "small-vars": "Thousands of small variables",
    "vars-200": "200 variables through xarray",
    "points/batches": "Points: seed-like batch stores",
    "points/small-vars": "Points: thousands of small variables",
    "points/era5": "Points: ERA5-like, one 721 x 1440 field per chunk",
    "points/era5-archive": (
        "Points from an ERA5-like archive: 2 stores x 20 variables x 24 steps, 721 x 1440 chunks"
    ),
    "points/archive": "Points at archive scale: 2 stores x 20 variables x 24 steps, 181 x 360 chunks",
    "cache": "Cache and writer (extract_points of 64 points from the batch stores; to_zarr of one store)",
}

# A store to load: its path and the names of its data variables.
StoreSpec = tuple[str, list[str]]
Loaded = dict[str, npt.NDArray[Any]]


# --------------------------------------------------------------------------------------------
# Peers. Each loader reads every listed data variable of every store and returns
# {"<store>/<name>": numpy array}. Modules are imported by name so that a child process only
# pays (in time and RSS) for the peer it measures.
# --------------------------------------------------------------------------------------------


def load_fastzarr(stores: list[StoreSpec]) -> Loaded:
    """fastzarr: one ``read_many`` per store over all its data variables."""
    fastzarr = importlib.import_module("fastzarr")
    out: Loaded = {}
    for path, names in stores:
        group = fastzarr.open_group(path)
        arrays = fastzarr.read_many([(group[name], ...) for name in names])
        out.update(zip((f"{path}/{name}" for name in names), arrays, strict=True))
    return out


def _load_datasets(stores: list[StoreSpec], open_loaded: Callable[[str], Any]) -> Loaded:
    """Every listed variable of ``open_loaded(path)`` (a loaded xarray Dataset) per store."""
    out: Loaded = {}
    for path, names in stores:
        ds = open_loaded(path)
        out.update({f"{path}/{name}": ds.variables[name].values for name in names})
    return out


def load_fastzarr_xarray(stores: list[StoreSpec]) -> Loaded:
    """``fz.load(xr.open_zarr(p))``: xarray opens (dask-backed), fastzarr loads in one pass."""
    xr = importlib.import_module("xarray")
    fastzarr = importlib.import_module("fastzarr")
    return _load_datasets(stores, lambda path: fastzarr.load(xr.open_zarr(path)))


def load_fastzarr_open_load(stores: list[StoreSpec]) -> Loaded:
    """``fz.load(fz.open_zarr(p))``: fastzarr opens (dask-backed by default, as xr.open_zarr)
    and loads in one pass."""
    fastzarr = importlib.import_module("fastzarr")
    return _load_datasets(stores, lambda path: fastzarr.load(fastzarr.open_zarr(path)))


def load_fastzarr_engine(stores: list[StoreSpec]) -> Loaded:
    """``xr.open_dataset(p, engine="fastzarr").load()``: xarray's own load, variable by variable,
    each read chunk-parallel by the fastzarr backend."""
    xr = importlib.import_module("xarray")
    return _load_datasets(stores, lambda path: xr.open_dataset(path, engine="fastzarr").load())


def _load_xarray(stores: list[StoreSpec], **open_kwargs: Any) -> Loaded:
    """``xr.open_zarr(path, **open_kwargs).load()`` per store."""
    xr = importlib.import_module("xarray")
    return _load_datasets(stores, lambda path: xr.open_zarr(path, **open_kwargs).load())


def load_xarray_dask(stores: list[StoreSpec]) -> Loaded:
    """xarray with its default dask chunks (threaded scheduler)."""
    return _load_xarray(stores)


def load_xarray_nodask(stores: list[StoreSpec]) -> Loaded:
    """xarray without dask (``chunks=None``): lazy backend arrays loaded one by one."""
    return _load_xarray(stores, chunks=None)


def _load_zarr_python(stores: list[StoreSpec]) -> Loaded:
    """zarr-python with whatever codec pipeline is configured: ``group[name][...]`` in turn."""
    zarr = importlib.import_module("zarr")
    out: Loaded = {}
    for path, names in stores:
        group = zarr.open_group(path, mode="r")
        out.update({f"{path}/{name}": group[name][...] for name in names})
    return out


def load_zarrs(stores: list[StoreSpec]) -> Loaded:
    """zarr-python with the zarrs (Rust) codec pipeline."""
    zarr = importlib.import_module("zarr")
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        return _load_zarr_python(stores)


def load_zarr(stores: list[StoreSpec]) -> Loaded:
    """zarr-python with its default codec pipeline."""
    return _load_zarr_python(stores)


def load_tensorstore(stores: list[StoreSpec]) -> Loaded:
    """tensorstore's zarr (v2) driver: per store, all opens then all reads issued as futures."""
    ts = importlib.import_module("tensorstore")
    # Fresh per load, so nothing is cached between repetitions; its decode threads sized to
    # the usable cores (tensorstore counts the machine's, not the process's affinity mask).
    cores = len(os.sched_getaffinity(0))
    context = ts.Context({"data_copy_concurrency": {"limit": cores}})
    out: Loaded = {}
    for path, names in stores:
        opens = [
            ts.open(
                {"driver": "zarr", "kvstore": {"driver": "file", "path": f"{path}/{name}"}},
                read=True,
                context=context,
            )
            for name in names
        ]
        reads = [future.result().read() for future in opens]
        out.update({f"{path}/{name}": future.result() for name, future in zip(names, reads, strict=True)})
    return out


def load_floor(stores: list[StoreSpec]) -> Loaded:
    """The single-thread floor: read each chunk file and decode it with numcodecs into place."""
    numcodecs_blosc = importlib.import_module("numcodecs.blosc")
    numcodecs_blosc.use_threads = False
    out: Loaded = {}
    for path, names in stores:
        with open(Path(path) / ".zmetadata", "rb") as f:
            metadata = json.loads(f.read())["metadata"]
        for name in names:
            out[f"{path}/{name}"] = _decode_v2_array(Path(path) / name, metadata[f"{name}/.zarray"])
    return out


def _decode_v2_array(directory: Path, zarray: dict[str, Any]) -> npt.NDArray[Any]:
    """Decodes every chunk of a Zarr v2 array (compressor only, C order) into a new array."""
    if zarray.get("filters") or zarray["order"] != "C":
        raise NotImplementedError("the floor handles compressor-only, C-order arrays")
    numcodecs = importlib.import_module("numcodecs")
    compressor = numcodecs.get_codec(zarray["compressor"]) if zarray["compressor"] else None
    shape, chunks = tuple(zarray["shape"]), tuple(zarray["chunks"])
    dtype = np.dtype(zarray["dtype"])
    separator = zarray.get("dimension_separator", ".")
    out = np.empty(shape, dtype)
    grid = [range(math.ceil(s / c)) for s, c in zip(shape, chunks, strict=True)]
    for index in itertools.product(*grid):
        region = tuple(
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape, strict=True)
        )
        target = out[region]
        try:
            with open(directory / (separator.join(map(str, index)) or "0"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            target[...] = np.asarray(zarray["fill_value"] or 0, dtype=dtype)
            continue
        if target.shape == chunks and target.flags.c_contiguous:
            # A whole chunk landing contiguously in the output: decode straight into it.
            if compressor is None:
                target.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)
            else:
                compressor.decode(data, out=target)
        else:
            decoded = compressor.decode(data) if compressor else data
            chunk = np.frombuffer(decoded, dtype).reshape(chunks)
            target[...] = chunk[tuple(slice(0, n) for n in target.shape)]
    return out


class Peer(NamedTuple):
    """A way of loading the stores, and the modules it needs imported before timing."""

    label: str
    modules: tuple[str, ...]
    load: Callable[[list[StoreSpec]], Loaded]


PEERS: dict[str, Peer] = {
    "fastzarr": Peer("fastzarr (read_many)", ("fastzarr",), load_fastzarr),
    "fz-load-xr": Peer(
        "fz.load(xr.open_zarr(p))", ("fastzarr", "xarray", "dask.array", "zarr"), load_fastzarr_xarray
    ),
    "fz-open-load": Peer("fz.load(fz.open_zarr(p))", ("fastzarr", "xarray"), load_fastzarr_open_load),
    "fz-engine": Peer('open_dataset(engine="fastzarr").load()', ("fastzarr", "xarray"), load_fastzarr_engine),
    "xarray-dask": Peer("xarray + dask", ("xarray", "dask.array", "zarr"), load_xarray_dask),
    "xarray": Peer("xarray, no dask", ("xarray", "zarr"), load_xarray_nodask),
    "zarrs": Peer("zarr-python + zarrs pipeline", ("zarr", "zarrs"), load_zarrs),
    "zarr": Peer("zarr-python (default pipeline)", ("zarr",), load_zarr),
    "tensorstore": Peer("tensorstore", ("tensorstore",), load_tensorstore),
    "floor": Peer("floor: 1 thread, numcodecs", ("numcodecs", "numcodecs.blosc"), load_floor),
}
REFERENCE = "fastzarr"
SUITES = ("load", "points", "latency")


def suite_peers(suite: str) -> dict[str, Any]:
    """The peers of a suite by name (``Peer``, ``points.PointPeer`` or ``latency.LatencyPeer``:
    label, modules, load); a latency case's suite is ``latency/<case>``."""
    if suite.startswith("latency/"):
        return dict(latency.case_of(suite).peers)
    return dict(PEERS) if suite == "load" else dict(POINT_PEERS)


def is_checked(suite: str, peer: str) -> bool:
    """Whether the peer's result must equal fastzarr's (the 100-point row reads other points)."""
    return bool(getattr(suite_peers(suite)[peer], "checked", True))


# --------------------------------------------------------------------------------------------
# Child process: time one peer on one dataset.
# --------------------------------------------------------------------------------------------


def digest(array: npt.NDArray[Any]) -> str:
    """dtype, shape and CRC-32 of the C-order bytes: equal digests mean equal arrays."""
    crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8).reshape(-1))
    return f"{array.dtype.str}{list(array.shape)}:{crc:08x}"


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far: ``VmHWM`` from ``/proc/self/status``.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used: Linux carries the parent's peak over
    fork + exec, so every child would report at least the parent's size.
    """
    line = next(
        line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")
    )
    return int(line.split()[1]) * 1024


class CpuSnapshot(NamedTuple):
    """Wall clock, CPU time of all processes (``/proc/stat``) and of this one with its children."""

    wall: float
    busy: float
    own: float

    @classmethod
    def take(cls) -> CpuSnapshot:
        user, nice, system, _idle, _iowait, irq, softirq = map(
            int, Path("/proc/stat").read_text().split()[1:8]
        )
        t = os.times()
        return cls(
            wall=time.perf_counter(),
            busy=(user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"),
            own=t.user + t.system + t.children_user + t.children_system,
        )

    def others_share(self, later: CpuSnapshot, excluded_s: float = 0.0) -> float:
        """Share of all usable cores that other processes kept busy between the two snapshots,
        less ``excluded_s`` CPU seconds of helpers that are part of the measurement (a server)."""
        others = (later.busy - self.busy) - (later.own - self.own) - excluded_s
        cores = len(os.sched_getaffinity(0))
        return min(1.0, max(0.0, others / ((later.wall - self.wall) * cores)))


def wait_for_quiet_cpu(max_wait_s: float, threshold: float = QUIET_SHARE) -> float:
    """Waits until other processes use under ``threshold`` of the cores for a second, or at most
    ``max_wait_s``; returns the share last seen. The machine may be shared with other work."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = CpuSnapshot.take()
        time.sleep(1.0)
        share = before.others_share(CpuSnapshot.take())
        if share < threshold or time.monotonic() >= deadline:
            return share


def run_child(spec_path: Path) -> None:
    """Runs one peer as described by the JSON spec and writes its measurements next to it."""
    spec = json.loads(spec_path.read_text())
    peer = suite_peers(spec["suite"])[spec["peer"]]
    stores: list[StoreSpec] = [(path, names) for path, names in spec["stores"]]
    for module in peer.modules:
        importlib.import_module(module)
    uses_fastzarr = "fastzarr" in peer.modules
    threads = importlib.import_module("fastzarr").get_num_threads() if uses_fastzarr else None
    base_rss = peak_rss_bytes()
    times, other_cpu = [], []
    # Latency suite: the HTTP server's counts per timed load (reset before each).
    stats_url: str | None = spec.get("stats_url")
    requests, bytes_sent, in_flight = [], [], []
    digests: dict[str, str] = {}
    output_bytes = 0
    for attempt in range(spec["repeat"] + 1):  # attempt 0 warms up (page cache, lazy imports)
        gc.collect()
        server_before = latency.fetch_stats(stats_url, reset=True) if stats_url else {}
        before = CpuSnapshot.take()
        loaded = peer.load(stores)
        after = CpuSnapshot.take()
        server = latency.fetch_stats(stats_url, reset=False) if stats_url else {}
        if attempt > 0:
            times.append(after.wall - before.wall)
            server_cpu = server.get("cpu_s", 0.0) - server_before.get("cpu_s", 0.0)
            other_cpu.append(before.others_share(after, excluded_s=server_cpu))
            if stats_url:
                requests.append(int(server["requests"]))
                bytes_sent.append(int(server["bytes"]))
                in_flight.append(int(server["max_in_flight"]))
        if attempt == spec["repeat"]:
            digests = {key: digest(array) for key, array in loaded.items()}
            output_bytes = sum(array.nbytes for array in loaded.values())
        del loaded
    result = {
        "times": times,
        "other_cpu": other_cpu,
        "base_rss": base_rss,
        "peak_rss": peak_rss_bytes(),
        "output_bytes": output_bytes,
        "digests": digests,
        "threads": threads,
        "requests": requests,
        "bytes_sent": bytes_sent,
        "max_in_flight": in_flight,
    }
    spec_path.with_suffix(".result.json").write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Parent: data, subprocesses, checks, report.
# --------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One peer on one dataset, as measured by its child process (or why it failed)."""

    peer: str
    times: list[float]
    #: Per timed load: the share of all cores that other processes used meanwhile (0 to 1).
    other_cpu: list[float]
    base_rss: int
    peak_rss: int
    output_bytes: int
    threads: int | None  # fastzarr's decode threads; None for the other peers
    error: str | None = None
    #: Latency suite: requests answered and body bytes sent by the HTTP server, per timed load.
    requests: list[int] = field(default_factory=list)
    bytes_sent: list[int] = field(default_factory=list)
    #: ... and the most requests it was answering at once, per timed load.
    max_in_flight: list[int] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def other_cpu_at_best(self) -> float:
        return self.other_cpu[self.times.index(self.best)]


def ensure_dataset(name: str, params: dict[str, int], root: Path) -> list[Path]:
    """Writes the dataset's batch stores under ``root`` unless they exist with the same params."""
    params_file = root / "params.json"
    chunks = DATASET_CHUNKS.get(name)
    wanted = {"params": params, "codec": CODEC, "zarr_format": 2, **({"chunks": chunks} if chunks else {})}
    stores = sorted(root.glob("batch_*.zarr"))
    if params_file.exists() and json.loads(params_file.read_text()) == wanted and stores:
        return stores
    testing = importlib.import_module("fastzarr.testing")
    print(f"generating {name} data in {root} ...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    stores = testing.make_batches(root, zarr_format=2, codec=CODEC, chunks=chunks, **params)
    params_file.write_text(json.dumps(wanted, indent=2))
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return stores


def data_variables(store: Path) -> list[str]:
    """Names of the store's 4-d data variables, from its consolidated metadata."""
    metadata = json.loads((store / ".zmetadata").read_text())["metadata"]
    return sorted(
        key.removesuffix("/.zattrs")
        for key, attrs in metadata.items()
        if key.endswith("/.zattrs") and len(attrs.get("_ARRAY_DIMENSIONS", [])) == 4
    )


def disk_bytes(paths: list[Path]) -> int:
    """Total size of the files under ``paths``."""
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())


def measure(
    suite: str,
    peer: str,
    stores: list[StoreSpec],
    repeat: int,
    threads: int | None,
    *,
    stats_url: str | None = None,
) -> tuple[Measurement, dict[str, str]]:
    """Runs ``peer`` in a fresh subprocess; returns its measurement and its result digests.
    With ``stats_url`` (latency suite) the child records the HTTP server's counts per load."""
    env = dict(os.environ)
    if "fastzarr" in suite_peers(suite)[peer].modules and threads is not None:
        env["FASTZARR_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="fastzarr-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec = {"suite": suite, "peer": peer, "stores": stores, "repeat": repeat, "stats_url": stats_url}
        spec_path.write_text(json.dumps(spec))
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(spec_path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return failed(peer, f"timed out after {CHILD_TIMEOUT_S} s"), {}
        result_path = spec_path.with_suffix(".result.json")
        if proc.returncode != 0 or not result_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return failed(peer, f"exit {proc.returncode}: " + " | ".join(tail)), {}
        result = json.loads(result_path.read_text())
    digests = result.pop("digests")
    return Measurement(peer=peer, **result), digests


def failed(peer: str, error: str) -> Measurement:
    """The measurement of a child that did not finish."""
    return Measurement(peer, [], [], base_rss=0, peak_rss=0, output_bytes=0, threads=None, error=error)


def check_against(reference: dict[str, str], digests: dict[str, str]) -> str | None:
    """None if ``digests`` equal the reference's, else a short description of the difference."""
    if digests.keys() != reference.keys():
        return f"returned {len(digests)} variables, expected {len(reference)}"
    wrong = [key for key in reference if digests[key] != reference[key]]
    if wrong:
        return f"{len(wrong)} variables differ from {REFERENCE}, e.g. {wrong[0]}"
    return None


def fmt_mb(n: int) -> str:
    """Bytes as whole megabytes with thousands separators."""
    return f"{n / 1e6:,.0f}"


def points_table(rows: list[Measurement]) -> list[list[str]]:
    """Rows of a points-suite table (header first): times, not throughput (outputs are tiny)."""
    header = ["peer", "best s", "median s", "peak RSS MB", "fastzarr speedup", "other procs CPU"]
    table = [header]
    ref = next((m for m in rows if m.peer == REFERENCE and not m.error), None)
    for m in rows:
        label = POINT_PEERS[m.peer].label
        if m.error:
            table.append([label, "FAILED (see notes)", *["—"] * (len(header) - 2)])
            continue
        if m.peer == REFERENCE:
            speedup = "—"
        elif not is_checked("points", m.peer):
            speedup = f"cost {m.best / ref.best:.2f}x one point" if ref else "n/a"
        else:
            speedup = f"{m.best / ref.best:.2f}x" if ref else "n/a"
        table.append(
            [
                label,
                f"{m.best:.4f}",
                f"{m.median:.4f}",
                fmt_mb(m.peak_rss),
                speedup,
                f"{m.other_cpu_at_best:.0%}",
            ]
        )
    return table


def results_table(rows: list[Measurement], output_bytes: int) -> list[list[str]]:
    """Rows of the per-dataset table (header first)."""
    header = [
        "peer",
        "best s",
        "median s",
        "GB/s",
        "peak RSS MB",
        "RSS / output",
        "RSS before load MB",
        "fastzarr speedup",
        "other procs CPU",
    ]
    table = [header]
    ref = next((m for m in rows if m.peer == REFERENCE and not m.error), None)
    for m in rows:
        label = PEERS[m.peer].label
        if m.error:
            table.append([label, "FAILED (see notes)", *["—"] * (len(header) - 2)])
            continue
        speedup = f"{m.best / ref.best:.2f}x" if ref else "n/a"
        table.append(
            [
                label,
                f"{m.best:.3f}",
                f"{m.median:.3f}",
                f"{output_bytes / m.best / 1e9:.2f}",
                fmt_mb(m.peak_rss),
                f"{m.peak_rss / output_bytes:.2f}",
                fmt_mb(m.base_rss),
                "—" if m.peer == REFERENCE else speedup,
                f"{m.other_cpu_at_best:.0%}",
            ]
        )
    return table


def render_text(table: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(table: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(table[0]) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(table[0]) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines)


def evaluate_targets(results: dict[str, list[Measurement]], output_bytes: dict[str, int]) -> list[list[str]]:
    """One row per target: the goal, the measured figure and whether it is met."""
    rows = [["target", "measured", "status"]]
    for goal, target in TARGETS.items():
        by_peer = {m.peer: m for m in results.get(target.dataset, []) if not m.error}
        ref = by_peer.get(target.subject)
        if ref is None or (target.peer is not None and target.peer not in by_peer):
            rows.append([goal, "not measured", "—"])
            continue
        if target.peer is None:
            ratio = ref.peak_rss / output_bytes[target.dataset]
            met = ratio <= target.threshold
            measured = (
                f"{ratio:.2f}x ({fmt_mb(ref.peak_rss)} MB peak for {fmt_mb(output_bytes[target.dataset])} MB)"
            )
        else:
            ratio = by_peer[target.peer].best / ref.best
            met = ratio >= target.threshold
            measured = f"{ratio:.2f}x ({by_peer[target.peer].best:.3f} s vs {ref.best:.3f} s)"
        rows.append([goal, measured, "met" if met else "NOT met"])
    for dataset, measurements in results.items():
        by_peer = {m.peer: m for m in measurements if not m.error}
        if dataset.startswith("points/") and {"fastzarr", "fastzarr-100"} <= by_peer.keys():
            ratio = by_peer["fastzarr-100"].best / by_peer["fastzarr"].best
            rows.append(
                [
                    f"{dataset}: 100 points < {MANY_POINTS_MAX_RATIO:g}x one point",
                    f"{ratio:.2f}x",
                    "met" if ratio < MANY_POINTS_MAX_RATIO else "NOT met",
                ]
            )
    return rows


def machine_description() -> list[str]:
    """Cores, memory, CPU model and package versions, as Markdown bullet points."""
    psutil = importlib.import_module("psutil")
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    versions = []
    for package in ("fastzarr", "numpy", "zarr", "zarrs", "numcodecs", "xarray", "dask", "tensorstore"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return [
        f"- CPU: {model}; os.cpu_count() = {os.cpu_count()}, "
        f"usable cores (sched_getaffinity) = {len(os.sched_getaffinity(0))}",
        f"- memory: {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- packages: {', '.join(versions)}",
    ]


def dataset_description(name: str, params: dict[str, int], stores: list[Path], output_bytes: int) -> str:
    """One line describing a dataset."""
    p = params
    chunking = {"steps": p["steps"], "lat": p["lat"], "lon": p["lon"]}
    chunking |= {f"{d}s" if d == "step" else d: n for d, n in DATASET_CHUNKS.get(name, {}).items()}
    chunk_bytes = math.prod(chunking.values()) * 4
    title = DATASET_TITLES.get(name) or DATASET_TITLES[f"points/{name}"]
    return (
        f"**{title}** (`{name}`): {p['batches']} store(s) x {p['variables']} "
        f"float32 variables (file_id={p['file_ids']}, step={p['steps']}, lat={p['lat']}, "
        f"lon={p['lon']}), chunks of {chunking['steps']} step(s) x {chunking['lat']} x {chunking['lon']} "
        f"({chunk_bytes / 1e3:,.0f} kB decoded), Zarr v2, `{CODEC}`, consolidated; "
        f"{output_bytes / 1e6:,.1f} MB decoded, {disk_bytes(stores) / 1e6:,.1f} MB on disk."
    )


PEER_SECTION_PREFIX = "## Peer comparison: full load, points, cache and writer ("


def write_results(
    path: Path,
    *,
    run: str,
    descriptions: list[str],
    tables: dict[str, str],
    targets: str,
    notes: list[str],
) -> None:
    """Writes the peer comparison's section of the Markdown report (replacing the previous one, and
    leaving the other suites' sections as they are); ``run`` describes the run's settings."""
    when = dt.datetime.now().astimezone()
    section = "\n".join(
        [
            f"{PEER_SECTION_PREFIX}{when:%Y-%m-%d %H:%M %Z}, {os.cpu_count()} cores)",
            "",
            f"Generated by `benches/compare.py` on {when:%Y-%m-%d %H:%M %Z}. " + run,
            "",
            "### Machine",
            "",
            *machine_description(),
            "",
            "### Method",
            "",
            "- Every peer loads **all data variables** (the 4-d arrays; coordinates are not counted) "
            "of every store into numpy, store after store, metadata opening included in the time.",
            "- Each (dataset, peer) runs in a fresh subprocess: one warm-up load, then the timed repeats; "
            "best and median wall time are reported. Data is on local disk and **page-cache-warm** "
            "(the warm-up load reads every file), so this measures decoding and overhead, not the disk.",
            "- GB/s = decoded output bytes / best time. Peak RSS is the child's `VmHWM` "
            "(`ru_maxrss` would include the parent's peak: Linux carries it over fork + exec); "
            "nothing is subtracted: it includes the interpreter and the peer's imports "
            '(shown as "RSS before load"), so RSS / output only means something for the large '
            "dataset.",
            "- Points suite: every peer reads, for every data variable, the series at the grid point "
            "nearest to one coordinate from every store and concatenates along `file_id` "
            "(`xr.concat(...).load()` for xarray; `oindex[:, :, i, j]` for zarr-python; "
            "`[:, :, i, j].read()` futures for tensorstore); metadata opening included. "
            "The 100-points row reads 100 points at once with fastzarr.",
            "- Every peer's arrays are checked against fastzarr's (dtype, shape and CRC-32 of the bytes).",
            "- Speedup = peer's best time / fastzarr's best time.",
            '- "other procs CPU": the share of all cores that *other* processes used during the '
            "best timed load (from `/proc/stat`, minus the child's own CPU time). The machine may be "
            "shared: well above 0% means that row's time is pessimistic. Before each peer the "
            "benchmark waits (up to `--quiet-wait` seconds) for the CPU to be mostly idle, and measures "
            "a peer a second time (keeping the faster run) when its best load was still contended.",
            "",
            "### Datasets",
            "",
            *[f"- {d}" for d in descriptions],
            "",
            *itertools.chain.from_iterable(
                [f"### {DATASET_TITLES[n]}", "", t, ""] for n, t in tables.items()
            ),
            "### Targets",
            "",
            targets,
            "",
            *(["### Notes", "", *[f"- {n}" for n in notes], ""] if notes else []),
        ]
    )
    text = path.read_text() if path.exists() else "# fastzarr benchmark results\n"
    path.write_text(latency.replace_section(text, section, prefix=PEER_SECTION_PREFIX))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, with ``--peers`` turned into a list that starts with fastzarr."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data for a ~1 minute smoke run; prints only"
    )
    all_peers = list(dict.fromkeys([*PEERS, *POINT_PEERS, *latency.LATENCY_PEER_NAMES]))
    parser.add_argument(
        "--peers",
        default=",".join(all_peers),
        help="comma-separated peers, of any suite (fastzarr always runs: it is the reference); "
        f"default: {','.join(all_peers)}",
    )
    parser.add_argument(
        "--suites", default=",".join(SUITES), help=f"comma-separated suites; default: {','.join(SUITES)}"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed loads per peer after the warm-up (default 5)"
    )
    parser.add_argument("--threads", type=int, help="FASTZARR_NUM_THREADS for the fastzarr child")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=latency.DEFAULT_DELAY_MS,
        help=f"latency suite: the HTTP server's delay per request (default {latency.DEFAULT_DELAY_MS:g})",
    )
    parser.add_argument(
        "--latency-repeat",
        type=int,
        default=3,
        help="latency suite: timed loads per peer after the warm-up (default 3; the suite then "
        "takes about 5 minutes on 2 cores)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each peer, wait up to this many seconds for other processes to leave the CPU "
        "mostly idle (default 10; 0 disables)",
    )
    parser.add_argument(
        "--latency-cases",
        help="latency suite: comma-separated cases to run (default: all); with a subset the "
        "tables are printed and RESULTS.md is left as it is",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-cache-section", action="store_true", help="skip the cache/writer section")
    parser.add_argument(
        "--only-cache",
        action="store_true",
        help="run only the cache/writer section and update its part of RESULTS.md",
    )
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(all_peers))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {all_peers}")
    args.peers = [REFERENCE] + [p for p in peers if p != REFERENCE]
    args.suites = [x.strip() for x in args.suites.split(",") if x.strip()]
    if bad := sorted(set(args.suites) - set(SUITES)):
        parser.error(f"unknown suites {bad}; choose from {list(SUITES)}")
    if args.repeat < 1 or args.latency_repeat < 1:
        parser.error("--repeat and --latency-repeat must be at least 1")
    if args.latency_ms < 0:
        parser.error("--latency-ms must not be negative")
    cases = list(latency.LATENCY_CASES)
    args.latency_cases = (
        [c.strip() for c in args.latency_cases.split(",") if c.strip()] if args.latency_cases else cases
    )
    if bad := sorted(set(args.latency_cases) - set(cases)):
        parser.error(f"unknown latency cases {bad}; choose from {cases}")
    return args


def decoded_bytes(params: dict[str, int]) -> int:
    """Bytes of float32 data variables that ``make_batches`` writes with these parameters."""
    return math.prod(params[k] for k in ("batches", "variables", "file_ids", "steps", "lat", "lon")) * 4


def measure_after_wait(
    suite: str, peer: str, specs: list[StoreSpec], args: argparse.Namespace, stats_url: str | None
) -> tuple[Measurement, dict[str, str]]:
    """``measure``, after waiting (up to ``--quiet-wait`` seconds) for a quiet CPU."""
    if args.quiet_wait > 0 and (share := wait_for_quiet_cpu(args.quiet_wait)) >= QUIET_SHARE:
        print(f"(other processes use {share:.0%} of the CPU)", end=" ", flush=True)
    repeat = args.latency_repeat if stats_url else args.repeat
    return measure(suite, peer, specs, repeat, args.threads, stats_url=stats_url)


def measure_when_quiet(
    suite: str,
    peer: str,
    specs: list[StoreSpec],
    args: argparse.Namespace,
    stats_url: str | None = None,
) -> tuple[Measurement, dict[str, str]]:
    """Measures ``peer`` on a quiet CPU; if other processes still competed during its best load,
    measures it once more and keeps the faster of the two."""
    first = measure_after_wait(suite, peer, specs, args, stats_url)
    m = first[0]
    if m.error or m.other_cpu_at_best < QUIET_SHARE:
        return first
    print(f"(busy: {m.best:.3f} s with {m.other_cpu_at_best:.0%} taken; again)", end=" ", flush=True)
    second = measure_after_wait(suite, peer, specs, args, stats_url)
    return first if second[0].error or second[0].best >= m.best else second


def run_dataset(
    suite: str,
    dataset: str,
    specs: list[StoreSpec],
    *,
    expected_bytes: int | None,
    args: argparse.Namespace,
    notes: list[str],
    stats_url: str | None = None,
) -> list[Measurement]:
    """Measures every selected peer of the suite on one dataset, checking each against fastzarr."""
    reference: dict[str, str] = {}
    rows = []
    peers = suite_peers(suite)
    selected = [p for p in args.peers if p in peers]
    if suite.startswith("latency/"):  # a latency case's own order: its reference first
        selected = [p for p in peers if p in selected]
    if suite == "points" and REFERENCE in selected:
        selected += [p for p in peers if not is_checked(suite, p) and p not in selected]
    for peer in selected:
        print(f"  {peer} ...", end=" ", flush=True)
        m, digests = measure_when_quiet(suite, peer, specs, args, stats_url)
        if not m.error:
            if peer == REFERENCE:
                reference = digests
            elif not is_checked(suite, peer):
                pass
            elif reference:
                m.error = check_against(reference, digests)
            else:
                notes.append(f"{dataset} / {peer}: not verified ({REFERENCE} failed)")
            if not m.error and expected_bytes is not None and m.output_bytes != expected_bytes:
                m.error = f"output {m.output_bytes} bytes, expected {expected_bytes}"
        if m.error:
            notes.append(f"{dataset} / {peer}: {m.error}")
        print(m.error or f"best {m.best:.3f} s", flush=True)
        rows.append(m)
    return rows


# --------------------------------------------------------------------------------------------
# Cache and writer: extract_points cold vs warm (validated cache) vs xarray's to_zarr/open_zarr
# round trip, validation's share of a warm read, fz.to_zarr vs xr.Dataset.to_zarr. Runs in one
# child process (``--cache-child``) on the "batches" dataset.
# --------------------------------------------------------------------------------------------

CACHE_TITLE = "Cache and writer"
CACHE_POINTS = 64


def run_cache_child(spec_path: Path) -> None:
    """Measures the cache and the writer; writes the figures next to the spec."""
    spec = json.loads(spec_path.read_text())
    xr = importlib.import_module("xarray")
    fz = importlib.import_module("fastzarr")
    importlib.import_module("zarr")
    work = Path(spec["work"])
    sources, repeat = spec["sources"], spec["repeat"]
    rng = np.random.default_rng(0)
    points = {
        "lat": xr.DataArray(rng.uniform(-89, 89, CACHE_POINTS), dims="point"),
        "lon": xr.DataArray(rng.uniform(0, 359, CACHE_POINTS), dims="point"),
    }
    out: dict[str, float] = {}

    def cold() -> Any:
        return fz.extract_points(sources, points=points)

    out["cold"], expected = best(cold, repeat)

    cache_root = work / "cache"
    start = time.perf_counter()
    fz.extract_points(sources, points=points, cache=fz.Cache(cache_root))
    out["fill"] = time.perf_counter() - start
    cache = fz.Cache(cache_root)

    def warm() -> Any:
        return fz.extract_points(sources, points=points, cache=cache)

    before = (cache.stats.validation_seconds, cache.stats.hits)
    out["warm"], got = best(warm, repeat)
    xr.testing.assert_identical(got, expected)
    calls = repeat + 1  # each warm call validates the entries it reads (one: the whole result)
    out["validation"] = (cache.stats.validation_seconds - before[0]) / calls
    out["entries_read_per_call"] = (cache.stats.hits - before[1]) / calls

    # xarray's manual cache: sel + concat, to_zarr, then open_zarr(...).load() on later runs.
    def xr_extract() -> Any:
        parts = [xr.open_zarr(s).sel(points, method="nearest") for s in sources]
        return xr.concat(
            parts, dim="file_id", data_vars="all", coords="different", compat="equals", join="outer"
        )

    xr_store = work / "xr-cache.zarr"

    compressors = importlib.import_module("fastzarr.testing").parse_codec(CODEC, 3)["compressors"]

    def xr_fill() -> Any:
        ds = xr_extract()
        for var in ds.variables.values():  # the v2 sources' numcodecs encodings do not fit v3
            var.encoding = {}
        encoding = {n: {"compressors": compressors} for n in ds.data_vars}
        ds.to_zarr(xr_store, mode="w", zarr_format=3, consolidated=True, encoding=encoding)
        return ds

    out["xr_fill"], _ = best(xr_fill, 1)
    out["xr_warm"], _ = best(lambda: xr.open_zarr(xr_store).load(), repeat)

    # the writer: one loaded batch store, written by each
    ds = xr.open_zarr(sources[0]).load()
    for var in ds.variables.values():
        var.encoding = {}
    out["write_bytes"] = float(sum(v.nbytes for v in ds.data_vars.values()))
    chunks = {"file_id": 1}
    encoding = {
        n: {
            "chunks": tuple(1 if d == "file_id" else ds.sizes[d] for d in ds[n].dims),
            "compressors": compressors,
        }
        for n in ds.data_vars
    }

    def fz_write(fsync: bool) -> Callable[[], Any]:
        return lambda: fz.to_zarr(ds, work / "fz.zarr", mode="w", codec=CODEC, chunks=chunks, fsync=fsync)

    out["fz_write"], _ = best(fz_write(True), repeat)
    out["fz_write_nofsync"], _ = best(fz_write(False), repeat)
    out["xr_write"], _ = best(
        lambda: ds.to_zarr(work / "xr.zarr", mode="w", zarr_format=3, consolidated=True, encoding=encoding),
        repeat,
    )
    xr.testing.assert_identical(xr.open_zarr(work / "fz.zarr").load(), xr.open_zarr(work / "xr.zarr").load())
    spec_path.with_suffix(".result.json").write_text(json.dumps(out))


def run_cache_section(
    sources: list[Path], args: argparse.Namespace
) -> tuple[list[list[str]], list[list[str]]]:
    """Runs the cache/writer child; returns its table and its target rows."""
    with tempfile.TemporaryDirectory(prefix="fastzarr-bench-cache-", dir=DATA_DIR) as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec = {"sources": [str(s) for s in sources], "repeat": args.repeat, "work": tmp}
        spec_path.write_text(json.dumps(spec))
        if args.quiet_wait > 0:
            wait_for_quiet_cpu(args.quiet_wait)
        proc = subprocess.run(
            [sys.executable, __file__, "--cache-child", str(spec_path)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
        result_path = spec_path.with_suffix(".result.json")
        if proc.returncode != 0 or not result_path.exists():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            row = [["cache/writer", f"FAILED: exit {proc.returncode}: {tail}", "—"]]
            return [["what", "measured", "status"], *row], row
        r = json.loads(result_path.read_text())
    mb = r["write_bytes"] / 1e6

    def row(what: str, seconds: float, versus: str | None = None) -> list[str]:
        return [what, f"{seconds:.4f}", versus if versus is not None else f"{r['cold'] / seconds:.2f}x"]

    table = [
        ["what", "best s", "vs cold extract"],
        row("extract_points, no cache (cold)", r["cold"]),
        row("extract_points, filling an empty cache", r["fill"]),
        row("extract_points, warm from the cache (validated)", r["warm"]),
        row("  of which validation (manifest + CRC-32C of every chunk)", r["validation"],
            f"{r['validation'] / r['warm']:.1%} of warm"),
        row("xarray: sel + concat + to_zarr (filling its cache)", r["xr_fill"]),
        row("xarray: open_zarr(...).load() of that store (warm)", r["xr_warm"]),
        row(f"fz.to_zarr, one batch store ({mb:,.0f} MB), fsync + verify", r["fz_write"],
            f"{mb / r['fz_write']:,.0f} MB/s"),
        row("fz.to_zarr, same, verify but no fsync", r["fz_write_nofsync"],
            f"{mb / r['fz_write_nofsync']:,.0f} MB/s"),
        row("xr.Dataset.to_zarr, same (v3, same codec and chunks)", r["xr_write"],
            f"{mb / r['xr_write']:,.0f} MB/s"),
    ]  # fmt: skip
    speedup, share, write = r["cold"] / r["warm"], r["validation"] / r["warm"], r["xr_write"] / r["fz_write"]
    targets = [
        ["cache: warm >= 30x cold extract_points", f"{speedup:.1f}x ({r['cold']:.4f} s vs {r['warm']:.4f} s)",
         "met" if speedup >= 30 else "NOT met"],
        ["cache: validation <= 10% of a warm read", f"{share:.1%}", "met" if share <= 0.10 else "NOT met"],
        ["to_zarr >= 3x xr.Dataset.to_zarr", f"{write:.2f}x ({r['xr_write']:.3f} s vs {r['fz_write']:.3f} s)",
         "met" if write >= 3 else "NOT met"],
    ]  # fmt: skip
    return table, targets


def only_cache(args: argparse.Namespace) -> int:
    """Runs the cache/writer section alone and puts its table and targets into RESULTS.md."""
    size = "quick" if args.quick else "full"
    stores = ensure_dataset("batches", DATASETS[size]["batches"], DATA_DIR / size / "batches")
    table, targets = run_cache_section(stores, args)
    print("\n" + render_text(table) + "\n\n" + render_text([["target", "measured", "status"], *targets]))
    if args.quick or not RESULTS_PATH.exists():
        return 0
    text = RESULTS_PATH.read_text()
    heading = f"### {DATASET_TITLES['cache']}"
    if heading in text:  # replace the previous section and its target rows
        before, rest = text.split(heading, 1)
        after = rest[rest.index("\n### ") :] if "\n### " in rest else ""
        text = before.rstrip("\n") + "\n\n" + after.lstrip("\n")
        text = "\n".join(line for line in text.splitlines() if not line.startswith("| cache: ")
                          and not line.startswith("| to_zarr ")) + "\n"  # fmt: skip
    when = dt.datetime.now().astimezone()
    load = os.getloadavg()[0]
    stamp = (
        f"Measured by `benches/compare.py --only-cache --repeat {args.repeat}` on {when:%Y-%m-%d %H:%M %Z}; "
        f"1-minute load average at the end: {load:.1f} on {os.cpu_count()} cores (a shared machine: "
        "every row is pessimistic when it is well above 0). Page-cache-warm sources. to_zarr rows "
        "include encoding, writing, (fsync,) re-reading every chunk's CRC-32C and the atomic rename; "
        "xarray's to_zarr neither fsyncs nor verifies."
    )
    section = f"{heading}\n\n{stamp}\n\n{render_markdown(table)}\n\n"
    text = text.replace("### Targets\n", section + "### Targets\n", 1)
    rows = "\n".join("| " + " | ".join(r) + " |" for r in targets)
    head, sep, tail = text.partition("### Targets\n")
    table_end = tail.find("\n\n", tail.find("|"))
    tail = tail[:table_end] + "\n" + rows + tail[table_end:] if table_end >= 0 else tail + rows + "\n"
    RESULTS_PATH.write_text(head + sep + tail)
    print(f"\nupdated {RESULTS_PATH}")
    return 0


# --------------------------------------------------------------------------------------------
# Latency suite: the cases of latency.py against one HTTP server over the benchmark data.
# --------------------------------------------------------------------------------------------


def run_latency_suite(size: str, args: argparse.Namespace) -> str:
    """Serves ``DATA_DIR/size`` over loopback HTTP with ``--latency-ms`` per request, measures
    every case's selected peers, prints their tables and returns the RESULTS.md section."""
    datasets = {**DATASETS[size], **POINT_DATASETS[size], **LATENCY_DATASETS[size]}
    results: dict[str, list[Measurement]] = {}
    parts: list[str] = []
    notes: list[str] = []
    start = time.perf_counter()
    with latency.serve(DATA_DIR / size, args.latency_ms / 1e3) as server:
        for name, case in latency.LATENCY_CASES.items():
            if name not in args.latency_cases:
                continue
            stores = ensure_dataset(case.dataset, datasets[case.dataset], DATA_DIR / size / case.dataset)
            stores = stores[: case.stores]
            names = data_variables(stores[0])
            specs: list[StoreSpec] = [
                (f"{server.base_url}/{case.dataset}/{s.name}", data_variables(s)) for s in stores
            ]
            print(f"\n== Latency {args.latency_ms:g} ms: {case.title} ==", flush=True)
            key = f"latency/{name}"
            results[name] = run_dataset(
                key, key, specs, expected_bytes=None, args=args, notes=notes, stats_url=server.stats_url
            )
            table = latency.latency_table(case, results[name])
            print("\n" + render_text(table), flush=True)
            what = (
                f"{len(stores)} store(s) of the `{case.dataset}` dataset (above), {len(names)} data "
                f"variable(s) each, {disk_bytes(stores) / 1e6:,.1f} MB on the server."
            )
            parts.append(f"### {case.title}\n\n{what}\n\n{render_markdown(table)}\n")
    targets = latency.latency_targets(results)
    print("\n" + render_text(targets), flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"latency suite: {minutes:.1f} min", flush=True)
    when = dt.datetime.now().astimezone()
    described = dict.fromkeys(latency.LATENCY_CASES[name].dataset for name in args.latency_cases)
    descriptions = [
        dataset_description(d, datasets[d], ensure_dataset(d, datasets[d], DATA_DIR / size / d),
                            decoded_bytes(datasets[d]))
        for d in described
    ]  # fmt: skip
    lines = [
        latency.section_heading(args.latency_ms),
        "",
        f"Generated by `benches/compare.py` (suite `latency`) on {when:%Y-%m-%d %H:%M %Z} in "
        f"{minutes:.1f} minutes; `--latency-repeat {args.latency_repeat}`; 1-minute load average at "
        f"the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine: other "
        "people's jobs ran beside it whenever 'other procs CPU' is well above 0%, and that row is "
        "then pessimistic).",
        "",
        *machine_description(),
        "",
        "Method:",
        "",
        f"- An HTTP/1.1 server on 127.0.0.1 (`latency.LatencyServer`: one asyncio event loop, "
        f"keep-alive, `sendfile` from the page cache, about 0.1 ms of CPU per request) run by the "
        f"benchmark's parent process waits **{args.latency_ms:g} ms before answering every request** "
        "(GET, ranged GET, HEAD and 404 alike; concurrent requests wait concurrently) and counts "
        "requests answered, body bytes sent (headers not counted) and the most requests it was "
        'answering at once ("in flight", the largest of the timed loads). Every peer reads only '
        "through it.",
        "- Each (case, peer) runs in a fresh subprocess: one warm-up load, then the timed loads; "
        "metadata opening is included and nothing is reused between loads (fresh opens, a fresh "
        "tensorstore Context, fastzarr's remembered blosc block tables and metadata forgotten), "
        'except in the rows "again, block tables and metadata remembered": those keep the tables, '
        "metadata and coordinates the warm-up load read (as a second extraction in the same process "
        "does: the metadata is opened again beside the chunk reads, and the read is redone if it "
        "changed). The server's counters are reset "
        "before each timed load; "
        '"requests" and "MB sent" are per load (a range when the loads differed).',
        "- Ratios are the peer's figure over the first row's (fastzarr): above 1 means fastzarr "
        "takes less time, moves fewer bytes or makes fewer requests. Every peer's arrays are checked "
        "against fastzarr's.",
        "- xarray peers read through zarr-python 3 and fsspec's HTTP filesystem (aiohttp); "
        '"dask" opens with `chunks={}` (one task per Zarr chunk) and dask\'s threaded scheduler, '
        "which has as many threads as cores (2 here): that, not the network, bounds its requests "
        "in flight.",
        "- The server counts a request until its handler returns, just after the last byte is "
        "handed to the socket: a reader that keeps N in flight can show one or two more than N.",
        '- "other procs CPU" leaves out the server\'s own CPU time. The server shares the cores '
        "with the peer it serves, so on 2 cores its per-request CPU is part of every row (an "
        "object store's servers take none of the reader's cores; a thread-per-connection server "
        "took 0.75 ms per request here, which decided the request-heavy rows).",
        "",
        "Datasets:",
        "",
        *[f"- {d}" for d in descriptions],
        "",
        *parts,
        "### Targets",
        "",
        render_markdown(targets),
        "",
        *(["### Notes", "", *[f"- {n}" for n in notes], ""] if notes else []),
    ]
    return "\n".join(lines)


def write_latency_section(section: str) -> None:
    """Puts the latency section into RESULTS.md, replacing the previous one at the same latency
    (or appending: each latency has its own section)."""
    text = RESULTS_PATH.read_text() if RESULTS_PATH.exists() else "# fastzarr vs peers\n"
    heading = section.split("\n", 1)[0]
    RESULTS_PATH.write_text(latency.replace_section(text, section, prefix=heading))
    print(f"\nupdated the latency section of {RESULTS_PATH}")


def main(argv: list[str]) -> int:
    """Runs a child measurement (``--child``) or the whole comparison."""
    args = parse_args(argv)
    if args.child is not None:
        run_child(args.child)
        return 0
    if args.cache_child is not None:
        run_cache_child(args.cache_child)
        return 0
    if args.only_cache:
        return only_cache(args)
    size = "quick" if args.quick else "full"
    results: dict[str, list[Measurement]] = {}
    output_bytes: dict[str, int] = {}
    descriptions: list[str] = []
    described: set[str] = set()
    md_tables: dict[str, str] = {}
    notes: list[str] = []
    local_suites = [suite for suite in args.suites if suite != "latency"]
    for suite in local_suites:
        datasets = DATASETS[size] if suite == "load" else POINT_DATASETS[size]
        for dataset, params in datasets.items():
            stores = ensure_dataset(dataset, params, DATA_DIR / size / dataset)
            specs: list[StoreSpec] = [(str(s), data_variables(s)) for s in stores]
            key = dataset if suite == "load" else f"points/{dataset}"
            if dataset not in described:
                described.add(dataset)
                descriptions.append(dataset_description(dataset, params, stores, decoded_bytes(params)))
            if suite == "load":
                output_bytes[key] = decoded_bytes(params)
            print(f"\n== {DATASET_TITLES[key]} ==", flush=True)
            expected = output_bytes.get(key)
            results[key] = run_dataset(suite, dataset, specs, expected_bytes=expected, args=args, notes=notes)
            table = (
                results_table(results[key], output_bytes[key])
                if suite == "load"
                else points_table(results[key])
            )
            print("\n" + render_text(table), flush=True)
            md_tables[key] = render_markdown(table)
    latency_section = run_latency_suite(size, args) if "latency" in args.suites else None
    if len(args.latency_cases) < len(latency.LATENCY_CASES):
        latency_section = None  # some cases only: printed, RESULTS.md left as it is
    if not local_suites:  # the latency suite alone: its section of RESULTS.md, nothing else
        if latency_section is not None and not args.quick:
            write_latency_section(latency_section)
        return 0
    targets = evaluate_targets(results, output_bytes)
    if not args.no_cache_section:
        print(f"\n== {CACHE_TITLE} ==", flush=True)
        batch_stores = ensure_dataset("batches", DATASETS[size]["batches"], DATA_DIR / size / "batches")
        cache_table, cache_targets = run_cache_section(batch_stores, args)
        print("\n" + render_text(cache_table), flush=True)
        md_tables["cache"] = render_markdown(cache_table)
        targets += cache_targets
    print("\n" + render_text(targets))
    threads = next((m.threads for rows in results.values() for m in rows if m.threads), None)
    run = f"`--repeat {args.repeat}`; fastzarr decode threads: {threads}."
    print(run)
    if not args.quick:
        write_results(
            RESULTS_PATH,
            run=run,
            descriptions=descriptions,
            tables=md_tables,
            targets=render_markdown(targets),
            notes=notes,
        )
        print(f"\nwrote {RESULTS_PATH}")
        if latency_section is not None:
            write_latency_section(latency_section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
