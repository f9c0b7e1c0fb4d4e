"""Remote sources' metadata remembered between extractions in one process, used at once and
checked beside the read.

A point's read from object storage waits for the metadata, then for the coordinates that find
the point, then for its chunks. A later extraction from the same remote sources starts its chunk
reads from the metadata and coordinates the last one opened, and opens them again meanwhile.
When what it opens is what was remembered (the same metadata documents, the same coordinates),
the read stands: it was planned from exactly what a fresh plan would see. When a source changed,
the read is made again from what was just opened. So a repeat waits for the metadata's round
trips beside its chunks' instead of before them, and never returns what a changed store no
longer holds.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from fastzarr import _core
from fastzarr.extract._opening import Opened, source_name
from fastzarr.extract._planning import Query

#: Source lists remembered, the most recently used kept: few, since a list of wide stores holds
#: every array's description (tens of MB for thousands of arrays in each of tens of stores).
CAPACITY = 2
#: Schemes whose metadata costs a round trip to a server: only those are worth remembering.
_REMOTE = ("http://", "https://", "s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "azure://")


@dataclass(frozen=True)
class Remembered:
    """Sources as an extraction opened them."""

    opened: list[Opened]

    @functools.cached_property
    def signature(self) -> tuple[Any, ...]:
        """What a fresh opening is compared with: worked out when first needed (by a repeat), so
        an extraction that is not repeated pays nothing for it."""
        return signature(self.opened)


_lock = threading.Lock()
_remembered: OrderedDict[tuple[Hashable, ...], Remembered] = OrderedDict()


def key_of(query: Query) -> tuple[Hashable, ...] | None:
    """What identifies the query's opened sources (None when any source is local: opening its
    metadata costs no round trip)."""
    names = tuple(source_name(s) for s in query.sources)
    if not all(n.lower().startswith(_REMOTE) for n in names):
        return None
    options = json.dumps(query.storage_options or {}, sort_keys=True, default=repr)
    return (names, tuple(query.indexers), query.concat_dim, options)


def recall(key: tuple[Hashable, ...]) -> Remembered | None:
    with _lock:
        found = _remembered.get(key)
        if found is not None:
            _remembered.move_to_end(key)
        return found


def remember(key: tuple[Hashable, ...], entry: Remembered) -> Remembered:
    with _lock:
        _remembered[key] = entry
        _remembered.move_to_end(key)
        while len(_remembered) > CAPACITY:
            _remembered.popitem(last=False)
    return entry


def forget() -> None:
    """Forgets every remembered source (the next extraction of each waits for its metadata)."""
    with _lock:
        _remembered.clear()


def signature(opened: list[Opened]) -> tuple[Any, ...]:
    """Everything an extraction's plan and result depend on that the metadata stage reads: each
    source's group attributes, every member array's metadata document (its layout, attributes
    and dimension names) and the dimension coordinates' values and attributes."""
    return tuple((o.name, _documents(o.group), _coordinates(o)) for o in opened)


def same(entry: Remembered, fresh: Remembered) -> bool:
    """Whether the sources opened again are those remembered, document for document (``fresh``
    keeps its signature: remembered in turn, it is not worked out again)."""
    return entry.signature == fresh.signature


def _documents(group: _core.Group) -> str:
    members: dict[str, Any] = {}
    for name, described in group.describe().items():
        if isinstance(described, Exception):
            members[name] = repr(described)
        else:
            _, layout, attrs, dims = described
            members[name] = [layout, attrs, dims]
    # NaN attributes (a float fill value) compare equal once written out.
    return json.dumps([group.attrs, members], sort_keys=True, default=repr)


def _coordinates(opened: Opened) -> tuple[Any, ...]:
    out = []
    for name, variable in sorted(opened.raw.variables.items(), key=lambda item: str(item[0])):
        values = variable.values
        payload = json.dumps(values.tolist(), default=repr) if values.dtype.kind == "O" else values.tobytes()
        out.append((str(name), str(values.dtype), values.shape, payload, repr(variable.attrs)))
    return tuple(out)
