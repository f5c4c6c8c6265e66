"""The asyncio client, :class:`AsyncVaultClient`, against the real server and OpenBao (issue 12,
SDK): the same typed methods as :class:`VaultClient`, the same results and the same errors;
streams are async iterators.

pytest-asyncio is not a dependency: each test runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from tests.support import ADMIN_KEY, TEST_PURPOSE, sample_record
from vault import errors
from vault.api import RunningServer
from vault.client import AsyncVaultClient, StreamSummary, TokenItem, VaultClient

pytestmark = pytest.mark.openbao

T = TypeVar("T")


def _run(server: RunningServer, body: Callable[[AsyncVaultClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncVaultClient(
            server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=30
        ) as vc:
            return await body(vc)

    return asyncio.run(main())


async def _collect(stream: AsyncIterator[T]) -> list[T]:
    return [x async for x in stream]


def test_same_public_methods_as_the_sync_client() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            n: inspect.signature(f)
            for n, f in vars(cls).items()
            if callable(f) and not n.startswith("_")
        }

    sync, aio = public(VaultClient), public(AsyncVaultClient)
    assert set(sync) == set(aio)
    for name, signature in sync.items():
        if name in ("mtls", "tls"):
            continue  # classmethods: their own return type
        assert list(signature.parameters) == list(aio[name].parameters), name


def test_records_round_trip(server: RunningServer, admin_client: VaultClient, tenant: str) -> None:
    record = sample_record(0)

    async def body(vc: AsyncVaultClient) -> None:
        created = await vc.create_record(tenant, record)
        assert created.version == 1
        got = await vc.get_record(tenant, created.record_id)
        assert got.values()["email"] == record["email"]
        assert await vc.find_records(tenant, {"email": record["email"]}) == [created.record_id]
        updated = await vc.update_record(
            tenant, created.record_id, expected_version=1, set_fields={"phone": "+442079460958"}
        )
        assert updated.version == 2
        with pytest.raises(errors.Conflict):
            await vc.update_record(
                tenant, created.record_id, expected_version=1, clear_fields=["phone"]
            )
        consent = await vc.update_consent(
            tenant, created.record_id, ["marketing"], expected_version=0, source="test"
        )
        assert (await vc.get_consent(tenant, created.record_id)).version == consent.version
        receipt = await vc.delete_record(tenant, created.record_id)
        assert receipt.record_id == created.record_id
        with pytest.raises(errors.Erased):
            await vc.get_record(tenant, created.record_id)
        assert await vc.health() == "SERVING"

    _run(server, body)
    # the sync client sees what the async one did
    assert admin_client.find_records(tenant, {"email": record["email"]}) == []


def test_errors_carry_reason_and_field(server: RunningServer, tenant: str) -> None:
    async def body(vc: AsyncVaultClient) -> None:
        with pytest.raises(errors.InvalidInput) as caught:
            await vc.create_record(tenant, {"email": "not an email"})
        assert caught.value.field == "fields.email"
        with pytest.raises(errors.InvalidInput) as caught:
            await vc.find_records(tenant, {"full_name": "Ada"})
        assert caught.value.field == "match.full_name"

    _run(server, body)


def test_tokens_and_streams(server: RunningServer, tenant: str) -> None:
    emails = [sample_record(i)["email"] for i in range(5)]

    async def body(vc: AsyncVaultClient) -> None:
        items = [TokenItem(e, "email") for e in emails]
        tokens = await vc.tokenize(tenant, items)
        revealed = await vc.reveal(tenant, tokens)
        assert [r.value for r in revealed] == emails
        many = await _collect(vc.tokenize_many(tenant, iter(items), batch_size=2))
        assert len(many) == len(emails)

        async def batches() -> AsyncIterator[list[TokenItem]]:
            for item in items:
                yield [item]

        answers = await _collect(vc.stream_tokenize(tenant, batches()))
        assert isinstance(answers[-1], StreamSummary)
        streamed = [t for a in answers[:-1] if isinstance(a, list) for t in a]
        assert len(streamed) == len(emails)
        out = await _collect(vc.stream_reveal(tenant, [streamed[:2], streamed[2:]]))
        assert isinstance(out[-1], StreamSummary)
        values = [r.value for a in out[:-1] if isinstance(a, list) for r in a]
        assert values == emails

    _run(server, body)


def test_text_round_trip(server: RunningServer, tenant: str) -> None:
    email = sample_record(7)["email"]
    text = f"Please write to {email} about the order."

    async def body(vc: AsyncVaultClient) -> None:
        [redacted], _ = await vc.tokenize_text(tenant, [text], scope="backend-chat")
        assert email not in redacted.text
        assert (await vc.reveal_text(tenant, redacted.text)).text == text
        cut = len(redacted.text) // 2
        chunks = [redacted.text[:cut], redacted.text[cut:]]
        outs = await _collect(vc.stream_reveal_text(tenant, chunks))
        assert "".join(o.text for o in outs) == text
        assert (await _collect(vc.stream_reveal_text(tenant, [])))[0].text == ""

    _run(server, body)
