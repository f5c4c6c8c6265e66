"""Grant and consent rows an insider writes are refused (issue 11, point 6), over gRPC against
the real OpenBao, on SQLite and PostgreSQL.

Before: nothing authenticated a ``reveal_grants`` or ``record_consents`` row. An outside review,
acting as an insider with database write access, copied a real grant row under a new id naming
``ai-pipeline`` as grantee and revealed plain values with it (audited as "on behalf of" the
supposed grantor); a consent row copied from another customer, or a real one edited to add
``marketing``, let a marketing read through. Now each row carries a MAC under a key derived
from the audit key (which only the service can unwrap, through the ``<prefix>-audit`` transit
key): a reveal under a forged grant is PERMISSION_DENIED ``grant_invalid`` and audited, and a
forged or edited consent row counts as no consent at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.access.access_support import audit_rows
from tests.support import TEST_PURPOSE, api_key_of, sample_record
from vault import errors
from vault.api import RunningServer
from vault.client import TokenItem, VaultClient
from vault.crypto import random_base62
from vault.storage import Database

pytestmark = pytest.mark.openbao

AGENT = "apikey:dev-ai-pipeline"
ADMIN = "apikey:test-admin"
TOKENS = "apikey:test-tokens"


@pytest.fixture
def agent(server: RunningServer) -> Iterator[VaultClient]:
    with VaultClient(server.address, api_key=api_key_of("ai-pipeline"), timeout=30) as c:
        yield c


@pytest.fixture
def backend(server: RunningServer) -> Iterator[VaultClient]:
    with VaultClient(server.address, api_key=api_key_of("backend-service"), timeout=30) as c:
        yield c


def _row(database: Database, table: str, key: str, value: str) -> dict[str, Any]:
    """A row as the database holds it (raw column values, whatever columns there are)."""
    with database.engine.connect() as conn:
        found = conn.execute(text(f"SELECT * FROM {table} WHERE {key} = :v"), {"v": value}).one()
    return dict(found._mapping)


def _insert(database: Database, table: str, row: dict[str, Any]) -> None:
    """What an insider with the service's database credential can do: write any row."""
    columns = ", ".join(row)
    values = ", ".join(f":{c}" for c in row)
    with database.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({values})"), row)


def _update(database: Database, table: str, key: str, value: str, **changes: Any) -> None:
    sets = ", ".join(f"{c} = :{c}" for c in changes)
    with database.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {table} SET {sets} WHERE {key} = :key_value"),
            {**changes, "key_value": value},
        )


def _tokens_of(admin: VaultClient, tenant: str, seed: int) -> tuple[str, str, str]:
    """A record and its email and phone tokens."""
    values = sample_record(seed)
    rid = admin.create_record(tenant, values).record_id
    email, phone = admin.tokenize(
        tenant,
        [
            TokenItem(values["email"], "email", record_id=rid),
            TokenItem(values["phone"], "phone", record_id=rid),
        ],
    )
    return rid, email, phone


def _agent_reveals(database: Database, tenant: str) -> list[tuple[object, ...]]:
    rows = audit_rows(database, tenant=tenant, action="token.reveal", principal=AGENT)
    return [(r["outcome"], r["reason"], r["on_behalf_of"]) for r in rows]


def test_a_grant_row_copied_to_another_grantee_reveals_nothing(
    admin_client: VaultClient, agent: VaultClient, tenant: str, database: Database
) -> None:
    rid, email, _ = _tokens_of(admin_client, tenant, 40)
    # a real grant, to someone else
    real, _ = admin_client.issue_grant(tenant, TOKENS, ["email"], record_ids=[rid], max_uses=5)
    forged = dict(_row(database, "reveal_grants", "id", real))
    forged.update(id=f"grt_{random_base62(128)}", grantee=AGENT)
    _insert(database, "reveal_grants", forged)
    with pytest.raises(errors.PermissionDenied) as caught:
        agent.reveal(tenant, [email], grant=forged["id"])
    assert caught.value.reason == "grant_invalid"
    # audited as a refusal; no row names the supposed grantor for a value that left
    assert _agent_reveals(database, tenant) == [("denied", "grant_invalid", "")]


def test_a_grant_row_widened_in_place_is_refused_whole(
    admin_client: VaultClient, agent: VaultClient, tenant: str, database: Database
) -> None:
    rid, email, phone = _tokens_of(admin_client, tenant, 41)
    grant, _ = admin_client.issue_grant(tenant, AGENT, ["email"], record_ids=[rid], max_uses=5)
    assert [r.error for r in agent.reveal(tenant, [email, phone], grant=grant)] == ["", "denied"]
    _update(database, "reveal_grants", "id", grant, field_classes="email,phone", max_uses=10_000)
    with pytest.raises(errors.PermissionDenied) as caught:
        agent.reveal(tenant, [email, phone], grant=grant)
    assert caught.value.reason == "grant_invalid"
    assert _agent_reveals(database, tenant) == [
        ("allowed", "", ADMIN),
        ("denied", "outside_grant", ADMIN),
        ("denied", "grant_invalid", ""),
    ]


