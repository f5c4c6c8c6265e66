"""Bad input: INVALID_ARGUMENT naming the field, never echoing the value, database unchanged."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import text

from tests.support import keyed_channel, sample_record
from vault.api import RunningServer
from vault.storage import Database
from vault.v1 import records_pb2 as pb
from vault.v1 import records_pb2_grpc as pb_grpc

pytestmark = pytest.mark.openbao

SECRET = "Zq7SecretValue"


def _row_counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("records", "data_keys", "record_values", "blind_index", "tenant_keys")
        }


CASES = [
    ("unknown field", {"emial": f"{SECRET}@example.com"}, "fields.emial"),
    ("bad email", {"email": f"{SECRET}-at-example.com"}, "fields.email"),
    ("bad phone", {"phone": f"+44{SECRET}"}, "fields.phone"),
    ("bad card", {"card_number": "4111111111111112"}, "fields.card_number"),
    ("bad iban", {"iban": "GB82WEST12345698765431"}, "fields.iban"),
    ("bad date", {"date_of_birth": "1990-02-30"}, "fields.date_of_birth"),
    ("future date", {"date_of_birth": "2999-01-01"}, "fields.date_of_birth"),
    ("too long", {"full_name": SECRET * 100}, "fields.full_name"),
    ("control char", {"full_name": f"{SECRET}\x00x"}, "fields.full_name"),
    ("empty value", {"email": ""}, "fields.email"),
    ("no fields", {}, "fields"),
]


@pytest.mark.parametrize(
    ("fields", "field_name"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_create_rejects_bad_input(
    server: RunningServer, database: Database, tenant: str, fields: dict[str, str], field_name: str
) -> None:
    before = _row_counts(database)
    with keyed_channel(server.address) as channel:
        stub = pb_grpc.RecordsStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.CreateRecord(pb.CreateRecordRequest(tenant=tenant, fields=fields), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = exc.value.details() or ""
    assert f"{field_name}:" in details
    for value in fields.values():
        for i in range(max(1, len(value) - 5)):
            assert value[i : i + 6] not in details or len(value) < 6
    assert SECRET not in details
    assert _row_counts(database) == before


def test_batch_with_one_bad_record_writes_nothing(
    server: RunningServer, database: Database, tenant: str
) -> None:
    good = [sample_record(i) for i in range(5)]
    bad = dict(good[0], email=f"{SECRET}@@example.com")
    before = _row_counts(database)
    with keyed_channel(server.address) as channel:
        stub = pb_grpc.RecordsStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.BatchCreateRecords(
                pb.BatchCreateRecordsRequest(
                    tenant=tenant,
                    records=[pb.RecordInput(fields=f) for f in [*good[:3], bad, *good[3:]]],
                ),
                timeout=10,
            )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (exc.value.details() or "").startswith("invalid_argument: records[3].fields.email:")
    assert SECRET not in (exc.value.details() or "")
    assert _row_counts(database) == before


@pytest.mark.parametrize(
    ("method", "request_", "field_name"),
    [
        ("CreateRecord", pb.CreateRecordRequest(tenant="", fields={"email": "a@example.com"}), "tenant"),
        ("CreateRecord", pb.CreateRecordRequest(tenant="bad tenant!", fields={"email": "a@example.com"}), "tenant"),
        ("CreateRecord", pb.CreateRecordRequest(tenant="t", fields={"email": "a@example.com"}, idempotency_key="x" * 200), "idempotency_key"),
        ("GetRecord", pb.GetRecordRequest(tenant="t", record_id="not-a-uuid"), "record_id"),
        ("GetRecord", pb.GetRecordRequest(tenant="t", record_id="6f1c1f38-0c7e-4a53-9a3f-2f4e1f0b9d10", fields=["nope"]), "fields.nope"),
        ("UpdateRecord", pb.UpdateRecordRequest(tenant="t", record_id="6f1c1f38-0c7e-4a53-9a3f-2f4e1f0b9d10", expected_version=0, set_fields={"email": "a@example.com"}), "expected_version"),
        ("UpdateRecord", pb.UpdateRecordRequest(tenant="t", record_id="6f1c1f38-0c7e-4a53-9a3f-2f4e1f0b9d10", expected_version=1), "set_fields"),
        ("DeleteRecord", pb.DeleteRecordRequest(tenant="t", record_id=""), "record_id"),
        ("FindRecords", pb.FindRecordsRequest(tenant="t"), "match"),
        ("FindRecords", pb.FindRecordsRequest(tenant="t", match={"notes": "x"}), "match.notes"),
        ("FindRecords", pb.FindRecordsRequest(tenant="t", match={"email": "nope"}), "match.email"),
        ("FindRecords", pb.FindRecordsRequest(tenant="t", match={"email": "a@example.com"}, limit=5000), "limit"),
    ],
)  # fmt: skip
def test_every_rpc_names_the_bad_field(
    server: RunningServer, method: str, request_: object, field_name: str
) -> None:
    with keyed_channel(server.address) as channel:
        stub = pb_grpc.RecordsStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            getattr(stub, method)(request_, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field_name}:" in (exc.value.details() or "")


def test_unknown_record_is_not_found(server: RunningServer, tenant: str) -> None:
    with keyed_channel(server.address) as channel:
        stub = pb_grpc.RecordsStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetRecord(
                pb.GetRecordRequest(
                    tenant=tenant,
                    record_id="6f1c1f38-0c7e-4a53-9a3f-2f4e1f0b9d10",
                    purpose="testing",
                ),
                timeout=10,
            )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("method", "request_", "field_name"),
    [
        ("CreateRecord", pb.CreateRecordRequest(tenant="t", fields={f"{SECRET}@example.com": "x"}), "fields.<invalid field name>"),
        ("FindRecords", pb.FindRecordsRequest(tenant="t", match={f"{SECRET}@example.com": "x"}), "match.<invalid field name>"),
        ("GetRecord", pb.GetRecordRequest(tenant="t", record_id="6f1c1f38-0c7e-4a53-9a3f-2f4e1f0b9d10", fields=[f"{SECRET}@example.com"]), "fields.<invalid field name>"),
        ("UpdateRecord", pb.UpdateRecordRequest(tenant="t", record_id="6f1c1f38-0c7e-4a53-9a3f-2f4e1f0b9d10", expected_version=1, clear_fields=[f"{SECRET}@example.com"]), "clear_fields.<invalid field name>"),
    ],
)  # fmt: skip
def test_a_value_pasted_as_field_name_is_not_echoed(
    server: RunningServer, method: str, request_: object, field_name: str
) -> None:
    with keyed_channel(server.address) as channel:
        stub = pb_grpc.RecordsStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            getattr(stub, method)(request_, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field_name}:" in (exc.value.details() or "")
    assert SECRET not in (exc.value.details() or "")


@pytest.mark.parametrize(
    "method",
    [
        "CreateRecord",
        "BatchCreateRecords",
        "GetRecord",
        "UpdateRecord",
        "DeleteRecord",
        "FindRecords",
    ],
)
@pytest.mark.parametrize(
    "payload", [b"\x0a\x03\xff\xfe\xfd", b"\xff\xff\xff\xff"], ids=["bad-utf8", "garbage"]
)
def test_unparseable_request_is_invalid_argument(
    server: RunningServer, method: str, payload: bytes
) -> None:
    with keyed_channel(server.address) as channel:
        # No (de)serializers, so the raw payload goes out as is (grpc-stubs requires the Nones).
        call = channel.unary_unary(f"/vault.v1.Records/{method}", None, None)
        with pytest.raises(grpc.RpcError) as exc:
            call(payload, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (exc.value.details() or "").startswith("invalid_argument: request:")
