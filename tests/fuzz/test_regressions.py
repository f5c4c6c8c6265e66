"""Regression tests: every input the fuzz suite (``tests/fuzz/``) found to fail, as one plain
call each with the exact status it must get.

The rule: when ``make fuzz`` or the in-suite fuzz tests print a failing example, it gets a test
here (the request as printed, reduced to what matters), asserting the *correct* behaviour, before
the fix. Each runs on SQLite and PostgreSQL (the ``server`` fixture of ``tests/conftest.py``:
the test policy, whose ``test-admin`` may do everything), since several of these bugs were in
the database layer.

Found so far (issue 16):

1. a tenant with a trailing newline (``"demo\\n"``) passed a ``$``-anchored pattern and failed
   in the audit event: INTERNAL instead of INVALID_ARGUMENT naming ``tenant``;
2. ``keep_last_four`` on a format-preserving item of a class without that form (``email``):
   INTERNAL instead of INVALID_ARGUMENT naming ``items[0].keep_last_four``;
3. a deterministic token tokenized again with another TTL compared a naive with an aware
   datetime on SQLite: INTERNAL instead of OK;
4. ``UpdateConsent`` with ``expected_version`` 2**63-1 overflowed the SQLite driver: INTERNAL
   instead of INVALID_ARGUMENT naming ``expected_version``;
5. ``ExportCustomerData`` sealed to a low-order X25519 public key (32 zero bytes, found by the
   fuzz suite): libsodium refuses to seal (``RuntimeError``), INTERNAL instead of
   INVALID_ARGUMENT naming ``recipient_public_key``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from tests.support import ADMIN_KEY, TEST_PURPOSE, sample_record
from vault.api import RunningServer
from vault.v1 import records_pb2 as rpb
from vault.v1 import records_pb2_grpc as rpb_grpc
from vault.v1 import tokens_pb2 as tpb
from vault.v1 import tokens_pb2_grpc as tpb_grpc

pytestmark = [pytest.mark.openbao, pytest.mark.fuzz]

TIMEOUT = 30
BAD_TENANT = "demo\n"
SOME_RECORD = "0190d3a4-7b1c-7e2f-9a3b-4c5d6e7f8091"
SOME_TOKEN = "tok_email_0123456789ABCDEFabcdef"
ADMIN = (("x-api-key", ADMIN_KEY),)


class Stubs:
    """The Records and Tokens stubs on one channel with the test admin's API key."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.records = rpb_grpc.RecordsStub(channel)
        self.tokens = tpb_grpc.TokensStub(channel)


@pytest.fixture
def stubs(server: RunningServer) -> Iterator[Stubs]:
    with grpc.insecure_channel(server.address) as channel:
        yield Stubs(channel)


def status_of(call: Any, *args: Any) -> tuple[grpc.StatusCode, str]:
    """Make one call as the test admin; its status code and message (OK and "" when it
    succeeds)."""
    try:
        result = call(*args, timeout=TIMEOUT, metadata=ADMIN)
        if not isinstance(result, Message):
            list(result)  # a stream: read it to its end
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def assert_invalid(got: tuple[grpc.StatusCode, str], field: str) -> None:
    code, details = got
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")
    assert details.startswith(f"invalid_argument: {field}:"), details


# --- 1. a tenant with a trailing newline -------------------------------------------------------


def _tenant_cases(stubs: Stubs, tenant: str) -> dict[str, tuple[Any, Any]]:
    """Per RPC: the stub method and a request that is valid but for its tenant."""
    reveal = tpb.RevealRequest(tenant=tenant, tokens=[SOME_TOKEN], purpose=TEST_PURPOSE)
    text = tpb.RevealTextRequest(tenant=tenant, text=f"hi {SOME_TOKEN}", purpose=TEST_PURPOSE)
    return {
        "CreateRecord": (
            stubs.records.CreateRecord,
            rpb.CreateRecordRequest(tenant=tenant, fields={"email": "ada@example.com"}),
        ),
        "BatchCreateRecords": (
            stubs.records.BatchCreateRecords,
            rpb.BatchCreateRecordsRequest(
                tenant=tenant, records=[rpb.RecordInput(fields={"email": "ada@example.com"})]
            ),
        ),
        "DeleteRecord": (
            stubs.records.DeleteRecord,
            rpb.DeleteRecordRequest(tenant=tenant, record_id=SOME_RECORD),
        ),
        "UpdateConsent": (
            stubs.records.UpdateConsent,
            rpb.UpdateConsentRequest(
                tenant=tenant, record_id=SOME_RECORD, purposes=["marketing"], source="web-form"
            ),
        ),
        "ExportCustomerData": (
            stubs.records.ExportCustomerData,
            rpb.ExportCustomerDataRequest(tenant=tenant, record_id=SOME_RECORD, purpose="dsar"),
        ),
        "Reveal": (stubs.tokens.Reveal, reveal),
        "StreamReveal": (stubs.tokens.StreamReveal, iter([reveal])),
        "IssueGrant": (
            stubs.tokens.IssueGrant,
            tpb.IssueGrantRequest(
                tenant=tenant,
                grantee="apikey:test-tokens",
                scope="chat-1",
                field_classes=["email"],
                purpose=TEST_PURPOSE,
                ttl_seconds=60,
                max_uses=1,
            ),
        ),
        "TokenizeText": (
            stubs.tokens.TokenizeText,
            tpb.TokenizeTextRequest(tenant=tenant, texts=["mail ada@example.com"], scope="c1"),
        ),
        "StreamRevealText": (stubs.tokens.StreamRevealText, iter([text])),
    }


