"""gRPC servicer for ``vault.v1.Audit``: who saw a customer's data."""

from __future__ import annotations

import grpc

from vault.api._handlers import caller_of, deadline_of, handle_errors, timestamp
from vault.service import Services
from vault.v1 import audit_pb2 as audit_pb
from vault.v1 import audit_pb2_grpc as audit_pb_grpc


class AuditServicer(audit_pb_grpc.AuditServicer):
    def __init__(self, services: Services) -> None:
        self._queries = services.audit_queries

    @handle_errors
    def QueryAccess(
        self, request: audit_pb.QueryAccessRequest, context: grpc.ServicerContext
    ) -> audit_pb.QueryAccessResponse:
        entries = self._queries.query_access(
            caller_of(context, request.purpose),
            request.tenant,
            request.record_id,
            limit=request.limit,
            deadline=deadline_of(context),
        )
        return audit_pb.QueryAccessResponse(
            events=[
                audit_pb.AccessEvent(
                    time=timestamp(e.time),
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
