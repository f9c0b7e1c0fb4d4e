"""Differential fuzzing of chunk decoding against zarr-python.

Real stores are written by zarr-python with every codec it writes; one chunk of one store is then
mutated (bytes flipped, truncated, extended, zeroed, header fields rewritten, shard index entries
rewritten with a valid checksum) and the store is read by fastzarr five ways (whole, point, box,
strided, ``oindex``). A read may:

- return the unmutated values (the damage was outside what the read needs, or harmless);
- raise a ``fastzarr.FastzarrError``;
- return other values, but only where zarr-python, reading the same mutated store, returns exactly
  those values too (a codec without a checksum decodes a flipped literal to another valid value);
- for a read that decodes a blosc chunk block by block: return other values where zarr-python
  refuses the chunk, but only when the damage lies in blocks the read does not decode and, with
  those blocks restored to their original bytes, zarr-python returns exactly the values fastzarr
  returned; and the same read with ``fz.set_partial_decoding(False)`` must then raise. Blosc blocks
  carry no checksum: a read that skips a block cannot see the damage in it.

Anything else is a finding: an error that is not a ``FastzarrError``, values that zarr-python does not
agree with (zarr-python raising or crashing on that chunk included), or the process dying (an abort,
a segfault, an allocation past the address-space limit the caller sets). zarr-python runs in a worker
process of its own, so its crashes count as refusals and never end the run.

Every mutation is drawn from ``(seed, index)`` alone, so ``--seed S --only I`` replays one. Run as a
script; it prints one JSON summary line and exits 1 when it found something, 0 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastzarr as fz
import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec

SHAPE = (48, 40)
CHUNKS = (24, 20)
SHARD_INNER = (12, 10)
BLOCKSIZE = 512  # several blosc blocks per chunk, so point reads take the block-by-block path

# One selection per read path: whole, a point, a box across chunks, a strided view, oindex.
READS: dict[str, Any] = {
    "whole": ("basic", [None]),
    "point": ("basic", [[30, 25]]),
    "box": ("basic", [[[10, 40, None], [5, 33, None]]]),
    "strided": ("basic", [[[1, None, 3], [2, None, 7]]]),
    "oindex": ("oindex", [[[3, 26, 30, 47], [0, 21, 25, 39]]]),
}


def _selection(kind: str, spec: Any) -> Any:
    """A JSON selection spec as an indexing key (``None`` is everything)."""
    if spec is None:
        return Ellipsis
    if kind == "oindex":
        return tuple(np.asarray(axis) for axis in spec)
    return tuple(slice(*item) if isinstance(item, list) else item for item in spec)


@dataclass(frozen=True)
class Family:
    """One store layout: how zarr-python writes it and which header fields a mutation may rewrite."""

    name: str
    zarr_format: int
    dtype: str
    options: Callable[[], dict[str, Any]]
    header: str  # "blosc", "zstd", "gzip", "shard" or "" (no header worth targeting)
    # numcodecs codecs that turn a chunk's bytes into its file, in order, and whether a CRC-32C
    # follows: a mutation re-encodes other contents with them (a valid stream of the wrong length).
    stream: tuple[Any, ...] = ()
    crc32c: bool = False


def _families() -> list[Family]:
    def blosc2(cname: str, shuffle: int) -> Callable[[], dict[str, Any]]:
        return lambda: {"compressors": numcodecs.Blosc(cname=cname, shuffle=shuffle, blocksize=BLOCKSIZE)}

    def v2(codec: Any) -> Callable[[], dict[str, Any]]:
        return lambda: {"compressors": codec}

    families = [
        Family(
            f"v2-blosc-{cname}-{shuffle}",
            2,
            dtype,
            blosc2(cname, shuffle),
            "blosc",
            (numcodecs.Blosc(cname=cname, shuffle=shuffle, blocksize=BLOCKSIZE),),
        )
        for cname, shuffle, dtype in (
            ("blosclz", 0, "<f8"),
            ("lz4", 1, "<f8"),
            ("lz4hc", 2, "<i4"),
            ("zlib", 1, "<i4"),
            ("zstd", 1, "<f8"),
            ("zstd", 2, "<f4"),
        )
    ]
    zstd, gzip = numcodecs.Zstd(level=1), numcodecs.GZip()
    families += [
        Family("v2-zstd", 2, "<f8", v2(zstd), "zstd", (zstd,)),
        Family("v2-gzip", 2, "<f8", v2(gzip), "gzip", (gzip,)),
        Family("v2-zlib", 2, "<i4", v2(numcodecs.Zlib()), "", (numcodecs.Zlib(),)),
        Family("v2-bz2", 2, "<f8", v2(numcodecs.BZ2()), "", (numcodecs.BZ2(),)),
        Family("v2-lz4", 2, "<i4", v2(numcodecs.LZ4()), "", (numcodecs.LZ4(),)),
        Family(
            "v2-delta-blosc",
            2,
            "<i4",
            lambda: {
                "filters": [numcodecs.Delta(dtype="<i4")],
                "compressors": numcodecs.Blosc(cname="zstd", shuffle=1, blocksize=BLOCKSIZE),
            },
            "blosc",
            (numcodecs.Delta(dtype="<i4"), numcodecs.Blosc(cname="zstd", shuffle=1, blocksize=BLOCKSIZE)),
        ),
        Family("v2-raw", 2, "<f8", lambda: {"compressors": None}, ""),
        Family("v3-zstd", 3, "<f8", lambda: {"compressors": ZstdCodec(level=1)}, "zstd", (zstd,)),
        Family("v3-gzip", 3, "<i4", lambda: {"compressors": GzipCodec()}, "gzip", (gzip,)),
        Family(
            "v3-blosc-zstd",
            3,
            "<f8",
            lambda: {"compressors": BloscCodec(cname="zstd", shuffle="shuffle", blocksize=BLOCKSIZE)},
            "blosc",
            (numcodecs.Blosc(cname="zstd", shuffle=1, blocksize=BLOCKSIZE),),
        ),
        Family(
            "v3-blosc-lz4-bit",
            3,
            "<f4",
            lambda: {"compressors": BloscCodec(cname="lz4", shuffle="bitshuffle", blocksize=BLOCKSIZE)},
            "blosc",
            (numcodecs.Blosc(cname="lz4", shuffle=2, blocksize=BLOCKSIZE),),
        ),
        Family(
            "v3-crc32c-zstd",
            3,
            "<f8",
            lambda: {"compressors": [ZstdCodec(level=1), Crc32cCodec()]},
            "zstd",
            (zstd,),
            crc32c=True,
        ),
        Family(
            "v3-sharded-zstd",
            3,
            "<f8",
            lambda: {
                "serializer": ShardingCodec(
                    chunk_shape=SHARD_INNER,
                    codecs=[BytesCodec(), ZstdCodec(level=1)],
                    index_codecs=[BytesCodec(), Crc32cCodec()],
                ),
                "compressors": None,
            },
            "shard",
        ),
    ]
    return families


def _data(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "f":
        # Smooth values, as real fields are, so compressors find matches (and blocks differ).
        base = np.cumsum(rng.standard_normal(SHAPE), axis=1)
        return base.astype(dtype)
    return np.cumsum(rng.integers(-50, 50, SHAPE), axis=0).astype(dtype)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_stores(root: Path) -> dict[str, tuple[Family, Path, np.ndarray]]:
    """Every family's store under ``root``, written by zarr-python."""
    stores = {}
    for family in _families():
        path = root / f"{family.name}.zarr"
        data = _data(family.dtype)
        chunks = SHAPE if family.header == "shard" else CHUNKS
        with _quiet():
            arr = zarr.create_array(
                store=str(path),
                shape=SHAPE,
                chunks=chunks,
                dtype=family.dtype,
                zarr_format=family.zarr_format,
                fill_value=0,
                **family.options(),
            )
            arr[...] = data
        stores[family.name] = (family, path, data)
    return stores