TENANT_RPCS = (
    "CreateRecord",
    "BatchCreateRecords",
    "DeleteRecord",
    "UpdateConsent",
    "ExportCustomerData",
    "Reveal",
    "StreamReveal",
    "IssueGrant",
    "TokenizeText",
    "StreamRevealText",
)


@pytest.mark.parametrize("rpc", TENANT_RPCS)
def test_tenant_with_a_trailing_newline_is_invalid(stubs: Stubs, rpc: str) -> None:
    """Was INTERNAL: ``re.match`` with ``$`` lets one final newline through."""
    call, request = _tenant_cases(stubs, BAD_TENANT)[rpc]
    assert_invalid(status_of(call, request), "tenant")


# --- 2. keep_last_four on a class that has no such form -----------------------------------------


def _email_keeping_last_four(tenant: str) -> tpb.TokenizeRequest:
    return tpb.TokenizeRequest(
        tenant=tenant,
        items=[
            tpb.TokenizeItem(
                value="ada@example.com",
                field_class="email",
                kind=tpb.TOKEN_KIND_FORMAT_PRESERVING,
                keep_last_four=True,
            )
        ],
    )


def test_tokenize_keep_last_four_on_email_is_invalid(stubs: Stubs, tenant: str) -> None:
    assert_invalid(
        status_of(stubs.tokens.Tokenize, _email_keeping_last_four(tenant)),
        "items[0].keep_last_four",
    )


def test_stream_tokenize_keep_last_four_on_email_is_invalid(stubs: Stubs, tenant: str) -> None:
    assert_invalid(
        status_of(stubs.tokens.StreamTokenize, iter([_email_keeping_last_four(tenant)])),
        "items[0].keep_last_four",
    )


# --- 3. a deterministic token tokenized again with another TTL -----------------------------------


def test_deterministic_token_again_with_another_ttl(stubs: Stubs, tenant: str) -> None:
    """Was INTERNAL on SQLite: the stored expiry came back naive and was compared with an
    aware one. Same value, same scope: the same token, and OK."""

    def tokenize(ttl: int) -> str:
        response = stubs.tokens.Tokenize(
            tpb.TokenizeRequest(
                tenant=tenant,
                items=[
                    tpb.TokenizeItem(
                        value="ada@example.com",
                        field_class="email",
                        kind=tpb.TOKEN_KIND_DETERMINISTIC,
                        scope="training-2026",
                        ttl_seconds=ttl,
                    )
                ],
            ),
            timeout=TIMEOUT,
            metadata=ADMIN,
        )
        [token] = response.tokens
        return token

    first = tokenize(60)
    try:
        second = tokenize(120)
    except grpc.RpcError as exc:
        pytest.fail(f"tokenizing again with another TTL: {exc.code()} {exc.details()}")
    assert second == first


# --- 4. expected_version at the top of int64 ---------------------------------------------------


def test_update_consent_with_the_largest_int64_version_is_invalid(
    stubs: Stubs, tenant: str
) -> None:
    """Was INTERNAL on SQLite: ``expected_version + 1`` overflowed in the driver."""
    created = stubs.records.CreateRecord(
        rpb.CreateRecordRequest(tenant=tenant, fields=sample_record()),
        timeout=TIMEOUT,
        metadata=ADMIN,
    )
    request = rpb.UpdateConsentRequest(
        tenant=tenant,
        record_id=created.record_id,
        purposes=["marketing"],
        expected_version=2**63 - 1,
        source="web-form",
    )
    assert_invalid(status_of(stubs.records.UpdateConsent, request), "expected_version")


# --- 5. an export sealed to a low-order X25519 key (found by make fuzz) -------------------------


LOW_ORDER_KEYS = {
    "zero": bytes(32),
    "one": b"\x01" + bytes(31),
    "order-8": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
}


@pytest.mark.parametrize("key", LOW_ORDER_KEYS.values(), ids=LOW_ORDER_KEYS.keys())
def test_export_to_a_low_order_public_key_is_invalid(stubs: Stubs, tenant: str, key: bytes) -> None:
    """Was INTERNAL (``RuntimeError`` from ``crypto_box_seal`` in ``RecordsService.export``,
    after the export was already audited as done): a key no value can be sealed to is bad
    input, like a key of the wrong length."""
    created = stubs.records.CreateRecord(
        rpb.CreateRecordRequest(tenant=tenant, fields=sample_record()),
        timeout=TIMEOUT,
        metadata=ADMIN,
    )
    request = rpb.ExportCustomerDataRequest(
        tenant=tenant, record_id=created.record_id, purpose="dsar", recipient_public_key=key
    )
    assert_invalid(status_of(stubs.records.ExportCustomerData, request), "recipient_public_key")


def test_the_tenant_cases_cover_their_rpcs(stubs: Stubs) -> None:
    """Each tenant case is a valid request but for its tenant: with a good tenant, none of them
    is refused as bad input (so the newline is what the test above exercises)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    cases = _tenant_cases(stubs, tenant)
    assert sorted(cases) == sorted(TENANT_RPCS)
    for rpc, (call, request) in cases.items():
        code, details = status_of(call, request)
        assert code != grpc.StatusCode.INVALID_ARGUMENT, f"{rpc}: {details}"
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), f"{rpc}: {details}"
