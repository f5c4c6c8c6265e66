"""Policy reload on a running server: a valid edit takes effect without a restart (file watcher
or SIGHUP); an invalid edit keeps the policy in force and logs the file, line and reason."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.access.access_support import (
    authenticator_with,
    edit_role,
    line_of,
    policy_text,
    wait_for,
    write_atomically,
)
from tests.support import ADMIN_KEY, TEST_PURPOSE, make_wrapper, sample_record
from vault.api import RunningServer, start_server
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.client import VaultClient
from vault.errors import PermissionDenied
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Core, RecordsService, Services
from vault.storage import Database

pytestmark = pytest.mark.openbao

AGENT = "reload-agent"  # a principal of this test only: its rate counters are its own
AGENT_PURPOSE = "customer-support"


@dataclass
class Served:
    holder: PolicyHolder
    path: Path
    server: RunningServer
    agent_key: str


def _policy(version: int) -> str:
    return policy_text(principals={f"apikey:{AGENT}": "support-agent"}, version=version)


@pytest.fixture
def served(sqlite_url: str, openbao: OpenBaoDevServer, tmp_path: Path) -> Iterator[Served]:
    path = tmp_path / "policy.yaml"
    path.write_text(_policy(1), encoding="utf-8")
    db = Database(sqlite_url)
    keys = KeyManager(make_wrapper(openbao))
    audit = AuditLog(db, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False)
    holder = PolicyHolder(path, poll_interval=0.2)
    service = RecordsService(Core(db, keys, load_schema(), Access(holder, audit)))
    authn, api_keys = authenticator_with(AGENT)
    holder.start_watching()
    running = start_server(Services.over(service.core), "127.0.0.1:0", authenticator=authn)
    try:
        yield Served(holder, path, running, api_keys[AGENT])
    finally:
        running.stop(grace=0)
        holder.stop()
        db.dispose()


def _email_output(vc: VaultClient, tenant: str, rid: str) -> tuple[str, str]:
    f = vc.get_record(tenant, rid, fields=["email"]).fields["email"]
    return f.output, f.value


def test_valid_edit_applies_and_invalid_edit_keeps_policy(
    served: Served, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vault.policy")
    fields = sample_record(41)
    with (
        VaultClient(served.server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE) as admin,
        VaultClient(served.server.address, api_key=served.agent_key, purpose=AGENT_PURPOSE) as vc,
    ):
        rid = admin.create_record(tenant, fields).record_id
        canonical = admin.get_record(tenant, rid, fields=["email"]).fields["email"].value
        output, masked = _email_output(vc, tenant, rid)
        assert output == "masked"
        assert masked != canonical

        # (a) a valid edit, replaced atomically: support agents now see emails in full
        v2 = edit_role(_policy(2), "support-agent", "email: masked", "email: plain")
        write_atomically(served.path, v2)
        assert wait_for(lambda: _email_output(vc, tenant, rid) == ("plain", canonical))
        assert served.holder.current.version == 2

        # (b) an invalid edit (an unknown action on a known line): refused, logged, not applied
        caplog.clear()
        bad = edit_role(
            _policy(3),
            "support-agent",
            "actions: [record.read, record.find, text.reveal, grant.issue]",
            "actions: [record.read, record.find, record.raed, text.reveal, grant.issue]",
        )
        bad_line = line_of(bad, "record.raed")
        write_atomically(served.path, bad)
        assert wait_for(lambda: _refusals(caplog) != [])
        [message] = _refusals(caplog)
        assert f"{served.path}:{bad_line}:" in message
        assert "unknown action 'record.raed'" in message
        assert "roles.support-agent.actions[2]" in message
        assert "keeping version 2" in message
        assert served.holder.current.version == 2
        # still the edited policy in force: plain emails, the same actions
        assert _email_output(vc, tenant, rid) == ("plain", canonical)
        with pytest.raises(PermissionDenied):
            vc.export_customer_data(tenant, rid)
        # the refusal is logged once, not on every poll
        time.sleep(5 * served.holder.poll_interval)
        assert len(_refusals(caplog)) == 1

        # another kind of mistake: an unknown output, on the line of that field class
        caplog.clear()
        bad = edit_role(_policy(3), "support-agent", "email: masked", "email: plane")
        bad_line = line_of(bad, "email: plane")
        write_atomically(served.path, bad)
        assert wait_for(lambda: _refusals(caplog) != [])
        [message] = _refusals(caplog)
        assert f"{served.path}:{bad_line}:" in message
        assert "roles.support-agent.fields.email: unknown output 'plane'" in message
        assert _email_output(vc, tenant, rid) == ("plain", canonical)
        assert served.holder.current.version == 2

        # a fix of the file afterwards is picked up again
        v4 = edit_role(_policy(4), "support-agent", "email: masked", "email: token")
        write_atomically(served.path, v4)
        assert wait_for(lambda: _email_output(vc, tenant, rid)[0] == "token")
        assert served.holder.current.version == 4


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "vault.policy"
        and r.levelno == logging.ERROR
        and "policy reload refused" in r.getMessage()
    ]


def test_sighup_reloads(served: Served, tenant: str) -> None:
    # only SIGHUP may load the edit: stop the watcher first
    served.holder.stop()
    before = signal.getsignal(signal.SIGHUP)
    with (
        VaultClient(served.server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE) as admin,
        VaultClient(served.server.address, api_key=served.agent_key, purpose=AGENT_PURPOSE) as vc,
    ):
        fields = sample_record(42)
        rid = admin.create_record(tenant, fields).record_id
        canonical = admin.get_record(tenant, rid, fields=["email"]).fields["email"].value
        assert _email_output(vc, tenant, rid)[0] == "masked"
        served.holder.install_sighup()
        try:
            write_atomically(
                served.path,
                edit_role(_policy(2), "support-agent", "email: masked", "email: plain"),
            )
            # not watching: the edit is not loaded by itself
            assert served.holder.current.version == 1
            os.kill(os.getpid(), signal.SIGHUP)
            assert wait_for(lambda: _email_output(vc, tenant, rid) == ("plain", canonical))
            assert served.holder.current.version == 2
        finally:
            served.holder.stop()
        assert signal.getsignal(signal.SIGHUP) == before
