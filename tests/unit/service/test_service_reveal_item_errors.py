"""Reveal per item when something at rest is damaged (issue 15, point 6): a token whose stored
value or whose own data key does not authenticate is answered ``decryption_failed`` and audited
as an integrity event (outcome ``error``) in the reveal's transaction, is not counted as
revealed, and the rest of the batch is answered. Before, one such token failed the whole call
with DATA_LOSS. A tenant key that does not authenticate still fails the whole call: every token
under it would fail. In-memory key server and SQLite."""

from __future__ import annotations

import logging

import pytest

from tests.support import ADMIN, caller_of
from tests.unit.service.service_support import DL, ServiceFactory, Vault
from vault.errors import DecryptionFailed, ResourceExhausted
from vault.policy import Action, Output
from vault.service import RecordInput
from vault.service.grants import GrantRequest
from vault.service.tokens import TokenError, TokenizeItem, TokenKind

FRAUD = caller_of("fraud-analyst", "fraud-investigation")
AGENT = caller_of("ai-pipeline")
EMAIL = "ada@example.com"
PHONE = "+442079460958"
NAME = "Ada Lovelace"

_OF_TOKEN = "SELECT data_key_id FROM tokens WHERE tenant = :t AND token = :k"


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _damage_value(svc: Vault, tenant: str, token: str) -> None:
    """Flip one byte of a token's stored ciphertext (its GCM tag)."""
    sql = "SELECT ciphertext FROM tokens WHERE tenant = :t AND token = :k"
    old = bytes(svc.scalar(sql, t=tenant, k=token))
    svc.sql(
        "UPDATE tokens SET ciphertext = :c WHERE tenant = :t AND token = :k",
        c=_flip_last_byte(old),
        t=tenant,
        k=token,
    )


def _damage_data_key(svc: Vault, tenant: str, token: str) -> None:
    """Flip one byte of the wrapped data key a token's value is sealed under."""
    old = bytes(
        svc.scalar(f"SELECT wrapped FROM data_keys WHERE id = ({_OF_TOKEN})", t=tenant, k=token)
    )
    svc.sql(
        f"UPDATE data_keys SET wrapped = :w WHERE id = ({_OF_TOKEN})",
        w=_flip_last_byte(old),
        t=tenant,
        k=token,
    )


def _create(svc: Vault, tenant: str, fields: dict[str, str]) -> str:
    [rec] = svc.records.create(ADMIN, tenant, [RecordInput(fields)], deadline=DL)
    return rec.record_id


def test_a_token_whose_value_does_not_decrypt_fails_alone_and_is_audited(
    svc: Vault, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = _create(svc, tenant, {"email": EMAIL})
    linked, phone, name, email = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(EMAIL, "email", record_id=record),
            TokenizeItem(PHONE, "phone"),
            TokenizeItem(NAME, "name"),
            TokenizeItem(EMAIL, "email", TokenKind.DETERMINISTIC),
        ],
        deadline=DL,
    )
    _damage_value(svc, tenant, phone)
    caplog.set_level(logging.DEBUG)
    results = svc.tokens.reveal(ADMIN, tenant, [linked, phone, name, email, phone], deadline=DL)

    assert [r.token for r in results] == [linked, phone, name, email, phone]
    assert [(r.error, r.value, r.field_class, r.reason) for r in results] == [
        (None, EMAIL, "email", ""),
        (TokenError.DECRYPTION_FAILED, "", "phone", "decryption_failed"),
        (None, NAME, "name", ""),
        (None, EMAIL, "email", ""),
        (TokenError.DECRYPTION_FAILED, "", "phone", "decryption_failed"),
    ]
    assert results[1].output is None
    # the failure is an integrity event in the reveal's own audit rows; the others as before
    rows = svc.audit_rows(tenant, "token.reveal")
    assert {(r.record_ref, r.field_classes, r.outcome, r.reason) for r in rows} == {
        (svc.ref(tenant, record), ("email",), "allowed", ""),
        (None, ("email", "name"), "allowed", ""),
        (None, ("phone",), "error", "decryption_failed"),
    }
    # operators see a count; no value (not even the damaged one's) in any log line
    assert any("did not decrypt" in r.getMessage() for r in caplog.records)
    for value in (EMAIL, PHONE, NAME, PHONE.lstrip("+")):
        assert not any(value in r.getMessage() for r in caplog.records)


def test_only_damaged_tokens_fail_when_every_token_of_a_call_is_damaged(
    svc: Vault, tenant: str
) -> None:
    tokens = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem(PHONE, "phone"), TokenizeItem(NAME, "name")], deadline=DL
    )
    for t in tokens:
        _damage_value(svc, tenant, t)
    results = svc.tokens.reveal(ADMIN, tenant, tokens, deadline=DL)
    assert [r.error for r in results] == [TokenError.DECRYPTION_FAILED] * 2
    rows = svc.audit_rows(tenant, "token.reveal")
    assert {(r.field_classes, r.outcome, r.reason) for r in rows} == {
        (("name", "phone"), "error", "decryption_failed")
    }


def test_a_damaged_token_is_not_counted_as_revealed(factory: ServiceFactory, tenant: str) -> None:
    now = [1_800_000_000.0]  # a minute's start: the fraud analyst may have 30 a minute
    svc = factory.build(clock=lambda: now[0])
    tokens = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem(f"p{i}@example.com", "email") for i in range(32)],
        deadline=DL,
    )
    _damage_value(svc, tenant, tokens[0])
    _damage_value(svc, tenant, tokens[1])
    # 32 asked, 30 plain: within the limit, as the two damaged ones are not counted
    results = svc.tokens.reveal(FRAUD, tenant, tokens, deadline=DL)
    assert [r.error for r in results[:3]] == [
        TokenError.DECRYPTION_FAILED,
        TokenError.DECRYPTION_FAILED,
        None,
    ]
    assert [r.value for r in results[2:]] == [f"p{i}@example.com" for i in range(2, 32)]
    with pytest.raises(ResourceExhausted):  # the 30 revealed were counted
        svc.tokens.reveal(FRAUD, tenant, tokens[2:3], deadline=DL)


