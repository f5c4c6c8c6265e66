"""Reveal grants: who may issue one and what a request must say, and a grantee revealing only
within its grant (records or scope, classes, purpose, uses, lifetime), seeing what the
grantor's role would see, while that role still allows it; every use audited naming both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import ADMIN, TEST_POLICY, TEST_PURPOSE, caller_of
from tests.unit.service.service_support import DL, ServiceFactory, Vault
from vault.errors import InvalidInput, NotFound, PermissionDenied
from vault.identity import AuthMethod, Principal
from vault.policy import mask
from vault.schema import FieldClass
from vault.service import Caller, RecordInput
from vault.service.grants import GrantRequest
from vault.service.tokens import TokenError, TokenizeItem, TokenKind

AGENT = caller_of("ai-pipeline")
SUPPORT = caller_of("support-agent", "customer-support")
NO_SUCH_RECORD = "00000000-0000-7000-8000-000000000000"


def _create(svc: Vault, tenant: str, fields: dict[str, str]) -> str:
    [rec] = svc.records.create(ADMIN, tenant, [RecordInput(fields)], deadline=DL)
    return rec.record_id


def _grant(
    svc: Vault,
    tenant: str,
    *,
    grantor: Caller = ADMIN,
    grantee: Caller = AGENT,
    classes: tuple[str, ...] = ("email",),
    record_ids: tuple[str, ...] = (),
    scope: str = "",
    ttl_seconds: int = 300,
    max_uses: int = 10,
) -> str:
    issued = svc.grants.issue(
        grantor,
        tenant,
        GrantRequest(
            grantee.principal.name,
            classes,
            ttl_seconds,
            max_uses,
            record_ids=record_ids,
            scope=scope,
        ),
        deadline=DL,
    )
    assert (
        datetime.now(UTC) < issued.expires_at <= datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    )
    return issued.grant_id


def _scoped(svc: Vault, tenant: str, scope: str, *values: tuple[str, str]) -> list[str]:
    return svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem(v, c, TokenKind.DETERMINISTIC, scope=scope) for c, v in values],
        deadline=DL,
    )


# --- issuing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"record_ids": (), "scope": ""}, "record_ids"),
        ({"record_ids": (NO_SUCH_RECORD,), "scope": "c"}, "record_ids"),
        ({"record_ids": ("not-an-id",), "scope": ""}, "record_ids[0]"),
        ({"record_ids": (NO_SUCH_RECORD,) * 1001, "scope": ""}, "record_ids"),
        ({"scope": "bad scope"}, "scope"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 86_401}, "ttl_seconds"),
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": 10_001}, "max_uses"),
        ({"field_classes": ("email", "shoe_size")}, "field_classes[1]"),
        ({"field_classes": ()}, "field_classes"),
        ({"grantee": ""}, "grantee"),
        ({"grantee": "has space"}, "grantee"),
    ],
)
def test_a_bad_grant_request_names_the_field(
    svc: Vault, tenant: str, change: dict[str, object], field: str
) -> None:
    base: dict[str, object] = {
        "grantee": AGENT.principal.name,
        "field_classes": ("email",),
        "ttl_seconds": 60,
        "max_uses": 1,
        "scope": "c",
        **change,
    }
    request = GrantRequest(**base)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as caught:
        svc.grants.issue(ADMIN, tenant, request, deadline=DL)
    assert caught.value.field == field
    assert svc.scalar("SELECT count(*) FROM reveal_grants") == 0


def test_a_grant_needs_a_purpose_and_records_that_exist(svc: Vault, tenant: str) -> None:
    request = GrantRequest(AGENT.principal.name, ("email",), 60, 1, scope="c")
    with pytest.raises(InvalidInput) as caught:
        svc.grants.issue(caller_of("support-agent"), tenant, request, deadline=DL)
    assert caught.value.field == "purpose"
    live = _create(svc, tenant, {"email": "a@example.com"})
    missing = GrantRequest(
        AGENT.principal.name, ("email",), 60, 1, record_ids=(live, NO_SUCH_RECORD)
    )
    with pytest.raises(NotFound):
        svc.grants.issue(ADMIN, tenant, missing, deadline=DL)
    assert svc.scalar("SELECT count(*) FROM reveal_grants") == 0


def test_only_a_role_with_grant_issue_may_issue(svc: Vault, tenant: str) -> None:
    request = GrantRequest(AGENT.principal.name, ("email",), 60, 1, scope="c")
    with pytest.raises(PermissionDenied) as caught:
        svc.grants.issue(caller_of("ai-pipeline", "model-training"), tenant, request, deadline=DL)
    assert caught.value.reason == "action_not_allowed"
    [denial] = svc.audit_rows(tenant, "grant.issue")
    assert (denial.outcome, denial.role, denial.reason) == (
        "denied",
        "ai-pipeline",
        "action_not_allowed",
    )


def test_issuing_is_audited_per_record_naming_the_grantee(svc: Vault, tenant: str) -> None:
    a = _create(svc, tenant, {"email": "a@example.com"})
    b = _create(svc, tenant, {"email": "b@example.com"})
    _grant(svc, tenant, classes=("phone", "email"), record_ids=(a, b))
    _grant(svc, tenant, scope="chat-1")
    rows = svc.audit_rows(tenant, "grant.issue")
    assert sorted(
        ((r.record_ref or ""), r.field_classes, r.on_behalf_of, r.principal, r.purpose)
        for r in rows
    ) == sorted(
        [
            (
                svc.ref(tenant, a),
                ("email", "phone"),
                AGENT.principal.name,
                "apikey:test-admin",
                TEST_PURPOSE,
            ),
            (
                svc.ref(tenant, b),
                ("email", "phone"),
                AGENT.principal.name,
                "apikey:test-admin",
                TEST_PURPOSE,
            ),
            ("", ("email",), AGENT.principal.name, "apikey:test-admin", TEST_PURPOSE),
        ]
    )


# --- revealing under a grant ---------------------------------------------------------------


def test_a_grantee_reveals_only_within_the_grants_records_and_classes(
    svc: Vault, tenant: str
) -> None:
    a = _create(svc, tenant, {"email": "a@example.com", "phone": "+442079460958"})
    b = _create(svc, tenant, {"email": "b@example.com"})
    a_email, a_phone, b_email, loose = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem("a@example.com", "email", record_id=a),
            TokenizeItem("+442079460958", "phone", record_id=a),
            TokenizeItem("b@example.com", "email", record_id=b),
            TokenizeItem("a@example.com", "email"),
        ],
        deadline=DL,
    )
    wanted = [a_email, a_phone, b_email, loose]
    with pytest.raises(PermissionDenied):  # without the grant: tokens only, never plaintext
        svc.tokens.reveal(caller_of("ai-pipeline", "model-training"), tenant, wanted, deadline=DL)
    grant = _grant(svc, tenant, record_ids=(a,))
    results = svc.tokens.reveal(AGENT, tenant, wanted, grant_id=grant, deadline=DL)
    assert [(r.error, r.reason, r.value) for r in results] == [
        (None, "", "a@example.com"),
        (TokenError.DENIED, "outside_grant", ""),  # a class the grant does not name
        (TokenError.DENIED, "outside_grant", ""),  # another record
        (TokenError.DENIED, "outside_grant", ""),  # no record at all
    ]
    rows = svc.audit_rows(tenant, "token.reveal")
    allowed = [r for r in rows if r.outcome == "allowed"]
    assert [(r.principal, r.role, r.on_behalf_of, r.purpose, r.record_ref) for r in allowed] == [
        (AGENT.principal.name, "ai-pipeline", "apikey:test-admin", TEST_PURPOSE, svc.ref(tenant, a))
    ]
    refused = {(r.record_ref, r.field_classes) for r in rows if r.reason == "outside_grant"}
    assert refused == {
        (svc.ref(tenant, a), ("phone",)),
        (svc.ref(tenant, b), ("email",)),
        (None, ("email",)),
    }
    assert {r.on_behalf_of for r in rows if r.reason == "outside_grant"} == {"apikey:test-admin"}


def test_a_scope_grant_covers_that_conversation_only(svc: Vault, tenant: str) -> None:
    in_chat, name_in_chat = _scoped(
        svc, tenant, "chat-42", ("email", "a@example.com"), ("name", "Ada Lovelace")
    )
    [other_chat] = _scoped(svc, tenant, "chat-43", ("email", "a@example.com"))
    grant = _grant(svc, tenant, scope="chat-42")
    results = svc.tokens.reveal(
        AGENT, tenant, [in_chat, other_chat, name_in_chat], grant_id=grant, deadline=DL
    )
    assert [(r.error, r.reason, r.value) for r in results] == [
        (None, "", "a@example.com"),
        (TokenError.DENIED, "outside_grant", ""),
        (TokenError.DENIED, "outside_grant", ""),
    ]


def test_a_grantee_sees_what_the_grantors_role_sees_never_more(svc: Vault, tenant: str) -> None:
    email, name, address = _scoped(
        svc,
        tenant,
        "ticket-7",
        ("email", "ada@example.com"),
        ("name", "Ada Lovelace"),
        ("address", "12 St James's Square"),
    )
    grant = _grant(
        svc, tenant, grantor=SUPPORT, classes=("email", "name", "address"), scope="ticket-7"
    )
    # support-agent lends text.reveal (it does not hold token.reveal): the agent reveals a text
    text = f"{email} {name} {address}"
    shown = svc.texts.reveal_text(AGENT, tenant, text, grant_id=grant, deadline=DL)
    masked = mask(FieldClass.EMAIL, "ada@example.com")
    assert shown.text == f"{masked} Ada Lovelace {address}"
    [use] = svc.audit_rows(tenant, "text.reveal")
    assert (use.on_behalf_of, use.purpose, use.role) == (
        SUPPORT.principal.name,
        "customer-support",
        "ai-pipeline",
    )


@pytest.mark.parametrize(
    ("user", "tenant_suffix", "reason"),
    [
        (caller_of("fraud-analyst"), "", "grant_invalid"),  # not the grantee
        (AGENT, "-other", "grant_invalid"),  # another tenant
        (caller_of("ai-pipeline", "marketing"), "", "purpose_not_allowed"),  # another purpose
    ],
)
def test_a_grant_serves_its_grantee_in_its_tenant_for_its_purpose(
    svc: Vault, tenant: str, user: Caller, tenant_suffix: str, reason: str
) -> None:
    [token] = _scoped(svc, tenant, "c1", ("email", "a@example.com"))
    grant = _grant(svc, tenant, scope="c1")
    with pytest.raises(PermissionDenied) as caught:
        svc.tokens.reveal(user, tenant + tenant_suffix, [token], grant_id=grant, deadline=DL)
    assert caught.value.reason == reason
    [denial] = svc.audit_rows(tenant + tenant_suffix, "token.reveal")
    assert (denial.outcome, denial.reason, denial.principal) == (
        "denied",
        reason,
        user.principal.name,
    )
    # refusals do not use the grant up
    [ok] = svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant, deadline=DL)
    assert ok.value == "a@example.com"


@pytest.mark.parametrize(
    "grant_id", ["grt_" + "A" * 22, "grt_short", "tok_email_" + "A" * 22, "grt_" + "é" * 22]
)
def test_a_crafted_grant_id_is_refused(svc: Vault, tenant: str, grant_id: str) -> None:
    [token] = _scoped(svc, tenant, "c1", ("email", "a@example.com"))
    _grant(svc, tenant, scope="c1")
    with pytest.raises(PermissionDenied) as caught:
        svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant_id, deadline=DL)
    assert caught.value.reason == "grant_invalid"


def test_a_grant_is_used_up_after_max_uses_calls(svc: Vault, tenant: str) -> None:
    [token] = _scoped(svc, tenant, "c1", ("email", "a@example.com"))
    grant = _grant(svc, tenant, scope="c1", max_uses=2)
    for _ in range(2):  # a call is one use, however many tokens it holds
        results = svc.tokens.reveal(AGENT, tenant, [token, token], grant_id=grant, deadline=DL)
        assert [r.value for r in results] == ["a@example.com"] * 2
    with pytest.raises(PermissionDenied) as caught:
        svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant, deadline=DL)
    assert caught.value.reason == "grant_invalid"
    outcomes = [r.outcome for r in svc.audit_rows(tenant, "token.reveal")]
    assert outcomes == ["allowed", "allowed", "denied"]


def test_an_expired_grant_is_refused(svc: Vault, tenant: str) -> None:
    [token] = _scoped(svc, tenant, "c1", ("email", "a@example.com"))
    grant = _grant(svc, tenant, scope="c1")
    svc.set_time("reveal_grants", "expires_at", datetime.now(UTC) - timedelta(seconds=1), id=grant)
    with pytest.raises(PermissionDenied) as caught:
        svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant, deadline=DL)
    assert caught.value.reason == "grant_invalid"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # the grantor's role loses grant.issue
        (
            "actions: [record.read, record.find, text.reveal, grant.issue]",
            "actions: [record.read, record.find, text.reveal]",
        ),
        # the grantor's principal moves to another role
        (
            '"apikey:dev-support-agent": {role: support-agent,',
            '"apikey:dev-support-agent": {role: fraud-analyst,',
        ),
    ],
)
def test_a_grant_holds_only_while_the_grantors_role_allows_it(
    factory: ServiceFactory, tenant: str, tmp_path: Path, old: str, new: str
) -> None:
    policy = tmp_path / "policy.yaml"
    original = TEST_POLICY.read_text()
    assert original.count(old) == 1
    policy.write_text(original)
    svc = factory.build(policy=policy)
    [token] = _scoped(svc, tenant, "c1", ("name", "Ada Lovelace"))
    grant = _grant(svc, tenant, grantor=SUPPORT, classes=("name",), scope="c1")
    before = svc.texts.reveal_text(AGENT, tenant, token, grant_id=grant, deadline=DL)
    assert before.text == "Ada Lovelace"
    policy.write_text(original.replace(old, new))
    assert svc.policy.reload()
    with pytest.raises(PermissionDenied) as caught:
        svc.texts.reveal_text(AGENT, tenant, token, grant_id=grant, deadline=DL)
    assert caught.value.reason == "grant_invalid"


def test_a_grant_is_bound_to_the_consent_of_its_purpose(svc: Vault, tenant: str) -> None:
    marketing = caller_of("backend-service", "marketing")
    rid = _create(svc, tenant, {"email": "a@example.com"})
    [token] = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem("a@example.com", "email", record_id=rid)], deadline=DL
    )
    admin_marketing = Caller(ADMIN.principal, "marketing", ADMIN.request_id)
    grant = _grant(svc, tenant, grantor=admin_marketing, record_ids=(rid,))
    [denied] = svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant, deadline=DL)
    assert (denied.error, denied.reason) == (TokenError.DENIED, "consent_required")
    svc.consent.update(
        marketing, tenant, rid, ["marketing"], expected_version=0, source="web", deadline=DL
    )
    [revealed] = svc.tokens.reveal(AGENT, tenant, [token], grant_id=grant, deadline=DL)
    assert revealed.value == "a@example.com"


def test_a_reveal_under_a_grant_is_charged_to_the_grantor_as_well(
    factory: ServiceFactory, tenant: str
) -> None:
    """Grants charge the grantor (issue 11, point 3): a reveal under a grant counts against
    the grantor's principal as well as the grantee's, so each extra grantee no longer adds a
    full allowance. Before, only the grantee's counter moved."""
    svc = factory.build(clock=lambda: 1_800_000_000.0)
    tokens = _scoped(svc, tenant, "c1", *(("name", f"Person {i}") for i in range(3)))
    grant = _grant(svc, tenant, grantor=SUPPORT, classes=("name",), scope="c1")
    shown = svc.texts.reveal_text(AGENT, tenant, " ".join(tokens), grant_id=grant, deadline=DL)
    assert "Person 2" in shown.text
    rows = svc.sql("SELECT principal, window, count FROM rate_counters")
    charged = {(r.principal, r.window): r.count for r in rows}
    for who in (SUPPORT, AGENT):
        assert charged[(who.principal.name, "minute")] == 3


