"""How full loads scale with cores: fastzarr against its peers at 1, 2, 4, ... cores.

Each (cores, peer) pair runs in a fresh child process pinned to the first ``n`` usable CPUs
(``sched_setaffinity``, inherited by the child), so every peer sees an ``n``-core machine:
fastzarr gets ``FASTZARR_NUM_THREADS=n``, dask and zarrs size their pools from the affinity
mask, tensorstore gets ``data_copy_concurrency=n``. The single-thread numcodecs floor runs once,
on one core. Datasets, peers and checks are ``compare.py``'s (every peer's arrays are checked
byte for byte against fastzarr's).

    .venv/bin/python benches/scaling.py                      # 1, 2, 4, ... up to all cores
    .venv/bin/python benches/scaling.py --cores 1,2 --repeat 3
    .venv/bin/python benches/scaling.py --quick               # small data, a smoke run

Prints one table per dataset (seconds, GB/s, speedup over the peer's own one-core time,
fastzarr's speedup over the peer at the same cores) and, with ``--write``, replaces the
"Scaling with cores" section of ``benches/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import compare

SECTION_TITLE = "## Scaling with cores"

#: Peers per dataset. The slow ones (seconds to minutes per load of the thousands of small
#: variables) run at the largest core count only.
PEERS: dict[str, tuple[str, ...]] = {
    "batches": ("fastzarr", "fz-engine", "tensorstore", "zarrs", "xarray-dask"),
    "small-vars": ("fastzarr", "fz-engine", "tensorstore"),
}
SLOW_PEERS: dict[str, tuple[str, ...]] = {"small-vars": ("fz-open-load", "xarray-dask", "zarrs")}


@contextlib.contextmanager
def pinned(cpus: list[int]) -> Iterator[None]:
    """Runs the block (and the children it starts) on ``cpus`` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def core_counts(spec: str | None, usable: int) -> list[int]:
    """``1, 2, 4, ...`` up to ``usable`` (and ``usable`` itself), or the given list."""
    if spec:
        counts = sorted({int(c) for c in spec.split(",")})
        if counts[0] < 1 or counts[-1] > usable:
            raise SystemExit(f"--cores must lie in 1..{usable} (the usable cores)")
        return counts
    counts, n = [], 1
    while n < usable:
        counts.append(n)
        n *= 2
    return [*counts, usable]


def run_dataset(name: str, params: dict[str, int], cores: list[int], repeat: int, root: Path) -> str:
    stores_paths = compare.ensure_dataset(name, params, root / name)
    stores: list[compare.StoreSpec] = [(str(p), compare.data_variables(p)) for p in stores_paths]
    usable = sorted(os.sched_getaffinity(0))
    results: dict[tuple[str, int], compare.Measurement] = {}
    reference: dict[str, str] = {}
    plan = [(peer, n) for n in cores for peer in PEERS[name]]
    plan += [(peer, cores[-1]) for peer in SLOW_PEERS.get(name, ())]
    plan.append(("floor", 1))
    for peer, n in plan:
        with pinned(usable[:n]):
            threads = n if peer.startswith(("fastzarr", "fz-")) else None
            measurement, digests = compare.measure("load", peer, stores, repeat, threads)
        if peer == "fastzarr" and not reference:
            reference = digests
        elif digests and reference:
            mismatch = compare.check_against(reference, digests)
            if mismatch:
                measurement = compare.failed(peer, f"WRONG RESULT: {mismatch}")
        results[peer, n] = measurement
        shown = "failed: " + measurement.error if measurement.error else f"{measurement.best:.3f} s"
        print(f"  {name:10s} {peer:13s} {n:3d} cores  {shown}", flush=True)
    output_bytes = compare.decoded_bytes(params)
    return render(name, params, results, output_bytes)


def render(
    name: str, params: dict[str, int], results: dict[tuple[str, int], compare.Measurement], output_bytes: int
) -> str:
    header = ["peer", "cores", "best s", "GB/s", "speedup vs own 1 core", "fastzarr faster by"]
    rows = [header]
    for (peer, n), m in results.items():
        label = compare.PEERS[peer].label
        if m.error:
            rows.append([label, str(n), "failed", "", "", m.error[:60]])
            continue
        one = results.get((peer, 1))
        own = f"{one.best / m.best:.2f}x" if one and not one.error and n > 1 else ""
        fz = results.get(("fastzarr", n))
        if peer == "floor":
            fz = results.get(("fastzarr", max(c for p, c in results if p == "fastzarr")))
        ratio = f"{m.best / fz.best:.2f}x" if fz and not fz.error and peer != "fastzarr" else ""
        gbs = output_bytes / m.best / 1e9
        rows.append([label, str(n), f"{m.best:.3f}", f"{gbs:.2f}", own, ratio])
    title = f"### {compare.DATASET_TITLES[name]}: " + ", ".join(f"{k}={v}" for k, v in params.items())
    note = (
        "fastzarr faster by = the peer's best time / fastzarr's at the same cores "
        "(for the floor: at the most cores)."
    )
    return "\n".join([title, "", compare.render_markdown(rows), "", note, ""])


def write_section(body: str) -> None:
    """Replaces (or appends) the scaling section of RESULTS.md."""
    text = compare.RESULTS_PATH.read_text() if compare.RESULTS_PATH.exists() else ""
    start = text.find(SECTION_TITLE)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION_TITLE))
        text = text[:start] + body + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    compare.RESULTS_PATH.write_text(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", help="comma-separated core counts (default 1, 2, 4, ... all)")
    parser.add_argument("--repeat", type=int, default=3, help="timed loads per peer after a warm-up")
    parser.add_argument("--quick", action="store_true", help="small data, a smoke run")
    parser.add_argument("--datasets", default="batches,small-vars")
    parser.add_argument("--data", type=Path, default=compare.DATA_DIR, help="where the datasets live")
    parser.add_argument("--write", action="store_true", help="replace the section of RESULTS.md")
    args = parser.parse_args(argv)
    size = "quick" if args.quick else "full"
    cores = core_counts(args.cores, len(os.sched_getaffinity(0)))
    parts = [SECTION_TITLE, "", "Machine:", *compare.machine_description(), ""]
    for name in args.datasets.split(","):
        parts.append(run_dataset(name, compare.DATASETS[size][name], cores, args.repeat, args.data / size))
        print(parts[-1], flush=True)
    body = "\n".join(parts) + "\n"
    if args.write:
        write_section(body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
