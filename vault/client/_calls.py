"""Each RPC once: the request a method builds and how its response reads, shared by
:class:`VaultClient` and :class:`AsyncVaultClient` (which only run the calls described here).

A builder returns a :class:`Unary` (one request, one response) or a :class:`Stream` (one request
per input item, one result per response); ``stub`` names the service's stub of the client.
"""

from __future__ import annotations

import base64
import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from grpc_health.v1 import health_pb2

from vault.client._records import (
    AccessEvent,
    Consent,
    CreatedRecord,
    ErasureReceipt,
    Record,
    _access_event,
    _consent,
    _receipt,
    _record,
)
from vault.client._tokens import (
    RedactedText,
    RevealedText,
    RevealedToken,
    StreamSummary,
    TokenItem,
    _redacted,
    _revealed,
    _revealed_text,
    _summary,
    _token_request,
)
from vault.errors import VaultServiceError
from vault.v1 import audit_pb2 as audit_pb
from vault.v1 import records_pb2 as pb
from vault.v1 import tokens_pb2 as tokens_pb

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741  # an input item of a stream

#: the stubs a client holds, by the names builders use
RECORDS, AUDIT, TOKENS, HEALTH = "records", "audit", "tokens", "health"


@dataclass(frozen=True, slots=True)
class Unary(Generic[T]):
    """One unary call: ``getattr(stubs[stub], method)(request)``, read by ``parse``."""

    stub: str
    method: str
    request: Any
    parse: Callable[[Any], T]


