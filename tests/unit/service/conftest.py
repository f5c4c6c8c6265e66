"""Fixtures for the service-layer unit tests: every test gets its own migrated SQLite file and
in-memory key server (services are built only in ``service_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.service.service_support import (
    ServiceFactory,
    Vault,
    factory_in,
    migrate,
)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test's database is a copy (migrating per test is slow)."""
    return migrate(tmp_path_factory.mktemp("service-template") / "template.db")


@pytest.fixture
def factory(migrated_template: Path, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Builds services for this test (another policy, schema or clock); closes them after."""
    with factory_in(migrated_template, tmp_path) as made:
        yield made


@pytest.fixture
def svc(factory: ServiceFactory) -> Vault:
    """The services over a fresh database, with the test policy and the default schema."""
    return factory.build()
