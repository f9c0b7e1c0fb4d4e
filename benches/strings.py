"""Variable-length strings: fastzarr against zarr-python on the same arrays.

Writes with zarr-python one array of station-like names (v2 ``|O`` + ``vlen-utf8``, and v3
``string``), 1,000,000 strings of 4-40 characters in chunks of 100,000, zstd. Both readers read
the whole array, then 1,000 scattered elements (``oindex``), best of ``--repeat`` after a warm-up;
the values are checked equal. Prints a Markdown table.

    .venv/bin/python benches/strings.py
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import zarr
from timing import best

COUNT, CHUNK = 1_000_000, 100_000


def write(root: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzäöüé -_0123456789"))
    lengths = rng.integers(4, 41, COUNT)
    letters = rng.choice(alphabet, int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    names = np.array(["".join(part) for part in np.split(letters, cuts)], dtype="T")
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for zarr_format in (2, 3):
            path = root / f"v{zarr_format}.zarr"
            z = zarr.create_array(path, shape=(COUNT,), chunks=(CHUNK,), dtype=str, zarr_format=zarr_format)
            z[...] = names
            paths[f"v{zarr_format}"] = str(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    picks = np.sort(np.random.default_rng(1).choice(COUNT, 1000, replace=False))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastzarr-strings-") as root:
        for name, path in write(Path(root)).items():
            reads: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
                "whole": (
                    lambda p=path: fz.open_array(p)[...],
                    lambda p=path: zarr.open_array(p, mode="r")[...],
                ),
                "1,000 scattered": (
                    lambda p=path: fz.open_array(p).oindex[picks],
                    lambda p=path: zarr.open_array(p, mode="r").oindex[picks],
                ),
            }
            for read_name, (ours_read, theirs_read) in reads.items():
                ours, got = best(ours_read, args.repeat)
                theirs, expected = best(theirs_read, args.repeat)
                assert got.dtype == expected.dtype, (name, read_name)
                assert got.tolist() == expected.tolist(), (name, read_name)
                rows.append((name, read_name, ours, theirs))
    threads = fz.get_num_threads()
    print(f"{COUNT:,} strings of 4-40 characters, chunks of {CHUNK:,}, zstd; fastzarr threads: {threads}")
    print()
    print("| format | read | fastzarr s | zarr-python s | zarr-python / fastzarr |")
    print("|:---|:---|---:|---:|---:|")
    for name, read_name, ours, theirs in rows:
        print(f"| {name} | {read_name} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
