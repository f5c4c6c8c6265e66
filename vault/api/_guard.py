"""Admission control: no caller can take every worker, and no stream lives for ever.

The server runs each call on one of ``max_workers`` threads for the call's whole length, so
sixteen idle streams (server reflection needs no credentials) used to make every other call,
health checks included, time out. :class:`CallGuard` (a server interceptor, inside the
authentication interceptor so that it knows the principal) keeps that from happening:

- at most ``max_workers - reserved_workers`` calls run at once; past that a call is refused at
  once with RESOURCE_EXHAUSTED (``server_busy``) instead of queueing, so the reserved workers
  are always free for health checks (which are never refused);
- at most ``max_streams`` streaming calls at once, and ``max_streams_per_principal`` per
  principal (RESOURCE_EXHAUSTED, ``too_many_streams``); streams that need no credentials
  (reflection, health watches) have a small cap of their own (``open_streams``), and reflection
  can be switched off;
- a stream whose client sends nothing for ``stream_idle_seconds`` (``open_idle_seconds`` for
  reflection), or that has run for ``stream_max_seconds``, is cancelled by a reaper thread,
  which frees its worker. A health watch is bounded by ``stream_max_seconds`` only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from vault.api._authn import current_principal, rewrapped
from vault.api._status import refusal_status
from vault.metrics import count_limit_refusal

log = logging.getLogger("vault.api.guard")

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
#: streams that need no credentials: server reflection, health watches
OPEN_PREFIXES = ("/grpc.reflection.", "/grpc.health.v1.Health/")
REFLECTION_PREFIX = "/grpc.reflection."
BUSY = "server_busy"
#: the reason of a call refused while the server cannot serve (a schema it does not run on)
NOT_READY = "server_not_ready"
TOO_MANY_STREAMS = "too_many_streams"


@dataclass(frozen=True, slots=True)
class CallLimits:
    """The bounds of :class:`CallGuard` (settings ``[server]``)."""

    max_workers: int = 16
    reserved_workers: int = 2
    max_streams: int = 8
    max_streams_per_principal: int = 4
    stream_idle_seconds: float = 60.0
    stream_max_seconds: float = 3600.0
    reflection: bool = True
    open_streams: int = 2
    open_idle_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.reserved_workers < self.max_workers:
            raise ValueError("reserved_workers must be at least 1 and less than max_workers")
        if not 1 <= self.max_streams <= self.max_workers - self.reserved_workers:
            raise ValueError("max_streams must be 1..max_workers - reserved_workers")
        if not 1 <= self.max_streams_per_principal <= self.max_streams:
            raise ValueError("max_streams_per_principal must be 1..max_streams")
        if not 0 <= self.open_streams <= self.max_streams:
            raise ValueError("open_streams must be 0..max_streams")
        if min(self.stream_idle_seconds, self.stream_max_seconds, self.open_idle_seconds) <= 0:
            raise ValueError("stream durations must be positive")


@dataclass
class _Stream:
    context: grpc.ServicerContext
    started: float
    last: float
    idle: float


class CallGuard(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Admits calls within :class:`CallLimits` and reaps idle or overlong streams. One per
    server; :meth:`close` stops its reaper."""

    def __init__(self, limits: CallLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._streams: dict[int, _Stream] = {}
        self._per_owner: Counter[str] = Counter()
        self._unavailable = ""
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="cvault-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        self._stop.set()

    def set_unavailable(self, problems: Mapping[str, str]) -> None:
        """Refuse authenticated calls with UNAVAILABLE while the database's schema is one this
        server does not run on (they would fail half-way); health checks still answer."""
        self._unavailable = problems.get("schema", "")

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        method = details.method
        if handler is None or method == HEALTH_CHECK:
            return handler
        if method.startswith(REFLECTION_PREFIX) and not self.limits.reflection:
            return None  # UNIMPLEMENTED, as if reflection were not served
        return _wrapped(handler, self, method.startswith(OPEN_PREFIXES))

    # --- admission ------------------------------------------------------------------------

    def admit(
        self, context: grpc.ServicerContext, streaming: bool, unauthenticated: bool, watching: bool
    ) -> str:
        """Take a worker slot (and a stream slot): the owner key to release with, or refuse
        the call (aborts the context)."""
        owner = f"open:{context.peer()}" if unauthenticated else _principal_name()
        unavailable = self._unavailable
        if unavailable and not unauthenticated:
            code = grpc.StatusCode.UNAVAILABLE
            context.abort_with_status(
                refusal_status(code, NOT_READY, unavailable, retryable="true")
            )
        with self._lock:
            refusal = self._refusal(owner, streaming, unauthenticated)
            if refusal is None:
                self._running += 1
                if streaming:
                    self._per_owner[owner] += 1
                    now = self._clock()
                    idle = (
                        self.limits.stream_max_seconds
                        if watching
                        else self.limits.open_idle_seconds
                        if unauthenticated
                        else self.limits.stream_idle_seconds
                    )
                    self._streams[id(context)] = _Stream(context, now, now, idle)
        if refusal is not None:
            log.info("refused a call: %s", refusal)
            count_limit_refusal(refusal)
            context.abort_with_status(
                refusal_status(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal, "try again later")
            )
        return owner

    def _refusal(self, owner: str, streaming: bool, unauthenticated: bool) -> str | None:
        limits = self.limits
        if self._running >= limits.max_workers - limits.reserved_workers:
            return BUSY
        if not streaming:
            return None
        open_now = sum(n for o, n in self._per_owner.items() if o.startswith("open:"))
        if unauthenticated and open_now >= limits.open_streams:
            return TOO_MANY_STREAMS
        if len(self._streams) >= limits.max_streams:
            return TOO_MANY_STREAMS
        if not unauthenticated and self._per_owner[owner] >= limits.max_streams_per_principal:
            return TOO_MANY_STREAMS
        return None

    def release(self, context: grpc.ServicerContext, owner: str, streaming: bool) -> None:
        with self._lock:
            self._running -= 1
            if streaming:
                self._streams.pop(id(context), None)
                self._per_owner[owner] -= 1
                if self._per_owner[owner] <= 0:
                    del self._per_owner[owner]

    def touch(self, context: grpc.ServicerContext) -> None:
        """A stream's client sent a message: it is not idle."""
        stream = self._streams.get(id(context))
        if stream is not None:
            stream.last = self._clock()

    # --- the reaper -----------------------------------------------------------------------

    def _reap(self) -> None:
        while not self._stop.wait(0.5):
            self.reap_once()

    def reap_once(self) -> int:
        """Cancel the streams idle or running past their bounds; how many."""
        now = self._clock()
        with self._lock:
            doomed = [
                s
                for s in self._streams.values()
                if now - s.last > s.idle or now - s.started > self.limits.stream_max_seconds
            ]
        for s in doomed:
            why = "ran too long" if now - s.started > self.limits.stream_max_seconds else "idle"
            log.info("cancelling a stream from %s: %s", s.context.peer(), why)
            s.context.cancel()  # type: ignore[no-untyped-call]
        return len(doomed)


def _principal_name() -> str:
    try:
        return current_principal().name
    except LookupError:
        return ""


def _wrapped(
    handler: grpc.RpcMethodHandler[Any, Any], guard: CallGuard, unauthenticated: bool
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behavior run inside an admission slot (for a stream: until its
    response iterator ends), and its request iterator reporting activity to the guard."""
    streaming = bool(handler.request_streaming or handler.response_streaming)
    watching = streaming and not handler.request_streaming  # the client sends nothing more

    def requests_of(request: Any, context: grpc.ServicerContext) -> Any:
        if not handler.request_streaming:
            return request
        return _Touching(iter(request), lambda: guard.touch(context))

    def unary(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            owner = guard.admit(context, streaming, unauthenticated, watching)
            try:
                return behavior(requests_of(request, context), context)
            finally:
                guard.release(context, owner, streaming)

        return run

    def streamed(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Any:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            owner = guard.admit(context, streaming, unauthenticated, watching)
            try:
                yield from behavior(requests_of(request, context), context)
            finally:
                guard.release(context, owner, streaming)

        return run

    return rewrapped(handler, unary, streamed)


class _Touching:
    """A request iterator that tells the guard each time a message arrives."""

    def __init__(self, inner: Iterator[Any], touch: Callable[[], None]) -> None:
        self._inner = inner
        self._touch = touch

    def __iter__(self) -> _Touching:
        return self

    def __next__(self) -> Any:
        item = next(self._inner)
        self._touch()
        return item
