"""fastzarr.inspect: array facts match zarr-python and the files on disk; reads, missing chunks, advice."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import fastzarr as fz
import numcodecs
import numpy as np
import pytest
import zarr
from conftest import NOTHING, quiet_zarr, write_array
from fastzarr.advice import suggest_series_chunks
from fastzarr.inspection import ArrayInfo, InspectReport
from fastzarr.report import format_size
from fastzarr.testing import make_batches
from zarr.codecs import BloscCodec, ZstdCodec

METADATA = {".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"}


def chunk_files(array_dir: Path) -> list[Path]:
    """The chunk files of one array directory (everything but metadata documents)."""
    return [Path(root) / f for root, _, files in os.walk(array_dir) for f in files if f not in METADATA]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_batches(
            tmp_path_factory.mktemp("inspect"), batches=1, variables=3, file_ids=3, steps=2, lat=8, lon=12
        )[0]


def field_store(path: Path, compressors: object, chunks: tuple[int, ...], zarr_format: int = 2) -> str:
    """A (file_id=4, step=3, lat=96, lon=192) float32 array: 216 KiB fields."""
    data = np.random.default_rng(1).standard_normal((4, 3, 96, 192)).astype(np.float32)
    return write_array(
        path,
        data,
        chunks=chunks,
        zarr_format=zarr_format,
        compressors=compressors,
        dimension_names=("file_id", "step", "lat", "lon") if zarr_format == 3 else None,
        attributes={"_ARRAY_DIMENSIONS": ["file_id", "step", "lat", "lon"]} if zarr_format == 2 else None,
    )


def test_arrays_match_zarr_python_and_disk(batch: Path) -> None:
    report = fz.inspect(batch)
    assert isinstance(report, InspectReport)
    assert isinstance(report, fz.Report)
    with quiet_zarr():
        group = zarr.open_group(str(batch), mode="r")
        names = sorted(group.array_keys())
    assert [a.name for a in report.arrays] == names
    for info in report.arrays:
        with quiet_zarr():
            ref = group[info.name]
        assert info.shape == ref.shape
        assert info.chunks == ref.chunks
        assert np.dtype(info.dtype) == ref.dtype
        assert info.chunk_bytes == math.prod(ref.chunks) * ref.dtype.itemsize
        files = chunk_files(batch / info.name)
        assert info.objects_stored == len(files)
        assert info.stored_bytes == sum(f.stat().st_size for f in files)
        assert info.objects_total == ref.nchunks
        assert info.chunks_missing == 0
        assert info.decoded_bytes == len(files) * info.chunk_bytes
        assert info.point_chunks == 1
        assert info.full_chunks == ref.nchunks
    var = next(a for a in report.arrays if a.name == "var0000")
    assert var.dims == ("file_id", "step", "lat", "lon")
    assert var.spatial_dims == ("lat", "lon")
    assert var.series_dims == ("file_id", "step")
    assert var.series_chunks == 3  # one file_id per chunk, both steps in it
    assert "blosc" in var.codecs
    assert "zstd" in var.codecs
    assert var.ratio is not None
    assert var.ratio > 1


def test_throughput_measured_and_threads_restored(batch: Path, fresh_threads: None) -> None:
    fz.set_num_threads(2)
    report = fz.inspect(batch, sample=4)
    assert fz.get_num_threads() == 2
    # One layout for the three data variables; coordinates are not timed.
    assert len(report.throughput) == 1
    t = report.throughput[0]
    assert t.arrays == ("var0000", "var0001", "var0002")
    assert t.chunks == 4
    assert t.threads == 2
    assert t.bytes_decoded == 4 * 2 * 8 * 12 * 4
    assert t.one_core is not None
    assert t.one_core > 0
    assert t.all_cores is not None
    assert t.all_cores > 0
    assert fz.inspect(batch, sample=0).throughput == ()
    with pytest.raises(ValueError, match="sample"):
        fz.inspect(batch, sample=-1)


def test_repr_html_and_json(batch: Path) -> None:
    report = fz.inspect(batch, sample=2)
    text = repr(report)
    assert text.startswith("<fastzarr.InspectReport>")
    assert "var0002" in text
    assert "missing chunks" in text
    assert "(2 chunks of 3 arrays: var0000 ... var0002)" in text
    html = report._repr_html_()
    assert html.startswith("<div><table>")
    assert "<th style='text-align:left'>codecs</th>" in html
    data = json.loads(json.dumps(report.as_dict()))
    assert data["url"] == str(batch)
    assert [a["name"] for a in data["arrays"]] == [a.name for a in report.arrays]
    assert data["arrays"][-1]["chunks_missing"] == 0
    assert data["throughput"][0]["one_core_bytes_per_second"] > 0


def test_missing_chunks_counted_and_advised(tmp_path: Path) -> None:
    data = np.arange(100 * 60, dtype=np.int32).reshape(100, 60)
    # 10 x 3 chunks; write only rows 0..19 -> 2 x 3 = 6 stored chunks.
    path = write_array(
        tmp_path / "sparse.zarr", data, chunks=(10, 20), zarr_format=3, region=(slice(0, 20), slice(None))
    )
    report = fz.inspect(path)
    (info,) = report.arrays
    assert info.objects_total == 30
    assert info.objects_stored == 6
    assert info.chunks_missing == 24
    assert any("24 of 30 chunks are missing" in a for a in report.advice)
    empty = write_array(tmp_path / "empty.zarr", data, chunks=(10, 20), region=NOTHING)
    (nothing,) = fz.inspect(empty).arrays
    assert nothing.objects_stored == 0
    assert nothing.stored_bytes == 0
    assert nothing.ratio is None


def test_blosc_whole_fields_point_read_decodes_one_block(tmp_path: Path) -> None:
    blosc = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1, blocksize=16384)
    path = field_store(tmp_path / "fields.zarr", blosc, chunks=(1, 1, 96, 192))
    report = fz.inspect(path, sample=2)
    (info,) = report.arrays
    assert info.chunk_bytes == 96 * 192 * 4
    assert info.point_chunks == 1
    assert 0 < info.point_bytes_decoded < info.chunk_bytes  # partial blosc decoding
    assert info.series_chunks == 12
    assert not any("each chunk holds" in a for a in report.advice)  # 72 KiB: too small to matter


def test_field_and_series_advice(tmp_path: Path) -> None:
    blosc = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1, blocksize=16384)
    data = np.random.default_rng(2).standard_normal((5, 4, 128, 256)).astype(np.float32)
    attrs = {"_ARRAY_DIMENSIONS": ["file_id", "step", "lat", "lon"]}
    path = write_array(
        tmp_path / "b.zarr", data, chunks=(1, 4, 128, 256), zarr_format=2, compressors=blosc, attributes=attrs
    )
    report = fz.inspect(path, sample=2)
    (info,) = report.arrays
    assert info.chunk_bytes == 512 * 1024
    assert 0 < info.point_bytes_decoded < info.chunk_bytes
    field = next(a for a in report.advice if "each chunk holds" in a)
    assert field.startswith(
        "b.zarr: each chunk holds 4 whole 128x256 fields (512.0 KiB): a point read would decode "
        "512.0 KiB per chunk; blosc partial decoding cuts this to "
    )
    series = next(a for a in report.advice if "time-series" in a)
    assert "along (file_id, step) touches 5 chunks" in series
    # 5 * 4 float32 per point series: 4 MiB / 80 B -> tiles of 2**7 = 128 (capped at lat 128, lon 256).
    assert suggest_series_chunks(info) == {"file_id": -1, "step": -1, "lat": 128, "lon": 128}
    assert "{file_id: -1, step: -1, lat: 128, lon: 128}" in series

    zstd = write_array(
        tmp_path / "z.zarr",
        data,
        chunks=(1, 4, 128, 256),
        zarr_format=3,
        compressors=ZstdCodec(level=1),
        dimension_names=("file_id", "step", "lat", "lon"),
    )
    report = fz.inspect(zstd, sample=2)
    (info,) = report.arrays
    assert info.point_bytes_decoded == info.chunk_bytes  # zstd decodes whole chunks
    assert any("compressed with blosc instead" in a for a in report.advice)


def test_incompressible_data_advice(tmp_path: Path) -> None:
    noise = np.random.default_rng(3).integers(0, 2**32, size=(8, 256, 256), dtype=np.uint32)
    path = write_array(tmp_path / "noise.zarr", noise, chunks=(1, 256, 256), compressors=ZstdCodec(level=1))
    report = fz.inspect(path, sample=2)
    (info,) = report.arrays
    assert info.ratio is not None
    assert info.ratio < 1.1
    assert any("barely compress" in a for a in report.advice)


def test_sharded_array_counts_shards(tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype=np.float64).reshape(64, 64)
    path = write_array(
        tmp_path / "sharded.zarr", data, chunks=(8, 8), shards=(32, 32), compressors=BloscCodec()
    )
    (info,) = fz.inspect(path, sample=2).arrays
    assert info.chunks == (8, 8)
    assert info.shards == (32, 32)
    assert info.objects_total == 4
    assert info.objects_stored == 4
    assert info.full_chunks == 64
    assert info.stored_bytes == sum(f.stat().st_size for f in chunk_files(Path(path)))


def test_array_url_and_errors(batch: Path) -> None:
    (info,) = fz.inspect(batch / "var0001", sample=1).arrays
    assert info.name == "var0001"
    assert info.shape == (3, 2, 8, 12)
    with pytest.raises(fz.StoreNotFoundError):
        fz.inspect(batch / "absent")


def test_array_info_properties() -> None:
    info = ArrayInfo(
        name="t",
        shape=(10, 4),
        dtype="float64",
        dims=None,
        chunks=(3, 4),
        shards=None,
        chunk_bytes=96,
        codecs="none",
        zarr_format=2,
        fill_value=0.0,
        objects_total=4,
        objects_stored=3,
        stored_bytes=150,
        decoded_bytes=288,
        point_chunks=1,
        point_bytes_read=96,
        point_bytes_decoded=96,
        series_dims=(),
        series_chunks=0,
        spatial_dims=(),
        layout="none | float64 | 3x4",
    )
    assert info.chunks_missing == 1
    assert info.nbytes == 320
    assert info.ratio == pytest.approx(288 / 150)
    assert info.full_chunks == 4


@pytest.mark.parametrize(("steps", "lat", "lon"), [(4, 96, 192), (24, 48, 96)])  # notebook, demo
def test_point_read_figures_match_what_extraction_decodes(
    tmp_path: Path, steps: int, lat: int, lon: int
) -> None:
    """The point figures inspect advertises are what extract_points then decodes for a point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (path,) = make_batches(tmp_path, batches=1, variables=2, file_ids=4, steps=steps, lat=lat, lon=lon)
    report = fz.inspect(path, sample=2)
    info = next(a for a in report.arrays if a.name == "var0000")
    assert info.spatial_dims == ("lat", "lon")
    assert info.series_dims == ("file_id", "step")
    opened = fz.open_zarr(path)
    # The centre element, the one inspect reads.
    centre = {"lat": float(opened.lat[lat // 2]), "lon": float(opened.lon[lon // 2])}
    _, extracted = fz.extract_points(
        [str(path)], points=centre, variables=["var0000"], return_report=True, progress=False
    )
    assert extracted.chunks == info.series_chunks == 4  # one chunk per file_id
    per_chunk = info.point_bytes_decoded / info.point_chunks
    assert extracted.bytes_decoded == info.series_chunks * per_chunk
    series = next(a for a in report.advice if "time-series" in a)
    assert f"decodes {format_size(extracted.bytes_decoded)}" in series
    field = next(a for a in report.advice if "each chunk holds" in a)
    if extracted.bytes_decoded < extracted.chunks * info.chunk_bytes:
        assert f"blosc partial decoding cuts this to {format_size(per_chunk)}" in field
    else:  # the point's values along step reach every block of the chunk
        assert f"a point read decodes all of it, since the point's {steps} values in a chunk" in field
