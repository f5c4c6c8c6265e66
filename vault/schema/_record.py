"""The record schema: which fields a record may have, and how each is validated and searched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vault.errors import InvalidInput
from vault.schema import _validate
from vault.schema._model import FIELD_NAME_RE, FieldClass, FieldSpec

#: Stands in for a field name that is not even a well-formed one: such a name came from a caller,
#: could hold anything (a value pasted in the wrong place), and is not echoed.
UNPRINTABLE_FIELD = "<invalid field name>"


def _field_label(name: object) -> str:
    return name if isinstance(name, str) and FIELD_NAME_RE.fullmatch(name) else UNPRINTABLE_FIELD


@dataclass(frozen=True)
class RecordSchema:
    """A versioned record schema, usually made by :func:`vault.schema.load_schema`.

    Attributes:
        version: ``schema_version`` of the file, an integer >= 1.
        fields: field name -> :class:`FieldSpec`; read-only.
        source: where the schema came from (a file path, or ``vault/schema/default.yaml`` for the
            packaged default), for error messages.

    Raises:
        ValueError: at construction, for a version < 1, no fields, a key that is not its spec's
            name, or invalid class options (the loader reports these as ``ConfigError`` first).
    """

    version: int
    fields: Mapping[str, FieldSpec] = field(hash=False)
    source: str
    #: retention (``cvault records purge --expired``): whole records not updated for this many
    #: days are crypto-shredded; None keeps them
    record_retention_days: int | None = None
    #: per field class: that class's values of records not updated for this many days are
    #: crypto-shredded (the record lives on without them)
    class_retention_days: Mapping[FieldClass, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version < 1:
            raise ValueError("schema version must be an integer >= 1")
        fields = dict(self.fields)
        if not fields:
            raise ValueError("a schema needs at least one field")
        for name, spec in fields.items():
            if not isinstance(spec, FieldSpec) or name != spec.name:
                raise ValueError(f"fields[{name!r}] must be a FieldSpec named {name!r}")
            problem = _validate.spec_problem(spec)
            if problem is not None:
                raise ValueError(f"field {name!r}: {problem}")
        object.__setattr__(self, "fields", MappingProxyType(fields))
        object.__setattr__(
            self, "class_retention_days", MappingProxyType(dict(self.class_retention_days))
        )
        days = [self.record_retention_days, *self.class_retention_days.values()]
        if any(d is not None and (type(d) is not int or d < 1) for d in days):
            raise ValueError("retention periods must be whole days >= 1")

    def spec(self, name: str) -> FieldSpec:
        """The spec of field ``name``.

        Raises:
            InvalidInput: ``(name, "unknown field")``; a name that is not well-formed
                (``^[a-z][a-z0-9_]{0,62}$``) is reported as ``"<invalid field name>"``.
        """
        spec = self.fields.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidInput(_field_label(name), _validate.UNKNOWN_FIELD) from None
        return spec

    def validate(self, values: Mapping[str, str]) -> dict[str, str]:
        """Validate every value and return the canonical forms, under the same keys.

        Fields are checked in sorted name order; the first bad one is reported. Fields of the
        schema that are missing from ``values`` are not an error (records may be partial).

        Raises:
            InvalidInput: for an unknown field or an invalid value, naming the field and never
                the value, with no exception chained.
        """
        for name in values:
            if not isinstance(name, str):
                raise InvalidInput(UNPRINTABLE_FIELD, _validate.UNKNOWN_FIELD) from None
        canonical = {
            name: _validate.canonicalize(self.spec(name), values[name]) for name in sorted(values)
        }
        return {name: canonical[name] for name in values}

    def index_form(self, name: str, canonical_value: str, *, trusted: bool = False) -> bytes:
        """Normalized bytes for the blind index and deterministic tokens of field ``name``.

        Equal for values a user would call equal: email compared case-insensitively, phone in
        E.164, card number / IBAN / national id compact and upper case, names, addresses and free
        text casefolded with runs of whitespace collapsed to one space, all NFC. The value is
        canonicalized first (a no-op on the output of :meth:`validate`), so a search term typed
        in any accepted format finds the stored value.

        Raises:
            InvalidInput: for an unknown field or a value the field would not accept.

        ``trusted=True`` skips canonicalization for a value that came out of :meth:`validate`
        (the write path), which halves the validation cost of searchable fields.
        """
        spec = self.spec(name)
        if trusted:
            return _validate.index_form_of_canonical(spec, canonical_value)
        return _validate.index_form(spec, canonical_value)

    @property
    def field_classes(self) -> frozenset[FieldClass]:
        """The classes used by at least one field (each needs its field key)."""
        return frozenset(spec.field_class for spec in self.fields.values())
