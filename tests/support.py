"""Helpers shared by tests (importable as ``tests.support``; fixtures live in conftest)."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import grpc
import psycopg
import pytest

from vault.api._authn import ApiKeyStore, Authenticator, new_api_key
from vault.audit import AuditLog, AuditSink, MemoryCheckpointStore
from vault.identity import AuthMethod, Principal
from vault.keys import KeyManager, TokenAuth, TransitKeyWrapper, init_field_keys
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import PolicyHolder
from vault.schema import load_schema
from vault.service import Access, Caller, Core, RecordsService
from vault.storage import Database, repo, upgrade

POSTGRES_URL = os.environ.get(
    "CVAULT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FIELD_CLASSES = (
    "email",
    "phone",
    "name",
    "address",
    "date_of_birth",
    "national_id",
    "card_number",
    "iban",
    "free_text",
    "ip_address",
)
KEY_PREFIX = "cvault"
TEST_POLICY = Path(__file__).resolve().parent / "data" / "policy.yaml"
#: the sample policy as shipped: its dev keys reach tenant "demo" (and "other")
DEPLOYED_SAMPLE_POLICY = (
    Path(__file__).resolve().parent.parent / "deploy" / "policy" / "sample-policy.yaml"
)


def _widened_sample_policy() -> Path:
    """The sample policy with its dev principals reaching every tenant (tests use tenants of
    their own), except ``dev-other-backend-service``, which keeps tenant "other" only: the
    principal of another tenant in the tests of tenant scoping."""
    text = re.sub(
        r"tenants: \[demo(?:, other)?\]",
        'tenants: ["*"]',
        DEPLOYED_SAMPLE_POLICY.read_text(encoding="utf-8"),
    )
    folder = Path(tempfile.mkdtemp(prefix="cvault-test-policy-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "sample-policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


#: the sample policy's roles, with the dev principals reaching every tenant
SAMPLE_POLICY = _widened_sample_policy()
#: the sample policy's principal of another tenant ("other")
OTHER_TENANT_KEY_ID = "dev-other-backend-service"
TEST_PURPOSE = "testing"

# API keys for every principal of the test policy that uses one: key id -> (key, stored entry)
API_KEYS: dict[str, tuple[str, dict[str, str]]] = {
    key_id: new_api_key(key_id)
    for key_id in (
        "test-admin",
        "test-tokens",
        *(
            f"dev-{role}"
            for role in (
                "backend-service",
                "support-agent",
                "ai-pipeline",
                "fraud-analyst",
                "dpo",
                "key-admin",
                "other-backend-service",
            )
        ),
    )
}
ADMIN_KEY = API_KEYS["test-admin"][0]
TOKENS_KEY = API_KEYS["test-tokens"][0]
ADMIN = Caller.of(Principal("apikey:test-admin", AuthMethod.API_KEY), TEST_PURPOSE)
TOKENS = Caller.of(Principal("apikey:test-tokens", AuthMethod.API_KEY))


def api_key_of(role: str) -> str:
    return API_KEYS[f"dev-{role}"][0]


def caller_of(role: str, purpose: str = "") -> Caller:
    return Caller.of(Principal(f"apikey:dev-{role}", AuthMethod.API_KEY), purpose)


def authenticator() -> Authenticator:
    return Authenticator(
        api_keys=ApiKeyStore({k: v[1] for k, v in API_KEYS.items()}), allow_mtls=False
    )


def make_wrapper(openbao: OpenBaoDevServer, url: str | None = None) -> TransitKeyWrapper:
    # A root token never expires, so no renewal look-ups are needed (renew=False).
    return TransitKeyWrapper(
        url or openbao.url, TokenAuth(openbao.root_token, renew=False), key_prefix=KEY_PREFIX
    )


def make_service(
    db: Database,
    openbao: OpenBaoDevServer,
    url: str | None = None,
    *,
    policy: Path = TEST_POLICY,
    sinks: Sequence[AuditSink] | None = None,
    schema: Path | None = None,
) -> RecordsService:
    """A service with fresh key caches: what a newly started process would have."""
    keys = KeyManager(make_wrapper(openbao, url))
    # checkpoints inline: a background checkpoint thread could outlive the test and its database
    audit = AuditLog(
        db,
        keys,
        sinks=SESSION_AUDIT_SINKS if sinks is None else sinks,
        checkpoint=MemoryCheckpointStore(),
        checkpoint_in_background=False,
    )
    access = Access(PolicyHolder(policy), audit)
    return RecordsService(Core(db, keys, load_schema(schema), access))


def create_tenants(db: Database, *names: str) -> None:
    """Create tenants as an operator would (``cvault tenants create``): the sample policy's roles
    may not create them by writing."""
    with db.begin() as conn:
        for name in names:
            repo.create_tenant(conn, name, "test", datetime.now(UTC))


SAMPLE = {
    "email": "Ada.Lovelace@Example.com",
    "phone": "+44 20 7946 0958",
    "full_name": "Ada Lovelace",
    "address": "12 St James's Square, London SW1Y 4JH",
    "date_of_birth": "1990-12-10",
    "national_id": "QQ123456C",
    "card_number": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "notes": "Prefers contact by letter; VIP since 2019.",
}

#: SAMPLE's values, raw and canonical, long enough to be distinctive in a log line
SAMPLE_NEEDLES = frozenset(
    {
        "Ada.Lovelace@Example.com",
        "Ada.Lovelace@example.com",
        "+44 20 7946 0958",
        "+442079460958",
        "St James's Square",
        "QQ123456C",
        "4111 1111 1111 1111",
        "4111111111111111",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "Prefers contact by letter",
    }
)


#: Audit sinks every service made by make_service writes to (conftest adds a session-wide
#: JSON-lines file here and scans it at the end of the session).
SESSION_AUDIT_SINKS: list[AuditSink] = []

#: Distinctive pieces of every customer value the suite makes (see ``plaintext_in``): the
#: session-wide log scan in conftest.py looks for each of them in every log line.
USED_NEEDLES: set[str] = set()


def sample_record(i: int = 0) -> dict[str, str]:
    """A valid record with values unique to ``i`` (so a byte scan can look for each)."""
    email_tag, name_tag = uuid.uuid4().hex[:6], uuid.uuid4().hex[:6]
    record = {
        "email": f"person{i}.{email_tag}@example.com",
        "phone": f"+4420794{60000 + i % 40000:05d}",
        "full_name": f"Person Number{i} Zyx{name_tag}",
        "national_id": f"AB{100000 + i:06d}C",
        "card_number": luhn_complete(f"4000{i:011d}"),
    }
    USED_NEEDLES.update(
        {f"{email_tag}@example.com", f"Zyx{name_tag}", record["national_id"], record["card_number"]}
    )
    return record


_NEEDLE_SHAPES = re.compile(r"[0-9a-f]{6}@example\.com|Zyx[0-9a-f]{6}|AB\d{6}C|\b4000\d{12}\b")


def plaintext_in(text: str) -> set[str]:
    """The customer values of this suite (sample_record's and SAMPLE's) that occur in ``text``.

    Fast on large texts: candidates are found by their shapes, then looked up in the set of
    values the suite actually made; SAMPLE's few values are searched directly."""
    found = {m for m in _NEEDLE_SHAPES.findall(text) if m in USED_NEEDLES}
    found |= {v for v in SAMPLE_NEEDLES if v in text}
    return found


