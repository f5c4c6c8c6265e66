"""One Tokenize call's items, validated into lists (no object per item): their classes, kinds
and canonical forms, or ``InvalidInput`` naming ``items[i].<field>`` (values never echoed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

from vault.crypto import KEEPS_LAST_FOUR
from vault.errors import InvalidInput
from vault.schema import DEFAULT_MAX_LENGTH, FieldClass, canonicalize
from vault.service._normal import canonical_or_none, class_spec
from vault.service._token_types import FPE_CLASSES, TokenizeItem, TokenKind, check_ttl
from vault.service.validators import check_record_id, check_scope

# The kinds as the rows store them (plain strings), from the members and their values alike;
# the enum's ``.value`` is a descriptor call, and this runs once per item.
RANDOM, DETERMINISTIC, FPE = "random", "deterministic", "format_preserving"
_KINDS: Final[dict[object, str]] = {
    TokenKind.RANDOM: RANDOM,
    TokenKind.DETERMINISTIC: DETERMINISTIC,
    TokenKind.FORMAT_PRESERVING: FPE,
}
#: field classes by name (a member is its own name: StrEnum), and each class's plain name
_CLASSES: Final[dict[str, FieldClass]] = {c.value: c for c in FieldClass}
NAME: Final[dict[FieldClass, str]] = {c: c.value for c in FieldClass}
_LIMIT: Final[dict[FieldClass, int]] = {c: DEFAULT_MAX_LENGTH[c] for c in FieldClass}


class Batch:
    """The items of one Tokenize call, validated: per item (by position, in lists: no object
    per item) its class, kind and canonical form, and which items take the slower paths."""

    __slots__ = ("canonical", "class_names", "classes", "det", "fpe", "items", "kinds", "linked")

    def __init__(self, items: Sequence[TokenizeItem]) -> None:
        self.items = items
        self.classes: list[FieldClass] = []
        self.kinds: list[str] = []
        #: the validated canonical form; None for free text that has none, and for ``exact``
        #: items (not validated: their fingerprint computes it when the value parses)
        self.canonical: list[str | None] = []
        self.det: list[int] = []  # positions of deterministic items
        self.fpe: list[int] = []  # ... and of format-preserving ones
        self.linked = False  # any item names a record
        self.class_names: set[str] = set()

    def pool_counts(self) -> dict[str, int]:
        """Values of each class sealed under the tenant's pool (those naming no record)."""
        if not self.linked:
            return dict(Counter(NAME[c] for c in self.classes))
        return dict(
            Counter(
                NAME[c]
                for c, item in zip(self.classes, self.items, strict=True)
                if not item.record_id
            )
        )


def prepare(items: Sequence[TokenizeItem], max_items: int) -> Batch:
    """Every item validated, or InvalidInput naming ``items[i].<field>`` (values never
    echoed)."""
    if not items:
        raise InvalidInput("items", "at least one item is required")
    if len(items) > max_items:
        raise InvalidInput("items", f"at most {max_items} items per call")
    batch = Batch(items)
    classes, kinds, canonical = batch.classes, batch.kinds, batch.canonical
    scopes: set[str] = {""}  # those already checked
    for i, item in enumerate(items):
        field_class = _CLASSES.get(item.field_class) if isinstance(item.field_class, str) else None
        if field_class is None:
            raise InvalidInput(f"items[{i}].field_class", "unknown field class")
        value = item.value
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"items[{i}].value", "must be a non-empty string")
        limit = _LIMIT[field_class]
        if len(value) > limit:
            raise InvalidInput(f"items[{i}].value", f"longer than {limit} characters")
        if not value.isascii():
            _check_unicode(i, value)
        if item.scope not in scopes:
            scopes.add(check_scope(item.scope, f"items[{i}].scope"))
        if item.ttl_seconds:
            check_ttl(item.ttl_seconds, f"items[{i}].ttl_seconds")
        if item.record_id:
            check_record_id(item.record_id, f"items[{i}].record_id")
            batch.linked = True
        kind = _KINDS.get(item.kind)
        if kind is DETERMINISTIC:
            batch.det.append(i)
        elif kind is FPE:
            _check_surrogate_item(i, item, field_class)
            batch.fpe.append(i)
        elif kind is None:
            raise InvalidInput(f"items[{i}].kind", "unknown token kind")
        # Spans found in free text (exact, from TokenizeText) are tokenized as found: a
        # detector also takes what the class's validator would not (a phone number that is
        # only possible, a date written 03/29/1972: 833 of the 9,058 spans of the text
        # corpus), and refusing one would fail the whole call. Their canonical form is left to
        # the fingerprint.
        form = None if item.exact else _validated(i, field_class, value)
        if kind is FPE and form is None:
            raise InvalidInput(f"items[{i}].value", f"not a valid {NAME[field_class]}")
        classes.append(field_class)
        kinds.append(kind)
        canonical.append(form)
    batch.class_names = {NAME[c] for c in set(classes)}
    return batch


def _check_unicode(i: int, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"items[{i}].value", "is not valid unicode") from None


def _validated(i: int, field_class: FieldClass, value: str) -> str | None:
    """The value's canonical form, validated as a record field of its class is (the same
    validator): every kind of token, so ``phone="hello"`` is refused. Free text is not
    validated (None when it has no canonical form, e.g. control characters).

    The canonical form is what deterministic tokens, surrogates and every fingerprint are made
    of, so validating costs a random batch nothing more, except for plain ASCII emails (whose
    fingerprint alone could skip the parser).

    Raises:
        InvalidInput: naming ``items[i].value``, with the validator's problem (never the value).
    """
    if field_class is FieldClass.FREE_TEXT:
        return canonical_or_none(field_class, value)
    try:
        return canonicalize(class_spec(field_class), value)
    except InvalidInput as exc:
        problem = exc.problem
    # raised outside the except block: nothing chained (the validators' own rule)
    raise InvalidInput(f"items[{i}].value", problem)


def _check_surrogate_item(i: int, item: TokenizeItem, field_class: FieldClass) -> None:
    """The class and options of a format-preserving item (its value is validated after)."""
    if field_class not in FPE_CLASSES:
        raise InvalidInput(
            f"items[{i}].kind", f"no format-preserving tokens for {NAME[field_class]}"
        )
    if item.keep_last_four and NAME[field_class] not in KEEPS_LAST_FOUR:
        raise InvalidInput(
            f"items[{i}].keep_last_four",
            f"format-preserving {NAME[field_class]} tokens keep no last four",
        )
