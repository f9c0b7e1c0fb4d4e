"""Object storage: s3:// against moto's S3 server and http:// against a small HTTP server,
both started here on 127.0.0.1 and stopped after; memory:// and file:// too.

Every read is compared with the same read of the local copy by fastzarr (itself checked
against zarr-python in the conformance tests) and, where cheap, by zarr-python directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import io
import logging
import pickle
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import assert_not_found_without_secret, free_port, write_blosc_array, write_sharded_array
from fastzarr import _core
from fastzarr.extract import _remembered
from fastzarr.testing import make_batches

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

SECRET = "SuperSecretValue-9f8e7d"
BUCKET = "fastzarr-test"


# --------------------------------------------------------------------------------------------
# data


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two seed-like batch stores (v2, consolidated) and a store with big blosc chunks."""
    root = tmp_path_factory.mktemp("objstore")
    batches = make_batches(root, batches=2, variables=3, file_ids=3, steps=4, lat=16, lon=32)
    big = root / "big.zarr"
    rng = np.random.default_rng(0)
    write_blosc_array(big, rng.standard_normal((3, 256, 512)).astype("float32"), blocksize=16384)
    sharded = root / "sharded.zarr"
    write_sharded_array(sharded, rng, 128)
    return {"batch0": batches[0], "batch1": batches[1], "big": big, "sharded": sharded}


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path.relative_to(root.parent).as_posix(), path


# --------------------------------------------------------------------------------------------
# servers


