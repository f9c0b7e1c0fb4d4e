"""read_many, reading into caller buffers, the thread pool and pickling."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import zarr
from conftest import assert_same, quiet_zarr, sample_data, write_array, zarr_read
from zarr.codecs import BloscCodec, GzipCodec


@pytest.fixture(scope="module")
def many_arrays(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray]]:
    """A dozen small arrays of assorted dtypes, formats and codecs: (path, zarr-python full read)."""
    root = tmp_path_factory.mktemp("many")
    specs: list[dict[str, Any]] = [
        {"dtype": "f4", "shape": (9, 7), "chunks": (4, 3), "zarr_format": 3},
        {"dtype": "i8", "shape": (9, 7), "chunks": (2, 5), "zarr_format": 2},
        {"dtype": ">f8", "shape": (5, 6, 4), "chunks": (2, 3, 3), "zarr_format": 2},
        {
            "dtype": "u1",
            "shape": (30,),
            "chunks": (7,),
            "zarr_format": 3,
            "compressors": BloscCodec(cname="lz4", shuffle="bitshuffle"),
        },
        {"dtype": "bool", "shape": (6, 6), "chunks": (4, 4), "zarr_format": 2},
        {"dtype": "c16", "shape": (4, 5), "chunks": (3, 3), "zarr_format": 3, "compressors": GzipCodec()},
        {"dtype": "<U5", "shape": (8,), "chunks": (3,), "zarr_format": 2},
        {"dtype": "f2", "shape": (10, 10), "chunks": (3, 4), "zarr_format": 3, "shards": (6, 8)},
        {
            "dtype": "i2",
            "shape": (7, 5),
            "chunks": (3, 2),
            "zarr_format": 2,
            "order": "F",
            "compressors": numcodecs.Blosc(cname="zstd", shuffle=1),
        },
        {
            "dtype": "u4",
            "shape": (12,),
            "chunks": (5,),
            "zarr_format": 2,
            "fill_value": 99,
            "region": (slice(0, 5),),
        },
        {"dtype": "f8", "shape": (), "chunks": (), "zarr_format": 3},
        {"dtype": "i4", "shape": (3, 0), "chunks": (2, 2), "zarr_format": 3},
    ]
    result = []
    for i, spec in enumerate(specs):
        options = dict(spec)
        shape = options.pop("shape")
        dtype = options.pop("dtype")
        path = write_array(root / f"a{i}.zarr", sample_data(shape, dtype, seed=i), **options)
        result.append((path, zarr_read(path)))
    return result


SELECTIONS = [
    Ellipsis,
    (),
    0,
    -1,
    slice(1, None, 2),
    slice(None, None, -1),
    (Ellipsis, slice(0, 3)),
    (slice(-3, None), Ellipsis),
]


def _valid(selection: Any, shape: tuple[int, ...]) -> bool:
    try:
        np.empty(shape)[selection]
    except IndexError:
        return False
    return True


def test_read_many_equals_individual_reads(many_arrays: list[tuple[str, np.ndarray]]) -> None:
    requests = []
    expected = []
    for path, full in many_arrays:
        arr = fz.open_array(path)
        for sel in SELECTIONS:
            if _valid(sel, full.shape):
                requests.append((arr, sel))
                expected.append(np.asarray(full[sel], dtype=full.dtype))
    assert len(requests) > 60
    results = fz.read_many(requests)
    assert isinstance(results, list)
    assert len(results) == len(requests)
    for (arr, sel), got, want in zip(requests, results, expected, strict=True):
        assert_same(got, np.asarray(want))
        assert_same(arr[sel], np.asarray(want))


def test_read_many_same_array_many_times(many_arrays: list[tuple[str, np.ndarray]]) -> None:
    path, full = many_arrays[0]
    arr = fz.open_array(path)
    requests = [(arr, (i % full.shape[0], slice(None))) for i in range(40)]
    results = fz.read_many(requests)
    for (_, sel), got in zip(requests, results, strict=True):
        assert_same(got, full[sel])
    # the results are independent buffers
    results[0][...] = -1
    assert_same(results[full.shape[0]], full[0])


def test_read_many_accepts_any_sequence_and_empty(many_arrays: list[tuple[str, np.ndarray]]) -> None:
    assert fz.read_many([]) == []
    path, full = many_arrays[1]
    arr = fz.open_array(path)
    got = fz.read_many(((arr, ...), (arr, (1, 2))))
    assert_same(got[0], full)
    assert_same(got[1], np.asarray(full[1, 2]))


def test_read_many_bad_selection_raises(many_arrays: list[tuple[str, np.ndarray]]) -> None:
    arr = fz.open_array(many_arrays[0][0])
    with pytest.raises(fz.SelectionError):
        fz.read_many([(arr, ...), (arr, (100, 0))])
    with pytest.raises(TypeError):
        fz.read_many([(arr, 1.5)])
    with pytest.raises(TypeError):
        fz.read_many([("not an array", ...)])


# --- out= ----------------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> tuple[fz.Array, np.ndarray]:
    data = sample_data((6, 5), "f4")
    path = write_array(tmp_path / "s.zarr", data, chunks=(4, 2), zarr_format=3)
    return fz.open_array(path), data


def test_out_is_filled_and_returned(small: tuple[fz.Array, np.ndarray]) -> None:
    arr, data = small
    out = np.full((6, 5), 7, dtype="f4")
    assert arr.read(out=out) is out
    assert_same(out, data)
    out2 = np.zeros((3, 5), dtype="f4")
    assert arr.read((slice(None, None, -2), Ellipsis), out=out2) is out2
    assert_same(out2, data[::-2])
    out0 = np.zeros((), dtype="f4")
    assert arr.read((2, 3), out=out0) is out0
    assert_same(out0, np.asarray(data[2, 3]))


def test_out_can_be_a_contiguous_view(small: tuple[fz.Array, np.ndarray]) -> None:
    arr, data = small
    big = np.zeros((10, 5), dtype="f4")
    view = big[2:8]
    assert view.flags.c_contiguous
    arr.read(out=view)
    assert_same(big[2:8], data)
    assert not big[:2].any()
    assert not big[8:].any()


@pytest.mark.parametrize(
    ("make_out", "message"),
    [
        (lambda: np.empty((6, 5), dtype="f8"), "dtype"),
        (lambda: np.empty((6, 5), dtype=">f4"), "dtype"),
        (lambda: np.empty((5, 6), dtype="f4"), "shape"),
        (lambda: np.empty((30,), dtype="f4"), "shape"),
        (lambda: np.empty((6, 10), dtype="f4")[:, ::2], "contiguous"),
        (lambda: np.empty((5, 6), dtype="f4").T, "contiguous"),
        (lambda: np.empty((6, 5), dtype="f4", order="F"), "contiguous"),
    ],
    ids=["wrong-dtype", "byteswapped-dtype", "wrong-shape", "flat", "strided", "transposed", "fortran"],
)
def test_out_errors(small: tuple[fz.Array, np.ndarray], make_out: Any, message: str) -> None:
    arr, _ = small
    out = make_out()
    before = out.copy()
    with pytest.raises(ValueError, match=message):
        arr.read(out=out)
    np.testing.assert_array_equal(out, before)


def test_out_read_only_raises(small: tuple[fz.Array, np.ndarray]) -> None:
    arr, _ = small
    out = np.zeros((6, 5), dtype="f4")
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        arr.read(out=out)
    assert not out.any()


def test_out_not_an_array_raises(small: tuple[fz.Array, np.ndarray]) -> None:
    arr, _ = small
    with pytest.raises((ValueError, TypeError)):
        arr.read(out=[[0.0] * 5] * 6)


def test_out_shape_checked_against_selection(small: tuple[fz.Array, np.ndarray]) -> None:
    arr, _ = small
    with pytest.raises(ValueError, match="shape"):
        arr.read((0, Ellipsis), out=np.empty((6, 5), dtype="f4"))
    with pytest.raises(ValueError, match="shape"):
        arr.read((0, 0), out=np.empty((1,), dtype="f4"))


# --- threads -------------------------------------------------------------------------------------


@pytest.fixture
def two_stores(tmp_path: Path) -> list[tuple[fz.Array, np.ndarray]]:
    """One array's shape in two stores, chunked and compressed differently (blosc zstd, and
    sharded v3), with zarr-python's reads of them."""
    out = []
    for k, options in enumerate(
        [
            {"chunks": (2, 3, 2), "zarr_format": 2, "compressors": numcodecs.Blosc(cname="zstd", shuffle=1)},
            {"chunks": (1, 2, 4), "zarr_format": 3, "shards": (2, 6, 4)},
        ]
    ):
        path = write_array(tmp_path / f"p{k}.zarr", sample_data((5, 6, 4), "f4", seed=k), **options)
        out.append((fz.open_array(path), zarr_read(path)))
    return out


