"""gRPC servicer for ``vault.v1.Records``: wire <-> domain, errors -> status codes."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import traceback
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from vault.api._status import status_of, wire_message
from vault.deadline import Deadline
from vault.errors import InvalidInput, VaultServiceError
from vault.service import ErasureReceipt, Output, RecordInput, RecordsService, StoredRecord
from vault.v1 import records_pb2 as pb
from vault.v1 import records_pb2_grpc as pb_grpc

log = logging.getLogger("vault.api")

_OUTPUT = {
    Output.PLAIN: pb.OUTPUT_PLAIN,
    Output.MASKED: pb.OUTPUT_MASKED,
    Output.TOKEN: pb.OUTPUT_TOKEN,
    Output.OMIT: pb.OUTPUT_OMIT,
}

R = TypeVar("R")


def _abort(context: grpc.ServicerContext, exc: VaultServiceError) -> NoReturn:
    context.abort(status_of(exc), wire_message(exc))
    raise AssertionError("unreachable")  # context.abort raises


class _Malformed:
    """Stands for a request whose bytes did not parse (e.g. a string that is not UTF-8)."""


MALFORMED = _Malformed()


def safe_deserializer(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """grpcio answers INTERNAL when a request does not parse; we want INVALID_ARGUMENT."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return MALFORMED

    return deserialize


def handle_errors(method: Callable[..., R]) -> Callable[..., R]:
    """Map our errors to their status; anything else is a bug: INTERNAL, logged without its
    message (a library's message may quote a value), with a request id to find it by."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        if request is MALFORMED:
            _abort(context, InvalidInput("request", "not a valid message (bad bytes or UTF-8)"))
        try:
            return method(self, request, context)
        except VaultServiceError as exc:
            if exc.retryable:
                log.warning("%s: %s", method.__name__, exc.reason)
            _abort(context, exc)
        except Exception as exc:
            request_id = uuid.uuid4().hex[:12]
            log.error(
                "internal error %s in %s: %s\n%s",
                request_id,
                method.__name__,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (request {request_id})")
            raise AssertionError("unreachable") from None

    return wrapper


def _deadline(context: grpc.ServicerContext) -> Deadline:
    return Deadline.from_remaining(context.time_remaining())


def _stored(rec: StoredRecord) -> pb.CreateRecordResponse:
    return pb.CreateRecordResponse(
        record_id=rec.record_id, version=rec.version, tokens=dict(rec.tokens)
    )


def _receipt(r: ErasureReceipt) -> pb.ErasureReceipt:
    ts = Timestamp()
    ts.FromDatetime(r.erased_at)
    return pb.ErasureReceipt(
        tenant=r.tenant, record_id=r.record_id, erased_at=ts, data_key_ids=list(r.data_key_ids)
    )


class RecordsServicer(pb_grpc.RecordsServicer):
    def __init__(self, service: RecordsService, *, dev_admin_key_sha256: str = "") -> None:
        self._service = service
        self._admin_digest = bytes.fromhex(dev_admin_key_sha256) if dev_admin_key_sha256 else b""

    def _is_dev_admin(self, context: grpc.ServicerContext) -> bool:
        """Until access control lands, plaintext goes only to the dev admin credential."""
        if not self._admin_digest:
            return False
        for key, value in context.invocation_metadata():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                presented = hashlib.sha256(value[7:].encode()).digest()
                return hmac.compare_digest(presented, self._admin_digest)
        return False

    @handle_errors
    def CreateRecord(
        self, request: pb.CreateRecordRequest, context: grpc.ServicerContext
    ) -> pb.CreateRecordResponse:
        [rec] = self._service.create(
            request.tenant,
            [RecordInput(dict(request.fields), request.idempotency_key or None)],
            deadline=_deadline(context),
        )
        return _stored(rec)

    @handle_errors
    def BatchCreateRecords(
        self, request: pb.BatchCreateRecordsRequest, context: grpc.ServicerContext
    ) -> pb.BatchCreateRecordsResponse:
        recs = self._service.create(
            request.tenant,
            [RecordInput(dict(r.fields), r.idempotency_key or None) for r in request.records],
            deadline=_deadline(context),
            batch=True,
        )
        return pb.BatchCreateRecordsResponse(records=[_stored(r) for r in recs])

    @handle_errors
    def GetRecord(
        self, request: pb.GetRecordRequest, context: grpc.ServicerContext
    ) -> pb.GetRecordResponse:
        view = self._service.get(
            request.tenant,
            request.record_id,
            fields=list(request.fields),
            reveal=self._is_dev_admin(context),
            deadline=_deadline(context),
        )
        return pb.GetRecordResponse(
            record_id=view.record_id,
            version=view.version,
            fields={
                name: pb.FieldValue(output=_OUTPUT[f.output], value=f.value, reason=f.reason)
                for name, f in view.fields.items()
            },
        )

    @handle_errors
    def UpdateRecord(
        self, request: pb.UpdateRecordRequest, context: grpc.ServicerContext
    ) -> pb.UpdateRecordResponse:
        rec = self._service.update(
            request.tenant,
            request.record_id,
            expected_version=request.expected_version,
            set_fields=dict(request.set_fields),
            clear_fields=list(request.clear_fields),
            deadline=_deadline(context),
        )
        return pb.UpdateRecordResponse(
            record_id=rec.record_id, version=rec.version, tokens=dict(rec.tokens)
        )

    @handle_errors
    def DeleteRecord(
        self, request: pb.DeleteRecordRequest, context: grpc.ServicerContext
    ) -> pb.DeleteRecordResponse:
        return pb.DeleteRecordResponse(
            receipt=_receipt(self._service.delete(request.tenant, request.record_id))
        )

    @handle_errors
    def FindRecords(
        self, request: pb.FindRecordsRequest, context: grpc.ServicerContext
    ) -> pb.FindRecordsResponse:
        ids = self._service.find(
            request.tenant, dict(request.match), limit=request.limit, deadline=_deadline(context)
        )
        return pb.FindRecordsResponse(record_ids=ids)


def records_handler(servicer: RecordsServicer) -> grpc.GenericRpcHandler[Any, Any]:
    """The Records service's handlers, like the generated ``add_RecordsServicer_to_server`` but
    with request parsing failures answered as INVALID_ARGUMENT instead of INTERNAL."""
    service = pb.DESCRIPTOR.services_by_name["Records"]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name),
            request_deserializer=safe_deserializer(getattr(pb, m.input_type.name).FromString),
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
        for m in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
