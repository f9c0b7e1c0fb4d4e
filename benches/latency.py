"""Object-storage latency suite for ``benches/compare.py``: the peers read over HTTP from a server
on 127.0.0.1 that waits a fixed time before answering each request and counts what it sends.

On local disk every peer is CPU-bound; on object storage the round trip dominates, and what
matters is how many requests a reader keeps in flight and how many bytes it asks for. The server
here makes both visible: ``delay_s`` per request (20 ms by default, a cloud store's first-byte
latency, paid concurrently by concurrent requests) and server-side counts of requests and body
bytes, which the measuring child reads (and resets) around every timed load.

Cases (``LATENCY_CASES``): the full load of one seed-like batch store, one point's series out of
the ERA5-like store (one 721 x 1440 blosc field per chunk), and one point out of every seed-like
batch store. Each case has its own peers; a peer takes ``[(store URL, data variable names)]`` and
returns ``{"<url>/<name>": numpy array}``, compared byte for byte with fastzarr's.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib
import json
import os
import platform
import re
import statistics
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from points import POINT

# A store to read: its URL and the names of its data variables (as in compare.py).
StoreSpec = tuple[str, list[str]]
Loaded = dict[str, npt.NDArray[Any]]

#: Default per-request delay, in milliseconds.
DEFAULT_DELAY_MS = 20.0
#: The server's counters; not delayed and not counted itself.
STATS_PATH = "/__latency_bench__/stats"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


# --------------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------------


class Counters:
    """What the server answered since the last reset (thread-safe: one handler thread per
    connection updates them)."""

    FIELDS = (
        "requests",
        "bytes",
        "get",
        "ranged_get",
        "head",
        "not_found",
        "error",
        "throttled",
        "max_in_flight",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.FIELDS, 0)
        self._in_flight = 0

    def start(self) -> int:
        """A request arrived: tracks how many are being answered at once (a reader's concurrency
        as the server sees it, the figure that decides how much latency overlaps); returns that."""
        with self._lock:
            self._in_flight += 1
            self._values["max_in_flight"] = max(self._values["max_in_flight"], self._in_flight)
            return self._in_flight

    def add(self, kind: str, body_bytes: int = 0) -> None:
        """Counts one answered request of ``kind`` (a FIELDS name after "bytes") and its body."""
        with self._lock:
            self._in_flight -= 1
            self._values["requests"] += 1
            self._values[kind] += 1
            self._values["bytes"] += body_bytes

    def snapshot(self, reset: bool) -> dict[str, int]:
        """The counts so far; zeroes them afterwards when ``reset``."""
        with self._lock:
            values = dict(self._values)
            if reset:
                self._values = dict.fromkeys(self.FIELDS, 0)
                self._values["max_in_flight"] = self._in_flight
        return values


class LatencyServer(http.server.ThreadingHTTPServer):
    """Serves the files below ``root`` read-only, like an object store over plain HTTP."""

    daemon_threads = True
    block_on_close = False  # clients keep connections alive; do not wait for them on close
    # The default backlog of 5 drops connection attempts when a reader opens dozens of
    # connections at once, and a dropped SYN costs a 1 s retransmit: a benchmark artefact.
    request_queue_size = 512

    def __init__(self, root: Path, delay_s: float, max_in_flight: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.delay_s = delay_s
        # Beyond this many requests at once, "503 slow down" at once, as S3 and GCS answer.
        self.max_in_flight = max_in_flight
        self.counters = Counters()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; a file ``root/a/b`` is at ``<base_url>/a/b``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def stats_url(self) -> str:
        """Where the counters are read (``?reset=1`` zeroes them after reading)."""
        return self.base_url + STATS_PATH


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET (whole, or one ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n``) and HEAD."""

    server: LatencyServer
    protocol_version = "HTTP/1.1"  # keep-alive, as object stores and their clients do
    timeout = 120  # an idle kept-alive connection's thread ends eventually
    # Headers and body go out in two sends; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers: 40 ms of latency nobody asked for on every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == STATS_PATH:
            self._send_stats(reset="reset=1" in url.query)
            return
        counters = self.server.counters
        at_once = counters.start()
        kind, sent = "error", 0  # a client that hangs up mid-body
        try:
            limit = self.server.max_in_flight
            if limit is not None and at_once > limit:
                self._send_empty(503)
                kind = "throttled"
            else:
                kind, sent = self._answer(urllib.parse.unquote(url.path), head)
        finally:
            counters.add(kind, sent)

    def _answer(self, url_path: str, head: bool) -> tuple[str, int]:
        """Sends the response; returns its kind (a ``Counters`` field) and the body bytes sent."""
        # Every request pays the latency before its first byte, 404s and HEADs included.
        time.sleep(self.server.delay_s)
        path = self._file(url_path)
        if path is None:
            self._send_empty(404)
            return "not_found", 0
        stat = path.stat()
        size = stat.st_size
        # An ETag as nginx makes one (modification time and size); `If-Match` is honoured.
        etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
        wanted = self.headers.get("If-Match")
        if wanted and wanted.strip() not in ("*", etag):
            self._send_empty(412)
            return "not_found", 0
        start, end, status = 0, size, 200
        requested = self.headers.get("Range")
        match = _RANGE.fullmatch(requested.strip()) if requested else None
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                start, end = int(first), min(int(last) + 1 if last else size, size)
            else:  # a suffix: the last n bytes
                start = max(0, size - int(last))
            if start >= size or start >= end:
                self._send_empty(416, {"Content-Range": f"bytes */{size}"})
                return "not_found", 0
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.date_time_string(int(stat.st_mtime)))
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return "head", 0
        with path.open("rb") as f:
            # sendfile: the page cache straight to the socket, so the server (sharing the
            # machine's cores with the reader it measures) spends little CPU per byte.
            sent = self.connection.sendfile(f, start, end - start)
        return ("ranged_get" if status == 206 else "get"), sent

    def _file(self, url_path: str) -> Path | None:
        """The regular file under the root that ``url_path`` names, or None."""
        path = (self.server.root / url_path.lstrip("/")).resolve()
        if not path.is_relative_to(self.server.root) or not path.is_file():
            return None
        return path

    def _send_stats(self, reset: bool) -> None:
        stats: dict[str, float] = {**self.server.counters.snapshot(reset)}
        # The server process's CPU time, so that the child can tell the server's share of the
        # machine from other processes' (the parent process does nothing else meanwhile).
        stats["cpu_s"] = time.process_time()
        body = json.dumps(stats).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def _send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()


