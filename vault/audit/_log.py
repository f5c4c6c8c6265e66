"""AuditLog: append chained events in the caller's transaction; verify, checkpoint, query."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Mapping, Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from vault.audit import _store as store
from vault.audit._chains import valid_chain
from vault.audit._checkpoint import Checkpoint, CheckpointStore, create_once
from vault.audit._epochs import Reanchor
from vault.audit._errors import AuditUnavailable
from vault.audit._event import AuditEntry, AuditEvent
from vault.audit._inspect import chain_names, query_events, verify_one
from vault.audit._keys import AuditKeyring, KeyLookup
from vault.audit._mac import (
    ZERO_MAC,
    AuditKeys,
    ChainMacer,
    RowContent,
    join_classes,
    pseudonym,
    utc,
)
from vault.audit._readback import Found, Problem, read_newest
from vault.audit._restore import reanchor_chain
from vault.audit._sinks import AuditSink
from vault.audit._verify import (
    CHECKPOINT_MISMATCH,
    RESTORE_HINT,
    TRUNCATED,
    VerifyReport,
    WalkResult,
    walk,
)
from vault.deadline import Deadline
from vault.errors import ConfigError, KeyServerPermissionDenied
from vault.keys import KeyManager
from vault.metrics import timed_audit_append
from vault.storage import Database

log = logging.getLogger("vault.audit")

# Connectivity failures are left to Database.begin, which maps them to DatabaseUnavailable.
_CONNECTIVITY = (OperationalError, InterfaceError)
#: PostgreSQL: appends tried against the head another appender of this process just wrote,
#: before taking the head's lock (each try that fails has waited for that appender's commit)
_HINT_TRIES = 3
#: appends remembered for the checkpoint at least (see AuditLog._appended)
_APPENDED_MIN = 10_000
#: a stopping server's last checkpoint: a few milliseconds when the store answers, and it must
#: fit in the stop's margin (``vault/cli/dev.py`` FORCE_MARGIN) when it does not
_FINAL_CHECKPOINT_SECONDS = 1.5


class AuditLog:
    """The tamper-evident audit log of one chain. Thread-safe; one instance per process.

    Args:
        db: the database holding ``audit_keys``, ``audit_events`` and ``audit_chain_heads``.
        keys: unwraps the audit key under the ``audit`` key class (and caches it).
        chain: the chain this instance appends to (1-32 of ``A-Z a-z 0-9 _ . -``).
        sinks: secondary outputs written by :meth:`after_commit` (never fail a call).
        checkpoint: where :meth:`checkpoint_now` records the verified head outside the
            database; None disables checkpoints (and truncation beyond the head table goes
            undetected).
        checkpoint_every: :meth:`after_commit` starts a checkpoint after this many rows...
        checkpoint_max_age: ...or when this many seconds passed since the last one and rows
            were appended since.
        checkpoint_in_background: run those checkpoints on a short-lived thread (default), or
            inline in :meth:`after_commit` (tests).

    Raises:
        ConfigError: an invalid chain name or checkpoint setting.
    """

    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        *,
        chain: str = "main",
        sinks: Sequence[AuditSink] = (),
        checkpoint: CheckpointStore | None = None,
        checkpoint_every: int = 1000,
        checkpoint_max_age: float = 300.0,
        checkpoint_in_background: bool = True,
    ) -> None:
        if not valid_chain(chain):
            raise ConfigError(f"invalid audit chain name {chain!r:.40}")
        if checkpoint_every < 1 or not checkpoint_max_age > 0:
            raise ConfigError("audit checkpoint_every and checkpoint_max_age must be positive")
        self._db = db
        self._keys = keys
        self.chain = chain
        self._sinks = tuple(sinks)
        self._store = checkpoint
        self._every = checkpoint_every
        self._max_age = checkpoint_max_age
        self._background = checkpoint_in_background
        self._keyring = AuditKeyring(db, keys)
        self._state_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        # The newest checkpoint this process knows (read once, then the one it wrote last):
        # the next checkpoint verifies the rows after it, with no store read.
        self._anchor: Checkpoint | None = None
        self._anchor_known = False
        self._pending = 0
        self._last_checkpoint = time.monotonic()
        self._retry_after = 0.0
        self._running = False
        self._thread: threading.Thread | None = None
        # PostgreSQL: the head this process expects, so an append is one round trip
        self._head_hint: store.Head | None = None
        # The newest row of the chain this process has verified (by a walk, or as the end of
        # its own appends from a verified row); None: start from the last checkpoint.
        # Guarded by _checkpoint_lock.
        self._verified: store.Head | None = None
        # What this process appended: (seq, mac) the rows chain from -> the head they made.
        # Rolled-back appends stay in it too: a checkpoint only follows it to the head the
        # database has (see _vouched). Guarded by _state_lock; cleared when it passes the limit.
        self._appended: dict[tuple[int, bytes], store.Head] = {}
        self._appended_limit = max(_APPENDED_MIN, 4 * checkpoint_every)

    def __repr__(self) -> str:
        return f"AuditLog(chain={self.chain!r}, sinks={len(self._sinks)})"

    @property
    def db(self) -> Database:
        """The database holding the chain (operator commands work on the same one)."""
        return self._db

    @property
    def keys(self) -> KeyManager:
        """The key manager it unwraps its key with (operator commands share it)."""
        return self._keys

    # --- writing -----------------------------------------------------------------------------

    def prepare(self, *, deadline: Deadline) -> None:
        """Make sure the audit key is loaded and unwrapped, before the caller's transaction.

        In steady state this is a cache hit (no database or key-server call). The first call
        of a process reads ``audit_keys`` and unwraps the key (one key-server call); the first
        call ever also creates it.

        Raises:
            AuditUnavailable: the audit key could not be obtained (key server down or refusing).
            DatabaseUnavailable: the database could not be reached.
        """
        self._keyring.current(None, deadline)

    @timed_audit_append
    def append(
        self, conn: Connection, events: Sequence[AuditEvent], *, deadline: Deadline
    ) -> list[AuditEntry]:
        """Append ``events`` to the chain inside the caller's open write transaction.

        Call it as the last statement before the commit: it locks the chain head until the
        transaction ends, so every other appender of this chain waits meanwhile. The rows are
        durable only once the caller commits; then pass the result to :meth:`after_commit`.

        Returns:
            The entries as stored (seq, pseudonym), in the order given.

        Raises:
            AuditUnavailable: the audit key could not be obtained, or the database refused the
                rows (permissions, a trigger, an inconsistent head). The caller must let its
                transaction roll back and fail the call.
            DatabaseUnavailable: (from the caller's ``Database.begin``) connectivity failures
                are re-raised unchanged for it to map.
            ValueError: ``conn`` is not in a write transaction (a caller bug).
        """
        if not events:
            return []
        if not conn.in_transaction() or conn.info.get("write") is False:
            raise ValueError("AuditLog.append needs an open write transaction")
        keys = self._keyring.current(conn, deadline)
        # Everything but the MACs is made before the head's lock is taken: the lock is held
        # from the statement that takes it until the caller's commit, by every appender in turn.
        contents = [self._content(keys, event) for event in events]
        try:
            postgres = conn.dialect.name == "postgresql"
            done = self._append_at_hint(conn, keys, contents) if postgres else None
            if done is None:
                start = store.lock_head(conn, self.chain)
                entries, head = self._write_locked(conn, keys, start, contents, postgres)
            else:
                start, entries, head = done
            # A guess for the next append, right unless this transaction rolls back or another
            # appender comes first (advance_head then refuses and the locking path runs).
            self._head_hint = head
            self._remember(start, head)
        except _CONNECTIVITY:
            raise
        except DBAPIError as exc:
            # Type only: a driver message can quote parameters.
            log.error(
                "audit rows refused by the database (%s); failing the call",
                type(exc.orig).__name__,
            )
            raise AuditUnavailable("audit log could not be written") from None
        return entries

    def _append_at_hint(
        self, conn: Connection, keys: AuditKeys, contents: Sequence[RowContent]
    ) -> tuple[store.Head, list[AuditEntry], store.Head] | None:
        """PostgreSQL: write the rows after the head this process expects, in one round trip
        (see :func:`store.advance_head`), trying again while another appender of this process
        keeps moving it; None when the locking path must run. (start, entries, new head)."""
        tried: store.Head | None = None
        for _ in range(_HINT_TRIES):
            hint = self._head_hint
            if hint is None or hint == tried:
                return None  # no guess, or the same one that failed (a rolled-back append)
            rows, entries, head = self._chain_rows(keys, hint, contents)
            if store.advance_head(conn, self.chain, hint, head, rows):
                return hint, entries, head
            tried = hint  # it waited for that appender's commit: its head is the next guess
        return None

    def _write_locked(
        self,
        conn: Connection,
        keys: AuditKeys,
        start: store.Head,
        contents: Sequence[RowContent],
        postgres: bool,
    ) -> tuple[list[AuditEntry], store.Head]:
        """Write the rows after ``start``, the head this transaction holds locked: on
        PostgreSQL in one more round trip (rows and head together), else two statements."""
        rows, entries, head = self._chain_rows(keys, start, contents)
        if not postgres:
            store.insert_events(conn, rows)
            store.set_head(conn, self.chain, head)
        elif not store.advance_head(conn, self.chain, start, head, rows):
            # cannot happen while the lock is held: the head row changed under it
            log.error("audit chain %s: the locked head moved; failing the call", self.chain)
            raise AuditUnavailable("audit log could not be written")
        return entries, head

    def _remember(self, start: store.Head, head: store.Head) -> None:
        """Note an append from ``start`` to ``head`` (committed or not: see _vouched)."""
        with self._state_lock:
            if len(self._appended) >= self._appended_limit:
                self._appended.clear()  # checkpoints failing for long: they will read instead
            self._appended[start.seq, start.mac] = head

    def _content(self, keys: AuditKeys, event: AuditEvent) -> RowContent:
        """What a row of ``event`` holds besides its chain, seq and MAC."""
        return RowContent(
            time=utc(event.time),
            principal=event.principal,
            role=event.role,
            action=event.action,
            purpose=event.purpose,
            tenant=event.tenant,
            record_ref=(
                None
                if event.record_id is None
                else pseudonym(keys.pseudonym_key, event.tenant, event.record_id)
            ),
            field_classes=join_classes(event.field_classes),
            outcome=event.outcome,
            reason=event.reason,
            request_id=event.request_id,
            audit_key_id=keys.key_id,
            on_behalf_of=event.on_behalf_of,
            peer=event.peer,
        )

    def _chain_rows(
        self, keys: AuditKeys, start: store.Head, contents: Sequence[RowContent]
    ) -> tuple[list[store.StoredRow], list[AuditEntry], store.Head]:
        """The rows of ``contents`` chained after ``start``, their entries, and the new head."""
        rows: list[store.StoredRow] = []
        entries: list[AuditEntry] = []
        prev, seq, macer = start.mac, start.seq, ChainMacer(keys.mac_key, self.chain)
        for content in contents:
            seq += 1
            prev = macer.mac(prev, seq, content)
            row = store.StoredRow(self.chain, seq, content, prev)
            rows.append(row)
            entries.append(store.entry_of(row))
        return rows, entries, store.Head(seq, prev)

    def after_commit(self, entries: Sequence[AuditEntry]) -> None:
        """Tell the log that rows from :meth:`append` are committed: write them to the sinks
        and start a checkpoint when one is due. Never raises for a sink or checkpoint failure
        (those are logged); call it after the commit, before or after returning the result."""
        if not entries:
            return
        for sink in self._sinks:
            try:
                sink.write(entries)
            except Exception as exc:
                log.error("audit sink %r failed (%s)", sink, type(exc).__name__)
        if self._store is None:
            return
        now = time.monotonic()
        thread: threading.Thread | None = None
        with self._state_lock:
            self._pending += len(entries)
            due = self._pending >= self._every or now - self._last_checkpoint >= self._max_age
            if not due or self._running or now < self._retry_after:
                return
            self._pending = 0
            self._last_checkpoint = now
            self._running = True
            if self._background:
                # Off the request path: the checkpoint walks up to checkpoint_every rows and
                # makes a key-server call.
                thread = threading.Thread(
                    target=self._checkpoint_job, name="cvault-audit-checkpoint", daemon=True
                )
                self._thread = thread
        if thread is not None:
            thread.start()
        else:
            self._checkpoint_job()

    def record(self, events: Sequence[AuditEvent], *, deadline: Deadline) -> list[AuditEntry]:
        """Append ``events`` in a transaction of their own (e.g. a denial), then
        :meth:`after_commit`.

        The entries returned are already with the sinks and counted towards the next
        checkpoint: passing them to :meth:`after_commit` again would write every line twice
        (repeating seq numbers) and checkpoint twice as often.

        Raises:
            AuditUnavailable, DatabaseUnavailable: as for :meth:`append`; nothing was written.
        """
        self.prepare(deadline=deadline)
        with self._db.begin(write=True) as conn:
            entries = self.append(conn, events, deadline=deadline)
        self.after_commit(entries)
        return entries

    def close(self, timeout: float = 30.0, *, final_checkpoint: bool = False) -> None:
        """Wait for a background checkpoint in progress (if any); with ``final_checkpoint`` (a
        server's stop, SIGTERM or normal) then checkpoint the rows appended since, so no tail
        is left that only the next start would cover. A failure is logged, not raised."""
        with self._state_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._state_lock:
            final = final_checkpoint and self._store is not None
            final = final and self._pending > 0 and not self._running
            if final:
                self._pending, self._running = 0, True
        if final:
            self._checkpoint_job(min(timeout, _FINAL_CHECKPOINT_SECONDS))

    # --- reading -----------------------------------------------------------------------------

    def pseudonym(self, tenant: str, record_id: str, *, deadline: Deadline) -> str:
        """The ``record_ref`` that rows appended now carry for this record.

        Raises:
            AuditUnavailable: the audit key could not be obtained.
        """
        return pseudonym(self._keyring.current(None, deadline).pseudonym_key, tenant, record_id)

    def row_key(self, key_id: str | None = None, *, deadline: Deadline) -> tuple[str, bytes] | None:
        """The key of the MACs on the grant and consent rows the service trusts, derived from
        an audit key (see ``_mac.py``), with that key's id: the current one (``key_id`` None),
        or the one ``key_id`` names. Those rows thus rest on the audit key's wrapping by the
        ``<prefix>-audit`` transit key, its rotation and rewrap. In steady state the current
        key is a cache hit. None when ``key_id`` names no audit key, or one that does not unwrap.

        Raises:
            AuditUnavailable: the current audit key could not be obtained.
            KeyServerUnavailable, KeyServerRefused: an older audit key could not be unwrapped.
            DatabaseUnavailable: the database could not be reached.
        """
        current = self._keyring.current(None, deadline)
        if key_id is None or key_id == current.key_id:
            return current.key_id, current.row_key
        with self._db.begin(write=False) as conn:
            older = self._keyring.lookup(deadline)(conn, key_id)
        return None if older is None else (older.key_id, older.row_key)

    def query(
        self, tenant: str, record_id: str, *, deadline: Deadline, limit: int = 1000
    ) -> list[AuditEntry]:
        """Who touched this record's data, when and why: its events in every chain, newest
        first, found by its pseudonym under every audit key version.

        Raises:
            ValueError: ``limit`` is not in 1..10000. DatabaseUnavailable.
            KeyServerUnavailable, KeyServerRefused, DecryptionFailed: an audit key could not
                be unwrapped, or was tampered with.
        """
        return query_events(self._db, self._keys, tenant, record_id, deadline=deadline, limit=limit)

    def verify(self, *, deadline: Deadline) -> VerifyReport:
        """Recompute this log's chain from seq 1 and compare it with the head table and every
        external checkpoint of the chain (streamed: bounded memory; safe while others append).
        The report's ``ok`` is False with the first bad seq and the problem otherwise.

        Raises:
            KeyServerUnavailable, KeyServerRefused: the key server or the checkpoint
                store could not be used.
            DatabaseUnavailable: the database could not be reached.
        """
        return self.verify_chain(self.chain, deadline=deadline)

    def verify_chain(self, chain: str, *, deadline: Deadline) -> VerifyReport:
        """:meth:`verify` for ``chain`` (e.g. another process's chain, from an operator command).

        Raises:
            ConfigError: ``chain`` is not a valid chain name.
            KeyServerUnavailable, KeyServerRefused, DatabaseUnavailable: as for :meth:`verify`.
        """
        if not valid_chain(chain):
            raise ConfigError(f"invalid audit chain name {chain!r:.40}")
        legacy = None if self._store is None else self._store.legacy(deadline=deadline)
        return self._verify_chain(chain, legacy, deadline)

    def verify_all(self, *, deadline: Deadline) -> list[VerifyReport]:
        """:meth:`verify` for every chain: this log's, each one with rows or a head row in
        the database, and each one with checkpoints in the store (a chain whose rows were all
        deleted still has those). One report per chain, in name order.

        Raises:
            KeyServerUnavailable, KeyServerRefused, DatabaseUnavailable: as for :meth:`verify`.
        """
        names, legacy = chain_names(self._db, self._store, self.chain, deadline=deadline)
        return [self._verify_chain(n, legacy, deadline) for n in names]

    def _verify_chain(
        self, chain: str, legacy: Mapping[str, str] | None, deadline: Deadline
    ) -> VerifyReport:
        lookup = self._keyring.lookup(deadline)
        return verify_one(self._db, self._store, lookup, chain, legacy, deadline=deadline)

    def checkpoint_now(self, *, deadline: Deadline) -> VerifyReport:
        """Verify the rows appended since the newest row this process verified and, if they
        are intact, record the newest one as a new write-once checkpoint: one store write, and
        no store read but once per process (the last checkpoint is remembered).

        What a checkpoint records is always a head that was verified, incrementally:

        - rows this process appended itself (its own chain, the default), chained from a
          verified row up to the head the head table names, are not read again: a few point
          reads check the head row and the row at its seq still have the MAC it made;
        - otherwise (another writer, or a new process) the rows after the newest verified one
          are read back and their MACs recomputed, as ``verify`` does;
        - what was verified is kept when the store write fails: a retry reads nothing twice.

        Either way nothing is written, and the report says why, when the row of the previous
        checkpoint or the newest verified row is gone or differs (a truncation, or a rewrite),
        or a row read back fails: a checkpoint never certifies a rewritten tail. A row edited
        after this process appended it, and not read back, is not certified either: the
        checkpoint keeps the MACs as appended, so ``verify`` names that row.

        Returns:
            The report of the rows checked (``ok`` and ``last_seq`` = the checkpointed seq).

        Raises:
            ConfigError: no checkpoint store is configured.
            KeyServerUnavailable, KeyServerRefused: key server or store unusable.
            DatabaseUnavailable: the database could not be reached.
        """
        if self._store is None:
            raise ConfigError("no audit checkpoint store is configured")
        with self._checkpoint_lock:
            if not self._anchor_known:
                found = self._newest_checkpoint(self._store, deadline)
                if found.problem is not None:
                    return self._not_checkpointed(self._problem_report(found.problem))
                self._anchor = found.checkpoints[-1] if found.checkpoints else None
                self._anchor_known = True
                self._verified = None
            previous = self._anchor
            keys_for = self._keyring.lookup(deadline)
            with self._db.begin(write=False) as conn:
                result = self._verify_since(conn, previous, keys_for)
            report = result.report
            if not report.ok:
                return self._not_checkpointed(report)
            self._keep_verified(store.Head(report.last_seq, result.last_mac))
            if report.last_seq == 0 or (previous is not None and report.last_seq <= previous.seq):
                return report
            # prev links write-once checkpoints only: a legacy one may still be overwritten
            # by an older replica during an upgrade.
            link = previous.seq if previous is not None and previous.prev is not None else 0
            epoch = 0 if previous is None else previous.epoch
            written = Checkpoint(self.chain, report.last_seq, result.last_mac, link, epoch)
            if not create_once(self._store, written, deadline=deadline):
                return self._not_checkpointed(
                    self._problem_report(
                        Problem(
                            written.seq,
                            CHECKPOINT_MISMATCH,
                            f"a different checkpoint at seq {written.seq} is already there",
                        )
                    )
                )
            self._anchor = written
            log.info("audit chain %s checkpointed at seq %d", self.chain, written.seq)
            return report

    def reanchor(
        self, event: AuditEvent, *, chain: str | None = None, deadline: Deadline
    ) -> Reanchor:
        """Re-anchor ``chain`` (default: this log's) after a database restore: append a
        re-anchor row (``event``'s principal, role and reason) recording the lost range and
        write its checkpoint in a new epoch (see ``vault/audit/_restore.py``). Run it with
        every server stopped.

        Raises:
            ConfigError: no checkpoint store, or an invalid chain name.
            ReanchorRefused: nothing to re-anchor, or something else is wrong with the chain.
            KeyServerUnavailable, KeyServerRefused, DatabaseUnavailable, AuditUnavailable.
        """
        if self._store is None:
            raise ConfigError("no audit checkpoint store is configured")
        target = self
        if chain is not None and chain != self.chain:
            target = AuditLog(self._db, self._keys, chain=chain, checkpoint=self._store)
        done = reanchor_chain(
            target, self._store, self._keyring.lookup(deadline), event, deadline=deadline
        )
        with self._checkpoint_lock:
            self._anchor_known = False  # the next checkpoint continues the new epoch
            self._verified = None
        return done

    # --- internals ---------------------------------------------------------------------------

    def _newest_checkpoint(self, checkpoints: CheckpointStore, deadline: Deadline) -> Found:
        """Where this process's checkpoints start from (once per process), and a loud warning
        when the store's policy is not write-once."""
        if checkpoints.rewritable(self.chain, deadline=deadline):
            log.error(
                "the key-server credential may rewrite or delete the audit checkpoints of chain "
                "%s: apply deploy/openbao/runtime-policy.hcl (create and read only)",
                self.chain,
            )
        try:
            return read_newest(checkpoints, self.chain, deadline=deadline)
        except KeyServerPermissionDenied:
            # A policy of the previous version (no "list"): still checkpoint, walking the whole
            # chain once instead of from the newest checkpoint.
            log.warning(
                "cannot list the audit checkpoints of chain %s (apply "
                "deploy/openbao/runtime-policy.hcl); verifying it from its first row",
                self.chain,
            )
            return Found(())

    def _problem_report(self, problem: Problem) -> VerifyReport:
        return VerifyReport(
            ok=False,
            chain=self.chain,
            checked=0,
            last_seq=0,
            first_bad_seq=problem.seq,
            problem=problem.kind,
            detail=problem.detail,
        )

    def _not_checkpointed(self, report: VerifyReport) -> VerifyReport:
        log.error(
            "audit chain %s failed verification at seq %s (%s); checkpoint not written",
            self.chain,
            report.first_bad_seq,
            report.problem,
        )
        return report

    def _verify_since(
        self, conn: Connection, previous: Checkpoint | None, keys_for: KeyLookup
    ) -> WalkResult:
        """The rows after the newest verified one (or ``previous``, the last checkpoint), and
        the head table, verified as :meth:`checkpoint_now` describes."""
        # The head is read before the rows: rows appended meanwhile only extend the chain.
        head = store.read_head(conn, self.chain)
        base = store.Head(0, ZERO_MAC)
        if previous is not None:
            base = store.Head(previous.seq, previous.mac)
        if previous is not None and not self._row_is(conn, base):
            anchor = store.row_at(conn, self.chain, previous.seq)
            return self._broken(
                previous.seq,
                TRUNCATED if anchor is None else CHECKPOINT_MISMATCH,
                f"row {previous.seq} is missing or differs from the checkpoint",
                checkpoint_seq=previous.seq,
            )
        start = self._verified
        if start is None or start.seq < base.seq:
            start = base
        elif start.seq > base.seq and not self._row_is(conn, start):
            return self._broken(
                start.seq,
                TRUNCATED,
                f"row {start.seq}, verified earlier by this process, is missing or differs"
                f"{RESTORE_HINT}",
            )
        if head is not None and self._vouched(start, head) and self._row_is(conn, head):
            report = VerifyReport(
                ok=True, chain=self.chain, checked=head.seq - start.seq, last_seq=head.seq
            )
            return WalkResult(report, head.mac)

        def lookup(key_id: str) -> AuditKeys | None:
            return keys_for(conn, key_id)

        rows = store.stream_rows(conn, self.chain, after_seq=start.seq)
        return walk(
            self.chain, rows, lookup, head=head, start_seq=start.seq + 1, start_mac=start.mac
        )

    def _row_is(self, conn: Connection, head: store.Head) -> bool:
        """True when the chain's row at ``head.seq`` is there with ``head.mac``."""
        row = store.row_at(conn, self.chain, head.seq)
        return row is not None and hmac.compare_digest(row.mac, head.mac)

    def _vouched(self, start: store.Head, head: store.Head) -> bool:
        """True when this process's own appends lead from ``start`` exactly to ``head`` (the
        head table's): every row between was made by this process, chained from ``start``. An
        append that rolled back, or one another writer's rows overtook, leads elsewhere."""
        pos = start
        with self._state_lock:
            while pos.seq < head.seq:
                nxt = self._appended.get((pos.seq, pos.mac))
                if nxt is None or nxt.seq <= pos.seq:
                    return False
                pos = nxt
        return pos == head

    def _keep_verified(self, head: store.Head) -> None:
        """Remember ``head`` as verified, and forget the appends before it."""
        if self._verified is not None and head.seq < self._verified.seq:
            return
        self._verified = head
        with self._state_lock:
            for key in [k for k in self._appended if k[0] < head.seq]:
                del self._appended[key]

    def _broken(
        self, seq: int, problem: str, detail: str, *, checkpoint_seq: int | None = None
    ) -> WalkResult:
        return WalkResult(
            VerifyReport(
                ok=False,
                chain=self.chain,
                checked=0,
                last_seq=0,
                first_bad_seq=seq,
                problem=problem,
                detail=detail,
                checkpoint_seq=checkpoint_seq,
                checkpoints=0 if checkpoint_seq is None else 1,
            ),
            b"",
        )

    def _checkpoint_job(self, seconds: float = 60.0) -> None:
        try:
            report = self.checkpoint_now(deadline=Deadline.after(seconds))
            if not report.ok:
                with self._state_lock:
                    # A broken chain stays broken: do not re-walk it on every commit.
                    self._retry_after = time.monotonic() + 300.0
        except Exception as exc:
            log.warning(
                "audit checkpoint of chain %s failed (%s); will retry",
                self.chain,
                getattr(exc, "reason", type(exc).__name__),
            )
            with self._state_lock:
                self._pending = max(self._pending, self._every)
                self._retry_after = time.monotonic() + 10.0
        finally:
            with self._state_lock:
                self._running = False
