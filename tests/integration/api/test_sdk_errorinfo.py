"""Reason codes as ``google.rpc.ErrorInfo`` status details (issue 12, SDK).

Before: the reason travelled only inside the status text (``reason: message``), so a client in
another language had to parse it. Now every call the service fails on purpose carries an
ErrorInfo (reason, domain ``cvault.v1``, metadata naming the field, never a value) beside the
unchanged text, and the SDK reads the reason from the ErrorInfo first.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.integration.api.sdk_support import FakeServer, unary
from tests.support import ADMIN_KEY, keyed_channel
from vault import errors
from vault.api import RunningServer
from vault.client import AsyncVaultClient, VaultClient
from vault.v1 import records_pb2 as pb
from vault.v1 import records_pb2_grpc as pb_grpc

pytestmark = pytest.mark.openbao

GET_RECORD = "/vault.v1.Records/GetRecord"


def _error_infos(exc: grpc.RpcError) -> list[Any]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # a failed call is a Call
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        assert detail.Unpack(info), detail.type_url
        infos.append(info)
    return infos


def test_raw_call_sees_error_info_with_reason_and_field_and_no_value(
    server: RunningServer, tenant: str
) -> None:
    bad = f"not-an-email-{uuid.uuid4().hex}"
    stub = pb_grpc.RecordsStub(keyed_channel(server.address, ADMIN_KEY))
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateRecord(pb.CreateRecordRequest(tenant=tenant, fields={"email": bad}), timeout=30)
    exc = caught.value
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    [info] = _error_infos(exc)
    assert info.reason == "invalid_argument"
    assert info.domain == "cvault.v1"
    assert dict(info.metadata) == {"field": "fields.email"}
    # the text is kept as it was, for older clients
    details = exc.details() or ""
    assert details.startswith("invalid_argument: fields.email: ")
    trailers = b"".join(
        m.value if isinstance(m.value, bytes) else m.value.encode() for m in exc.trailing_metadata()
    )
    assert bad.encode() not in trailers
    assert bad not in details


def test_raw_call_sees_error_info_for_a_domain_error(server: RunningServer, tenant: str) -> None:
    stub = pb_grpc.RecordsStub(keyed_channel(server.address, ADMIN_KEY))
    request = pb.GetRecordRequest(tenant=tenant, record_id=str(uuid.uuid4()), purpose="testing")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetRecord(request, timeout=30)
    [info] = _error_infos(caught.value)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert (info.reason, info.domain, dict(info.metadata)) == ("not_found", "cvault.v1", {})


def _failing_with(
    code: grpc.StatusCode, details: str, info: Any | None
) -> Any:  # a grpc.RpcMethodHandler
    """A GetRecord that fails with ``details`` and, when given, ``info`` as its only detail."""

    def behave(request: pb.GetRecordRequest, context: grpc.ServicerContext) -> None:
        if info is None:
            context.abort(code, details)
        packed = any_pb2.Any()
        packed.Pack(info)
        status = status_pb2.Status(code=code.value[0], message=details, details=[packed])
        context.abort_with_status(rpc_status.to_status(status))

    return unary(behave, pb.GetRecordRequest, pb.GetRecordResponse)


@contextlib.contextmanager
def _sync_call(handler: Any) -> Iterator[Callable[[], object]]:
    """A fake server with ``handler`` as its GetRecord, and a call of it by the SDK."""
    with FakeServer({GET_RECORD: handler}) as fake, VaultClient(fake.address, retry=False) as vc:
        yield lambda: vc.get_record("acme", "r1")


def test_sdk_takes_the_reason_from_error_info_before_the_text() -> None:
    """The text carries no reason at all; the ErrorInfo says the record was erased."""
    info = error_details_pb2.ErrorInfo(reason="erased", domain="cvault.v1")
    handler = _failing_with(grpc.StatusCode.FAILED_PRECONDITION, "record was erased", info)
    with _sync_call(handler) as call, pytest.raises(errors.Erased) as caught:
        call()
    assert caught.value.reason == "erased"
    assert caught.value.message == "record was erased"


def test_sdk_takes_the_field_from_error_info() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="invalid_argument", domain="cvault.v1", metadata={"field": "fields.a: b"}
    )
    text = "invalid_argument: fields.a: b: too long"
    handler = _failing_with(grpc.StatusCode.INVALID_ARGUMENT, text, info)
    with _sync_call(handler) as call, pytest.raises(errors.InvalidInput) as caught:
        call()
    assert (caught.value.field, caught.value.problem) == ("fields.a: b", "too long")


def test_sdk_still_reads_the_reason_from_the_text_of_an_older_server() -> None:
    handler = _failing_with(grpc.StatusCode.FAILED_PRECONDITION, "consent_required: no", None)
    with _sync_call(handler) as call, pytest.raises(errors.ConsentRequired):
        call()


def test_error_info_of_another_domain_is_not_taken_for_ours() -> None:
    info = error_details_pb2.ErrorInfo(reason="erased", domain="example.com")
    handler = _failing_with(grpc.StatusCode.NOT_FOUND, "not_found: gone", info)
    with _sync_call(handler) as call, pytest.raises(errors.NotFound) as caught:
        call()
    assert not isinstance(caught.value, errors.Erased)


def test_async_client_maps_error_info_too() -> None:
    import asyncio

    info = error_details_pb2.ErrorInfo(reason="erased", domain="cvault.v1")
    handler = _failing_with(grpc.StatusCode.FAILED_PRECONDITION, "record was erased", info)

    async def call(address: str) -> None:
        async with AsyncVaultClient(address, retry=False) as vc:
            await vc.get_record("acme", "r1")

    with FakeServer({GET_RECORD: handler}) as fake, pytest.raises(errors.Erased):
        asyncio.run(call(fake.address))
