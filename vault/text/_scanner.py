"""The entry point: run a set of detectors over a text and return sorted, non-overlapping spans."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

from vault.text._ner import load_ner
from vault.text._patterns import (
    DEFAULT_NATIONAL_ID_FORMATS,
    DEFAULT_PHONE_REGIONS,
    CardNumberDetector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    NationalIdDetector,
    NationalIdFormat,
    PhoneDetector,
)
from vault.text._people import (
    AddressDetector,
    CapitalisedNameDetector,
    DateOfBirthDetector,
    NameDetector,
)
from vault.text._span import (
    ADDRESS,
    CARD_NUMBER,
    CONTEXT_CLASSES,
    DATE_OF_BIRTH,
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
    DATE_OF_BIRTH,
    ADDRESS,
    NAME,
)
_RANK: Final = {field_class: rank for rank, field_class in enumerate(CLASS_PRIORITY)}
_TRAILING: Final = ",;:-(/|"


class DetectorError(Exception):
    """A detector failed or returned a span outside the text or of a class it does not declare.

    The message names the detector and the exception type only, and nothing is chained: a
    plugged-in recognizer's own exception may quote the text it was given.
    """


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep one deterministic winner wherever spans overlap; return the winners sorted by start.

    Spans of pattern classes (checksums, exact shapes) are resolved first, among themselves, and
    are never swallowed by a context span (name, address, date of birth): a context span
    overlapping them is cut around them, each remaining piece its own span. Within each tier,
    winners are chosen greedily: longest span first, then :data:`CLASS_PRIORITY`, then earliest
    start, then detector name; a span overlapping an already chosen one is dropped whole. The
    result does not depend on the order of the input.
    """
    unique = set(spans)
    strong = _greedy(s for s in unique if s.field_class not in CONTEXT_CLASSES)
    ends = [s.end for s in strong]
    pieces: list[Span] = []
    for span in unique:
        if span.field_class in CONTEXT_CLASSES:
            pieces.extend(_cut_around(span, strong, ends))
    weak = _greedy(pieces)
    return sorted([*strong, *weak], key=lambda s: s.start)


def _cut_around(span: Span, chosen: list[Span], ends: list[int]) -> list[Span]:
    """The parts of ``span`` outside the (sorted, disjoint) ``chosen`` spans, whose ``ends``
    are given (made once per text: a text can hold thousands of each)."""
    pieces: list[Span] = []
    start = span.start
    i = bisect.bisect_left(ends, span.start + 1)
    while i < len(chosen) and chosen[i].start < span.end:
        if chosen[i].start > start:
            pieces.append(Span(start, chosen[i].start, span.field_class, span.detector))
        start = max(start, chosen[i].end)
        i += 1
    if start < span.end:
        pieces.append(Span(start, span.end, span.field_class, span.detector))
    return pieces


