"""gRPC servicer for ``vault.v1.Tokens``: wire <-> domain, errors -> status codes."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator

import grpc

from vault.api._handlers import (
    OUTPUT,
    abort_with,
    caller_of,
    checked,
    deadline_of,
    handle_errors,
    internal_error,
    timestamp,
)
from vault.api._streams import Part, RequestReader, parsed, served, split
from vault.errors import InvalidInput, VaultServiceError
from vault.service import Services
from vault.service.grants import GrantRequest
from vault.service.text import MAX_TEXT_LENGTH, Malformed, TextToken
from vault.service.tokens import (
    MAX_ITEMS,
    RevealedToken,
    TokenError,
    TokenizeItem,
    TokenKind,
)
from vault.v1 import records_pb2 as records_pb
from vault.v1 import tokens_pb2 as pb
from vault.v1 import tokens_pb2_grpc as pb_grpc

log = logging.getLogger("vault.api")

_KIND = {
    pb.TOKEN_KIND_UNSPECIFIED: TokenKind.RANDOM,
    pb.TOKEN_KIND_RANDOM: TokenKind.RANDOM,
    pb.TOKEN_KIND_DETERMINISTIC: TokenKind.DETERMINISTIC,
    pb.TOKEN_KIND_FORMAT_PRESERVING: TokenKind.FORMAT_PRESERVING,
}
_ERROR = {
    None: pb.TOKEN_ERROR_UNSPECIFIED,
    TokenError.UNKNOWN: pb.TOKEN_ERROR_UNKNOWN,
    TokenError.EXPIRED: pb.TOKEN_ERROR_EXPIRED,
    TokenError.ERASED: pb.TOKEN_ERROR_ERASED,
    TokenError.DENIED: pb.TOKEN_ERROR_DENIED,
    TokenError.DECRYPTION_FAILED: pb.TOKEN_ERROR_DECRYPTION_FAILED,
}


def _items(request: pb.TokenizeRequest) -> list[TokenizeItem]:
    """The request's items as the service takes them: one tuple each, made straight from the
    fields (``_make``: no per-item keyword handling; Tokenize carries up to 10,000)."""
    make = TokenizeItem._make
    out = []
    for i, item in enumerate(request.items):
        kind = _KIND.get(item.kind)
        if kind is None:
            raise InvalidInput(f"items[{i}].kind", "unknown token kind")
        out.append(
            make(
                (
                    item.value,
                    item.field_class,
                    kind,
                    item.scope,
                    item.ttl_seconds,
                    item.record_id,
                    item.keep_last_four,
                    False,  # exact: TokenizeText's spans only
                )
            )
        )
    return out


def _tokenize_part(raw: object) -> Part[tuple[str, list[TokenizeItem]]]:
    """A StreamTokenize message: its tenant and items; it may share a call with the messages of
    its tenant next to it unless it has no items or too many (it then fails alone)."""
    request = checked(raw)
    assert isinstance(request, pb.TokenizeRequest)
    items = _items(request)
    shares = 0 < len(items) <= MAX_ITEMS
    return Part((request.tenant, items), len(items), request.tenant if shares else None)


def _reveal_part(raw: object) -> Part[pb.RevealRequest]:
    """A StreamReveal message; it may share a call with the messages of its tenant and purpose
    next to it, except under a grant (each message uses it once, as it would alone) and with no
    tokens or too many (it then fails alone)."""
    request = checked(raw)
    assert isinstance(request, pb.RevealRequest)
    n = len(request.tokens)
    shares = not request.grant and 0 < n <= MAX_ITEMS
    return Part(request, n, (request.tenant, request.purpose) if shares else None)


def _text_part(raw: object) -> Part[pb.RevealTextRequest]:
    request = checked(raw)
    assert isinstance(request, pb.RevealTextRequest)
    return Part(request, 1, None)


def _weight(raw: object) -> int:
    """What a buffered stream request holds: items, tokens or characters (at least 1)."""
    if isinstance(raw, pb.TokenizeRequest):
        return max(1, len(raw.items))
    if isinstance(raw, pb.RevealRequest):
        return max(1, len(raw.tokens))
    if isinstance(raw, pb.RevealTextRequest):
        return max(1, len(raw.text))
    return 1


def _text_batches(reader: RequestReader) -> Iterator[list[pb.RevealTextRequest]]:
    """StreamRevealText's requests, in the batches they arrived in; a request that does not
    parse ends the stream once those before it are answered."""
    while requests := reader.take():
        parts, error = parsed(requests, _text_part)
        if parts:
            yield [p.payload for p in parts]
        if error is not None:
            raise error


def _revealed(r: RevealedToken) -> pb.RevealedToken:
    return pb.RevealedToken(
        token=r.token,
        error=_ERROR[r.error],
        output=OUTPUT[r.output] if r.output is not None else records_pb.OUTPUT_UNSPECIFIED,
        value=r.value,
        field_class=r.field_class,
        reason=r.reason,
    )


def _stream_errors(
    method: Callable[[TokensServicer, Iterator[object], grpc.ServicerContext], Iterator[object]],
) -> Callable[[TokensServicer, Iterator[object], grpc.ServicerContext], Iterator[object]]:
    """:func:`handle_errors` for streaming methods: a failing batch ends the stream with its
    status (batches answered before it were committed)."""

    def wrapper(
        self: TokensServicer, requests: Iterator[object], context: grpc.ServicerContext
    ) -> Iterator[object]:
        try:
            yield from method(self, requests, context)
        except VaultServiceError as exc:
            if exc.retryable:
                log.warning("%s: %s", method.__name__, exc.reason)
            abort_with(context, exc)
        except grpc.RpcError as exc:
            # reading the next request of a stream the client cancelled (or whose deadline
            # passed) raises this: the client's choice, not a bug, so no traceback
            if context.is_active():
                internal_error(context, method.__name__, exc)
            log.debug("%s: the client cancelled the stream", method.__name__)
        except Exception as exc:
            internal_error(context, method.__name__, exc)

    wrapper.__name__ = method.__name__
    return wrapper


def _text_token(t: TextToken) -> pb.TextToken:
    return pb.TextToken(
        token=t.token,
        start=t.start,
        end=t.end,
        error=_ERROR[t.error],
        output=OUTPUT[t.output] if t.output is not None else records_pb.OUTPUT_UNSPECIFIED,
        field_class=t.field_class,
        reason=t.reason,
    )


def _revealed_text(
    text: str, tokens: tuple[TextToken, ...], malformed: tuple[Malformed, ...]
) -> pb.RevealTextResponse:
    return pb.RevealTextResponse(
        text=text,
        tokens=[_text_token(t) for t in tokens],
        malformed=[pb.MalformedToken(start=m.start, end=m.end) for m in malformed],
    )


class TokensServicer(pb_grpc.TokensServicer):
    def __init__(self, services: Services) -> None:
        self._service = services.tokens
        self._grants = services.grants
        self._text = services.text

    @handle_errors
    def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.ServicerContext
    ) -> pb.TokenizeResponse:
        tokens = self._service.tokenize(
            caller_of(context), request.tenant, _items(request), deadline=deadline_of(context)
        )
        return pb.TokenizeResponse(tokens=tokens)

    @handle_errors
    def Reveal(self, request: pb.RevealRequest, context: grpc.ServicerContext) -> pb.RevealResponse:
        results = self._service.reveal(
            caller_of(context, request.purpose),
            request.tenant,
            list(request.tokens),
            grant_id=request.grant,
            deadline=deadline_of(context),
        )
        return pb.RevealResponse(results=[_revealed(r) for r in results])

    @handle_errors
    def IssueGrant(
        self, request: pb.IssueGrantRequest, context: grpc.ServicerContext
    ) -> pb.IssueGrantResponse:
        issued = self._grants.issue(
            caller_of(context, request.purpose),
            request.tenant,
            GrantRequest(
                grantee=request.grantee,
                field_classes=list(request.field_classes),
                ttl_seconds=request.ttl_seconds,
                max_uses=request.max_uses,
                record_ids=list(request.record_ids),
                scope=request.scope,
                max_values=request.max_values,
            ),
            deadline=deadline_of(context),
        )
        return pb.IssueGrantResponse(grant=issued.grant_id, expires_at=timestamp(issued.expires_at))

    @handle_errors
    def RevokeGrant(
        self, request: pb.RevokeGrantRequest, context: grpc.ServicerContext
    ) -> pb.RevokeGrantResponse:
        revoked = self._grants.revoke(
            caller_of(context), request.tenant, request.grant, deadline=deadline_of(context)
        )
        return pb.RevokeGrantResponse(revoked=revoked)

    @_stream_errors
    def StreamTokenize(  # type: ignore[override]
        self, requests: Iterator[object], context: grpc.ServicerContext
    ) -> Iterator[object]:
        """Tokenize per message, in order; the messages received together share one call."""
        started = time.monotonic()
        batches = values = 0
        caller = caller_of(context)

        def serve(group: list[tuple[str, list[TokenizeItem]]]) -> list[list[str]]:
            items = [item for _, batch in group for item in batch]
            tokens = self._service.tokenize(
                caller, group[0][0], items, deadline=deadline_of(context)
            )
            return split(tokens, [len(batch) for _, batch in group])

        with RequestReader(requests, context, weight=_weight, max_weight=MAX_ITEMS) as reader:
            for tokens in served(reader, _tokenize_part, serve, MAX_ITEMS):
                batches += 1
                values += len(tokens)
                yield pb.StreamTokenizeResponse(batch=pb.TokenizeResponse(tokens=tokens))
        yield pb.StreamTokenizeResponse(
            summary=pb.StreamSummary(
                batches=batches, values=values, seconds=time.monotonic() - started
            )
        )

    @_stream_errors
    def StreamReveal(  # type: ignore[override]
        self, requests: Iterator[object], context: grpc.ServicerContext
    ) -> Iterator[object]:
        """Reveal per message, in order; the messages received together share one call (one
        audit transaction, the plaintext counted before any value leaves), except under a
        grant."""
        started = time.monotonic()
        batches = values = errors = 0

        def serve(group: list[pb.RevealRequest]) -> list[list[RevealedToken]]:
            first = group[0]
            results = self._service.reveal(
                caller_of(context, first.purpose),
                first.tenant,
                [t for request in group for t in request.tokens],
                grant_id=first.grant,
                deadline=deadline_of(context),
            )
            return split(results, [len(request.tokens) for request in group])

        with RequestReader(requests, context, weight=_weight, max_weight=MAX_ITEMS) as reader:
            for results in served(reader, _reveal_part, serve, MAX_ITEMS):
                batches += 1
                values += len(results)
                errors += sum(1 for r in results if r.error is not None)
                yield pb.StreamRevealResponse(
                    batch=pb.RevealResponse(results=[_revealed(r) for r in results])
                )
        yield pb.StreamRevealResponse(
            summary=pb.StreamSummary(
                batches=batches,
                values=values,
                errors=errors,
                seconds=time.monotonic() - started,
            )
        )

    @handle_errors
    def TokenizeText(
        self, request: pb.TokenizeTextRequest, context: grpc.ServicerContext
    ) -> pb.TokenizeTextResponse:
        region = request.default_region or "US"
        results = self._text.tokenize_text(
            caller_of(context),
            request.tenant,
            list(request.texts),
            scope=request.scope,
            default_region=region,
            ttl_seconds=request.ttl_seconds,
            deadline=deadline_of(context),
        )
        return pb.TokenizeTextResponse(
            results=[
                pb.RedactedText(
                    text=r.text,
                    spans=[
                        pb.TextSpan(
                            field_class=s.field_class, start=s.start, end=s.end, token=s.token
                        )
                        for s in r.spans
                    ],
                )
                for r in results
            ],
            uncovered_classes=sorted(self._text.uncovered_classes(region.upper())),
        )

    @handle_errors
    def RevealText(
        self, request: pb.RevealTextRequest, context: grpc.ServicerContext
    ) -> pb.RevealTextResponse:
        r = self._text.reveal_text(
            caller_of(context, request.purpose),
            request.tenant,
            request.text,
            grant_id=request.grant,
            deadline=deadline_of(context),
        )
        return _revealed_text(r.text, r.tokens, r.malformed)

    @_stream_errors
    def StreamRevealText(  # type: ignore[override]
        self, requests: Iterator[object], context: grpc.ServicerContext
    ) -> Iterator[object]:
        """One output per chunk; the chunks received together are revealed in one call. The
        first request names the tenant, purpose and grant."""
        with RequestReader(requests, context, weight=_weight, max_weight=MAX_TEXT_LENGTH) as reader:
            batches = _text_batches(reader)
            try:
                head = next(batches)
            except StopIteration:
                raise InvalidInput("request", "the stream sent no request") from None
            opening = head[0]
            for out in self._text.reveal_text_batches(
                caller_of(context, opening.purpose),
                opening.tenant,
                ([r.text for r in batch] for batch in itertools.chain([head], batches)),
                grant_id=opening.grant,
                deadline=deadline_of(context),
            ):
                yield _revealed_text(out.text, out.tokens, out.malformed)
