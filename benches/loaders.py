"""Training loaders side by side: ``fz.BatchGenerator`` against xbatcher's, and a shuffled
``fz.Loader`` epoch against a map-style zarr-python dataset, xarray + xbatcher and one
``read_many`` of the same data (the floor: every chunk decoded once, nothing else).

Every case runs in a fresh subprocess (peak RSS is its ``VmHWM``), page cache warm (a warm-up
pass first), best of ``--repeat``. An epoch is timed once its reader is set up (stores opened,
the Loader or generators constructed: once per training run), and the set-up is reported
apart. The section "Training loaders" of RESULTS.md is replaced in place.

    .venv/bin/python benches/loaders.py            # full run, updates benches/RESULTS.md
    .venv/bin/python benches/loaders.py --quick    # small data, prints only
    .venv/bin/python benches/loaders.py --only-loader --step gpu   # fz.Loader only, prints only

``--only-loader`` measures fastzarr alone (the shuffled Loader epoch, ``read_many`` and the
consumer's wait with a simulated training step): no peers, so neither xbatcher nor zarr-python
is imported. ``--step gpu`` makes that training step a torch matmul on CUDA (after copying the
batch to the device, waited for with ``torch.cuda.synchronize()``) instead of a numpy one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastzarr as fz
import numpy as np
import xarray as xr
from fastzarr.report import current_rss_bytes
from fastzarr.testing import make_batches

sys.path.insert(0, str(Path(__file__).parent))
from compare import machine_description, peak_rss_bytes, render_markdown
from latency import replace_section, serve

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Training loaders"
FULL = {"batches": 2, "variables": 20, "file_ids": 8, "steps": 24, "lat": 48, "lon": 64}
QUICK = {"batches": 2, "variables": 4, "file_ids": 4, "steps": 8, "lat": 16, "lon": 16}
#: The same stores, 8 of them: a longer epoch (43 batches), where the first window's wait is
#: spread over more batches.
LONG = {**FULL, "batches": 8}
#: BatchGenerator: a store of many small features, as the batch stores of the motivating
#: archive hold (~3,930 of them), where per-variable overhead decides.
GENERATOR_FULL = {"batches": 1, "variables": 400, "file_ids": 8, "steps": 24, "lat": 8, "lon": 16}
GENERATOR_QUICK = {"batches": 1, "variables": 40, "file_ids": 4, "steps": 8, "lat": 8, "lon": 16}
BATCH = 32
#: The simulated training steps: a numpy matmul on the CPU, an idle wait (an accelerator's step
#: seen from the CPU), or a torch matmul on a CUDA device.
STEPS = ("numpy", "idle", "gpu")


HTTP_DELAY_S = 0.02


def p_sample_bytes(params: dict[str, int]) -> int:
    """Bytes of one Loader sample: every variable's (lat, lon) field of float32."""
    return params["variables"] * params["lat"] * params["lon"] * 4


def _generator_options(params: dict[str, int]) -> dict[str, Any]:
    """One batch = every file_id x 4 steps x the whole field."""
    return {"input_dims": {"step": 4, "lat": params["lat"], "lon": params["lon"]}}


# --- the cases (each runs in a child) -------------------------------------------------------


def case_generator(stores: list[str], params: dict[str, int], peer: str, opener: str) -> dict[str, Any]:
    ds = xr.open_zarr(stores[0]) if opener == "dask" else xr.open_zarr(stores[0], chunks=None)
    cls = fz.BatchGenerator if peer == "fastzarr" else importlib.import_module("xbatcher").BatchGenerator
    generator = cls(ds, **_generator_options(params))
    nbytes = 0
    for batch in generator:
        nbytes += sum(int(v.nbytes) for v in batch.data_vars.values())
    return {"batches": len(generator), "bytes": nbytes}


