"""gRPC's retry policy in the SDK (issue 12, SDK).

Before: only ``tokenize_many`` retried; any other call failed on the first UNAVAILABLE. Now
both clients open their channel with a retry service config for every RPC of the vault's
services, on UNAVAILABLE only: the caller never sees an UNAVAILABLE the next attempt answers,
and a create retried after its answer was lost returns the first record instead of writing a
second one (the SDK gives every create an idempotency key).
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from tests.integration.api.sdk_support import FakeServer, LosingProxy, unary
from tests.support import ADMIN_KEY, TEST_PURPOSE, sample_record
from vault import errors
from vault.api import RunningServer
from vault.client import AsyncVaultClient, RetryPolicy, VaultClient
from vault.v1 import records_pb2 as pb
from vault.v1 import tokens_pb2 as tokens_pb

GET_RECORD = "/vault.v1.Records/GetRecord"
TOKENIZE = "/vault.v1.Tokens/Tokenize"


class Flaky:
    """A GetRecord (and Tokenize) that answers UNAVAILABLE the first ``failures`` times, as the
    vault does while its database or key server is down (nothing written)."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.attempts = 0

    def _attempt(self, context: grpc.ServicerContext) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "database_unavailable: try again later")

    def get_record(self, request: pb.GetRecordRequest, context: grpc.ServicerContext) -> object:
        self._attempt(context)
        return pb.GetRecordResponse(record_id=request.record_id, version=3)

    def tokenize(self, request: tokens_pb.TokenizeRequest, context: grpc.ServicerContext) -> object:
        self._attempt(context)
        return tokens_pb.TokenizeResponse(tokens=[f"tok_{i}" for i in range(len(request.items))])

    def server(self) -> FakeServer:
        return FakeServer(
            {
                GET_RECORD: unary(self.get_record, pb.GetRecordRequest, pb.GetRecordResponse),
                TOKENIZE: unary(
                    self.tokenize, tokens_pb.TokenizeRequest, tokens_pb.TokenizeResponse
                ),
            }
        )


def test_unavailable_once_is_retried_without_the_caller_seeing_it() -> None:
    flaky = Flaky()
    with flaky.server() as fake, VaultClient(fake.address) as vc:
        assert vc.get_record("acme", "r1").version == 3
    assert flaky.attempts == 2


def test_a_write_answered_unavailable_is_retried() -> None:
    """The vault fails closed: its UNAVAILABLE means nothing was written, so writes retry too."""
    from vault.client import TokenItem

    flaky = Flaky(failures=2)
    with flaky.server() as fake, VaultClient(fake.address) as vc:
        assert vc.tokenize("acme", [TokenItem("x", "free_text")]) == ["tok_0"]
    assert flaky.attempts == 3


def test_retries_end_after_max_attempts_and_can_be_turned_off() -> None:
    flaky = Flaky(failures=10)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)
    with flaky.server() as fake:
        with VaultClient(fake.address, retry=policy) as vc, pytest.raises(errors.Unavailable):
            vc.get_record("acme", "r1")
        assert flaky.attempts == 3
        with VaultClient(fake.address, retry=False) as vc, pytest.raises(errors.Unavailable):
            vc.get_record("acme", "r1")
        assert flaky.attempts == 4


def test_other_statuses_are_not_retried() -> None:
    attempts: list[int] = []

    def conflict(request: pb.GetRecordRequest, context: grpc.ServicerContext) -> object:
        attempts.append(1)
        context.abort(grpc.StatusCode.ABORTED, "version_mismatch: stale")

    handler = unary(conflict, pb.GetRecordRequest, pb.GetRecordResponse)
    with (
        FakeServer({GET_RECORD: handler}) as fake,
        VaultClient(fake.address) as vc,
        pytest.raises(errors.Conflict),
    ):
        vc.get_record("acme", "r1")
    assert len(attempts) == 1


def test_async_client_retries_too() -> None:
    flaky = Flaky()

    async def call(address: str) -> int:
        async with AsyncVaultClient(address) as vc:
            return (await vc.get_record("acme", "r1")).version

    with flaky.server() as fake:
        assert asyncio.run(call(fake.address)) == 3
    assert flaky.attempts == 2


def test_service_config_names_every_service_of_the_wire() -> None:
    config = json.loads(RetryPolicy().service_config())
    [method_config] = config["methodConfig"]
    names = {n["service"] for n in method_config["name"]}
    assert names == {
        "vault.v1.Records",
        "vault.v1.Audit",
        "vault.v1.Tokens",
        "grpc.health.v1.Health",
    }
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=9)
    with pytest.raises(ValueError, match="retryable_codes"):
        RetryPolicy(retryable_codes=("SOMETIMES",))


@pytest.mark.openbao
def test_create_retried_after_a_lost_answer_is_not_duplicated(
    server: RunningServer, admin_client: VaultClient, tenant: str
) -> None:
    """The server commits the create, the answer is lost (UNAVAILABLE), the SDK retries: the
    retry returns the first record, and the tenant holds one record, not two."""
    record = sample_record(0)
    proxy = LosingProxy(server.address, lose="CreateRecord")
    try:
        with VaultClient(proxy.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE) as vc:
            created = vc.create_record(tenant, record)
    finally:
        proxy.close()
    creates = [r for m, r in proxy.forwarded if m.endswith("/CreateRecord")]
    assert len(creates) == 2, "the proxy lost the first answer and the SDK retried"
    first, second = (pb.CreateRecordResponse.FromString(r) for r in creates)
    assert first.record_id == second.record_id == created.record_id
    assert admin_client.find_records(tenant, {"email": record["email"]}) == [created.record_id]


@pytest.mark.openbao
def test_batch_create_retried_after_a_lost_answer_is_not_duplicated(
    server: RunningServer, admin_client: VaultClient, tenant: str
) -> None:
    records = [sample_record(1), sample_record(2)]
    proxy = LosingProxy(server.address, lose="BatchCreateRecords")
    try:
        with VaultClient(proxy.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE) as vc:
            created = vc.batch_create_records(tenant, records)
    finally:
        proxy.close()
    assert len([m for m, _ in proxy.forwarded if m.endswith("/BatchCreateRecords")]) == 2
    for rec, made in zip(records, created, strict=True):
        assert admin_client.find_records(tenant, {"email": rec["email"]}) == [made.record_id]
