"""Validation and canonical forms per field class; errors never carry the value."""

from __future__ import annotations

import datetime
import re
import traceback

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stdnum import luhn as stdnum_luhn

from vault.errors import InvalidInput
from vault.schema import (
    DEFAULT_MAX_LENGTH,
    FieldClass,
    FieldSpec,
    RecordSchema,
    _validate,
    load_schema,
)

# One field per class named after it (class defaults), plus fields with class options.
SCHEMA_YAML = """\
schema_version: 3
fields:
  email:         {class: email, searchable: true}
  phone:         {class: phone, searchable: true}
  name:          {class: name}
  address:       {class: address}
  date_of_birth: {class: date_of_birth}
  national_id:   {class: national_id, searchable: true}
  card_number:   {class: card_number}
  iban:          {class: iban}
  free_text:     {class: free_text}
  ip_address:    {class: ip_address}
  mobile_gb:     {class: phone, default_region: gb}
  ssn:           {class: national_id, format: us.ssn}
  steuer_id:     {class: national_id, format: de.idnr}
  nir:           {class: national_id, format: fr.nir}
  short_name:    {class: name, max_length: 3}
"""

FIELD_NAMES = (
    *(member.value for member in FieldClass),
    "mobile_gb",
    "ssn",
    "steuer_id",
    "nir",
    "short_name",
)

TODAY = datetime.date(2024, 5, 1)

# "+" and digits -> their full-width forms (U+FF0B, U+FF10..U+FF19), which some keyboards type
FULLWIDTH = str.maketrans({char: chr(ord(char) + 0xFEE0) for char in "+0123456789"})


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> RecordSchema:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    path.write_text(SCHEMA_YAML, encoding="utf-8")
    return load_schema(path)


@pytest.fixture(autouse=True)
def fixed_today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_validate, "_today", lambda: TODAY)


# -- the leak check -------------------------------------------------------------------------------

TOO_LONG = re.compile(r"longer than [1-9][0-9]* characters")


def leaked_fragments(exc: BaseException, value: str, *, safe: tuple[str, ...]) -> list[str]:
    """The 4-character pieces of ``value`` found in anything the exception would show.

    Every substring of 4 or more characters contains a 4-character one, so checking those is
    enough. Looked at: ``traceback.format_exception`` (message and every chained exception with its
    message), ``repr`` and the instance attributes. Left out: the frames of the exception itself,
    which show our own source lines (``in _email``), not data. The ``safe`` texts (field name,
    fixed problem, reason code, class name) are blanked first, so a value that happens to spell
    part of them (``"email"`` for the email field, ``"vali"``) does not count as a leak.
    """
    shown = "".join(traceback.format_exception(type(exc), exc, None))
    shown += repr(exc) + "".join(repr(attribute) for attribute in vars(exc).values())
    # split at the safe texts, so no piece can match across one either
    safe_text = re.compile(
        "|".join(re.escape(text) for text in sorted(safe, key=len, reverse=True))
    )
    parts = safe_text.split(shown)
    pieces = {value[i : i + 4] for i in range(len(value) - 3)}
    return sorted(piece for piece in pieces if any(piece in part for part in parts))


def assert_safe_error(exc: InvalidInput, field: str, value: object) -> None:
    assert exc.field == field
    assert exc.problem in _validate.PROBLEMS or TOO_LONG.fullmatch(exc.problem), exc.problem
    assert str(exc) == f"{field}: {exc.problem}"
    # nothing attached at all: not even a hidden __context__ a debugger or Sentry would show
    assert exc.__cause__ is None
    assert exc.__context__ is None
    assert exc.__suppress_context__
    if isinstance(value, str):
        safe = (field, exc.problem, exc.reason, "vault.errors.InvalidInput", "InvalidInput")
        assert leaked_fragments(exc, value, safe=safe) == []