@pytest.fixture(scope="module")
def s3(local: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """moto's S3 server on 127.0.0.1 holding the local stores under s3://BUCKET/<name>."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    for root in local.values():
        for key, path in _files(root):
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    options = {
        "endpoint": endpoint,
        "access_key_id": "testing",
        "secret_access_key": SECRET,
        "region": "us-east-1",
    }
    try:
        yield {"options": options, "endpoint": endpoint, "client": client}
    finally:
        server.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET (with byte ranges) of files below the server's root, with failure modes."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        started = time.monotonic()
        try:
            self._get(state)
        finally:
            with state.lock:
                state.log.append((self.path, started, time.monotonic()))

    def _get(self, state: _State) -> None:
        with state.lock:
            state.requests += 1
            number = state.requests
            state.ranges.append((self.path, self.headers.get("Range", "")))
            state.active += 1
            refused = state.mode == "throttle" and state.active > state.throttle_at
            state.refused += refused
            state.most_active = max(state.most_active, state.active - refused)
        try:
            if refused:
                self._send_status(503)  # "slow down", as S3 and GCS say it
            else:
                self._serve(state, number)
        finally:
            with state.lock:
                state.active -= 1

    def _serve(self, state: _State, number: int) -> None:
        mode = state.mode
        if mode == "stall":
            state.release.wait(20)
            self.close_connection = True
            return
        if mode == "flaky" and number % 2 == 1:
            self._send_status(503)
            return
        if state.delay:
            time.sleep(state.delay)
        path = self.server.root / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self._send_status(404)
            return
        data = path.read_bytes()
        status, body, extra = 200, data, {}
        # "norange": a server that ignores Range headers and always sends the whole object.
        match = (
            None if mode == "norange" else re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        )
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1 if match.group(2) else len(data), len(data))
            if start >= len(data):
                self._send_status(416)
                return
            status, body = 206, data[start:end]
            extra["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        if state.etag:
            extra["ETag"] = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
            wanted = self.headers.get("If-Match")
            if wanted and wanted != extra["ETag"] and not state.ignore_if_match:
                self._send_status(412)
                return
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if mode == "truncate" or (mode == "truncate-once" and state.first_time(self.path)):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        # Counted before it is sent: a client that has read it all may reset the counters at once.
        with state.lock:
            state.bytes_sent += len(body)
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self._send_status(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()

    def _send_status(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.mode = "normal"
        self.delay = 0.0
        # Whether responses carry an ETag (object_store then resumes broken bodies itself).
        self.etag = False
        # Whether `If-Match` is ignored (some servers do): the response's ETag then tells.
        self.ignore_if_match = False
        # "throttle": requests beyond `throttle_at` at once are refused with 503.
        self.throttle_at = 0
        self.active = 0
        self.most_active = 0
        self.refused = 0
        self.requests = 0
        self.bytes_sent = 0
        self.seen: set[str] = set()
        # (path, Range header) of every GET since the last reset.
        self.ranges: list[tuple[str, str]] = []
        # (path, started, answered) of every GET since the last reset.
        self.log: list[tuple[str, float, float]] = []

    def reset(self, mode: str = "normal") -> None:
        with self.lock:
            self.mode, self.requests, self.bytes_sent = mode, 0, 0
            self.most_active, self.refused = 0, 0
            self.seen = set()
            self.ranges = []
            self.log = []

    def in_flight_together(self, paths: Iterable[str]) -> bool:
        """Whether every one of ``paths`` was asked for before any of them was answered."""
        with self.lock:
            wanted = set(paths)
            spans = [(start, end) for path, start, end in self.log if path in wanted]
            asked = {path for path, _, _ in self.log if path in wanted}
        return asked == wanted and max(s for s, _ in spans) < min(e for _, e in spans)

    def first_time(self, path: str) -> bool:
        """Whether ``path`` is asked for the first time since the last reset."""
        with self.lock:
            first = path not in self.seen
            self.seen.add(path)
            return first


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections when many requests open at once
    # while the accepting thread waits for a core: the client retries a second later, and
    # requests sent together are then seen apart.
    request_queue_size = 1024
    root: Path
    state: _State


@contextlib.contextmanager
def _serving(root: Path) -> Iterator[dict[str, Any]]:
    """An HTTP server on 127.0.0.1 serving ``root``, for the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.root = root
    server.state = _State()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"base": base, "state": server.state}
    finally:
        server.state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def web(local: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """An HTTP server on 127.0.0.1 serving the directory that holds the local stores."""
    with _serving(local["big"].parent) as served:
        yield served


@pytest.fixture
def fresh_web(local: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """`web` on a port of its own: a host this process has not sent requests to, so its
    in-flight limit starts afresh (the throttling test lowers the limit of `web`'s host, and
    requests beyond a limit queue behind those in flight, which would blur the order of
    requests that a test checks)."""
    with _serving(local["big"].parent) as served:
        yield served


@pytest.fixture(autouse=True)
def _normal_web(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "web" in request.fixturenames:
        state: _State = request.getfixturevalue("web")["state"]
        state.release.set()
        state.reset()
        state.release.clear()
        state.delay = 0.0
        state.etag = False
        state.ignore_if_match = False


# --------------------------------------------------------------------------------------------
# s3


def test_s3_array_and_group_equal_local_reads(local: dict[str, Path], s3: dict[str, Any]) -> None:
    opts = s3["options"]
    remote = fz.open_group(f"s3://{BUCKET}/batch_000.zarr", storage_options=opts)
    here = fz.open_group(local["batch0"])
    assert remote.consolidated
    assert sorted(remote.keys()) == sorted(here.keys())
    for name in here.array_keys():
        np.testing.assert_array_equal(remote[name][...], here[name][...])
    arr = fz.open_array(f"s3://{BUCKET}/batch_000.zarr", storage_options=opts, path="var0001")
    expected = zarr.open_array(str(local["batch0"] / "var0001"), mode="r")[...]
    np.testing.assert_array_equal(arr[...], expected)
    np.testing.assert_array_equal(arr[1, 2:5, 7], expected[1, 2:5, 7])
    # Unconsolidated: members listed through the object store.
    listed = fz.open_group(f"s3://{BUCKET}/batch_000.zarr", storage_options=opts, use_consolidated=False)
    assert sorted(listed.keys()) == sorted(here.keys())


def test_s3_read_many_and_pickle(local: dict[str, Path], s3: dict[str, Any]) -> None:
    opts = s3["options"]
    a = fz.open_array(f"s3://{BUCKET}/big.zarr", storage_options=opts)
    b = fz.open_array(f"s3://{BUCKET}/batch_001.zarr", storage_options=opts, path="var0002")
    la, lb = fz.open_array(local["big"]), fz.open_array(local["batch1"], path="var0002")
    got, stats = fz.read_many(
        [(a, ...), (b, (slice(None), 1)), (a, (0,), {1: [3, 200], 2: [5, 500]})], return_stats=True
    )
    want = fz.read_many([(la, ...), (lb, (slice(None), 1)), (la, (0,), {1: [3, 200], 2: [5, 500]})])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert stats.requests >= stats.chunks - stats.chunks_missing
    again = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(again[2, :3, :3], la[2, :3, :3])


def test_s3_open_zarr_and_extract_points(local: dict[str, Path], s3: dict[str, Any]) -> None:
    opts = s3["options"]
    url = f"s3://{BUCKET}/batch_000.zarr"
    remote = fz.open_zarr(url, storage_options=opts, chunks=None).load()
    xr.testing.assert_identical(remote, xr.open_zarr(local["batch0"], chunks=None).load())
    urls = [f"s3://{BUCKET}/batch_000.zarr", f"s3://{BUCKET}/batch_001.zarr"]
    points = {"lat": [10.0, -30.0], "lon": [45.0, 200.0]}
    got = fz.extract_points(urls, points=points, storage_options=opts, duplicates="keep")
    want = fz.extract_points([local["batch0"], local["batch1"]], points=points, duplicates="keep")
    xr.testing.assert_identical(got, want)


def test_cache_of_s3_sources_misses_when_an_object_changes(
    local: dict[str, Path], s3: dict[str, Any], tmp_path: Path
) -> None:
    """A remote source's fingerprint is its listing (keys, sizes, times, ETags): a cached
    extraction is a hit while the store is unchanged, a miss with the new values once one chunk
    object is rewritten, and a store that cannot be listed (plain HTTP) is refused, not trusted."""
    from fastzarr.cache import source_fingerprint  # noqa: PLC0415

    opts, client = s3["options"], s3["client"]
    copy = tmp_path / "copy.zarr"
    shutil.copytree(local["batch0"], copy)
    for key, path in _files(copy):
        client.put_object(Bucket=BUCKET, Key=f"cachetest/{key}", Body=path.read_bytes())
    url = f"s3://{BUCKET}/cachetest/copy.zarr"
    points = {"lat": [10.0], "lon": [45.0]}
    cache = fz.Cache(tmp_path / "cache")
    first = fz.extract_points(url, points=points, storage_options=opts, cache=cache)
    xr.testing.assert_identical(first, fz.extract_points(copy, points=points))
    assert source_fingerprint(url, opts) == source_fingerprint(url, opts)
    before = source_fingerprint(url, opts)
    entries = len(cache.entries())
    assert entries > 0
    again = fz.extract_points(url, points=points, storage_options=opts, cache=cache)
    xr.testing.assert_identical(again, first)
    assert len(cache.entries()) == entries  # a hit: nothing new stored

    # Rewrite every chunk of one variable with new values, locally and in the bucket.
    name = next(iter(first.data_vars))
    with xr.open_zarr(copy) as ds:
        changed = ds[[name]].load()
    changed[name].values += 1000.0
    changed.to_zarr(copy, mode="r+")
    for key, path in _files(copy):
        if key.startswith(f"copy.zarr/{name}/"):
            client.put_object(Bucket=BUCKET, Key=f"cachetest/{key}", Body=path.read_bytes())
    assert source_fingerprint(url, opts) != before
    after = fz.extract_points(url, points=points, storage_options=opts, cache=cache)
    xr.testing.assert_identical(after, fz.extract_points(copy, points=points))
    np.testing.assert_allclose(after[name].values, first[name].values + 1000.0)
    assert len(cache.entries()) > entries


def test_cache_refuses_a_source_it_cannot_fingerprint(
    local: dict[str, Path], web: dict[str, Any], tmp_path: Path
) -> None:
    url = f"{web['base']}/{local['batch0'].name}"
    with pytest.raises(fz.CacheError, match="could not list"):
        fz.extract_points(url, points={"lat": 10.0, "lon": 45.0}, cache=fz.Cache(tmp_path / "cache"))


def test_cache_keeps_block_tables_for_the_next_process(
    local: dict[str, Path], s3: dict[str, Any], tmp_path: Path
) -> None:
    """With ``cache=``, the blosc block tables a remote extraction read are kept in the cache
    directory: a later process extracting another point from the same chunks asks for the blocks
    at once (one request per chunk, where a cold read makes two), and a dry run counts them. A
    damaged tables file is ignored and replaced."""
    import numcodecs  # noqa: PLC0415

    opts, client = s3["options"], s3["client"]
    rng = np.random.default_rng(5)
    lat, lon = np.linspace(-90, 90, 256), np.linspace(0, 359, 512)
    field = rng.standard_normal((2, 256, 512)).astype("float32")
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), field)}, coords={"time": [0, 1], "lat": lat, "lon": lon})
    store = tmp_path / "fields.zarr"
    compressor = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=1, blocksize=16384)
    ds.to_zarr(
        store,
        zarr_format=2,
        consolidated=True,
        encoding={"t2m": {"chunks": (1, 256, 512), "compressors": compressor}},
    )
    for key, path in _files(store):
        client.put_object(Bucket=BUCKET, Key=f"tables/{key}", Body=path.read_bytes())
    url = f"s3://{BUCKET}/tables/fields.zarr"
    cache = fz.Cache(tmp_path / "cache")

    def extract(point: dict[str, list[float]], **kwargs: Any) -> Any:
        return fz.extract_points(url, points=point, storage_options=opts, cache=cache, **kwargs)

    _core._forget_block_tables()
    first, report = extract({"lat": [lat[100]], "lon": [lon[300]]}, return_report=True)
    xr.testing.assert_identical(
        first, fz.extract_points(store, points={"lat": [lat[100]], "lon": [lon[300]]})
    )
    assert report.chunks_partial == 2
    assert report.requests == 4  # per chunk: the header and table, then a block
    [kept] = list((cache.root / "block_tables").iterdir())

    _core._forget_block_tables()  # as in a new process
    other = {"lat": [lat[200]], "lon": [lon[7]]}
    plan = extract(other, dry_run=True)
    assert (plan.tables_remembered, plan.first_requests, plan.then_requests) == (2, 2, 0)
    _core._forget_block_tables()
    got, report = extract(other, return_report=True)
    xr.testing.assert_identical(got, fz.extract_points(store, points=other))
    assert report.requests == 2  # the blocks alone

    # A damaged file is not trusted: removed, the read makes its requests, and a new file is kept.
    kept.write_bytes(kept.read_bytes()[:-5] + b"xxxxx")
    _core._forget_block_tables()
    third = {"lat": [lat[50]], "lon": [lon[50]]}
    got, report = extract(third, return_report=True)
    xr.testing.assert_identical(got, fz.extract_points(store, points=third))
    assert report.requests == 4
    cache.clear()
    assert not list((cache.root / "block_tables").iterdir())
    _core._forget_block_tables()


