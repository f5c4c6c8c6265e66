"""Pattern-and-checksum detectors for emails, phones, card numbers, IBANs, national ids and IPs.

Each detector finds candidates with a precompiled regular expression (cheap, runs in C) and
confirms each one with a validator (email-validator, phonenumbers, python-stdnum, ipaddress), so
that a detection means "has the shape *and* passes the check a real value passes". Library
exceptions are caught narrowly and dropped: their messages echo the input, and a detector error
must never carry text into a log line or traceback.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from stdnum import ean as stdnum_ean
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.ca import sin as stdnum_ca_sin
from stdnum.es import dni as stdnum_es_dni
from stdnum.us import ssn as stdnum_us_ssn

from vault.text._span import CARD_NUMBER, EMAIL, IBAN, IP_ADDRESS, NATIONAL_ID, PHONE, Span

# A label such as "order #", "tracking no.", "invoice:", "my order number is" right before a
# number says it identifies something other than a person, as does being glued to a code
# ("ORD-2023-816149"). Phone and card candidates there are dropped: a 10-digit order number is
# often a valid North-American number, and a 15-digit tracking number passes Luhn one time in
# ten. The keywords cover the languages of the corpus (en, de, fr, es, it, nl).
_ID_KEYWORDS: Final = (
    "order|invoice|inv|ticket|case|ref|reference|tracking|waybill|awb|confirmation|transaction"
    "|txn|receipt|booking|reservation|shipment|parcel|package|serial|sku|item|po|rma|claim"
    "|policy|member(?:ship)?|loyalty|account|acct|voucher|coupon|batch|lot|build|isbn|ean|upc"
    "|bestellung|bestellnummer|rechnung|sendung|sendungsnummer|referenz|kundennummer"
    "|commande|facture|suivi|colis|r[ée]f[ée]rence"
    "|pedido|factura|seguimiento|env[íi]o|referencia"
    "|ordine|fattura|spedizione|riferimento"
    "|bestelling|factuur|zending|referentie"
)
_ID_LABEL_BEFORE: Final = re.compile(
    rf"(?:\#|\b(?:{_ID_KEYWORDS})(?:[ \t]*(?:no\.?|nr\.?|n[º°o]\.?|num(?:ber|ero|éro)?\.?|id|\#))?"
    r"(?:[ \t]+(?:is|was|=))?)[ \t]*[:.\#-]?[ \t]*\Z"
    r"|[^\W_][-_/]\Z",
    re.IGNORECASE,
)
_LABEL_WINDOW: Final = 40
_URL_WINDOW: Final = 256
_URL_START: Final = re.compile(r"://|\bwww\.", re.IGNORECASE)
_SPACE_BEFORE: Final = re.compile(r"\s")


def _labelled_as_other_id(text: str, start: int) -> bool:
    return _ID_LABEL_BEFORE.search(text, max(0, start - _LABEL_WINDOW), start) is not None


def _inside_url(text: str, start: int) -> bool:
    """Whether ``start`` is inside a URL (after ``://`` or ``www.`` with no space between):
    digits in a path or query string are ids, not phone or card numbers."""
    floor = max(0, start - _URL_WINDOW)
    word_start = floor
    for space in _SPACE_BEFORE.finditer(text, floor, start):
        word_start = space.end()
    return _URL_START.search(text, word_start, start) is not None


class _PatternDetector:
    """Shared attributes of the single-class detectors below."""

    name: str
    field_class: str

    @property
    def field_classes(self) -> frozenset[str]:
        return frozenset({self.field_class})

    def _span(self, start: int, end: int) -> Span:
        return Span(start, end, self.field_class, self.name)


# -- email ----------------------------------------------------------------------------------------

# Local part: dot-atoms of letters, digits and the common specials (no quoted forms, which do
# not occur in chat text). Domain: labels of letters, digits and inner hyphens, ending in an
# alphabetic TLD; a trailing "." or "-" (end of sentence, dash) is not part of the address.
# Both are matched outward from each "@" over a bounded window (64 and 255 characters, the
# RFC 5321 limits), so a long run of dotted words costs linear time, not quadratic.
_ALNUM: Final = r"[^\W_]"
_LABEL: Final = rf"{_ALNUM}(?:(?:{_ALNUM}|-){{0,61}}{_ALNUM})?"
_LOCAL_CHAR: Final = re.compile(r"[\w%+\-]")
_LOCAL_BEFORE_AT: Final = re.compile(r"[\w%+\-]+(?:\.[\w%+\-]+)*\Z")
_DOMAIN_AFTER_AT: Final = re.compile(rf"(?:{_LABEL}\.)+[^\W\d_]{{2,63}}(?![\w\-]|\.{_ALNUM})")
_LOCAL_MAX: Final = 64


class EmailDetector(_PatternDetector):
    """Email addresses in running text, confirmed by email-validator (syntax only, no DNS)."""

    name = "email"
    field_class = EMAIL

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        at = text.find("@")
        while at != -1:
            local = _LOCAL_BEFORE_AT.search(text, max(0, at - _LOCAL_MAX), at)
            domain = _DOMAIN_AFTER_AT.match(text, at + 1) if local is not None else None
            if (
                local is not None
                and domain is not None
                # a local part cut by the window is longer than 64 characters: not an address
                and (local.start() == 0 or not _LOCAL_CHAR.match(text, local.start() - 1))
                and _is_email(text[local.start() : domain.end()])
            ):
                spans.append(self._span(local.start(), domain.end()))
                at = text.find("@", domain.end())
            else:
                at = text.find("@", at + 1)
        return spans


def _is_email(candidate: str) -> bool:
    local, _, domain = candidate.rpartition("@")
    if domain.rpartition(".")[2].lower() in SPECIAL_USE_DOMAIN_NAMES:
        # email-validator refuses "corp.local" and "shop.test" outright, yet such an address
        # still names a person's mailbox: check the local part alone (the regex checked the
        # domain's syntax).
        candidate = f"{local}@example.com"
    try:
        validate_email(candidate, check_deliverability=False)
    except (EmailNotValidError, ValueError):  # ValueError: idna's UnicodeError subclasses
        return False
    return True


# -- phone ----------------------------------------------------------------------------------------

_PHONE_SEPARATORS: Final = "\\s().\\-/\u2010-\u2015\u2212\u30fc\uff0d"
# At least six digits (the shortest valid international numbers) with short separator runs
# between them. Only texts with such a run reach phonenumbers, and only windows around it.
_PHONE_HINT: Final = re.compile(rf"\d(?:[{_PHONE_SEPARATORS}]{{0,4}}\d){{5,}}")
_PHONE_RUN_CHAR: Final = re.compile(rf"[\d{_PHONE_SEPARATORS}+\uff0b\[\]]")
# Context kept around a hint: before it, PhoneNumberMatcher looks at one character (a letter
# or currency sign there rejects a match) and at a leading "+" or "("; after it, at an
# extension ("ext. 1234") and at a time that would make it a timestamp.
_PHONE_CONTEXT_BEFORE: Final = 8
_PHONE_CONTEXT_AFTER: Final = 24
_PHONE_RUN_LIMIT: Final = 64
_CLOSING: Final = {"(": ")", "[": "]"}
# Four or more dot-separated groups (an IPv4 address, a version such as "121.0.6261.94") or a
# day-month-year date: never a phone number as people write one.
_NOT_A_PHONE: Final = re.compile(
    r"\d+(?:\.\d+){3,}|[0-3]?\d([./-])[01]?\d\1(?:19|20)\d\d|(?:19|20)\d\d([./-])[01]?\d\2[0-3]?\d"
)
_LENIENCIES: Final = frozenset(
    {
        phonenumbers.Leniency.POSSIBLE,
        phonenumbers.Leniency.VALID,
        phonenumbers.Leniency.STRICT_GROUPING,
        phonenumbers.Leniency.EXACT_GROUPING,
    }
)


#: Regions whose national phone formats the default detectors try besides the call's own.
DEFAULT_PHONE_REGIONS: Final = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "AU", "IN")


class PhoneDetector(_PatternDetector):
    """Phone numbers found by libphonenumber's ``PhoneNumberMatcher``.

    ``leniency`` defaults to VALID: the number must be valid for its region (a real range of
    numbers), not merely of a possible length. POSSIBLE also flags order numbers, tracking-number
    fragments and timestamps (``10123456784``, ``1710254400``), which costs too much precision in
    support text. Numbers written in national format are read in ``default_region``; numbers from
    elsewhere are found when written in international format (``+44 20 7946 0958``).
    """

    name = "phone"
    field_class = PHONE

    def __init__(
        self,
        default_region: str = "US",
        *,
        leniency: int = phonenumbers.Leniency.VALID,
        regions: Sequence[str] = (),
    ) -> None:
        """
        Args:
            default_region: region code for numbers written without a country code.
            leniency: a ``phonenumbers.Leniency`` value.
            regions: more regions whose national formats are tried (valid numbers only, or
                possible ones after a cue word such as "phone:"); with any, international
                numbers (``+`` or ``00``) that are merely possible are taken too.

        Raises:
            ValueError: a region is not one libphonenumber knows, or
                ``leniency`` is not a ``phonenumbers.Leniency`` value.
        """
        region = _region(default_region)
        if leniency not in _LENIENCIES:
            raise ValueError("leniency must be a phonenumbers.Leniency value")
        self.default_region: Final = region
        self.leniency: Final = leniency
        extra = [_region(r) for r in regions]
        self.regions: Final = tuple(dict.fromkeys(r for r in [region, *extra] if extra))

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for window_start, window_end in _phone_windows(text):
            window = text[window_start:window_end]
            matcher = phonenumbers.PhoneNumberMatcher(
                window, self.default_region, leniency=self.leniency
            )
            for match in matcher:
                start, end = window_start + match.start, window_start + match.end
                raw = match.raw_string
                # the matcher keeps the "(" of "(+44 20 7946 0958)" but not the ")"
                if raw[0] in "([" and raw.count(raw[0]) > raw.count(_CLOSING[raw[0]]):
                    start += 1
                if (
                    _NOT_A_PHONE.fullmatch(raw)
                    or _labelled_as_other_id(text, start)
                    or _inside_url(text, start)
                ):
                    continue
                spans.append(self._span(start, end))
        if self.regions:
            spans.extend(self._more(text, spans))
        return spans

    def _more(self, text: str, found: list[Span]) -> list[Span]:
        """Numbers the matcher missed: national formats of the other regions, and possible
        (not only valid) numbers in international form or after a phone cue word."""
        taken = _Taken(found)
        spans: list[Span] = []
        for match in _PHONE_CANDIDATE.finditer(text):
            start, end = match.span()
            raw = match.group()
            if (
                taken.overlaps(start, end)
                or not 7 <= sum(c.isdigit() for c in raw) <= 15
                or _NOT_A_PHONE.fullmatch(raw)
                or _labelled_as_other_id(text, start)
                or _inside_url(text, start)
            ):
                continue
            cued = _PHONE_CUE.search(text, max(0, start - _LABEL_WINDOW), start) is not None
            if _is_phone(raw, self.regions, cued=cued):
                spans.append(self._span(start, end))
        return spans


class _Taken:
    """Spans already found, asked whether a candidate overlaps one of them in O(log n): a
    text can hold thousands of each (comparing every pair took 1.4 s for a 64 KiB text)."""

    def __init__(self, spans: Iterable[Span]) -> None:
        ordered = sorted(spans, key=lambda s: s.end)
        self._ends = [s.end for s in ordered]
        # the smallest start among the spans from i on (by end)
        self._min_start = list(accumulate(reversed([s.start for s in ordered]), min))[::-1]

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._ends, start)  # the first span that ends after start
        return i < len(self._ends) and self._min_start[i] < end


def _region(region: object) -> str:
    code = region.upper() if isinstance(region, str) else ""
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("phone regions must be region codes such as 'US' or 'GB'")
    return code


# A run of digits and phone separators, optionally after "+" or "00"; not inside a word, a
# decimal, a date or a longer run.
_PHONE_CANDIDATE: Final = re.compile(
    r"(?<![\w+.,:/-])(?:\+ ?)?(?:\(\d{1,4}\) ?)?\d[\d ().\-/]{4,22}\d(?![\w]|[.,:/-]\d)"
)
_PHONE_CUE: Final = re.compile(
    r"(?i:phone|tel|telephone|mobile|mob|cell|call(?: me)?(?: back)?(?: on| at)?|text|number"
    r"|reach me(?: at| on)?|whatsapp|fax|telefon|handy|mobil|rückruf(?: bitte)?(?: unter)?"
    r"|erreichen sie mich unter|unter|téléphone|portable|joindre au|au|numéro|teléfono|móvil"
    r"|llamarme al|telefono|cellulare|chiamarmi al|telefoon|mobiel|bereiken op)"
    r"[ \t]*[:.]?[ \t]*(?:is[ \t]+)?\Z"
)
_GROUPED: Final = re.compile(r"\d[ ().\-/]+\d")
_DATE: Final = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{2,4}\Z")
# National numbers written without a cue are at most 11 digits with the trunk prefix (UK, India);
# longer grouped runs are tracking and reference numbers.
_NATIONAL_MAX: Final = 11


def _is_phone(raw: str, regions: Sequence[str], *, cued: bool) -> bool:
    """Whether ``raw`` reads as a phone number: an international number of a possible length;
    or, written in groups or after a cue, a national number valid (after a cue: possible) in
    one of ``regions``."""
    digits = _NON_DIGIT.sub("", raw)
    if raw.startswith("+") or digits.startswith("00"):
        number = _parse("+" + digits.removeprefix("00"), "ZZ")
        return number is not None and phonenumbers.is_possible_number(number)
    if not cued and (
        _GROUPED.search(raw) is None
        or "." in raw
        or len(digits) > _NATIONAL_MAX
        or _DATE.match(raw)
    ):
        return False
    for region in regions:
        number = _parse(raw, region)
        if number is None:
            continue
        if phonenumbers.is_valid_number(number):
            return True
        if cued and phonenumbers.is_possible_number(number) and digits.startswith("0"):
            return True
    return False


def _parse(raw: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None


def _phone_windows(text: str) -> list[tuple[int, int]]:
    """Disjoint windows of ``text`` holding every phone-like digit run with its context.

    phonenumbers costs about a millisecond per few hundred characters of text with digits in it;
    running it only on these windows keeps prose between numbers out of it, while the context
    kept around each run makes the matcher see what it would see in the whole text (a test
    checks this on the corpus).
    """
    windows: list[tuple[int, int]] = []
    for hint in _PHONE_HINT.finditer(text):
        start, end = hint.start(), hint.end()
        floor = max(0, start - _PHONE_RUN_LIMIT)
        while start > floor and _PHONE_RUN_CHAR.match(text, start - 1):
            start -= 1
        ceiling = min(len(text), end + _PHONE_RUN_LIMIT)
        while end < ceiling and _PHONE_RUN_CHAR.match(text, end):
            end += 1
        start = max(0, start - _PHONE_CONTEXT_BEFORE)
        end = min(len(text), end + _PHONE_CONTEXT_AFTER)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(end, windows[-1][1]))
        else:
            windows.append((start, end))
    return windows


# -- card numbers ---------------------------------------------------------------------------------

# 13..19 digits, bare or in groups split by single spaces, single dashes or dots (one kind per
# number), or broken over a line. The look-arounds keep it from starting or ending inside a
# longer run of digits or digit groups, a word, or a decimal, date or time ("1234.56", "10:30");
# a date right after the number is fine ("4111 1111 1111 1111 12/27": "12" continues into
# "/27", so it is no group).
_CARD_RE: Final = re.compile(
    r"(?<!\w)(?<!\d[/.,:])(?<!\d[ -])"
    r"(?:\d{13,19}|\d{2,6}(?:(?: ?\r?\n ?| )\d{2,6}){1,8}(?: \d)?"
    r"|\d{2,6}(?:-\r?\n?\d{2,6}){1,8}(?:-\d)?|\d{4}(?:\.\d{4}){2,3}(?:\.\d{1,3})?)"
    r"(?!\w|[/.,:]\d|[ -]\d++(?![/.,:]\d))"
)
_NON_DIGIT: Final = re.compile(r"\D")


class CardNumberDetector(_PatternDetector):
    """Payment card numbers: 13..19 digits, Luhn-valid, not part of a longer digit run."""

    name = "card_number"
    field_class = CARD_NUMBER

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for match in _CARD_RE.finditer(text):
            digits = _NON_DIGIT.sub("", match.group())
            if (
                13 <= len(digits) <= 19
                and digits.isascii()
                and stdnum_luhn.is_valid(digits)
                and not _is_book_number(digits)
                and not _labelled_as_other_id(text, match.start())
                and not _inside_url(text, match.start())
            ):
                spans.append(self._span(match.start(), match.end()))
        return spans


def _is_book_number(digits: str) -> bool:
    """An ISBN-13 / "Bookland" EAN (978/979 prefix, EAN check digit): no card range starts so."""
    return len(digits) == 13 and digits[:3] in ("978", "979") and bool(stdnum_ean.is_valid(digits))


# -- IBAN -----------------------------------------------------------------------------------------

# Country code, check digits, then the BBAN compact or in groups of four split by single spaces
# (the print form), in either case (the checksum and country format keep ids out). The longest
# candidate may swallow a following word ("... 7034 THANKS"), so shorter group boundaries are
# tried too.
_IBAN_RE: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,8}(?: ?[A-Za-z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)
_IBAN_HINT: Final = re.compile(r"[A-Za-z]{2}[0-9]{2}")
_IBAN_MIN_LENGTH: Final = 15  # Norway, the shortest


class IbanDetector(_PatternDetector):
    """IBANs, with or without spaces, validated by python-stdnum (length per country, mod 97,
    and the country's BBAN format)."""

    name = "iban"
    field_class = IBAN

    def find(self, text: str) -> list[Span]:
        if _IBAN_HINT.search(text) is None:
            return []
        spans: list[Span] = []
        for match in _IBAN_RE.finditer(text):
            end = _longest_valid_iban(text, match.start(), match.end())
            if end is not None:
                spans.append(self._span(match.start(), end))
        return spans


def _longest_valid_iban(text: str, start: int, end: int) -> int | None:
    """End of the longest valid IBAN in ``text[start:end]`` that ends at a word boundary."""
    candidate = text[start:end]
    cuts = [len(candidate)] + [i for i in range(len(candidate) - 1, 0, -1) if candidate[i] == " "]
    for cut in cuts:
        compact = candidate[:cut].replace(" ", "").upper()
        if len(compact) < _IBAN_MIN_LENGTH:
            break
        if stdnum_iban.is_valid(compact):
            return start + cut
    return None


# -- national ids ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NationalIdFormat:
    """One national id format: how it looks in running text and how to check one.

    Attributes:
        name: python-stdnum style name, e.g. ``"us.ssn"``.
        pattern: finds candidates in running text (must not match empty strings).
        is_valid: the checksum / allocation rule applied to each candidate as written.
    """

    name: str
    pattern: re.Pattern[str]
    is_valid: Callable[[str], bool]


def _digits_valid(check: Callable[[str], bool]) -> Callable[[str], bool]:
    """A validator that ignores separators (stdnum's compact() of some modules keeps spaces)."""

    def is_valid(candidate: str) -> bool:
        return bool(check(_NON_DIGIT.sub("", candidate)))

    return is_valid


# UK National Insurance number rules (HMRC NIM39110): two prefix letters, six digits, a suffix
# A-D. python-stdnum has no module for it, so the allocation rules are spelled out here.
_NINO_FIRST_EXCLUDED: Final = frozenset("DFIQUV")
_NINO_SECOND_EXCLUDED: Final = frozenset("DFIOQUV")
_NINO_PREFIX_EXCLUDED: Final = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_NINO_COMPACT: Final = re.compile(r"[A-Z]{2}[0-9]{6}[A-D]")


def is_valid_nino(candidate: str) -> bool:
    """Whether ``candidate`` (spaces allowed) is a UK National Insurance number as allocated."""
    compact = candidate.replace(" ", "").upper()
    if not _NINO_COMPACT.fullmatch(compact):
        return False
    return (
        compact[0] not in _NINO_FIRST_EXCLUDED
        and compact[1] not in _NINO_SECOND_EXCLUDED
        and compact[:2] not in _NINO_PREFIX_EXCLUDED
    )


def _stdnum_valid(check: Callable[[str], object]) -> Callable[[str], bool]:
    def is_valid(candidate: str) -> bool:
        return bool(check(candidate))

    return is_valid


#: Built-in formats by name. ``us.ssn`` is the formatted shape only (``123-45-6789`` or
#: ``123 45 6789``): a bare run of nine digits is as likely an order or account number, so it is
#: only taken when ``NationalIdDetector(bare_ssn=True)`` and an "SSN" label precedes it.
NATIONAL_ID_FORMATS: Final[dict[str, NationalIdFormat]] = {
    f.name: f
    for f in (
        NationalIdFormat(
            "us.ssn",
            re.compile(r"(?<![\w-])[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}(?![\w-]|[.,/:][0-9])"),
            _digits_valid(stdnum_us_ssn.is_valid),
        ),
        NationalIdFormat(
            "gb.nino",
            re.compile(
                r"(?<![A-Za-z0-9])[A-Za-z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-Da-d](?![\w])"
            ),
            is_valid_nino,
        ),
        NationalIdFormat(
            "ca.sin",
            re.compile(r"(?<![\w-])[0-9]{3}([- ])[0-9]{3}\1[0-9]{3}(?![\w-]|[.,/:][0-9])"),
            _digits_valid(stdnum_ca_sin.is_valid),
        ),
        NationalIdFormat(
            "es.dni",
            re.compile(r"(?<![\w-])[0-9]{8}-?[A-Z](?![\w])"),
            _stdnum_valid(stdnum_es_dni.is_valid),
        ),
    )
}
DEFAULT_NATIONAL_ID_FORMATS: Final = ("us.ssn", "gb.nino")

_BARE_SSN: Final = re.compile(r"(?<![\w-])[0-9]{9}(?![\w-]|[.,/:][0-9])")
_SSN_LABEL_BEFORE: Final = re.compile(
    r"\b(?:ssn|ss\#|social[ \t]+security(?:[ \t]+(?:number|no\.?|\#))?)[ \t]*(?:is|:|\#)?[ \t]*\Z",
    re.IGNORECASE,
)


class NationalIdDetector(_PatternDetector):
    """National identity numbers of the configured formats (default US SSN and UK NINO)."""

    name = "national_id"
    field_class = NATIONAL_ID

    def __init__(
        self,
        formats: Iterable[str | NationalIdFormat] = DEFAULT_NATIONAL_ID_FORMATS,
        *,
        bare_ssn: bool = False,
    ) -> None:
        """
        Args:
            formats: names from :data:`NATIONAL_ID_FORMATS` or custom formats.
            bare_ssn: also take nine bare digits as an SSN, but only right after a label such as
                "SSN:" or "social security number".

        Raises:
            ValueError: a format name is unknown.
        """
        resolved: list[NationalIdFormat] = []
        for item in formats:
            if isinstance(item, NationalIdFormat):
                resolved.append(item)
            elif item in NATIONAL_ID_FORMATS:
                resolved.append(NATIONAL_ID_FORMATS[item])
            else:
                known = ", ".join(sorted(NATIONAL_ID_FORMATS))
                raise ValueError(f"unknown national id format {item!r} (known: {known})")
        self.formats: Final[Sequence[NationalIdFormat]] = tuple(resolved)
        self.bare_ssn: Final = bare_ssn

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for id_format in self.formats:
            for match in id_format.pattern.finditer(text):
                if id_format.is_valid(match.group()):
                    spans.append(self._span(match.start(), match.end()))
        if self.bare_ssn:
            for match in _BARE_SSN.finditer(text):
                labelled = _SSN_LABEL_BEFORE.search(
                    text, max(0, match.start() - _LABEL_WINDOW), match.start()
                )
                if labelled is not None and stdnum_us_ssn.is_valid(match.group()):
                    spans.append(self._span(match.start(), match.end()))
        return spans


# -- IP addresses ---------------------------------------------------------------------------------

# Four dotted decimals, not inside a longer dotted run ("1.2.3.4.5", "v1.2.3.4", "10.0.19045.3803"
# fails the octet check); three-part versions and dates never match.
_IPV4_RE: Final = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![\w]|\.[0-9])")
# Hex groups and colons (at least two colons and one hex digit), optionally ending in a dotted
# IPv4 part; ipaddress decides. Times ("10:30:00") and MAC addresses fail that check.
_IPV6_RE: Final = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)(?=:*[0-9A-Fa-f])"
    r"[0-9A-Fa-f:]{2,39}(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?![\w:]|\.[0-9])"
)


