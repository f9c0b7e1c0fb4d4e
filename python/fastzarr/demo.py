"""``python -m fastzarr.demo [DIR]``: write sample weather batches, read them all with fastzarr.

Writes seed-like batch stores under DIR (default ``.demo``) once, then reads every
variable of every batch in one parallel pass and prints what it read and how fast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import fastzarr as fz
from fastzarr.testing import make_batches

SAMPLE = {"batches": 3, "variables": 30, "file_ids": 6, "steps": 24, "lat": 48, "lon": 96, "overlap": 1}


def ensure_sample(root: Path) -> list[Path]:
    """The sample batches under ``root``, written first if missing or made with other parameters."""
    marker = root / "sample.json"
    paths = sorted(root.glob("batch_*.zarr"))
    if marker.exists() and json.loads(marker.read_text()) == SAMPLE and len(paths) == SAMPLE["batches"]:
        return paths
    print(f"writing {SAMPLE['batches']} sample batches under {root}/ (once) ...", flush=True)
    started = time.perf_counter()
    paths = make_batches(
        root,
        batches=SAMPLE["batches"],
        variables=SAMPLE["variables"],
        file_ids=SAMPLE["file_ids"],
        steps=SAMPLE["steps"],
        lat=SAMPLE["lat"],
        lon=SAMPLE["lon"],
        overlap=SAMPLE["overlap"],
    )
    marker.write_text(json.dumps(SAMPLE))
    print(f"  written in {time.perf_counter() - started:.1f} s", flush=True)
    return paths


def read_all(paths: list[Path], repeat: int = 5) -> tuple[int, int, float]:
    """Reads every array of every batch in one pass, ``repeat`` times.

    Returns (arrays, bytes, best seconds); the first pass also warms the OS page cache
    and the allocator, so the best of a few is what decoding costs.
    """
    groups = [fz.open_group(p) for p in paths]
    arrays = [group[name] for group in groups for name in group.array_keys()]
    requests = [(array, ...) for array in arrays if isinstance(array, fz.Array)]
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        results = fz.read_many(requests)
        timings.append(time.perf_counter() - started)
    return len(results), sum(r.nbytes for r in results), min(timings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default=".demo", type=Path)
    args = parser.parse_args(argv)
    paths = ensure_sample(args.directory)

    first = fz.open_group(paths[0])
    var = first["var0000"]
    assert isinstance(var, fz.Array)
    print(f"\n{len(paths)} stores like {paths[0]}:")
    print(f"  {first!r}")
    print(f"  {var!r}")
    centre = float(var[0, 0, var.shape[2] // 2, var.shape[3] // 2])
    print(f"  var0000 at file_id 0, step 0, the grid centre: {centre:.3f} K")

    threads = fz.get_num_threads()
    arrays, nbytes, seconds = read_all(paths)
    fz.set_num_threads(1)
    _, _, one_thread = read_all(paths)
    fz.set_num_threads(threads)
    print(f"\nread {arrays} arrays, {nbytes / 1e6:.1f} MB decoded:")
    print(f"  {threads} threads: {seconds:.3f} s = {nbytes / seconds / 1e9:.2f} GB/s")
    speedup = one_thread / seconds
    print(f"  1 thread:  {one_thread:.3f} s = {nbytes / one_thread / 1e9:.2f} GB/s")
    print(f"  {threads} threads read {speedup:.2f}x as fast as one (best of 5 passes each)")


if __name__ == "__main__":
    main()
