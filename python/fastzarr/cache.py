"""A validated on-disk cache of extraction results: never a cache of references, NaN or stale data.

An entry is a Zarr v3 store written by fastzarr's verified writer (``blosc:zstd:3:shuffle``) plus
``manifest.json``: the parameters that shaped the result and their hash (the key), the source's
fingerprint (its metadata and the sizes, mtimes, inodes and ctimes of its files, so a source changed
after caching is a different key: a miss, not stale data, even when its old sizes and mtimes were
restored), every chunk's size and CRC-32C, every variable's NaN
fraction, when and by which fastzarr it was made, and how long building it took.

Every read validates the entry before trusting it: the manifest parses and names the key looked
up, every chunk and metadata file is there with its size and checksum (checked in Rust, at disk
speed), every array has all its chunks. An invalid entry is moved aside, rebuilt, and a
`CacheWarning` says why. A result whose variables are all NaN is refused
(`SuspiciousDataError`) instead of cached. Two processes filling one entry take turns on a file
lock: one builds, the other waits and reads its result. After each write, least recently used
entries are evicted to keep the cache under ``max_size``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fastzarr import _block_tables, _core
from fastzarr._atomic import exclusive_lock
from fastzarr._cache_root import resolve_root
from fastzarr._core import FastzarrError
from fastzarr._fill_values import decode_fill_value
from fastzarr._redact import redact_url, redact_within
from fastzarr._sizes import parse_size
from fastzarr._urls import is_remote
from fastzarr.errors import CacheError, CacheWarning, SuspiciousDataError
from fastzarr.writer import ChunkRecord, Codec, write_store

__all__ = ["Cache", "CacheEntry", "CacheError", "CacheStats", "CacheWarning", "SuspiciousDataError"]

FORMAT = 1
"""Version of the entry layout and of the results stored; part of every key."""

MANIFEST = "manifest.json"
_CODEC = Codec.parse("blosc:zstd:3:shuffle")


@dataclass
class CacheStats:
    """What this `Cache` object did since it was created."""

    hits: int = 0
    misses: int = 0
    rebuilt: int = 0
    bytes_served: int = 0
    seconds_saved: float = 0.0
    validation_seconds: float = 0.0
    read_seconds: float = 0.0


@dataclass(frozen=True)
class CacheEntry:
    """One entry, as `Cache.entries` lists it."""

    key: str
    path: Path
    source: str
    params: Mapping[str, Any]
    size: int
    created: str
    last_used: float
    nan_fraction: Mapping[str, float] = field(default_factory=dict)


def canonical_array(value: np.ndarray[Any, Any]) -> Any:
    if value.dtype.kind == "O":
        return {"list": [canonical(v) for v in value.tolist()]}
    contiguous = np.ascontiguousarray(value)
    digest = hashlib.sha256(contiguous.view(np.uint8).tobytes() if contiguous.size else b"").hexdigest()
    return {"dtype": value.dtype.str, "shape": list(value.shape), "sha256": digest}


def canonical(value: Any) -> Any:
    """A JSON-able, deterministic form of a key parameter (arrays by dtype, shape and digest)."""
    if isinstance(value, xr.DataArray):
        return {"dataarray": canonical(value.values), "dims": [str(d) for d in value.dims]}
    if isinstance(value, np.ndarray | np.generic):
        return canonical_array(np.asarray(value))
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if (
        value is None
        or isinstance(value, bool | int | str)
        or (isinstance(value, float) and math.isfinite(value))
    ):
        return value
    return {"repr": repr(value), "type": type(value).__name__}


def make_key(params: Mapping[str, Any]) -> str:
    """The hash of every parameter that shaped a result (and the cache format)."""
    text = json.dumps({"format": FORMAT, **canonical(params)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def source_fingerprint(
    source: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> str:
    """What identifies a source's current contents, hashed: the size, mtime, inode and ctime of
    every file of a local store (``cp -p`` restores the first two, nothing restores a ctime); the
    key, size, last-modified time and ETag of every object of a remote one (one
    listing). Metadata is included, so any rewritten chunk or document changes it."""
    text = os.fspath(source)
    if is_remote(text):
        try:
            listing = _core._store_listing(text, dict(storage_options or {}))
        except _core.FastzarrError as exc:
            raise CacheError(
                f"cannot cache {redact_url(text)}: fastzarr could not list the store to fingerprint it "
                f"({exc}); "
                "a cache needs a store it can list (local, s3://, gs://, az://) so that a changed "
                "source is a miss, not stale data"
            ) from exc
        if not listing:
            raise _core.StoreNotFoundError(f"store not found: {redact_url(text)}")
        return hashlib.sha256(listing).hexdigest()
    path = Path(text.removeprefix("file://"))
    if path.is_file():
        raise _core.StoreNotFoundError(
            f"{source} is a file, not a Zarr store "
            "(a store is a directory holding zarr.json, .zgroup or .zarray)"
        )
    if not path.is_dir():
        raise _core.StoreNotFoundError(f"store not found: {source}")
    return hashlib.sha256(_core._tree_listing(path)).hexdigest()


def nan_fractions(ds: xr.Dataset) -> dict[str, float]:
    """Per data variable: the fraction of NaN (or NaT) values; 0 for other dtypes."""
    out = {}
    for name, var in ds.data_vars.items():
        values = np.asarray(var.values)
        if values.size == 0 or values.dtype.kind not in "fcmM":
            out[str(name)] = 0.0
        elif values.dtype.kind in "mM":
            out[str(name)] = float(np.isnat(values).mean())
        else:
            out[str(name)] = float(np.isnan(values).mean())
    return out


def check_suspicious(fractions: Mapping[str, float], max_nan_fraction: float, what: str) -> None:
    """Raises SuspiciousDataError for all-NaN variables or variables above ``max_nan_fraction``."""
    bad = {n: f for n, f in fractions.items() if f >= 1.0 or f > max_nan_fraction}
    if bad:
        described = ", ".join(f"{n} ({f:.0%} NaN)" for n, f in sorted(bad.items()))
        how = "entirely NaN" if all(f >= 1 for f in bad.values()) else "mostly NaN"
        raise SuspiciousDataError(
            f"{what}: refusing to cache variables that are {how}: {described} "
            f"(max_nan_fraction={max_nan_fraction}); pass allow_nan=True if that is expected"
        )


class _InvalidEntryError(Exception):
    """An entry failed validation (the message says why)."""


class Cache:
    """A validated on-disk cache of extraction results (see the module docstring).

    Args:
        root: the cache directory; ``$FASTZARR_CACHE_DIR`` or the platform cache dir by default
            (created with mode 0700).
        max_size: bytes, or a size like ``"50GB"`` or ``"50 GiB"`` (decimal units are powers of
            1000, binary ones of 1024; ``"20%"`` is a share of the memory available now, as for
            ``max_memory``); least recently used entries are evicted after each write to stay
            under it. Unlimited by default.
        max_nan_fraction: a result with a variable above this NaN fraction is refused
            (`SuspiciousDataError`); the default 1.0 refuses only all-NaN variables.
        lock_timeout: seconds to wait for another process filling the same entry (`CacheError`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_size: int | str | None = None,
        max_nan_fraction: float = 1.0,
        lock_timeout: float = 600.0,
    ) -> None:
        self.root = resolve_root(root)
        self.max_size = parse_size(max_size, name="max_size")
        if not 0.0 <= max_nan_fraction <= 1.0:
            raise ValueError(f"max_nan_fraction must be within [0, 1], not {max_nan_fraction}")
        self.max_nan_fraction = max_nan_fraction
        self.lock_timeout = lock_timeout
        self.stats = CacheStats()
        try:
            for sub in (self.root, self._entries, self._locks, self._quarantine):
                if not sub.exists():
                    sub.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the cache directory {self.root}: {exc}") from exc

    def __repr__(self) -> str:
        limit = "unlimited" if self.max_size is None else f"{self.max_size:,} bytes"
        return f"Cache({str(self.root)!r}, max_size={limit})"

    # ----------------------------------------------------------------------------------------
    # layout

    @property
    def _entries(self) -> Path:
        return self.root / "entries"

    @property
    def _locks(self) -> Path:
        return self.root / "locks"

    @property
    def _quarantine(self) -> Path:
        return self.root / "invalid"

    def path_of(self, key: str) -> Path:
        """Where the entry with ``key`` lives."""
        return self._entries / key

    # ----------------------------------------------------------------------------------------
    # the main operation

    def get_or_build(
        self,
        params: Mapping[str, Any],
        build: Callable[[], xr.Dataset],
        *,
        source: str,
        extra: Mapping[str, Any] | None = None,
        allow_nan: bool = False,
    ) -> tuple[xr.Dataset, dict[str, Any]]:
        """The dataset for ``params``: read from a valid entry, else built by ``build()``, stored
        and read back. Returns it and the entry's manifest."""
        key = make_key(params)
        found = self._try_read(key, params)
        if found is not None:
            return found
        with self._lock(key):
            found = self._try_read(key, params)  # another process may have filled it meanwhile
            if found is not None:
                return found
            self.stats.misses += 1
            started = time.perf_counter()
            ds = build()
            build_seconds = time.perf_counter() - started
            fractions = nan_fractions(ds)
            if not allow_nan:
                check_suspicious(fractions, self.max_nan_fraction, f"source {source}")
            manifest = {
                "format": FORMAT,
                "key": key,
                "source": redact_within(source),
                "params": redact_within(canonical(params)),
                "extra": canonical(dict(extra or {})),
                "nan_fraction": fractions,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                "fastzarr_version": _core.__version__,
                "build_seconds": build_seconds,
            }
            self._write(key, ds, manifest)
        self._evict(keep=key)
        return self._read(key, params)

    # ----------------------------------------------------------------------------------------
    # reading and validating

    def _try_read(self, key: str, params: Mapping[str, Any]) -> tuple[xr.Dataset, dict[str, Any]] | None:
        path = self.path_of(key)
        if not (path / MANIFEST).exists() and not path.exists():
            return None
        try:
            ds, manifest = self._read(key, params)
        except _InvalidEntryError as exc:
            self._set_aside(key, str(exc))
            return None
        self.stats.hits += 1
        self.stats.seconds_saved += max(float(manifest.get("build_seconds", 0.0)) - self._last_read, 0.0)
        with contextlib.suppress(OSError):
            os.utime(path)  # last used, for LRU eviction
        return ds, manifest

    def _validate(
        self, key: str, params: Mapping[str, Any] | None, *, full: bool = False
    ) -> tuple[dict[str, Any], list[ChunkRecord]]:
        """Checks an entry; raises _InvalidEntryError saying why. Returns its manifest and records.
        ``full`` also checks every array's own metadata file (reads need only the root's)."""
        path = self.path_of(key)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise _InvalidEntryError("its manifest is missing") from None
        except (OSError, ValueError) as exc:
            raise _InvalidEntryError(f"its manifest cannot be read: {exc}") from None
        if not isinstance(manifest, dict):
            raise _InvalidEntryError("its manifest is not a JSON object")
        if manifest.get("format") != FORMAT:
            raise _InvalidEntryError(f"its manifest has format {manifest.get('format')!r}, not {FORMAT}")
        if manifest.get("key") != key:
            raise _InvalidEntryError(f"its manifest belongs to key {manifest.get('key')!r}, not {key!r}")
        stored_params = (
            json.loads(json.dumps(redact_within(canonical(params)))) if params is not None else None
        )
        if params is not None and manifest.get("params") != stored_params:
            raise _InvalidEntryError("its manifest's parameters differ from the key's")
        try:
            records = [(str(a), str(k), int(s), int(c)) for a, k, s, c in manifest["chunks"]]
            files = [(str(a), str(k), int(s), int(c)) for a, k, s, c in manifest["files"]]
            arrays = {str(n): int(c) for n, c in manifest["arrays"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise _InvalidEntryError(f"its manifest lacks chunk records: {exc}") from None
        counts: dict[str, int] = {}
        for a, *_ in records:
            counts[a] = counts.get(a, 0) + 1
        for name, expected in arrays.items():
            if counts.get(name, 0) != expected:
                raise _InvalidEntryError(
                    f"array {name!r} has {counts.get(name, 0)} chunk records, expected {expected}"
                )
        if not full:
            # Reads use the consolidated metadata in the root zarr.json only; the arrays' own
            # zarr.json files are checked by verify().
            files = [f for f in files if f[1] == "zarr.json"]
        try:
            _core._verify_chunks(path, records + files)
        except _core.CorruptChunkError as exc:
            raise _InvalidEntryError(str(exc)) from None
        return manifest, records

    _last_read = 0.0

    def _read(self, key: str, params: Mapping[str, Any] | None) -> tuple[xr.Dataset, dict[str, Any]]:
        started = time.perf_counter()
        manifest, records = self._validate(key, params)
        validated = time.perf_counter()
        counts: dict[str, int] = {}
        for a, *_ in records:
            counts[a] = counts.get(a, 0) + 1
        try:
            ds = _read_store(self.path_of(key), counts)
        except (FastzarrError, OSError, KeyError, ValueError, TypeError) as exc:
            raise _InvalidEntryError(f"it cannot be read: {exc}") from None
        ended = time.perf_counter()
        self._last_read = ended - started
        self.stats.validation_seconds += validated - started
        self.stats.read_seconds += ended - started
        self.stats.bytes_served += sum(r[2] for r in records)
        return ds, manifest

    def _set_aside(self, key: str, reason: str) -> None:
        """Moves an invalid entry to the quarantine directory and warns why."""
        path = self.path_of(key)
        warnings.warn(
            f"fastzarr cache entry {key} ({path}) is invalid and will be rebuilt: {reason}",
            CacheWarning,
            stacklevel=4,
        )
        self.stats.rebuilt += 1
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, self._quarantine / f"{key}-{time.time_ns()}")

    # ----------------------------------------------------------------------------------------
    # writing

    def _write(self, key: str, ds: xr.Dataset, manifest: dict[str, Any]) -> None:
        target = self.path_of(key)

        def add_manifest(tmp: Path, records: list[ChunkRecord]) -> None:
            metadata = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("zarr.json"))
            arrays: dict[str, int] = {}
            for a, *_ in records:
                arrays[a] = arrays.get(a, 0) + 1
            for name in ds.variables:
                arrays.setdefault(str(name), 0)
            full = {
                **manifest,
                "chunks": [list(r) for r in records],
                "files": [list(r) for r in _core._checksum_files(tmp, metadata)],
                "arrays": arrays,
                "nbytes": sum(r[2] for r in records),
            }
            with open(tmp / MANIFEST, "w") as f:
                json.dump(full, f)
                f.flush()
                os.fsync(f.fileno())

        if target.exists():
            self._set_aside(key, "it was replaced while being rebuilt")
        write_store(ds, target, mode="w-", codec=_CODEC, before_publish=add_manifest)

    def _lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """An exclusive file lock for ``key`` (waits up to ``lock_timeout``, then CacheError)."""
        path = self._locks / f"{key}.lock"
        deadline = time.monotonic() + self.lock_timeout
        return exclusive_lock(
            path,
            expired=lambda: time.monotonic() >= deadline,
            timed_out=lambda: CacheError(
                f"timed out after {self.lock_timeout} s waiting for another process to "
                f"finish cache entry {key} (lock {path})"
            ),
            mode=0o600,  # the cache's files are the user's own
        )

    # ----------------------------------------------------------------------------------------
    # management

    def _keys(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(
                e.name for e in os.scandir(self._entries) if e.is_dir() and not e.name.startswith(".")
            )
        return []

    def entries(self) -> list[CacheEntry]:
        """Every entry (valid or not yet checked), least recently used first."""
        out = []
        for key in self._keys():
            path = self.path_of(key)
            try:
                manifest = json.loads((path / MANIFEST).read_text())
                last_used = path.stat().st_mtime
            except (OSError, ValueError):
                continue
            size = int(manifest.get("nbytes", 0)) + sum(int(f[2]) for f in manifest.get("files", []))
            out.append(
                CacheEntry(
                    key=key,
                    path=path,
                    # Redacted again: an entry may come from a version that stored raw URLs.
                    source=redact_within(str(manifest.get("source", ""))),
                    params=redact_within(manifest.get("params", {})),
                    size=size,
                    created=str(manifest.get("created", "")),
                    last_used=last_used,
                    nan_fraction=manifest.get("nan_fraction", {}),
                )
            )
        return sorted(out, key=lambda e: e.last_used)

    @property
    def size(self) -> int:
        """Stored bytes of all entries."""
        return sum(e.size for e in self.entries())

    def verify(self, *, timeout: float | None = None) -> dict[str, str]:
        """Validates every entry; invalid ones are moved aside. Returns ``{key: problem}``.

        ``timeout``: seconds for the whole verification; when they run out between two entries,
        ``fastzarr.TimeoutError`` (the entries checked so far stay checked)."""
        problems = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        for key in self._keys():
            if deadline is not None and time.monotonic() > deadline:
                raise _core.TimeoutError(f"cache verification did not finish within {timeout} s")
            try:
                self._validate(key, None, full=True)
            except _InvalidEntryError as exc:
                problems[key] = str(exc)
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path_of(key), self._quarantine / f"{key}-{time.time_ns()}")
        return problems

    def remove(self, entry: CacheEntry | str) -> None:
        """Deletes one entry (a `CacheEntry` or its key)."""
        key = entry.key if isinstance(entry, CacheEntry) else str(entry)
        with self._lock(key):
            self._delete(self.path_of(key))

    def _delete(self, path: Path) -> None:
        """Renames, then deletes: a half-deleted entry never sits under its key."""
        doomed = self._quarantine / f"{path.name}-{time.time_ns()}-deleted"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def _evict(self, keep: str | None = None) -> list[str]:
        """Deletes least recently used entries until the cache fits ``max_size``."""
        if self.max_size is None:
            return []
        entries = self.entries()
        total = sum(e.size for e in entries)
        evicted = []
        for e in entries:
            if total <= self.max_size:
                break
            if e.key == keep:
                continue
            self._delete(e.path)
            total -= e.size
            evicted.append(e.key)
        return evicted

    def prune(self) -> list[str]:
        """Removes invalid entries, leftovers of interrupted writes, and least recently used
        entries beyond ``max_size``. Returns the keys removed, those of entries set aside as
        invalid before (by `verify` or a read) included."""
        removed = self._quarantined_keys()
        removed += self.verify()
        shutil.rmtree(self._quarantine, ignore_errors=True)
        self._quarantine.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            for e in os.scandir(self._entries):
                if e.name.startswith("."):
                    shutil.rmtree(e.path, ignore_errors=True)
        return removed + self._evict()

    def _quarantined_keys(self) -> list[str]:
        """Keys of the entries set aside as invalid and not deleted yet."""
        try:
            names = sorted(os.listdir(self._quarantine))
        except FileNotFoundError:
            return []
        # "KEY-NS" is an entry set aside; "NAME-NS-deleted" is a delete that did not finish.
        return [n.rsplit("-", 1)[0] for n in names if not n.endswith("-deleted")]

    def clear(self) -> None:
        """Deletes every entry (and the blosc block tables kept for remote sources)."""
        for key in self._keys():
            self._delete(self.path_of(key))
        _block_tables.clear(self.root)
        shutil.rmtree(self._quarantine, ignore_errors=True)
        self._quarantine.mkdir(mode=0o700, exist_ok=True)


