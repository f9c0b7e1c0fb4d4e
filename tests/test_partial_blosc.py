"""Partial blosc decoding: a few elements of a large chunk decode only the blocks holding them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
from conftest import write_array
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIELD = (3, 181, 360)  # ERA5-like: each chunk is one lat/lon field


def blosc(zarr_format: int, shuffle: int) -> Any:
    if zarr_format == 2:
        return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=shuffle, blocksize=16384)
    names = ["noshuffle", "shuffle", "bitshuffle"]
    return zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle=names[shuffle], blocksize=16384)


@pytest.fixture(
    scope="module", params=[(2, 0), (2, 1), (2, 2), (3, 1)], ids=lambda p: f"v{p[0]}-shuffle{p[1]}"
)
def field(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[fz.Array, np.ndarray]:
    zarr_format, shuffle = request.param
    data = np.random.default_rng(7).standard_normal(FIELD).astype("f4")
    path = write_array(
        tmp_path_factory.mktemp("era") / "t2m.zarr",
        data,
        chunks=(1, *FIELD[1:]),
        zarr_format=zarr_format,
        compressors=blosc(zarr_format, shuffle),
    )
    return fz.open_array(path), data


def test_points_equal_full_decode_and_touch_few_blocks(field: tuple[fz.Array, np.ndarray]) -> None:
    arr, data = field
    block_elements = 16384 // 4
    # Points on and around every block boundary of the flattened field, and the corners.
    flat = sorted({0, data[0].size - 1} | {b * block_elements + d for b in range(1, 6) for d in (-1, 0, 1)})
    points = [np.unravel_index(i, FIELD[1:]) for i in flat if i < data[0].size]
    results, stats = fz.read_many(
        [(arr, (slice(None), int(y), int(x))) for y, x in points], return_stats=True
    )
    for got, (y, x) in zip(results, points, strict=True):
        np.testing.assert_array_equal(got, data[:, y, x])
    assert stats.chunks == FIELD[0]
    assert stats.chunks_partial == FIELD[0]
    assert 0 < stats.blocks_decoded < stats.blocks_total
    assert stats.bytes_decoded < data.nbytes


def test_one_point_decodes_one_block_per_chunk(field: tuple[fz.Array, np.ndarray]) -> None:
    arr, data = field
    got, stats = fz.read_many([(arr, (slice(None), 90, 180))], return_stats=True)
    np.testing.assert_array_equal(got[0], data[:, 90, 180])
    assert stats.blocks_decoded == FIELD[0]
    assert stats.bytes_decoded == FIELD[0] * 16384


def test_row_and_box_reads_match(field: tuple[fz.Array, np.ndarray]) -> None:
    arr, data = field
    np.testing.assert_array_equal(arr[1, 100], data[1, 100])
    np.testing.assert_array_equal(arr[:, 40:60, 300:], data[:, 40:60, 300:])
    np.testing.assert_array_equal(arr[2, ::7, ::-11], data[2, ::7, ::-11])


@pytest.mark.parametrize(
    ("offset", "value"),
    [(16, 0xFFFFFFFF), (16, 0), (8, 1), (4, 1)],
    ids=["block-start-past-end", "block-start-in-header", "blocksize-lies", "nbytes-lies"],
)
def test_lying_blosc_headers_are_corrupt_chunks(tmp_path: Path, offset: int, value: int) -> None:
    data = np.random.default_rng(0).standard_normal((1, 64, 256)).astype("f4")
    path = write_array(tmp_path / "a.zarr", data, chunks=(1, 64, 256), zarr_format=2, compressors=blosc(2, 1))
    chunk = Path(path) / "0.0.0"
    raw = bytearray(chunk.read_bytes())
    raw[offset : offset + 4] = value.to_bytes(4, "little")
    chunk.write_bytes(bytes(raw))
    arr = fz.open_array(path)
    with pytest.raises(fz.CorruptChunkError, match=r"0\.0\.0"):
        arr[0, 10, 10]


# --- block by block and whole accept the same chunks ---------------------------------------------

MUTATED_SHAPE = (1, 256, 512)  # one 512 kB float32 chunk of 16 kB to 64 kB blocks
COMPRESSORS = [
    (cname, shuffle) for cname in ("blosclz", "lz4", "lz4hc", "zlib", "zstd") for shuffle in (0, 1, 2)
]


@pytest.fixture(scope="module")
def mutable_stores(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, int], tuple[str, bytes, np.ndarray]]:
    """One single-chunk store per blosc compressor and shuffle: path, original chunk bytes, data."""
    root = tmp_path_factory.mktemp("mutable")
    rng = np.random.default_rng(3)
    data = np.round(rng.standard_normal(MUTATED_SHAPE).cumsum(axis=2), 1).astype("f4")
    stores = {}
    for cname, shuffle in COMPRESSORS:
        codec = numcodecs.Blosc(cname=cname, clevel=5, shuffle=shuffle, blocksize=16384)
        path = write_array(
            root / f"{cname}-{shuffle}.zarr", data, chunks=MUTATED_SHAPE, zarr_format=2, compressors=codec
        )
        stores[(cname, shuffle)] = (path, (Path(path) / "0.0.0").read_bytes(), data)
    return stores


def _mutate(raw: bytes, kind: str, at: int, value: int) -> bytes:
    """One damage of a blosc chunk: a byte flipped, a header field set, cut short or extended."""
    out = bytearray(raw)
    if kind == "flip":
        out[at % len(out)] ^= value % 255 + 1
    elif kind == "header-byte":
        out[at % 4] = value % 256
    elif kind == "header-u32":
        start = 4 + 4 * (at % 4)  # nbytes, blocksize, cbytes or the first block start
        out[start : start + 4] = (value % 2**32).to_bytes(4, "little")
    elif kind == "truncate":
        del out[at % len(out) :]
    else:  # extend
        out += bytes([value % 256]) * (at % 64 + 1)
    return bytes(out)


def _reference(raw: bytes, nbytes: int) -> np.ndarray | None:
    """What numcodecs (zarr-python's blosc) decodes from ``raw``, or ``None`` where it refuses."""
    try:
        decoded = numcodecs.Blosc().decode(raw)
    except Exception:
        return None
    return np.frombuffer(decoded, dtype="f4").reshape(MUTATED_SHAPE) if len(decoded) == nbytes else None


def test_unmutated_point_reads_go_block_by_block(
    mutable_stores: dict[tuple[str, int], tuple[str, bytes, np.ndarray]],
) -> None:
    for path, _, data in mutable_stores.values():
        arr = fz.open_array(path)
        got, stats = fz.read_many([(arr, (0, 10, 10)), (arr, (0, 60, 500))], return_stats=True)
        assert [float(g) for g in got] == [data[0, 10, 10], data[0, 60, 500]]
        assert 0 < stats.blocks_decoded < stats.blocks_total


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    family=st.sampled_from(COMPRESSORS),
    kind=st.sampled_from(["flip", "header-byte", "header-u32", "truncate", "extend"]),
    at=st.integers(0, 2**20),
    value=st.integers(0, 2**32),
    points=st.lists(st.integers(0, int(np.prod(MUTATED_SHAPE)) - 1), min_size=1, max_size=3),
)
def test_block_by_block_and_whole_reads_accept_the_same_chunks(
    mutable_stores: dict[tuple[str, int], tuple[str, bytes, np.ndarray]],
    *,
    family: tuple[str, int],
    kind: str,
    at: int,
    value: int,
    points: list[int],
) -> None:
    """A damaged chunk read whole and read by points (block by block): each either raises
    CorruptChunkError or returns values, and the values agree: the points are the whole read's
    elements, and the whole read is what numcodecs decodes (or, where numcodecs refuses the
    chunk, the undamaged data)."""
    path, original, data = mutable_stores[family]
    raw = _mutate(original, kind, at, value)
    chunk = Path(path) / "0.0.0"
    chunk.write_bytes(raw)
    indices = [np.unravel_index(p, MUTATED_SHAPE) for p in points]
    refusals = []
    whole: np.ndarray | None = None
    partial: np.ndarray | None = None
    try:
        arr = fz.open_array(path)
        try:
            whole = arr[...]
        except fz.CorruptChunkError as e:
            refusals.append(str(e))
        try:
            got = fz.read_many([(arr, tuple(int(i) for i in ix)) for ix in indices])
            partial = np.array([float(v) for v in got], dtype="f4")
        except fz.CorruptChunkError as e:
            refusals.append(str(e))
    finally:
        chunk.write_bytes(original)
    assert all("0.0.0" in message for message in refusals), refusals
    reference = _reference(raw, data.nbytes)
    if whole is not None:
        np.testing.assert_array_equal(whole, reference if reference is not None else data)
    if partial is not None:
        source = whole if whole is not None else reference if reference is not None else data
        np.testing.assert_array_equal(partial, np.array([source[ix] for ix in indices], dtype="f4"))


