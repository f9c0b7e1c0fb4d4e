"""Groups: v2/v3, with and without consolidated metadata, nesting, attrs and Mapping behaviour."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import fastzarr as fz
import numpy as np
import pytest
import zarr
from conftest import assert_same, quiet_zarr, sample_data

ROOT_ATTRS = {"title": "test store", "version": 3, "tags": ["a", "b"]}


def make_tree(path: Path, zarr_format: int, *, consolidated: bool) -> dict[str, np.ndarray]:
    """A small tree: /temp, /mask, /sub (group) with /sub/wind and /sub/deeper/level.
    Returns {member path: values}."""
    values = {
        "temp": sample_data((6, 4), "f4", seed=1),
        "mask": sample_data((5,), "bool", seed=2),
        "sub/wind": sample_data((3, 3, 2), "i2", seed=3),
        "sub/deeper/level": sample_data((7,), "u8", seed=4),
    }
    with quiet_zarr():
        root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format, attributes=ROOT_ATTRS)
        temp = root.create_array("temp", shape=(6, 4), chunks=(4, 3), dtype="f4", attributes={"units": "K"})
        temp[...] = values["temp"]
        mask = root.create_array("mask", shape=(5,), chunks=(2,), dtype="bool")
        mask[...] = values["mask"]
        sub = root.create_group("sub", attributes={"level": 1})
        wind = sub.create_array("wind", shape=(3, 3, 2), chunks=(2, 2, 2), dtype="i2")
        wind[...] = values["sub/wind"]
        deeper = sub.create_group("deeper")
        level = deeper.create_array("level", shape=(7,), chunks=(3,), dtype="u8", fill_value=5)
        level[:3] = values["sub/deeper/level"][:3]
        values["sub/deeper/level"][3:] = 5
        if consolidated:
            zarr.consolidate_metadata(str(path))
    return values


@pytest.fixture(
    params=[(2, False), (2, True), (3, False), (3, True)],
    ids=["v2", "v2-consolidated", "v3", "v3-consolidated"],
)
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, int, bool, dict[str, np.ndarray]]:
    zarr_format, consolidated = request.param
    path = tmp_path / "tree.zarr"
    values = make_tree(path, zarr_format, consolidated=consolidated)
    return str(path), zarr_format, consolidated, values


def test_group_properties(tree) -> None:
    path, zarr_format, consolidated, _ = tree
    g = fz.open_group(path)
    assert isinstance(g, fz.Group)
    assert isinstance(g, Mapping)
    assert g.zarr_format == zarr_format
    assert g.consolidated is consolidated
    assert g.attrs == ROOT_ATTRS
    assert g.path == ""
    assert g.url.endswith("tree.zarr")


def test_group_members_match_zarr(tree) -> None:
    path, _, _, _ = tree
    with quiet_zarr():
        ref = zarr.open_group(path, mode="r")
        ref_keys = sorted(k for k, _ in ref.members())
        ref_arrays = sorted(ref.array_keys())
        ref_groups = sorted(ref.group_keys())
    g = fz.open_group(path)
    assert sorted(g.keys()) == ref_keys == ["mask", "sub", "temp"]
    assert sorted(g.array_keys()) == ref_arrays == ["mask", "temp"]
    assert sorted(g.group_keys()) == ref_groups == ["sub"]


def test_mapping_behaviour(tree) -> None:
    path, _, _, values = tree
    g = fz.open_group(path)
    keys = g.keys()
    assert len(g) == 3
    assert list(g) == list(keys)
    assert [k for k, _ in g.items()] == list(keys)
    assert len(g.values()) == 3
    for key, member in zip(keys, g.values(), strict=True):
        assert key in g
        assert type(g.get(key)) is type(member)
        assert g.get(key).path == member.path
    assert "temp" in g
    assert "nope" not in g
    assert g.get("nope") is None
    sentinel = object()
    assert g.get("nope", sentinel) is sentinel
    assert isinstance(g.get("temp"), fz.Array)
    assert isinstance(g["sub"], fz.Group)
    assert isinstance(g["temp"], fz.Array)
    as_dict = dict(g)
    assert sorted(as_dict) == ["mask", "sub", "temp"]
    assert_same(as_dict["temp"][...], values["temp"])


def test_missing_member_raises_key_error(tree) -> None:
    path, _, _, _ = tree
    g = fz.open_group(path)
    with pytest.raises(KeyError, match="nope"):
        g["nope"]
    with pytest.raises(KeyError):
        g["sub/nope"]
    with pytest.raises(KeyError):
        g["temp/nope"]


def test_nested_access(tree) -> None:
    path, zarr_format, consolidated, values = tree
    g = fz.open_group(path)
    sub = g["sub"]
    assert isinstance(sub, fz.Group)
    assert sub.path == "sub"
    assert sub.attrs == {"level": 1}
    assert sub.zarr_format == zarr_format
    assert sub.consolidated is consolidated
    assert sorted(sub.keys()) == ["deeper", "wind"]
    assert sorted(g["sub/deeper"].keys()) == ["level"]
    for name, expected in values.items():
        member = g[name]
        assert isinstance(member, fz.Array)
        assert member.path == name
        assert_same(member[...], expected)
    assert_same(g["sub"]["deeper"]["level"][...], values["sub/deeper/level"])
    assert_same(g["sub/wind"][1:, ::-1], values["sub/wind"][1:, ::-1])
    assert "sub/wind" in g
    assert "sub/deeper/level" in g
    assert "sub/nope" not in g
    assert g["temp"].attrs == {"units": "K"}


def test_open_group_at_path(tree) -> None:
    path, _, _, values = tree
    sub = fz.open_group(path, path="sub")
    assert sub.path == "sub"
    assert sorted(sub.keys()) == ["deeper", "wind"]
    assert_same(sub["wind"][...], values["sub/wind"])
    deeper = fz.open_group(Path(path) / "sub" / "deeper")
    assert deeper.keys() == ["level"]
    assert_same(deeper["level"][...], values["sub/deeper/level"])


def test_repr_names_members(tree) -> None:
    path, _, _, _ = tree
    g = fz.open_group(path)
    text = repr(g)
    for name in ("temp", "mask", "sub"):
        assert name in text
    assert "wind" in repr(g["sub"])
    assert "temp" in repr(g["temp"])


def test_read_many_over_group_values(tree) -> None:
    path, _, _, values = tree
    g = fz.open_group(path)
    arrays = [g[name] for name in values]
    results = fz.read_many([(a, ...) for a in arrays])
    for name, got in zip(values, results, strict=True):
        assert_same(got, values[name])


def test_consolidated_v2_reads_members_from_zmetadata(tmp_path: Path) -> None:
    path = tmp_path / "tree.zarr"
    values = make_tree(path, 2, consolidated=True)
    assert (path / ".zmetadata").exists()
    # Remove the members' own metadata: only .zmetadata still describes them.
    for name in (
        "temp/.zarray",
        "temp/.zattrs",
        "sub/wind/.zarray",
        "sub/.zgroup",
        "sub/.zattrs",
        "sub/deeper/level/.zarray",
    ):
        os.remove(path / name)
    g = fz.open_group(path)
    assert g.consolidated is True
    assert sorted(g.keys()) == ["mask", "sub", "temp"]
    assert g["temp"].attrs == {"units": "K"}
    assert g["sub"].attrs == {"level": 1}
    for name, expected in values.items():
        assert_same(g[name][...], expected)


def test_consolidated_v3_reads_members_from_root(tmp_path: Path) -> None:
    path = tmp_path / "tree.zarr"
    values = make_tree(path, 3, consolidated=True)
    for name in ("temp", "sub/wind", "sub/deeper/level"):
        os.remove(path / name / "zarr.json")
    g = fz.open_group(path)
    assert g.consolidated is True
    assert g["temp"].attrs == {"units": "K"}
    for name, expected in values.items():
        assert_same(g[name][...], expected)


def test_unconsolidated_group_sees_new_members(tmp_path: Path) -> None:
    path = tmp_path / "tree.zarr"
    make_tree(path, 2, consolidated=False)
    with quiet_zarr():
        root = zarr.open_group(str(path), mode="a")
        extra = root.create_array("extra", shape=(2,), dtype="i1")
        extra[...] = [1, -1]
    g = fz.open_group(path)
    assert g.consolidated is False
    assert "extra" in g
    assert_same(g["extra"][...], np.array([1, -1], dtype="i1"))


def test_empty_group(tmp_path: Path) -> None:
    for fmt in (2, 3):
        with quiet_zarr():
            zarr.open_group(str(tmp_path / f"e{fmt}.zarr"), mode="w", zarr_format=fmt)
        g = fz.open_group(tmp_path / f"e{fmt}.zarr")
        assert len(g) == 0
        assert g.keys() == []
        assert list(g) == []
        assert g.attrs == {}
        assert g.zarr_format == fmt


@pytest.mark.parametrize("consolidated", [True, False])
def test_many_members_built_together_each_fails_alone(tmp_path: Path, consolidated: bool) -> None:
    """Members are built in batches (one hand-over to the decode pool per batch): a batch
    holding a member that cannot be built still gives every other member, the bad one fails
    with its own error when asked for, and each member reads its own values."""
    values = {f"v{i:03d}": sample_data((4, 3), "f4", seed=i) for i in range(300)}
    with quiet_zarr():
        root = zarr.open_group(str(tmp_path), mode="w", zarr_format=2)
        for name, data in values.items():
            root.create_array(name, shape=data.shape, chunks=(2, 3), dtype="f4")[...] = data
        if consolidated:
            zarr.consolidate_metadata(str(tmp_path))
    bad = "v001"
    zarray = tmp_path / bad / ".zarray"
    meta = zarray.read_text().replace('"blosc"', '"no-such-codec"').replace('"zstd"', '"no-such-codec"')
    zarray.write_text(meta)
    if consolidated:
        zmeta = tmp_path / ".zmetadata"
        doc = json.loads(zmeta.read_text())
        doc["metadata"][f"{bad}/.zarray"] = json.loads(meta)
        zmeta.write_text(json.dumps(doc))
    group = fz.open_group(str(tmp_path))
    assert group["v000"] is not None  # builds the batch that holds the bad member
    with pytest.raises(fz.UnsupportedCodecError, match=bad):
        group[bad]
    with pytest.raises(fz.UnsupportedCodecError, match=bad):
        group[bad]  # still failing, not cached as something else
    for name, data in values.items():
        if name != bad:
            assert_same(group[name][...], data)
    assert group["v299"].path == "v299"


def test_open_groups_equals_open_group_and_names_the_first_failure(tmp_path: Path) -> None:
    """``_core.open_groups`` (extract_points' way of opening many stores at once) gives the same
    groups as ``open_group`` one by one, in order; a failure names the first source that failed."""
    from fastzarr import _core  # noqa: PLC0415

    paths = []
    for i in range(3):
        path = tmp_path / f"g{i}.zarr"
        make_tree(path, 2 + i % 2, consolidated=bool(i % 2))
        paths.append(path)
    groups = _core.open_groups(paths)
    assert [g.url for g in groups] == [fz.open_group(p).url for p in paths]
    for group, path in zip(groups, paths, strict=True):
        one = fz.open_group(path)
        assert sorted(group.array_keys()) == sorted(one.array_keys())
        for name in one.array_keys():
            np.testing.assert_array_equal(group[name][...], one[name][...])
    missing = [paths[0], tmp_path / "nothing.zarr", tmp_path / "also_nothing.zarr"]
    with pytest.raises(fz.StoreNotFoundError, match=r"/nothing\.zarr") as info:
        _core.open_groups(missing)
    assert "also_nothing" not in str(info.value)
    assert _core.open_groups([]) == []


def test_describe_equals_member_access(tree) -> None:
    """Group.describe gives, in one call, each member array as group[name] gives it, its
    attributes and dimension names, and a layout that arrays share exactly when their metadata
    documents are equal but for their attributes."""
    path, _, _, values = tree
    group = fz.open_group(path)
    described = group.describe()
    assert list(described) == group.array_keys()
    for name, found in described.items():
        assert not isinstance(found, BaseException), found
        array, layout, attributes, dimension_names = found
        member = group[name]
        assert array.path == member.path
        assert attributes == member.attrs
        assert dimension_names == member.dimension_names
        assert_same(array[...], values[name])
        without = {k: v for k, v in member.metadata.items() if k != "attributes"}
        assert json.loads(layout) == without
    sub = group["sub"]
    assert set(sub.describe(["wind"])) == {"wind"}


def test_describe_reports_each_failure_as_a_value(tmp_path: Path) -> None:
    """A member that cannot be opened, a group, or a missing name maps to its exception (the
    one group[name] raises), not raised: the other members are still described. Arrays with
    equal metadata but their attributes share one layout."""
    with quiet_zarr():
        root = zarr.open_group(str(tmp_path), mode="w", zarr_format=2)
        for name, units in (("a", "K"), ("b", "m"), ("bad", "K")):
            arr = root.create_array(name, shape=(4,), chunks=(2,), dtype="f4", attributes={"units": units})
            arr[...] = np.arange(4, dtype="f4")
        root.create_array("other", shape=(4,), chunks=(4,), dtype="f4")
        root.create_group("grp")
    zarray = tmp_path / "bad" / ".zarray"
    zarray.write_text(zarray.read_text().replace('"blosc"', '"no-such-codec"'))
    group = fz.open_group(str(tmp_path))
    described = group.describe(["a", "b", "bad", "other", "grp", "nope"])
    assert described["a"][1] == described["b"][1]
    assert described["a"][2] == {"units": "K"}
    assert described["b"][2] == {"units": "m"}
    assert described["a"][1] != described["other"][1]
    assert isinstance(described["bad"], fz.UnsupportedCodecError)
    assert "bad" in str(described["bad"])
    assert isinstance(described["grp"], ValueError)
    assert "group" in str(described["grp"])
    assert isinstance(described["nope"], KeyError)
    assert isinstance(described["nope"], fz.FastzarrError)
    with pytest.raises(type(described["nope"])):
        group["nope"]