@pytest.mark.parametrize(
    ("axes", "key"),
    [((0, 1), (slice(None), slice(None), slice(None))), ((1, 2), (slice(1, 5), slice(None), slice(None)))],
    ids=["point-axis-first", "point-axis-second"],
)
def test_points_into_one_shared_output(
    two_stores: list[tuple[fz.Array, np.ndarray]], axes: tuple[int, int], key: Any
) -> None:
    """Points of two stores read into one output at shuffled rows: each row holds zarr-python's
    values of its point, whichever store it came from, and every chunk is read once."""
    rng = np.random.default_rng(4)
    count = 20
    store = rng.integers(0, 2, count)
    coords = [rng.integers(0, two_stores[0][1].shape[axis], count) for axis in axes]
    rows = rng.permutation(count)
    expected = []
    for p in range(count):
        full = two_stores[int(store[p])][1][key]
        index: list[Any] = [slice(None)] * 3
        for axis, c in zip(axes, coords, strict=True):
            index[axis] = int(c[p]) - (key[axis].start or 0)
        expected.append(full[tuple(index)])
    # The point axis sits where the first point axis was.
    shape = list(expected[0].shape)
    position = sum(1 for d in range(axes[0]) if d not in axes)
    shape.insert(position, count)
    out = np.full(shape, np.nan, dtype="f4")
    requests = []
    for k, (arr, _) in enumerate(two_stores):
        mine = np.flatnonzero(store == k)
        points = {axis: c[mine] for axis, c in zip(axes, coords, strict=True)}
        requests.append((arr, key, points, out, rows[mine]))
    stats = fz._core._read_points_into(requests)
    for p in range(count):
        assert_same(np.take(out, rows[p], axis=position), expected[p])
    assert stats.bytes_out == out.nbytes


