"""Mutated chunks of every codec zarr-python writes, read by fastzarr five ways and held against the
unmutated data and zarr-python (tests/differential_fuzz.py; ``make fuzz-long`` runs it for longer).

The reads run in child processes under an address-space limit, so an abort, a crash or an allocation
past the limit is a finding too, with the seed and index that replay it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).with_name("differential_fuzz.py")
MUTATIONS = 2000  # about half a minute on 2 cores


@pytest.mark.slow
def test_mutated_chunks_raise_or_read_what_zarr_python_reads() -> None:
    result = subprocess.run(
        [sys.executable, str(FUZZ), "--seed", "20261203", "--mutations", str(MUTATIONS)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.stdout, result.stderr[-2000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    findings = summary["findings"]
    replay = f"replay one with: python {FUZZ.name} --seed {summary['seed']} --only INDEX"
    shown = "\n".join(json.dumps(finding) for finding in findings[:10])
    assert not findings, f"{len(findings)} findings ({replay}):\n{shown}"
    assert result.returncode == 0, result.stderr[-2000:]
    # The run did what it claims: every mutation was read, and each kind of outcome occurred.
    assert summary["mutations"] == MUTATIONS
    assert summary["reads"] == 5 * MUTATIONS
    assert summary["refused"] > MUTATIONS // 4
    assert summary["unchanged"] > MUTATIONS // 4
    assert summary["agreed_changed"] > 0
    assert summary["deaths"] == 0


def test_a_finding_is_reported_with_its_replay() -> None:
    """The harness itself: a run whose reads are made to die reports the case it died on."""
    # A child that cannot even map its interpreter is a death at the first case.
    result = subprocess.run(
        [sys.executable, str(FUZZ), "--seed", "1", "--only", "7", "--address-space-gib", "0.05"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 1
    assert summary["deaths"] == 1
    assert summary["mutations"] == 1
    (finding,) = summary["findings"]
    assert finding["problem"].startswith("process died")
    assert (finding["seed"], finding["index"]) == (1, 7)
