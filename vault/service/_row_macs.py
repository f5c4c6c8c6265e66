"""MACs on the rows the service decides by but an insider can write: reveal grants and consents.

A grant or consent row counts only if its MAC (formats in ``vault/crypto/_row_mac.py``) verifies
under the **row key**. The row key is derived from the audit key (:meth:`AuditLog.row_key`), not
a wrapped key of its own: the audit key is already wrapped by the ``<prefix>-audit`` transit key
that only the service may use, unwrapped once per process and cached, rewrapped by
``cvault keys rotate-field audit``, and failing closed when the key server cannot be reached. A
key of its own would need a table, a place in field-key rotation and rewrap, and provisioning,
for the same trust boundary. So whoever can write the database but cannot use that transit key
cannot make a grant or a consent the service honours.

**Not covered, on purpose:** a grant's ``uses``, ``values_used`` and ``revoked_at``. They change
with every use, and a MAC could not keep them from being rolled back: an insider who can write
the row can also put back an earlier copy of it, MAC and all (unused, not revoked). Covering
them would cost a MAC and a compare-and-set per use and stop nothing. What bounds a rolled-back
grant is what the MAC does cover: its grantee, records or scope, classes, purpose, ``max_uses``
and ``max_values`` per copy, and its expiry (at most a day after it was issued); each use is
audited and charged to the grantor as well. Likewise an earlier genuine consent row of the same
record (one the customer gave, then withdrew) verifies if put back: the MAC proves the service
wrote the row, not that it is the newest. Detecting that needs a monotonic anchor outside the
database (the audit log's checkpoints), which these rows do not have yet.

**Rows without a MAC** (written before migration 0011) count as forged: a grant is refused
(grants live at most a day; issue it again), a consent counts as none until UpdateConsent
replaces it. A blanket backfill would bless whatever the table held at that moment, forgeries
included, so there is none.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from vault.audit import AuditLog
from vault.crypto import consent_mac, grant_mac, row_mac_matches
from vault.deadline import Deadline
from vault.storage import access_repo, tokens_repo

log = logging.getLogger("vault.service.row_macs")

Grant = tokens_repo.GrantRow
Consent = access_repo.ConsentState


class RowMacs:
    """Seal grant and consent rows before they are stored; check them before they count.
    Thread-safe. Log lines name the tenant and a grant id or the record's audit pseudonym,
    never a record id or a customer value."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._told_unsealed = False

    def seal_grant(self, grant: Grant, *, deadline: Deadline) -> Grant:
        """``grant`` with its MAC, under the current row key.

        Raises: AuditUnavailable: the audit key could not be obtained.
        """
        key_id, key = self._current(deadline)
        return replace(grant, mac=_grant_mac(key, grant), mac_key_id=key_id)

    def grant_ok(self, grant: Grant, *, deadline: Deadline) -> bool:
        """Whether the service wrote this grant row as it is now (logged when not).

        Raises: AuditUnavailable, KeyServerUnavailable, KeyServerRefused: no key to check with.
        """
        if grant.mac is None:
            log.warning(
                "reveal grant %s of tenant %s has no MAC (issued before migration 0011): refused",
                grant.id,
                grant.tenant,
            )
            return False
        key = self._key(grant.mac_key_id, deadline)
        if key is not None and row_mac_matches(_grant_mac(key, grant), grant.mac):
            return True
        log.warning(
            "reveal grant %s of tenant %s fails its MAC (written or edited outside the service):"
            " refused",
            grant.id,
            grant.tenant,
        )
        return False

    def seal_consent(
        self, state: Consent, *, tenant: str, record_id: str, deadline: Deadline
    ) -> Consent:
        """``state`` with its MAC, under the current row key.

        Raises: AuditUnavailable: the audit key could not be obtained.
        """
        key_id, key = self._current(deadline)
        return replace(state, mac=_consent_mac(key, tenant, record_id, state), mac_key_id=key_id)

    def consent_ok(
        self, state: Consent, *, tenant: str, record_id: str, deadline: Deadline
    ) -> bool:
        """Whether the service wrote this consent row as it is now (logged when not; a row
        without a MAC once per process). No row at all (version 0) is trivially fine.

        Raises: AuditUnavailable, KeyServerUnavailable, KeyServerRefused: no key to check with.
        """
        if state.version == 0 and not state.purposes:
            return True
        if state.mac is None:
            if not self._told_unsealed:
                self._told_unsealed = True
                log.warning(
                    "consent rows without a MAC (written before migration 0011) count as no"
                    " consent until UpdateConsent replaces them (first seen in tenant %s)",
                    tenant,
                )
            return False
        key = self._key(state.mac_key_id, deadline)
        if key is not None and row_mac_matches(
            _consent_mac(key, tenant, record_id, state), state.mac
        ):
            return True
        log.warning(
            "consent row of tenant %s, record_ref %s, fails its MAC (written or edited outside"
            " the service): counted as no consent",
            tenant,
            self._audit.pseudonym(tenant, record_id, deadline=deadline),
        )
        return False

    def _current(self, deadline: Deadline) -> tuple[str, bytes]:
        found = self._audit.row_key(deadline=deadline)
        assert found is not None  # the current key is there, or row_key raised
        return found

    def _key(self, key_id: str | None, deadline: Deadline) -> bytes | None:
        if not key_id:
            return None
        found = self._audit.row_key(key_id, deadline=deadline)
        return None if found is None else found[1]


def _grant_mac(key: bytes, grant: Grant) -> bytes:
    return grant_mac(
        key,
        grant_id=grant.id,
        tenant=grant.tenant,
        grantor=grant.grantor,
        grantor_role=grant.grantor_role,
        grantee=grant.grantee,
        record_ids=grant.record_ids,
        scope=grant.scope,
        field_classes=grant.field_classes,
        purpose=grant.purpose,
        expires_at=grant.expires_at,
        max_uses=grant.max_uses,
        max_values=grant.max_values,
    )


def _consent_mac(key: bytes, tenant: str, record_id: str, state: Consent) -> bytes:
    assert state.updated_at is not None  # a stored row always has its time
    return consent_mac(
        key,
        tenant=tenant,
        record_id=record_id,
        version=state.version,
        purposes=state.purposes,
        source=state.source,
        updated_at=state.updated_at,
    )
