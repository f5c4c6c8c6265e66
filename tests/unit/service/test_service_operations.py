"""Operator operations (the package vault/service/operations/):
tenant-key and index-key rotation, field-key rotation with retire and trim (against the fake
key server's admin side), key status, shred reports, the rotation schedule, rekey and
retention purges. Each is checked by what it leaves: every value still reads back, in a
process with empty key caches, and the old keys are gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import vault.schema
from tests.support import ADMIN
from tests.unit.service.service_support import (
    DL,
    FakeFieldKeyAdmin,
    ServiceFactory,
    Vault,
)
from vault.audit import ALLOWED, AuditEvent
from vault.errors import Erased, InvalidInput, NotFound
from vault.keys import FieldKeyInfo
from vault.service import RecordInput
from vault.service.operations import (
    KeyOpRefused,
    due_rotations,
    format_status,
    key_status,
    purge_expired,
    rekey,
    retire,
    rotate_field,
    rotate_index,
    rotate_tenant,
    shred_report,
    trim,
)
from vault.service.tokens import TokenError, TokenizeItem, TokenKind

OPERATOR = "operator:tester"
PEOPLE = [
    {"email": f"person{i}@example.com", "phone": f"+4420794600{i:02d}", "full_name": f"P {i}"}
    for i in range(3)
]


class _Stop(Exception):
    pass


def _stop(*_: object) -> None:
    raise _Stop


def _people(svc: Vault, tenant: str, people: list[dict[str, str]] = PEOPLE) -> list[str]:
    stored = svc.records.create(ADMIN, tenant, [RecordInput(p) for p in people], deadline=DL)
    return [s.record_id for s in stored]


def _values(svc: Vault, tenant: str, rid: str) -> dict[str, str]:
    view = svc.records.get(ADMIN, tenant, rid, deadline=DL)
    return {n: f.value for n, f in view.fields.items()}


def _assert_all_read_back(
    svc: Vault, tenant: str, ids: list[str], people: list[dict[str, str]] = PEOPLE
) -> None:
    """Every record reads back in a new process (no cached key hides a broken one)."""
    fresh = svc.restart()
    for rid, person in zip(ids, people, strict=True):
        assert _values(fresh, tenant, rid) == fresh.core.schema.validate(person)


def _info(
    name: str, latest: int = 1, created: dict[int, float] | None = None, low: int = 1
) -> FieldKeyInfo:
    made = created if created is not None else dict.fromkeys(range(1, latest + 1), 0.0)
    return FieldKeyInfo(
        name=f"cvault-{name}",
        latest_version=latest,
        min_decryption_version=low,
        min_encryption_version=0,
        versions=tuple(v for v in sorted(made) if v >= low),
        created=made,
    )


def _event(action: str, tenant: str, record_id: str) -> AuditEvent:
    return AuditEvent(
        action=action,
        outcome=ALLOWED,
        principal=OPERATOR,
        role="operator",
        purpose="",
        tenant=tenant,
        record_id=record_id,
    )


def _data_key_versions(svc: Vault, tenant: str, field_class: str) -> list[int]:
    rows = svc.sql(
        "SELECT version FROM tenant_keys WHERE tenant = :t AND field_class = :c AND kind = 'data'"
        " ORDER BY version",
        t=tenant,
        c=field_class,
    )
    return [r.version for r in rows]


# --- tenant keys ---------------------------------------------------------------------------


def test_rotate_tenant_rewraps_every_data_key_and_destroys_the_old_version(
    svc: Vault, tenant: str
) -> None:
    ids = _people(svc, tenant)
    other = tenant + "-other"
    other_ids = _people(svc, other, PEOPLE[:1])
    [pooled] = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem("pool@example.org", "email")], deadline=DL
    )
    report = rotate_tenant(svc.core, tenant, "email", batch=2)
    assert (report.version, report.started, report.rewrapped, report.destroyed) == (2, True, 4, 1)
    assert _data_key_versions(svc, tenant, "email") == [2]
    assert _data_key_versions(svc, tenant, "phone") == [1]  # one class at a time
    assert _data_key_versions(svc, other, "email") == [1]  # one tenant at a time
    current = svc.scalar(
        "SELECT id FROM tenant_keys WHERE tenant = :t AND field_class = 'email' AND kind = 'data'",
        t=tenant,
    )
    assert {
        r[0]
        for r in svc.sql(
            "SELECT tenant_key_id FROM data_keys WHERE tenant = :t AND field_class = 'email'",
            t=tenant,
        )
    } == {current}
    _assert_all_read_back(svc, tenant, ids)
    _assert_all_read_back(svc, other, other_ids, PEOPLE[:1])
    [revealed] = svc.restart().tokens.reveal(ADMIN, tenant, [pooled], deadline=DL)
    assert revealed.value == "pool@example.org"


def test_rotate_tenant_stopped_part_way_resumes_without_a_new_version(
    svc: Vault, tenant: str
) -> None:
    ids = _people(svc, tenant)
    with pytest.raises(_Stop):
        rotate_tenant(svc.core, tenant, "email", batch=2, progress=_stop)
    assert _data_key_versions(svc, tenant, "email") == [1, 2]  # both live while it runs
    _assert_all_read_back(svc, tenant, ids)
    resumed = rotate_tenant(svc.core, tenant, "email", batch=2)
    assert (resumed.version, resumed.started, resumed.rewrapped, resumed.destroyed) == (
        2,
        False,
        1,
        1,
    )
    assert _data_key_versions(svc, tenant, "email") == [2]
    _assert_all_read_back(svc, tenant, ids)
    # a finished rotation run again starts the next version
    again = rotate_tenant(svc.core, tenant, "email")
    assert (again.version, again.started, again.rewrapped) == (3, True, 3)


def test_a_process_that_read_old_keys_reads_on_after_a_tenant_rotation(
    svc: Vault, tenant: str
) -> None:
    ids = _people(svc, tenant)
    reader = svc.restart()
    assert _values(reader, tenant, ids[0])  # caches the version-1 tenant key id it read
    rotate_tenant(svc.core, tenant, "email")
    for rid, person in zip(ids, PEOPLE, strict=True):
        assert _values(reader, tenant, rid)["email"] == person["email"]


# --- field keys (the key server's admin side, faked) -----------------------------------------


def test_rotate_field_rewraps_every_key_of_the_class_under_a_new_version(
    svc: Vault, tenant: str
) -> None:
    ids = _people(svc, tenant)
    _people(svc, tenant + "-b", PEOPLE[:1])
    admin = FakeFieldKeyAdmin(svc.key_server)
    report = rotate_field(svc.db, admin, "email")
    # two tenants, a tenant key and an index key each
    assert (report.version, report.rotated, report.rewrapped, report.converted) == (2, True, 4, 0)
    status = key_status(svc.db, {"email": admin.info("email")})
    [email] = status.field_keys
    assert (email.wrapped_by_version, email.below_latest, email.oldest_in_use) == ({2: 4}, 0, 2)
    # retire and trim now go through: nothing is left under version 1
    assert retire(svc.db, admin, "email") == 2
    assert trim(svc.db, admin, "email") == 2
    assert admin.info("email").versions == (2,)
    _assert_all_read_back(svc, tenant, ids)


def test_retire_and_trim_refuse_while_keys_are_below_the_version(svc: Vault, tenant: str) -> None:
    _people(svc, tenant)
    admin = FakeFieldKeyAdmin(svc.key_server)
    admin.rotate("email")  # a new version made outside rotate-field: nothing rewrapped yet
    with pytest.raises(KeyOpRefused) as caught:
        retire(svc.db, admin, "email")
    assert caught.value.count == 2
    with pytest.raises(KeyOpRefused) as caught:
        trim(svc.db, admin, "email")
    assert caught.value.count == 2
    with pytest.raises(KeyOpRefused) as caught:
        retire(svc.db, admin, "email", to=3)  # no such version
    assert caught.value.count == 0
    assert admin.info("email").min_decryption_version == 1
    # rotate-field carries on with the version that exists instead of making another
    report = rotate_field(svc.db, admin, "email")
    assert (report.version, report.rotated, report.rewrapped) == (2, False, 2)
    assert retire(svc.db, admin, "email") == 2


def test_rotate_field_stopped_part_way_resumes(svc: Vault, tenant: str) -> None:
    ids = _people(svc, tenant)
    for i in range(3):
        _people(svc, f"{tenant}-{i}", PEOPLE[:1])
    admin = FakeFieldKeyAdmin(svc.key_server)
    with pytest.raises(_Stop):
        rotate_field(svc.db, admin, "email", batch=3, progress=_stop)
    resumed = rotate_field(svc.db, admin, "email", batch=3)
    assert (resumed.version, resumed.rotated, resumed.rewrapped) == (2, False, 5)
    # every key rewrapped once across both runs: the first run's batch was not redone
    assert len(admin.rewrapped) == len(set(admin.rewrapped)) == 8
    [email] = key_status(svc.db, {"email": admin.info("email")}).field_keys
    assert email.wrapped_by_version == {2: 8}
    _assert_all_read_back(svc, tenant, ids)


def test_rotating_the_audit_key_keeps_the_chain_verifiable(svc: Vault, tenant: str) -> None:
    _people(svc, tenant)
    admin = FakeFieldKeyAdmin(svc.key_server)
    report = rotate_field(svc.db, admin, "audit")
    assert (report.version, report.rewrapped) == (2, 1)
    fresh = svc.restart()
    _people(fresh, tenant, PEOPLE[:1])
    assert fresh.audit.verify(deadline=DL).ok


# --- key status ----------------------------------------------------------------------------


def test_key_status_counts_what_each_version_wraps(svc: Vault, tenant: str) -> None:
    other = tenant + "-other"
    _people(svc, tenant)
    _people(svc, other, PEOPLE[:1])
    svc.tokens.tokenize(ADMIN, other, [TokenizeItem("x@example.org", "email")], deadline=DL)
    infos = {"email": _info("email"), "audit": _info("audit"), "name": _info("name", latest=2)}
    status = key_status(svc.db, infos)
    by_class = {f.field_class: f for f in status.field_keys}
    assert sorted(by_class) == ["audit", "email", "name"]
    assert by_class["email"].wrapped_by_version == {1: 4}
    assert by_class["audit"].wrapped_by_version == {1: 1}
    # the key server has a newer name key: everything of that class is behind it
    name = by_class["name"]
    assert (name.latest_version, name.below_latest, name.oldest_in_use) == (2, 4, 1)
    # phone keys name a field key the key server did not report
    assert status.orphans == 4
    tenants = {(t.tenant, t.field_class): t for t in status.tenants}
    assert tenants[(tenant, "email")].data_keys_by_version == {1: 3}  # a data key per record
    assert tenants[(other, "email")].data_keys_by_version == {1: 2}  # the record's, the pool's
    assert tenants[(tenant, "email")].index_versions == (1,)
    assert tenants[(tenant, "email")].current_version == 1
    as_json = status.as_json()
    assert as_json["orphans"] == 4
    assert {f["class"] for f in as_json["field_keys"]} == {"audit", "email", "name"}
    report = format_status(status)
    assert "4 wrapped keys name no known field key" in report
    assert "wrapped keys below their key's newest version: 4" in report


def test_key_status_follows_a_tenant_rotation(svc: Vault, tenant: str) -> None:
    _people(svc, tenant)
    with pytest.raises(_Stop):
        rotate_tenant(svc.core, tenant, "email", batch=1, progress=_stop)
    midway = {(t.tenant, t.field_class): t for t in key_status(svc.db, {}).tenants}
    assert midway[(tenant, "email")].data_keys_by_version == {1: 2, 2: 1}
    assert midway[(tenant, "email")].oldest_in_use == 1
    rotate_tenant(svc.core, tenant, "email")
    done = {(t.tenant, t.field_class): t for t in key_status(svc.db, {}).tenants}
    assert done[(tenant, "email")].data_keys_by_version == {2: 3}
    assert done[(tenant, "email")].oldest_in_use == 2


# --- shred report --------------------------------------------------------------------------


def test_an_erasure_is_pending_until_tenant_and_field_keys_from_before_are_gone(
    svc: Vault, tenant: str
) -> None:
    ids = _people(svc, tenant)
    since = datetime.now(UTC) - timedelta(minutes=1)
    svc.records.delete(ADMIN, tenant, ids[0], deadline=DL)
    classes = ("email", "name", "phone")
    old = {c: _info(c) for c in classes}  # versions made long before the erasure
    [status] = shred_report(svc.db, old, since)
    assert (status.record_id, status.tenant, status.kind, status.complete) == (
        ids[0],
        tenant,
        "record",
        False,
    )
    assert sorted(status.pending) == sorted(
        [f"{c}: rotate-tenant (a tenant-key version from before is left)" for c in classes]
        + [
            f"{c}: rotate-field, retire and trim (a field-key version from before is still held)"
            for c in classes
        ]
    )
    for c in classes:
        rotate_tenant(svc.core, tenant, c)
    [halfway] = shred_report(svc.db, old, since)
    assert not any("rotate-tenant" in p for p in halfway.pending)
    assert len(halfway.pending) == 3
    # the key server holds only versions made after the erasure: nothing from before is left
    later = datetime.now(UTC).timestamp() + 60
    trimmed = {c: _info(c, latest=2, created={2: later}, low=2) for c in classes}
    [done] = shred_report(svc.db, trimmed, since)
    assert done.complete
    assert done.pending == ()
    assert shred_report(svc.db, trimmed, datetime.now(UTC) + timedelta(minutes=1)) == []


def test_the_shred_report_lists_destroyed_values_of_live_records(svc: Vault, tenant: str) -> None:
    ids = _people(svc, tenant)
    since = datetime.now(UTC) - timedelta(minutes=1)
    svc.records.update(
        ADMIN,
        tenant,
        ids[1],
        expected_version=1,
        set_fields={"email": "changed@example.com"},
        deadline=DL,
    )
    [status] = shred_report(svc.db, {"email": _info("email")}, since)
    assert (status.record_id, status.kind) == (ids[1], "fields")
    # classes the key server does not know are named as such
    assert "name: field key unknown to the key server" in status.pending


# --- schedule ------------------------------------------------------------------------------


def test_due_rotations_lists_what_is_older_than_its_period(svc: Vault, tenant: str) -> None:
    _people(svc, tenant, PEOPLE[:1])
    now = datetime.now(UTC)
    day = 86_400.0
    infos = {
        "email": _info("email", created={1: now.timestamp() - 100 * day}),
        "phone": _info("phone", latest=2, created={1: 0.0, 2: now.timestamp() - 10 * day}),
        "name": _info("name", created={}),  # no date known: never due
    }
    later = now + timedelta(days=31)
    due = due_rotations(svc.db, infos, field_key_days=90, tenant_key_days=30, now=later)
    assert due.field_keys == ("email",)
    assert due.tenant_keys == ((tenant, "email"), (tenant, "name"), (tenant, "phone"))
    assert (
        due_rotations(svc.db, infos, field_key_days=90, tenant_key_days=30, now=now).tenant_keys
        == ()
    )
    never = due_rotations(svc.db, infos, field_key_days=0, tenant_key_days=0, now=later)
    assert (never.field_keys, never.tenant_keys) == ((), ())


# --- index keys ----------------------------------------------------------------------------


def test_rotate_index_keeps_find_and_deterministic_tokens_answering(
    svc: Vault, tenant: str
) -> None:
    ids = _people(svc, tenant)
    det = [TokenizeItem(p["email"], "email", TokenKind.DETERMINISTIC, scope="s") for p in PEOPLE]
    before = svc.tokens.tokenize(ADMIN, tenant, det, deadline=DL)
    checks = []

    def still_answering() -> None:
        checks.append(1)
        for rid, person in zip(ids, PEOPLE, strict=True):
            assert svc.records.find(ADMIN, tenant, {"email": person["email"]}, deadline=DL) == [rid]
        # mid-rotation a value tokenized before keeps its token
        assert svc.tokens.tokenize(ADMIN, tenant, det, deadline=DL) == before

    report = rotate_index(svc.core, tenant, "email", batch=1, between_batches=still_answering)
    assert len(checks) == 3
    assert (report.version, report.started, report.indexed, report.dropped) == (2, True, 3, 3)
    fresh = svc.restart()
    for rid, person in zip(ids, PEOPLE, strict=True):
        assert fresh.records.find(ADMIN, tenant, {"email": person["email"]}, deadline=DL) == [rid]
    [email] = [t for t in key_status(svc.db, {}).tenants if t.field_class == "email"]
    assert email.index_versions == (2,)
    # the old tokens still reveal; new deterministic tokens are made under the new key
    assert [r.value for r in fresh.tokens.reveal(ADMIN, tenant, before, deadline=DL)] == [
        p["email"] for p in PEOPLE
    ]
    assert set(fresh.tokens.tokenize(ADMIN, tenant, det, deadline=DL)).isdisjoint(before)


def test_rotate_index_stopped_part_way_resumes(svc: Vault, tenant: str) -> None:
    ids = _people(svc, tenant)
    with pytest.raises(_Stop):
        rotate_index(svc.core, tenant, "email", batch=1, between_batches=_stop)
    resumed = rotate_index(svc.core, tenant, "email", batch=1)
    assert (resumed.version, resumed.started, resumed.indexed, resumed.dropped) == (2, False, 2, 3)
    for rid, person in zip(ids, PEOPLE, strict=True):
        assert svc.records.find(ADMIN, tenant, {"email": person["email"]}, deadline=DL) == [rid]


# --- rekey ---------------------------------------------------------------------------------


def test_rekey_moves_a_record_and_its_linked_tokens_to_new_data_keys(
    svc: Vault, tenant: str
) -> None:
    ids = _people(svc, tenant)
    rid = ids[0]
    linked, loose = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(PEOPLE[0]["email"], "email", record_id=rid),
            TokenizeItem(PEOPLE[0]["email"], "email"),
        ],
        deadline=DL,
    )
    old = {r[0] for r in svc.sql("SELECT id FROM data_keys WHERE record_id = :r", r=rid)}
    since = datetime.now(UTC) - timedelta(minutes=1)
    new = rekey(
        svc.core, tenant, rid, events=[_event("admin.keys.rekey", tenant, rid)], deadline=DL
    )
    assert len(new) == len(old) == 3
    assert set(new).isdisjoint(old)
    assert {r[0] for r in svc.sql("SELECT id FROM data_keys WHERE record_id = :r", r=rid)} == set(
        new
    )
    assert {
        r[0]
        for r in svc.sql("SELECT data_key_id FROM erased_data_keys WHERE record_id = :r", r=rid)
    } == old
    _assert_all_read_back(svc, tenant, ids)
    fresh = svc.restart()
    assert fresh.records.get(ADMIN, tenant, rid, deadline=DL).version == 2
    assert [r.value for r in fresh.tokens.reveal(ADMIN, tenant, [linked, loose], deadline=DL)] == [
        PEOPLE[0]["email"]
    ] * 2
    assert fresh.records.find(ADMIN, tenant, {"email": PEOPLE[0]["email"]}, deadline=DL) == [rid]
    [row] = svc.audit_rows(tenant, "admin.keys.rekey")
    assert (row.principal, row.record_ref) == (OPERATOR, svc.ref(tenant, rid))
    [status] = shred_report(svc.db, {}, since)
    assert (status.record_id, status.kind) == (rid, "fields")


def test_rekey_needs_a_live_record(svc: Vault, tenant: str) -> None:
    [rid] = _people(svc, tenant, PEOPLE[:1])
    svc.records.delete(ADMIN, tenant, rid, deadline=DL)
    with pytest.raises(Erased):
        rekey(svc.core, tenant, rid, deadline=DL)
    with pytest.raises(NotFound):
        rekey(svc.core, tenant, "00000000-0000-7000-8000-000000000000", deadline=DL)
    for bad_tenant, bad_id, field in ((tenant, "nope", "record_id"), ("", rid, "tenant")):
        with pytest.raises(InvalidInput) as caught:
            rekey(svc.core, bad_tenant, bad_id, deadline=DL)
        assert caught.value.field == field


# --- retention -----------------------------------------------------------------------------


@pytest.fixture
def retained(factory: ServiceFactory, tmp_path: Path) -> Vault:
    """Vault whose schema keeps records 365 days and card numbers 30."""
    base = Path(vault.schema.__file__).with_name("default.yaml").read_text()
    schema = tmp_path / "schema.yaml"
    schema.write_text(base + "retention:\n  records_days: 365\n  classes:\n    card_number: 30\n")
    return factory.build(schema=schema)


def test_purge_expired_shreds_what_retention_says_is_past(retained: Vault, tenant: str) -> None:
    svc = retained
    people = [{**p, "card_number": "4111111111111111"} for p in PEOPLE]
    fresh, card, old = _people(svc, tenant, people)
    [card_token] = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem("4111111111111111", "card_number", record_id=card)],
        deadline=DL,
    )
    now = datetime.now(UTC)
    svc.set_time("records", "updated_at", now - timedelta(days=40), id=card)  # card past 30
    svc.set_time("records", "updated_at", now - timedelta(days=400), id=old)  # everything past

    dry = purge_expired(svc.core, now=now, event=_event, dry_run=True)
    assert (dry.records, dry.values) == (1, 2)  # old's record; old's and card's card keys
    assert _values(svc, tenant, old)  # a dry run changes nothing

    done = purge_expired(svc.core, now=now, event=_event, batch=1)
    assert (done.records, done.values) == (1, 1)
    later = svc.restart()
    with pytest.raises(Erased):
        later.records.get(ADMIN, tenant, old, deadline=DL)
    view = later.records.get(ADMIN, tenant, card, deadline=DL)
    expected = later.core.schema.validate(people[1])
    expected.pop("card_number")
    assert ({n: f.value for n, f in view.fields.items()}, view.version) == (expected, 2)
    [revealed] = later.tokens.reveal(ADMIN, tenant, [card_token], deadline=DL)
    assert revealed.error is TokenError.ERASED
    assert _values(later, tenant, fresh) == later.core.schema.validate(people[0])
    rows = svc.audit_rows(tenant)
    assert sorted((r.action, r.record_ref, r.principal) for r in rows if r.role == "operator") == (
        sorted(
            [
                ("retention.erase", svc.ref(tenant, old), OPERATOR),
                ("retention.shred.card_number", svc.ref(tenant, card), OPERATOR),
            ]
        )
    )
    again = purge_expired(svc.core, now=now, event=_event)
    assert (again.records, again.values) == (0, 0)


def test_without_retention_periods_nothing_is_purged(svc: Vault, tenant: str) -> None:
    [rid] = _people(svc, tenant, PEOPLE[:1])
    svc.set_time("records", "updated_at", datetime(2001, 1, 1, tzinfo=UTC), id=rid)
    report = purge_expired(svc.core, now=datetime.now(UTC), event=_event)
    assert (report.records, report.values) == (0, 0)
    assert _values(svc, tenant, rid)
