"""The words of the tokens domain: kinds, items, results, limits, and the small rules every
part of it (tokenize, pools, reveal, text) shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, NamedTuple

from vault.errors import InvalidInput
from vault.policy import Output
from vault.schema import FieldClass

#: values per Tokenize call and tokens per Reveal call
MAX_ITEMS: Final = 10_000
#: longest TTL: ten years
MAX_TTL_SECONDS: Final = 10 * 366 * 86_400
#: classes offered as format-preserving surrogates (short values of a known shape)
FPE_CLASSES: Final = frozenset(
    {
        FieldClass.EMAIL,
        FieldClass.PHONE,
        FieldClass.NAME,
        FieldClass.DATE_OF_BIRTH,
        FieldClass.NATIONAL_ID,
        FieldClass.CARD_NUMBER,
        FieldClass.IBAN,
        FieldClass.IP_ADDRESS,
    }
)
#: collisions tolerated while drawing one surrogate before the call gives up (ABORTED)
FPE_ATTEMPTS: Final = 32
#: the outputs that let a value (or a mask of it) leave: what a reveal commit is for
REVEALING: Final = (Output.PLAIN, Output.MASKED)


class TokenKind(StrEnum):
    RANDOM = "random"
    DETERMINISTIC = "deterministic"
    FORMAT_PRESERVING = "format_preserving"


class TokenError(StrEnum):
    """Why one token of a reveal was not revealed."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    ERASED = "erased"
    DENIED = "denied"
    #: its stored value or its data key does not authenticate (damaged or tampered at rest):
    #: audited as an integrity event, and the other tokens of the call are still answered
    DECRYPTION_FAILED = "decryption_failed"


class TokenizeItem(NamedTuple):
    """One value to tokenize. A named tuple, not a dataclass: Tokenize makes one per value (up
    to 10,000 a call) and a tuple costs a fifth of a frozen dataclass. Immutable; the value
    never appears in its repr."""

    value: str
    field_class: str
    kind: TokenKind = TokenKind.RANDOM
    scope: str = ""
    ttl_seconds: int = 0
    record_id: str = ""
    keep_last_four: bool = False
    #: deterministic tokens keyed on the exact string (free text), not the class's search form;
    #: the value (a span a detector found) is not validated for its class
    exact: bool = False

    def __repr__(self) -> str:
        return (
            f"TokenizeItem(field_class={self.field_class!r}, kind={self.kind!r},"
            f" scope={self.scope!r}, ttl_seconds={self.ttl_seconds!r},"
            f" record_id={self.record_id!r}, keep_last_four={self.keep_last_four!r},"
            f" exact={self.exact!r})"
        )


@dataclass(frozen=True, slots=True)
class RevealedToken:
    """One token's result: an output and value, or an error (with a reason code)."""

    token: str
    error: TokenError | None = None
    output: Output | None = None
    value: str = field(repr=False, default="")
    field_class: str = ""
    reason: str = ""


def check_ttl(ttl_seconds: int, field_name: str = "ttl_seconds") -> int:
    """A token lifetime in seconds (0: none).

    Raises: InvalidInput naming ``field_name``.
    """
    if not 0 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidInput(field_name, f"must be 0..{MAX_TTL_SECONDS}")
    return ttl_seconds


def token_field(token: str) -> str:
    """The AAD's field part of a token's value: binds the ciphertext to its token."""
    return f"token:{token}"


def expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now
