"""Free text: TokenizeText redacts PII into scope tokens, RevealText and StreamRevealText put
the values back for an allowed caller, exactly, and report what they did not issue."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ADMIN, TEST_PURPOSE, api_key_of, make_service
from vault import errors
from vault.api import RunningServer
from vault.client import VaultClient
from vault.deadline import Deadline
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import RecordsService
from vault.service.services import Services
from vault.service.text import TextService
from vault.storage import Database

pytestmark = pytest.mark.openbao

CORPUS = Path(__file__).resolve().parents[2] / "data" / "text_corpus" / "support_messages.jsonl"

CHAT = (
    "Hi, I'm locked out. My email is Grace.Hopper@navy.example.mil and my card 4111 1111 1111 1111"
    " was charged twice. Call me on +1 415 555 2671 or write to grace.hopper@navy.example.mil. "
    "Login from 203.0.113.9 failed; IBAN GB82 WEST 1234 5698 7654 32; SSN 536-90-4399."
)


def _texts(records: RecordsService) -> TextService:
    return TextService(Services.over(records.core).tokens)


def test_a_chat_is_redacted_and_restored_exactly(admin_client: VaultClient, tenant: str) -> None:
    [redacted], uncovered = admin_client.tokenize_text(tenant, [CHAT], scope="chat-1")
    assert not uncovered  # cue-word detectors cover names, addresses and dates of birth
    classes = [s.field_class for s in redacted.spans]
    assert classes == [
        "email",
        "card_number",
        "phone",
        "email",
        "ip_address",
        "iban",
        "national_id",
    ]
    for span in redacted.spans:
        assert CHAT[span.start : span.end] not in redacted.text
        assert span.token in redacted.text
    # two spellings of the address: exact-string tokens, so each restores as written
    assert redacted.spans[0].token != redacted.spans[3].token
    [again], _ = admin_client.tokenize_text(tenant, [CHAT], scope="chat-1")
    assert again.text == redacted.text  # same scope: same tokens, across calls
    [other], _ = admin_client.tokenize_text(tenant, [CHAT], scope="chat-2")
    assert {s.token for s in other.spans}.isdisjoint({s.token for s in redacted.spans})
    back = admin_client.reveal_text(tenant, redacted.text, purpose=TEST_PURPOSE)
    assert back.text == CHAT
    assert [t.error for t in back.tokens] == [""] * len(redacted.spans)


def test_invented_and_altered_tokens_are_reported_not_guessed(
    admin_client: VaultClient, tenant: str
) -> None:
    [redacted], _ = admin_client.tokenize_text(tenant, ["mail me at ada@example.org"], scope="c")
    real = redacted.spans[0].token
    invented = "tok_email_" + "Z" * 22
    altered = real[:-3]
    answer = f"Sure: {real}. Also {invented} and {altered}!"
    back = admin_client.reveal_text(tenant, answer, purpose=TEST_PURPOSE)
    assert back.text == f"Sure: ada@example.org. Also {invented} and {altered}!"
    assert [(t.token, t.error) for t in back.tokens] == [(real, ""), (invented, "unknown")]
    start = answer.rindex(altered)
    assert back.malformed == ((start, start + len(altered)),)


def test_reveal_text_needs_text_reveal_or_a_grant(
    admin_client: VaultClient, server: RunningServer, tenant: str
) -> None:
    [redacted], _ = admin_client.tokenize_text(tenant, ["card 4111111111111111"], scope="s9")
    with VaultClient(server.address, api_key=api_key_of("ai-pipeline")) as agent:
        with pytest.raises(errors.PermissionDenied):
            agent.reveal_text(tenant, redacted.text, purpose="model-training")
        with pytest.raises(errors.PermissionDenied):  # even a text without tokens
            agent.reveal_text(tenant, "nothing here", purpose="model-training")
        grant, _ = admin_client.issue_grant(
            tenant, "apikey:dev-ai-pipeline", ["card_number"], scope="s9", ttl_seconds=60
        )
        back = agent.reveal_text(tenant, redacted.text, grant=grant)
    assert back.text == "card 4111111111111111"


def test_stream_reveal_text_over_grpc(admin_client: VaultClient, tenant: str) -> None:
    [redacted], _ = admin_client.tokenize_text(tenant, [CHAT], scope="chat-s")
    text = redacted.text
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]
    outs = list(admin_client.stream_reveal_text(tenant, iter(chunks), purpose=TEST_PURPOSE))
    assert len(outs) == len(chunks) + 1
    assert "".join(o.text for o in outs) == CHAT


@pytest.fixture
def texts(records: RecordsService) -> TextService:
    return _texts(records)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_streaming_matches_whole_text_for_every_split(
    texts: TextService, data: st.DataObject
) -> None:
    tenant = f"s{uuid.uuid4().hex[:10]}"
    dl = Deadline.after(60)
    [redacted] = texts.tokenize_text(ADMIN, tenant, [CHAT], scope="x", deadline=dl)
    answer = redacted.text + " and tok_email_" + "Q" * 22 + " tok_emai"
    whole = texts.reveal_text(ADMIN, tenant, answer, deadline=dl)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(answer)), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(answer)]
    chunks = [answer[a:b] for a, b in itertools.pairwise(bounds)]
    outs = list(texts.reveal_text_stream(ADMIN, tenant, iter(chunks), deadline=dl))
    assert "".join(o.text for o in outs) == whole.text
    assert [t for o in outs for t in o.tokens] == list(whole.tokens)
    assert [m for o in outs for m in o.malformed] == list(whole.malformed)


@pytest.fixture
def sqlite_texts(sqlite_url: str, openbao: OpenBaoDevServer) -> Iterator[TextService]:
    db = Database(sqlite_url)
    yield _texts(make_service(db, openbao))
    db.dispose()


def test_the_corpus_round_trips_exactly(sqlite_texts: TextService) -> None:
    """Every generated support message: redacted, then restored exactly by RevealText."""
    messages = [json.loads(line)["text"] for line in CORPUS.read_text("utf-8").splitlines()]
    assert len(messages) >= 2000
    tenant = f"c{uuid.uuid4().hex[:10]}"
    dl = Deadline.after(600)
    redacted = []
    for i in range(0, len(messages), 1000):
        redacted += sqlite_texts.tokenize_text(
            ADMIN, tenant, messages[i : i + 1000], scope="corpus", deadline=dl
        )
    assert sum(len(r.spans) for r in redacted) > len(messages)
    # many messages per reveal call, separated by a line that holds no token
    sep = "\n\u2063\n"
    for i in range(0, len(redacted), 200):
        batch = redacted[i : i + 200]
        back = sqlite_texts.reveal_text(ADMIN, tenant, sep.join(r.text for r in batch), deadline=dl)
        assert back.text.split(sep) == messages[i : i + 200]
