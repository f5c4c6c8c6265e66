"""The narrow interface between the vault and a key server: wrap and unwrap key material."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vault.deadline import Deadline


@dataclass(frozen=True, slots=True)
class WrapItem:
    """One key to wrap. ``associated_data`` binds the wrapped blob to where it belongs."""

    plaintext: bytes = field(repr=False)
    associated_data: bytes = b""


@dataclass(frozen=True, slots=True)
class UnwrapItem:
    """One wrapped key to unwrap, with the associated data it was wrapped with."""

    wrapped: str
    associated_data: bytes = b""


class KeyWrapper(Protocol):
    """Wraps and unwraps keys under the field key of a field class (the KEK never leaves).

    Implementations: :class:`vault.keys.TransitKeyWrapper` (OpenBao/Vault transit through hvac)
    and :class:`vault.testing.InMemoryKeyWrapper` (unit tests of the layers above only).
    """

    def wrap(
        self, field_class: str, items: Sequence[WrapItem], *, deadline: Deadline | None = None
    ) -> list[str]:
        """Wrap every item under ``<prefix>-<field_class>``; one result per item, in order.

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not use this key, or it does not exist.
        """
        ...

    def unwrap(
        self, field_class: str, items: Sequence[UnwrapItem], *, deadline: Deadline | None = None
    ) -> list[bytes]:
        """Unwrap every item; one plaintext key per item, in order.

        Raises:
            KeyServerUnavailable, KeyServerPermissionDenied: as for :meth:`wrap`.
            DecryptionFailed: an item did not authenticate (tampered, wrong AAD or wrong key).
        """
        ...

    def healthy(self) -> bool:
        """True when the key server answers and is unsealed. Never raises."""
        ...

    def reach_problem(self) -> str:
        """Why the key server cannot be used at all ("unreachable", "sealed", an untrusted
        certificate); "" when it answers unsealed. Never raises."""
        ...

    def credential_problem(self) -> str:
        """Why the key server refuses this server's credential; "" when it accepts it or
        cannot be asked. Never raises."""
        ...
