"""KeySync (issue 15): key events reach a process's caches; a seq seen missing is awaited; a
process that cannot poll past the bound clears its caches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from tests.unit.service.service_support import Vault
from vault.errors import DatabaseUnavailable
from vault.service import EVICT_WITHIN_SECONDS, KeySync
from vault.storage import sync

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def _event(vault: Vault, kind: str, ids: list[str], seq: int | None = None) -> None:
    with vault.db.begin() as conn:
        if seq is None:
            sync.record_event(conn, "acme", kind, ids, NOW)
        else:  # a seq a concurrent transaction took, committed later
            conn.execute(
                text(
                    "INSERT INTO key_events (seq, tenant, kind, ids, at) VALUES (:s, 'acme', :k, :i, :a)"
                ),
                {"s": seq, "k": kind, "i": f'["{ids[0]}"]', "a": NOW},
            )


def _beat(vault: Vault) -> int:
    with vault.db.begin(write=False) as conn:
        return {r.replica: r.applied_seq for r in sync.replicas(conn)}["r1"]


def test_events_evict_their_keys_and_the_heartbeat_says_how_far(svc: Vault) -> None:
    keys = svc.keys
    key_sync = KeySync(svc.db, keys, "r1")
    _event(svc, sync.DATA_KEYS, ["before"])  # before the first poll: nothing to apply
    keys.data_keys.put("dk1", b"k" * 32)
    keys.data_keys.put("dk2", b"k" * 32)
    keys.tenant_keys.put("tk1", b"t" * 32)
    assert key_sync.sync_once()  # the first poll clears what was cached before it
    assert len(keys.data_keys) == len(keys.tenant_keys) == 0
    keys.data_keys.put("dk1", b"k" * 32)
    keys.data_keys.put("dk2", b"k" * 32)
    keys.tenant_keys.put("tk1", b"t" * 32)
    _event(svc, sync.DATA_KEYS, ["dk1"])
    _event(svc, sync.TENANT_KEYS, ["tk1"])
    assert key_sync.sync_once()
    assert keys.data_keys.get("dk1") is None
    assert keys.tenant_keys.get("tk1") is None
    assert keys.data_keys.get("dk2") is not None
    assert _beat(svc) == key_sync.applied_seq == 3


def test_a_seq_seen_missing_holds_the_heartbeat_back_until_it_commits(svc: Vault) -> None:
    keys = svc.keys
    key_sync = KeySync(svc.db, keys, "r1")
    assert key_sync.sync_once()
    _event(svc, sync.DATA_KEYS, ["dk5"], seq=5)
    assert key_sync.sync_once()
    assert _beat(svc) == 0  # 1-4 not seen yet: a transaction may still commit them
    keys.data_keys.put("dk3", b"k" * 32)
    _event(svc, sync.DATA_KEYS, ["dk3"], seq=3)
    assert key_sync.sync_once()
    assert keys.data_keys.get("dk3") is None  # the late one is applied all the same


def test_a_process_that_cannot_poll_clears_its_caches_past_the_bound(
    svc: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    keys = svc.keys
    key_sync = KeySync(svc.db, keys, "r1", clock=lambda: now[0])
    assert key_sync.sync_once()
    keys.data_keys.put("dk1", b"k" * 32)

    def down(*, write: bool = True) -> None:
        raise DatabaseUnavailable("database unavailable")

    monkeypatch.setattr(svc.db, "begin", down)
    now[0] += EVICT_WITHIN_SECONDS - 1
    assert not key_sync.sync_once()
    assert keys.data_keys.get("dk1") is not None  # within the bound: kept
    now[0] += 2
    assert not key_sync.sync_once()
    assert len(keys.data_keys) == 0
