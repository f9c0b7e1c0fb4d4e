"""Partial blosc decoding: a few elements of a large chunk decode only the blocks holding them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import zarr
from conftest import write_array

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