def _greedy(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping winners (longest, then class priority, start, detector), by start."""
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


#: Recall settings: ``standard`` finds names from cue words; ``high`` (strict mode) also takes
#: every capitalised word run that is not a common word.
RECALL_LEVELS: Final = ("standard", "high")


def default_detectors(
    *,
    default_region: str = "US",
    national_id_formats: Iterable[str | NationalIdFormat] = DEFAULT_NATIONAL_ID_FORMATS,
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    recall: str = "standard",
) -> tuple[Detector, ...]:
    """The built-in detectors: email, phone, card number, IBAN, national id, IP address, and the
    cue-word detectors for names, addresses and dates of birth.

    Args:
        default_region: region of phone numbers written without a country code.
        national_id_formats: see :class:`NationalIdDetector`.
        phone_regions: more regions whose national phone formats are tried.
        recall: one of :data:`RECALL_LEVELS`.

    Raises:
        ValueError: a region, a national id format or ``recall`` is unknown.
    """
    if recall not in RECALL_LEVELS:
        raise ValueError(f"recall must be one of {', '.join(RECALL_LEVELS)}")
    detectors: list[Detector] = [
        EmailDetector(),
        PhoneDetector(default_region, regions=phone_regions),
        CardNumberDetector(),
        IbanDetector(),
        NationalIdDetector(national_id_formats, bare_ssn=True),
        IpAddressDetector(),
        NameDetector(),
        AddressDetector(),
        DateOfBirthDetector(),
    ]
    if recall == "high":
        detectors.append(CapitalisedNameDetector())
    return tuple(detectors)


@dataclass(frozen=True, slots=True)
class ScannerSetup:
    """How a service builds its scanners (the ``[text]`` settings).

    Attributes:
        ner: ``"none"``, ``"spacy:<package>"``, ``"presidio"`` or ``"presidio:<package>"``: a
            model-backed recognizer added to the built-in detectors, loaded once per process.
        phone_regions: regions tried for phone numbers besides the call's ``default_region``.
        recall: ``"standard"`` or ``"high"`` (strict mode, see :data:`RECALL_LEVELS`).
    """

    ner: str = "none"
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    recall: str = "standard"

    def detectors(self, default_region: str = "US") -> tuple[Detector, ...]:
        """The built-in detectors for ``default_region`` plus the configured recognizer.

        Raises:
            ValueError: a bad region, ``recall`` or ``ner`` setting.
            NerUnavailable: the recognizer's package or model is not installed.
        """
        built = default_detectors(
            default_region=default_region, phone_regions=self.phone_regions, recall=self.recall
        )
        recognizer = load_ner(self.ner)
        return built if recognizer is None else (*built, recognizer)


def covered_classes(detectors: Iterable[Detector]) -> frozenset[str]:
    """Every field class that at least one of ``detectors`` can emit."""
    covered: set[str] = set()
    for detector in detectors:
        covered |= detector.field_classes
    return frozenset(covered)


def _go_on() -> None:
    """The default ``check`` of :meth:`TextScanner.find_spans`: never stops a scan."""


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
                :func:`~vault.text.load_ner`) to find more names and addresses.
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
        """Classes of :data:`~vault.text.TEXT_CLASSES` no detector covers (with the default
        detectors, none); a service can report these to its callers."""
        return TEXT_CLASSES - self.covered_classes

    def find_spans(self, text: str, *, check: Callable[[], None] = _go_on) -> list[Span]:
        """Sensitive values in ``text``: sorted by start, non-overlapping (see
        :func:`resolve_overlaps`).

        Args:
            check: called before each detector runs; it raises to stop the scan (a caller's
                deadline passed, the caller went away). A built-in detector takes well under a
                second on the longest text, however adversarial (0.6 s for the slowest known).

        Raises:
            TypeError: ``text`` is not a ``str``.
            ValueError: ``text`` is longer than ``max_length`` (the message holds only lengths).
            DetectorError: a detector failed or broke its contract.
            What ``check`` raises.
        """
        if not isinstance(text, str):
            raise TypeError("text must be a str")
        if len(text) > self.max_length:
            raise ValueError(f"text is longer than {self.max_length} characters")
        found: list[Span] = []
        for detector in self.detectors:
            check()
            spans = _run(detector, text)
            if spans is None:
                raise DetectorError(f"detector {detector.name!r} failed")
            classes = detector.field_classes
            for span in spans:
                if span.end > len(text) or span.field_class not in classes:
                    raise DetectorError(f"detector {detector.name!r} returned an invalid span")
            found.extend(spans)
        return [span for span in map(partial(_tidy, text), resolve_overlaps(found)) if span]


def _tidy(text: str, span: Span) -> Span | None:
    """A context span without outer blanks and punctuation (a piece left between two pattern
    spans, say), or ``None`` if nothing readable is left; pattern spans as they are."""
    if span.field_class not in CONTEXT_CLASSES:
        return span
    start, end = span.start, span.end
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in _TRAILING):
        end -= 1
    if start == end:
        return None
    if (start, end) == (span.start, span.end):
        return span
    return Span(start, end, span.field_class, span.detector)


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
