"""pytest fixtures for suites that guard pipelines built on fastzarr.

Registered by the ``pytest11`` entry point ``fastzarr``, so installing fastzarr is enough:

- ``fastzarr_batches``: seed-like batch stores (``fastzarr.testing.make_batches``) written once
  per session in a temporary directory; their paths. Override ``fastzarr_batch_params`` to
  change the make_batches arguments.
- ``fastzarr_cache``: a fresh, empty ``fastzarr.Cache`` in a temporary directory.
- ``fastzarr_s3``: an S3 server (moto) on 127.0.0.1 holding the batches, for the session;
  an :class:`S3Stores` with ``.url``/``.urls`` and ``.storage_options``. Skipped, saying why,
  when moto[server] or boto3 is missing (``pip install fastzarr[testing]``).

Loading this plugin imports only pytest and fastzarr: xarray, zarr, moto and boto3 are imported
by the fixtures that need them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "S3Stores",
    "fastzarr_batch_params",
    "fastzarr_batches",
    "fastzarr_cache",
    "fastzarr_s3",
]

#: Small enough to write in well under a second; 3 batches sharing one file_id pairwise.
DEFAULT_BATCH_PARAMS: dict[str, Any] = {
    "batches": 3,
    "variables": 3,
    "file_ids": 4,
    "steps": 2,
    "lat": 8,
    "lon": 16,
    "overlap": 1,
}

_MISSING_S3 = "fastzarr_s3 needs moto[server] and boto3: pip install 'fastzarr[testing]'"


@pytest.fixture(scope="session")
def fastzarr_batch_params() -> dict[str, Any]:
    """``make_batches`` arguments of ``fastzarr_batches``; override this fixture to change them."""
    return dict(DEFAULT_BATCH_PARAMS)


@pytest.fixture(scope="session")
def fastzarr_batches(
    tmp_path_factory: pytest.TempPathFactory, fastzarr_batch_params: dict[str, Any]
) -> list[Path]:
    """Paths of seed-like batch stores (float32 (file_id, step, lat, lon), consolidated, Zarr v2,
    consecutive batches repeating one file_id), written once per session. Treat them as read-only."""
    from fastzarr.testing import make_batches  # noqa: PLC0415 - needs xarray and zarr

    return make_batches(tmp_path_factory.mktemp("fastzarr_batches"), **fastzarr_batch_params)


@pytest.fixture
def fastzarr_cache(tmp_path: Path) -> Any:
    """A fresh ``fastzarr.Cache`` rooted in a temporary directory of this test."""
    import fastzarr  # noqa: PLC0415

    try:
        cache_class = fastzarr.Cache
    except AttributeError:
        pytest.skip("fastzarr_cache: this version of fastzarr has no fastzarr.Cache")
    return cache_class(tmp_path / "fastzarr-cache")


@dataclasses.dataclass(frozen=True)
class S3Stores:
    """Stores uploaded to a local S3 server: ``s3://{bucket}/{name}`` for each name."""

    endpoint_url: str
    bucket: str
    names: tuple[str, ...]
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"  # moto accepts any credentials

    @property
    def urls(self) -> list[str]:
        """``s3://`` URLs of the stores, in the order of ``fastzarr_batches``."""
        return [f"s3://{self.bucket}/{name}" for name in self.names]

    @property
    def url(self) -> str:
        """The first store's URL."""
        return self.urls[0]

    @property
    def storage_options(self) -> dict[str, str]:
        """fastzarr's ``storage_options`` (object_store keys) for these stores."""
        return {
            "endpoint": self.endpoint_url,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "allow_http": "true",
        }

    @property
    def fsspec_storage_options(self) -> dict[str, Any]:
        """The same for s3fs, e.g. ``xr.open_zarr(url, storage_options=...)``."""
        return {
            "key": self.access_key_id,
            "secret": self.secret_access_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3  # noqa: PLC0415

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )


@pytest.fixture(scope="session")
def fastzarr_s3(fastzarr_batches: list[Path]) -> Iterator[S3Stores]:
    """A moto S3 server on 127.0.0.1 (a free port) with ``fastzarr_batches`` uploaded to
    ``s3://fastzarr-test/<store name>``, for the session; stopped afterwards."""
    moto_server = pytest.importorskip("moto.server", reason=_MISSING_S3)
    pytest.importorskip("boto3", reason=_MISSING_S3)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        stores = S3Stores(
            endpoint_url=f"http://{host}:{port}",
            bucket="fastzarr-test",
            names=tuple(path.name for path in fastzarr_batches),
        )
        client = stores.client()
        client.create_bucket(Bucket=stores.bucket)
        for store in fastzarr_batches:
            for path in sorted(store.rglob("*")):
                if path.is_file():
                    key = f"{store.name}/{path.relative_to(store).as_posix()}"
                    client.put_object(Bucket=stores.bucket, Key=key, Body=path.read_bytes())
        yield stores
    finally:
        server.stop()
