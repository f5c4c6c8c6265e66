"""gRPC servicer for ``vault.v1.Records``: wire <-> domain, errors -> status codes."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from vault.api._handlers import OUTPUT, caller_of, deadline_of, handle_errors, timestamp
from vault.service import ConsentView, ErasureReceipt, RecordInput, Services, StoredRecord
from vault.v1 import records_pb2 as pb
from vault.v1 import records_pb2_grpc as pb_grpc


def _stored(rec: StoredRecord) -> pb.CreateRecordResponse:
    return pb.CreateRecordResponse(
        record_id=rec.record_id, version=rec.version, tokens=dict(rec.tokens)
    )


def _receipt(r: ErasureReceipt) -> pb.ErasureReceipt:
    ts, everywhere = Timestamp(), Timestamp()
    ts.FromDatetime(r.erased_at)
    everywhere.FromDatetime(r.effective_everywhere_by)
    return pb.ErasureReceipt(
        tenant=r.tenant,
        record_id=r.record_id,
        erased_at=ts,
        data_key_ids=list(r.data_key_ids),
        tokens_erased=r.tokens_erased,
        effective_everywhere_by=everywhere,
    )


def _consent(view: ConsentView) -> pb.Consent:
    return pb.Consent(
        tenant=view.tenant,
        record_id=view.record_id,
        version=view.version,
        purposes=list(view.purposes),
        source=view.source,
        updated_at=timestamp(view.updated_at),
    )


class RecordsServicer(pb_grpc.RecordsServicer):
    def __init__(self, services: Services) -> None:
        self._records = services.records
        self._consent = services.consent
        self._exports = services.exports

    @handle_errors
    def CreateRecord(
        self, request: pb.CreateRecordRequest, context: grpc.ServicerContext
    ) -> pb.CreateRecordResponse:
        [rec] = self._records.create(
            caller_of(context),
            request.tenant,
            [RecordInput(dict(request.fields), request.idempotency_key or None)],
            deadline=deadline_of(context),
        )
        return _stored(rec)

    @handle_errors
    def BatchCreateRecords(
        self, request: pb.BatchCreateRecordsRequest, context: grpc.ServicerContext
    ) -> pb.BatchCreateRecordsResponse:
        recs = self._records.create(
            caller_of(context),
            request.tenant,
            [RecordInput(dict(r.fields), r.idempotency_key or None) for r in request.records],
            deadline=deadline_of(context),
            batch=True,
        )
        return pb.BatchCreateRecordsResponse(records=[_stored(r) for r in recs])

    @handle_errors
    def GetRecord(
        self, request: pb.GetRecordRequest, context: grpc.ServicerContext
    ) -> pb.GetRecordResponse:
        view = self._records.get(
            caller_of(context, request.purpose),
            request.tenant,
            request.record_id,
            fields=list(request.fields),
            token_scope=request.token_scope,
            deadline=deadline_of(context),
        )
        return pb.GetRecordResponse(
            record_id=view.record_id,
            version=view.version,
            fields={
                name: pb.FieldValue(output=OUTPUT[f.output], value=f.value, reason=f.reason)
                for name, f in view.fields.items()
            },
        )

    @handle_errors
    def UpdateRecord(
        self, request: pb.UpdateRecordRequest, context: grpc.ServicerContext
    ) -> pb.UpdateRecordResponse:
        rec = self._records.update(
            caller_of(context),
            request.tenant,
            request.record_id,
            expected_version=request.expected_version,
            set_fields=dict(request.set_fields),
            clear_fields=list(request.clear_fields),
            deadline=deadline_of(context),
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
        receipt = self._records.delete(
            caller_of(context), request.tenant, request.record_id, deadline=deadline_of(context)
        )
        return pb.DeleteRecordResponse(receipt=_receipt(receipt))

    @handle_errors
    def FindRecords(
        self, request: pb.FindRecordsRequest, context: grpc.ServicerContext
    ) -> pb.FindRecordsResponse:
        ids = self._records.find(
            caller_of(context),
            request.tenant,
            dict(request.match),
            limit=request.limit,
            deadline=deadline_of(context),
        )
        return pb.FindRecordsResponse(record_ids=ids)

    @handle_errors
    def UpdateConsent(
        self, request: pb.UpdateConsentRequest, context: grpc.ServicerContext
    ) -> pb.Consent:
        view = self._consent.update(
            caller_of(context),
            request.tenant,
            request.record_id,
            list(request.purposes),
            expected_version=request.expected_version,
            source=request.source,
            deadline=deadline_of(context),
        )
        return _consent(view)

    @handle_errors
    def GetConsent(
        self, request: pb.GetConsentRequest, context: grpc.ServicerContext
    ) -> pb.Consent:
        view = self._consent.get(
            caller_of(context), request.tenant, request.record_id, deadline=deadline_of(context)
        )
        return _consent(view)

    @handle_errors
    def ExportCustomerData(
        self, request: pb.ExportCustomerDataRequest, context: grpc.ServicerContext
    ) -> pb.ExportCustomerDataResponse:
        export = self._exports.export(
            caller_of(context, request.purpose),
            request.tenant,
            request.record_id,
            recipient_public_key=request.recipient_public_key,
            deadline=deadline_of(context),
        )
        return pb.ExportCustomerDataResponse(media_type=export.media_type, document=export.document)
