"""TokenizeText and RevealText: PII spans become scope tokens, the values come back exactly for
a caller allowed to see them, tokens the vault did not issue are reported and never guessed
at, and a streamed reveal gives what the whole-text reveal gives, however the text is split."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import ADMIN, caller_of
from tests.unit.service.service_support import DL, Vault, factory_in, new_tenant
from vault.errors import InvalidInput, PermissionDenied
from vault.policy import Output, mask
from vault.schema import FieldClass
from vault.service import Caller
from vault.service.text import RevealedText, TextChunk
from vault.service.tokens import TokenError, TokenizeItem

CHAT = (
    "Hi, I'm locked out. My email is Grace.Hopper@navy.example.mil and my card 4111 1111 1111 1111"
    " was charged twice. Call me on +1 415 555 2671 or write to grace.hopper@navy.example.mil. "
    "Login from 203.0.113.9 failed; IBAN GB82 WEST 1234 5698 7654 32; SSN 536-90-4399."
)
CHAT_CLASSES = [
    "email",
    "card_number",
    "phone",
    "email",
    "ip_address",
    "iban",
    "national_id",
]
INVENTED = "tok_email_" + "Q" * 22


def _redact(svc: Vault, tenant: str, text: str, scope: str = "chat-1") -> tuple[str, list[str]]:
    [redacted] = svc.texts.tokenize_text(ADMIN, tenant, [text], scope=scope, deadline=DL)
    return redacted.text, [s.token for s in redacted.spans]


# --- tokenize ------------------------------------------------------------------------------


def test_every_span_is_replaced_by_a_token_of_the_scope(svc: Vault, tenant: str) -> None:
    [redacted] = svc.texts.tokenize_text(ADMIN, tenant, [CHAT], scope="chat-1", deadline=DL)
    assert [s.field_class for s in redacted.spans] == CHAT_CLASSES
    pieces, at = [], 0
    for span in redacted.spans:
        assert span.token.startswith(f"tok_{span.field_class}_")
        pieces += [CHAT[at : span.start], span.token]
        at = span.end
    assert redacted.text == "".join(pieces) + CHAT[at:]  # offsets are those of the original
    assert "4111" not in redacted.text
    assert "navy.example.mil" not in redacted.text
    # exact-string tokens: two spellings of one address get two tokens, each restored as is
    assert redacted.spans[0].token != redacted.spans[3].token
    # the same scope gives the same tokens across calls; another scope gives unlinkable ones
    again, _ = _redact(svc, tenant, CHAT)
    assert again == redacted.text
    _, other = _redact(svc, tenant, CHAT, scope="chat-2")
    assert set(other).isdisjoint(s.token for s in redacted.spans)


def test_a_value_repeated_across_texts_of_a_batch_gets_one_token(svc: Vault, tenant: str) -> None:
    first, second = svc.texts.tokenize_text(
        ADMIN, tenant, ["mail ada@example.org", "ada@example.org again"], scope="s", deadline=DL
    )
    assert first.spans[0].token == second.spans[0].token
    assert svc.scalar("SELECT count(*) FROM tokens WHERE tenant = :t", t=tenant) == 1


def test_a_text_without_pii_is_returned_as_is(svc: Vault, tenant: str) -> None:
    [plain] = svc.texts.tokenize_text(ADMIN, tenant, ["nothing to see"], scope="s", deadline=DL)
    assert (plain.text, plain.spans) == ("nothing to see", ())


def test_tokenize_text_is_audited_as_token_create(svc: Vault, tenant: str) -> None:
    _redact(svc, tenant, "write to ada@example.org or call +1 415 555 2671")
    [row] = svc.audit_rows(tenant, "token.create")
    assert (row.action, row.outcome, row.record_ref, row.field_classes) == (
        "token.create",
        "allowed",
        None,
        ("email", "phone"),
    )


@pytest.mark.parametrize(
    ("texts", "kwargs", "field"),
    [
        ([], {}, "texts"),
        (["x"] * 1001, {}, "texts"),
        (["short", "x" * 65_537], {}, "texts[1]"),
        (["ada@example.org"], {"scope": "two words"}, "scope"),
        (["ada@example.org"], {"scope": "s" * 65}, "scope"),
        (["ada@example.org"], {"default_region": "XX1"}, "default_region"),
    ],
)
def test_bad_tokenize_text_requests_name_the_field(
    svc: Vault, tenant: str, texts: list[str], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.texts.tokenize_text(ADMIN, tenant, texts, deadline=DL, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert svc.scalar("SELECT count(*) FROM tokens") == 0


@pytest.mark.parametrize("text", ["mail ada@example.org", "no pii here"])
def test_a_ttl_out_of_range_is_refused_naming_ttl_seconds(
    svc: Vault, tenant: str, text: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.texts.tokenize_text(
            ADMIN, tenant, [text], scope="s", ttl_seconds=10 * 366 * 86_400 + 1, deadline=DL
        )
    assert caught.value.field == "ttl_seconds"


def test_tokenize_text_is_authorized_before_its_input_is_looked_at(svc: Vault, tenant: str) -> None:
    fraud = caller_of("fraud-analyst", "fraud-investigation")
    with pytest.raises(PermissionDenied) as caught:
        svc.texts.tokenize_text(fraud, tenant, [], scope="bad scope", deadline=DL)
    assert caught.value.reason == "action_not_allowed"
    [denial] = svc.audit_rows(tenant)
    assert (denial.action, denial.outcome) == ("token.create", "denied")


# --- reveal --------------------------------------------------------------------------------


def test_reveal_text_restores_the_original_exactly(svc: Vault, tenant: str) -> None:
    redacted, tokens = _redact(svc, tenant, CHAT)
    back = svc.texts.reveal_text(ADMIN, tenant, redacted, deadline=DL)
    assert back.text == CHAT
    assert [(t.token, t.error, t.output) for t in back.tokens] == [
        (t, None, Output.PLAIN) for t in tokens
    ]
    assert [redacted[t.start : t.end] for t in back.tokens] == tokens
    assert back.malformed == ()
    [row] = svc.audit_rows(tenant, "text.reveal")
    assert (row.outcome, row.field_classes) == ("allowed", tuple(sorted(set(CHAT_CLASSES))))


def test_invented_and_altered_tokens_are_reported_not_guessed(svc: Vault, tenant: str) -> None:
    _, [real] = _redact(svc, tenant, "mail me at ada@example.org", scope="c")
    [theirs] = _redact(svc, new_tenant(), "mail me at ada@example.org", scope="c")[1]
    altered = real[:-3]
    answer = f"Sure: {real}. Also {INVENTED}, {theirs} and {altered}!"
    back = svc.texts.reveal_text(ADMIN, tenant, answer, deadline=DL)
    assert back.text == f"Sure: ada@example.org. Also {INVENTED}, {theirs} and {altered}!"
    assert [(t.token, t.error, t.reason) for t in back.tokens] == [
        (real, None, ""),
        (INVENTED, TokenError.UNKNOWN, "unknown_token"),
        (theirs, TokenError.UNKNOWN, "unknown_token"),
    ]
    start = answer.rindex(altered)
    assert [(m.start, m.end) for m in back.malformed] == [(start, start + len(altered))]


def test_a_token_stays_in_place_unless_the_caller_gets_plain_or_masked(
    svc: Vault, tenant: str
) -> None:
    text = "ada@example.org lives at 12 St James's Square"
    _, [email, _street] = _redact(svc, tenant, text, scope="t")
    [address] = svc.tokens.tokenize(
        ADMIN,
        tenant,
        [TokenizeItem("12 St James's Square", "address")],
        deadline=DL,
    )
    answer = f"{email} lives at {address}"
    support = caller_of("support-agent", "customer-support")  # email masked, address token
    back = svc.texts.reveal_text(support, tenant, answer, deadline=DL)
    assert back.text == f"{mask(FieldClass.EMAIL, 'ada@example.org')} lives at {address}"
    assert [(t.output, t.error) for t in back.tokens] == [
        (Output.MASKED, None),
        (Output.TOKEN, None),
    ]


def test_an_expired_text_token_is_left_and_reported(svc: Vault, tenant: str) -> None:
    [redacted] = svc.texts.tokenize_text(
        ADMIN, tenant, ["mail ada@example.org"], scope="s", ttl_seconds=60, deadline=DL
    )
    token = redacted.spans[0].token
    svc.set_time(
        "tokens", "expires_at", datetime(2001, 1, 1, tzinfo=UTC), tenant=tenant, token=token
    )
    back = svc.texts.reveal_text(ADMIN, tenant, redacted.text, deadline=DL)
    assert back.text == redacted.text
    assert [(t.error, t.reason) for t in back.tokens] == [(TokenError.EXPIRED, "expired")]


def test_reveal_text_needs_text_reveal_even_for_a_text_without_tokens(
    svc: Vault, tenant: str
) -> None:
    agent = caller_of("ai-pipeline", "model-training")
    for text in ("nothing here", f"a token {INVENTED}"):
        with pytest.raises(PermissionDenied) as caught:
            svc.texts.reveal_text(agent, tenant, text, deadline=DL)
        assert caught.value.reason == "action_not_allowed"
    with pytest.raises(PermissionDenied):
        list(svc.texts.reveal_text_stream(agent, tenant, iter(["nothing", " here"]), deadline=DL))
    assert [r.outcome for r in svc.audit_rows(tenant, "text.reveal")] == ["denied"] * 3


@pytest.mark.parametrize(
    ("caller", "field"),
    [(caller_of("fraud-analyst"), "purpose"), (caller_of("fraud-analyst", "gossip"), "purpose")],
)
def test_reveal_text_needs_a_known_purpose(
    svc: Vault, tenant: str, caller: Caller, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.texts.reveal_text(caller, tenant, "no tokens", deadline=DL)
    assert caught.value.field == field


def test_an_oversized_text_or_chunk_is_refused(svc: Vault, tenant: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.texts.reveal_text(ADMIN, tenant, "x" * 65_537, deadline=DL)
    assert caught.value.field == "text"
    outputs: list[TextChunk] = []
    with pytest.raises(InvalidInput) as caught:
        outputs.extend(
            svc.texts.reveal_text_stream(ADMIN, tenant, iter(["ok", "x" * 65_537]), deadline=DL)
        )
    assert caught.value.field == "text"
    assert "".join(o.text for o in outputs) == "ok"  # what came before is answered first


# --- streams -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    svc: Vault
    tenant: str
    text: str
    whole: RevealedText


@pytest.fixture(scope="module")
def answer(migrated_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Answer]:
    """An LLM's answer holding real, invented and altered tokens, and its whole-text reveal."""
    with factory_in(migrated_template, tmp_path_factory.mktemp("text-stream")) as factory:
        svc = factory.build()
        tenant = new_tenant()
        redacted, tokens = _redact(svc, tenant, CHAT)
        text = f"{redacted} and {INVENTED} tok_emai {tokens[0][:-2]}, _tok_x_ end"
        whole = svc.texts.reveal_text(ADMIN, tenant, text, deadline=DL)
        assert whole.malformed
        assert any(t.error for t in whole.tokens)
        yield _Answer(svc, tenant, text, whole)


