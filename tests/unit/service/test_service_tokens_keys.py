"""Tokenize's keys: the tenant's current keys come from the keyring's cache (a warm call opens
one transaction, its write), checked inside that transaction, so that a new key version made
by a rotation in another process is used from the next call on, and one made in this process
at once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.support import ADMIN
from tests.unit.service.service_support import DL, FakeFieldKeyAdmin, ServiceFactory, Vault
from vault import crypto
from vault.schema import FieldClass
from vault.service._keyring import DATA, INDEX
from vault.service._normal import deterministic_form
from vault.service.operations import retire, rotate_field, rotate_tenant, trim
from vault.service.tokens import TokenizeItem, TokenKind

RETRIED = "the tenant's keys changed"


def _items(tag: str) -> list[TokenizeItem]:
    return [
        TokenizeItem(f"pool-{tag}@example.org", "email"),
        TokenizeItem(f"Ada {tag.upper()}. Lovelace", "name"),
        TokenizeItem(f"det-{tag}@example.org", "email", TokenKind.DETERMINISTIC, scope="s"),
        TokenizeItem("same@example.org", "email", TokenKind.DETERMINISTIC, scope="s"),
    ]


@contextmanager
def _transactions(svc: Vault) -> Iterator[list[bool]]:
    """Every transaction begun on the service's database meanwhile (True: a write)."""
    begun: list[bool] = []

    def on_begin(conn: Any) -> None:
        begun.append(bool(conn.info.get("write")))

    event.listen(svc.db.engine, "begin", on_begin)
    try:
        yield begun
    finally:
        event.remove(svc.db.engine, "begin", on_begin)


def _newest(svc: Vault, tenant: str, kind: str) -> str:
    return str(
        svc.scalar(
            "SELECT id FROM tenant_keys WHERE tenant = :t AND field_class = 'email' AND kind = :k"
            " ORDER BY version DESC LIMIT 1",
            t=tenant,
            k=kind,
        )
    )


@pytest.mark.parametrize("kind", [TokenKind.RANDOM, TokenKind.DETERMINISTIC])
def test_a_warm_call_opens_only_its_write_transaction(
    svc: Vault, tenant: str, kind: TokenKind
) -> None:
    items = [
        TokenizeItem(f"u{i}@example.org", c, kind, scope="s")
        for i, c in enumerate(["email", "name"] * 4)
    ]
    svc.tokens.tokenize(ADMIN, tenant, items, deadline=DL)  # keys made, pools made, cached
    items = [TokenizeItem(f"v{i}@example.org", "email", kind, scope="s") for i in range(8)]
    with _transactions(svc) as begun:
        svc.tokens.tokenize(ADMIN, tenant, items, deadline=DL)
    assert begun == [True]


def test_a_rotation_in_another_process_is_used_by_the_next_call(
    factory: ServiceFactory, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    # every call makes a new pool: a data key wrapped under the tenant key the call holds
    server = factory.build(pool_max_values=1)
    first = server.tokens.tokenize(ADMIN, tenant, _items("a"), deadline=DL)
    server.tokens.tokenize(ADMIN, tenant, _items("b"), deadline=DL)  # warm

    cli = server.restart()  # another process: its own key manager, keyring, connections
    assert rotate_tenant(cli.core, tenant, "email").destroyed == 1
    index = cli.keyring.new_version(tenant, "email", INDEX, deadline=DL)

    with caplog.at_level(logging.INFO, logger="vault.service.tokens"):
        second = server.tokens.tokenize(ADMIN, tenant, _items("c"), deadline=DL)
    assert RETRIED in caplog.text
    pool_key = server.scalar(
        "SELECT d.tenant_key_id FROM tokens t JOIN data_keys d ON d.id = t.data_key_id"
        " WHERE t.tenant = :t AND t.token = :k",
        t=tenant,
        k=second[0],
    )
    assert pool_key == _newest(server, tenant, DATA)
    # a new value's token and every new fingerprint under the new index key; a value
    # tokenized before keeps its token while the old index key is kept (mid-rotation)
    form = deterministic_form(FieldClass.EMAIL, "det-c@example.org")
    assert second[2] == crypto.deterministic_token(index.key, "email", "s", form)
    assert second[3] == first[3]
    for token in (second[0], second[2]):
        assert (
            server.scalar(
                "SELECT fingerprint_key_id FROM tokens WHERE tenant = :t AND token = :k",
                t=tenant,
                k=token,
            )
            == index.id
        )

    values = [i.value for i in _items("a")] + [i.value for i in _items("c")]
    for reader in (server, server.restart()):
        revealed = reader.tokens.reveal(ADMIN, tenant, [*first, *second], deadline=DL)
        assert [r.value for r in revealed] == values


def test_a_new_version_made_in_this_process_is_used_at_once(
    svc: Vault, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc.tokens.tokenize(ADMIN, tenant, _items("a"), deadline=DL)
    index = svc.keyring.new_version(tenant, "email", INDEX, deadline=DL)
    with caplog.at_level(logging.INFO, logger="vault.service.tokens"):
        second = svc.tokens.tokenize(ADMIN, tenant, _items("b"), deadline=DL)
    assert RETRIED not in caplog.text  # evicted by new_version: nothing stale was tried
    form = deterministic_form(FieldClass.EMAIL, "det-b@example.org")
    assert second[2] == crypto.deterministic_token(index.key, "email", "s", form)


def test_keys_of_a_destroyed_version_are_never_written(
    factory: ServiceFactory, tenant: str
) -> None:
    """Also when the check is the one to catch it: the old version's row is gone, so the data
    key wrapped under it would not open (the foreign key refuses it on both databases)."""
    server = factory.build(pool_max_values=1)
    server.tokens.tokenize(ADMIN, tenant, _items("a"), deadline=DL)
    cli = server.restart()
    for _ in range(2):  # two versions on: the first call's key is long gone
        rotate_tenant(cli.core, tenant, "email")
    [token] = server.tokens.tokenize(ADMIN, tenant, _items("b")[:1], deadline=DL)
    used = server.scalar(
        "SELECT d.tenant_key_id FROM tokens t JOIN data_keys d ON d.id = t.data_key_id"
        " WHERE t.tenant = :t AND t.token = :k",
        t=tenant,
        k=token,
    )
    assert used == _newest(server, tenant, DATA)
    [revealed] = server.restart().tokens.reveal(ADMIN, tenant, [token], deadline=DL)
    assert revealed.value == "pool-b@example.org"


def test_a_field_key_rotation_elsewhere_leaves_the_cached_keys_usable(
    svc: Vault, tenant: str
) -> None:
    """``rotate-field`` re-wraps the tenant and index key rows in place (same ids: nothing to
    evict) and ``retire``/``trim`` then refuse the old wrapping: once the key manager's cache
    lets a key go, it is unwrapped from its row as it is now, not from a stale copy."""
    first = svc.tokens.tokenize(ADMIN, tenant, _items("a"), deadline=DL)
    cli = svc.restart()
    admin = FakeFieldKeyAdmin(cli.key_server)
    assert rotate_field(cli.db, admin, "email").rewrapped >= 2
    retire(cli.db, admin, "email")
    trim(cli.db, admin, "email")
    svc.keys.tenant_keys.clear()  # aged out of the cache (max age): unwrapped again
    second = svc.tokens.tokenize(ADMIN, tenant, _items("b"), deadline=DL)
    assert second[3] == first[3]  # the same index key, re-wrapped
    revealed = svc.restart().tokens.reveal(ADMIN, tenant, [*first, *second], deadline=DL)
    assert [r.value for r in revealed] == [i.value for i in [*_items("a"), *_items("b")]]
