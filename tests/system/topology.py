"""The production topology on loopback: a three-node OpenBao Raft cluster with TLS, PostgreSQL
behind a TCP proxy that can be cut, and ``cvault serve`` replicas with mTLS.

Every process is started in a process group of its own (``start_new_session``) and registered
in a :class:`Processes` list, whose ``kill_all`` ends every group with SIGKILL: the fixture's
finalizer and a ``weakref.finalize`` call it, so nothing outlives the test, even on failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from vault.config import ServerSettings, Settings
from vault.devcerts import DevPki

REPO = Path(__file__).resolve().parents[2]
CVAULT = str(Path(sys.executable).with_name("cvault"))
KEY_PREFIX = "cvault"
APPROLE = "cvault"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without CVAULT_/BAO_/VAULT_ variables (they override settings files)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CVAULT_", "BAO_", "VAULT_", "REQUESTS_CA_BUNDLE"))
    }
    env.update(extra)
    return env


class ManagedProcess:
    """A subprocess in a process group of its own, its output appended to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._log_file: IO[bytes] = open(log, "ab")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (a no-op once it has exited)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def wait(self, timeout: float) -> int | None:
        """Wait for the exit; SIGKILL the group past ``timeout``. The exit status."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.proc.wait(timeout=10)
        # no killpg after the reap: the group's id could belong to someone else by now
        self._log_file.close()
        return code

    def kill(self) -> None:
        """SIGKILL the group and reap it."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def log_tail(self, limit: int = 3000) -> str:
        try:
            data = self.log.read_bytes()
        except OSError:
            return "<no log>"
        return data[-limit:].decode("utf-8", "replace")


class Processes:
    """Every process the topology started: ``kill_all`` ends the groups still running."""

    def __init__(self) -> None:
        self._all: list[ManagedProcess] = []
        self._lock = threading.Lock()

    def start(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str]
    ) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log, env)
        with self._lock:
            self._all.append(proc)
        return proc

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._all)
        for proc in procs:
            if not proc._log_file.closed:
                proc.kill()


# --- OpenBao ---------------------------------------------------------------------------------


def _hcl(value: str | Path) -> str:
    return json.dumps(str(value))


@dataclasses.dataclass
class BaoNode:
    """One OpenBao server of the cluster."""

    index: int
    api_port: int
    cluster_port: int
    directory: Path
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def node_id(self) -> str:
        return f"node{self.index}"


