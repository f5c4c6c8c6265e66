"""Erasing a whole record (DeleteRecord, ``cvault records erase``, retention): its data keys
crypto-shredded and tombstoned, and every token of its values tombstoned, in one transaction.

Tokens linked to the record go with its data keys. Every other token of the tenant holding one
of its values (standalone ``Tokenize`` tokens of any kind and scope, ``TokenizeText`` spans) is
found by its **fingerprint** (``crypto.value_fingerprint``: HMAC under the tenant's index key
for the class, a label of its own, the value's deterministic-token form, no scope). The
record's values are opened here, before the transaction (the service holds the keys), and
fingerprinted under **every** index-key version the tenant has for the class at that moment:
a token is fingerprinted under the version current when it was made, and ``rotate-index``
re-fingerprints the tokens of the class before it drops an older version.

The erasure writes the fingerprints as tombstones (``erased_fingerprints``) and empties the
ciphertext of every standalone token carrying one: such a token reveals as ``erased``, and a
copy of its row restored from a backup still does (the read checks the tombstone against the
row's creation time), while the same value tokenized again later gets a new live token. The
receipt counts the tokens reached; a repeated erasure returns the first receipt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from vault.audit import AuditEvent
from vault.deadline import Deadline
from vault.errors import Conflict, DecryptionFailed, NotFound
from vault.schema import FieldClass
from vault.service._core import Core
from vault.service._keyring import TenantKey
from vault.service._normal import deterministic_form, fingerprint
from vault.service._reading import RecordReader
from vault.service._types import ErasureReceipt
from vault.storage import access_repo, repo, tokens_repo

log = logging.getLogger("vault.service.erasure")

#: passes of read-then-erase before a record that keeps changing gives up (ABORTED)
_ATTEMPTS = 3


class RecordChanged(Exception):
    """The record was written between reading its values and erasing it: read again."""


@dataclass(frozen=True, slots=True)
class ValuePrints:
    """A live record's version and the fingerprints of its values (every index-key version)."""

    version: int
    fingerprints: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class ErasureDone:
    """What one erasure destroyed: data keys, tokens reached, token-pool keys involved."""

    data_key_ids: tuple[str, ...]
    tokens_erased: int
    token_key_ids: tuple[str, ...]


def value_prints(
    core: Core,
    tenant: str,
    record_id: str,
    *,
    deadline: Deadline,
    data_key_id: str | None = None,
) -> ValuePrints | None:
    """The fingerprints of a live record's values, or of those sealed under ``data_key_id``
    only (a class shred), with the record's version (None: no live record). Opens the values
    (through the one data-key path); they never leave this function. A value that does not
    open (tampering) must not block an erasure: it is logged, and its tokens are not found.

    Raises: Unavailable (key server or database).
    """
    with core.db.begin(write=False) as conn:
        row, stored = repo.read_record(conn, tenant, record_id)
    if row is None:
        return None
    live = [
        s
        for s in stored
        if not s.dek_erased and s.field_name and data_key_id in (None, s.data_key_id)
    ]
    try:
        plain = RecordReader(core).open(tenant, record_id, live, deadline=deadline) if live else {}
    except DecryptionFailed:
        log.warning("erasure: a stored value did not open; its standalone tokens are not found")
        plain = {}
    values = [(s.field_class, plain[s.field_name]) for s in live if s.field_name in plain]
    return ValuePrints(row.version, prints_of(core, tenant, values, deadline=deadline))


def prints_of(
    core: Core, tenant: str, values: Iterable[tuple[str, str]], *, deadline: Deadline
) -> frozenset[bytes]:
    """The fingerprints of ``values`` ((field class, value) each) under every index-key
    version the tenant has for the class.

    Raises: Unavailable (key server).
    """
    keys: dict[str, list[TenantKey]] = {}
    prints: set[bytes] = set()
    for field_class, value in values:
        iks = keys.get(field_class)
        if iks is None:
            iks = keys[field_class] = core.keyring.index_keys(
                tenant, field_class, deadline=deadline
            )
        cls = FieldClass(field_class)
        prints.update(fingerprint(ik.key, cls, value) for ik in iks)
    return frozenset(prints)


def removed_prints(
    core: Core,
    tenant: str,
    removed: Iterable[tuple[str, str]],
    kept: Iterable[tuple[str, str]],
    *,
    deadline: Deadline,
) -> frozenset[bytes]:
    """The fingerprints of the values ``removed`` from a record ((field class, value) each)
    that it does not still hold among ``kept`` (compared in their deterministic form, as
    tokens compare them: an email case-insensitively)."""
    held = {(c, deterministic_form(FieldClass(c), v)) for c, v in kept}
    gone = [(c, v) for c, v in removed if (c, deterministic_form(FieldClass(c), v)) not in held]
    return prints_of(core, tenant, gone, deadline=deadline) if gone else frozenset()


def erase_with_tokens(
    conn: Connection, tenant: str, record_id: str, prints: ValuePrints, now: datetime
) -> ErasureDone:
    """In the caller's transaction: erase the record if it is still at ``prints.version``,
    with its consents, and tombstone every token of its values.

    Raises: RecordChanged (written or erased since ``prints`` was read).
    """
    if not repo.bump_version(conn, tenant, record_id, prints.version, now):
        raise RecordChanged
    count, pool_keys = tokens_repo.erase_tokens(conn, tenant, record_id, prints.fingerprints, now)
    dek_ids = repo.erase_record(
        conn, tenant, record_id, now, tokens_erased=count, token_key_ids=pool_keys
    )
    access_repo.erase_consents(conn, record_id)
    return ErasureDone(tuple(dek_ids), count, tuple(pool_keys))


def erase_record(
    core: Core,
    tenant: str,
    record_id: str,
    events: Sequence[AuditEvent],
    *,
    deadline: Deadline,
) -> ErasureReceipt:
    """DeleteRecord's erasure, audited with ``events``; an erased record's first receipt
    (nothing audited again).

    Raises: NotFound (no such record, none erased); Conflict (it kept changing).
    """
    for _attempt in range(_ATTEMPTS):
        prints = value_prints(core, tenant, record_id, deadline=deadline)
        now = datetime.now(UTC)
        todo = list(events) if prints is not None else []
        try:
            with core.audited_write(todo, deadline=deadline) as conn:
                if prints is None:
                    first = repo.erasure(conn, tenant, record_id)
                    if first is None:
                        raise NotFound("record not found")
                    return ErasureReceipt(
                        tenant,
                        record_id,
                        first.erased_at,
                        first.data_key_ids,
                        first.tokens_erased,
                    )
                done = erase_with_tokens(conn, tenant, record_id, prints, now)
        except RecordChanged:
            continue
        core.data_keys.forget(done.data_key_ids)
        return ErasureReceipt(tenant, record_id, now, done.data_key_ids, done.tokens_erased)
    raise Conflict("the record kept changing while it was erased; retry")
