"""Soak benchmark: the server's memory (RSS) under a long mixed load, against its documented bound.

Starts the embedded default shape: an OpenBao dev server and a SQLite file in a temporary
directory (``--postgres``: a temporary PostgreSQL database instead), and the gRPC server in a
process of its own (``cvault serve`` with a settings file written here, configured as
``cvault dev`` configures it: AppRole auth, the sample policy, the audit log with a JSON-lines
file), so the RSS read from ``/proc/<pid>/status`` is the server's alone. Then it drives a mixed
load over gRPC from this process (records of every RPC, tokens of every kind, reveals, streams,
free text, consent, exports, audit queries, grants, bad requests, many distinct tenants) for a
fixed number of requests, samples the server's RSS as it goes and while it idles afterwards, and
prints the curve, the start, peak, final and idle figures, and the documented bound.

    .venv/bin/python benchmarks/soak.py                    # 50,000 requests (about 4 minutes)
    .venv/bin/python benchmarks/soak.py --quick            # smoke test: 3,000 requests
    .venv/bin/python benchmarks/soak.py --requests 100000  # the README's curve (about 8 min)
    .venv/bin/python benchmarks/soak.py --postgres
    .venv/bin/python benchmarks/soak.py --diagnose         # + tracemalloc and malloc statistics
    .venv/bin/python benchmarks/soak.py --malloc-arena-max 2

Prints figures only: no assertion, and the exit status does not depend on them ("levelled off"
is a description of the curve, not a verdict). ``--diagnose`` runs the server from a small entry
in this file instead (what ``cvault serve`` does, plus tracemalloc and glibc malloc statistics
taken on SIGUSR1, and ``malloc_trim`` on SIGUSR2), and prints where memory grew between the
first and the last snapshot (file and line, sizes only: never a value).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import phonenumbers
import yaml
from stdnum import iban as stdnum_iban

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    load_average,
    machine_context,
    postgres_database,
    postgres_reachable,
    raise_interrupt,
)
from vault.api._authn import new_api_key  # noqa: E402
from vault.client import StreamSummary, TokenItem, VaultClient  # noqa: E402
from vault.config import deploy_file  # noqa: E402
from vault.errors import VaultServiceError  # noqa: E402
from vault.keys import (  # noqa: E402
    CacheLimits,
    CacheSettings,
    KeyCache,
    ensure_kv_v2,
    init_field_keys,
    setup_approle,
    write_policy,
)
from vault.keys.openbao_dev import OpenBaoDevServer  # noqa: E402
from vault.storage import upgrade  # noqa: E402

KEY_PREFIX = "cvault"
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
ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")
#: roles whose plaintext limits the soak policy lifts (fraud-analyst keeps the sample's limits,
#: so RESOURCE_EXHAUSTED answers are part of the load)
UNLIMITED_ROLES = ("backend-service", "support-agent", "dpo")
POSTGRES_URL = os.environ.get(
    "CVAULT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CORPUS = REPO_ROOT / "tests" / "data" / "text_corpus" / "support_messages.jsonl"
#: the classes a format-preserving token is offered for (vault.service.tokens.FPE_CLASSES)
FPE_CLASSES = (
    "email",
    "phone",
    "name",
    "date_of_birth",
    "national_id",
    "card_number",
    "iban",
    "ip_address",
)
#: default_region values of TokenizeText: a few real ones (each gets a scanner in the server,
#: at most one per region libphonenumber knows) and, in the bad requests, unknown ones
REGIONS = ("US", "GB", "DE", "FR", "NL", "IT", "ES", "JP", "IN", "BR", "CA", "AU")
MIB = 1024 * 1024
CLIENT_TIMEOUT = 60.0
#: gRPC's per-message limit on the server, both ways (vault.api.server.MAX_MESSAGE_BYTES)
MAX_MESSAGE_BYTES = 32 * MIB


# --- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    requests: int
    clients: int
    samples: int
    idle: float
    new_tenant_rate: float
    big_every: int
    seed: int
    postgres: bool
    diagnose: bool
    tracemalloc_frames: int
    malloc_arena_max: int


# --- the server process -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) in bytes and Threads of a process, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
        elif name == "Threads":
            out[name] = int(value)
    return out


class ServerProcess:
    """The gRPC server in a process of its own, its output in a log file."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # a session of its own: a Ctrl-C in the terminal reaches this script, which stops it
        self.proc = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def log_tail(self, limit: int = 3000) -> str:
        """The end of the server's output (log lines carry no values: see the README)."""
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def wait_serving(server: ServerProcess, address: str, timeout: float = 90.0) -> None:
    """Wait until the server answers SERVING (or fail with the end of its log)."""
    deadline = time.monotonic() + timeout
    with VaultClient(address, timeout=2.0) as probe:
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"the server exited:\n{server.log_tail()}")
            with contextlib.suppress(VaultServiceError):
                if probe.health() == "SERVING":
                    return
            time.sleep(0.3)
    raise RuntimeError(f"the server did not answer SERVING in {timeout:.0f} s")


# --- setup: OpenBao, database, policy, settings -------------------------------------------------


@dataclass
class Setup:
    address: str
    config: Path
    api_keys: dict[str, str]  # role -> API key
    database_url: str
    sqlite_path: Path | None


def soak_policy(tmp: Path) -> Path:
    """The sample policy with the plaintext limits of UNLIMITED_ROLES lifted."""
    policy = yaml.safe_load(deploy_file("policy", "sample-policy.yaml").read_text())
    for role in UNLIMITED_ROLES:
        policy["roles"][role].pop("limits", None)
    path = tmp / "soak-policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these values)."""
    return json.dumps(value)