# --------------------------------------------------------------------------------------------
# reading an entry back


def _read_store(path: Path, chunk_counts: Mapping[str, int]) -> xr.Dataset:
    """Reads a store written by fastzarr's writer into an xarray Dataset in one parallel pass,
    decoded as ``xr.open_zarr`` would decode it. Every array must have all its chunks on record
    (``chunk_counts``): an array whose chunks are not all real data is refused."""
    group = _core.open_group(os.fspath(path))
    names = group.array_keys()
    arrays = [a for a in (group[n] for n in names) if isinstance(a, _core.Array)]
    for name, array in zip(names, arrays, strict=True):
        grid = math.prod(-(-n // c) for n, c in zip(array.shape, array.chunks, strict=True))
        if 0 in array.shape:
            grid = 0
        if chunk_counts.get(name, 0) != grid:
            raise ValueError(f"array {name!r} has {chunk_counts.get(name, 0)} chunks on record, not {grid}")
    values = _core.read_many([(a, ...) for a in arrays]) if arrays else []
    variables = {}
    for name, array, data in zip(names, arrays, values, strict=True):
        attrs = dict(array.attrs)
        if "_FillValue" in attrs:
            attrs["_FillValue"] = decode_fill_value(attrs["_FillValue"], data.dtype)
        dims = array.dimension_names or [f"dim_{i}" for i in range(data.ndim)]
        variables[name] = xr.Variable(dims, data, attrs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=xr.SerializationWarning)
        return xr.decode_cf(xr.Dataset(variables, attrs=dict(group.attrs)))
