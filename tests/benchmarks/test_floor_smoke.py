"""Smoke test of ``benchmarks/floor.py``: a short SQLite-only run ends normally and prints, for
each benchmark, the project's figure as a share of the floor's and the naive ratio, and finds
nothing wrong with the rows the floor wrote (it opens them with the project's own crypto).
Figures are never asserted: they depend on the machine."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import repo_root

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

LABELS = ("BatchCreateRecords", "Tokenize, random", "Tokenize, deterministic")


def test_quick_sqlite_run_prints_every_ratio_line() -> None:
    script = repo_root() / "benchmarks" / "floor.py"
    args = ["--quick", "--sqlite-only", "--records", "1000", "--rounds", "1", "--naive", "20"]
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root(),
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    for label in LABELS:
        share = rf"SQLite\s+{label}\s+[0-9.]+x of floor \(target >= 0\.[0-9]+x\): (MET|NOT MET)"
        assert re.search(share, out), f"no ratio line for {label}"
    assert len(re.findall(r"project / naive = [0-9.]+x", out)) == 2 * len(LABELS)
    assert len(re.findall(r"^\s+floor\s+[0-9,]+ (rec|values)/s", out, re.M)) == len(LABELS)
    assert "rows (floor / project): records" in out
    assert "WARNING" not in out
    assert "PostgreSQL:" not in out
    assert re.search(r"load avg at the end: [0-9.]+ ", out)
