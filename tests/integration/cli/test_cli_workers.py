"""``cvault serve --workers N`` and the chain each process appends to (issue 13, points 4
and 6), on SQLite and PostgreSQL with a real OpenBao.

- ``cvault serve`` appends to a chain named from the host; operator commands to ``ops_<host>``.
- ``--workers 2`` serves from two processes on one port, each with its own chain; SIGTERM
  drains and stops both, and the supervisor exits 0; ``cvault audit verify`` then reports each
  chain.
- A worker that dies stops the others, and the supervisor exits 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import ADMIN_KEY, API_KEYS, SAMPLE, TEST_POLICY, private_postgres, repo_root
from vault.audit import operator_chain, server_chain
from vault.client import VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import Database, upgrade

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

CVAULT = [sys.executable, "-m", "vault.cli"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own: the chains it finds are the ones it made."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'workers.db'}"
        upgrade(url)
        yield url
    else:
        with private_postgres("cvault_workers") as url:
            yield url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, openbao: OpenBaoDevServer, db_url: str, port: int) -> Path:
    salt, digest = API_KEYS["test-admin"][1]["salt"], API_KEYS["test-admin"][1]["hash"]
    config = tmp_path / "workers.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'database_url = "{db_url}"\n'
        f'policy = "{TEST_POLICY}"\n'
        "health_interval_seconds = 0.2\n"
        "shutdown_grace_seconds = 2\n"
        f'[openbao]\nurl = "{openbao.url}"\n'
        # checkpoints of this test's own: another test's chains are not these
        f'[audit]\nkv_path = "cvault/audit/{uuid.uuid4().hex[:12]}"\n'
        "[server]\ndrain_seconds = 0.5\n"
        f'[auth.api_keys.test-admin]\nprincipal = "apikey:test-admin"\n'
        f'salt = "{salt}"\nhash = "{digest}"\n'
    )
    return config


def _env(openbao: OpenBaoDevServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVAULT_")}
    env["CVAULT_OPENBAO_TOKEN"] = openbao.root_token
    return env


def _cvault(openbao: OpenBaoDevServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CVAULT, *args],
        capture_output=True,
        text=True,
        env=_env(openbao),
        timeout=120,
        cwd=repo_root(),
    )


def _start(
    config: Path, openbao: OpenBaoDevServer, *extra: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``cvault serve``; (the process, what it printed until it served)."""
    proc = subprocess.Popen(
        [*CVAULT, "serve", "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(openbao),
        cwd=repo_root(),
    )
    assert proc.stdout is not None
    out: list[str] = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("cvault: serving vault.v1"):
            return proc, out
    proc.wait(timeout=30)
    raise AssertionError("cvault serve did not start:\n" + "".join(out)[-4000:])


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _gone(pids: set[int], within: float = 30.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.1)
    return False


def _rows_per_chain(db_url: str) -> dict[str, int]:
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT chain, count(*) FROM audit_events GROUP BY chain")
            ).all()
        return {str(c): int(n) for c, n in rows}
    finally:
        db.dispose()


@contextlib.contextmanager
def _stopped_at_the_end(proc: subprocess.Popen[str]) -> Iterator[None]:
    workers = _children(proc.pid)
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_serve_appends_to_the_hosts_chain_and_operators_to_their_own(
    openbao: OpenBaoDevServer, tmp_path: Path, db_url: str
) -> None:
    port = _free_port()
    config = _config(tmp_path, openbao, db_url, port)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    made = _cvault(openbao, "tenants", "create", tenant, "--config", str(config))
    assert made.returncode == 0, made.stderr
    proc, out = _start(config, openbao)
    with _stopped_at_the_end(proc):
        assert f"(audit chain {server_chain()})" in out[-1]
        with VaultClient(f"127.0.0.1:{port}", api_key=ADMIN_KEY, timeout=10) as vc:
            vc.create_record(tenant, dict(SAMPLE))
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
    assert _rows_per_chain(db_url) == {operator_chain(): 1, server_chain(): 1}


def test_two_workers_share_the_port_with_a_chain_each_and_stop_on_sigterm(
    openbao: OpenBaoDevServer, tmp_path: Path, db_url: str
) -> None:
    port = _free_port()
    config = _config(tmp_path, openbao, db_url, port)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    assert _cvault(openbao, "tenants", "create", tenant, "--config", str(config)).returncode == 0
    chains = [server_chain(worker=i) for i in (0, 1)]
    proc, out = _start(config, openbao, "--workers", "2")
    workers = _children(proc.pid)
    with _stopped_at_the_end(proc):
        assert out[-1].strip() == (
            f"cvault: serving vault.v1 on port {port} with 2 workers"
            f" (audit chains {chains[0]}, {chains[1]})"
        )
        assert len(workers) == 2
        # gRPC balances per connection: a channel each, until both workers served some
        for _ in range(40):
            with VaultClient(f"127.0.0.1:{port}", api_key=ADMIN_KEY, timeout=10) as vc:
                vc.create_record(tenant, dict(SAMPLE))
            if set(chains) <= set(_rows_per_chain(db_url)):
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        for i in (0, 1):
            drained = rest.index(f"cvault worker {i}: SIGTERM: health NOT_SERVING, draining")
            assert drained < rest.index(f"cvault worker {i}: stopped")
        assert "cvault: all workers stopped" in rest
        assert _gone(workers)
    per_chain = _rows_per_chain(db_url)
    assert set(per_chain) == {*chains, operator_chain()}
    verified = _cvault(openbao, "audit", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stderr
    for chain in chains:  # each worker checkpointed its chain when it stopped (issue 15)
        n = per_chain[chain]
        assert f"audit chain {chain}: OK, {n} rows verified against 1 checkpoint(s)" in (
            verified.stdout
        )
        assert f"the newest at seq {n} (written" in verified.stdout
    assert verified.stdout.count("; 0 rows after it") >= len(chains)


def test_a_worker_that_dies_stops_the_others_and_fails_the_server(
    openbao: OpenBaoDevServer, tmp_path: Path, db_url: str
) -> None:
    port = _free_port()
    proc, _ = _start(_config(tmp_path, openbao, db_url, port), openbao, "--workers", "2")
    workers = _children(proc.pid)
    with _stopped_at_the_end(proc):
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, rest
        assert f"(pid {victim}) exited with status -9; stopping the others" in rest
        assert _gone(workers)


def test_workers_need_a_fixed_port(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    done = _cvault(
        openbao, "serve", "--config", str(_config(tmp_path, openbao, url, 0)), "--workers", "2"
    )
    assert done.returncode == 2
    assert "--workers needs a fixed port" in done.stderr
