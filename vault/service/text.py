"""Free text for LLM flows: redact PII spans into tokens before a prompt, put the values back
into an answer for a caller allowed to see them (whole texts or a stream of chunks).

Spans are found by ``vault.text`` (pattern and checksum detectors; names and addresses only
with an NER model installed) and tokenized as **deterministic tokens of the conversation
scope, keyed on the exact string** (``TokenizeItem.exact``): within one scope the same value
always gets the same token, across calls, and re-identification restores exactly the text that
was there. Other scopes get unlinkable tokens.

Re-identification reveals every well-formed token of the text through
:meth:`TokensService.reveal` (action ``text.reveal``, or a grant), so each token gets the
policy's output for this caller, and is audited. A token is replaced by its plain or masked
value; any other outcome (the token output, omit, unknown, expired, erased, denied) leaves the
token in place and is reported. Token-like strings a model altered are reported as malformed,
never guessed at.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from vault.deadline import Deadline
from vault.errors import InvalidInput, PermissionDenied, VaultServiceError
from vault.policy import Action, Output
from vault.schema import DEFAULT_MAX_LENGTH, FieldClass
from vault.service._token_types import check_ttl
from vault.service.access import Caller
from vault.service.tokens import (
    RevealedToken,
    TokenError,
    TokenizeItem,
    TokenKind,
    TokensService,
)
from vault.service.validators import check_scope, check_tenant
from vault.text import (
    DEFAULT_MAX_TEXT_LENGTH,
    ScannerSetup,
    Span,
    StreamTokenScanner,
    TextScanner,
    TokenMatch,
    find_tokens,
)

log = logging.getLogger("vault.service.text")

#: texts per TokenizeText call
MAX_TEXTS = 1000
#: characters of one text (and of one chunk of a stream)
MAX_TEXT_LENGTH = DEFAULT_MAX_TEXT_LENGTH
#: characters of all the texts of one TokenizeText call: its CPU budget. Detection takes about
#: 2.5 s of one core for this many characters of ordinary text, and at most about 11 s for the
#: slowest text known (a long line of address cues and IP addresses); the call stops at its
#: deadline or cancellation between detectors in any case.
MAX_TEXT_CHARS = 1_048_576
#: PII spans tokenized by one TokenizeText call, in one Tokenize transaction (20,000 take about
#: 0.7 s): twice Tokenize's own MAX_ITEMS, so that 1,000 texts of 11 values each pass whole
MAX_TEXT_SPANS = 20_000
#: region codes accepted for phone numbers written without a country code
_REGION_LEN = 2


def _token_class(span: Span) -> str:
    """The class a span is tokenized as: its own, except a date of birth written out longer
    than the class's canonical ``YYYY-MM-DD`` allows ("12. März 1985"), which is tokenized as
    ``free_text``, the class of the message it came from (the span still reports
    ``date_of_birth``)."""
    if span.field_class == FieldClass.DATE_OF_BIRTH.value and (
        span.end - span.start > DEFAULT_MAX_LENGTH[FieldClass.DATE_OF_BIRTH]
    ):
        return FieldClass.FREE_TEXT.value
    return span.field_class


@dataclass(frozen=True, slots=True)
class TextSpan:
    """A replaced span: offsets in the original text (code points), its class and token."""

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
    """One token found in a text to re-identify: where it was (in the input), and what became
    of it (``error`` None and ``output`` plain or masked: replaced)."""

    token: str
    start: int
    end: int
    error: TokenError | None
    output: Output | None
    field_class: str
    reason: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A token-like string that is not a token (altered by a model): reported, kept as is."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RevealedText:
    text: str = field(repr=False)
    tokens: tuple[TextToken, ...]
    malformed: tuple[Malformed, ...]


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One chunk of a re-identification stream's output, with what was found in it."""

    text: str = field(repr=False)
    tokens: tuple[TextToken, ...]
    malformed: tuple[Malformed, ...]


