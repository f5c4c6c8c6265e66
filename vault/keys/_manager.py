"""KeyManager: makes, wraps and unwraps tenant/index keys through the key server, with caches.

New keys are made locally (256 random bits) and wrapped in one batched transit call per field
class; unwrapped keys are kept in a bounded :class:`KeyCache` so steady traffic makes no
key-server calls. Data keys are wrapped locally by tenant keys (``vault.crypto``) and only cached
here.

**Binding.** A wrapped key must not unwrap in another row (another tenant, class, kind or
version). Keys are wrapped as ``cvk2:`` + the transit ciphertext of
``"cvault/wrapped-key/v2" || len(binding) || binding || key``, and unwrapping checks the
binding. The binding travels inside the plaintext rather than as transit ``associated_data``
because transit ``rewrap`` (field-key rotation, which must not expose the keys) takes no
associated data: OpenBao 2.7 rewraps such a ciphertext only by failing authentication. Keys
wrapped by earlier versions (plain ``vault:vN:``, bound as associated data) still unwrap.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from vault.deadline import Deadline
from vault.errors import DecryptionFailed
from vault.keys._cache import CacheLimits, KeyCache
from vault.keys._wrapper import KeyWrapper, UnwrapItem, WrapItem

KEY_BYTES = 32
#: the stored form of a key wrapped with its binding inside the plaintext
BOUND_PREFIX = "cvk2:"
_MAGIC = b"cvault/wrapped-key/v2"


def bind(key: bytes, binding: bytes) -> bytes:
    """The plaintext sent to the key server: magic, the binding (length-prefixed), the key."""
    return _MAGIC + len(binding).to_bytes(4, "big") + binding + key


def unbind(plaintext: bytes, binding: bytes) -> bytes:
    """The key, if ``plaintext`` carries exactly ``binding``.

    Raises:
        DecryptionFailed: another binding (the blob was moved to another row), or malformed.
    """
    head = len(_MAGIC) + 4
    if not plaintext.startswith(_MAGIC) or len(plaintext) < head:
        raise DecryptionFailed()
    n = int.from_bytes(plaintext[len(_MAGIC) : head], "big")
    found, key = plaintext[head : head + n], plaintext[head + n :]
    if not hmac.compare_digest(found, binding) or len(key) != KEY_BYTES:
        raise DecryptionFailed()
    return key


def transit_ciphertext(wrapped: str) -> str:
    """The key server's ``vault:vN:...`` part of a stored wrapped key (either format)."""
    return wrapped.removeprefix(BOUND_PREFIX)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: the plaintext (for the cache) and the key server's wrapped blob."""

    key: bytes = field(repr=False)
    wrapped: str


@dataclass(frozen=True, slots=True)
class WrappedRef:
    """A wrapped key to unwrap: ``cache_id`` names it in the cache (the key row id)."""

    cache_id: str
    wrapped: str = field(repr=False)
    associated_data: bytes = b""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    tenant_keys: CacheLimits = field(
        default_factory=lambda: CacheLimits(max_entries=10_000, max_age_seconds=3600.0)
    )
    data_keys: CacheLimits = field(
        default_factory=lambda: CacheLimits(max_entries=100_000, max_age_seconds=600.0)
    )
    #: cache the data keys that writes make (off: a bulk load leaves the read cache alone)
    data_keys_on_write: bool = False


#: how often the health probe asks the key server whether it still accepts the credential
CREDENTIAL_CHECK_SECONDS = 15.0


class KeyManager:
    """The one place that asks the key server for anything at run time."""

    def __init__(self, wrapper: KeyWrapper, caches: CacheSettings | None = None) -> None:
        caches = caches or CacheSettings()
        self.wrapper = wrapper
        self.tenant_keys: KeyCache[bytes] = KeyCache(caches.tenant_keys, name="tenant_keys")
        self.data_keys: KeyCache[bytes] = KeyCache(caches.data_keys, name="data_keys")
        self.cache_data_keys_on_write = caches.data_keys_on_write
        self._credential: tuple[float, str] = (0.0, "")

    def new_keys(
        self, field_class: str, associated_data: Sequence[bytes], *, deadline: Deadline
    ) -> list[NewKey]:
        """Make ``len(associated_data)`` keys and wrap them under the class's field key in one
        batched call (chunked by the wrapper if large)."""
        plain = [os.urandom(KEY_BYTES) for _ in associated_data]
        wrapped = self.wrapper.wrap(
            field_class,
            [WrapItem(bind(k, ad)) for k, ad in zip(plain, associated_data, strict=True)],
            deadline=deadline,
        )
        return [NewKey(k, BOUND_PREFIX + w) for k, w in zip(plain, wrapped, strict=True)]

    def unwrap(
        self, field_class: str, refs: Sequence[WrappedRef], *, deadline: Deadline
    ) -> dict[str, bytes]:
        """Plaintext keys by cache id: from the cache, the misses in one batched call."""
        out: dict[str, bytes] = {}
        misses: list[WrappedRef] = []
        for ref in refs:
            hit = self.tenant_keys.get(ref.cache_id)
            if hit is None:
                misses.append(ref)
            else:
                out[ref.cache_id] = hit
        if misses:
            plain = self.wrapper.unwrap(
                field_class,
                [
                    UnwrapItem(m.wrapped.removeprefix(BOUND_PREFIX))
                    if m.wrapped.startswith(BOUND_PREFIX)
                    else UnwrapItem(m.wrapped, m.associated_data)  # before the cvk2 format
                    for m in misses
                ],
                deadline=deadline,
            )
            for m, p in zip(misses, plain, strict=True):
                k = unbind(p, m.associated_data) if m.wrapped.startswith(BOUND_PREFIX) else p
                self.tenant_keys.put(m.cache_id, k)
                out[m.cache_id] = k
        return out

    def remember(self, cache_id: str, key: bytes) -> None:
        self.tenant_keys.put(cache_id, key)

    def healthy(self) -> bool:
        return self.wrapper.healthy()

    def key_server_state(self) -> tuple[str, str]:
        """(problem, degraded) for readiness, "" where there is none. The key server not
        answering (unreachable, sealed, a TLS failure) is only *degraded* while cached tenant
        keys still serve (calls that need the key server fail UNAVAILABLE, the rest go on); a
        problem once none is left, and a refused credential always (it does not heal)."""
        reach = self.wrapper.reach_problem()
        if reach and self.tenant_keys.serves():
            return "", f"{reach}; serving from cached keys"
        return reach or self.credential_problem(), ""

    def credential_problem(self, *, max_age: float = CREDENTIAL_CHECK_SECONDS) -> str:
        """Why the key server refuses this server's credential ("" when it accepts it), asked
        at most every ``max_age`` seconds while it is accepted (a refusal is asked again at
        once: the health probe then sees the fix at its next round)."""
        now = time.monotonic()
        checked_at, problem = self._credential
        if problem or now - checked_at >= max_age or checked_at == 0.0:
            problem = self.wrapper.credential_problem()
            self._credential = (now, problem)
        return problem
