"""TokenizeText over gRPC stops when its caller does (issue 11, point 2): a cancelled call and
a call past its deadline stop burning the server's CPU within a second and write nothing; a
call past the budget is INVALID_ARGUMENT naming ``texts`` and the limit; 1,000 texts of 11
emails each pass in one call."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from tests.support import ADMIN_KEY, TEST_PURPOSE
from vault.api import RunningServer
from vault.client import VaultClient
from vault.service.text import MAX_TEXT_CHARS, MAX_TEXT_LENGTH, MAX_TEXT_SPANS, MAX_TEXTS
from vault.storage import Database
from vault.v1 import tokens_pb2 as pb
from vault.v1 import tokens_pb2_grpc as pb_grpc

pytestmark = pytest.mark.openbao
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
METADATA = (("x-api-key", ADMIN_KEY),)

#: the whole character budget of a call in texts that are slow to scan: about 0.65 s of one core
#: each now (16 s each before: each address cue was searched to the end of the line)
ADVERSARIAL = [("lives at 1 1.2.3.4 " * 3500)[:MAX_TEXT_LENGTH]] * (
    MAX_TEXT_CHARS // MAX_TEXT_LENGTH
)
#: CPU the whole test process (server threads included) may use in a second once the call is
#: over: an idle server uses a few hundredths; a detecting handler uses a whole second
IDLE_CPU = 0.3


def _stub(server: RunningServer) -> Any:
    return pb_grpc.TokensStub(grpc.insecure_channel(server.address))


def _request(tenant: str, texts: list[str]) -> pb.TokenizeTextRequest:
    return pb.TokenizeTextRequest(tenant=tenant, texts=texts, scope="chat-budget")


def _cpu_in(seconds: float) -> float:
    """Process CPU time (every thread: the server runs in this process) over ``seconds``."""
    started = time.process_time()
    time.sleep(seconds)
    return time.process_time() - started


def _tokens_of(database: Database, tenant: str) -> int:
    with database.begin() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM tokens WHERE tenant = :t"), {"t": tenant}
            ).scalar_one()
        )


@SQLITE_ONLY
def test_a_cancelled_call_stops_using_the_server_cpu_within_a_second(
    server: RunningServer, database: Database, tenant: str
) -> None:
    call = _stub(server).TokenizeText.future(
        _request(tenant, ADVERSARIAL), timeout=120, metadata=METADATA
    )
    time.sleep(0.2)
    assert call.cancel()
    time.sleep(1.0)
    used = _cpu_in(1.0)
    assert used < IDLE_CPU, f"the server still used {used:.2f} s of CPU a second after"
    assert _tokens_of(database, tenant) == 0


@SQLITE_ONLY
def test_a_call_past_its_deadline_ends_promptly_and_stops_using_the_server_cpu(
    server: RunningServer, database: Database, tenant: str
) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        _stub(server).TokenizeText(_request(tenant, ADVERSARIAL), timeout=0.5, metadata=METADATA)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5
    time.sleep(1.0)
    used = _cpu_in(1.0)
    assert used < IDLE_CPU, f"the server still used {used:.2f} s of CPU a second after"
    assert _tokens_of(database, tenant) == 0


def _emails(texts: int, per_text: int) -> list[str]:
    return [
        "Please add " + ", ".join(f"user{i}.{j}@example.org" for j in range(per_text))
        for i in range(texts)
    ]


@SQLITE_ONLY
def test_the_budget_errors_name_texts_and_the_limit(
    server: RunningServer, database: Database, tenant: str
) -> None:
    stub = _stub(server)
    too_many_spans = _emails(MAX_TEXTS, MAX_TEXT_SPANS // MAX_TEXTS + 1)
    too_long = ["x" * MAX_TEXT_LENGTH] * (MAX_TEXT_CHARS // MAX_TEXT_LENGTH + 1)
    for texts, problem in (
        (too_many_spans, f"more than {MAX_TEXT_SPANS} PII spans found (the limit per call)"),
        (too_long, f"more than {MAX_TEXT_CHARS} characters in all (the limit per call)"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.TokenizeText(_request(tenant, texts), timeout=60, metadata=METADATA)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == f"invalid_argument: texts: {problem}"
    assert _tokens_of(database, tenant) == 0


def test_1000_texts_of_11_emails_each_pass_in_one_call(
    admin_client: VaultClient, database: Database, tenant: str
) -> None:
    texts = _emails(MAX_TEXTS, 11)
    redacted, _ = admin_client.tokenize_text(tenant, texts, scope="chat-11")
    assert [len(r.spans) for r in redacted] == [11] * MAX_TEXTS
    assert _tokens_of(database, tenant) == 11 * MAX_TEXTS
    back = admin_client.reveal_text(tenant, redacted[-1].text, purpose=TEST_PURPOSE)
    assert back.text == texts[-1]


@SQLITE_ONLY
def test_a_server_stop_ends_a_call_in_flight(
    server: RunningServer, database: Database, tenant: str
) -> None:
    """What Ctrl-C does to ``cvault dev``: the calls still running after the grace are
    cancelled, and the handler stops rather than keeping the process alive."""
    call = _stub(server).TokenizeText.future(
        _request(tenant, ADVERSARIAL), timeout=120, metadata=METADATA
    )
    time.sleep(0.2)
    assert server.stop(grace=0.1)
    assert call.exception() is not None
    time.sleep(1.0)
    used = _cpu_in(1.0)
    assert used < IDLE_CPU, f"the server still used {used:.2f} s of CPU a second after"
    assert _tokens_of(database, tenant) == 0
