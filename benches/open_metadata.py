"""The metadata stage of ``extract_points`` over a wide store, side by side with ``xr.open_zarr``.

One batch store of 3,930 float32 variables (the width of the archive that motivates fastzarr;
file_id x step x lat x lon = 4 x 2 x 8 x 16, consolidated v2 metadata). ``extract_points`` of
one point reports how long opening the store and describing every array took
(``report.seconds["metadata"]``); ``xr.open_zarr`` opening the same store (consolidated, lazy)
is the peer: the work it does before any data is read. Best of ``--repeat`` after a warm-up, in
one process (the store's files in the page cache). The section "Metadata of a wide store" of
RESULTS.md is replaced in place::

    .venv/bin/python benches/open_metadata.py           # full run, updates benches/RESULTS.md
    .venv/bin/python benches/open_metadata.py --quick   # 1,000 variables, prints only
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path
from typing import Any

import fastzarr as fz
import xarray as xr
from fastzarr.testing import make_batches
from latency import machine, update_results

SECTION = "## Metadata of a wide store"
POINT = {"lat": 0.0, "lon": 0.0}


def measure(store: Path, repeat: int) -> dict[str, float]:
    """Best seconds of extract_points' metadata stage, of the whole call, and of xr.open_zarr."""
    stage, whole, peer = [], [], []
    for _ in range(repeat + 1):  # the first round warms up
        started = time.perf_counter()
        _, report = fz.extract_points([store], points=POINT, method="nearest", return_report=True)
        whole.append(time.perf_counter() - started)
        stage.append(report.seconds["metadata"])
        started = time.perf_counter()
        xr.open_zarr(store)
        peer.append(time.perf_counter() - started)
    return {"metadata": min(stage[1:]), "extract": min(whole[1:]), "open_zarr": min(peer[1:])}


def section(variables: int, r: dict[str, Any], repeat: int) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"{SECTION} ({variables:,} variables), {now}",
            "",
            f"Measured by `benches/open_metadata.py --repeat {repeat}`: {machine()}. "
            f"One consolidated v2 store of {variables:,} float32 variables "
            "(4 x 2 x 8 x 16); best of the runs after a warm-up.",
            "",
            "| what | best s |",
            "|:---|---:|",
            f"| extract_points of one point: metadata stage | {r['metadata']:.4f} |",
            f"| extract_points of one point: whole call | {r['extract']:.4f} |",
            f"| xr.open_zarr (consolidated, lazy) | {r['open_zarr']:.4f} |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 variables; print only")
    args = parser.parse_args()
    variables = 1000 if args.quick else 3930
    with tempfile.TemporaryDirectory(prefix="fastzarr-metadata-") as tmp:
        (store,) = make_batches(tmp, batches=1, variables=variables, file_ids=4, steps=2, lat=8, lon=16)
        results = measure(store, args.repeat)
    text = section(variables, results, args.repeat)
    print(text)
    if not args.quick:
        update_results(text, SECTION)


if __name__ == "__main__":
    main()
