"""Reveal per item over gRPC (issue 15, point 6), against real OpenBao, on SQLite and
PostgreSQL: one token in a batch whose stored value, or whose own data key, no longer decrypts
is answered ``TOKEN_ERROR_DECRYPTION_FAILED`` (reason ``decryption_failed``) and audited as an
integrity event (outcome ``error``) in the reveal's transaction; the call is OK and the rest of
the batch is answered, in Reveal, StreamReveal and RevealText alike. Before, the whole call
failed with DATA_LOSS, so one damaged row stopped an AI pipeline's batch of a thousand."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from tests.support import ADMIN_KEY, TEST_PURPOSE, authenticator, make_service
from vault.api import RunningServer, start_server
from vault.client import StreamSummary, TokenItem, VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.service import Services
from vault.storage import Database
from vault.v1 import tokens_pb2 as pb
from vault.v1 import tokens_pb2_grpc as pb_grpc

pytestmark = pytest.mark.openbao

PHONE = "+442079460958"
#: a thousand values, as the finding's AI pipeline batch
N = 1000

_OF_TOKEN = "SELECT data_key_id FROM tokens WHERE tenant = :t AND token = :k"


def _flip(database: Database, select: str, update: str, tenant: str, token: str) -> None:
    """Flip the last byte (the GCM tag's) of one stored blob."""
    with database.engine.begin() as conn:
        old = bytes(conn.execute(text(select), {"t": tenant, "k": token}).scalar_one())
        damaged = old[:-1] + bytes([old[-1] ^ 0x01])
        conn.execute(text(update), {"b": damaged, "t": tenant, "k": token})


def _damage_value(database: Database, tenant: str, token: str) -> None:
    where = "WHERE tenant = :t AND token = :k"
    _flip(
        database,
        f"SELECT ciphertext FROM tokens {where}",
        f"UPDATE tokens SET ciphertext = :b {where}",
        tenant,
        token,
    )


def _damage_data_key(database: Database, tenant: str, token: str) -> None:
    where = f"WHERE id = ({_OF_TOKEN})"
    _flip(
        database,
        f"SELECT wrapped FROM data_keys {where}",
        f"UPDATE data_keys SET wrapped = :b {where}",
        tenant,
        token,
    )


def _audit(database: Database, tenant: str) -> set[tuple[str, str, str, str]]:
    """(action, outcome, reason, field classes) of the tenant's reveal audit rows."""
    with database.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT action, outcome, reason, field_classes FROM audit_events"
                " WHERE tenant = :t AND action IN ('token.reveal', 'text.reveal')"
            ),
            {"t": tenant},
        )
        return {(r.action, r.outcome, r.reason, r.field_classes) for r in rows}


@pytest.fixture
def fresh_server(database: Database, openbao: OpenBaoDevServer) -> Iterator[RunningServer]:
    """A second server process over the same database, with empty key caches: it unwraps the
    data keys from their rows."""
    running = start_server(
        Services.over(make_service(database, openbao).core),
        "127.0.0.1:0",
        authenticator=authenticator(),
        health_interval=0.2,
    )
    yield running
    running.stop(grace=0)


def test_one_damaged_value_fails_only_its_token_in_a_batch_of_a_thousand(
    admin_client: VaultClient, server: RunningServer, database: Database, tenant: str
) -> None:
    values = [f"user{i}@example.com" for i in range(N)]
    tokens = admin_client.tokenize(tenant, [TokenItem(v, "email") for v in values])
    _damage_value(database, tenant, tokens[500])

    revealed = admin_client.reveal(tenant, tokens, purpose=TEST_PURPOSE)
    assert [(r.error, r.reason, r.value) for r in revealed[499:502]] == [
        ("", "", values[499]),
        ("decryption_failed", "decryption_failed", ""),
        ("", "", values[501]),
    ]
    assert [r.value for r in revealed[:500] + revealed[501:]] == values[:500] + values[501:]
    assert _audit(database, tenant) == {
        ("token.reveal", "allowed", "", "email"),
        ("token.reveal", "error", "decryption_failed", "email"),
    }

    # on the wire: the call is OK and the item carries the new error
    stub = pb_grpc.TokensStub(grpc.insecure_channel(server.address))
    response: Any = stub.Reveal(
        pb.RevealRequest(tenant=tenant, tokens=tokens[499:502], purpose=TEST_PURPOSE),
        timeout=30,
        metadata=(("x-api-key", ADMIN_KEY),),
    )
    assert [r.error for r in response.results] == [
        pb.TOKEN_ERROR_UNSPECIFIED,
        pb.TOKEN_ERROR_DECRYPTION_FAILED,
        pb.TOKEN_ERROR_UNSPECIFIED,
    ]
    failed = response.results[1]
    assert (failed.value, failed.field_class, failed.reason) == ("", "email", "decryption_failed")

    # a stream goes on too: the damaged token is counted among the errors
    answers = list(
        admin_client.stream_reveal(
            tenant, [tokens[:400], tokens[400:800], tokens[800:]], purpose=TEST_PURPOSE
        )
    )
    summary = answers.pop()
    assert isinstance(summary, StreamSummary)
    assert (summary.batches, summary.values, summary.errors) == (3, N, 1)
    streamed = [r for a in answers if isinstance(a, list) for r in a]
    assert [r.error for r in streamed].count("decryption_failed") == 1
    assert streamed[500].error == "decryption_failed"


def test_a_damaged_token_in_a_text_is_left_in_place(
    admin_client: VaultClient, database: Database, tenant: str
) -> None:
    original = f"write to ada@example.com or call {PHONE}"
    [redacted], _ = admin_client.tokenize_text(tenant, [original], scope="chat-1")
    mail, call = (s.token for s in redacted.spans)
    _damage_value(database, tenant, call)
    back = admin_client.reveal_text(tenant, redacted.text, purpose=TEST_PURPOSE)
    assert back.text == f"write to ada@example.com or call {call}"
    assert [(t.token, t.error, t.reason) for t in back.tokens] == [
        (mail, "", ""),
        (call, "decryption_failed", "decryption_failed"),
    ]
    assert ("text.reveal", "error", "decryption_failed", "phone") in _audit(database, tenant)


def test_a_damaged_data_key_fails_only_the_tokens_under_it(
    admin_client: VaultClient, fresh_server: RunningServer, database: Database, tenant: str
) -> None:
    a = admin_client.create_record(tenant, {"email": "ada@example.com"})
    b = admin_client.create_record(tenant, {"email": "grace@example.com"})
    of_a, of_b, phone = admin_client.tokenize(
        tenant,
        [
            TokenItem("ada@example.com", "email", record_id=a.record_id),
            TokenItem("grace@example.com", "email", record_id=b.record_id),
            TokenItem(PHONE, "phone"),
        ],
    )
    _damage_data_key(database, tenant, of_a)  # record a's email key
    with VaultClient(
        fresh_server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=30
    ) as fresh:
        revealed = fresh.reveal(tenant, [of_a, of_b, phone])
    assert [(r.error, r.value) for r in revealed] == [
        ("decryption_failed", ""),
        ("", "grace@example.com"),
        ("", PHONE),
    ]
    assert ("token.reveal", "error", "decryption_failed", "email") in _audit(database, tenant)
