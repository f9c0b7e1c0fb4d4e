"""Every failure raises the documented exception, with a message that says where the problem is."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import assert_same, http_server, quiet_zarr, write_array
from fastzarr.testing import make_batches
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

DATA = np.arange(24, dtype="f8").reshape(4, 6)


def test_errors_module_holds_every_exception() -> None:
    import fastzarr.cache  # noqa: PLC0415
    import fastzarr.errors  # noqa: PLC0415
    import fastzarr.extract  # noqa: PLC0415

    exported = {
        n
        for n in fz.__all__
        if isinstance(getattr(fz, n), type) and issubclass(getattr(fz, n), Warning | Exception)
    }
    assert exported == set(fastzarr.errors.__all__)
    for name in exported:
        assert getattr(fz, name) is getattr(fastzarr.errors, name), name
    # The modules that raise them still offer them under their old homes.
    assert fastzarr.extract.DuplicateError is fastzarr.errors.DuplicateError
    assert fastzarr.cache.CacheError is fastzarr.errors.CacheError


def test_exception_hierarchy() -> None:
    for exc in (
        fz.MetadataError,
        fz.UnsupportedCodecError,
        fz.CorruptChunkError,
        fz.StoreNotFoundError,
        fz.SelectionError,
        fz.TimeoutError,
    ):
        assert issubclass(exc, fz.FastzarrError)
    assert issubclass(fz.FastzarrError, Exception)
    assert issubclass(fz.StoreNotFoundError, FileNotFoundError)
    assert issubclass(fz.SelectionError, IndexError)
    assert issubclass(fz.TimeoutError, builtins.TimeoutError)
    for exc in (fz.StoreChangedError, fz.InvalidPathError, fz.MemberNotFoundError):
        assert issubclass(exc, fz.FastzarrError)
    assert issubclass(fz.InvalidPathError, ValueError)
    assert issubclass(fz.MemberNotFoundError, KeyError)


def test_path_argument_errors_are_fastzarr_errors(tmp_path: Path) -> None:
    """A path that leaves the store, or names no member, raises a FastzarrError that is still the
    ValueError or KeyError callers catch."""
    store = tmp_path / "g.zarr"
    with quiet_zarr():
        group = zarr.open_group(str(store), mode="w", zarr_format=3)
        group.create_array("x", shape=(4, 6), chunks=(2, 3), dtype="f8")[...] = DATA
    for open_ in (fz.open_array, fz.open_group):
        with pytest.raises(fz.InvalidPathError, match="not a valid path") as info:
            open_(store, path="../elsewhere")
        assert isinstance(info.value, ValueError)
    opened = fz.open_group(store)
    for name in ("nope", "x/nope", "../x"):
        with pytest.raises(fz.MemberNotFoundError, match=f"'{name}' is not a member .* {store}") as missing:
            opened[name]
        assert isinstance(missing.value, KeyError)
    with pytest.raises(fz.MemberNotFoundError, match="no group 'nope'") as no_group:
        fz.open_zarr(store, group="nope")
    assert isinstance(no_group.value, KeyError)


# --- corrupt chunks ----------------------------------------------------------------------------

CORRUPT_CASES: dict[str, tuple[int, dict[str, Any]]] = {
    "v2-zstd": (2, {"compressors": numcodecs.Zstd(level=1)}),
    "v2-blosc": (2, {"compressors": numcodecs.Blosc(cname="lz4", shuffle=1)}),
    "v2-gzip": (2, {"compressors": numcodecs.GZip()}),
    "v2-zlib": (2, {"compressors": numcodecs.Zlib()}),
    "v2-bz2": (2, {"compressors": numcodecs.BZ2()}),
    "v2-lz4": (2, {"compressors": numcodecs.LZ4()}),
    "v2-uncompressed": (2, {"compressors": None}),
    "v3-zstd": (3, {"compressors": ZstdCodec(level=1)}),
    "v3-blosc": (3, {"compressors": BloscCodec(cname="zstd")}),
    "v3-gzip": (3, {"compressors": GzipCodec()}),
    "v3-crc32c": (3, {"compressors": [Crc32cCodec()]}),
    "v3-uncompressed": (3, {"compressors": None}),
    "v3-sharded": (3, {"shards": (4, 6)}),
}


def _write_nested(root: Path, zarr_format: int, options: dict[str, Any]) -> tuple[str, str]:
    """An array at grp/arr inside a group; returns (store path, file of its chunk (1, 1) or shard)."""
    with quiet_zarr():
        group = zarr.open_group(str(root), mode="w", zarr_format=zarr_format)
        arr = group.create_group("grp").create_array(
            "arr", shape=(4, 6), chunks=(2, 3), dtype="f8", **options
        )
        arr[...] = DATA
    if zarr_format == 2:
        key = "1.1"
    elif "shards" in options:
        key = "c/0/0"
    else:
        key = "c/1/1"
    chunk = root / "grp" / "arr" / key
    assert chunk.exists()
    return str(root), key


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("case", list(CORRUPT_CASES), ids=str)
def test_corrupt_chunk(tmp_path: Path, case: str, damage: str) -> None:
    zarr_format, options = CORRUPT_CASES[case]
    store, key = _write_nested(tmp_path / "s.zarr", zarr_format, options)
    chunk = Path(store) / "grp" / "arr" / key
    raw = chunk.read_bytes()
    if damage == "truncated":
        chunk.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        chunk.write_bytes(b"\x13 not a chunk \xff" * 7)
    else:
        chunk.write_bytes(b"")
    arr = fz.open_group(store)["grp/arr"]
    with pytest.raises(fz.CorruptChunkError) as info:
        arr[...]
    message = str(info.value)
    assert "grp/arr" in message
    assert key in message
    # read() and read_many() report it the same way
    with pytest.raises(fz.CorruptChunkError):
        arr.read((slice(2, 4), slice(3, 6)))
    with pytest.raises(fz.CorruptChunkError):
        fz.read_many([(arr, (slice(0, 2), slice(0, 3))), (arr, (slice(2, 4), slice(3, 6)))])
    if "sharded" not in case:
        # the undamaged chunks still read, and the reader is not left broken
        assert_same(arr[:2, :], DATA[:2])
        assert_same(arr[:, :3], DATA[:, :3])


def test_corrupt_chunk_key_for_root_array(tmp_path: Path) -> None:
    for zarr_format, key in ((2, "0.1"), (3, "c/0/1")):
        path = write_array(tmp_path / f"r{zarr_format}.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format)
        (Path(path) / key).write_bytes(b"garbage garbage garbage")
        with pytest.raises(fz.CorruptChunkError, match=key):
            fz.open_array(path)[...]


def test_crc32c_detects_a_flipped_bit(tmp_path: Path) -> None:
    path = write_array(tmp_path / "c.zarr", DATA, chunks=(2, 3), zarr_format=3, compressors=[Crc32cCodec()])
    chunk = Path(path) / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with pytest.raises(fz.CorruptChunkError, match="c/1/0"):
        fz.open_array(path)[...]
    assert_same(fz.open_array(path)[:2], DATA[:2])


@pytest.mark.parametrize("key", [(2, 0), (slice(2, 4), 1)], ids=repr)
def test_crc32c_checked_on_partial_chunk_reads(tmp_path: Path, key: Any) -> None:
    """Reading a few elements of a chunk must still verify the chunk's checksum."""
    path = write_array(tmp_path / "c.zarr", DATA, chunks=(2, 3), zarr_format=3, compressors=[Crc32cCodec()])
    chunk = Path(path) / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[0] ^= 0x01  # element (2, 0), inside every selection above
    chunk.write_bytes(bytes(raw))
    with pytest.raises(fz.CorruptChunkError, match="c/1/0"):
        fz.open_array(path)[key]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("key", [(3, 5), (3, slice(3, 6))], ids=repr)
