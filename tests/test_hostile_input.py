"""Hostile stores: chunk bytes that lie, decompression bombs, malformed metadata and paths that try
to leave the store. Each is a clear fastzarr exception, never a crash, a huge allocation, wrong
data or a read outside the store. (Plain truncated/garbage/empty chunks are in test_errors.py.)"""

from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import assert_same, quiet_zarr, write_array
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

DATA = np.arange(24, dtype="f8").reshape(4, 6)
CHUNK_BYTES = 2 * 3 * 8

# --- chunk bytes -------------------------------------------------------------------------------

# (zarr_format, compressor as zarr-python writes it, numcodecs codec producing the same format)
FAMILIES: dict[str, tuple[int, Any, Any]] = {
    "v2-zstd": (2, numcodecs.Zstd(level=1), numcodecs.Zstd(level=1)),
    "v2-blosc": (2, numcodecs.Blosc(cname="lz4", shuffle=1), numcodecs.Blosc(cname="lz4", shuffle=1)),
    "v2-gzip": (2, numcodecs.GZip(), numcodecs.GZip()),
    "v2-zlib": (2, numcodecs.Zlib(), numcodecs.Zlib()),
    "v2-bz2": (2, numcodecs.BZ2(), numcodecs.BZ2()),
    "v2-lz4": (2, numcodecs.LZ4(), numcodecs.LZ4()),
    "v3-zstd": (3, ZstdCodec(level=1), numcodecs.Zstd(level=1)),
    "v3-blosc": (3, BloscCodec(cname="zstd"), numcodecs.Blosc(cname="zstd", shuffle=1)),
    "v3-gzip": (3, GzipCodec(), numcodecs.GZip()),
}


def chunk_file(path: str, zarr_format: int, key: tuple[int, ...] = (1, 1)) -> tuple[Path, str]:
    name = ".".join(map(str, key)) if zarr_format == 2 else "c/" + "/".join(map(str, key))
    return Path(path) / name, name


@pytest.mark.parametrize("family", list(FAMILIES), ids=str)
def test_chunk_decoding_to_more_than_the_chunk_is_corrupt(tmp_path: Path, family: str) -> None:
    """A valid stream of the right codec that holds more bytes than the chunk (twice as many)."""
    zarr_format, compressor, codec = FAMILIES[family]
    path = write_array(
        tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format, compressors=compressor
    )
    chunk, key = chunk_file(path, zarr_format)
    chunk.write_bytes(codec.encode(np.arange(12, dtype="f8")))
    arr = fz.open_array(path)
    for read in (lambda: arr[...], lambda: arr[3, 4], lambda: arr[2:, 3:], lambda: arr[::3, ::5]):
        with pytest.raises(fz.CorruptChunkError, match=key):
            read()
    assert_same(arr[:2], DATA[:2])


def zstd_rle_bomb(size: int, claimed: int | None = None) -> bytes:
    """A zstd frame of RLE blocks: 4 bytes per 128 KiB of zeros. ``claimed`` writes a frame
    content size into the header (any value: it is not checked against the blocks)."""
    block = 1 << 17
    header = b"\x28\xb5\x2f\xfd"
    if claimed is None:
        header += bytes([0x00, 0x38])  # no content size; window 128 KiB
    else:
        header += bytes([0xC0, 0x38]) + claimed.to_bytes(8, "little")
    blocks = []
    n = size // block
    for i in range(n):
        last = 1 if i == n - 1 else 0
        blocks.append(((block << 3) | (1 << 1) | last).to_bytes(3, "little") + b"\x00")
    return header + b"".join(blocks)


