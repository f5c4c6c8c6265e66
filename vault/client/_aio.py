"""The :class:`AsyncVaultClient` class: :class:`VaultClient`'s typed methods over ``grpc.aio``
(the same ``_calls`` builders, error mapping, retry policy and deadlines); streams are async
iterators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc

from vault import errors
from vault.client import _calls
from vault.client._base import DEFAULT_STREAM_TIMEOUT, DEFAULT_TIMEOUT, _ClientBase, _mapped
from vault.client._channel import (
    RetryPolicy,
    _mtls_credentials,
    _open_aio_channel,
    _tls_credentials,
)
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


class AsyncVaultClient(_ClientBase):
    """A connection to the vault for asyncio code: the methods of :class:`VaultClient`, as
    coroutines (streams: async iterators). Use it from one event loop; ``await close()`` or
    ``async with``; create it inside the event loop that uses it.

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
            _open_aio_channel(address, credentials, retry),
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
    ) -> AsyncVaultClient:
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
    ) -> AsyncVaultClient:
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

    async def __aenter__(self) -> AsyncVaultClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _unary(self, call: _calls.Unary[T], timeout: float | None) -> T:
        method = self._method(call.stub, call.method)
        try:
            response = await method(
                call.request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:  # grpc.aio.AioRpcError included
            raise _mapped(exc) from None
        return call.parse(response)

    async def _stream(
        self,
        call: _calls.Stream[I, T],
        items: Iterable[I] | AsyncIterable[I],
        timeout: float | None,
    ) -> AsyncIterator[T]:
        """The results of a stream, under a deadline for the whole stream; cancelled when the
        caller stops reading."""
        method = self._method(call.stub, call.method)
        responses = method(
            call.async_requests(items),
            timeout=self._stream_deadline(timeout),
            metadata=self._metadata,
        )
        try:
            async for response in responses:
                yield call.parse(response)
        except grpc.RpcError as exc:
            raise _mapped(exc) from None
        finally:
            responses.cancel()

    # --- records -----------------------------------------------------------------------------

    async def create_record(
        self,
        tenant: str,
        fields: Mapping[str, str],
        *,
        idempotency_key: str = "",
        timeout: float | None = None,
    ) -> CreatedRecord:
        """Without ``idempotency_key`` the call carries a fresh one, so a retry is harmless."""
        return await self._unary(_calls.create_record(tenant, fields, idempotency_key), timeout)

    async def batch_create_records(
        self,
        tenant: str,
        records: Iterable[Mapping[str, str]],
        *,
        idempotency_keys: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[CreatedRecord]:
        return await self._unary(
            _calls.batch_create_records(tenant, records, idempotency_keys), timeout
        )

    async def get_record(
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
        return await self._unary(
            _calls.get_record(tenant, record_id, fields, chosen, token_scope), timeout
        )

    async def update_record(
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
        return await self._unary(call, timeout)

    async def delete_record(
        self, tenant: str, record_id: str, *, timeout: float | None = None
    ) -> ErasureReceipt:
        return await self._unary(_calls.delete_record(tenant, record_id), timeout)

    async def find_records(
        self, tenant: str, match: Mapping[str, str], *, limit: int = 0, timeout: float | None = None
    ) -> list[str]:
        return await self._unary(_calls.find_records(tenant, match, limit), timeout)

    async def update_consent(
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
        return await self._unary(call, timeout)

    async def get_consent(
        self, tenant: str, record_id: str, *, timeout: float | None = None
    ) -> Consent:
        return await self._unary(_calls.get_consent(tenant, record_id), timeout)

    async def export_customer_data(
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
        return await self._unary(call, timeout)

    async def query_access(
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
        return await self._unary(_calls.query_access(tenant, record_id, limit, chosen), timeout)

    # --- tokens ------------------------------------------------------------------------------

    async def tokenize(
        self, tenant: str, items: Sequence[TokenItem], *, timeout: float | None = None
    ) -> list[str]:
        """One call (at most 10,000 items, all or nothing): a token per item, in order."""
        return await self._unary(_calls.tokenize(tenant, items), timeout)

    async def tokenize_many(
        self,
        tenant: str,
        items: Iterable[TokenItem],
        *,
        batch_size: int = TOKENIZE_BATCH,
        retries: int = 4,
        backoff: float = 0.2,
        timeout: float | None = None,
    ) -> AsyncIterator[str]:
        """:meth:`VaultClient.tokenize_many`: tokens in order, batch by batch, a batch failing
        with a retryable status retried ``retries`` times with exponential backoff."""
        for batch in _calls.batches(items, batch_size):
            for attempt in range(retries + 1):
                try:
                    tokens = await self.tokenize(tenant, batch, timeout=timeout)
                    break
                except errors.VaultServiceError as exc:
                    await asyncio.sleep(_calls.retry_delay(exc, attempt, retries, backoff))
            for token in tokens:
                yield token

    async def reveal(
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
        return await self._unary(_calls.reveal(tenant, tokens, chosen, grant), timeout)

    async def issue_grant(
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
        return await self._unary(call, timeout)

    async def revoke_grant(self, tenant: str, grant: str, *, timeout: float | None = None) -> bool:
        """End a grant of the caller's now; False when it was revoked already."""
        return await self._unary(_calls.revoke_grant(tenant, grant), timeout)

    def stream_tokenize(
        self,
        tenant: str,
        batches: Iterable[Sequence[TokenItem]] | AsyncIterable[Sequence[TokenItem]],
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[list[str] | StreamSummary]:
        """Tokenize batches over one stream: yields a list of tokens per batch, in order, and
        finally the stream's :class:`StreamSummary`. gRPC flow control paces the producer."""
        return self._stream(_calls.stream_tokenize(tenant), batches, timeout)

    def stream_reveal(
        self,
        tenant: str,
        batches: Iterable[Sequence[str]] | AsyncIterable[Sequence[str]],
        *,
        purpose: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[list[RevealedToken] | StreamSummary]:
        """Reveal batches over one stream: a list of results per batch, then the summary."""
        call = _calls.stream_reveal(tenant, self._stream_purpose(purpose))
        return self._stream(call, batches, timeout)

    # --- free text ---------------------------------------------------------------------------

    async def tokenize_text(
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
        return await self._unary(call, timeout)

    async def reveal_text(
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
        return await self._unary(_calls.reveal_text(tenant, text, chosen, grant), timeout)

    def stream_reveal_text(
        self,
        tenant: str,
        chunks: Iterable[str] | AsyncIterable[str],
        *,
        purpose: str | None = None,
        grant: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[RevealedText]:
        """Re-identify a stream of chunks: one output per chunk, then one with the tail."""
        chosen = self._chosen_purpose(purpose, grant)
        return self._stream(_calls.stream_reveal_text(tenant, chosen, grant), chunks, timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``SERVING`` / ``NOT_SERVING`` / ... as the standard health service reports it."""
        return await self._unary(_calls.health(service), timeout)