@contextlib.contextmanager
def serve(root: Path, delay_s: float, max_in_flight: int | None = None) -> Iterator[LatencyServer]:
    """A ``LatencyServer`` over ``root`` running in a background thread until the block ends."""
    server = LatencyServer(root, delay_s, max_in_flight)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def fetch_stats(stats_url: str, reset: bool) -> dict[str, float]:
    """The server's counters (and its CPU seconds); zeroes the counters when ``reset``."""
    with urllib.request.urlopen(stats_url + ("?reset=1" if reset else ""), timeout=30) as response:
        stats: dict[str, float] = json.loads(response.read())
    return stats


# --------------------------------------------------------------------------------------------
# Peers. Modules are imported by name so a child process pays only for the peer it measures.
# --------------------------------------------------------------------------------------------


def load_fastzarr(stores: list[StoreSpec]) -> Loaded:
    """fastzarr: ``open_group(url)`` then one ``read_many`` over all its data variables."""
    fz = importlib.import_module("fastzarr")
    out: Loaded = {}
    for url, names in stores:
        group = fz.open_group(url)
        arrays = fz.read_many([(group[name], ...) for name in names])
        out.update(zip((f"{url}/{name}" for name in names), arrays, strict=True))
    return out


def load_fastzarr_xarray(stores: list[StoreSpec]) -> Loaded:
    """``fz.load(fz.open_zarr(url, chunks=None))``: an xarray Dataset, loaded in one pass."""
    fz = importlib.import_module("fastzarr")
    out: Loaded = {}
    for url, names in stores:
        ds = fz.load(fz.open_zarr(url, chunks=None))
        out.update({f"{url}/{name}": ds.variables[name].values for name in names})
    return out


