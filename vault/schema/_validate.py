"""Per-class validation, canonical forms and blind-index forms of field values.

Every check that fails raises :class:`~vault.errors.InvalidInput` naming the field and one of a
closed set of problems (``PROBLEMS`` plus ``"longer than N characters"``): never the value, never a
library's message (email-validator, phonenumbers and python-stdnum echo the input), and never with
the library exception attached. Library calls go through :func:`_attempt`, which turns the expected
exception into ``None`` so that ``InvalidInput`` is raised *outside* the ``except`` block: its
``__context__`` is then empty, not merely hidden by ``from None``.

Order of checks for every value: type, empty, raw length (before any parsing, so a huge value never
reaches a parser), valid unicode, control characters, class rules, canonical length.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import ipaddress
import keyword
import re
import unicodedata
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Final, TypeVar

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn

from vault.errors import InvalidInput
from vault.schema._model import CLASS_OPTIONS, FieldClass, FieldSpec

T = TypeVar("T")

MUST_BE_STRING: Final = "must be a string"
EMPTY: Final = "must not be empty"
INVALID_UNICODE: Final = "is not valid unicode"
CONTROL_CHARS: Final = "contains control characters"
BAD_EMAIL: Final = "not a valid email address"
BAD_PHONE: Final = "not a valid phone number"
BAD_DATE: Final = "not a valid date (expected YYYY-MM-DD)"
FUTURE_DATE: Final = "date is in the future"
DATE_TOO_EARLY: Final = "date is before 1900-01-01"
BAD_NATIONAL_ID: Final = "not a valid national id"
BAD_CARD: Final = "not a valid card number"
BAD_IBAN: Final = "not a valid IBAN"
BAD_IP: Final = "not a valid IPv4 or IPv6 address"
UNKNOWN_FIELD: Final = "unknown field"

#: Every fixed problem text. The only other one is ``too_long_problem(n)``.
PROBLEMS: Final = frozenset(
    {
        MUST_BE_STRING,
        EMPTY,
        INVALID_UNICODE,
        CONTROL_CHARS,
        BAD_EMAIL,
        BAD_PHONE,
        BAD_DATE,
        FUTURE_DATE,
        DATE_TOO_EARLY,
        BAD_NATIONAL_ID,
        BAD_CARD,
        BAD_IBAN,
        BAD_IP,
        UNKNOWN_FIELD,
    }
)

EARLIEST_DATE_OF_BIRTH: Final = datetime.date(1900, 1, 1)

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0, DEL and C1. Multi-line classes keep tab, line feed and carriage return.
_CONTROL_ANY = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MULTILINE_CLASSES: Final = frozenset({FieldClass.ADDRESS, FieldClass.FREE_TEXT})

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NATIONAL_ID_CHARS = re.compile(r"[A-Za-z0-9 ./-]+")
_NATIONAL_ID_SEPARATORS = re.compile(r"[ ./-]")
NATIONAL_ID_MIN: Final = 4
NATIONAL_ID_MAX: Final = 32
_CARD_SEPARATORS = re.compile(r"[ -]")
_CARD_DIGITS = re.compile(r"[0-9]{12,19}")
_IBAN_CHARS = re.compile(r"[A-Za-z0-9 -]+")
# ASCII only: ipaddress accepts other Unicode digits, which no system writes in an address
_IP_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
# stdnum module path below ``stdnum.``: "us.ssn", "de.idnr", "in.aadhaar" (or "in_.aadhaar"), "isbn"
_FORMAT_NAME = re.compile(r"[a-z][a-z0-9]*_?(?:\.[a-z][a-z0-9_]*)*")


def too_long_problem(max_length: int) -> str:
    return f"longer than {max_length} characters"


def _today() -> datetime.date:
    """The latest calendar date anywhere on Earth (UTC+14), so nobody born today is refused."""
    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=14)).date()


def _attempt(call: Callable[[], T], errors: tuple[type[Exception], ...]) -> T | None:
    """Run a library parser; ``None`` if it raises one of ``errors`` (the exception is dropped)."""
    try:
        return call()
    except errors:
        return None


def _invalid(spec: FieldSpec, problem: str) -> InvalidInput:
    return InvalidInput(spec.name, problem)


# -- options --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def stdnum_module(format_name: str) -> ModuleType | None:
    """The python-stdnum module for a national-id ``format`` option, or ``None`` if there is none.

    ``format_name`` is the module path below ``stdnum`` ("us.ssn", "fr.nir", "de.idnr"); country
    codes that are Python keywords may be written without stdnum's trailing underscore ("in.pan").
    Only modules with a callable ``validate`` count.
    """
    if not _FORMAT_NAME.fullmatch(format_name):
        return None
    parts = [f"{part}_" if keyword.iskeyword(part) else part for part in format_name.split(".")]
    try:
        module = importlib.import_module("stdnum." + ".".join(parts))
    except ImportError:
        return None
    if not callable(getattr(module, "validate", None)):
        return None
    return module


def option_problem(field_class: FieldClass, key: str, value: object) -> str | None:
    """Why ``key: value`` is not a valid option of a field of ``field_class`` (``None`` if it is).

    ``value`` is the option as written in the schema file; see :func:`normalize_option`.
    """
    if key not in CLASS_OPTIONS.get(field_class, frozenset()):
        return f"unknown key {key!r} for class {field_class.value!r}"
    if key == "default_region":
        if value is None:
            return None
        if not isinstance(value, str) or value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            return f"default_region must be null or a region code such as 'GB', not {value!r}"
        return None
    if key == "format":
        if not isinstance(value, str):
            return f"format must be a python-stdnum module name such as 'us.ssn', not {value!r}"
        if stdnum_module(value) is None:
            return f"unknown national id format {value!r} (no python-stdnum module with validate())"
        return None
    # CLASS_OPTIONS lists a key this function does not know: a bug, not a bad file
    raise AssertionError(f"unhandled option {key!r}")  # pragma: no cover


def normalize_option(key: str, value: object) -> str | None:
    """The stored form of a valid option; ``None`` means "not set" (left out of ``options``)."""
    if value is None:
        return None
    if key == "default_region":
        return str(value).upper()
    return str(value)


def spec_problem(spec: FieldSpec) -> str | None:
    """Why the options of ``spec`` are invalid, or ``None``."""
    for key, value in spec.options.items():
        problem = option_problem(spec.field_class, key, value)
        if problem is not None:
            return problem
    return None


# -- per-class rules ------------------------------------------------------------------------------


def _email(spec: FieldSpec, value: str) -> str:
    # ValueError covers EmailNotValidError and idna's UnicodeError subclasses
    normalized = _attempt(
        lambda: validate_email(value, check_deliverability=False).normalized,
        (EmailNotValidError, ValueError),
    )
    if normalized is None:
        raise _invalid(spec, BAD_EMAIL) from None
    return normalized


def _phone(spec: FieldSpec, value: str) -> str:
    # phonenumbers reads letters as keypad digits ("1-800-FLOWERS") and as extension markers
    # ("ext. 12"), and E.164 has no room for an extension: refuse letters rather than silently
    # drop part of the number. Unicode digits and full-width "+" are fine.
    if any(ch.isalpha() for ch in value):
        raise _invalid(spec, BAD_PHONE) from None
    region = spec.options.get("default_region")
    region = region.upper() if region else None  # a FieldSpec built in code may say "gb"
    number = _attempt(
        lambda: phonenumbers.parse(value, region),
        (phonenumbers.NumberParseException, ValueError),
    )
    if number is None or number.extension or not phonenumbers.is_valid_number(number):
        raise _invalid(spec, BAD_PHONE) from None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _stripped(spec: FieldSpec, value: str) -> str:
    canonical = unicodedata.normalize("NFC", value).strip()
    if not canonical:
        raise _invalid(spec, EMPTY) from None
    return canonical


def _date_of_birth(spec: FieldSpec, value: str) -> str:
    # fromisoformat alone also takes "20240101" and (3.11+) week dates: require the one shape
    parsed = (
        _attempt(lambda: datetime.date.fromisoformat(value), (ValueError,))
        if _ISO_DATE.fullmatch(value)
        else None
    )
    if parsed is None:
        raise _invalid(spec, BAD_DATE) from None
    if parsed < EARLIEST_DATE_OF_BIRTH:
        raise _invalid(spec, DATE_TOO_EARLY) from None
    if parsed > _today():
        raise _invalid(spec, FUTURE_DATE) from None
    return parsed.isoformat()


def _national_id(spec: FieldSpec, value: str) -> str:
    format_name = spec.options.get("format")
    if format_name is None:
        canonical: str | None = None
        if _NATIONAL_ID_CHARS.fullmatch(value):
            canonical = _NATIONAL_ID_SEPARATORS.sub("", value).upper()
        if canonical is None or not NATIONAL_ID_MIN <= len(canonical) <= NATIONAL_ID_MAX:
            raise _invalid(spec, BAD_NATIONAL_ID) from None
        return canonical
    module = stdnum_module(format_name)
    if module is None:  # pragma: no cover - checked when the schema is built
        raise _invalid(spec, BAD_NATIONAL_ID) from None

    def check() -> str:
        result = module.validate(value)
        compact = getattr(module, "compact", None)
        return str(compact(value) if callable(compact) else result)

    # Any module of python-stdnum may be configured here, and a few raise more than
    # ValidationError on odd input (IndexError, KeyError, TypeError): for a value parser every
    # failure means "not this kind of number". Nothing here talks to a server.
    canonical = _attempt(check, (Exception,))
    # stdnum's clean() lets non-ASCII digits through ("١٢٣"); the compact form of every national
    # id we know is ASCII, and an ASCII-only form keeps blind indexes consistent.
    if canonical is None or not canonical or not canonical.isascii():
        raise _invalid(spec, BAD_NATIONAL_ID) from None
    return canonical


def _card_number(spec: FieldSpec, value: str) -> str:
    digits = _CARD_SEPARATORS.sub("", value)
    if not _CARD_DIGITS.fullmatch(digits) or not stdnum_luhn.is_valid(digits):
        raise _invalid(spec, BAD_CARD) from None
    return digits


def _iban(spec: FieldSpec, value: str) -> str:
    canonical = (
        _attempt(lambda: str(stdnum_iban.validate(value)), (ValueError,))
        if _IBAN_CHARS.fullmatch(value)
        else None
    )
    if canonical is None:
        raise _invalid(spec, BAD_IBAN) from None
    return canonical.upper()


def _free_text(spec: FieldSpec, value: str) -> str:
    return unicodedata.normalize("NFC", value)


def _ip_address(spec: FieldSpec, value: str) -> str:
    # The ipaddress module's own text: IPv6 compressed and lower case, IPv4 dotted quad.
    parsed = (
        _attempt(lambda: ipaddress.ip_address(value.strip()), (ValueError,))
        if _IP_CHARS.fullmatch(value.strip())
        else None
    )
    if parsed is None:
        raise _invalid(spec, BAD_IP) from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        # written the same on every Python (3.13 changed str() of these)
        return f"::ffff:{parsed.ipv4_mapped}"
    return str(parsed)


_RULES: Final[Mapping[FieldClass, Callable[[FieldSpec, str], str]]] = {
    FieldClass.EMAIL: _email,
    FieldClass.PHONE: _phone,
    FieldClass.NAME: _stripped,
    FieldClass.ADDRESS: _stripped,
    FieldClass.DATE_OF_BIRTH: _date_of_birth,
    FieldClass.NATIONAL_ID: _national_id,
    FieldClass.CARD_NUMBER: _card_number,
    FieldClass.IBAN: _iban,
    FieldClass.FREE_TEXT: _free_text,
    FieldClass.IP_ADDRESS: _ip_address,
}


def canonicalize(spec: FieldSpec, value: object) -> str:
    """Validate one value of field ``spec`` and return its canonical form.

    Idempotent: the canonical form of a canonical form is itself.

    Raises:
        InvalidInput: naming ``spec.name`` with a fixed problem text; nothing chained.
    """
    if not isinstance(value, str):
        raise _invalid(spec, MUST_BE_STRING) from None
    if not value:
        raise _invalid(spec, EMPTY) from None
    if len(value) > spec.max_length:
        raise _invalid(spec, too_long_problem(spec.max_length)) from None
    if _SURROGATE.search(value):  # exactly the strings that value.encode("utf-8") refuses
        raise _invalid(spec, INVALID_UNICODE) from None
    control = _CONTROL_MULTILINE if spec.field_class in _MULTILINE_CLASSES else _CONTROL_ANY
    if control.search(value):
        raise _invalid(spec, CONTROL_CHARS) from None
    canonical = _RULES[spec.field_class](spec, value)
    # NFC may lengthen a string (e.g. U+0958 becomes two code points): cap what is stored too
    if len(canonical) > spec.max_length:
        raise _invalid(spec, too_long_problem(spec.max_length)) from None
    return canonical


# -- blind-index forms ----------------------------------------------------------------------------


def _folded(text: str) -> str:
    # casefold() may leave a string that is not NFC, hence NFC on both sides
    folded = unicodedata.normalize("NFC", text).casefold()
    return unicodedata.normalize("NFC", " ".join(folded.split()))


_INDEX_FORMS: Final[Mapping[FieldClass, Callable[[str], str]]] = {
    # The local part is case-sensitive by RFC 5321, but no real provider treats it so and users
    # expect Foo@x.com to find foo@x.com.
    FieldClass.EMAIL: lambda canonical: unicodedata.normalize("NFC", canonical.casefold()),
    FieldClass.PHONE: lambda canonical: canonical,
    FieldClass.NAME: _folded,
    FieldClass.ADDRESS: _folded,
    FieldClass.DATE_OF_BIRTH: lambda canonical: canonical,
    FieldClass.NATIONAL_ID: str.upper,
    FieldClass.CARD_NUMBER: lambda canonical: canonical,
    FieldClass.IBAN: str.upper,
    FieldClass.FREE_TEXT: _folded,
    FieldClass.IP_ADDRESS: lambda canonical: canonical,
}


def index_form(spec: FieldSpec, value: str) -> bytes:
    """UTF-8 bytes of the search form of ``value``, which is canonicalized first.

    Raises:
        InvalidInput: if ``value`` is not a valid value of the field.
    """
    return _INDEX_FORMS[spec.field_class](canonicalize(spec, value)).encode("utf-8")


def index_form_of_canonical(spec: FieldSpec, canonical: str) -> bytes:
    """The search form of a value already returned by :func:`canonicalize` for ``spec``."""
    return _INDEX_FORMS[spec.field_class](canonical).encode("utf-8")
