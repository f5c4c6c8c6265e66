"""Field classes, per-class defaults and the immutable description of one schema field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class FieldClass(StrEnum):
    """A kind of sensitive value; one transit key (KEK) per class on the key server."""

    EMAIL = "email"
    PHONE = "phone"
    NAME = "name"
    ADDRESS = "address"
    DATE_OF_BIRTH = "date_of_birth"
    NATIONAL_ID = "national_id"
    CARD_NUMBER = "card_number"
    IBAN = "iban"
    FREE_TEXT = "free_text"
    IP_ADDRESS = "ip_address"


#: Default maximum length of a value, in characters (code points), per class. A field may override
#: it with ``max_length`` (1..MAX_LENGTH_LIMIT). Keep in step with README.md in this package.
DEFAULT_MAX_LENGTH: Mapping[FieldClass, int] = MappingProxyType(
    {
        FieldClass.EMAIL: 254,  # RFC 5321 path limit; email-validator enforces it too
        FieldClass.PHONE: 32,
        FieldClass.NAME: 256,
        FieldClass.ADDRESS: 1024,
        FieldClass.DATE_OF_BIRTH: 10,  # exactly YYYY-MM-DD
        FieldClass.NATIONAL_ID: 32,
        FieldClass.CARD_NUMBER: 32,  # 19 digits plus separators
        FieldClass.IBAN: 42,  # 34 characters plus the spaces of the print form
        FieldClass.FREE_TEXT: 4096,
        FieldClass.IP_ADDRESS: 45,  # an IPv6 address with an embedded IPv4 address
    }
)

#: Upper bound for any ``max_length`` in a schema file.
MAX_LENGTH_LIMIT = 65536

#: Field names as used in records and schema files.
FIELD_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")

#: Class-specific option keys a schema file may set per field (besides class, searchable,
#: max_length).
CLASS_OPTIONS: Mapping[FieldClass, frozenset[str]] = MappingProxyType(
    {
        FieldClass.PHONE: frozenset({"default_region"}),
        FieldClass.NATIONAL_ID: frozenset({"format"}),
    }
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a record schema.

    Attributes:
        name: field name as used in records, e.g. ``"email"``, ``"mobile"``.
        field_class: the kind of value; selects validation, normalization and the field key.
        searchable: whether exact-match search through a blind index is offered.
        max_length: maximum number of characters of a value (raw and canonical).
        options: class-specific options, e.g. ``{"default_region": "GB"}`` for a phone field or
            ``{"format": "us.ssn"}`` for a national id. Read-only.
    """

    name: str
    field_class: FieldClass
    searchable: bool
    max_length: int
    # excluded from the hash so a FieldSpec stays hashable with a read-only mapping here
    options: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        # A read-only snapshot: a caller's dict changed later must not change the schema.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if not FIELD_NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid field name {self.name!r}")
        if not isinstance(self.field_class, FieldClass):
            raise TypeError("field_class must be a FieldClass")
        if type(self.max_length) is not int or not 1 <= self.max_length <= MAX_LENGTH_LIMIT:
            raise ValueError(f"max_length must be an integer in 1..{MAX_LENGTH_LIMIT}")
