# The single entry point: `make demo`, `make test`, `make bench`, `make lint`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
export PYO3_PYTHON := $(abspath $(PY))
PY_SOURCES := $(wildcard python tests benches notebooks)

.PHONY: help venv build test test-rust test-python test-xarray-suite test-oldest lint demo notebook notebook-outputs bench bench-scaling clean fuzz fuzz-long check-free-threaded wheel-free-threaded

help:
	@echo "make demo   - set up, build (release) and read the bundled sample batches"
	@echo "make test   - set up, build, cargo test, lints, pytest, xarray's zarr tests through fastzarr"
	@echo "make notebook - open notebooks/quickstart.ipynb in JupyterLab (installs the notebook extra)"
	@echo "make bench  - benchmark fastzarr against its peers (writes benches/RESULTS.md)"
	@echo "make bench-scaling - the same full loads at 1, 2, 4, ... cores (a section of RESULTS.md)"
	@echo "make fuzz   - run each cargo-fuzz target for FUZZ_SECONDS (default 60) seconds"
	@echo "make fuzz-long - mutate real chunks FUZZ_MUTATIONS (default 20000) times, read them against zarr-python"
	@echo "make wheel-free-threaded - a wheel for free-threaded CPython 3.14t (PYTHON_FT names it)"
	@echo "make check-free-threaded - compile and link the module for CPython 3.14t (no interpreter needed)"

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# What building and the demo need (the build tool, xarray, zarr-python for the sample data, tqdm).
$(VENV)/.build-installed: requirements-build.txt | $(PY)
	@echo "Installing the build tool and the demo's packages into $(VENV) (about a minute)"
	$(PY) -m pip install -q -r requirements-build.txt
	touch $@

# Everything the tests, lints and benchmarks' reference readers need on top.
$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.build-installed
	@echo "Installing the test and lint tools into $(VENV)"
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.dev-installed

# Rebuilt only when the Rust sources or the package metadata change; the stamp lives in the venv,
# so a new venv gets the package installed again.
RUST_SOURCES := $(shell find src -name '*.rs') Cargo.toml Cargo.lock pyproject.toml
$(VENV)/.core-built: $(RUST_SOURCES) | $(VENV)/.build-installed
	@echo "Building fastzarr's Rust core (release). A first build compiles zarrs, object_store and"
	@echo "tokio: several minutes on 2 cores, with cargo's progress below; later builds take seconds."
	$(VENV)/bin/maturin develop --release
	touch $@

build: $(VENV)/.core-built

# The oldest-versions environment installs (downloads, mostly) while the Rust core compiles.
test: venv
	$(MAKE) --no-print-directory -j2 build $(VENV_OLDEST)/.installed
	$(MAKE) --no-print-directory test-rust lint test-python test-xarray-suite test-oldest

# The core alone, without its Python layer: no interpreter or libpython involved.
test-rust:
	cargo test --release --no-default-features --quiet

test-python: venv build
	$(PY) -m pytest -q

# xarray's own zarr backend tests (from the installed xarray), their reads served by fastzarr;
# fails when one that passes with xarray's engine fails through fastzarr and is not listed in
# tests/xarray_suite/not_applicable.txt.
test-xarray-suite: venv build
	$(PY) tests/xarray_suite/run.py

# The tests of the xarray and dask integration again, against the oldest supported xarray, dask,
# numpy and pandas (requirements-oldest.txt; .venv has the newest). fastzarr goes in as .venv has
# it (the editable install's metadata and path file), so nothing is built twice.
VENV_OLDEST := .venv-oldest
OLDEST_TESTS := tests/test_compat.py tests/test_xarray.py tests/test_xarray_encoding.py tests/test_dask.py \
	tests/test_load_cache.py tests/test_extract.py tests/test_testing.py
$(VENV_OLDEST)/.installed: requirements-oldest.txt
	@echo "Installing the oldest supported xarray and dask into $(VENV_OLDEST)"
	python3 -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install -q --upgrade pip
	$(VENV_OLDEST)/bin/python -m pip install -q -r requirements-oldest.txt
	touch $@