def test_points_into_refuses_outputs_that_could_race(two_stores: list[tuple[fz.Array, np.ndarray]]) -> None:
    arr, _ = two_stores[0]
    out = np.zeros((4, 6, 4), dtype="f4")
    points = {0: np.array([0, 1, 2, 3])}
    read = fz._core._read_points_into
    cases: list[tuple[list[Any], type[Exception], str]] = [
        ([(arr, ..., points, out, [0, 1, 1, 2])], ValueError, "given to two points"),
        ([(arr, ..., points, out, [0, 1])], ValueError, "4 points and 2 rows"),
        (
            [(arr, ..., {0: np.array([0, 1])}, out, [0, 1]), (arr, ..., {0: np.array([2, 3])}, out, [1, 2])],
            ValueError,
            "output row 1 is given to two points",
        ),
        ([(arr, ..., points, out, [0, 1, 2, 4])], fz.SelectionError, "not in 0..4"),
        (
            [(arr, ..., {0: np.array([0])}, out, [0]), (arr, ..., {0: np.array([1])}, out[1:], [0])],
            ValueError,
            "overlapping outputs",
        ),
        ([(arr, ..., points, out.astype("f8"), [0, 1, 2, 3])], ValueError, "dtype"),
        (
            [(arr, ..., points, np.zeros((4, 4, 6), "f4").transpose(0, 2, 1), [0, 1, 2, 3])],
            ValueError,
            "contiguous",
        ),
        ([(arr, ..., points, out)], TypeError, "out, rows"),
    ]
    for requests, error, message in cases:
        with pytest.raises(error, match=message):
            read(requests)
    assert not out.any()


