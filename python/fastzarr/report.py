"""Reports: what a fastzarr call read or found, readable in a terminal (``repr``) and in Jupyter.

`Report` is the base: a title and (label, value) rows give the text and HTML forms.
`ExtractReport` describes one `fastzarr.extract_points` call; `InspectReport` (in
`fastzarr.inspection`) describes a store.
"""

from __future__ import annotations

import dataclasses
import html
import os
import resource
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

__all__ = [
    "DuplicateRecord",
    "ExtractReport",
    "Report",
    "current_rss_bytes",
    "format_size",
    "peak_memory_bytes",
]


class DuplicateRecord(NamedTuple):
    """One ``concat_dim`` label seen again: where the repeat came from and whether its values matched."""

    label: Any
    """The repeated label (e.g. a file_id)."""
    source: str
    """The source whose row was dropped (or kept again with ``duplicates="keep"``)."""
    identical: bool
    """Whether the repeated row held the same values (NaN equal to NaN) as the first occurrence."""


def peak_memory_bytes() -> int:
    """The process's peak resident memory in bytes (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """The process's resident memory now (Linux ``/proc``), else its peak where ``/proc`` is absent."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_memory_bytes()


def format_size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


class Report:
    """The base of fastzarr's reports: ``repr`` and ``_repr_html_`` from (label, value) rows.

    Subclasses set ``_title`` and implement `_rows`; `_details` adds free lines below the table
    (text and HTML alike); `as_dict` gives plain values for logging or JSON.
    """

    _title: ClassVar[str] = "fastzarr.Report"

    def _rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs shared by the text and HTML forms."""
        raise NotImplementedError

    def _details(self) -> list[str]:
        """Lines shown below the rows (e.g. one per duplicate or per piece of advice)."""
        return []

    def _tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """(caption, header, rows) tables shown between the rows and the details."""
        return []

    def __repr__(self) -> str:
        """A readable multi-line summary."""
        rows = self._rows()
        width = max((len(k) for k, _ in rows), default=0)
        lines = [f"<{self._title}>"]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        for caption, header, body in self._tables():
            widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
            lines.append(f"  {caption}:")
            for r in [header, *body]:
                lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        lines += [f"  {d}" for d in self._details()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """HTML tables for Jupyter: the rows and details, then any further tables."""
        cells = "".join(
            f"<tr><th style='text-align:left;vertical-align:top'>{html.escape(k)}</th>"
            f"<td style='text-align:left;white-space:pre'>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        cells += "".join(
            f"<tr><td colspan='2' style='text-align:left'>{html.escape(d)}</td></tr>" for d in self._details()
        )
        parts = [f"<table><caption>{html.escape(self._title)}</caption>{cells}</table>"]
        left = "style='text-align:left'"
        for caption, header, body in self._tables():
            head = "".join(f"<th {left}>{html.escape(c)}</th>" for c in header)
            trs = "".join(
                "<tr>" + "".join(f"<td {left}>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body
            )
            parts.append(f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{trs}</table>")
        return parts[0] if len(parts) == 1 else "<div>" + "".join(parts) + "</div>"

    def as_dict(self) -> dict[str, Any]:
        """The report as plain Python values (for logging or JSON)."""
        if dataclasses.is_dataclass(self):
            return _plain(dataclasses.asdict(self))
        raise NotImplementedError


def _stage_sum(seconds: dict[str, float]) -> str:
    """Wall-clock stages as the sum they are: "metadata 0.047 + ... = total 0.109"."""
    stages = " + ".join(f"{k} {v:.3f}" for k, v in seconds.items() if k != "total")
    if "total" not in seconds:
        return stages
    return f"{stages} = total {seconds['total']:.3f}" if stages else f"total {seconds['total']:.3f}"


def _plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars to Python ones, recursively, so that json.dumps takes it."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


@dataclass(frozen=True, repr=False)  # the repr is Report's
class ExtractReport(Report):
    """What an extraction read and how long each stage took (``extract_points(..., return_report=True)``)."""

    sources: tuple[str, ...]
    """The sources, in the order given."""
    variables: tuple[str, ...]
    """The variables extracted."""
    chunks: int
    """Chunks touched (each fetched and decoded at most once), over all sources and variables."""
    chunks_missing: int
    """Chunks touched that were absent from the store (read as the fill value)."""
    chunks_partial: int
    """Blosc chunks decoded in part, block by block."""
    blocks_decoded: int
    """Blosc blocks decoded in partially decoded chunks."""
    blocks_total: int
    """Blosc blocks in partially decoded chunks."""
    bytes_read: int
    """Compressed bytes fetched from the stores."""
    bytes_decoded: int
    """Bytes produced by decoding."""
    bytes_returned: int
    """Bytes of the arrays returned by the read pass."""
    batches: int
    """Read passes (more than one when ``max_memory`` splits the work)."""
    requests: int = 0
    """Reads made: requests to remote stores (whole chunks, byte ranges), file reads of local
    ones; a store client's own retries are not counted."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds per stage: metadata, plan, read, assemble, and their sum, total."""
    thread_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds the read pass's threads spent fetching and decoding, summed over threads: they
    overlap each other and the ``read`` stage, so on N threads they reach up to N x ``read``."""
    duplicates: tuple[DuplicateRecord, ...] = ()
    """Repeated ``concat_dim`` labels, in the order found."""
    peak_memory: int = 0
    """Peak resident memory of the process in bytes when the call finished."""

    _title: ClassVar[str] = "fastzarr.ExtractReport"

    def _rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs shared by the text and HTML forms."""
        conflicting = sum(not d.identical for d in self.duplicates)
        return [
            ("sources", str(len(self.sources))),
            ("variables", str(len(self.variables))),
            ("chunks touched", f"{self.chunks} ({self.chunks_missing} missing)"),
            (
                "blosc partial",
                f"{self.chunks_partial} chunks, {self.blocks_decoded}/{self.blocks_total} blocks decoded",
            ),
            ("bytes read", f"{format_size(self.bytes_read)} in {self.requests:,} requests"),
            ("bytes decoded", format_size(self.bytes_decoded)),
            ("bytes returned", format_size(self.bytes_returned)),
            ("read passes", str(self.batches)),
            ("seconds (wall)", _stage_sum(self.seconds)),
            (
                "thread-seconds",
                ", ".join(f"{k} {v:.3f}" for k, v in self.thread_seconds.items())
                + " (summed over threads, within read)",
            ),
            ("duplicates", f"{len(self.duplicates)} ({conflicting} conflicting)"),
            ("peak memory", format_size(self.peak_memory)),
        ]

    def _details(self) -> list[str]:
        """One line per duplicate (the first ten)."""
        lines = [
            f"duplicate {d.label!r} from {d.source}: {'identical' if d.identical else 'CONFLICTING'}"
            for d in self.duplicates[:10]
        ]
        if len(self.duplicates) > 10:
            lines.append(f"... and {len(self.duplicates) - 10} more duplicates")
        return lines

    def as_dict(self) -> dict[str, Any]:
        """The report as plain Python values (for logging or JSON)."""
        return {
            "sources": list(self.sources),
            "variables": list(self.variables),
            "chunks": self.chunks,
            "chunks_missing": self.chunks_missing,
            "chunks_partial": self.chunks_partial,
            "blocks_decoded": self.blocks_decoded,
            "blocks_total": self.blocks_total,
            "bytes_read": self.bytes_read,
            "bytes_decoded": self.bytes_decoded,
            "bytes_returned": self.bytes_returned,
            "batches": self.batches,
            "seconds": dict(self.seconds),
            "thread_seconds": dict(self.thread_seconds),
            "duplicates": [tuple(d) for d in self.duplicates],
            "peak_memory": self.peak_memory,
        }