def test_uncompressed_chunk_size_checked_on_partial_reads(tmp_path: Path, zarr_format: int, key: Any) -> None:
    """A raw chunk of the wrong size is corrupt, whichever part of it is read."""
    path = write_array(tmp_path / "u.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format, compressors=None)
    key_name = "1.1" if zarr_format == 2 else "c/1/1"
    (Path(path) / key_name).write_bytes(b"\x13 not a chunk \xff" * 7)
    with pytest.raises(fz.CorruptChunkError, match=key_name):
        fz.open_array(path)[key]


def test_oversized_uncompressed_chunk(tmp_path: Path) -> None:
    path = write_array(tmp_path / "u.zarr", DATA, chunks=(2, 3), zarr_format=2, compressors=None)
    chunk = Path(path) / "0.0"
    chunk.write_bytes(chunk.read_bytes() + b"\x00" * 8)
    with pytest.raises(fz.CorruptChunkError, match=r"0\.0"):
        fz.open_array(path)[...]


# --- metadata ----------------------------------------------------------------------------------


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("content", ['{"shape": [4,', "", "not json at all", "[]"], ids=repr)
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_bad_array_metadata_json(tmp_path: Path, zarr_format: int, content: str) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format)
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    (Path(path) / name).write_text(content)
    with pytest.raises(fz.MetadataError) as info:
        fz.open_array(path)
    assert name in str(info.value)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_bad_group_metadata_json(tmp_path: Path, zarr_format: int) -> None:
    with quiet_zarr():
        zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
    name = ".zgroup" if zarr_format == 2 else "zarr.json"
    (tmp_path / "g.zarr" / name).write_text("{oops")
    with pytest.raises(fz.MetadataError, match=name.replace(".", r"\.")):
        fz.open_group(tmp_path / "g.zarr")


