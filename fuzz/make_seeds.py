"""Writes the small seed corpus of the fuzz targets (fuzz/seeds/<target>/) from real stores.

Run from the repository root with the dev environment: ``.venv/bin/python fuzz/make_seeds.py``.
"""

from __future__ import annotations

import json
import struct
import tempfile
import warnings
from pathlib import Path

import numcodecs
import numpy as np
import zarr

SEEDS = Path(__file__).parent / "seeds"


def write(target: str, name: str, data: bytes) -> None:
    (SEEDS / target).mkdir(parents=True, exist_ok=True)
    (SEEDS / target / name).write_bytes(data)


def blosc_seeds() -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "f4-shuffle": (rng.standard_normal(3000).astype("f4"), 1),
        "i8-bitshuffle": (np.arange(1000, dtype="i8"), 2),
        "u1-noshuffle": (rng.integers(0, 4, 5000).astype("u1"), 0),
        "f8-ragged": (rng.standard_normal(333), 1),
    }
    for name, (data, shuffle) in arrays.items():
        for cname in ("lz4", "zstd", "blosclz"):
            encoded = numcodecs.Blosc(cname=cname, shuffle=shuffle, blocksize=1024).encode(data)
            ranges = [(0, 8), (data.nbytes // 2, 16), (data.nbytes - 4, 4)]
            prefix = struct.pack("<IB", data.nbytes, len(ranges)) + b"".join(
                struct.pack("<II", *r) for r in ranges
            )
            write("blosc_ranges", f"{name}-{cname}", prefix + encoded)
    tiny = numcodecs.Blosc(cname="lz4").encode(np.zeros(4, "u1"))  # stored uncompressed (memcpyed)
    write("blosc_ranges", "memcpyed", struct.pack("<IB", 4, 0) + tiny)


def metadata_seeds() -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in (2, 3):
            root = Path(tmp) / f"g{fmt}.zarr"
            group = zarr.open_group(str(root), mode="w", zarr_format=fmt)
            group.create_array("a", shape=(10, 20), chunks=(5, 7), dtype="f4", compressors=None)
            group.create_array("b", shape=(6,), chunks=(4,), dtype="i2", fill_value=3)
            if fmt == 3:
                group.create_array("s", shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="u1")
            zarr.consolidate_metadata(str(root))
            if fmt == 2:
                write("metadata", "v2-zarray-a", b"\x00" + (root / "a" / ".zarray").read_bytes())
                write("metadata", "v2-zarray-b", b"\x00" + (root / "b" / ".zarray").read_bytes())
                write("metadata", "v2-zmetadata", b"\x02" + (root / ".zmetadata").read_bytes())
            else:
                write("metadata", "v3-array-a", b"\x01" + (root / "a" / "zarr.json").read_bytes())
                write("metadata", "v3-array-s", b"\x01" + (root / "s" / "zarr.json").read_bytes())
                consolidated = json.loads((root / "zarr.json").read_text())["consolidated_metadata"]
                write("metadata", "v3-consolidated", b"\x03" + json.dumps(consolidated).encode())


def plan_seeds() -> None:
    write("plan", "2d-slices", bytes([2, 10, 12, 3, 4, 2, 1, 7, 1, 9, 2, 1, 0, 0, 5, 1, 3]))
    write(
        "plan",
        "3d-array-mask",
        bytes([3, 7, 5, 9, 2, 2, 4, 3, 3, 3, 0, 250, 6, 4, 5, 1, 0, 1, 0, 1, 2, 3, 1, 2, 3]),
    )
    write("plan", "points", bytes([2, 20, 20, 3, 3, 1, 2, 1, 1, 3, 5, 255, 19, 2, 9, 4]))


if __name__ == "__main__":
    blosc_seeds()
    metadata_seeds()
    plan_seeds()