def prepare(tmp: Path, openbao: OpenBaoDevServer, database_url: str) -> Setup:
    """Keys, AppRole, migrations, API keys, policy and the settings file ``cvault serve`` reads
    (as ``cvault dev`` sets them up)."""
    init_field_keys(
        openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
    )
    ensure_kv_v2(openbao.url, openbao.root_token)
    runtime = deploy_file("openbao", "runtime-policy.hcl").read_text()
    write_policy(openbao.url, openbao.root_token, "cvault-runtime", runtime)
    role_id, secret_id = setup_approle(
        openbao.url,
        openbao.root_token,
        role_name="cvault-soak",
        policies=["cvault-runtime"],
        token_ttl="1h",
        token_max_ttl="24h",
    )
    secrets_dir = tmp / "secrets"
    secrets_dir.mkdir(mode=0o700)
    for name, value in (("role_id", role_id), ("secret_id", secret_id)):
        path = secrets_dir / name
        path.write_text(value)
        path.chmod(0o600)
    upgrade(database_url)
    api_keys: dict[str, str] = {}
    entries: list[str] = []
    for role in ROLES:
        key, entry = new_api_key(f"dev-{role}")
        api_keys[role] = key
        entries.append(f"\n[auth.api_keys.dev-{role}]")
        entries.extend(f"{k} = {toml_string(v)}" for k, v in entry.items())
    address = f"127.0.0.1:{free_port()}"
    config = tmp / "soak.toml"
    config.write_text(
        "\n".join(
            [
                f"listen = {toml_string(address)}",
                f"database_url = {toml_string(database_url)}",
                f"policy = {toml_string(str(soak_policy(tmp)))}",
                "",
                "[openbao]",
                f"url = {toml_string(openbao.url)}",
                f"key_prefix = {toml_string(KEY_PREFIX)}",
                'auth = "approle"',
                f"role_id_file = {toml_string(str(secrets_dir / 'role_id'))}",
                f"secret_id_file = {toml_string(str(secrets_dir / 'secret_id'))}",
                "",
                "[audit]",
                f"jsonl = {toml_string(str(tmp / 'audit.jsonl'))}",
                *entries,
                "",
            ]
        )
    )
    config.chmod(0o600)
    sqlite_path = None
    if database_url.startswith("sqlite:///"):
        sqlite_path = Path(database_url.removeprefix("sqlite:///"))
    return Setup(address, config, api_keys, database_url, sqlite_path)


def database_bytes(setup: Setup) -> int:
    """The SQLite file plus its WAL (0 on PostgreSQL)."""
    if setup.sqlite_path is None:
        return 0
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += Path(f"{setup.sqlite_path}{suffix}").stat().st_size
    return total


# --- values (made up; never printed) ------------------------------------------------------------

FIRST = ("Ada", "Grace", "Amara", "Wei", "Sofia", "Mateo", "Yuki", "Priya", "Lars", "Fatima")
LAST = ("Lovelace", "Hopper", "Okafor", "Zhang", "Rossi", "Garcia", "Tanaka", "Sharma", "Novak")
STREETS = ("High Street", "Station Road", "Church Lane", "Mill Road", "Park Avenue")


def luhn_complete(digits: str) -> str:
    """``digits`` followed by its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return digits + str((10 - total % 10) % 10)


class Values:
    """Valid made-up values of every class, distinct per draw."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n * 7919 + self.rng.randrange(7919)

    def of(self, field_class: str) -> str:
        n, rng = self._next(), self.rng
        if field_class == "email":
            return f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}{n}@example.com"
        if field_class == "phone":
            return f"+4420794{60000 + n % 40000:05d}"
        if field_class == "name":
            return f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if field_class == "address":
            return f"{1 + n % 200} {rng.choice(STREETS)}, London"
        if field_class == "date_of_birth":
            return f"{1940 + n % 60}-{1 + n % 12:02d}-{1 + n % 28:02d}"
        if field_class == "national_id":
            return f"AB{n % 1_000_000:06d}C"
        if field_class == "card_number":
            return luhn_complete(f"4000{n % 10**11:011d}")
        if field_class == "iban":
            bban = f"WEST{n % 10**14:014d}"
            return "GB" + stdnum_iban.calc_check_digits("GB00" + bban) + bban
        if field_class == "ip_address":
            return f"192.0.2.{n % 254 + 1}"
        return f"Customer prefers contact by letter, reference {n}."

    def record(self) -> dict[str, str]:
        rec = {
            "email": self.of("email"),
            "phone": self.of("phone"),
            "full_name": self.of("name"),
            "card_number": self.of("card_number"),
        }
        extra = (
            ("address", "address"),
            ("date_of_birth", "date_of_birth"),
            ("national_id", "national_id"),
            ("iban", "iban"),
            ("notes", "free_text"),
            ("last_login_ip", "ip_address"),
        )
        for name, cls in extra:
            if self.rng.random() < 0.5:
                rec[name] = self.of(cls)
        return rec


def crafted_token(field_class: str) -> str:
    """A well-formed token the vault never issued."""
    alphabet = string.digits + string.ascii_letters
    return f"tok_{field_class}_" + "".join(secrets.choice(alphabet) for _ in range(22))


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Shared:
    """What the workers know about the server's data: bounded, so the client stays small."""

    tenants: list[str] = field(default_factory=list)
    records: deque[tuple[str, str, int]] = field(default_factory=lambda: deque(maxlen=4000))
    tokens: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=20_000))
    texts: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=500))
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    done: int = 0
    problems: list[str] = field(default_factory=list)