@dataclass(slots=True)
class Stream(Generic[I, T]):
    """One bidirectional stream: a request per input item (``request_of``; ``closing``, when
    set, makes a last request when no item made one), a result per response (``parse``)."""

    stub: str
    method: str
    request_of: Callable[[I], Any]
    parse: Callable[[Any], T]
    closing: Callable[[], Any] | None = None
    _sent: bool = field(default=False)

    def _request(self, item: I) -> Any:
        self._sent = True
        return self.request_of(item)

    def requests(self, items: Iterable[I]) -> Iterator[Any]:
        """The requests of ``items``, made lazily (gRPC flow control paces the producer)."""
        for item in items:
            yield self._request(item)
        if self.closing is not None and not self._sent:
            yield self.closing()

    async def async_requests(self, items: Iterable[I] | AsyncIterable[I]) -> AsyncIterator[Any]:
        """:meth:`requests` for an asyncio stream, whose items may come from an async source."""
        if isinstance(items, AsyncIterable):
            async for item in items:
                yield self._request(item)
        else:
            for item in items:
                yield self._request(item)
        if self.closing is not None and not self._sent:
            yield self.closing()


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), consumed lazily."""
    if not 1 <= size <= 10_000:
        raise ValueError("batch_size must be 1..10000")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def retry_delay(exc: VaultServiceError, attempt: int, retries: int, backoff: float) -> float:
    """``tokenize_many``'s rule: the seconds to wait before retrying a batch that failed with
    ``exc`` on ``attempt`` (0-based); raises ``exc`` when it is not retryable or the retries
    are spent."""
    if not exc.retryable or attempt >= retries:
        raise exc
    return float(backoff * (2**attempt))


def new_idempotency_key() -> str:
    """The key a create carries when the caller gave none: a retry of the same call (gRPC's
    retry after a lost answer) then returns the first result instead of a second record."""
    return "sdk-" + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")


def _created(r: Any) -> CreatedRecord:
    return CreatedRecord(r.record_id, r.version, dict(r.tokens))


# --- records --------------------------------------------------------------------------------


def create_record(
    tenant: str, fields: Mapping[str, str], idempotency_key: str
) -> Unary[CreatedRecord]:
    key = idempotency_key or new_idempotency_key()
    request = pb.CreateRecordRequest(tenant=tenant, fields=dict(fields), idempotency_key=key)
    return Unary(RECORDS, "CreateRecord", request, _created)


def batch_create_records(
    tenant: str, records: Iterable[Mapping[str, str]], idempotency_keys: Sequence[str] | None
) -> Unary[list[CreatedRecord]]:
    recs = list(records)
    keys = list(idempotency_keys) if idempotency_keys else [new_idempotency_key() for _ in recs]
    inputs = [
        pb.RecordInput(fields=dict(f), idempotency_key=k) for f, k in zip(recs, keys, strict=True)
    ]
    return Unary(
        RECORDS,
        "BatchCreateRecords",
        pb.BatchCreateRecordsRequest(tenant=tenant, records=inputs),
        lambda r: [_created(x) for x in r.records],
    )


def get_record(
    tenant: str, record_id: str, fields: Sequence[str], purpose: str, token_scope: str
) -> Unary[Record]:
    request = pb.GetRecordRequest(
        tenant=tenant,
        record_id=record_id,
        fields=list(fields),
        purpose=purpose,
        token_scope=token_scope,
    )
    return Unary(RECORDS, "GetRecord", request, _record)


def update_record(
    tenant: str,
    record_id: str,
    expected_version: int,
    set_fields: Mapping[str, str] | None,
    clear_fields: Sequence[str],
) -> Unary[CreatedRecord]:
    request = pb.UpdateRecordRequest(
        tenant=tenant,
        record_id=record_id,
        expected_version=expected_version,
        set_fields=dict(set_fields or {}),
        clear_fields=list(clear_fields),
    )
    return Unary(
        RECORDS,
        "UpdateRecord",
        request,
        lambda r: CreatedRecord(
            r.record_id, r.version, dict(r.tokens), tuple(r.destroyed_data_key_ids)
        ),
    )


def delete_record(tenant: str, record_id: str) -> Unary[ErasureReceipt]:
    request = pb.DeleteRecordRequest(tenant=tenant, record_id=record_id)
    return Unary(RECORDS, "DeleteRecord", request, lambda r: _receipt(r.receipt))


def find_records(tenant: str, match: Mapping[str, str], limit: int) -> Unary[list[str]]:
    request = pb.FindRecordsRequest(tenant=tenant, match=dict(match), limit=limit)
    return Unary(RECORDS, "FindRecords", request, lambda r: list(r.record_ids))


def update_consent(
    tenant: str, record_id: str, purposes: Iterable[str], expected_version: int, source: str
) -> Unary[Consent]:
    request = pb.UpdateConsentRequest(
        tenant=tenant,
        record_id=record_id,
        purposes=list(purposes),
        expected_version=expected_version,
        source=source,
    )
    return Unary(RECORDS, "UpdateConsent", request, _consent)


def get_consent(tenant: str, record_id: str) -> Unary[Consent]:
    request = pb.GetConsentRequest(tenant=tenant, record_id=record_id)
    return Unary(RECORDS, "GetConsent", request, _consent)


def export_customer_data(
    tenant: str, record_id: str, recipient_public_key: bytes, purpose: str
) -> Unary[tuple[str, bytes]]:
    request = pb.ExportCustomerDataRequest(
        tenant=tenant,
        record_id=record_id,
        purpose=purpose,
        recipient_public_key=recipient_public_key,
    )
    return Unary(
        RECORDS, "ExportCustomerData", request, lambda r: (r.media_type, bytes(r.document))
    )


def query_access(tenant: str, record_id: str, limit: int, purpose: str) -> Unary[list[AccessEvent]]:
    request = audit_pb.QueryAccessRequest(
        tenant=tenant, record_id=record_id, limit=limit, purpose=purpose
    )
    return Unary(AUDIT, "QueryAccess", request, lambda r: [_access_event(e) for e in r.events])


# --- tokens ---------------------------------------------------------------------------------


def tokenize(tenant: str, items: Sequence[TokenItem]) -> Unary[list[str]]:
    return Unary(TOKENS, "Tokenize", _token_request(tenant, items), lambda r: list(r.tokens))


def reveal(
    tenant: str, tokens: Sequence[str], purpose: str, grant: str
) -> Unary[list[RevealedToken]]:
    request = tokens_pb.RevealRequest(
        tenant=tenant, tokens=list(tokens), purpose=purpose, grant=grant
    )
    return Unary(TOKENS, "Reveal", request, lambda r: [_revealed(x) for x in r.results])


def issue_grant(
    tenant: str,
    grantee: str,
    field_classes: Sequence[str],
    *,
    record_ids: Sequence[str],
    scope: str,
    ttl_seconds: int,
    max_uses: int,
    max_values: int,
    purpose: str,
) -> Unary[tuple[str, datetime]]:
    request = tokens_pb.IssueGrantRequest(
        tenant=tenant,
        grantee=grantee,
        record_ids=list(record_ids),
        scope=scope,
        field_classes=list(field_classes),
        purpose=purpose,
        ttl_seconds=ttl_seconds,
        max_uses=max_uses,
        max_values=max_values,
    )
    return Unary(
        TOKENS, "IssueGrant", request, lambda r: (r.grant, r.expires_at.ToDatetime(tzinfo=UTC))
    )


def revoke_grant(tenant: str, grant: str) -> Unary[bool]:
    request = tokens_pb.RevokeGrantRequest(tenant=tenant, grant=grant)
    return Unary(TOKENS, "RevokeGrant", request, lambda r: bool(r.revoked))


def _token_answer(r: Any) -> list[str] | StreamSummary:
    return _summary(r.summary) if r.HasField("summary") else list(r.batch.tokens)


def _reveal_answer(r: Any) -> list[RevealedToken] | StreamSummary:
    if r.HasField("summary"):
        return _summary(r.summary)
    return [_revealed(x) for x in r.batch.results]


def stream_tokenize(tenant: str) -> Stream[Sequence[TokenItem], list[str] | StreamSummary]:
    return Stream(TOKENS, "StreamTokenize", lambda b: _token_request(tenant, b), _token_answer)


def stream_reveal(
    tenant: str, purpose: str
) -> Stream[Sequence[str], list[RevealedToken] | StreamSummary]:
    return Stream(
        TOKENS,
        "StreamReveal",
        lambda b: tokens_pb.RevealRequest(tenant=tenant, tokens=list(b), purpose=purpose),
        _reveal_answer,
    )


# --- free text ------------------------------------------------------------------------------


def tokenize_text(
    tenant: str, texts: Sequence[str], scope: str, default_region: str, ttl_seconds: int
) -> Unary[tuple[list[RedactedText], frozenset[str]]]:
    request = tokens_pb.TokenizeTextRequest(
        tenant=tenant,
        texts=list(texts),
        scope=scope,
        default_region=default_region,
        ttl_seconds=ttl_seconds,
    )
    return Unary(
        TOKENS,
        "TokenizeText",
        request,
        lambda r: ([_redacted(x) for x in r.results], frozenset(r.uncovered_classes)),
    )


def reveal_text(tenant: str, text: str, purpose: str, grant: str) -> Unary[RevealedText]:
    request = tokens_pb.RevealTextRequest(tenant=tenant, text=text, purpose=purpose, grant=grant)
    return Unary(TOKENS, "RevealText", request, _revealed_text)


def stream_reveal_text(tenant: str, purpose: str, grant: str) -> Stream[str, RevealedText]:
    """The first request names the tenant, purpose and grant (alone when there is no chunk);
    the others carry only their chunk."""
    first: tokens_pb.RevealTextRequest | None = tokens_pb.RevealTextRequest(
        tenant=tenant, purpose=purpose, grant=grant
    )

    def request_of(chunk: str) -> tokens_pb.RevealTextRequest:
        nonlocal first
        if first is None:
            return tokens_pb.RevealTextRequest(text=chunk)
        request, first = first, None
        request.text = chunk
        return request

    return Stream(
        TOKENS,
        "StreamRevealText",
        request_of,
        _revealed_text,
        closing=lambda: tokens_pb.RevealTextRequest(tenant=tenant, purpose=purpose, grant=grant),
    )


def health(service: str) -> Unary[str]:
    return Unary(
        HEALTH,
        "Check",
        health_pb2.HealthCheckRequest(service=service),
        lambda r: str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)),
    )
