"""Secondary audit sinks: the same events as JSON lines, written after the database commit.

The database chain is the record of truth; a sink is a copy for log shipping (SIEM, stdout in a
container, syslog). Lines carry the record's pseudonym, never its id, and no customer value.

A file sink creates its file ``0600`` (owner only) and, like
``logging.handlers.WatchedFileHandler``, reopens it when it was rotated away (renamed or
deleted: another device or inode at its path) before the next write, so ``logrotate`` without
``copytruncate`` works. :class:`SyslogSink` (``vault/audit/_syslog.py``) sends one message per
entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final, Protocol

from vault.audit._event import AuditEntry

#: the mode a file sink creates its file with (the umask may only narrow it)
FILE_MODE: Final = 0o600
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class AuditSink(Protocol):
    """Receives committed audit entries. May raise; :class:`AuditLog` logs and carries on."""

    def write(self, entries: Sequence[AuditEntry]) -> None: ...


def entry_json(entry: AuditEntry) -> str:
    """One JSON object (no newline) with the entry's fields; keys in a fixed order."""
    return json.dumps(
        {
            "time": entry.time.isoformat(),
            "chain": entry.chain,
            "seq": entry.seq,
            "principal": entry.principal,
            "role": entry.role,
            "action": entry.action,
            "purpose": entry.purpose,
            "tenant": entry.tenant,
            "record_ref": entry.record_ref,
            "field_classes": list(entry.field_classes),
            "outcome": entry.outcome,
            "reason": entry.reason,
            "request_id": entry.request_id,
            "on_behalf_of": entry.on_behalf_of,
            "peer": entry.peer,
        },
        ensure_ascii=True,
        separators=(",", ":"),
    )


def _open_file(path: str) -> tuple[IO[str], tuple[int, int]]:
    """``path`` opened for appending (created ``0600``), and its (device, inode)."""
    fd = os.open(path, _OPEN_FLAGS, FILE_MODE)
    try:
        st = os.fstat(fd)
        stream = os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
    return stream, (st.st_dev, st.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    """``data`` to ``fd``: one write(2), more only if the system wrote part of it (disk full)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class JsonLinesSink:
    """Appends one JSON object per entry to a file (opened in append mode, created ``0600``,
    reopened after a rotation) or a text stream.

    Thread-safe: a batch of entries is written and flushed under one lock, so lines from
    concurrent calls never interleave.
    """

    def __init__(self, target: str | Path | IO[str]) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._path: str | None = None
        self._file_id: tuple[int, int] | None = None
        if isinstance(target, str | Path):
            self._path = str(target)
            self._stream: IO[str] | None
            self._stream, self._file_id = _open_file(self._path)
            self._owned = True
            self._name = str(target)
        else:
            self._stream = target
            self._owned = False
            self._name = getattr(target, "name", type(target).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    def _target(self) -> IO[str]:
        if self._closed:
            raise ValueError("audit sink is closed")
        if self._path is not None:
            return self._current_file(self._path)
        assert self._stream is not None
        return self._stream

    def _current_file(self, path: str) -> IO[str]:
        """The file at ``path``, reopened when the path now names another file or none (it was
        rotated), or when reopening failed last time."""
        try:
            st = os.stat(path)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = None
        if self._stream is not None and now == self._file_id:
            return self._stream
        if self._stream is not None:
            old, self._stream = self._stream, None
            with contextlib.suppress(OSError):
                old.close()  # flushes what is buffered to the rotated file
        self._stream, self._file_id = _open_file(path)
        return self._stream

    def write(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        text = "".join(entry_json(e) + "\n" for e in entries)
        with self._lock:
            stream = self._target()
            if self._path is None:
                stream.write(text)
                stream.flush()
                return
            # A file: the whole batch in one write(2) on the O_APPEND descriptor, so that the
            # workers of `cvault serve --workers` sharing the file never interleave lines.
            stream.flush()
            _write_all(stream.fileno(), text.encode("utf-8"))

    def close(self) -> None:
        with self._lock:
            if self._owned and self._stream is not None:
                self._stream.close()
            self._stream = None
            self._closed = True


class StdoutSink(JsonLinesSink):
    """JSON lines on whatever ``sys.stdout`` is at the time of each write."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def _target(self) -> IO[str]:
        return sys.stdout
