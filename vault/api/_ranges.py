"""The range check every request gets at the API edge: 64-bit integers the database can hold.

Protobuf's int64 reaches 2**63-1, which is also the largest integer SQLite and PostgreSQL's
``bigint`` store, so a version compared or incremented in SQL (``expected_version + 1``)
overflowed in the driver and surfaced as INTERNAL. Every 64-bit integer field of a request is
checked here, from the descriptors, so a field added later is covered too.
"""

from __future__ import annotations

import functools

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from vault.errors import InvalidInput

#: the largest magnitude a request's 64-bit integer may have: one increment must still fit
MAX_INT64 = 2**63 - 2

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)


@functools.cache
def _has_int64(descriptor: Descriptor) -> bool:
    """Whether a message of this type can hold a 64-bit integer anywhere (most cannot: they are
    skipped at the cost of one cached lookup)."""
    seen: set[str] = set()
    todo = [descriptor]
    while todo:
        d = todo.pop()
        if d.full_name in seen:
            continue
        seen.add(d.full_name)
        for f in d.fields:
            if f.type in _INT64_TYPES:
                return True
            if f.message_type is not None:
                todo.append(f.message_type)
    return False


def check_int64_ranges(message: Message, path: str = "") -> None:
    """Refuse any 64-bit integer field (nested and repeated ones too) beyond ``MAX_INT64``.

    Raises:
        InvalidInput: naming the field (``items[3].version``), never its value.
    """
    if not _has_int64(message.DESCRIPTOR):
        return
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.type in _INT64_TYPES:
            values = value if _is_repeated(field) else [value]
            for i, v in enumerate(values):
                if abs(v) > MAX_INT64:
                    where = f"{name}[{i}]" if _is_repeated(field) else name
                    raise InvalidInput(where, f"must be within -{MAX_INT64}..{MAX_INT64}")
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            children = value if _is_repeated(field) else [value]
            for i, child in enumerate(children):
                prefix = f"{name}[{i}]." if _is_repeated(field) else f"{name}."
                check_int64_ranges(child, prefix)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
