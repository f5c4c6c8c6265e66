"""The form of a value that deterministic tokens are keyed on, shared by every path that makes
them (Tokenize, tokenized record views, TokenizeText), so that the same value gives the same
token whichever way it came in."""

from __future__ import annotations

from typing import Final

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
