"""Plaintext limits hold across replicas: two ``cvault serve`` processes on one PostgreSQL
database share the counters, so together they never reveal more than the role's limit."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.integration.access.access_support import audit_rows, rate_counters, wait_for
from tests.support import repo_root
from vault.api._authn import new_api_key
from vault.client import VaultClient
from vault.errors import ResourceExhausted, Unavailable
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import Database

pytestmark = [pytest.mark.openbao, pytest.mark.postgres]

LIMIT = 10  # plaintext values per day for the "limited" role
PURPOSE = "testing"
KEY_IDS = ("limit-writer", "limit-seq", "limit-par")

POLICY = f"""\
policy_version: 1
purposes:
  testing:
    description: the limits test
principals:
  "apikey:limit-writer": {{role: writer, tenants: ["*"]}}
  "apikey:limit-seq": {{role: limited, tenants: ["*"]}}
  "apikey:limit-par": {{role: limited, tenants: ["*"]}}
roles:
  writer:
    actions: [record.write, tenant.create]
    fields:
      "*": omit
  limited:
    actions: [record.read]
    purposes: [testing]
    fields:
      "*": plain
    limits: {{plain_per_day: {LIMIT}}}
"""


@dataclass
class Replica:
    proc: subprocess.Popen[str]
    address: str
    log: Path


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(
    path: Path,
    *,
    db_url: str,
    bao_url: str,
    policy: Path,
    kv_path: str,
    keys: dict[str, dict[str, str]],
) -> None:
    lines = [
        'listen = "127.0.0.1:0"',
        f"database_url = {_toml_string(db_url)}",
        f"policy = {_toml_string(str(policy))}",
        "health_interval_seconds = 0.2",
        "max_workers = 16",
        "",
        "[openbao]",
        f"url = {_toml_string(bao_url)}",
        'key_prefix = "cvault"',
        'auth = "token"',
        "",
        "[audit]",
        f"kv_path = {_toml_string(kv_path)}",
    ]
    for key_id, entry in keys.items():
        lines += ["", f"[auth.api_keys.{key_id}]"]
        lines += [f"{k} = {_toml_string(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _start(config: Path, log: Path, token: str) -> Replica:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVAULT_")}
    env["CVAULT_OPENBAO_TOKEN"] = token
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vault.cli", "serve", "--config", str(config)],
            cwd=repo_root(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    replica = Replica(proc, "", log)
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line.startswith("cvault: serving vault.v1 on port "):
            port = line.removeprefix("cvault: serving vault.v1 on port ").split()[0]
            replica.address = f"127.0.0.1:{int(port)}"
            return replica
    _stop(replica)
    raise AssertionError(f"cvault serve did not start:\n{log.read_text()[-4000:]}")


def _stop(replica: Replica) -> None:
    proc = replica.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _healthy(address: str) -> bool:
    try:
        with VaultClient(address, timeout=2) as vc:
            return vc.health() == "SERVING"
    except Unavailable:
        return False


def _avoid_day_boundary() -> None:
    """The per-day window starts at 00:00 UTC: do not straddle it."""
    left = 86_400 - time.time() % 86_400
    if left < 120:
        time.sleep(left + 1)


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str, openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Replica], dict[str, str]]]:
    """Two ``cvault serve`` processes on the same database, key server and policy."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    made = {k: new_api_key(k) for k in KEY_IDS}
    config = tmp_path / "vault.toml"
    _config(
        config,
        db_url=postgres_url,
        bao_url=openbao.url,
        policy=policy,
        kv_path=f"cvault/audit/limits-{secrets.token_hex(4)}",
        keys={k: v[1] for k, v in made.items()},
    )
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            started.append(_start(config, tmp_path / f"replica-{name}.log", openbao.root_token))
        for r in started:
            assert wait_for(partial(_healthy, r.address), 30), r.log.read_text()[-4000:]
        yield started, {k: v[0] for k, v in made.items()}
    finally:
        for r in started:
            _stop(r)
        for r in started:
            assert r.proc.returncode == 0, r.log.read_text()[-4000:]


