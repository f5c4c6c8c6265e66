"""Limits and grants that cannot be sidestepped (issue 11, points 3 and 4), over gRPC against the real OpenBao,
on SQLite and PostgreSQL (grant rows and rate counters live in the database).

Before: the grantee was not checked against the policy (a principal in no role was accepted); a
grantor without ``token.reveal`` (support-agent) could grant Reveal, to itself too; nothing could
revoke a grant; ``max_uses`` counted calls only, so one use revealed up to 10,000 values; and a
reveal under a grant charged only the grantee, so each extra grantee added a full allowance;
masked values counted against no limit.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.integration.access.matrix_support import start_policy_server
from tests.support import (
    API_KEYS,
    SAMPLE_POLICY,
    TEST_POLICY,
    TEST_PURPOSE,
    api_key_of,
    create_tenants,
)
from vault import errors
from vault.api import RunningServer
from vault.client import TokenItem, VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import Database

pytestmark = pytest.mark.openbao

SUPPORT_PURPOSE = "customer-support"
AGENT = "apikey:dev-ai-pipeline"


@pytest.fixture
def clients(server: RunningServer) -> Iterator[dict[str, VaultClient]]:
    made = {
        "admin": VaultClient(
            server.address, api_key=API_KEYS["test-admin"][0], purpose=TEST_PURPOSE
        ),
        "support": VaultClient(
            server.address, api_key=api_key_of("support-agent"), purpose=SUPPORT_PURPOSE
        ),
        "agent": VaultClient(server.address, api_key=api_key_of("ai-pipeline")),
    }
    yield made
    for c in made.values():
        c.close()


def _names(admin: VaultClient, tenant: str, scope: str, n: int) -> list[str]:
    items = [TokenItem(f"Person {i}", "name", "deterministic", scope=scope) for i in range(n)]
    return admin.tokenize(tenant, items)


def _charged(db: Database) -> dict[str, int]:
    """Plain values counted per principal in today's window (the day window does not roll
    over between two reads the way a minute may)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT principal, sum(count) AS n FROM rate_counters"
                " WHERE \"window\" = 'day' GROUP BY principal"
            )
        ).all()
    return {r.principal: int(r.n) for r in rows}


def test_a_grant_to_a_principal_in_no_role_is_refused(
    clients: dict[str, VaultClient], tenant: str
) -> None:
    _names(clients["admin"], tenant, "c1", 1)
    with pytest.raises(errors.PermissionDenied) as info:
        clients["support"].issue_grant(tenant, "apikey:nobody", ["name"], scope="c1")
    assert info.value.reason == "grantee_not_allowed"


def test_a_grantor_lends_only_what_it_holds(clients: dict[str, VaultClient], tenant: str) -> None:
    [token] = _names(clients["admin"], tenant, "c1", 1)
    support = clients["support"]
    grant, _ = support.issue_grant(tenant, "apikey:dev-support-agent", ["name"], scope="c1")
    with pytest.raises(errors.PermissionDenied) as info:
        support.reveal(tenant, [token], grant=grant)  # token.reveal: support-agent has none
    assert info.value.reason == "grant_invalid"
    assert support.reveal_text(tenant, token, grant=grant).text == "Person 0"


def test_revoke_and_max_values(
    clients: dict[str, VaultClient], database: Database, tenant: str
) -> None:
    tokens = _names(clients["admin"], tenant, "c2", 3)
    support, agent = clients["support"], clients["agent"]
    grant, _ = support.issue_grant(tenant, AGENT, ["name"], scope="c2", max_values=2)
    with pytest.raises(errors.PermissionDenied):  # 3 values > max_values
        agent.reveal_text(tenant, " ".join(tokens), grant=grant)
    before = _charged(database)
    assert agent.reveal_text(tenant, " ".join(tokens[:2]), grant=grant).text == "Person 0 Person 1"
    after = _charged(database)
    # the grantor's budget is charged as well as the grantee's (2 plain names each)
    for who in (AGENT, "apikey:dev-support-agent"):
        assert after.get(who, 0) - before.get(who, 0) == 2, who
    with pytest.raises(errors.PermissionDenied):
        agent.reveal_text(tenant, tokens[2], grant=grant)

    other, _ = support.issue_grant(tenant, AGENT, ["name"], scope="c2")
    with pytest.raises(errors.PermissionDenied) as info:
        clients["admin"].revoke_grant(tenant, other)
    assert info.value.reason == "not_the_grantor"
    assert support.revoke_grant(tenant, other) is True
    with pytest.raises(errors.PermissionDenied) as info:
        agent.reveal_text(tenant, tokens[0], grant=other)
    assert info.value.reason == "grant_invalid"


def test_masked_values_count_against_a_limit_of_their_own(
    database: Database, openbao: OpenBaoDevServer, tenant: str
) -> None:
    """support-agent (60 plain values a minute) received 2,400 masked emails in 0.5 s: only
    plain values counted. Masked values now have limits of their own (the sample gives
    support-agent 600 a minute); the call that would pass it is RESOURCE_EXHAUSTED
    (``limit_exceeded``) and reveals nothing. The server's clock is pinned to a minute of its
    own so that no other test's counts, or a minute rolling over, change the figure."""
    pinned = float(86_400 * secrets.randbelow(10**6) + 30)
    server = start_policy_server(database, openbao, SAMPLE_POLICY, clock=lambda: pinned)
    create_tenants(database, tenant)
    admin = start_policy_server(database, openbao, TEST_POLICY)
    try:
        with VaultClient(admin.address, api_key=API_KEYS["test-admin"][0]) as a:
            items = [TokenItem(f"customer{i}@example.org", "email") for i in range(700)]
            tokens = a.tokenize(tenant, items)
        with VaultClient(
            server.address, api_key=api_key_of("support-agent"), purpose=SUPPORT_PURPOSE
        ) as support:
            shown = 0
            for start in range(0, 600, 100):
                got = support.reveal_text(tenant, " ".join(tokens[start : start + 100]))
                assert {t.output for t in got.tokens} == {"masked"}
                shown += len(got.tokens)
            assert shown == 600
            with pytest.raises(errors.ResourceExhausted) as info:
                support.reveal_text(tenant, " ".join(tokens[600:700]))
            assert info.value.reason == "limit_exceeded"
    finally:
        server.stop(grace=0)
        admin.stop(grace=0)
