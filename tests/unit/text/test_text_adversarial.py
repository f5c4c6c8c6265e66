"""Detection cost is bounded whatever the text: texts built to make a detector backtrack or
rescan (issue 11, point 2) take each detector well under a second, and a scan can be stopped
between detectors (a caller's deadline or cancellation)."""

from __future__ import annotations

import time

import pytest

from vault.text import AddressDetector, TextScanner

LONGEST = 65_536
#: thread CPU one detector may spend on one text: the slowest shapes take about 0.5 s here
BOUND = 2.0


def _filled(piece: str, length: int = LONGEST) -> str:
    return (piece * (length // len(piece) + 1))[:length]


# Each was super-linear: (what it was before, on one core)
ADVERSARIAL = {
    # a city of hyphenated words after a street: 2^n ways to split it (5.6 s; 40 hyphens:
    # hours)
    "hyphenated city": "1 Abc Street, " + "Ab-" * 24 + "x ",
    # a German street-first address after one long hyphenated word (13.5 s)
    "hyphenated word before a street": "Ab-" * 8000 + "x weg 1",
    # a line of address cues and no sentence end, each searched to the line's end (13 s)
    "address cues": _filled("lives at 1 "),
    # ... with abbreviations, each full stop searched back to the cue (cubic: 22 s for 8 KiB)
    "address cues and abbreviations": _filled("lives at 1 St. ", 8192),
    # signatures and no blank line, each block scanned to the text's end (9.8 s)
    "signatures": _filled("\nlg\nAb"),
    # ... and a long trailing run of blanks (5 s)
    "signatures and blanks": ("Regards,\nAbc\n" * 2500 + " " * LONGEST)[:LONGEST],
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_no_detector_takes_long_on_an_adversarial_text(text: str) -> None:
    for detector in TextScanner().detectors:
        started = time.thread_time()
        detector.find(text)
        took = time.thread_time() - started
        assert took < BOUND, f"{detector.name}: {took:.2f} s"


def test_an_inline_address_is_at_most_the_class_limit() -> None:
    """A cue followed by a line without a sentence end: the span stops at 1,024 characters
    (the address class's limit; a longer one failed the whole TokenizeText call)."""
    text = "She lives at 1 " + "a" * 2000
    [span] = AddressDetector().find(text)
    assert span.end - span.start == 1024


def test_a_scan_checks_before_each_detector_and_stops_where_the_check_raises() -> None:
    scanner = TextScanner()
    calls: list[int] = []

    def check() -> None:
        calls.append(1)

    assert scanner.find_spans("mail ada@example.org", check=check)
    assert len(calls) == len(scanner.detectors)

    class Stop(Exception):
        pass

    def stop_at_third() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    calls.clear()
    with pytest.raises(Stop):
        scanner.find_spans("mail ada@example.org", check=stop_at_third)
    assert len(calls) == 3
