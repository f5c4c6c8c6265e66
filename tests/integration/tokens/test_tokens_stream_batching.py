"""Streams serve what has arrived together (a fuzzing finding: a stream of 2,000 one-item
messages took 6 to 9 s, one service call, transaction and audit row per message). The handler
takes every message already received and serves consecutive compatible ones in one service
call, yet each message keeps its own answer, in order, as the unary call would give it; a
failing message ends the stream with its own status and the messages before it are answered
and committed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from sqlalchemy import text

from tests.support import ADMIN_KEY, TEST_PURPOSE, api_key_of
from vault import errors
from vault.api import RunningServer
from vault.client import RevealedToken, StreamSummary, TokenItem, VaultClient
from vault.storage import Database
from vault.v1 import tokens_pb2 as pb
from vault.v1 import tokens_pb2_grpc as pb_grpc

pytestmark = pytest.mark.openbao

T = TypeVar("T")
#: one-item messages per stream: the finding's size
MANY = 2000
AGENT = "apikey:dev-ai-pipeline"


def _emails(n: int, tag: str = "") -> list[str]:
    tag = tag or uuid.uuid4().hex[:8]
    return [f"stream{i}.{tag}@example.org" for i in range(n)]


def _until_error(stream: Iterable[T]) -> tuple[list[T], errors.VaultServiceError | None]:
    """The answers a stream gave, and the error that ended it (None: it ended normally)."""
    out: list[T] = []
    try:
        for answer in stream:
            out.append(answer)
    except errors.VaultServiceError as exc:
        return out, exc
    return out, None


def _raw_until_error(call: Iterable[T]) -> tuple[list[T], grpc.RpcError]:
    """A raw stub's answers, and the status that ended the stream (it must end in one)."""
    out: list[T] = []
    try:
        for answer in call:
            out.append(answer)
    except grpc.RpcError as exc:
        return out, exc
    raise AssertionError("the stream ended without an error")


def _audit_rows(database: Database, tenant: str, action: str) -> int:
    with database.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM audit_events WHERE tenant = :t AND action = :a"),
                {"t": tenant, "a": action},
            ).scalar_one()
        )


def _token_rows(database: Database, tenant: str) -> int:
    with database.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM tokens WHERE tenant = :t"), {"t": tenant}
            ).scalar_one()
        )


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cvault-stream-reader")]


def _no_reader_left(within: float = 5.0) -> bool:
    """Whether every stream's reader thread has ended (they end with their call)."""
    end = time.monotonic() + within
    while _readers() and time.monotonic() < end:
        time.sleep(0.05)
    return not _readers()


def _shape(r: RevealedToken) -> tuple[str, str, str, str, str, str]:
    return (r.token, r.error, r.output, r.value, r.field_class, r.reason)


# --- coalescing: far fewer service calls than messages --------------------------------------


def test_pipelined_one_item_messages_share_service_calls(
    admin_client: VaultClient, tenant: str, database: Database
) -> None:
    """2,000 one-item messages sent without waiting: every message answered, in order, by far
    fewer service calls (each call writes one audit row here: standalone values)."""
    values = _emails(MANY)
    out = list(
        admin_client.stream_tokenize(tenant, ([TokenItem(v, "email")] for v in values), timeout=60)
    )
    summary = out.pop()
    assert isinstance(summary, StreamSummary)
    assert (summary.batches, summary.values, summary.errors) == (MANY, MANY, 0)
    assert [len(a) for a in out if isinstance(a, list)] == [1] * MANY
    tokens = [a[0] for a in out if isinstance(a, list)]
    assert len(set(tokens)) == MANY
    created = _audit_rows(database, tenant, "token.create")
    assert 1 <= created <= MANY // 4, f"{created} service calls for {MANY} messages"

    answers = list(
        admin_client.stream_reveal(tenant, ([t] for t in tokens), purpose=TEST_PURPOSE, timeout=60)
    )
    ended = answers.pop()
    assert isinstance(ended, StreamSummary)
    assert (ended.batches, ended.values, ended.errors) == (MANY, MANY, 0)
    revealed = [(r.token, r.output, r.value) for a in answers if isinstance(a, list) for r in a]
    assert revealed == [(t, "plain", v) for t, v in zip(tokens, values, strict=True)]
    reveals = _audit_rows(database, tenant, "token.reveal")
    assert 1 <= reveals <= MANY // 4, f"{reveals} service calls for {MANY} messages"


