"""Column types shared by the table definitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

#: characters of a UUID in its canonical text form
UUID_CHARS = 36


def uuid_id() -> TypeEngine[str]:
    """A UUID id (record, data key, tenant/index/audit key): PostgreSQL's native ``uuid`` (16
    bytes in the row and in every index, instead of 37 as text), ``VARCHAR(36)`` elsewhere.
    Python sees the canonical lower-case string on both, as the ids are made
    (``str(uuid)``). PostgreSQL refuses a value that is not a UUID, so callers check ids from
    outside first (``vault.service.validators.check_record_id``)."""
    return String(UUID_CHARS).with_variant(postgresql.UUID(as_uuid=False), "postgresql")


def is_uuid_id(value: str) -> bool:
    """Whether ``value`` can be an id of a ``uuid_id`` column (a canonical UUID): a lookup by
    anything else finds nothing, and must not reach PostgreSQL, which refuses to compare it."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored and read back in UTC on every database.

    SQLite keeps no offset: it stores the wall-clock fields as given and hands back naive
    values, which then cannot be compared with the aware ``datetime.now(UTC)`` the services
    use (a ``TypeError`` on the second tokenization of a token with a TTL). Values are turned
    into UTC before they are stored and made aware again when read, so every caller sees aware
    UTC datetimes whatever the database. A naive value is refused: it is a bug, since nobody
    can tell which zone it meant.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError("a datetime column held a value that is not a datetime")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