@pytest.mark.parametrize(
    ("offset", "value"),
    [(2, 0x08), (0, 1), (1, 2), (8, 0x80000), (8, 6), (4, 16)],
    ids=[
        "flags-future",
        "version-1",
        "codec-version",
        "blocksize-past-nbytes",
        "blocksize-not-typesize",
        "nbytes",
    ],
)
@pytest.mark.parametrize(("cname", "shuffle"), [("zstd", 1), ("lz4", 1), ("blosclz", 0)])
def test_damaged_headers_are_corrupt_both_ways(
    mutable_stores: dict[tuple[str, int], tuple[str, bytes, np.ndarray]],
    cname: str,
    shuffle: int,
    offset: int,
    value: int,
) -> None:
    """A header field damaged (the flags byte of a later format, an unknown version, sizes that
    disagree): refused by the whole read and by block-by-block point reads alike, never read as
    unshuffled garbage by one of them."""
    path, original, _ = mutable_stores[(cname, shuffle)]
    raw = bytearray(original)
    if offset == 2:
        raw[2] |= value
    elif offset in (0, 1):
        raw[offset] = value
    else:
        raw[offset : offset + 4] = value.to_bytes(4, "little")
    chunk = Path(path) / "0.0.0"
    chunk.write_bytes(bytes(raw))
    try:
        arr = fz.open_array(path)
        outcomes = []
        for read in (
            lambda: arr[...],
            lambda: arr[0, 10, 10],
            lambda: fz.read_many([(arr, (0, 1, 2)), (arr, (0, 200, 7))]),
        ):
            try:
                read()
                outcomes.append("read")
            except fz.CorruptChunkError as e:
                outcomes.append("corrupt" if "0.0.0" in str(e) else str(e))
    finally:
        chunk.write_bytes(original)
    assert outcomes == ["corrupt"] * 3


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_header_naming_another_compressor_is_corrupt_both_ways(tmp_path: Path, zarr_format: int) -> None:
    """Flags that name lz4 on a zstd chunk: one block can decode as lz4 where the chunk cannot,
    so the compressor must match the codec's cname, whole or block by block."""
    data = np.arange(48 * 40, dtype="f8").reshape(48, 40)
    compressors = (
        numcodecs.Blosc(cname="zstd", shuffle=1, blocksize=512)
        if zarr_format == 2
        else zarr.codecs.BloscCodec(cname="zstd", shuffle="shuffle", blocksize=512)
    )
    path = write_array(
        tmp_path / "a.zarr", data, chunks=(24, 20), zarr_format=zarr_format, compressors=compressors
    )
    chunk = Path(path) / ("0.0" if zarr_format == 2 else "c/0/0")
    raw = bytearray(chunk.read_bytes())
    raw[2] = (raw[2] & 0x1F) | (1 << 5)  # lz4's compressor format
    chunk.write_bytes(bytes(raw))
    arr = fz.open_array(path)
    for read in (
        lambda: arr[...],
        lambda: arr[3, 0],
        lambda: arr.oindex[[3, 30], [0, 25]],
        lambda: arr[:24, :20],
    ):
        with pytest.raises(fz.CorruptChunkError, match="compressor"):
            read()
    np.testing.assert_array_equal(arr[24:, 20:], data[24:, 20:])


