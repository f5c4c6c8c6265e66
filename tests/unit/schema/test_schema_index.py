"""Blind-index forms: equal for values a user would call equal, different otherwise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.errors import InvalidInput
from vault.schema import FieldClass, FieldSpec, RecordSchema

SPECS = [
    FieldSpec("email", FieldClass.EMAIL, True, 254, {}),
    FieldSpec("phone", FieldClass.PHONE, True, 32, {}),
    FieldSpec("mobile_gb", FieldClass.PHONE, True, 32, {"default_region": "GB"}),
    FieldSpec("name", FieldClass.NAME, True, 256, {}),
    FieldSpec("address", FieldClass.ADDRESS, True, 1024, {}),
    FieldSpec("date_of_birth", FieldClass.DATE_OF_BIRTH, True, 10, {}),
    FieldSpec("national_id", FieldClass.NATIONAL_ID, True, 32, {}),
    FieldSpec("ssn", FieldClass.NATIONAL_ID, True, 32, {"format": "us.ssn"}),
    FieldSpec("card_number", FieldClass.CARD_NUMBER, True, 32, {}),
    FieldSpec("iban", FieldClass.IBAN, True, 42, {}),
    FieldSpec("free_text", FieldClass.FREE_TEXT, True, 4096, {}),
    FieldSpec("ip_address", FieldClass.IP_ADDRESS, True, 45, {}),
]
SCHEMA = RecordSchema(version=1, fields={spec.name: spec for spec in SPECS}, source="<test>")

# Each row: spellings of one value, all of which must index the same.
EQUAL: list[tuple[str, tuple[str, ...]]] = [
    ("email", ("Foo.Bar@Example.com", "foo.bar@example.COM", "FOO.BAR@EXAMPLE.COM")),
    ("email", ("straße@bücher.de", "STRASSE@BÜCHER.DE", "strasse@xn--bcher-kva.de")),
    ("phone", ("+44 20 7946 0958", "+442079460958", "+44 (0)20 7946-0958", "+44.20.7946.0958")),
    ("mobile_gb", ("020 7946 0958", "+44 20 7946 0958", "(020) 79460958")),
    ("name", ("Zoë Washington", "zoe\u0308  WASHINGTON", " ZOË\tWashington ".replace("\t", " "))),
    ("address", ("1 High Street\nLondon", "1 high street london", "  1 HIGH  STREET\r\n LONDON")),
    ("date_of_birth", ("1980-02-29",)),
    ("national_id", ("AB 12 34 56 C", "ab123456c", "AB-12.34/56-C")),
    ("ssn", ("536-90-4399", "536904399")),  # stdnum takes dashes, not spaces
    ("card_number", ("4111 1111 1111 1111", "4111111111111111", "4111-1111-1111-1111")),
    (
        "iban",
        ("GB82 WEST 1234 5698 7654 32", "gb82west12345698765432", "GB82-WEST-1234-5698-7654-32"),
    ),
    ("free_text", ("Call me\tmaybe ", "call ME maybe", "CALL\n\nme   Maybe")),
    ("ip_address", ("2001:DB8::1", "2001:db8:0:0:0:0:0:1", " 2001:0db8::0001 ")),
]
# Each row: two different values of a field, whose index forms must differ.
DIFFERENT: list[tuple[str, str, str]] = [
    ("ip_address", "192.0.2.1", "192.0.2.10"),
    ("ip_address", "2001:db8::1", "2001:db8::1:0"),
    ("email", "ann@example.com", "anne@example.com"),
    ("email", "ann@example.com", "ann@example.org"),
    ("phone", "+44 20 7946 0958", "+44 20 7946 0959"),
    ("phone", "+44 20 7946 0958", "+1 650 253 0000"),
    ("mobile_gb", "020 7946 0958", "+1 650 253 0000"),
    ("name", "Zoë Washington", "Zoe Washington"),
    ("address", "1 High Street", "11 High Street"),
    ("date_of_birth", "1980-02-29", "1980-03-01"),
    ("national_id", "AB123456C", "AB123456D"),
    ("ssn", "536-90-4399", "536-90-4398"),
    ("card_number", "4111 1111 1111 1111", "4012 8888 8888 1881"),
    ("iban", "GB82WEST12345698765432", "DE89370400440532013000"),
    ("free_text", "call me maybe", "call me, maybe"),
]


def test_rows_cover_every_class() -> None:
    assert {SCHEMA.spec(field).field_class for field, _ in EQUAL} == set(FieldClass)
    assert {SCHEMA.spec(field).field_class for field, _, _ in DIFFERENT} == set(FieldClass)


@pytest.mark.parametrize(("field", "spellings"), EQUAL)
def test_equivalent_spellings_index_equal(field: str, spellings: tuple[str, ...]) -> None:
    forms = {SCHEMA.index_form(field, spelling) for spelling in spellings}
    assert len(forms) == 1
    # the form of the stored canonical value is the same as that of a typed search term
    stored = SCHEMA.validate({field: spellings[0]})[field]
    assert forms == {SCHEMA.index_form(field, stored)}


@pytest.mark.parametrize(("field", "first", "second"), DIFFERENT)
def test_different_values_index_differently(field: str, first: str, second: str) -> None:
    assert SCHEMA.index_form(field, first) != SCHEMA.index_form(field, second)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("email", "Foo@Example.COM", b"foo@example.com"),
        ("phone", "+44 20 7946 0958", b"+442079460958"),
        ("name", "  Zoe\u0308   Washington", "zoë washington".encode()),
        ("card_number", "4111 1111 1111 1111", b"4111111111111111"),
        ("iban", "gb82 west 1234 5698 7654 32", b"GB82WEST12345698765432"),
        ("national_id", "ab-123/456", b"AB123456"),
        ("date_of_birth", "1980-02-29", b"1980-02-29"),
    ],
)
def test_index_form_bytes(field: str, value: str, expected: bytes) -> None:
    assert SCHEMA.index_form(field, value) == expected


def test_index_form_refuses_invalid_values_and_unknown_fields() -> None:
    with pytest.raises(InvalidInput) as info:
        SCHEMA.index_form("card_number", "4111 1111 1111 1112")
    assert (info.value.field, info.value.problem) == ("card_number", "not a valid card number")
    with pytest.raises(InvalidInput) as info:
        SCHEMA.index_form("nickname", "Bob")
    assert str(info.value) == "nickname: unknown field"


# at most 12 * (6 * 2 + 3) = 180 characters even when every "ß" upper-cases to "SS"
WORDS = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyzäößÆ", min_size=1, max_size=6), min_size=1, max_size=12
)
SPACES = st.text(" \t\u00a0\u3000", min_size=1, max_size=3)


@settings(max_examples=200, deadline=None, database=None)
@given(words=WORDS, gaps=st.lists(SPACES, min_size=20, max_size=20), upper=st.booleans())
def test_text_index_ignores_case_and_whitespace_runs(
    words: list[str], gaps: list[str], upper: bool
) -> None:
    plain = " ".join(words)
    respelled = "".join(word + gaps[i % len(gaps)] for i, word in enumerate(words))
    respelled = respelled.upper() if upper else respelled.title()
    # name: no tabs (control characters); address and free text take them
    for field in ("name", "address", "free_text"):
        variant = respelled.replace("\t", " ") if field == "name" else respelled
        assert SCHEMA.index_form(field, variant) == SCHEMA.index_form(field, plain)
