"""Results of the Tokens calls (tokens and free text), and their conversion to and from the
``vault.v1`` messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from vault import errors
from vault.v1 import records_pb2 as pb
from vault.v1 import tokens_pb2 as tokens_pb

#: values per Tokenize call made by :meth:`VaultClient.tokenize_many`
TOKENIZE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class TokenItem:
    """One value to tokenize. ``kind``: ``random``, ``deterministic`` or ``format_preserving``."""

    value: str = field(repr=False)
    field_class: str
    kind: str = "random"
    scope: str = ""
    ttl_seconds: int = 0
    record_id: str = ""
    keep_last_four: bool = False


@dataclass(frozen=True, slots=True)
class RevealedToken:
    """One token of a reveal: ``error`` is empty or ``unknown``/``expired``/``erased``/
    ``denied``/``decryption_failed`` (its stored value or key is damaged; the other tokens are
    answered); else ``output`` (``plain``/``masked``/``token``/``omit``) and ``value``."""

    token: str
    error: str
    output: str
    value: str = field(repr=False)
    field_class: str
    reason: str


@dataclass(frozen=True, slots=True)
class StreamSummary:
    batches: int
    values: int
    errors: int
    seconds: float


@dataclass(frozen=True, slots=True)
class TextSpan:
    field_class: str
    start: int
    end: int
    token: str


@dataclass(frozen=True, slots=True)
class RedactedText:
    text: str = field(repr=False)
    spans: tuple[TextSpan, ...]


@dataclass(frozen=True, slots=True)
class TextToken:
    """A token found in a text: ``error`` empty and ``output`` plain/masked when replaced."""

    token: str
    start: int
    end: int
    error: str
    output: str
    field_class: str
    reason: str


@dataclass(frozen=True, slots=True)
class RevealedText:
    """A re-identified text (or chunk), with its tokens and the malformed (start, end) spans."""

    text: str = field(repr=False)
    tokens: tuple[TextToken, ...]
    malformed: tuple[tuple[int, int], ...]


_KINDS = {
    "random": tokens_pb.TOKEN_KIND_RANDOM,
    "deterministic": tokens_pb.TOKEN_KIND_DETERMINISTIC,
    "format_preserving": tokens_pb.TOKEN_KIND_FORMAT_PRESERVING,
}
_TOKEN_ERRORS = {
    tokens_pb.TOKEN_ERROR_UNSPECIFIED: "",
    tokens_pb.TOKEN_ERROR_UNKNOWN: "unknown",
    tokens_pb.TOKEN_ERROR_EXPIRED: "expired",
    tokens_pb.TOKEN_ERROR_ERASED: "erased",
    tokens_pb.TOKEN_ERROR_DENIED: "denied",
    tokens_pb.TOKEN_ERROR_DECRYPTION_FAILED: "decryption_failed",
}


def _token_request(tenant: str, items: Sequence[TokenItem]) -> tokens_pb.TokenizeRequest:
    out = []
    for i, item in enumerate(items):
        kind = _KINDS.get(item.kind)
        if kind is None:
            raise errors.InvalidInput(f"items[{i}].kind", "unknown token kind")
        out.append(
            tokens_pb.TokenizeItem(
                value=item.value,
                field_class=item.field_class,
                kind=kind,
                scope=item.scope,
                ttl_seconds=item.ttl_seconds,
                record_id=item.record_id,
                keep_last_four=item.keep_last_four,
            )
        )
    return tokens_pb.TokenizeRequest(tenant=tenant, items=out)


def _output_name(output: pb.Output.ValueType) -> str:
    return pb.Output.Name(output).removeprefix("OUTPUT_").lower() if output else ""


def _revealed(r: tokens_pb.RevealedToken) -> RevealedToken:
    return RevealedToken(
        r.token,
        _TOKEN_ERRORS.get(r.error, "unknown"),
        _output_name(r.output),
        r.value,
        r.field_class,
        r.reason,
    )


def _summary(s: tokens_pb.StreamSummary) -> StreamSummary:
    return StreamSummary(s.batches, s.values, s.errors, s.seconds)


def _redacted(r: tokens_pb.RedactedText) -> RedactedText:
    return RedactedText(
        r.text, tuple(TextSpan(s.field_class, s.start, s.end, s.token) for s in r.spans)
    )


def _revealed_text(r: tokens_pb.RevealTextResponse) -> RevealedText:
    return RevealedText(
        r.text,
        tuple(
            TextToken(
                t.token,
                t.start,
                t.end,
                _TOKEN_ERRORS.get(t.error, "unknown"),
                _output_name(t.output),
                t.field_class,
                t.reason,
            )
            for t in r.tokens
        ),
        tuple((m.start, m.end) for m in r.malformed),
    )