# A product token or "rv:" right before four dotted numbers makes them a version, as in user
# agents: "Gecko/20100101", "rv:1.9.2.23", "AcmeShop/3.22.1.64"; "http://10.0.0.1" is an address.
_VERSION_BEFORE: Final = re.compile(
    r"(?:\b(?:rv|ver|version|build|firmware|fw)[ \t]*[:=.]?[ \t]*|[A-Za-z][\w.\-]*/)\Z",
    re.IGNORECASE,
)


class IpAddressDetector(_PatternDetector):
    """IPv4 and IPv6 addresses, validated by the ``ipaddress`` module."""

    name = "ip_address"
    field_class = IP_ADDRESS

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        if text.count(":") >= 2:
            for match in _IPV6_RE.finditer(text):
                candidate, end = match.group(), match.end()
                # "… from 2001:db8::1: refused": the colon ends the sentence, not the address
                if candidate.endswith(":") and not candidate.endswith("::"):
                    candidate, end = candidate[:-1], end - 1
                if _is_ip(ipaddress.IPv6Address, candidate):
                    spans.append(self._span(match.start(), end))
        if "." in text:
            v6_ends = {span.end for span in spans}  # to skip the tail of "::ffff:192.0.2.1"
            for match in _IPV4_RE.finditer(text):
                version = _VERSION_BEFORE.search(
                    text, max(0, match.start() - _LABEL_WINDOW), match.start()
                )
                if (
                    version is None
                    and match.end() not in v6_ends
                    and _is_ip(ipaddress.IPv4Address, match.group())
                ):
                    spans.append(self._span(match.start(), match.end()))
        return spans


def _is_ip(parse: Callable[[str], object], candidate: str) -> bool:
    try:
        parse(candidate)
    except ValueError:
        return False
    return True
