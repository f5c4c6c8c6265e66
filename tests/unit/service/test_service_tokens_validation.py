"""Tokenize validates every value with its class's validator, the one record fields use, for
every kind of token (issue 11, point 7: ``phone="hello"`` was accepted as a random or
deterministic token). Free text stays unvalidated, and TokenizeText keeps tokenizing the spans
its detectors find as found, including those the strict validator would refuse."""

from __future__ import annotations

import pytest

from tests.support import ADMIN
from tests.unit.service.service_support import DL, Vault
from vault.errors import InvalidInput
from vault.schema import FieldClass, canonicalize
from vault.service._normal import class_spec
from vault.service.tokens import TokenizeItem, TokenKind

#: a value every validating class refuses (free text has no validator)
REFUSED = {
    "email": "not an email",
    "phone": "hello",
    "name": "   ",
    "address": " \t ",
    "date_of_birth": "12/10/1990",
    "national_id": "!!",
    "card_number": "4111111111111112",
    "iban": "GB00WEST12345698765432",
    "ip_address": "999.1.1.1",
}
#: a valid value of every validating class
VALID = {
    "email": "ada@example.com",
    "phone": "+442079460958",
    "name": "Ada Lovelace",
    "address": "12 St James's Square, London",
    "date_of_birth": "1990-12-10",
    "national_id": "QQ123456C",
    "card_number": "4111111111111111",
    "iban": "GB82WEST12345698765432",
    "ip_address": "203.0.113.9",
}
KINDS = [TokenKind.RANDOM, TokenKind.DETERMINISTIC]


def _tokens_in(svc: Vault, tenant: str) -> int:
    return int(svc.scalar("SELECT count(*) FROM tokens WHERE tenant = :t", t=tenant))


def _fingerprints(svc: Vault, tenant: str) -> set[bytes]:
    rows = svc.sql("SELECT fingerprint FROM tokens WHERE tenant = :t", t=tenant)
    return {bytes(r.fingerprint) for r in rows}


def test_every_class_but_free_text_is_refused_here() -> None:
    assert set(REFUSED) == {c.value for c in FieldClass} - {"free_text"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("field_class", sorted(REFUSED))
def test_a_value_its_class_refuses_fails_the_batch_naming_the_item(
    svc: Vault, tenant: str, field_class: str, kind: TokenKind
) -> None:
    value = REFUSED[field_class]
    items = [
        TokenizeItem(VALID[field_class], field_class, kind),
        TokenizeItem(value, field_class, kind),
    ]
    with pytest.raises(InvalidInput) as caught:
        svc.tokens.tokenize(ADMIN, tenant, items, deadline=DL)
    assert caught.value.field == "items[1].value"
    # the records' validator's own problem text, which never holds the value
    with pytest.raises(InvalidInput) as as_record:
        canonicalize(class_spec(FieldClass(field_class)), value)
    assert caught.value.problem == as_record.value.problem
    assert value.strip() == "" or value not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert _tokens_in(svc, tenant) == 0
    assert svc.audit_rows(tenant) == []  # bad input is not an event


@pytest.mark.parametrize("kind", KINDS)
def test_free_text_is_not_validated(svc: Vault, tenant: str, kind: TokenKind) -> None:
    value = "ring twice\x07 then wait"  # a control character a record field would refuse
    [token] = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem(value, "free_text", kind)], deadline=DL
    )
    [revealed] = svc.tokens.reveal(ADMIN, tenant, [token], deadline=DL)
    assert revealed.value == value


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("field_class", "spellings"),
    [
        ("phone", ["+44 20 7946 0958", "+442079460958"]),
        ("email", ["Ada@Example.com", "ada@example.com"]),  # plain ASCII: a case-folded form
        ("card_number", ["4111 1111 1111 1111", "4111-1111-1111-1111"]),
    ],
)
def test_a_valid_value_is_kept_as_given_and_fingerprinted_on_its_canonical_form(
    svc: Vault, tenant: str, field_class: str, spellings: list[str], kind: TokenKind
) -> None:
    items = [TokenizeItem(v, field_class, kind, scope=f"s{i}") for i, v in enumerate(spellings)]
    tokens = svc.tokens.tokenize(ADMIN, tenant, items, deadline=DL)
    revealed = svc.tokens.reveal(ADMIN, tenant, tokens, deadline=DL)
    assert [r.value for r in revealed] == spellings
    assert len(_fingerprints(svc, tenant)) == 1  # erasure finds every spelling


def test_tokenize_text_keeps_spans_the_strict_validator_refuses(svc: Vault, tenant: str) -> None:
    text = (
        "Call me on (682) 555-0115 or 01 23 45 67 71. I was born on 03/29/1972 "
        "(geboren am 12. März 1985)."
    )
    [redacted] = svc.texts.tokenize_text(ADMIN, tenant, [text], scope="chat-1", deadline=DL)
    found = [(s.field_class, text[s.start : s.end]) for s in redacted.spans]
    assert found == [
        ("phone", "(682) 555-0115"),
        ("phone", "01 23 45 67 71"),
        ("date_of_birth", "03/29/1972"),
        ("date_of_birth", "12. März 1985"),
    ]
    # as before: tokens of the span's class, or of free text for a date written out too long
    # for its class (``tok_<class>_`` and 22 base62 digits)
    token_classes = [s.token[len("tok_") : -len("_") - 22] for s in redacted.spans]
    assert token_classes == ["phone", "phone", "date_of_birth", "free_text"]
    revealed = svc.texts.reveal_text(ADMIN, tenant, redacted.text, deadline=DL)
    assert revealed.text == text


def test_an_item_never_shows_its_value() -> None:
    item = TokenizeItem("ada.secret@example.com", "email", TokenKind.DETERMINISTIC, scope="s")
    for shown in (repr(item), str(item), f"{item}", repr([item])):
        assert "ada.secret" not in shown
        assert "email" in shown


def test_a_bad_item_deep_in_a_batch_is_named_by_its_position(svc: Vault, tenant: str) -> None:
    items = [TokenizeItem(f"u{i}@example.org", "email") for i in range(50)]
    bad = [
        (TokenizeItem("x@example.org", "nope"), "items[37].field_class"),
        (TokenizeItem("", "email"), "items[37].value"),
        (TokenizeItem("x@example.org", "email", scope="bad scope!"), "items[37].scope"),
        (TokenizeItem("x@example.org", "email", ttl_seconds=-1), "items[37].ttl_seconds"),
        (TokenizeItem("x@example.org", "email", record_id="nope"), "items[37].record_id"),
        (TokenizeItem("not an email", "email"), "items[37].value"),
        (TokenizeItem("x", "address", TokenKind.FORMAT_PRESERVING), "items[37].kind"),
    ]
    for item, field in bad:
        with pytest.raises(InvalidInput) as caught:
            svc.tokens.tokenize(ADMIN, tenant, [*items[:37], item, *items[38:]], deadline=DL)
        assert caught.value.field == field
        assert item.value not in str(caught.value) or not item.value