def _epoch(began: float, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the seconds of the epoch, which began at ``began``."""
    now = time.perf_counter()
    return {**result, "seconds": now - began}


def case_loader(stores: list[str], params: dict[str, int]) -> dict[str, Any]:
    opened = time.perf_counter()
    loader = fz.Loader(stores, sample_dims=("file_id", "step"), batch_size=BATCH, max_memory="64MB")
    began = time.perf_counter()
    samples = sum(len(batch["var0000"]) for batch in loader)
    result = _epoch(
        began,
        {
            "samples": samples,
            "chunks": loader.stats.chunks,
            "windows": loader.stats.windows,
            "setup": began - opened,
        },
    )
    # One epoch timed: the next one's reads ahead (begun at its end) are not part of it, nor of
    # the next run's epoch.
    loader.close()
    return result


def case_trained(
    stores: list[str], params: dict[str, int], step_seconds: float, step: str, epochs: int
) -> dict[str, Any]:
    """A training run: ``epochs`` epochs of one Loader (``set_epoch`` before each, as a
    distributed training loop calls it), a simulated step per batch. Per epoch: its seconds, the
    consumer's wait (from asking for the next batch to having it) and the first batch's."""
    loader = fz.Loader(stores, sample_dims=("file_id", "step"), batch_size=BATCH, max_memory="64MB")
    train = _training_step(step, step_seconds, BATCH * p_sample_bytes(params))
    seconds, waits, firsts, stepped, steps, samples = [], [], [], 0.0, 0, 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        began = time.perf_counter()
        waited, first = 0.0, None
        batches = iter(loader)
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)
            wait = time.perf_counter() - asked
            if batch is None:
                break
            waited += wait
            first = wait if first is None else first
            samples += len(batch["var0000"])
            began_step = time.perf_counter()
            train(batch)
            stepped += time.perf_counter() - began_step
            steps += 1
        seconds.append(time.perf_counter() - began)
        waits.append(waited)
        firsts.append(first or 0.0)
    loader.close()
    return {
        "samples": samples // epochs,
        "step": stepped / max(1, steps),
        "epochs": seconds,
        "waits": waits,
        "firsts": firsts,
        "seconds": sum(seconds),
    }


def case_loader_http(stores: list[str], params: dict[str, int]) -> dict[str, Any]:
    """A shuffled epoch from the stores served over HTTP (``stores`` are their URLs)."""
    opened = time.perf_counter()
    loader = fz.Loader(stores, sample_dims=("file_id", "step"), batch_size=BATCH, max_memory="64MB")
    began = time.perf_counter()
    result = _epoch(
        began, {"samples": sum(len(batch["var0000"]) for batch in loader), "setup": began - opened}
    )
    loader.close()
    return result


def case_xbatcher_http(stores: list[str], params: dict[str, int]) -> dict[str, Any]:
    """xbatcher over ``xr.open_zarr(url)`` (zarr-python over fsspec's HTTP, dask), as
    :func:`case_xbatcher_epoch` does locally."""
    return case_xbatcher_epoch(stores, params)


def case_read_many(stores: list[str], params: dict[str, int]) -> dict[str, Any]:
    opened = time.perf_counter()
    requests = []
    for store in stores:
        group = fz.open_group(store)
        requests += [(group[n], ...) for n in group.array_keys() if n.startswith("var")]
    began = time.perf_counter()
    arrays, stats = fz.read_many(requests, return_stats=True)
    return _epoch(
        began, {"chunks": stats.chunks, "bytes": sum(a.nbytes for a in arrays), "setup": began - opened}
    )


def case_zarr_map_style(stores: list[str], params: dict[str, int]) -> dict[str, Any]:
    """A map-style dataset as people write one: shuffled indices, ``arr[i]`` per sample."""
    opened = time.perf_counter()
    zarr = importlib.import_module("zarr")
    arrays = [{n: a for n, a in zarr.open_group(s, mode="r").arrays() if n.startswith("var")} for s in stores]
    order = np.random.default_rng(0).permutation(len(stores) * params["file_ids"] * params["steps"])
    began = time.perf_counter()
    samples = 0
    batch: list[dict[str, np.ndarray]] = []
    for k in order:
        s, rest = divmod(int(k), params["file_ids"] * params["steps"])
        f, t = divmod(rest, params["steps"])
        batch.append({n: a[f, t] for n, a in arrays[s].items()})
        if len(batch) == BATCH:
            {n: np.stack([b[n] for b in batch]) for n in batch[0]}
            samples += len(batch)
            batch = []
    return _epoch(began, {"samples": samples + len(batch), "setup": began - opened})


def case_xbatcher_epoch(stores: list[str], params: dict[str, int]) -> dict[str, Any]:
    """xbatcher over ``xr.open_zarr`` (dask) of each store: batches of all file_ids x 4 steps
    (xbatcher has no shuffling), converted to numpy as a training loop would."""
    opened = time.perf_counter()
    xbatcher = importlib.import_module("xbatcher")
    generators = [xbatcher.BatchGenerator(xr.open_zarr(s), **_generator_options(params)) for s in stores]
    began = time.perf_counter()
    samples = 0
    for generator in generators:
        for batch in generator:
            arrays = {n: v.values for n, v in batch.data_vars.items()}
            samples += arrays["var0000"].shape[0] * arrays["var0000"].shape[1]
    return _epoch(began, {"samples": samples, "setup": began - opened})


def _matmul_size(seconds: float) -> int:
    """The matrix size whose square takes about ``seconds`` here."""
    size = 64
    while True:
        a = np.ones((size, size))
        began = time.perf_counter()
        a @ a
        if time.perf_counter() - began >= seconds or size > 4096:
            return size
        size = int(size * 1.25)


def _training_step(kind: str, seconds: float, batch_bytes: int) -> Callable[[dict[str, Any]], object]:
    """A simulated training step of about ``seconds``: ``"numpy"``, a square float64 matmul on
    the CPU (numpy's BLAS threads on every core); ``"idle"``, the CPU waits (``time.sleep``, the
    GIL released) as a training loop waits on an accelerator; ``"gpu"``, the batch copied to a
    CUDA device and a square float32 torch matmul there, waited for with
    ``torch.cuda.synchronize()`` (torch is imported only for this one)."""
    if kind == "numpy":
        size = _matmul_size(seconds)
        a = np.random.default_rng(0).standard_normal((size, size))
        return lambda batch: a @ a
    if kind == "idle":
        return lambda batch: time.sleep(seconds)
    if kind != "gpu":
        raise ValueError(f"step must be one of {STEPS}, not {kind!r}")
    torch = importlib.import_module("torch")
    if not torch.cuda.is_available():
        raise RuntimeError("--step gpu needs torch with a CUDA device; none is available")
    device = torch.device("cuda")

    def step(batch: dict[str, Any], weights: Any) -> None:
        for values in batch.values():
            torch.as_tensor(values).to(device)
        weights @ weights
        torch.cuda.synchronize()

    # Sized by the median time of the whole step: the copy of a batch of ``batch_bytes`` and the matmul.
    sample = {"x": np.ones(max(1, batch_bytes // 4), np.float32)}
    size = 256
    while True:
        weights = torch.randn(size, size, device=device)
        step(sample, weights)  # the first call of a size pays for cuBLAS' set-up
        times = []
        for _ in range(5):
            began = time.perf_counter()
            step(sample, weights)
            times.append(time.perf_counter() - began)
        if sorted(times)[2] >= seconds or size > 16384:
            break
        size = int(size * 1.1)  # a step at most ~1.33x the target (the matmul grows as size**3)
    return lambda batch: step(batch, weights)


CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "generator": case_generator,
    "loader": case_loader,
    "trained": case_trained,
    "read_many": case_read_many,
    "zarr_map_style": case_zarr_map_style,
    "xbatcher_epoch": case_xbatcher_epoch,
    "loader_http": case_loader_http,
    "xbatcher_http": case_xbatcher_http,
}


def child(spec: dict[str, Any]) -> None:
    warnings.simplefilter("ignore")
    run = CASES[spec["case"]]
    args = spec.get("args", {})
    before = current_rss_bytes()  # the interpreter and its imports
    run(spec["stores"], spec["params"], **args)  # warm-up (and page cache)
    times, setups, results = [], [], []
    for _ in range(spec["repeat"]):
        began = time.perf_counter()
        results.append(run(spec["stores"], spec["params"], **args))
        # An epoch case times its epoch alone, once its reader is set up (opened, constructed).
        times.append(results[-1].get("seconds", time.perf_counter() - began))
        setups.append(results[-1].get("setup", 0.0))
    result = results[-1]
    if "waits" in result:  # the median run by the share of its later epochs the consumer waited
        result = sorted(results, key=later_wait)[len(results) // 2]
    result.update(
        best=min(times),
        median=float(np.median(times)),
        setup=float(np.median(setups)),
        rss=peak_rss_bytes(),
        rss_before=before,
    )
    print(json.dumps(result))


def later_wait(run: dict[str, Any]) -> float:
    """The share of a training run's epochs after the first that its consumer waited."""
    return sum(run["waits"][1:]) / sum(run["epochs"][1:])


def measure(case: str, stores: list[str], params: dict[str, int], repeat: int, **args: Any) -> dict[str, Any]:
    spec = {"case": case, "stores": stores, "params": params, "repeat": repeat, "args": args}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:  # the child's own error, not just its exit status
        raise SystemExit(f"{case} failed (exit {out.returncode}):\n{out.stderr.strip()[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


# --- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--step", choices=STEPS, default="numpy", help="the simulated training step")
    parser.add_argument(
        "--only-loader", action="store_true", help="fz.Loader and read_many only, no peers; prints only"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    params = QUICK if args.quick else FULL
    generator_params = GENERATOR_QUICK if args.quick else GENERATOR_FULL
    with tempfile.TemporaryDirectory(prefix="fastzarr-loaders-") as root:
        stores = [str(p) for p in make_batches(Path(root) / "epoch", **params)]
        long = [] if args.quick else [str(p) for p in make_batches(Path(root) / "long", **LONG)]
        if args.only_loader:
            section = run_loader_only(stores, params, args.repeat, args.step, long)
        else:
            small = [str(p) for p in make_batches(Path(root) / "features", **generator_params)]
            section = run_all(stores, params, small, generator_params, args.repeat, step=args.step, long=long)
    print(section)
    if not args.quick and not args.only_loader:
        text = RESULTS.read_text() if RESULTS.exists() else "# fastzarr vs peers\n"
        RESULTS.write_text(replace_section(text, section, prefix=SECTION))


def measure_epochs(
    stores: list[str], params: dict[str, int], repeat: int, step: str, long: list[str]
) -> dict[str, Any]:
    """The shuffled Loader epoch, read_many of the same data, and training runs with a step as
    long as one batch's read (by the epoch's best time) and twice as long; with ``long`` stores,
    a training run over their longer epochs too."""
    epoch = measure("loader", stores, params, repeat)
    floor = measure("read_many", stores, params, repeat)
    per_batch = epoch["best"] / max(1, -(-epoch["samples"] // BATCH))
    # The step as long as a batch's read, and twice as long (slack for the reads to catch up in).
    kinds = [(step, 1), ("idle", 1), ("idle", 2)] if step != "idle" else [(step, 1), (step, 2)]
    trained = {
        (kind, factor): measure(
            "trained",
            stores,
            params,
            TRAINED_REPEAT,
            step_seconds=factor * per_batch,
            step=kind,
            epochs=TRAINED_EPOCHS,
        )
        for kind, factor in kinds
    }
    if long:
        trained[step, 1, "long"] = measure(
            "trained", long, LONG, TRAINED_REPEAT, step_seconds=per_batch, step=step, epochs=LONG_EPOCHS
        )
    return {"epoch": epoch, "floor": floor, "per_batch": per_batch, "trained": trained, "step": step}


#: Training runs with a simulated step, of which the median one (by the consumer's waiting in
#: the epochs after the first) is reported; epochs per run.
TRAINED_REPEAT = 5
TRAINED_EPOCHS = 6
LONG_EPOCHS = 3
STEP_WORDS = {
    "numpy": "of numpy matmul on the CPU (its BLAS threads on both cores, beside the decoding)",
    "idle": "of idle waiting, as a loop waits on an accelerator (the cores left to the decoding)",
    "gpu": "on the GPU: the batch copied to it and a torch matmul",
}


def epoch_findings(params: dict[str, int], r: dict[str, Any]) -> list[str]:
    """The bullet points under the shuffled-epoch table."""
    epoch, floor, per_batch = r["epoch"], r["floor"], r["per_batch"]
    batch_bytes = BATCH * p_sample_bytes(params)
    bound = 3 * batch_bytes + 64e6 + 100e6
    waits = []
    for (kind, factor, *longer), run in r["trained"].items():
        length = "as long as one batch's read" if factor == 1 else f"{factor}x as long as one batch's read"
        first_share = run["waits"][0] / run["epochs"][0]
        later = ", ".join(
            f"{100 * w / e:.1f}" for w, e in zip(run["waits"][1:], run["epochs"][1:], strict=True)
        )
        epochs = len(run["epochs"])
        runs = (
            f"Training runs of {epochs} longer epochs ({LONG['batches']} stores, "
            f"{-(-run['samples'] // BATCH)} batches an epoch)"
            if longer
            else f"Training runs of {epochs} epochs"
        )
        waits.append(
            f"- {runs} with a simulated step {length} "
            f"({factor * per_batch * 1e3:.1f} ms {STEP_WORDS[kind]}; {run['step'] * 1e3:.1f} ms measured "
            f"per step; the median of {TRAINED_REPEAT} runs): the consumer waited "
            f"**{100 * later_wait(run):.1f} %** of epochs 2-{epochs} (each: {later} %; "
            f"target < 5 %) and **{100 * first_share:.1f} %** of "
            f"the first ({run['waits'][0] * 1e3:.1f} ms of {run['epochs'][0] * 1e3:.0f} ms, "
            f"{run['firsts'][0] * 1e3:.1f} ms of it for the first batch)."
        )
    return [
        f"- fz.Loader epoch / read_many: **{epoch['best'] / floor['best']:.2f}x** (target <= 1.25x); "
        f"chunks decoded in the epoch: {epoch['chunks']} for {floor['chunks']} chunks of the data read once "
        f"(less where repeated file_ids were dropped), in {epoch['windows']} windows.",
        *waits,
        f"- Peak RSS of the Loader epoch: {epoch['rss'] / 1e6:,.0f} MB, "
        f"{(epoch['rss'] - epoch['rss_before']) / 1e6:,.0f} MB above the interpreter and its imports "
        f"({epoch['rss_before'] / 1e6:,.0f} MB); the bound (prefetch + 1) x batch + window + 100 MB is "
        f"{bound / 1e6:,.0f} MB (batches of {batch_bytes / 1e6:.2f} MB, prefetch 2, windows within "
        f"max_memory=64MB): **{'met' if epoch['rss'] - epoch['rss_before'] <= bound else 'not met'}**.",
    ]


#: The epoch tables: each reader's epoch once it is set up, and its set-up apart.
EPOCH_HEADER = ["reader", "epoch best s", "epoch median s", "set-up s", "peak RSS MB", "vs fz.Loader"]


def epoch_row(name: str, r: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    ratio = "—" if r is ours else f"{r['best'] / ours['best']:.2f}x"
    return [
        name,
        f"{r['best']:.3f}",
        f"{r['median']:.3f}",
        f"{r['setup']:.3f}",
        f"{r['rss'] / 1e6:,.0f}",
        ratio,
    ]


def run_loader_only(
    stores: list[str], params: dict[str, int], repeat: int, step: str, long: list[str]
) -> str:
    """``--only-loader``: the shuffled epoch's table (fastzarr's two rows) and its findings."""
    r = measure_epochs(stores, params, repeat, step, long)
    epoch, floor = r["epoch"], r["floor"]
    rows = [EPOCH_HEADER]
    for name, m in (
        ("fz.Loader (shuffled, chunk-aware)", epoch),
        ("read_many of everything once (floor)", floor),
    ):
        rows.append(epoch_row(name, m, epoch))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    p = params
    return "\n".join(
        [
            f"### A shuffled epoch, fastzarr only (`benches/loaders.py --only-loader --step {step}`)",
            "",
            f"Generated on {now}; best and median of {repeat} in a fresh process each.",
            "",
            *machine_description(),
            "",
            f"Data: `make_batches`, {p['batches']} stores x {p['variables']} float32 variables "
            f"(file_id={p['file_ids']}, step={p['steps']}, lat={p['lat']}, lon={p['lon']}); samples = one "
            f"(file_id, step); batches of {BATCH}; max_memory 64MB.",
            "",
            render_markdown(rows),
            "",
            *epoch_findings(params, r),
            "",
        ]
    )


def run_all(
    stores: list[str],
    params: dict[str, int],
    small: list[str],
    small_params: dict[str, int],
    repeat: int,
    *,
    step: str = "numpy",
    long: list[str] | None = None,
) -> str:
    rows = [["case", "opener", "best s", "median s", "peak RSS MB", "fastzarr speedup"]]
    generator = {}
    for opener in ("dask", "lazy"):
        for peer in ("fastzarr", "xbatcher"):
            generator[peer, opener] = measure(
                "generator", small, small_params, repeat, peer=peer, opener=opener
            )
        ours, theirs = generator["fastzarr", opener], generator["xbatcher", opener]
        for peer, r in (("fz.BatchGenerator", ours), ("xbatcher.BatchGenerator", theirs)):
            speedup = "—" if r is ours else f"{theirs['best'] / ours['best']:.1f}x"
            rows.append(
                [peer, opener, f"{r['best']:.3f}", f"{r['median']:.3f}", f"{r['rss'] / 1e6:,.0f}", speedup]
            )
    epochs_measured = measure_epochs(stores, params, repeat, step, long or [])
    epoch, floor = epochs_measured["epoch"], epochs_measured["floor"]
    zarr_map = measure("zarr_map_style", stores, params, repeat)
    xb = measure("xbatcher_epoch", stores, params, repeat)
    with serve(Path(stores[0]).parent, HTTP_DELAY_S) as server:
        urls = [f"{server.base_url}/{Path(s).name}" for s in stores]
        http = {}
        for name in ("loader_http", "xbatcher_http"):
            # one warm-up epoch and one timed: requests counted by the server over both
            server.counters.snapshot(reset=True)
            http[name] = measure(name, urls, params, 1)
            http[name]["requests"] = server.counters.snapshot(reset=True)["requests"] // 2
    epochs = [EPOCH_HEADER]
    for name, r in (
        ("fz.Loader (shuffled, chunk-aware)", epoch),
        ("read_many of everything once (floor)", floor),
        ("zarr-python, arr[i] per sample, shuffled", zarr_map),
        ("xarray + dask + xbatcher (storage order)", xb),
    ):
        epochs.append(epoch_row(name, r, epoch))
    http_rows = [["reader", "epoch s", "set-up s", "samples/s", "requests", "fz.Loader speedup"]]
    ours_http = http["loader_http"]
    for name, r in (
        ("fz.Loader (shuffled, chunk-aware)", ours_http),
        ("xarray + fsspec + dask + xbatcher (storage order)", http["xbatcher_http"]),
    ):
        speed = "—" if r is ours_http else f"{r['best'] / ours_http['best']:.1f}x"
        http_rows.append(
            [
                name,
                f"{r['best']:.2f}",
                f"{r['setup']:.2f}",
                f"{r['samples'] / r['best']:,.0f}",
                f"{r['requests']:,}",
                speed,
            ]
        )
    sp = small_params
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    p = params
    lines = [
        SECTION,
        "",
        f"Generated by `benches/loaders.py` on {now}; best and median of {repeat} in a fresh process each.",
        "",
        *machine_description(),
        "",
        f"Data: `make_batches`, {p['batches']} stores x {p['variables']} float32 variables "
        f"(file_id={p['file_ids']}, step={p['steps']}, lat={p['lat']}, lon={p['lon']}), one chunk per "
        "file_id, blosc zstd; consecutive stores repeat one file_id (dropped by the Loader).",
        "",
        f"### BatchGenerator: {sp['variables']} small variables (file_id={sp['file_ids']}, "
        f"step={sp['steps']}, lat={sp['lat']}, lon={sp['lon']}); batches of "
        "every file_id x 4 steps x the whole field; identical batches (tests/test_batches.py)",
        "",
        render_markdown(rows),
        "",
        f"### A shuffled epoch (samples = one (file_id, step); batches of {BATCH}; max_memory 64MB)",
        "",
        render_markdown(epochs),
        "",
        *epoch_findings(params, epochs_measured),
        "",
        f"### Over HTTP, {HTTP_DELAY_S * 1e3:.0f} ms per request (benches/latency.py's server), one epoch",
        "",
        render_markdown(http_rows),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
