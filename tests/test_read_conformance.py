"""fastzarr reads exactly what zarr-python reads: every dtype, codec, layout and selection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs.numcodecs as numcodecs_wrappers
from conftest import NOTHING, assert_same, quiet_zarr, sample_data, write_array, zarr_read
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)


@dataclass
class Case:
    """One array to write with zarr-python and read back with both readers."""

    id: str
    zarr_format: int
    shape: tuple[int, ...] = (7, 5)
    chunks: tuple[int, ...] | None = (3, 2)
    dtype: Any = "f4"
    region: tuple[Any, ...] | None = None  # write only this part: other chunks stay missing
    options: dict[str, Any] = field(default_factory=dict)
    data: np.ndarray | None = None

    def write(self, root: Path) -> str:
        data = self.data if self.data is not None else sample_data(self.shape, self.dtype)
        return write_array(
            root / f"{self.id}.zarr",
            data,
            dtype=self.dtype,
            chunks=self.chunks,
            zarr_format=self.zarr_format,
            region=self.region,
            **self.options,
        )


def _dtype_cases() -> list[Case]:
    dtypes = [
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "<U5",
    ]
    cases = [Case(f"v{fmt}-{dt}", fmt, dtype=dt) for fmt in (2, 3) for dt in dtypes]
    # Big-endian: v2 stores the byte order in the dtype, v3 in the bytes codec.
    cases += [Case(f"v2-{dt}", 2, dtype=dt) for dt in (">i2", ">i4", ">u8", ">f4", ">f8", ">c16")]
    cases += [
        Case(f"v3-{dt}-big", 3, dtype=dt, options={"serializer": BytesCodec(endian="big")})
        for dt in ("int16", "int32", "uint64", "float32", "float64", "complex128")
    ]
    return cases


def _order_cases() -> list[Case]:
    return [
        Case("v2-F-f8", 2, dtype="f8", options={"order": "F"}),
        Case("v2-F-i2", 2, dtype="i2", options={"order": "F"}),
        Case("v2-F-u1-3d", 2, shape=(4, 5, 6), chunks=(3, 2, 4), dtype="u1", options={"order": "F"}),
        Case("v2-F-big", 2, dtype=">i4", options={"order": "F", "compressors": None}),
        Case("v2-F-missing", 2, dtype="f4", region=(slice(0, 3), slice(0, 2)), options={"order": "F"}),
        Case("v2-F-c8", 2, dtype="c8", options={"order": "F", "compressors": numcodecs.GZip(1)}),
    ]


def _codec_cases() -> list[Case]:
    cases = []
    shuffles_v2 = {"noshuffle": 0, "byteshuffle": 1, "bitshuffle": 2}
    shuffles_v3 = {"noshuffle": "noshuffle", "byteshuffle": "shuffle", "bitshuffle": "bitshuffle"}
    for cname in ("lz4", "lz4hc", "zstd", "zlib", "blosclz"):
        for sname, v2_shuffle in shuffles_v2.items():
            cases.append(
                Case(
                    f"v2-blosc-{cname}-{sname}",
                    2,
                    dtype="i4",
                    options={"compressors": numcodecs.Blosc(cname=cname, clevel=5, shuffle=v2_shuffle)},
                )
            )
            cases.append(
                Case(
                    f"v3-blosc-{cname}-{sname}",
                    3,
                    dtype="f8",
                    options={"compressors": BloscCodec(cname=cname, clevel=5, shuffle=shuffles_v3[sname])},
                )
            )
    cases += [
        Case(
            "v2-blosc-blocksize",
            2,
            shape=(300,),
            chunks=(128,),
            dtype="u2",
            options={"compressors": numcodecs.Blosc(cname="lz4", shuffle=1, blocksize=64)},
        ),
        Case("v2-blosc-u1-bitshuffle", 2, dtype="u1", options={"compressors": numcodecs.Blosc(shuffle=2)}),
        Case("v2-zstd", 2, options={"compressors": numcodecs.Zstd(level=5)}),
        Case("v2-zstd-checksum", 2, options={"compressors": numcodecs.Zstd(level=1, checksum=True)}),
        Case("v2-gzip", 2, dtype="i8", options={"compressors": numcodecs.GZip(level=6)}),
        Case("v2-zlib", 2, dtype="u2", options={"compressors": numcodecs.Zlib(level=4)}),
        Case("v2-bz2", 2, dtype="c8", options={"compressors": numcodecs.BZ2(level=3)}),
        Case("v2-lz4", 2, dtype="f8", options={"compressors": numcodecs.LZ4()}),
        Case("v2-lz4-accel", 2, dtype="i2", options={"compressors": numcodecs.LZ4(acceleration=10)}),
        Case("v2-uncompressed", 2, dtype="f2", options={"compressors": None}),
        Case(
            "v2-fixedscaleoffset",
            2,
            dtype="f8",
            options={
                "filters": [numcodecs.FixedScaleOffset(offset=100, scale=10, dtype="<f8", astype="<i4")]
            },
            data=np.round(np.linspace(-50, 250, 35).reshape(7, 5), 1),
        ),
        Case(
            "v2-fixedscaleoffset-f4-u2",
            2,
            dtype="f4",
            options={
                "filters": [numcodecs.FixedScaleOffset(offset=0, scale=100, dtype="<f4", astype="<u2")],
                "compressors": None,
            },
            data=np.linspace(0, 600, 35, dtype="f4").reshape(7, 5),
        ),
        Case(
            "v2-delta",
            2,
            dtype="i4",
            options={"filters": [numcodecs.Delta(dtype="<i4")]},
            data=np.cumsum(np.arange(35, dtype="i4")).reshape(7, 5),
        ),
        Case("v2-shuffle", 2, dtype="i4", options={"filters": [numcodecs.Shuffle(elementsize=4)]}),
        Case(
            "v2-shuffle-then-blosc",
            2,
            dtype="f8",
            options={"filters": [numcodecs.Shuffle(elementsize=8)], "compressors": numcodecs.Blosc("lz4")},
        ),
        Case(
            "v2-delta-then-shuffle-then-zlib",
            2,
            shape=(50,),
            chunks=(16,),
            dtype="i4",
            options={
                "filters": [numcodecs.Delta(dtype="<i4"), numcodecs.Shuffle(elementsize=4)],
                "compressors": numcodecs.Zlib(1),
            },
            data=np.arange(50, dtype="i4") * 3,
        ),
        Case("v2-slash-separator", 2, options={"chunk_key_encoding": {"name": "v2", "separator": "/"}}),
        Case("v3-zstd", 3, dtype="i2", options={"compressors": ZstdCodec(level=3)}),
        Case("v3-zstd-checksum", 3, dtype="u4", options={"compressors": ZstdCodec(level=1, checksum=True)}),
        Case("v3-gzip", 3, dtype="c16", options={"compressors": GzipCodec(level=7)}),
        Case("v3-uncompressed", 3, dtype="i8", options={"compressors": None}),
        Case("v3-crc32c", 3, dtype="f4", options={"compressors": [Crc32cCodec()]}),
        Case("v3-zstd-crc32c", 3, dtype="i4", options={"compressors": [ZstdCodec(level=1), Crc32cCodec()]}),
        Case("v3-transpose-2d", 3, dtype="f8", options={"filters": [TransposeCodec(order=(1, 0))]}),
        Case(
            "v3-transpose-3d",
            3,
            shape=(5, 4, 6),
            chunks=(2, 3, 4),
            dtype="i2",
            options={"filters": [TransposeCodec(order=(2, 0, 1))]},
        ),
        Case(
            "v3-transpose-big-gzip",
            3,
            dtype="u4",
            options={
                "filters": [TransposeCodec(order=(1, 0))],
                "serializer": BytesCodec(endian="big"),
                "compressors": GzipCodec(level=1),
            },
        ),
        Case("v3-dot-separator", 3, options={"chunk_key_encoding": {"name": "default", "separator": "."}}),
        Case("v3-v2-key-encoding", 3, options={"chunk_key_encoding": {"name": "v2", "separator": "."}}),
        Case("v3-sharding", 3, shape=(10, 9), chunks=(2, 3), dtype="i4", options={"shards": (4, 6)}),
        Case(
            "v3-sharding-edge-missing",
            3,
            shape=(11, 9),
            chunks=(2, 2),
            dtype="f4",
            region=(slice(0, 5), slice(2, 9)),
            options={"shards": (4, 4), "fill_value": -1.5},
        ),
        Case(
            "v3-sharding-blosc",
            3,
            shape=(10, 9),
            chunks=(5, 3),
            dtype="u2",
            options={"shards": (10, 9), "compressors": BloscCodec(cname="zstd", shuffle="bitshuffle")},
        ),
        Case(
            "v3-sharding-transpose",
            3,
            shape=(8, 6),
            chunks=(2, 3),
            dtype="f8",
            options={"shards": (4, 6), "filters": [TransposeCodec(order=(1, 0))]},
        ),
        Case(
            "v3-sharding-3d", 3, shape=(6, 5, 4), chunks=(2, 2, 2), dtype="i1", options={"shards": (4, 4, 4)}
        ),
        Case(
            "v3-sharding-index-start",
            3,
            shape=(6, 6),
            chunks=(4, 4),
            dtype="i2",
            options={"serializer": ShardingCodec(chunk_shape=(2, 2), index_location="start")},
        ),
        Case(
            "v3-sharding-nested",
            3,
            shape=(8, 8),
            chunks=(2, 2),
            dtype="u1",
            options={"shards": (8, 8), "serializer": ShardingCodec(chunk_shape=(4, 4))},
        ),
    ]
    return cases


def _fill_cases() -> list[Case]:
    missing = (slice(0, 3), slice(0, 2))  # only the first chunk is written
    cases = []
    for fmt in (2, 3):
        cases += [
            Case(f"v{fmt}-fill-zero-f4", fmt, dtype="f4", region=missing, options={"fill_value": 0}),
            Case(f"v{fmt}-fill-42-i2", fmt, dtype="i2", region=missing, options={"fill_value": 42}),
            Case(f"v{fmt}-fill-neg-f8", fmt, dtype="f8", region=missing, options={"fill_value": -7.25}),
            Case(f"v{fmt}-fill-nan-f4", fmt, dtype="f4", region=missing, options={"fill_value": np.nan}),
            Case(f"v{fmt}-fill-nan-f2", fmt, dtype="f2", region=missing, options={"fill_value": np.nan}),
            Case(f"v{fmt}-fill-inf-f8", fmt, dtype="f8", region=missing, options={"fill_value": -np.inf}),
            Case(f"v{fmt}-fill-true", fmt, dtype="bool", region=missing, options={"fill_value": True}),
            Case(f"v{fmt}-fill-u8-max", fmt, dtype="u8", region=missing, options={"fill_value": 2**64 - 1}),
            Case(f"v{fmt}-fill-i8-min", fmt, dtype="i8", region=missing, options={"fill_value": -(2**63)}),
            Case(
                f"v{fmt}-fill-complex",
                fmt,
                dtype="c16",
                region=missing,
                options={"fill_value": complex(1.5, -2)},
            ),
            Case(
                f"v{fmt}-fill-complex-nan",
                fmt,
                dtype="c8",
                region=missing,
                options={"fill_value": complex(np.nan, 1)},
            ),
            Case(f"v{fmt}-fill-str", fmt, dtype="<U5", region=missing, options={"fill_value": "ab"}),
            Case(f"v{fmt}-nothing-written", fmt, dtype="i4", region=NOTHING, options={"fill_value": 3}),
            Case(
                f"v{fmt}-missing-middle",
                fmt,
                shape=(10,),
                chunks=(3,),
                dtype="u2",
                region=(slice(0, 3),),
                options={"fill_value": 9},
            ),
        ]
    cases += [
        Case(
            "v3-fill-big-endian",
            3,
            dtype="f8",
            region=missing,
            options={"fill_value": 1.0e300, "serializer": BytesCodec(endian="big")},
        ),
        Case("v2-fill-big-endian", 2, dtype=">i4", region=missing, options={"fill_value": -123456}),
    ]
    cases += [
        Case(f"v2-fill-none-{dt}", 2, dtype=dt, region=missing, options={"fill_value": None})
        for dt in ("bool", "i1", "u4", "f4", "f8", "c8", "c16", "<U5", ">f8")
    ]
    return cases


def _shape_cases() -> list[Case]:
    cases = []
    for fmt in (2, 3):
        cases += [
            Case(f"v{fmt}-0d", fmt, shape=(), chunks=(), dtype="f8", data=np.array(3.25)),
            Case(f"v{fmt}-0d-i2", fmt, shape=(), chunks=(), dtype="i2", data=np.array(-5, dtype="i2")),
            Case(
                f"v{fmt}-0d-missing",
                fmt,
                shape=(),
                chunks=(),
                dtype="f4",
                region=NOTHING,
                options={"fill_value": 2.5},
            ),
            Case(f"v{fmt}-1elem", fmt, shape=(1,), chunks=(1,), dtype="u1"),
            Case(f"v{fmt}-1elem-2d", fmt, shape=(1, 1), chunks=(5, 5), dtype="c8"),
            Case(f"v{fmt}-empty", fmt, shape=(0,), chunks=(4,), dtype="f4"),
            Case(f"v{fmt}-empty-2d", fmt, shape=(3, 0), chunks=(2, 2), dtype="i8"),
            Case(f"v{fmt}-empty-3d-middle", fmt, shape=(2, 0, 3), chunks=(1, 1, 1), dtype="u2"),
            Case(f"v{fmt}-edge-chunks", fmt, shape=(13, 7, 5), chunks=(4, 3, 2), dtype="i4"),
            Case(f"v{fmt}-chunk-larger-than-array", fmt, shape=(3, 4), chunks=(10, 10), dtype="f8"),
            Case(f"v{fmt}-chunk-one", fmt, shape=(4, 3), chunks=(1, 1), dtype="i2"),
            Case(f"v{fmt}-4d", fmt, shape=(3, 4, 2, 5), chunks=(2, 3, 2, 2), dtype="f4"),
            Case(f"v{fmt}-1d-long", fmt, shape=(1000,), chunks=(64,), dtype="f8"),
        ]
    return cases


ALL_CASES = _dtype_cases() + _order_cases() + _codec_cases() + _fill_cases() + _shape_cases()
assert len({c.id for c in ALL_CASES}) == len(ALL_CASES)


@pytest.fixture(params=ALL_CASES, ids=lambda c: c.id)
def written(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Case, str]:
    case = request.param
    return case, case.write(tmp_path)


def test_full_read_matches_zarr(written: tuple[Case, str]) -> None:
    _, path = written
    expected = zarr_read(path)
    arr = fz.open_array(path)
    assert_same(arr[...], expected)
    assert_same(arr[:], expected) if arr.ndim else None
    assert_same(arr.read(), expected)
    assert_same(arr[()], expected)


def test_read_into_out_matches_zarr(written: tuple[Case, str]) -> None:
    _, path = written
    expected = zarr_read(path)
    arr = fz.open_array(path)
    out = np.empty(expected.shape, dtype=expected.dtype.newbyteorder("="))
    result = arr.read(out=out)
    assert result is out
    assert_same(out, expected)


def test_metadata_matches_zarr(written: tuple[Case, str]) -> None:
    case, path = written
    with quiet_zarr():
        ref = zarr.open_array(path, mode="r")
        ref_shards = ref.shards
        ref_chunks = ref.chunks
        ref_fill = ref.fill_value
    arr = fz.open_array(path)
    assert tuple(arr.shape) == ref.shape  # the type of .shape has its own test below
    assert arr.ndim == len(ref.shape)
    assert arr.size == int(np.prod(ref.shape, dtype=np.int64))
    assert len(arr.shape) == arr.ndim
    assert arr.dtype == ref.dtype.newbyteorder("=")
    assert arr.nbytes == arr.size * arr.dtype.itemsize
    assert arr.zarr_format == case.zarr_format
    assert isinstance(arr.chunks, tuple)
    assert isinstance(arr.codecs, str)
    assert arr.codecs
    if case.zarr_format == 3 and ref_shards is not None:
        assert arr.shards == ref_shards
        assert arr.chunks == ref_chunks
    elif "sharding_indexed" in arr.codecs:
        # sharding given as an explicit serializer: zarr-python's .shards says None, but the
        # chunk grid is the shard grid and the inner chunks come from the codec's configuration.
        assert arr.shards == ref_chunks
        sharding = next(c for c in arr.metadata["codecs"] if c["name"] == "sharding_indexed")
        assert arr.chunks == tuple(sharding["configuration"]["chunk_shape"])
    else:
        assert arr.shards is None
        assert arr.chunks == ref_chunks
    if ref_fill is None:
        assert arr.fill_value is None  # v2 `fill_value: null`, as zarr-python has it
    elif case.options.get("fill_value", 0) is not None:
        np.testing.assert_array_equal(np.asarray(arr.fill_value, dtype=arr.dtype), np.asarray(ref_fill))
    if arr.ndim:
        assert len(arr) == arr.shape[0]
    else:
        with pytest.raises(TypeError):
            len(arr)
    assert arr.metadata["zarr_format"] == case.zarr_format
    assert list(arr.metadata["shape"]) == list(ref.shape)


def test_shape_is_a_tuple(tmp_path: Path) -> None:
    """numpy, zarr-python and the type stub all give ``shape`` as a tuple (``arr.shape == (7, 5)``)."""
    arr = fz.open_array(write_array(tmp_path / "a.zarr", np.zeros((7, 5), "f4"), chunks=(3, 2)))
    assert isinstance(arr.shape, tuple)
    assert arr.shape == (7, 5)
    arr0 = fz.open_array(write_array(tmp_path / "b.zarr", np.zeros((), "f4"), zarr_format=2))
    assert arr0.shape == ()


def test_codec_description_names_codecs(tmp_path: Path) -> None:
    path = write_array(
        tmp_path / "a.zarr",
        np.arange(12, dtype="i4"),
        chunks=(4,),
        zarr_format=3,
        filters=[TransposeCodec(order=(0,))],
        compressors=[ZstdCodec(level=2), Crc32cCodec()],
    )
    codecs = fz.open_array(path).codecs
    for name in ("transpose", "bytes", "zstd", "crc32c"):
        assert name in codecs, codecs
    path2 = write_array(
        tmp_path / "b.zarr",
        np.arange(12, dtype="i4"),
        chunks=(4,),
        zarr_format=2,
        filters=[numcodecs.Delta(dtype="<i4")],
        compressors=numcodecs.Blosc(cname="lz4"),
    )
    codecs2 = fz.open_array(path2).codecs
    assert "delta" in codecs2
    assert "blosc" in codecs2
    assert "lz4" in codecs2


def test_attrs_and_dimension_names(tmp_path: Path) -> None:
    attrs = {"units": "K", "scale": 1.5, "nested": {"a": [1, 2, None]}, "flag": True}
    path = write_array(
        tmp_path / "v3.zarr",
        np.zeros((2, 3), "f4"),
        zarr_format=3,
        attributes=attrs,
        dimension_names=["y", None],
    )
    arr = fz.open_array(path)
    assert arr.attrs == attrs
    assert arr.dimension_names == ["y", None]
    path2 = write_array(tmp_path / "v2.zarr", np.zeros((2, 3), "f4"), zarr_format=2, attributes=attrs)
    arr2 = fz.open_array(path2)
    assert arr2.attrs == attrs
    assert arr2.dimension_names is None
    assert arr2.url.endswith("v2.zarr")
    assert arr2.path == ""


def test_open_array_accepts_pathlike_and_path_argument(tmp_path: Path) -> None:
    with quiet_zarr():
        group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
        member = group.create_array("inner/values", shape=(5,), chunks=(2,), dtype="i2")
        member[...] = np.arange(5, dtype="i2")
    expected = np.arange(5, dtype="i2")
    by_path = fz.open_array(tmp_path / "g.zarr", path="inner/values")
    assert_same(by_path[...], expected)
    assert by_path.path == "inner/values"
    assert_same(fz.open_array(tmp_path / "g.zarr" / "inner" / "values")[...], expected)


# --- selections ---------------------------------------------------------------------------------

SELECTION_CASES = [
    Case(
        "sel-v2-3d-missing",
        2,
        shape=(7, 5, 6),
        chunks=(3, 2, 4),
        dtype="f4",
        region=(slice(0, 4), slice(None), slice(2, 6)),
        options={"fill_value": np.nan},
    ),
    Case("sel-v2-F-edge", 2, shape=(9, 11), chunks=(4, 3), dtype=">i8", options={"order": "F"}),
    Case(
        "sel-v3-sharded",
        3,
        shape=(10, 9),
        chunks=(2, 3),
        dtype="u2",
        region=(slice(2, 10), slice(None)),
        options={"shards": (4, 6), "fill_value": 7},
    ),
    Case("sel-v3-transpose-1d", 3, shape=(23,), chunks=(5,), dtype="c8"),
    Case(
        "sel-v3-transpose-3d",
        3,
        shape=(4, 6, 5),
        chunks=(3, 4, 2),
        dtype="i2",
        options={"filters": [TransposeCodec(order=(2, 0, 1))]},
    ),
    Case("sel-v2-0d", 2, shape=(), chunks=(), dtype="f8", data=np.array(1.5)),
    Case("sel-v3-empty", 3, shape=(4, 0, 3), chunks=(2, 2, 2), dtype="f4"),
]


@pytest.fixture(scope="module", params=SELECTION_CASES, ids=lambda c: c.id)
def selection_array(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    case = request.param
    path = case.write(tmp_path_factory.mktemp("sel"))
    with quiet_zarr():
        ref = zarr.open_array(path, mode="r")
        full = np.asarray(ref[...])
    return path, ref, full, fz.open_array(path)


@st.composite
def basic_selections(draw: st.DrawFn, shape: tuple[int, ...]) -> Any:
    """Random numpy basic selections: ints (negative too), slices with any start/stop/step, Ellipsis."""
    nd = len(shape)
    n_explicit = draw(st.integers(0, nd))
    # With an Ellipsis, the indices before it address the leading axes and those after it the
    # trailing ones; without one, the explicit indices address the leading axes.
    with_ellipsis = draw(st.booleans())
    split = draw(st.integers(0, n_explicit)) if with_ellipsis else n_explicit
    axes = list(range(split)) + list(range(nd - (n_explicit - split), nd))
    items: list[Any] = []
    for axis in axes:
        size = shape[axis]
        if size > 0 and draw(st.booleans()):
            items.append(draw(st.integers(-size, size - 1)))
        else:
            bound = st.none() | st.integers(-size - 3, size + 3)
            step = draw(st.none() | st.integers(-4, 4).filter(bool))
            items.append(slice(draw(bound), draw(bound), step))
    if with_ellipsis:
        items.insert(split, Ellipsis)
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


def _has_negative_step(key: Any) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, slice) and k.step is not None and k.step < 0 for k in items)


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_selections_match_zarr(selection_array, data: st.DataObject) -> None:
    _, ref, full, arr = selection_array
    key = data.draw(basic_selections(arr.shape), label="key")
    expected_numpy = np.asarray(full[key], dtype=full.dtype)
    if _has_negative_step(key):
        expected = expected_numpy  # zarr-python rejects negative steps: numpy-index its full read
    else:
        with quiet_zarr():
            expected = np.asarray(ref[key], dtype=full.dtype)
        np.testing.assert_array_equal(expected, expected_numpy)
    got = arr[key]
    assert_same(got, expected)
    assert_same(arr.read(key), expected)
    out = np.empty(expected.shape, dtype=expected.dtype.newbyteorder("="))
    assert arr.read(key, out=out) is out
    assert_same(out, expected)


@pytest.mark.parametrize(
    "key",
    [
        0,
        -1,
        (2, 3),
        (-7, -5),
        slice(None, None, -1),
        (slice(None, None, -1), slice(None, None, -1)),
        (slice(5, 1, -2), slice(None, None, 3)),
        (slice(-1, -8, -3), Ellipsis),
        (Ellipsis, slice(4, None, -1)),
        (Ellipsis, -2),
        (slice(100, -100, -1), 1),
        (slice(-100, 100, 5), slice(None)),
        (slice(3, 3), slice(None)),
        (slice(5, 2), slice(None)),
        (np.int64(3), np.int32(-1)),
        (slice(np.int64(1), np.int64(6), np.int64(2)), Ellipsis),
        (),
        Ellipsis,
    ],
    ids=repr,
)
def test_explicit_selections(tmp_path: Path, key: Any) -> None:
    data = sample_data((7, 5), "f8")
    path = write_array(tmp_path / "a.zarr", data, chunks=(3, 2), zarr_format=2)
    expected = zarr_read(path)[key]
    got = fz.open_array(path)[key]
    assert_same(got, np.asarray(expected))


def test_integer_selection_returns_0d_ndarray(tmp_path: Path) -> None:
    data = np.arange(12, dtype="u2").reshape(3, 4)
    path = write_array(tmp_path / "a.zarr", data, chunks=(2, 2), zarr_format=3)
    arr = fz.open_array(path)
    got = arr[1, 2]
    assert isinstance(got, np.ndarray)
    assert got.shape == ()
    assert got.dtype == np.dtype("u2")
    assert got == 6
    got_read = arr.read((-1, -1))
    assert isinstance(got_read, np.ndarray)
    assert got_read.shape == ()
    assert got_read == 11


def test_results_are_fresh_writeable_arrays(tmp_path: Path) -> None:
    data = np.arange(20, dtype="i4").reshape(4, 5)
    path = write_array(tmp_path / "a.zarr", data, chunks=(2, 2), zarr_format=3)
    arr = fz.open_array(path)
    first = arr[...]
    assert first.flags.writeable
    assert first.flags.c_contiguous
    first[...] = -1
    assert_same(arr[...], data)
    reversed_ = arr[::-1, ::-2]
    assert reversed_.flags.writeable
    assert_same(reversed_, data[::-1, ::-2])


# --- numcodecs' fixedscaleoffset and zarr-python 3's numcodecs codecs ----------------------------


def _numcodecs_v3(name: str, **config: Any) -> Any:
    """zarr-python 3's wrapper of a numcodecs codec (its v3 name is ``numcodecs.<name>``)."""
    with quiet_zarr():
        return getattr(numcodecs_wrappers, name)(**config)


