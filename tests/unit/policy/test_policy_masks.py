"""Masks show exactly their documented part of a value, and nothing else."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.policy import mask
from vault.schema import FieldClass

B = "\u2022"
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=25)
ANY_TEXT = st.text(max_size=80)


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


@pytest.mark.parametrize(
    ("field_class", "value", "masked"),
    [
        (FieldClass.EMAIL, "ada@example.com", f"a{B * 3}@example.com"),
        (FieldClass.EMAIL, "a@example.com", f"a{B * 3}@example.com"),
        (FieldClass.EMAIL, "no-at-sign", B * 3),
        (FieldClass.PHONE, "+442079460958", f"+{B * 8}0958"),
        (FieldClass.PHONE, "+1555", f"+{B * 8}"),
        (FieldClass.NAME, "Ada Lovelace", "A. L."),
        (FieldClass.NAME, "  Ada   King  Lovelace ", "A. K. L."),
        (FieldClass.NAME, " ", B * 3),
        (FieldClass.ADDRESS, "12 Main St\nLondon", B * 3),
        (FieldClass.DATE_OF_BIRTH, "1990-07-14", f"1990-{B * 2}-{B * 2}"),
        (FieldClass.DATE_OF_BIRTH, "14/07/1990", f"{B * 4}-{B * 2}-{B * 2}"),
        (FieldClass.NATIONAL_ID, "AB123456C", f"{B * 5}6C"),
        (FieldClass.NATIONAL_ID, "12345", B * 5),
        (FieldClass.CARD_NUMBER, "4111111111111111", f"{B * 4} 1111"),
        (FieldClass.CARD_NUMBER, "41111111", B * 4),
        (FieldClass.IBAN, "GB82WEST12345698765432", f"GB{B * 2} {B * 4} 5432"),
        (FieldClass.IBAN, "GB82WEST", f"{B * 4} {B * 4}"),
        (FieldClass.IBAN, "1282WEST12345698765432", f"{B * 4} {B * 4}"),
        (FieldClass.FREE_TEXT, "call me on +44 20 7946 0958", "[redacted, 27 characters]"),
        (FieldClass.FREE_TEXT, "x", "[redacted, 1 character]"),
    ],
)
def test_documented_examples(field_class: FieldClass, value: str, masked: str) -> None:
    assert mask(field_class, value) == masked


def test_every_class_has_a_mask() -> None:
    for field_class in FieldClass:
        assert isinstance(mask(field_class, "x"), str)


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="FieldClass"):
        mask("ssn", "123-45-6789")  # type: ignore[arg-type]


@given(st.sampled_from(FieldClass), ANY_TEXT)
def test_masks_are_deterministic(field_class: FieldClass, value: str) -> None:
    assert mask(field_class, value) == mask(field_class, value)


# -- cards and phones: no digit but the last four -----------------------------------------------


@given(st.text(alphabet="0123456789", min_size=12, max_size=19))
def test_card_shows_only_the_last_four_digits(card: str) -> None:
    masked = mask(FieldClass.CARD_NUMBER, card)
    assert masked == f"{B * 4} {card[-4:]}"  # fixed width: the length stays hidden
    assert digits_of(masked) == card[-4:]


@given(ANY_TEXT)
def test_card_of_any_text_shows_at_most_the_last_four_digits(value: str) -> None:
    digits = digits_of(value)
    masked = mask(FieldClass.CARD_NUMBER, value)
    assert digits_of(masked) == (digits[-4:] if len(digits) >= 12 else "")
    assert set(masked) <= {B, " ", *digits[-4:]}


@given(st.builds(lambda d: "+" + d, st.text(alphabet="0123456789", min_size=8, max_size=15)))
def test_phone_shows_only_the_last_four_digits(phone: str) -> None:
    masked = mask(FieldClass.PHONE, phone)
    assert masked == f"+{B * 8}{phone[-4:]}"
    assert digits_of(masked) == phone[-4:]


@given(ANY_TEXT)
def test_phone_of_any_text_shows_at_most_the_last_four_digits(value: str) -> None:
    digits = digits_of(value)
    masked = mask(FieldClass.PHONE, value)
    assert digits_of(masked) == (digits[-4:] if len(digits) >= 8 else "")
    assert set(masked) <= {B, "+", *digits[-4:]}


# -- emails: the first character of the local part, and the domain ------------------------------


@given(
    st.text(min_size=1, max_size=64),
    st.text(min_size=1, max_size=40).filter(lambda d: "@" not in d),
)
def test_email_shows_first_character_and_domain(local: str, domain: str) -> None:
    masked = mask(FieldClass.EMAIL, f"{local}@{domain}")
    shown_local, at, shown_domain = masked.rpartition("@")
    assert at == "@"
    assert shown_domain == domain
    assert shown_local == local[0] + B * 3  # no other character of the local part
    assert len(masked) == len(domain) + 5  # the local part's length stays hidden


@given(st.text(max_size=40).filter(lambda v: "@" not in v))
def test_email_without_at_shows_nothing(value: str) -> None:
    assert mask(FieldClass.EMAIL, value) == B * 3


# -- names: initials only -----------------------------------------------------------------------


@given(
    st.lists(
        st.text(min_size=1, max_size=12).filter(lambda w: not any(c.isspace() for c in w)),
        max_size=6,
    )
)
def test_name_shows_only_initials(words: list[str]) -> None:
    masked = mask(FieldClass.NAME, " ".join(words))
    if not words:
        assert masked == B * 3
    else:
        assert masked == " ".join(f"{w[0]}." for w in words)
        assert set(masked) <= {w[0] for w in words} | {".", " "}


# -- the rest -----------------------------------------------------------------------------------


@given(ANY_TEXT)
def test_address_shows_nothing(value: str) -> None:
    assert mask(FieldClass.ADDRESS, value) == B * 3


@given(st.dates(min_value=date(1000, 1, 1)))
def test_date_of_birth_shows_only_the_year(day: date) -> None:
    value = day.isoformat()
    masked = mask(FieldClass.DATE_OF_BIRTH, value)
    assert masked == f"{value[:4]}-{B * 2}-{B * 2}"
    assert digits_of(masked) == value[:4]


@given(ANY_TEXT)
def test_date_of_birth_of_any_text_shows_at_most_four_digits(value: str) -> None:
    masked = mask(FieldClass.DATE_OF_BIRTH, value)
    assert len(masked) == 10
    assert set(masked) - {B, "-"} <= set(value[:4])


@given(st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=4, max_size=32))
def test_national_id_shows_at_most_the_last_two(value: str) -> None:
    masked = mask(FieldClass.NATIONAL_ID, value)
    shown = masked.replace(B, "")
    assert shown == (value[-2:] if len(value) >= 6 else "")
    assert masked.startswith(B * 5)


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=13, max_size=32),
)
def test_iban_shows_country_and_last_four(country: str, rest: str) -> None:
    value = country + rest
    masked = mask(FieldClass.IBAN, value)
    assert masked == f"{country}{B * 2} {B * 4} {value[-4:]}"
    assert masked.replace(B, "").replace(" ", "") == country + value[-4:]


@given(ANY_TEXT)
def test_iban_of_any_text_shows_at_most_country_and_last_four(value: str) -> None:
    def visible(text: str) -> str:
        return text.replace(B, "").replace(" ", "")

    assert visible(mask(FieldClass.IBAN, value)) in ("", visible(value[:2] + value[-4:]))


@given(ANY_TEXT)
def test_free_text_shows_only_its_length(value: str) -> None:
    unit = "character" if len(value) == 1 else "characters"
    assert mask(FieldClass.FREE_TEXT, value) == f"[redacted, {len(value)} {unit}]"