class Worker:
    """One client thread: takes request numbers until the run's count is reached."""

    def __init__(
        self,
        index: int,
        shared: Shared,
        clients: dict[str, VaultClient],
        bad_client: VaultClient,
        messages: Sequence[str],
        ticket: Iterator[int],
        p: Params,
        run_id: str,
    ) -> None:
        self.shared = shared
        self.clients = clients
        self.bad_client = bad_client
        self.messages = messages
        self.ticket = ticket
        self.p = p
        self.run_id = run_id
        self.rng = random.Random(p.seed * 1000 + index)
        self.values = Values(self.rng)
        self.ops: list[tuple[str, Callable[[], str]]] = []
        for name, weight in OPS:
            self.ops.extend([(name, getattr(self, f"op_{name}"))] * weight)

    # -- helpers

    def tenant(self) -> str:
        """A new tenant now and then (``new_tenant_rate``), else one of the recent ones or any
        one seen: attacker-chosen tenant names make per-tenant keys (and per-tenant state)."""
        s, rng = self.shared, self.rng
        with s.lock:
            if not s.tenants or rng.random() < self.p.new_tenant_rate:
                s.tenants.append(f"soak-{self.run_id}-{len(s.tenants)}")
                return s.tenants[-1]
            if rng.random() < 0.8:
                return rng.choice(s.tenants[-50:])
            return rng.choice(s.tenants)

    def record(self) -> tuple[str, str, int] | None:
        with self.shared.lock:
            if not self.shared.records:
                return None
            return self.rng.choice(self.shared.records)

    def remember(self, tenant: str, record_id: str, version: int) -> None:
        with self.shared.lock:
            self.shared.records.append((tenant, record_id, version))

    def some_tokens(self, n: int) -> tuple[str, list[str]] | None:
        """Up to ``n`` issued tokens of one tenant."""
        with self.shared.lock:
            if not self.shared.tokens:
                return None
            tenant, first = self.rng.choice(self.shared.tokens)
            picked = [first]
            for t, tok in itertools.islice(reversed(self.shared.tokens), 4 * n):
                if t == tenant and len(picked) < n:
                    picked.append(tok)
        return tenant, picked

    def keep_tokens(self, tenant: str, tokens: Sequence[str]) -> None:
        with self.shared.lock:
            self.shared.tokens.extend((tenant, t) for t in tokens[:50])

    def items(self, n: int, kind: str = "") -> list[TokenItem]:
        out = []
        for _ in range(n):
            k = kind or self.rng.choice(("random", "deterministic", "format_preserving"))
            cls = self.rng.choice(FPE_CLASSES if k == "format_preserving" else FIELD_CLASSES)
            keep = k == "format_preserving" and cls in ("card_number", "phone")
            out.append(
                TokenItem(
                    self.values.of(cls),
                    cls,
                    k,
                    scope=self.rng.choice(("", "", "backend-training-2026", "backend-chat-a")),
                    ttl_seconds=self.rng.choice((0, 0, 0, 3600)),
                    keep_last_four=keep and self.rng.random() < 0.5,
                )
            )
        return out

    def text_batch(self, n: int) -> list[str]:
        return [self.rng.choice(self.messages) for _ in range(n)]

    # -- the operations: each one request, returning an outcome name

    def op_create(self) -> str:
        tenant = self.tenant()
        key = uuid.uuid4().hex if self.rng.random() < 0.2 else ""
        c = self.clients["backend-service"].create_record(
            tenant, self.values.record(), idempotency_key=key
        )
        self.remember(tenant, c.record_id, c.version)
        self.keep_tokens(tenant, list(c.tokens.values()))
        return "ok"

    def op_batch_create(self) -> str:
        tenant = self.tenant()
        recs = [self.values.record() for _ in range(self.rng.randint(2, 10))]
        made = self.clients["backend-service"].batch_create_records(tenant, recs)
        for c in made[:10]:
            self.remember(tenant, c.record_id, c.version)
        return "ok"

    def op_get(self) -> str:
        known = self.record()
        if known is None:
            return self.op_create()
        tenant, rid, _ = known
        role, purpose = self.rng.choice(
            (
                ("backend-service", "account-management"),
                ("backend-service", "account-management"),
                ("support-agent", "customer-support"),
                ("ai-pipeline", "analytics"),
                ("ai-pipeline", "model-training"),
                ("backend-service", "marketing"),  # consent-bound: often refused
            )
        )
        scope = "training-2026" if role == "ai-pipeline" and self.rng.random() < 0.5 else ""
        self.clients[role].get_record(tenant, rid, purpose=purpose, token_scope=scope)
        return "ok"

    def op_update(self) -> str:
        known = self.record()
        if known is None:
            return self.op_create()
        tenant, rid, version = known
        stale = self.rng.random() < 0.2
        c = self.clients["backend-service"].update_record(
            tenant,
            rid,
            expected_version=max(1, version - 1) if stale else version,
            set_fields={"email": self.values.of("email")},
            clear_fields=["notes"] if self.rng.random() < 0.3 else [],
        )
        self.remember(tenant, rid, c.version)
        return "ok"

    def op_find(self) -> str:
        known = self.record()
        tenant = known[0] if known else self.tenant()
        field_name = self.rng.choice(("email", "phone", "national_id"))
        cls = {"email": "email", "phone": "phone", "national_id": "national_id"}[field_name]
        self.clients["backend-service"].find_records(tenant, {field_name: self.values.of(cls)})
        return "ok"

    def op_delete(self) -> str:
        known = self.record()
        if known is None:
            return self.op_create()
        tenant, rid, _ = known
        self.clients[self.rng.choice(("backend-service", "dpo"))].delete_record(tenant, rid)
        with self.shared.lock, contextlib.suppress(ValueError):
            self.shared.records.remove(known)
        return "ok"

    def op_consent(self) -> str:
        known = self.record()
        if known is None:
            return self.op_create()
        tenant, rid, _ = known
        bs = self.clients["backend-service"]
        if self.rng.random() < 0.5:
            bs.get_consent(tenant, rid)
            return "ok"
        current = bs.get_consent(tenant, rid)
        purposes = self.rng.sample(("marketing", "model-training", "analytics"), 2)
        bs.update_consent(
            tenant, rid, purposes, expected_version=current.version, source="soak-benchmark"
        )
        return "ok"

    def op_export(self) -> str:
        known = self.record()
        if known is None:
            return self.op_create()
        tenant, rid, _ = known
        recipient = b""
        if self.rng.random() < 0.5:
            from nacl.public import PrivateKey

            recipient = bytes(PrivateKey.generate().public_key)
        self.clients["dpo"].export_customer_data(
            tenant, rid, recipient_public_key=recipient, purpose="dsar"
        )
        return "ok"

    def op_query_access(self) -> str:
        known = self.record()
        if known is None:
            return self.op_create()
        tenant, rid, _ = known
        self.clients["dpo"].query_access(tenant, rid, limit=50, purpose="dsar")
        return "ok"

    def op_tokenize(self) -> str:
        tenant = self.tenant()
        n = self.rng.choice((1, 1, 1, 5, 20))
        tokens = self.clients["backend-service"].tokenize(tenant, self.items(n))
        self.keep_tokens(tenant, tokens)
        return "ok"

    def op_tokenize_linked(self) -> str:
        known = self.record()
        if known is None:
            return self.op_create()
        tenant, rid, _ = known
        items = [TokenItem(self.values.of("email"), "email", "random", record_id=rid)]
        self.keep_tokens(tenant, self.clients["backend-service"].tokenize(tenant, items))
        return "ok"

    def op_reveal(self) -> str:
        picked = self.some_tokens(self.rng.choice((1, 5, 20)))
        if picked is None:
            return self.op_tokenize()
        tenant, tokens = picked
        if self.rng.random() < 0.1:
            tokens = [*tokens, crafted_token("email"), tokens[0][:-1] + "x"]
        role, purpose = self.rng.choice(
            (
                ("backend-service", "account-management"),
                ("backend-service", "account-management"),
                ("fraud-analyst", "fraud-investigation"),  # limited: RESOURCE_EXHAUSTED too
            )
        )
        self.clients[role].reveal(tenant, tokens, purpose=purpose)
        return "ok"

    def op_stream_tokenize(self) -> str:
        tenant = self.tenant()
        batches = [self.items(self.rng.randint(5, 20)) for _ in range(self.rng.randint(2, 4))]
        last: object = None
        for answer in self.clients["backend-service"].stream_tokenize(tenant, batches):
            last = answer
            if isinstance(answer, list):
                self.keep_tokens(tenant, answer[:5])
        return "ok" if isinstance(last, StreamSummary) else "no-summary"

    def op_stream_reveal(self) -> str:
        picked = self.some_tokens(20)
        if picked is None:
            return self.op_tokenize()
        tenant, tokens = picked
        batches = [tokens[i : i + 10] for i in range(0, len(tokens), 10)]
        answers = list(
            self.clients["backend-service"].stream_reveal(
                tenant, batches, purpose="account-management"
            )
        )
        return "ok" if answers and isinstance(answers[-1], StreamSummary) else "no-summary"

    def op_tokenize_text(self) -> str:
        tenant = self.tenant()
        # a scope of backend-service's (sample policy: token_scopes "" and "backend-*")
        scope = f"backend-chat-{uuid.uuid4().hex[:12]}"
        redacted, _ = self.clients["backend-service"].tokenize_text(
            tenant,
            self.text_batch(self.rng.choice((1, 1, 5))),
            scope=scope,
            default_region=self.rng.choice(REGIONS),
        )
        for r in redacted[:3]:
            if r.spans:
                with self.shared.lock:
                    self.shared.texts.append((tenant, scope, r.text))
        return "ok"

    def _text(self) -> tuple[str, str, str] | None:
        with self.shared.lock:
            return self.rng.choice(self.shared.texts) if self.shared.texts else None

    def op_reveal_text(self) -> str:
        known = self._text()
        if known is None:
            return self.op_tokenize_text()
        tenant, _, text = known
        answer = f"Thanks, I have updated {text} as requested. tok_email_{'A' * 22}"
        self.clients["backend-service"].reveal_text(tenant, answer, purpose="account-management")
        return "ok"

    def op_stream_reveal_text(self) -> str:
        known = self._text()
        if known is None:
            return self.op_tokenize_text()
        tenant, _, text = known
        step = self.rng.randint(3, 40)
        chunks = [text[i : i + step] for i in range(0, len(text), step)]
        for _ in self.clients["backend-service"].stream_reveal_text(
            tenant, chunks, purpose="account-management"
        ):
            pass
        return "ok"

    def op_grant(self) -> str:
        """A support agent lets the LLM agent (ai-pipeline) reveal one conversation's tokens."""
        known = self._text()
        if known is None:
            return self.op_tokenize_text()
        tenant, scope, text = known
        grant, _ = self.clients["support-agent"].issue_grant(
            tenant,
            "apikey:dev-ai-pipeline",
            ["email", "phone", "card_number", "iban"],
            scope=scope,
            ttl_seconds=300,
            max_uses=2,
            purpose="customer-support",
        )
        self.clients["ai-pipeline"].reveal_text(tenant, text, grant=grant)
        return "ok"

    def op_health(self) -> str:
        return self.clients["backend-service"].health().lower()

    def op_bad(self) -> str:
        """A request the server must refuse (or answer per item), chosen at random."""
        bs, rng = self.clients["backend-service"], self.rng
        known = self.record()
        tenant, rid = (known[0], known[1]) if known else (self.tenant(), str(uuid.uuid4()))
        cases: list[Callable[[], object]] = [
            lambda: bs.create_record(tenant, {"email": "not-an-email"}),
            lambda: bs.create_record(tenant, {"favourite_colour": "blue"}),
            lambda: bs.create_record("bad tenant!", {"email": self.values.of("email")}),
            lambda: bs.create_record(tenant + "\n", {"email": self.values.of("email")}),
            lambda: bs.get_record(tenant, str(uuid.uuid4()), purpose="account-management"),
            lambda: bs.get_record(tenant, "not-a-record-id", purpose="account-management"),
            lambda: bs.get_record(tenant, rid, purpose="no-such-purpose"),
            lambda: bs.update_record(
                tenant, rid, expected_version=2**63 - 1, set_fields={"phone": "+1"}
            ),
            lambda: bs.reveal(tenant, [crafted_token("phone") for _ in range(20)]),
            lambda: bs.tokenize(tenant, [TokenItem("x" * 100_000, "email", "random")]),
            lambda: bs.tokenize(tenant, [TokenItem("4111", "card_number", "format_preserving")]),
            lambda: bs.tokenize_text(tenant, ["call +44 20 7946 0958"], default_region="ZZ"),
            lambda: bs.find_records(tenant, {"full_name": self.values.of("name")}),
            lambda: self.bad_client.get_record(tenant, rid, purpose="account-management"),
            lambda: self.clients["ai-pipeline"].reveal(tenant, [crafted_token("email")]),
            lambda: self.clients["key-admin"].create_record(tenant, self.values.record()),
            lambda: self.clients["support-agent"].issue_grant(
                tenant, "apikey:dev-ai-pipeline", ["email"], scope="x", ttl_seconds=10**9
            ),
            lambda: bs.delete_record(tenant, str(uuid.uuid4())),
        ]
        rng.choice(cases)()
        return "ok"

    def op_big(self) -> str:
        """A large request: one TokenizeText of too many texts, about 16 MiB, refused after
        it was received and parsed (what a fuzzer's big payloads cost the server)."""
        text = ("lorem ipsum dolor sit amet " * 600)[:16_000]
        self.clients["backend-service"].tokenize_text(self.tenant(), [text] * 1001)
        return "ok"

    # -- the loop

    def run(self) -> None:
        while True:
            n = next(self.ticket)
            if n >= self.p.requests:
                return
            if self.p.big_every and n % self.p.big_every == self.p.big_every - 1:
                name, op = "big", self.op_big
            else:
                name, op = self.rng.choice(self.ops)
            try:
                outcome = op()
            except VaultServiceError as exc:
                outcome = outcome_of(exc)
            except Exception as exc:
                outcome = f"client {type(exc).__name__}"
            with self.shared.lock:
                self.shared.outcomes[(name, outcome)] += 1
                self.shared.done += 1