class TextService:
    """TokenizeText and RevealText over :class:`TokensService`. Thread-safe."""

    def __init__(
        self,
        tokens: TokensService,
        *,
        scanners: dict[str, TextScanner] | None = None,
        setup: ScannerSetup | None = None,
    ):
        """
        Args:
            scanners: prebuilt scanners by region code (tests).
            setup: how scanners are built (the ``[text]`` settings); its NER model, if any, is
                loaded here, so that a missing model stops the server at start.

        Raises:
            ValueError, NerUnavailable: a bad ``setup`` (see :meth:`ScannerSetup.detectors`).
        """
        self.tokens = tokens
        self.setup = setup or ScannerSetup()
        self._scanners: dict[str, TextScanner] = dict(scanners or {})
        self._lock = threading.Lock()
        self.setup.detectors()  # fail now, not on the first call

    def _scanner(self, region: str) -> TextScanner:
        with self._lock:
            scanner = self._scanners.get(region)
            if scanner is None:
                scanner = TextScanner(self.setup.detectors(region))
                self._scanners[region] = scanner
            return scanner

    def uncovered_classes(self, region: str = "US") -> frozenset[str]:
        """Classes of free text no configured detector covers (none with the built-in set)."""
        return self._scanner(region).uncovered_classes

    # --- tokenize ----------------------------------------------------------------------------

    def tokenize_text(
        self,
        caller: Caller,
        tenant: str,
        texts: Sequence[str],
        *,
        scope: str = "",
        default_region: str = "US",
        ttl_seconds: int = 0,
        deadline: Deadline,
    ) -> list[RedactedText]:
        """Each text with its PII spans replaced by tokens of ``scope`` (one Tokenize batch for
        all texts: all or nothing, audited as ``token.create``).

        The call's work is bounded (:data:`MAX_TEXT_CHARS`, :data:`MAX_TEXT_SPANS`) and checks
        ``deadline`` (and the caller's cancellation) between texts and between detectors, so
        it stops soon after the caller stops waiting; every check comes before the one write
        transaction, so a call stopped early has written nothing.

        Raises:
            PermissionDenied: the role may not create tokens (audited).
            InvalidInput: no texts, too many, too long (``texts[i]``), too many characters in
                all or too many spans found (``texts``), a bad scope, region or
                ``ttl_seconds``.
            DeadlineExceeded, Cancelled: the caller stopped waiting; nothing was written.
            Unavailable: as for Tokenize; nothing was written.
        """
        check_tenant(tenant)
        # authorized before any input is looked at: a caller who may not tokenize gets an
        # audited PERMISSION_DENIED, not a hint about its input
        self.tokens.core.access.authorize(
            caller, Action.TOKEN_CREATE, tenant=tenant, deadline=deadline
        )
        _check_texts(texts)
        check_scope(scope)
        check_ttl(ttl_seconds)
        found = self._spans(texts, default_region, deadline)
        items = [
            TokenizeItem(
                text[s.start : s.end],
                _token_class(s),
                TokenKind.DETERMINISTIC,
                scope=scope,
                ttl_seconds=ttl_seconds,
                exact=True,
            )
            for text, spans in zip(texts, found, strict=True)
            for s in spans
        ]
        if not items:
            return [RedactedText(t, ()) for t in texts]
        deadline.check()  # the last point where stopping writes nothing
        try:
            tokens = iter(
                self.tokens.tokenize(
                    caller, tenant, items, deadline=deadline, max_items=MAX_TEXT_SPANS
                )
            )
        except InvalidInput as exc:
            if exc.field.startswith("items["):
                # a span the class refuses (too long for it): say which text, not which value
                raise InvalidInput("texts", "holds a value its class does not accept") from None
            raise
        return [
            _redacted(text, spans, [next(tokens) for _ in spans])
            for text, spans in zip(texts, found, strict=True)
        ]

    def _spans(
        self, texts: Sequence[str], default_region: str, deadline: Deadline
    ) -> list[list[Span]]:
        """The PII spans of each text, found by the region's scanner, checking ``deadline``
        before each text and each detector.

        Raises:
            InvalidInput: ``default_region`` unknown, more than :data:`MAX_TEXT_SPANS` spans
                (``texts``, as soon as they are found).
            DeadlineExceeded, Cancelled: from ``deadline``.
        """
        region = (default_region or "US").upper()
        try:
            scanner = self._scanner(region)
        except ValueError:
            raise InvalidInput("default_region", "not a known region code") from None
        found = []
        total = 0
        for text in texts:
            spans = scanner.find_spans(text, check=deadline.check)
            total += len(spans)
            if total > MAX_TEXT_SPANS:
                raise InvalidInput(
                    "texts", f"more than {MAX_TEXT_SPANS} PII spans found (the limit per call)"
                )
            found.append(spans)
        return found

    # --- reveal ------------------------------------------------------------------------------

    def reveal_text(
        self,
        caller: Caller,
        tenant: str,
        text: str,
        *,
        grant_id: str = "",
        deadline: Deadline,
    ) -> RevealedText:
        """``text`` with every token this caller may see replaced by its value (or mask).

        Raises:
            PermissionDenied: action, purpose or grant not allowed (audited).
            InvalidInput: the text is too long, or the purpose is missing or unknown.
            ResourceExhausted, Unavailable: as for Reveal; nothing revealed.
        """
        check_tenant(tenant)
        if len(text) > MAX_TEXT_LENGTH:
            raise InvalidInput("text", f"longer than {MAX_TEXT_LENGTH} characters")
        findings = find_tokens(text)
        results = self._reveal(caller, tenant, findings.tokens, grant_id, deadline)
        pieces: list[str] = []
        at = 0
        for match in findings.tokens:
            pieces.append(text[at : match.start])
            pieces.append(_replacement(match.token, results[match.token]))
            at = match.end
        pieces.append(text[at:])
        return RevealedText(
            "".join(pieces),
            tuple(_report(m, results[m.token]) for m in findings.tokens),
            tuple(Malformed(m.start, m.end) for m in findings.malformed),
        )

    def reveal_text_stream(
        self,
        caller: Caller,
        tenant: str,
        chunks: Iterable[str],
        *,
        grant_id: str = "",
        deadline: Deadline,
    ) -> Iterator[TextChunk]:
        """Re-identify a stream of chunks (an LLM's answer as it is generated): one output
        chunk per input chunk, holding back only what could still be the start of a token, so
        a token split across chunks is still found; a final chunk flushes the rest. One reveal
        (and audit transaction) per input chunk that completes tokens.

        Raises:
            as :meth:`reveal_text`, when the chunk that needs it arrives.
        """
        return self.reveal_text_batches(
            caller, tenant, ([c] for c in chunks), grant_id=grant_id, deadline=deadline
        )

    def reveal_text_batches(
        self,
        caller: Caller,
        tenant: str,
        batches: Iterable[Sequence[str]],
        *,
        grant_id: str = "",
        deadline: Deadline,
    ) -> Iterator[TextChunk]:
        """:meth:`reveal_text_stream` for chunks that come in batches (those a server received
        together): the same output, one per chunk, but one reveal (and audit transaction) per
        batch for the tokens its chunks complete. Under a grant each chunk is still a reveal
        of its own (every reveal uses the grant once, so batching would change the count).

        Raises:
            as :meth:`reveal_text`, when the chunk that needs it arrives: the chunks before it
            are answered first (a batch whose reveal fails is revealed again chunk by chunk,
            so the failure is its chunk's own).
        """
        check_tenant(tenant)
        scanner = StreamTokenScanner()
        checked = False
        for batch in batches:
            fed: list[Sequence[str | TokenMatch]] = []
            too_long = False
            for chunk in batch:
                if len(chunk) > MAX_TEXT_LENGTH:
                    too_long = True
                    break
                if not checked:
                    # authorize at the first chunk, even if it holds no token
                    self._reveal(caller, tenant, (), grant_id, deadline)
                    checked = True
                fed.append(scanner.feed(chunk))
            yield from self._chunks(caller, tenant, fed, grant_id, deadline)
            if too_long:
                raise InvalidInput("text", f"chunk longer than {MAX_TEXT_LENGTH} characters")
        if not checked:
            self._reveal(caller, tenant, (), grant_id, deadline)
        yield self._chunk(caller, tenant, scanner.finish(), grant_id, deadline)

    def _chunks(
        self,
        caller: Caller,
        tenant: str,
        fed: Sequence[Sequence[str | TokenMatch]],
        grant_id: str,
        deadline: Deadline,
    ) -> Iterator[TextChunk]:
        """The outputs of a batch of fed chunks: one reveal for all their tokens (per chunk
        under a grant, or when that reveal fails for what may be one chunk's doing)."""
        found = [m for pieces in fed for m in _well_formed(pieces)]
        if grant_id or len(fed) < 2 or not found:
            for pieces in fed:
                yield self._chunk(caller, tenant, pieces, grant_id, deadline)
            return
        try:
            results = self._reveal(caller, tenant, found, grant_id, deadline)
        except VaultServiceError as exc:
            if exc.retryable or isinstance(exc, PermissionDenied):
                raise  # the first chunk would fail alike
            for pieces in fed:
                yield self._chunk(caller, tenant, pieces, grant_id, deadline)
            return
        for pieces in fed:
            yield _rendered(pieces, results)

    def _chunk(
        self,
        caller: Caller,
        tenant: str,
        pieces: Sequence[str | TokenMatch],
        grant_id: str,
        deadline: Deadline,
    ) -> TextChunk:
        found = _well_formed(pieces)
        results = self._reveal(caller, tenant, found, grant_id, deadline) if found else {}
        return _rendered(pieces, results)

    def _reveal(
        self,
        caller: Caller,
        tenant: str,
        matches: Sequence[TokenMatch],
        grant_id: str,
        deadline: Deadline,
    ) -> dict[str, RevealedToken]:
        """Reveal the distinct tokens of ``matches``; with none, only the authorization (and
        purpose) checks run, so a caller learns nothing it may not ask."""
        distinct = list(dict.fromkeys(m.token for m in matches))
        if not distinct:
            self.tokens.check_reveal(
                caller, tenant, grant_id, Action.TEXT_REVEAL, deadline=deadline
            )
            return {}
        results = self.tokens.reveal(
            caller,
            tenant,
            distinct,
            grant_id=grant_id,
            action=Action.TEXT_REVEAL,
            deadline=deadline,
        )
        return {r.token: r for r in results}


