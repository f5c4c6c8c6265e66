"""PolicyHolder: reloads swap valid files in, keep the old policy on invalid ones and say why."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vault.errors import ConfigError
from vault.policy import Policy, PolicyHolder

POLICY = """\
policy_version: {version}
purposes:
  support: {{}}
principals:
  "apikey:agent": {{role: agent, tenants: ["*"]}}
roles:
  agent:
    actions: [record.read]
    purposes: [support]
    fields: {{email: masked}}
"""
# line 8 is the actions line
BROKEN = POLICY.replace("[record.read]", "[record.reed]")
BROKEN_LINE = 8


def write(path: Path, text: str) -> None:
    """Replace the file atomically, as the README asks operators to."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true or ``timeout`` (a bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "policy.yaml"
    write(file, POLICY.format(version=1))
    return file


@pytest.fixture
def holder(path: Path) -> Iterator[PolicyHolder]:
    with PolicyHolder(path, poll_interval=0.02) as h:
        yield h


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "vault.policy" and r.levelno == logging.ERROR
    ]


def test_invalid_file_at_construction_raises(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    write(file, BROKEN.format(version=1))
    with pytest.raises(ConfigError, match=f"^{file}:{BROKEN_LINE}: roles.agent.actions"):
        PolicyHolder(file)
    with pytest.raises(ConfigError, match="cannot read policy file"):
        PolicyHolder(tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="poll_interval"):
        PolicyHolder(file, poll_interval=0)


def test_valid_edit_swaps(holder: PolicyHolder, path: Path) -> None:
    first = holder.current
    assert first.version == 1
    write(path, POLICY.format(version=2))
    assert holder.reload() is True
    assert holder.current.version == 2
    assert holder.current.digest != first.digest
    assert first.version == 1  # a policy taken before the reload is unchanged


def test_invalid_edit_keeps_the_old_policy_and_logs_file_and_line(
    holder: PolicyHolder, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = holder.current
    write(path, BROKEN.format(version=2))
    with caplog.at_level(logging.ERROR, logger="vault.policy"):
        assert holder.reload() is False
    assert holder.current is before
    [message] = refusals(caplog)
    assert f"{path}:{BROKEN_LINE}: roles.agent.actions[0]: unknown action 'record.reed'" in message
    assert "keeping version 1" in message


def test_deleted_file_keeps_the_old_policy(
    holder: PolicyHolder, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = holder.current
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="vault.policy"):
        assert holder.reload() is False
    assert holder.current is before
    assert any("cannot read policy file" in m for m in refusals(caplog))


def test_watcher_picks_up_a_change(
    holder: PolicyHolder, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder.start_watching()
    holder.start_watching()  # idempotent
    write(path, POLICY.format(version=2))
    assert wait_for(lambda: holder.current.version == 2)

    with caplog.at_level(logging.ERROR, logger="vault.policy"):
        write(path, BROKEN.format(version=3))
        assert wait_for(lambda: bool(refusals(caplog)))
    assert holder.current.version == 2
    assert f"{path}:{BROKEN_LINE}: " in refusals(caplog)[0]

    write(path, POLICY.format(version=4))
    assert wait_for(lambda: holder.current.version == 4)
    holder.stop()


def test_watcher_logs_a_bad_file_once(
    holder: PolicyHolder, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="vault.policy"):
        write(path, BROKEN.format(version=2))
        for _ in range(6):
            holder._poll_once()
        path.unlink()
        for _ in range(6):
            holder._poll_once()
    messages = refusals(caplog)
    assert len(messages) == 2
    assert "unknown action" in messages[0]
    assert "cannot read policy file" in messages[1]
    assert holder.current.version == 1


def test_watcher_waits_for_the_file_to_settle(holder: PolicyHolder, path: Path) -> None:
    # A change is loaded only when two polls in a row see the same content: a file caught half
    # written (which may parse, minus its last rules) is never loaded.
    write(path, POLICY.format(version=2))
    holder._poll_once()
    assert holder.current.version == 1
    write(path, POLICY.format(version=3))  # still being written
    holder._poll_once()
    assert holder.current.version == 1
    holder._poll_once()
    assert holder.current.version == 3
    holder._poll_once()
    assert holder.current.version == 3


def test_watcher_sees_a_same_size_rewrite(holder: PolicyHolder, path: Path) -> None:
    # same length, same mtime second: only the content hash differs
    stat = path.stat()
    path.write_text(POLICY.format(version=7), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    holder._poll_once()
    holder._poll_once()
    assert holder.current.version == 7


def test_sighup_reloads(holder: PolicyHolder, path: Path) -> None:
    assert threading.current_thread() is threading.main_thread()
    original = signal.getsignal(signal.SIGHUP)
    try:
        holder.install_sighup()
        write(path, POLICY.format(version=2))
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: holder.current.version == 2)
        holder.stop()
        assert signal.getsignal(signal.SIGHUP) == original
    finally:
        signal.signal(signal.SIGHUP, original)


def test_sighup_only_from_the_main_thread(holder: PolicyHolder) -> None:
    errors: list[BaseException] = []

    def install() -> None:
        try:
            holder.install_sighup()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert "main thread" in str(errors[0])


def test_readers_always_see_a_whole_policy(holder: PolicyHolder, path: Path) -> None:
    versions: set[int] = set()
    broken: list[Policy] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            policy = holder.current
            versions.add(policy.version)
            if "agent" not in policy.roles:
                broken.append(policy)
            time.sleep(0)  # let the reloading thread run

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for version in range(2, 12):
            write(path, POLICY.format(version=version))
            assert holder.reload()
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert holder.current.version == 11
    assert versions <= set(range(1, 12))
    assert not broken