# --- issue 11, point 4: who may be granted what, revocation, values --------------------------


def test_the_grantee_must_be_a_principal_of_the_policy(
    factory: ServiceFactory, tenant: str
) -> None:
    """Before, any name was accepted as grantee (a principal in no role too)."""
    svc = factory.build()
    _create(svc, tenant, {"email": "a@example.org"})
    stranger = Caller.of(Principal("apikey:nobody-at-all", AuthMethod.API_KEY))
    with pytest.raises(PermissionDenied) as info:
        _grant(svc, tenant, grantee=stranger, scope="c1")
    assert info.value.reason == "grantee_not_allowed"
    [row] = svc.audit_rows(tenant, "grant.issue")
    assert (row.outcome, row.reason) == ("denied", "grantee_not_allowed")


def test_a_grant_lends_only_the_reveal_its_grantor_holds(
    factory: ServiceFactory, tenant: str
) -> None:
    """support-agent holds text.reveal, not token.reveal. Before, it could grant itself (or
    an agent) Reveal of single tokens; now a use needs the action in the grantor's role."""
    svc = factory.build()
    tokens = _scoped(svc, tenant, "c1", ("name", "Ada Lovelace"))
    for grantee in (SUPPORT, AGENT):
        grant = _grant(svc, tenant, grantor=SUPPORT, grantee=grantee, classes=("name",), scope="c1")
        with pytest.raises(PermissionDenied) as info:
            svc.tokens.reveal(grantee, tenant, tokens, grant_id=grant, deadline=DL)
        assert info.value.reason == "grant_invalid"
        shown = svc.texts.reveal_text(grantee, tenant, tokens[0], grant_id=grant, deadline=DL)
        assert shown.text == "Ada Lovelace"


