"""Finding vault tokens in text for re-identification, whole or streamed chunk by chunk.

A token is ``tok_<class>_<22 base62 digits>`` with the class in ``[a-z_]{1,32}`` (see
``vault.crypto.TOKEN_RE``). Text that went through a language model may hold tokens the model
altered (cut short, extended, re-cased): those are reported as *malformed* so the caller can say
so, rather than guess which token was meant.

Grammar, in order of application:

1. A *candidate* starts at ``tok_`` in any letter case, unless preceded by an ASCII letter or
   digit, or by one of those followed by ``_`` (``mytok_``, ``my_tok_`` are identifiers;
   ``_tok_..._`` in Markdown italics is not). It runs over ``[A-Za-z0-9_]`` and ends at its last
   letter or digit (trailing underscores are text), and is at most ``MAX_CANDIDATE`` characters
   long (the rest of a longer run is text). ``tok_`` followed by no letter or digit is text.
2. A candidate is *well-formed* if it is, exactly, ``tok_`` + class + ``_`` + 22 base62 digits.
   As base62 has no underscore, the digits are what follows the last underscore.
3. Every other candidate is *malformed*.

Candidates never overlap; they are found left to right as by ``re.finditer``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

#: The longest candidate: a well-formed token is at most 4 + 32 + 1 + 22 = 59 characters; the
#: slack catches a token a model extended, and the cap bounds what a stream must hold back.
MAX_CANDIDATE: Final = 128

_CANDIDATE: Final = re.compile(
    rf"(?<![A-Za-z0-9])(?<![A-Za-z0-9]_)[Tt][Oo][Kk]_[A-Za-z0-9_]{{0,{MAX_CANDIDATE - 5}}}"
    r"[A-Za-z0-9]"
)
_WELL_FORMED: Final = re.compile(r"tok_[a-z_]{1,32}_[0-9A-Za-z]{22}")
_RUN_CHAR: Final = re.compile(r"[A-Za-z0-9_]")
_PREFIX: Final = "tok_"


@dataclass(frozen=True, slots=True)
class TokenMatch:
    """One token-like string in a text: ``text[start:end] == token``.

    Attributes:
        start: offset of ``t`` of ``tok_`` (in a stream: from the start of the stream).
        end: offset one past the last character.
        token: the characters as found. Left out of the repr: a malformed one is whatever the
            text held there.
        well_formed: whether it is a token by the grammar above (it may still name no token
            the vault issued).
    """

    start: int
    end: int
    token: str = field(repr=False)
    well_formed: bool

    @property
    def field_class(self) -> str | None:
        """The class part of a well-formed token (``"card_number"``), else ``None``."""
        if not self.well_formed:
            return None
        return self.token[len(_PREFIX) : self.token.rindex("_")]


@dataclass(frozen=True, slots=True)
class TokenFindings:
    """Result of :func:`find_tokens`: well-formed tokens and malformed ones, each by start."""

    tokens: tuple[TokenMatch, ...]
    malformed: tuple[TokenMatch, ...]


def _match(found: re.Match[str], offset: int) -> TokenMatch:
    token = found.group()
    return TokenMatch(
        offset + found.start(),
        offset + found.end(),
        token,
        _WELL_FORMED.fullmatch(token) is not None,
    )


def find_tokens(text: str) -> TokenFindings:
    """Every token-like string in ``text``, split into well-formed and malformed.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    found = [_match(m, 0) for m in _CANDIDATE.finditer(text)]
    return TokenFindings(
        tuple(m for m in found if m.well_formed), tuple(m for m in found if not m.well_formed)
    )


#: What :class:`StreamTokenScanner` emits: text safe to pass on now, or a token-like string.
Piece = str | TokenMatch