def test_limit_holds_across_two_processes(
    replicas: tuple[list[Replica], dict[str, str]], postgres_url: str, tenant: str
) -> None:
    (a, b), keys = replicas
    _avoid_day_boundary()
    fields = {
        "email": f"limits.{secrets.token_hex(4)}@example.com",
        "phone": "+442079460123",
        "full_name": f"Lim Its {secrets.token_hex(3)}",
    }
    with VaultClient(a.address, api_key=keys["limit-writer"], timeout=20) as writer:
        rid = writer.create_record(tenant, fields).record_id
    clients = [
        VaultClient(r.address, api_key=keys["limit-seq"], purpose=PURPOSE, timeout=20)
        for r in (a, b)
    ]
    db = Database(postgres_url)
    try:
        revealed = 0
        refused = 0
        # three values per call, alternating between the processes: 3 + 3 + 3 = 9 of 10
        plan = [(), (), (), (), ("email",), ("email",), ()]
        expect_ok = [True, True, True, False, True, False, False]
        for i, (subset, ok) in enumerate(zip(plan, expect_ok, strict=True)):
            vc = clients[i % 2]
            if ok:
                got = vc.get_record(tenant, rid, fields=list(subset))
                plain = [f for f in got.fields.values() if f.output == "plain"]
                assert len(plain) == (len(subset) or 3)
                revealed += len(plain)
            else:
                with pytest.raises(ResourceExhausted) as info:
                    vc.get_record(tenant, rid, fields=list(subset))
                assert info.value.reason == "limit_exceeded"
                refused += 1
            assert revealed <= LIMIT
        assert revealed == LIMIT
        counters = rate_counters(db, "apikey:limit-seq")
        assert {(w, c) for w, _, c in counters} == {("day", LIMIT)}
        denied = audit_rows(db, action="limit.exceeded", principal="apikey:limit-seq")
        assert len(denied) == refused == 3
        assert {(r["outcome"], r["reason"], r["role"]) for r in denied} == {
            ("denied", "limit_exceeded", "limited")
        }
        assert len(audit_rows(db, action="record.read", principal="apikey:limit-seq")) == 4
    finally:
        for vc in clients:
            vc.close()
        db.dispose()


def test_limit_holds_under_concurrent_calls_to_both_processes(
    replicas: tuple[list[Replica], dict[str, str]], postgres_url: str, tenant: str
) -> None:
    (a, b), keys = replicas
    _avoid_day_boundary()
    fields = {"email": f"conc.{secrets.token_hex(4)}@example.com", "phone": "+442079460124"}
    with VaultClient(b.address, api_key=keys["limit-writer"], timeout=20) as writer:
        rid = writer.create_record(tenant, fields).record_id
    clients = [
        VaultClient(r.address, api_key=keys["limit-par"], purpose=PURPOSE, timeout=30)
        for r in (a, b)
    ]
    calls = 24  # two values each: at most LIMIT // 2 = 5 may succeed
    barrier = threading.Barrier(12)

    def one(i: int) -> int | str:
        if i < 12:
            barrier.wait(timeout=30)
        try:
            got = clients[i % 2].get_record(tenant, rid)
        except ResourceExhausted:
            return "exhausted"
        return sum(1 for f in got.fields.values() if f.output == "plain")

    db = Database(postgres_url)
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = list(pool.map(one, range(calls)))
        values = sum(o for o in outcomes if isinstance(o, int))
        exhausted = outcomes.count("exhausted")
        assert values <= LIMIT
        assert values == LIMIT  # every call answered: exactly the limit was revealed
        assert exhausted == calls - LIMIT // 2
        assert {(w, c) for w, _, c in rate_counters(db, "apikey:limit-par")} == {("day", LIMIT)}
        denied = audit_rows(db, action="limit.exceeded", principal="apikey:limit-par")
        assert len(denied) == exhausted
        assert len(audit_rows(db, action="record.read", principal="apikey:limit-par")) == 5
    finally:
        for vc in clients:
            vc.close()
        db.dispose()