def test_s3_missing_bucket_or_key_names_url_without_secrets(s3: dict[str, Any]) -> None:
    urls = ("s3://no-such-bucket-here/x.zarr", f"s3://{BUCKET}/no_such_store.zarr")
    assert_not_found_without_secret(urls, s3["options"], SECRET)


def test_secrets_never_in_repr_or_errors(s3: dict[str, Any]) -> None:
    opts = s3["options"]
    arr = fz.open_array(f"s3://{BUCKET}/big.zarr", storage_options=opts)
    group = fz.open_group(f"s3://{BUCKET}/batch_000.zarr", storage_options=opts)
    assert SECRET not in repr(arr)
    assert SECRET not in repr(group)
    # A failing request (nothing listens there) does not repeat the credentials.
    dead = {**opts, "endpoint": f"http://127.0.0.1:{free_port()}", "max_retries": "0"}
    with pytest.raises(fz.FastzarrError) as info:
        fz.open_array(f"s3://{BUCKET}/big.zarr", storage_options=dead)
    assert SECRET not in str(info.value)
    # An unknown option names the key, never the value.
    with pytest.raises(ValueError, match="not_an_option") as info2:
        fz.open_array(f"s3://{BUCKET}/big.zarr", storage_options={**opts, "not_an_option": SECRET})
    assert SECRET not in str(info2.value)
    # Credentials inside a URL are blanked out of reprs and errors.
    with pytest.raises(fz.FastzarrError) as info3:
        fz.open_array(
            f"http://user:{SECRET}@127.0.0.1:{free_port()}/x.zarr?sig={SECRET}",
            storage_options={"max_retries": 0, "timeout": 1},
        )
    assert SECRET not in str(info3.value)