def _load_xarray(stores: list[StoreSpec], **open_kwargs: Any) -> Loaded:
    """``xr.open_zarr(url, **open_kwargs).load()``: zarr-python over fsspec's HTTP filesystem."""
    xr = importlib.import_module("xarray")
    out: Loaded = {}
    for url, names in stores:
        ds = xr.open_zarr(url, **open_kwargs).load()
        out.update({f"{url}/{name}": ds.variables[name].values for name in names})
    return out


def load_xarray_dask(stores: list[StoreSpec]) -> Loaded:
    """xarray with dask, one dask chunk per Zarr chunk (``chunks={}``), threaded scheduler."""
    return _load_xarray(stores, chunks={})


def load_xarray_nodask(stores: list[StoreSpec]) -> Loaded:
    """xarray without dask (``chunks=None``): lazy backend arrays loaded one by one."""
    return _load_xarray(stores, chunks=None)


def _ts_open(ts: Any, context: Any, url: str, name: str) -> Any:
    """A future of tensorstore's zarr (v2) driver on ``<url>/<name>`` over its http kvstore."""
    spec = {"driver": "zarr", "kvstore": {"driver": "http", "base_url": url, "path": f"{name}/"}}
    return ts.open(spec, read=True, context=context)


def load_tensorstore(stores: list[StoreSpec]) -> Loaded:
    """tensorstore: per store, all opens then all whole-array reads issued as futures."""
    ts = importlib.import_module("tensorstore")
    context = ts.Context()  # fresh per load: nothing cached between repetitions
    out: Loaded = {}
    for url, names in stores:
        opens = [_ts_open(ts, context, url, name) for name in names]
        reads = [future.result().read() for future in opens]
        out.update({f"{url}/{name}": future.result() for name, future in zip(names, reads, strict=True)})
    return out


def _names(stores: list[StoreSpec]) -> list[str]:
    """The data variables (the same in every store of a dataset)."""
    return stores[0][1]


def _nearest(coord: npt.NDArray[Any], value: float) -> int:
    """Index of the coordinate nearest to ``value`` (``POINT`` has no ties)."""
    return int(np.argmin(np.abs(coord.astype(np.float64) - value)))


def _by_name(stores: list[StoreSpec], parts: dict[str, list[npt.NDArray[Any]]]) -> Loaded:
    """Per-store parts of each variable concatenated along ``file_id`` (the first axis), keyed by
    the first store's URL so that every point peer's keys agree."""
    first = stores[0][0]
    return {f"{first}/{name}": np.concatenate(arrays) for name, arrays in parts.items()}


def point_fastzarr(stores: list[StoreSpec]) -> Loaded:
    """``fz.extract_points`` over all stores at once (partial blosc reads over byte ranges), each
    load as the first of its process: no block table, metadata or coordinates remembered from an
    earlier load."""
    importlib.import_module("fastzarr._core")._forget_block_tables()
    importlib.import_module("fastzarr.extract._remembered").forget()
    return point_fastzarr_repeated(stores)


def point_fastzarr_repeated(stores: list[StoreSpec]) -> Loaded:
    """``fz.extract_points`` again in the same process: the blosc headers and block tables that the
    warm-up load read are remembered (each checked by ETag), so a chunk is one request; the
    metadata and coordinates it opened are read from at once and opened again beside the chunks."""
    fz = importlib.import_module("fastzarr")
    names = _names(stores)
    ds = fz.extract_points([url for url, _ in stores], points=POINT, variables=names, duplicates="keep")
    return _by_name(stores, {name: [ds.variables[name].values] for name in names})


