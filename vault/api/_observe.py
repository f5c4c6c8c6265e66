"""The outermost server interceptor: a request id, a span and the RPC metrics of every call.

For the whole length of a call (a stream's every step included) :class:`ObserveInterceptor`

* sets the request id (:mod:`vault.logs`): the caller's ``x-request-id`` when well formed, else
  a new one; every log line of the call carries it, and so do the audit rows
  (:func:`vault.api._handlers.caller_of`) and the INTERNAL error message;
* opens a server span (:mod:`vault.tracing`; a no-op unless tracing is on) named after the
  method, continuing the caller's ``traceparent``; key-server calls become its children;
* counts the call and its latency by method and status code (:mod:`vault.metrics`).

Only methods the server registered reach it (an unknown method is answered UNIMPLEMENTED by
gRPC before any interceptor wraps it), so the ``method`` label is never a caller's string.
Spans carry the method, the status code and the request id: never a request or response body.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from vault import logs, metrics, tracing
from vault.api._authn import rewrapped

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: metadata keys the trace context may travel in (W3C trace context)
_TRACE_HEADERS = ("traceparent", "tracestate")


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's ``x-request-id`` when well formed (the last one), else a new id."""
    found = ""
    for key, value in context.invocation_metadata():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and REQUEST_ID_RE.fullmatch(value):
            found = value
    return found or logs.new_request_id()


def _trace_parent(context: grpc.ServicerContext) -> Any:
    carrier = {
        k: v for k, v in context.invocation_metadata() if k in _TRACE_HEADERS and isinstance(v, str)
    }
    return propagate.extract(carrier) if carrier else None


def _code_of(context: grpc.ServicerContext, raised: bool) -> str:
    """The status code the call ended with, as its name."""
    code = context.code()  # type: ignore[attr-defined]
    if isinstance(code, grpc.StatusCode):
        return code.name
    if not context.is_active():
        return "CANCELLED"
    return "UNKNOWN" if raised else "OK"


class _Call:
    """One observed call: its request id, span and clock; :meth:`finish` records it once."""

    def __init__(self, method: str, context: grpc.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.request_id = request_id_of(context)
        service, _, name = method.lstrip("/").partition("/")
        self.span = tracing.tracer("vault.api").start_span(
            method.lstrip("/"),
            context=_trace_parent(context),
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "cvault.request_id": self.request_id,
            },
        )
        self.started = perf_counter()
        self._done = False
        self._lock = threading.Lock()

    def run(self, step: Callable[[], Any]) -> Any:
        """Run ``step`` with the request id and the span current."""
        token = logs.set_request_id(self.request_id, self.method)
        try:
            with trace.use_span(
                self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                return step()
        finally:
            logs.reset_request_id(token)

    def finish(self, raised: bool) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        code = _code_of(self.context, raised)
        metrics.observe_rpc(self.method, code, perf_counter() - self.started)
        self.span.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            self.span.set_status(Status(StatusCode.ERROR, code))
        self.span.end()


class _ObservedIterator:
    """A response stream whose every step runs inside its call's request id and span; the
    call is recorded when the stream ends, fails, or gRPC ends the call (cancellation)."""

    def __init__(self, call: _Call, responses: Iterator[Any]) -> None:
        self._call = call
        self._responses = responses

    def __iter__(self) -> _ObservedIterator:
        return self

    def __next__(self) -> Any:
        try:
            return self._call.run(lambda: next(self._responses))
        except StopIteration:
            self._call.finish(raised=False)
            raise
        except BaseException:
            self._call.finish(raised=True)
            raise


class ObserveInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Request ids, spans and RPC metrics for every call (put it first: outermost)."""

    def __init__(self) -> None:
        logs.install_request_ids()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method

        def unary(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                call = _Call(method, context)
                raised = True
                try:
                    result = call.run(lambda: behavior(request, context))
                    raised = False
                    return result
                finally:
                    call.finish(raised)

            return run

        def streamed(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Any:
            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                call = _Call(method, context)
                context.add_callback(lambda: call.finish(raised=False))
                try:
                    responses = call.run(lambda: iter(behavior(request, context)))
                except BaseException:
                    call.finish(raised=True)
                    raise
                return _ObservedIterator(call, responses)

            return run

        return rewrapped(handler, unary, streamed)
