"""Spans of sensitive values in free text, the field-class names and the detector interface."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Protocol

# Field classes as plain strings: the text layer must not depend on when a class (``ip_address``)
# joins vault.schema's FieldClass; the values are the same as FieldClass's.
EMAIL: Final = "email"
PHONE: Final = "phone"
CARD_NUMBER: Final = "card_number"
IBAN: Final = "iban"
NATIONAL_ID: Final = "national_id"
IP_ADDRESS: Final = "ip_address"
NAME: Final = "name"
ADDRESS: Final = "address"
DATE_OF_BIRTH: Final = "date_of_birth"

#: Classes the built-in pattern-and-checksum detectors emit.
PATTERN_CLASSES: Final = frozenset({EMAIL, PHONE, CARD_NUMBER, IBAN, NATIONAL_ID, IP_ADDRESS})
#: Classes an NER model finds; the built-in cue-word detectors find them too, less completely.
NER_CLASSES: Final = frozenset({NAME, ADDRESS})
#: Classes found from context (cue words, capitalisation, a model) rather than a checksum: their
#: spans never swallow a pattern span (see :func:`~vault.text.resolve_overlaps`).
CONTEXT_CLASSES: Final = NER_CLASSES | {DATE_OF_BIRTH}
#: Every class a complete detector set is expected to cover in free text.
TEXT_CLASSES: Final = PATTERN_CLASSES | CONTEXT_CLASSES

#: Same alphabet and length as the class part of a token (vault.crypto TOKEN_RE).
FIELD_CLASS_RE: Final = re.compile(r"[a-z_]{1,32}")


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Where one sensitive value sits in a text: ``text[start:end]``.

    A span holds offsets, never the matched characters, so that no repr, log line or traceback
    that shows a span can show the value; callers slice the text they already hold.

    Attributes:
        start: offset of the first character (code points, as ``str`` indexing counts).
        end: offset one past the last character; ``start < end``.
        field_class: the kind of value, e.g. ``"email"``, ``"card_number"``.
        detector: name of the detector that found it, e.g. ``"phone"`` or ``"spacy"``.
    """

    start: int
    end: int
    field_class: str
    detector: str

    def __post_init__(self) -> None:
        if type(self.start) is not int or type(self.end) is not int:
            raise TypeError("span offsets must be integers")
        if not 0 <= self.start < self.end:
            raise ValueError("span offsets must satisfy 0 <= start < end")
        if not isinstance(self.field_class, str) or not FIELD_CLASS_RE.fullmatch(self.field_class):
            raise ValueError("span field_class must match [a-z_]{1,32}")
        if not isinstance(self.detector, str) or not self.detector:
            raise ValueError("span detector must be a non-empty string")


class Detector(Protocol):
    """Anything that finds sensitive values in a text: the built-in pattern detectors, and
    pluggable named-entity recognizers for names and addresses (see :mod:`vault.text._ner`).

    ``find`` must be pure (no I/O that depends on the text, no logging of it), must return spans
    whose classes are in ``field_classes`` and whose offsets lie inside ``text``, and may return
    overlapping spans: :class:`~vault.text.TextScanner` resolves overlaps across all detectors.
    """

    @property
    def name(self) -> str:
        """Short stable name, recorded in each span's ``detector``."""
        ...

    @property
    def field_classes(self) -> frozenset[str]:
        """Every class this detector can emit."""
        ...

    def find(self, text: str) -> list[Span]:
        """All values found in ``text``, in any order, possibly overlapping."""
        ...