class StreamTokenScanner:
    """Splits a stream of text chunks into literal text and tokens as the chunks arrive.

    Whatever the split of a text into chunks, the tokens emitted (offsets counted from the start
    of the stream) are exactly those of :func:`find_tokens` on the whole text, and the pieces in
    order spell the whole text. Literal text is released as soon as it cannot be part of a
    token; held back is only a suffix that could still become one (at most ``MAX_CANDIDATE``
    characters), e.g. a trailing ``to`` or an unfinished ``tok_email_Ab3``.

    Not thread-safe: one scanner per stream.
    """

    def __init__(self) -> None:
        self._pending = ""  # received, not yet emitted
        self._before = ""  # up to the last two emitted characters, for the look-behind
        self._offset = 0  # stream offset of _pending[0]
        self._finished = False

    def feed(self, chunk: str) -> list[Piece]:
        """Add the next chunk; return the pieces that are now certain, in order.

        Raises:
            TypeError: ``chunk`` is not a ``str``.
            ValueError: :meth:`finish` was already called.
        """
        if not isinstance(chunk, str):
            raise TypeError("chunk must be a str")
        if self._finished:
            raise ValueError("the scanner is finished")
        self._pending += chunk
        return self._scan(final=False)

    def finish(self) -> list[Piece]:
        """End of stream: return all remaining pieces. Idempotent.

        Raises:
            Nothing.
        """
        if self._finished:
            return []
        self._finished = True
        return self._scan(final=True)

    def _scan(self, *, final: bool) -> list[Piece]:
        # Searching from len(before) in before + pending lets the look-behind see emitted text,
        # so a match found here is a match of the whole text at the same place.
        text = self._before + self._pending
        base = len(self._before)
        pieces: list[Piece] = []
        emitted = base
        hold = len(text)
        for found in _CANDIDATE.finditer(text, base):
            if not final and not _settled(text, found):
                hold = found.start()
                break
            if found.start() > emitted:
                pieces.append(text[emitted : found.start()])
            pieces.append(_match(found, self._offset - base))
            emitted = found.end()
        else:
            if not final:
                hold = _earliest_possible_start(text, emitted)
        if hold > emitted:
            pieces.append(text[emitted:hold])
            emitted = hold
        self._offset += emitted - base
        self._before = text[max(0, emitted - 2) : emitted]
        self._pending = text[emitted:]
        return pieces


def _settled(text: str, found: re.Match[str]) -> bool:
    """Whether more text could no longer change this candidate.

    It could grow only while nothing but underscores follows it up to the end of the text so
    far (more letters or digits would extend it), unless it already has the maximum length.
    """
    limit = found.start() + MAX_CANDIDATE  # the pattern reads no further than this
    end = found.end()
    while end < len(text) and end < limit and text[end] == "_":
        end += 1
    return end < len(text) or end >= limit


def _earliest_possible_start(text: str, start: int) -> int:
    """The first offset ``>= start`` where a candidate could begin once more text arrives.

    Called when ``text[start:]`` holds no candidate. One could still begin where the rest of the
    text is a prefix of ``tok_`` (any case), or at a ``tok_`` followed only by underscores (a
    letter or digit may come next), if the look-behind allows a start there. Positions before
    ``len(text) - MAX_CANDIDATE`` are settled: a candidate there would already have a letter or
    digit within reach.
    """
    for pos in range(max(start, len(text) - MAX_CANDIDATE + 1), len(text)):
        tail = text[pos : pos + len(_PREFIX)].lower()
        if not _PREFIX.startswith(tail):
            continue
        if len(tail) == len(_PREFIX) and not all(c == "_" for c in text[pos + len(_PREFIX) :]):
            continue
        if _start_allowed(text, pos):
            return pos
    return len(text)


def _start_allowed(text: str, pos: int) -> bool:
    """The candidate look-behind: not after ``[A-Za-z0-9]`` nor after ``[A-Za-z0-9]_``."""
    if pos >= 1 and _is_alnum(text[pos - 1]):
        return False
    return not (pos >= 2 and text[pos - 1] == "_" and _is_alnum(text[pos - 2]))


def _is_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()
