"""What one audit event says (:class:`AuditEvent`) and what a stored row gives back
(:class:`AuditEntry`). Neither ever holds a customer value."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

#: outcomes an event may have
ALLOWED: Final = "allowed"
DENIED: Final = "denied"
ERROR: Final = "error"
OUTCOMES: Final = frozenset({ALLOWED, DENIED, ERROR})

#: column widths of ``audit_events`` (see ``vault.storage.models.AuditEventRow``)
_MAX_LEN: Final = {
    "principal": 256,
    "role": 64,
    "action": 64,
    "purpose": 64,
    "tenant": 64,
    "reason": 64,
    "request_id": 128,
    "on_behalf_of": 256,
    "peer": 128,
}
MAX_RECORD_ID: Final = 256
MAX_FIELD_CLASSES: Final = 64
_CLASS_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# Control characters would make log lines ambiguous, and PostgreSQL refuses NUL in text.
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


def _now() -> datetime:
    return datetime.now(UTC)


#: values that passed each field's checks: a batch of a thousand events repeats the same
#: principal, role, purpose and tenant, checked once (bounded: emptied when full)
_PASSED: Final[dict[str, set[str]]] = {name: set() for name in _MAX_LEN}
_CLASSES_PASSED: Final[set[str]] = set()
_PASSED_MAX: Final = 1024


def _check_text(name: str, value: object, limit: int) -> None:
    """Raise ValueError (naming the field, never the value) unless ``value`` fits the column."""
    if not isinstance(value, str):
        raise ValueError(f"audit event {name} must be a string")
    if len(value) > limit:
        raise ValueError(f"audit event {name} is longer than {limit} characters")
    if _CONTROL_RE.search(value):
        raise ValueError(f"audit event {name} has control characters")
    if not _encodable(value):
        raise ValueError(f"audit event {name} is not valid Unicode")


def _encodable(value: str) -> bool:
    """False for lone surrogates, which have no UTF-8 form to store or MAC."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened, to be appended to the audit log.

    No field may hold a customer value. ``record_id`` is the raw record id given by the caller:
    it is never stored, only its keyed pseudonym (``record_ref``). ``purpose`` and ``reason``
    must be names from the policy or the error tree (pass ``"unknown"`` rather than an
    unrecognised purpose a client sent), ``request_id`` an id the service made or checked.

    Raises:
        ValueError: a field is too long, has control characters, or is of the wrong kind (a
            caller bug). The message names the field, never its value.
    """

    action: str
    outcome: str
    principal: str
    role: str
    purpose: str
    tenant: str
    record_id: str | None = field(default=None, repr=False)
    field_classes: tuple[str, ...] = ()
    reason: str = ""
    request_id: str = ""
    time: datetime = field(default_factory=_now)
    #: the principal whose reveal grant the caller used (empty otherwise)
    on_behalf_of: str = ""
    #: the caller's network address as gRPC saw it (``ipv4:10.0.0.7:51234``; empty for
    #: operator commands)
    peer: str = ""

    def __post_init__(self) -> None:
        for name, limit in _MAX_LEN.items():
            value = getattr(self, name)
            passed = _PASSED[name]
            if isinstance(value, str) and value in passed:
                continue
            _check_text(name, value, limit)
            if len(passed) >= _PASSED_MAX:
                passed.clear()
            passed.add(value)
        if not self.action:
            raise ValueError("audit event action is required")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"audit event outcome must be one of {sorted(OUTCOMES)}")
        if self.record_id is not None and (
            not isinstance(self.record_id, str)
            or not self.record_id
            or len(self.record_id) > MAX_RECORD_ID
            or not _encodable(self.record_id)
        ):
            raise ValueError(f"audit event record_id must be 1-{MAX_RECORD_ID} characters")
        if not isinstance(self.field_classes, tuple) or len(self.field_classes) > (
            MAX_FIELD_CLASSES
        ):
            raise ValueError(f"audit event field_classes must be a tuple of <= {MAX_FIELD_CLASSES}")
        for cls in self.field_classes:
            if not (isinstance(cls, str) and (cls in _CLASSES_PASSED or _CLASS_RE.fullmatch(cls))):
                raise ValueError("audit event field_classes holds an invalid class name")
            if len(_CLASSES_PASSED) < _PASSED_MAX:
                _CLASSES_PASSED.add(cls)
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise ValueError("audit event time must be a timezone-aware datetime")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An event as stored: its place in its chain, and the record's pseudonym instead of its id."""

    chain: str
    seq: int
    time: datetime
    principal: str
    role: str
    action: str
    purpose: str
    tenant: str
    record_ref: str | None
    field_classes: tuple[str, ...]
    outcome: str
    reason: str
    request_id: str
    on_behalf_of: str = ""
    peer: str = ""
