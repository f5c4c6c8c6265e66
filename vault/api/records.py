"""gRPC servicer for ``vault.v1.Records``: wire <-> domain, errors -> status codes."""

from __future__ import annotations

import functools
import logging
import re
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime
from importlib import import_module
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from vault.api._authn import current_principal
from vault.api._ranges import check_int64_ranges
from vault.api._status import status_of, wire_message
from vault.deadline import Deadline
from vault.errors import InvalidInput, VaultServiceError
from vault.service import (
    Caller,
    ConsentView,
    ErasureReceipt,
    Output,
    RecordInput,
    RecordsService,
    StoredRecord,
)
from vault.v1 import audit_pb2 as audit_pb
from vault.v1 import audit_pb2_grpc as audit_pb_grpc
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


def checked(request: object) -> Any:
    """The request, once it parsed and its 64-bit integers are in range.

    Raises:
        InvalidInput: bad bytes or UTF-8 (``request``), or an integer out of range (its field).
    """
    if request is MALFORMED:
        raise InvalidInput("request", "not a valid message (bad bytes or UTF-8)")
    if isinstance(request, Message):
        check_int64_ranges(request)
    return request


def handle_errors(method: Callable[..., R]) -> Callable[..., R]:
    """Map our errors to their status; anything else is a bug: INTERNAL, logged without its
    message (a library's message may quote a value), with a request id to find it by."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, checked(request), context)
        except VaultServiceError as exc:
            if exc.retryable:
                log.warning("%s: %s", method.__name__, exc.reason)
            _abort(context, exc)
        except Exception as exc:
            internal_error(context, method.__name__, exc)

    return wrapper


def internal_error(context: grpc.ServicerContext, name: str, exc: BaseException) -> NoReturn:
    """A bug: INTERNAL, logged with its traceback but without its message (a library's
    message may quote a value), and an id to find the log line by."""
    request_id = uuid.uuid4().hex[:12]
    log.error(
        "internal error %s in %s: %s\n%s",
        request_id,
        name,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (request {request_id})")
    raise AssertionError("unreachable") from None


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


REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _caller(context: grpc.ServicerContext, purpose: str = "") -> Caller:
    """The authenticated principal (set by the auth interceptor), the stated purpose and a
    request id: the client's ``x-request-id`` when it is well formed, else a new one."""
    request_id = ""
    for key, value in context.invocation_metadata():
        if key == "x-request-id" and isinstance(value, str) and REQUEST_ID_RE.fullmatch(value):
            request_id = value
    return Caller.of(current_principal(), purpose, request_id)


def _ts(value: datetime | None) -> Timestamp:
    ts = Timestamp()
    if value is not None:
        ts.FromDatetime(value)
    return ts


def _consent(view: ConsentView) -> pb.Consent:
    return pb.Consent(
        tenant=view.tenant,
        record_id=view.record_id,
        version=view.version,
        purposes=list(view.purposes),
        source=view.source,
        updated_at=_ts(view.updated_at),
    )