def point_fastzarr_array(stores: list[StoreSpec]) -> Loaded:
    """``fz.open_array``: the lat/lon coordinates read whole, then ``arr[:, :, i, j]`` per variable
    (as the first load of its process: no block table remembered)."""
    fz = importlib.import_module("fastzarr")
    fz._core._forget_block_tables()
    names = _names(stores)
    parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in names}
    for url, _ in stores:
        i = _nearest(fz.open_array(f"{url}/lat")[...], POINT["lat"])
        j = _nearest(fz.open_array(f"{url}/lon")[...], POINT["lon"])
        for name in names:
            parts[name].append(fz.open_array(f"{url}/{name}")[:, :, i, j])
    return _by_name(stores, parts)


def _point_xarray(stores: list[StoreSpec], **open_kwargs: Any) -> Loaded:
    """``xr.concat([xr.open_zarr(url).sel(point, method="nearest") for url], "file_id").load()``."""
    xr = importlib.import_module("xarray")
    names = _names(stores)
    parts = [xr.open_zarr(url, **open_kwargs)[names].sel(POINT, method="nearest") for url, _ in stores]
    ds = xr.concat(parts, dim="file_id").load()
    return _by_name(stores, {name: [ds.variables[name].values] for name in names})


def point_xarray_dask(stores: list[StoreSpec]) -> Loaded:
    """xarray with dask, one dask chunk per Zarr chunk (``chunks={}``)."""
    return _point_xarray(stores, chunks={})


def point_xarray_nodask(stores: list[StoreSpec]) -> Loaded:
    """xarray without dask (``chunks=None``)."""
    return _point_xarray(stores, chunks=None)


def point_tensorstore(stores: list[StoreSpec]) -> Loaded:
    """tensorstore: lat/lon read whole, then every ``[:, :, i, j]`` read issued as a future."""
    ts = importlib.import_module("tensorstore")
    context = ts.Context()
    names = _names(stores)
    reads: dict[str, list[Any]] = {name: [] for name in names}
    for url, _ in stores:
        lat, lon = (_ts_open(ts, context, url, c) for c in ("lat", "lon"))
        i = _nearest(lat.result().read().result(), POINT["lat"])
        j = _nearest(lon.result().read().result(), POINT["lon"])
        opens = {name: _ts_open(ts, context, url, name) for name in names}
        for name, future in opens.items():
            reads[name].append(future.result()[:, :, i, j].read())
    return _by_name(stores, {name: [f.result() for f in futures] for name, futures in reads.items()})


class LatencyPeer(NamedTuple):
    """A way of reading a case's stores over HTTP, and the modules to import before timing."""

    label: str
    modules: tuple[str, ...]
    load: Callable[[list[StoreSpec]], Loaded]


class LatencyCase(NamedTuple):
    """What to read: ``dataset`` (a compare.py dataset name), how many of its stores (None: all),
    and the peers that read them; ``title`` heads its table."""

    title: str
    dataset: str
    stores: int | None
    peers: dict[str, LatencyPeer]


_XR = ("xarray", "zarr", "fsspec", "aiohttp")
_POINT_PEERS = {
    "fastzarr": LatencyPeer("fastzarr (extract_points)", ("fastzarr", "xarray"), point_fastzarr),
    "fz-repeat": LatencyPeer(
        "fastzarr (extract_points again, block tables and metadata remembered)",
        ("fastzarr", "xarray"),
        point_fastzarr_repeated,
    ),
    "fz-array": LatencyPeer("fastzarr (open_array, arr[:, :, i, j])", ("fastzarr",), point_fastzarr_array),
    "xarray-dask": LatencyPeer("xarray + fsspec + dask (sel)", (*_XR, "dask.array"), point_xarray_dask),
    "xarray": LatencyPeer("xarray + fsspec, no dask (sel)", _XR, point_xarray_nodask),
    "tensorstore": LatencyPeer("tensorstore (http kvstore)", ("tensorstore",), point_tensorstore),
}

