"""Issue 12, part 2: the production topology on loopback, under a steady mixed load and faults.

Three OpenBao nodes (Raft, TLS, AppRole, the runtime policy), PostgreSQL behind a proxy with
the runtime role, three ``cvault serve`` replicas with mTLS, clients on one channel with
round-robin, client-side health checking and a retry policy on UNAVAILABLE. Faults, in order:
kill -9 of the OpenBao leader, kill -9 of a replica (then started again), a rolling restart with
a migration between, a 10 s PostgreSQL cut. Asserted: no acknowledged write lost, no wrong
value, no failure outside what each fault excuses, health that tells the truth; the recovery
table goes to the terminal summary.

What each fault excuses (a failure is a call's final status, after the retry policy; a call
is excused when it was in flight at some moment of the fault's window):
- OpenBao leader kill: UNAVAILABLE, from the kill until 5 s after the killed node is back
  (``[openbao] url`` is one address: the replica on the killed node has no key server until
  it returns; it says NOT_SERVING and client-side health checking takes it out of rotation).
- replica kill -9, rolling restart: nothing. Round-robin over the others plus the retry policy
  must hide a dead or draining replica entirely.
- PostgreSQL cut: UNAVAILABLE or DEADLINE_EXCEEDED, from the cut until 8 s after the restore.

A second test partitions PostgreSQL instead (connections stay open, nothing answers): every
replica must say NOT_SERVING within 4 s (before the probe had its own timeout, health stayed
SERVING through it while calls waited for their deadline).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import psycopg
import pytest
from alembic import command
from alembic.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.system.load import (
    REPORT_LINES,
    Fault,
    Ledger,
    Load,
    balanced_channel,
    direct_channel,
    recoveries,
    retry_unknown_creates,
    table,
    unexpected_failures,
    values_in,
    verify_all,
)
from tests.system.stack import (
    CLIENT_ROLE,
    Topology,
    leftover_processes,
    run_operator,
    running_topology,
)
from tests.system.topology import fetch_metrics, start_replica, wait_serving
from vault.storage import grant_runtime_role, migrations_dir, normalize_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.openbao]

BASELINE_SECONDS = 4.0
#: what a scrape of a replica under load must show (issue 12, "Observability")
METRIC_FAMILIES = (
    "cvault_rpc_total",
    "cvault_rpc_duration_seconds_bucket",
    "cvault_key_server_calls_total",
    "cvault_key_server_duration_seconds_bucket",
    "cvault_key_cache_lookups_total",
    "cvault_audit_append_duration_seconds_bucket",
)
PG_CUT_SECONDS = 10.0


#: the next release's migration (additive: a table and a nullable column), revision 9001
NEXT_MIGRATION = Path(__file__).resolve().parent / "next_migration"


def apply_next_migration(database_url: str, runtime_role: str = "") -> None:
    """The migration applied between the restarts of the rolling upgrade: the next release's
    (``next_migration/``, revision 9001 after this release's head), as its owner, while the
    replicas of this release serve. They must keep serving on it (``schema_compat`` says a
    server of this release still works with it) and start on it; before N-1 compatibility a
    replica restarted on it refused to start ("run cvault db upgrade")."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    locations = os.pathsep.join([str(migrations_dir() / "versions"), str(NEXT_MIGRATION)])
    config.set_main_option("version_locations", locations)
    command.upgrade(config, "9001")
    if runtime_role:
        grant_runtime_role(database_url, runtime_role)


class HealthWatch:
    """Polls every replica's gRPC health (Check, overall service) directly, 4 times a second."""

    def __init__(self, topo: Topology) -> None:
        pki = topo.pki
        pair = pki.clients[CLIENT_ROLE]
        self._channels = [
            direct_channel(r.address, pki.ca.cert, pair.cert, pair.key) for r in topo.replicas
        ]
        self.samples: list[tuple[float, int, str]] = []  # (time, replica index, status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for channel in self._channels:
            channel.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, channel in enumerate(self._channels, start=1):
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                except grpc.RpcError:
                    status = "UNREACHABLE"
                self.samples.append((time.monotonic(), i, status))
            self._stop.wait(0.25)

    def statuses(self, replica: int, start: float, end: float) -> list[str]:
        return [s for t, i, s in self.samples if i == replica and start <= t <= end]

    def first(self, replica: int, status: str, after: float) -> float | None:
        return next(
            (t - after for t, i, s in self.samples if i == replica and t >= after and s == status),
            None,
        )


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _openbao_leader_kill(topo: Topology, faults: list[Fault], health: HealthWatch) -> None:
    cluster = topo.cluster
    cluster.wait_for_peers(3, 30)  # three voters: a quorum is left without the leader
    leader = cluster.leader()
    assert leader is not None, "no active OpenBao node"
    fault = Fault(
        f"openbao leader {leader.node_id} kill -9",
        time.monotonic(),
        allowed=frozenset({"UNAVAILABLE"}),
        margin=5.0,
    )
    faults.append(fault)
    cluster.kill(leader)
    # the replica whose only OpenBao URL is the killed node
    orphan = next(r for r in topo.replicas if r.openbao_url == leader.url)
    new = None
    while time.monotonic() - fault.start < 30:
        new = cluster.leader()
        if new is not None:
            break
        time.sleep(0.05)
    assert new is not None, "no new OpenBao leader within 30 s"
    fault.notes.append(f"new leader {new.node_id} after {time.monotonic() - fault.start:.2f} s")
    _sleep_until(fault.start + 5.0)
    cluster.restart(leader)
    fault.end = time.monotonic()
    fault.notes.append(
        f"{leader.node_id} back (unsealed standby) at {fault.end - fault.start:.2f} s"
    )
    cluster.wait_for_peers(3, 30)
    seen = set(health.statuses(orphan.index, fault.start + 2.0, fault.end))
    fault.notes.append(
        f"replica{orphan.index} (OpenBao URL of {leader.node_id}) health while it was down: "
        f"{sorted(seen)}"
    )


def _replica_kill(topo: Topology, faults: list[Fault]) -> None:
    replica = topo.replicas[1]
    fault = Fault(f"replica{replica.index} kill -9 + start", time.monotonic())
    faults.append(fault)
    assert replica.process is not None
    replica.process.kill()
    time.sleep(2.0)
    started = time.monotonic()
    start_replica(replica, topo.processes)
    wait_serving(replica, 60)
    fault.end = time.monotonic()
    fault.notes.append(
        f"replica{replica.index} down {started - fault.start:.1f} s, "
        f"serving {fault.end - started:.2f} s after its start"
    )


def _rolling_restart(topo: Topology, faults: list[Fault]) -> None:
    fault = Fault("rolling restart + migration", time.monotonic())
    faults.append(fault)
    for n, replica in enumerate(topo.replicas):
        assert replica.process is not None
        began = time.monotonic()
        replica.process.signal(signal.SIGTERM)
        code = replica.process.wait(30)
        stopped = time.monotonic()
        if n == 0:
            apply_next_migration(topo.owner_url, topo.runtime_role)
        start_replica(replica, topo.processes)
        wait_serving(replica, 60)
        fault.notes.append(
            f"replica{replica.index}: SIGTERM to exit {stopped - began:.2f} s (status {code}), "
            f"start to serving {time.monotonic() - stopped:.2f} s"
        )
        time.sleep(1.0)
    fault.end = time.monotonic()


def _postgres_cut(topo: Topology, faults: list[Fault], health: HealthWatch) -> None:
    fault = Fault(
        f"postgresql cut {PG_CUT_SECONDS:g} s",
        time.monotonic(),
        allowed=frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"}),
        margin=8.0,
    )
    faults.append(fault)
    topo.proxy.cut()
    time.sleep(PG_CUT_SECONDS)
    topo.proxy.restore()
    fault.end = time.monotonic()
    time.sleep(6.0)
    for r in topo.replicas:
        down = health.first(r.index, "NOT_SERVING", fault.start)
        up = health.first(r.index, "SERVING", fault.end)
        fault.notes.append(
            f"replica{r.index} health: NOT_SERVING after "
            f"{'never' if down is None else f'{down:.2f} s'}, SERVING again "
            f"{'never' if up is None else f'{up:.2f} s'} after the restore"
        )


def _scan_logs(topo: Topology, ledger: Ledger) -> list[str]:
    """Customer values of this run found in the replicas' logs (there must be none)."""
    leaked: list[str] = []
    for r in topo.replicas:
        text = r.log.read_text(errors="replace")
        leaked += [f"replica{r.index}.log: {v}" for v in values_in(text, ledger)]
    return leaked


def _key_server_metrics(topo: Topology, ledger: Ledger, extra: list[str], when: str) -> list[str]:
    """Key-server calls by operation and outcome, summed over the replicas (since each one's
    last start), from their /metrics; and the customer values found there (none allowed)."""
    totals: dict[str, float] = {}
    leaked: list[str] = []
    for r in topo.replicas:
        if not r.metrics_port:
            return []
        text = fetch_metrics(r.metrics_port)
        leaked += [f"replica{r.index} metrics: {v}" for v in values_in(text, ledger)]
        for line in text.splitlines():
            if line.startswith("cvault_key_server_calls_total{"):
                labels, _, value = line.rpartition(" ")
                key = labels.removeprefix("cvault_key_server_calls_total")
                totals[key] = totals.get(key, 0.0) + float(value)
    extra.append(
        f"key-server calls {when}, since each replica's start: "
        + (", ".join(f"{k} {v:g}" for k, v in sorted(totals.items())) or "none")
    )
    return leaked


def _stop_replicas(topo: Topology, extra: list[str]) -> list[int | None]:
    """SIGTERM every replica at once, as at the end of a deployment: their exit statuses."""
    began = time.monotonic()
    for r in topo.replicas:
        assert r.process is not None
        r.process.signal(signal.SIGTERM)
    codes = [r.process.wait(30) if r.process else None for r in topo.replicas]
    extra.append(f"final SIGTERM of all replicas: exit {codes} in {time.monotonic() - began:.1f} s")
    return codes


def _audit_after(topo: Topology, extra: list[str]) -> bool:
    """Rows per audit chain (one chain per replica: each served calls) and ``cvault audit
    verify`` over every chain after the kills and the cut. Whether it verified."""
    with psycopg.connect(topo.owner_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT chain, count(*) FROM audit_events GROUP BY chain ORDER BY chain"
        ).fetchall()
    extra.append("audit rows per chain: " + ", ".join(f"{c}={n}" for c, n in rows))
    try:
        out = run_operator(topo.base, topo.cluster, topo.owner_url, topo.notes, "audit", "verify")
    except RuntimeError as exc:
        extra.append(f"cvault audit verify FAILED: {str(exc)[-600:]}")
        return False
    extra.append("cvault audit verify: " + " | ".join(out.strip().splitlines()[-4:]))
    return True


def _report(
    faults: Sequence[Fault], ledger: Ledger, run_end: float, extra: Sequence[str]
) -> list[str]:
    rows = recoveries(faults, ledger.calls, run_end)
    lines = [
        f"{len(ledger.calls)} calls, {len(ledger.acked)} acknowledged creates, "
        f"{len(ledger.tokens)} tokens; seconds from each fault's start"
    ]
    lines += table(rows, faults)
    lines += list(extra)
    return lines


def test_production_topology_survives_faults(tmp_path: Path) -> None:
    """The four faults in order under the mixed load (module docstring: what each excuses)."""
    base = tmp_path
    ledger = Ledger()
    faults: list[Fault] = []
    extra: list[str] = []
    lost: list[str] = []
    wrong: list[str] = []
    leaked: list[str] = []
    health_problems: list[str] = []
    setup_start = time.monotonic()
    with running_topology(base) as topo:
        extra.append(
            f"setup (3 OpenBao nodes, database, 3 replicas): {time.monotonic() - setup_start:.1f} s"
        )
        pair = topo.pki.clients[CLIENT_ROLE]
        channel = balanced_channel(topo.addresses, topo.pki.ca.cert, pair.cert, pair.key)
        health = HealthWatch(topo)
        health.start()
        load = Load(channel, ledger, cold_tenants=topo.cold_tenants)
        try:
            faults.append(Fault("baseline (no fault)", time.monotonic()))
            load.start()
            time.sleep(BASELINE_SECONDS)
            metrics_port = topo.replicas[0].metrics_port
            if metrics_port:
                text = fetch_metrics(metrics_port)
                extra.append(
                    f"metrics of replica1: {len(text.splitlines())} lines; "
                    f"customer values in it: {len(values_in(text, ledger))}"
                )
                leaked += [f"metrics: {v}" for v in values_in(text, ledger)]
                missing = [f for f in METRIC_FAMILIES if f"\n{f}" not in text]
                assert not missing, f"metrics families missing under load: {missing}"
            else:
                extra.append("metrics: no [metrics] listen setting in vault.config yet: skipped")
            _openbao_leader_kill(topo, faults, health)
            leaked += _key_server_metrics(topo, ledger, extra, "after the OpenBao fault")
            time.sleep(2.0)
            _replica_kill(topo, faults)
            time.sleep(2.0)
            _rolling_restart(topo, faults)
            time.sleep(2.0)
            _postgres_cut(topo, faults, health)
        finally:
            load.stop()
            run_end = time.monotonic()
            health.stop()
        committed, fresh, retry_problems = retry_unknown_creates(channel, ledger)
        extra.append(
            f"failed creates retried with their idempotency key: {committed + fresh} "
            f"({committed} had committed, {fresh} had not); problems: {len(retry_problems)}"
        )
        lost, wrong = verify_all(channel, ledger)
        channel.close()
        cut = faults[-1]
        for r in topo.replicas:
            during = health.statuses(r.index, cut.start + 3.0, cut.end)
            if "SERVING" in during:
                health_problems.append(f"replica{r.index} reported SERVING with PostgreSQL cut off")
            if health.first(r.index, "SERVING", cut.end) is None:
                health_problems.append(f"replica{r.index} never SERVING after the restore")
        leaked += _key_server_metrics(topo, ledger, extra, "at the end")
        audit_ok = _audit_after(topo, extra)
        stop_codes = _stop_replicas(topo, extra)
        leaked += _scan_logs(topo, ledger)
        replica_logs = {r.index: r.log for r in topo.replicas}
    leftovers = leftover_processes(base)
    unexpected = unexpected_failures(faults, ledger.calls)
    lines = _report(faults, ledger, run_end, extra)
    lines.append(
        f"lost acknowledged writes/tokens: {len(lost)}; wrong values: "
        f"{len(wrong) + len(ledger.wrong)}; unexpected failures: {len(unexpected)}"
    )
    by_kind: dict[str, int] = {}
    for c in unexpected:
        key = f"{c.kind} {c.code} {c.detail[:90]}"
        by_kind[key] = by_kind.get(key, 0) + 1
    lines += [f"  unexpected x{n}: {k}" for k, n in sorted(by_kind.items())]
    lines += [f"  health: {p}" for p in health_problems]
    lines += [f"note: {n}" for n in topo.notes if f"note: {n}" not in lines]
    lines.append(f"customer values found in replica logs and /metrics: {len(leaked)}")
    lines.append(f"logs: {', '.join(str(p) for p in replica_logs.values())}")
    REPORT_LINES.append(
        "== faults in order: OpenBao leader, replica, rolling restart, PostgreSQL cut"
    )
    REPORT_LINES.extend(lines)

    assert not ledger.crashes, ledger.crashes
    assert not leftovers, f"processes left running: {leftovers}"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert not wrong, wrong[:5]
    assert not ledger.wrong, ledger.wrong[:5]
    assert not leaked, leaked[:5]
    assert not retry_problems, retry_problems[:5]
    assert len(ledger.acked) > 50, "the load did not run"
    assert not unexpected, "\n".join(lines)
    assert not health_problems, health_problems
    assert audit_ok, "cvault audit verify failed after the faults"
    assert stop_codes == [0] * len(stop_codes), f"replicas exited with {stop_codes} on SIGTERM"


class HealthLies(AssertionError):
    """A replica said SERVING while it could not serve."""


def test_postgres_partition_health(tmp_path: Path) -> None:
    """PostgreSQL partitioned for 10 s (the proxy holds every byte; nothing is refused), as
    a network partition or a stalled database looks to the replicas. Calls may fail with
    DEADLINE_EXCEEDED or UNAVAILABLE while in flight during it or until 8 s after; nothing
    acknowledged may be lost or wrong; every replica must report NOT_SERVING within 4 s (the
    balancer's cue) and serve again after the heal."""
    ledger = Ledger()
    faults: list[Fault] = []
    with running_topology(tmp_path) as topo:
        pair = topo.pki.clients[CLIENT_ROLE]
        channel = balanced_channel(topo.addresses, topo.pki.ca.cert, pair.cert, pair.key)
        health = HealthWatch(topo)
        health.start()
        load = Load(channel, ledger)
        try:
            faults.append(Fault("baseline (no fault)", time.monotonic()))
            load.start()
            time.sleep(3.0)
            fault = Fault(
                f"postgresql partition {PG_CUT_SECONDS:g} s",
                time.monotonic(),
                allowed=frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"}),
                margin=8.0,
            )
            faults.append(fault)
            topo.proxy.partition()
            time.sleep(PG_CUT_SECONDS)
            topo.proxy.heal()
            fault.end = time.monotonic()
            time.sleep(8.0)
        finally:
            load.stop()
            run_end = time.monotonic()
            health.stop()
        committed, fresh, retry_problems = retry_unknown_creates(channel, ledger)
        lost, wrong = verify_all(channel, ledger)
        channel.close()
        lies: list[str] = []
        for r in topo.replicas:
            during = health.statuses(r.index, fault.start + 4.0, fault.end)
            down = health.first(r.index, "NOT_SERVING", fault.start)
            up = health.first(r.index, "SERVING", fault.end)
            fault.notes.append(
                f"replica{r.index} health during the partition: {sorted(set(during))}; "
                f"NOT_SERVING after {'never' if down is None else f'{down:.2f} s'}; "
                f"SERVING {'never' if up is None else f'{up:.2f} s'} after the heal"
            )
            if "SERVING" in during:
                lies.append(f"replica{r.index} said SERVING with PostgreSQL partitioned")
        stop_codes = _stop_replicas(topo, fault.notes)
        leaked = _scan_logs(topo, ledger)
    leftovers = leftover_processes(tmp_path)
    unexpected = unexpected_failures(faults, ledger.calls)
    lines = _report(
        faults,
        ledger,
        run_end,
        [
            f"failed creates retried with their idempotency key: {committed + fresh} "
            f"({committed} had committed, {fresh} had not); problems: {len(retry_problems)}",
            f"lost: {len(lost)}; wrong values: {len(wrong) + len(ledger.wrong)}; "
            f"unexpected failures: {len(unexpected)}",
        ],
    )
    REPORT_LINES.append("== PostgreSQL partition (bytes held, nothing refused)")
    REPORT_LINES.extend(lines)
    assert not ledger.crashes, ledger.crashes
    assert not leftovers, f"processes left running: {leftovers}"
    assert not lost, lost[:5]
    assert not wrong, wrong[:5]
    assert not ledger.wrong, ledger.wrong[:5]
    assert not retry_problems, retry_problems[:5]
    assert not unexpected, "\n".join(lines)
    assert stop_codes == [0] * len(stop_codes), stop_codes
    assert not leaked, leaked[:5]
    recovered = [r for r in recoveries(faults, ledger.calls, run_end) if r.fault == fault.name]
    assert all(r.steady is not None for r in recovered), "calls did not recover after the heal"
    if lies:
        raise HealthLies("; ".join(lies))
