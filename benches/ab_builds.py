"""Full-load decoding speed of two fastzarr builds, alternating on the same stores.

A check that a change did not slow decoding: build the earlier commit's package somewhere (its
``python/`` folder with ``_core.abi3.so`` built into it), then::

    python benches/ab_builds.py DATA_DIR EARLIER/python python 20
    FASTZARR_NUM_THREADS=1 python benches/ab_builds.py DATA_DIR EARLIER/python python 20 --cpu

Every round loads every data variable of the batch stores in DATA_DIR (written on first use) once
with each build, each in a fresh process: a warm-up load, then the best of five. ``--cpu`` times
the process's CPU time instead of wall time: on a shared machine, one decode thread's CPU time
moves far less from run to run than wall time does. Prints each build's best and median, and the
median of the per-round ratios B/A.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import fastzarr as fz
stores, clock = json.loads(sys.argv[2]), getattr(time, sys.argv[3])
def requests():
    out = []
    for store in stores:
        group = fz.open_group(store)
        out += [(group[name], ...) for name in group.array_keys() if name.startswith("var")]
    return out
fz.read_many(requests())
best = float("inf")
for _ in range(5):
    started = clock()
    fz.read_many(requests())
    best = min(best, clock() - started)
print(best)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of batch_*.zarr stores (written if empty)")
    parser.add_argument("a", help="the python/ folder of build A (the earlier one)")
    parser.add_argument("b", help="the python/ folder of build B")
    parser.add_argument("rounds", type=int)
    parser.add_argument("--cpu", action="store_true", help="time CPU, not wall-clock, seconds")
    args = parser.parse_args()
    stores = [str(p) for p in sorted(args.data.glob("batch_*.zarr"))]
    if not stores:
        from fastzarr.testing import make_batches  # noqa: PLC0415 - only to write the data

        batches = make_batches(args.data, batches=3, variables=40, file_ids=8, steps=24, lat=96, lon=128)
        stores = [str(p) for p in batches]
    clock = "process_time" if args.cpu else "perf_counter"
    times: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        for name, package in (("A", args.a), ("B", args.b)):
            command = [sys.executable, "-c", CHILD, package, json.dumps(stores), clock]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            times[name].append(float(out.split()[-1]))
    ratios = [b / a for a, b in zip(times["A"], times["B"], strict=True)]
    for name, values in times.items():
        print(f"{name}: best {min(values):.4f} s, median {statistics.median(values):.4f} s")
    best = min(times["B"]) / min(times["A"])
    print(f"B/A: best {best:.3f}, median of rounds {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