#: The suite's cases, in the order they run; the first peer of each is the reference.
LATENCY_CASES: dict[str, LatencyCase] = {
    "load": LatencyCase(
        "Full load of one seed-like batch store",
        "batches",
        1,
        {
            "fastzarr": LatencyPeer("fastzarr (open_group + read_many)", ("fastzarr",), load_fastzarr),
            "fz-open-load": LatencyPeer(
                "fz.load(fz.open_zarr(url, chunks=None))", ("fastzarr", "xarray"), load_fastzarr_xarray
            ),
            "xarray-dask": LatencyPeer("xarray + fsspec + dask", (*_XR, "dask.array"), load_xarray_dask),
            "xarray": LatencyPeer("xarray + fsspec, no dask", _XR, load_xarray_nodask),
            "tensorstore": LatencyPeer("tensorstore (http kvstore)", ("tensorstore",), load_tensorstore),
        },
    ),
    "era5": LatencyCase("One point's series from the ERA5-like store", "era5", None, dict(_POINT_PEERS)),
    "archive": LatencyCase(
        "One point's series at archive scale: 2 stores x 20 variables x 24 steps, a field per chunk",
        "archive",
        None,
        # 960 chunks: xarray + dask (two chunk reads in flight on 2 cores) is left out, as below.
        {k: v for k, v in _POINT_PEERS.items() if k not in {"fz-array", "xarray-dask"}},
    ),
    "points": LatencyCase(
        "One point from every seed-like batch store",
        "batches",
        None,
        # xarray + dask is left out here: two chunk reads in flight make each of its loads take
        # ~14 s (960 chunks), which alone would double the suite's duration on 2 cores.
        {k: v for k, v in _POINT_PEERS.items() if k not in {"fz-array", "fz-repeat", "xarray-dask"}},
    ),
}
#: Every peer name used by some case (for compare.py's ``--peers``).
LATENCY_PEER_NAMES = list(dict.fromkeys(p for case in LATENCY_CASES.values() for p in case.peers))


def case_of(suite: str) -> LatencyCase:
    """The case of a child's suite key, ``latency/<case>``."""
    return LATENCY_CASES[suite.removeprefix("latency/")]


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


class Measured(Protocol):
    """What the report needs of compare.py's ``Measurement``."""

    peer: str
    times: list[float]
    requests: list[int]
    bytes_sent: list[int]
    max_in_flight: list[int]
    error: str | None

    @property
    def best(self) -> float: ...

    @property
    def median(self) -> float: ...

    @property
    def other_cpu_at_best(self) -> float: ...


def _count(values: Sequence[int]) -> str:
    """A per-load count: one figure when every timed load agreed, else the range."""
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def _megabytes(values: Sequence[int]) -> str:
    """Per-load bytes as megabytes (the median when loads differ)."""
    return f"{statistics.median(values) / 1e6:,.2f}"


def latency_table(case: LatencyCase, rows: Sequence[Measured]) -> list[list[str]]:
    """The case's table (header first): median seconds, server-side requests and bytes per load,
    the most requests in flight, and each peer's median time, bytes and requests as multiples of
    the reference's."""
    header = [
        "peer",
        "median s",
        "best s",
        "requests",
        "MB sent",
        "in flight",
        "time / fastzarr",
        "bytes / fastzarr",
        "requests / fastzarr",
        "other procs CPU",
    ]
    table = [header]
    ref = next((m for m in rows if m.peer == next(iter(case.peers)) and not m.error), None)
    for m in rows:
        label = case.peers[m.peer].label
        if m.error:
            table.append([label, "FAILED (see notes)", *["—"] * (len(header) - 2)])
            continue
        ratios = ["—"] * 3
        if ref is not None and m is not ref:
            ratios = [
                f"{m.median / ref.median:.2f}x",
                f"{statistics.median(m.bytes_sent) / max(1.0, statistics.median(ref.bytes_sent)):.2f}x",
                f"{statistics.median(m.requests) / max(1.0, statistics.median(ref.requests)):.2f}x",
            ]
        table.append(
            [
                label,
                f"{m.median:.3f}",
                f"{m.best:.3f}",
                _count(m.requests),
                _megabytes(m.bytes_sent),
                str(max(m.max_in_flight, default=0)),
                *ratios,
                f"{m.other_cpu_at_best:.0%}",
            ]
        )
    return table


class LatencyTarget(NamedTuple):
    """``peer``'s median seconds (or bytes per load) over ``subject``'s, at least ``threshold``."""

    case: str
    peer: str
    threshold: float
    measure: str  # "time" or "bytes"
    subject: str = "fastzarr"


