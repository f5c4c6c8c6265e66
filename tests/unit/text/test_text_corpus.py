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

from vault.text import (
    CONTEXT_CLASSES,
    NAME,
    PATTERN_CLASSES,
    TextScanner,
    default_detectors,
    is_valid_nino,
)
from vault.text._patterns import _phone_windows

CORPUS_DIR = Path(__file__).parents[2] / "data" / "text_corpus"
CORPUS = CORPUS_DIR / "support_messages.jsonl"
MIN_RECALL = 0.99
MIN_PRECISION = 0.97
MIN_CONTEXT_RECALL = 0.90
MIN_CONTEXT_PRECISION = 0.95
MAX_LEAK_RATE = 0.02
LABELS = PATTERN_CLASSES | CONTEXT_CLASSES


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
    """Valid in the US or, written nationally, in GB, DE or FR; or at least possible when
    written internationally ("+1 (275) 182-3042" is of a possible length, in no range yet)."""
    for region in ("US", "GB", "DE", "FR"):
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
        if value.startswith(("+", "00")) and phonenumbers.is_possible_number(number):
            return True
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


def _covered(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """Whether ``spans`` (sorted) cover every non-blank character of ``[start, end)``."""
    at = start
    for s, e in spans:
        if s > at:
            break
        at = max(at, e)
        if at >= end:
            return True
    return at >= end


def evaluate(corpus: list[Message], scanner: TextScanner) -> tuple[dict[str, Tally], float]:
    """Per-class tallies and the leak rate.

    Pattern classes count only exact offsets. Context classes (names, addresses, dates of
    birth) count a label as found when spans of its class cover all of it, and a detection as
    right when it overlaps a label of its class. A message leaks when some label is not covered
    by the spans found (of any class): that value would stay in clear.
    """
    tallies = {cls: Tally() for cls in LABELS}
    leaks = 0
    for message in corpus:
        found = scanner.find_spans(message["text"])
        labels = list(labelled(message))
        got = {(s.start, s.end, s.field_class) for s in found}
        every = [(s.start, s.end) for s in found]
        leaked = False
        for start, end, cls in labels:
            if cls in CONTEXT_CLASSES:
                mine = [(s.start, s.end) for s in found if s.field_class == cls]
                hit = _covered(start, end, mine)
            else:
                hit = (start, end, cls) in got
            tally = tallies[cls]
            tally.true_positive += hit
            tally.false_negative += not hit
            leaked = leaked or not _covered(start, end, every)
        for span in found:
            cls = span.field_class
            if cls in CONTEXT_CLASSES:
                right = any(c == cls and s < span.end and span.start < e for s, e, c in labels)
            else:
                right = (span.start, span.end, cls) in set(labels)
            if right and cls in CONTEXT_CLASSES:
                continue  # counted once per label above
            if not right:
                tallies[cls].false_positive += 1
        leaks += leaked
    return tallies, leaks / len(corpus)


def floors(cls: str) -> tuple[float, float]:
    """(minimum recall, minimum precision) for a class."""
    if cls in PATTERN_CLASSES:
        return MIN_RECALL, MIN_PRECISION
    return MIN_CONTEXT_RECALL, MIN_CONTEXT_PRECISION


def test_default_detectors_on_corpus(corpus: list[Message]) -> None:
    """Per-class recall and precision of the default detectors, and the leak rate (share of
    messages in which some labelled value survives in clear), against fixed floors."""
    tallies, leak_rate = evaluate(corpus, TextScanner())
    table = report(tallies)
    print(
        f"\nDefault detectors on {len(corpus)} corpus messages:\n{table}\n"
        f"leak rate: {leak_rate:.4f} (messages with a labelled value left in clear)"
    )
    weak = [
        cls
        for cls, t in tallies.items()
        if t.recall < floors(cls)[0] or t.precision < floors(cls)[1]
    ]
    assert not weak, f"below the recall / precision floors: {weak}\n{table}"
    assert leak_rate <= MAX_LEAK_RATE, f"leak rate {leak_rate:.4f} > {MAX_LEAK_RATE}"


def test_strict_mode_on_corpus(corpus: list[Message]) -> None:
    """Strict mode (recall="high") trades name precision for recall; printed, loosely bound."""
    tallies, leak_rate = evaluate(corpus, TextScanner(default_detectors(recall="high")))
    print(
        f"\nStrict mode (recall='high') on {len(corpus)} corpus messages:\n{report(tallies)}\n"
        f"leak rate: {leak_rate:.4f}"
    )
    assert leak_rate <= MAX_LEAK_RATE
    assert tallies[NAME].recall >= MIN_CONTEXT_RECALL


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
