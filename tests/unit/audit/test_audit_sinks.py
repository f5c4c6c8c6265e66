"""The audit sinks (issue 12, part 7): the JSON-lines file is created 0600 and follows log
rotation; the syslog sink sends one message per entry, over UDP or a local socket."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vault.audit import AuditEntry, JsonLinesSink, SyslogSink, make_sinks
from vault.config import load_settings
from vault.errors import ConfigError


def entry(seq: int) -> AuditEntry:
    return AuditEntry(
        chain="main",
        seq=seq,
        time=datetime(2026, 12, 5, 23, 0, seq, tzinfo=UTC),
        principal="spiffe://acme/support-bot",
        role="support",
        action="record.read",
        purpose="customer_support",
        tenant="acme",
        record_ref="r" * 32,
        field_classes=("email",),
        outcome="allowed",
        reason="",
        request_id=f"req-{seq}",
    )


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the mode must come from the sink itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_the_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(path)
    try:
        sink.write([entry(1)])
    finally:
        sink.close()
    assert mode(path) == 0o600


@pytest.mark.usefixtures("open_umask")
def test_a_rotated_file_is_reopened_and_the_new_one_gets_the_next_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(path)
    try:
        sink.write([entry(1), entry(2)])
        path.rename(tmp_path / "audit.jsonl.1")  # logrotate's rename
        sink.write([entry(3)])
        sink.write([entry(4)])
        assert seqs(tmp_path / "audit.jsonl.1") == [1, 2]
        assert seqs(path) == [3, 4]
        assert mode(path) == 0o600
        path.unlink()  # deleted outright
        sink.write([entry(5)])
        assert seqs(path) == [5]
        assert mode(path) == 0o600
    finally:
        sink.close()


def test_a_file_replaced_by_another_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(path)
    try:
        sink.write([entry(1)])
        (tmp_path / "new").write_text("")
        os.replace(tmp_path / "new", path)  # a new inode at the same path
        sink.write([entry(2)])
        assert seqs(path) == [2]
    finally:
        sink.close()


def test_a_batch_is_one_write_so_processes_sharing_the_file_never_interleave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers of ``cvault serve --workers`` may share one file: each batch is a single
    write(2) on the O_APPEND descriptor, however large (a buffered stream promises no such
    thing past its buffer's size)."""
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(path)
    writes: list[int] = []
    real_write = os.write

    def counting(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting)
    batch = [entry(i % 60) for i in range(200)]  # about 60 KB
    sink.write(batch)
    sink.write([entry(1)])
    sink.close()
    assert len(writes) == 2
    assert writes[0] > 8192
    assert seqs(path) == [e.seq for e in batch] + [1]


def test_a_closed_sink_refuses_writes(tmp_path: Path) -> None:
    sink = JsonLinesSink(tmp_path / "audit.jsonl")
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write([entry(1)])


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    try:
        yield listener
    finally:
        listener.close()


def test_syslog_over_udp_sends_one_message_per_entry(udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    sink = SyslogSink(f"127.0.0.1:{port}", "local3")
    try:
        sink.write([entry(1), entry(2)])
    finally:
        sink.close()
    got = [udp.recv(65536).decode() for _ in range(2)]
    # <PRI> = local3 (19) * 8 + info (6)
    assert all(m.startswith("<158>cvault-audit: {") for m in got)
    bodies = [json.loads(m.removeprefix("<158>cvault-audit: ")) for m in got]
    assert [b["seq"] for b in bodies] == [1, 2]
    assert bodies[0]["record_ref"] == "r" * 32


def test_syslog_over_a_local_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(5)
    try:
        sink = SyslogSink(path)  # facility authpriv (10): <86>
        sink.write([entry(7)])
        sink.close()
        message = listener.recv(65536).decode()
    finally:
        listener.close()
    assert message.startswith("<86>cvault-audit: {")
    assert json.loads(message.split(": ", 1)[1])["seq"] == 7


@pytest.mark.parametrize("address", ["", "host:port", "::1:514", "[::1]:0", "h:70000"])
def test_a_bad_syslog_address_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="syslog"):
        SyslogSink(address)


def test_a_bad_facility_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="syslog_facility"):
        SyslogSink("127.0.0.1:514", "kernel-panic")


def test_the_settings_select_the_sinks(tmp_path: Path, udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        'database_url = "sqlite://"\n'
        f'[audit]\njsonl = "{tmp_path / "audit.jsonl"}"\n'
        f'syslog = "127.0.0.1:{port}"\nsyslog_facility = "local0"\n'
    )
    audit = load_settings(cfg).audit
    assert (audit.syslog, audit.syslog_facility) == (f"127.0.0.1:{port}", "local0")
    sinks = make_sinks(
        jsonl=audit.jsonl, syslog=audit.syslog, syslog_facility=audit.syslog_facility
    )
    assert [type(s).__name__ for s in sinks] == ["JsonLinesSink", "SyslogSink"]
    for sink in sinks:
        sink.write([entry(1)])
    assert udp.recv(65536).startswith(b"<134>cvault-audit: ")
    assert seqs(tmp_path / "audit.jsonl") == [1]
    for sink in sinks:
        assert isinstance(sink, JsonLinesSink | SyslogSink)
        sink.close()
