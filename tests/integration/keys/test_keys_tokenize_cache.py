"""Tokenize takes the tenant's current keys from the keyring's cache (no read transaction of its
own) and checks them inside its write transaction: a rotation made by another process (the
CLI: another key manager, keyring and database connections) between two calls of a running
service is seen by the second call, which wraps its new data keys and keys its deterministic
tokens and fingerprints under the new versions; the tokens of both calls read back."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import bindparam, text

from tests.support import ADMIN, make_service
from vault.crypto import deterministic_token
from vault.deadline import Deadline
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.schema import FieldClass
from vault.service._keyring import DATA, INDEX
from vault.service._normal import deterministic_form
from vault.service._token_pools import PoolLimits
from vault.service.operations import rotate_index, rotate_tenant
from vault.service.services import Services
from vault.service.tokens import TokenizeItem, TokenKind
from vault.storage import Database

pytestmark = pytest.mark.openbao


def _dl() -> Deadline:
    return Deadline.after(60)


def _items(tag: str) -> list[TokenizeItem]:
    return [
        TokenizeItem(f"pool-{tag}@example.org", "email"),
        TokenizeItem(f"other-{tag}@example.org", "email"),
        TokenizeItem(f"det-{tag}@example.org", "email", TokenKind.DETERMINISTIC, scope="s"),
        TokenizeItem("same@example.org", "email", TokenKind.DETERMINISTIC, scope="s"),
    ]


def _row(db: Database, sql: str, **params: str) -> tuple[object, ...]:
    with db.engine.connect() as conn:
        return tuple(conn.execute(text(sql), params).one())


def test_a_rotation_by_another_process_between_two_calls_is_used_by_the_second(
    bao: OpenBaoDevServer, private_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(private_db_url)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    # the running server: every call makes a new pool (so a new data key, wrapped under the
    # tenant key the call holds)
    server = Services.over(make_service(db, bao).core, pools=PoolLimits(max_values=1))
    first = server.tokens.tokenize(ADMIN, tenant, _items("a"), deadline=_dl())
    again = server.tokens.tokenize(ADMIN, tenant, _items("b"), deadline=_dl())
    assert again[3] == first[3]  # the cache is warm, nothing changed: the same token

    # the CLI, in a process of its own: both rotations run to the end (old versions gone)
    cli = make_service(db, bao)
    assert rotate_tenant(cli.core, tenant, "email").destroyed == 1
    rotate_index(cli.core, tenant, "email")
    assert _row(
        db, "SELECT count(*) FROM tenant_keys WHERE tenant = :t AND kind = 'index'", t=tenant
    ) == (1,)
    newest = cli.core.keyring.current(tenant, ["email"], deadline=_dl())
    data, index = newest[("email", DATA)], newest[("email", INDEX)]
    assert (data.version, index.version) == (2, 2)

    with caplog.at_level(logging.INFO, logger="vault.service.tokens"):
        second = server.tokens.tokenize(ADMIN, tenant, _items("c"), deadline=_dl())
    assert "the tenant's keys changed" in caplog.text

    # the new pool's data key is wrapped under the new tenant-key version
    [pool_key] = _row(
        db,
        "SELECT d.tenant_key_id FROM tokens t JOIN data_keys d ON d.id = t.data_key_id"
        " WHERE t.tenant = :t AND t.token = :k",
        t=tenant,
        k=second[0],
    )
    assert str(pool_key) == data.id  # a uuid on PostgreSQL
    # deterministic tokens and every fingerprint are keyed under the new index-key version
    form = deterministic_form(FieldClass.EMAIL, "det-c@example.org")
    assert second[2] == deterministic_token(index.key, "email", "s", form)
    assert second[3] != first[3]  # after the drop, a value's token comes out new
    with db.engine.connect() as conn:
        fingerprint_keys = set(
            conn.execute(
                text(
                    "SELECT fingerprint_key_id FROM tokens WHERE tenant = :t AND token IN :k"
                ).bindparams(bindparam("k", expanding=True)),
                {"t": tenant, "k": second},
            ).scalars()
        )
    assert fingerprint_keys == {index.id}

    # every token of every call reads back, in the server and in a process of its own
    values = [i.value for i in _items("a")] + [i.value for i in _items("c")]
    for reader in (server, Services.over(make_service(db, bao).core)):
        revealed = reader.tokens.reveal(ADMIN, tenant, [*first, *second], deadline=_dl())
        assert [r.value for r in revealed] == values
    db.dispose()
