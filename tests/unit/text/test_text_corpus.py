"""Accuracy of the default detector set on the labelled support-message corpus, and checks that
the corpus itself is what it claims to be (exact labels, size, class counts, reproducible)."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.us import ssn as stdnum_ssn

from vault.text import PATTERN_CLASSES, TextScanner, is_valid_nino
from vault.text._patterns import _phone_windows

CORPUS_DIR = Path(__file__).parents[2] / "data" / "text_corpus"
CORPUS = CORPUS_DIR / "support_messages.jsonl"
MIN_RECALL = 0.99
MIN_PRECISION = 0.97
LABELS = PATTERN_CLASSES | {"name", "address"}


class Message(TypedDict):
    text: str
    spans: list[dict[str, Any]]


@pytest.fixture(scope="module")
def corpus() -> list[Message]:
    with CORPUS.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def labelled(message: Message) -> Iterator[tuple[int, int, str]]:
    for span in message["spans"]:
        yield span["start"], span["end"], span["class"]


# -- the corpus -----------------------------------------------------------------------------------


def test_corpus_size_and_class_counts(corpus: list[Message]) -> None:
    assert len(corpus) >= 2000
    assert CORPUS.stat().st_size < 2_000_000
    counts = Counter(cls for message in corpus for _, _, cls in labelled(message))
    assert set(counts) <= LABELS
    for cls in PATTERN_CLASSES:
        assert counts[cls] >= 200, f"{cls}: only {counts[cls]} labelled values"


def _valid_phone(value: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, "US"))
    except phonenumbers.NumberParseException:
        return False


def _valid_email(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


# Independent checks (not the detectors' code paths) that each label covers exactly one value.
VALUE_CHECKS = {
    "email": _valid_email,
    "phone": _valid_phone,
    "card_number": lambda v: 13 <= len(_digits(v)) <= 19 and stdnum_luhn.is_valid(_digits(v)),
    "iban": lambda v: stdnum_iban.is_valid(v),
    "national_id": lambda v: stdnum_ssn.is_valid(_digits(v)) or is_valid_nino(v),
    "ip_address": _valid_ip,
}


def test_corpus_labels_are_exact(corpus: list[Message]) -> None:
    for number, message in enumerate(corpus):
        text = message["text"]
        previous_end = 0
        for start, end, cls in sorted(labelled(message)):
            assert 0 <= previous_end <= start < end <= len(text), f"message {number}"
            value = text[start:end]
            assert value == value.strip(), f"message {number}: label has outer whitespace"
            if cls in VALUE_CHECKS:
                assert VALUE_CHECKS[cls](value), f"message {number}: {cls} label is not one"
            previous_end = end


def test_generator_reproduces_the_corpus() -> None:
    pytest.importorskip("faker", reason="Faker (test extra) regenerates the corpus")
    spec = importlib.util.spec_from_file_location("corpus_generate", CORPUS_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)  # a fresh module: its seeded generators start anew
    assert generate.dumps(generate.generate()) == CORPUS.read_text(encoding="utf-8"), (
        "support_messages.jsonl differs from what generate.py writes: rerun "
        "`python tests/data/text_corpus/generate.py` (the output depends on the Faker version)"
    )


# -- accuracy -------------------------------------------------------------------------------------


@dataclass
class Tally:
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0

    @property
    def recall(self) -> float:
        found = self.true_positive + self.false_negative
        return self.true_positive / found if found else 1.0

    @property
    def precision(self) -> float:
        claimed = self.true_positive + self.false_positive
        return self.true_positive / claimed if claimed else 1.0


def report(tallies: dict[str, Tally]) -> str:
    lines = [
        f"{'class':<12} {'labels':>6} {'found':>6} {'TP':>6} {'FP':>4} {'FN':>4} "
        f"{'recall':>7} {'precision':>9}"
    ]
    for cls, t in sorted(tallies.items()):
        lines.append(
            f"{cls:<12} {t.true_positive + t.false_negative:>6} "
            f"{t.true_positive + t.false_positive:>6} {t.true_positive:>6} "
            f"{t.false_positive:>4} {t.false_negative:>4} {t.recall:>7.4f} {t.precision:>9.4f}"
        )
    return "\n".join(lines)


def test_default_detectors_on_corpus(corpus: list[Message]) -> None:
    """A detection counts only if class and exact offsets match a label."""
    scanner = TextScanner()
    tallies = {cls: Tally() for cls in PATTERN_CLASSES}
    for message in corpus:
        expected = {label for label in labelled(message) if label[2] in PATTERN_CLASSES}
        got = {(s.start, s.end, s.field_class) for s in scanner.find_spans(message["text"])}
        for _, _, cls in expected & got:
            tallies[cls].true_positive += 1
        for _, _, cls in expected - got:
            tallies[cls].false_negative += 1
        for _, _, cls in got - expected:
            tallies[cls].false_positive += 1
    table = report(tallies)
    print(f"\nDefault detectors on {len(corpus)} corpus messages:\n{table}")
    weak = [
        cls for cls, t in tallies.items() if t.recall < MIN_RECALL or t.precision < MIN_PRECISION
    ]
    assert not weak, f"below recall {MIN_RECALL} / precision {MIN_PRECISION}: {weak}\n{table}"


def test_phone_windows_find_what_the_whole_text_finds(corpus: list[Message]) -> None:
    """PhoneDetector runs libphonenumber on windows around digit runs only; on every corpus
    message that must give the matches libphonenumber gives on the whole text."""
    for number, message in enumerate(corpus):
        text = message["text"]
        whole = [
            (m.start, m.end)
            for m in phonenumbers.PhoneNumberMatcher(text, "US", phonenumbers.Leniency.VALID)
        ]
        windowed = [
            (start + m.start, start + m.end)
            for start, end in _phone_windows(text)
            for m in phonenumbers.PhoneNumberMatcher(
                text[start:end], "US", phonenumbers.Leniency.VALID
            )
        ]
        assert windowed == whole, f"message {number}"