def _fixedscaleoffset(zarr_format: int, **config: Any) -> Any:
    if zarr_format == 2:
        return numcodecs.FixedScaleOffset(**config)
    return _numcodecs_v3("FixedScaleOffset", **config)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
@pytest.mark.parametrize("astype", ["|i1", "|u1", "<i2", "<u2", "<i4", "<i8", "<f4"])
@pytest.mark.parametrize("offset_scale", [(273.15, 100), (-1.7, 0.3), (1000, 10)])
def test_fixedscaleoffset_is_bit_equal_to_numcodecs(
    tmp_path: Path, zarr_format: int, dtype: str, astype: str, offset_scale: tuple[float, float]
) -> None:
    """Decoding computes as numcodecs does with numpy (float64 for integer astype, the stored
    float type otherwise), so every value is bit for bit zarr-python's."""
    offset, scale = offset_scale
    kind = np.dtype(astype)
    bound = 2**20 if dtype == "<f4" else 2**40  # so that values stay within astype once rounded
    if kind.kind == "f":
        encoded = np.linspace(-3e4, 3e4, 200)
    else:
        info = np.iinfo(kind)
        encoded = np.linspace(max(info.min, -bound), min(info.max, bound), 200).round()
    data = (encoded / scale + offset).astype(dtype).reshape(20, 10)
    path = write_array(
        tmp_path / "a.zarr",
        data,
        chunks=(7, 4),
        zarr_format=zarr_format,
        filters=[_fixedscaleoffset(zarr_format, offset=offset, scale=scale, dtype=dtype, astype=astype)],
        compressors=None,
    )
    expected = zarr_read(path)
    arr = fz.open_array(path)
    assert_same(arr[...], expected)
    assert_same(arr[3:15, 2:9], expected[3:15, 2:9])


