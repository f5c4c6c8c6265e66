"""Streams served in groups: what has arrived together is served together.

A stream of many small messages, served one service call per message, pays a transaction, an
audit append and a commit per message (a fuzzing run: 2,000 one-item messages took 6 to 9 s).
Here a reader thread takes a stream's requests as they arrive into a bounded buffer, and the
handler takes everything already received, so consecutive compatible messages share one
service call; each message still gets its own answer, in order. A client that waits for each
answer before sending the next gets one message per call, as before; nothing waits for more.

No message type is known here: the handlers in ``vault.api.tokens`` give the parsing and the
service call.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import grpc

from vault.errors import PermissionDenied, VaultServiceError

P = TypeVar("P")
R = TypeVar("R")

#: messages the reader may hold before it waits for the handler (and flow control paces the
#: client); also the most messages one service call serves
MAX_MESSAGES = 1000
READER_NAME = "cvault-stream-reader"


class StreamEnded(grpc.RpcError):
    """The call ended (cancelled by the client, or its deadline passed) while the handler
    waited for requests: the handler stops (logged like grpcio's own error for this)."""


class RequestReader:
    """Reads a stream's requests in a thread of its own into a bounded buffer.

    The buffer holds at most ``max_weight`` (items, characters) or ``max_messages`` requests,
    and always room for one, whatever its weight. The thread ends when the requests end, when
    reading them fails (the client cancelled: grpcio raises), or when :meth:`close` is called;
    ``close`` runs when the call terminates (``context.add_callback``) and when the handler
    leaves the ``with`` block, so the thread never outlives the call.
    """

    def __init__(
        self,
        requests: Iterator[object],
        context: grpc.ServicerContext,
        *,
        weight: Callable[[object], int],
        max_weight: int,
        max_messages: int = MAX_MESSAGES,
    ) -> None:
        self._requests = requests
        self._weight = weight
        self._max_weight = max_weight
        self._max_messages = max_messages
        self._cond = threading.Condition()
        self._buffer: deque[tuple[object, int]] = deque()
        self._queued = 0  # the buffer's weight
        self._ended = False  # no request will come: they ended, or reading them failed
        self._error: BaseException | None = None
        self._closed = False
        if not context.add_callback(self.close):
            self._closed = True  # the call is already over
        self._thread = threading.Thread(target=self._read, name=READER_NAME, daemon=True)
        self._thread.start()

    def __enter__(self) -> RequestReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading; a handler waiting in :meth:`take` gets :class:`StreamEnded`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _full(self) -> bool:
        return bool(self._buffer) and (
            self._queued >= self._max_weight or len(self._buffer) >= self._max_messages
        )

    def _read(self) -> None:
        error: BaseException | None = None
        try:
            for request in self._requests:
                weight = self._weight(request)
                with self._cond:
                    while self._full() and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    self._buffer.append((request, weight))
                    self._queued += weight
                    self._cond.notify_all()
        except BaseException as exc:  # grpc.RpcError once the client cancelled
            error = exc
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()

    def take(self) -> list[object]:
        """Every request received and not yet taken (waiting for the first), at most
        ``max_weight`` and ``max_messages`` of them (one heavier request alone); ``[]`` once
        the requests ended and all were taken.

        Raises:
            StreamEnded: the call ended (or the reader was closed) meanwhile.
            BaseException: what reading the requests raised, once those before it are taken.
        """
        with self._cond:
            while not self._buffer and not self._ended and not self._closed:
                self._cond.wait()
            if self._closed:
                raise StreamEnded()
            if not self._buffer:
                if self._error is not None:
                    raise self._error
                return []
            out: list[object] = []
            weight = 0
            while self._buffer and len(out) < self._max_messages:
                request, w = self._buffer[0]
                if out and weight + w > self._max_weight:
                    break
                self._buffer.popleft()
                self._queued -= w
                weight += w
                out.append(request)
            self._cond.notify_all()
            return out


@dataclass(frozen=True, slots=True)
class Part(Generic[P]):
    """One message, parsed: what the service call needs (``payload``), its ``size`` in items,
    and a ``key``: consecutive parts of one key may share a service call; None: served alone."""

    payload: P
    size: int
    key: Hashable | None


def parsed(
    requests: Sequence[object], parse: Callable[[object], Part[P]]
) -> tuple[list[Part[P]], VaultServiceError | None]:
    """The requests parsed, up to the first that does not parse, and its error (or None)."""
    parts: list[Part[P]] = []
    for request in requests:
        try:
            parts.append(parse(request))
        except VaultServiceError as exc:
            return parts, exc
    return parts, None


def runs(parts: Sequence[Part[P]], max_items: int) -> Iterator[list[Part[P]]]:
    """Consecutive parts of one key, at most ``max_items`` items in all; a part without a key,
    or too big to share, alone."""
    run: list[Part[P]] = []
    items = 0
    for part in parts:
        if run and (part.key is None or part.key != run[0].key or items + part.size > max_items):
            yield run
            run, items = [], 0
        run.append(part)
        items += part.size
    if run:
        yield run


def pinpoints(exc: VaultServiceError) -> bool:
    """Whether a failed shared call is served again message by message, to find the message
    that fails alone (a bad item, a missing record, a reached limit). Not for what fails the
    first message alike: a refused caller or purpose (audited once is enough), an outage."""
    return not exc.retryable and not isinstance(exc, PermissionDenied)


def serve_parts(
    parts: Sequence[Part[P]], serve: Callable[[list[P]], list[R]], max_items: int
) -> Iterator[R]:
    """One answer per part, in order: ``serve`` once per run of parts that may share a call.

    A failing shared call is served again part by part (see :func:`pinpoints`), so the answers
    before the failing part are given, and committed, and the failure is its own (a field
    named ``items[i]`` within that message)."""
    for run in runs(parts, max_items):
        payloads = [p.payload for p in run]
        if len(run) == 1:
            yield from serve(payloads)
            continue
        try:
            answers = serve(payloads)
        except VaultServiceError as exc:
            if not pinpoints(exc):
                raise
            for payload in payloads:
                yield from serve([payload])
            continue
        yield from answers


def split(flat: Sequence[R], sizes: Sequence[int]) -> list[list[R]]:
    """``flat`` cut into consecutive lists of ``sizes``."""
    out: list[list[R]] = []
    at = 0
    for n in sizes:
        out.append(list(flat[at : at + n]))
        at += n
    return out


def served(
    reader: RequestReader,
    parse: Callable[[object], Part[P]],
    serve: Callable[[list[P]], list[R]],
    max_items: int,
) -> Iterator[R]:
    """Every request of the stream answered, in order, taking what has arrived each time; a
    request that does not parse ends the stream once those before it are answered."""
    while requests := reader.take():
        parts, error = parsed(requests, parse)
        yield from serve_parts(parts, serve, max_items)
        if error is not None:
            raise error


__all__ = [
    "MAX_MESSAGES",
    "READER_NAME",
    "Part",
    "RequestReader",
    "StreamEnded",
    "parsed",
    "pinpoints",
    "serve_parts",
    "served",
    "split",
]