def deflate_bomb(size: int, wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


def bz2_bomb(size: int) -> bytes:
    compressor = bz2.BZ2Compressor(9)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


def blosc_lying_nbytes() -> bytes:
    raw = bytearray(numcodecs.Blosc(cname="lz4", shuffle=1).encode(np.zeros(6, dtype="f8")))
    raw[4:8] = (2**31 - 1).to_bytes(4, "little")
    return bytes(raw)


def lz4_lying_size() -> bytes:
    raw = bytearray(numcodecs.LZ4().encode(np.zeros(6, dtype="f8")))
    raw[:4] = (2**31 - 1).to_bytes(4, "little")
    return bytes(raw)


GIB = 1 << 30
BOMBS: dict[str, tuple[int, Any, Callable[[], bytes]]] = {
    "v2-zstd-1GiB": (2, numcodecs.Zstd(), lambda: zstd_rle_bomb(GIB)),
    "v2-zstd-claims-1TiB": (2, numcodecs.Zstd(), lambda: zstd_rle_bomb(1 << 20, claimed=1 << 40)),
    "v3-zstd-1GiB": (3, ZstdCodec(), lambda: zstd_rle_bomb(GIB)),
    "v3-zstd-claims-2^63": (3, ZstdCodec(), lambda: zstd_rle_bomb(1 << 20, claimed=1 << 63)),
    "v2-gzip-128MiB": (2, numcodecs.GZip(), lambda: deflate_bomb(128 << 20, 31)),
    "v3-gzip-128MiB": (3, GzipCodec(), lambda: deflate_bomb(128 << 20, 31)),
    "v2-zlib-128MiB": (2, numcodecs.Zlib(), lambda: deflate_bomb(128 << 20, 15)),
    "v2-bz2-64MiB": (2, numcodecs.BZ2(), lambda: bz2_bomb(64 << 20)),
    "v2-blosc-claims-2GiB": (2, numcodecs.Blosc(cname="lz4"), blosc_lying_nbytes),
    "v2-lz4-claims-2GiB": (2, numcodecs.LZ4(), lz4_lying_size),
}


def test_decompression_bombs_are_corrupt_chunks_without_inflating(tmp_path: Path) -> None:
    """Each bomb is refused once the output passes the chunk's size: the reading process never
    grows by anything near the bomb's decoded size (peak RSS measured in a fresh process)."""
    stores = {}
    for name, (zarr_format, compressor, make) in BOMBS.items():
        path = write_array(
            tmp_path / f"{name}.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format, compressors=compressor
        )
        chunk, key = chunk_file(path, zarr_format)
        chunk.write_bytes(make())
        stores[name] = (path, key)
    script = textwrap.dedent(
        """
        import json, resource, sys
        import fastzarr as fz
        stores = json.loads(sys.argv[1])
        fz.open_array(next(iter(stores.values()))[0])[:2]  # warm up: pool, imports
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcome = {}
        for name, (path, key) in stores.items():
            arr = fz.open_array(path)
            for sel in ((Ellipsis,), (3, 4), (slice(2, 4), slice(3, 5))):
                try:
                    arr[sel]
                    outcome.setdefault(name, []).append("read")
                except fz.CorruptChunkError as e:
                    outcome.setdefault(name, []).append("corrupt" if key in str(e) else str(e))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({"outcome": outcome, "grown_kib": grown}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(stores)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outcome"] == {name: ["corrupt"] * 3 for name in BOMBS}
    assert result["grown_kib"] < 48 * 1024, result


# Blosc 1 header: version, versionlz, flags, typesize (1 byte each), nbytes, blocksize, cbytes
# (4 bytes each), then one 4-byte start offset per block.
BLOSC_LIES = {
    "nbytes-too-big": (4, 4, 2**31 - 1),
    "nbytes-too-small": (4, 4, 8),
    "nbytes-zero": (4, 4, 0),
    "blocksize-zero": (8, 4, 0),
    "blocksize-huge": (8, 4, 2**31 - 1),
    "blocksize-one": (8, 4, 1),
    "cbytes-too-big": (12, 4, 2**31 - 1),
    "cbytes-too-small": (12, 4, 20),
    "offset-past-end": (16, 4, 0xFFFFFFF0),
    "offset-in-header": (16, 4, 3),
    "typesize-zero": (3, 1, 0),
    "typesize-255": (3, 1, 255),
    "version-unknown": (0, 1, 99),
    "flags-memcpy": (2, 1, 0x02),
}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("lie", list(BLOSC_LIES), ids=str)
def test_lying_blosc_headers(tmp_path: Path, zarr_format: int, lie: str) -> None:
    """Whole-chunk, partial and many-point reads of a chunk whose blosc header lies: a corrupt
    chunk, or exactly what zarr-python (the reference) decodes from the same bytes; never a crash."""
    offset, width, value = BLOSC_LIES[lie]
    data = np.random.default_rng(1).standard_normal((2, 64, 256)).astype("f4")
    compressor = (
        numcodecs.Blosc(cname="lz4", shuffle=1, blocksize=4096)
        if zarr_format == 2
        else BloscCodec(cname="lz4", shuffle="shuffle", blocksize=4096)
    )
    path = write_array(
        tmp_path / "b.zarr", data, chunks=(1, 64, 256), zarr_format=zarr_format, compressors=compressor
    )
    chunk, key = chunk_file(path, zarr_format, (1, 0, 0))
    raw = bytearray(chunk.read_bytes())
    raw[offset : offset + width] = value.to_bytes(width, "little")
    chunk.write_bytes(bytes(raw))
    try:
        with quiet_zarr():
            reference: np.ndarray | None = zarr.open_array(path, mode="r")[1]
    except Exception:
        reference = None
    arr = fz.open_array(path)
    points = [(1, y, x) for y, x in ((0, 0), (10, 10), (63, 255), (31, 128))]
    rows = {0: np.ones(64, dtype=int), 1: np.arange(64)}
    reads: list[tuple[Callable[[], Any], Callable[[np.ndarray], Any]]] = [
        (lambda: arr[1], lambda ref: ref),
        (lambda: arr[1, 10, 10], lambda ref: ref[10, 10]),
        (lambda: arr[1, 5:9, 100:200], lambda ref: ref[5:9, 100:200]),
        (lambda: fz.read_many([(arr, p) for p in points]), lambda ref: [ref[p[1:]] for p in points]),
        # Every row of the chunk as a point: more parts than are read block by block, so the
        # chunk is decoded whole once and the rows placed from it.
        (lambda: fz.read_many([(arr, ..., rows)])[0], lambda ref: ref),
        (lambda: _read_into(arr, rows), lambda ref: ref[::-1]),
    ]
    refusals = []
    for read, expect in reads:
        try:
            got = read()
        except fz.CorruptChunkError as e:
            refusals.append(str(e))
            continue
        assert reference is not None, f"{lie}: fastzarr decoded a chunk zarr-python refuses"
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expect(reference)))
    assert all(key in message for message in refusals), refusals
    assert_same(arr[0], data[0])
    if lie in {"nbytes-too-big", "blocksize-zero", "cbytes-too-big", "offset-past-end", "version-unknown"}:
        with pytest.raises(fz.CorruptChunkError, match=key):
            arr[1]


def _read_into(arr: fz.Array, points: dict[int, np.ndarray]) -> np.ndarray:
    """``points`` read into an output of their own, in reverse order."""
    count = len(points[0])
    out = np.zeros((count, *arr.shape[2:]), dtype=arr.dtype)
    fz._core._read_points_into([(arr, ..., points, out, np.arange(count)[::-1])])
    return out


# --- metadata ----------------------------------------------------------------------------------


def _edit(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        target = meta
        *parents, last = field.split(".")
        for p in parents:
            target = target[p]
        target[last] = value

    return edit


V2_BAD = {
    "shape-negative": ("shape", [-4, 6]),
    "shape-string": ("shape", "4,6"),
    "shape-float": ("shape", [4.5, 6]),
    "shape-beyond-u64": ("shape", [2**64, 6]),
    "chunks-negative": ("chunks", [-2, 3]),
    "chunks-null": ("chunks", None),
    "chunks-zero": ("chunks", [2, 0]),
    "dtype-number": ("dtype", 5),
    "compressor-string": ("compressor", "zstd"),
    "filters-object": ("filters", {"id": "delta"}),
    "order-unknown": ("order", "X"),
    "separator-backslash": ("dimension_separator", "\\"),
    "separator-dotdot": ("dimension_separator", ".."),
    "fill-object": ("fill_value", {"a": 1}),
}
V3_BAD = {
    "shape-negative": ("shape", [-4, 6]),
    "shape-string": ("shape", "4,6"),
    "shape-beyond-u64": ("shape", [2**64, 6]),
    "chunk-shape-zero": ("chunk_grid.configuration.chunk_shape", [0, 3]),
    "chunk-shape-rank": ("chunk_grid.configuration.chunk_shape", [2]),
    "chunk-shape-negative": ("chunk_grid.configuration.chunk_shape", [-2, 3]),
    "chunk-grid-unknown": ("chunk_grid.name", "irregular"),
    "data-type-number": ("data_type", 5),
    "codecs-string": ("codecs", "zstd"),
    "codecs-empty": ("codecs", []),
    "key-encoding-unknown": ("chunk_key_encoding.name", "nope"),
    "key-separator-backslash": ("chunk_key_encoding.configuration.separator", "\\"),
    "key-separator-dotdot": ("chunk_key_encoding.configuration.separator", ".."),
    "node-type-number": ("node_type", 3),
    "attributes-list": ("attributes", [1, 2]),
}


@pytest.mark.parametrize(
    ("zarr_format", "case"),
    [(2, c) for c in V2_BAD] + [(3, c) for c in V3_BAD],
    ids=[f"v2-{c}" for c in V2_BAD] + [f"v3-{c}" for c in V3_BAD],
)
def test_malformed_array_metadata(tmp_path: Path, zarr_format: int, case: str) -> None:
    field, value = (V2_BAD if zarr_format == 2 else V3_BAD)[case]
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format)
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    _edit(Path(path) / name, _set(field, value))
    with pytest.raises((fz.MetadataError, fz.UnsupportedCodecError)) as info:
        fz.open_array(path)[...]
    assert name in str(info.value) or "'a.zarr'" in str(info.value) or path in str(info.value)


@pytest.mark.parametrize(
    ("node", "field"),
    [
        ("array", {"must_understand": True, "scale": 2}),
        ("array", {"scale": 2}),
        ("array", True),
        ("group", {"must_understand": True}),
    ],
    ids=["array-must-understand", "array-no-flag", "array-not-an-object", "group-must-understand"],
)
def test_unknown_v3_fields_that_must_be_understood_are_refused(tmp_path: Path, node: str, field: Any) -> None:
    """A v3 extension field may change what the stored bytes mean: unless it says
    ``"must_understand": false`` it is refused, naming it (as zarr-python does)."""
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=3)
    if node == "group":
        with quiet_zarr():
            zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
        path = str(tmp_path / "g.zarr")
    _edit(Path(path) / "zarr.json", _set("my_extension", field))
    with pytest.raises(fz.MetadataError, match="my_extension"):
        fz.open_array(path) if node == "array" else fz.open_group(path)
    with pytest.raises(Exception, match="my_extension"), quiet_zarr():
        zarr.open(path, mode="r")


def test_unknown_v3_fields_that_may_be_ignored_are(tmp_path: Path) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=3)
    _edit(Path(path) / "zarr.json", _set("my_extension", {"must_understand": False, "scale": 2}))
    assert_same(fz.open_array(path)[...], DATA)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("shape", "chunks", "message"),
    [
        ((2**62, 2**62), (1, 1), "2^64 elements"),
        ((2**31, 2**31), (2**31, 2**31), "chunk shape"),
        ((2**63 - 1,), (2**62,), "chunk shape"),
        ((4, 6), (2,), "chunk shape"),
    ],
    ids=["elements-beyond-u64", "chunk-bytes-overflow", "chunk-bytes-beyond-isize", "chunk-rank"],
)
def test_sizes_that_overflow_are_refused_on_open(
    tmp_path: Path, zarr_format: int, shape: tuple[int, ...], chunks: tuple[int, ...], message: str
) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format)
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    chunk_field = "chunks" if zarr_format == 2 else "chunk_grid.configuration.chunk_shape"
    _edit(Path(path) / name, _set("shape", list(shape)))
    _edit(Path(path) / name, _set(chunk_field, list(chunks)))
    with pytest.raises(fz.MetadataError) as info:
        fz.open_array(path)
    assert name in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_huge_array_reads_small_parts_and_refuses_the_whole(tmp_path: Path, zarr_format: int) -> None:
    """2^61 float64 elements (16 EiB): opening and small reads work, reading it all is a clear
    MemoryError/ValueError from the allocation, not a crash."""
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format)
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    _edit(Path(path) / name, _set("shape", [2**59, 6]))
    arr = fz.open_array(path)
    assert arr.nbytes == 8 * 6 * 2**59
    assert_same(arr[:4], DATA)
    assert_same(arr[2**58, 1:3], np.zeros(2))
    with pytest.raises((MemoryError, ValueError)):
        arr[...]


def read_everything(root: Path) -> None:
    """Opens the group and reads every array member."""
    group = fz.open_group(root)
    for name in group:
        member = group[name]
        if isinstance(member, fz.Array):
            member[...]


def _consolidated_v2(root: Path) -> Path:
    with quiet_zarr():
        group = zarr.open_group(str(root), mode="w", zarr_format=2)
        group.create_array("x", shape=(4,), chunks=(2,), dtype="i4")[...] = np.arange(4)
        zarr.consolidate_metadata(str(root))
    return root / ".zmetadata"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(metadata=[]), "metadata"),
        (lambda m: m["metadata"].update({"x/.zarray": [1, 2]}), "x/.zarray"),
        (lambda m: m["metadata"]["x/.zarray"].update(shape=[-1]), "x/.zarray"),
        (lambda m: m["metadata"]["x/.zarray"].update(chunks=[0]), "x/.zarray"),
        (lambda m: m["metadata"]["x/.zarray"].update(dtype="<q9"), "x"),
        (lambda m: m["metadata"].update({"x/.zattrs": "nope"}), "x/.zattrs"),
        (lambda m: m["metadata"].update({"../evil/.zarray": m["metadata"]["x/.zarray"]}), "../evil"),
        (lambda m: m["metadata"].update({"/abs/.zarray": m["metadata"]["x/.zarray"]}), "/abs"),
        (lambda m: m["metadata"].update({"a\\b/.zarray": m["metadata"]["x/.zarray"]}), "a\\\\b"),
        (lambda m: m["metadata"].update({"y/.zgroup": {"zarr_format": 3}}), "y/.zgroup"),
    ],
    ids=[
        "metadata-list",
        "entry-list",
        "entry-negative-shape",
        "entry-zero-chunk",
        "entry-bad-dtype",
        "entry-attrs-string",
        "entry-dotdot",
        "entry-absolute",
        "entry-backslash",
        "entry-group-format",
    ],
)
def test_inconsistent_v2_consolidated_metadata(tmp_path: Path, edit: Any, message: str) -> None:
    zmetadata = _consolidated_v2(tmp_path / "g.zarr")
    _edit(zmetadata, edit)
    with pytest.raises((fz.MetadataError, fz.UnsupportedCodecError)) as info:
        read_everything(tmp_path / "g.zarr")
    text = str(info.value)
    assert ".zmetadata" in text or isinstance(info.value, fz.UnsupportedCodecError)
    assert message.replace("\\\\", "\\") in text


def _consolidated_v3(root: Path) -> Path:
    with quiet_zarr():
        group = zarr.open_group(str(root), mode="w", zarr_format=3)
        group.create_array("x", shape=(4,), chunks=(2,), dtype="i4")[...] = np.arange(4)
        zarr.consolidate_metadata(str(root))
    return root / "zarr.json"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["consolidated_metadata"].update(metadata=[]), "metadata"),
        (lambda m: m["consolidated_metadata"].pop("metadata"), "metadata"),
        (lambda m: m["consolidated_metadata"]["metadata"]["x"].pop("node_type"), "'x'"),
        (lambda m: m["consolidated_metadata"]["metadata"]["x"].update(shape=[-1]), "'x'"),
        (lambda m: m["consolidated_metadata"]["metadata"]["x"].update(zarr_format=2), "'x'"),
        (lambda m: m["consolidated_metadata"]["metadata"].update({"../evil": {}}), "../evil"),
        (lambda m: m["consolidated_metadata"]["metadata"].update({"/abs": {}}), "/abs"),
        (lambda m: m["consolidated_metadata"]["metadata"].update({"a\x00b": {}}), "a\x00b"),
    ],
    ids=[
        "metadata-list",
        "no-metadata",
        "no-node-type",
        "negative-shape",
        "format-2",
        "dotdot",
        "absolute",
        "nul",
    ],
)
def test_inconsistent_v3_consolidated_metadata(tmp_path: Path, edit: Any, message: str) -> None:
    zarr_json = _consolidated_v3(tmp_path / "g.zarr")
    _edit(zarr_json, edit)
    with pytest.raises(fz.MetadataError) as info:
        read_everything(tmp_path / "g.zarr")
    assert "zarr.json" in str(info.value)
    assert message in str(info.value)


# --- paths -------------------------------------------------------------------------------------

BAD_PATHS = ["../outside", "a/../../outside", "/etc", "a\\..\\b", "a\x00b", "./x/../../y", "x/./../.."]


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    """A store next to a directory holding an array that must stay unreachable from it."""
    write_array(tmp_path / "outside", DATA, chunks=(2, 3), zarr_format=3)
    with quiet_zarr():
        group = zarr.open_group(str(tmp_path / "store.zarr"), mode="w", zarr_format=3)
        group.create_array("x", shape=(4, 6), chunks=(2, 3), dtype="f8")[...] = DATA
    return tmp_path / "store.zarr"


@pytest.mark.parametrize("bad", BAD_PATHS, ids=repr)
def test_member_paths_cannot_leave_the_store(nested: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid path"):
        fz.open_array(nested, path=bad)
    with pytest.raises(ValueError, match="not a valid path"):
        fz.open_group(nested, path=bad)
    group = fz.open_group(nested)
    with pytest.raises((KeyError, ValueError)):
        group[bad]
    assert group.get(bad) is None or isinstance(group.get(bad), fz.Array) is False


def test_symlinked_chunk_leaving_the_store_is_refused(nested: Path) -> None:
    outside_chunk = nested.parent / "outside" / "c" / "0" / "0"
    target = nested / "x" / "c" / "1" / "1"
    target.unlink()
    target.symlink_to(outside_chunk)
    arr = fz.open_group(nested)["x"]
    with pytest.raises(fz.FastzarrError, match="outside") as info:
        arr[...]
    assert "c/1/1" in str(info.value)
    with pytest.raises(fz.FastzarrError, match="outside"):
        arr[3, 4]
    assert_same(arr[:2], DATA[:2])


def test_symlinked_metadata_and_directories_leaving_the_store_are_refused(nested: Path) -> None:
    (nested / "link").symlink_to(nested.parent / "outside", target_is_directory=True)
    with pytest.raises(fz.FastzarrError, match="outside"):
        fz.open_array(nested, path="link")
    with pytest.raises(fz.FastzarrError, match="outside"):
        fz.open_group(nested)["link"]
    meta = nested / "x" / "zarr.json"
    meta.unlink()
    meta.symlink_to(nested.parent / "outside" / "zarr.json")
    with pytest.raises(fz.FastzarrError, match="outside"):
        fz.open_array(nested, path="x")


def test_symlinks_inside_the_store_and_to_the_store_work(nested: Path, tmp_path: Path) -> None:
    chunk = nested / "x" / "c" / "1" / "1"
    os.rename(chunk, nested / "x" / "c" / "1" / "moved")
    chunk.symlink_to(nested / "x" / "c" / "1" / "moved")
    alias = tmp_path / "alias.zarr"
    alias.symlink_to(nested, target_is_directory=True)
    assert_same(fz.open_array(alias, path="x")[...], DATA)
    assert_same(fz.open_array(nested / "x")[...], DATA)


# --- decoded length on every read path -----------------------------------------------------------

# (zarr_format, compressors, filters, numcodecs codecs that write the same chunk bytes, outermost last)
WRONG_LENGTH_FAMILIES: dict[str, tuple[int, Any, Any, list[Any]]] = {
    "v2-zstd": (2, numcodecs.Zstd(level=1), None, [numcodecs.Zstd(level=1)]),
    "v2-gzip": (2, numcodecs.GZip(), None, [numcodecs.GZip()]),
    "v2-zlib": (2, numcodecs.Zlib(), None, [numcodecs.Zlib()]),
    "v2-bz2": (2, numcodecs.BZ2(), None, [numcodecs.BZ2()]),
    "v2-lz4": (2, numcodecs.LZ4(), None, [numcodecs.LZ4()]),
    "v2-delta-blosc": (
        2,
        numcodecs.Blosc(cname="zstd", shuffle=1),
        [numcodecs.Delta(dtype="<f8")],
        [numcodecs.Delta(dtype="<f8"), numcodecs.Blosc(cname="zstd", shuffle=1)],
    ),
    "v3-zstd": (3, ZstdCodec(level=1), None, [numcodecs.Zstd(level=1)]),
    "v3-gzip": (3, GzipCodec(), None, [numcodecs.GZip()]),
}


def _wrong_length_dataset(root: Path, family: str, elements: int) -> tuple[str, str]:
    """A dataset whose variable ``v`` (4 x 6 float64, chunks 2 x 3, coordinates ``y``, ``x``) has its
    chunk (1, 1) replaced by a valid stream of the right codecs holding ``elements`` elements
    instead of 6. Returns the store path and the chunk key."""
    zarr_format, compressors, filters, codecs = WRONG_LENGTH_FAMILIES[family]
    ds = xr.Dataset(
        {"v": (("y", "x"), DATA)},
        coords={"y": np.arange(4.0) * 10, "x": np.arange(6.0) * 10},
    )
    encoding: dict[str, Any] = {"chunks": (2, 3), "compressors": compressors}
    if filters is not None:
        encoding["filters"] = filters
    path = str(root / f"{family}.zarr")
    with quiet_zarr():
        ds.to_zarr(path, zarr_format=zarr_format, mode="w", consolidated=True, encoding={"v": encoding})
    chunk, key = chunk_file(path + "/v", zarr_format)
    payload: Any = np.arange(elements, dtype="<f8") + 100
    for codec in codecs:
        payload = codec.encode(payload)
    chunk.write_bytes(bytes(payload))
    return path, key


@pytest.mark.parametrize("elements", [5, 7, 12], ids=["fewer", "one-more", "twice"])
@pytest.mark.parametrize("family", list(WRONG_LENGTH_FAMILIES), ids=str)
def test_wrong_decoded_length_is_corrupt_on_every_read_path(
    tmp_path: Path, family: str, elements: int
) -> None:
    """A chunk that decodes to fewer or more bytes than it holds is refused however it is read,
    even by a point whose bytes the short stream does hold (element 4 of the chunk)."""
    path, key = _wrong_length_dataset(tmp_path, family, elements)
    arr = fz.open_array(path + "/v")
    reads: dict[str, Callable[[], Any]] = {
        "whole": lambda: arr[...],
        "point": lambda: arr[3, 4],
        "row": lambda: arr[3],
        "box": lambda: arr[2:, 3:],
        "strided": lambda: arr[::3, ::4],
        "oindex": lambda: arr.oindex[[2, 3], [4]],
        "read_many": lambda: fz.read_many([(arr, (3, 4)), (arr, (0, 0))]),
        "extract_points": lambda: fz.extract_points(path, points={"y": [30.0], "x": [40.0]}),
        "load": lambda: fz.load(fz.open_zarr(path).v[2:, 3:]),
        "engine": lambda: xr.open_dataset(path, engine="fastzarr").v[3, 4].values,
    }
    outcomes = {}
    for name, read in reads.items():
        try:
            read()
            outcomes[name] = "read"
        except fz.CorruptChunkError as e:
            outcomes[name] = "corrupt" if key in str(e) else f"no key: {e}"
    assert outcomes == dict.fromkeys(reads, "corrupt")
    # The chunks around it still read.
    assert_same(arr[:2], DATA[:2])


# --- blosc decode scratch ------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_blosc_blocksize_beyond_the_chunk_is_corrupt_without_growing(
    tmp_path: Path, zarr_format: int
) -> None:
    """A small zstd + shuffle blosc chunk whose header claims 4 GiB blocks: refused on every read
    path, and no decode thread allocates (or keeps) scratch for such a block."""
    data = np.round(np.sin(np.arange(8 * 64 * 256) / 50.0) * 100).astype("f4").reshape(8, 64, 256)
    compressor = (
        numcodecs.Blosc(cname="zstd", clevel=5, shuffle=1)
        if zarr_format == 2
        else BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
    )
    path = write_array(
        tmp_path / "b.zarr", data, chunks=(1, 64, 256), zarr_format=zarr_format, compressors=compressor
    )
    keys = []
    for i in range(data.shape[0]):
        chunk, key = chunk_file(path, zarr_format, (i, 0, 0))
        raw = bytearray(chunk.read_bytes())
        assert raw[2] & 0x01  # byte-shuffled
        assert raw[2] >> 5 == 4  # zstd
        raw[8:12] = (0xFFFFFFF0).to_bytes(4, "little")
        chunk.write_bytes(bytes(raw))
        keys.append(key)
    assert len(raw) < 32_000
    script = textwrap.dedent(
        """
        import json, resource, sys
        import fastzarr as fz
        import numpy as np
        path, keys = sys.argv[1], json.loads(sys.argv[2])
        fz.set_num_threads(4)
        arr = fz.open_array(path)
        arr.read(np.s_[0, 0, 0:0])  # warm up: pool, imports
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcome = []
        reads = [
            lambda: arr[...],
            lambda: arr[:, 10, 10],
            lambda: arr[3, 5:9, 100:200],
            lambda: fz.read_many([(arr, (i, 1, 1)) for i in range(8)]),
            lambda: arr.read(max_memory="64MB"),
        ]
        for read in reads:
            try:
                read()
                outcome.append("read")
            except fz.CorruptChunkError as e:
                outcome.append("corrupt" if any(k in str(e) for k in keys) else str(e))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({"outcome": outcome, "grown_kib": grown}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, path, json.dumps(keys)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outcome"] == ["corrupt"] * 5
    assert result["grown_kib"] < 64 * 1024, result


# --- allocations sized by lying metadata -------------------------------------------------------

# Run in a child whose address space is limited: an allocation the metadata asks for and the
# machine cannot give must be a typed error there, not an abort of the process.
CHILD = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import fastzarr as fz
    path, how = sys.argv[1], sys.argv[2]
    try:
        if how in ("extract_points", "load", "engine"):
            # The same array as the variable "v" of a dataset (see _as_dataset).
            import xarray as xr
            if how == "extract_points":
                fz.extract_points(path, points={"y": [0, 1], "x": [0, 1]}, method=None)
            elif how == "load":
                fz.load(fz.open_zarr(path, consolidated=False).isel(y=slice(0, 2), x=slice(0, 2)))
            else:
                xr.open_dataset(path, engine="fastzarr", consolidated=False).v[:2, :2].load()
            print("no error")
            sys.exit(0)
        arr = fz.open_array(path)
        corner = (0,) * arr.ndim
        if how == "whole":
            arr[...]
        elif how == "point":
            arr[corner]
        elif how == "box":
            arr[tuple(slice(0, 2) for _ in corner)]
        elif how == "oindex":
            arr.oindex[tuple([0, 1] for _ in corner)]
        elif how == "read_many":
            fz.read_many([(arr, corner), (arr, (slice(0, 2),) * arr.ndim)])
        print("no error")
    except fz.FastzarrError as err:
        print(type(err).__name__, err)
    """
)


def _run_limited(path: str, how: str) -> tuple[int, str, str]:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, path, how],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return child.returncode, child.stdout.strip(), child.stderr


def _shrink_metadata(path: str, zarr_format: int, shape: list[int], chunks: list[int]) -> None:
    if zarr_format == 2:
        _edit(Path(path) / ".zarray", _set("shape", shape))
        _edit(Path(path) / ".zarray", _set("chunks", chunks))
    else:
        _edit(Path(path) / "zarr.json", _set("shape", shape))
        _edit(Path(path) / "zarr.json", _set("chunk_grid.configuration.chunk_shape", chunks))


def _huge_chunk_store(tmp_path: Path, case: str) -> str:
    small = np.arange(16, dtype="f4").reshape(4, 4)
    if case in ("v2-1e9-gzip", "v3-1e9-crc32c"):
        zarr_format = 2 if case.startswith("v2") else 3
        compressors: Any = numcodecs.GZip() if zarr_format == 2 else [GzipCodec(), Crc32cCodec()]
        path = write_array(
            tmp_path / "a.zarr", small, chunks=(4, 4), zarr_format=zarr_format, compressors=compressors
        )
        _shrink_metadata(path, zarr_format, [10**9, 10**9], [10**9, 10**9])
        return path
    if case == "64GiB-chunk":
        path = write_array(
            tmp_path / "a.zarr",
            small.astype("f8"),
            chunks=(4, 4),
            zarr_format=2,
            compressors=numcodecs.Zstd(),
        )
        _shrink_metadata(path, 2, [2**16, 2**17], [2**16, 2**17])
        return path
    # A sharded array of 10^10 one-element inner chunks (an index of 160 GB) whose shard is 64 bytes.
    path = write_array(
        tmp_path / "a.zarr", small, chunks=(1, 1), shards=(4, 4), zarr_format=3, compressors=None
    )
    _shrink_metadata(path, 3, [100_000, 100_000], [100_000, 100_000])
    for chunk in (Path(path) / "c").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    (Path(path) / "c" / "0").mkdir(parents=True, exist_ok=True)
    (Path(path) / "c" / "0" / "0").write_bytes(bytes(64))
    return path


def _as_dataset(path: str) -> str:
    """Moves the array at the root of ``path`` into the variable ``v`` (dims ``y``, ``x``) of a
    group, so the dataset readers read the same chunks."""
    root = Path(path)
    member = root / "v"
    member.mkdir()
    for entry in list(root.iterdir()):
        if entry != member:
            entry.rename(member / entry.name)
    if (member / ".zarray").exists():
        (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (member / ".zattrs").write_text(json.dumps({"_ARRAY_DIMENSIONS": ["y", "x"]}))
    else:
        group = {"zarr_format": 3, "node_type": "group", "attributes": {}}
        (root / "zarr.json").write_text(json.dumps(group))
        _edit(member / "zarr.json", _set("dimension_names", ["y", "x"]))
    return path


DATASET_READS = ["extract_points", "load", "engine"]


@pytest.mark.parametrize("how", ["whole", "point", "box", "oindex", "read_many", *DATASET_READS])
@pytest.mark.parametrize("case", ["v2-1e9-gzip", "v3-1e9-crc32c", "64GiB-chunk", "sharded-64-byte-shard"])
def test_metadata_sized_allocations_fail_typed_under_a_memory_limit(
    tmp_path: Path, case: str, how: str
) -> None:
    path = _huge_chunk_store(tmp_path, case)
    if how in DATASET_READS:
        path = _as_dataset(path)
    code, out, err = _run_limited(path, how)
    assert code == 0, (code, out, err[-2000:])
    sharded_part = case.startswith("sharded") and how != "whole"
    # fz.open_zarr gives one dask task per inner chunk: 10^10 of them are refused before any read.
    expected = "CorruptChunkError" if sharded_part and how != "load" else "MemoryBudgetError"
    assert out.startswith(expected), (out, err[-2000:])
    assert "a.zarr" in out, out
    assert err == "", err[-2000:]


def test_huge_raw_elements_are_refused_on_open(tmp_path: Path) -> None:
    """``|V1000000000000`` with ``fill_value: null``: opening must not build a terabyte of zeros."""
    path = write_array(tmp_path / "a.zarr", np.arange(4.0), chunks=(2,), zarr_format=2)
    _edit(Path(path) / ".zarray", _set("dtype", "|V1000000000000"))
    _edit(Path(path) / ".zarray", _set("fill_value", None))
    code, out, err = _run_limited(path, "point")
    assert code == 0, (code, out, err[-2000:])
    assert out.startswith("MetadataError"), out
    assert "1000000000000 bytes" in out, out
    assert err == "", err[-2000:]


def _lying_shard_index(tmp_path: Path, offset: int, length: int, index_location: str = "end") -> str:
    """A sharded array whose first inner chunk's index entry is replaced, checksum kept valid."""
    data = np.arange(64, dtype="f4").reshape(8, 8)
    path = write_array(
        tmp_path / "a.zarr", data, chunks=(2, 2), shards=(4, 4), zarr_format=3, compressors=None
    )
    if index_location == "start":
        _edit(Path(path) / "zarr.json", _set("codecs.0.configuration.index_location", "start"))
    shard_path = Path(path) / "c" / "0" / "0"
    shard = shard_path.read_bytes()
    index_bytes = 4 * 16
    index = bytearray(shard[-(index_bytes + 4) : -4])
    index[:16] = offset.to_bytes(8, "little") + length.to_bytes(8, "little")
    checked = bytes(numcodecs.CRC32C().encode(bytes(index)))
    shard_path.write_bytes(shard[: -(index_bytes + 4)] + checked)
    return path


@pytest.mark.parametrize(
    ("offset", "length"),
    [(2**64 - 16, 16), (0, 2**64 - 16), (2**64 - 16, 2**64 - 16), (2**63, 16), (1000, 16), (0, 2**40)],
    ids=["offset-near-2^64", "length-near-2^64", "both", "offset-2^63", "past-the-end", "length-1TiB"],
)
def test_lying_shard_index_is_a_corrupt_chunk(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], offset: int, length: int
) -> None:
    """zarrs trusts the index's entries (its checksum only proves they were written so): an
    offset near 2^64 panicked inside it, a length near 2^64 made it allocate that much, an
    entry past the shard read what was there. Each read path now raises CorruptChunkError
    naming the shard, and nothing reaches stderr."""
    path = _lying_shard_index(tmp_path, offset, length)
    arr = fz.open_array(path)
    data = np.arange(64, dtype="f4").reshape(8, 8)
    for read in (
        lambda: arr[...],
        lambda: arr[0, 0],
        lambda: arr[0:2, 0:2],
        lambda: arr.oindex[[0, 1], [0, 3]],
        lambda: fz.read_many([(arr, (0, 0))]),
        lambda: arr[:4, :4],
    ):
        with pytest.raises(fz.CorruptChunkError, match=r"c/0/0.*shard|shard.*c/0/0") as info:
            read()
        assert "'a.zarr'" in str(info.value) or "a.zarr" in str(info.value)
    assert_same(arr[5, 5], data[5, 5])
    assert_same(arr[4:, 4:], data[4:, 4:])
    captured = capfd.readouterr()
    assert captured.err == ""
