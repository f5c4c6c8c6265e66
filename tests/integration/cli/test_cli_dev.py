"""`cvault dev` end to end: starts OpenBao + SQLite + the server, the CLI talks to it, Ctrl-C
stops everything (OpenBao included), and a restart finds the same data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support import bao_pids
from vault.v1 import tokens_pb2 as tokens_pb
from vault.v1 import tokens_pb2_grpc as tokens_pb_grpc

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
        started = bao_pids(proc.pid)
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
        assert gone.returncode == 3  # the server refused: a server error
        assert "erased" in gone.stderr
    finally:
        _stop(proc)
    assert os.path.exists(state / "vault.db")


GRACE = 1.0
#: the bound the issue sets: the configured grace plus a few seconds
STOP_BOUND = GRACE + 5.0


def test_sigterm_stops_within_the_grace_whatever_is_in_flight(tmp_path: Path) -> None:
    """Issue 16: after a fuzzing run SIGTERM left `cvault dev` hanging in the server's stop.
    Here the server holds a long TokenizeText (100 texts of 65,536 characters: tens of seconds
    of CPU that no cancel interrupts), half-open streams that never half-close, a stream
    cancelled by its client and one whose responses are never read; SIGTERM still ends the
    process, OpenBao included, within the grace plus a few seconds."""
    state = tmp_path / ".cvault"
    proc = subprocess.Popen(
        [*CVAULT, "--state-dir", str(state), "dev", "--listen", "127.0.0.1:0", "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("cvault dev: serving"):
            break
    settings = json.loads((state / "dev.json").read_text())
    started = bao_pids(proc.pid)
    assert started
    channel = grpc.insecure_channel(settings["address"])
    stub = tokens_pb_grpc.TokensStub(channel)
    metadata = (("x-api-key", settings["api_keys"]["backend-service"]),)
    release = threading.Event()

    def open_stream(n: int) -> Iterator[tokens_pb.TokenizeRequest]:
        for i in range(n):
            yield tokens_pb.TokenizeRequest(
                tenant="demo",
                items=[tokens_pb.TokenizeItem(value=f"stop{i}@example.com", field_class="email")],
            )
        release.wait(120)  # never half-closes while the test runs

    calls: list[Any] = []
    try:
        heavy = stub.TokenizeText.future(
            # the whole character budget of a call (16 x 65,536): seconds of detection
            tokens_pb.TokenizeTextRequest(tenant="demo", texts=[("1 2 " * 16384)] * 16),
            metadata=metadata,
            timeout=300,
        )
        for _ in range(3):  # with the unread one: the 4 streams a principal may have at once
            call: Any = stub.StreamTokenize(open_stream(1), metadata=metadata, timeout=300)
            next(call)
            calls.append(call)
        cancelled: Any = stub.StreamTokenize(open_stream(1), metadata=metadata, timeout=300)
        next(cancelled)
        cancelled.cancel()
        unread: Any = stub.StreamTokenize(open_stream(500), metadata=metadata, timeout=300)
        calls.append(unread)
        time.sleep(1.0)
        assert not heavy.done()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
        channel.close()
    assert took < STOP_BOUND, f"stopped after {took:.1f} s\n{out}"
    assert "cvault dev: SIGTERM: health NOT_SERVING" in out
    assert "cvault dev: stopped" in out
    assert not {p for p in started if Path(f"/proc/{p}/cmdline").exists()}, (
        "OpenBao was left running"
    )