def luhn_complete(digits15: str) -> str:
    total = 0
    for pos, ch in enumerate(reversed(digits15)):
        d = int(ch)
        if pos % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits15 + str((10 - total % 10) % 10)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


class TcpProxy:
    """A loopback TCP proxy that can be cut and restored, to make a dependency unreachable.

    ``cut()`` closes the listener and every open connection (clients then get "connection
    refused"); ``restore()`` listens again on the same port. ``partition()`` holds every byte
    both ways instead (connections are accepted and stay open, nothing answers: packets
    dropped, as a black-holed host looks); ``heal()`` lets them through.
    """

    def __init__(self, target_host: str, target_port: int) -> None:

        self._target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self.restore()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restore(self) -> None:

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

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

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave the
            # kernel socket listening until that call returns.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def partition(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._flowing.set()
        self.cut()


# grpc-stubs makes the interceptor classes generic; grpcio's runtime classes cannot be subscripted
# (vault.api._authn.AuthInterceptor does the same).
class _ApiKeyInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, key: str) -> None:
        self._key = key

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], grpc.CallFuture[Any]],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> grpc.CallFuture[Any]:
        metadata = [*(details.metadata or ()), ("x-api-key", self._key)]
        # grpcio passes a namedtuple (grpc._interceptor._ClientCallDetails); the stubs declare a
        # plain class without ``_replace``.
        details = cast(Any, details)._replace(metadata=metadata)
        return continuation(details, request)


def keyed_channel(address: str, key: str | None = None) -> grpc.Channel:
    """An insecure channel that sends an API key (the test admin's by default) on every call."""
    return grpc.intercept_channel(
        grpc.insecure_channel(address), _ApiKeyInterceptor(key or ADMIN_KEY)
    )


@contextlib.contextmanager
def private_postgres(prefix: str = "cvault_test") -> Iterator[str]:
    """A fresh, migrated database of the caller's own on the test PostgreSQL server, dropped
    afterwards. Unreachable server: the test is skipped, or fails under ``CI=true``."""
    admin_info = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        admin = psycopg.connect(admin_info, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at CVAULT_TEST_POSTGRES_URL: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_info.rpartition("/")
    url = f"{base}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_info, autocommit=True) as again:
            again.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def private_openbao() -> Iterator[OpenBaoDevServer]:
    """A key server of the caller's own, with the suite's field keys: for tests that rotate,
    retire and trim keys, which must not touch the session server the other tests share."""
    server = OpenBaoDevServer()
    server.start()
    try:
        init_field_keys(
            server.url, server.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        yield server
    finally:
        server.stop()


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    return int(stat.rsplit(")", 1)[1].split()[1])


def bao_pids(ancestor: int) -> set[int]:
    """The running `bao server` processes started (directly or not) by process ``ancestor``:
    other OpenBao servers on the machine (another test run, say) are not this test's business."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"bao\x00server" not in cmd:
                continue
            pid = parent = int(entry.name)
            while parent > 1:
                parent = _parent(parent)
                if parent == ancestor:
                    pids.add(pid)
                    break
    return pids
