"""How the processes start and stop (issue 12, "readiness tells the truth").

- ``cvault dev`` stops, OpenBao included, when its terminal closes (SIGHUP); a SIGKILL of it
  takes OpenBao along; and an OpenBao a crashed run left behind no longer blocks the next start
  (``failed to open bolt file: timeout``).
- ``cvault serve`` on SIGTERM first says NOT_SERVING while it still serves for
  ``[server] drain_seconds``, then refuses new calls and stops, each step logged.
- A busy port is an error unless ``--reuse-port`` asks to share it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support import ADMIN_KEY, API_KEYS, TEST_POLICY, bao_pids, repo_root
from vault.client import VaultClient
from vault.errors import Unavailable
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import upgrade

pytestmark = [pytest.mark.openbao, pytest.mark.slow]

CVAULT = [sys.executable, "-m", "vault.cli"]


def _start_dev(state: Path, seen: list[str] | None = None) -> subprocess.Popen[str]:
    """Start ``cvault dev``; what it printed until it served goes into ``seen``."""
    proc = subprocess.Popen(
        [*CVAULT, "--state-dir", str(state), "dev", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    out = seen if seen is not None else []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("cvault dev: serving"):
            return proc
    proc.kill()
    raise AssertionError("cvault dev did not start:\n" + "".join(out)[-4000:])


def _gone(pids: set[int], within: float = 15.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not {p for p in pids if Path(f"/proc/{p}/cmdline").exists()}:
            return True
        time.sleep(0.1)
    return False


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_closing_the_terminal_stops_dev_and_its_openbao(tmp_path: Path) -> None:
    proc = _start_dev(tmp_path / ".cvault")
    started = bao_pids(proc.pid)
    try:
        assert started
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "cvault dev: SIGHUP" in out
        assert _gone(started), "OpenBao was left running"
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started)


def test_a_killed_dev_takes_openbao_along_and_starts_again(tmp_path: Path) -> None:
    state = tmp_path / ".cvault"
    proc = _start_dev(state)
    started = bao_pids(proc.pid)
    try:
        assert started
        proc.kill()
        proc.communicate(timeout=10)
        assert _gone(started), "OpenBao outlived a SIGKILL of cvault dev"
        again = _start_dev(state)
        again.send_signal(signal.SIGINT)
        out, _ = again.communicate(timeout=60)
        assert again.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(started)


def test_an_openbao_left_by_a_crashed_run_is_stopped_at_the_next_start(tmp_path: Path) -> None:
    """A run that died without its OpenBao noticing (an older cvault, or a parent that is not
    cvault): the server still holds the Raft database; the next start stops it first."""
    state = tmp_path / ".cvault"
    state.mkdir(mode=0o700)
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from vault.keys.openbao_dev import OpenBaoDevServer\n"
        "bao = OpenBaoDevServer(persistent_dir=Path(sys.argv[1]))\n"
        "bao.start()\n"
        "print(bao._proc.pid, flush=True)\n"
        "os._exit(0)  # a crash: no stop, the server stays\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(state / "openbao")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root(),
    )
    assert done.returncode == 0, done.stderr
    orphan = {int(done.stdout.split()[-1])}
    try:
        assert not _gone(orphan, within=0.5), "the orphan should still run"
        seen: list[str] = []
        proc = _start_dev(state, seen)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "left running by a previous run" in "".join(seen)
        assert _gone(orphan)
    finally:
        _kill_all(orphan)


# --- cvault serve ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_config(tmp_path: Path, openbao: OpenBaoDevServer, port: int, drain: float) -> Path:
    db = tmp_path / "serve.db"
    if not db.exists():
        upgrade(f"sqlite:///{db}")
    salt, digest = API_KEYS["test-admin"][1]["salt"], API_KEYS["test-admin"][1]["hash"]
    config = tmp_path / f"serve-{port}-{drain:g}.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'database_url = "sqlite:///{db}"\n'
        f'policy = "{TEST_POLICY}"\n'
        "health_interval_seconds = 0.2\n"
        f'[openbao]\nurl = "{openbao.url}"\n'
        f"[server]\ndrain_seconds = {drain}\n"
        f'[auth.api_keys.test-admin]\nprincipal = "apikey:test-admin"\n'
        f'salt = "{salt}"\nhash = "{digest}"\n'
    )
    return config


def _start_serve(config: Path, openbao: OpenBaoDevServer, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVAULT_")}
    env["CVAULT_OPENBAO_TOKEN"] = openbao.root_token
    proc = subprocess.Popen(
        [*CVAULT, "serve", "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=repo_root(),
    )
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("cvault: serving vault.v1"):
            return proc
    proc.wait(timeout=30)
    raise AssertionError("cvault serve did not start:\n" + "".join(out)[-4000:])


def _health(address: str) -> str:
    try:
        with VaultClient(address, timeout=2) as vc:
            return vc.health()
    except Unavailable:
        return "UNAVAILABLE"


def test_sigterm_says_not_serving_while_it_drains_then_stops(
    openbao: OpenBaoDevServer, tmp_path: Path
) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    proc = _start_serve(_serve_config(tmp_path, openbao, port, drain=3), openbao)
    try:
        assert _health(address) == "SERVING"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while _health(address) != "NOT_SERVING":
            assert time.monotonic() - sent < 2.0, "health did not turn NOT_SERVING at once"
            time.sleep(0.05)
        # still serving calls while the balancers move away
        with VaultClient(address, api_key=ADMIN_KEY, timeout=5) as vc:
            assert vc.find_records("demo", {"email": "drain@example.com"}) == []
        assert time.monotonic() - sent < 3.0, "the drain is over already: the test is too slow"
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    drained = out.index("cvault: SIGTERM: health NOT_SERVING, draining for 3 s")
    refused = out.index("cvault: refusing new calls; calls in flight get")
    assert drained < refused < out.index("cvault: stopped")


def test_sigterm_writes_a_final_audit_checkpoint(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    """The rows a server appended since its last checkpoint are checkpointed when it stops:
    ``audit verify`` then finds no row of its chain after the newest checkpoint."""
    port = _free_port()
    config = _serve_config(tmp_path, openbao, port, drain=0)
    kv = f"cvault/test-stop/{uuid.uuid4().hex[:12]}"
    config.write_text(config.read_text() + f'[audit]\nchain = "stopping"\nkv_path = "{kv}"\n')
    proc = _start_serve(config, openbao)
    try:
        with VaultClient(f"127.0.0.1:{port}", api_key=ADMIN_KEY, timeout=5) as vc:
            for i in range(3):
                vc.find_records("demo", {"email": f"stop{i}@example.com"})
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    env = dict(os.environ, CVAULT_OPENBAO_TOKEN=openbao.root_token)
    verify = subprocess.run(
        [*CVAULT, "audit", "verify", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=repo_root(),
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    (served,) = [r for r in json.loads(verify.stdout) if r["chain"] == "stopping"]
    assert served["last_seq"] >= 3
    assert served["checkpoint_seq"] == served["last_seq"]
    assert served["rows_after_checkpoint"] == 0


def test_a_busy_port_is_an_error_unless_shared_on_purpose(
    openbao: OpenBaoDevServer, tmp_path: Path
) -> None:
    port = _free_port()
    first = _start_serve(_serve_config(tmp_path, openbao, port, drain=0), openbao)
    procs = [first]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CVAULT_")}
        env["CVAULT_OPENBAO_TOKEN"] = openbao.root_token
        refused = subprocess.run(
            [*CVAULT, "serve", "--config", str(_serve_config(tmp_path, openbao, port, 0))],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=repo_root(),
        )
        assert refused.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in refused.stderr
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
        # both started with --reuse-port: they share the port on purpose
        config = _serve_config(tmp_path, openbao, port, drain=0)
        procs = [_start_serve(config, openbao, "--reuse-port") for _ in range(2)]
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=30)