def test_a_text_stream_reveals_the_chunks_received_together_at_once(
    admin_client: VaultClient, tenant: str, database: Database
) -> None:
    """An answer holding 150 tokens in chunks of 20 characters, sent without waiting: the
    output is RevealText's, chunk for chunk, from far fewer reveals than chunks completing a
    token (one each before)."""
    messages = [f"Write to {e} about the order." for e in _emails(150)]
    redacted, _ = admin_client.tokenize_text(tenant, messages, scope="chat-1")
    answer = " ".join(r.text for r in redacted)
    chunks = [answer[i : i + 20] for i in range(0, len(answer), 20)]
    before = _audit_rows(database, tenant, "text.reveal")
    whole = admin_client.reveal_text(tenant, answer, purpose=TEST_PURPOSE)
    assert _audit_rows(database, tenant, "text.reveal") == before + 1
    outs = list(
        admin_client.stream_reveal_text(tenant, iter(chunks), purpose=TEST_PURPOSE, timeout=60)
    )
    assert len(outs) == len(chunks) + 1  # one output per chunk, then the tail
    assert "".join(o.text for o in outs) == whole.text
    assert sum(len(o.tokens) for o in outs) == len(whole.tokens) == 150
    reveals = _audit_rows(database, tenant, "text.reveal") - before - 1
    assert 1 <= reveals <= 150 // 2, f"{reveals} reveals for 150 tokens"


# --- every message keeps its own answer ------------------------------------------------------


def test_each_message_gets_the_answer_the_unary_call_gives(
    admin_client: VaultClient, tenant: str
) -> None:
    """Deterministic tokens (repeated values across messages among them) and reveals with
    unknown and repeated tokens: per message, exactly what Tokenize and Reveal answer."""
    values = _emails(40)
    batches = [
        [
            TokenItem(values[(3 * m + i) % 40], "email", "deterministic", scope="s1")
            for i in range(m % 3 + 1)
        ]
        for m in range(300)
    ]
    out = list(admin_client.stream_tokenize(tenant, iter(batches), timeout=60))
    summary = out.pop()
    assert isinstance(summary, StreamSummary)
    assert (summary.batches, summary.values) == (300, sum(len(b) for b in batches))
    assert out == [admin_client.tokenize(tenant, b) for b in batches]

    unknown = "tok_email_" + "B" * 22
    reveal_batches = [
        [t for a in out[m : m + 2] if isinstance(a, list) for t in a]
        + ([unknown] if m % 7 == 0 else [])
        for m in range(0, 300, 2)
    ]
    answers = list(
        admin_client.stream_reveal(tenant, iter(reveal_batches), purpose=TEST_PURPOSE, timeout=60)
    )
    ended = answers.pop()
    unary = [admin_client.reveal(tenant, b, purpose=TEST_PURPOSE) for b in reveal_batches]
    assert [[_shape(r) for r in a] for a in answers if isinstance(a, list)] == [
        [_shape(r) for r in a] for a in unary
    ]
    assert isinstance(ended, StreamSummary)
    assert (ended.batches, ended.errors) == (
        150,
        sum(1 for m in range(0, 300, 2) if m % 7 == 0),
    )


# --- a failing message ends the stream with its own status ----------------------------------


@pytest.mark.parametrize(
    ("bad", "error", "field"),
    [
        (TokenItem("x@example.org", "shoe_size"), errors.InvalidInput, "items[2].field_class"),
        (TokenItem("", "email"), errors.InvalidInput, "items[2].value"),
        (
            TokenItem("x@example.org", "email", record_id="0190f2d4-0000-7000-8000-000000000000"),
            errors.NotFound,
            "",
        ),
    ],
    ids=["unknown-class", "empty-value", "missing-record"],
)
def test_a_bad_message_in_the_middle_fails_alone(
    admin_client: VaultClient,
    tenant: str,
    database: Database,
    bad: TokenItem,
    error: type[errors.VaultServiceError],
    field: str,
) -> None:
    """Message 250 of 400 (three items each) is bad at its third item: 250 answers, committed,
    then its own status naming the field within that message (not within a merged call)."""
    values = _emails(1200)
    batches = [[TokenItem(values[3 * m + i], "email") for i in range(3)] for m in range(400)]
    batches[250] = [*batches[250][:2], bad]
    answers, exc = _until_error(admin_client.stream_tokenize(tenant, iter(batches), timeout=60))
    assert isinstance(exc, error)
    if field:
        assert isinstance(exc, errors.InvalidInput)
        assert exc.field == field
    assert len(answers) == 250
    tokens = [t for a in answers if isinstance(a, list) for t in a]
    assert _token_rows(database, tenant) == 750  # answered means committed; nothing after
    revealed = admin_client.reveal(tenant, tokens, purpose=TEST_PURPOSE)
    assert [r.value for r in revealed] == values[:750]
    assert _no_reader_left()  # the reader ends with the failed call


