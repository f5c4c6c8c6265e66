"""The cue-word detectors (names, addresses, dates of birth), strict mode, the wider phone and
format coverage of issue 10, and how a scanner setup wires an NER recognizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.config import load_settings
from vault.errors import ConfigError
from vault.text import (
    TEXT_CLASSES,
    AddressDetector,
    CapitalisedNameDetector,
    DateOfBirthDetector,
    Detector,
    NameDetector,
    NerUnavailable,
    ScannerSetup,
    SpacyRecognizer,
    TextScanner,
    default_detectors,
    load_ner,
)


def found(detector: Detector, text: str) -> list[str]:
    return sorted({text[s.start : s.end] for s in detector.find(text)})


def scanned(
    text: str, *, default_region: str = "US", recall: str = "standard"
) -> list[tuple[str, str]]:
    scanner = TextScanner(default_detectors(default_region=default_region, recall=recall))
    return [(text[s.start : s.end], s.field_class) for s in scanner.find_spans(text)]


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi, my name is Jean-Luc Picard and I ordered twice.", ["Jean-Luc Picard"]),
        ("I am Grace O'Brien, the account holder.", ["Grace O'Brien"]),
        ("Dear Ms McGrath,\n\nthanks", ["Ms McGrath"]),
        ("Hi Anna, quick question", ["Anna"]),
        ("Please ask for mr Randall at reception.", ["mr Randall"]),
        ("Thanks,\nRhys Perry-Wilkinson", ["Rhys Perry-Wilkinson"]),
        ("Cheers, Manuela", ["Manuela"]),
        ("Best regards,\nDr. Karl van der Berg MBA.", ["Dr. Karl van der Berg MBA."]),
        (
            "Mit freundlichen Grüßen\nIng. Anna-Marie Mielcarek B.Eng.",
            ["Ing. Anna-Marie Mielcarek B.Eng."],
        ),
        ("Ich heiße Jürgen Weiß und bin Kunde.", ["Jürgen Weiß"]),
        ("Bitte bei Frau Schlosser abgeben.", ["Frau Schlosser"]),
        ("Je m'appelle Hélène Chauvet, cliente.", ["Hélène Chauvet"]),
        ("Merci de remettre le colis à Madame Benard.", ["Madame Benard"]),
        ("Cordialement,\nThéodore Henry-Prévost", ["Théodore Henry-Prévost"]),
        (
            "Name: Nathan van de Biezenbos-van de Wal\nEmail: x",
            ["Nathan van de Biezenbos-van de Wal"],
        ),
        ("Account holder Victor Morley-Johnson\nIBAN", ["Victor Morley-Johnson"]),
        ("-- Suse", ["Suse"]),
    ],
)
def test_name_found(text: str, expected: list[str]) -> None:
    assert found(NameDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Dear Support,\n\nmy order is late",
        "Hello team, hi there",
        "Sehr geehrte Damen und Herren,",
        "Madame, Monsieur,",
        "Thanks for the quick help last time.",
        "This is the third time I'm writing about this.",
        "Order ORD-2023-816149 shipped; tracking 1Z999AA10123456784.",
    ],
)
def test_name_not_found(text: str) -> None:
    assert found(NameDetector(), text) == []


def test_a_name_found_once_is_found_again() -> None:
    text = "My name is Ada Lovelace. Please address the refund to Ada Lovelace, not to my husband."
    spans = NameDetector().find(text)
    assert sorted({(s.start, s.end) for s in spans}) == [(11, 23), (54, 66)]


# -- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "I live at 221B Baker Street, London NW1 6XE. Thanks",
            ["221B Baker Street, London NW1 6XE"],
        ),
        (
            "Address: 1600 Pennsylvania Avenue NW, Washington, DC 20500\nPhone: 1",
            ["1600 Pennsylvania Avenue", "1600 Pennsylvania Avenue NW, Washington, DC 20500"],
        ),
        (
            "The courier left it at 42 Main St, Springfield, IL 62704.",
            ["42 Main St, Springfield, IL 62704"],
        ),
        (
            "Ich wohne in der Berliner Straße 12, 10115 Berlin.",
            ["Berliner Straße 12, 10115 Berlin"],
        ),
        ("Lieferadresse: Hauptstr. 5, 80331 München", ["Hauptstr. 5, 80331 München"]),
        ("J'habite au 12 rue de la Paix, 75002 Paris.", ["12 rue de la Paix, 75002 Paris"]),
        (
            "Thanks,\nJohn Smith\n083 Crosby Plaza Apt. 533\nFarleytown, MT 73436",
            ["083 Crosby Plaza Apt. 533", "083 Crosby Plaza Apt. 533\nFarleytown, MT 73436"],
        ),
    ],
)
def test_address_found(text: str, expected: list[str]) -> None:
    assert found(AddressDetector(), text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Email address: ada@example.org",
        "My IP address is 203.0.113.9 and it fails",
        "Kind regards,\nJohn Smith\n+44 20 7946 0958",
        "I bought 3 items for $40.",
        "please send it to ada@example.org",
    ],
)
def test_address_not_found(text: str) -> None:
    assert found(AddressDetector(), text) == []


# -- dates of birth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I was born on 12 March 1985.", "12 March 1985"),
        ("DOB: 03/04/1979", "03/04/1979"),
        ("date of birth is March 12, 1985.", "March 12, 1985"),
        ("Geburtsdatum: 1985-03-12", "1985-03-12"),
        ("geboren am 12. März 1985", "12. März 1985"),
        ("Ich bin am 2. März 1966 geboren.", "2. März 1966"),
        ("Née le 1er mars 1985.", "1er mars 1985"),
        ("Date de naissance : 14/04/1959", "14/04/1959"),
    ],
)
def test_date_of_birth_found(text: str, expected: str) -> None:
    assert found(DateOfBirthDetector(), text) == [expected]


@pytest.mark.parametrize(
    "text",
    ["Order placed on 12/03/2024.", "I've been a customer since March 12, 2019.", "born to run"],
)
def test_date_of_birth_not_found(text: str) -> None:
    assert found(DateOfBirthDetector(), text) == []


# -- phones, format variants, overlap -------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "020 7946 0958",
        "0044 20 7946 0291",
        "030 59451810",
        "06 64 28 91 20",
        "(312) 215-4198",
        "+1 (275) 182-3042",
    ],
)
def test_phones_of_other_regions_with_region_gb(number: str) -> None:
    assert scanned(f"Call me on {number} please", default_region="GB") == [(number, "phone")]


@pytest.mark.parametrize(
    "text",
    [
        "Order no. 0176 2345 678 shipped",
        "The parcel (9266 8567 5637) is stuck",
        "version 2025.01.6 crashes",
        "logged at 2024-03-12T10:20:00Z",
        "timestamp 1710254400",
        "placed on 04/20/2022 at 10:53",
    ],
)
def test_order_tracking_version_and_time_are_no_phones(text: str) -> None:
    assert [c for _, c in scanned(text, default_region="GB")] == []


@pytest.mark.parametrize(
    ("text", "value", "field_class"),
    [
        ("card 4111 1111\n1111 1111 thanks", "4111 1111\n1111 1111", "card_number"),
        ("card 4111.1111.1111.1111 thanks", "4111.1111.1111.1111", "card_number"),
        ("iban de89370400440532013000 please", "de89370400440532013000", "iban"),
        ("my ni number is ab 12 34 56 c", "ab 12 34 56 c", "national_id"),
        ("SSN: 103016646", "103016646", "national_id"),
    ],
)
def test_format_variants(text: str, value: str, field_class: str) -> None:
    assert (value, field_class) in scanned(text)


def test_a_pattern_span_keeps_its_own_token_inside_an_address() -> None:
    text = "Address: 12 Main St, card 4111 1111 1111 1111, Springfield, IL 62704\n"
    spans = scanned(text)
    assert ("4111 1111 1111 1111", "card_number") in spans
    assert all(c != "address" or "4111" not in v for v, c in spans)


# -- strict mode ----------------------------------------------------------------------------------


def test_strict_mode_takes_every_capitalised_run() -> None:
    text = "Yesterday Lucia Fernandez called about the Order."
    assert found(CapitalisedNameDetector(), text) == ["Lucia Fernandez"]
    assert ("Lucia Fernandez", "name") not in scanned(text)
    assert ("Lucia Fernandez", "name") in scanned(text, recall="high")


def test_unknown_recall_level() -> None:
    with pytest.raises(ValueError, match="recall"):
        default_detectors(recall="max")


# -- setup and NER wiring -------------------------------------------------------------------------


def test_default_setup_covers_every_class() -> None:
    scanner = TextScanner(ScannerSetup().detectors("GB"))
    assert scanner.uncovered_classes == frozenset()
    assert {"name", "address", "date_of_birth"} <= TEXT_CLASSES


def test_bad_ner_setting() -> None:
    with pytest.raises(ValueError, match="ner"):
        load_ner("bert")
    with pytest.raises(NerUnavailable):
        load_ner("spacy:no_such_model_package")


def test_spacy_pipeline_is_wired_through_the_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline built here (blank English + entity ruler: no model download) is loaded by the
    ``spacy:<package>`` setting, once, and its entities become spans."""
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "zorblax"}]}])
    loads: list[str] = []

    def from_model(cls: type[SpacyRecognizer], model: str = "") -> SpacyRecognizer:
        loads.append(model)
        return cls(nlp)

    monkeypatch.setattr(SpacyRecognizer, "from_model", classmethod(from_model))
    load_ner.cache_clear()
    try:
        setup = ScannerSetup(ner="spacy:test_pipeline")
        scanner = TextScanner(setup.detectors("US"))
        TextScanner(setup.detectors("GB"))  # a second region: the model is not loaded again
        text = "the parcel is for zorblax, card 4111 1111 1111 1111"
        spans = [
            (text[s.start : s.end], s.field_class, s.detector) for s in scanner.find_spans(text)
        ]
    finally:
        load_ner.cache_clear()
    assert loads == ["test_pipeline"]
    assert ("zorblax", "name", "spacy") in spans
    assert ("4111 1111 1111 1111", "card_number", "card_number") in spans
    assert "spacy" in [d.name for d in scanner.detectors]


# -- [text] settings ------------------------------------------------------------------------------


def test_text_settings(tmp_path: Path) -> None:
    path = tmp_path / "vault.toml"
    path.write_text('[text]\nner = "spacy:en_core_web_sm"\nphone_regions = ["gb", "DE"]\n')
    text = load_settings(path, env={}).text
    assert (text.ner, text.phone_regions, text.recall) == (
        "spacy:en_core_web_sm",
        ("GB", "DE"),
        "standard",
    )
    assert load_settings(None, env={}).text.ner == "none"


@pytest.mark.parametrize(
    "body", ['ner = "bert"', 'recall = "max"', "phone_regions = 3", 'colour = "blue"']
)
def test_bad_text_settings(tmp_path: Path, body: str) -> None:
    path = tmp_path / "vault.toml"
    path.write_text(f"[text]\n{body}\n")
    with pytest.raises(ConfigError, match=r"\[text\]"):
        load_settings(path, env={})