def _same(outs: list[TextChunk], whole: RevealedText) -> None:
    assert "".join(o.text for o in outs) == whole.text
    assert [t for o in outs for t in o.tokens] == list(whole.tokens)
    assert [m for o in outs for m in o.malformed] == list(whole.malformed)


def test_a_stream_split_at_every_character_reveals_as_the_whole(answer: _Answer) -> None:
    chunks = list(answer.text)
    outs = list(answer.svc.texts.reveal_text_stream(ADMIN, answer.tenant, chunks, deadline=DL))
    assert len(outs) == len(chunks) + 1  # one per chunk, and the flush
    _same(outs, answer.whole)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_streamed_reveal_equals_the_whole_text_reveal_for_any_split(
    answer: _Answer, data: st.DataObject
) -> None:
    text = answer.text
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    texts = answer.svc.texts
    _same(list(texts.reveal_text_stream(ADMIN, answer.tenant, chunks, deadline=DL)), answer.whole)
    # chunks received together (a server's batches) give the same outputs, one per chunk
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=len(chunks), max_size=len(chunks)))
    batches, at = [], 0
    for size in sizes:
        if at < len(chunks):
            batches.append(chunks[at : at + size])
            at += size
    outs = list(texts.reveal_text_batches(ADMIN, answer.tenant, batches, deadline=DL))
    assert len(outs) == len(chunks) + 1
    _same(outs, answer.whole)
