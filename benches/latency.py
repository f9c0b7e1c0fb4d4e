"""Object-storage latency suite for ``benches/compare.py``: the peers read over HTTP from a server
on 127.0.0.1 that waits a fixed time before answering each request and counts what it sends.

On local disk every peer is CPU-bound; on object storage the round trip dominates, and what
matters is how many requests a reader keeps in flight and how many bytes it asks for. The server
here makes both visible: ``delay_s`` per request (20 ms by default, a cloud store's first-byte
latency, paid concurrently by concurrent requests) and server-side counts of requests and body
bytes, which the measuring child reads (and resets) around every timed load.

Cases (``LATENCY_CASES``): the full load of one seed-like batch store; one point's series out of
the ERA5-like store (one 721 x 1440 blosc field per chunk); one point's series at archive scale
(2 stores x 20 variables x 24 steps), with 721 x 1440 and with 181 x 360 fields per chunk; and
one point out of every seed-like batch store. Each case has its own peers; a peer takes
``[(store URL, data variable names)]`` and returns ``{"<url>/<name>": numpy array}``, compared
byte for byte with fastzarr's.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib
import json
import os
import platform
import re
import stat as stat_module
import statistics
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
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


class LatencyServer:
    """Serves the files below ``root`` read-only, like an object store over plain HTTP/1.1.

    One asyncio event loop answers every connection (run it with ``serve_forever`` on a thread
    of its own). A server on the same cores as the reader it measures takes its CPU from that
    reader, which an object store's servers do not: per request it does the least it can (no
    thread per connection, no header objects), and sends bodies with ``sendfile`` from the
    page cache."""

    def __init__(self, root: Path, delay_s: float, max_in_flight: int | None = None) -> None:
        self.root = root.resolve()
        self._root = str(self.root)
        self.delay_s = delay_s
        # Beyond this many requests at once, "503 slow down" at once, as S3 and GCS answer.
        self.max_in_flight = max_in_flight
        self.counters = Counters()
        self._loop = asyncio.new_event_loop()
        # A backlog of 5 drops connection attempts when a reader opens dozens of connections at
        # once, and a dropped SYN costs a 1 s retransmit: a benchmark artefact.
        self._server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, backlog=1024)
        )
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; a file ``root/a/b`` is at ``<base_url>/a/b``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats_url(self) -> str:
        """Where the counters are read (``?reset=1`` zeroes them after reading)."""
        return self.base_url + STATS_PATH

    def serve_forever(self) -> None:
        """Answers requests until ``shutdown`` (from another thread)."""
        self._loop.run_forever()

    def shutdown(self) -> None:
        """Stops ``serve_forever``; safe to call from any thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)

    def server_close(self) -> None:
        """Closes the listening socket and the loop (once ``serve_forever`` has returned)."""
        self._server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.close()

    def respond(self, request: _Request, transport: asyncio.Transport) -> Awaitable[int] | None:
        """Answers ``request`` once its delay is over: writes the response and counts it, or,
        for a body large enough to be sent by ``sendfile``, writes the headers and returns the
        sending, to be counted when it ends. Synchronous otherwise: a request costs this server
        no task of its own."""
        fd = self._open(request.path) if request.method in ("GET", "HEAD") else None
        if fd is None:
            transport.write(_empty(404))
            self.counters.add("not_found")
            return None
        try:
            stat = os.fstat(fd)
            size = stat.st_size
            # An ETag as nginx makes one (modification time and size); `If-Match` is honoured.
            etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
            wanted = request.headers.get("if-match")
            if wanted and wanted not in ("*", etag):
                transport.write(_empty(412))
                self.counters.add("not_found")
                return None
            start, end, status = 0, size, 200
            requested = request.headers.get("range")
            match = _RANGE.fullmatch(requested) if requested else None
            if match and (match.group(1) or match.group(2)):
                first, last = match.group(1), match.group(2)
                if first:
                    start, end = int(first), min(int(last) + 1 if last else size, size)
                else:  # a suffix: the last n bytes
                    start = max(0, size - int(last))
                if start >= size or start >= end:
                    transport.write(_empty(416, f"Content-Range: bytes */{size}\r\n"))
                    self.counters.add("not_found")
                    return None
                status = 206
            extra = f"Content-Range: bytes {start}-{end - 1}/{size}\r\n" if status == 206 else ""
            response = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Length: {end - start}\r\n"
                "Content-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n"
                f"Last-Modified: {email.utils.formatdate(stat.st_mtime, usegmt=True)}\r\n"
                f"ETag: {etag}\r\n{extra}\r\n"
            ).encode()
            if request.method == "HEAD":
                transport.write(response)
                self.counters.add("head")
                return None
            kind = "ranged_get" if status == 206 else "get"
            if end - start <= _SMALL_BODY:
                transport.write(response + os.pread(fd, end - start, start))
                self.counters.add(kind, end - start)
                return None
            transport.write(response)
            file = os.fdopen(fd, "rb")
            fd = -1  # the file owns it now
        finally:
            if fd >= 0:
                os.close(fd)
        return self._send_body(transport, file, start, end - start, kind)

    async def _send_body(
        self, transport: asyncio.Transport, file: Any, start: int, count: int, kind: str
    ) -> int:
        """sendfile: the page cache straight to the socket; counts the request when it ends."""
        sent = 0
        try:
            with file:
                sent = await asyncio.get_running_loop().sendfile(transport, file, start, count)
        finally:
            self.counters.add(kind if sent == count else "error", sent)
        return sent

    def _open(self, url_path: str) -> int | None:
        """A descriptor of the regular file under the root that ``url_path`` names, or None."""
        path = os.path.normpath(f"{self._root}/{url_path.lstrip('/')}")
        if not path.startswith(self._root + os.sep):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd


