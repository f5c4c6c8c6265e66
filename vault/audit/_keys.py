"""The audit key: found, created or unwrapped (under the transit key ``<prefix>-audit``), and
derived into the MAC, pseudonym and row keys; older versions looked up by id for verification.
"""

from __future__ import annotations

import hmac
import logging
import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from vault.audit import _store as store
from vault.audit._errors import AuditUnavailable
from vault.audit._mac import AuditKeys, derive
from vault.crypto import lp
from vault.deadline import Deadline
from vault.errors import DecryptionFailed, KeyServerRefused, KeyServerUnavailable
from vault.keys import KeyManager, WrappedRef
from vault.storage import Database

log = logging.getLogger("vault.audit")

#: the key class of the audit key: transit key ``<prefix>-audit``
AUDIT_KEY_CLASS = "audit"
# Connectivity failures are left to Database.begin, which maps them to DatabaseUnavailable.
_CONNECTIVITY = (OperationalError, InterfaceError)
_KEY_ERRORS = (KeyServerUnavailable, KeyServerRefused, DecryptionFailed)
_CREATED_KEY = "cvault.audit.created_key"


def key_aad(key_id: str, version: int) -> bytes:
    """AAD of a wrapped audit key: a blob moved to another row or version does not unwrap."""
    return b"cvault/audit-key/v1" + lp(key_id) + lp(str(version))


def cache_id(key_id: str) -> str:
    return f"audit-key:{key_id}"