def invalid(schema: RecordSchema, field: str, value: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        schema.validate({field: value})  # type: ignore[dict-item]
    assert_safe_error(info.value, field, value)
    return info.value


def test_leak_helper_finds_a_chained_library_message() -> None:
    value = "someone@example"
    try:
        try:
            raise ValueError(f"bad address {value!r}")
        except ValueError as inner:
            raise InvalidInput("email", "not a valid email address") from inner
    except InvalidInput as exc:
        found = leaked_fragments(exc, value, safe=("email",))
    assert "some" in found


# -- valid values ---------------------------------------------------------------------------------

VALID: list[tuple[str, str, str]] = [
    ("email", "Foo.Bar@EXAMPLE.com", "Foo.Bar@example.com"),
    ("email", "josé@Bücher.de", "josé@bücher.de"),
    ("phone", "+44 20 7946 0958", "+442079460958"),
    ("phone", "+1 (650) 253-0000", "+16502530000"),
    ("phone", "+44 20 7946 0958".translate(FULLWIDTH), "+442079460958"),
    ("mobile_gb", "020 7946 0958", "+442079460958"),
    ("mobile_gb", "+1 650 253 0000", "+16502530000"),
    ("name", "  Zoe\u0308   Washington ", "Zoë   Washington"),
    ("address", "1 High Street\r\n\tLondon  \n", "1 High Street\r\n\tLondon"),
    ("date_of_birth", "1980-02-29", "1980-02-29"),
    ("date_of_birth", "1900-01-01", "1900-01-01"),
    ("date_of_birth", TODAY.isoformat(), TODAY.isoformat()),
    ("national_id", "ab-12.34/56 c", "AB123456C"),
    ("national_id", "X1234", "X1234"),
    ("ssn", "536-90-4399", "536904399"),
    ("steuer_id", "36 574 261 809", "36574261809"),
    ("nir", "2 95 10 99 126 111 93", "295109912611193"),
    ("card_number", "4111 1111 1111 1111", "4111111111111111"),
    ("card_number", "4012-8888-8888-1881", "4012888888881881"),
    ("card_number", "378282246310005", "378282246310005"),
    ("iban", "gb82 west 1234 5698 7654 32", "GB82WEST12345698765432"),
    ("iban", "DE89370400440532013000", "DE89370400440532013000"),
    ("free_text", "Line one\n\tcafe\u0301 \r\n", "Line one\n\tcafé \r\n"),
    ("free_text", "x" * 4096, "x" * 4096),
    ("short_name", "Ann", "Ann"),
    ("ip_address", "192.0.2.1", "192.0.2.1"),
    ("ip_address", " 2001:0DB8:0000::0001 ", "2001:db8::1"),
    ("ip_address", "::ffff:192.0.2.1", "::ffff:192.0.2.1"),
]


@pytest.mark.parametrize(("field", "value", "canonical"), VALID)
def test_valid_value_has_canonical_form(
    schema: RecordSchema, field: str, value: str, canonical: str
) -> None:
    assert schema.validate({field: value}) == {field: canonical}


@pytest.mark.parametrize(("field", "value", "canonical"), VALID)
def test_canonical_form_is_a_fixed_point(
    schema: RecordSchema, field: str, value: str, canonical: str
) -> None:
    assert schema.validate({field: canonical}) == {field: canonical}


# -- invalid values -------------------------------------------------------------------------------

INVALID: list[tuple[str, str, str]] = [
    ("email", "not-an-email-address", _validate.BAD_EMAIL),
    ("email", "someone@localhost", _validate.BAD_EMAIL),
    ("email", "two@signs@example.com", _validate.BAD_EMAIL),
    ("email", "Jane Doe <jane@example.com>", _validate.BAD_EMAIL),
    ("email", "x" * 250 + "@example.com", "longer than 254 characters"),
    ("phone", "020 7946 0958", _validate.BAD_PHONE),  # no region: E.164 needed
    ("phone", "+44 1234", _validate.BAD_PHONE),
    ("phone", "+44 20 7946 0958 ext 12", _validate.BAD_PHONE),
    ("phone", "+1 800 FLOWERS", _validate.BAD_PHONE),
    ("phone", "tel:+442079460958", _validate.BAD_PHONE),
    ("phone", "+44 20 7946 0958 0958 0958 0958 0958", "longer than 32 characters"),
    ("mobile_gb", "7946 09", _validate.BAD_PHONE),
    ("name", "   \t", _validate.CONTROL_CHARS),
    ("name", "     ", _validate.EMPTY),
    ("name", "Robert\nSmith", _validate.CONTROL_CHARS),
    ("name", "Robert\x00Smith", _validate.CONTROL_CHARS),
    ("name", "Robert\x85Smith", _validate.CONTROL_CHARS),
    ("name", "Bob " * 65, "longer than 256 characters"),
    ("short_name", "Alexander", "longer than 3 characters"),
    # three code points whose NFC form is six: the stored form is capped too
    ("short_name", "\u0958\u0958\u0958", "longer than 3 characters"),
    ("address", "1 High St\x0bLondon", _validate.CONTROL_CHARS),
    ("address", "1 High St\x1bLondon", _validate.CONTROL_CHARS),
    ("address", "Flat 2 \ud83d High Street", _validate.INVALID_UNICODE),
    ("date_of_birth", "1980-2-29", _validate.BAD_DATE),
    ("date_of_birth", "19800229", _validate.BAD_DATE),
    ("date_of_birth", "1981-02-29", _validate.BAD_DATE),
    ("date_of_birth", "1980-13-01", _validate.BAD_DATE),
    ("date_of_birth", "29/02/1980", _validate.BAD_DATE),
    ("date_of_birth", "1980-02-29".translate(FULLWIDTH), _validate.BAD_DATE),
    ("date_of_birth", "1980-02-29T00:00", "longer than 10 characters"),
    ("date_of_birth", "2024-05-02", _validate.FUTURE_DATE),
    ("date_of_birth", "1899-12-31", _validate.DATE_TOO_EARLY),
    ("national_id", "AB1", _validate.BAD_NATIONAL_ID),
    ("national_id", "A-B-1", _validate.BAD_NATIONAL_ID),
    ("national_id", "AB123456#", _validate.BAD_NATIONAL_ID),
    ("national_id", "٣٤٥٦٧٨٩٠", _validate.BAD_NATIONAL_ID),
    ("national_id", "A" * 33, "longer than 32 characters"),
    ("ssn", "078-05-1120", _validate.BAD_NATIONAL_ID),
    ("ssn", "666-00-0000", _validate.BAD_NATIONAL_ID),
    ("ssn", "١٣٦-٩٠-٤٣٩٩", _validate.BAD_NATIONAL_ID),
    ("steuer_id", "36574261890", _validate.BAD_NATIONAL_ID),
    ("nir", "295109912611199", _validate.BAD_NATIONAL_ID),
    ("card_number", "4111 1111 1111 1112", _validate.BAD_CARD),
    ("card_number", "4111 1111 111", _validate.BAD_CARD),
    ("card_number", "4111.1111.1111.1111", _validate.BAD_CARD),
    ("card_number", "٤١١١١١١١١١١١١١١١", _validate.BAD_CARD),
    ("card_number", "4111111111111111111111", _validate.BAD_CARD),
    ("iban", "GB82 WEST 1234 5698 7654 33", _validate.BAD_IBAN),
    ("iban", "GB82 WEST 1234 5698 7654", _validate.BAD_IBAN),
    ("iban", "XX82WEST12345698765432", _validate.BAD_IBAN),
    ("iban", "GB82_WEST_1234_5698_7654_32", _validate.BAD_IBAN),
    ("free_text", "hello\x00world and more", _validate.CONTROL_CHARS),
    ("free_text", "surrogate \udfff here", _validate.INVALID_UNICODE),
    ("free_text", "y" * 4097, "longer than 4096 characters"),
    ("ip_address", "192.0.2.256", _validate.BAD_IP),
    ("ip_address", "1.2.3", _validate.BAD_IP),
    ("ip_address", "2001:db8::g", _validate.BAD_IP),
    ("ip_address", "١٩٢.0.2.1", _validate.BAD_IP),  # Arabic-Indic digits
]


@pytest.mark.parametrize(("field", "value", "problem"), INVALID)
def test_invalid_value_is_refused_without_echo(
    schema: RecordSchema, field: str, value: str, problem: str
) -> None:
    assert invalid(schema, field, value).problem == problem


def test_examples_cover_every_class(schema: RecordSchema) -> None:
    def classes(rows: list[tuple[str, str, str]]) -> set[FieldClass]:
        return {schema.spec(field).field_class for field, _, _ in rows}

    assert classes(VALID) == set(FieldClass)
    assert classes(INVALID) == set(FieldClass)


@pytest.mark.parametrize("field", FIELD_NAMES)
@pytest.mark.parametrize("value", [123, None, b"bytes", ["a"]])
def test_non_string_is_refused(schema: RecordSchema, field: str, value: object) -> None:
    assert invalid(schema, field, value).problem == _validate.MUST_BE_STRING


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_empty_is_refused(schema: RecordSchema, field: str) -> None:
    assert invalid(schema, field, "").problem == _validate.EMPTY


@pytest.mark.parametrize("field", FIELD_NAMES)
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1f", "\x7f", "\x9b"])
def test_control_characters_are_refused(schema: RecordSchema, field: str, char: str) -> None:
    assert invalid(schema, field, f"a{char}b").problem == _validate.CONTROL_CHARS


@pytest.mark.parametrize("field", FIELD_NAMES)
@pytest.mark.parametrize("char", ["\t", "\n", "\r"])
def test_line_breaks_only_in_multiline_classes(schema: RecordSchema, field: str, char: str) -> None:
    value = f"a{char}b"  # short enough for short_name
    if schema.spec(field).field_class in {FieldClass.ADDRESS, FieldClass.FREE_TEXT}:
        assert schema.validate({field: value}) == {field: value}
    else:
        assert invalid(schema, field, value).problem == _validate.CONTROL_CHARS


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_lone_surrogate_is_refused(schema: RecordSchema, field: str) -> None:
    assert invalid(schema, field, "a\udc80").problem == _validate.INVALID_UNICODE


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_too_long_is_refused_before_parsing(schema: RecordSchema, field: str) -> None:
    limit = schema.spec(field).max_length
    assert invalid(schema, field, "9" * (limit + 1)).problem == f"longer than {limit} characters"


def test_class_defaults_are_applied(schema: RecordSchema) -> None:
    for field_class in FieldClass:
        assert schema.spec(field_class.value).max_length == DEFAULT_MAX_LENGTH[field_class]
    assert set(DEFAULT_MAX_LENGTH) == set(FieldClass)


# -- records --------------------------------------------------------------------------------------


def test_validate_returns_every_field_in_canonical_form(schema: RecordSchema) -> None:
    values = {
        "phone": "+44 20 7946 0958",
        "email": "Ann@Example.com",
        "card_number": "4111 1111 1111 1111",
    }
    result = schema.validate(values)
    assert result == {
        "phone": "+442079460958",
        "email": "Ann@example.com",
        "card_number": "4111111111111111",
    }
    assert list(result) == list(values)
    assert schema.validate({}) == {}


def test_first_bad_field_in_sorted_order_is_reported(schema: RecordSchema) -> None:
    values = {"phone": "nope nope", "zzz_unknown": "x", "email": "nope nope", "iban": "GB00"}
    with pytest.raises(InvalidInput) as info:
        schema.validate(values)
    assert info.value.field == "email"
    del values["email"]
    with pytest.raises(InvalidInput) as info:
        schema.validate(values)
    assert info.value.field == "iban"


def test_unknown_field_is_named(schema: RecordSchema) -> None:
    with pytest.raises(InvalidInput) as info:
        schema.validate({"nickname": "Bobby Tables"})
    assert (info.value.field, info.value.problem) == ("nickname", "unknown field")
    assert_safe_error(info.value, "nickname", "Bobby Tables")
    with pytest.raises(InvalidInput) as info:
        schema.spec("nickname")
    assert str(info.value) == "nickname: unknown field"


@pytest.mark.parametrize("name", ["Jane Doe <jane@example.com>", "EMAIL", "x" * 64, "a\nb"])
def test_malformed_field_name_is_not_echoed(schema: RecordSchema, name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        schema.validate({name: "value"})
    assert info.value.field == "<invalid field name>"
    assert info.value.problem == "unknown field"
    assert name not in str(info.value)


def test_non_string_field_name(schema: RecordSchema) -> None:
    with pytest.raises(InvalidInput) as info:
        schema.validate({7: "value"})  # type: ignore[dict-item]
    assert info.value.field == "<invalid field name>"


def test_spec_and_field_classes(schema: RecordSchema) -> None:
    spec = schema.spec("mobile_gb")
    assert spec == FieldSpec("mobile_gb", FieldClass.PHONE, False, 32, {"default_region": "GB"})
    assert schema.spec("ssn").options == {"format": "us.ssn"}
    assert schema.spec("email").searchable
    assert not schema.spec("name").searchable
    assert schema.field_classes == frozenset(FieldClass)
    assert schema.version == 3
    assert schema.source.endswith("schema.yaml")


def test_date_of_birth_uses_the_latest_date_on_earth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real clock
    # someone born "today" in Kiribati (UTC+14) is accepted whatever the server's clock says
    kiribati_today = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=14)).date()
    spec = FieldSpec("dob", FieldClass.DATE_OF_BIRTH, False, 10, {})
    assert _validate.canonicalize(spec, kiribati_today.isoformat()) == kiribati_today.isoformat()
    with pytest.raises(InvalidInput, match="in the future"):
        _validate.canonicalize(spec, (kiribati_today + datetime.timedelta(days=1)).isoformat())