def chunk_files(path: Path) -> list[Path]:
    """The chunk (or shard) files of a store, in a stable order."""
    names = (".zarray", ".zattrs", ".zgroup", "zarr.json")
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name not in names)


# --- mutations ---------------------------------------------------------------------------------

_BOUNDARY_U32 = (0, 1, 2, 3, 4, 7, 16, 255, 256, BLOCKSIZE, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFF)


def _u32(rng: random.Random, size: int) -> int:
    choices = [*_BOUNDARY_U32, size - 1, size, size + 1, rng.randrange(1 << 32)]
    return rng.choice(choices) & 0xFFFFFFFF


def _flip(rng: random.Random, raw: bytearray) -> str:
    picks = [rng.randrange(len(raw)) for _ in range(rng.choice((1, 1, 2, 3)))]
    for at in picks:
        raw[at] ^= rng.randrange(1, 256)
    return f"flip {picks}"


def _truncate(rng: random.Random, raw: bytearray) -> str:
    keep = rng.randrange(len(raw))
    del raw[keep:]
    return f"truncate to {keep}"


def _extend(rng: random.Random, raw: bytearray) -> str:
    extra = rng.choice((1, 3, 8, 64))
    raw.extend(rng.randbytes(extra))
    return f"extend by {extra}"


def _zero(rng: random.Random, raw: bytearray) -> str:
    start = rng.randrange(len(raw))
    stop = min(len(raw), start + rng.choice((1, 4, 16, 256)))
    raw[start:stop] = bytes(stop - start)
    return f"zero {start}:{stop}"