class OpenBaoCluster:
    """Three OpenBao servers on integrated Raft storage with TLS (not dev mode)."""

    def __init__(
        self, binary: str, base: Path, pki: DevPki, processes: Processes, size: int = 3
    ) -> None:
        self.binary = binary
        self.pki = pki
        self.processes = processes
        self.nodes = [
            BaoNode(i, free_port(), free_port(), base / f"bao{i}") for i in range(1, size + 1)
        ]
        self.root_token = ""
        self.unseal_key = ""
        self._ssl = ssl.create_default_context(cafile=str(pki.ca.cert))

    @property
    def ca(self) -> Path:
        return self.pki.ca.cert

    def _config(self, node: BaoNode) -> Path:
        (node.directory / "data").mkdir(parents=True, exist_ok=True)
        path = node.directory / "openbao.hcl"
        path.write_text(
            f'storage "raft" {{\n  path = {_hcl(node.directory / "data")}\n'
            f"  node_id = {_hcl(node.node_id)}\n"
            # the shortest election timeouts Raft allows: a new leader within ~2 s
            "  performance_multiplier = 1\n}\n"
            'listener "tcp" {\n'
            f"  address = {_hcl(f'127.0.0.1:{node.api_port}')}\n"
            f"  cluster_address = {_hcl(f'127.0.0.1:{node.cluster_port}')}\n"
            f"  tls_cert_file = {_hcl(self.pki.server.cert)}\n"
            f"  tls_key_file = {_hcl(self.pki.server.key)}\n"
            "}\n"
            f"api_addr = {_hcl(node.url)}\n"
            f"cluster_addr = {_hcl(f'https://127.0.0.1:{node.cluster_port}')}\n"
            "disable_mlock = true\n"
            "ui = false\n"
        )
        return path

    def bao_env(self, node: BaoNode, token: str = "") -> dict[str, str]:
        env = clean_env(BAO_ADDR=node.url, BAO_CACERT=str(self.ca))
        if token:
            env["BAO_TOKEN"] = token
        return env

    def bao(self, node: BaoNode, *args: str, token: str = "", timeout: float = 30) -> str:
        """Run the ``bao`` CLI against ``node``; its stdout."""
        done = subprocess.run(
            [self.binary, *args],
            env=self.bao_env(node, token),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bao {' '.join(args[:3])} failed: {done.stderr.strip()[-800:]}")
        return done.stdout

    def start_node(self, node: BaoNode) -> None:
        config = self._config(node)
        node.process = self.processes.start(
            f"openbao-{node.node_id}",
            [self.binary, "server", f"-config={config}"],
            node.directory / "server.log",
            clean_env(),
        )

    def health(self, node: BaoNode) -> dict[str, Any] | None:
        """``sys/health`` of one node (any status code), or None when it does not answer."""
        url = f"{node.url}/v1/sys/health?standbyok=true&sealedcode=200&uninitcode=200"
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=self._ssl) as response:  # noqa: S310
                body = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def wait_for(
        self, node: BaoNode, check: Callable[[dict[str, Any]], bool], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process is not None and not node.process.alive():
                raise RuntimeError(f"{node.node_id} exited:\n{node.process.log_tail()}")
            health = self.health(node)
            if health is not None and check(health):
                return
            time.sleep(0.1)
        tail = node.process.log_tail() if node.process else ""
        raise RuntimeError(f"{node.node_id}: not ready after {timeout:.0f} s:\n{tail}")

    def unseal(self, node: BaoNode) -> None:
        self.bao(node, "operator", "unseal", self.unseal_key)

    def start(self) -> None:
        """Start every node, init and unseal the first, join and unseal the others (they are
        standbys, not yet voters, when this returns)."""
        for node in self.nodes:
            self.start_node(node)
        first, *others = self.nodes
        self.wait_for(first, lambda h: True, 30)
        init = json.loads(
            self.bao(first, "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
        )
        self.unseal_key = str(init["unseal_keys_b64"][0])
        self.root_token = str(init["root_token"])
        self.unseal(first)
        self.wait_for(first, lambda h: h.get("standby") is False and not h.get("sealed"), 30)
        # autopilot promotes a joined node to voter once it has been healthy this long
        # (default 10 s): the cluster survives losing its leader only with three voters
        self.bao(
            first,
            "operator",
            "raft",
            "autopilot",
            "set-config",
            "-server-stabilization-time=1s",
            "-cleanup-dead-servers=false",
            token=self.root_token,
        )
        for node in others:
            self.wait_for(node, lambda h: True, 30)
            self.bao(node, "operator", "raft", "join", f"-leader-ca-cert=@{self.ca}", first.url)
            self.unseal(node)
        for node in others:
            self.wait_for(node, lambda h: h.get("sealed") is False, 60)
        # autopilot makes the joined nodes voters some seconds later: wait_for_peers() before
        # a fault that needs a quorum without the leader

    def wait_for_peers(self, voters: int, timeout: float) -> None:
        """Until the leader lists ``voters`` voting peers."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                try:
                    out = json.loads(
                        self.bao(
                            leader,
                            "operator",
                            "raft",
                            "list-peers",
                            "-format=json",
                            token=self.root_token,
                        )
                    )
                    servers = out["data"]["config"]["servers"]
                    if sum(1 for s in servers if s.get("voter")) >= voters:
                        return
                    last = json.dumps(servers)
                except (RuntimeError, KeyError, ValueError) as exc:
                    last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"raft peers not ready: {last}")

    def leader(self) -> BaoNode | None:
        """The active node, as the running nodes report it (None during an election)."""
        for node in self.nodes:
            if node.process is None or not node.process.alive():
                continue
            health = self.health(node)
            if health and health.get("standby") is False and health.get("sealed") is False:
                return node
        return None

    def kill(self, node: BaoNode) -> None:
        assert node.process is not None
        node.process.kill()

    def restart(self, node: BaoNode) -> None:
        """Start a killed node again on its data, and unseal it: it rejoins as a standby."""
        self.start_node(node)
        self.wait_for(node, lambda h: True, 30)
        self.unseal(node)
        self.wait_for(node, lambda h: h.get("sealed") is False, 60)

    def configure_for_cvault(self, runtime_policy: Path, keys_init_env: dict[str, str]) -> None:
        """What deploy/openbao/README.md has an operator do: policies, the field keys
        (``cvault keys init``), KV v2 for the audit checkpoints, the AppRole."""
        leader = self.leader()
        assert leader is not None
        token = self.root_token
        self.bao(leader, "policy", "write", "cvault-runtime", str(runtime_policy), token=token)
        self.bao(
            leader,
            "policy",
            "write",
            "cvault-admin",
            str(runtime_policy.with_name("admin-policy.hcl")),
            token=token,
        )
        init_help = subprocess.run(
            [CVAULT, "keys", "init", "--help"], capture_output=True, text=True, check=False
        ).stdout
        argv = [CVAULT, "keys", "init", "--url", leader.url, "--prefix", KEY_PREFIX]
        env = clean_env(BAO_TOKEN=token, **keys_init_env)
        if "--ca-cert" in init_help:
            argv += ["--ca-cert", str(self.ca)]
        else:
            # `cvault keys init` has no CA option yet (issue 12): requests reads this variable
            env["REQUESTS_CA_BUNDLE"] = str(self.ca)
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"cvault keys init failed: {done.stderr[-1500:]}")
        self.bao(leader, "secrets", "enable", "-path=secret", "kv-v2", token=token)
        self.bao(leader, "auth", "enable", "approle", token=token)
        self.bao(
            leader,
            "write",
            f"auth/approle/role/{APPROLE}",
            "token_policies=cvault-runtime",
            "token_ttl=1h",
            "token_max_ttl=24h",
            token=token,
        )

    def approle_credentials(self) -> tuple[str, str]:
        """(role_id, a fresh secret_id) of the service's AppRole."""
        leader = self.leader()
        assert leader is not None
        role_id = self.bao(
            leader,
            "read",
            "-field=role_id",
            f"auth/approle/role/{APPROLE}/role-id",
            token=self.root_token,
        ).strip()
        secret_id = self.bao(
            leader,
            "write",
            "-f",
            "-field=secret_id",
            f"auth/approle/role/{APPROLE}/secret-id",
            token=self.root_token,
        ).strip()
        return role_id, secret_id


# --- the database proxy ------------------------------------------------------------------------


class CuttableProxy:
    """A loopback TCP proxy (threads) in front of PostgreSQL that can be cut and restored.

    ``cut()`` closes the listener (new connections are refused) and shuts down every open
    connection both ways (the replicas' pooled connections die); ``restore()`` listens again on
    the same port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()  # cleared: a partition (bytes held, not lost)
        self._flowing.set()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    continue
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                for s in (src, dst):
                    if s in self._conns:
                        self._conns.discard(s)
                        s.close()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def partition(self) -> None:
        """Hold every byte both ways (connections stay open, nothing is refused): what a
        network partition looks like to PostgreSQL's clients. ``heal()`` lets them through."""
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._flowing.set()
        self.cut()


# --- cvault serve replicas ---------------------------------------------------------------------


def metrics_supported() -> bool:
    """Whether this version of vault.config has ``[metrics] listen``."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if "metrics" not in fields:
        return False
    default = getattr(Settings(), "metrics", None)
    return dataclasses.is_dataclass(default) and hasattr(default, "listen")


@dataclasses.dataclass
class Replica:
    """One ``cvault serve`` process and its settings file."""

    index: int
    port: int
    config: Path
    log: Path
    metrics_port: int | None = None
    process: ManagedProcess | None = None
    log_offset: int = 0  # where the current process's output begins in ``log``
    openbao_url: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def write_replica_config(
    replica: Replica,
    *,
    database_url: str,
    policy: Path,
    openbao_url: str,
    pki: DevPki,
    secrets: Path,
) -> None:
    """The replica's settings file: the shape of deploy/vault.example.toml, on loopback."""
    replica.openbao_url = openbao_url
    metrics = (
        f'\n[metrics]\nlisten = "127.0.0.1:{replica.metrics_port}"\n'
        if replica.metrics_port
        else ""
    )
    replica.config.write_text(
        f"listen = {_hcl(replica.address)}\n"
        f"database_url = {_hcl(database_url)}\n"
        f"policy = {_hcl(policy)}\n"
        "health_interval_seconds = 0.5\n"
        "max_workers = 16\n"
        "shutdown_grace_seconds = 3.0\n"
        "\n[openbao]\n"
        f"url = {_hcl(openbao_url)}\n"
        f'key_prefix = "{KEY_PREFIX}"\n'
        'auth = "approle"\n'
        f"role_id_file = {_hcl(secrets / 'role_id')}\n"
        f"secret_id_file = {_hcl(secrets / 'secret_id')}\n"
        "timeout_seconds = 5.0\n"
        f"ca_cert = {_hcl(pki.ca.cert)}\n"
        "\n[auth]\n"
        f"tls_cert_file = {_hcl(pki.server.cert)}\n"
        f"tls_key_file = {_hcl(pki.server.key)}\n"
        f"client_ca_file = {_hcl(pki.ca.cert)}\n"
        "require_client_auth = true\n"
        "\n[audit]\n"
        f'chain = "replica{replica.index}"\n'
        "\n[server]\n"
        "reflection = false\n"
        "open_streams = 4\n" + _drain() + metrics
    )


def _drain() -> str:
    """``[server] drain_seconds`` (SIGTERM: NOT_SERVING while still serving) when this version
    has it: 1 s is enough for clients that watch health."""
    fields = {f.name for f in dataclasses.fields(ServerSettings)}
    return "drain_seconds = 1.0\n" if "drain_seconds" in fields else ""


def start_replica(replica: Replica, processes: Processes) -> None:
    replica.log_offset = replica.log.stat().st_size if replica.log.exists() else 0
    replica.process = processes.start(
        f"replica{replica.index}",
        [CVAULT, "serve", "--config", str(replica.config)],
        replica.log,
        clean_env(PYTHONUNBUFFERED="1"),
    )


def wait_serving(replica: Replica, timeout: float) -> None:
    """Until the replica's log says it serves (it opens its port once ready)."""
    deadline = time.monotonic() + timeout
    assert replica.process is not None
    marker = f"serving vault.v1 on port {replica.port}"
    while time.monotonic() < deadline:
        if not replica.process.alive():
            raise RuntimeError(f"replica{replica.index} exited:\n{replica.process.log_tail()}")
        with contextlib.suppress(OSError), open(replica.log, "rb") as fh:
            fh.seek(replica.log_offset)
            if marker.encode() in fh.read():
                return
        time.sleep(0.1)
    raise RuntimeError(f"replica{replica.index} not serving:\n{replica.process.log_tail()}")


def fetch_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return bytes(response.read()).decode("utf-8", "replace")


def run_cvault(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run a ``cvault`` command; its stdout (raises with its stderr on failure)."""
    done = subprocess.run(
        [CVAULT, *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cvault {' '.join(args[:2])} failed: {done.stderr[-1500:]}")
    return done.stdout


__all__ = [
    "CVAULT",
    "REPO",
    "BaoNode",
    "CuttableProxy",
    "ManagedProcess",
    "OpenBaoCluster",
    "Processes",
    "Replica",
    "clean_env",
    "fetch_metrics",
    "free_port",
    "metrics_supported",
    "run_cvault",
    "start_replica",
    "wait_serving",
    "write_replica_config",
]
