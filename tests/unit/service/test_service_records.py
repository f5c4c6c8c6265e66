"""The records service over SQLite and the in-memory key wrapper: fast checks of the layers above
the key server (integration tests repeat the important ones against real OpenBao)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ADMIN, TEST_POLICY
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.deadline import Deadline
from vault.errors import KeyServerUnavailable
from vault.keys import CacheLimits, CacheSettings, KeyManager
from vault.policy import PolicyHolder
from vault.schema import RecordSchema, load_schema
from vault.service import Access, Core, RecordInput, RecordsService
from vault.storage import Database, upgrade
from vault.testing import InMemoryKeyWrapper

DL = Deadline.after(3600)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path_factory.mktemp('svc') / 'v.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def wrapper() -> InMemoryKeyWrapper:
    return InMemoryKeyWrapper()


def service(
    db: Database,
    wrapper: InMemoryKeyWrapper,
    caches: CacheSettings | None = None,
    schema: RecordSchema | None = None,
) -> RecordsService:
    keys = KeyManager(wrapper, caches)
    audit = AuditLog(db, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False)
    return RecordsService(
        Core(db, keys, schema or load_schema(), Access(PolicyHolder(TEST_POLICY), audit))
    )


def test_key_server_calls_one_per_class_then_none(
    db: Database, wrapper: InMemoryKeyWrapper
) -> None:
    svc = service(db, wrapper)
    wrapper.calls.clear()
    fields = {"email": "a@example.com", "full_name": "A B", "notes": "x"}
    svc.create(ADMIN, "calls", [RecordInput(fields)] * 3, deadline=DL)
    # the audit key is made once per database (its first audited write), not per tenant
    assert [c for c in wrapper.calls if c[1] == "audit"] in ([], [("wrap", "audit", 1)])
    assert sorted(c[:2] for c in wrapper.calls if c[1] != "audit") == [
        ("wrap", "email"),
        ("wrap", "free_text"),
        ("wrap", "name"),
    ]
    # tenant key and index key together
    assert all(c[2] == 2 for c in wrapper.calls if c[1] != "audit")
    wrapper.calls.clear()
    svc.create(ADMIN, "calls", [RecordInput(fields)], deadline=DL)
    assert wrapper.calls == []


def test_cache_max_uses_forces_unwrap_again(db: Database, wrapper: InMemoryKeyWrapper) -> None:
    tiny = CacheSettings(
        tenant_keys=CacheLimits(max_uses=1),
        data_keys=CacheLimits(max_uses=1),
        data_keys_on_write=True,
    )
    svc = service(db, wrapper, tiny)
    (rec,) = svc.create(ADMIN, "uses", [RecordInput({"email": "u@example.com"})], deadline=DL)
    wrapper.calls.clear()
    unwraps = []
    for _ in range(4):
        svc.get(ADMIN, "uses", rec.record_id, deadline=DL)
        unwraps.append(sum(1 for c in wrapper.calls if c[:2] == ("unwrap", "email")))
    # One use per cached entry: read 1 uses the data key, read 2 re-unwraps it with the tenant
    # key (its one use), read 3 uses the new data key, read 4 must ask the key server again.
    assert unwraps == [0, 0, 0, 1]


def test_writes_leave_the_data_key_cache_alone_unless_configured(
    db: Database, wrapper: InMemoryKeyWrapper
) -> None:
    """A bulk load must not push the read working set out of the data-key cache: the keys a
    write makes are cached only with ``[cache] data_keys_on_write``; reads still open them
    locally under the cached tenant key."""
    for on_write in (False, True):
        svc = service(db, wrapper, CacheSettings(data_keys_on_write=on_write))
        keys = svc.core.keys
        made = svc.create(ADMIN, "lazy", [RecordInput({"email": "l@example.com"})] * 3, deadline=DL)
        assert len(keys.data_keys) == (3 if on_write else 0)
        wrapper.calls.clear()
        assert svc.get(ADMIN, "lazy", made[0].record_id, deadline=DL).fields
        assert [c for c in wrapper.calls if c[0] == "unwrap"] == []  # tenant key was cached


def test_outage_during_create_writes_nothing(db: Database, wrapper: InMemoryKeyWrapper) -> None:
    svc = service(db, wrapper)
    svc.core.tenants.create("outage", "test", [], deadline=DL)
    wrapper.fail_with = KeyServerUnavailable
    try:
        with pytest.raises(KeyServerUnavailable):
            svc.create(ADMIN, "outage", [RecordInput({"email": "o@example.com"})], deadline=DL)
    finally:
        wrapper.fail_with = None
    assert svc.find(ADMIN, "outage", {"email": "o@example.com"}, deadline=DL) == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=200
    ).filter(lambda s: s.strip() != "")
)
def test_free_text_round_trip_arbitrary_unicode(
    db: Database, wrapper: InMemoryKeyWrapper, value: str
) -> None:
    svc = service(db, wrapper)
    (rec,) = svc.create(ADMIN, "prop", [RecordInput({"notes": value})], deadline=DL)
    got = svc.get(ADMIN, "prop", rec.record_id, deadline=DL)
    assert got.fields["notes"].value == svc.core.schema.validate({"notes": value})["notes"]


def test_two_fields_of_one_class_share_a_data_key_but_not_ciphertexts(
    tmp_path: Path, wrapper: InMemoryKeyWrapper
) -> None:
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(
        "schema_version: 2\nfields:\n"
        "  email: {class: email, searchable: true}\n"
        "  work_email: {class: email, searchable: true}\n"
    )
    url = f"sqlite:///{tmp_path / 'two.db'}"
    upgrade(url)
    db = Database(url)
    try:
        svc = service(db, wrapper, schema=load_schema(schema_file))
        (rec,) = svc.create(
            ADMIN,
            "two",
            [RecordInput({"email": "home@example.com", "work_email": "work@example.com"})],
            deadline=DL,
        )
        # the same value in the two fields must not match across fields
        assert svc.find(ADMIN, "two", {"work_email": "home@example.com"}, deadline=DL) == []
        assert svc.find(ADMIN, "two", {"email": "home@example.com"}, deadline=DL) == [rec.record_id]
        from sqlalchemy import text

        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE record_values SET ciphertext = (SELECT ciphertext FROM record_values "
                    "WHERE field_name = 'email') WHERE field_name = 'work_email'"
                )
            )
        from vault.errors import DecryptionFailed

        with pytest.raises(DecryptionFailed):
            svc.get(ADMIN, "two", rec.record_id, fields=["work_email"], deadline=DL)
    finally:
        db.dispose()


def _count_transactions(svc: RecordsService) -> list[bool]:
    """Record every transaction the service opens (True: a write transaction)."""
    opened: list[bool] = []
    begin = svc.core.db.begin

    def counting(*, write: bool = True) -> Any:
        opened.append(write)
        return begin(write=write)

    svc.core.db.begin = counting  # type: ignore[method-assign]
    return opened


def test_find_and_cold_reads_take_one_transaction(
    db: Database, wrapper: InMemoryKeyWrapper
) -> None:
    """Issue 13: FindRecords opened a read transaction for the index keys and then the write
    one; a read whose data keys are not cached took the general path (two transactions)."""
    svc = service(db, wrapper)
    rec, _ = svc.create(
        ADMIN, "onetx", [RecordInput({"email": "one@example.com"})] * 2, deadline=DL
    )
    assert svc.find(ADMIN, "onetx", {"email": "one@example.com"}, deadline=DL)  # warms the keys
    opened = _count_transactions(svc)
    assert len(svc.find(ADMIN, "onetx", {"email": "one@example.com"}, deadline=DL)) == 2
    assert opened == [True]
    opened.clear()
    svc.core.keys.data_keys.clear()  # cold data keys; the tenant key is still cached
    assert svc.get(ADMIN, "onetx", rec.record_id, deadline=DL).fields
    assert opened == [True]


def test_find_with_cold_index_keys_still_finds(db: Database, wrapper: InMemoryKeyWrapper) -> None:
    writer = service(db, wrapper)
    (rec,) = writer.create(
        ADMIN, "coldfind", [RecordInput({"email": "c@example.com"})], deadline=DL
    )
    fresh = service(db, wrapper)  # a new process: nothing cached
    assert fresh.find(ADMIN, "coldfind", {"email": "c@example.com"}, deadline=DL) == [rec.record_id]
    assert fresh.find(ADMIN, "coldfind", {"email": "x@example.com"}, deadline=DL) == []
