"""Consent: one versioned set of purposes per record, replaced only at the version the caller
read, named purposes only, gone with the record, audited; and what it gates: a reveal for a
consent-bound purpose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support import ADMIN, caller_of
from tests.unit.service.service_support import DL, Vault
from vault.errors import Conflict, ConsentRequired, Erased, InvalidInput, NotFound, PermissionDenied
from vault.policy import Output
from vault.service import Caller, ConsentView, RecordInput

BACKEND = caller_of("backend-service", "account-management")
NO_SUCH_RECORD = "00000000-0000-7000-8000-000000000000"


def _create(svc: Vault, tenant: str) -> str:
    [rec] = svc.records.create(
        ADMIN, tenant, [RecordInput({"email": "ada@example.com", "full_name": "Ada"})], deadline=DL
    )
    return rec.record_id


def _set(
    svc: Vault,
    tenant: str,
    rid: str,
    purposes: list[str],
    version: int,
    *,
    caller: Caller = BACKEND,
    source: str = "signup-form",
) -> ConsentView:
    return svc.consent.update(
        caller, tenant, rid, purposes, expected_version=version, source=source, deadline=DL
    )


def test_a_new_record_consents_to_nothing(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    view = svc.consent.get(BACKEND, tenant, rid, deadline=DL)
    assert view == ConsentView(tenant, rid, 0, (), "", None)


def test_each_update_replaces_the_set_and_moves_the_version_on(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    before = datetime.now(UTC)
    first = _set(svc, tenant, rid, ["model-training", "marketing", "marketing"], 0)
    assert (first.version, first.purposes, first.source) == (
        1,
        ("marketing", "model-training"),
        "signup-form",
    )
    assert first.updated_at is not None
    assert before - timedelta(seconds=1) <= first.updated_at <= datetime.now(UTC)
    assert svc.consent.get(BACKEND, tenant, rid, deadline=DL) == first
    withdrawn = _set(svc, tenant, rid, [], 1, source="preferences page")
    assert (withdrawn.version, withdrawn.purposes, withdrawn.source) == (
        2,
        (),
        "preferences page",
    )
    assert svc.consent.get(BACKEND, tenant, rid, deadline=DL) == withdrawn


@pytest.mark.parametrize("stale", [0, 2, 7])
def test_an_update_at_a_stale_version_is_a_conflict_and_changes_nothing(
    svc: Vault, tenant: str, stale: int
) -> None:
    rid = _create(svc, tenant)
    current = _set(svc, tenant, rid, ["marketing"], 0)
    with pytest.raises(Conflict):
        _set(svc, tenant, rid, ["model-training"], stale)
    assert svc.consent.get(BACKEND, tenant, rid, deadline=DL) == current
    assert len(svc.audit_rows(tenant, "consent.write")) == 1


@pytest.mark.parametrize(
    ("purposes", "version", "source", "field"),
    [
        (["marketing", "telepathy"], 0, "web", "purposes[1]"),
        ([""], 0, "web", "purposes[0]"),
        (["marketing"], -1, "web", "expected_version"),
        (["marketing"], 0, "", "source"),
        (["marketing"], 0, "w\u00e9b", "source"),
        (["marketing"], 0, "line\nbreak", "source"),
        (["marketing"], 0, "s" * 129, "source"),
    ],
)
def test_a_bad_update_names_the_field(
    svc: Vault, tenant: str, purposes: list[str], version: int, source: str, field: str
) -> None:
    rid = _create(svc, tenant)
    with pytest.raises(InvalidInput) as caught:
        _set(svc, tenant, rid, purposes, version, source=source)
    assert caught.value.field == field
    assert svc.consent.get(BACKEND, tenant, rid, deadline=DL).version == 0


@pytest.mark.parametrize(
    ("tenant_arg", "record_id", "field"),
    [("", NO_SUCH_RECORD, "tenant"), ("t-ok", "not-an-id", "record_id"), ("t-ok", "", "record_id")],
)
def test_bad_ids_name_the_field(svc: Vault, tenant_arg: str, record_id: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.consent.get(BACKEND, tenant_arg, record_id, deadline=DL)
    assert caught.value.field == field
    with pytest.raises(InvalidInput) as caught:
        _set(svc, tenant_arg, record_id, ["marketing"], 0)
    assert caught.value.field == field


def test_consent_of_a_record_that_is_not_there(svc: Vault, tenant: str) -> None:
    elsewhere = _create(svc, tenant + "-other")
    for rid in (NO_SUCH_RECORD, elsewhere):
        with pytest.raises(NotFound):
            svc.consent.get(BACKEND, tenant, rid, deadline=DL)
        with pytest.raises(NotFound):
            _set(svc, tenant, rid, ["marketing"], 0)
    assert svc.scalar("SELECT count(*) FROM record_consents") == 0


def test_an_erased_records_consent_is_gone_with_it(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    _set(svc, tenant, rid, ["marketing"], 0)
    svc.records.delete(ADMIN, tenant, rid, deadline=DL)
    with pytest.raises(Erased):
        svc.consent.get(BACKEND, tenant, rid, deadline=DL)
    with pytest.raises(Erased):
        _set(svc, tenant, rid, ["marketing"], 1)
    assert svc.scalar("SELECT count(*) FROM record_consents") == 0
    assert svc.scalar("SELECT count(*) FROM consent_history") == 0


def test_a_change_is_audited_and_so_is_a_refusal(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    _set(svc, tenant, rid, ["marketing"], 0)
    fraud = caller_of("fraud-analyst", "fraud-investigation")  # may read, may not write consent
    with pytest.raises(PermissionDenied) as caught:
        _set(svc, tenant, rid, [], 1, caller=fraud)
    assert caught.value.reason == "action_not_allowed"
    rows = svc.audit_rows(tenant, "consent.write")
    ref = svc.ref(tenant, rid)
    assert [(r.outcome, r.principal, r.role, r.record_ref, r.reason, r.purpose) for r in rows] == [
        ("allowed", BACKEND.principal.name, "backend-service", ref, "", ""),
        # a refusal names the purpose the caller stated
        ("denied", fraud.principal.name, "fraud-analyst", ref, "action_not_allowed", fraud.purpose),
    ]
    assert svc.consent.get(BACKEND, tenant, rid, deadline=DL).purposes == ("marketing",)


def test_reading_consent_needs_record_read(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    with pytest.raises(PermissionDenied):
        svc.consent.get(caller_of("key-admin", "key-management"), tenant, rid, deadline=DL)
    [denial] = svc.audit_rows(tenant, "record.read")
    assert (denial.outcome, denial.role) == ("denied", "key-admin")


# --- what consent gates --------------------------------------------------------------------


def test_a_consent_bound_read_follows_the_current_consent(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    marketing = caller_of("backend-service", "marketing")
    with pytest.raises(ConsentRequired):
        svc.records.get(marketing, tenant, rid, deadline=DL)
    _set(svc, tenant, rid, ["marketing"], 0)
    view = svc.records.get(marketing, tenant, rid, deadline=DL)
    assert (view.fields["email"].output, view.fields["email"].value) == (
        Output.PLAIN,
        "ada@example.com",
    )
    _set(svc, tenant, rid, ["model-training"], 1)  # withdrawn
    with pytest.raises(ConsentRequired):
        svc.records.get(marketing, tenant, rid, deadline=DL)
    refusals = [
        (r.outcome, r.reason, r.purpose)
        for r in svc.audit_rows(tenant, "record.read")
        if r.outcome == "denied"
    ]
    assert refusals == [("denied", "consent_required", "marketing")] * 2


def test_without_consent_not_even_tokens_leave_for_a_consent_bound_purpose(
    svc: Vault, tenant: str
) -> None:
    rid = _create(svc, tenant)
    training = caller_of("ai-pipeline", "model-training")  # tokens only, never plaintext
    with pytest.raises(ConsentRequired):
        svc.records.get(training, tenant, rid, deadline=DL)
    _set(svc, tenant, rid, ["model-training"], 0)
    view = svc.records.get(training, tenant, rid, deadline=DL)
    assert {f.output for f in view.fields.values()} == {Output.TOKEN}


def test_a_purpose_without_consent_required_ignores_consent(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant)
    _set(svc, tenant, rid, [], 0)
    view = svc.records.get(BACKEND, tenant, rid, deadline=DL)
    assert view.fields["email"].value == "ada@example.com"