def test_fixedscaleoffset_kelvin_example_reads_exact_values(tmp_path: Path) -> None:
    """offset=273.15, scale=100 stored as int16 reads back 273.15, not float32's 273.14999."""
    data = np.array([273.15, 280.2, -3.3, 300.0])
    for zarr_format in (2, 3):
        fso = _fixedscaleoffset(zarr_format, offset=273.15, scale=100, dtype="<f8", astype="<i2")
        path = write_array(tmp_path / f"v{zarr_format}.zarr", data, zarr_format=zarr_format, filters=[fso])
        got = fz.open_array(path)[...]
        assert got[0] == 273.15
        assert_same(got, zarr_read(path))


def test_fixedscaleoffset_numcodecs_doc_example_with_one_byte_astype(tmp_path: Path) -> None:
    """numcodecs' own example: dtype f8 kept in one unsigned byte (stored as ``|u1``)."""
    data = np.linspace(1000, 1001, 10, dtype="f8")
    fso = numcodecs.FixedScaleOffset(offset=1000, scale=10, dtype="f8", astype="u1")
    path = write_array(tmp_path / "a.zarr", data, zarr_format=2, filters=[fso])
    got = fz.open_array(path)[...]
    assert_same(got, zarr_read(path))
    np.testing.assert_array_equal(got, fso.decode(fso.encode(data)))


