"""Fixtures for the audit unit tests: a migrated SQLite file per test, in-memory key wrapping."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from vault.audit import AuditLog, MemoryCheckpointStore
from vault.deadline import Deadline
from vault.keys import KeyManager
from vault.storage import Database, upgrade
from vault.testing import InMemoryKeyWrapper


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("audit-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(migrated_template: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "audit.db"
    shutil.copy(migrated_template, path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def wrapper() -> InMemoryKeyWrapper:
    return InMemoryKeyWrapper()


@pytest.fixture
def keys(wrapper: InMemoryKeyWrapper) -> KeyManager:
    return KeyManager(wrapper)


@pytest.fixture
def store() -> MemoryCheckpointStore:
    return MemoryCheckpointStore()


@pytest.fixture
def log(db: Database, keys: KeyManager, store: MemoryCheckpointStore) -> Iterator[AuditLog]:
    audit = AuditLog(db, keys, checkpoint=store, checkpoint_in_background=False)
    yield audit
    audit.close()


@pytest.fixture
def deadline() -> Deadline:
    return Deadline.after(30)