def _check_texts(texts: Sequence[str]) -> None:
    """The texts of a TokenizeText call are within its budget, checked before any is scanned.

    Raises:
        InvalidInput: no texts, more than :data:`MAX_TEXTS`, one longer than
            :data:`MAX_TEXT_LENGTH` (``texts[i]``), more than :data:`MAX_TEXT_CHARS` in all.
    """
    if not texts:
        raise InvalidInput("texts", "at least one text is required")
    if len(texts) > MAX_TEXTS:
        raise InvalidInput("texts", f"at most {MAX_TEXTS} texts per call")
    for i, text in enumerate(texts):
        if len(text) > MAX_TEXT_LENGTH:
            raise InvalidInput(f"texts[{i}]", f"longer than {MAX_TEXT_LENGTH} characters")
    if sum(map(len, texts)) > MAX_TEXT_CHARS:
        raise InvalidInput(
            "texts", f"more than {MAX_TEXT_CHARS} characters in all (the limit per call)"
        )


def _redacted(text: str, spans: Sequence[Span], tokens: Sequence[str]) -> RedactedText:
    """``text`` with each span replaced by its token."""
    pieces: list[str] = []
    made: list[TextSpan] = []
    placed: set[tuple[int, str]] = set()  # (offset in the redacted text, token)
    at = length = 0
    for s, token in zip(spans, tokens, strict=True):
        pieces += [text[at : s.start], token]
        length += s.start - at
        placed.add((length, token))
        length += len(token)
        made.append(TextSpan(s.field_class, s.start, s.end, token))
        at = s.end
    pieces.append(text[at:])
    redacted = "".join(pieces)
    glued = len(placed - {(m.start, m.token) for m in find_tokens(redacted).tokens})
    if glued:
        # e.g. "tel+4420..." gives "teltok_phone_...": still redacted, but a token glued
        # to letters before it is not a token to RevealText (counts only: no values);
        # tokens the text already held are not counted (they were not made here)
        log.warning(
            "%d of %d tokens in a redacted text are glued to adjacent characters and "
            "will not be re-identified",
            glued,
            len(made),
        )
    return RedactedText(redacted, tuple(made))