#: the columns of a grant an insider widens, each edit alone enough on the old code
EDITED = ("expires_at", "field_classes", "max_uses", "max_values", "purpose", "record_ids")


@pytest.mark.parametrize("column", EDITED)
def test_a_grant_row_with_a_bound_column_edited_is_refused(
    admin_client: VaultClient,
    agent: VaultClient,
    tenant: str,
    database: Database,
    column: str,
) -> None:
    rid, email, phone = _tokens_of(admin_client, tenant, 42)
    other, other_email, _ = _tokens_of(admin_client, tenant, 43)
    # max_uses and max_values: used up by the first call, until edited
    grant, _ = admin_client.issue_grant(
        tenant,
        AGENT,
        ["email"],
        record_ids=[rid],
        max_uses=1 if column == "max_uses" else 5,
        max_values=1 if column == "max_values" else 0,
    )
    if column in ("max_uses", "max_values"):
        assert agent.reveal(tenant, [email], grant=grant)[0].error == ""
    longest, _ = admin_client.issue_grant(
        tenant, AGENT, ["email"], record_ids=[rid], ttl_seconds=86_400
    )
    edit: dict[str, Any] = {
        "expires_at": _row(database, "reveal_grants", "id", longest)["expires_at"],
        "field_classes": "email,phone",
        "max_uses": 10_000,
        "max_values": 0,
        "purpose": "dsar",
        "record_ids": ",".join(sorted((rid, other))),
    }
    _update(database, "reveal_grants", "id", grant, **{column: edit[column]})
    wanted = {"record_ids": other_email, "field_classes": phone}.get(column, email)
    with pytest.raises(errors.PermissionDenied) as caught:
        agent.reveal(tenant, [wanted], grant=grant)
    assert caught.value.reason == "grant_invalid"


def test_a_consent_row_copied_from_another_customer_lets_no_marketing_read_through(
    admin_client: VaultClient, backend: VaultClient, tenant: str, database: Database
) -> None:
    consented = admin_client.create_record(tenant, sample_record(44)).record_id
    victim = admin_client.create_record(tenant, sample_record(45)).record_id
    backend.update_consent(tenant, consented, ["marketing"], expected_version=0, source="form")
    assert backend.get_record(tenant, consented, purpose="marketing").values()["email"]
    copied = dict(_row(database, "record_consents", "record_id", consented))
    copied["record_id"] = victim
    _insert(database, "record_consents", copied)
    with pytest.raises(errors.ConsentRequired):
        backend.get_record(tenant, victim, purpose="marketing")
    # the vault shows what it honours: nothing, at the row's version (so it can be replaced)
    shown = backend.get_consent(tenant, victim)
    assert (shown.version, shown.purposes) == (1, ())
    backend.update_consent(tenant, victim, ["marketing"], expected_version=1, source="form")
    assert backend.get_record(tenant, victim, purpose="marketing").values()["email"]


def test_a_consent_row_edited_to_add_marketing_counts_as_no_consent(
    admin_client: VaultClient, backend: VaultClient, tenant: str, database: Database
) -> None:
    rid = admin_client.create_record(tenant, sample_record(46)).record_id
    admin_client.update_consent(tenant, rid, ["model-training"], expected_version=0, source="f")
    admin_client.get_record(tenant, rid, purpose="model-training")  # the real consent works
    _update(database, "record_consents", "record_id", rid, purposes="marketing,model-training")
    with pytest.raises(errors.ConsentRequired):
        backend.get_record(tenant, rid, purpose="marketing")
    # fail closed: an edited row is no consent at all, not even to what it held before
    with pytest.raises(errors.ConsentRequired):
        admin_client.get_record(tenant, rid, purpose="model-training")
    denied = audit_rows(database, tenant=tenant, action="record.read", outcome="denied")
    assert {r["reason"] for r in denied} == {"consent_required"}
    assert admin_client.get_record(tenant, rid, purpose=TEST_PURPOSE).values()["email"]


def test_a_forged_consent_row_lets_no_tokens_of_the_record_out_either(
    admin_client: VaultClient, agent: VaultClient, tenant: str, database: Database
) -> None:
    """ai-pipeline gets tokens only; a consent-bound purpose still needs consent for those
    (a training set must not hold the stable tokens of a customer who did not consent)."""
    consented = admin_client.create_record(tenant, sample_record(47)).record_id
    victim = admin_client.create_record(tenant, sample_record(48)).record_id
    admin_client.update_consent(
        tenant, consented, ["model-training"], expected_version=0, source="f"
    )
    assert agent.get_record(tenant, consented, purpose="model-training").values()["email"]
    copied = dict(_row(database, "record_consents", "record_id", consented))
    copied["record_id"] = victim
    _insert(database, "record_consents", copied)
    with pytest.raises(errors.ConsentRequired):
        agent.get_record(tenant, victim, purpose="model-training")
