"""The current policy of a running server, reloaded on SIGHUP and when the file changes.

A reload that finds an invalid file keeps the policy in force and logs why (file:line: rule:
problem) at ERROR. Readers take :attr:`PolicyHolder.current` once per call and use that one
:class:`Policy` for every decision of the call, so a reload never splits a call between two
policies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, NamedTuple

from vault.errors import ConfigError
from vault.policy._load import MAX_POLICY_BYTES, parse_policy
from vault.policy._model import Policy

log = logging.getLogger("vault.policy")


class _Fingerprint(NamedTuple):
    mtime_ns: int
    size: int
    inode: int
    sha256: str


class PolicyHolder:
    """Thread-safe holder of the current :class:`Policy` of one file.

    Raises (at construction):
        ConfigError: the file cannot be read or is not a valid policy: a server that starts has
            a valid policy.
    """

    def __init__(self, path: str | os.PathLike[str], *, poll_interval: float = 2.0) -> None:
        if not poll_interval > 0:
            raise ValueError("poll_interval must be > 0")
        self.path = os.fspath(path)
        self.poll_interval = poll_interval
        # Serializes reading and swapping, so an older read can never replace a newer policy.
        self._lock = threading.Lock()
        data, fingerprint = self._read()
        self._policy = parse_policy(data, self.path)
        self._seen = fingerprint  # of the last content loaded or refused
        self._pending: _Fingerprint | None = None
        self._read_error: str | None = None
        #: why the file in place is not the policy in force ("" when it is): health reports it
        self.problem = ""
        self._seen_valid = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_sighup: Any = None
        self._sighup_installed = False

    @property
    def current(self) -> Policy:
        """The policy in force (a plain attribute read: atomic, lock-free)."""
        return self._policy

    def reload(self) -> bool:
        """Read the file now and swap it in if valid.

        Returns:
            True if the new policy is now current; False if the file could not be read or is
            invalid (the old policy stays, and the reason is logged at ERROR).
        """
        with self._lock:
            try:
                data, fingerprint = self._read()
            except ConfigError as exc:
                self._log_refused(exc)
                return False
            return self._apply(data, fingerprint)

    def start_watching(self) -> None:
        """Poll the file every ``poll_interval`` seconds in a daemon thread; idempotent.

        A change is loaded once two polls in a row see the same content, so a file caught half
        written is not loaded (a truncated file can be a valid policy that lacks its overrides).
        """
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="policy-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; restore the previous SIGHUP handler if called from the main thread."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, 2 * self.poll_interval))
        if self._sighup_installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._sighup_installed = False

    def install_sighup(self) -> Any:
        """Reload on SIGHUP. Returns the previous handler (``stop`` restores it).

        The handler starts a short-lived thread that calls :meth:`reload`: the handler itself
        runs between two bytecodes of the main thread, which may hold the reload lock.

        Raises:
            RuntimeError: not called from the main thread, or no SIGHUP on this platform.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("install_sighup must be called from the main thread")
        if not hasattr(signal, "SIGHUP"):  # pragma: no cover - POSIX only
            raise RuntimeError("SIGHUP is not available on this platform")
        previous = signal.signal(signal.SIGHUP, self._on_sighup)
        if not self._sighup_installed:
            self._previous_sighup = previous
            self._sighup_installed = True
        return previous

    def __enter__(self) -> PolicyHolder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP: reloading policy %s", self.path)
        threading.Thread(target=self.reload, name="policy-sighup-reload", daemon=True).start()

    def _read(self) -> tuple[bytes, _Fingerprint]:
        try:
            with open(self.path, "rb") as stream:
                stat = os.fstat(stream.fileno())
                data = stream.read(MAX_POLICY_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"{self.path}: cannot read policy file: {reason}") from None
        digest = hashlib.sha256(data).hexdigest()
        return data, _Fingerprint(stat.st_mtime_ns, stat.st_size, stat.st_ino, digest)

    def _apply(self, data: bytes, fingerprint: _Fingerprint) -> bool:
        """Parse and swap; the caller holds the lock."""
        self._seen = fingerprint
        self._pending = None
        self._read_error = None
        try:
            policy = parse_policy(data, self.path)
        except ConfigError as exc:
            self._seen_valid = False
            self._log_refused(exc)
            return False
        self._seen_valid, self.problem = True, ""
        old, self._policy = self._policy, policy
        log.info(
            "policy %s reloaded: version %d -> %d, sha256 %s",
            self.path,
            old.version,
            policy.version,
            policy.digest[:16],
        )
        return True

    def _log_refused(self, exc: ConfigError) -> None:
        self.problem = (
            f"policy file refused, version {self._policy.version} in force: {exc.message}"
        )
        current = self._policy
        log.error(
            "policy reload refused, keeping version %d (sha256 %s): %s",
            current.version,
            current.digest[:16],
            exc.message,
        )

    def _poll_once(self) -> None:
        with self._lock:
            try:
                data, fingerprint = self._read()
            except ConfigError as exc:
                if exc.message != self._read_error:  # log once, not every poll
                    self._read_error = exc.message
                    self._log_refused(exc)
                return
            self._read_error = None
            if fingerprint == self._seen:
                self._pending = None
                if self._seen_valid:
                    self.problem = ""  # readable again, and the content in force
            elif fingerprint != self._pending:
                self._pending = fingerprint  # changed: load when the next poll sees the same
            else:
                self._apply(data, fingerprint)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self._poll_once()
            except Exception:  # the watcher must outlive a bug in one poll
                log.exception("policy watcher: unexpected error")