#: what a call answered with no reason code of ours: INTERNAL (a bug) or a status the SDK
#: does not map
UNEXPECTED = "INTERNAL or unmapped status"


def outcome_of(exc: VaultServiceError) -> str:
    """The reason code of an error answer (a short word), never its message."""
    if type(exc) is VaultServiceError:
        return UNEXPECTED
    return exc.reason if REASON_CODE.fullmatch(exc.reason) else type(exc).__name__


REASON_CODE = re.compile(r"[a-z_]{1,40}")

#: operation name and weight (requests per 100, roughly)
OPS: tuple[tuple[str, int], ...] = (
    ("create", 9),
    ("batch_create", 2),
    ("get", 17),
    ("update", 6),
    ("find", 6),
    ("delete", 3),
    ("consent", 4),
    ("export", 2),
    ("query_access", 2),
    ("tokenize", 11),
    ("tokenize_linked", 2),
    ("reveal", 8),
    ("stream_tokenize", 2),
    ("stream_reveal", 2),
    ("tokenize_text", 5),
    ("reveal_text", 4),
    ("stream_reveal_text", 2),
    ("grant", 2),
    ("health", 1),
    ("bad", 10),
)


# --- sampling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    requests: int
    seconds: float
    rss: int
    hwm: int
    threads: int
    db_bytes: int
    tenants: int


def take_sample(server: ServerProcess, shared: Shared, setup: Setup, started: float) -> Sample:
    st = server.status()
    with shared.lock:
        done, tenants = shared.done, len(shared.tenants)
    return Sample(
        done,
        time.monotonic() - started,
        st.get("VmRSS", 0),
        st.get("VmHWM", 0),
        st.get("Threads", 0),
        database_bytes(setup),
        tenants,
    )


