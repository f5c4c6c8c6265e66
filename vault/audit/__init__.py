"""The tamper-evident audit log: append (fail closed), verify, checkpoint, query.

**What a row holds.** One row per plaintext or masked read, reveal, write, erasure, consent
change, admin action and denial: time, principal, role, action, purpose, tenant, the record's
pseudonym (``record_ref``, a keyed hash of tenant and record id: never the id), field classes,
outcome, reason code, request id, the audit key id and a MAC. No customer value, ever.

**The chain.** Rows of a chain are numbered 1, 2, 3, ... without gaps (``seq``). Each row's
MAC covers every other column of the row, its chain and seq, and the MAC of the row before it
(32 zero bytes for seq 1); the exact layout is in ``vault/audit/_mac.py``. The MAC key is
derived from the **audit key**: 32 random bytes made locally, stored in ``audit_keys`` only
wrapped by the transit key ``<prefix>-audit`` (with its row id and version as associated
data), unwrapped once per process and cached by :class:`~vault.keys.KeyManager`. So
whoever can write the database but cannot use that transit key cannot forge, edit, reorder or
insert a row without :meth:`AuditLog.verify` naming the first one that is wrong; deleting a row
leaves a gap in ``seq`` or breaks the next row's MAC.

**Appending.** :meth:`AuditLog.append` runs inside the caller's write transaction. It locks the
chain's row in ``audit_chain_heads`` (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write
transaction is already exclusive), computes the MACs from the head, inserts the rows and moves
the head. Concurrent appenders in any number of threads and processes therefore build one valid
chain, and each waits for the previous one's commit: append last, right before the commit.
On PostgreSQL the process first tries the head it last wrote: one statement moves the head only
if it is still that one (``UPDATE ... WHERE seq = :old AND mac = :old``, which takes the same
row lock) and inserts the row in the same round trip; if another appender came first, nothing
is written, the head that appender left is tried next (twice more at most), and then the
locking path runs (lock, then rows and head in one more statement). Only the MACs are computed
while the lock is held.

**One chain per process.** Appenders of one chain wait for each other's commit, so each server
process appends to a chain of its own by default (``[audit] chain``, else named from the host;
``-w<i>`` per worker of ``cvault serve --workers``), and operator commands to ``ops_<host>``:
see ``vault/audit/_chains.py``. Each chain is ordered by its seq; there is no order across
chains but their rows' times.
If the key cannot be had or the insert is refused, :class:`AuditUnavailable` (an
``Unavailable``: gRPC UNAVAILABLE) is raised and the caller's transaction rolls back, so the
call fails and nothing is revealed. The service does::

    log.prepare(deadline=d)              # before its transaction; no I/O in steady state
    with db.begin(write=True) as conn:
        ...                              # its own reads and writes
        entries = log.append(conn, events, deadline=d)
    log.after_commit(entries)            # sinks, checkpoint when due; never raises
    return result                        # plaintext leaves only now

Denials, which have no transaction of their own, use :meth:`AuditLog.record`, which calls
:meth:`AuditLog.after_commit` itself: each entry reaches the sinks (and the checkpoint count)
exactly once, so its result is never passed to ``after_commit`` again.

**The tail, and the checkpoints.** Deleting the newest rows leaves no gap. The head table
catches that unless it is rewritten too, so the chain is also **checkpointed outside the
database**: every ``checkpoint_every`` rows (or ``checkpoint_max_age`` seconds) a background
thread verifies the rows since the newest one it verified (incrementally: rows this process
appended itself from there, up to the head the database has, are not read back; see
:meth:`AuditLog.checkpoint_now`) and, only if they are intact, writes
``{chain, seq, mac, prev}`` as a **new, write-once** document of a :class:`CheckpointStore`
(OpenBao KV v2, :class:`vault.keys.KvCheckpointStore`: ``<kv_path>/<chain>/<seq>``, created
with check-and-set 0). The service's key-server policy may create a checkpoint but never update
or delete one, so even a holder of the service's own credential (who can unwrap the audit key
and re-MAC the whole chain) cannot make an old checkpoint agree with rewritten rows. One store
write per checkpoint; the store is read only once per process, to find the newest checkpoint.

``verify`` compares the chain with **every** checkpoint of it: a row that differs from a
checkpoint at its seq is a ``checkpoint mismatch``, rows at or before a checkpoint that are gone
a ``truncated tail``, a checkpoint that was deleted (or that a later one names as its ``prev``
and is gone) a ``missing checkpoint``, one that is malformed a ``bad checkpoint``. The single
document that earlier versions overwrote at ``<kv_path>`` itself is read as one more
checkpoint of the chain it names, so logs checkpointed before the upgrade keep verifying.
**The window:** rows appended after the last checkpoint, then deleted together with a matching
rewrite of the head row (or, by a holder of the service's credential, rewritten and re-MAC'd),
are not detected; lower ``checkpoint_every`` (or call :meth:`AuditLog.checkpoint_now`) to
narrow it. A checkpoint never certifies a broken chain, so
an attacker cannot launder a truncation by waiting for the next checkpoint.

**After a database restore** the restored chain ends before the newest checkpoints, which
verifies as a ``truncated tail``. :meth:`AuditLog.reanchor` (``cvault audit re-anchor``)
records the restore as an audited row (action ``audit.reanchor``: the last checkpoint still
matched, the restored end, the highest checkpointed seq) and starts a new checkpoint **epoch**
(documents ``e<epoch>-<seq>``, so new seqs never collide with the write-once documents of lost
ones). ``verify`` then leaves out only the checkpoints such a row, verified in the chain,
accounts for, and reports each re-anchor; a truncation without one still fails. The rules are
in ``vault/audit/_restore.py`` and ``vault/audit/_epochs.py``.

**Sinks.** After the commit, the same entries go to each :class:`AuditSink` (e.g.
:class:`JsonLinesSink`, :class:`StdoutSink`, :class:`SyslogSink`; :func:`make_sinks` builds the
configured ones) as JSON lines. A file sink creates its file 0600 and reopens it after a
rotation. A sink failure is logged, never raised: the database row is the record of truth.

**Query.** :meth:`AuditLog.query` answers "who saw this customer's data, when and why" through
the pseudonym (under every audit key version), newest first.
"""