# -- properties -----------------------------------------------------------------------------------

# Arbitrary text (any code point, lone surrogates included) and text that looks like the values.
VALUES = st.one_of(
    st.text(st.characters(), max_size=40),
    st.text("0123456789 +-()./@abcDEFxß٣\t\n", max_size=40),
    st.emails().map(lambda email: email[:300]),
    st.from_regex(r"\+[1-9][0-9 ]{6,16}", fullmatch=True),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    st.from_regex(r"[A-Z]{2}[0-9]{2}[A-Z0-9 ]{10,30}", fullmatch=True),
)
PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@PROPERTY_SETTINGS
@given(field=st.sampled_from(FIELD_NAMES), value=VALUES)
def test_validate_returns_or_raises_invalid_input_only(
    schema: RecordSchema, field: str, value: str
) -> None:
    try:
        canonical = schema.validate({field: value})[field]
    except InvalidInput as exc:
        # no 4-character piece of the value, hence not the value itself when len(value) >= 4
        assert_safe_error(exc, field, value)
    else:
        assert isinstance(canonical, str)
        assert 0 < len(canonical) <= schema.spec(field).max_length
        assert schema.validate({field: canonical}) == {field: canonical}
        assert schema.index_form(field, canonical) == schema.index_form(field, value)


def _luhn_completed(digits: str) -> str:
    return digits + stdnum_luhn.calc_check_digit(digits)


