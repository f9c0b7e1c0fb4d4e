"""Sample data: seed-like weather batch stores, the layout of the archive that motivated fastzarr.

float32 variables over (file_id, step, lat, lon), one file_id per chunk, blosc-compressed,
CF attributes, consolidated metadata, consecutive batches sharing file_ids. Writing them needs
xarray and zarr-python (``pip install fastzarr[testing]``); both are imported on first use.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

__all__ = ["make_batches", "parse_codec"]

_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "byteshuffle": 1, "bitshuffle": 2}


def parse_codec(codec: str, zarr_format: int) -> dict[str, Any]:
    """Turns ``"blosc:zstd:3:shuffle"``, ``"zstd:3"``, ``"gzip:5"``, ``"lz4"`` or ``"none"`` into
    xarray ``to_zarr`` encoding keys for the given Zarr format."""
    import numcodecs  # noqa: PLC0415 - a dev/testing dependency, imported on use
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec  # noqa: PLC0415

    if zarr_format not in {2, 3}:
        raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")
    name, *args = codec.split(":")
    if name == "none":
        return {"compressors": None}
    if name == "blosc":
        cname = args[0] if args else "zstd"
        clevel = int(args[1]) if len(args) > 1 else 5
        if len(args) > 2 and args[2] not in _SHUFFLES:
            raise ValueError(f"unknown blosc shuffle {args[2]!r} in {codec!r}; one of {sorted(_SHUFFLES)}")
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
    """Writes ``batches`` seed-like stores ``batch_000.zarr ...`` under ``path``; returns their paths.

    Each store holds ``variables`` float32 variables ``var0000 ...`` over (file_id, step, lat,
    lon) with CF attributes (units, long_name; latitude/longitude coordinates) and consolidated
    metadata, readable by ``xr.open_zarr``. Batch ``b`` holds file_ids
    ``b*(file_ids-overlap) ... + file_ids``: consecutive batches repeat ``overlap`` file_ids, with
    identical values (values depend on seed, file_id and variable only).

    Args:
        chunks: chunk length per dimension name; the default is one chunk per file_id
            (``{"file_id": 1}``, the other dimensions whole).
        zarr_format: 2 or 3.
        codec: ``"blosc:CNAME:LEVEL:SHUFFLE"``, ``"zstd:LEVEL"``, ``"gzip:LEVEL"``, ``"zlib"``,
            ``"lz4"`` (v2 only) or ``"none"``; see :func:`parse_codec`.
        seed: values are a function of (seed, file_id, variable): same arguments, same bytes.
    """
    import xarray as xr  # noqa: PLC0415 - optional dependency, imported on use

    for name, value in (("batches", batches), ("variables", variables), ("file_ids", file_ids)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    for name, value in (("steps", steps), ("lat", lat), ("lon", lon)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    if not 0 <= overlap < file_ids:
        raise ValueError(f"overlap must be at least 0 and smaller than file_ids ({file_ids}), not {overlap}")
    sizes = {"file_id": file_ids, "step": steps, "lat": lat, "lon": lon}
    unknown = sorted(set(chunks or {}) - set(sizes))
    if unknown:
        raise ValueError(f"chunks names unknown dimensions {unknown}; the dimensions are {list(sizes)}")
    chunking = {"file_id": 1, "step": steps, "lat": lat, "lon": lon} | (chunks or {})
    bad = {d: c for d, c in chunking.items() if not isinstance(c, int) or c < 1}
    if bad:
        raise ValueError(f"chunk lengths must be positive integers, got {bad}")
    encoding_codec = parse_codec(codec, zarr_format)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
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
                "file_id": ("file_id", ids, {"long_name": "source file"}),
                "step": ("step", np.arange(steps, dtype=np.int64), {"long_name": "forecast step"}),
                "lat": (
                    "lat",
                    lats,
                    {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"},
                ),
                "lon": (
                    "lon",
                    lons,
                    {"units": "degrees_east", "standard_name": "longitude", "axis": "X"},
                ),
            },
            attrs={
                "Conventions": "CF-1.8",
                "title": f"fastzarr sample batch {batch}",
                "source": "fastzarr.testing.make_batches",
            },
        )
        encoding = {
            name: {"chunks": tuple(chunking[str(d)] for d in ds[name].dims), **encoding_codec}
            for name in ds.data_vars
        }
        store = root / f"batch_{batch:03d}.zarr"
        with _quiet_zarr_writes():
            ds.to_zarr(store, mode="w", zarr_format=zarr_format, consolidated=True, encoding=encoding)
        paths.append(store)
    return paths


@contextlib.contextmanager
def _quiet_zarr_writes() -> Iterator[None]:
    """zarr-python warns that consolidated metadata is not part of the Zarr v3 spec: expected for
    sample data, so silenced (only zarr's own warnings, only while writing) so that suites run
    with ``filterwarnings = error`` can call make_batches."""
    import zarr.errors  # noqa: PLC0415 - a dev/testing dependency, imported on use

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
        warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
        yield
