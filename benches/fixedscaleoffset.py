"""What FixedScaleOffset costs fastzarr against what it costs zarr-python (numcodecs).

Writes one Zarr v2 array of float64 temperatures twice with zarr-python: packed as
``FixedScaleOffset(offset=273.15, scale=100, astype="<i2")`` before zstd, and plain zstd. Both
readers read each whole array, best of ``--repeat`` in this process after a warm-up read; the
values are checked equal. Prints a Markdown table.

    .venv/bin/python benches/fixedscaleoffset.py
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import fastzarr as fz
import numcodecs
import numpy as np
import zarr
from timing import best

SHAPE, CHUNKS = (96, 721, 360), (8, 721, 360)


def write(root: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    data = (273.15 + 20 * rng.standard_normal(SHAPE)).round(2)
    filters: dict[str, list[Any] | None] = {
        "fixedscaleoffset": [numcodecs.FixedScaleOffset(offset=273.15, scale=100, dtype="<f8", astype="<i2")],
        "plain": None,
    }
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, codecs in filters.items():
            path = root / f"{name}.zarr"
            z = zarr.create_array(
                path,
                shape=SHAPE,
                chunks=CHUNKS,
                dtype="<f8",
                zarr_format=2,
                filters=codecs,
                compressors=numcodecs.Zstd(level=1),
            )
            z[...] = data
            paths[name] = str(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastzarr-fso-") as root:
        paths = write(Path(root))
        for name, path in paths.items():
            ours, got = best(lambda p=path: fz.open_array(p)[...], args.repeat)
            theirs, expected = best(lambda p=path: zarr.open_array(p, mode="r")[...], args.repeat)
            assert got.tobytes() == expected.tobytes(), name
            rows.append((name, ours, theirs))
    mb = np.prod(SHAPE) * 8 / 1e6
    threads = fz.get_num_threads()
    print(f"{mb:,.0f} MB of float64 decoded, chunks {CHUNKS}, zstd level 1; fastzarr threads: {threads}")
    print()
    print("| filter | fastzarr s | zarr-python s | zarr-python / fastzarr |")
    print("|:---|---:|---:|---:|")
    for name, ours, theirs in rows:
        print(f"| {name} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x |")
    (_, fso_ours, fso_theirs), (_, plain_ours, plain_theirs) = rows
    print()
    print(
        f"FixedScaleOffset adds {fso_ours - plain_ours:+.3f} s to fastzarr's read and "
        f"{fso_theirs - plain_theirs:+.3f} s to zarr-python's."
    )


if __name__ == "__main__":
    main()
