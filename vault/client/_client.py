"""The :class:`VaultClient` class: one typed method per RPC of the Records, Audit, Tokens and
health services. Each method runs the call its ``_calls`` builder describes (the request and how
the response reads are written once there, for this client and :class:`AsyncVaultClient`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc

from vault import errors
from vault.client import _calls
from vault.client._base import DEFAULT_STREAM_TIMEOUT, DEFAULT_TIMEOUT, _ClientBase, _mapped
from vault.client._channel import RetryPolicy, _mtls_credentials, _open_channel, _tls_credentials
from vault.client._records import AccessEvent, Consent, CreatedRecord, ErasureReceipt, Record
from vault.client._tokens import (
    TOKENIZE_BATCH,
    RedactedText,
    RevealedText,
    RevealedToken,
    StreamSummary,
    TokenItem,
)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741  # an input item of a stream


class VaultClient(_ClientBase):
    """A connection to the vault. Thread-safe; reuse one per process.

    ``timeout``: the default deadline of a call, in seconds (each method takes ``timeout`` too);
    ``stream_timeout``: the default deadline of a whole stream. ``retry``: gRPC's retry policy
    for UNAVAILABLE on every RPC (True: :class:`RetryPolicy` defaults; False: none).
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        purpose: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT,
        retry: RetryPolicy | bool = True,
    ) -> None:
        """``purpose`` is the default purpose of reads (each call may state another one)."""
        super().__init__(
            _open_channel(address, credentials, retry),
            api_key=api_key,
            purpose=purpose,
            timeout=timeout,
            stream_timeout=stream_timeout,
        )

    @classmethod
    def mtls(
        cls,
        address: str,
        *,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        purpose: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT,
        retry: RetryPolicy | bool = True,
    ) -> VaultClient:
        """A client authenticating with a client certificate (the production mode)."""
        creds = _mtls_credentials(ca, cert, key)
        return cls(
            address,
            credentials=creds,
            purpose=purpose,
            timeout=timeout,
            stream_timeout=stream_timeout,
            retry=retry,
        )

    @classmethod
    def tls(
        cls,
        address: str,
        *,
        ca: str | Path | None = None,
        api_key: str | None = None,
        purpose: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT,
        retry: RetryPolicy | bool = True,
    ) -> VaultClient:
        """A client over server-authenticated TLS (``ca``: the server's CA, None: the system's
        roots), authenticating with an API key; with a client certificate use :meth:`mtls`."""
        return cls(
            address,
            api_key=api_key,
            credentials=_tls_credentials(ca),
            purpose=purpose,
            timeout=timeout,
            stream_timeout=stream_timeout,
            retry=retry,
        )

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _unary(self, call: _calls.Unary[T], timeout: float | None) -> T:
        method = self._method(call.stub, call.method)
        try:
            response = method(
                call.request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise _mapped(exc) from None
        return call.parse(response)

    def _stream(
        self, call: _calls.Stream[I, T], items: Iterable[I], timeout: float | None
    ) -> Iterator[T]:
        """The results of a stream, under a deadline for the whole stream; cancelled when the
        caller stops reading."""
        method = self._method(call.stub, call.method)
        responses = method(
            call.requests(items), timeout=self._stream_deadline(timeout), metadata=self._metadata
        )
        try:
            for response in responses:
                yield call.parse(response)
        except grpc.RpcError as exc:
            raise _mapped(exc) from None
        finally:
            responses.cancel()

    # --- records -----------------------------------------------------------------------------

    def create_record(
        self,
        tenant: str,
        fields: Mapping[str, str],
        *,
        idempotency_key: str = "",
        timeout: float | None = None,
    ) -> CreatedRecord:
        """Without ``idempotency_key`` the call carries a fresh one, so a retry is harmless."""
        return self._unary(_calls.create_record(tenant, fields, idempotency_key), timeout)

    def batch_create_records(
        self,
        tenant: str,
        records: Iterable[Mapping[str, str]],
        *,
        idempotency_keys: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[CreatedRecord]:
        return self._unary(_calls.batch_create_records(tenant, records, idempotency_keys), timeout)

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
        chosen = self._chosen_purpose(purpose)
        return self._unary(
            _calls.get_record(tenant, record_id, fields, chosen, token_scope), timeout
        )

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
        call = _calls.update_record(tenant, record_id, expected_version, set_fields, clear_fields)
        return self._unary(call, timeout)

    def delete_record(
        self, tenant: str, record_id: str, *, timeout: float | None = None
    ) -> ErasureReceipt:
        return self._unary(_calls.delete_record(tenant, record_id), timeout)

    def find_records(
        self, tenant: str, match: Mapping[str, str], *, limit: int = 0, timeout: float | None = None
    ) -> list[str]:
        return self._unary(_calls.find_records(tenant, match, limit), timeout)

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
        call = _calls.update_consent(tenant, record_id, purposes, expected_version, source)
        return self._unary(call, timeout)

    def get_consent(self, tenant: str, record_id: str, *, timeout: float | None = None) -> Consent:
        return self._unary(_calls.get_consent(tenant, record_id), timeout)

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
        chosen = self._chosen_purpose(purpose)
        call = _calls.export_customer_data(tenant, record_id, recipient_public_key, chosen)
        return self._unary(call, timeout)

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
        chosen = self._chosen_purpose(purpose)
        return self._unary(_calls.query_access(tenant, record_id, limit, chosen), timeout)

    # --- tokens ------------------------------------------------------------------------------

    def tokenize(
        self, tenant: str, items: Sequence[TokenItem], *, timeout: float | None = None
    ) -> list[str]:
        """One call (at most 10,000 items, all or nothing): a token per item, in order."""
        return self._unary(_calls.tokenize(tenant, items), timeout)

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
        bounded: ``items`` is consumed lazily). A batch failing with a retryable status (after
        the channel's own retries) is retried up to ``retries`` times with exponential backoff;
        other errors propagate. A retried random or format-preserving batch may leave unused
        token rows behind."""
        for batch in _calls.batches(items, batch_size):
            for attempt in range(retries + 1):
                try:
                    tokens = self.tokenize(tenant, batch, timeout=timeout)
                    break
                except errors.VaultServiceError as exc:
                    time.sleep(_calls.retry_delay(exc, attempt, retries, backoff))
            yield from tokens

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
        chosen = self._chosen_purpose(purpose, grant)
        return self._unary(_calls.reveal(tenant, tokens, chosen, grant), timeout)

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
        call = _calls.issue_grant(
            tenant,
            grantee,
            field_classes,
            record_ids=record_ids,
            scope=scope,
            ttl_seconds=ttl_seconds,
            max_uses=max_uses,
            max_values=max_values,
            purpose=self._chosen_purpose(purpose),
        )
        return self._unary(call, timeout)

    def revoke_grant(self, tenant: str, grant: str, *, timeout: float | None = None) -> bool:
        """End a grant of the caller's now; False when it was revoked already."""
        return self._unary(_calls.revoke_grant(tenant, grant), timeout)

    def stream_tokenize(
        self,
        tenant: str,
        batches: Iterable[Sequence[TokenItem]],
        *,
        timeout: float | None = None,
    ) -> Iterator[list[str] | StreamSummary]:
        """Tokenize batches over one stream: yields a list of tokens per batch, in order, and
        finally the stream's :class:`StreamSummary`. gRPC flow control paces the producer."""
        return self._stream(_calls.stream_tokenize(tenant), batches, timeout)

    def stream_reveal(
        self,
        tenant: str,
        batches: Iterable[Sequence[str]],
        *,
        purpose: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[list[RevealedToken] | StreamSummary]:
        """Reveal batches over one stream: a list of results per batch, then the summary."""
        call = _calls.stream_reveal(tenant, self._stream_purpose(purpose))
        return self._stream(call, batches, timeout)

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
        call = _calls.tokenize_text(tenant, texts, scope, default_region, ttl_seconds)
        return self._unary(call, timeout)

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
        return self._unary(_calls.reveal_text(tenant, text, chosen, grant), timeout)

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
        return self._stream(_calls.stream_reveal_text(tenant, chosen, grant), chunks, timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``SERVING`` / ``NOT_SERVING`` / ... as the standard health service reports it."""
        return self._unary(_calls.health(service), timeout)
