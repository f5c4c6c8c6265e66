"""Masks: the ``masked`` output, a fixed and documented part of a canonical value.

Every mask is deterministic and shows nothing beyond its row of this table (same table in
``deploy/policy/README.md``). ``•`` is U+2022. Widths are fixed where they could otherwise
reveal a length. When a value is too short for the shown part to leave enough hidden (or does
not have the canonical shape), the mask shows nothing of it.

=============== ======================================= =================================
class           shows                                   example
=============== ======================================= =================================
email           first character of the local part,      ``a•••@example.com``
                and the domain
phone           last 4 digits (values of >= 8 digits)   ``+••••••••0958``
name            first character of each word            ``A. L.``
address         nothing                                 ``•••``
date_of_birth   the year (``YYYY-MM-DD`` values)        ``1990-••-••``
national_id     last 2 characters (values of >= 6)      ``•••••89``
card_number     last 4 digits (values of >= 12 digits)  ``•••• 1111``
iban            country code and last 4 characters      ``GB•• •••• 5432``
ip_address      first IPv4 octet or first IPv6 group    ``203.•.•.•``, ``2001:••••``
                (values of >= 15 characters)
free_text       the length in characters                ``[redacted, 42 characters]``
=============== ======================================= =================================
"""

from __future__ import annotations

import re
from typing import Final

from vault.schema import FieldClass

BULLET: Final = "\u2022"
#: What a mask shows when it may show nothing of the value.
HIDDEN: Final = BULLET * 3

_DATE_RE: Final = re.compile(r"([0-9]{4})-[0-9]{2}-[0-9]{2}")
_IBAN_COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")


def _ascii_digits(value: str) -> str:
    return "".join(ch for ch in value if "0" <= ch <= "9")


def mask(field_class: FieldClass, canonical_value: str) -> str:
    """The masked form of a canonical value (see the table in this module's docstring).

    Raises:
        ValueError: ``field_class`` is not a :class:`FieldClass`.
    """
    field_class = FieldClass(field_class)
    value = canonical_value
    if field_class is FieldClass.EMAIL:
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain:
            return HIDDEN
        return f"{local[0]}{HIDDEN}@{domain}"
    if field_class is FieldClass.PHONE:
        digits = _ascii_digits(value)
        return f"+{BULLET * 8}{digits[-4:]}" if len(digits) >= 8 else f"+{BULLET * 8}"
    if field_class is FieldClass.NAME:
        words = value.split()
        return " ".join(f"{word[0]}." for word in words) if words else HIDDEN
    if field_class is FieldClass.ADDRESS:
        return HIDDEN
    if field_class is FieldClass.DATE_OF_BIRTH:
        match = _DATE_RE.fullmatch(value)
        year = match.group(1) if match else BULLET * 4
        return f"{year}-{BULLET * 2}-{BULLET * 2}"
    if field_class is FieldClass.NATIONAL_ID:
        return f"{BULLET * 5}{value[-2:]}" if len(value) >= 6 else BULLET * 5
    if field_class is FieldClass.CARD_NUMBER:
        digits = _ascii_digits(value)
        return f"{BULLET * 4} {digits[-4:]}" if len(digits) >= 12 else BULLET * 4
    if field_class is FieldClass.IBAN:
        if len(value) >= 15 and _IBAN_COUNTRY_RE.fullmatch(value[:2]):
            return f"{value[:2]}{BULLET * 2} {BULLET * 4} {value[-4:]}"
        return f"{BULLET * 4} {BULLET * 4}"
    if field_class is FieldClass.IP_ADDRESS:
        if "." in value and ":" not in value:
            return f"{value.split('.')[0]}.{BULLET}.{BULLET}.{BULLET}"
        return f"{value.split(':')[0]}:{BULLET * 4}"
    if field_class is FieldClass.FREE_TEXT:
        count = len(value)
        return f"[redacted, {count} character{'' if count == 1 else 's'}]"
    raise AssertionError(f"no mask for {field_class}")  # pragma: no cover - every class above