def _well_formed(pieces: Sequence[str | TokenMatch]) -> list[TokenMatch]:
    return [p for p in pieces if isinstance(p, TokenMatch) and p.well_formed]


def _rendered(pieces: Sequence[str | TokenMatch], results: dict[str, RevealedToken]) -> TextChunk:
    """A fed chunk's output: its tokens replaced as ``results`` (their reveal) say."""
    out: list[str] = []
    reports: list[TextToken] = []
    malformed: list[Malformed] = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        elif p.well_formed:
            out.append(_replacement(p.token, results[p.token]))
            reports.append(_report(p, results[p.token]))
        else:
            out.append(p.token)
            malformed.append(Malformed(p.start, p.end))
    return TextChunk("".join(out), tuple(reports), tuple(malformed))


def _replacement(token: str, result: RevealedToken) -> str:
    if result.error is None and result.output in (Output.PLAIN, Output.MASKED):
        return result.value
    return token


def _report(match: TokenMatch, result: RevealedToken) -> TextToken:
    return TextToken(
        match.token,
        match.start,
        match.end,
        result.error,
        result.output,
        result.field_class,
        result.reason,
    )


__all__ = [
    "MAX_TEXTS",
    "MAX_TEXT_CHARS",
    "MAX_TEXT_LENGTH",
    "MAX_TEXT_SPANS",
    "Malformed",
    "RedactedText",
    "RevealedText",
    "TextChunk",
    "TextService",
    "TextSpan",
    "TextToken",
]
