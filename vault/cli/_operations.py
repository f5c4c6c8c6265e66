"""The operator commands' session with the layers below: their audit log (whose database and key
manager serve the command too), the one place that makes and appends the audit events of what an
operator does, and what the commands still read below the service layer.

Moves to the service layer's operations package: every use the CLI makes of another package's
private module (``vault.storage._keys_repo``: the bookkeeping of rotation runs;
``vault.api._authn``: the dev server's API keys and mTLS credentials) and of storage
repositories (``vault.storage.repo``) is in this module and nowhere else in ``vault/cli/``, so it
can be swapped for service-layer calls in one place.

Imports the server stack: command modules import this module inside the commands that use it
(see the package docstring).
"""

from __future__ import annotations

import getpass
import sys
import uuid
from types import TracebackType

from vault.api._authn import new_api_key, server_credentials
from vault.app import make_auth
from vault.audit import ALLOWED, AuditEvent, AuditLog
from vault.config import Settings, deploy_file
from vault.deadline import Deadline
from vault.errors import VaultServiceError
from vault.keys import KeyManager, KvCheckpointStore, TransitKeyWrapper
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Keyring, RecordsService
from vault.storage import Database, repo
from vault.storage import _keys_repo as keys_repo

# the dev server's credentials (``cvault dev``): from vault.api's private authn module
__all__ = ["Operator", "new_api_key", "server_credentials"]


def _audit_log(settings: Settings) -> AuditLog:
    """The audit log of the operator settings' chain, with the operator's key-server access."""
    bao = settings.openbao
    auth = make_auth(settings)
    wrapper = TransitKeyWrapper(bao.url, auth, key_prefix=bao.key_prefix, mount=bao.mount)
    checkpoint = KvCheckpointStore(
        bao.url, auth, mount=settings.audit.kv_mount, path=settings.audit.kv_path
    )
    return AuditLog(
        Database(settings.database_url),
        KeyManager(wrapper),
        chain=settings.audit.chain,
        checkpoint=checkpoint,
    )


class Operator:
    """An operator command's session; close it (or use it as a context manager) when done.

    Operator commands are audited as the OS user who ran them (``operator:<user>``, role
    ``operator``): :meth:`event` makes those events, :meth:`audit` appends one at once.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = _audit_log(settings)

    @property
    def db(self) -> Database:
        return self.log.db

    @property
    def keys(self) -> KeyManager:
        return self.log.keys

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> Operator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def event(
        self, action: str, tenant: str = "", record_id: str | None = None, *, reason: str = ""
    ) -> AuditEvent:
        """An event of the operator's, for a service call that appends it in its transaction
        (``event(action, tenant, record_id)`` is what ``purge_expired`` asks for)."""
        return AuditEvent(
            action=action,
            outcome=ALLOWED,
            principal=f"operator:{getpass.getuser()}"[:256],
            role="operator",
            purpose="",
            tenant=tenant,
            record_id=record_id,
            reason=reason[:64],
        )

    def audit(
        self, action: str, reason: str, *, tenant: str = "", record_id: str | None = None
    ) -> None:
        """Append an event of the operator's now. Best effort: a broken chain must still be
        reportable, so a failure here is printed, not raised."""
        event = self.event(action, tenant, record_id, reason=reason)
        try:
            self.log.after_commit(self.log.record([event], deadline=Deadline.after(30)))
        except VaultServiceError as exc:
            print(f"cvault: this command could not be audited: {exc.reason}", file=sys.stderr)

    def records(self) -> RecordsService:
        """The records service over the session's log, under the settings' policy and schema."""
        policy = PolicyHolder(self.settings.policy or deploy_file("policy", "sample-policy.yaml"))
        schema = load_schema(self.settings.schema or None)
        return RecordsService(self.db, self.keys, schema, Access(policy, self.log))

    def keyring(self) -> Keyring:
        return Keyring(self.db, self.keys)

    # --- read below the service layer (moves to the service layer's operations package) -------

    def campaign(self, scope_prefix: str) -> str:
        """The id of this command's run over its units: a run that was stopped is carried on
        (its finished units are skipped), else a new one."""
        with self.db.begin(write=False) as conn:
            return keys_repo.unfinished_campaign(conn, scope_prefix) or str(uuid.uuid4())

    def finished_in_campaign(self, scope: str, campaign: str) -> int | None:
        """The version the run ``campaign`` already rotated ``scope`` to, if it did."""
        with self.db.begin(write=False) as conn:
            return keys_repo.finished_in_campaign(conn, scope, campaign)

    def tenant_classes(self) -> list[tuple[str, str]]:
        """Every (tenant, field class) with tenant keys."""
        with self.db.begin(write=False) as conn:
            return keys_repo.tenant_classes(conn)

    def count_data_keys(self, tenant: str, field_class: str) -> int:
        with self.db.begin(write=False) as conn:
            return keys_repo.count_data_keys(conn, tenant, field_class)

    def record_ids(self, tenant: str) -> list[str]:
        """Every record id of ``tenant``."""
        with self.db.begin(write=False) as conn:
            return repo.record_ids_of_tenant(conn, tenant)
