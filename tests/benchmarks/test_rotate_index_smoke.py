"""Smoke test of ``benchmarks/rotate_index.py``: a quick SQLite-only run ends normally and prints
the three figures (old per-record path, rotate_index in batches, the crypto floor), the ratios,
and that FindRecords finds the sample after the rotation. Figures are never asserted: they
depend on the machine."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import repo_root

pytestmark = [pytest.mark.openbao, pytest.mark.slow]


def test_quick_sqlite_run_prints_every_figure_line() -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root() / "benchmarks" / "rotate_index.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root(),
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    for label in ("1. old", "2. new", "3. floor"):
        assert re.search(rf"^\s+{label}\s+[0-9,]+ values.*: [0-9,]+ values/s", out, re.M), label
    assert "FindRecords sample 20/20 found" in out
    assert re.search(r"SQLite: new / old = [0-9.]+x, new / floor = [0-9.]+x", out)
    assert re.search(r"\| SQLite \| \*\*new / old\*\* \| \*\*[0-9.]+x\*\* \|", out)
    assert "PostgreSQL" not in out
