"""The :class:`VaultClient` class: one typed method per RPC of the Records, Audit, Tokens and
health services (results and message conversions in ``_records`` and ``_tokens``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vault import errors
from vault.client import _channel
from vault.client._channel import _mtls_credentials, _open_channel
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
    TOKENIZE_BATCH,
    RedactedText,
    RevealedText,
    RevealedToken,
    StreamSummary,
    TokenItem,
    _redacted,
    _reveal_text_requests,
    _revealed,
    _revealed_text,
    _summary,
    _token_request,
)
from vault.v1 import audit_pb2 as audit_pb
from vault.v1 import audit_pb2_grpc as audit_pb_grpc
from vault.v1 import records_pb2 as pb
from vault.v1 import records_pb2_grpc as pb_grpc
from vault.v1 import tokens_pb2 as tokens_pb
from vault.v1 import tokens_pb2_grpc as tokens_pb_grpc


def _mapped(exc: grpc.RpcError) -> errors.VaultServiceError:
    """``vault.client._channel._error(exc)``, looked up on its module at each failure so that a
    wrapper put there (the test suite's scan of error messages, tests/conftest.py) sees every
    one."""
    return _channel._error(exc)


class VaultClient:
    """A connection to the vault. Thread-safe; reuse one per process."""

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        purpose: str = "",
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``purpose`` is the default purpose of reads (each call may state another one)."""
        self._channel = _open_channel(address, credentials)
        self._records = pb_grpc.RecordsStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("x-api-key", api_key),) if api_key else ()
        self._purpose = purpose
        self._timeout = timeout
        self._audit = audit_pb_grpc.AuditStub(self._channel)
        self._tokens = tokens_pb_grpc.TokensStub(self._channel)

    @classmethod
    def mtls(
        cls,
        address: str,
        *,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        purpose: str = "",
        timeout: float = 30.0,
    ) -> VaultClient:
        """A client authenticating with a client certificate (the production mode)."""
        creds = _mtls_credentials(ca, cert, key)
        return cls(address, credentials=creds, purpose=purpose, timeout=timeout)

    def __repr__(self) -> str:
        return f"VaultClient(api_key={'yes' if self._metadata else 'no'})"

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _mapped(exc) from None

    def _stream(self, method: Any, requests: Iterator[Any], timeout: float | None) -> Iterator[Any]:
        """The responses of a streaming call (``timeout`` None: no deadline for the stream)."""
        try:
            yield from method(requests, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _mapped(exc) from None

    def _chosen_purpose(self, purpose: str | None, grant: str = "") -> str:
        """The purpose stated, else none under a grant, else this client's default."""
        return purpose if purpose is not None else ("" if grant else self._purpose)

    # --- records -----------------------------------------------------------------------------

    def create_record(
        self,
        tenant: str,
        fields: Mapping[str, str],
        *,
        idempotency_key: str = "",
        timeout: float | None = None,
    ) -> CreatedRecord:
        r = self._call(
            self._records.CreateRecord,
            pb.CreateRecordRequest(
                tenant=tenant, fields=dict(fields), idempotency_key=idempotency_key
            ),
            timeout,
        )
        return CreatedRecord(r.record_id, r.version, dict(r.tokens))

    def batch_create_records(
        self,
        tenant: str,
        records: Iterable[Mapping[str, str]],
        *,
        idempotency_keys: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[CreatedRecord]:
        recs = list(records)
        keys = list(idempotency_keys) if idempotency_keys else [""] * len(recs)
        r = self._call(
            self._records.BatchCreateRecords,
            pb.BatchCreateRecordsRequest(
                tenant=tenant,
                records=[
                    pb.RecordInput(fields=dict(f), idempotency_key=k)
                    for f, k in zip(recs, keys, strict=True)
                ],
            ),
            timeout,
        )
        return [CreatedRecord(x.record_id, x.version, dict(x.tokens)) for x in r.records]

    def get_record(
        self,
        tenant: str,
        record_id: str,
        *,
        fields: Sequence[str] = (),
        purpose: str | None = None,
        token_scope: str = "",
        timeout: float | None = None,
    ) -> Record:
        """``token_scope``: fields given as tokens come back as deterministic tokens of that
        scope (a tokenized view that joins across records)."""
        r = self._call(
            self._records.GetRecord,
            pb.GetRecordRequest(
                tenant=tenant,
                record_id=record_id,
                fields=list(fields),
                purpose=self._chosen_purpose(purpose),
                token_scope=token_scope,
            ),
            timeout,
        )
        return _record(r)

    def update_record(
        self,
        tenant: str,
        record_id: str,
        *,
        expected_version: int,
        set_fields: Mapping[str, str] | None = None,
        clear_fields: Sequence[str] = (),
        timeout: float | None = None,
    ) -> CreatedRecord:
        r = self._call(
            self._records.UpdateRecord,
            pb.UpdateRecordRequest(
                tenant=tenant,
                record_id=record_id,
                expected_version=expected_version,
                set_fields=dict(set_fields or {}),
                clear_fields=list(clear_fields),
            ),
            timeout,
        )
        return CreatedRecord(
            r.record_id, r.version, dict(r.tokens), tuple(r.destroyed_data_key_ids)
        )

    def delete_record(
        self, tenant: str, record_id: str, *, timeout: float | None = None
    ) -> ErasureReceipt:
        r = self._call(
            self._records.DeleteRecord,
            pb.DeleteRecordRequest(tenant=tenant, record_id=record_id),
            timeout,
        )
        return _receipt(r.receipt)

    def find_records(
        self, tenant: str, match: Mapping[str, str], *, limit: int = 0, timeout: float | None = None
    ) -> list[str]:
        r = self._call(
            self._records.FindRecords,
            pb.FindRecordsRequest(tenant=tenant, match=dict(match), limit=limit),
            timeout,
        )
        return list(r.record_ids)

    def update_consent(
        self,
        tenant: str,
        record_id: str,
        purposes: Iterable[str],
        *,
        expected_version: int,
        source: str,
        timeout: float | None = None,
    ) -> Consent:
        r = self._call(
            self._records.UpdateConsent,
            pb.UpdateConsentRequest(
                tenant=tenant,
                record_id=record_id,
                purposes=list(purposes),
                expected_version=expected_version,
                source=source,
            ),
            timeout,
        )
        return _consent(r)

    def get_consent(self, tenant: str, record_id: str, *, timeout: float | None = None) -> Consent:
        r = self._call(
            self._records.GetConsent,
            pb.GetConsentRequest(tenant=tenant, record_id=record_id),
            timeout,
        )
        return _consent(r)

    def export_customer_data(
        self,
        tenant: str,
        record_id: str,
        *,
        recipient_public_key: bytes = b"",
        purpose: str | None = None,
        timeout: float | None = None,
    ) -> tuple[str, bytes]:
        """(media type, document): JSON, or a NaCl sealed box of it for the given key."""
        r = self._call(
            self._records.ExportCustomerData,
            pb.ExportCustomerDataRequest(
                tenant=tenant,
                record_id=record_id,
                purpose=self._chosen_purpose(purpose),
                recipient_public_key=recipient_public_key,
            ),
            timeout,
        )
        return r.media_type, bytes(r.document)

    def query_access(
        self,
        tenant: str,
        record_id: str,
        *,
        limit: int = 0,
        purpose: str | None = None,
        timeout: float | None = None,
    ) -> list[AccessEvent]:
        """Who saw this customer's data, when and why (newest first)."""
        r = self._call(
            self._audit.QueryAccess,
            audit_pb.QueryAccessRequest(
                tenant=tenant,
                record_id=record_id,
                limit=limit,
                purpose=self._chosen_purpose(purpose),
            ),
            timeout,
        )
        return [_access_event(e) for e in r.events]

    # --- tokens ------------------------------------------------------------------------------

    def tokenize(
        self, tenant: str, items: Sequence[TokenItem], *, timeout: float | None = None
    ) -> list[str]:
        """One call (at most 10,000 items, all or nothing): a token per item, in order."""
        r = self._call(self._tokens.Tokenize, _token_request(tenant, items), timeout)
        return list(r.tokens)

    def tokenize_many(
        self,
        tenant: str,
        items: Iterable[TokenItem],
        *,
        batch_size: int = TOKENIZE_BATCH,
        retries: int = 4,
        backoff: float = 0.2,
        timeout: float | None = None,
    ) -> Iterator[str]:
        """Tokens for any number of items, in order, in batches of ``batch_size`` (memory stays
        bounded: ``items`` is consumed lazily). A batch failing with a retryable status is
        retried up to ``retries`` times with exponential backoff; other errors propagate.
        A retried random or format-preserving batch may leave unused token rows behind."""
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch_size must be 1..10000")
        batch: list[TokenItem] = []
        for item in items:
            batch.append(item)
            if len(batch) == batch_size:
                yield from self._tokenize_retrying(tenant, batch, retries, backoff, timeout)
                batch = []
        if batch:
            yield from self._tokenize_retrying(tenant, batch, retries, backoff, timeout)

    def _tokenize_retrying(
        self,
        tenant: str,
        batch: Sequence[TokenItem],
        retries: int,
        backoff: float,
        timeout: float | None,
    ) -> list[str]:
        for attempt in range(retries + 1):
            try:
                return self.tokenize(tenant, batch, timeout=timeout)
            except errors.VaultServiceError as exc:
                if not exc.retryable or attempt == retries:
                    raise
                time.sleep(backoff * (2**attempt))
        raise AssertionError("unreachable")

    def reveal(
        self,
        tenant: str,
        tokens: Sequence[str],
        *,
        purpose: str | None = None,
        grant: str = "",
        timeout: float | None = None,
    ) -> list[RevealedToken]:
        """Each token as the policy gives this caller (per-token errors, never raised), or
        under ``grant`` (issued to this caller) as the grant allows."""
        r = self._call(
            self._tokens.Reveal,
            tokens_pb.RevealRequest(
                tenant=tenant,
                tokens=list(tokens),
                purpose=self._chosen_purpose(purpose, grant),
                grant=grant,
            ),
            timeout,
        )
        return [_revealed(x) for x in r.results]

    def issue_grant(
        self,
        tenant: str,
        grantee: str,
        field_classes: Sequence[str],
        *,
        record_ids: Sequence[str] = (),
        scope: str = "",
        ttl_seconds: int = 900,
        max_uses: int = 10,
        max_values: int = 0,
        purpose: str | None = None,
        timeout: float | None = None,
    ) -> tuple[str, datetime]:
        """A grant for ``grantee`` (a principal name); returns its id and expiry. ``max_uses``
        counts calls; ``max_values`` (0: no bound) the tokens revealed over all of them."""
        r = self._call(
            self._tokens.IssueGrant,
            tokens_pb.IssueGrantRequest(
                tenant=tenant,
                grantee=grantee,
                record_ids=list(record_ids),
                scope=scope,
                field_classes=list(field_classes),
                purpose=self._chosen_purpose(purpose),
                ttl_seconds=ttl_seconds,
                max_uses=max_uses,
                max_values=max_values,
            ),
            timeout,
        )
        return r.grant, r.expires_at.ToDatetime(tzinfo=UTC)

    def revoke_grant(self, tenant: str, grant: str, *, timeout: float | None = None) -> bool:
        """End a grant of the caller's now; False when it was revoked already."""
        r = self._call(
            self._tokens.RevokeGrant,
            tokens_pb.RevokeGrantRequest(tenant=tenant, grant=grant),
            timeout,
        )
        return bool(r.revoked)

    def stream_tokenize(
        self,
        tenant: str,
        batches: Iterable[Sequence[TokenItem]],
        *,
        timeout: float | None = None,
    ) -> Iterator[list[str] | StreamSummary]:
        """Tokenize batches over one stream: yields a list of tokens per batch, in order, and
        finally the stream's :class:`StreamSummary`. gRPC flow control paces the producer."""
        requests = (_token_request(tenant, b) for b in batches)
        for r in self._stream(self._tokens.StreamTokenize, requests, timeout):
            if r.HasField("summary"):
                yield _summary(r.summary)
            else:
                yield list(r.batch.tokens)

    def stream_reveal(
        self,
        tenant: str,
        batches: Iterable[Sequence[str]],
        *,
        purpose: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[list[RevealedToken] | StreamSummary]:
        """Reveal batches over one stream: a list of results per batch, then the summary."""
        chosen = purpose or self._purpose
        requests = (
            tokens_pb.RevealRequest(tenant=tenant, tokens=list(b), purpose=chosen) for b in batches
        )
        for r in self._stream(self._tokens.StreamReveal, requests, timeout):
            if r.HasField("summary"):
                yield _summary(r.summary)
            else:
                yield [_revealed(x) for x in r.batch.results]

    # --- free text ---------------------------------------------------------------------------

    def tokenize_text(
        self,
        tenant: str,
        texts: Sequence[str],
        *,
        scope: str = "",
        default_region: str = "",
        ttl_seconds: int = 0,
        timeout: float | None = None,
    ) -> tuple[list[RedactedText], frozenset[str]]:
        """Each text with its PII replaced by tokens of ``scope`` (a conversation), and the
        classes no detector covered (name and address without an NER model)."""
        r = self._call(
            self._tokens.TokenizeText,
            tokens_pb.TokenizeTextRequest(
                tenant=tenant,
                texts=list(texts),
                scope=scope,
                default_region=default_region,
                ttl_seconds=ttl_seconds,
            ),
            timeout,
        )
        return [_redacted(x) for x in r.results], frozenset(r.uncovered_classes)

    def reveal_text(
        self,
        tenant: str,
        text: str,
        *,
        purpose: str | None = None,
        grant: str = "",
        timeout: float | None = None,
    ) -> RevealedText:
        """``text`` with the tokens this caller may see replaced (see :class:`RevealedText`)."""
        chosen = self._chosen_purpose(purpose, grant)
        r = self._call(
            self._tokens.RevealText,
            tokens_pb.RevealTextRequest(tenant=tenant, text=text, purpose=chosen, grant=grant),
            timeout,
        )
        return _revealed_text(r)

    def stream_reveal_text(
        self,
        tenant: str,
        chunks: Iterable[str],
        *,
        purpose: str | None = None,
        grant: str = "",
        timeout: float | None = None,
    ) -> Iterator[RevealedText]:
        """Re-identify a stream of chunks: one output per chunk, then one with the tail."""
        chosen = self._chosen_purpose(purpose, grant)
        requests = _reveal_text_requests(tenant, chunks, chosen, grant)
        for r in self._stream(self._tokens.StreamRevealText, requests, timeout):
            yield _revealed_text(r)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``SERVING`` / ``NOT_SERVING`` / ... as the standard health service reports it."""
        r = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