def _grouped(draw: st.DrawFn, compact: str) -> str:
    """``compact`` as people write it: in groups of four or not, any letter case."""
    separator = draw(st.sampled_from(["", " ", "-"]))
    text = separator.join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return text.lower() if draw(st.booleans()) else text


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[str, str, str]:
    """``(field, value, canonical)`` for values that must be accepted, in assorted spellings."""
    kind = draw(st.sampled_from(["card", "iban", "dob", "ssn", "phone"]))
    if kind == "card":
        compact = _luhn_completed(draw(st.from_regex(r"[1-9][0-9]{10,17}", fullmatch=True)))
        return "card_number", _grouped(draw, compact), compact
    if kind == "iban":
        compact = draw(st.sampled_from(IBANS))
        return "iban", _grouped(draw, compact), compact
    if kind == "dob":
        day = draw(st.dates(min_value=datetime.date(1900, 1, 1), max_value=TODAY))
        return "date_of_birth", day.isoformat(), day.isoformat()
    if kind == "ssn":
        area = draw(st.integers(1, 665) | st.integers(667, 899))
        group, serial = draw(st.integers(1, 99)), draw(st.integers(1, 9999))
        compact = f"{area:03d}{group:02d}{serial:04d}"
        assume(compact not in {"078051120", "219099999", "457555462"})  # stdnum's blacklist
        return "ssn", f"{compact[:3]}-{compact[3:5]}-{compact[5:]}", compact
    # 07400, 07500 and 07800 blocks are all allocated to mobile networks
    subscriber = draw(st.from_regex(r"7[458]00 [0-9]{6}", fullmatch=True))
    spelling = draw(st.sampled_from(["0{}", "+44 {}", "+44 (0){}", "0044 {}"]))
    return "mobile_gb", spelling.format(subscriber), "+44" + subscriber.replace(" ", "")


IBANS = [
    "GB82WEST12345698765432",
    "DE89370400440532013000",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "ES9121000418450200051332",
]


@PROPERTY_SETTINGS
@given(example=well_formed())
def test_well_formed_values_in_any_spelling_are_accepted(
    schema: RecordSchema, example: tuple[str, str, str]
) -> None:
    field, value, canonical = example
    assert schema.validate({field: value}) == {field: canonical}
    assert schema.index_form(field, value) == schema.index_form(field, canonical)