def test_fixedscaleoffset_v2_astype_in_other_byte_order(tmp_path: Path) -> None:
    """v2 stores the astype's own byte order, which may differ from the array's."""
    data = np.linspace(-20, 20, 30).astype(">f8")
    fso = numcodecs.FixedScaleOffset(offset=1.5, scale=7, dtype=">f8", astype="<i4")
    path = write_array(tmp_path / "a.zarr", data, zarr_format=2, filters=[fso])
    assert_same(fz.open_array(path)[...], zarr_read(path))


NUMCODECS_V3_COMPRESSORS = [
    "BZ2",
    "Zlib",
    "GZip",
    "Zstd",
    "Blosc",
    "LZ4",
    "Shuffle",
    "CRC32",
    "Adler32",
    "Fletcher32",
]


@pytest.mark.parametrize("name", NUMCODECS_V3_COMPRESSORS)
def test_zarr_python_numcodecs_v3_codecs_with_default_configuration(tmp_path: Path, name: str) -> None:
    """zarr-python 3 writes ``numcodecs.<id>`` with numcodecs' default configuration (``{}``)."""
    data = sample_data((30, 7), "i4")
    path = write_array(tmp_path / "a.zarr", data, chunks=(8, 7), compressors=[_numcodecs_v3(name)])
    codecs = fz.open_array(path).metadata["codecs"]
    assert codecs[-1]["name"] == f"numcodecs.{name.lower()}"
    assert_same(fz.open_array(path)[...], zarr_read(path))
    assert_same(fz.open_array(path)[5:20, 1:3], data[5:20, 1:3])