def test_a_revoked_grant_is_refused_and_only_its_grantor_may_revoke(
    factory: ServiceFactory, tenant: str
) -> None:
    svc = factory.build()
    tokens = _scoped(svc, tenant, "c1", ("name", "Ada Lovelace"))
    grant = _grant(svc, tenant, grantor=SUPPORT, classes=("name",), scope="c1")
    assert svc.texts.reveal_text(AGENT, tenant, tokens[0], grant_id=grant, deadline=DL).text
    with pytest.raises(PermissionDenied) as info:
        svc.grants.revoke(ADMIN, tenant, grant, deadline=DL)
    assert info.value.reason == "not_the_grantor"
    assert svc.grants.revoke(SUPPORT, tenant, grant, deadline=DL) is True
    assert svc.grants.revoke(SUPPORT, tenant, grant, deadline=DL) is False
    with pytest.raises(PermissionDenied) as info:
        svc.texts.reveal_text(AGENT, tenant, tokens[0], grant_id=grant, deadline=DL)
    assert info.value.reason == "grant_invalid"
    revoked = [r for r in svc.audit_rows(tenant, "grant.revoke") if r.outcome == "allowed"]
    assert [r.on_behalf_of for r in revoked] == [AGENT.principal.name] * 2


def test_max_values_bounds_the_tokens_revealed_over_all_uses(
    factory: ServiceFactory, tenant: str
) -> None:
    """``max_uses`` counts calls; ``max_values`` the tokens they reveal. Before, one use could
    reveal 10,000 tokens whatever the grant meant."""
    svc = factory.build()
    tokens = _scoped(svc, tenant, "c1", *(("name", f"Person {i}") for i in range(3)))
    issued = svc.grants.issue(
        SUPPORT,
        tenant,
        GrantRequest(AGENT.principal.name, ("name",), 300, 10, scope="c1", max_values=2),
        deadline=DL,
    )
    with pytest.raises(PermissionDenied) as info:
        svc.texts.reveal_text(
            AGENT, tenant, " ".join(tokens), grant_id=issued.grant_id, deadline=DL
        )
    assert info.value.reason == "grant_invalid"
    two = " ".join(tokens[:2])
    assert (
        "Person 1"
        in svc.texts.reveal_text(AGENT, tenant, two, grant_id=issued.grant_id, deadline=DL).text
    )
    with pytest.raises(PermissionDenied):
        svc.texts.reveal_text(AGENT, tenant, tokens[2], grant_id=issued.grant_id, deadline=DL)
