"""The entry point: run a set of detectors over a text and return sorted, non-overlapping spans."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Final

from vault.text._patterns import (
    DEFAULT_NATIONAL_ID_FORMATS,
    CardNumberDetector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    NationalIdDetector,
    NationalIdFormat,
    PhoneDetector,
)
from vault.text._span import (
    ADDRESS,
    CARD_NUMBER,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    NAME,
    NATIONAL_ID,
    PHONE,
    TEXT_CLASSES,
    Detector,
    Span,
)

#: Default cap on the length of one text, in characters (code points).
DEFAULT_MAX_TEXT_LENGTH: Final = 65536

#: Tie-break between overlapping spans of equal length, strongest evidence first: a checksum
#: (card Luhn, IBAN mod 97, national-id rules) beats an email's syntax, which beats an IP's
#: exact dotted or colon shape, which beats a phone's numbering-plan check (many digit strings
#: are valid numbers somewhere); NER guesses come last. Classes not
#: listed rank after these, in alphabetical order.
CLASS_PRIORITY: Final[Sequence[str]] = (
    CARD_NUMBER,
    IBAN,
    NATIONAL_ID,
    EMAIL,
    IP_ADDRESS,
    PHONE,
    ADDRESS,
    NAME,
)
_RANK: Final = {field_class: rank for rank, field_class in enumerate(CLASS_PRIORITY)}


class DetectorError(Exception):
    """A detector failed or returned a span outside the text or of a class it does not declare.

    The message names the detector and the exception type only, and nothing is chained: a
    plugged-in recognizer's own exception may quote the text it was given.
    """


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep one deterministic winner wherever spans overlap; return the winners sorted by start.

    Winners are chosen greedily in the order: longest span first (it covers the most of what
    some detector thinks is sensitive), then :data:`CLASS_PRIORITY`, then earliest start, then
    detector name. A span that overlaps an already chosen one is dropped whole. The result does
    not depend on the order of the input. O(n log n) for n spans, plus list insertion.
    """
    ordered = sorted(
        set(spans),
        key=lambda s: (
            s.start - s.end,
            _RANK.get(s.field_class, len(_RANK)),
            s.field_class,
            s.start,
            s.detector,
        ),
    )
    starts: list[int] = []  # chosen spans, kept sorted by start; they never overlap
    chosen: list[Span] = []
    for span in ordered:
        i = bisect.bisect_left(starts, span.start)
        if i < len(chosen) and chosen[i].start < span.end:
            continue  # the next chosen span starts inside this one
        if i > 0 and chosen[i - 1].end > span.start:
            continue  # the previous chosen span reaches into this one
        starts.insert(i, span.start)
        chosen.insert(i, span)
    return chosen


def default_detectors(
    *,
    default_region: str = "US",
    national_id_formats: Iterable[str | NationalIdFormat] = DEFAULT_NATIONAL_ID_FORMATS,
) -> tuple[Detector, ...]:
    """The built-in pattern detectors: email, phone, card number, IBAN, national id, IP address.

    Raises:
        ValueError: ``default_region`` or a national id format is unknown.
    """
    return (
        EmailDetector(),
        PhoneDetector(default_region),
        CardNumberDetector(),
        IbanDetector(),
        NationalIdDetector(national_id_formats),
        IpAddressDetector(),
    )


def covered_classes(detectors: Iterable[Detector]) -> frozenset[str]:
    """Every field class that at least one of ``detectors`` can emit."""
    covered: set[str] = set()
    for detector in detectors:
        covered |= detector.field_classes
    return frozenset(covered)


class TextScanner:
    """Finds sensitive values in free text with a fixed set of detectors.

    Thread-safe if its detectors are (the built-in ones keep no state between calls).
    """

    def __init__(
        self,
        detectors: Iterable[Detector] | None = None,
        *,
        max_length: int = DEFAULT_MAX_TEXT_LENGTH,
    ) -> None:
        """
        Args:
            detectors: ``None`` for :func:`default_detectors`; add an NER recognizer (see
                :func:`~vault.text.load_ner_recognizer`) to cover names and addresses.
            max_length: longest text :meth:`find_spans` accepts, in characters.

        Raises:
            ValueError: ``max_length`` is not a positive integer, or two detectors share a name.
        """
        if type(max_length) is not int or max_length < 1:
            raise ValueError("max_length must be a positive integer")
        chosen = tuple(default_detectors() if detectors is None else detectors)
        names = [detector.name for detector in chosen]
        if len(set(names)) != len(names):
            raise ValueError("detector names must be unique")
        self.detectors: Final[tuple[Detector, ...]] = chosen
        self.max_length: Final = max_length

    @property
    def covered_classes(self) -> frozenset[str]:
        """Field classes the configured detectors can find."""
        return covered_classes(self.detectors)

    @property
    def uncovered_classes(self) -> frozenset[str]:
        """Classes of :data:`~vault.text.TEXT_CLASSES` no detector covers, e.g. ``name`` and
        ``address`` when no NER model is installed; a service can report these to its callers."""
        return TEXT_CLASSES - self.covered_classes

    def find_spans(self, text: str) -> list[Span]:
        """Sensitive values in ``text``: sorted by start, non-overlapping (see
        :func:`resolve_overlaps`).

        Raises:
            TypeError: ``text`` is not a ``str``.
            ValueError: ``text`` is longer than ``max_length`` (the message holds only lengths).
            DetectorError: a detector failed or broke its contract.
        """
        if not isinstance(text, str):
            raise TypeError("text must be a str")
        if len(text) > self.max_length:
            raise ValueError(f"text is longer than {self.max_length} characters")
        found: list[Span] = []
        for detector in self.detectors:
            spans = _run(detector, text)
            if spans is None:
                raise DetectorError(f"detector {detector.name!r} failed")
            classes = detector.field_classes
            for span in spans:
                if span.end > len(text) or span.field_class not in classes:
                    raise DetectorError(f"detector {detector.name!r} returned an invalid span")
            found.extend(spans)
        return resolve_overlaps(found)


def _run(detector: Detector, text: str) -> list[Span] | None:
    """``detector.find(text)``, or ``None`` if it raised.

    Any exception counts: a recognizer's error message or traceback may quote the text, so it
    is dropped here and :class:`DetectorError` is raised outside the ``except`` block, with no
    ``__context__`` to print.
    """
    try:
        spans = detector.find(text)
    except Exception:
        return None
    if not isinstance(spans, list) or not all(isinstance(s, Span) for s in spans):
        return None
    return spans