#: The goals of issue 6 for these cases.
LATENCY_TARGETS: dict[str, LatencyTarget] = {
    "latency, full load: fz.load(fz.open_zarr) >= 5x xarray+dask": LatencyTarget(
        "load", "xarray-dask", 5.0, "time", "fz-open-load"
    ),
    "latency, full load: read_many >= 5x xarray+dask": LatencyTarget("load", "xarray-dask", 5.0, "time"),
    "latency, ERA5-like point: >= 10x fewer bytes than a whole-chunk reader (tensorstore)": LatencyTarget(
        "era5", "tensorstore", 10.0, "bytes"
    ),
    "latency, ERA5-like point: >= 10x tensorstore": LatencyTarget("era5", "tensorstore", 10.0, "time"),
    "latency, point series at archive scale (960 chunks): >= 5x tensorstore": LatencyTarget(
        "archive", "tensorstore", 5.0, "time"
    ),
    "latency, ERA5-like point: >= 5x tensorstore": LatencyTarget("era5", "tensorstore", 5.0, "time"),
    # first / repeated >= 1 / 0.6: the repeat takes at most 60 % of the first read's time.
    "latency, archive-scale series repeated, block tables remembered: <= 60 % of the first read": (
        LatencyTarget("archive", "fastzarr", 1 / 0.6, "time", "fz-repeat")
    ),
    "latency, ERA5-like point repeated, block tables remembered: <= 60 % of the first read": LatencyTarget(
        "era5", "fastzarr", 1 / 0.6, "time", "fz-repeat"
    ),
}


def latency_targets(results: dict[str, Sequence[Measured]]) -> list[list[str]]:
    """One row per target (header first): the goal, the measured ratio and whether it is met."""
    rows = [["target", "measured", "status"]]
    for goal, target in LATENCY_TARGETS.items():
        by_peer = {m.peer: m for m in results.get(target.case, []) if not m.error}
        subject, peer = by_peer.get(target.subject), by_peer.get(target.peer)
        if subject is None or peer is None:
            rows.append([goal, "not measured", "—"])
            continue
        if target.measure == "time":
            ratio = peer.median / subject.median
            measured = f"{ratio:.2f}x ({peer.median:.3f} s vs {subject.median:.3f} s)"
        else:
            theirs, ours = statistics.median(peer.bytes_sent), statistics.median(subject.bytes_sent)
            ratio = theirs / max(1.0, ours)
            measured = f"{ratio:.1f}x ({theirs / 1e6:,.2f} MB vs {ours / 1e6:,.3f} MB)"
        rows.append([goal, measured, "met" if ratio >= target.threshold else "NOT met"])
    return rows


SECTION_PREFIX = "## Latency ("


def section_heading(delay_ms: float) -> str:
    """The RESULTS.md heading of the suite's section."""
    return f"{SECTION_PREFIX}{delay_ms:g} ms per request, loopback HTTP)"


def update_results(section: str, prefix: str) -> None:
    """Replaces the section of RESULTS.md whose heading starts with ``prefix`` by ``section``
    (appended where there is none)."""
    results = Path(__file__).with_name("RESULTS.md")
    current = results.read_text() if results.exists() else "# fastzarr vs peers\n"
    results.write_text(replace_section(current, section, prefix=prefix))


def machine() -> str:
    """This machine in a results line: cores, memory, processor, and the load average now."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores, {memory:.1f} GiB, {platform.processor() or platform.machine()}, "
        f"load average at the end {os.getloadavg()[0]:.1f}"
    )


def replace_section(text: str, section: str, prefix: str = SECTION_PREFIX) -> str:
    """``text`` with its section whose heading starts with ``prefix`` (the latency one by
    default; from its heading to the next ``## ``) replaced by ``section``, or with ``section``
    appended when it has none."""
    start = text.find("\n" + prefix)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    end = text.find("\n## ", start + 1)
    rest = text[end:] if end >= 0 else ""
    return text[:start].rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n" + rest
