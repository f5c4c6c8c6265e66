"""ExportCustomerData: the fields as the policy gives the exporter, the consents and the access
history as one JSON document, sealed to a recipient's X25519 key when one is given (checked
before anything is read); purposes and consent as for any reveal; audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from tests.support import ADMIN, TEST_POLICY, caller_of
from tests.unit.service.service_support import DL, ServiceFactory, Vault
from vault.errors import (
    ConsentRequired,
    Erased,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from vault.identity import AuthMethod, Principal
from vault.policy import mask
from vault.schema import FieldClass
from vault.service import Caller, RecordInput

DPO = caller_of("dpo", "dsar")
ADMIN_MARKETING = Caller(ADMIN.principal, "marketing", ADMIN.request_id)
FIELDS = {
    "email": "Ada@Example.com",
    "phone": "+44 20 7946 0958",
    "full_name": "Ada Lovelace",
    "card_number": "4111 1111 1111 1111",
}
#: X25519 points of low order: libsodium refuses to seal to them (anyone knows the secret)
LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def _create(svc: Vault, tenant: str, fields: dict[str, str] = FIELDS) -> str:
    [rec] = svc.records.create(ADMIN, tenant, [RecordInput(fields)], deadline=DL)
    return rec.record_id


def _document(svc: Vault, caller: Caller, tenant: str, rid: str) -> dict[str, Any]:
    export = svc.exports.export(caller, tenant, rid, deadline=DL)
    assert export.media_type == "application/json"
    document: dict[str, Any] = json.loads(export.document)
    return document


def test_the_export_holds_fields_consents_and_access_history(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    backend = caller_of("backend-service", "account-management")
    svc.consent.update(
        backend, tenant, rid, ["marketing"], expected_version=0, source="web", deadline=DL
    )
    svc.consent.update(
        backend, tenant, rid, ["model-training"], expected_version=1, source="app", deadline=DL
    )
    svc.records.get(backend, tenant, rid, fields=["email"], deadline=DL)
    doc = _document(svc, DPO, tenant, rid)
    canonical = svc.core.schema.validate(FIELDS)
    assert (doc["format"], doc["tenant"], doc["record_id"], doc["version"]) == (
        "cvault-dsar-export/1",
        tenant,
        rid,
        1,
    )
    assert doc["fields"] == {
        "email": {"class": "email", "output": "plain", "value": canonical["email"]},
        "phone": {"class": "phone", "output": "plain", "value": canonical["phone"]},
        "full_name": {"class": "name", "output": "plain", "value": "Ada Lovelace"},
        "card_number": {"class": "card_number", "output": "plain", "value": "4111111111111111"},
    }
    consent = doc["consent"]
    assert (consent["version"], consent["purposes"], consent["source"]) == (
        2,
        ["model-training"],
        "app",
    )
    assert [(h["version"], h["purposes"], h["source"]) for h in consent["history"]] == [
        (1, ["marketing"], "web"),
        (2, ["model-training"], "app"),
    ]
    # newest first; the export's own row is written as it is handed over, so it is not in it
    assert [
        (e["action"], e["principal"], e["role"], e["outcome"]) for e in doc["access_history"]
    ] == [
        ("record.read", backend.principal.name, "backend-service", "allowed"),
        ("consent.write", backend.principal.name, "backend-service", "allowed"),
        ("consent.write", backend.principal.name, "backend-service", "allowed"),
        ("record.write", ADMIN.principal.name, "test-admin", "allowed"),
    ]
    assert doc["access_history"][0]["field_classes"] == ["email"]
    assert doc["access_history"][0]["purpose"] == "account-management"


def test_the_fields_are_exported_as_the_policy_gives_the_exporter(
    factory: ServiceFactory, tenant: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    original = TEST_POLICY.read_text()
    assert original.count('  "apikey:test-tokens": {role: test-tokens, tenants: ["*"]}\n') == 1
    text = original.replace(
        '  "apikey:test-tokens": {role: test-tokens, tenants: ["*"]}\n',
        '  "apikey:test-tokens": {role: test-tokens, tenants: ["*"]}\n'
        '  "apikey:test-auditor": {role: auditor, tenants: ["*"]}\n',
    )
    policy.write_text(
        text + "\n  auditor:\n    description: exports what it may see\n"
        "    actions: [record.export]\n    purposes: [dsar]\n"
        "    fields: {email: masked, phone: token, name: plain}\n"
    )
    svc = factory.build(policy=policy)
    [rec] = svc.records.create(ADMIN, tenant, [RecordInput(FIELDS)], deadline=DL)
    auditor = Caller.of(Principal("apikey:test-auditor", AuthMethod.API_KEY), "dsar")
    doc = _document(svc, auditor, tenant, rec.record_id)
    assert {n: (f["output"], f["value"]) for n, f in doc["fields"].items()} == {
        "email": ("masked", mask(FieldClass.EMAIL, "Ada@example.com")),
        "phone": ("token", rec.tokens["phone"]),
        "full_name": ("plain", "Ada Lovelace"),
        "card_number": ("omit", ""),
    }
    [row] = svc.audit_rows(tenant, "record.export")
    assert row.field_classes == ("email", "name")  # what left as plain or masked


def test_an_export_sealed_to_a_recipient_opens_only_with_its_key(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    recipient = PrivateKey.generate()
    sealed = svc.exports.export(
        DPO, tenant, rid, recipient_public_key=bytes(recipient.public_key), deadline=DL
    )
    assert sealed.media_type == "application/json+nacl-sealedbox"
    assert b"Lovelace" not in sealed.document
    doc = json.loads(SealedBox(recipient).decrypt(sealed.document))
    assert doc["record_id"] == rid
    assert doc["fields"]["full_name"]["value"] == "Ada Lovelace"
    with pytest.raises(CryptoError):
        SealedBox(PrivateKey.generate()).decrypt(sealed.document)


@pytest.mark.parametrize(
    "key",
    [bytes(31), bytes(33), *LOW_ORDER],
    ids=["31-bytes", "33-bytes", "zero", "one", "order-8", "p-1"],
)
def test_a_recipient_key_that_cannot_be_sealed_to_is_refused_before_anything_is_read(
    svc: Vault, tenant: str, key: bytes
) -> None:
    rid = _create(svc, tenant)
    with pytest.raises(InvalidInput) as caught:
        svc.exports.export(DPO, tenant, rid, recipient_public_key=key, deadline=DL)
    assert caught.value.field == "recipient_public_key"
    assert svc.audit_rows(tenant, "record.export") == []  # nothing read, counted or audited
    assert svc.scalar("SELECT count(*) FROM rate_counters") == 0


@pytest.mark.parametrize(
    ("caller", "error", "field_or_reason"),
    [
        (caller_of("dpo"), InvalidInput, "purpose"),
        (caller_of("dpo", "gossip"), InvalidInput, "purpose"),
        (caller_of("dpo", "marketing"), PermissionDenied, "purpose_not_allowed"),
        (
            caller_of("backend-service", "account-management"),
            PermissionDenied,
            "action_not_allowed",
        ),
    ],
)
def test_an_export_needs_record_export_and_a_purpose_of_the_role(
    svc: Vault, tenant: str, caller: Caller, error: type[Exception], field_or_reason: str
) -> None:
    rid = _create(svc, tenant)
    with pytest.raises(error) as caught:
        svc.exports.export(caller, tenant, rid, deadline=DL)
    exc = caught.value
    assert (exc.field if isinstance(exc, InvalidInput) else getattr(exc, "reason", "")) == (
        field_or_reason
    )
    [denial] = svc.audit_rows(tenant, "record.export")
    assert (denial.outcome, denial.record_ref) == ("denied", svc.ref(tenant, rid))


def test_an_export_is_audited_and_counted(factory: ServiceFactory, tenant: str) -> None:
    svc = factory.build(clock=lambda: 1_800_000_000.0)  # the dpo may have 100 a minute
    rid = _create(svc, tenant)
    _document(svc, DPO, tenant, rid)
    [row] = svc.audit_rows(tenant, "record.export")
    assert (row.outcome, row.principal, row.role, row.purpose, row.record_ref) == (
        "allowed",
        DPO.principal.name,
        "dpo",
        "dsar",
        svc.ref(tenant, rid),
    )
    assert row.field_classes == ("card_number", "email", "name", "phone")
    for _ in range(24):  # 25 exports of 4 plain values: the 100 of this minute
        _document(svc, DPO, tenant, rid)
    with pytest.raises(ResourceExhausted):
        _document(svc, DPO, tenant, rid)
    assert [r.reason for r in svc.audit_rows(tenant, "limit.exceeded")] == ["limit_exceeded"]


def test_no_export_of_a_record_that_is_not_there(svc: Vault, tenant: str) -> None:
    erased = _create(svc, tenant)
    svc.records.delete(ADMIN, tenant, erased, deadline=DL)
    with pytest.raises(Erased):
        svc.exports.export(DPO, tenant, erased, deadline=DL)
    with pytest.raises(NotFound):
        svc.exports.export(DPO, tenant, "00000000-0000-7000-8000-000000000000", deadline=DL)
    with pytest.raises(InvalidInput) as caught:
        svc.exports.export(DPO, tenant, "not-an-id", deadline=DL)
    assert caught.value.field == "record_id"


def test_a_consent_bound_export_needs_the_customers_consent(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    with pytest.raises(ConsentRequired):
        svc.exports.export(ADMIN_MARKETING, tenant, rid, deadline=DL)
    [denial] = svc.audit_rows(tenant, "record.export")
    assert (denial.outcome, denial.reason, denial.purpose) == (
        "denied",
        "consent_required",
        "marketing",
    )
    svc.consent.update(
        ADMIN, tenant, rid, ["marketing"], expected_version=0, source="web", deadline=DL
    )
    assert _document(svc, ADMIN_MARKETING, tenant, rid)["fields"]["full_name"]["value"] == (
        "Ada Lovelace"
    )


# --- consent withdrawn while a reveal is under way ------------------------------------------


def _withdraw_when_keys_are_fetched(svc: Vault, tenant: str, rid: str) -> Vault:
    """A second process (empty key caches) whose next reveal of ``rid`` finds the consent for
    ``marketing`` withdrawn after its checks and before its commit: at the key-server call."""
    svc.consent.update(
        ADMIN, tenant, rid, ["marketing"], expected_version=0, source="web", deadline=DL
    )
    other = svc.restart()
    withdrawn: list[str] = []

    def withdraw(field_class: str) -> None:
        svc.consent.update(ADMIN, tenant, rid, [], expected_version=1, source="web", deadline=DL)
        withdrawn.append(field_class)

    other.key_server.before_unwrap = withdraw
    return other


def test_get_re_checks_consent_inside_its_reveal_transaction(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    other = _withdraw_when_keys_are_fetched(svc, tenant, rid)
    with pytest.raises(ConsentRequired):
        other.records.get(ADMIN_MARKETING, tenant, rid, deadline=DL)
    assert other.key_server.before_unwrap is None  # the withdrawal did happen mid-call
    assert [r.outcome for r in svc.audit_rows(tenant, "record.read")] == ["denied"]


def test_export_re_checks_consent_inside_its_reveal_transaction(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    other = _withdraw_when_keys_are_fetched(svc, tenant, rid)
    try:
        with pytest.raises(ConsentRequired):
            other.exports.export(ADMIN_MARKETING, tenant, rid, deadline=DL)
    finally:
        assert other.key_server.before_unwrap is None  # the withdrawal did happen mid-call
    assert [r.outcome for r in svc.audit_rows(tenant, "record.export")] == ["denied"]
