"""The one data-key path: cache, then unwrap under the tenant key, re-read after a rotation.

Every reader (records, tokens, exports) and every key operation (rekey, rotate-tenant, index
rotation) opens data keys here, so the rules live in one place:

* a cached data key is used as is;
* otherwise it is unwrapped locally (AES-GCM) under its tenant key, which comes from the tenant
  key cache or, when cold, from one batched key-server call per class (``Keyring.by_ids``);
* a tenant key that no longer exists was destroyed by ``cvault keys rotate-tenant`` after the
  caller read the wrapped data key: the caller's ``reread`` reads the data-key rows again (now
  wrapped under the new version) and the keys are opened once more.

:meth:`DataKeys.open_local` is the variant for a read that must not leave its transaction: it
never calls the key server, and says so (None) when it would have to. :meth:`DataKeys.open_each`
is the variant for a batch answered per item (Reveal): a data key that does not open is named
instead of failing the keys opened beside it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vault import crypto
from vault.crypto import DataKey
from vault.deadline import Deadline
from vault.errors import DecryptionFailed
from vault.keys import KeyManager
from vault.service._keyring import Keyring, TenantKey


@dataclass(frozen=True, slots=True)
class DataKeyRef:
    """Where a data key is: its id, its owner (a record, or a token pool) and class, and its
    wrapped form with the tenant key that wraps it (None: the row is gone, which is tampering
    when the value that names it is still there)."""

    id: str
    owner: str
    field_class: str
    tenant_key_id: str | None
    wrapped: bytes | None = field(repr=False)


#: reads the refs of these data-key ids again (after a concurrent tenant-key rotation)
Reread = Callable[[Sequence[DataKeyRef]], Sequence[DataKeyRef]]


class DataKeys:
    """Data keys by id, opened through the cache, the tenant key cache or the key server."""

    def __init__(self, keyring: Keyring, keys: KeyManager) -> None:
        self._keyring = keyring
        self._cache = keys.data_keys
        self._tenant_keys = keys.tenant_keys
        self._on_write = keys.cache_data_keys_on_write

    def open(
        self,
        tenant: str,
        refs: Iterable[DataKeyRef],
        *,
        deadline: Deadline,
        reread: Reread | None = None,
        cache: bool = True,
    ) -> dict[str, DataKey]:
        """The data keys of ``refs`` by id. ``cache=False`` for bulk operator work that must
        not push the service's working set out of the cache.

        Raises:
            DecryptionFailed: a key row is missing, or a key does not authenticate.
            KeyServerUnavailable: a tenant key had to be unwrapped and could not be.
        """
        return self._open(tenant, refs, deadline=deadline, reread=reread, cache=cache)

    def open_each(
        self,
        tenant: str,
        refs: Iterable[DataKeyRef],
        *,
        deadline: Deadline,
        reread: Reread | None = None,
    ) -> tuple[dict[str, DataKey], set[str]]:
        """:meth:`open` for a batch answered per item: the data keys that opened by id, and
        the ids of those that did not (the key row gone without a tombstone, or the wrapped key
        not authenticating under its tenant key), which fail only the items that use them.

        Raises:
            DecryptionFailed: a tenant key does not authenticate or is not the tenant's (every
                data key under it would fail: the key hierarchy itself is damaged).
            KeyServerUnavailable: a tenant key had to be unwrapped and could not be.
        """
        failed: set[str] = set()
        out = self._open(tenant, refs, deadline=deadline, reread=reread, failed=failed)
        return out, failed

    def _open(
        self,
        tenant: str,
        refs: Iterable[DataKeyRef],
        *,
        deadline: Deadline,
        reread: Reread | None,
        cache: bool = True,
        failed: set[str] | None = None,
    ) -> dict[str, DataKey]:
        out, cold = self._cached(refs, failed)
        if not cold:
            return out
        tks = self._keyring.by_ids(tenant, _tenant_key_ids(cold), deadline=deadline)
        if _tenant_key_ids(cold) - set(tks) and reread is not None:
            cold = list(reread(cold))  # re-wrapped under a new version since they were read
            tks = self._keyring.by_ids(tenant, _tenant_key_ids(cold), deadline=deadline)
        return out | self.unwrap_under(tenant, cold, tks, cache=cache, failed=failed)

    def open_local(self, tenant: str, refs: Iterable[DataKeyRef]) -> dict[str, DataKey] | None:
        """The data keys of ``refs`` without any key-server call or database read: cached, or
        unwrapped under a cached tenant key. None when a tenant key is not cached."""
        out, cold = self._cached(refs)
        if not cold:
            return out
        tks: dict[str, TenantKey] = {}
        for ref in cold:
            key = self._tenant_keys.get(ref.tenant_key_id) if ref.tenant_key_id else None
            if key is None:
                return None
            assert ref.tenant_key_id is not None
            tks[ref.tenant_key_id] = TenantKey(ref.tenant_key_id, ref.field_class, "data", 0, key)
        return out | self.unwrap_under(tenant, cold, tks)

    def unwrap_under(
        self,
        tenant: str,
        refs: Sequence[DataKeyRef],
        tenant_keys: Mapping[str, TenantKey],
        *,
        cache: bool = True,
        failed: set[str] | None = None,
    ) -> dict[str, DataKey]:
        """Unwrap ``refs`` under these tenant keys (the only data-key unwrap of the service).
        The AAD binds each key to its id, tenant, owner and class, so a key moved to another
        record, tenant or class fails here: DecryptionFailed, or with ``failed`` its id added
        there and the others unwrapped."""
        out: dict[str, DataKey] = {}
        for ref in refs:
            try:
                dek = _unwrap(tenant, ref, tenant_keys.get(ref.tenant_key_id or ""))
            except DecryptionFailed:
                if failed is None:
                    raise
                failed.add(ref.id)
                continue
            out[ref.id] = dek
            if cache:
                self._cache.put(ref.id, dek.key)
        return out

    def remember(self, dek: DataKey) -> None:
        """Cache a data key just made that the service itself uses again (a token pool's)."""
        self._cache.put(str(dek.id), dek.key)

    def made(self, dek: DataKey) -> None:
        """A record's data key just made (its row commits with the write that made it):
        cached only when ``[cache] data_keys_on_write`` says so. A bulk load would otherwise
        push the read working set out of the cache, and a later read opens the key under its
        cached tenant key in microseconds anyway."""
        if self._on_write:
            self._cache.put(str(dek.id), dek.key)

    def forget(self, ids: Iterable[str]) -> None:
        """Drop destroyed data keys from the cache (erasure, rekey, field erasure)."""
        for i in ids:
            self._cache.discard(i)

    def _cached(
        self, refs: Iterable[DataKeyRef], failed: set[str] | None = None
    ) -> tuple[dict[str, DataKey], list[DataKeyRef]]:
        out: dict[str, DataKey] = {}
        cold: dict[str, DataKeyRef] = {}
        for ref in refs:
            if ref.id in out or ref.id in cold:
                continue
            key = self._cache.get(ref.id)
            if key is not None:
                out[ref.id] = DataKey(uuid.UUID(ref.id), key)
            elif ref.wrapped is None or ref.tenant_key_id is None:
                if failed is None:
                    raise DecryptionFailed()  # the key row is gone without a tombstone: tampering
                failed.add(ref.id)
            else:
                cold[ref.id] = ref
        return out, list(cold.values())


def _unwrap(tenant: str, ref: DataKeyRef, tk: TenantKey | None) -> DataKey:
    """Raises DecryptionFailed (no tenant key or wrapped form, or it does not authenticate)."""
    if tk is None or ref.wrapped is None:
        raise DecryptionFailed()
    return crypto.unwrap_data_key(
        uuid.UUID(tk.id),
        tk.key,
        uuid.UUID(ref.id),
        ref.wrapped,
        tenant=tenant,
        record_id=ref.owner,
        field_class=ref.field_class,
    )


def _tenant_key_ids(refs: Iterable[DataKeyRef]) -> set[str]:
    return {r.tenant_key_id for r in refs if r.tenant_key_id is not None}