@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("dtype", ["<i2", "<u8", "<f4"])
def test_zarr_python_numcodecs_v3_delta_filter(tmp_path: Path, dtype: str, endian: str) -> None:
    """``numcodecs.delta`` is an array-to-array codec in v3: it works on the values before the
    ``bytes`` codec sets their byte order. (zarr-python 3.1 reads the big-endian case back
    byte-swapped, its delta viewing the big-endian decoded values as little-endian: the values
    written are the reference.)"""
    data = np.cumsum(np.arange(60) % 7).astype(dtype).reshape(12, 5)
    path = write_array(
        tmp_path / "a.zarr",
        data,
        chunks=(5, 5),
        filters=[_numcodecs_v3("Delta", dtype=dtype)],
        serializer=BytesCodec(endian=endian),
        compressors=[_numcodecs_v3("Zlib", level=3)],
    )
    assert_same(fz.open_array(path)[...], data)
    assert_same(fz.open_array(path)[3:11, 1:4], data[3:11, 1:4])
    if endian == "little":
        assert_same(fz.open_array(path)[...], zarr_read(path))


def _set_codec_configuration(path: str, name: str, **config: Any) -> None:
    metadata_file = Path(path) / "zarr.json"
    metadata = json.loads(metadata_file.read_text())
    for codec in metadata["codecs"]:
        if codec["name"] == name:
            codec.setdefault("configuration", {}).update(config)
    metadata_file.write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    ("name", "key", "level"),
    [
        ("Zlib", "level", -1),
        ("Zlib", "level", 100),
        ("GZip", "level", -1),
        ("GZip", "level", 100),
        ("BZ2", "level", 100),
        ("BZ2", "level", -1),
        ("Zstd", "level", 100),
        ("Zstd", "level", -200000),
        ("Blosc", "clevel", 100),
        ("Blosc", "clevel", -1),
    ],
)
def test_compression_levels_outside_the_writing_range_are_read(
    tmp_path: Path, name: str, key: str, level: int
) -> None:
    """A reader needs no compression level: one zarrs' codecs would refuse still reads."""
    data = sample_data((40,), "f8")
    path = write_array(tmp_path / "a.zarr", data, chunks=(16,), compressors=[_numcodecs_v3(name)])
    _set_codec_configuration(path, f"numcodecs.{name.lower()}", **{key: level})
    assert_same(fz.open_array(path)[...], data)


