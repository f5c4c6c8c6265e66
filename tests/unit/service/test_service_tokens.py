"""Tokenize and Reveal: every kind of token, lifetimes, erasure through linked records, what a
reveal answers per token, limits, and bad input named by its field. In-memory key server and
SQLite: the rules of the service layer, in milliseconds."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from stdnum import iban as stdnum_iban
from stdnum import luhn

from tests.support import ADMIN, TEST_PURPOSE, caller_of
from tests.unit.service.service_support import DL, ServiceFactory, Vault
from vault.crypto import TOKEN_RE
from vault.errors import (
    Erased,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from vault.policy import Output, mask
from vault.schema import DEFAULT_MAX_LENGTH, FieldClass
from vault.service import Caller, RecordInput
from vault.service.tokens import TokenError, TokenizeItem, TokenKind

#: a valid value of every field class (canonical form, so a reveal gives exactly this back)
VALUES = {
    "email": "ada@example.com",
    "phone": "+442079460958",
    "name": "Ada Lovelace",
    "address": "12 St James's Square, London",
    "date_of_birth": "1990-12-10",
    "national_id": "QQ123456C",
    "card_number": "4111111111111111",
    "iban": "GB82WEST12345698765432",
    "free_text": "Prefers contact by letter",
    "ip_address": "203.0.113.9",
}
#: classes with format-preserving tokens (all but free-form text)
FPE = sorted(set(VALUES) - {"address", "free_text"})
FRAUD = caller_of("fraud-analyst", "fraud-investigation")
PAST = datetime(2001, 1, 1, tzinfo=UTC)


def _create(svc: Vault, tenant: str, fields: dict[str, str]) -> str:
    [rec] = svc.records.create(ADMIN, tenant, [RecordInput(fields)], deadline=DL)
    return rec.record_id


def _tokens_in(svc: Vault, tenant: str) -> int:
    return int(svc.scalar("SELECT count(*) FROM tokens WHERE tenant = :t", t=tenant))


# --- kinds of token ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_class", "kind"),
    [
        (c, k)
        for c in sorted(VALUES)
        for k in TokenKind
        if k is not TokenKind.FORMAT_PRESERVING or c in FPE
    ],
)
def test_every_class_and_kind_reveals_the_value_given(
    svc: Vault, tenant: str, field_class: str, kind: TokenKind
) -> None:
    value = VALUES[field_class]
    [token] = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem(value, field_class, kind)], deadline=DL
    )
    assert token != value
    if kind is not TokenKind.FORMAT_PRESERVING:
        assert TOKEN_RE.fullmatch(token)
        assert token.startswith(f"tok_{field_class}_")
    # a process with empty key caches reads it too (the pool key unwrapped through the keyring)
    [revealed] = svc.restart().tokens.reveal(ADMIN, tenant, [token], deadline=DL)
    assert (revealed.error, revealed.output, revealed.value, revealed.field_class) == (
        None,
        Output.PLAIN,
        value,
        field_class,
    )


def test_random_tokens_are_fresh_for_every_value(svc: Vault, tenant: str) -> None:
    items = [TokenizeItem(VALUES["email"], "email")] * 3
    tokens = svc.tokens.tokenize(ADMIN, tenant, items, deadline=DL)
    again = svc.tokens.tokenize(ADMIN, tenant, items[:1], deadline=DL)
    assert len(set(tokens + again)) == 4


def test_deterministic_tokens_are_one_per_normalized_value_tenant_and_scope(
    svc: Vault, tenant: str
) -> None:
    def det(value: str, field_class: str = "email", scope: str = "s1", t: str = tenant) -> str:
        [token] = svc.tokens.tokenize(
            ADMIN,
            t,
            [TokenizeItem(value, field_class, TokenKind.DETERMINISTIC, scope=scope)],
            deadline=DL,
        )
        return token

    first = det("Ada@Example.COM")
    assert det("ada@example.com") == first  # emails compare case-insensitively
    assert det("Ada@Example.COM") == first  # and across calls
    assert det("ada@example.com", scope="s2") != first
    assert det("ada@example.com", scope="") != first
    assert det("ada@example.com", t=tenant + "-other") != first
    assert det("+44 20 7946 0958", "phone") == det("+442079460958", "phone")  # E.164
    assert det("ben@example.com") != first
    # the first spelling tokenized in the scope is what a reveal gives back
    [revealed] = svc.tokens.reveal(ADMIN, tenant, [first], deadline=DL)
    assert revealed.value == "Ada@Example.COM"
    assert _tokens_in(svc, tenant) == 5  # three email scopes, the phone, ben


def test_deterministic_tokens_in_one_batch_are_one_row(svc: Vault, tenant: str) -> None:
    item = TokenizeItem(VALUES["email"], "email", TokenKind.DETERMINISTIC, scope="s")
    a, b = svc.tokens.tokenize(ADMIN, tenant, [item, item], deadline=DL)
    assert a == b
    assert _tokens_in(svc, tenant) == 1


def test_format_preserving_tokens_keep_the_shape(svc: Vault, tenant: str) -> None:
    fp = TokenKind.FORMAT_PRESERVING
    card, phone, email, dob, iban, ip = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["card_number"], "card_number", fp),
            TokenizeItem(VALUES["phone"], "phone", fp),
            TokenizeItem(VALUES["email"], "email", fp),
            TokenizeItem(VALUES["date_of_birth"], "date_of_birth", fp),
            TokenizeItem(VALUES["iban"], "iban", fp),
            TokenizeItem(VALUES["ip_address"], "ip_address", fp),
        ],
        deadline=DL,
    )
    assert luhn.is_valid(card)
    assert (card[0], len(card)) == ("4", 16)
    assert phone.startswith("+999")
    assert email.endswith("@example.com")
    assert email != VALUES["email"]
    assert dob[:4] == "1990"
    assert stdnum_iban.is_valid(iban)
    assert iban[:2] == "GB"
    documentation = [
        ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
    ]
    assert any(ipaddress.ip_address(ip) in n for n in documentation)


@pytest.mark.parametrize("field_class", ["card_number", "phone"])
def test_format_preserving_tokens_keep_the_last_four_on_request(
    svc: Vault, tenant: str, field_class: str
) -> None:
    value = VALUES[field_class]
    tokens = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem(value, field_class, TokenKind.FORMAT_PRESERVING, keep_last_four=True)] * 5,
        deadline=DL,
    )
    assert len(set(tokens)) == 5  # unique in the tenant, though the value is the same
    for token in tokens:
        assert token != value
        assert token[-4:] == value[-4:]
    revealed = svc.tokens.reveal(ADMIN, tenant, tokens, deadline=DL)
    assert {r.value for r in revealed} == {value}


def test_keep_last_four_is_refused_for_an_email(svc: Vault, tenant: str) -> None:
    item = TokenizeItem(VALUES["email"], "email", TokenKind.FORMAT_PRESERVING, keep_last_four=True)
    with pytest.raises(InvalidInput) as caught:
        svc.tokens.tokenize(ADMIN, tenant, [item], deadline=DL)
    assert caught.value.field == "items[0].keep_last_four"
    assert _tokens_in(svc, tenant) == 0


# --- lifetimes -----------------------------------------------------------------------------


def test_a_token_past_its_ttl_reveals_as_expired_and_is_purged(svc: Vault, tenant: str) -> None:
    brief, lasting = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["email"], "email", ttl_seconds=60),
            TokenizeItem(VALUES["phone"], "phone", ttl_seconds=3600),
        ],
        deadline=DL,
    )
    assert [r.error for r in svc.tokens.reveal(ADMIN, tenant, [brief], deadline=DL)] == [None]
    svc.set_time("tokens", "expires_at", PAST, tenant=tenant, token=brief)
    expired, alive = svc.tokens.reveal(ADMIN, tenant, [brief, lasting], deadline=DL)
    assert (expired.error, expired.reason, expired.field_class, expired.value) == (
        TokenError.EXPIRED,
        "expired",
        "email",
        "",
    )
    assert (alive.error, alive.value) == (None, VALUES["phone"])
    assert svc.tokens.purge_expired() == 1
    gone, alive = svc.tokens.reveal(ADMIN, tenant, [brief, lasting], deadline=DL)
    assert (gone.error, alive.error) == (TokenError.UNKNOWN, None)


def test_an_expired_deterministic_token_is_issued_afresh(svc: Vault, tenant: str) -> None:
    item = TokenizeItem(
        VALUES["email"], "email", TokenKind.DETERMINISTIC, scope="s", ttl_seconds=60
    )
    [token] = svc.tokens.tokenize(ADMIN, tenant, [item], deadline=DL)
    svc.set_time("tokens", "expires_at", PAST, tenant=tenant, token=token)
    assert svc.tokens.tokenize(ADMIN, tenant, [item], deadline=DL) == [token]
    [revealed] = svc.tokens.reveal(ADMIN, tenant, [token], deadline=DL)
    assert (revealed.error, revealed.value) == (None, VALUES["email"])


@pytest.mark.parametrize("ttl", [-1, 10 * 366 * 86_400 + 1])
def test_a_ttl_out_of_range_is_refused(svc: Vault, tenant: str, ttl: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.tokens.tokenize(
            ADMIN, tenant, [TokenizeItem(VALUES["email"], "email", ttl_seconds=ttl)], deadline=DL
        )
    assert caught.value.field == "items[0].ttl_seconds"


# --- linked tokens -------------------------------------------------------------------------


def test_linked_tokens_are_erased_with_their_record(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant, {"email": VALUES["email"], "phone": VALUES["phone"]})
    kept = _create(svc, tenant, {"email": "ben@example.com"})
    email, phone, other = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["email"], "email", TokenKind.DETERMINISTIC, record_id=rid),
            TokenizeItem(VALUES["phone"], "phone", TokenKind.FORMAT_PRESERVING, record_id=rid),
            TokenizeItem("ben@example.com", "email", record_id=kept),
        ],
        deadline=DL,
    )
    svc.records.delete(ADMIN, tenant, rid, deadline=DL)
    results = svc.tokens.reveal(ADMIN, tenant, [email, phone, other], deadline=DL)
    assert [(r.error, r.reason, r.field_class, r.value) for r in results] == [
        (TokenError.ERASED, "erased", "email", ""),
        (TokenError.ERASED, "erased", "phone", ""),
        (None, "", "email", "ben@example.com"),
    ]


def test_a_replaced_value_takes_its_linked_tokens_with_it(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant, {"email": VALUES["email"], "phone": VALUES["phone"]})
    old_email, phone = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["email"], "email", record_id=rid),
            TokenizeItem(VALUES["phone"], "phone", record_id=rid),
        ],
        deadline=DL,
    )
    svc.records.update(
        ADMIN, tenant, rid, expected_version=1, set_fields={"email": "new@example.com"}, deadline=DL
    )
    gone, kept = svc.tokens.reveal(ADMIN, tenant, [old_email, phone], deadline=DL)
    assert (gone.error, kept.error, kept.value) == (TokenError.ERASED, None, VALUES["phone"])


def test_a_token_links_only_to_a_live_record_of_its_tenant(svc: Vault, tenant: str) -> None:
    elsewhere = _create(svc, tenant + "-other", {"email": VALUES["email"]})
    erased = _create(svc, tenant, {"email": VALUES["email"]})
    svc.records.delete(ADMIN, tenant, erased, deadline=DL)
    good = TokenizeItem(VALUES["email"], "email")
    for rid, error in ((elsewhere, NotFound), (erased, Erased)):
        linked = TokenizeItem(VALUES["email"], "email", record_id=rid)
        with pytest.raises(error):
            svc.tokens.tokenize(ADMIN, tenant, [good, linked], deadline=DL)
    assert _tokens_in(svc, tenant) == 0  # all or nothing: the good item was not written


def test_tokenize_is_audited_per_linked_record_and_once_for_standalone_values(
    svc: Vault, tenant: str
) -> None:
    a = _create(svc, tenant, {"email": VALUES["email"]})
    b = _create(svc, tenant, {"email": "ben@example.com"})
    svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["email"], "email", record_id=a),
            TokenizeItem(VALUES["phone"], "phone", record_id=a),
            TokenizeItem("ben@example.com", "email", record_id=b),
            TokenizeItem("loose@example.com", "email"),
            TokenizeItem(VALUES["iban"], "iban"),
        ],
        deadline=DL,
    )
    rows = svc.audit_rows(tenant, "token.create")
    assert {(r.record_ref, r.field_classes, r.outcome, r.principal) for r in rows} == {
        (svc.ref(tenant, a), ("email", "phone"), "allowed", ADMIN.principal.name),
        (svc.ref(tenant, b), ("email",), "allowed", ADMIN.principal.name),
        (None, ("email", "iban"), "allowed", ADMIN.principal.name),
    }
    assert len(rows) == 3


# --- reveal: per-token outcomes ------------------------------------------------------------


def test_tokens_not_issued_in_the_tenant_are_unknown_and_fail_nothing_else(
    svc: Vault, tenant: str
) -> None:
    [mine] = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem("a@example.com", "email")], deadline=DL
    )
    [theirs] = svc.tokens.tokenize(
        ADMIN, tenant + "-other", [TokenizeItem("b@example.com", "email")], deadline=DL
    )
    crafted = "tok_email_" + "A" * 22
    altered = mine[:-1] + ("B" if mine[-1] != "B" else "C")
    asked = [crafted, mine, theirs, altered, "", "x" * 300, mine]
    results = svc.tokens.reveal(ADMIN, tenant, asked, deadline=DL)
    assert [r.token for r in results] == asked  # in order, repeats included
    assert [(r.error, r.reason) for r in results] == [
        (TokenError.UNKNOWN, "unknown_token"),
        (None, ""),
        (TokenError.UNKNOWN, "unknown_token"),
        (TokenError.UNKNOWN, "unknown_token"),
        (TokenError.UNKNOWN, "unknown_token"),
        (TokenError.UNKNOWN, "unknown_token"),
        (None, ""),
    ]
    assert results[1].value == "a@example.com"
    assert all(r.value == "" for r in results if r.error)


def test_a_consent_bound_purpose_reveals_only_what_the_customer_consented_to(
    svc: Vault, tenant: str
) -> None:
    consented = _create(svc, tenant, {"email": VALUES["email"]})
    refused = _create(svc, tenant, {"email": "ben@example.com"})
    svc.consent.update(
        ADMIN, tenant, consented, ["marketing"], expected_version=0, source="web", deadline=DL
    )
    yes, no, loose = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["email"], "email", record_id=consented),
            TokenizeItem("ben@example.com", "email", record_id=refused),
            TokenizeItem("loose@example.com", "email"),  # no customer, so no consent
        ],
        deadline=DL,
    )
    marketing = caller_of("backend-service", "marketing")
    results = svc.tokens.reveal(marketing, tenant, [yes, no, loose], deadline=DL)
    assert [(r.error, r.reason, r.value) for r in results] == [
        (None, "", VALUES["email"]),
        (TokenError.DENIED, "consent_required", ""),
        (TokenError.DENIED, "consent_required", ""),
    ]
    rows = svc.audit_rows(tenant, "token.reveal")
    assert {(r.record_ref, r.outcome, r.reason, r.purpose) for r in rows} == {
        (svc.ref(tenant, consented), "allowed", "", "marketing"),
        (svc.ref(tenant, refused), "denied", "consent_required", "marketing"),
        (None, "denied", "consent_required", "marketing"),
    }


def test_each_token_comes_back_as_the_role_gets_its_class(svc: Vault, tenant: str) -> None:
    email, card, iban = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["email"], "email"),
            TokenizeItem("4111 1111 1111 1111", "card_number"),
            TokenizeItem(VALUES["iban"], "iban"),
        ],
        deadline=DL,
    )
    backend = caller_of("backend-service", "account-management")
    results = svc.tokens.reveal(backend, tenant, [email, card, iban], deadline=DL)
    # masks are computed on the canonical form, whatever spelling was tokenized
    assert [(r.output, r.value) for r in results] == [
        (Output.PLAIN, VALUES["email"]),
        (Output.MASKED, mask(FieldClass.CARD_NUMBER, "4111111111111111")),
        (Output.MASKED, mask(FieldClass.IBAN, VALUES["iban"])),
    ]
    # marketing lowers everything but email and name to omit
    marketing = caller_of("backend-service", "marketing")
    rid = _create(svc, tenant, {"phone": VALUES["phone"]})
    svc.consent.update(
        ADMIN, tenant, rid, ["marketing"], expected_version=0, source="web", deadline=DL
    )
    [phone] = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem(VALUES["phone"], "phone", record_id=rid)], deadline=DL
    )
    [omitted] = svc.tokens.reveal(marketing, tenant, [phone], deadline=DL)
    assert (omitted.error, omitted.output, omitted.value) == (None, Output.OMIT, "")


# --- reveal: who may ask, and how ----------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "error", "field_or_reason"),
    [
        (caller_of("ai-pipeline", "analytics"), PermissionDenied, "action_not_allowed"),
        (caller_of("fraud-analyst", "marketing"), PermissionDenied, "purpose_not_allowed"),
        (caller_of("fraud-analyst"), InvalidInput, "purpose"),
        (caller_of("fraud-analyst", "gossip"), InvalidInput, "purpose"),
    ],
)
def test_a_reveal_is_refused_before_any_token_is_read(
    svc: Vault,
    tenant: str,
    caller: Caller,
    error: type[Exception],
    field_or_reason: str,
) -> None:
    [token] = svc.tokens.tokenize(
        ADMIN, tenant, [TokenizeItem("a@example.com", "email")], deadline=DL
    )
    with pytest.raises(error) as caught:
        svc.tokens.reveal(caller, tenant, [token], deadline=DL)
    exc = caught.value
    assert (exc.field if isinstance(exc, InvalidInput) else getattr(exc, "reason", "")) == (
        field_or_reason
    )
    [denial] = svc.audit_rows(tenant, "token.reveal")
    assert (denial.outcome, denial.principal) == ("denied", caller.principal.name)
    assert denial.reason == (
        "invalid_argument" if isinstance(exc, InvalidInput) else field_or_reason
    )


@pytest.mark.parametrize(
    ("tenant_arg", "tokens", "field"),
    [
        ("", ["tok_email_" + "A" * 22], "tenant"),
        ("bad tenant", ["tok_email_" + "A" * 22], "tenant"),
        ("t-ok", [], "tokens"),
        ("t-ok", ["tok_email_" + "A" * 22] * 10_001, "tokens"),
    ],
)
def test_bad_reveal_requests_name_the_field(
    svc: Vault, tenant_arg: str, tokens: list[str], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.tokens.reveal(ADMIN, tenant_arg, tokens, deadline=DL)
    assert caught.value.field == field


def test_a_reveal_over_the_limit_reveals_nothing_and_counts_nothing(
    factory: ServiceFactory, tenant: str
) -> None:
    now = [1_800_000_000.0]  # a minute's start: the fraud analyst may have 30 a minute
    svc = factory.build(clock=lambda: now[0])
    tokens = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem(f"p{i}@example.com", "email") for i in range(31)],
        deadline=DL,
    )
    with pytest.raises(ResourceExhausted) as caught:
        svc.tokens.reveal(FRAUD, tenant, tokens, deadline=DL)
    assert caught.value.reason == "limit_exceeded"
    assert svc.scalar("SELECT count(*) FROM rate_counters") == 0
    assert svc.audit_rows(tenant, "token.reveal") == []
    [limit] = svc.audit_rows(tenant, "limit.exceeded")
    assert (limit.outcome, limit.reason, limit.principal, limit.field_classes) == (
        "denied",
        "limit_exceeded",
        FRAUD.principal.name,
        ("email",),
    )
    # within the limit it goes through; one more in the same minute does not
    assert len(svc.tokens.reveal(FRAUD, tenant, tokens[:30], deadline=DL)) == 30
    with pytest.raises(ResourceExhausted):
        svc.tokens.reveal(FRAUD, tenant, tokens[30:], deadline=DL)
    now[0] += 60  # the next minute
    [last] = svc.tokens.reveal(FRAUD, tenant, tokens[30:], deadline=DL)
    assert last.value == "p30@example.com"


def test_a_reveal_is_audited_per_record_before_values_leave(svc: Vault, tenant: str) -> None:
    a = _create(svc, tenant, {"email": VALUES["email"]})
    linked, loose = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(VALUES["email"], "email", record_id=a),
            TokenizeItem(VALUES["phone"], "phone"),
        ],
        deadline=DL,
    )
    svc.tokens.reveal(ADMIN, tenant, [linked, loose], deadline=DL)
    rows = svc.audit_rows(tenant, "token.reveal")
    assert {(r.record_ref, r.field_classes, r.outcome, r.purpose) for r in rows} == {
        (svc.ref(tenant, a), ("email",), "allowed", TEST_PURPOSE),
        (None, ("phone",), "allowed", TEST_PURPOSE),
    }


# --- tokenize: bad input, all or nothing ---------------------------------------------------


def _item(**kwargs: object) -> TokenizeItem:
    fields: dict[str, object] = {"value": VALUES["email"], "field_class": "email", **kwargs}
    return TokenizeItem(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([_item()] * 10_001, "items"),
        ([_item(), _item(field_class="shoe_size")], "items[1].field_class"),
        ([_item(value="")], "items[0].value"),
        ([_item(value="a" * (DEFAULT_MAX_LENGTH[FieldClass.EMAIL] + 1))], "items[0].value"),
        ([_item(value="bad\ud800surrogate")], "items[0].value"),
        ([_item(scope="two words")], "items[0].scope"),
        ([_item(record_id="not-a-record-id")], "items[0].record_id"),
        (
            [_item(field_class="address", value="1 Road", kind=TokenKind.FORMAT_PRESERVING)],
            "items[0].kind",
        ),
        (
            [_item(field_class="free_text", value="x", kind=TokenKind.FORMAT_PRESERVING)],
            "items[0].kind",
        ),
        (
            [_item(), _item(value="not an email", kind=TokenKind.FORMAT_PRESERVING)],
            "items[1].value",
        ),
        (
            [
                _item(
                    field_class="card_number",
                    value="4111111111111112",
                    kind=TokenKind.FORMAT_PRESERVING,
                )
            ],
            "items[0].value",
        ),
    ],
)
def test_a_bad_item_fails_the_whole_batch_naming_its_field(
    svc: Vault, tenant: str, items: list[TokenizeItem], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.tokens.tokenize(ADMIN, tenant, items, deadline=DL)
    assert caught.value.field == field
    assert _tokens_in(svc, tenant) == 0
    assert svc.audit_rows(tenant) == []  # bad input is not an event: nothing happened


def test_tokenize_needs_token_create(svc: Vault, tenant: str) -> None:
    with pytest.raises(PermissionDenied) as caught:
        svc.tokens.tokenize(FRAUD, tenant, [_item()], deadline=DL)
    assert caught.value.reason == "action_not_allowed"
    [denial] = svc.audit_rows(tenant)
    assert (denial.action, denial.outcome, denial.role) == (
        "token.create",
        "denied",
        "fraud-analyst",
    )
    assert _tokens_in(svc, tenant) == 0


def test_erasure_reaches_standalone_tokens_of_the_customers_values(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant, {"email": VALUES["email"]})
    [loose] = svc.tokens.tokenize(ADMIN, tenant, [_item()], deadline=DL)
    svc.records.delete(ADMIN, tenant, rid, deadline=DL)
    [revealed] = svc.tokens.reveal(ADMIN, tenant, [loose], deadline=DL)
    assert revealed.error is TokenError.ERASED


def test_erasure_reaches_every_kind_scope_and_spelling_and_counts_them(
    svc: Vault, tenant: str
) -> None:
    rid = _create(svc, tenant, {"email": VALUES["email"], "phone": VALUES["phone"]})
    [linked] = svc.tokens.tokenize(ADMIN, tenant, [_item(record_id=rid)], deadline=DL)
    reached = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            _item(),
            _item(kind=TokenKind.DETERMINISTIC, scope="s1"),
            _item(value="ADA@Example.com", kind=TokenKind.DETERMINISTIC, scope="s2"),
            _item(value="Ada@example.com", kind=TokenKind.DETERMINISTIC, scope="c", exact=True),
            _item(kind=TokenKind.FORMAT_PRESERVING),
            _item(value="+44 20 7946 0958", field_class="phone", kind=TokenKind.RANDOM),
        ],
        deadline=DL,
    )
    kept = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [_item(value="grace@example.com"), _item(value=VALUES["email"], field_class="name")],
        deadline=DL,
    )
    other = f"{tenant}-b"
    [foreign] = svc.tokens.tokenize(ADMIN, other, [_item()], deadline=DL)
    receipt = svc.records.delete(ADMIN, tenant, rid, deadline=DL)
    assert receipt.tokens_erased == 1 + len(reached)
    revealed = svc.tokens.reveal(ADMIN, tenant, [linked, *reached, *kept], deadline=DL)
    assert [r.error for r in revealed] == [TokenError.ERASED] * (1 + len(reached)) + [None] * 2
    [still] = svc.tokens.reveal(ADMIN, other, [foreign], deadline=DL)
    assert still.value == VALUES["email"]
    # the ciphertexts are gone from the table, and a repeated erasure gives the first receipt
    emptied = svc.scalar(
        "SELECT count(*) FROM tokens WHERE tenant = :t AND length(ciphertext) = 0", t=tenant
    )
    assert emptied == len(reached)
    assert svc.records.delete(ADMIN, tenant, rid, deadline=DL) == receipt


def test_a_value_tokenized_again_after_an_erasure_reveals(svc: Vault, tenant: str) -> None:
    rid = _create(svc, tenant, {"email": VALUES["email"]})
    det = _item(kind=TokenKind.DETERMINISTIC, scope="s")
    [before] = svc.tokens.tokenize(ADMIN, tenant, [det], deadline=DL)
    svc.records.delete(ADMIN, tenant, rid, deadline=DL)
    [again] = svc.tokens.tokenize(ADMIN, tenant, [det], deadline=DL)
    assert again == before  # the same deterministic token, issued afresh for a new value
    [revealed] = svc.tokens.reveal(ADMIN, tenant, [again], deadline=DL)
    assert revealed.value == VALUES["email"]


def test_tokens_linked_to_another_live_record_of_the_value_stay(svc: Vault, tenant: str) -> None:
    first = _create(svc, tenant, {"email": VALUES["email"]})
    second = _create(svc, tenant, {"email": VALUES["email"]})
    [theirs] = svc.tokens.tokenize(ADMIN, tenant, [_item(record_id=second)], deadline=DL)
    receipt = svc.records.delete(ADMIN, tenant, first, deadline=DL)
    assert receipt.tokens_erased == 0
    [revealed] = svc.tokens.reveal(ADMIN, tenant, [theirs], deadline=DL)
    assert revealed.value == VALUES["email"]
