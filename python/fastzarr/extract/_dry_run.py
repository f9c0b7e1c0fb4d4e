"""What an extraction would cost, worked out from metadata alone (``extract_points(dry_run=True)``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from fastzarr import _block_tables as block_tables
from fastzarr import _core
from fastzarr._redact import redact_url
from fastzarr.cache import Cache
from fastzarr.extract._opening import source_name
from fastzarr.extract._planning import Query, locate, plan_variable

#: Defaults of `ExtractionPlan.seconds`: a cloud object store seen from a machine near it.
DEFAULT_LATENCY = 0.02
DEFAULT_BANDWIDTH = 100e6


@dataclass(frozen=True)
class ExtractionPlan:
    """What ``extract_points`` would read: its sources and variables, the chunks the points fall in,
    the requests and bytes reading them takes, and the metadata opened to know it.

    Chunks are exact. Requests and bytes follow the plan a read makes before it sees any chunk:
    a chunk read whole is one request; a blosc chunk read block by block is one request for its
    header and block table, then one per run of neighbouring blocks (at the smallest block size
    its codec settings allow, so at most that many); a shard read in part is one request for its
    index, then one per inner chunk. Bytes count each chunk or block at its decoded size (what the
    codecs save is not known before it is read).

    A blosc chunk read before in this process (or whose table came from ``cache=``) has its header
    and block table remembered: its blocks are asked for at once, at their compressed size
    (``tables_remembered``; ``seconds(tables=False)`` estimates the read without them).
    """

    sources: tuple[str, ...]
    variables: int
    chunks: int
    #: chunks fetched in part: a blosc chunk block by block, a shard's index and inner chunks
    partial_fetches: int
    #: requests that need nothing read first (whole chunks, blosc headers, shard indexes)
    first_requests: int
    #: requests made once a header or index has been read (blosc blocks, inner chunks)
    then_requests: int
    #: partial fetches whose blosc header and block table are remembered
    tables_remembered: int
    #: of ``first_requests``, the block requests of those chunks
    remembered_requests: int
    bytes_fetched: int
    bytes_decoded: int
    #: bytes of the result (before CF decoding)
    bytes_out: int
    #: seconds spent opening the sources' metadata for this plan
    metadata_seconds: float
    #: the seconds a request took to be answered, on average over the HTTP requests that opening
    #: the metadata made (None when it made none: local sources, or metadata known already)
    latency: float | None = None
    #: the HTTP requests ``latency`` was measured over
    latency_requests: int = 0

    @property
    def requests(self) -> int:
        """Every request of the read (at most)."""
        return self.first_requests + self.then_requests

    def seconds(
        self,
        latency: float | None = None,
        bandwidth: float = DEFAULT_BANDWIDTH,
        concurrency: int | None = None,
        *,
        tables: bool = True,
    ) -> float:
        """Estimated seconds of the read at ``latency`` seconds a request (by default the
        measured one, else 20 ms) and ``bandwidth`` bytes a second, with ``concurrency`` requests
        in flight (fastzarr's I/O concurrency by default): each wave of requests waits
        ``latency`` once, the blocks wait for their headers, and the bytes stream at
        ``bandwidth``. Decoding, and the metadata already opened, are not counted. (Where the
        headers of chunks that hold whole point fields are read beside the coordinates, as
        `extract_points` does for remote sources, the read waits a wave less than this says.)
        ``tables=False``: as if no block table were remembered (each such chunk's header first)."""
        if latency is None:
            latency = DEFAULT_LATENCY if self.latency is None else self.latency
        if latency < 0 or bandwidth <= 0:
            raise ValueError("latency must be >= 0 and bandwidth > 0")
        concurrency = concurrency or _core.get_io_concurrency()
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        first, then = self.first_requests, self.then_requests
        if not tables:
            first += self.tables_remembered - self.remembered_requests
            then += self.remembered_requests
        waves = math.ceil(first / concurrency) + math.ceil(then / concurrency)
        return waves * latency + self.bytes_fetched / bandwidth

    def __str__(self) -> str:
        mb = 1e6
        lines = [
            f"extraction plan: {len(self.sources)} source(s), {self.variables} variable(s), "
            f"metadata opened in {self.metadata_seconds:.3f} s",
            f"  chunks       {self.chunks:,} ({self.partial_fetches:,} fetched in part)",
            f"  requests     {self.requests:,} at most "
            f"({self.first_requests:,}, then {self.then_requests:,})",
            f"  block tables {self.tables_remembered:,} remembered",
            f"  to fetch     {self.bytes_fetched / mb:,.1f} MB at most",
            f"  to decode    {self.bytes_decoded / mb:,.1f} MB at most",
            f"  result       {self.bytes_out / mb:,.1f} MB",
        ]
        if self.latency is not None:
            lines.append(
                f"  latency      {self.latency * 1000:,.1f} ms a request, measured over the "
                f"{self.latency_requests:,} request(s) that opened the metadata"
            )
        latencies = [(0.02, ""), (0.1, "")]
        if self.latency is not None:
            latencies.insert(0, (self.latency, " (measured)"))
        bandwidth = DEFAULT_BANDWIDTH  # not measured: the metadata's bodies are too small to tell
        for latency, how in latencies:
            cold = (
                f" ({self.seconds(latency, bandwidth, tables=False):,.2f} s without the tables)"
                if self.tables_remembered
                else ""
            )
            lines.append(
                f"  estimated    {self.seconds(latency, bandwidth):,.2f} s at {latency * 1000:.0f} ms "
                f"a request{how}, {bandwidth / mb:.0f} MB/s (assumed), "
                f"{_core.get_io_concurrency()} in flight{cold}"
            )
        return "\n".join(lines)


def plan_extraction(query: Query, cache: Cache | None = None) -> ExtractionPlan:
    """Opens the sources' metadata (and their dimension coordinates, to find the points) as
    ``extract_points`` would, and plans its reads without making them; with the block tables
    that ``cache`` keeps for remote sources, as a read with ``cache=`` would."""
    start = time.perf_counter()
    answered = _core._host_answers()
    if cache is not None:
        for source in query.sources:
            if "://" in (name := source_name(source)):
                block_tables.load(cache.root, name)
    opened, names, positions = locate(query)
    plans: dict[Any, Any] = {}
    present = [set(o.data_names) for o in opened]
    requests = [
        plan_variable(i, o, n, positions, query.point_dim, cache=plans)
        for i, o in enumerate(opened)
        for n in names
        if n in present[i]
    ]
    metadata_seconds = time.perf_counter() - start
    latency, latency_requests = _latency_since(answered)
    counts = _core._plan_reads([r.request for r in requests]) if requests else {}
    return ExtractionPlan(
        sources=tuple(redact_url(source_name(s)) for s in query.sources),
        variables=len(names),
        chunks=counts.get("chunks", 0),
        partial_fetches=counts.get("partial_fetches", 0),
        first_requests=counts.get("first_requests", 0),
        then_requests=counts.get("then_requests", 0),
        tables_remembered=counts.get("tables_remembered", 0),
        remembered_requests=counts.get("remembered_requests", 0),
        bytes_fetched=counts.get("bytes_fetched", 0),
        bytes_decoded=counts.get("bytes_decoded", 0),
        bytes_out=sum(r.nbytes for r in requests),
        metadata_seconds=metadata_seconds,
        latency=latency,
        latency_requests=latency_requests,
    )


def _latency_since(before: dict[str, tuple[int, float]]) -> tuple[float | None, int]:
    """The mean seconds to an answer of the HTTP requests answered since ``before`` (a count of
    ``_core._host_answers``), and how many there were."""
    count, seconds = 0, 0.0
    for host, (answers, took) in _core._host_answers().items():
        was_answers, was_took = before.get(host, (0, 0.0))
        count += answers - was_answers
        seconds += took - was_took
    return (seconds / count if count else None), count
