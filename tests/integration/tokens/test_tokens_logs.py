"""What the server logs for a client's own choices and for texts that already hold tokens
(issue 16): a cancelled stream is a debug line without a traceback, not an internal error; the
count of glued tokens is never negative."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.support import ADMIN_KEY
from vault.api import RunningServer
from vault.client import VaultClient
from vault.crypto import random_token
from vault.v1 import tokens_pb2 as pb
from vault.v1 import tokens_pb2_grpc as pb_grpc

pytestmark = pytest.mark.openbao


def _tokenize_request(tenant: str, n: int) -> pb.TokenizeRequest:
    return pb.TokenizeRequest(
        tenant=tenant,
        items=[pb.TokenizeItem(value=f"cancel{n}@example.com", field_class="email")],
    )


def test_a_cancelled_stream_is_no_internal_error(
    server: RunningServer, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def requests() -> Iterator[pb.TokenizeRequest]:
        yield _tokenize_request(tenant, 1)
        release.wait(10)  # the stream stays open, half-way, until the client cancels it

    stub = pb_grpc.TokensStub(grpc.insecure_channel(server.address))
    with caplog.at_level(logging.DEBUG, logger="vault.api"):
        call: Any = stub.StreamTokenize(
            requests(), timeout=30, metadata=(("x-api-key", ADMIN_KEY),)
        )
        first = next(call)
        assert len(first.batch.tokens) == 1
        call.cancel()
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == grpc.StatusCode.CANCELLED
        release.set()
        server.stop(grace=5)  # the handler has ended once the server stops
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage()[:80] for r in errors]
    assert not any(r.exc_info or "Traceback" in r.getMessage() for r in caplog.records)


def test_tokens_already_in_a_text_are_not_counted_as_glued(
    admin_client: VaultClient, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    held = random_token("email")
    with caplog.at_level(logging.WARNING, logger="vault.service.text"):
        admin_client.tokenize_text(
            tenant, [f"Write to ada@example.com, or see {held} and {held}."], scope="chat-9"
        )
    assert [r.getMessage() for r in caplog.records if "glued" in r.getMessage()] == []


def test_a_glued_token_is_counted_once(
    admin_client: VaultClient, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    held = random_token("email")
    with caplog.at_level(logging.WARNING, logger="vault.service.text"):
        [redacted], _ = admin_client.tokenize_text(
            tenant, [f"mail:{held} tel+442079460958 or ada@example.com"], scope="chat-9"
        )
    assert len(redacted.spans) == 2
    glued = [r.getMessage() for r in caplog.records if "glued" in r.getMessage()]
    assert glued == [
        "1 of 2 tokens in a redacted text are glued to adjacent characters and will not be "
        "re-identified"
    ]
