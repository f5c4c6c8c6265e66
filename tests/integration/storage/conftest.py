"""Fixtures of the storage integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import private_postgres
from vault.storage import upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def own_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own (the migration tests migrate it down and up)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vault.db'}"
        upgrade(url)
        yield url
    else:
        with private_postgres() as url:
            yield url
