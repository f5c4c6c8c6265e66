"""Token pools are bounded: one per (tenant, class) in use, least recently used evicted, since
tenants are named by callers (found by the soak benchmark: the map grew with every tenant)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ADMIN, TEST_POLICY
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.deadline import Deadline
from vault.keys import KeyManager
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access
from vault.service.services import Services
from vault.service.tokens import PoolLimits, TokenizeItem, TokensService
from vault.storage import Database, upgrade
from vault.testing import InMemoryKeyWrapper

DL = Deadline.after(3600)


@pytest.fixture
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokensService]:
    url = f"sqlite:///{tmp_path_factory.mktemp('pools') / 'v.db'}"
    upgrade(url)
    db = Database(url)
    keys = KeyManager(InMemoryKeyWrapper())
    audit = AuditLog(db, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False)
    access = Access(PolicyHolder(TEST_POLICY), audit)
    yield Services.build(db, keys, load_schema(), access, pools=PoolLimits(max_entries=5)).tokens
    db.dispose()


def test_pools_of_many_tenants_stay_within_the_bound(tokens: TokensService) -> None:
    for i in range(20):
        [token] = tokens.tokenize(
            ADMIN, f"tenant-{i}", [TokenizeItem(f"p{i}@example.com", "email")], deadline=DL
        )
        # a value tokenized in a pool that was evicted since still reveals
        [first] = tokens.reveal(ADMIN, f"tenant-{i}", [token], deadline=DL)
        assert first.value == f"p{i}@example.com"
    assert len(tokens._pools) == 5
    assert {t for t, _ in tokens._pools} == {f"tenant-{i}" for i in range(15, 20)}


def test_a_pool_in_use_is_kept(tokens: TokensService) -> None:
    for i in range(12):
        tokens.tokenize(ADMIN, "busy", [TokenizeItem(f"b{i}@example.com", "email")], deadline=DL)
        tokens.tokenize(
            ADMIN, f"other-{i}", [TokenizeItem(f"o{i}@example.com", "email")], deadline=DL
        )
    assert ("busy", "email") in tokens._pools
