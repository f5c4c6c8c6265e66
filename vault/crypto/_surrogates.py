"""Format-preserving surrogates: random stand-ins with a value's shape and none of its content.

A ``format_preserving`` token is a surrogate that downstream systems can store and validate like
the value it stands for. It is drawn at random (``secrets``); the token table maps it back to the
encrypted original. Nothing of the value reaches the surrogate except what the table below says
is kept, so a surrogate is no more sensitive than its shape.

What a surrogate keeps, per class (everything else is random):

=================  ===============================================================================
card_number        digit count, separator layout, first digit; the last four if asked
phone              total digit count (clamped to 8..15); the last four if asked
email              length of the local part (clamped to 6..32)
date_of_birth      the year (attempt < 8), the decade (8..15), within 50 years (16 and later)
iban               country, length, separator layout, digit or letter in each free-form position
national_id        digit, letter (and its case) or separator in each position; last four if asked
ip_address         the IP version
any other class    per character: letter (case, script where feasible), digit, or kept as is
=================  ===============================================================================

Uniqueness per tenant and class is the caller's job: on a collision it calls again with
``attempt + 1``. Where the natural space is small (dates, IPv4 documentation ranges, short phone
numbers), later attempts widen it.

Errors never carry the value: :class:`SurrogateShapeError` and :class:`SurrogateUnavailableError`
name the class only, and are raised outside any ``except`` block, so no library exception (whose
message may echo the input) is attached as ``__context__``.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import ipaddress
import keyword
import re
import secrets
import string
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Final, TypeVar

from email_validator import EmailNotValidError, validate_email
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum import numdb

T = TypeVar("T")

#: Domain of every email surrogate. RFC 2606 reserves example.com for documentation: IANA holds it
#: and assigns it to nobody, so no surrogate is anyone's mailbox. The ``.invalid`` TLD would say
#: "fake" more plainly, but email-validator refuses it whatever its flags (``test_environment``
#: lets ``.test`` through, nothing lets ``.invalid``), so such surrogates would fail the vault's
#: own email validator and most downstream ones.
EMAIL_DOMAIN: Final = "example.com"

#: Country code of every phone surrogate: +999 is reserved by ITU-T E.164 for a future global
#: service and assigned to no country, so no surrogate can ring a real line. The price:
#: phonenumbers (and so the vault's own phone validator) cannot parse these numbers. The fictional
#: ranges phonenumbers does accept (Ofcom's 20,000 UK drama numbers, NANP 555-0100..0199, ACMA's
#: and ARCEP's) hold tens of thousands of numbers in all: too few for uniqueness per tenant.
PHONE_COUNTRY_CODE: Final = "999"

#: The vault refuses dates of birth before this one (``vault.schema._validate``); surrogates stay
#: on or after it so that they pass the same validator.
EARLIEST_DATE_OF_BIRTH: Final = datetime.date(1900, 1, 1)

# Attempts from which the space of dates, IPv4 addresses and short phone numbers widens.
_WIDEN_AT: Final = 8
_WIDEST_AT: Final = 16

# Bound on random draws for one surrogate. A draw costs one is_valid() call at most (20 to 35 µs
# for the stdnum modules), so a format that cannot be met fails within about half a second, and
# one that random characters meet once in 2,000 draws (no.fodselsnummer, fi.hetu, za.idnr) fails
# less than once in 20,000 calls.
_MAX_DRAWS: Final = 20_000
# Bound on draws of one letter that must not compose (NFC) with the marks that follow it.
_MAX_LETTER_DRAWS: Final = 100

_DIGITS: Final = string.digits


class SurrogateError(ValueError):
    """Base of the errors of :func:`surrogate`; messages name the class, never the value."""

    def __init__(self, message: str, field_class: str) -> None:
        super().__init__(message)
        self.field_class = field_class


class SurrogateShapeError(SurrogateError):
    """The value does not have the shape of its class, so no surrogate of that shape exists."""

    def __init__(self, field_class: str) -> None:
        super().__init__(f"value does not have the shape of a {field_class!r} value", field_class)


class SurrogateUnavailableError(SurrogateError):
    """No acceptable surrogate was found within the bounded number of random draws.

    Raised for a national-id format whose checks random characters in the value's positions
    almost never meet: a registry of region codes and a birth date (``cn.ric``), state codes and
    consonant rules (``mx.curp``). For such a format it fails every time; for the formats random
    draws do meet, practically never (see :data:`_MAX_DRAWS`).
    """

    def __init__(self, field_class: str) -> None:
        super().__init__(
            f"no valid {field_class!r} surrogate found in {_MAX_DRAWS} draws", field_class
        )


@dataclass(frozen=True, slots=True)
class _Request:
    field_class: str
    value: str = field(repr=False)
    attempt: int
    keep_last_four: bool
    options: Mapping[str, str]


# -- randomness and helpers -----------------------------------------------------------------------


def _random_digits(count: int) -> str:
    return "".join(secrets.choice(_DIGITS) for _ in range(count))


def _attempt(call: Callable[[], T], errors: tuple[type[Exception], ...]) -> T | None:
    """Run a library parser; ``None`` if it raises one of ``errors`` (the exception is dropped)."""
    try:
        return call()
    except errors:
        return None


def _draw(request: _Request, make: Callable[[], str | None]) -> str:
    """The first candidate ``make`` accepts (it returns ``None`` to reject one), bounded."""
    for _ in range(_MAX_DRAWS):
        candidate = make()
        if candidate is not None:
            return candidate
    raise SurrogateUnavailableError(request.field_class)


def _relayout(template: str, slots: Callable[[str], bool], filling: str) -> str:
    """``template`` with its slot characters replaced, in order, by those of ``filling``."""
    chars = iter(filling)
    return "".join(next(chars) if slots(char) else char for char in template)


def _is_ascii_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _random_like(char: str) -> str:
    """A random ASCII digit for a digit, a random ASCII letter of the same case for a letter."""
    if _is_ascii_digit(char):
        return secrets.choice(_DIGITS)
    return secrets.choice(string.ascii_uppercase if char.isupper() else string.ascii_lowercase)


# -- card_number ----------------------------------------------------------------------------------

_CARD_SHAPE: Final = re.compile(r"[0-9 -]+")


def _card_number(request: _Request) -> str:
    """Luhn-valid, same digit count and separators, first digit kept (so the brand stays)."""
    value = request.value
    digits = "".join(char for char in value if _is_ascii_digit(char))
    if not _CARD_SHAPE.fullmatch(value) or not 12 <= len(digits) <= 19:
        raise SurrogateShapeError(request.field_class)

    def make() -> str | None:
        if request.keep_last_four:
            # The digit just before the last four completes the checksum: Luhn weighs every
            # position by a bijection mod 10, so exactly one digit there makes the number valid,
            # and the result is uniform over the valid numbers with this first and last four.
            head = digits[0] + _random_digits(len(digits) - 6)
            candidate = next(
                head + fix + digits[-4:]
                for fix in _DIGITS
                if stdnum_luhn.is_valid(head + fix + digits[-4:])
            )
        else:
            body = digits[0] + _random_digits(len(digits) - 2)
            candidate = body + stdnum_luhn.calc_check_digit(body)
        return None if candidate == digits else candidate

    return _relayout(value, _is_ascii_digit, _draw(request, make))


# -- phone ----------------------------------------------------------------------------------------

_PHONE_SHAPE: Final = re.compile(r"\+[1-9][0-9 ().-]*")
_PHONE_MIN_DIGITS: Final = 6  # the shortest numbers phonenumbers knows (AT, DE) have 6 in all
_E164_MAX_DIGITS: Final = 15
_PHONE_SURROGATE_MIN_DIGITS: Final = 8


def _phone(request: _Request) -> str:
    """E.164 ``+999`` and random digits, as many in all as the value has (clamped to 8..15).

    Takes the canonical E.164 form or an international form with separators ("+44 20 7946
    0958"); the surrogate is always E.164. From attempt 8 on it has 15 digits, the E.164
    maximum, so that short numbers (and those keeping their last four) do not run out.
    """
    value = request.value
    digits = "".join(char for char in value if _is_ascii_digit(char))
    if (
        not _PHONE_SHAPE.fullmatch(value)
        or not _PHONE_MIN_DIGITS <= len(digits) <= _E164_MAX_DIGITS
    ):
        raise SurrogateShapeError(request.field_class)
    if request.attempt >= _WIDEN_AT:
        total = _E164_MAX_DIGITS
    else:
        total = min(max(len(digits), _PHONE_SURROGATE_MIN_DIGITS), _E164_MAX_DIGITS)
    kept = digits[-4:] if request.keep_last_four else ""
    free = total - len(PHONE_COUNTRY_CODE) - len(kept)

    def make() -> str | None:
        candidate = PHONE_COUNTRY_CODE + _random_digits(free) + kept
        return None if candidate == digits else "+" + candidate

    return _draw(request, make)


# -- email ----------------------------------------------------------------------------------------

_EMAIL_LOCAL_MIN: Final = 6
_EMAIL_LOCAL_MAX: Final = 32
_EMAIL_LOCAL_ALPHABET: Final = string.ascii_lowercase + string.digits


def _email(request: _Request) -> str:
    """``<random lowercase letters and digits>@example.com``, local part as long as the value's.

    The value must pass email-validator's syntax check, as the vault's validator requires.
    """
    value = request.value
    local_part = _attempt(
        lambda: validate_email(value, check_deliverability=False).local_part,
        (EmailNotValidError, ValueError),  # ValueError: idna's UnicodeError subclasses
    )
    if local_part is None:
        raise SurrogateShapeError(request.field_class)
    length = min(max(len(local_part), _EMAIL_LOCAL_MIN), _EMAIL_LOCAL_MAX)

    def make() -> str | None:
        local = "".join(secrets.choice(_EMAIL_LOCAL_ALPHABET) for _ in range(length))
        candidate = f"{local}@{EMAIL_DOMAIN}"
        return None if candidate.casefold() == value.casefold() else candidate

    return _draw(request, make)


# -- date_of_birth --------------------------------------------------------------------------------

_ISO_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DECADE: Final = 10
_HALF_CENTURY: Final = 50


def _today() -> datetime.date:
    """The earliest calendar date anywhere on Earth (UTC-12): a surrogate is never in the future.

    (The vault accepts dates up to today in UTC+14; see :func:`_latest_accepted`.)
    """
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=12)).date()


def _latest_accepted() -> datetime.date:
    # The vault's latest date of birth is today in UTC+14, up to two calendar days after today in
    # UTC-12 (26 hours apart).
    return _today() + datetime.timedelta(days=2)


def _date_range(original: datetime.date, attempt: int) -> tuple[datetime.date, datetime.date]:
    """The first and last date (inclusive) a surrogate may take at ``attempt``, before clipping."""
    year = original.year
    if attempt >= _WIDEST_AT:
        first, last = year - _HALF_CENTURY, year + _HALF_CENTURY
    elif attempt >= _WIDEN_AT:
        first = year - year % _DECADE
        last = first + _DECADE - 1
    else:
        first = last = year
    return datetime.date(first, 1, 1), datetime.date(min(last, datetime.MAXYEAR), 12, 31)


def _date_of_birth(request: _Request) -> str:
    """A random ``YYYY-MM-DD`` other than the value: same year, then decade, then ±50 years.

    Always between 1900-01-01 and today (UTC-12). When the range of an attempt holds no date but
    the value (1 January of this year, early in the morning), the next wider range is used.
    """
    value = request.value
    original = (
        _attempt(lambda: datetime.date.fromisoformat(value), (ValueError,))
        if _ISO_DATE.fullmatch(value)
        else None
    )
    if original is None or not EARLIEST_DATE_OF_BIRTH <= original <= _latest_accepted():
        raise SurrogateShapeError(request.field_class)
    today = _today()
    for tier in (request.attempt, _WIDEN_AT, _WIDEST_AT):
        first, last = _date_range(original, max(tier, request.attempt))
        low = max(first, EARLIEST_DATE_OF_BIRTH).toordinal()
        high = min(last, today).toordinal()
        skip = 1 if low <= original.toordinal() <= high else 0
        count = high - low + 1 - skip
        if count > 0:
            break
    else:  # pragma: no cover - the ±50-year range of a date since 1900 always has a past date
        raise SurrogateUnavailableError(request.field_class)
    ordinal = low + secrets.randbelow(count)
    if skip and ordinal >= original.toordinal():
        ordinal += 1  # step over the value: uniform over the other dates of the range
    return datetime.date.fromordinal(ordinal).isoformat()


# -- iban -----------------------------------------------------------------------------------------

_IBAN_SHAPE: Final = re.compile(r"[A-Za-z0-9 -]+")
_IBAN_COMPACT: Final = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")
_IBAN_STRUCTURE_PART: Final = re.compile(r"([1-9][0-9]*)!([nac])")
_IBAN_DB: Final = numdb.get("iban")


@functools.cache
def _bban_kinds(country: str) -> str | None:
    """One of ``n`` (digit), ``a`` (letter), ``c`` (either) per BBAN character of ``country``.

    From python-stdnum's copy of the SWIFT IBAN registry, e.g. "4!a6!n8!n" for GB; ``None`` for a
    country without IBANs.
    """
    properties = _IBAN_DB.info(country)[0][1]
    structure = properties.get("bban") if properties else None
    if not structure or _IBAN_STRUCTURE_PART.sub("", structure):
        return None
    return "".join(kind * int(count) for count, kind in _IBAN_STRUCTURE_PART.findall(structure))


def _iban(request: _Request) -> str:
    """Same country and length, random BBAN of the country's structure, valid check digits.

    Takes the compact or print form (any case, spaces or dashes, as the vault does); the
    surrogate is upper case, with separators where the value had them. In a ``c`` position
    (letter or digit) it has a digit where the value has one and a letter where it has one.
    ``stdnum.iban.is_valid`` must accept it, including the national check digits it knows
    (Belgium, Spain, Montenegro, Norway): BBANs are drawn until it does.
    """
    value = request.value
    compact = "".join(char for char in value if char not in " -").upper()
    kinds = _bban_kinds(compact[:2]) if _IBAN_COMPACT.fullmatch(compact) else None
    bban = compact[4:]
    if (
        not _IBAN_SHAPE.fullmatch(value)
        or kinds is None
        or len(bban) != len(kinds)
        or not all(_fits_bban_kind(char, kind) for char, kind in zip(bban, kinds, strict=True))
    ):
        raise SurrogateShapeError(request.field_class)
    country = compact[:2]

    def make() -> str | None:
        drawn = "".join(
            secrets.choice(_DIGITS)
            if kind == "n" or (kind == "c" and char.isdigit())
            else secrets.choice(string.ascii_uppercase)
            for char, kind in zip(bban, kinds, strict=True)
        )
        candidate = country + stdnum_iban.calc_check_digits(country + "00" + drawn) + drawn
        if candidate == compact or not stdnum_iban.is_valid(candidate):
            return None
        return candidate

    return _relayout(value, _is_ascii_alnum, _draw(request, make))


def _fits_bban_kind(char: str, kind: str) -> bool:
    if kind == "n":
        return _is_ascii_digit(char)
    if kind == "a":
        return "A" <= char <= "Z"
    return _is_ascii_alnum(char)


# -- national_id ----------------------------------------------------------------------------------

_NATIONAL_ID_SHAPE: Final = re.compile(r"[A-Za-z0-9 ./-]+")
_NATIONAL_ID_MIN: Final = 4
_NATIONAL_ID_MAX: Final = 32
# Leading characters every valid number of a format has: kept, since random ones would (almost)
# never validate. They are the format's, not the value's, so keeping them reveals nothing.
_FIXED_PREFIXES: Final[Mapping[str, str]] = MappingProxyType({"ch.ssn": "756", "ch.uid": "CHE"})
# Same syntax as the schema's ``format`` option: the module path below ``stdnum.``.
_FORMAT_NAME: Final = re.compile(r"[a-z][a-z0-9]*_?(?:\.[a-z][a-z0-9_]*)*")


@functools.lru_cache(maxsize=128)
def _format_module(format_name: str) -> ModuleType | None:
    """The python-stdnum module named by a national-id ``format`` option, or ``None``.

    Resolved as ``vault.schema`` resolves it ("in.pan" is ``stdnum.in_.pan``); kept here rather
    than imported so that the crypto layer does not depend on the schema layer.
    """
    if not _FORMAT_NAME.fullmatch(format_name):
        return None
    parts = [f"{part}_" if keyword.iskeyword(part) else part for part in format_name.split(".")]
    module = _attempt(lambda: importlib.import_module("stdnum." + ".".join(parts)), (ImportError,))
    if module is None or not callable(getattr(module, "is_valid", None)):
        return None
    return module


def _accepts(module: ModuleType, candidate: str) -> bool:
    # Any stdnum module may be configured, and a few raise more than ValidationError on odd
    # input: every failure means "not valid". The exception is dropped here, before any raise.
    try:
        return bool(module.is_valid(candidate))
    except Exception:
        return False


def _compact(module: ModuleType, number: str) -> str:
    compact = getattr(module, "compact", None)
    if not callable(compact):
        return number
    result = _attempt(lambda: str(compact(number)), (Exception,))
    return number if result is None else result


def _national_id(request: _Request) -> str:
    """Random digits and letters in the value's positions, separators kept.

    With a ``format`` option (a python-stdnum module such as ``us.ssn``) the value must be valid
    in that format, and draws repeat until the module accepts the surrogate. Formats whose checks
    random characters rarely meet (fixed prefixes, region registries) raise
    :class:`SurrogateUnavailableError`.
    """
    value = request.value
    compact_length = sum(1 for char in value if _is_ascii_alnum(char))
    if (
        not _NATIONAL_ID_SHAPE.fullmatch(value)
        or not _NATIONAL_ID_MIN <= compact_length <= _NATIONAL_ID_MAX
        # keeping four of four would give back the value itself
        or (request.keep_last_four and compact_length <= 4)
    ):
        raise SurrogateShapeError(request.field_class)
    format_name = request.options.get("format")
    module = None
    if format_name is not None:
        module = _format_module(format_name)
        if module is None:
            raise ValueError(f"unknown national id format {format_name!r}")
        if not _accepts(module, value):
            raise SurrogateShapeError(request.field_class)

    positions = [index for index, char in enumerate(value) if _is_ascii_alnum(char)]
    original = "".join(value[index] for index in positions)
    kept = set(positions[-4:]) if request.keep_last_four else set()
    prefix = _FIXED_PREFIXES.get(format_name or "", "")
    if original.upper().startswith(prefix):
        kept.update(positions[: len(prefix)])
    original_compact = original if module is None else _compact(module, value)

    def make() -> str | None:
        candidate = "".join(
            char if index in kept or not _is_ascii_alnum(char) else _random_like(char)
            for index, char in enumerate(value)
        )
        if module is None:
            same = "".join(char for char in candidate if _is_ascii_alnum(char)) == original
            return None if same else candidate
        if not _accepts(module, candidate) or _compact(module, candidate) == original_compact:
            return None
        return candidate

    return _draw(request, make)


# -- ip_address -----------------------------------------------------------------------------------

# RFC 5737 documentation networks; hosts .1 to .254, so no surrogate looks like a network or
# broadcast address.
_IPV4_DOCUMENTATION: Final = tuple(
    ipaddress.IPv4Network(network)
    for network in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
_IPV4_RESERVED: Final = ipaddress.IPv4Network("240.0.0.0/4")  # RFC 1112 "future use"
_IPV6_DOCUMENTATION: Final = ipaddress.IPv6Network("2001:db8::/32")  # RFC 3849


def _ip_address(request: _Request) -> str:
    """IPv4: a documentation address (RFC 5737), or from attempt 8 one in 240.0.0.0/4; IPv6: one
    in 2001:db8::/32 (RFC 3849). Formatted as ``ipaddress`` does.

    The documentation ranges hold 762 usable addresses, too few for a large tenant, hence the
    widening to 240.0.0.0/4 (2^28 addresses, less 255.255.255.255, the limited broadcast).
    """
    value = request.value
    original = _attempt(lambda: ipaddress.ip_address(value), (ValueError,))
    if original is None:
        raise SurrogateShapeError(request.field_class)

    def make() -> str | None:
        candidate: ipaddress.IPv4Address | ipaddress.IPv6Address
        if original.version == 6:
            base = int(_IPV6_DOCUMENTATION.network_address)
            candidate = ipaddress.IPv6Address(base + secrets.randbits(128 - 32))
        elif request.attempt >= _WIDEN_AT:
            base = int(_IPV4_RESERVED.network_address)
            candidate = ipaddress.IPv4Address(base + secrets.randbelow(2**28 - 1))
        else:
            network = secrets.choice(_IPV4_DOCUMENTATION)
            candidate = network.network_address + 1 + secrets.randbelow(254)
        return None if candidate == original else str(candidate)

    return _draw(request, make)


# -- any other class: character by character ------------------------------------------------------


def _letters(first: int, last: int, *, skip: str = "") -> str:
    return "".join(chr(code) for code in range(first, last + 1) if chr(code) not in skip)


# Replacement letters per (first word of the Unicode name, upper case). Basic letters only:
# no final forms (Greek ς, Hebrew ך), no tatweel, nothing NFC would change.
_ALPHABETS: Final[Mapping[tuple[str, bool], str]] = MappingProxyType(
    {
        ("LATIN", True): string.ascii_uppercase,
        ("LATIN", False): string.ascii_lowercase,
        ("GREEK", True): _letters(0x391, 0x3A9, skip="\u03a2"),
        ("GREEK", False): _letters(0x3B1, 0x3C9, skip="\u03c2"),
        ("CYRILLIC", True): _letters(0x410, 0x42F),
        ("CYRILLIC", False): _letters(0x430, 0x44F),
        ("HEBREW", False): _letters(0x5D0, 0x5EA, skip="\u05da\u05dd\u05df\u05e3\u05e5"),
        ("ARABIC", False): _letters(0x628, 0x63A, skip="\u0629") + _letters(0x641, 0x64A),
        ("DEVANAGARI", False): _letters(0x915, 0x939),
        ("THAI", False): _letters(0xE01, 0xE2E),
        ("HIRAGANA", False): _letters(
            0x3042, 0x3093, skip="\u3043\u3045\u3047\u3049\u3063\u3083\u3085\u3087\u308e"
        ),
        ("KATAKANA", False): _letters(
            0x30A2, 0x30F3, skip="\u30a3\u30a5\u30a7\u30a9\u30c3\u30e3\u30e5\u30e7\u30ee"
        ),
        ("CJK", False): _letters(0x4E00, 0x9FA5),  # URO ideographs, assigned since Unicode 1.1
        ("HANGUL", False): _letters(0xAC00, 0xD7A3),  # precomposed syllables, never jamo
    }
)
_REPLACED_LETTERS: Final = frozenset({"Lu", "Ll", "Lt", "Lo"})


def _alphabet(letter: str) -> str:
    """Letters to draw a replacement for ``letter`` from: same script and case where known.

    Scripts not in :data:`_ALPHABETS` (Georgian, Armenian, Ethiopic, ...) fall back to ASCII
    letters of the same case (lower case for caseless letters).
    """
    upper = unicodedata.category(letter) in ("Lu", "Lt")
    script = unicodedata.name(letter, "").split(" ", 1)[0]
    fallback = string.ascii_uppercase if upper else string.ascii_lowercase
    return _ALPHABETS.get((script, upper), _ALPHABETS.get((script, False), fallback))


def _stable_letter(request: _Request, letter: str, marks: str) -> str:
    """A random replacement for ``letter`` that does not compose (NFC) with the ``marks`` after
    it, so that the surrogate of an NFC value is NFC too and keeps its length."""
    alphabet = _alphabet(letter)
    for _ in range(_MAX_LETTER_DRAWS):
        replacement = secrets.choice(alphabet)
        # compared with the marks' own NFC form: marks that NFC changes by themselves (e.g.
        # U+0F71 U+0F72) must not make every letter look as if it composed with them
        if not marks or unicodedata.normalize(
            "NFC", replacement + marks
        ) == replacement + unicodedata.normalize("NFC", marks):
            return replacement
    raise SurrogateUnavailableError(request.field_class)


def _generic(request: _Request) -> str:
    """Letters and decimal digits replaced at random; everything else (spaces, punctuation,
    combining marks, modifier letters such as U+02BC or U+30FC, line breaks) kept in place.

    A letter becomes a letter of the same case and, for the scripts in :data:`_ALPHABETS`, the
    same script; a decimal digit becomes a digit of the same digit set ("٣" stays Arabic-Indic).
    """
    value = request.value
    if not any(_replaced(char) for char in value):
        raise SurrogateShapeError(request.field_class)  # nothing to replace: it would be the value

    def make() -> str | None:
        out: list[str] = []
        for index, char in enumerate(value):
            category = unicodedata.category(char)
            if category in _REPLACED_LETTERS:
                end = index + 1
                while end < len(value) and unicodedata.category(value[end]).startswith("M"):
                    end += 1
                out.append(_stable_letter(request, char, value[index + 1 : end]))
            elif category == "Nd":
                # Unicode encodes every decimal digit set as 0..9 in a contiguous run
                zero = ord(char) - unicodedata.decimal(char)
                out.append(chr(zero + secrets.randbelow(10)))
            else:
                out.append(char)
        candidate = "".join(out)
        return None if candidate == value else candidate

    return _draw(request, make)


def _replaced(char: str) -> bool:
    category = unicodedata.category(char)
    return category in _REPLACED_LETTERS or category == "Nd"


# -- entry point ----------------------------------------------------------------------------------

_GENERATORS: Final[Mapping[str, Callable[[_Request], str]]] = MappingProxyType(
    {
        "card_number": _card_number,
        "phone": _phone,
        "email": _email,
        "date_of_birth": _date_of_birth,
        "iban": _iban,
        "national_id": _national_id,
        "ip_address": _ip_address,
    }
)

#: Classes whose surrogates can keep the last four digits (or characters) of the value.
KEEPS_LAST_FOUR: Final = frozenset({"card_number", "phone", "national_id"})


def surrogate(
    field_class: str,
    value: str,
    *,
    attempt: int = 0,
    keep_last_four: bool = False,
    options: Mapping[str, str] | None = None,
) -> str:
    """A random surrogate of ``value`` with the shape of its class (see the module docstring).

    Args:
        field_class: the value's class, e.g. ``"card_number"``; a class without a generator of
            its own (``name``, ``address``, ``free_text``, any other) is replaced character by
            character.
        value: the canonical value (``vault.schema`` canonical form); for card numbers, phone
            numbers and IBANs the usual raw forms with separators are taken too.
        attempt: 0 for the first try, 1, 2, ... after each collision in the token table; dates,
            IPv4 addresses and short phone numbers draw from a wider space from attempt 8 on.
        keep_last_four: keep the last four digits (characters for national ids); only for the
            classes in :data:`KEEPS_LAST_FOUR`.
        options: the field's class options; ``format`` (a python-stdnum module name such as
            ``"us.ssn"``) is used for national ids, the rest is ignored.

    Returns:
        The surrogate; never equal to ``value``.

    Raises:
        SurrogateShapeError: ``value`` does not have the shape of ``field_class``.
        SurrogateUnavailableError: the national-id format or IBAN country is one that random
            draws cannot meet.
        ValueError: ``attempt`` is negative, ``keep_last_four`` is asked of a class that cannot
            keep it, or the national-id ``format`` names no python-stdnum module.
    """
    if type(attempt) is not int or attempt < 0:
        raise ValueError("attempt must be a non-negative integer")
    if keep_last_four and field_class not in KEEPS_LAST_FOUR:
        raise ValueError(f"keep_last_four is not supported for class {field_class!r}")
    if not isinstance(value, str):
        raise SurrogateShapeError(field_class)
    request = _Request(
        field_class, value, attempt, keep_last_four, MappingProxyType(dict(options or {}))
    )
    return _GENERATORS.get(field_class, _generic)(request)
