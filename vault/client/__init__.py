"""Python SDK: typed methods over the ``vault.v1`` gRPC stubs, raising ``vault.errors`` classes.

from vault.client import VaultClient
with VaultClient("127.0.0.1:50051", api_key="cvk_...", purpose="account-management") as vc:
    created = vc.create_record("acme", {"email": "ada@example.com"})
    record = vc.get_record("acme", created.record_id)

In production the client authenticates with a certificate instead:
``VaultClient.mtls(address, ca=..., cert=..., key=...)``.

For asyncio code, :class:`AsyncVaultClient` has the same methods as coroutines (streams are
async iterators). Every RPC is retried on UNAVAILABLE by gRPC's retry policy
(:class:`RetryPolicy`; ``retry=False`` turns it off) and every call, streams included, has a
deadline (``timeout`` per call, else the client's ``timeout`` / ``stream_timeout``).

Modules: ``_client`` (the :class:`VaultClient` class), ``_aio`` (:class:`AsyncVaultClient`),
``_calls`` (each RPC's request and response reading, shared by both), ``_base`` (their common
state), ``_channel`` (the gRPC channel, its credentials and retry service config, and the mapping
of a failed call's status, by its ``ErrorInfo`` reason, to a :mod:`vault.errors` class),
``_records`` (results of the Records and Audit calls), ``_tokens`` (results of the Tokens calls:
tokens and free text). Everything public is imported from here.
"""

from __future__ import annotations

from vault.client._aio import AsyncVaultClient
from vault.client._channel import RetryPolicy
from vault.client._client import VaultClient
from vault.client._records import (
    AccessEvent,
    Consent,
    CreatedRecord,
    ErasureReceipt,
    FieldValue,
    Record,
)
from vault.client._tokens import (
    TOKENIZE_BATCH,
    RedactedText,
    RevealedText,
    RevealedToken,
    StreamSummary,
    TextSpan,
    TextToken,
    TokenItem,
)

__all__ = [
    "TOKENIZE_BATCH",
    "AccessEvent",
    "AsyncVaultClient",
    "Consent",
    "CreatedRecord",
    "ErasureReceipt",
    "FieldValue",
    "Record",
    "RedactedText",
    "RetryPolicy",
    "RevealedText",
    "RevealedToken",
    "StreamSummary",
    "TextSpan",
    "TextToken",
    "TokenItem",
    "VaultClient",
]
