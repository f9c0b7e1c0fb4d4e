"""Sample data and checks for pipelines built on fastzarr.

`make_batches` writes seed-like weather batch stores, the layout of the archive that
motivated fastzarr: float32 variables over (file_id, step, lat, lon), one file_id per
chunk, blosc-compressed, consolidated metadata, consecutive batches sharing file_ids.
It needs xarray and zarr-python (``pip install fastzarr[testing]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import numcodecs
import numpy as np
import numpy.typing as npt
import xarray as xr
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

__all__ = ["make_batches", "parse_codec"]

_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "byteshuffle": 1, "bitshuffle": 2}


def parse_codec(codec: str, zarr_format: int) -> dict[str, Any]:
    """Turns ``"blosc:zstd:3:shuffle"``, ``"zstd:3"``, ``"gzip:5"``, ``"lz4"`` or ``"none"`` into
    xarray ``to_zarr`` encoding keys for the given Zarr format."""
    name, *args = codec.split(":")
    if name == "none":
        return {"compressors": None}
    if name == "blosc":
        cname = args[0] if args else "zstd"
        clevel = int(args[1]) if len(args) > 1 else 5
        shuffle = _SHUFFLES[args[2]] if len(args) > 2 else 1
        if zarr_format == 2:
            return {"compressors": numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=shuffle)}
        v3_shuffle = ["noshuffle", "shuffle", "bitshuffle"][shuffle]
        return {
            "compressors": BloscCodec(cname=cast(Any, cname), clevel=clevel, shuffle=cast(Any, v3_shuffle))
        }
    level = int(args[0]) if args else None
    if zarr_format == 2:
        makers = {
            "zstd": numcodecs.Zstd,
            "gzip": numcodecs.GZip,
            "zlib": numcodecs.Zlib,
            "lz4": numcodecs.LZ4,
        }
        if name not in makers:
            raise ValueError(f"unknown codec {codec!r}")
        return {"compressors": makers[name]() if level is None else makers[name](level)}
    if name == "zstd":
        return {"compressors": ZstdCodec(level=level or 0)}
    if name == "gzip":
        return {"compressors": GzipCodec(level=level or 5)}
    raise ValueError(f"unknown codec {codec!r} for Zarr v3")


def _field(
    *, rng_seed: int, file_id: int, variable: int, steps: int, lat: int, lon: int
) -> npt.NDArray[np.float32]:
    """Smooth, weather-like values that depend only on (seed, file_id, variable)."""
    rng = np.random.default_rng([rng_seed, file_id, variable])
    y = np.linspace(0, np.pi, lat, dtype=np.float32)[None, :, None]
    x = np.linspace(0, 2 * np.pi, lon, dtype=np.float32)[None, None, :]
    t = np.arange(steps, dtype=np.float32)[:, None, None]
    base = 280 + 15 * np.sin(y) * np.cos(x + 0.1 * t + variable)
    noise = rng.standard_normal((steps, lat, lon), dtype=np.float32)
    field: npt.NDArray[np.float32] = (base + noise).astype(np.float32)
    return field


def make_batches(
    path: str | os.PathLike[str],
    *,
    batches: int = 3,
    variables: int = 20,
    file_ids: int = 4,
    steps: int = 6,
    lat: int = 32,
    lon: int = 64,
    overlap: int = 1,
    zarr_format: int = 2,
    codec: str = "blosc:zstd:3:shuffle",
    chunks: dict[str, int] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Writes ``batches`` seed-like stores under ``path`` and returns their paths.

    Batch ``b`` holds file_ids ``b*(file_ids-overlap) ... + file_ids``: consecutive batches
    repeat ``overlap`` file_ids, with identical values (values depend on the file_id only).
    """
    if not 0 <= overlap < file_ids:
        raise ValueError("overlap must be at least 0 and smaller than file_ids")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    chunking = {"file_id": 1, "step": steps, "lat": lat, "lon": lon} | (chunks or {})
    encoding_codec = parse_codec(codec, zarr_format)
    lats = np.linspace(90, -90, lat, dtype=np.float32)
    lons = np.linspace(0, 360, lon, endpoint=False, dtype=np.float32)
    paths = []
    for batch in range(batches):
        ids = np.arange(file_ids, dtype=np.int64) + batch * (file_ids - overlap)
        data_vars = {}
        for v in range(variables):
            values = np.stack(
                [
                    _field(rng_seed=seed, file_id=int(i), variable=v, steps=steps, lat=lat, lon=lon)
                    for i in ids
                ]
            )
            data_vars[f"var{v:04d}"] = xr.Variable(
                ("file_id", "step", "lat", "lon"),
                values,
                attrs={"units": "K", "long_name": f"feature {v}"},
            )
        ds = xr.Dataset(
            data_vars,
            coords={
                "file_id": ("file_id", ids),
                "step": ("step", np.arange(steps, dtype=np.int64), {"units": "hours"}),
                "lat": ("lat", lats, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", lons, {"units": "degrees_east", "standard_name": "longitude"}),
            },
            attrs={"title": f"fastzarr sample batch {batch}", "source": "fastzarr.testing.make_batches"},
        )
        encoding = {
            name: {"chunks": tuple(chunking[str(d)] for d in ds[name].dims), **encoding_codec}
            for name in ds.data_vars
        }
        store = root / f"batch_{batch:03d}.zarr"
        ds.to_zarr(store, mode="w", zarr_format=zarr_format, consolidated=True, encoding=encoding)
        paths.append(store)
    return paths
