"""A stream whose client went away is the client's choice: logged at debug level without a
traceback, never as an internal error (issue 16: 146 "internal error ... RpcError" lines with
tracebacks in one fuzzing run)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from vault.api import _authn
from vault.api.tokens import TokensServicer
from vault.identity import AuthMethod, Principal
from vault.service import Services


class _Cancelled(grpc.RpcError):
    """What grpcio's request iterator raises once the client cancelled."""


class _Context:
    def __init__(self, active: bool) -> None:
        self.active = active
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def is_active(self) -> bool:
        return self.active

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> float:
        return 30.0

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return True  # registered; a stream's request reader closes itself through it


def _requests() -> Iterator[object]:
    raise _Cancelled()
    yield  # a generator


def _servicer() -> TokensServicer:
    return TokensServicer(cast(Services, SimpleNamespace(tokens=None, grants=None, text=None)))


@pytest.fixture(autouse=True)
def _principal() -> Iterator[None]:
    """What the auth interceptor sets for the handler's thread."""
    token = _authn._current.set(Principal("apikey:test", AuthMethod.API_KEY))
    yield
    _authn._current.reset(token)


@pytest.mark.parametrize("method", ["StreamTokenize", "StreamReveal"])
def test_a_cancelled_stream_logs_no_error(method: str, caplog: pytest.LogCaptureFixture) -> None:
    context = _Context(active=False)
    with caplog.at_level(logging.DEBUG, logger="vault.api"):
        out = list(getattr(_servicer(), method)(_requests(), cast(Any, context)))
    assert out == []
    assert context.aborted is None
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
    assert caplog.records[0].exc_info is None
    assert "cancelled" in caplog.records[0].getMessage()


def test_an_rpc_error_on_a_live_stream_is_still_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = _Context(active=True)
    with caplog.at_level(logging.DEBUG, logger="vault.api"), pytest.raises(RuntimeError):
        list(_servicer().StreamTokenize(_requests(), cast(Any, context)))
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.INTERNAL
    assert any(r.levelno == logging.ERROR for r in caplog.records)
