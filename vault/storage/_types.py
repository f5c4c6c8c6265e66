"""Column types shared by the table definitions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


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