def test_set_get_num_threads(fresh_threads: None) -> None:
    assert fz.get_num_threads() >= 1
    fz.set_num_threads(1)
    assert fz.get_num_threads() == 1
    fz.set_num_threads(3)
    assert fz.get_num_threads() == 3
    with pytest.raises(ValueError, match="at least 1"):
        fz.set_num_threads(0)
    assert fz.get_num_threads() == 3
    with pytest.raises((ValueError, OverflowError)):
        fz.set_num_threads(-2)
    with pytest.raises(TypeError):
        fz.set_num_threads(2.0)  # type: ignore[arg-type]


def test_results_identical_across_thread_counts(
    fresh_threads: None, many_arrays: list[tuple[str, np.ndarray]]
) -> None:
    requests = [(fz.open_array(path), ...) for path, _ in many_arrays]
    fz.set_num_threads(1)
    single = fz.read_many(requests)
    single_each = [arr[sel] for arr, sel in requests]
    fz.set_num_threads(2)
    double = fz.read_many(requests)
    double_each = [arr[sel] for arr, sel in requests]
    for (_, full), a, b, c, d in zip(many_arrays, single, double, single_each, double_each, strict=True):
        for got in (a, b, c, d):
            assert_same(got, full)


def test_num_threads_from_environment() -> None:
    code = "import fastzarr as fz; print(fz.get_num_threads())"
    env = {"FASTZARR_NUM_THREADS": "3", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


# --- pickle --------------------------------------------------------------------------------------


def test_pickle_array_round_trip(tmp_path: Path) -> None:
    data = sample_data((5, 4), "i2")
    path = write_array(tmp_path / "p.zarr", data, chunks=(2, 3), zarr_format=2, attributes={"k": "v"})
    arr = fz.open_array(path)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(arr, protocol=protocol))
        assert isinstance(clone, fz.Array)
        assert clone.shape == arr.shape
        assert clone.dtype == arr.dtype
        assert clone.chunks == arr.chunks
        assert clone.attrs == {"k": "v"}
        assert clone.url == arr.url
        assert_same(clone[...], data)
        assert_same(clone[1:, ::-1], data[1:, ::-1])


def test_pickle_group_and_member_round_trip(tmp_path: Path) -> None:
    with quiet_zarr():
        group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
        group.attrs["title"] = "t"
        sub = group.create_group("sub")
        member = sub.create_array("x", shape=(6,), chunks=(4,), dtype="f8")
        member[...] = np.linspace(0, 1, 6)
    g = fz.open_group(tmp_path / "g.zarr")
    g2 = pickle.loads(pickle.dumps(g))
    assert isinstance(g2, fz.Group)
    assert g2.keys() == g.keys() == ["sub"]
    assert g2.attrs == {"title": "t"}
    assert_same(g2["sub/x"][...], np.linspace(0, 1, 6))
    x = pickle.loads(pickle.dumps(g["sub"]["x"]))
    assert x.path == "sub/x"
    assert_same(x[...], np.linspace(0, 1, 6))
    sub2 = pickle.loads(pickle.dumps(g["sub"]))
    assert isinstance(sub2, fz.Group)
    assert sub2.path == "sub"
    assert sub2.keys() == ["x"]
