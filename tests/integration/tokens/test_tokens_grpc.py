"""The Tokens service over gRPC against real OpenBao, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from stdnum import luhn

from tests.support import ADMIN_KEY, SAMPLE, TEST_PURPOSE, sample_record
from vault import errors
from vault.client import StreamSummary, TokenItem, VaultClient
from vault.crypto import TOKEN_RE
from vault.service import RecordsService
from vault.service.services import Services
from vault.storage import Database

pytestmark = pytest.mark.openbao

VALUES = {
    "email": SAMPLE["email"],
    "phone": "+442079460958",
    "name": SAMPLE["full_name"],
    "date_of_birth": SAMPLE["date_of_birth"],
    "national_id": SAMPLE["national_id"],
    "card_number": "4111111111111111",
    "iban": "GB82WEST12345698765432",
    "ip_address": "198.51.100.23",
}


def _other_tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("kind", ["random", "deterministic", "format_preserving"])
def test_every_kind_and_class_round_trips(
    admin_client: VaultClient, tenant: str, kind: str
) -> None:
    items = [TokenItem(v, c, kind) for c, v in VALUES.items()]
    tokens = admin_client.tokenize(tenant, items)
    assert len(tokens) == len(items)
    for token, (c, v) in zip(tokens, VALUES.items(), strict=True):
        assert token != v
        if kind != "format_preserving":
            assert TOKEN_RE.fullmatch(token)
            assert token.startswith(f"tok_{c}_")
    revealed = admin_client.reveal(tenant, tokens, purpose=TEST_PURPOSE)
    assert [(r.error, r.output, r.value, r.field_class) for r in revealed] == [
        ("", "plain", v, c) for c, v in VALUES.items()
    ]


def test_format_preserving_tokens_keep_the_shape(admin_client: VaultClient, tenant: str) -> None:
    card, phone, email, dob, card_keep = admin_client.tokenize(
        tenant,
        [
            TokenItem("4111111111111111", "card_number", "format_preserving"),
            TokenItem("+442079460958", "phone", "format_preserving"),
            TokenItem(SAMPLE["email"], "email", "format_preserving"),
            TokenItem("1990-12-10", "date_of_birth", "format_preserving"),
            TokenItem("4111111111111111", "card_number", "format_preserving", keep_last_four=True),
        ],
    )
    assert len(card) == 16
    assert luhn.is_valid(card)
    assert card_keep.endswith("1111")
    assert luhn.is_valid(card_keep)
    assert phone.startswith("+")
    assert phone[1:].isdigit()
    assert email.endswith("@example.com")  # RFC 2606 reserved (email-validator refuses .invalid)
    assert email != SAMPLE["email"].lower()
    assert dob.startswith("1990-")
    assert dob != "1990-12-10"


def test_deterministic_tokens_link_within_a_scope_only(
    admin_client: VaultClient, tenant: str
) -> None:
    value = SAMPLE["email"]
    a1, a2, b, none = admin_client.tokenize(
        tenant,
        [
            TokenItem(value, "email", "deterministic", scope="chat-1"),
            TokenItem(value, "email", "deterministic", scope="chat-1"),
            TokenItem(value, "email", "deterministic", scope="chat-2"),
            TokenItem(value, "email", "deterministic"),
        ],
    )
    assert a1 == a2
    assert len({a1, b, none}) == 3
    # across calls, and with another (normalized-equal) spelling of the address
    [again] = admin_client.tokenize(
        tenant, [TokenItem(value.lower(), "email", "deterministic", scope="chat-1")]
    )
    assert again == a1
    [elsewhere] = admin_client.tokenize(
        _other_tenant(), [TokenItem(value, "email", "deterministic", scope="chat-1")]
    )
    assert elsewhere != a1
    r1, r2 = admin_client.tokenize(tenant, [TokenItem(value, "email"), TokenItem(value, "email")])
    assert r1 != r2


def test_reveal_reports_problems_per_token(
    admin_client: VaultClient, tenant: str, database: Database
) -> None:
    good, short = admin_client.tokenize(
        tenant,
        [TokenItem(SAMPLE["email"], "email"), TokenItem(SAMPLE["phone"], "phone", ttl_seconds=60)],
    )
    with database.engine.begin() as conn:
        conn.execute(
            text("UPDATE tokens SET expires_at = :t WHERE tenant = :n AND token = :k"),
            {"t": datetime.now(UTC) - timedelta(seconds=1), "n": tenant, "k": short},
        )
    [foreign] = admin_client.tokenize(_other_tenant(), [TokenItem(SAMPLE["email"], "email")])
    crafted = "tok_email_" + "A" * 22
    results = admin_client.reveal(
        tenant, [good, short, foreign, crafted, "x" * 300, good], purpose=TEST_PURPOSE
    )
    assert [(r.error, r.value) for r in results] == [
        ("", SAMPLE["email"]),
        ("expired", ""),
        ("unknown", ""),
        ("unknown", ""),
        ("unknown", ""),
        ("", SAMPLE["email"]),
    ]


def test_tokens_of_an_erased_record_reveal_as_erased(
    admin_client: VaultClient, tenant: str
) -> None:
    record = sample_record(1)
    created = admin_client.create_record(tenant, record)
    linked, det = admin_client.tokenize(
        tenant,
        [
            TokenItem(record["email"], "email", record_id=created.record_id),
            TokenItem(
                record["card_number"], "card_number", "deterministic", record_id=created.record_id
            ),
        ],
    )
    before = admin_client.reveal(tenant, [linked, det], purpose=TEST_PURPOSE)
    assert [r.value for r in before] == [record["email"], record["card_number"]]
    admin_client.delete_record(tenant, created.record_id)
    after = admin_client.reveal(tenant, [linked, det], purpose=TEST_PURPOSE)
    assert [(r.error, r.value) for r in after] == [("erased", ""), ("erased", "")]
    # the same value tokenized again (standalone) gets the same deterministic token, readable
    [again] = admin_client.tokenize(
        tenant, [TokenItem(record["card_number"], "card_number", "deterministic")]
    )
    assert again == det
    [r] = admin_client.reveal(tenant, [again], purpose=TEST_PURPOSE)
    assert (r.error, r.value) == ("", record["card_number"])


def test_linking_to_a_missing_or_erased_record_fails(
    admin_client: VaultClient, tenant: str
) -> None:
    with pytest.raises(errors.NotFound):
        admin_client.tokenize(
            tenant, [TokenItem("x@example.org", "email", record_id=str(uuid.uuid4()))]
        )
    created = admin_client.create_record(tenant, sample_record(2))
    admin_client.delete_record(tenant, created.record_id)
    with pytest.raises(errors.Erased):
        admin_client.tokenize(
            tenant, [TokenItem("x@example.org", "email", record_id=created.record_id)]
        )


def test_consent_bound_purpose_needs_the_records_consent(
    admin_client: VaultClient, tenant: str
) -> None:
    record = sample_record(3)
    created = admin_client.create_record(tenant, record)
    linked, standalone = admin_client.tokenize(
        tenant,
        [
            TokenItem(record["email"], "email", record_id=created.record_id),
            TokenItem(record["email"], "email"),
        ],
    )
    results = admin_client.reveal(tenant, [linked, standalone], purpose="marketing")
    assert [(r.error, r.reason, r.value) for r in results] == [
        ("denied", "consent_required", ""),
        ("denied", "consent_required", ""),
    ]
    admin_client.update_consent(
        tenant, created.record_id, ["marketing"], expected_version=0, source="test"
    )
    results = admin_client.reveal(tenant, [linked, standalone], purpose="marketing")
    assert [(r.error, r.value) for r in results] == [
        ("", record["email"]),
        ("denied", ""),
    ]


def test_a_tokens_only_role_cannot_reveal(
    admin_client: VaultClient, client: VaultClient, tenant: str
) -> None:
    tokens = client.tokenize(tenant, [TokenItem(SAMPLE["email"], "email")])
    with pytest.raises(errors.PermissionDenied):
        client.reveal(tenant, tokens, purpose=TEST_PURPOSE)
    assert admin_client.reveal(tenant, tokens, purpose=TEST_PURPOSE)[0].value == SAMPLE["email"]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (TokenItem("", "email"), "items[1].value"),
        (TokenItem("a", "no_such_class"), "items[1].field_class"),
        (TokenItem(SAMPLE["email"], "email", scope="bad scope!"), "items[1].scope"),
        (TokenItem(SAMPLE["email"], "email", record_id="nope"), "items[1].record_id"),
        (TokenItem(SAMPLE["notes"], "free_text", "format_preserving"), "items[1].kind"),
        (TokenItem(SAMPLE["full_name"], "card_number", "format_preserving"), "items[1].value"),
        (TokenItem("x" * 255, "email"), "items[1].value"),
    ],
)
def test_bad_items_fail_the_call_naming_the_item(
    admin_client: VaultClient, tenant: str, database: Database, item: TokenItem, field: str
) -> None:
    with database.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM tokens")).scalar_one()
    with pytest.raises(errors.InvalidInput) as caught:
        admin_client.tokenize(tenant, [TokenItem(SAMPLE["phone"], "phone"), item])
    assert caught.value.field == field
    if len(item.value) > 3:
        assert item.value not in str(caught.value)
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tokens")).scalar_one() == before


def test_streams_answer_every_batch_and_end_with_a_summary(
    admin_client: VaultClient, tenant: str
) -> None:
    batches = [
        [TokenItem(f"user{b}.{i}@example.org", "email") for i in range(50)] for b in range(4)
    ]
    out = list(admin_client.stream_tokenize(tenant, iter(batches)))
    assert isinstance(out[-1], StreamSummary)
    assert (out[-1].batches, out[-1].values) == (4, 200)
    token_batches = [b for b in out[:-1] if isinstance(b, list)]
    assert [len(b) for b in token_batches] == [50] * 4
    revealed = list(
        admin_client.stream_reveal(
            tenant, iter([*token_batches, ["tok_email_" + "B" * 22]]), purpose=TEST_PURPOSE
        )
    )
    summary = revealed[-1]
    assert isinstance(summary, StreamSummary)
    assert (summary.batches, summary.values, summary.errors) == (5, 201, 1)
    values = [r.value for b in revealed[:-2] if isinstance(b, list) for r in b]
    assert values == [i.value for b in batches for i in b]


def test_tokenize_many_batches_lazily(admin_client: VaultClient, tenant: str) -> None:
    items = (TokenItem(f"n{i}@example.org", "email", "deterministic") for i in range(2500))
    tokens = list(admin_client.tokenize_many(tenant, items, batch_size=1000))
    assert len(tokens) == len(set(tokens)) == 2500
    again = admin_client.tokenize(
        tenant, [TokenItem("n2499@example.org", "email", "deterministic")]
    )
    assert again == [tokens[-1]]


def test_purge_removes_only_expired_tokens(
    admin_client: VaultClient, tenant: str, database: Database, records: RecordsService
) -> None:
    keep, gone = admin_client.tokenize(
        tenant,
        [TokenItem(SAMPLE["email"], "email"), TokenItem(SAMPLE["email"], "email", ttl_seconds=5)],
    )
    with database.engine.begin() as conn:
        conn.execute(
            text("UPDATE tokens SET expires_at = :t WHERE tenant = :n AND token = :k"),
            {"t": datetime.now(UTC) - timedelta(seconds=1), "n": tenant, "k": gone},
        )
    service = Services.over(records.core).tokens
    assert service.purge_expired() >= 1
    with database.engine.connect() as conn:
        left = set(
            conn.execute(
                text("SELECT token FROM tokens WHERE tenant = :n"), {"n": tenant}
            ).scalars()
        )
    assert left == {keep}


def test_api_key_of_admin_is_not_a_token(admin_client: VaultClient, tenant: str) -> None:
    """Sanity: a credential passed as a token is just unknown (and not echoed)."""
    [r] = admin_client.reveal(tenant, [ADMIN_KEY], purpose=TEST_PURPOSE)
    assert (r.error, r.value) == ("unknown", "")


def test_tokenized_record_views_join_on_scoped_tokens(
    admin_client: VaultClient, client: VaultClient, tenant: str
) -> None:
    shared = sample_record(4)
    a = admin_client.create_record(tenant, shared)
    b = admin_client.create_record(tenant, {**sample_record(5), "email": shared["email"]})
    view_a = client.get_record(tenant, a.record_id, token_scope="training-2026")
    view_b = client.get_record(tenant, b.record_id, token_scope="training-2026")
    other = client.get_record(tenant, a.record_id, token_scope="other-set")
    plain_view = client.get_record(tenant, a.record_id)
    assert {f.output for f in view_a.fields.values()} == {"token"}
    assert view_a.fields["email"].value == view_b.fields["email"].value
    assert view_a.fields["phone"].value != view_b.fields["phone"].value
    assert other.fields["email"].value != view_a.fields["email"].value
    assert plain_view.fields["email"].value == a.tokens["email"]
    assert plain_view.fields["email"].value != view_a.fields["email"].value
    # no Tokenize call can make a view token (else guesses could be tested against views):
    # not even test-admin's, which may make deterministic tokens in any scope
    [det] = admin_client.tokenize(
        tenant, [TokenItem(shared["email"], "email", "deterministic", scope="training-2026")]
    )
    assert det != view_a.fields["email"].value
    # and the tokens-only role makes no deterministic token (it has no token_scopes)
    with pytest.raises(errors.PermissionDenied) as refused:
        client.tokenize(
            tenant, [TokenItem(shared["email"], "email", "deterministic", scope="training-2026")]
        )
    assert refused.value.reason == "token_scope_not_allowed"
    with pytest.raises(errors.InvalidInput) as caught:
        client.get_record(tenant, a.record_id, token_scope="bad scope")
    assert caught.value.field == "token_scope"