def test_bad_zattrs_json(tmp_path: Path) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=2, attributes={"a": 1})
    (Path(path) / ".zattrs").write_text("{bad")
    with pytest.raises(fz.MetadataError, match=r"\.zattrs"):
        fz.open_array(path).attrs  # noqa: B018


def test_bad_zmetadata_json(tmp_path: Path) -> None:
    with quiet_zarr():
        group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=2)
        group.create_array("x", shape=(2,), dtype="i1")
        zarr.consolidate_metadata(str(tmp_path / "g.zarr"))
    (tmp_path / "g.zarr" / ".zmetadata").write_text('{"metadata": ')
    with pytest.raises(fz.MetadataError, match=r"\.zmetadata"):
        fz.open_group(tmp_path / "g.zarr").keys()


@pytest.mark.parametrize(
    ("zarr_format", "edit", "message"),
    [
        (2, lambda m: m.pop("shape"), "shape"),
        (2, lambda m: m.update(zarr_format=7), ""),
        (2, lambda m: m.update(chunks=[0, 3]), ""),
        (2, lambda m: m.update(chunks=[2]), ""),
        (3, lambda m: m.pop("shape"), "shape"),
        (3, lambda m: m.update(fill_value="abc"), "fill"),
        (3, lambda m: m.update(zarr_format=2), "zarr_format"),
        (3, lambda m: m.update(storage_transformers=[{"name": "foo"}]), "foo"),
    ],
    ids=[
        "v2-no-shape",
        "v2-format-7",
        "v2-zero-chunk",
        "v2-chunk-rank",
        "v3-no-shape",
        "v3-bad-fill",
        "v3-format-2",
        "v3-storage-transformer",
    ],
)
def test_invalid_metadata(tmp_path: Path, zarr_format: int, edit: Any, message: str) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format)
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    _edit_json(Path(path) / name, edit)
    with pytest.raises(fz.MetadataError) as info:
        fz.open_array(path)[...]
    assert name in str(info.value)
    assert message in str(info.value)


# --- unsupported codecs ------------------------------------------------------------------------


def test_unknown_v2_compressor(tmp_path: Path) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=2)
    _edit_json(Path(path) / ".zarray", lambda m: m.update(compressor={"id": "nosuchcodec", "level": 1}))
    with pytest.raises(fz.UnsupportedCodecError, match="nosuchcodec"):
        fz.open_array(path)[...]


