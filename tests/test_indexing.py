"""Integer-array and mask selections: `oindex`, `read`, `read_many` (outer) and `[]` (numpy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import pytest
import zarr
from conftest import quiet_zarr, write_array
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SHAPE = (23, 17, 5)
CHUNKS = (5, 4, 2)


@pytest.fixture(scope="module", params=[2, 3])
def stored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[fz.Array, Any, np.ndarray]:
    data = np.random.default_rng(1).standard_normal(SHAPE)
    path = write_array(
        tmp_path_factory.mktemp("idx") / "a.zarr", data, chunks=CHUNKS, zarr_format=request.param
    )
    with quiet_zarr():
        reference = zarr.open_array(path, mode="r")
    return fz.open_array(path), reference, data


def axis_selection(length: int) -> st.SearchStrategy[Any]:
    ints = st.integers(-length, length - 1)
    return st.one_of(
        ints,
        st.slices(length).filter(lambda s: s.step is None or s.step > 0),
        st.lists(ints, min_size=1, max_size=8).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.booleans(), min_size=length, max_size=length).map(np.array),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_oindex_matches_zarr_python(stored: tuple[fz.Array, Any, np.ndarray], data: st.DataObject) -> None:
    arr, reference, _ = stored
    key = tuple(data.draw(axis_selection(n)) for n in SHAPE)
    with quiet_zarr():
        expected = reference.oindex[key]
    np.testing.assert_array_equal(arr.oindex[key], expected)
    np.testing.assert_array_equal(arr.read(key), expected)
    np.testing.assert_array_equal(fz.read_many([(arr, key)])[0], expected)


@pytest.mark.parametrize(
    "key",
    [
        [3, 0, 22, 3, -1],
        np.array([16, 2]),
        (slice(None), [16, 0, 3]),
        (slice(2, 20, 3), slice(None), [4, 0]),
        (4, [3, 1]),  # an integer next to the array: numpy agrees with outer indexing
        ([3, 1], 2),
        (..., np.array([True, False, False, True, True])),
        [],
    ],
)
def test_getitem_with_one_array_follows_numpy(stored: tuple[fz.Array, Any, np.ndarray], key: Any) -> None:
    arr, _, data = stored
    np.testing.assert_array_equal(arr[key], data[key])


@pytest.mark.parametrize("key", [([1, 2], [3, 4]), (0, slice(None), [1, 2]), ([1, 2], slice(None), 0)])
def test_getitem_refuses_keys_where_numpy_broadcasts(
    stored: tuple[fz.Array, Any, np.ndarray], key: Any
) -> None:
    arr, _, data = stored
    with pytest.raises(fz.SelectionError, match="oindex"):
        arr[key]
    # oindex reads them with outer semantics.
    expected = data[np.ix_(*[np.atleast_1d(np.arange(n)[k]) for k, n in zip(key, SHAPE, strict=False)])]
    got = arr.oindex[key]
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ([0, 23], IndexError),
        ([-24], IndexError),
        (np.zeros((2, 2), dtype=int), IndexError),
        ([0.5, 1.0], TypeError),
        (np.array([True, False]), IndexError),  # mask of the wrong length
    ],
)
def test_bad_integer_arrays(
    stored: tuple[fz.Array, Any, np.ndarray], key: Any, error: type[Exception]
) -> None:
    arr, _, _ = stored
    with pytest.raises(error):
        arr.oindex[key]


def test_repeated_points_in_one_chunk_read_it_once(tmp_path: Path) -> None:
    data = np.arange(1000, dtype="f4").reshape(10, 100)
    arr = fz.open_array(write_array(tmp_path / "p.zarr", data, chunks=(10, 100), zarr_format=2))
    keys = [(slice(None), j) for j in (3, 50, 3, 99)]
    results, stats = fz.read_many([(arr, k) for k in keys], return_stats=True)
    for got, key in zip(results, keys, strict=True):
        np.testing.assert_array_equal(got, data[key])
    assert stats.chunks == 1
    assert stats.bytes_out == 4 * 10 * 4


@pytest.mark.parametrize(
    ("selection", "points", "expected"),
    [
        # Points on axes 1 and 2 replace them with one axis of points (the selection's
        # entry for a point axis is ignored).
        (
            (slice(2, 9), slice(1, 5)),
            {1: [0, 16, 4, 4], 2: [3, 0, 4, -1]},
            lambda d: d[2:9][:, [0, 16, 4, 4], [3, 0, 4, -1]],
        ),
        ((3,), {2: [0, 4, 1]}, lambda d: d[3][:, [0, 4, 1]]),
        ((...,), {0: [22, 0, 5]}, lambda d: d[[22, 0, 5]]),
        ((slice(None), 7), {0: [1, 2], 2: [0, 4]}, lambda d: d[[1, 2], 7, [0, 4]]),
    ],
)
def test_points_match_numpy_vectorized_indexing(
    stored: tuple[fz.Array, Any, np.ndarray], selection: Any, points: dict[int, list[int]], expected: Any
) -> None:
    arr, _, data = stored
    (got,), stats = fz.read_many([(arr, selection, points)], return_stats=True)
    np.testing.assert_array_equal(got, expected(data))
    assert stats.bytes_out == got.nbytes


def test_points_read_each_chunk_once(stored: tuple[fz.Array, Any, np.ndarray]) -> None:
    arr, _, data = stored
    rows = np.array([0, 1, 2, 3, 4, 0])  # all in the first chunk along axis 0
    cols = np.array([0, 1, 2, 3, 0, 0])  # all in the first chunk along axis 1
    (got,), stats = fz.read_many([(arr, (), {0: rows, 1: cols})], return_stats=True)
    np.testing.assert_array_equal(got, data[rows, cols])
    assert stats.chunks == 3  # the 3 chunks of axis 2 (5 elements in chunks of 2)


@pytest.mark.parametrize(
    ("points", "error"),
    [
        ({0: [0, 1], 1: [0]}, ValueError),
        ({0: [23]}, IndexError),
        ({5: [0]}, IndexError),
        ({0: [0.5]}, TypeError),
    ],
)
def test_bad_points(
    stored: tuple[fz.Array, Any, np.ndarray], points: dict[int, Any], error: type[Exception]
) -> None:
    arr, _, _ = stored
    with pytest.raises(error):
        fz.read_many([(arr, (), points)])


@pytest.mark.parametrize(
    "key",
    [
        slice(0, 10, 2**63 - 1),
        slice(None, None, -(2**63)),
        slice(None, None, -(2**63 - 1)),
        slice(-(2**63), 2**63 - 1, 2**62),
        slice(2**63 - 1, -(2**63), -(2**62)),
        -(2**63) + 23,
    ],
    ids=str,
)
def test_extreme_steps_and_bounds_equal_numpy(stored: tuple[fz.Array, Any, np.ndarray], key: Any) -> None:
    """Slice arithmetic in 64 bits wrapped and selected nothing for steps near 2^63."""
    arr, _, data = stored
    if isinstance(key, int):
        with pytest.raises(IndexError):
            data[key]
        with pytest.raises(fz.SelectionError):
            arr[key]
        return
    np.testing.assert_array_equal(arr[key], data[key])
    np.testing.assert_array_equal(arr[:, key], data[:, key])
    np.testing.assert_array_equal(arr.oindex[[0, 22], key], data[[0, 22]][:, key])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_axes_beyond_2_to_the_63_index_from_their_end(tmp_path: Path, zarr_format: int) -> None:
    """An axis longer than any i64: negative indices and slices count from its true end; an
    axis whose last chunk would end beyond 2^64 elements is refused when opened."""
    data = np.arange(6, dtype="i4")
    path = write_array(tmp_path / "a.zarr", data, chunks=(2,), zarr_format=zarr_format, fill_value=-1)
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    meta_path = Path(path) / name
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [2**64 - 2]
    meta_path.write_text(json.dumps(meta))
    arr = fz.open_array(path)
    np.testing.assert_array_equal(arr[:6], data)
    assert arr[-1] == -1
    assert arr[-(2**63)] == -1
    np.testing.assert_array_equal(arr[-3:], [-1, -1, -1])
    np.testing.assert_array_equal(arr[:: 2**63 - 1], [0, -1])  # 0, 2^63 - 1
    np.testing.assert_array_equal(arr[:: -(2**63)], [-1, -1])
    np.testing.assert_array_equal(arr.oindex[[-1, 5, 0]], [-1, 5, 0])
    meta["shape"] = [2**64 - 1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(fz.MetadataError, match="beyond 2"):
        fz.open_array(path)


@st.composite
def coordinate_selections(draw: st.DrawFn) -> tuple[Any, ...]:
    """One integer array per axis, all of one shape (1-D or 2-D), or scalars broadcast with them."""
    n = draw(st.integers(0, 12))
    shape = draw(st.sampled_from([(n,), (2, n)]))
    size = int(np.prod(shape))
    items: list[Any] = []
    for axis, length in enumerate(SHAPE):
        if axis > 0 and draw(st.booleans()):
            items.append(draw(st.integers(-length, length - 1)))
        else:
            values = draw(st.lists(st.integers(-length, length - 1), min_size=size, max_size=size))
            items.append(np.array(values, dtype=np.int64).reshape(shape))
    return tuple(items)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_vindex_matches_zarr_python(stored: tuple[fz.Array, Any, np.ndarray], data: st.DataObject) -> None:
    arr, reference, full = stored
    key = data.draw(coordinate_selections(), label="key")
    with quiet_zarr():
        expected = reference.vindex[key]
    got = arr.vindex[key]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, full[key])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_multidimensional_masks_match_zarr_python(
    stored: tuple[fz.Array, Any, np.ndarray], data: st.DataObject
) -> None:
    arr, reference, full = stored
    density = data.draw(st.floats(0, 1), label="density")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    mask = np.random.default_rng(seed).random(SHAPE) < density
    with quiet_zarr():
        expected = reference[mask]
        np.testing.assert_array_equal(reference.vindex[mask], expected)
    np.testing.assert_array_equal(arr[mask], expected)
    np.testing.assert_array_equal(arr.vindex[mask], expected)
    # A mask over the leading axes only: numpy keeps the remaining axis.
    leading = mask[:, :, 0]
    np.testing.assert_array_equal(arr[leading], full[leading])
    np.testing.assert_array_equal(arr[leading.tolist()], full[leading])


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (([0, 23], [0, 0], [0, 0]), IndexError),
        (([0, 1], [0, 1, 2], [0, 0]), IndexError),  # shapes that do not broadcast
        (([0, 1], [0, 1]), IndexError),  # one array per axis
        ((slice(None), [0, 1], [0, 1]), TypeError),
        (([0.5], [0], [0]), TypeError),
        (np.zeros((23, 17), dtype=bool), IndexError),  # a vindex mask covers every axis
    ],
)
def test_bad_vindex_keys(stored: tuple[fz.Array, Any, np.ndarray], key: Any, error: type[Exception]) -> None:
    arr, _, _ = stored
    with pytest.raises(error):
        arr.vindex[key]


def test_mask_of_the_wrong_shape_is_refused(stored: tuple[fz.Array, Any, np.ndarray]) -> None:
    arr, _, _ = stored
    with pytest.raises(fz.SelectionError):
        arr[np.zeros((23, 16), dtype=bool)]


def test_points_across_many_chunks(tmp_path: Path) -> None:
    data = np.arange(10_000, dtype="i4").reshape(100, 100)
    arr = fz.open_array(write_array(tmp_path / "a.zarr", data, chunks=(10, 10)))
    rows = np.arange(100)
    got = arr.vindex[rows, rows[::-1]]  # the anti-diagonal crosses 10 chunks
    np.testing.assert_array_equal(got, data[rows, rows[::-1]])