def test_v2_zlib_level_minus_one_and_shuffle_elementsize_zero(tmp_path: Path) -> None:
    """numcodecs' Zlib(level=-1) (zlib's default level) and Shuffle(elementsize=0) (a copy)."""
    data = sample_data((50,), "u2")
    path = write_array(
        tmp_path / "a.zarr",
        data,
        chunks=(16,),
        zarr_format=2,
        filters=[numcodecs.Shuffle(elementsize=0)],
        compressors=numcodecs.Zlib(level=-1),
    )
    assert_same(fz.open_array(path)[...], zarr_read(path))


def test_refused_numcodecs_codec_is_named(tmp_path: Path) -> None:
    path = write_array(tmp_path / "a.zarr", np.arange(10, dtype="i4"), compressors=[_numcodecs_v3("LZMA")])
    with pytest.raises(fz.UnsupportedCodecError, match=r"numcodecs\.lzma"):
        fz.open_array(path)


def test_numcodecs_crc32_checksum_mismatch_is_a_corrupt_chunk(tmp_path: Path) -> None:
    path = write_array(tmp_path / "a.zarr", np.arange(10, dtype="i4"), compressors=[_numcodecs_v3("CRC32")])
    chunk = Path(path) / "c" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(fz.CorruptChunkError, match="crc32"):
        fz.open_array(path)[...]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_integer_array_with_float_spelled_fill_value(tmp_path: Path, zarr_format: int) -> None:
    """``fill_value: 3.0`` on an int32 array: zarr-python reads the fill value 3."""
    path = write_array(
        tmp_path / "a.zarr", shape=(6,), chunks=(3,), dtype="i4", zarr_format=zarr_format, fill_value=3
    )
    with quiet_zarr():
        zarr.open_array(path, mode="r+")[:3] = np.arange(3, dtype="i4")
    metadata_file = Path(path) / (".zarray" if zarr_format == 2 else "zarr.json")
    metadata = json.loads(metadata_file.read_text())
    metadata["fill_value"] = 3.0
    metadata_file.write_text(json.dumps(metadata))
    arr = fz.open_array(path)
    assert_same(arr[...], zarr_read(path))
    assert_same(arr[...], np.array([0, 1, 2, 3, 3, 3], dtype="i4"))
    assert arr.fill_value == 3