def test_unknown_v2_filter(tmp_path: Path) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=2)
    _edit_json(Path(path) / ".zarray", lambda m: m.update(filters=[{"id": "nosuchfilter"}]))
    with pytest.raises(fz.UnsupportedCodecError, match="nosuchfilter"):
        fz.open_array(path)[...]


def test_unknown_v3_codec(tmp_path: Path) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=3)
    _edit_json(Path(path) / "zarr.json", lambda m: m["codecs"].append({"name": "nosuchcodec"}))
    with pytest.raises(fz.UnsupportedCodecError, match="nosuchcodec"):
        fz.open_array(path)[...]


def test_unsupported_codec_names_the_array(tmp_path: Path) -> None:
    with quiet_zarr():
        group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=2)
        group.create_group("inner").create_array("weird", shape=(4,), dtype="i4")
    _edit_json(
        tmp_path / "g.zarr" / "inner" / "weird" / ".zarray",
        lambda m: m.update(compressor={"id": "nosuchcodec"}),
    )
    with pytest.raises(fz.UnsupportedCodecError) as info:
        fz.open_group(tmp_path / "g.zarr")["inner/weird"][...]
    assert "inner/weird" in str(info.value)
    assert "nosuchcodec" in str(info.value)


def test_unsupported_codec_configuration(tmp_path: Path) -> None:
    """A known codec with a configuration fastzarr cannot decode is refused, not misread."""
    path = write_array(
        tmp_path / "d.zarr",
        np.arange(8, dtype="i8"),
        zarr_format=2,
        filters=[numcodecs.Delta(dtype="<i8", astype="<i2")],
    )
    with pytest.raises(fz.UnsupportedCodecError, match="delta"):
        fz.open_array(path)[...]


@pytest.mark.parametrize(("zarr_format", "dtype"), [(2, "<q9"), (2, "|O"), (3, "nosuchtype")])
def test_unknown_data_type(tmp_path: Path, zarr_format: int, dtype: str) -> None:
    path = write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=zarr_format)
    if zarr_format == 2:
        _edit_json(Path(path) / ".zarray", lambda m: m.update(dtype=dtype))
    else:
        _edit_json(Path(path) / "zarr.json", lambda m: m.update(data_type=dtype))
    with pytest.raises((fz.UnsupportedCodecError, fz.MetadataError), match=dtype.replace("|", r"\|")):
        fz.open_array(path)[...]


# --- stores and nodes --------------------------------------------------------------------------


def test_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.zarr"
    for opener in (fz.open_array, fz.open_group):
        with pytest.raises(fz.StoreNotFoundError) as info:
            opener(missing)
        assert isinstance(info.value, FileNotFoundError)
        assert "does-not-exist.zarr" in str(info.value)
    with pytest.raises(FileNotFoundError):
        fz.open_array(str(missing))


def test_directory_without_zarr_metadata(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(fz.StoreNotFoundError):
        fz.open_array(tmp_path / "plain")
    with pytest.raises(fz.StoreNotFoundError):
        fz.open_group(tmp_path / "plain")


def test_missing_node_in_existing_store(tmp_path: Path) -> None:
    with quiet_zarr():
        zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3).create_array(
            "x", shape=(2,), dtype="i1"
        )
    with pytest.raises(fz.StoreNotFoundError, match="nope"):
        fz.open_array(tmp_path / "g.zarr", path="nope")
    with pytest.raises(fz.StoreNotFoundError, match="nope"):
        fz.open_group(tmp_path / "g.zarr", path="nope")


def test_unsupported_url_scheme() -> None:
    with pytest.raises(fz.FastzarrError, match="nosuch"):
        fz.open_array("nosuch://bucket/data.zarr")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_group_opened_as_array_and_vice_versa(tmp_path: Path, zarr_format: int) -> None:
    with quiet_zarr():
        group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
        group.create_array("x", shape=(2,), dtype="i1")
    with pytest.raises(fz.FastzarrError, match="group") as info:
        fz.open_array(tmp_path / "g.zarr")
    assert not isinstance(info.value, fz.StoreNotFoundError)
    with pytest.raises(fz.FastzarrError, match="array") as info:
        fz.open_group(tmp_path / "g.zarr" / "x")
    assert not isinstance(info.value, fz.StoreNotFoundError)
    with pytest.raises(fz.FastzarrError, match="array"):
        fz.open_group(tmp_path / "g.zarr", path="x")