class RecordsServicer(pb_grpc.RecordsServicer):
    def __init__(self, service: RecordsService) -> None:
        self._service = service

    @handle_errors
    def CreateRecord(
        self, request: pb.CreateRecordRequest, context: grpc.ServicerContext
    ) -> pb.CreateRecordResponse:
        [rec] = self._service.create(
            _caller(context),
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
            _caller(context),
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
            _caller(context, request.purpose),
            request.tenant,
            request.record_id,
            fields=list(request.fields),
            token_scope=request.token_scope,
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
            _caller(context),
            request.tenant,
            request.record_id,
            expected_version=request.expected_version,
            set_fields=dict(request.set_fields),
            clear_fields=list(request.clear_fields),
            deadline=_deadline(context),
        )
        return pb.UpdateRecordResponse(
            record_id=rec.record_id,
            version=rec.version,
            tokens=dict(rec.tokens),
            destroyed_data_key_ids=list(rec.destroyed_data_key_ids),
        )

    @handle_errors
    def DeleteRecord(
        self, request: pb.DeleteRecordRequest, context: grpc.ServicerContext
    ) -> pb.DeleteRecordResponse:
        receipt = self._service.delete(
            _caller(context), request.tenant, request.record_id, deadline=_deadline(context)
        )
        return pb.DeleteRecordResponse(receipt=_receipt(receipt))

    @handle_errors
    def FindRecords(
        self, request: pb.FindRecordsRequest, context: grpc.ServicerContext
    ) -> pb.FindRecordsResponse:
        ids = self._service.find(
            _caller(context),
            request.tenant,
            dict(request.match),
            limit=request.limit,
            deadline=_deadline(context),
        )
        return pb.FindRecordsResponse(record_ids=ids)

    @handle_errors
    def UpdateConsent(
        self, request: pb.UpdateConsentRequest, context: grpc.ServicerContext
    ) -> pb.Consent:
        view = self._service.update_consent(
            _caller(context),
            request.tenant,
            request.record_id,
            list(request.purposes),
            expected_version=request.expected_version,
            source=request.source,
            deadline=_deadline(context),
        )
        return _consent(view)

    @handle_errors
    def GetConsent(
        self, request: pb.GetConsentRequest, context: grpc.ServicerContext
    ) -> pb.Consent:
        view = self._service.get_consent(
            _caller(context), request.tenant, request.record_id, deadline=_deadline(context)
        )
        return _consent(view)

    @handle_errors
    def ExportCustomerData(
        self, request: pb.ExportCustomerDataRequest, context: grpc.ServicerContext
    ) -> pb.ExportCustomerDataResponse:
        export = self._service.export(
            _caller(context, request.purpose),
            request.tenant,
            request.record_id,
            recipient_public_key=request.recipient_public_key,
            deadline=_deadline(context),
        )
        return pb.ExportCustomerDataResponse(media_type=export.media_type, document=export.document)


class AuditServicer(audit_pb_grpc.AuditServicer):
    def __init__(self, service: RecordsService) -> None:
        self._service = service

    @handle_errors
    def QueryAccess(
        self, request: audit_pb.QueryAccessRequest, context: grpc.ServicerContext
    ) -> audit_pb.QueryAccessResponse:
        entries = self._service.query_access(
            _caller(context, request.purpose),
            request.tenant,
            request.record_id,
            limit=request.limit,
            deadline=_deadline(context),
        )
        return audit_pb.QueryAccessResponse(
            events=[
                audit_pb.AccessEvent(
                    time=_ts(e.time),
                    principal=e.principal,
                    role=e.role,
                    action=e.action,
                    purpose=e.purpose,
                    field_classes=list(e.field_classes),
                    outcome=e.outcome,
                    reason=e.reason,
                    request_id=e.request_id,
                    on_behalf_of=e.on_behalf_of,
                )
                for e in entries
            ]
        )


def _message_class(module: Any, descriptor: Any) -> Any:
    """The generated class of a message, also when it is defined in an imported proto."""
    if descriptor.file.name == module.DESCRIPTOR.name:
        return getattr(module, descriptor.name)
    return getattr(import_module(_module_of(descriptor.file.name)), descriptor.name)


def _module_of(proto_file: str) -> str:
    return proto_file.removesuffix(".proto").replace("/", ".") + "_pb2"


def service_handler(
    servicer: object, module: Any, service_name: str
) -> grpc.GenericRpcHandler[Any, Any]:
    """A service's handlers, like the generated ``add_*Servicer_to_server`` but with request
    parsing failures answered as INVALID_ARGUMENT instead of INTERNAL."""
    service = module.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for m in service.methods:
        make = (
            grpc.stream_stream_rpc_method_handler
            if m.client_streaming and m.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        if m.client_streaming != m.server_streaming:
            raise NotImplementedError(f"{m.name}: only unary or bidirectional methods")
        handlers[m.name] = make(
            getattr(servicer, m.name),
            request_deserializer=safe_deserializer(_message_class(module, m.input_type).FromString),
            response_serializer=_message_class(module, m.output_type).SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
