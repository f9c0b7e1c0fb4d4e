"""The writer side by side: ``fz.to_zarr`` against ``xr.Dataset.to_zarr``, same data, same format
(Zarr v3), same codec (blosc zstd-3 shuffle) and same chunks, best of ``--repeat`` after a warm-up.

Two datasets, both in memory before the clock starts:

- 1,000 small variables (float32, file_id x lat x lon = 4 x 128 x 128, one chunk per file_id):
  per-variable overhead decides;
- a seed-like batch store (40 variables of file_id x step x lat x lon = 12 x 6 x 150 x 180,
  one chunk per file_id): compression on 2 cores decides.

fastzarr's rows make every file and directory durable, re-read every chunk's CRC-32C and rename the
store into place; xarray's do none of that. Both stores are read back and compared (identical).
The section "Writer" of RESULTS.md is replaced in place::

    .venv/bin/python benches/writer.py              # full run, updates benches/RESULTS.md
    .venv/bin/python benches/writer.py --quick      # smaller data, prints only
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import xarray as xr
from fastzarr.testing import parse_codec
from latency import machine, update_results
from timing import best_in_turn

CODEC = "blosc:zstd:3:shuffle"
SECTION = "## Writer"


def _field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """A smooth field plus noise (compresses like weather data, not like zeros or noise)."""
    axes = np.meshgrid(*(np.linspace(0, 3, n) for n in shape), indexing="ij")
    smooth = sum(np.sin(a * (i + 1)) for i, a in enumerate(axes))
    return (280 + 10 * smooth + rng.normal(0, 0.5, shape)).astype(np.float32)


def dataset(variables: int, shape: dict[str, int]) -> xr.Dataset:
    """``variables`` float32 variables of ``shape``, with integer coordinates."""
    rng = np.random.default_rng(0)
    dims = tuple(shape)
    base = _field(rng, tuple(shape.values()))
    data = {f"var{i:04d}": (dims, base + np.float32(i % 7)) for i in range(variables)}
    coords = {d: np.arange(n) for d, n in shape.items()}
    return xr.Dataset(data, coords=coords)


def measure(ds: xr.Dataset, work: Path, repeat: int) -> dict[str, float]:
    """Best seconds of each writer, and the bytes written."""
    chunks = {"file_id": 1}
    compressors = parse_codec(CODEC, 3)["compressors"]
    encoding = {
        n: {
            "chunks": tuple(1 if d == "file_id" else ds.sizes[d] for d in ds[n].dims),
            "compressors": compressors,
        }
        for n in ds.data_vars
    }
    # Each run writes a new store: replacing the last one would time its deletion (xarray
    # deletes it first; fastzarr after, in the background, on the disk the next run uses).
    runs = iter(range(2 * (repeat + 1)))

    def fz_write() -> Any:
        return fz.to_zarr(ds, work / f"fz{next(runs)}.zarr", codec=CODEC, chunks=chunks, fsync=True)

    def xr_write() -> Any:
        path = work / f"xr{next(runs)}.zarr"
        return ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=True, encoding=encoding)

    out = {"bytes": float(sum(v.nbytes for v in ds.data_vars.values()))}
    out.update(best_in_turn({"fz": fz_write, "xr": xr_write}, repeat))
    fz_path, xr_path = work / "fz0.zarr", work / "xr1.zarr"  # the warm-up calls' stores
    xr.testing.assert_identical(xr.open_zarr(fz_path).load(), xr.open_zarr(xr_path).load())
    return out


def section(results: dict[str, dict[str, float]], repeat: int, settle: float) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{SECTION} (fz.to_zarr vs xr.Dataset.to_zarr), {now}",
        "",
        f"Measured by `benches/writer.py --repeat {repeat} --settle {settle:g}`: {machine()}. "
        "Same data in memory, Zarr v3, blosc zstd-3 shuffle, one chunk per file_id, each run a "
        "new store (nothing deleted until the end), the two writers in turn, best of the runs "
        f"after a warm-up each, timed after {settle:g} s with nothing deleted on the filesystem "
        "(see below). fastzarr makes every file and directory "
        "durable (one syncfs for a store of many files on a local filesystem, else an fsync "
        "each), re-reads every chunk's CRC-32C and renames the store into place; xarray does "
        "none of that. Both stores read back identical.",
        "",
        "| dataset | MB | fz.to_zarr s | xr.Dataset.to_zarr s | fastzarr faster by |",
        "|:---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['bytes'] / 1e6:,.0f} | {r['fz']:.3f} | {r['xr']:.3f} | {r['xr'] / r['fz']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller data; print, do not update RESULTS.md")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait before timing, for a filesystem that slows the creation of files "
        "after many were deleted (ext4 without a journal, for a minute or more)",
    )
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    cases = {
        "1,000 small variables (4 x 128 x 128 float32)": dataset(
            1000 // scale, {"file_id": 4, "lat": 128, "lon": 128}
        ),
        "seed-like batch store (40 variables, 12 x 6 x 150 x 180 float32)": dataset(
            40 // scale, {"file_id": 12, "step": 6, "lat": 150, "lon": 180}
        ),
    }
    with tempfile.TemporaryDirectory(prefix="fastzarr-writer-") as tmp:
        time.sleep(args.settle)
        results = {}
        for i, (name, ds) in enumerate(cases.items()):
            work = Path(tmp) / str(i)
            work.mkdir()
            results[name] = measure(ds, work, args.repeat)
    text = section(results, args.repeat, args.settle)
    print(text)
    if not args.quick:
        update_results(text, SECTION)


if __name__ == "__main__":
    main()
