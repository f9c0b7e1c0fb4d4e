"""Blosc block tables of remote sources, carried between processes by a `fastzarr.Cache`.

Reading part of a remote blosc chunk costs two dependent requests: its header and block table,
then the blocks. fastzarr remembers each table it read, with the object's ETag, for the rest of
the process; with ``cache=``, ``extract_points`` also keeps them in the cache directory, one file
per source, so that the next process reading the same chunks (another point, the next run) asks
for the blocks at once.

A file is a format line, the SHA-256 of the payload, and the payload (the core's export). A
file whose checksum or structure is wrong is deleted and ignored; every table is still checked
against its object's ETag when it is used, so a rewritten object is read afresh, never through
a stale table.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from fastzarr import _core
from fastzarr._redact import url_digest

_FORMAT = b"fastzarr block tables 1\n"
_FOLDER = "block_tables"


def _path(root: Path, url: str) -> Path:
    return root / _FOLDER / f"{url_digest(url)}.bin"


def load(root: Path, url: str) -> int:
    """Remembers the tables stored under ``root`` for the source at ``url``; how many."""
    path = _path(root, url)
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    header, digest, payload = data[: len(_FORMAT)], data[len(_FORMAT) : len(_FORMAT) + 65], b""
    if header == _FORMAT and len(digest) == 65 and digest.endswith(b"\n"):
        payload = data[len(_FORMAT) + 65 :]
        if hashlib.sha256(payload).hexdigest().encode() == digest[:64]:
            try:
                return _core._remember_block_tables(url, payload)
            except ValueError:
                pass
    with contextlib.suppress(OSError):
        path.unlink()  # damaged: the next read makes a new one
    return 0


def save(root: Path, url: str) -> bool:
    """Stores the tables remembered for the source at ``url`` under ``root``, unless the stored
    ones are the same; whether it wrote."""
    payload = _core._block_tables(url)
    if len(payload) <= 8:  # the export's magic alone: no table
        return False
    digest = hashlib.sha256(payload).hexdigest().encode() + b"\n"
    data = _FORMAT + digest + payload
    path = _path(root, url)
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return False
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never a mix
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return True


def clear(root: Path) -> None:
    """Deletes every stored table."""
    folder = root / _FOLDER
    for path in folder.glob("*"):
        with contextlib.suppress(OSError):
            path.unlink()
