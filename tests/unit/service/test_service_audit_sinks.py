"""Every audit event reaches the JSON-lines sink exactly once (issue 11, point 7): denials and
standalone events (appended by ``AuditLog.record``, which writes the sinks itself) as well as
events committed with a call's own transaction (``after_commit``). So the sink's seq numbers
never repeat, and a checkpoint comes every ``checkpoint_every`` rows, not twice as often."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import ADMIN, caller_of
from tests.unit.service.service_support import DL, ServiceFactory, Vault, new_tenant
from vault.app import _audit_denial
from vault.audit import JsonLinesSink, MemoryCheckpointStore
from vault.cli._operations import Operator
from vault.errors import InvalidInput, PermissionDenied
from vault.service import Caller, RecordInput
from vault.service.tokens import TokenizeItem

FRAUD = caller_of("fraud-analyst", "fraud-investigation")
#: the test admin stating a purpose the policy does not know
ADMIN_NO_PURPOSE = Caller.of(ADMIN.principal, "no-such-purpose")


def _sink_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _chain_seqs(svc: Vault) -> list[int]:
    rows = svc.sql("SELECT seq FROM audit_events WHERE chain = :c ORDER BY seq", c=svc.audit.chain)
    return [int(r.seq) for r in rows]


def _deny_tokenize(svc: Vault, tenant: str) -> None:
    """One audited denial: a role without ``token.create`` tokenizes."""
    with pytest.raises(PermissionDenied):
        svc.tokens.tokenize(FRAUD, tenant, [TokenizeItem("ada@example.com", "email")], deadline=DL)


def _operator_over(svc: Vault) -> Operator:
    """An operator session over this vault's audit log (its constructor reaches OpenBao)."""
    op = object.__new__(Operator)
    op.log = svc.audit
    return op


def test_every_event_reaches_the_json_lines_sink_once(
    factory: ServiceFactory, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(path)
    svc = factory.build(audit_sinks=[sink])
    tenant = new_tenant()
    # allowed, committed with the call's own transaction
    [rec] = svc.records.create(
        ADMIN, tenant, [RecordInput({"email": "ada@example.com"})], deadline=DL
    )
    svc.tokens.tokenize(ADMIN, tenant, [TokenizeItem("ada@example.com", "email")], deadline=DL)
    # allowed, in a transaction of its own
    svc.audit_queries.query_access(ADMIN, tenant, rec.record_id, deadline=DL)
    # denied: the action, then the purpose
    _deny_tokenize(svc, tenant)
    _deny_tokenize(svc, tenant)
    with pytest.raises(InvalidInput):
        svc.audit_queries.query_access(ADMIN_NO_PURPOSE, tenant, rec.record_id, deadline=DL)
    # denied before any principal is known (the server's authenticator), and an operator's
    _audit_denial(svc.access)("missing_credentials", "ipv4:127.0.0.1:1")
    _operator_over(svc).audit("admin.keys.status", "ok")
    sink.close()

    lines = _sink_lines(path)
    seqs = [int(str(line["seq"])) for line in lines]
    assert seqs == _chain_seqs(svc)  # one line per row: none twice, none missing
    assert seqs == sorted(set(seqs))  # unique and increasing
    outcomes = [(line["action"], line["outcome"]) for line in lines]
    assert outcomes.count(("token.create", "denied")) == 2
    assert outcomes.count(("audit.read", "denied")) == 1
    assert outcomes.count(("audit.read", "allowed")) == 1
    assert outcomes.count(("auth.authenticate", "denied")) == 1
    assert outcomes.count(("admin.keys.status", "allowed")) == 1


def test_denials_count_once_towards_the_next_checkpoint(factory: ServiceFactory) -> None:
    checkpoints = MemoryCheckpointStore()
    svc = factory.build(checkpoints=checkpoints, checkpoint_every=3)
    tenant = new_tenant()
    for _ in range(6):
        _deny_tokenize(svc, tenant)
    assert _chain_seqs(svc) == [1, 2, 3, 4, 5, 6]
    assert checkpoints.puts == 2  # at rows 3 and 6, not at every second row
    checkpoint = checkpoints.get(deadline=DL)
    assert checkpoint is not None
    assert checkpoint["seq"] == "6"