def test_a_data_key_that_does_not_authenticate_fails_only_the_tokens_under_it(
    svc: Vault, tenant: str
) -> None:
    a = _create(svc, tenant, {"email": EMAIL})
    b = _create(svc, tenant, {"email": "grace@example.com"})
    of_a, of_b, loose, phone = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(EMAIL, "email", record_id=a),
            TokenizeItem("grace@example.com", "email", record_id=b),
            TokenizeItem("alan@example.com", "email"),
            TokenizeItem(PHONE, "phone"),
        ],
        deadline=DL,
    )
    _damage_data_key(svc, tenant, of_a)  # record a's email key: only its token fails
    fresh = svc.restart()  # a process with empty key caches: it must unwrap the keys
    results = fresh.tokens.reveal(ADMIN, tenant, [of_a, of_b, loose, phone], deadline=DL)
    assert [(r.error, r.value) for r in results] == [
        (TokenError.DECRYPTION_FAILED, ""),
        (None, "grace@example.com"),
        (None, "alan@example.com"),
        (None, PHONE),
    ]
    assert (
        fresh.ref(tenant, a),
        ("email",),
        "error",
        "decryption_failed",
    ) in {(r.record_ref, r.field_classes, r.outcome, r.reason) for r in fresh.audit_rows(tenant)}

    # a token pool's key: every standalone token of the pool fails, the other pools answer
    _damage_data_key(fresh, tenant, loose)
    again = fresh.restart()
    results = again.tokens.reveal(ADMIN, tenant, [loose, phone, of_b], deadline=DL)
    assert [(r.error, r.value) for r in results] == [
        (TokenError.DECRYPTION_FAILED, ""),
        (None, PHONE),
        (None, "grace@example.com"),
    ]


def test_a_token_that_is_not_decrypted_for_the_caller_does_not_fail(
    svc: Vault, tenant: str
) -> None:
    """Only values that would leave are opened: a token the role gets back as itself is not."""
    address, name = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem("1 Road", "address"), TokenizeItem(NAME, "name")],
        deadline=DL,
    )
    _damage_value(svc, tenant, address)
    _damage_value(svc, tenant, name)
    support = caller_of("support-agent", "customer-support")  # address: token, name: plain
    as_token, plain = svc.tokens.reveal(
        support, tenant, [address, name], action=Action.TEXT_REVEAL, deadline=DL
    )
    assert (as_token.error, as_token.output, as_token.value) == (None, Output.TOKEN, address)
    assert (plain.error, plain.value) == (TokenError.DECRYPTION_FAILED, "")


def test_reveal_text_and_grants_answer_the_rest_too(svc: Vault, tenant: str) -> None:
    [redacted] = svc.texts.tokenize_text(
        ADMIN, tenant, [f"mail {EMAIL} or call {PHONE}"], scope="chat-1", deadline=DL
    )
    mail, call = (s.token for s in redacted.spans)
    _damage_value(svc, tenant, call)
    back = svc.texts.reveal_text(ADMIN, tenant, redacted.text, deadline=DL)
    assert back.text == f"mail {EMAIL} or call {call}"  # the damaged token is left in place
    assert [(t.error, t.reason) for t in back.tokens] == [
        (None, ""),
        (TokenError.DECRYPTION_FAILED, "decryption_failed"),
    ]
    issued = svc.grants.issue(
        ADMIN,
        tenant,
        GrantRequest(AGENT.principal.name, ("email", "phone"), 300, 5, scope="chat-1"),
        deadline=DL,
    )
    results = svc.tokens.reveal(AGENT, tenant, [mail, call], grant_id=issued.grant_id, deadline=DL)
    assert [(r.error, r.value) for r in results] == [
        (None, EMAIL),
        (TokenError.DECRYPTION_FAILED, ""),
    ]
    failed = [r for r in svc.audit_rows(tenant) if r.outcome == "error"]
    assert {(r.action, r.reason, r.on_behalf_of) for r in failed} == {
        ("text.reveal", "decryption_failed", ""),
        ("token.reveal", "decryption_failed", ADMIN.principal.name),
    }


def test_a_tenant_key_that_does_not_authenticate_still_fails_the_whole_call(
    svc: Vault, tenant: str
) -> None:
    """Every data key under it would fail: the key hierarchy is damaged, not one value."""
    email, phone = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem(EMAIL, "email"), TokenizeItem(PHONE, "phone")], deadline=DL
    )
    tenant_key = f"SELECT tenant_key_id FROM data_keys WHERE id = ({_OF_TOKEN})"  # the email pool's
    sql = f"SELECT wrapped FROM tenant_keys WHERE id = ({tenant_key})"
    old = str(svc.scalar(sql, t=tenant, k=email))
    svc.sql(
        f"UPDATE tenant_keys SET wrapped = :w WHERE id = ({tenant_key})",
        w=old[:-2] + ("AA" if old[-2:] != "AA" else "BB"),
        t=tenant,
        k=email,
    )
    with pytest.raises(DecryptionFailed):
        svc.restart().tokens.reveal(ADMIN, tenant, [email, phone], deadline=DL)
