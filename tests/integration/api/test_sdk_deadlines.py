"""Deadlines on every SDK call, streams included (issue 12, SDK).

Before: a stream had no deadline unless the caller gave one, so a stalled server held the caller
for ever. Now a stream runs under the client's ``stream_timeout`` (or the call's ``timeout``)
and ends with DEADLINE_EXCEEDED. Bounds here are liveness bounds (the call ends at all, well
within a generous limit), not speed thresholds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration.api.sdk_support import FakeServer, stalling_stream
from vault import errors
from vault.client import AsyncVaultClient, TokenItem, VaultClient

STREAMS = {
    "stream_tokenize": "/vault.v1.Tokens/StreamTokenize",
    "stream_reveal": "/vault.v1.Tokens/StreamReveal",
    "stream_reveal_text": "/vault.v1.Tokens/StreamRevealText",
}
#: how long a stream under a 1 s deadline may take to end before the test calls it stuck
LIVENESS = 30.0


@pytest.fixture
def stalled() -> Iterator[FakeServer]:
    released = threading.Event()
    fake = FakeServer({path: stalling_stream(released) for path in STREAMS.values()})
    yield fake
    released.set()
    fake.stop()


def _ends_within(run: Callable[[], object], seconds: float) -> BaseException | None:
    """Run ``run`` in a thread; the exception it ended with (None: it returned). Fails the test
    when it has not ended after ``seconds``."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            run()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"the call was still running after {seconds} s: no deadline"
    return outcome[0]


def _consume(vc: VaultClient, name: str, timeout: float | None) -> None:
    if name == "stream_tokenize":
        list(vc.stream_tokenize("acme", [[TokenItem("x", "free_text")]], timeout=timeout))
    elif name == "stream_reveal":
        list(vc.stream_reveal("acme", [["tok_x"]], purpose="p", timeout=timeout))
    else:
        list(vc.stream_reveal_text("acme", ["a chunk"], purpose="p", timeout=timeout))


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_has_the_clients_default_deadline(stalled: FakeServer, name: str) -> None:
    with VaultClient(stalled.address, stream_timeout=1.0) as vc:
        exc = _ends_within(lambda: _consume(vc, name, None), LIVENESS)
    assert isinstance(exc, errors.DeadlineExceeded), repr(exc)


def test_a_calls_timeout_overrides_the_stream_default(stalled: FakeServer) -> None:
    with VaultClient(stalled.address, stream_timeout=3600) as vc:
        started = time.monotonic()
        exc = _ends_within(lambda: _consume(vc, "stream_tokenize", 1.0), LIVENESS)
    assert isinstance(exc, errors.DeadlineExceeded), repr(exc)
    assert time.monotonic() - started >= 0.9  # the call's deadline, not an earlier failure


def test_default_stream_deadline_is_set() -> None:
    with VaultClient("127.0.0.1:1") as vc:
        assert vc._stream_deadline(None) > 0
        assert vc._stream_deadline(5.0) == 5.0
    with pytest.raises(ValueError, match="positive"):
        VaultClient("127.0.0.1:1", stream_timeout=0)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_async_stream_has_a_deadline(stalled: FakeServer, name: str) -> None:
    async def consume() -> None:
        async with AsyncVaultClient(stalled.address, stream_timeout=1.0) as vc:
            if name == "stream_tokenize":
                stream = vc.stream_tokenize("acme", [[TokenItem("x", "free_text")]])
                _ = [x async for x in stream]
            elif name == "stream_reveal":
                _ = [x async for x in vc.stream_reveal("acme", [["tok_x"]], purpose="p")]
            else:
                _ = [x async for x in vc.stream_reveal_text("acme", ["a chunk"], purpose="p")]

    async def bounded() -> None:
        await asyncio.wait_for(consume(), LIVENESS)

    with pytest.raises(errors.DeadlineExceeded):
        asyncio.run(bounded())
