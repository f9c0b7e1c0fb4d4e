"""Variable-length strings and bytes (v2 ``|O`` with ``vlen-utf8``/``vlen-bytes``, v3 ``string``
and ``variable_length_bytes``), read by fastzarr itself: equal to zarr-python on every read path
(StringDType for strings, object arrays of bytes), through the xarray engine without falling back
to zarr-python, and damaged chunks refused with the chunk named."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastzarr as fz
import fastzarr.xarray_backend as backend
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.dtype import VariableLengthBytes

from tests.conftest import http_server, quiet_zarr

SHAPE, CHUNKS = (7, 5), (3, 2)

WORDS = ["", "a", "bé", "日本語", "tab\tand\nnewline", "x" * 300, "\x00nul", "🙂"]
TEXT = np.array([WORDS[(i * 7 + i // 3) % len(WORDS)] + str(i % 4) * (i % 3) for i in range(35)]).reshape(
    SHAPE
)
BYTES = np.array(
    [w.encode() + bytes([i % 256]) * (i % 5) for i, w in enumerate(WORDS * 5)][:35], dtype=object
)
BYTES = BYTES.reshape(SHAPE)

LAYOUTS: dict[str, dict[str, Any]] = {
    "v2-zstd": {"zarr_format": 2},
    "v2-blosc": {"zarr_format": 2, "compressors": numcodecs.Blosc(cname="lz4", shuffle=0)},
    "v2-none": {"zarr_format": 2, "compressors": None},
    "v3-zstd": {"zarr_format": 3},
    "v3-gzip": {"zarr_format": 3, "compressors": zarr.codecs.GzipCodec()},
    "v3-none": {"zarr_format": 3, "compressors": None},
    "v3-sharded": {"zarr_format": 3, "shards": (6, 4)},
}


def write(root: Path, kind: str, layout: str, fill: Any = None) -> tuple[str, np.ndarray]:
    """An array with chunk (0, 0) never written, so that it reads as the fill value."""
    data = TEXT if kind == "str" else BYTES
    dtype: Any = str if kind == "str" else VariableLengthBytes()
    path = root / f"{kind}-{layout}-{fill!r}.zarr"
    if path.exists():  # written by an earlier test of this module
        with quiet_zarr():
            return str(path), zarr.open_array(path, mode="r")[...]
    options = dict(LAYOUTS[layout])
    if fill is not None:
        options["fill_value"] = fill
    with quiet_zarr():
        z = zarr.create_array(path, shape=SHAPE, chunks=CHUNKS, dtype=dtype, **options)
        z[:, 2:] = data[:, 2:]
        z[3:, :2] = data[3:, :2]
        expected = zarr.open_array(path, mode="r")[...]
    return str(path), expected


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("strings")


async def awaited(read: Any, *args: Any) -> Any:
    """``read(*args)`` awaited in a running event loop (the awaitable is made in one)."""
    return await read(*args)


def same(got: Any, expected: Any) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.tolist() == expected.tolist()
    for value in got.ravel():
        assert type(value) is (str if got.dtype.kind == "T" else bytes)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_every_read_path_equals_zarr_python(root: Path, kind: str, layout: str) -> None:
    path, expected = write(root, kind, layout)
    arr = fz.open_array(path)
    assert arr.dtype == expected.dtype
    with quiet_zarr():
        assert arr.fill_value == zarr.open_array(path, mode="r").fill_value
    same(arr[...], expected)
    same(arr.read(), expected)
    assert arr[1, 3] == expected[1, 3]
    same(arr[1:6, ::2], expected[1:6, ::2])
    same(arr[::-2, 4:0:-3], expected[::-2, 4:0:-3])
    same(arr[-1], expected[-1])
    same(arr.oindex[[0, 6, 2, 2], [4, 0]], expected[np.ix_([0, 6, 2, 2], [4, 0])])
    mask = (np.arange(35) % 3 == 1).reshape(SHAPE)
    same(arr[mask], expected[mask])
    same(arr.vindex[[0, 6, 3], [4, 0, 1]], expected[[0, 6, 3], [4, 0, 1]])
    same(arr[2:2], expected[2:2])
    out = np.empty((7, 2), dtype=expected.dtype)
    assert arr.read((slice(None), slice(1, 3)), out=out) is out
    same(out, expected[:, 1:3])
    many, stats = fz.read_many(
        [(arr, (slice(None), 1)), (arr, ..., {0: [6, 0, 6], 1: [1, 4, 1]}), (arr, (0, slice(None)))],
        return_stats=True,
    )
    same(many[0], expected[:, 1])
    same(many[1], expected[[6, 0, 6], [1, 4, 1]])
    same(many[2], expected[0])
    # shards hold the unwritten inner chunk; unsharded, its chunk is missing from the store
    assert stats.chunks > 0
    assert stats.chunks_missing >= (0 if "shard" in layout else 1)
    same(asyncio.run(awaited(arr.read_async, (slice(1, 4), slice(None)))), expected[1:4])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_fill_values_as_zarr_python_reads_them(root: Path, zarr_format: int) -> None:
    layout = f"v{zarr_format}-zstd"
    path, expected = write(root, "str", layout, fill="zz")
    assert (expected[:3, :2] == "zz").all()
    arr = fz.open_array(path)
    assert arr.fill_value == "zz"
    same(arr[...], expected)
    path, expected = write(root, "bytes", layout, fill=b"\x01q")
    same(fz.open_array(path)[...], expected)


def test_strings_mixed_with_numbers_in_one_pass(root: Path) -> None:
    path, expected = write(root, "str", "v3-zstd")
    numbers = root / "numbers.zarr"
    with quiet_zarr():
        z = zarr.create_array(numbers, shape=(10,), chunks=(3,), dtype="f8", zarr_format=3)
        z[...] = np.arange(10.0)
    strings, floats = fz.open_array(path), fz.open_array(numbers)
    got = fz.read_many([(floats, slice(2, 9)), (strings, ...), (floats, ...)])
    np.testing.assert_array_equal(got[0], np.arange(2.0, 9.0))
    same(got[1], expected)
    np.testing.assert_array_equal(got[2], np.arange(10.0))
    got = asyncio.run(awaited(fz.read_many_async, [(strings, (0,)), (floats, slice(0, 2))]))
    same(got[0], expected[0])
    np.testing.assert_array_equal(got[1], [0.0, 1.0])


def group_with_strings(root: Path, zarr_format: int) -> Path:
    path = root / f"group-{zarr_format}.zarr"
    if path.exists():  # written by an earlier test of this module
        return path
    ds = xr.Dataset(
        {
            "name": (("station",), np.array(["Zürich", "", "Lyon", "東京"], dtype=object)),
            "raw": (("station",), np.array([b"a", b"", b"\x00b", b"cc"], dtype=object)),
            "t": (("station", "time"), np.arange(12.0).reshape(4, 3)),
        },
        coords={"station": ["s1", "s2", "s3", "s4"], "time": [0, 1, 2]},
    )
    with quiet_zarr():
        ds.to_zarr(path, zarr_format=zarr_format, mode="w", encoding={"name": {"chunks": (3,)}})
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_the_engine_reads_strings_itself_like_xarrays(
    root: Path, zarr_format: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = group_with_strings(root, zarr_format)

    def no_fallback(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read through zarr-python")

    monkeypatch.setattr(backend.FastzarrStore, "_zarr_python_variable", no_fallback)
    ours = xr.open_dataset(path, engine="fastzarr")
    with quiet_zarr():
        theirs = xr.open_dataset(path, engine="zarr")
    for name in ("name", "raw", "station"):
        assert ours[name].dtype == theirs[name].dtype, name
        assert ours[name].encoding == theirs[name].encoding, name
    xr.testing.assert_identical(ours.load(), theirs.load())
    loaded = fz.load(fz.open_zarr(path))
    xr.testing.assert_identical(loaded, theirs)
    assert isinstance(loaded["name"].data, np.ndarray)
    xr.testing.assert_identical(
        xr.open_dataset(path, engine="fastzarr").isel(station=[3, 0]).load(), theirs.isel(station=[3, 0])
    )
    if zarr_format == 2:
        return  # xarray's own engine cannot write a StringDType variable opened from v2
    # open -> to_zarr writes the same metadata as xarray's own round trip
    with quiet_zarr():
        xr.open_dataset(path, engine="fastzarr").to_zarr(tmp_path / "ours.zarr", zarr_format=3)
        xr.open_dataset(path, engine="zarr").to_zarr(tmp_path / "theirs.zarr", zarr_format=3)
    for var in ("name", "raw", "station"):
        assert json.loads((tmp_path / "ours.zarr" / var / "zarr.json").read_text()) == json.loads(
            (tmp_path / "theirs.zarr" / var / "zarr.json").read_text()
        )


def test_extract_points_carries_a_string_variable(root: Path) -> None:
    path = group_with_strings(root, 3)
    got = fz.extract_points(str(path), points={"station": ["s4", "s2"]}, method=None)
    with quiet_zarr():
        expected = xr.open_dataset(path, engine="zarr").sel(station=["s4", "s2"]).load()
    assert got.sizes["file_id"] == 1
    for name in ("name", "raw", "t"):
        assert got[name].isel(file_id=0).values.tolist() == expected[name].values.tolist(), name


# --------------------------------------------------------------------------------------------
# damaged and unsupported


def vlen(elements: list[bytes], count: int | None = None) -> bytes:
    out = struct.pack("<I", len(elements) if count is None else count)
    for e in elements:
        out += struct.pack("<I", len(e)) + e
    return out


def raw_store(root: Path, name: str, zarr_format: int = 3, utf8: bool = True) -> tuple[Path, Path]:
    """A 1-D array of 4 elements in chunks of 2, without compression: (store, chunk 0's file)."""
    path = root / name
    with quiet_zarr():
        z = zarr.create_array(
            path,
            shape=(4,),
            chunks=(2,),
            dtype=str if utf8 else VariableLengthBytes(),
            zarr_format=zarr_format,
            compressors=None,
        )
        z[...] = (
            np.array(["ab", "c", "d", "e"]) if utf8 else np.array([b"ab", b"c", b"d", b"e"], dtype=object)
        )
    chunk = path / ("0" if zarr_format == 2 else "c/0")
    assert chunk.read_bytes() == vlen([b"ab", b"c"])
    return path, chunk


DAMAGE = {
    "count": (vlen([b"ab", b"c"], count=3), "states 3 elements"),
    "huge-count": (vlen([b"ab", b"c"], count=2**32 - 1), "states"),
    "runs-past": (struct.pack("<II", 2, 1000) + b"ab", "cannot hold|runs past"),
    "length-max": (struct.pack("<III", 2, 2**32 - 1, 0) + b"abcd", "runs past"),
    "trailing": (vlen([b"ab", b"c"]) + b"zz", "follow the last"),
    "short": (b"\x02\x00", "too few"),
    "utf8": (vlen([b"\xff\xfe", b"c"]), "UTF-8"),
}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_chunks_raise_naming_the_chunk(root: Path, damage: str, zarr_format: int) -> None:
    path, chunk = raw_store(root, f"damaged-{damage}-{zarr_format}.zarr", zarr_format)
    payload, reason = DAMAGE[damage]
    chunk.write_bytes(payload)
    arr = fz.open_array(str(path))
    key = chunk.relative_to(path).as_posix()
    for read in (lambda: arr[...], lambda: arr[0], lambda: fz.read_many([(arr, slice(0, 1))])):
        with pytest.raises(fz.CorruptChunkError, match=reason) as caught:
            read()
        assert key in str(caught.value)
        assert str(path) in str(caught.value)
    np.testing.assert_array_equal(arr[2:], np.array(["d", "e"], dtype="T"))


def test_invalid_utf8_is_bytes_in_a_bytes_array(root: Path) -> None:
    path, chunk = raw_store(root, "bytes-ff.zarr", utf8=False)
    chunk.write_bytes(vlen([b"\xff\xfe", b""]))
    same(fz.open_array(str(path))[:2], np.array([b"\xff\xfe", b""], dtype=object))


def test_a_compressed_chunk_claiming_a_huge_size_is_refused(root: Path) -> None:
    path = root / "bomb.zarr"
    with quiet_zarr():
        z = zarr.create_array(path, shape=(4,), chunks=(4,), dtype=str, zarr_format=3)
        z[...] = np.array(["a", "b", "c", "d"])
    # 2 GiB of zeros in 64 kB: a zstd frame that states no size, of run-length blocks of
    # 128 KiB each (3-byte block header, then the byte repeated). Decoding must stop at a bound.
    frame = struct.pack("<IBB", 0xFD2FB528, 0x00, 0x38)  # no content size; 128 KiB window
    block = (1 << 1) | (131072 << 3)  # an RLE block of 131072 bytes
    blocks = 16384
    frame += (struct.pack("<I", block)[:3] + b"\x00") * (blocks - 1)
    frame += struct.pack("<I", block | 1)[:3] + b"\x00"  # the last block
    (path / "c" / "0").write_bytes(frame)
    with pytest.raises(fz.CorruptChunkError, match=r"c/0.*more than the 1073741824 bytes"):
        fz.open_array(str(path))[...]


def test_other_object_codecs_are_refused_by_name(root: Path) -> None:
    path, _ = raw_store(root, "json.zarr", zarr_format=2)
    meta = json.loads((path / ".zarray").read_text())
    for filters, match in (
        ([{"id": "json2"}], "json2"),
        ([{"id": "vlen-array", "dtype": "<i4"}], "vlen-array"),
        (None, "object codec"),
    ):
        meta["filters"] = filters
        (path / ".zarray").write_text(json.dumps(meta))
        with pytest.raises(fz.UnsupportedCodecError, match=match):
            fz.open_array(str(path))


# --------------------------------------------------------------------------------------------
# over HTTP


@pytest.fixture(scope="module")
def http_root(root: Path) -> Iterator[str]:
    with http_server(root) as address:
        yield f"http://{address}"


@pytest.mark.parametrize("layout", ["v2-zstd", "v3-sharded"])
def test_strings_over_http_equal_local(root: Path, http_root: str, layout: str) -> None:
    path, expected = write(root, "str", layout)
    arr = fz.open_array(f"{http_root}/{Path(path).name}")
    same(arr[...], expected)
    same(arr.oindex[[6, 1], [0, 4]], expected[np.ix_([6, 1], [0, 4])])
