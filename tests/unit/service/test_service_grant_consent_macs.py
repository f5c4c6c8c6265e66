"""Grant and consent rows count only with the MAC the service made when it wrote them (issue 11,
point 6): a row an insider inserted, copied or edited, or one from before migration 0011, is a
grant that does not exist (``grant_invalid``, audited) or no consent (fail closed, logged
without customer data). The MAC leaves a grant's use counters and revocation out: see
``vault/service/_row_macs.py`` for why."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import ADMIN, caller_of
from tests.unit.service.service_support import DL, Vault
from vault.errors import ConsentRequired, PermissionDenied
from vault.service import ConsentView, RecordInput
from vault.service.grants import GrantRequest
from vault.service.tokens import TokenizeItem, TokenKind

AGENT = caller_of("ai-pipeline")
TOKENS = "apikey:test-tokens"
MARKETING = caller_of("backend-service", "marketing")
TRAINING = caller_of("ai-pipeline", "model-training")
BACKEND = caller_of("backend-service", "account-management")
LOGGER = "vault.service.row_macs"


def _record(svc: Vault, tenant: str, email: str = "ada@example.com") -> str:
    [rec] = svc.records.create(
        ADMIN, tenant, [RecordInput({"email": email, "full_name": "Ada"})], deadline=DL
    )
    return rec.record_id


def _token(svc: Vault, tenant: str, value: str = "a@example.com", scope: str = "c1") -> str:
    [token] = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem(value, "email", TokenKind.DETERMINISTIC, scope=scope)],
        deadline=DL,
    )
    return token


def _grant(
    svc: Vault,
    tenant: str,
    *,
    grantee: str = AGENT.principal.name,
    ttl_seconds: int = 300,
    max_uses: int = 10,
) -> str:
    request = GrantRequest(grantee, ("email",), ttl_seconds, max_uses, scope="c1")
    return svc.grants.issue(ADMIN, tenant, request, deadline=DL).grant_id


def _reveal(svc: Vault, tenant: str, token: str, grant: str) -> str:
    [result] = svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant, deadline=DL)
    return result.value


def _refused(svc: Vault, tenant: str, token: str, grant: str) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as caught:
        svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant, deadline=DL)
    assert caught.value.reason == "grant_invalid"
    return caught.value


def _row(svc: Vault, table: str, key: str, value: str) -> dict[str, Any]:
    [row] = svc.sql(f"SELECT * FROM {table} WHERE {key} = :v", v=value)
    return dict(row._mapping)


def _insert(svc: Vault, table: str, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    svc.sql(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + c for c in row)})", **row)


def _set(svc: Vault, tenant: str, rid: str, purposes: list[str], version: int) -> ConsentView:
    return svc.consent.update(
        BACKEND, tenant, rid, purposes, expected_version=version, source="form", deadline=DL
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


# --- grants --------------------------------------------------------------------------------


def test_an_issued_grant_is_sealed_under_the_audit_key(svc: Vault, tenant: str) -> None:
    grant = _grant(svc, tenant)
    row = _row(svc, "reveal_grants", "id", grant)
    assert len(row["mac"]) == 32
    assert row["mac_key_id"] == svc.scalar("SELECT id FROM audit_keys")


def test_a_grant_sealed_by_one_process_is_honoured_by_another(svc: Vault, tenant: str) -> None:
    token = _token(svc, tenant)
    grant = _grant(svc, tenant)
    assert _reveal(svc.restart(), tenant, token, grant) == "a@example.com"


def test_a_grant_row_copied_to_another_grantee_is_refused_and_audited(
    svc: Vault, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = _token(svc, tenant)
    real = _grant(svc, tenant, grantee=TOKENS)
    forged = {**_row(svc, "reveal_grants", "id", real), "grantee": AGENT.principal.name}
    forged["id"] = "grt_" + "F" * 22
    _insert(svc, "reveal_grants", forged)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        refused = _refused(svc, tenant, token, forged["id"])
    # the same answer as for a grant that does not exist: no oracle on the MAC
    assert refused.message == "no such grant for this caller"
    assert _warnings(caplog) == [
        f"reveal grant {forged['id']} of tenant {tenant} fails its MAC (written or edited"
        " outside the service): refused"
    ]
    [denial] = svc.audit_rows(tenant, "token.reveal")
    assert (denial.outcome, denial.reason, denial.on_behalf_of) == ("denied", "grant_invalid", "")


#: every column the MAC covers, and an edit an insider could make to it
EDITS: dict[str, Any] = {
    "tenant": "elsewhere",
    "grantor": "apikey:dev-support-agent",
    "grantor_role": "support-agent",
    "grantee": TOKENS,
    "record_ids": "00000000-0000-7000-8000-000000000000",
    "scope": "c2",
    "field_classes": "email,phone",
    "purpose": "dsar",
    "max_uses": 10_000,
    "max_values": 5,
}


@pytest.mark.parametrize("column", [*sorted(EDITS), "expires_at", "id"])
def test_a_grant_row_edited_in_any_covered_column_is_refused(
    svc: Vault, tenant: str, column: str
) -> None:
    token = _token(svc, tenant)
    grant = _grant(svc, tenant, ttl_seconds=60)
    if column == "expires_at":  # a later expiry, within the day a grant may live
        later = datetime.now(UTC) + timedelta(hours=12)
        svc.set_time("reveal_grants", "expires_at", later, id=grant)
        used = grant
    elif column == "id":  # the same row under another id (the MAC binds it)
        used = "grt_" + "I" * 22
        svc.sql("UPDATE reveal_grants SET id = :new WHERE id = :old", new=used, old=grant)
    else:
        svc.sql(f"UPDATE reveal_grants SET {column} = :v WHERE id = :g", v=EDITS[column], g=grant)
        used = grant
    if column == "tenant":
        _refused(svc, "elsewhere", _token(svc, "elsewhere"), used)
    else:
        _refused(svc, tenant, token, used)


def test_a_grant_from_before_the_macs_is_refused(
    svc: Vault, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = _token(svc, tenant)
    grant = _grant(svc, tenant)
    svc.sql("UPDATE reveal_grants SET mac = NULL, mac_key_id = NULL WHERE id = :g", g=grant)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _refused(svc, tenant, token, grant)
    assert _warnings(caplog) == [
        f"reveal grant {grant} of tenant {tenant} has no MAC (issued before migration 0011):"
        " refused"
    ]


@pytest.mark.parametrize("key_id", ["00000000-0000-4000-8000-000000000000", ""])
def test_a_grant_naming_another_key_is_refused(svc: Vault, tenant: str, key_id: str) -> None:
    token = _token(svc, tenant)
    grant = _grant(svc, tenant)
    svc.sql("UPDATE reveal_grants SET mac_key_id = :k WHERE id = :g", k=key_id, g=grant)
    _refused(svc, tenant, token, grant)


def test_a_forged_grant_naming_the_caller_as_grantor_cannot_be_revoked(
    svc: Vault, tenant: str
) -> None:
    grant = _grant(svc, tenant)
    svc.sql("UPDATE reveal_grants SET field_classes = 'phone' WHERE id = :g", g=grant)
    with pytest.raises(PermissionDenied) as caught:
        svc.grants.revoke(ADMIN, tenant, grant, deadline=DL)
    assert caught.value.reason == "not_the_grantor"


def test_the_use_counters_and_revocation_are_outside_the_mac(svc: Vault, tenant: str) -> None:
    """Documented limit: an insider can roll them back (and could put back an earlier copy of
    the row with its MAC anyway); the grant stays bound to its grantee, scope, classes,
    purpose, bounds per copy and expiry, and every use is audited."""
    token = _token(svc, tenant)
    grant = _grant(svc, tenant, max_uses=1)
    assert _reveal(svc, tenant, token, grant) == "a@example.com"
    _refused(svc, tenant, token, grant)
    svc.sql("UPDATE reveal_grants SET uses = 0, values_used = 0 WHERE id = :g", g=grant)
    assert _reveal(svc, tenant, token, grant) == "a@example.com"
    assert svc.grants.revoke(ADMIN, tenant, grant, deadline=DL)
    svc.sql("UPDATE reveal_grants SET uses = 0, revoked_at = NULL WHERE id = :g", g=grant)
    assert _reveal(svc, tenant, token, grant) == "a@example.com"


def test_an_expired_grant_is_refused_without_touching_its_row(
    svc: Vault, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The expiry check itself (the older tests move ``expires_at`` by SQL, which the MAC now
    refuses before the expiry is looked at)."""
    token = _token(svc, tenant)
    grant = _grant(svc, tenant, ttl_seconds=1)
    time.sleep(1.05)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        refused = _refused(svc, tenant, token, grant)
    assert refused.message == "grant expired"
    assert _warnings(caplog) == []


