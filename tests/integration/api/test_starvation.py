"""No starvation (issue 11, point 2), over real gRPC against the real OpenBao: idle streams,
server reflection (which needs no credentials) included, cannot take every worker.

Before: each RPC held one of the 16 workers for its whole length, so sixteen idle reflection
streams made ``Health.Check`` and every RPC time out, and authenticated streams were open-ended.
Now calls are admitted within :class:`~vault.api.CallLimits`: workers are kept for health
checks, streams are capped in total, per principal and (without credentials) per server, and a
stream whose client sends nothing is cancelled.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import ADMIN_KEY, SAMPLE, authenticator
from vault.api import CallLimits, RunningServer, start_server
from vault.client import VaultClient
from vault.errors import ConfigError
from vault.service import RecordsService, Services
from vault.v1 import tokens_pb2_grpc

pytestmark = pytest.mark.openbao

ADMIN = (("x-api-key", ADMIN_KEY),)


def _silent(stop: threading.Event, first: object | None = None) -> Iterator[Any]:
    """A request stream that sends ``first`` (if any), then nothing until ``stop``."""
    if first is not None:
        yield first
    stop.wait(60)


def _open_streams(channel: grpc.Channel, stop: threading.Event, n: int) -> list[Any]:
    """``n`` idle streams, half reflection (no credentials), half authenticated StreamReveal."""
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    tokens = tokens_pb2_grpc.TokensStub(channel)
    calls: list[Any] = []
    for i in range(n):
        if i % 2:
            calls.append(reflect.ServerReflectionInfo(_silent(stop), timeout=60))
        else:
            calls.append(tokens.StreamReveal(_silent(stop), metadata=ADMIN, timeout=60))
    return calls


def _millis(call: object) -> float:
    started = time.perf_counter()
    assert callable(call)
    call()
    return (time.perf_counter() - started) * 1000


def test_health_and_reads_answer_with_64_idle_streams_open(
    server: RunningServer, admin_client: VaultClient, tenant: str
) -> None:
    record = admin_client.create_record(tenant, SAMPLE)
    stop = threading.Event()
    channel = grpc.insecure_channel(server.address)
    try:
        streams = _open_streams(channel, stop, 64)
        time.sleep(1.0)  # every stream has reached the server (or been refused)
        health = health_pb2_grpc.HealthStub(channel)
        check = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # noqa: E731
        get = lambda: admin_client.get_record(tenant, record.record_id)  # noqa: E731
        for call in (check, get):
            times = [_millis(call) for _ in range(5)]
            assert statistics.median(times) < 100, times
            assert max(times) < 1000, times
        refused = [
            s for s in streams if s.done() and s.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ]
        assert len(refused) >= 64 - CallLimits().max_streams
    finally:
        stop.set()
        channel.close()


@pytest.fixture
def strict_server(records: RecordsService) -> Iterator[RunningServer]:
    limits = CallLimits(stream_idle_seconds=1.0, open_idle_seconds=1.0, max_streams_per_principal=2)
    running = start_server(
        Services.over(records.core), "127.0.0.1:0", authenticator=authenticator(), limits=limits
    )
    yield running
    running.stop(grace=0)


def test_an_idle_stream_is_cancelled_and_a_principal_has_few_streams(
    strict_server: RunningServer,
) -> None:
    stop = threading.Event()
    channel = grpc.insecure_channel(strict_server.address)
    tokens = tokens_pb2_grpc.TokensStub(channel)
    try:
        started = time.monotonic()
        idle = [tokens.StreamReveal(_silent(stop), metadata=ADMIN) for _ in range(3)]
        codes = []
        for call in idle:
            with pytest.raises(grpc.RpcError) as info:
                list(call)
            codes.append(info.value.code())
        # two admitted, then cancelled for idling; the third refused: two per principal
        assert sorted(c.name for c in codes) == ["CANCELLED", "CANCELLED", "RESOURCE_EXHAUSTED"]
        assert time.monotonic() - started < 10
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(reflect.ServerReflectionInfo(_silent(stop)))
        assert info.value.code() == grpc.StatusCode.CANCELLED
    finally:
        stop.set()
        channel.close()


def test_reflection_can_be_switched_off(records: RecordsService) -> None:
    running = start_server(
        Services.over(records.core),
        "127.0.0.1:0",
        authenticator=authenticator(),
        limits=CallLimits(reflection=False),
    )
    try:
        with grpc.insecure_channel(running.address) as channel:
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.RpcError) as info:
                list(reflect.ServerReflectionInfo(iter([request]), timeout=5))
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop(grace=0)


def test_a_second_server_on_a_busy_port_does_not_start(
    server: RunningServer, records: RecordsService
) -> None:
    """gRPC's default SO_REUSEPORT let a second server bind a port in use and take half the
    calls (issue 12's finding, found here): the second start now fails, naming the address."""
    with pytest.raises(ConfigError, match="cannot listen"):
        start_server(
            Services.over(records.core),
            server.address,
            authenticator=authenticator(),
        )
