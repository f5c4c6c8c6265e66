"""The operator commands' session with the layers below: their audit log (whose database and key
manager serve the command too), the service layer built over it by the one composition root
(:func:`vault.app.build_services`), and the one place that makes and appends the audit events
of what an operator does.

Imports the server stack: command modules reach it through :mod:`vault.cli._server` (see the
package docstring).
"""

from __future__ import annotations

import getpass
import sys
from types import TracebackType

from vault.app import build_operator_audit_log, build_services
from vault.audit import ALLOWED, AuditEvent
from vault.config import Settings
from vault.deadline import Deadline
from vault.errors import VaultServiceError
from vault.keys import KeyManager
from vault.service import Services
from vault.service.operations import runs
from vault.storage import Database

__all__ = ["Operator"]


class Operator:
    """An operator command's session; close it (or use it as a context manager) when done.

    Operator commands are audited as the OS user who ran them (``operator:<user>``, role
    ``operator``): :meth:`event` makes those events, :meth:`audit` appends one at once.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = build_operator_audit_log(settings)
        self._services: Services | None = None

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
            self.log.record([event], deadline=Deadline.after(30))
        except VaultServiceError as exc:
            print(f"cvault: this command could not be audited: {exc.reason}", file=sys.stderr)

    def services(self) -> Services:
        """The service layer over the session's audit log, under the settings' policy and
        schema (built on first use, then the same)."""
        if self._services is None:
            self._services = build_services(self.settings, self.log)
        return self._services

    # --- the bookkeeping of runs (vault.service.operations.runs) ------------------------------

    def campaign(self, scope_prefix: str) -> str:
        """The id of this command's run over its units: a run that was stopped is carried on
        (its finished units are skipped), else a new one."""
        return runs.campaign(self.db, scope_prefix)

    def finished_in_campaign(self, scope: str, campaign: str) -> int | None:
        """The version the run ``campaign`` already rotated ``scope`` to, if it did."""
        return runs.finished_in_campaign(self.db, scope, campaign)

    def tenant_classes(self) -> list[tuple[str, str]]:
        """Every (tenant, field class) with tenant keys."""
        return runs.tenant_classes(self.db)

    def count_data_keys(self, tenant: str, field_class: str) -> int:
        return runs.count_data_keys(self.db, tenant, field_class)

    def record_ids(self, tenant: str) -> list[str]:
        """Every record id of ``tenant``."""
        return runs.record_ids(self.db, tenant)
