"""Shared helpers: write Zarr arrays with zarr-python (the reference) and compare reads."""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import re
import signal
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pytest
import zarr
import zarr.errors

# A shell that starts background jobs without job control starts them with Ctrl-C ignored,
# and Python then installs no KeyboardInterrupt handler, in this process or in the
# interpreters the Ctrl-C tests start. A handler here is reset to the default on exec, so
# those children get Python's usual one.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# pytester runs throwaway test projects against the installed fastzarr (its pytest plugin).
pytest_plugins = ["pytester"]

_DEFAULT = object()
NOTHING: Any = "nothing"  # region value: create the array but write no chunk at all


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """zarr-python warns about data types without a stable v3 spec (e.g. fixed-length unicode) and
    about numcodecs codecs: only those warnings are silenced, and only around zarr-python calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
        yield


def sample_data(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> np.ndarray:
    """Deterministic values covering each dtype's interesting corners (extremes, NaN, -0.0, inf)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, n, dtype=dtype.newbyteorder("="), endpoint=True)
        corners = np.array([info.min, info.max, 0, 1], dtype=dtype.newbyteorder("="))
        flat[: min(n, 4)] = corners[: min(n, 4)]
    elif dtype.kind == "f":
        flat = (rng.standard_normal(n) * 1000).astype(dtype.newbyteorder("="))
        corners = np.array([np.nan, -0.0, np.inf, -np.inf, np.finfo(dtype).max, np.finfo(dtype).tiny])
        flat[: min(n, 6)] = corners[: min(n, 6)].astype(flat.dtype)
    elif dtype.kind == "c":
        real = rng.standard_normal(n) * 100
        imag = rng.standard_normal(n) * 100
        flat = (real + 1j * imag).astype(dtype.newbyteorder("="))
        corners = np.array([complex(np.nan, 1), complex(-0.0, np.inf), complex(1, np.nan)])
        flat[: min(n, 3)] = corners[: min(n, 3)].astype(flat.dtype)
    elif dtype.kind == "U":
        words = ["", "a", "héllo", "日本語", "zarr!", "xy", "ñ"]
        flat = np.array([words[i % len(words)][: dtype.itemsize // 4] for i in range(n)], dtype=dtype)
    else:  # pragma: no cover - helper misuse
        raise ValueError(f"no sample data for {dtype}")
    return flat.astype(dtype).reshape(shape)


def write_array(
    path: str | Path,
    data: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    chunks: tuple[int, ...] | None = None,
    zarr_format: int = 3,
    region: tuple[Any, ...] | None = None,
    compressors: Any = _DEFAULT,
    filters: Any = _DEFAULT,
    serializer: Any = _DEFAULT,
    fill_value: Any = _DEFAULT,
    **kwargs: Any,
) -> str:
    """Create an array with zarr-python at ``path`` and write ``data`` into it (all of it, or only
    ``data[region]`` at ``region`` so other chunks stay missing). Returns the path as a string."""
    if data is not None:
        shape = data.shape if shape is None else shape
        dtype = data.dtype if dtype is None else dtype
    assert shape is not None
    assert dtype is not None
    if chunks is None:
        chunks = shape
    options: dict[str, Any] = dict(kwargs)
    for name, value in (
        ("compressors", compressors),
        ("filters", filters),
        ("serializer", serializer),
        ("fill_value", fill_value),
    ):
        if value is not _DEFAULT:
            options[name] = value
    with quiet_zarr():
        arr = zarr.create_array(
            store=str(path), shape=shape, chunks=chunks, dtype=dtype, zarr_format=zarr_format, **options
        )
        if data is not None and not (isinstance(region, str) and region == NOTHING):
            if region is None:
                arr[...] = data
            else:
                arr[region] = data[region]
    return str(path)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def assert_not_found_without_secret(urls: Sequence[str], options: dict[str, Any], secret: str) -> None:
    """Each of ``urls`` (a missing bucket, a missing store) opened as an array raises
    ``StoreNotFoundError`` and as a group ``FileNotFoundError``, naming the URL but not ``secret``."""
    for url in urls:
        with pytest.raises(fz.StoreNotFoundError) as info:
            fz.open_array(url, storage_options=options)
        assert url in str(info.value)
        assert secret not in str(info.value)
        with pytest.raises(FileNotFoundError, match=re.escape(url)) as group_info:
            fz.open_group(url, storage_options=options)
        assert secret not in str(group_info.value)


def write_blosc_array(path: Path, data: np.ndarray, *, blocksize: int) -> str:
    """A v2 array of ``data`` at ``path``, one chunk per first index, blosc zstd-3 with
    ``blocksize`` (so that a point lies in one of many blocks)."""
    import numcodecs  # noqa: PLC0415

    compressor = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=1, blocksize=blocksize)
    return write_array(
        path, data, chunks=(1, *data.shape[1:]), zarr_format=2, compressors=compressor, fill_value=0.0
    )


def write_sharded_array(path: Path, rng: np.random.Generator, side: int) -> str:
    """A v3 array of 2 x ``side`` x ``side`` float32, one shard per first index of 16 x 16 inner
    chunks; only the first shard is written (the second reads as the fill value, -1)."""
    shards = zarr.create_array(
        store=str(path),
        shape=(2, side, side),
        chunks=(1, 16, 16),
        shards=(1, side, side),
        dtype="float32",
        zarr_format=3,
        fill_value=-1.0,
    )
    shards[0] = rng.standard_normal((side, side)).astype("float32")
    return str(path)


def zarr_read(path: str | Path, key: Any = Ellipsis) -> np.ndarray:
    """The reference: zarr-python's result for ``key``, always as an ndarray."""
    with quiet_zarr():
        return np.asarray(zarr.open_array(str(path), mode="r")[key])


def assert_same(actual: Any, expected: np.ndarray) -> None:
    """Same shape, same values in native byte order, bit for bit (NaN payloads and -0.0 included)."""
    assert isinstance(actual, np.ndarray), type(actual)
    expected = np.asarray(expected)
    native = expected.dtype.newbyteorder("=")
    assert actual.dtype == native, (actual.dtype, expected.dtype)
    assert actual.dtype.isnative
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    expected = expected.astype(native)
    np.testing.assert_array_equal(actual, expected)
    if expected.dtype.kind in "fc" and expected.size:
        # assert_array_equal treats every NaN and both zeros alike: compare the raw bits too.
        assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


@pytest.fixture
def fresh_threads() -> Iterator[None]:
    """Restore the thread-pool size a test changes."""
    before = fz.get_num_threads()
    yield
    fz.set_num_threads(before)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A dask.distributed client on a LocalCluster of 2 single-threaded worker processes."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base's signature
        pass


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving the files below ``root``; yields ``host:port``."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
