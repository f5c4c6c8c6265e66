"""Smoke test of ``benchmarks/records.py --scale`` (issue 13, storage): a short run writes the
records through the server, prints a size line per table with the rows per record, and the
total per record, on SQLite and (``--postgres``) in a database of its own that it drops again.
Figures are never asserted: they depend on the machine and the server's version."""

from __future__ import annotations

import re
import subprocess
import sys

import psycopg
import pytest

from tests.support import POSTGRES_URL, repo_root

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

RECORDS = 300


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(repo_root() / "benchmarks" / "records.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=repo_root(),
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _table_line(out: str, table: str, rows: int) -> re.Match[str] | None:
    per_record = rows / RECORDS
    return re.search(rf"^\s+{table}\s+{rows:,}\s+{per_record:.2f}\s+[0-9,]+\s+[0-9,]+\s", out, re.M)


def _check(out: str, backend: str) -> None:
    for table, per_record in (("records", 1), ("data_keys", 5), ("record_values", 5)):
        assert _table_line(out, table, per_record * RECORDS), f"no size line for {table}"
    assert re.search(rf"{backend}: [0-9,]+ bytes per 5-field record .* at {RECORDS} records", out)
    assert re.search(r"\| \*\*all tables\*\* \(300 records\) \|", out)


def test_scale_run_on_sqlite_prints_bytes_per_record_per_table() -> None:
    out = _run("--scale", str(RECORDS), "--batch-size", "100")
    _check(out, "SQLite")
    assert "for information (the target is PostgreSQL's)" in out


@pytest.mark.postgres
def test_scale_run_on_postgres_measures_a_database_of_its_own_and_drops_it() -> None:
    out = _run("--postgres", "--scale", str(RECORDS), "--batch-size", "100")
    _check(out, "PostgreSQL")
    assert re.search(r"target <= 3\.5 KB: (MET|NOT MET)", out)
    [name] = re.findall(r"PostgreSQL database (cvault_bench_[0-9a-f]+)", out)
    with psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
    assert left == []