def test_url_secrets_stay_out_of_cache_errors_manifests_and_listings(
    local: dict[str, Path], s3: dict[str, Any], web: dict[str, Any], tmp_path: Path
) -> None:
    """Credentials in a source URL (user info, any query: signatures, SAS tokens) are never in a
    CacheError, a manifest, ``Cache.entries()`` or ``fastzarr cache ls``; the key still tells
    apart URLs that differ only there (by a hash of the whole URL)."""
    from fastzarr import cli  # noqa: PLC0415

    cache = fz.Cache(tmp_path / "cache")
    points = {"lat": [10.0], "lon": [45.0]}
    host = web["base"].removeprefix("http://")
    unlistable = f"http://user:{SECRET}@{host}/{local['batch0'].name}?sig={SECRET}"
    with pytest.raises(fz.CacheError, match="could not list") as info:
        fz.extract_points(unlistable, points=points, cache=cache)
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)

    signed = f"s3://{BUCKET}/{local['batch0'].name}?X-Amz-Signature={SECRET}"
    got = fz.extract_points(signed, points=points, storage_options=s3["options"], cache=cache)
    xr.testing.assert_identical(got, fz.extract_points(local["batch0"], points=points))
    manifests = [p.read_text() for p in (tmp_path / "cache").rglob("manifest.json")]
    assert manifests
    assert not [m for m in manifests if SECRET in m]
    assert f"{BUCKET}/{local['batch0'].name}?***" in "".join(manifests)
    assert SECRET not in repr(cache.entries())
    for argv in (["cache", "ls"], ["cache", "ls", "--json"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main([*argv, "--root", str(tmp_path / "cache")]) == 0
        assert SECRET not in out.getvalue()
        assert "***" in out.getvalue()
    # Another signature is another URL: a miss, not the first URL's entry.
    misses = cache.stats.misses
    other = signed.replace(SECRET, "another-signature")
    fz.extract_points(other, points=points, storage_options=s3["options"], cache=cache)
    assert cache.stats.misses > misses


# --------------------------------------------------------------------------------------------
# http


def test_http_reads_equal_local(local: dict[str, Path], web: dict[str, Any]) -> None:
    base = web["base"]
    arr = fz.open_array(f"{base}/big.zarr")
    np.testing.assert_array_equal(arr[...], fz.open_array(local["big"])[...])
    group = fz.open_group(f"{base}/batch_001.zarr")
    here = fz.open_group(local["batch1"])
    for name in here.array_keys():
        np.testing.assert_array_equal(group[name][...], here[name][...])
    ds = fz.open_zarr(f"{base}/batch_001.zarr", chunks=None).load()
    xr.testing.assert_identical(ds, xr.open_zarr(local["batch1"], chunks=None).load())


def test_remote_opens_overlap_their_requests(local: dict[str, Path], web: dict[str, Any]) -> None:
    """Over object storage every wait is a round trip: an opened node's possible documents, v3
    and v2, are asked for at once, the dimension coordinates are read in one pass, and
    extract_points opens all its sources at once and reads the other sources' coordinates in
    one pass."""
    state: _State = web["state"]
    state.delay = 0.2  # every request takes a while, so overlapping ones are seen overlapping
    names = [local["batch0"].name, local["batch1"].name]
    kinds = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")
    documents = [f"/{n}/{d}" for n in names for d in kinds]
    state.reset()
    ds = fz.open_zarr(f"{web['base']}/{names[0]}", chunks=None)
    assert state.in_flight_together(documents[:5])
    coords = [f"/{names[0]}/{d}/0" for d in ds.dims]
    assert state.in_flight_together(coords)
    state.reset()
    urls = [f"{web['base']}/{n}" for n in names]
    got = fz.extract_points(urls, points={"lat": 10.0, "lon": 20.0}, duplicates="keep")
    assert state.in_flight_together(documents)  # both sources, both formats, at once
    assert state.in_flight_together([f"/{names[1]}/{d}/0" for d in ds.dims])
    expected = fz.extract_points(
        [local["batch0"], local["batch1"]], points={"lat": 10.0, "lon": 20.0}, duplicates="keep"
    )
    xr.testing.assert_identical(got, expected)


def test_http_missing_store_is_store_not_found(web: dict[str, Any]) -> None:
    url = f"{web['base']}/nothing_here.zarr"
    with pytest.raises(fz.StoreNotFoundError, match=re.escape(url)):
        fz.open_array(url)


def test_point_read_fetches_only_the_blocks_needed(local: dict[str, Path], web: dict[str, Any]) -> None:
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/big.zarr")
    chunk_file = local["big"] / "1.0.0"
    whole = chunk_file.stat().st_size
    state.reset()
    [got], stats = fz.read_many([(arr, (1, 100, 300))], return_stats=True)
    assert got == fz.open_array(local["big"])[1, 100, 300]
    # One small request for the header and block table, one for the block: a fraction of
    # the chunk, counted by the server itself.
    assert state.requests == stats.requests == 2
    assert state.bytes_sent == stats.bytes_read
    assert state.bytes_sent * 10 < whole, (state.bytes_sent, whole)
    # Points spread over a chunk: more blocks, still fewer bytes than whole chunks.
    state.reset()
    lat, lon = [0, 255, 128], [0, 511, 256]
    [pts] = fz.read_many([(arr, (slice(None),), {1: lat, 2: lon})])
    np.testing.assert_array_equal(pts, fz.open_array(local["big"])[...][:, lat, lon])
    assert state.bytes_sent < 3 * whole / 2


def test_point_read_fetches_whole_chunks_when_partial_decoding_is_off(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/big.zarr")
    whole = (local["big"] / "1.0.0").stat().st_size
    fz.set_partial_decoding(False)
    try:
        state.reset()
        [got], stats = fz.read_many([(arr, (1, 100, 300))], return_stats=True)
    finally:
        fz.set_partial_decoding(True)
    assert got == fz.open_array(local["big"])[1, 100, 300]
    assert state.requests == stats.requests == 1
    assert state.bytes_sent == stats.bytes_read == whole
    assert stats.blocks_decoded == 0


def test_point_reads_from_a_server_without_ranges_fetch_whole_objects(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    """A server that answers range requests with the whole object: point reads fall back to one
    whole-object GET per chunk (and say so once), instead of failing."""
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/big.zarr")
    expected = fz.open_array(local["big"])[...]
    state.reset("norange")
    with pytest.warns(UserWarning, match="does not serve byte ranges") as record:
        assert arr[1, 100, 300] == expected[1, 100, 300]
    assert len(record) == 1
    # From then on, one whole-object GET per chunk (no range request tried first).
    state.reset("norange")
    lat, lon = [0, 255, 128], [0, 511, 256]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per store
        [pts] = fz.read_many([(arr, (slice(None),), {1: lat, 2: lon})])
    np.testing.assert_array_equal(pts, expected[:, lat, lon])
    assert state.requests == 3


def test_points_in_most_blocks_read_each_chunk_whole(local: dict[str, Path], web: dict[str, Any]) -> None:
    """A series touching most blocks of every chunk (the batch-store layout) would fetch the
    whole chunk after its header anyway: each chunk is one request instead of two."""
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/big.zarr")  # 16 KiB blocks: 8 rows of 512 float32
    rows = list(range(0, 256, 8))  # one point in every block
    state.reset()
    [got], stats = fz.read_many([(arr, (slice(None),), {1: rows, 2: [7] * len(rows)})], return_stats=True)
    np.testing.assert_array_equal(got, fz.open_array(local["big"])[...][:, rows, 7])
    assert state.requests == stats.requests == 3  # one per chunk
    # Small batch-store chunks are one block each: one request per chunk as well.
    group = fz.open_group(f"{web['base']}/{local['batch0'].name}")
    var = group["var0000"]
    state.reset()
    [series], stats = fz.read_many([(var, (slice(None), slice(None), 3, 5))], return_stats=True)
    np.testing.assert_array_equal(series, fz.open_group(local["batch0"])["var0000"][:, :, 3, 5])
    assert state.requests == stats.requests == stats.chunks


def test_sharded_point_reads_only_the_inner_chunks_needed(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/sharded.zarr")
    expected = zarr.open_array(str(local["sharded"]), mode="r")[...]
    np.testing.assert_array_equal(arr[...], expected)
    shard_file = local["sharded"] / "c" / "0" / "0" / "0"
    state.reset()
    [got], stats = fz.read_many([(arr, (0, 70, 90))], return_stats=True)
    assert got == expected[0, 70, 90]
    # The shard index and one inner chunk, not the shard; counted as the server counts them.
    assert state.bytes_sent * 10 < shard_file.stat().st_size, (state.bytes_sent, shard_file.stat().st_size)
    assert (stats.requests, stats.bytes_read) == (state.requests, state.bytes_sent) == (2, state.bytes_sent)
    # A shard that was never written reads as the fill value.
    np.testing.assert_array_equal(arr[1, 3:5, 7], expected[1, 3:5, 7])
    [pts] = fz.read_many([(arr, (slice(None),), {1: [0, 127], 2: [5, 100]})])
    np.testing.assert_array_equal(pts, expected[:, [0, 127], [5, 100]])


def test_sharded_box_reads_coalesce_neighbouring_inner_chunks(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    """A box over 6 inner chunks of a shard read in place: the shard index, then the 6 inner
    chunks' bytes in one coalesced request (they lie within 256 KiB of each other), not 6."""
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/sharded.zarr")
    expected = zarr.open_array(str(local["sharded"]), mode="r")[...]
    state.reset()
    [got], stats = fz.read_many([(arr, (0, slice(0, 32), slice(0, 48)))], return_stats=True)
    np.testing.assert_array_equal(got, expected[0, :32, :48])
    assert state.requests == stats.requests == 2
    assert stats.bytes_read == state.bytes_sent
    # Two boxes far apart in one shard: still one request each at most, and right values.
    state.reset()
    [a, b] = fz.read_many(
        [(arr, (0, slice(0, 16), slice(0, 16))), (arr, (0, slice(112, 128), slice(112, 128)))]
    )
    np.testing.assert_array_equal(a, expected[0, :16, :16])
    np.testing.assert_array_equal(b, expected[0, 112:, 112:])
    assert state.requests <= 3


def test_read_plans_match_what_the_server_then_serves(local: dict[str, Path], web: dict[str, Any]) -> None:
    """A plan made from metadata alone counts the chunks a read touches exactly, and no fewer
    requests and bytes than the server then counts (exactly, where no header is needed to know)."""
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/big.zarr")
    sharded = fz.open_array(f"{web['base']}/sharded.zarr")
    rows = list(range(0, 256, 8))  # a point in every block: chunks read whole
    cases = [
        ((arr, (1, 100, 300)), "exact"),  # a header, then one block
        ((arr, (slice(None),), {1: rows, 2: [7] * len(rows)}), "exact"),
        ((arr, (slice(None),), {1: [0, 255, 128], 2: [0, 511, 256]}), "at most"),
        ((arr, (slice(0, 2),)), "exact"),  # whole chunks
        ((sharded, (0, 70, 90)), "at most"),  # the shard index, then an inner chunk
    ]
    for request, bound in cases:
        state.reset()
        plan = _core._plan_reads([request])
        assert state.requests == 0, request  # planning fetches nothing
        _, stats = fz.read_many([request], return_stats=True)
        planned = plan["first_requests"] + plan["then_requests"]
        assert plan["chunks"] == stats.chunks, request
        assert plan["bytes_fetched"] >= state.bytes_sent, request
        if bound == "exact":
            assert planned == state.requests == stats.requests, request
        else:
            assert planned >= state.requests >= plan["chunks"], request
    assert _core._plan_reads([(arr, (1, 100, 300))])["partial_fetches"] == 1
    assert _core._plan_reads([(sharded, (0, 70, 90))])["partial_fetches"] == 1


@pytest.mark.parametrize("ignore_if_match", [False, True])
def test_block_tables_are_remembered_until_their_object_changes(
    local: dict[str, Path], web: dict[str, Any], ignore_if_match: bool
) -> None:
    """A chunk read in part a second time costs one request (its blocks), its header and block
    table remembered with the object's ETag; a rewritten object is noticed, whether the server
    refuses the stale `If-Match` (412) or ignores it and answers with the new ETag."""
    state: _State = web["state"]
    state.etag = True
    state.ignore_if_match = ignore_if_match
    name = f"remembered_{int(ignore_if_match)}.zarr"
    copy = local["big"].parent / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(local["big"], copy)
    reference = zarr.open_array(str(copy), mode="r+")
    expected = reference[...]
    _core._forget_block_tables()
    arr = fz.open_array(f"{web['base']}/{name}")
    state.reset()
    [first], stats = fz.read_many([(arr, (1, 100, 300))], return_stats=True)
    assert first == expected[1, 100, 300]
    assert state.requests == stats.requests == 2  # the header and table, then the block

    # The same point, and another one in a different block of the same chunk: one request each.
    plan = _core._plan_reads([(arr, (1, 200, 7))])
    assert (plan["tables_remembered"], plan["first_requests"], plan["then_requests"]) == (1, 1, 0)
    for point in [(1, 100, 300), (1, 200, 7)]:
        state.reset()
        [got], stats = fz.read_many([(arr, point)], return_stats=True)
        assert got == expected[point]
        assert state.requests == stats.requests == 1, point
        assert state.bytes_sent == stats.bytes_read
        assert all(r.startswith("bytes=") and not r.startswith("bytes=0-") for _, r in state.ranges)
    # Tables travel as bytes (for a cache); a damaged export is refused whole.
    tables = _core._block_tables(arr.url)
    assert _core._forget_block_tables() == 1
    assert _core._remember_block_tables(arr.url, tables) == 1
    with pytest.raises(ValueError, match="block tables"):
        _core._remember_block_tables(arr.url, tables[:-1])

    # The chunk rewritten with other values (same shape and codec): never the old table's blocks.
    reference[1] = expected[1] + 1000
    state.reset()
    [got], stats = fz.read_many([(arr, (1, 100, 300))], return_stats=True)
    assert got == expected[1, 100, 300] + 1000
    assert state.requests == stats.requests == 3  # refused or stale, then header and block
    state.reset()
    [got] = fz.read_many([(arr, (1, 200, 7))])
    assert got == expected[1, 200, 7] + 1000
    assert state.requests == 1  # the new table was remembered
    _core._forget_block_tables()
    shutil.rmtree(copy)


def test_small_remote_chunks_are_read_whole_then_their_blocks_alone(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    """A remote chunk too small for a partial read to save a round trip's worth (128 kB here) is
    read whole, in one request; its block table is remembered from that read, so the next point
    in it costs one request for its block alone."""
    state: _State = web["state"]
    state.etag = True
    path = local["big"].parent / "small_chunks.zarr"
    if not path.exists():
        data = np.random.default_rng(3).standard_normal((2, 128, 256)).astype("float32")
        write_blosc_array(path, data, blocksize=8192)
    expected = zarr.open_array(str(path), mode="r")[...]
    whole = (path / "1.0.0").stat().st_size
    _core._forget_block_tables()
    arr = fz.open_array(f"{web['base']}/small_chunks.zarr")
    state.reset()
    [got], stats = fz.read_many([(arr, (1, 50, 60))], return_stats=True)
    assert got == expected[1, 50, 60]
    assert (state.requests, state.bytes_sent) == (1, whole)
    state.reset()
    [got], stats = fz.read_many([(arr, (1, 100, 7))], return_stats=True)
    assert got == expected[1, 100, 7]
    assert state.requests == stats.requests == 1
    assert state.bytes_sent * 4 < whole
    _core._forget_block_tables()


def test_block_tables_are_not_remembered_without_an_etag(local: dict[str, Path], web: dict[str, Any]) -> None:
    state: _State = web["state"]
    _core._forget_block_tables()
    arr = fz.open_array(f"{web['base']}/big.zarr")
    for _ in range(2):
        state.reset()
        assert arr[2, 10, 10] == fz.open_array(local["big"])[2, 10, 10]
        assert state.requests == 2
    assert _core._forget_block_tables() == 0


def test_a_throttling_server_gets_fewer_requests_at_once_and_no_error_surfaces(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    """A server refusing (503) whatever is beyond 12 requests at once: the host's limit, 256 at
    first, falls to what the server takes, and every chunk arrives (object_store retries the
    refused ones). Without the backing off, nearly every request of the first waves is refused."""
    state: _State = web["state"]
    name = "many_chunks.zarr"
    path = local["big"].parent / name
    if not path.exists():
        arr = zarr.create_array(
            store=str(path), shape=(600, 8), chunks=(1, 8), dtype="int32", zarr_format=2, fill_value=0
        )
        arr[:] = np.arange(600 * 8, dtype="int32").reshape(600, 8)
    expected = zarr.open_array(str(path), mode="r")[...]
    for round_ in range(2):
        state.delay = 0.03
        state.throttle_at = 12
        state.reset("throttle")
        got = fz.open_array(f"{web['base']}/{name}")[...]  # a fresh store: its host's limit stays
        np.testing.assert_array_equal(got, expected)
        if round_ == 0:
            assert state.refused > 0  # the limit started far above the server's
        # Each refusal is one more request: far fewer of them than chunks.
        assert state.refused < 300, (round_, state.refused)
    # The second read started at the limit the first one found: few refusals.
    assert state.refused < 60, state.refused


def test_a_dry_run_measures_the_latency_its_metadata_requests_met(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    """The dry run times the HTTP requests that open the metadata and find the points: at 50 ms a
    request, the latency it measured is at least that, and its estimate uses it. Local sources
    make no HTTP request: nothing is measured."""
    state: _State = web["state"]
    state.delay = 0.05
    points = {"lat": [10.0, -30.0], "lon": [45.0, 200.0]}
    url = f"{web['base']}/{local['batch0'].name}"
    plan = fz.extract_points(url, points=points, dry_run=True)
    assert isinstance(plan, fz.ExtractionPlan)
    assert plan.latency_requests == state.requests > 0
    assert plan.latency is not None
    assert 0.05 <= plan.latency < 1.0
    assert plan.seconds() == plan.seconds(latency=plan.latency) > plan.seconds(latency=0.0)
    assert f"{plan.latency * 1000:,.1f} ms a request, measured" in str(plan)
    nearby = fz.extract_points(local["batch0"], points=points, dry_run=True)
    assert (nearby.latency, nearby.latency_requests) == (None, 0)
    assert (nearby.chunks, nearby.bytes_out) == (plan.chunks, plan.bytes_out)


def _fields_store(path: Path) -> None:
    """A v2 consolidated store of two variables over (step, lat, lon) with lat/lon coordinates:
    "field" has one whole 256 x 512 field per chunk (every chunk holds every point), "tiles" is
    cut into 128 x 256 tiles (which chunks hold a point depends on where it is). Blosc blocks of
    16 kB, so that a point is one block of many."""
    import numcodecs  # noqa: PLC0415

    rng = np.random.default_rng(7)
    shape = (3, 256, 512)
    ds = xr.Dataset(
        {
            "field": (("step", "lat", "lon"), rng.standard_normal(shape).astype("float32")),
            "tiles": (("step", "lat", "lon"), rng.standard_normal(shape).astype("float32")),
        },
        coords={"lat": np.linspace(-90, 90, 256), "lon": np.linspace(0, 359, 512), "step": [0, 1, 2]},
    )
    blosc = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=1, blocksize=16384)
    encoding = {
        "field": {"chunks": (1, 256, 512), "compressors": (blosc,)},
        "tiles": {"chunks": (1, 128, 256), "compressors": (blosc,)},
    }
    ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True, encoding=encoding)


def test_block_tables_of_whole_field_chunks_are_read_beside_the_coordinates(
    local: dict[str, Path], fresh_web: dict[str, Any]
) -> None:
    """A point's series from chunks that each hold a whole lat x lon field needs every chunk's
    header and block table whatever the point: they are asked for while the coordinates that
    place the point are read, not after, and the read then asks for the blocks alone. Chunks
    that hold only a tile wait for the point's position. The result equals a local read, and the
    report counts the tables' requests and bytes with the read's."""
    state: _State = fresh_web["state"]
    state.etag = True  # tables are remembered only with an ETag to check them by
    store = local["big"].parent / "fields.zarr"
    _fields_store(store)
    url = f"{fresh_web['base']}/{store.name}"
    points = {"lat": 12.3, "lon": 200.0}
    _core._forget_block_tables()
    _remembered.forget()
    state.delay = 0.2  # each round trip well apart from the next
    state.reset()
    got, report = fz.extract_points(url, points=points, return_report=True)
    state.delay = 0.0
    xr.testing.assert_identical(got, fz.extract_points(store, points=points))
    expected = xr.open_zarr(store).sel(points, method="nearest").load()  # the reference reader
    for name in ("field", "tiles"):  # one source: the concat dim has length 1
        np.testing.assert_array_equal(got[name].values[0], expected[name].values)

    with state.lock:
        log = list(state.log)
    coordinates_answered = min(end for path, _, end in log if path.endswith(("/lat/0", "/lon/0")))
    first_asked: dict[str, float] = {}
    for path, start, _ in log:
        first_asked[path] = min(start, first_asked.get(path, start))
    field_chunks = [p for p in first_asked if "/field/" in p]
    tile_chunks = [p for p in first_asked if "/tiles/" in p]
    assert len(field_chunks) == 3, sorted(first_asked)
    assert len(tile_chunks) == 3, sorted(first_asked)
    assert all(first_asked[p] < coordinates_answered for p in field_chunks), (log, coordinates_answered)
    assert all(first_asked[p] > coordinates_answered for p in tile_chunks), (log, coordinates_answered)
    # The fields' chunks are read in part (a table, then a block), the small tiles whole.
    chunk_requests = [(p, r) for p, r in state.ranges if "/field/" in p or "/tiles/" in p]
    assert sorted(bool(r) for p, r in chunk_requests if "/field/" in p) == [True] * 6
    assert [r for p, r in chunk_requests if "/tiles/" in p] == [""] * 3
    assert report.requests == len(chunk_requests) == 9

    def size(path: str, header: str) -> int:
        if not header:
            return (store.parent / path.lstrip("/")).stat().st_size
        first, last = re.fullmatch(r"bytes=(\d+)-(\d+)", header).groups()  # type: ignore[union-attr]
        return int(last) - int(first) + 1

    assert report.bytes_read == sum(size(p, r) for p, r in chunk_requests)

    # Read again: the tables are remembered, so each chunk is one request (its block).
    state.reset()
    again, report = fz.extract_points(url, points=points, return_report=True)
    xr.testing.assert_identical(again, got)
    assert report.requests == 6  # a block per field chunk, the tiles whole
    _core._forget_block_tables()
    _remembered.forget()
    shutil.rmtree(store)


def test_a_repeat_reads_from_remembered_metadata_checked_beside_the_read(
    local: dict[str, Path], fresh_web: dict[str, Any]
) -> None:
    """A second extraction from the same remote store starts its chunk reads from the metadata
    and coordinates the first opened, and opens them again meanwhile: unchanged, the result
    stands; changed (coordinates rewritten, a variable's attributes and values changed), the
    read is made again from what was opened, and equals a fresh read of the changed store."""
    state: _State = fresh_web["state"]
    store = local["big"].parent / "remembered.zarr"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(local["batch0"], store)
    url = f"{fresh_web['base']}/{store.name}"
    points = {"lat": [10.0, -30.0], "lon": [45.0, 200.0]}

    def reference() -> xr.Dataset:
        return fz.extract_points(store, points=points, duplicates="keep")

    first = fz.extract_points(url, points=points, duplicates="keep")
    xr.testing.assert_identical(first, reference())
    state.delay = 0.2  # each round trip well apart from the next
    state.reset()
    again = fz.extract_points(url, points=points, duplicates="keep")
    state.delay = 0.0
    xr.testing.assert_identical(again, first)
    # The metadata and coordinates were opened again, beside the chunks, and the coordinates
    # beside the documents (through the arrays remembered), not after them.
    asked = [path for path, _ in state.ranges]
    assert any(p.endswith((".zmetadata", "zarr.json")) for p in asked), asked
    assert any(p.endswith("/lat/0") for p in asked), asked
    with state.lock:
        log = list(state.log)
    documents_answered = min(end for path, _, end in log if path.endswith(".zmetadata"))
    chunks_asked = [start for path, start, _ in log if "/var0" in path]
    assert chunks_asked, log
    assert max(chunks_asked) < documents_answered, log
    assert all(start < documents_answered for path, start, _ in log if path.endswith("/lat/0")), log

    # The latitudes move by 20 degrees, so the points fall in other rows.
    lat = zarr.open_array(str(store / "lat"), mode="r+")
    lat[:] = lat[:] + 20.0
    changed = fz.extract_points(url, points=points, duplicates="keep")
    xr.testing.assert_identical(changed, reference())
    assert not changed.identical(first)

    # A variable's attributes and values change (its metadata documents with them).
    group = zarr.open_group(str(store), mode="r+", zarr_format=2)
    var = group["var0001"]
    var.attrs["scale_factor"] = 2.0
    var[...] = np.asarray(var[...]) + 1
    zarr.consolidate_metadata(str(store))
    rescaled = fz.extract_points(url, points=points, duplicates="keep")
    xr.testing.assert_identical(rescaled, reference())
    np.testing.assert_allclose(rescaled["var0001"].values, 2 * (changed["var0001"].values + 1), rtol=1e-6)

    # The store replaced by one of other shapes and chunks: the read planned from what was
    # remembered fails or reads other bytes, and the read from the store as it now is stands.
    shutil.rmtree(store)
    (replacement,) = make_batches(
        store.parent / "replacement", batches=1, variables=3, file_ids=2, steps=6, lat=24, lon=40
    )
    shutil.copytree(replacement, store)
    replaced = fz.extract_points(url, points=points, duplicates="keep")
    xr.testing.assert_identical(replaced, reference())
    assert replaced.sizes != rescaled.sizes
    shutil.rmtree(store)


def test_retries_on_503(local: dict[str, Path], web: dict[str, Any]) -> None:
    state: _State = web["state"]
    state.reset("flaky")
    arr = fz.open_array(f"{web['base']}/big.zarr")
    np.testing.assert_array_equal(arr[...], fz.open_array(local["big"])[...])
    assert state.requests > 2


def test_stalled_server_times_out(web: dict[str, Any]) -> None:
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/big.zarr")
    state.reset("stall")
    started = time.monotonic()
    with pytest.raises(fz.TimeoutError):
        arr.read(timeout=1.0)
    assert time.monotonic() - started < 10
    # A per-request timeout from storage_options also ends a stalled open.
    with pytest.raises(fz.TimeoutError):
        fz.open_array(f"{web['base']}/big.zarr", storage_options={"timeout": 0.5, "max_retries": 1})


@pytest.mark.parametrize("opener", ["open_array", "open_group", "open_zarr", "engine", "inspect"])
def test_opening_from_a_stalled_server_honours_timeout(
    local: dict[str, Path], web: dict[str, Any], opener: str
) -> None:
    """Every open takes ``timeout=`` and gives up on time, however long each request could wait;
    once the server answers again, the same open works."""
    state: _State = web["state"]
    url = f"{web['base']}/{local['batch0'].name}"
    opens = {
        "open_array": lambda t: fz.open_array(f"{web['base']}/big.zarr", timeout=t),
        "open_group": lambda t: fz.open_group(url, timeout=t),
        "open_zarr": lambda t: fz.open_zarr(url, chunks=None, timeout=t),
        "engine": lambda t: xr.open_dataset(url, engine="fastzarr", chunks=None, timeout=t),
        "inspect": lambda t: fz.inspect(url, sample=0, progress=False, timeout=t),
        "extract_points": lambda t: fz.extract_points(url, points={"lat": 0.0, "lon": 0.0}, timeout=t),
    }
    state.reset("stall")
    started = time.monotonic()
    with pytest.raises(fz.TimeoutError) as info:
        opens[opener](0.5)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started < 5  # the stalled request itself waits 20 s
    state.release.set()
    state.reset()
    assert opens[opener](30) is not None


def test_inspect_over_plain_http(local: dict[str, Path], web: dict[str, Any]) -> None:
    """A plain HTTP server cannot list a store: inspect reports the stored size as unknown and
    measures everything else as for the local copy."""
    remote = fz.inspect(f"{web['base']}/{local['batch0'].name}", sample=2, progress=False)
    here = fz.inspect(local["batch0"], sample=2, progress=False)
    assert [a.name for a in remote.arrays] == [a.name for a in here.arrays]
    assert [a.shape for a in remote.arrays] == [a.shape for a in here.arrays]
    assert [a.point_chunks for a in remote.arrays] == [a.point_chunks for a in here.arrays]
    assert all(a.objects_stored is None and a.chunks_missing is None for a in remote.arrays)
    assert all(a.objects_stored is not None for a in here.arrays)
    assert "cannot be listed" in str(remote)


CTRL_C_OPEN_SCRIPT = """
import os, signal, sys, threading, time
import fastzarr as fz
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
started = time.perf_counter()
try:
    fz.open_group(sys.argv[1])  # no timeout: only Ctrl-C ends the wait
    print("opened")
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - started - 0.5)
"""


def test_ctrl_c_during_a_stalled_remote_open(local: dict[str, Path], web: dict[str, Any]) -> None:
    state: _State = web["state"]
    state.reset("stall")
    out = subprocess.run(
        [sys.executable, "-c", CTRL_C_OPEN_SCRIPT, f"{web['base']}/{local['batch0'].name}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("interrupted"), out.stdout
    assert float(out.stdout.split()[1]) < 1.0, out.stdout


def test_load_timeout_on_a_stalled_server(local: dict[str, Path], web: dict[str, Any]) -> None:
    state: _State = web["state"]
    ds = fz.open_zarr(f"{web['base']}/{local['batch0'].name}", chunks=None)
    state.reset("stall")
    started = time.monotonic()
    with pytest.raises(fz.TimeoutError):
        fz.load(ds, timeout=0.5)
    assert time.monotonic() - started < 10
    state.release.set()
    state.reset()
    xr.testing.assert_identical(fz.load(ds, timeout=60), xr.open_zarr(local["batch0"]).load())


def test_cut_responses_are_retried_or_errors_never_wrong_data(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/big.zarr")
    expected = fz.open_array(local["big"])[...]
    state.reset("truncate-once")  # every object's first response breaks off, the retry is whole
    np.testing.assert_array_equal(arr[...], expected)
    state.reset("truncate")
    with pytest.raises(fz.CorruptChunkError) as info:
        arr[...]
    message = str(info.value)
    assert "big.zarr" in message, message
    assert "cut short" in message, message
    assert "chunk '" in message, message


def test_cut_responses_with_etags_are_resumed_by_the_store_client(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    """A response that carries an ETag and breaks off is resumed by object_store itself (a range
    request for the rest); fastzarr does not ask again on top of that."""
    state: _State = web["state"]
    options = {"max_retries": "1", "retry_init_backoff": "0.01"}
    arr = fz.open_array(f"{web['base']}/big.zarr", storage_options=options)
    expected = fz.open_array(local["big"])[...]
    state.etag = True
    try:
        state.reset("truncate-once")
        np.testing.assert_array_equal(arr[...], expected)
        # Each broken body was resumed from where it broke: a range request starting past 0.
        resumed = [(p, r) for p, r in state.ranges if r.startswith("bytes=") and not r.startswith("bytes=0-")]
        assert resumed, state.ranges
        cut = {p for p, _ in state.ranges if p in state.seen}
        assert {p for p, _ in resumed} <= cut, (resumed, cut)
        state.reset("truncate")
        with pytest.raises(fz.CorruptChunkError, match="store client's own retries") as info:
            arr[...]
        assert "big.zarr" in str(info.value), info.value
        assert "chunk '" in str(info.value), info.value
    finally:
        state.etag = False
        state.reset()


def test_io_concurrency_setting() -> None:
    """512 by default, or half the open files allowed (each request in flight holds a socket)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = (
        "import resource, fastzarr as fz; resource.setrlimit(resource.RLIMIT_NOFILE, (200, {hard})); "
        "print(fz.get_io_concurrency())"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    small = subprocess.run(
        [sys.executable, "-c", code.format(hard=hard)], capture_output=True, text=True, check=True
    )
    assert small.stdout.strip() == "100"
    before = fz.get_io_concurrency()
    assert before == (512 if soft == resource.RLIM_INFINITY else max(16, min(512, soft // 2)))
    try:
        fz.set_io_concurrency(3)
        assert fz.get_io_concurrency() == 3
        with pytest.raises(ValueError, match="at least 1"):
            fz.set_io_concurrency(0)
    finally:
        fz.set_io_concurrency(before)


def test_few_requests_in_flight_still_read_everything(local: dict[str, Path], web: dict[str, Any]) -> None:
    before = fz.get_io_concurrency()
    web["state"].delay = 0.01
    try:
        fz.set_io_concurrency(1)
        arr = fz.open_array(f"{web['base']}/big.zarr")
        np.testing.assert_array_equal(arr[...], fz.open_array(local["big"])[...])
    finally:
        fz.set_io_concurrency(before)


# --------------------------------------------------------------------------------------------
# other schemes, async


def test_file_urls_and_unknown_schemes(local: dict[str, Path]) -> None:
    arr = fz.open_array(local["big"].as_uri())
    np.testing.assert_array_equal(arr[0, :2, :2], fz.open_array(local["big"])[0, :2, :2])
    with pytest.raises(fz.FastzarrError, match="not supported"):
        fz.open_array("ftp://example.invalid/x.zarr")
    with pytest.raises(fz.StoreNotFoundError):
        fz.open_array("memory://fastzarr-empty/none.zarr")


def test_async_api_equals_sync(local: dict[str, Path], web: dict[str, Any]) -> None:
    url = f"{web['base']}/big.zarr"
    here = fz.open_array(local["big"])

    async def main() -> list[Any]:
        arr = await fz.open_array_async(url)
        whole, part = await asyncio.gather(arr.read_async(), arr.read_async((1, slice(0, 4))))
        [many] = await fz.read_many_async([(arr, (2, 5))])
        # The sync API keeps working inside a running loop.
        sync = arr[0, 0, :3]
        return [whole, part, many, sync]

    whole, part, many, sync = asyncio.run(main())
    np.testing.assert_array_equal(whole, here[...])
    np.testing.assert_array_equal(part, here[1, 0:4])
    np.testing.assert_array_equal(many, here[2, 5])
    np.testing.assert_array_equal(sync, here[0, 0, :3])


def test_async_timeout_and_extract(local: dict[str, Path], web: dict[str, Any]) -> None:
    state: _State = web["state"]
    url = f"{web['base']}/big.zarr"

    async def stalled() -> None:
        arr = await fz.open_array_async(url)
        state.reset("stall")
        await arr.read_async(timeout=0.5)

    with pytest.raises(fz.TimeoutError):
        asyncio.run(stalled())
    state.release.set()
    state.reset()
    points = {"lat": [10.0], "lon": [45.0]}
    got = asyncio.run(fz.extract_points_async(f"{web['base']}/batch_000.zarr", points=points))
    xr.testing.assert_identical(got, fz.extract_points(local["batch0"], points=points))


def _remote_sum(url: str) -> float:
    return float(fz.open_array(url)[...].sum())


def test_remote_reads_in_a_forked_child(local: dict[str, Path], web: dict[str, Any]) -> None:
    """The I/O runtime is rebuilt in a forked child, as the decode pool is."""
    import multiprocessing  # noqa: PLC0415
    import warnings  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    url = f"{web['base']}/big.zarr"
    expected = float(fz.open_array(local["big"])[...].sum())
    assert _remote_sum(url) == expected  # the parent's runtime exists before the fork
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\).*", category=DeprecationWarning)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            assert pool.submit(_remote_sum, url).result(timeout=60) == expected


def test_sharded_point_reads_from_a_server_without_ranges_fetch_whole_shards(
    local: dict[str, Path], web: dict[str, Any]
) -> None:
    state: _State = web["state"]
    arr = fz.open_array(f"{web['base']}/sharded.zarr")
    expected = zarr.open_array(str(local["sharded"]), mode="r")[...]
    state.reset("norange")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert arr[0, 70, 90] == expected[0, 70, 90]
        np.testing.assert_array_equal(arr[1, 3:5, 7], expected[1, 3:5, 7])
        got = arr.oindex[[0, 1], [5, 70], [90, 3]]
        np.testing.assert_array_equal(got, expected[np.ix_([0, 1], [5, 70], [90, 3])])
    assert [str(w.message) for w in record if "byte ranges" in str(w.message)] != []
