"""Progress bars (tqdm, optional) and stage logs (logging, FASTZARR_LOG) of long operations."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import fastzarr as fz
import fastzarr._progress as progress_module
import pytest
import xarray as xr
from fastzarr._progress import Progress, progress_enabled
from fastzarr.testing import make_batches

POINT = {"lat": 0.0, "lon": 0.0}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = make_batches(
            tmp_path_factory.mktemp("progress"), batches=2, variables=40, file_ids=2, steps=2, lat=4, lon=6
        )
    return [str(p) for p in paths]


def extract(stores: list[str], **kwargs: object) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fz.DuplicateWarning)
        return fz.extract_points(stores, points=POINT, **kwargs)  # type: ignore[arg-type,return-value]


def test_progress_bar_shows_bytes_and_chunks(stores: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    quiet = extract(stores, progress=False)
    assert capsys.readouterr().err == ""
    shown = extract(stores, progress=True)
    err = capsys.readouterr().err
    assert "fastzarr extract" in err
    # 80 requests: cut into passes of 16 so the bar moves; the result is the same.
    assert "5/5" in err
    assert "chunks at" in err
    assert "/s" in err
    xr.testing.assert_identical(shown, quiet)
    ds = fz.open_zarr(stores[0])
    fz.load(ds, progress=True)
    assert "fastzarr load" in capsys.readouterr().err
    fz.inspect(stores[0], sample=0, progress=True)
    assert "fastzarr inspect" in capsys.readouterr().err


def test_progress_default_is_off_without_a_terminal(
    stores: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert not progress_enabled(None)  # pytest captures stderr: not a terminal, not a notebook
    extract(stores, progress=None)
    assert capsys.readouterr().err == ""


def test_progress_true_needs_tqdm(stores: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "_tqdm", lambda: None)
    with pytest.raises(ImportError, match="pip install tqdm"):
        extract(stores, progress=True)
    assert not progress_enabled(None)
    with Progress(None, total=3, desc="x", unit="step") as bar:  # a no-op bar still counts
        bar.update(nbytes=10, chunks=2)
        bar.update(nbytes=5, chunks=1)
    assert (bar.bytes, bar.chunks) == (15, 3)


def test_stage_logs_with_rss(stores: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="fastzarr"):
        extract(stores)
        fz.load(fz.open_zarr(stores[0]))
        fz.inspect(stores[0], sample=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "fastzarr"]
    for stage in ("metadata", "plan", "read", "assemble", "total"):
        assert any(m.startswith(f"extract_points: {stage} ") for m in messages), stage
    for stage in ("plan", "read", "total"):
        assert any(m.startswith(f"load: {stage} ") for m in messages), stage
    for stage in ("metadata", "throughput", "total"):
        assert any(m.startswith(f"inspect: {stage} ") for m in messages), stage
    assert all(", rss " in m for m in messages if ": " in m and " s, rss" in m)
    read = next(m for m in messages if m.startswith("extract_points: read "))
    assert "chunks 160" in read  # 2 sources x 40 variables x 2 file_ids


def test_fastzarr_log_env_turns_logs_on(stores: list[str], tmp_path: Path) -> None:
    code = "import fastzarr as fz, sys; fz.inspect(sys.argv[1], sample=0)"
    env = dict(os.environ, FASTZARR_LOG="debug")
    done = subprocess.run(
        [sys.executable, "-c", code, stores[0]], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "fastzarr DEBUG inspect: metadata " in done.stderr
    assert "rss " in done.stderr
    env.pop("FASTZARR_LOG")
    silent = subprocess.run(
        [sys.executable, "-c", code, stores[0]], capture_output=True, text=True, env=env, check=False
    )
    assert silent.returncode == 0
    assert silent.stderr == ""
