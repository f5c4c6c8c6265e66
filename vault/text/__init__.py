"""Free-text PII detection and token finding: pure functions over strings, no I/O.

Detection (for tokenizing free text): :class:`TextScanner` runs a set of :class:`Detector`\\ s and
returns sorted, non-overlapping :class:`Span`\\ s (offsets and a class, never the value). The
built-in detectors find emails, phone numbers, card numbers, IBANs, national ids and IP
addresses by pattern plus checksum; names and addresses need an NER model
(:func:`load_ner_recognizer`), and :attr:`TextScanner.uncovered_classes` says when there is none.

Re-identification: :func:`find_tokens` finds vault tokens in a text, and reports token-like
strings a model altered as malformed; :class:`StreamTokenScanner` does the same for a stream of
chunks, with the same result for any split of the text.

This package sits below the service layer and imports nothing from it.
"""

from vault.text._ner import (
    PRESIDIO_ENTITIES,
    SPACY_LABELS,
    SPACY_MODELS,
    NerUnavailable,
    PresidioRecognizer,
    SpacyRecognizer,
    load_ner_recognizer,
)
from vault.text._patterns import (
    DEFAULT_NATIONAL_ID_FORMATS,
    NATIONAL_ID_FORMATS,
    CardNumberDetector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    NationalIdDetector,
    NationalIdFormat,
    PhoneDetector,
    is_valid_nino,
)
from vault.text._scanner import (
    CLASS_PRIORITY,
    DEFAULT_MAX_TEXT_LENGTH,
    DetectorError,
    TextScanner,
    covered_classes,
    default_detectors,
    resolve_overlaps,
)
from vault.text._span import (
    ADDRESS,
    CARD_NUMBER,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    NAME,
    NATIONAL_ID,
    NER_CLASSES,
    PATTERN_CLASSES,
    PHONE,
    TEXT_CLASSES,
    Detector,
    Span,
)
from vault.text._tokens import (
    MAX_CANDIDATE,
    Piece,
    StreamTokenScanner,
    TokenFindings,
    TokenMatch,
    find_tokens,
)

__all__ = [
    "ADDRESS",
    "CARD_NUMBER",
    "CLASS_PRIORITY",
    "DEFAULT_MAX_TEXT_LENGTH",
    "DEFAULT_NATIONAL_ID_FORMATS",
    "EMAIL",
    "IBAN",
    "IP_ADDRESS",
    "MAX_CANDIDATE",
    "NAME",
    "NATIONAL_ID",
    "NATIONAL_ID_FORMATS",
    "NER_CLASSES",
    "PATTERN_CLASSES",
    "PHONE",
    "PRESIDIO_ENTITIES",
    "SPACY_LABELS",
    "SPACY_MODELS",
    "TEXT_CLASSES",
    "CardNumberDetector",
    "Detector",
    "DetectorError",
    "EmailDetector",
    "IbanDetector",
    "IpAddressDetector",
    "NationalIdDetector",
    "NationalIdFormat",
    "NerUnavailable",
    "PhoneDetector",
    "Piece",
    "PresidioRecognizer",
    "SpacyRecognizer",
    "Span",
    "StreamTokenScanner",
    "TextScanner",
    "TokenFindings",
    "TokenMatch",
    "covered_classes",
    "default_detectors",
    "find_tokens",
    "is_valid_nino",
    "load_ner_recognizer",
    "resolve_overlaps",
]
