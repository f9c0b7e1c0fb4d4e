"""Extraction results kept in a `fastzarr.Cache`: one entry per source, and one for the whole call.

The entries are looked up before any source is opened (the key is the arguments and each
source's fingerprint, not its contents), so a rerun reads entries only, and an interrupted run
resumes with the sources it had finished: each source's entry is stored as soon as it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from fastzarr import _block_tables as block_tables
from fastzarr._redact import redact_url, url_digest
from fastzarr.cache import Cache, make_key
from fastzarr.errors import DuplicateWarning
from fastzarr.extract._assembly import Done, read_decoded
from fastzarr.extract._opening import Opened, Source, source_name
from fastzarr.extract._planning import Job


def _source_key(name: str) -> dict[str, str]:
    """A source as cache key material: its absolute path, or its URL with credentials redacted (the
    manifest stores the key material) plus a hash of the whole URL where anything was redacted."""
    if "://" not in name:
        return {"source": os.path.abspath(name)}
    shown = redact_url(name)
    return {"source": shown} if shown == name else {"source": shown, "source_sha256": url_digest(name)}


class CacheLookup:
    """The cache entries of one ``extract_points`` call: one per source, looked up before any
    source is opened (the key is the arguments and the source's fingerprint, not its contents)."""

    def __init__(
        self,
        cache: Cache,
        sources: Sequence[Source],
        arguments: Mapping[str, Any],
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        from fastzarr.cache import source_fingerprint  # noqa: PLC0415

        self.cache = cache
        self.params = [
            {
                "operation": "extract_points",
                **_source_key(source_name(s)),
                "fingerprint": source_fingerprint(source_name(s), storage_options),
                **arguments,
            }
            for s in sources
        ]
        self.found: list[tuple[xr.Dataset, dict[str, Any]] | None] = []

    def lookup(self, duplicates: str, *, combined: bool) -> xr.Dataset | None:
        """The whole call's stored result (with ``combined``), if there is one; otherwise reads (and
        validates) every source's entry that exists and returns None."""
        found = self.combined_hit(duplicates) if combined else None
        if found is None:
            self.found = [self.cache._try_read(make_key(p), p) for p in self.params]
        return found

    def combined_hit(self, duplicates: str) -> xr.Dataset | None:
        """The whole call's stored result (warning again about dropped duplicates), or None."""
        combined = self.combined_params(duplicates)
        found = self.cache._try_read(make_key(combined), combined)
        if found is None:
            return None
        message = found[1].get("extra", {}).get("duplicates")
        if message:
            warnings.warn(message, DuplicateWarning, stacklevel=4)
        return found[0]

    def store_combined(
        self, result: xr.Dataset, duplicates: str, labels: list[str], message: str | None, allow_nan: bool
    ) -> xr.Dataset:
        """Stores the whole call's result; returns it as read back from its entry."""
        stored, _ = self.cache.get_or_build(
            self.combined_params(duplicates),
            lambda: result,
            source=", ".join(labels),
            extra={"duplicates": message},
            allow_nan=allow_nan,
        )
        return stored

    def combined_params(self, duplicates: str) -> dict[str, Any]:
        """The key parameters of the whole call's result: every source's key, in order."""
        return {
            "operation": "extract_points/combined",
            "sources": [make_key(p) for p in self.params],
            "duplicates": duplicates,
        }

    def hits(self) -> list[xr.Dataset]:
        return [f[0] for f in self.found if f is not None]

    def all_hit(self, missing: str) -> bool:
        """Whether every source was found, and the entries agree (point coordinates, variables,
        dtypes) as the sources' own checks would demand; otherwise the sources are opened."""
        if any(f is None for f in self.found):
            return False
        extras = [f[1].get("extra", {}) for f in self.found if f is not None]
        if len({json.dumps(e.get("coords"), sort_keys=True) for e in extras}) > 1:
            return False
        if missing == "raise" and len({tuple(e.get("variables", ())) for e in extras}) > 1:
            return False
        kinds: dict[str, set[bool]] = {}
        for d in self.hits():
            for n, v in d.data_vars.items():
                kinds.setdefault(str(n), set()).add(v.dtype.kind in "biufc")
        return all(len(k) == 1 for k in kinds.values())

    def fill(
        self,
        opened: list[Opened],
        job: Job,
        *,
        progress: bool | None,
        deadline: float | None,
        allow_nan: bool,
    ) -> Done:
        """Each source's result: its valid entry, or read now and stored before the next source."""
        decoded: list[xr.Dataset] = []
        totals: dict[str, float] = {}
        batches = 0
        plan = 0.0
        for o, params, found in zip(opened, self.params, self.found, strict=True):
            if found is not None:
                decoded.append(found[0])
                continue

            def build(o: Opened = o) -> xr.Dataset:
                nonlocal batches, plan
                done = read_decoded([o], job, progress=progress, deadline=deadline)
                for key, value in done.totals.items():
                    totals[key] = totals.get(key, 0) + value
                batches += done.batches
                plan += done.plan_seconds
                return done.parts[0]

            extra = {
                "coords": _coords_digest(o, job),
                "variables": sorted(n for n in job.names if n in o.stored),
            }
            remote = "://" in o.name
            if remote:
                # Chunks read in part by an earlier process: their blocks are asked for at once.
                block_tables.load(self.cache.root, o.name)
            ds, _ = self.cache.get_or_build(
                params, build, source=redact_url(o.name), extra=extra, allow_nan=allow_nan
            )
            if remote:
                block_tables.save(self.cache.root, o.name)
            decoded.append(ds)
        return Done(decoded, totals, batches, plan, decoded=True)


def _coords_digest(opened: Opened, job: Job) -> str:
    """A digest of a source's point-dimension coordinates (which the sources must share)."""
    h = hashlib.sha256()
    for d in sorted(job.positions, key=str):
        h.update(f"{d}:{opened.sizes.get(d)}:".encode())
        if d in opened.coords.variables:
            values = np.ascontiguousarray(opened.coords.variables[d].values)
            h.update(values.dtype.str.encode())
            h.update(
                values.view(np.uint8).tobytes()
                if values.dtype.kind != "O"
                else repr(values.tolist()).encode()
            )
    return h.hexdigest()
