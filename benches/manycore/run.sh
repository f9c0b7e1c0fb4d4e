#!/usr/bin/env bash
# The many-core run: a machine with many cores (and a CUDA GPU, if any) and no network access,
# results into $OUT:
#   machine.txt    the machine, the interpreter and the packages used
#   install.log    the wheels installed from .whl/
#   loader-numpy.log, loader-gpu.log
#                  benches/loaders.py --only-loader: a shuffled fz.Loader epoch vs read_many and
#                  the consumer's wait with a training step (numpy matmul; torch matmul on CUDA),
#                  all cores (FASTZARR_NUM_THREADS unset)
#   scaling.log, RESULTS.md
#                  benches/scaling.py --write: fastzarr and its peers at 1, 2, 4, 8, 16 cores
#   summary.txt    each step's exit status and seconds
#
#   OUT=/tmp/out bash benches/manycore/run.sh     # with .whl/ and python/fastzarr/_core.abi3.so built
#   QUICK=1 PY=/path/to/python3.12 OUT=/tmp/out bash benches/manycore/run.sh   # a small smoke run
#
# Without network, zarr, numcodecs, zarrs, dask and what they need come as CPython wheels in
# .whl/ (not tracked), downloaded beforehand with the versions of the dev environment, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform any -d .whl zarr==3.1.6 ...
# A wheel whose distribution is already installed at the same or a newer version is left out,
# so the machine's own packages (fsspec, packaging, typing_extensions for torch) stay in use.
#
# Every step runs under `timeout`; together they stay within BUDGET_S seconds (default 500).
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1

PY=${PY:-python3}
QUICK=${QUICK:-0}
OUT=${OUT:-/tmp/fastzarr-manycore-out}
SITE=${SITE:-/tmp/site}
DATA=${DATA:-/tmp/fzdata}
BUDGET_S=${BUDGET_S:-500}
mkdir -p "$OUT"
summary=$OUT/summary.txt
started=$SECONDS

# step NAME LIMIT_S CMD...: CMD under `timeout` (cut to what is left of the budget), its output
# shown and appended to $OUT/NAME.log, its exit status and seconds to summary.txt.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - (SECONDS - started)))
    ((limit > left)) && limit=$left
    if ((limit < 15)); then
        echo "$name: skipped, the budget of ${BUDGET_S} s is spent" | tee -a "$summary"
        return 0
    fi
    echo "== $name (at most ${limit} s): $*" | tee -a "$OUT/$name.log"
    local began=$SECONDS rc
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    rc=$?
    local note=""
    ((rc == 124 || rc == 137)) && note=" (timed out)"
    echo "$name: exit $rc in $((SECONDS - began)) s$note" | tee -a "$summary"
    return 0
}

# --- 1. the carried wheels, and fastzarr from ./python --------------------------------------------
step install 120 "$PY" - "$SITE" .whl/*.whl <<'EOF'
import importlib.metadata as md
import re
import subprocess
import sys
import zipfile
from pathlib import Path

site, wheels = Path(sys.argv[1]), sys.argv[2:]
if not wheels or not Path(wheels[0]).is_file():
    sys.exit("no wheels in .whl/: download them first (see the top of this script)")


def key(version):
    return tuple(int(n) for n in re.findall(r"\d+", version))


todo = []
for wheel in wheels:
    name, version = Path(wheel).name.split("-")[:2]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is not None and key(have) >= key(version):
        print(f"{name}: {have} installed here, kept (carried {version})")
        continue
    print(f"{name}: {version} from .whl" + (f" (over {have})" if have else ""))
    todo.append(wheel)
site.mkdir(parents=True, exist_ok=True)
pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
       "--no-cache-dir", "--upgrade", "--target", str(site)]
if todo and subprocess.run([*pip, *todo]).returncode != 0:
    # No (working) pip: a wheel unpacked into the target is the same install (none has scripts).
    print("pip failed: unpacking the wheels instead")
    for wheel in todo:
        zipfile.ZipFile(wheel).extractall(site)
# fastzarr is used from ./python; its metadata (the xarray backend entry point) goes beside the wheels.
version = re.search(r'^version\s*=\s*"([^"]+)"', Path("Cargo.toml").read_text(), re.M).group(1)
info = site / f"fastzarr-{version}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fastzarr\nVersion: {version}\n")
(info / "entry_points.txt").write_text(
    "[xarray.backends]\nfastzarr = fastzarr.xarray_backend:FastzarrBackendEntrypoint\n"
)
EOF
export PYTHONPATH="$SITE:$PWD/python"

# --- 2. the machine -----------------------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc: $(nproc)"
    lscpu | head -20
    free -g
    nvidia-smi -L 2>&1 | head -4
    echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
    timeout 120 "$PY" - <<'EOF'
import importlib
import importlib.metadata as md

for name in ("fastzarr", "numpy", "xarray", "pandas", "zarr", "numcodecs", "zarrs", "dask",
             "donfig", "google-crc32c", "tensorstore", "torch", "fsspec", "packaging",
             "typing_extensions", "pyyaml"):
    try:
        print(f"{name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
for module in ("fastzarr", "zarr", "numcodecs", "zarrs", "dask.array", "xarray", "tensorstore"):
    try:
        where = importlib.import_module(module).__file__
    except Exception as e:
        where = f"IMPORT FAILED: {type(e).__name__}: {e}"
    print(f"import {module}: {where}")
import xarray as xr

print("xarray engines:", ", ".join(xr.backends.list_engines()))
try:
    import torch

    cuda = torch.cuda.is_available()
    print("torch", torch.__version__, "cuda:", torch.cuda.get_device_name() if cuda else "not available")
except Exception as e:
    print(f"torch: {type(e).__name__}: {e}")
EOF
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# --- 3. the Loader's consumer wait, all cores ---------------------------------------------------
unset FASTZARR_NUM_THREADS
loader_args=(--only-loader)
((QUICK)) && loader_args+=(--quick --repeat 1)
step loader-numpy 120 "$PY" benches/loaders.py "${loader_args[@]}" --step numpy
if timeout 120 "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    step loader-gpu 150 "$PY" benches/loaders.py "${loader_args[@]}" --step gpu
else
    echo "loader-gpu: skipped, no torch with a CUDA device here" | tee -a "$summary" "$OUT/loader-gpu.log"
fi

# --- 4. scaling with cores ----------------------------------------------------------------------
if ((QUICK)); then
    scaling_args=(--quick --repeat 1)
else
    scaling_args=(--repeat "${REPEAT:-1}")  # 2 adds about a minute at 16 cores
fi
cores=${CORES:-}
if [[ -z $cores ]] && (($(nproc) >= 16)); then
    cores=1,2,4,8,16
fi
[[ -n $cores ]] && scaling_args+=(--cores "$cores")
step scaling 600 "$PY" benches/scaling.py "${scaling_args[@]}" --data "$DATA" --write
cp benches/RESULTS.md "$OUT/RESULTS.md"

echo "total: $((SECONDS - started)) s" | tee -a "$summary"
