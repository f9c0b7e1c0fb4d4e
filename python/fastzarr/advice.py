"""Plain-language advice from what `fastzarr.inspect` measured: layout, codecs, missing chunks.

Each rule looks at one array's numbers and says what a read costs and what would make it
cheaper; arrays that get the same sentence are listed together, so a store with 2,000 alike
variables gets one line, not 2,000.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fastzarr.report import format_size

if TYPE_CHECKING:
    from fastzarr.inspection import ArrayInfo, Throughput

__all__ = ["advise", "is_coordinate", "suggest_series_chunks"]

KIB = 1024
MIB = 1024 * KIB
_FIELD_CHUNK = 256 * KIB
"""Chunks at least this large that hold whole fields are worth a word on point reads."""
_SERIES_CHUNK = 4 * MIB
"""The decoded size aimed at when suggesting time-series chunks."""
_SMALL_CHUNK = 16 * KIB
_LARGE_CHUNK = 256 * MIB
_SLOW_DECODE = 300e6
"""Bytes per second on one thread below which a deflate-family codec is called slow."""
_PLAIN = {"bytes", "transpose", "crc32c", "none"}
"""Codecs that do not compress."""
_DEFLATE = ("gzip", "zlib", "bz2", "lzma")


def is_coordinate(info: ArrayInfo) -> bool:
    """A dimension coordinate (1-D, named like its dimension): too small to time or advise on."""
    return len(info.shape) == 1 and info.dims is not None and info.dims[0] == info.name.rsplit("/", 1)[-1]


def _codec_names(codecs: str) -> list[str]:
    """``"bytes(endian=little) -> zstd(level=3)"`` -> ``["bytes", "zstd"]``."""
    return [part.split("(", 1)[0].strip().removeprefix("numcodecs.") for part in codecs.split(" -> ")]


def _axes(info: ArrayInfo, names: Sequence[str]) -> list[int]:
    """Axis numbers of dimension names as `ArrayInfo` spells them (``dim_3`` for unnamed axes)."""
    spelled = [
        (info.dims[i] if info.dims is not None and info.dims[i] is not None else f"dim_{i}")
        for i in range(len(info.shape))
    ]
    return [spelled.index(n) for n in names]


def suggest_series_chunks(info: ArrayInfo, target: int = _SERIES_CHUNK) -> dict[str, int]:
    """Chunks for time-series reads: whole series axes (-1), square spatial tiles of ~``target`` bytes."""
    series = _axes(info, info.series_dims)
    spatial = _axes(info, info.spatial_dims)
    itemsize = np.dtype(info.dtype).itemsize
    series_bytes = math.prod(info.shape[i] for i in series) * itemsize
    side = 1
    if series_bytes < target:
        side = 2 ** int(math.log2(math.sqrt(target / series_bytes)))
    suggestion = {info.series_dims[k]: -1 for k in range(len(series))}
    for name, axis in zip(info.spatial_dims, spatial, strict=True):
        suggestion[name] = min(side, info.shape[axis])
    return suggestion


def _field_advice(info: ArrayInfo) -> str | None:
    """Chunks holding whole fields: what a point read decodes, and what blosc blocks save."""
    spatial = _axes(info, info.spatial_dims)
    whole = spatial and all(info.chunks[i] == info.shape[i] for i in spatial)
    if not whole or info.chunk_bytes < _FIELD_CHUNK or not info.point_chunks:
        return None
    field = "x".join(str(info.shape[i]) for i in spatial)
    per_chunk = math.prod(c for i, c in enumerate(info.chunks) if i not in spatial)
    holds = f"one {field} field" if per_chunk == 1 else f"{per_chunk} whole {field} fields"
    text = f"each chunk holds {holds} ({format_size(info.chunk_bytes)})"
    decoded = info.point_bytes_decoded / info.point_chunks
    if decoded < info.chunk_bytes:
        return (
            f"{text}: a point read would decode {format_size(info.chunk_bytes)} per chunk; "
            f"blosc partial decoding cuts this to {format_size(decoded)}"
        )
    if "blosc" in _codec_names(info.codecs) and per_chunk > 1:
        return (
            f"{text}: a point read decodes all of it, since the point's {per_chunk} values in a chunk "
            f"lie in every blosc block; chunks holding fewer fields would let blosc decode less"
        )
    if "blosc" in _codec_names(info.codecs):
        return (
            f"{text}: a point read decodes all of it (blosc partial decoding does not apply to this "
            f"codec chain: {info.codecs})"
        )
    return (
        f"{text}: a point read decodes all of it; compressed with blosc instead, fastzarr would "
        f"decode only the block holding the point"
    )


def _series_advice(info: ArrayInfo) -> str | None:
    """Many chunks per point series: suggest chunks that hold whole series."""
    if info.series_chunks < 4 or not info.spatial_dims or not info.point_chunks:
        return None
    per_chunk = info.point_bytes_decoded / info.point_chunks
    chunks = ", ".join(f"{k}: {v}" for k, v in suggest_series_chunks(info).items())
    return (
        f"a point's series along ({', '.join(info.series_dims)}) touches {info.series_chunks} chunks "
        f"and decodes {format_size(info.series_chunks * per_chunk)}; for time-series access, rewrite "
        f"with chunks {{{chunks}}}: one chunk per series"
    )


def _size_advice(info: ArrayInfo) -> str | None:
    """Chunks too small for per-chunk overhead, or too large for memory."""
    if info.chunk_bytes < _SMALL_CHUNK and info.full_chunks > 1000:
        return (
            f"chunks are small ({format_size(info.chunk_bytes)}, {info.full_chunks} of them): per-chunk "
            f"overhead (a request or file open each) dominates reads; aim for 1-16 MiB chunks"
        )
    if info.chunk_bytes > _LARGE_CHUNK:
        return (
            f"chunks are large ({format_size(info.chunk_bytes)}): a read touching a chunk fetches it "
            f"whole and holds it decoded in memory; aim for 1-64 MiB chunks"
        )
    return None


def _codec_advice(info: ArrayInfo, throughput: Throughput | None) -> str | None:
    """Codecs that barely compress, or that decode slowly."""
    names = _codec_names(info.codecs)
    compressed = any(n not in _PLAIN for n in names)
    if compressed and info.ratio is not None and info.ratio < 1.1 and (info.stored_bytes or 0) >= MIB:
        return (
            f"chunks barely compress (ratio {info.ratio:.2f}): decoding costs time for little space; "
            f"try a shuffle filter (blosc shuffle or bitshuffle) or no compression"
        )
    slow = [n for n in names if n in _DEFLATE]
    if slow and throughput is not None and throughput.one_core and throughput.one_core < _SLOW_DECODE:
        return (
            f"{slow[0]} decodes at {format_size(throughput.one_core)}/s on one thread; zstd or lz4 "
            f"(plain or inside blosc) usually decode several times faster"
        )
    return None


def _missing_advice(info: ArrayInfo) -> str | None:
    if not info.chunks_missing:
        return None
    return (
        f"{info.chunks_missing} of {info.objects_total} chunks are missing and read as the fill value "
        f"{info.fill_value!r}: expected for sparse data, otherwise the store is incomplete"
    )


def _names(names: Sequence[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{len(names)} arrays ({names[0]} ... {names[-1]})"


def advise(infos: Iterable[ArrayInfo], throughput: Mapping[str, Throughput]) -> list[str]:
    """One sentence per distinct piece of advice, prefixed by the arrays it concerns."""
    groups: dict[str, list[str]] = {}
    for info in infos:
        if is_coordinate(info) or not info.shape:
            continue
        found = [
            _missing_advice(info),
            _field_advice(info),
            _series_advice(info),
            _size_advice(info),
            _codec_advice(info, throughput.get(info.layout)),
        ]
        for text in found:
            if text is not None:
                groups.setdefault(text, []).append(info.name)
    return [f"{_names(names)}: {text}" for text, names in groups.items()]