# --- selections --------------------------------------------------------------------------------


@pytest.fixture
def arr(tmp_path: Path) -> fz.Array:
    return fz.open_array(write_array(tmp_path / "a.zarr", DATA, chunks=(2, 3), zarr_format=3))


@pytest.mark.parametrize("key", [4, -5, (0, 6), (0, -7), (Ellipsis, 6), (100, Ellipsis)], ids=repr)
def test_out_of_bounds_index(arr: fz.Array, key: Any) -> None:
    with pytest.raises(fz.SelectionError) as info:
        arr[key]
    assert isinstance(info.value, IndexError)
    with pytest.raises(IndexError):
        arr.read(key)
    with pytest.raises(IndexError):
        fz.read_many([(arr, key)])


@pytest.mark.parametrize(
    "key", [(0, 0, 0), (slice(None), slice(None), slice(None)), (0, Ellipsis, 0, 0)], ids=repr
)
def test_too_many_indices(arr: fz.Array, key: Any) -> None:
    with pytest.raises(fz.SelectionError, match="too many indices") as info:
        arr[key]
    assert isinstance(info.value, IndexError)


def test_two_ellipses(arr: fz.Array) -> None:
    with pytest.raises(IndexError):
        arr[..., ...]


@pytest.mark.parametrize(
    "key", [1.0, np.float64(1), (0, 2.5), slice(0.5, 2), slice(0, 2, 1.0), "0"], ids=repr
)
def test_non_integer_index(arr: fz.Array, key: Any) -> None:
    with pytest.raises(TypeError):
        arr[key]
    with pytest.raises(TypeError):
        arr.read(key)


@pytest.mark.parametrize("key", [slice(None, None, 0), (0, slice(1, 4, 0))], ids=repr)
def test_zero_step(arr: fz.Array, key: Any) -> None:
    with pytest.raises(ValueError, match="zero"):
        arr[key]


def test_selection_on_0d_array(tmp_path: Path) -> None:
    arr0 = fz.open_array(write_array(tmp_path / "z.zarr", np.array(2.5), zarr_format=2))
    assert_same(arr0[()], np.array(2.5))
    assert_same(arr0[...], np.array(2.5))
    with pytest.raises(IndexError):
        arr0[0]
    with pytest.raises(IndexError):
        arr0[:]


def test_errors_do_not_leave_temp_state(arr: fz.Array, tmp_path: Path) -> None:
    """After a burst of failures, reads still work and nothing was written next to the store."""
    before = sorted(os.listdir(tmp_path / "a.zarr"))
    for key in (10, (0, 0, 0), 1.5, slice(None, None, 0)):
        with pytest.raises((IndexError, TypeError, ValueError)):
            arr[key]
    assert_same(arr[...], DATA)
    assert sorted(os.listdir(tmp_path / "a.zarr")) == before


def test_errors_about_a_root_array_name_the_store_not_an_empty_name(tmp_path: Path) -> None:
    corrupt = write_array(tmp_path / "corrupt.zarr", DATA, chunks=(2, 3), compressors=[ZstdCodec(level=1)])
    (Path(corrupt) / "c" / "0" / "0").write_bytes(b"\x13 not a chunk \xff" * 7)
    with pytest.raises(fz.CorruptChunkError) as info:
        fz.open_array(corrupt)[...]
    message = str(info.value)
    assert f"the array at the root of store {corrupt}" in message
    assert "''" not in message

    codec = write_array(tmp_path / "codec.zarr", DATA, compressors=[ZstdCodec(level=1)])
    metadata_file = Path(codec) / "zarr.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["codecs"][-1] = {"name": "no_such_codec", "configuration": {}}
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(fz.UnsupportedCodecError) as info:
        fz.open_array(codec)
    message = str(info.value)
    assert f"the array at the root of store {codec}" in message
    assert "no_such_codec" in message
    assert "''" not in message