from vault.audit._chains import operator_chain, server_chain, valid_chain
from vault.audit._checkpoint import (
    CHECKPOINT_FORMAT,
    LEGACY_FORMAT,
    Checkpoint,
    CheckpointStore,
    MemoryCheckpointStore,
    checkpoint_document,
    checkpoint_name,
    parse_checkpoint,
)
from vault.audit._epochs import REANCHOR_ACTION, Reanchor
from vault.audit._errors import AuditUnavailable, ReanchorRefused
from vault.audit._event import ALLOWED, DENIED, ERROR, OUTCOMES, AuditEntry, AuditEvent
from vault.audit._keys import AUDIT_KEY_CLASS
from vault.audit._keys import key_aad as audit_key_aad
from vault.audit._log import AuditLog
from vault.audit._sinks import AuditSink, JsonLinesSink, StdoutSink
from vault.audit._syslog import SyslogSink, make_sinks
from vault.audit._verify import (
    BAD_CHECKPOINT,
    BAD_KEY,
    CHECKPOINT_MISMATCH,
    DELETED,
    EDITED,
    HEAD_MISMATCH,
    INSERTED,
    MISSING_CHECKPOINT,
    REORDERED,
    TRUNCATED,
    VerifyReport,
)

__all__ = [
    "ALLOWED",
    "AUDIT_KEY_CLASS",
    "BAD_CHECKPOINT",
    "BAD_KEY",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_MISMATCH",
    "DELETED",
    "DENIED",
    "EDITED",
    "ERROR",
    "HEAD_MISMATCH",
    "INSERTED",
    "LEGACY_FORMAT",
    "MISSING_CHECKPOINT",
    "OUTCOMES",
    "REANCHOR_ACTION",
    "REORDERED",
    "TRUNCATED",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "AuditSink",
    "AuditUnavailable",
    "Checkpoint",
    "CheckpointStore",
    "JsonLinesSink",
    "MemoryCheckpointStore",
    "Reanchor",
    "ReanchorRefused",
    "StdoutSink",
    "SyslogSink",
    "VerifyReport",
    "audit_key_aad",
    "checkpoint_document",
    "checkpoint_name",
    "make_sinks",
    "operator_chain",
    "parse_checkpoint",
    "server_chain",
    "valid_chain",
]
