"""The form of a value that deterministic tokens and value fingerprints are keyed on, shared by
every path that makes them (Tokenize, tokenized record views, TokenizeText, erasure), so that the
same value gives the same token (and fingerprint) whichever way it came in."""

from __future__ import annotations

import re
from typing import Final

from vault import crypto
from vault.errors import InvalidInput
from vault.schema import (
    DEFAULT_MAX_LENGTH,
    FieldClass,
    FieldSpec,
    canonicalize,
    index_form_of_canonical,
)


class _Unknown:
    """Marks an argument the caller did not give (None is a meaningful value there)."""


UNKNOWN: Final = _Unknown()

#: a plain ASCII email (any case, no IDNA label): its search form, when it is valid, is its
#: lower-case spelling, so its fingerprint needs no parser
PLAIN_EMAIL: Final = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.IGNORECASE
)

_SPECS = {c: FieldSpec(f"token_{c.value}", c, True, DEFAULT_MAX_LENGTH[c], {}) for c in FieldClass}


def class_spec(field_class: FieldClass) -> FieldSpec:
    """The class's default field spec (no options, the class's default length limit)."""
    return _SPECS[field_class]


def canonical_or_none(field_class: FieldClass, value: str) -> str | None:
    """The value's canonical form for its class, or None when it is not valid for it."""
    try:
        return canonicalize(_SPECS[field_class], value)
    except InvalidInput:
        return None


def deterministic_form(
    field_class: FieldClass, value: str, canonical: str | _Unknown | None = UNKNOWN
) -> bytes:
    """The class's search form (e.g. an email compared case-insensitively, a phone number in
    E.164) when the value is valid for the class; else the exact UTF-8 bytes, so values that
    do not validate never collide with each other.

    ``canonical``: the value's canonical form when the caller already has it (None: it is not
    valid); left out, it is computed here."""
    if isinstance(canonical, _Unknown):
        canonical = canonical_or_none(field_class, value)
    if canonical is None:
        return value.encode("utf-8")
    return index_form_of_canonical(_SPECS[field_class], canonical)


def fingerprint(
    index_key: bytes,
    field_class: FieldClass,
    value: str,
    canonical: str | _Unknown | None = UNKNOWN,
) -> bytes:
    """The value's fingerprint (``crypto.value_fingerprint``) under one index key: keyed on
    the same form as deterministic tokens (the class's search form when the value is valid for
    the class, else the exact string), so every token of a value, whatever its kind or scope
    and whether it came from Tokenize or from free text, carries the fingerprint that the
    record's stored value gives at erasure."""
    if (
        field_class is FieldClass.EMAIL
        and isinstance(canonical, _Unknown)
        and "xn--" not in value
        and PLAIN_EMAIL.fullmatch(value)
    ):
        # plain ASCII: when the parser accepts it, its search form is its lower-case spelling
        # (the parser only lower-cases the domain; the search form case-folds the rest), so
        # the parser (most of a random token's cost) is skipped. When the parser would refuse
        # it, the lower-case spelling still stands for it: no stored record value (always
        # valid) has that form, so erasure reaches it only through a valid value of the same
        # spelling, which is the same address.
        form = value.lower().encode("ascii")
    else:
        form = deterministic_form(field_class, value, canonical)
    return crypto.value_fingerprint(index_key, field_class.value, form)
