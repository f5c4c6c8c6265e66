"""Free-text PII detection and token finding: pure functions over strings, no I/O.

Detection (for tokenizing free text): :class:`TextScanner` runs a set of :class:`Detector`\\ s and
returns sorted, non-overlapping :class:`Span`\\ s (offsets and a class, never the value). The
built-in detectors find emails, phone numbers, card numbers, IBANs, national ids and IP
addresses by pattern plus checksum, and names, addresses and dates of birth from cue words and
capitalisation (:mod:`vault.text._people`); an NER model can be added (:func:`load_ner`,
:class:`ScannerSetup`), and :attr:`TextScanner.uncovered_classes` says what nothing covers.

Re-identification: :func:`find_tokens` finds vault tokens in a text, and reports token-like
strings a model altered as malformed; :class:`StreamTokenScanner` does the same for a stream of
chunks, with the same result for any split of the text.

This package sits below the service layer and imports nothing from it.
"""

from vault.text._ner import (
    NER_SETTINGS_HELP,
    PRESIDIO_ENTITIES,
    SPACY_LABELS,
    SPACY_MODELS,
    NerUnavailable,
    PresidioRecognizer,
    SpacyRecognizer,
    load_ner,
    load_ner_recognizer,
)
from vault.text._patterns import (
    DEFAULT_NATIONAL_ID_FORMATS,
    DEFAULT_PHONE_REGIONS,
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
from vault.text._people import (
    AddressDetector,
    CapitalisedNameDetector,
    DateOfBirthDetector,
    NameDetector,
)
from vault.text._scanner import (
    CLASS_PRIORITY,
    DEFAULT_MAX_TEXT_LENGTH,
    RECALL_LEVELS,
    DetectorError,
    ScannerSetup,
    TextScanner,
    covered_classes,
    default_detectors,
    resolve_overlaps,
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
    "CONTEXT_CLASSES",
    "DATE_OF_BIRTH",
    "DEFAULT_MAX_TEXT_LENGTH",
    "DEFAULT_NATIONAL_ID_FORMATS",
    "DEFAULT_PHONE_REGIONS",
    "EMAIL",
    "IBAN",
    "IP_ADDRESS",
    "MAX_CANDIDATE",
    "NAME",
    "NATIONAL_ID",
    "NATIONAL_ID_FORMATS",
    "NER_CLASSES",
    "NER_SETTINGS_HELP",
    "PATTERN_CLASSES",
    "PHONE",
    "PRESIDIO_ENTITIES",
    "RECALL_LEVELS",
    "SPACY_LABELS",
    "SPACY_MODELS",
    "TEXT_CLASSES",
    "AddressDetector",
    "CapitalisedNameDetector",
    "CardNumberDetector",
    "DateOfBirthDetector",
    "Detector",
    "DetectorError",
    "EmailDetector",
    "IbanDetector",
    "IpAddressDetector",
    "NameDetector",
    "NationalIdDetector",
    "NationalIdFormat",
    "NerUnavailable",
    "PhoneDetector",
    "Piece",
    "PresidioRecognizer",
    "ScannerSetup",
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
    "load_ner",
    "load_ner_recognizer",
    "resolve_overlaps",
]
