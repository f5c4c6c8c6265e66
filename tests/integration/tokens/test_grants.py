"""Purpose-bound reveal grants: an agent reveals only within a grant issued to it, each use is
audited naming the agent and the granting principal, and nothing else gets through."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import TEST_PURPOSE, api_key_of, sample_record
from vault import errors
from vault.api import RunningServer
from vault.client import TokenItem, VaultClient
from vault.storage import Database

pytestmark = pytest.mark.openbao

AGENT = "apikey:dev-ai-pipeline"


@pytest.fixture
def agent(server: RunningServer) -> Iterator[VaultClient]:
    with VaultClient(server.address, api_key=api_key_of("ai-pipeline"), timeout=30) as c:
        yield c


def _audit_rows(
    database: Database, tenant: str, action: str, principal: str
) -> list[tuple[str, ...]]:
    with database.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT principal, role, on_behalf_of, outcome, reason, purpose FROM audit_events"
                " WHERE tenant = :t AND action = :a AND principal = :p ORDER BY time, seq"
            ),
            {"t": tenant, "a": action, "p": principal},
        ).all()
    return [tuple(r) for r in rows]


def test_an_agent_reveals_only_within_its_grant(
    admin_client: VaultClient,
    agent: VaultClient,
    client: VaultClient,
    tenant: str,
    database: Database,
) -> None:
    a, b = sample_record(10), sample_record(11)
    ra = admin_client.create_record(tenant, a)
    rb = admin_client.create_record(tenant, b)
    a_email, a_phone, b_email, loose = admin_client.tokenize(
        tenant,
        [
            TokenItem(a["email"], "email", record_id=ra.record_id),
            TokenItem(a["phone"], "phone", record_id=ra.record_id),
            TokenItem(b["email"], "email", record_id=rb.record_id),
            TokenItem(a["email"], "email"),
        ],
    )
    wanted = [a_email, a_phone, b_email, loose]
    with pytest.raises(errors.PermissionDenied):  # no grant: tokens only, never plaintext
        agent.reveal(tenant, wanted, purpose="model-training")
    grant, expires = admin_client.issue_grant(
        tenant, AGENT, ["email"], record_ids=[ra.record_id], ttl_seconds=300, max_uses=2
    )
    assert expires > datetime.now(UTC)
    results = agent.reveal(tenant, wanted, grant=grant)
    assert [(r.error, r.reason, r.value) for r in results] == [
        ("", "", a["email"]),
        ("denied", "outside_grant", ""),
        ("denied", "outside_grant", ""),
        ("denied", "outside_grant", ""),
    ]
    # another principal cannot use it; a different purpose is refused
    with pytest.raises(errors.PermissionDenied):
        client.reveal(tenant, [a_email], grant=grant)
    with pytest.raises(errors.PermissionDenied):
        agent.reveal(tenant, [a_email], grant=grant, purpose="marketing")
    assert agent.reveal(tenant, [a_email], grant=grant)[0].value == a["email"]
    with pytest.raises(errors.PermissionDenied):  # max_uses = 2, both used
        agent.reveal(tenant, [a_email], grant=grant)
    uses = _audit_rows(database, tenant, "token.reveal", AGENT)
    allowed = [u for u in uses if u[3] == "allowed"]
    assert len(allowed) == 2
    assert {u[1:3] for u in allowed} == {("ai-pipeline", "apikey:test-admin")}
    assert {u[5] for u in allowed} == {TEST_PURPOSE}
    assert any(u[3] == "denied" and u[4] == "grant_invalid" for u in uses)
    # the three tokens outside the grant were refused, and that is audited too
    assert any(u[3] == "denied" and u[4] == "outside_grant" for u in uses)
    issued = _audit_rows(database, tenant, "grant.issue", "apikey:test-admin")
    assert (("apikey:test-admin", "test-admin", AGENT, "allowed", "", TEST_PURPOSE)) in issued


def test_a_scope_grant_covers_that_conversation_only(
    admin_client: VaultClient, agent: VaultClient, tenant: str, database: Database
) -> None:
    value = sample_record(12)["email"]
    in_chat, other_chat = admin_client.tokenize(
        tenant,
        [
            TokenItem(value, "email", "deterministic", scope="chat-42"),
            TokenItem(value, "email", "deterministic", scope="chat-43"),
        ],
    )
    grant, _ = admin_client.issue_grant(
        tenant, AGENT, ["email", "phone"], scope="chat-42", ttl_seconds=60, max_uses=5
    )
    results = agent.reveal(tenant, [in_chat, other_chat], grant=grant)
    assert [(r.error, r.value) for r in results] == [("", value), ("denied", "")]
    with database.engine.begin() as conn:
        conn.execute(
            text("UPDATE reveal_grants SET expires_at = :t WHERE id = :g"),
            {"t": datetime.now(UTC) - timedelta(seconds=1), "g": grant},
        )
    with pytest.raises(errors.PermissionDenied):
        agent.reveal(tenant, [in_chat], grant=grant)


def test_grants_of_another_tenant_or_crafted_are_refused(
    admin_client: VaultClient, agent: VaultClient, tenant: str
) -> None:
    value = sample_record(13)["email"]
    [token] = admin_client.tokenize(tenant, [TokenItem(value, "email", scope="c1")])
    grant, _ = admin_client.issue_grant(tenant, AGENT, ["email"], scope="c1", ttl_seconds=60)
    with pytest.raises(errors.PermissionDenied):
        agent.reveal(tenant + "x", [token], grant=grant)
    for crafted in (
        "grt_" + "A" * 22,
        "grt_short",
        grant[:-1] + ("B" if grant[-1] != "B" else "C"),
    ):
        with pytest.raises(errors.PermissionDenied):
            agent.reveal(tenant, [token], grant=crafted)
    assert agent.reveal(tenant, [token], grant=grant)[0].value == value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"record_ids": [], "scope": ""}, "record_ids"),
        ({"record_ids": ["00000000-0000-7000-8000-000000000000"], "scope": "c"}, "record_ids"),
        ({"scope": "bad scope"}, "scope"),
        ({"scope": "c", "ttl_seconds": 0}, "ttl_seconds"),
        ({"scope": "c", "ttl_seconds": 86_401}, "ttl_seconds"),
        ({"scope": "c", "max_uses": 0}, "max_uses"),
        ({"scope": "c", "classes": ["no_such"]}, "field_classes[0]"),
        ({"scope": "c", "classes": []}, "field_classes"),
        ({"scope": "c", "grantee": ""}, "grantee"),
    ],
)
def test_bad_grant_requests_name_the_field(
    admin_client: VaultClient, tenant: str, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, Any] = {"ttl_seconds": 60, "max_uses": 1, **kwargs}
    classes = args.pop("classes", ["email"])
    grantee = args.pop("grantee", AGENT)
    with pytest.raises(errors.InvalidInput) as caught:
        admin_client.issue_grant(tenant, grantee, classes, **args)
    assert caught.value.field == field


def test_only_roles_with_grant_issue_may_issue(agent: VaultClient, tenant: str) -> None:
    with pytest.raises(errors.PermissionDenied):
        agent.issue_grant(tenant, AGENT, ["email"], scope="c", purpose="model-training")