def sampler(
    server: ServerProcess,
    shared: Shared,
    setup: Setup,
    started: float,
    every: int,
    out: list[Sample],
    stop: threading.Event,
    diag: Diagnosis | None,
    p: Params,
) -> None:
    """Sample every ``every`` requests (polled four times a second), and ask the diagnosing
    server for snapshots at a third and two thirds of the run."""
    next_at = every
    marks = [p.requests // 3, 2 * p.requests // 3]
    while not stop.wait(0.25):
        with shared.lock:
            done = shared.done
        if done >= next_at:
            out.append(take_sample(server, shared, setup, started))
            next_at = (done // every + 1) * every
        if diag is not None and marks and done >= marks[0]:
            diag.snapshot(f"at-{marks.pop(0)}")


# --- diagnosis (--diagnose): tracemalloc and malloc statistics from the server ------------------


class Diagnosis:
    """Asks the diagnosing server entry (``soak.py _serve``) for statistics and snapshots."""

    def __init__(self, server: ServerProcess, directory: Path) -> None:
        self.server = server
        self.dir = directory
        self.labels: list[str] = []

    def _ask(self, sig: signal.Signals, label: str) -> dict[str, Any]:
        (self.dir / "label").write_text(label)
        target = self.dir / f"stats-{label}.json"
        self.server.proc.send_signal(sig)
        deadline = time.monotonic() + 300.0
        while time.monotonic() < deadline and self.server.alive():
            if target.exists():
                data: dict[str, Any] = json.loads(target.read_text())
                return data
            time.sleep(0.2)
        raise RuntimeError(f"no statistics from the server for {label}")

    def snapshot(self, label: str) -> dict[str, Any]:
        self.labels.append(label)
        return self._ask(signal.SIGUSR1, label)

    def trim(self) -> dict[str, Any]:
        return self._ask(signal.SIGUSR2, "trim")

    def stats(self, label: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / f"stats-{label}.json").read_text())
        return data

    def growth(self, first: str, last: str, top: int = 15) -> list[str]:
        """Where traced memory grew between two snapshots (file:line, sizes only)."""
        a, b = self.dir / f"snap-{first}.tracemalloc", self.dir / f"snap-{last}.tracemalloc"
        if not (a.exists() and b.exists()):
            return ["  (no tracemalloc snapshots: --tracemalloc-frames 0)"]
        old, new = tracemalloc.Snapshot.load(str(a)), tracemalloc.Snapshot.load(str(b))
        lines = []
        for stat in new.compare_to(old, "lineno")[:top]:
            frame = stat.traceback[0]
            where = f"{shorten(frame.filename)}:{frame.lineno}"
            lines.append(
                f"  {stat.size_diff / MIB:+8.2f} MiB {stat.count_diff:+9,} blocks"
                f"  (now {stat.size / MIB:7.2f} MiB)  {where}"
            )
        return lines


def shorten(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    with contextlib.suppress(ValueError):
        return str(Path(filename).relative_to(REPO_ROOT))
    return filename


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_info() -> dict[str, int]:
    """glibc's view of the heap (every arena): bytes in use, free inside the heaps, mmapped."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {
        "heap_bytes": int(m.arena),
        "mmapped_bytes": int(m.hblkhd),
        "in_use_bytes": int(m.uordblks),
        "free_in_heap_bytes": int(m.fordblks),
        "top_releasable_bytes": int(m.keepcost),
    }


def sqlite_memory_used() -> int:
    """SQLite's own allocations in this process (page caches, statements), or -1."""
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        fn = lib.sqlite3_memory_used
        fn.restype = ctypes.c_int64
        return int(fn())
    except (OSError, AttributeError, ImportError):
        return -1


def serve_diagnosing(config: str, directory: str, frames: int) -> int:
    """The server as ``cvault serve`` runs it, plus statistics on SIGUSR1 (with a tracemalloc
    snapshot when ``frames`` > 0) and ``malloc_trim(0)`` on SIGUSR2, written to ``directory``."""
    if frames > 0:
        tracemalloc.start(frames)
    logging.basicConfig(  # as cvault serve logs
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from vault.api import start_server
    from vault.app import build_app, call_limits
    from vault.config import load_settings
    from vault.memory import pin_mmap_threshold

    app = build_app(load_settings(config))
    app.check_ready()
    # as App.serve does, keeping the tokens service so that its pools can be counted
    tokens = app.services.tokens
    pin_mmap_threshold()
    app.policy.start_watching()
    running = start_server(
        app.services,
        app.settings.listen,
        authenticator=app.authenticator,
        credentials=app.credentials,
        limits=call_limits(app.settings),
        health_interval=app.settings.health_interval_seconds,
    )
    out = Path(directory)
    asked: deque[str] = deque()
    stop = threading.Event()

    def stats(label: str) -> dict[str, Any]:
        cache = app.db.engine._compiled_cache
        data: dict[str, Any] = {
            "label": label,
            **proc_status(os.getpid()),
            **malloc_info(),
            "sqlite_memory_used": sqlite_memory_used(),
            "tenant_key_entries": len(app.keys.tenant_keys),
            "data_key_entries": len(app.keys.data_keys),
            "token_pools": len(tokens._pools),
            "compiled_cache_entries": len(cache) if cache is not None else 0,
            "gc_objects": len(gc.get_objects()),
        }
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            data["traced_bytes"], data["traced_peak_bytes"] = current, peak
        return data

    def write(label: str, data: dict[str, Any]) -> None:
        tmp = out / f".stats-{label}.json"
        tmp.write_text(json.dumps(data))
        tmp.rename(out / f"stats-{label}.json")

    def handle(label: str, kind: str) -> None:
        if kind == "trim":
            data: dict[str, Any] = {"rss_before_trim": proc_status(os.getpid()).get("VmRSS", 0)}
            cache = app.db.engine._compiled_cache
            if tracemalloc.is_tracing() and cache is not None and len(cache):
                # the size of a compiled-statement cache entry: what clearing the cache frees
                entries = len(cache)
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
                cache.clear()
                gc.collect()
                data["compiled_cache_entry_bytes"] = (
                    before - tracemalloc.get_traced_memory()[0]
                ) / entries
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            data.update(stats(label))
            write(label, data)
            return
        gc.collect()
        data = stats(label)
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(out / f"snap-{label}.tracemalloc"))
        write(label, data)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            stop.set()
            return
        label = (out / "label").read_text().strip()
        asked.append(f"{'trim' if signum == signal.SIGUSR2 else 'snap'}:{label}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, on_signal)
    print(f"soak: diagnosing server on port {running.port}", flush=True)
    while not stop.wait(0.1):
        while asked:
            kind, _, label = asked.popleft().partition(":")
            handle(label, kind)
    running.stop(2.0)
    app.close()
    return 0


# --- the documented bound -----------------------------------------------------------------------


def measured(fn: Callable[[], object], count: int) -> float:
    """Bytes per item that ``fn`` keeps alive, measured with tracemalloc over ``count`` items."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = fn()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return (after - before) / count


def key_cache_entry_bytes(count: int = 20_000) -> float:
    """One KeyCache entry as the services store them: a UUID string id, a 32-byte key, a use
    count past the small-int cache (``max_uses`` is 1,000,000)."""

    def fill() -> object:
        cache: KeyCache[bytes] = KeyCache(CacheLimits(max_entries=count, max_age_seconds=600))
        for _ in range(count):
            cache.put(str(uuid.uuid4()), os.urandom(32))
        for entry in cache._entries.values():
            entry.uses = 1000 + secrets.randbelow(10**6)
        return cache

    return measured(fill, count)


def token_pool_entry_bytes(count: int = 5000) -> float:
    """One entry of TokensService._pools: (tenant, class) -> Pool with its data key."""
    from vault.crypto import DataKey, uuid7
    from vault.service._token_pools import Pool

    def fill() -> object:
        pools = {}
        for i in range(count):
            dek = DataKey(uuid7(), os.urandom(32))
            pools[(f"tenant-{i:08d}", "email")] = Pool(str(uuid7()), dek, time.monotonic(), 1000)
        return pools

    return measured(fill, count)


def scanner_bytes() -> float:
    """One TokenizeText scanner (per default_region) with the phone metadata it loads, after a
    first scan, on average over every region libphonenumber knows."""
    from vault.text import TextScanner, default_detectors

    TextScanner(default_detectors(default_region="US")).find_spans("+1 212 555 0100")

    regions = sorted(phonenumbers.SUPPORTED_REGIONS - {"US"})

    def fill() -> object:
        out = []
        for region in regions:
            s = TextScanner(default_detectors(default_region=region))
            s.find_spans("call 020 7946 0958 or +44 20 7946 0958, ada@example.com")
            out.append(s)
        return out

    return measured(fill, len(regions))


#: the engine's compiled-statement cache holds at most 500 entries (LRU); what one holds was
#: measured with ``--diagnose`` (clearing the cache after the run freed 15,091 B per entry, over
#: 64 entries, on 2026-12-05), which prints it again for the code of the day
COMPILED_CACHE_ENTRY_BYTES = 15_000
COMPILED_CACHE_ENTRIES = 500
#: regions libphonenumber knows: TextService keeps at most one scanner per region
SCANNER_REGIONS = len(phonenumbers.SUPPORTED_REGIONS)
#: SQLite: PRAGMA cache_size=-8192 (KiB) per connection (vault/storage/_engine.py), and
#: SQLAlchemy's QueuePool keeps 5 connections and opens 10 more under load
SQLITE_PAGE_CACHE = 8 * MIB
#: TokensService keeps at most this many token pools (least recently used evicted)
TOKEN_POOL_ENTRIES = 10_000
SQLITE_POOL, SQLITE_OVERFLOW = 5, 10
GRPC_WORKERS = 16


@dataclass(frozen=True)
class BoundItem:
    name: str
    entries: int
    per_entry: float
    setting: str

    @property
    def total(self) -> float:
        return self.entries * self.per_entry


def bound_items(p: Params) -> tuple[list[BoundItem], list[BoundItem]]:
    """The caches that fill with traffic and stay full (retained), and what only requests in
    flight hold (transient), with their configured limits and measured sizes per entry."""
    caches = CacheSettings()
    entry = key_cache_entry_bytes()
    retained = [
        BoundItem(
            "tenant/index/audit key cache",
            caches.tenant_keys.max_entries,
            entry,
            "[cache] tenant_keys_max_entries",
        ),
        BoundItem(
            "data key cache", caches.data_keys.max_entries, entry, "[cache] data_keys_max_entries"
        ),
        BoundItem(
            "token pools (one per tenant and class, LRU)",
            TOKEN_POOL_ENTRIES,
            token_pool_entry_bytes(),
            "TokensService(pool_max_entries=)",
        ),
        BoundItem("text scanners (one per region)", SCANNER_REGIONS, scanner_bytes(), "fixed"),
        BoundItem(
            "SQLAlchemy compiled statements",
            COMPILED_CACHE_ENTRIES,
            COMPILED_CACHE_ENTRY_BYTES,
            "SQLAlchemy query_cache_size (default)",
        ),
    ]
    if not p.postgres:
        retained.append(
            BoundItem(
                "SQLite page cache (pooled connections)",
                SQLITE_POOL,
                SQLITE_PAGE_CACHE,
                "PRAGMA cache_size in vault/storage/_engine.py",
            )
        )
    transient = [
        BoundItem(
            "gRPC messages in flight (in + out)",
            GRPC_WORKERS * 2,
            MAX_MESSAGE_BYTES,
            "max_workers; MAX_MESSAGE_BYTES",
        )
    ]
    if not p.postgres:
        transient.append(
            BoundItem(
                "SQLite page cache (overflow connections)",
                SQLITE_OVERFLOW,
                SQLITE_PAGE_CACHE,
                "SQLAlchemy max_overflow (default 10)",
            )
        )
    return retained, transient


# --- reporting ----------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def curve_rows(samples: Sequence[Sample], width: int = 40) -> list[str]:
    top = max((s.rss for s in samples), default=1) or 1
    rows = []
    for s in samples:
        bar = "#" * max(1, round(s.rss / top * width))
        rows.append(
            f"  {s.requests:>9,} {s.seconds:8.1f} {s.rss / 1e6:9.1f} {s.hwm / 1e6:9.1f}"
            f" {s.threads:7} {s.db_bytes / 1e6:9.1f} {s.tenants:8,}  {bar}"
        )
    return rows


def levelled(samples: Sequence[Sample]) -> tuple[float, float, bool]:
    """Growth over the last third of the run: (bytes, fraction of the final RSS, levelled).

    Medians of the samples in 60-70% and in 90-100% of the requests, so that one sample taken
    while a large request is in flight does not decide it."""
    total = samples[-1].requests
    at_two_thirds = [s.rss for s in samples if 0.6 * total <= s.requests <= 0.7 * total]
    at_end = [s.rss for s in samples if s.requests >= 0.9 * total]
    if not at_two_thirds or not at_end:
        return 0.0, 0.0, False
    grew = statistics.median(at_end) - statistics.median(at_two_thirds)
    frac = grew / samples[-1].rss if samples[-1].rss else 0.0
    return grew, frac, frac < 0.05


def summary_table(samples: Sequence[Sample], idle: Sequence[Sample], rows: int = 10) -> list[str]:
    """A compact Markdown table of the curve (about ``rows`` rows, then the idle end)."""
    step = max(1, len(samples) // rows)
    picked = list(samples[step - 1 :: step])
    if samples and picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    out = [
        "| requests | seconds | RSS | peak RSS | SQLite file + WAL | tenants |",
        "|---|---|---|---|---|---|",
    ]
    for s in picked:
        out.append(
            f"| {s.requests:,} | {s.seconds:,.0f} | {mb(s.rss)} | {mb(s.hwm)} "
            f"| {mb(s.db_bytes)} | {s.tenants:,} |"
        )
    if idle:
        s = idle[-1]
        out.append(
            f"| idle {s.seconds - samples[-1].seconds:,.0f} s | {s.seconds:,.0f} | {mb(s.rss)} "
            f"| {mb(s.hwm)} | {mb(s.db_bytes)} | {s.tenants:,} |"
        )
    return out


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3,000 requests, 5 s idle (smoke)")
    parser.add_argument("--requests", type=int, default=None, help="requests (50,000)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument("--samples", type=int, default=40, help="RSS samples over the run (40)")
    parser.add_argument("--idle", type=float, default=None, help="idle seconds at the end (30)")
    parser.add_argument(
        "--new-tenant-rate", type=float, default=0.05, help="share of calls in a new tenant"
    )
    parser.add_argument(
        "--big-every", type=int, default=2000, help="a 16 MiB request every N (0: none)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the load")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument(
        "--diagnose", action="store_true", help="tracemalloc and malloc statistics (slower)"
    )
    parser.add_argument(
        "--tracemalloc-frames", type=int, default=1, help="--diagnose: frames per trace (1)"
    )
    parser.add_argument(
        "--malloc-arena-max", type=int, default=0, help="MALLOC_ARENA_MAX for the server"
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    requests = args.requests if args.requests is not None else (3000 if quick else 50_000)
    idle = args.idle if args.idle is not None else (5.0 if quick else 30.0)
    if requests < 100 or args.clients < 1 or args.samples < 3:
        parser.error("--requests >= 100, --clients >= 1, --samples >= 3")
    return Params(
        requests=requests,
        clients=int(args.clients),
        samples=int(args.samples),
        idle=float(idle),
        new_tenant_rate=float(args.new_tenant_rate),
        big_every=int(args.big_every),
        seed=int(args.seed),
        postgres=bool(args.postgres),
        diagnose=bool(args.diagnose),
        tracemalloc_frames=int(args.tracemalloc_frames),
        malloc_arena_max=int(args.malloc_arena_max),
    )


def server_argv(setup: Setup, p: Params, diag_dir: Path) -> list[str]:
    if p.diagnose:
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "_serve",
            str(setup.config),
            str(diag_dir),
            str(p.tracemalloc_frames),
        ]
    return [str(Path(sys.executable).parent / "cvault"), "serve", "--config", str(setup.config)]


def load_messages() -> list[str]:
    return [str(json.loads(line)["text"]) for line in CORPUS.read_text("utf-8").splitlines()]


def soak(p: Params, setup: Setup, tmp: Path, stack: contextlib.ExitStack) -> None:
    env = dict(os.environ)
    if p.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(p.malloc_arena_max)
    diag_dir = tmp / "diagnosis"
    diag_dir.mkdir()
    server = ServerProcess(server_argv(setup, p, diag_dir), env, tmp / "server.log")
    stack.callback(server.stop)
    wait_serving(server, setup.address)
    diag = Diagnosis(server, diag_dir) if p.diagnose else None
    shown = " ".join(Path(a).name for a in server_argv(setup, p, diag_dir)[:3])
    print(f"  server pid {server.pid} at {setup.address}: {shown} ...")

    clients = {
        role: stack.enter_context(VaultClient(setup.address, api_key=key, timeout=CLIENT_TIMEOUT))
        for role, key in setup.api_keys.items()
    }
    wrong = "cvk_dev-backend-service_" + "A" * 43
    bad_client = stack.enter_context(VaultClient(setup.address, api_key=wrong))
    messages = load_messages()
    shared = Shared()
    run_id = secrets.token_hex(3)
    started = time.monotonic()
    start = take_sample(server, shared, setup, started)
    print(f"  RSS at start (serving, no request yet): {mb(start.rss)}")
    retained, transient = bound_items(p)
    if diag is not None:
        diag.snapshot("start")

    print(f"\nload: {p.requests:,} requests from {p.clients} client threads")
    print(
        f"  {'requests':>9} {'seconds':>8} {'RSS MB':>9} {'peak MB':>9} {'threads':>7}"
        f" {'DB MB':>9} {'tenants':>8}"
    )
    ticket = itertools.count()
    samples: list[Sample] = [start]
    stop = threading.Event()
    every = max(1, p.requests // p.samples)
    watcher = threading.Thread(
        target=sampler,
        args=(server, shared, setup, started, every, samples, stop, diag, p),
        daemon=True,
    )
    workers = [
        Worker(i, shared, clients, bad_client, messages, ticket, p, run_id)
        for i in range(p.clients)
    ]
    threads = [threading.Thread(target=w.run, name=f"soak-{i}") for i, w in enumerate(workers)]
    watcher.start()
    printed = 0
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        for line in curve_rows(samples[printed:]):
            print(line, flush=True)
        printed = len(samples)
        if not server.alive():
            raise RuntimeError(f"the server exited during the load:\n{server.log_tail()}")
    stop.set()
    watcher.join()
    load_seconds = time.monotonic() - started
    end = take_sample(server, shared, setup, started)
    if samples[-1].requests != end.requests:
        samples.append(end)
    for line in curve_rows(samples[printed:]):
        print(line)
    if diag is not None:
        diag.snapshot("end")

    print(f"\nidle for {p.idle:.0f} s")
    idle: list[Sample] = []
    step = max(1.0, p.idle / 6)
    waited = 0.0
    while waited < p.idle:
        time.sleep(min(step, p.idle - waited))
        waited += step
        idle.append(take_sample(server, shared, setup, started))
    for line in curve_rows(idle):
        print(line)
    if diag is not None:
        diag.snapshot("idle")

    log_text = server.log_path.read_text("utf-8", "replace")
    report(p, samples, idle, shared, load_seconds, retained, transient, diag, log_text)


def report(
    p: Params,
    samples: Sequence[Sample],
    idle: Sequence[Sample],
    shared: Shared,
    load_seconds: float,
    retained: Sequence[BoundItem],
    transient: Sequence[BoundItem],
    diag: Diagnosis | None,
    server_log: str,
) -> None:
    start, final = samples[0], samples[-1]
    after_idle = idle[-1] if idle else final
    peak = max([s.hwm for s in samples] + [s.hwm for s in idle])
    print("\noutcomes (operation: outcome x count)")
    by_op: dict[str, list[str]] = {}
    for (op, outcome), n in sorted(shared.outcomes.items()):
        by_op.setdefault(op, []).append(f"{outcome} x{n:,}")
    for op, parts in by_op.items():
        print(f"  {op:<20} {', '.join(parts)}")
    unexpected = sum(
        n
        for (_, outcome), n in shared.outcomes.items()
        if outcome.startswith("client ") or outcome == UNEXPECTED
    )
    print(f"  client-side exceptions, INTERNAL or unmapped answers: {unexpected:,}")
    print(
        f"  server log: {server_log.count(' ERROR ')} ERROR lines,"
        f" {server_log.count('Traceback')} tracebacks"
    )

    print("\nthe documented bound (entries x bytes per entry, measured with tracemalloc)")
    for item in (*retained, *transient):
        print(
            f"  {item.name:<42} {item.entries:>7,} x {item.per_entry:>12,.0f} B"
            f" = {mb(item.total):>11}   ({item.setting})"
        )
    caches = sum(i.total for i in retained)
    bound = start.rss + caches
    print(f"  retained caches in all: {mb(caches)}; RSS at start + retained caches = {mb(bound)}")
    worst = bound + sum(i.total for i in transient)
    print(f"  + what requests in flight may hold at worst (the lines above): {mb(worst)} in all")

    grew, frac, flat = levelled(samples)
    rate = final.requests / load_seconds if load_seconds else 0.0
    print("\nRSS")
    print(f"  at start                 {mb(start.rss)}")
    print(f"  peak (VmHWM)             {mb(peak)}")
    print(f"  final (end of the load)  {mb(final.rss)}")
    print(f"  after {p.idle:.0f} s idle          {mb(after_idle.rss)}")
    print(f"  documented bound         {mb(bound)} (RSS at start + retained caches)")
    print(
        f"  last third of the run    {grew / 1e6:+,.1f} MB ({frac:+.1%} of the final RSS;"
        f" medians): levelled off: {'yes' if flat else 'no'} (yes: under 5%)"
    )
    if not flat and p.requests < 80_000:
        print(
            "  (the data-key cache, 100,000 keys, fills after about 70,000 requests of this mix:"
            " --requests 100000 shows where RSS levels off)"
        )
    settled = max(final.rss, after_idle.rss)
    print(
        f"  under the bound          final and idle: {'yes' if settled <= bound else 'no'};"
        f" peak, with requests in flight: {'yes' if peak <= worst else 'no'}"
    )
    database = f", SQLite file + WAL {mb(final.db_bytes)}" if not p.postgres else ""
    print(
        f"  load: {final.requests:,} requests in {load_seconds:,.1f} s ({rate:,.0f}/s),"
        f" {final.tenants:,} tenants{database}"
    )
    if diag is not None:
        print_diagnosis(diag)
    print("\nsummary (Markdown)\n")
    print("\n".join(summary_table(samples, idle)))


def print_diagnosis(diag: Diagnosis) -> None:
    print("\ndiagnosis (the server's own view; sizes only)")
    keys = (
        ("VmRSS", "RSS"),
        ("traced_bytes", "Python objects (tracemalloc)"),
        ("sqlite_memory_used", "SQLite (page caches, statements)"),
        ("in_use_bytes", "malloc: in use"),
        ("free_in_heap_bytes", "malloc: free but kept in its heaps"),
        ("mmapped_bytes", "malloc: mmapped blocks"),
        ("tenant_key_entries", "tenant key cache entries"),
        ("data_key_entries", "data key cache entries"),
        ("token_pools", "token pools (TokensService._pools)"),
        ("compiled_cache_entries", "SQLAlchemy compiled cache entries"),
    )
    labels = diag.labels
    stats = {label: diag.stats(label) for label in labels}
    print("  " + f"{'':<40}" + "".join(f"{label:>14}" for label in labels))
    for key, name in keys:
        cells = []
        for label in labels:
            v = stats[label].get(key)
            cells.append(
                f"{'-':>14}"
                if v is None
                else (
                    f"{v / 1e6:>11.1f} MB"
                    if key.endswith(("bytes", "RSS", "used")) or key == "VmRSS"
                    else f"{v:>14,}"
                )
            )
        print(f"  {name:<40}" + "".join(cells))
    trim = diag.trim()
    print(
        f"  malloc_trim(0) after the idle: RSS {mb(trim.get('rss_before_trim', 0))}"
        f" -> {mb(trim.get('VmRSS', 0))}"
    )
    if "compiled_cache_entry_bytes" in trim:
        print(
            "  SQLAlchemy compiled cache: clearing it freed"
            f" {trim['compiled_cache_entry_bytes']:,.0f} B per entry"
            f" (COMPILED_CACHE_ENTRY_BYTES here: {COMPILED_CACHE_ENTRY_BYTES:,})"
        )
    print(f"\n  where traced memory grew, {labels[0]} -> {labels[-2]} (top 15, by line):")
    for line in diag.growth(labels[0], labels[-2]):
        print(line)


def run(p: Params) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvault-soak-")))
        print("setup")
        t0 = time.perf_counter()
        openbao = OpenBaoDevServer()
        stack.callback(openbao.stop)  # registered before start: a half-started server stops too
        openbao.start()
        if p.postgres:
            why = postgres_reachable(POSTGRES_URL)
            if why is not None:
                print(f"  PostgreSQL not reachable at CVAULT_TEST_POSTGRES_URL ({why}): stopped")
                return
            url = stack.enter_context(postgres_database(POSTGRES_URL))
            print(f"  PostgreSQL: temporary database {url.rpartition('/')[2]}")
        else:
            url = f"sqlite:///{tmp / 'vault.db'}"
            print(f"  SQLite {tmp / 'vault.db'}")
        setup = prepare(tmp, openbao, url)
        print(f"  OpenBao dev server {openbao.url} ({time.perf_counter() - t0:.1f} s)")
        soak(p, setup, tmp, stack)
        print("\nteardown")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_serve"]:
        return serve_diagnosing(argv[1], argv[2], int(argv[3]))
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault soak benchmark: the server's RSS under a long mixed load")
    for line in machine_context():
        print(f"  {line}")
    print(
        f"  params     requests={p.requests:,} clients={p.clients} samples={p.samples}"
        f" idle={p.idle:g}s new-tenant-rate={p.new_tenant_rate:g} big-every={p.big_every}"
        f" seed={p.seed} postgres={p.postgres} diagnose={p.diagnose}"
        f" MALLOC_ARENA_MAX={p.malloc_arena_max or 'unset'}"
    )
    started = time.perf_counter()
    try:
        run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the server and OpenBao, removed the temporary directory")
        return 130
    print(f"  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