# --- errors that point the right way ----------------------------------------------------------


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    """A consolidated v2 store: file_id, lat, lon, step and var0000 .. var0002."""
    with quiet_zarr():
        return make_batches(tmp_path, batches=1, variables=3, file_ids=2, steps=2, lat=4, lon=6)[0]


def test_a_file_is_not_a_store(tmp_path: Path) -> None:
    text = tmp_path / "x.txt"
    text.write_text("not a store")
    openers: dict[str, Callable[[], object]] = {
        "open_group": lambda: fz.open_group(text),
        "open_array": lambda: fz.open_array(str(text)),
        "open_dataset": lambda: xr.open_dataset(text, engine="fastzarr"),
        "extract_points": lambda: fz.extract_points(text, points={"lat": 0.0}),
        "extract_points cached": lambda: fz.extract_points(
            text, points={"lat": 0.0}, cache=fz.Cache(tmp_path / "cache")
        ),
    }
    for name, opener in openers.items():
        with pytest.raises(fz.StoreNotFoundError) as info:
            opener()
        message = str(info.value)
        assert f"{text} is a file, not a Zarr store" in message, name
        assert "does not exist" not in message, name
        # still the FileNotFoundError callers catch
        assert isinstance(info.value, FileNotFoundError), name


def test_missing_array_lists_the_members_closest_first(batch: Path) -> None:
    expected = (
        f"in store {batch} (looked for zarr.json, .zarray, .zgroup); "
        "the group holds, closest first: var0001, "
    )
    for opener in (lambda: fz.open_array(batch / "var001"), lambda: fz.open_array(batch, path="var001")):
        with pytest.raises(fz.StoreNotFoundError) as info:
            opener()
        message = str(info.value)
        assert message.startswith("no Zarr array or group at 'var001' ")
        assert expected in message
        assert "file_id" in message  # every member listed, not only the close ones
    # a misspelt group member of a store given by its directory
    with pytest.raises(fz.StoreNotFoundError, match=f"'var001' in store {batch}"):
        fz.open_group(batch / "var001")


def test_missing_array_of_a_remote_store_lists_the_members(batch: Path) -> None:
    """Over HTTP (no listing), a `store/var` URL with nothing at it is looked up in its parents."""
    with http_server(batch.parent) as host:
        url = f"http://{host}/{batch.name}"
        with pytest.raises(fz.StoreNotFoundError) as info:
            fz.open_array(f"{url}/var001")
        assert str(info.value) == (
            f"no Zarr array or group at 'var001' in store {url} (looked for zarr.json, .zarray, "
            ".zgroup); the group holds, closest first: var0001, var0000, var0002, lat, file_id, lon, step"
        )
        with pytest.raises(fz.StoreNotFoundError, match=f"'nope/deeper' under {url}/var0000: "):
            fz.open_group(f"{url}/var0000/nope/deeper")  # the nearest node is the array var0000
        # A store missing altogether: no parent within reach holds a node; the store is named.
        with pytest.raises(fz.StoreNotFoundError, match=f"at the root of store http://{host}/nope.zarr "):
            fz.open_zarr(f"http://{host}/nope.zarr")


@pytest.mark.parametrize("remote", [False, True])
def test_a_path_below_an_array_says_the_array_has_no_members(batch: Path, remote: bool) -> None:
    with contextlib.ExitStack() as stack:
        base = (
            f"http://{stack.enter_context(http_server(batch.parent))}/{batch.name}" if remote else str(batch)
        )
        for opener in (fz.open_array, fz.open_group, lambda u: xr.open_dataset(u, engine="fastzarr")):
            with pytest.raises(fz.StoreNotFoundError) as info:
                opener(f"{base}/var0000/nope")
            assert str(info.value) == (
                f"no Zarr array or group at 'nope' under {base}/var0000: {base}/var0000 is a Zarr "
                "array, which holds chunks, not members"
            )