test-oldest: build $(VENV_OLDEST)/.installed
	@site=$$($(VENV_OLDEST)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	built=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	rm -rf $$site/fastzarr-*.dist-info $$site/fastzarr.pth && cp -r $$built/fastzarr-*.dist-info $$built/fastzarr.pth $$site/
	$(VENV_OLDEST)/bin/python -c 'import dask, numpy, pandas, xarray; print("oldest: xarray", xarray.__version__, "dask", dask.__version__, "numpy", numpy.__version__, "pandas", pandas.__version__)'
	$(VENV_OLDEST)/bin/python -m pytest -q -p no:cacheprovider $(OLDEST_TESTS)

lint: venv
	cargo fmt --check
	cargo clippy --release --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest fastzarr._core

demo: build
	$(PY) -m fastzarr.demo .demo

# The optional extra "notebook" of pyproject.toml: one list for pip users and for make.
NOTEBOOK_REQUIREMENTS = $(shell $(PY) -c 'import shlex, tomllib; \
	extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; \
	print(" ".join(map(shlex.quote, extras["notebook"])))')
$(VENV)/.notebook-installed: pyproject.toml | $(VENV)/.build-installed
	@echo "Installing JupyterLab and matplotlib into $(VENV)"
	$(PY) -m pip install -q $(NOTEBOOK_REQUIREMENTS)
	touch $@

notebook: build $(VENV)/.notebook-installed
	$(VENV)/bin/jupyter lab notebooks/quickstart.ipynb

# Runs the notebook in a fresh kernel and saves it with its outputs (commit the result).
notebook-outputs: build $(VENV)/.dev-installed
	$(PY) notebooks/refresh.py

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.dev-installed
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $@

bench: build $(VENV)/.bench-installed
	$(PY) benches/compare.py

bench-scaling: build $(VENV)/.bench-installed
	$(PY) benches/scaling.py --write

# The differential fuzz of tests/test_differential_fuzz.py, longer: FUZZ_SEED picks the mutations.
FUZZ_MUTATIONS ?= 20000
FUZZ_SEED ?= 1
fuzz-long: venv build
	$(PY) tests/differential_fuzz.py --seed $(FUZZ_SEED) --mutations $(FUZZ_MUTATIONS)

# cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP lets the stable toolchain accept them.
# The fuzz crate has its own target dir (sanitizer builds share nothing with release).
FUZZ_SECONDS ?= 60
# An allocation past these limits is a finding: every size that comes from a chunk or from
# metadata must be checked before it is allocated.
FUZZ_RSS_MB ?= 2048
FUZZ_MALLOC_MB ?= 512
FUZZ_TARGETS := blosc_ranges metadata plan
# The targets build the core without its Python layer (no libpython needed).
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t && \
		CARGO_TARGET_DIR=$(CURDIR)/fuzz/target RUSTC_BOOTSTRAP=1 \
			cargo fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) \
				-rss_limit_mb=$(FUZZ_RSS_MB) -malloc_limit_mb=$(FUZZ_MALLOC_MB) \
			|| exit 1; \
	done

clean:
	rm -rf target $(VENV) $(VENV_OLDEST) .demo benches/data python/fastzarr/_core.abi3.so

# Free-threaded CPython has no stable ABI, so its wheel is built without the `abi3` feature, for
# one interpreter (PyO3 supports free-threading from 3.14t). The module declares itself safe
# without the GIL (src/lib.rs says why).
PYTHON_FT ?= python3.14t
wheel-free-threaded: $(VENV)/.build-installed
	$(VENV)/bin/maturin build --release --no-default-features --features python --interpreter $(PYTHON_FT) --out dist

# The same module compiled and linked for CPython 3.14t from a PyO3 configuration alone, where no
# free-threaded interpreter is installed (CI runs it): PyO3's free-threaded code paths and checks.
FREE_THREADED_CONFIG := target/pyo3-cpython-3.14t.cfg
check-free-threaded:
	@mkdir -p target
	printf 'implementation=CPython\nversion=3.14\nshared=true\nabi3=false\nbuild_flags=Py_GIL_DISABLED\nsuppress_build_script_link_lines=false\npointer_width=64\n' > $(FREE_THREADED_CONFIG)
	PYO3_CONFIG_FILE=$(abspath $(FREE_THREADED_CONFIG)) PYO3_BUILD_EXTENSION_MODULE=1 \
		cargo build --release --lib --no-default-features --features python --quiet