def _blosc_header(rng: random.Random, raw: bytearray) -> str:
    if len(raw) < 16:
        return _flip(rng, raw)
    field = rng.choice(("flags", "typesize", "nbytes", "blocksize", "cbytes", "bstarts"))
    if field == "flags":
        raw[2] = rng.choice((0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x13, 0x20, 0xFF, rng.randrange(256)))
        return f"blosc flags={raw[2]:#x}"
    if field == "typesize":
        raw[3] = rng.choice((0, 1, 2, 3, 5, 7, 16, 255))
        return f"blosc typesize={raw[3]}"
    at = {"nbytes": 4, "blocksize": 8, "cbytes": 12}.get(field)
    if at is None:  # one entry of the block-start table
        nblocks = max(1, (len(raw) - 16) // 4)
        at = 16 + 4 * rng.randrange(min(nblocks, 16))
        if at + 4 > len(raw):
            return _flip(rng, raw)
    value = _u32(rng, len(raw))
    struct.pack_into("<I", raw, at, value)
    return f"blosc {field}@{at}={value:#x}"


def _zstd_header(rng: random.Random, raw: bytearray) -> str:
    if len(raw) < 6:
        return _flip(rng, raw)
    at = rng.randrange(4, min(len(raw), 18))
    raw[at] = rng.randrange(256)
    return f"zstd header byte {at}={raw[at]:#x}"


def _gzip_header(rng: random.Random, raw: bytearray) -> str:
    if len(raw) < 18:
        return _flip(rng, raw)
    if rng.random() < 0.5:  # the trailer: CRC-32 and the stored length
        at = len(raw) - rng.choice((4, 8))
        value = _u32(rng, len(raw))
        struct.pack_into("<I", raw, at, value)
        return f"gzip trailer@{at}={value:#x}"
    at = rng.randrange(10)
    raw[at] = rng.randrange(256)
    return f"gzip header byte {at}={raw[at]:#x}"


def _shard_index(rng: random.Random, raw: bytearray) -> str:
    """Rewrites one (offset, length) entry of the shard index and recomputes its CRC-32C, so only
    the entry itself can give the lie away."""
    entries = (SHAPE[0] // SHARD_INNER[0]) * (SHAPE[1] // SHARD_INNER[1])
    index_bytes = entries * 16
    if len(raw) < index_bytes + 4:
        return _flip(rng, raw)
    start = len(raw) - index_bytes - 4
    entry = rng.randrange(entries)
    huge = (1 << 64) - 1
    choices = (0, 1, len(raw), len(raw) - 1, huge, huge - 7, 1 << 63, (1 << 32) + 5, rng.randrange(1 << 64))
    offset, length = struct.unpack_from("<QQ", raw, start + 16 * entry)
    if rng.random() < 0.5:
        offset = rng.choice(choices)
    else:
        length = rng.choice(choices)
    struct.pack_into("<QQ", raw, start + 16 * entry, offset, length)
    index = bytes(raw[start : start + index_bytes])
    struct.pack_into("<I", raw, start + index_bytes, google_crc32c.value(index))
    return f"shard entry {entry} = ({offset:#x}, {length:#x})"


def _recode(rng: random.Random, family: Family, raw: bytearray) -> str:
    """A valid stream of the chunk's own codecs that holds fewer or more bytes than the chunk."""
    payload = bytes(raw[:-4]) if family.crc32c else bytes(raw)
    for codec in reversed(family.stream):
        payload = bytes(np.frombuffer(codec.decode(payload), "u1"))
    itemsize = np.dtype(family.dtype).itemsize
    if rng.random() < 0.5:
        size = rng.randrange(0, len(payload) // itemsize) * itemsize
        payload = payload[:size]
    else:
        size = len(payload) + itemsize * rng.choice((1, 2, 100))
        payload += bytes(size - len(payload))
    for codec in family.stream:
        if isinstance(codec, numcodecs.Delta):
            payload = np.frombuffer(payload, family.dtype)
        payload = bytes(np.frombuffer(codec.encode(payload), "u1"))
    if family.crc32c:
        payload += struct.pack("<I", google_crc32c.value(payload))
    raw[:] = payload
    return f"re-encoded holding {size} bytes"


GENERIC = (_flip, _truncate, _extend, _zero)
HEADERS = {"blosc": _blosc_header, "zstd": _zstd_header, "gzip": _gzip_header, "shard": _shard_index}


def mutate(rng: random.Random, family: Family, raw: bytearray) -> str:
    if not raw:
        raw.extend(rng.randbytes(8))
        return "empty chunk filled with 8 random bytes"
    draw = rng.random()
    if family.stream and draw < 0.15:
        return _recode(rng, family, raw)
    header = HEADERS.get(family.header)
    if header is not None and draw < 0.55:
        return header(rng, raw)
    return rng.choice(GENERIC)(rng, raw)


# --- the reference reader, in a process of its own -----------------------------------------------

REFERENCE_WORKER = r"""
import base64, io, json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
import zarr
for line in sys.stdin:
    request = json.loads(line)
    kind, spec = request["kind"], request["spec"]
    try:
        arr = zarr.open_array(request["path"], mode="r")
        if spec is None:
            key = Ellipsis
        elif kind == "oindex":
            key = tuple(np.asarray(axis) for axis in spec)
        else:
            key = tuple(slice(*i) if isinstance(i, list) else i for i in spec)
        values = np.asarray(arr.oindex[key] if kind == "oindex" else arr[key])
        buffer = io.BytesIO()
        np.save(buffer, values)
        reply = {"values": base64.b64encode(buffer.getvalue()).decode()}
    except Exception as exc:  # every refusal counts alike
        reply = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
"""


class Reference:
    """zarr-python in a worker process; a crash there is a refusal, and a new worker starts."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.crashes = 0

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", REFERENCE_WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self.process

    def read(self, path: Path, kind: str, spec: Any) -> np.ndarray | str:
        """zarr-python's values, or the text of its refusal."""
        process = self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.write(json.dumps({"path": str(path), "kind": kind, "spec": spec}) + "\n")
            process.stdin.flush()
            line = process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.crashes += 1
            process.wait()
            return f"zarr-python's process died ({process.returncode})"
        reply = json.loads(line)
        if "error" in reply:
            return str(reply["error"])
        return np.load(io.BytesIO(base64.b64decode(reply["values"])))

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)


# --- the run -----------------------------------------------------------------------------------


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@dataclass
class Tally:
    mutations: int = 0
    reads: int = 0
    unchanged: int = 0
    refused: int = 0
    agreed_changed: int = 0
    agreed_in_blocks: int = 0
    findings: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mutations": self.mutations,
            "reads": self.reads,
            "unchanged": self.unchanged,
            "refused": self.refused,
            "agreed_changed": self.agreed_changed,
            "agreed_in_blocks": self.agreed_in_blocks,
            "findings": self.findings or [],
        }


def check_one(
    *,
    index: int,
    seed: int,
    stores: dict[str, tuple[Family, Path, np.ndarray]],
    reference: Reference,
    tally: Tally,
    progress: Path | None,
) -> None:
    rng = random.Random(f"{seed}:{index}")
    family, path, data = stores[rng.choice(sorted(stores))]
    files = chunk_files(path)
    target = rng.choice(files)
    original = target.read_bytes()
    raw = bytearray(original)
    how = mutate(rng, family, raw)
    wrong_length = how.startswith("re-encoded")
    case = {"seed": seed, "index": index, "store": family.name, "chunk": target.name, "mutation": how}
    if progress is not None:
        progress.write_text(json.dumps(case))
    target.write_bytes(bytes(raw))
    findings = tally.findings if tally.findings is not None else []
    tally.findings = findings
    try:
        tally.mutations += 1
        for name, (kind, (spec,)) in READS.items():
            tally.reads += 1
            key = _selection(kind, spec)
            expected = _expected(data, kind, key)
            try:
                arr = fz.open_array(str(path))
                got = np.asarray(arr.oindex[key] if kind == "oindex" else arr[key])
            except fz.FastzarrError:
                tally.refused += 1
                continue
            except Exception as exc:
                findings.append({**case, "read": name, "problem": f"not a FastzarrError: {exc!r}"[:400]})
                continue
            if wrong_length and _touches(kind, key, target.relative_to(path)):
                # A chunk that decodes to the wrong number of bytes is corrupt, whichever of its
                # elements a read wants: its values may have moved.
                findings.append({**case, "read": name, "problem": "read a chunk of the wrong length"})
                continue
            if _same(got, expected):
                tally.unchanged += 1
                continue
            theirs = reference.read(path, kind, spec)
            if isinstance(theirs, np.ndarray) and _same(got, theirs.astype(got.dtype)):
                tally.agreed_changed += 1
                continue
            if family.header == "blosc" and name != "whole":
                chunk = target.relative_to(path)
                verdict = _blockwise_verdict(
                    reference=reference,
                    path=path,
                    target=target,
                    original=original,
                    mutated=bytes(raw),
                    chunk=chunk,
                    dtype=data.dtype,
                    kind=kind,
                    spec=spec,
                    got=got,
                )
                if verdict is None:
                    tally.agreed_in_blocks += 1
                    continue
                if verdict:
                    findings.append({**case, "read": name, "problem": verdict[:400]})
                    continue
            verdict = theirs if isinstance(theirs, str) else "zarr-python returns other values"
            findings.append({**case, "read": name, "problem": f"wrong values; zarr-python: {verdict}"[:400]})
    finally:
        target.write_bytes(original)


def _blockwise_verdict(
    *,
    reference: Reference,
    path: Path,
    target: Path,
    original: bytes,
    mutated: bytes,
    chunk: Path,
    dtype: np.dtype[Any],
    kind: str,
    spec: Any,
    got: np.ndarray,
) -> str | None:
    """Judges a block-by-block read of a damaged blosc chunk that zarr-python refuses: ``None`` when
    the values are what zarr-python reads once the blocks the read does not decode are restored, and
    the read refuses the chunk when it may not decode block by block; else the problem, or ``""``
    when the damage is not confined to blocks (the header or the block table changed)."""
    layout = _blosc_blocks(original)
    if layout is None or len(mutated) != len(original):
        return ""
    table_end, starts = layout
    if mutated[:table_end] != original[:table_end]:
        return ""
    blocksize = struct.unpack_from("<I", original, 8)[0]
    wanted = _blocks_read(kind, _selection(kind, spec), chunk, dtype.itemsize, blocksize)
    ends = [*starts[1:], len(original)]
    spliced = bytearray(original)
    for block in wanted:
        spliced[starts[block] : ends[block]] = mutated[starts[block] : ends[block]]
    target.write_bytes(bytes(spliced))
    try:
        theirs = reference.read(path, kind, spec)
    finally:
        target.write_bytes(mutated)
    if not (isinstance(theirs, np.ndarray) and _same(got, theirs.astype(got.dtype))):
        return ""
    key = _selection(kind, spec)
    fz.set_partial_decoding(False)
    try:
        arr = fz.open_array(str(path))
        np.asarray(arr.oindex[key] if kind == "oindex" else arr[key])
    except fz.FastzarrError:
        return None
    finally:
        fz.set_partial_decoding(True)
    return "read a damaged blosc chunk without error with partial decoding switched off"


def _blosc_blocks(chunk: bytes) -> tuple[int, list[int]] | None:
    """The end of a blosc chunk's header and block table, and its blocks' starts; ``None`` unless
    the chunk is block-structured (a memcpyed chunk has no table)."""
    if len(chunk) < 16 or chunk[2] & 0x02:
        return None
    nbytes, blocksize = struct.unpack_from("<II", chunk, 4)
    if blocksize == 0:
        return None
    blocks = -(-nbytes // blocksize)
    table_end = 16 + 4 * blocks
    if len(chunk) < table_end:
        return None
    return table_end, list(struct.unpack_from(f"<{blocks}I", chunk, 16))


def _blocks_read(kind: str, key: Any, chunk: Path, itemsize: int, blocksize: int) -> set[int]:
    """The blosc blocks of ``chunk`` holding an element the selection reads."""
    coords = [int(part) for part in chunk.as_posix().replace("c/", "").replace("/", ".").split(".")]
    rows, cols = np.indices(SHAPE)
    inside = (rows // CHUNKS[0] == coords[0]) & (cols // CHUNKS[1] == coords[1])
    offset = (rows % CHUNKS[0]) * CHUNKS[1] + cols % CHUNKS[1]
    picked = _expected(np.where(inside, offset, -1), kind, key)
    return {int(o) * itemsize // blocksize for o in np.ravel(picked) if o >= 0}


def _touches(kind: str, key: Any, chunk: Path) -> bool:
    """Whether a selection reads any element of the chunk stored at ``chunk`` (relative path)."""
    coords = [int(part) for part in chunk.as_posix().replace("c/", "").replace("/", ".").split(".")]
    rows, cols = np.indices(SHAPE)
    inside = (rows // CHUNKS[0] == coords[0]) & (cols // CHUNKS[1] == coords[1])
    return bool(np.any(_expected(inside, kind, key)))


def _expected(data: np.ndarray, kind: str, key: Any) -> np.ndarray:
    if kind == "oindex":
        return np.asarray(data[np.ix_(*key)])
    return np.asarray(data[key])


def run_child(seed: int, indices: list[int], progress: Path, deadline: float | None) -> None:
    """Checks ``indices`` in this process, printing one JSON line of counts and findings per mutation."""
    reference = Reference()
    root = Path(tempfile.mkdtemp(prefix="fastzarr-fuzz-"))
    try:
        stores = write_stores(root)
        for index in indices:
            if deadline is not None and time.monotonic() > deadline:
                break
            tally = Tally(findings=[])
            check_one(
                index=index, seed=seed, stores=stores, reference=reference, tally=tally, progress=progress
            )
            print(json.dumps({**tally.as_dict(), "reference_crashes": reference.crashes}), flush=True)
            reference.crashes = 0
    finally:
        reference.close()
        shutil.rmtree(root, ignore_errors=True)


def _limit_address_space(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def run(
    seed: int,
    mutations: int,
    only: int | None,
    seconds: float | None,
    address_space: int,
) -> dict[str, Any]:
    """Checks mutations ``0..mutations`` (or only ``only``) in child processes under an address-space
    limit; a child that dies is a finding for the case it was reading, and the next child goes on
    after it."""
    summary: dict[str, Any] = {**Tally(findings=[]).as_dict(), "reference_crashes": 0, "deaths": 0}
    started = time.monotonic()
    todo = [only] if only is not None else list(range(mutations))
    with tempfile.TemporaryDirectory(prefix="fastzarr-fuzz-progress-") as scratch:
        progress = Path(scratch) / "case.json"
        while todo:
            left = None if seconds is None else seconds - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            progress.write_text("")
            command = [sys.executable, __file__, "--child", "--seed", str(seed), "--progress", str(progress)]
            command += ["--indices", ",".join(map(str, todo))]
            if left is not None:
                command += ["--seconds", str(left)]
            child = subprocess.run(
                command,
                capture_output=True,
                text=True,
                preexec_fn=_limit_address_space(address_space),
                check=False,
            )
            done = 0
            for line in child.stdout.splitlines():
                counts = json.loads(line)
                done += 1
                for name, value in counts.items():
                    if name == "findings":
                        summary["findings"].extend(value)
                    else:
                        summary[name] += value
            todo = todo[done:]
            if child.returncode == 0:
                if seconds is None or not todo:
                    break
                continue  # out of time in the child
            # An empty progress file: the child died before it began its first case.
            case = json.loads(progress.read_text() or "null") or {"seed": seed, "index": todo[0]}
            tail = child.stderr.strip().splitlines()[-6:]
            summary["deaths"] += 1
            summary["mutations"] += 1
            summary["findings"].append(
                {**case, "problem": f"process died ({child.returncode})", "stderr": tail}
            )
            todo = todo[1:]
    summary.update(seed=seed, families=len(_families()), seconds=round(time.monotonic() - started, 1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mutations", type=int, default=1000)
    parser.add_argument("--only", type=int, default=None, help="replay one mutation of --seed")
    parser.add_argument("--seconds", type=float, default=None, help="stop drawing mutations after this")
    parser.add_argument(
        "--address-space-gib", type=float, default=6, help="RLIMIT_AS of the reading processes"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--indices", default="", help=argparse.SUPPRESS)
    parser.add_argument("--progress", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        indices = [int(i) for i in args.indices.split(",") if i]
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        run_child(args.seed, indices, args.progress, deadline)
        return 0
    summary = run(args.seed, args.mutations, args.only, args.seconds, int(args.address_space_gib * 2**30))
    print(json.dumps(summary))
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
