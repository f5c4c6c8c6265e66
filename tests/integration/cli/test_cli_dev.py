"""`cvault dev` end to end: starts OpenBao + SQLite + the server, the CLI talks to it, Ctrl-C
stops everything (OpenBao included), and a restart finds the same data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

CVAULT = [sys.executable, "-m", "vault.cli"]


def _start(state: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*CVAULT, "--state-dir", str(state), "dev", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("cvault dev: serving"):
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError("cvault dev did not start")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def _cli(state: Path, *args: str) -> dict[str, Any]:
    """The command's JSON output (an object: nested values are whatever the command printed)."""
    done = subprocess.run(
        [*CVAULT, "--state-dir", str(state), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    return int(stat.rsplit(")", 1)[1].split()[1])


def _bao_pids(ancestor: int) -> set[int]:
    """The running `bao server` processes started (directly or not) by process ``ancestor``:
    other OpenBao servers on the machine (another test run, say) are not this test's business."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"bao\x00server" not in cmd:
                continue
            pid = parent = int(entry.name)
            while parent > 1:
                parent = _parent(parent)
                if parent == ancestor:
                    pids.add(pid)
                    break
    return pids


def test_dev_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / ".cvault"
    proc = _start(state)
    try:
        settings = json.loads((state / "dev.json").read_text())
        assert oct((state / "dev.json").stat().st_mode & 0o777) == "0o600"
        assert settings["address"].startswith("127.0.0.1:")
        created = _cli(state, "create", "email=ada@example.com", "phone=+442079460958")
        rid = str(created["record_id"])
        tokens = _cli(state, "--as", "ai-pipeline", "get", rid)
        assert {v["output"] for v in tokens["fields"].values()} == {"token"}
        plain = _cli(state, "get", rid, "--purpose", "account-management")
        assert plain["fields"]["email"]["value"] == "ada@example.com"
        masked = _cli(state, "--as", "support-agent", "get", rid, "--purpose", "customer-support")
        assert masked["fields"]["email"]["output"] == "masked"
        assert "ada@" not in json.dumps(masked)
        assert _cli(state, "find", "email=ADA@example.com")["record_ids"] == [rid]
        seen = subprocess.run(
            [*CVAULT, "--state-dir", str(state), "--as", "dpo", "access", rid],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert seen.returncode == 0, seen.stderr
        roles = {e["role"] for e in json.loads(seen.stdout)}
        assert {"backend-service", "support-agent"} <= roles
        verified = subprocess.run(
            [*CVAULT, "--state-dir", str(state), "audit", "verify"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stderr
        assert "OK" in verified.stdout
        # the audit's JSON-lines sink got the same events, with no values in them
        lines = (state / "audit.jsonl").read_text()
        assert "record.read" in lines
        assert "ada@example.com" not in lines
        started = _bao_pids(proc.pid)
        assert started, "OpenBao is not running"
    finally:
        _stop(proc)
    # the processes may have been re-parented to init by now: look them up by pid
    assert not {p for p in started if Path(f"/proc/{p}/cmdline").exists()}, (
        "OpenBao was left running"
    )

    # A second start finds the same keys and data.
    proc = _start(state)
    try:
        plain = _cli(state, "get", rid, "--purpose", "account-management")
        assert plain["fields"]["phone"]["value"] == "+442079460958"
        receipt = _cli(state, "delete", rid)
        assert len(receipt["data_key_ids"]) == 2
        gone = subprocess.run(
            [*CVAULT, "--state-dir", str(state), "get", rid, "--purpose", "account-management"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gone.returncode == 1
        assert "erased" in gone.stderr
    finally:
        _stop(proc)
    assert os.path.exists(state / "vault.db")