def test_an_empty_reveal_message_in_the_middle_fails_alone(
    admin_client: VaultClient, tenant: str
) -> None:
    tokens = admin_client.tokenize(tenant, [TokenItem(v, "email") for v in _emails(300)])
    batches: list[list[str]] = [[t] for t in tokens]
    batches[200] = []
    answers, exc = _until_error(
        admin_client.stream_reveal(tenant, iter(batches), purpose=TEST_PURPOSE, timeout=60)
    )
    assert isinstance(exc, errors.InvalidInput)
    assert exc.field == "tokens"
    assert [r.token for a in answers if isinstance(a, list) for r in a] == tokens[:200]


def test_a_grant_is_used_once_per_message(
    admin_client: VaultClient, server: RunningServer, tenant: str
) -> None:
    """Messages under a grant are not served together: each uses the grant once, as it would
    alone, so a grant of three uses answers three messages and refuses the fourth."""
    tokens = admin_client.tokenize(
        tenant, [TokenItem(v, "email", scope="chat-7") for v in _emails(6)]
    )
    grant, _ = admin_client.issue_grant(tenant, AGENT, ["email"], scope="chat-7", max_uses=3)
    stub = pb_grpc.TokensStub(grpc.insecure_channel(server.address))
    requests = (pb.RevealRequest(tenant=tenant, tokens=[t], grant=grant) for t in tokens)
    key = api_key_of("ai-pipeline")
    call: Any = stub.StreamReveal(requests, timeout=30, metadata=(("x-api-key", key),))
    answers, exc = _raw_until_error(call)
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [a.batch.results[0].error for a in answers] == [pb.TOKEN_ERROR_UNSPECIFIED] * 3


# --- cancellation and deadlines stop the handler ---------------------------------------------


def _one_item(tenant: str, n: int) -> pb.TokenizeRequest:
    return pb.TokenizeRequest(
        tenant=tenant,
        items=[pb.TokenizeItem(value=f"cancel{n}.{tenant}@example.org", field_class="email")],
    )


def test_cancelling_part_way_ends_the_handler_and_its_reader(
    server: RunningServer, tenant: str
) -> None:
    release = threading.Event()

    def requests() -> Iterator[pb.TokenizeRequest]:
        for n in range(500):
            yield _one_item(tenant, n)
        release.wait(20)  # the client stays, half-way, until it cancels

    stub = pb_grpc.TokensStub(grpc.insecure_channel(server.address))
    call: Any = stub.StreamTokenize(requests(), timeout=30, metadata=(("x-api-key", ADMIN_KEY),))
    for _ in range(500):
        assert len(next(call).batch.tokens) == 1
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert _no_reader_left()
    release.set()


def test_a_client_that_stops_reading_can_still_cancel(server: RunningServer, tenant: str) -> None:
    """The client sends 20,000 messages and reads none: flow control and the bounded buffer
    hold the rest back; a cancel then ends the handler and its reader."""
    stub = pb_grpc.TokensStub(grpc.insecure_channel(server.address))
    call: Any = stub.StreamTokenize(
        (_one_item(tenant, n) for n in range(20_000)),
        timeout=60,
        metadata=(("x-api-key", ADMIN_KEY),),
    )
    assert len(next(call).batch.tokens) == 1
    time.sleep(1.0)  # the handler fills what the transport lets through, then waits
    call.cancel()
    assert _no_reader_left(10.0)


def test_a_deadline_ends_a_stalled_stream_promptly(server: RunningServer, tenant: str) -> None:
    release = threading.Event()

    def requests() -> Iterator[pb.TokenizeRequest]:
        for n in range(10):
            yield _one_item(tenant, n)
        release.wait(20)

    stub = pb_grpc.TokensStub(grpc.insecure_channel(server.address))
    started = time.monotonic()
    call: Any = stub.StreamTokenize(requests(), timeout=3, metadata=(("x-api-key", ADMIN_KEY),))
    answers, exc = _raw_until_error(call)
    assert (exc.code(), len(answers)) == (grpc.StatusCode.DEADLINE_EXCEEDED, 10)
    assert time.monotonic() - started < 10
    assert _no_reader_left()
    release.set()
