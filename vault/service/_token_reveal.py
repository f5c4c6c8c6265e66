"""Revealing tokens: who may (a role, or a grant), what each token gives, and the one reveal
commit before any value leaves.

A reveal is looked up only in the tenant the call names, checked against the role's output for
the token's class and the stated purpose (and the record's consent for a consent-bound
purpose), counted against the role's limits and audited in one transaction
(:func:`~vault.service._reveal.reveal_tx`) before any value leaves. Problems with single tokens
(unknown, expired, erased, denied, and a stored value or data key that does not authenticate)
are reported per token.

A token whose value or data key does not authenticate (damaged or tampered at rest) is answered
``decryption_failed`` and audited in the same reveal transaction as an integrity event (outcome
``error``, reason ``decryption_failed``); it is not counted as revealed, and the other tokens are
answered. What a whole call still fails for: a tenant key that does not authenticate (every data
key under it would fail: the key hierarchy is damaged, not one value), the key server, the
database or the audit log (nothing may leave unrecorded).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from vault import crypto
from vault.audit import ALLOWED, DENIED, ERROR, AuditEvent
from vault.deadline import Deadline
from vault.errors import ConsentRequired, DecryptionFailed, InvalidInput
from vault.policy import Action, FieldDecision, Output, Policy, Purpose, Role, mask
from vault.schema import FieldClass
from vault.service._core import Core
from vault.service._datakeys import DataKeyRef
from vault.service._normal import canonical_or_none
from vault.service._reveal import RevealTx, reveal_tx
from vault.service._token_types import (
    MAX_ITEMS,
    REVEALING,
    RevealedToken,
    TokenError,
    expired,
    token_field,
)
from vault.service.access import Caller
from vault.service.grants import OUTSIDE_GRANT, GrantsService, within
from vault.service.validators import check_tenant
from vault.storage import tokens_repo
from vault.storage.models_tokens import TOKEN_MAX

log = logging.getLogger("vault.service.tokens")

Row = tokens_repo.StoredToken
Grant = tokens_repo.GrantRow


@dataclass(frozen=True, slots=True)
class _Call:
    """One reveal call, authorized: who, under which role, purpose and grant, and what the
    policy decided for each token it may decide on."""

    caller: Caller
    role: Role
    purpose: Purpose | None
    tenant: str
    action: Action
    grant: Grant | None
    deadline: Deadline
    #: the tokens decided on, and the policy's decision for each
    rows: Mapping[str, Row]
    decisions: Mapping[str, FieldDecision]
    #: the tokens refused as outside the grant
    outside: Mapping[str, Row]
    #: the tokens whose value or data key did not authenticate (audited as integrity events)
    damaged: Mapping[str, Row]


class TokenRevealer:
    """Reveal tokens (by role, or under a grant). Thread-safe."""

    def __init__(self, core: Core, grants: GrantsService) -> None:
        self._core = core
        self._grants = grants

    def reveal(
        self,
        caller: Caller,
        tenant: str,
        tokens: Sequence[str],
        *,
        grant_id: str = "",
        action: Action = Action.TOKEN_REVEAL,
        deadline: Deadline,
    ) -> list[RevealedToken]:
        """Each token as the policy gives this role for the stated purpose, in order (see
        :meth:`vault.service.tokens.TokensService.reveal`)."""
        check_tenant(tenant)
        policy, role, purpose, grant = self._authority(
            caller, tenant, grant_id, action, deadline=deadline
        )
        if not tokens:
            raise InvalidInput("tokens", "at least one token is required")
        if len(tokens) > MAX_ITEMS:
            raise InvalidInput("tokens", f"at most {MAX_ITEMS} tokens per call")
        results: dict[str, RevealedToken] = {}
        decide = self._live_rows(tenant, tokens, results)
        outside = _outside(grant, decide, results) if grant is not None else {}
        decisions = policy.outputs(
            role,
            purpose.name if purpose else None,
            {t: FieldClass(r.field_class) for t, r in decide.items()},
        )
        revealing = {t: r for t, r in decide.items() if decisions[t].output in REVEALING}
        plain, failed = self.open(tenant, revealing, deadline=deadline)
        damaged = {t: decide.pop(t) for t in sorted(failed)}
        for t, r in damaged.items():
            results[t] = RevealedToken(
                t, TokenError.DECRYPTION_FAILED, field_class=r.field_class, reason=_DAMAGED
            )
        for t, r in decide.items():
            results[t] = _result(t, r, decisions[t], plain)
        if damaged:
            # logged before the commit, which may still refuse the call (a limit, a grant):
            # counts only, never a value nor a token (the audit rows name their records)
            log.warning(
                "reveal in tenant %s: %d of %d tokens did not decrypt (a stored value or data"
                " key is damaged or was tampered with): answered decryption_failed",
                tenant,
                len(damaged),
                len(tokens),
            )
        call = _Call(
            caller,
            role,
            purpose,
            tenant,
            action,
            grant,
            deadline,
            decide,
            decisions,
            outside,
            damaged,
        )
        for t in self._commit(call):
            results[t] = RevealedToken(
                t, TokenError.DENIED, field_class=decide[t].field_class, reason=_NO_CONSENT
            )
        return [results[t] for t in tokens]

    def check(
        self, caller: Caller, tenant: str, grant_id: str, action: Action, *, deadline: Deadline
    ) -> None:
        """The checks a reveal makes before looking at any token (action or grant, purpose)."""
        check_tenant(tenant)
        self._authority(caller, tenant, grant_id, action, deadline=deadline)

    def open(
        self, tenant: str, rows: Mapping[str, Row], *, deadline: Deadline
    ) -> tuple[dict[str, str], set[str]]:
        """The plain values of these token rows, their data keys through the one data-key
        path (re-reading the rows when a tenant-key rotation re-wrapped their keys meanwhile),
        and the tokens that did not open: the value or its data key does not authenticate, the
        key row is gone without a tombstone, or the key belongs to another owner. Those fail
        only themselves.

        Raises:
            DecryptionFailed: a tenant key does not authenticate or is another tenant's (the
                key hierarchy is damaged: every token under it would fail).
            Unavailable: key server or database.
        """
        failed = {t for t, r in rows.items() if r.wrapped_dek is None or _misowned(r)}
        current = {t: r for t, r in rows.items() if t not in failed}

        def reread(cold: Sequence[DataKeyRef]) -> list[DataKeyRef]:
            ids = {ref.id for ref in cold}
            affected = [t for t, r in current.items() if r.data_key_id in ids]
            with self._core.db.begin(write=False) as conn:
                current.update(tokens_repo.read_tokens(conn, tenant, affected))
            fresh = [current[t] for t in affected]
            return list({r.data_key_id: _key_ref(r) for r in fresh}.values())

        # a data key that does not open is absent from ``deks``: its tokens fail, not the call
        deks, _ = self._core.data_keys.open_each(
            tenant, [_key_ref(r) for r in current.values()], deadline=deadline, reread=reread
        )
        out: dict[str, str] = {}
        for t, r in current.items():
            dek = deks.get(r.data_key_id)
            owner = r.record_id or r.key_owner  # a row re-read after a rotation: checked again
            if dek is None or owner is None or _misowned(r):
                failed.add(t)
                continue
            try:
                out[t] = crypto.open_value(dek, tenant, owner, token_field(t), r.ciphertext)
            except DecryptionFailed:
                failed.add(t)
        return out, failed

    def _authority(
        self, caller: Caller, tenant: str, grant_id: str, action: Action, *, deadline: Deadline
    ) -> tuple[Policy, Role, Purpose | None, Grant | None]:
        if grant_id:
            return self._grants.authority(caller, tenant, grant_id, action, deadline=deadline)
        access = self._core.access
        policy, role = access.authorize(caller, action, tenant=tenant, deadline=deadline)
        purpose = access.check_purpose(
            policy,
            caller,
            role,
            action,
            required=True,
            tenant=tenant,
            record_id=None,
            deadline=deadline,
        )
        return policy, role, purpose, None

    def _live_rows(
        self, tenant: str, tokens: Sequence[str], results: dict[str, RevealedToken]
    ) -> dict[str, Row]:
        """The rows of the tokens that can be decided on; the others' results (unknown,
        expired, erased) put in ``results``. A row whose data key row is gone without a
        tombstone (tampering) is decided on: :meth:`open` fails that token alone."""
        lookup = [t for t in tokens if isinstance(t, str) and 0 < len(t) <= TOKEN_MAX]
        now = datetime.now(UTC)
        with self._core.db.begin(write=False) as conn:
            stored = tokens_repo.read_tokens(conn, tenant, lookup)
        decide: dict[str, Row] = {}
        for t in set(tokens):
            row = stored.get(t) if isinstance(t, str) else None
            if row is None:
                results[t] = RevealedToken(t, TokenError.UNKNOWN, reason="unknown_token")
            elif expired(row.expires_at, now):
                results[t] = RevealedToken(
                    t, TokenError.EXPIRED, field_class=row.field_class, reason="expired"
                )
            elif row.dek_erased or row.record_erased or row.value_erased:
                results[t] = RevealedToken(
                    t, TokenError.ERASED, field_class=row.field_class, reason="erased"
                )
            else:
                decide[t] = row
        return decide

    def _commit(self, call: _Call) -> list[str]:
        """Consent (for a consent-bound purpose), the grant's use, the plaintext count and the
        audit rows in one reveal transaction; returns the tokens refused for consent (audited
        as such), which the caller reports as DENIED."""
        rows, decisions = call.rows, call.decisions
        revealing = [t for t in rows if decisions[t].output in REVEALING]
        with reveal_tx(
            self._core,
            call.caller,
            call.role,
            call.action,
            tenant=call.tenant,
            deadline=call.deadline,
        ) as tx:
            refused = _without_consent(tx, call)
            allowed = [t for t in revealing if t not in refused]
            if call.grant is not None:
                self._grants.use(tx.conn, call.grant, len(allowed))
            tx.classes = sorted({rows[t].field_class for t in revealing})
            grantor = call.grant.grantor if call.grant is not None else ""
            outputs = [decisions[t].output for t in allowed]
            tx.charge(outputs.count(Output.PLAIN), outputs.count(Output.MASKED), also=grantor)
            tx.append(
                self._events(
                    call,
                    [
                        (allowed, ALLOWED, ""),
                        (refused, DENIED, _NO_CONSENT),
                        (sorted(call.outside), DENIED, OUTSIDE_GRANT),
                        (sorted(call.damaged), ERROR, _DAMAGED),
                    ],
                )
            )
        return refused

    def _events(
        self, call: _Call, groups: Sequence[tuple[Sequence[str], str, str]]
    ) -> list[AuditEvent]:
        """Per group of tokens (revealed: ``allowed``, reason ``""``; refused: ``denied`` and
        the reason; not decrypted: ``error``, ``decryption_failed``, an integrity event), one
        row per record and one for standalone tokens. Under a grant the row names the agent
        (principal and its own role) and, as ``on_behalf_of``, the granting principal."""
        access = self._core.access
        rows = {**call.rows, **call.outside, **call.damaged}
        grant = call.grant
        role_name = call.role.name if grant is None else access.role_name(call.caller)
        events: list[AuditEvent] = []
        for outcome_tokens, outcome, reason in groups:
            by_record: dict[str | None, set[str]] = {}
            for t in outcome_tokens:
                by_record.setdefault(rows[t].record_id, set()).add(rows[t].field_class)
            for rid, classes in sorted(by_record.items(), key=lambda kv: kv[0] or ""):
                events.append(
                    access.event(
                        call.caller,
                        role_name,
                        call.action,
                        tenant=call.tenant,
                        record_id=rid,
                        field_classes=sorted(classes),
                        on_behalf_of=grant.grantor if grant is not None else "",
                        purpose=grant.purpose if grant is not None else None,
                        outcome=outcome,
                        reason=reason,
                    )
                )
        return events


_NO_CONSENT = ConsentRequired.reason
_DAMAGED = DecryptionFailed.reason


def _without_consent(tx: RevealTx, call: _Call) -> list[str]:
    """The tokens (sorted) whose customer does not consent to a consent-bound purpose; every
    standalone token, which has no customer to consent."""
    purpose = call.purpose
    if purpose is None or not purpose.consent_required:
        return []
    refused = [
        t
        for t, r in call.rows.items()
        if r.record_id is None or not tx.consented(call.tenant, r.record_id, purpose)
    ]
    return sorted(refused)


def _outside(
    grant: Grant, decide: dict[str, Row], results: dict[str, RevealedToken]
) -> dict[str, Row]:
    """Take the tokens outside ``grant`` out of ``decide``: DENIED (``outside_grant``)."""
    outside = {t: r for t, r in decide.items() if not within(grant, r)}
    for t, r in outside.items():
        results[t] = RevealedToken(
            t, TokenError.DENIED, field_class=r.field_class, reason=OUTSIDE_GRANT
        )
        del decide[t]
    return outside


def _result(
    token: str, row: Row, decision: FieldDecision, plain: Mapping[str, str]
) -> RevealedToken:
    """A decided token's result: its value, its mask (of the canonical form, as GetRecord
    stores values), itself, or nothing."""
    if decision.output is Output.PLAIN:
        value = plain[token]
    elif decision.output is Output.MASKED:
        cls = FieldClass(row.field_class)
        value = mask(cls, canonical_or_none(cls, plain[token]) or plain[token])
    elif decision.output is Output.TOKEN:
        value = token
    else:
        value = ""
    return RevealedToken(token, None, decision.output, value, row.field_class, decision.reason)


def _misowned(row: Row) -> bool:
    """Whether a linked token's data key belongs to another owner than its record (moved)."""
    return row.record_id is not None and row.key_owner != row.record_id


def _key_ref(row: Row) -> DataKeyRef:
    """Where a token's data key is (its owner: the linked record, or the pool)."""
    return DataKeyRef(
        row.data_key_id, row.key_owner or "", row.field_class, row.tenant_key_id, row.wrapped_dek
    )