class AuditKeyring:
    """The current audit key of a process (the newest row, remembered once committed) and
    lookups of older versions. Thread-safe."""

    def __init__(self, db: Database, keys: KeyManager) -> None:
        self._db = db
        self._keys = keys
        # the newest audit key row, once known to be committed (wrapped only: not secret)
        self._key_row: store.KeyRow | None = None
        self._key_lock = threading.Lock()
        self._last_derived: tuple[str, bytes, AuditKeys] | None = None

    def lookup(self, deadline: Deadline) -> KeyLookup:
        """Audit keys by id, for one verification."""
        return KeyLookup(self._keys, deadline)

    def current(self, conn: Connection | None, deadline: Deadline) -> AuditKeys:
        """The current audit key's derived keys (creating the key on first use)."""
        row = self._key_row
        remembered = row is not None  # decided here: another thread may reset the attribute
        cacheable = True
        if row is None:
            row, cacheable = self._key_row_from_db(conn, deadline)
        try:
            plain = self._unwrap(row, deadline)
        except _KEY_ERRORS as exc:
            if not remembered:
                raise self._key_unavailable(exc) from None
            # The remembered wrapped form may be stale: `cvault keys rotate-field` rewraps the
            # row and `retire` then refuses the old field-key version. Read the row again, in
            # a transaction of its own (the caller's may predate the rewrap).
            self._key_row = None
            row, cacheable = self._key_row_from_db(None, deadline)
            try:
                plain = self._unwrap(row, deadline)
            except _KEY_ERRORS as exc2:
                raise self._key_unavailable(exc2) from None
        if cacheable:
            self._key_row = row
        # Deriving costs two HKDFs per call; reuse the last derivation while the key manager
        # still hands out the same key (its cache limits keep applying to the key itself).
        last = self._last_derived
        if last is not None and last[0] == row.id and hmac.compare_digest(last[1], plain):
            return last[2]
        keys = derive(row.id, plain)
        self._last_derived = (row.id, plain, keys)
        return keys

    def _key_row_from_db(
        self, conn: Connection | None, deadline: Deadline
    ) -> tuple[store.KeyRow, bool]:
        if conn is None:
            with self._key_lock:
                return self._key_row or self._load_or_create(deadline), True
        return self._load_or_create_in(conn, deadline)

    def _unwrap(self, row: store.KeyRow, deadline: Deadline) -> bytes:
        return self._keys.unwrap(
            AUDIT_KEY_CLASS,
            [WrappedRef(cache_id(row.id), row.wrapped, key_aad(row.id, row.version))],
            deadline=deadline,
        )[cache_id(row.id)]

    def _load_or_create(self, deadline: Deadline) -> store.KeyRow:
        with self._db.begin(write=False) as conn:
            row = store.latest_key(conn)
        if row is not None:
            return row
        new, plain = self._new_key(deadline)
        with self._db.begin(write=True) as conn:
            inserted = store.insert_key(conn, new, datetime.now(UTC))
        if inserted:
            self._keys.remember(cache_id(new.id), plain)
            log.info("created audit key version %d", new.version)
            return new
        with self._db.begin(write=False) as conn:
            row = store.latest_key(conn)
        if row is None:
            raise AuditUnavailable("audit key could not be created")
        return row

    def _load_or_create_in(self, conn: Connection, deadline: Deadline) -> tuple[store.KeyRow, bool]:
        """Like :meth:`_load_or_create` inside the caller's transaction (when
        :meth:`prepare` was not called). A key created here is not remembered until a later
        call finds it committed."""
        try:
            # conn.info outlives the transaction (it belongs to the pooled DBAPI connection):
            # the marker names the transaction that made the key.
            this_txn = id(conn.get_transaction())
            row = store.latest_key(conn)
            if row is not None:
                return row, conn.info.get(_CREATED_KEY) != (this_txn, row.id)
            new, plain = self._new_key(deadline)
            if store.insert_key(conn, new, datetime.now(UTC)):
                self._keys.remember(cache_id(new.id), plain)
                conn.info[_CREATED_KEY] = (this_txn, new.id)
                return new, False
            row = store.latest_key(conn)
        except _CONNECTIVITY:
            raise
        except DBAPIError as exc:
            log.error("audit key table refused (%s)", type(exc.orig).__name__)
            raise AuditUnavailable("audit log could not be written") from None
        if row is None:
            raise AuditUnavailable("audit key could not be created")
        return row, True

    def _new_key(self, deadline: Deadline) -> tuple[store.KeyRow, bytes]:
        key_id = str(uuid.uuid4())
        try:
            (made,) = self._keys.new_keys(AUDIT_KEY_CLASS, [key_aad(key_id, 1)], deadline=deadline)
        except _KEY_ERRORS as exc:
            raise self._key_unavailable(exc) from None
        return store.KeyRow(key_id, 1, made.wrapped), made.key

    @staticmethod
    def _key_unavailable(exc: Exception) -> AuditUnavailable:
        reason = getattr(exc, "reason", type(exc).__name__)
        log.warning("audit key unavailable (%s); failing closed", reason)
        return AuditUnavailable(f"audit key unavailable ({reason})")


class KeyLookup:
    """Audit keys by row id for one verification: unwrapped once each, failures remembered."""

    def __init__(self, keys: KeyManager, deadline: Deadline) -> None:
        self._keys = keys
        self._deadline = deadline
        self._rows: dict[str, store.KeyRow] | None = None
        self._derived: dict[str, AuditKeys | None] = {}

    def __call__(self, conn: Connection, key_id: str) -> AuditKeys | None:
        if key_id in self._derived:
            return self._derived[key_id]
        if self._rows is None or key_id not in self._rows:
            self._rows = store.all_keys(conn)
        row = self._rows.get(key_id)
        derived: AuditKeys | None = None
        if row is not None:
            try:
                plain = self._keys.unwrap(
                    AUDIT_KEY_CLASS,
                    [WrappedRef(cache_id(row.id), row.wrapped, key_aad(row.id, row.version))],
                    deadline=self._deadline,
                )[cache_id(row.id)]
                derived = derive(row.id, plain)
            except DecryptionFailed:
                log.error("audit key %s does not unwrap: it was tampered with", key_id)
        self._derived[key_id] = derived
        return derived
