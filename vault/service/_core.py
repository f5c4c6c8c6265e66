"""What every service of the layer shares: storage, keys, schema, access, and the write path.

One :class:`Core` is built per process (by ``Services.build``) and handed to each service, so
there is one keyring, one data-key path (:class:`~vault.service._datakeys.DataKeys`) and one
audit log, whatever serves the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.engine import Connection

from vault.audit import AuditEntry, AuditEvent
from vault.deadline import Deadline
from vault.errors import Erased, NotFound
from vault.keys import KeyManager
from vault.schema import RecordSchema
from vault.service._datakeys import DataKeys
from vault.service._keyring import Keyring
from vault.service._tenants import Tenants
from vault.service.access import Access
from vault.storage import Database, RecordRow, database_problem, repo

#: the readiness entry that names what is degraded: logged and counted, but not a problem
#: (health stays SERVING; see Core.readiness)
DEGRADED = "degraded"


class Core:
    """The shared parts of the service layer. Thread-safe."""

    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        schema: RecordSchema,
        access: Access,
        *,
        keyring: Keyring | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.schema = schema
        self.access = access
        self.audit = access.audit
        self.keyring = keyring or Keyring(db, keys)
        self.data_keys = DataKeys(self.keyring, keys)
        self.tenants = Tenants(db, access, self.audited_write)

    def class_of(self, name: str) -> str:
        """The field class of a schema field."""
        return self.schema.spec(name).field_class.value

    def classes_of(self, names: Sequence[str]) -> list[str]:
        """The sorted field classes of these schema fields."""
        return sorted({self.class_of(n) for n in names})

    @contextmanager
    def audited_write(
        self, events: list[AuditEvent], *, deadline: Deadline
    ) -> Iterator[Connection]:
        """One write transaction that commits with ``events`` (filled in by the block if it
        learns them late) as audit rows; fails closed: no audit row, no write."""
        self.audit.prepare(deadline=deadline)
        entries: list[AuditEntry] = []
        with self.db.begin() as conn:
            yield conn
            if events:
                entries = self.audit.append(conn, events, deadline=deadline)
        self.audit.after_commit(entries)

    def readiness(self, on_part: Callable[[str], None] = lambda part: None) -> dict[str, str]:
        """What keeps this process from serving, by part ("" when nothing): the database
        (reachable), its schema (one this server runs on), the key server (reachable, unsealed,
        accepting the credential) and the policy file (the one in force). ``on_part`` hears
        each part before it is asked (a probe stuck on a silent dependency names it).

        The entry :data:`DEGRADED` names what works only in part without being a reason to
        stop serving: a key server that does not answer while cached keys still serve
        (:meth:`~vault.keys.KeyManager.key_server_state`)."""
        on_part("database")
        database, schema = database_problem(self.db)
        on_part("key_server")
        key_server, degraded = self.keys.key_server_state()
        return {
            "database": database,
            "schema": schema,
            "key_server": key_server,
            "policy": self.access.policy.problem,
            DEGRADED: f"key_server: {degraded}" if degraded else "",
        }


def live_record(conn: Connection, tenant: str, record_id: str) -> RecordRow:
    """The record's row; Erased or NotFound when there is no live record."""
    row = repo.get_record(conn, tenant, record_id)
    if row is None:
        if repo.is_erased(conn, tenant, record_id):
            raise Erased("record erased")
        raise NotFound("record not found")
    return row