# --- consent -------------------------------------------------------------------------------


def test_a_consent_row_edited_to_add_a_purpose_is_no_consent_at_all(
    svc: Vault, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    rid = _record(svc, tenant)
    _set(svc, tenant, rid, ["model-training"], 0)
    assert svc.records.get(TRAINING, tenant, rid, deadline=DL).fields["email"].value
    svc.sql(
        "UPDATE record_consents SET purposes = 'marketing,model-training' WHERE record_id = :r",
        r=rid,
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(ConsentRequired):
            svc.records.get(MARKETING, tenant, rid, deadline=DL)
        with pytest.raises(ConsentRequired):  # not even the purpose it held before
            svc.records.get(TRAINING, tenant, rid, deadline=DL)
        # the vault shows what it honours: the row's version, so UpdateConsent can replace it
        shown = svc.consent.get(BACKEND, tenant, rid, deadline=DL)
    assert shown == ConsentView(tenant, rid, 1, (), "", None)
    lines = _warnings(caplog)
    assert lines
    assert all(svc.ref(tenant, rid) in line and rid not in line for line in lines)
    refusals = {(r.outcome, r.reason) for r in svc.audit_rows(tenant, "record.read")}
    assert ("denied", "consent_required") in refusals
    _set(svc, tenant, rid, ["marketing"], 1)
    assert svc.records.get(MARKETING, tenant, rid, deadline=DL).fields["email"].value


def test_a_consent_row_copied_to_another_record_is_no_consent(svc: Vault, tenant: str) -> None:
    consented, victim = _record(svc, tenant), _record(svc, tenant, "bob@example.com")
    _set(svc, tenant, consented, ["marketing"], 0)
    _insert(
        svc,
        "record_consents",
        {**_row(svc, "record_consents", "record_id", consented), "record_id": victim},
    )
    assert svc.records.get(MARKETING, tenant, consented, deadline=DL).fields["email"].value
    with pytest.raises(ConsentRequired):
        svc.records.get(MARKETING, tenant, victim, deadline=DL)


def test_a_consent_from_before_the_macs_is_none_until_replaced(
    svc: Vault, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    rid, other = _record(svc, tenant), _record(svc, tenant, "bob@example.com")
    for r in (rid, other):
        _set(svc, tenant, r, ["marketing"], 0)
    svc.sql("UPDATE record_consents SET mac = NULL, mac_key_id = NULL")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for r in (rid, other, rid):
            with pytest.raises(ConsentRequired):
                svc.records.get(MARKETING, tenant, r, deadline=DL)
    [told] = _warnings(caplog)  # once per process, not per read
    assert "before migration 0011" in told
    assert rid not in told
    assert svc.consent.get(BACKEND, tenant, rid, deadline=DL).purposes == ()
    _set(svc, tenant, rid, ["marketing"], 1)
    assert svc.records.get(MARKETING, tenant, rid, deadline=DL).fields["email"].value


def test_a_consent_sealed_by_one_process_counts_in_another(svc: Vault, tenant: str) -> None:
    rid = _record(svc, tenant)
    _set(svc, tenant, rid, ["marketing"], 0)
    other = svc.restart()
    assert other.records.get(MARKETING, tenant, rid, deadline=DL).fields["email"].value
    assert other.consent.get(BACKEND, tenant, rid, deadline=DL).purposes == ("marketing",)
