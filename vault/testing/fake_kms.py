"""An in-memory :class:`~vault.keys.KeyWrapper` for fast unit tests of the layers above the keys.

Like Tink's ``tink.testing.fake_kms``: same contract as the real transit wrapper (AES-GCM with
associated data, one key per field class, versioned output), no network, no persistence. Never
use it outside tests: its keys die with the process.

Wrapped format: ``fake:v<version>:<base64(12-byte nonce | ciphertext+tag)>``.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.deadline import Deadline
from vault.errors import DecryptionFailed, KeyServerPermissionDenied, KeyServerUnavailable
from vault.keys import UnwrapItem, WrapItem

_PREFIX = "fake:v"
_NONCE_BYTES = 12


class InMemoryKeyWrapper:
    """Wraps under random per-class AES-256-GCM keys held in memory.

    Args:
        field_classes: the classes that "exist"; another class raises
            :class:`KeyServerPermissionDenied` (like a missing transit key). None: any class,
            its key made on first use.

    Attributes:
        calls: ``(op, field_class, n_items)`` per wrap/unwrap call, ``op`` in {"wrap", "unwrap"}.
        fail_with: when set, every wrap/unwrap raises ``fail_with()`` (after recording the call),
            e.g. ``KeyServerUnavailable`` to simulate an outage.
        healthy_value: what :meth:`healthy` returns (default True).
    """

    def __init__(self, field_classes: Iterable[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._allowed = None if field_classes is None else frozenset(field_classes)
        # class -> key versions (index 0 is version 1); key bytes never appear in a repr
        self._keys: dict[str, list[bytes]] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.fail_with: type[Exception] | None = None
        self.healthy_value = True
        #: what :meth:`credential_problem` returns ("" = the credential is accepted)
        self.credential_refused = ""

    def __repr__(self) -> str:
        return f"InMemoryKeyWrapper(classes={sorted(self._keys)!r})"

    def rotate(self, field_class: str) -> int:
        """Add a key version for ``field_class`` (new wraps use it); returns the new version."""
        with self._lock:
            versions = self._versions(field_class)
            versions.append(AESGCM.generate_key(bit_length=256))
            return len(versions)

    def wrap(
        self, field_class: str, items: Sequence[WrapItem], *, deadline: Deadline | None = None
    ) -> list[str]:
        with self._lock:
            self._enter("wrap", field_class, len(items), deadline)
            versions = self._versions(field_class)
            version, key = len(versions), AESGCM(versions[-1])
        out: list[str] = []
        for item in items:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = key.encrypt(nonce, item.plaintext, item.associated_data)
            out.append(f"{_PREFIX}{version}:{base64.b64encode(nonce + sealed).decode('ascii')}")
        return out

    def unwrap(
        self, field_class: str, items: Sequence[UnwrapItem], *, deadline: Deadline | None = None
    ) -> list[bytes]:
        with self._lock:
            self._enter("unwrap", field_class, len(items), deadline)
            versions = list(self._versions(field_class))
        out: list[bytes] = []
        for item in items:
            out.append(self._open(versions, item))
        return out

    def healthy(self) -> bool:
        return self.healthy_value and self.fail_with is None

    def reach_problem(self) -> str:
        return "" if self.healthy() else "unreachable"

    def credential_problem(self) -> str:
        return self.credential_refused

    def _enter(self, op: str, field_class: str, n: int, deadline: Deadline | None) -> None:
        self.calls.append((op, field_class, n))
        if self.fail_with is not None:
            raise self.fail_with()
        if deadline is not None and deadline.expired():
            raise KeyServerUnavailable(f"key server unavailable: fake-{field_class}")

    def _versions(self, field_class: str) -> list[bytes]:
        if self._allowed is not None and field_class not in self._allowed:
            raise KeyServerPermissionDenied(f"no such key: fake-{field_class!s:.80}")
        return self._keys.setdefault(field_class, [AESGCM.generate_key(bit_length=256)])

    @staticmethod
    def _open(versions: list[bytes], item: UnwrapItem) -> bytes:
        head, sep, body = item.wrapped.rpartition(":")
        if not sep or not head.startswith(_PREFIX) or not head[len(_PREFIX) :].isdigit():
            raise DecryptionFailed()
        version = int(head[len(_PREFIX) :])
        if not 1 <= version <= len(versions):
            raise DecryptionFailed()
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise DecryptionFailed() from None
        if len(raw) < _NONCE_BYTES + 16:
            raise DecryptionFailed()
        try:
            return AESGCM(versions[version - 1]).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], item.associated_data
            )
        except InvalidTag:
            raise DecryptionFailed() from None