#: Bodies up to this size go out with the headers in one write; larger ones by ``sendfile``.
_SMALL_BODY = 256 << 10
_REASONS = {200: "OK", 206: "Partial Content", 404: "Not Found", 412: "Precondition Failed",
            416: "Range Not Satisfiable", 503: "Slow Down"}  # fmt: skip


def _empty(status: int, headers: str = "") -> bytes:
    """A response without a body."""
    return f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Length: 0\r\n{headers}\r\n".encode()


def _write_stats(transport: asyncio.Transport, counts: dict[str, int]) -> None:
    """The counters, and the server process's CPU time, so that the child can tell the server's
    share of the machine from other processes' (the parent process does nothing else meanwhile)."""
    body = json.dumps({**counts, "cpu_s": time.process_time()}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n"
    transport.write(head.encode() + body)


class _Request(NamedTuple):
    """A request's line and headers (names in lower case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]

    @classmethod
    def parse(cls, head: bytes) -> _Request:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        path, _, query = target.partition("?")
        return cls(method, urllib.parse.unquote(path), query, headers)


class _Connection(asyncio.Protocol):
    """One client connection: its requests are answered one after another, in order (HTTP/1.1
    keep-alive; a pipelining client's next request waits in the buffer)."""

    def __init__(self, server: LatencyServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._busy = False
        self._transport: asyncio.Transport | None = None
        self._sending: asyncio.Future[int] | None = None  # a body being sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next()

    def _next(self) -> None:
        """Takes the next complete request from the buffer, if the last one is answered."""
        transport = self._transport
        while not self._busy and transport is not None and not transport.is_closing():
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            try:
                request = _Request.parse(head)
            except ValueError:
                transport.close()
                return
            server = self._server
            if request.path == STATS_PATH:
                _write_stats(transport, server.counters.snapshot(reset="reset=1" in request.query))
                continue
            at_once = server.counters.start()
            if server.max_in_flight is not None and at_once > server.max_in_flight:
                transport.write(_empty(503))  # at once, as S3 and GCS refuse
                server.counters.add("throttled")
                continue
            # Every request pays the latency before its first byte, 404s and HEADs included.
            self._busy = True
            asyncio.get_running_loop().call_later(server.delay_s, self._respond, request, transport)

    def _respond(self, request: _Request, transport: asyncio.Transport) -> None:
        keep = request.headers.get("connection", "").lower() != "close"
        try:
            sending = self._server.respond(request, transport)
        except OSError:
            self._server.counters.add("error")
            transport.close()
            return
        if sending is None:
            self._answered(keep)
            return
        self._sending = asyncio.ensure_future(sending)
        self._sending.add_done_callback(lambda done: self._answered(keep and not done.exception()))

    def _answered(self, keep: bool) -> None:
        if not keep and self._transport is not None:
            self._transport.close()
            return
        self._busy = False
        self._next()


@contextlib.contextmanager
def serve(root: Path, delay_s: float, max_in_flight: int | None = None) -> Iterator[LatencyServer]:
    """A ``LatencyServer`` over ``root`` running in a background thread until the block ends."""
    server = LatencyServer(root, delay_s, max_in_flight)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


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
    "era5-archive": LatencyCase(
        "One point's series from an ERA5-like archive: 2 stores x 20 variables x 24 steps, a 721 x "
        "1440 field per chunk",
        "era5-archive",
        None,
        # 960 chunks of 4 MB: xarray + dask (two chunk reads in flight on 2 cores) is left out.
        {k: v for k, v in _POINT_PEERS.items() if k not in {"fz-array", "xarray-dask"}},
    ),
    "archive": LatencyCase(
        "One point's series at archive scale: 2 stores x 20 variables x 24 steps, a 1-degree "
        "(181 x 360) field per chunk",
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
    "latency, ERA5-like archive point series (960 chunks of 721 x 1440): >= 5x tensorstore": (
        LatencyTarget("era5-archive", "tensorstore", 5.0, "time")
    ),
    "latency, point series at archive scale (960 chunks of 181 x 360): >= 5x tensorstore": LatencyTarget(
        "archive", "tensorstore", 5.0, "time"
    ),
    "latency, ERA5-like point: >= 5x tensorstore": LatencyTarget("era5", "tensorstore", 5.0, "time"),
    # first / repeated >= 1 / 0.6: the repeat takes at most 60 % of the first read's time.
    "latency, ERA5-like archive series repeated, block tables remembered: <= 60 % of the first read": (
        LatencyTarget("era5-archive", "fastzarr", 1 / 0.6, "time", "fz-repeat")
    ),
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