@pytest.fixture
def partial_decoding_restored() -> Any:
    yield
    fz.set_partial_decoding(True)


def _damage_last_block(path: str | Path, chunk: str) -> None:
    """Overwrites the payload of the chunk's last blosc block with bytes zstd cannot decode,
    leaving the header and block table as they were."""
    target = Path(path) / chunk
    raw = bytearray(target.read_bytes())
    nbytes, blocksize = int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[8:12], "little")
    blocks = -(-nbytes // blocksize)
    last = int.from_bytes(raw[16 + 4 * (blocks - 1) : 16 + 4 * blocks], "little")
    raw[last + 4 :] = b"\xff" * (len(raw) - last - 4)
    target.write_bytes(bytes(raw))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_damage_in_a_block_a_read_skips_is_found_once_partial_decoding_is_off(
    tmp_path: Path, zarr_format: int, partial_decoding_restored: None
) -> None:
    """Blosc blocks carry no checksum: a read that decodes block by block cannot see damage in a
    block it skips. With partial decoding off, every read decodes the whole chunk and refuses it,
    as zarr-python does."""
    data = np.random.default_rng(3).standard_normal(FIELD).astype("f4")
    path = write_array(
        tmp_path / "t.zarr",
        data,
        chunks=(1, *FIELD[1:]),
        zarr_format=zarr_format,
        compressors=blosc(zarr_format, 1),
    )
    _damage_last_block(path, "0.0.0" if zarr_format == 2 else "c/0/0/0")
    with pytest.raises(Exception, match="decompression"):
        zarr.open_array(path, mode="r")[0, 0, 0]
    arr = fz.open_array(path)
    assert fz.get_partial_decoding() is True
    got, stats = fz.read_many([(arr, (0, 0, 0))], return_stats=True)
    assert float(got[0]) == data[0, 0, 0]  # the block holding the point is intact
    assert 0 < stats.blocks_decoded < stats.blocks_total

    fz.set_partial_decoding(False)
    assert fz.get_partial_decoding() is False
    reads = {
        "point": lambda: arr[0, 0, 0],
        "row": lambda: arr[0, 0],
        "box": lambda: arr[0, :10, :10],
        "strided": lambda: arr[0, ::50, ::90],
        "oindex": lambda: arr.oindex[[0], [0, 1], [0, 5]],
        "points": lambda: fz.read_many([(arr, (0, 0, 0)), (arr, (0, 1, 1))]),
    }
    for name, read in reads.items():
        with pytest.raises(fz.CorruptChunkError, match=r"0\.0\.0|c/0/0/0") as raised:
            read()
        assert "t.zarr" in str(raised.value), name
    # Intact chunks still read, now whole.
    got, stats = fz.read_many([(arr, (1, 90, 180))], return_stats=True)
    assert float(got[0]) == data[1, 90, 180]
    assert stats.blocks_decoded == 0
    assert stats.bytes_decoded == data[1].nbytes

    fz.set_partial_decoding(True)
    assert float(arr[0, 0, 0]) == data[0, 0, 0]


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("off", False), ("1", True), ("", True)])
def test_partial_decoding_follows_the_environment(value: str, expected: bool) -> None:
    code = "import fastzarr as fz; print(fz.get_partial_decoding())"
    env = {**os.environ, "FASTZARR_PARTIAL_DECODING": value}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(expected)
