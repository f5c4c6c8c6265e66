"""Each built-in detector on values it must find and look-alikes it must not; spans, overlap
resolution, the scanner's limits and error hygiene, coverage and the optional NER adapters."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.text import (
    CLASS_PRIORITY,
    CONTEXT_CLASSES,
    NER_CLASSES,
    PATTERN_CLASSES,
    CardNumberDetector,
    Detector,
    DetectorError,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    NationalIdDetector,
    NerUnavailable,
    PhoneDetector,
    PresidioRecognizer,
    SpacyRecognizer,
    Span,
    TextScanner,
    _ner,
    covered_classes,
    default_detectors,
    is_valid_nino,
    load_ner_recognizer,
    resolve_overlaps,
)


def found(detector: Detector, text: str) -> list[str]:
    spans = sorted(detector.find(text))
    for span in spans:
        assert span.detector == detector.name
        assert span.field_class in detector.field_classes
    return [text[s.start : s.end] for s in spans]


# -- email ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe@example.com.", ["jane.doe@example.com"]),
        ("Name <John.Smith+orders@mail.co.uk>", ["John.Smith+orders@mail.co.uk"]),
        ("x (bob-o@sub.domain-x.io), thanks", ["bob-o@sub.domain-x.io"]),
        ("wait...jane@x.io", ["jane@x.io"]),
        ("mailto:a_b@c.org?subject=hi", ["a_b@c.org"]),
        ("ich bin josé@exämple.de!", ["josé@exämple.de"]),
        # special-use names (email-validator refuses them) still name a person's mailbox
        ("intern: jane@corp.local", ["jane@corp.local"]),
        ("test user qa.bot@shop.test", ["qa.bot@shop.test"]),
        ("two: a@b.co;c@d.com", ["a@b.co", "c@d.com"]),
        ("EMAIL: JOHN@EXAMPLE.COM", ["JOHN@EXAMPLE.COM"]),
    ],
)
def test_email_found(text: str, expected: list[str]) -> None:
    assert found(EmailDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "follow @acme_support on X",
        "see https://medium.com/@someone/post-123",
        "a@b",
        "john@localhost",
        "foo@bar.c",
        "root@10.0.0.1",
        "user@-bad-.com",
        "x" * 70 + "@example.com",  # local part longer than 64
        "@@@ @ @.com",
        "no at sign at all",
    ],
)
def test_email_not_found(text: str) -> None:
    assert found(EmailDetector(), text) == []


# -- phone ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call (415) 555-2671 today", ["(415) 555-2671"]),
        ("call 415-555-2671.", ["415-555-2671"]),
        ("call 415.555.2671", ["415.555.2671"]),
        ("1-415-555-2671", ["1-415-555-2671"]),
        ("+1 (415) 555-2671", ["+1 (415) 555-2671"]),
        (
            "London +44 20 7946 0958 or Berlin +49 30 12345678",
            ["+44 20 7946 0958", "+49 30 12345678"],
        ),
        ("Paris: +33 1 23 45 67 89", ["+33 1 23 45 67 89"]),
        ("the old one (+44 20 7946 0958) is gone", ["+44 20 7946 0958"]),
        ("mobile +447400123456", ["+447400123456"]),
    ],
)
def test_phone_found(text: str, expected: list[str]) -> None:
    assert found(PhoneDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order #4155552671",
        "Order number: 4155552671",
        "my order number is 4155552671 and",
        "Bestellung 4155552671 vom 12.03.2024",
        "tracking no. 4155552671",
        "ref ORD-2023-816149",
        "from 192.168.1.254",
        "Chrome/121.0.6261.94",
        "on 13.10.2022",
        "see https://shop.example.com/track?n=4155552671",
        "SSN 123-45-6789",
        "card 4111 1111 1111 1111",
        "ts=1710254400",
        "020 7946 0958",  # a UK national number: not readable in the default region US
        "call 555-0123",
    ],
)
def test_phone_not_found(text: str) -> None:
    assert found(PhoneDetector(), text) == []


def test_phone_default_region() -> None:
    assert found(PhoneDetector("gb"), "ring 020 7946 0958 please") == ["020 7946 0958"]


def test_phone_valid_leniency_is_stricter_than_possible() -> None:
    text = "ts=1710254400"
    assert found(PhoneDetector(leniency=phonenumbers.Leniency.POSSIBLE), text) == ["1710254400"]
    assert found(PhoneDetector(), text) == []


@pytest.mark.parametrize(("region", "leniency"), [("XX", 1), ("", 1), ("US", 99)])
def test_phone_bad_config(region: str, leniency: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        PhoneDetector(region, leniency=leniency)


# -- card numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111111111111111", ["4111111111111111"]),
        ("card 4111 1111 1111 1111.", ["4111 1111 1111 1111"]),
        ("card 4111-1111-1111-1111, thanks", ["4111-1111-1111-1111"]),
        ("amex 3782 822463 10005", ["3782 822463 10005"]),
        ("card:5555555555554444", ["5555555555554444"]),
        ("4111 1111 1111 1111 12/27", ["4111 1111 1111 1111"]),
        ("4111111111111111 exp 12/27 cvv 123", ["4111111111111111"]),
        ("visa 4222222222222", ["4222222222222"]),
        ("19 digits 4111111111111111110", ["4111111111111111110"]),
    ],
)
def test_card_found(text: str, expected: list[str]) -> None:
    assert found(CardNumberDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ref 4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        "ISBN 9783161484100",  # an EAN-13 book number
        "USPS 9400 1000 0000 0000 0000 00",
        "12345678901234567890",  # 20 digits
        "41111111111111111111111",
        "order #4111111111111111",
        "https://x.example/p/4111111111111111",
        "total 4111111111111111.50",
        "ABC4111111111111111",
        "4111 1111 1111 1111 1234",  # part of a longer run of groups
        "4111 1111-1111 1111",  # mixed separators
        "411111111111",  # 12 digits
    ],
)
def test_card_not_found(text: str) -> None:
    assert found(CardNumberDetector(), text) == []


# -- IBAN -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IBAN DE89 3704 0044 0532 0130 00.", ["DE89 3704 0044 0532 0130 00"]),
        ("IBAN:DE89370400440532013000", ["DE89370400440532013000"]),
        ("GB82 WEST 1234 5698 7654 32", ["GB82 WEST 1234 5698 7654 32"]),
        ("BE71 0961 2345 6769 THANKS", ["BE71 0961 2345 6769"]),
        ("(NL91ABNA0417164300)", ["NL91ABNA0417164300"]),
        ("FR14 2004 1010 0505 0001 3M02 606", ["FR14 2004 1010 0505 0001 3M02 606"]),
    ],
)
def test_iban_found(text: str, expected: list[str]) -> None:
    assert found(IbanDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704 0044 0532 0130 01",  # check digits fail
        "XX89370400440532013000",
        "DE89 3704",
        "BIC DEUTDEFF500",
        "ADE89370400440532013000",
    ],
)
def test_iban_not_found(text: str) -> None:
    assert found(IbanDetector(), text) == []


# -- national ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SSN 536-22-1234.", ["536-22-1234"]),
        ("ssn 536 22 1234", ["536 22 1234"]),
        ("NI AB123456C", ["AB123456C"]),
        ("NI: AB 12 34 56 C,", ["AB 12 34 56 C"]),
        ("NINO AB 123456 D", ["AB 123456 D"]),
    ],
)
def test_national_id_found(text: str, expected: list[str]) -> None:
    assert found(NationalIdDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",
        "666-12-3456",
        "912-12-3456",  # 9xx is not an SSN area
        "123-00-4567",
        "123-45-0000",
        "536-22 1234",  # mixed separators
        "SSN 536221234",  # bare: off by default
        "phone 555-12-34567",
        "QQ123456C",  # Q is never a first letter
        "GB123456A",  # GB is not allocated
        "AB123456E",  # suffix is A-D
        "date 2023-10-12",
        "536-22-1234-99",
    ],
)
def test_national_id_not_found(text: str) -> None:
    assert found(NationalIdDetector(), text) == []


def test_bare_ssn_only_after_a_label() -> None:
    detector = NationalIdDetector(bare_ssn=True)
    assert found(detector, "my SSN is 536221234") == ["536221234"]
    assert found(detector, "Social Security Number: 536221234.") == ["536221234"]
    assert found(detector, "order 536221234") == []
    assert found(detector, "SSN: 000221234") == []


def test_other_national_id_formats() -> None:
    detector = NationalIdDetector(["ca.sin", "es.dni"])
    assert found(detector, "SIN 123 456 782, DNI 54362315K") == ["123 456 782", "54362315K"]
    assert found(detector, "SIN 123 456 783, DNI 54362315Z, SSN 536-22-1234") == []


def test_unknown_national_id_format() -> None:
    with pytest.raises(ValueError, match=r"unknown national id format 'xx\.nope'"):
        NationalIdDetector(["us.ssn", "xx.nope"])


@pytest.mark.parametrize(
    ("nino", "valid"),
    [("AB123456C", True), ("ab 12 34 56 c", True), ("DA123456A", False), ("AO123456A", False)],
)
def test_is_valid_nino(nino: str, valid: bool) -> None:
    assert is_valid_nino(nino) is valid


# -- IP addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from 192.168.1.254", ["192.168.1.254"]),
        ("dns 8.8.8.8.", ["8.8.8.8"]),
        ("host 203.0.113.5:8080", ["203.0.113.5"]),
        ("http://10.0.0.1/admin", ["10.0.0.1"]),
        ("ip=2001:db8::1 ok", ["2001:db8::1"]),
        ("[2001:db8::1]:443", ["2001:db8::1"]),
        ("mapped ::ffff:192.0.2.1", ["::ffff:192.0.2.1"]),
        ("link fe80::1%eth0", ["fe80::1"]),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", ["2001:0db8:0000:0000:0000:ff00:0042:8329"]),
        ("login from 2001:DB8::1: refused", ["2001:DB8::1"]),
        ("loopback ::1", ["::1"]),
    ],
)
def test_ip_found(text: str, expected: list[str]) -> None:
    assert found(IpAddressDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3",
        "version 1.2.3.4",
        "v1.2.3.4",
        "Gecko rv:1.9.2.23",
        "AcmeShop/3.22.1.64",
        "Chrome/120.0.6099.109",
        "Windows 10.0.19045.3803",
        "256.1.1.1",
        "1.2.3.4.5",
        "01.02.03.04",
        "at 12:30:45",
        "MAC 00:1A:2B:3C:4D:5E",
        "std::vector<int>",
        "Error :: failure",
        "open 10:00-12:00",
        "on 2024-03-12",
        "12.03.2024",
    ],
)
def test_ip_not_found(text: str) -> None:
    assert found(IpAddressDetector(), text) == []


# -- spans and overlaps ---------------------------------------------------------------------------


def test_span_holds_no_text() -> None:
    span = Span(3, 7, "email", "email")
    assert set(Span.__slots__) == {"start", "end", "field_class", "detector"}
    assert repr(span) == "Span(start=3, end=7, field_class='email', detector='email')"


@pytest.mark.parametrize(
    ("start", "end", "field_class", "detector", "error"),
    [
        (5, 5, "email", "d", ValueError),
        (-1, 2, "email", "d", ValueError),
        (0, 2, "Email", "d", ValueError),
        (0, 2, "x" * 33, "d", ValueError),
        (0, 2, "email", "", ValueError),
        (0.0, 2, "email", "d", TypeError),
        (True, 2, "email", "d", TypeError),
    ],
)
def test_span_rejects(
    start: int, end: int, field_class: str, detector: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        Span(start, end, field_class, detector)


def test_longest_span_wins() -> None:
    phone = Span(10, 20, "phone", "phone")
    card = Span(8, 27, "card_number", "card_number")
    ip = Span(30, 40, "ip_address", "ip_address")
    assert resolve_overlaps([phone, ip, card]) == [card, ip]


def test_equal_length_tie_goes_by_class_priority() -> None:
    spans = [Span(0, 10, cls, cls) for cls in reversed(CLASS_PRIORITY)]
    assert resolve_overlaps(spans) == [Span(0, 10, CLASS_PRIORITY[0], CLASS_PRIORITY[0])]
    assert resolve_overlaps([Span(0, 10, "zzz", "a"), Span(2, 12, "phone", "b")]) == [
        Span(2, 12, "phone", "b")
    ]


def test_touching_spans_both_kept() -> None:
    spans = [Span(0, 5, "email", "e"), Span(5, 9, "phone", "p")]
    assert resolve_overlaps(spans) == spans


span_lists = st.lists(
    st.builds(
        lambda start, length, cls, det: Span(start, start + length, cls, det),
        st.integers(0, 60),
        st.integers(1, 20),
        st.sampled_from([*CLASS_PRIORITY, "custom"]),
        st.sampled_from(["a", "b"]),
    ),
    max_size=25,
)


@given(span_lists, st.randoms())
def test_resolve_overlaps_properties(spans: list[Span], rnd: random.Random) -> None:
    result = resolve_overlaps(spans)
    shuffled = list(spans)
    rnd.shuffle(shuffled)
    assert resolve_overlaps(shuffled) == result  # independent of input order
    assert result == sorted(result)
    for left, right in itertools.pairwise(result):
        assert left.end <= right.start
    for span in spans:
        if span in result:
            continue
        overlapping = [k for k in result if k.start < span.end and span.start < k.end]
        if span.field_class in CONTEXT_CLASSES and any(
            k.field_class not in CONTEXT_CLASSES for k in overlapping
        ):
            continue  # a context span is cut around pattern spans
        # every other dropped span lost to an overlapping span at least as long, a pattern
        # span only to another pattern span
        if span.field_class not in CONTEXT_CLASSES:
            overlapping = [k for k in overlapping if k.field_class not in CONTEXT_CLASSES]
        assert any(k.end - k.start >= span.end - span.start for k in overlapping)


def test_pattern_span_is_never_swallowed_by_a_context_span() -> None:
    text = "Jane Doe 4111 1111 1111 1111 Smith"
    name = Span(0, len(text), "name", "ner")
    card = Span(9, 28, "card_number", "card_number")
    assert resolve_overlaps([name, card]) == [
        Span(0, 9, "name", "ner"),
        card,
        Span(28, len(text), "name", "ner"),
    ]


# -- scanner --------------------------------------------------------------------------------------

SECRET = "4111 1111 1111 1111 jane.doe@example.com"


def test_scanner_finds_every_class_sorted() -> None:
    text = (
        "Hi, I'm at jane@example.com or (415) 555-2671. Card 4111 1111 1111 1111, IBAN "
        "DE89 3704 0044 0532 0130 00, SSN 536-22-1234, NI AB123456C, from 203.0.113.5 and "
        "2001:db8::7. Order #4155552671, v1.2.3, 2024-03-12 10:30."
    )
    spans = TextScanner().find_spans(text)
    assert [(text[s.start : s.end], s.field_class) for s in spans] == [
        ("jane@example.com", "email"),
        ("(415) 555-2671", "phone"),
        ("4111 1111 1111 1111", "card_number"),
        ("DE89 3704 0044 0532 0130 00", "iban"),
        ("536-22-1234", "national_id"),
        ("AB123456C", "national_id"),
        ("203.0.113.5", "ip_address"),
        ("2001:db8::7", "ip_address"),
    ]


def test_scanner_max_length_error_has_no_text() -> None:
    scanner = TextScanner(max_length=len(SECRET) - 1)
    with pytest.raises(ValueError, match=f"longer than {len(SECRET) - 1} characters") as info:
        scanner.find_spans(SECRET)
    assert "jane" not in str(info.value)
    assert "4111" not in str(info.value)
    assert TextScanner(max_length=len(SECRET)).find_spans(SECRET)


@pytest.mark.parametrize("max_length", [0, -1, 1.5, True])
def test_scanner_bad_max_length(max_length: int) -> None:
    with pytest.raises(ValueError, match="max_length"):
        TextScanner(max_length=max_length)


def test_scanner_refuses_non_str() -> None:
    with pytest.raises(TypeError):
        TextScanner().find_spans(SECRET.encode())  # type: ignore[arg-type]


@dataclass
class FakeDetector:
    """A plugged-in detector that misbehaves in a chosen way."""

    name: str = "fake"
    field_classes: frozenset[str] = frozenset({"name"})
    mode: str = "ok"

    def find(self, text: str) -> list[Span]:
        if self.mode == "raise":
            raise RuntimeError(f"model choked on {text!r}")
        if self.mode == "outside":
            return [Span(0, len(text) + 1, "name", self.name)]
        if self.mode == "undeclared":
            return [Span(0, 1, "email", self.name)]
        if self.mode == "not_a_list":
            return (Span(0, 1, "name", self.name),)  # type: ignore[return-value]
        return [Span(0, 4, "name", self.name)]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("raise", "detector 'fake' failed"),
        ("not_a_list", "detector 'fake' failed"),
        ("outside", "detector 'fake' returned an invalid span"),
        ("undeclared", "detector 'fake' returned an invalid span"),
    ],
)
def test_detector_errors_carry_no_text(mode: str, message: str) -> None:
    scanner = TextScanner([*default_detectors(), FakeDetector(mode=mode)])
    with pytest.raises(DetectorError) as info:
        scanner.find_spans(SECRET)
    assert str(info.value) == message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_duplicate_detector_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        TextScanner([EmailDetector(), EmailDetector()])


def test_coverage_without_and_with_ner() -> None:
    assert TextScanner().uncovered_classes == frozenset()
    patterns_only = [d for d in default_detectors() if d.field_classes <= PATTERN_CLASSES]
    scanner = TextScanner(patterns_only)
    assert scanner.covered_classes == PATTERN_CLASSES
    assert scanner.uncovered_classes == CONTEXT_CLASSES == {"name", "address", "date_of_birth"}
    with_ner = TextScanner([*patterns_only, FakeDetector(field_classes=NER_CLASSES)])
    assert with_ner.uncovered_classes == {"date_of_birth"}
    assert covered_classes([EmailDetector(), PhoneDetector()]) == {"email", "phone"}


def test_ner_spans_take_part_in_overlap_resolution() -> None:
    text = "Jane Doe"
    spans = TextScanner([*default_detectors(), FakeDetector()]).find_spans(text)
    assert spans == [Span(0, 4, "name", "fake")]


def test_text_package_imports_no_upper_layer() -> None:
    code = (
        "import sys, vault.text; "
        "bad = [m for m in sys.modules if m.split('.')[:2] in "
        "(['vault', 'service'], ['vault', 'api'], ['vault', 'storage'], ['vault', 'keys']) "
        "or m.split('.')[0] in ('spacy', 'presidio_analyzer')]; "
        "print(','.join(sorted(bad)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


# -- NER adapters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ent:
    start_char: int
    end_char: int
    label_: str


@dataclass(frozen=True)
class Doc:
    ents: Sequence[Ent]


@dataclass(frozen=True)
class Result:
    start: int
    end: int
    entity_type: str


class FakeAnalyzer:
    def __init__(self, results: Sequence[Result]) -> None:
        self.results = results
        self.calls: list[tuple[str, list[str]]] = []

    def analyze(self, *, text: str, language: str, entities: list[str]) -> Sequence[Result]:
        self.calls.append((language, entities))
        return self.results


TEXT = "Jane Doe lives at 1 Main St, Springfield."


def test_spacy_recognizer_maps_labels() -> None:
    ents = [Ent(0, 8, "PERSON"), Ent(29, 40, "GPE"), Ent(18, 27, "ORG"), Ent(30, 99, "LOC")]
    recognizer = SpacyRecognizer(lambda text: Doc(ents))
    assert recognizer.field_classes == {"name", "address"}
    assert recognizer.find(TEXT) == [Span(0, 8, "name", "spacy"), Span(29, 40, "address", "spacy")]


def test_presidio_recognizer_maps_entities() -> None:
    analyzer = FakeAnalyzer([Result(0, 8, "PERSON"), Result(29, 40, "LOCATION"), Result(0, 1, "X")])
    recognizer = PresidioRecognizer(analyzer)
    assert recognizer.find(TEXT) == [
        Span(0, 8, "name", "presidio"),
        Span(29, 40, "address", "presidio"),
    ]
    assert analyzer.calls == [("en", ["LOCATION", "PERSON"])]


def test_no_ner_when_nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ner, "_installed", lambda module: False)
    assert load_ner_recognizer() is None
    with pytest.raises(NerUnavailable):
        SpacyRecognizer.from_model()
    with pytest.raises(NerUnavailable):
        PresidioRecognizer.from_spacy_model()


def test_no_ner_when_spacy_has_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ner, "_installed", lambda module: module == "spacy")
    assert load_ner_recognizer() is None


def test_ner_in_this_environment_matches_what_is_installed() -> None:
    # The default install has neither spaCy nor a model: the service reports names and
    # addresses as uncovered instead of failing.
    if not _ner._installed("spacy"):
        assert load_ner_recognizer() is None


def test_load_ner_uses_an_installed_spacy_model(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[tuple[str, list[str]]] = []

    def load(model: str, disable: list[str]) -> object:
        loaded.append((model, disable))
        return lambda text: Doc([Ent(0, 4, "PERSON")])

    fake_spacy = types.ModuleType("spacy")
    fake_spacy.load = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spacy", fake_spacy)
    monkeypatch.setattr(_ner, "_installed", lambda module: module in ("spacy", "en_core_web_md"))
    recognizer = load_ner_recognizer()
    assert isinstance(recognizer, SpacyRecognizer)
    assert [model for model, _ in loaded] == ["en_core_web_md"]
    scanner = TextScanner([*default_detectors(), recognizer])
    assert scanner.uncovered_classes == frozenset()
    assert scanner.find_spans("Jane called") == [Span(0, 4, "name", "spacy")]