def test_open_dataset_missing_group_lists_the_groups(tmp_path: Path) -> None:
    root = zarr.open_group(tmp_path / "tree.zarr", mode="w", zarr_format=3)
    root.create_group("forecast").create_group("surface")
    root.create_group("analysis")
    with pytest.raises(fz.MemberNotFoundError) as info:
        xr.open_dataset(tmp_path / "tree.zarr", engine="fastzarr", group="forcast/surface")
    assert str(info.value) == (
        f"no group 'forcast/surface' in the store '{tmp_path / 'tree.zarr'}'; its groups, closest first: "
        "forecast/surface, forecast, analysis"
    )
    with pytest.raises(fz.MemberNotFoundError, match="which has no groups below its root"):
        xr.open_dataset(tmp_path / "tree.zarr" / "analysis", engine="fastzarr", group="nope")


def test_missing_group_member_is_a_key_error_naming_store_and_members(batch: Path) -> None:
    group = fz.open_group(batch)
    with pytest.raises(KeyError) as info:
        group["var001"]
    assert isinstance(info.value, fz.MemberNotFoundError)
    # a sentence, not the repr of a key wrapped in quotes
    assert str(info.value) == (
        f"'var001' is not a member of the root group of store {batch}; the group holds, closest first: "
        "var0001, var0000, var0002, lat, file_id, lon, step"
    )
    assert "var001" not in group
    assert group.get("var001") is None
    assert group.get("var001", 7) == 7
    assert group["var0001"].shape == (2, 2, 4, 6)


def test_inspect_reports_a_members_broken_metadata(batch: Path) -> None:
    (batch / ".zmetadata").unlink()  # so that the member's own .zarray is read
    (batch / "var0001" / ".zarray").write_text('{"shape": [2,')
    with pytest.raises(fz.MetadataError) as info:
        fz.inspect(batch)
    message = str(info.value)
    assert "var0001/.zarray" in message
    assert f"store {batch}" in message
    assert "not an array" not in message


def test_read_many_names_the_array_a_request_does_not_fit(batch: Path) -> None:
    good = fz.open_array(batch, path="var0000")
    bad = fz.open_array(batch, path="var0002")
    named = f"request 1 (on array 'var0002' of store {batch}): "
    cases: list[tuple[tuple[Any, ...], type[Exception], str]] = [
        ((bad, (0, 0, 0, 0, 0)), fz.SelectionError, "too many indices"),
        ((bad, (0, 0, 0, 6)), fz.SelectionError, "index 6 is out of bounds for axis 3 with size 6"),
        ((bad, (0, 0), {5: [0, 1]}), fz.SelectionError, "point axis 5"),
        ((bad, (0, 1.5)), TypeError, "not float"),
    ]
    for request, kind, reason in cases:
        with pytest.raises(kind) as info:
            fz.read_many([(good, (0, 0)), request])
        assert str(info.value).startswith(named), request
        assert reason in str(info.value), request
        with pytest.raises(kind, match="var0002"):
            fz.read_many([(good, (0, 0)), request], max_memory="1GB")
    assert_same(fz.read_many([(bad, (0, 0, 0, 5))])[0], zarr.open_array(str(batch / "var0002"))[0, 0, 0, 5])


def test_corrupt_chunk_of_an_array_opened_by_its_directory_names_store_and_array(batch: Path) -> None:
    chunk = batch / "var0001" / "0.0.0.0"
    chunk.write_bytes(b"\x13 not a chunk \xff" * 7)
    for url in (batch / "var0001", f"file://{batch}/var0001/"):
        with pytest.raises(fz.CorruptChunkError) as info:
            fz.open_array(url)[...]
        message = str(info.value)
        assert message.startswith("corrupt chunk 'var0001/0.0.0.0' of array 'var0001' of store "), url
        assert f"{batch}: " in message, url
        assert "root of store" not in message, url
    # opened by path, the same words
    with pytest.raises(fz.CorruptChunkError) as by_path:
        fz.open_array(batch, path="var0001")[...]
    assert str(by_path.value) == message.replace(f"file://{batch}", str(batch))
