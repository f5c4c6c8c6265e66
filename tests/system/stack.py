"""The whole production topology of the system test, started and torn down as one context
manager (:func:`running_topology`)."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import dataclasses
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import IN_CI, POSTGRES_URL, SAMPLE_POLICY
from tests.system.topology import (
    REPO,
    CuttableProxy,
    OpenBaoCluster,
    Processes,
    Replica,
    clean_env,
    free_port,
    metrics_supported,
    run_cvault,
    start_replica,
    wait_serving,
    write_replica_config,
)
from vault.devcerts import DevPki, generate_dev_pki
from vault.keys.openbao_dev import OpenBaoDevError, find_bao_binary

REPLICAS = 3
CLIENT_ROLE = "backend-service"
#: enough for one write to a new tenant every COLD_PAUSE seconds of the run
COLD_TENANTS = 160


@dataclasses.dataclass
class Topology:
    """What the system test drives."""

    base: Path
    pki: DevPki
    processes: Processes
    cluster: OpenBaoCluster
    proxy: CuttableProxy
    owner_url: str
    runtime_role: str
    replicas: list[Replica]
    notes: list[str]
    cold_tenants: list[str]  # tenants no replica has used yet (their keys are in no cache)

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.replicas]


def _admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at CVAULT_TEST_POSTGRES_URL: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)


@contextlib.contextmanager
def _database() -> Iterator[tuple[str, str]]:
    """A fresh database and runtime role name of this run's own: (owner URL, role); both dropped
    afterwards."""
    suffix = uuid.uuid4().hex[:10]
    name, role = f"cvault_sys_{suffix}", f"cvault_sys_rt_{suffix}"
    with _admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}", role
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as again:
            again.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            again.execute(f'DROP ROLE IF EXISTS "{role}"')


def _policy(base: Path) -> Path:
    """The sample policy (principals reaching every tenant), with backend-service's plaintext
    limits raised so that the load never meets them (limits are not what is tested here)."""
    text = SAMPLE_POLICY.read_text(encoding="utf-8")
    text = re.sub(r"plain_per_minute: 6000", "plain_per_minute: 6000000", text)
    path = base / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run_operator(
    base: Path, cluster: OpenBaoCluster, owner_url: str, notes: list[str], *args: str
) -> str:
    """An operator command (``cvault <args> --config operator.toml``) with the admin token and
    the CA; when it ignores ``[openbao] ca_cert``, again with REQUESTS_CA_BUNDLE, noted."""
    leader = cluster.leader()
    assert leader is not None
    config = base / "operator.toml"
    config.write_text(
        f'database_url = "{owner_url}"\n[openbao]\nurl = "{leader.url}"\n'
        f'auth = "token"\nca_cert = "{cluster.ca}"\n'
    )
    env = clean_env(CVAULT_OPENBAO_TOKEN=cluster.root_token)
    try:
        return run_cvault(*args, "--config", str(config), env=env)
    except RuntimeError as exc:
        if "CERTIFICATE_VERIFY_FAILED" not in str(exc) and "SSLError" not in str(exc):
            raise
        notes.append(
            f"cvault {' '.join(args[:2])} ignores [openbao] ca_cert (issue 12): "
            "ran it with REQUESTS_CA_BUNDLE"
        )
        env["REQUESTS_CA_BUNDLE"] = str(cluster.ca)
        return run_cvault(*args, "--config", str(config), env=env)


@contextlib.contextmanager
def running_topology(base: Path) -> Iterator[Topology]:
    """Start everything; on exit (even on failure) stop every process and drop the database."""
    try:
        binary = find_bao_binary()
    except OpenBaoDevError as exc:
        pytest.skip(str(exc))
    processes = Processes()
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        pki = generate_dev_pki(base / "pki", roles=[CLIENT_ROLE])
        owner_url, role = stack.enter_context(_database())
        # unwound first: every process ends before the database is dropped
        stack.callback(processes.kill_all)
        # and should the interpreter exit without unwinding (an interrupted run)
        atexit.register(processes.kill_all)
        stack.callback(atexit.unregister, processes.kill_all)
        cluster = OpenBaoCluster(binary, base, pki, processes)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # the schema and the runtime role while OpenBao starts (neither needs the other)
            upgraded = pool.submit(
                run_cvault, "db", "upgrade", "--database-url", owner_url, "--runtime-role", role
            )
            cluster.start()
            upgraded.result()
        cluster.configure_for_cvault(REPO / "deploy" / "openbao" / "runtime-policy.hcl", {})
        secrets = base / "secrets"
        secrets.mkdir(mode=0o700)
        role_id, secret_id = cluster.approle_credentials()
        for name, value in (("role_id", role_id), ("secret_id", secret_id)):
            (secrets / name).write_text(value + "\n")
            (secrets / name).chmod(0o600)
        cold = [f"cold-{i:03d}" for i in range(COLD_TENANTS)]
        run_operator(base, cluster, owner_url, notes, "tenants", "create", "demo", *cold)
        admin_host = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
        host, _, port = admin_host.partition(":")
        proxy = CuttableProxy((host, int(port or 5432)))
        stack.callback(proxy.close)
        db_name = owner_url.rsplit("/", 1)[1]
        runtime_url = f"postgresql://{role}@127.0.0.1:{proxy.port}/{db_name}"
        policy = _policy(base)
        with_metrics = metrics_supported()
        replicas = []
        for i in range(1, REPLICAS + 1):
            replica = Replica(
                i,
                free_port(),
                base / f"replica{i}.toml",
                base / f"replica{i}.log",
                metrics_port=free_port() if with_metrics else None,
            )
            # each replica talks to its own OpenBao node: a standby forwards to the active one
            write_replica_config(
                replica,
                database_url=runtime_url,
                policy=policy,
                openbao_url=cluster.nodes[(i - 1) % len(cluster.nodes)].url,
                pki=pki,
                secrets=secrets,
            )
            start_replica(replica, processes)
            replicas.append(replica)
        for replica in replicas:
            wait_serving(replica, 60)
        yield Topology(base, pki, processes, cluster, proxy, owner_url, role, replicas, notes, cold)


def leftover_processes(base: Path) -> list[str]:
    """Processes whose command line names the test's folder (``pgrep -af``)."""
    done = subprocess.run(["pgrep", "-af", str(base)], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if line.strip()]
