"""What one `fastzarr.extract.extract_points` call did: sources, chunks, bytes, seconds, duplicates."""

from __future__ import annotations

import html
import resource
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["DuplicateRecord", "Report", "peak_memory_bytes"]


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


def _size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class Report:
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
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: metadata, plan, fetch, decode, read (wall), assemble, total."""
    duplicates: tuple[DuplicateRecord, ...] = ()
    """Repeated ``concat_dim`` labels, in the order found."""
    peak_memory: int = 0
    """Peak resident memory of the process in bytes when the call finished."""

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
            ("bytes read", _size(self.bytes_read)),
            ("bytes decoded", _size(self.bytes_decoded)),
            ("bytes returned", _size(self.bytes_returned)),
            ("read passes", str(self.batches)),
            ("seconds", ", ".join(f"{k} {v:.3f}" for k, v in self.seconds.items())),
            ("duplicates", f"{len(self.duplicates)} ({conflicting} conflicting)"),
            ("peak memory", _size(self.peak_memory)),
        ]

    def __repr__(self) -> str:
        """A readable multi-line summary."""
        rows = self._rows()
        width = max(len(k) for k, _ in rows)
        lines = ["<fastzarr.Report>"] + [f"  {k:<{width}}  {v}" for k, v in rows]
        for d in self.duplicates[:10]:
            state = "identical" if d.identical else "CONFLICTING"
            lines.append(f"    duplicate {d.label!r} from {d.source}: {state}")
        if len(self.duplicates) > 10:
            lines.append(f"    ... and {len(self.duplicates) - 10} more duplicates")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """An HTML table for Jupyter."""
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        for d in self.duplicates:
            state = "identical" if d.identical else "<b>CONFLICTING</b>"
            cells += (
                f"<tr><td>duplicate {html.escape(repr(d.label))}</td>"
                f"<td>{html.escape(d.source)}: {state}</td></tr>"
            )
        return f"<table><caption>fastzarr.Report</caption>{cells}</table>"

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
            "duplicates": [tuple(d) for d in self.duplicates],
            "peak_memory": self.peak_memory,
        }
