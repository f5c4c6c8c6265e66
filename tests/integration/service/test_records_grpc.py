"""Records over gRPC against real OpenBao, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from tests.support import SAMPLE, keyed_channel, sample_record
from vault import errors
from vault.api import RunningServer
from vault.client import VaultClient
from vault.storage import Database

pytestmark = pytest.mark.openbao

CANONICAL = {
    "email": "Ada.Lovelace@example.com",
    "phone": "+442079460958",
    "full_name": "Ada Lovelace",
    "address": "12 St James's Square, London SW1Y 4JH",
    "date_of_birth": "1990-12-10",
    "national_id": "QQ123456C",
    "card_number": "4111111111111111",
    "iban": "GB82WEST12345698765432",
    "notes": "Prefers contact by letter; VIP since 2019.",
}


@pytest.mark.parametrize("field", sorted(SAMPLE))
def test_round_trip_every_field_class(
    admin_client: VaultClient, client: VaultClient, tenant: str, field: str
) -> None:
    created = admin_client.create_record(tenant, {field: SAMPLE[field]})
    assert created.version == 1
    assert set(created.tokens) == {field}
    got = admin_client.get_record(tenant, created.record_id)
    assert got.fields[field].output == "plain"
    assert got.fields[field].value == CANONICAL[field]
    # Without the dev admin credential the same call gives tokens, never values.
    masked = client.get_record(tenant, created.record_id)
    assert masked.fields[field].output == "token"
    assert masked.fields[field].value == created.tokens[field]


def test_full_record_round_trip_and_subset(admin_client: VaultClient, tenant: str) -> None:
    created = admin_client.create_record(tenant, SAMPLE)
    got = admin_client.get_record(tenant, created.record_id)
    assert got.values() == CANONICAL
    sub = admin_client.get_record(tenant, created.record_id, fields=["email", "iban"])
    assert sub.values() == {"email": CANONICAL["email"], "iban": CANONICAL["iban"]}


def test_batch_create_in_order(admin_client: VaultClient, tenant: str) -> None:
    inputs = [sample_record(i) for i in range(25)]
    created = admin_client.batch_create_records(tenant, inputs)
    assert len(created) == 25
    for rec, fields in zip(created, inputs, strict=True):
        got = admin_client.get_record(tenant, rec.record_id, fields=["email"])
        assert got.fields["email"].value == fields["email"]


def test_update_with_optimistic_concurrency(admin_client: VaultClient, tenant: str) -> None:
    created = admin_client.create_record(tenant, {"email": "a@example.com", "full_name": "A B"})
    updated = admin_client.update_record(
        tenant,
        created.record_id,
        expected_version=1,
        set_fields={"email": "b@example.com", "phone": "+442079460001"},
        clear_fields=["full_name"],
    )
    assert updated.version == 2
    assert updated.tokens["email"] == created.tokens["email"]  # a field's token is stable
    got = admin_client.get_record(tenant, created.record_id)
    assert got.values() == {"email": "b@example.com", "phone": "+442079460001"}
    assert got.version == 2
    with pytest.raises(errors.Conflict):
        admin_client.update_record(
            tenant, created.record_id, expected_version=1, set_fields={"email": "c@example.com"}
        )
    assert admin_client.find_records(tenant, {"email": "b@example.com"}) == [created.record_id]
    assert admin_client.find_records(tenant, {"email": "a@example.com"}) == []


def test_concurrent_updates_exactly_one_wins(admin_client: VaultClient, tenant: str) -> None:
    created = admin_client.create_record(tenant, {"email": "race@example.com"})
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            admin_client.update_record(
                tenant,
                created.record_id,
                expected_version=1,
                set_fields={"email": f"winner{i}@example.com", "full_name": f"Name {i}"},
            )
            result = f"won:{i}"
        except errors.Conflict:
            result = "aborted"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1, outcomes
    assert outcomes.count("aborted") == 7
    winner = winners[0].split(":")[1]
    got = admin_client.get_record(tenant, created.record_id)
    assert got.version == 2
    assert got.values() == {"email": f"winner{winner}@example.com", "full_name": f"Name {winner}"}


def test_idempotent_create(admin_client: VaultClient, tenant: str) -> None:
    first = admin_client.create_record(tenant, {"email": "idem@example.com"}, idempotency_key="k-1")
    again = admin_client.create_record(tenant, {"email": "idem@example.com"}, idempotency_key="k-1")
    assert again.record_id == first.record_id
    assert again.tokens == first.tokens
    assert admin_client.find_records(tenant, {"email": "idem@example.com"}) == [first.record_id]


def test_concurrent_retries_make_one_record(admin_client: VaultClient, tenant: str) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        rec = admin_client.create_record(
            tenant, {"email": "once@example.com"}, idempotency_key="same"
        )
        ids.append(rec.record_id)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 6
    assert len(set(ids)) == 1
    assert admin_client.find_records(tenant, {"email": "once@example.com"}) == ids[:1]


def test_find_exact_match_normalized_and_tenant_scoped(
    admin_client: VaultClient, tenant: str
) -> None:
    a = admin_client.create_record(
        tenant, {"email": "Find.Me@Example.com", "phone": "+442079460123"}
    )
    admin_client.create_record(tenant, {"email": "other@example.com", "phone": "+442079460123"})
    admin_client.create_record(tenant + "x", {"email": "find.me@example.com"})
    assert admin_client.find_records(tenant, {"email": "find.me@EXAMPLE.com"}) == [a.record_id]
    assert len(admin_client.find_records(tenant, {"phone": "+44 20 7946 0123"})) == 2
    both = {"email": "find.me@example.com", "phone": "+442079460123"}
    assert admin_client.find_records(tenant, both) == [a.record_id]
    with pytest.raises(errors.InvalidInput) as exc:
        admin_client.find_records(tenant, {"full_name": "Ada"})
    assert exc.value.field == "match.full_name"


def test_delete_returns_receipt_and_record_is_gone(admin_client: VaultClient, tenant: str) -> None:
    created = admin_client.create_record(tenant, SAMPLE)
    receipt = admin_client.delete_record(tenant, created.record_id)
    assert receipt.record_id == created.record_id
    assert len(receipt.data_key_ids) == 9  # one data key per field class
    with pytest.raises(errors.Erased):
        admin_client.get_record(tenant, created.record_id)
    with pytest.raises(errors.Erased):
        admin_client.update_record(
            tenant, created.record_id, expected_version=1, set_fields={"email": "x@example.com"}
        )
    assert admin_client.find_records(tenant, {"email": SAMPLE["email"]}) == []
    # Erasing again returns the same receipt.
    assert (
        admin_client.delete_record(tenant, created.record_id).data_key_ids == receipt.data_key_ids
    )


def test_other_tenant_cannot_read(admin_client: VaultClient, tenant: str) -> None:
    created = admin_client.create_record(tenant, {"email": "mine@example.com"})
    with pytest.raises(errors.NotFound):
        admin_client.get_record(tenant + "-other", created.record_id)


def test_health_and_reflection(server: RunningServer) -> None:
    with keyed_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "vault.v1.Records"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"vault.v1.Records", "grpc.health.v1.Health"} <= names


def test_concurrent_first_writes_of_a_new_tenant_share_one_key_per_class(
    admin_client: VaultClient, database: Database, tenant: str
) -> None:
    """Writers racing to create a new tenant's keys, with overlapping sets of classes."""
    extra = ["phone", "full_name", "national_id", "card_number"]
    values = sample_record(7)
    errors_seen: list[BaseException] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        try:
            name = extra[i % len(extra)]
            admin_client.create_record(tenant, {"email": f"w{i}@example.com", name: values[name]})
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors_seen == []
    with database.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT field_class, kind, count(*) FROM tenant_keys WHERE tenant = :t "
                "GROUP BY field_class, kind"
            ),
            {"t": tenant},
        ).all()
    assert {(r[0], r[1]): r[2] for r in rows} == {
        (c, k): 1
        for c in ("email", "phone", "name", "national_id", "card_number")
        for k in ("data", "index")
    }
    assert len(admin_client.find_records(tenant, {"phone": values["phone"]})) == 2


def test_a_batch_mixing_used_and_new_idempotency_keys(
    admin_client: VaultClient, tenant: str
) -> None:
    """Issue 13 writes first and lets the unique index find a reused key: a batch with one
    used key then returns that key's first record and creates only the others, once."""
    first = admin_client.create_record(tenant, {"email": "mix0@example.com"}, idempotency_key="m-0")
    batch = [{"email": f"mix{i}@example.com"} for i in range(3)]
    keys = ["m-0", "m-1", "m-2"]
    out = admin_client.batch_create_records(tenant, batch, idempotency_keys=keys)
    assert out[0].record_id == first.record_id
    assert out[0].tokens == first.tokens
    again = admin_client.batch_create_records(tenant, batch, idempotency_keys=keys)
    assert [r.record_id for r in again] == [r.record_id for r in out]
    assert len({r.record_id for r in out}) == 3
    for i in range(3):
        assert len(admin_client.find_records(tenant, {"email": f"mix{i}@example.com"})) == 1
