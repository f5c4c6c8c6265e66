"""The fuzz harness: a real vault (SQLite, the real OpenBao, the sample policy, an in-process gRPC
server), calls of any RPC with generated requests, and the checks every call must pass.

**Calls.** Every RPC of ``vault.v1`` is found from the descriptors (:data:`VAULT_METHODS`), so a
new RPC is fuzzed without any change here; the standard health and reflection services are fuzzed
too (:data:`INFRA_METHODS`). Requests travel as bytes (identity serializers), so a call can carry a
generated message, random or damaged bytes (:func:`tests.fuzz.strategies.raw_body`), or, on a
stream, some messages with garbage in between. A call uses the API key of a randomly chosen role
of the sample policy, sometimes none, a bad or altered one, or one of a principal the policy does
not know. Unary calls are sometimes made with a deadline of a few milliseconds; bidirectional
streams run in lockstep (one request, then its answer), are half-closed without any message, or
are cancelled part-way (before or after some answers, or with requests still queued).

**Checks** (a failed check is a :class:`Finding`):

1. *Status.* A vault service never answers ``INTERNAL`` or ``UNKNOWN`` (a bug, or an exception
   that escaped a handler), and never ``DEADLINE_EXCEEDED`` under the generous deadline of
   :data:`CALL_TIMEOUT` (only the calls made with a deadline of milliseconds may time out), nor
   ``UNAVAILABLE`` then (the database and the key server are up all along).
   The infrastructure services are tabulated, but grpcio's own answer to bytes that do not parse
   (``INTERNAL``: "Exception deserializing request!") is grpcio's, not the vault's.
2. *Server log.* While a call of a vault service runs (and until the server is idle again), the
   server logs nothing at ERROR: a cancelled stream or a passed deadline is the client's choice,
   not a bug, and an INTERNAL answer's traceback is kept for the report.
3. *No marker echoed.* Generated strings carry ``Zq9MARKER`` (compared case-insensitively). It
   must never appear in a status message or in initial or trailing metadata, nor in any field of
   a vault service's response message (reflection answers with the request it got, by design),
   except in the fields listed in :data:`ECHO_FIELDS`, which exist to give back
   what a caller stored or sent: a tenant name in a consent or an erasure receipt, a consent's
   source, a token in a reveal result (the caller's own input, named so it can match results),
   a revealed value (only when the result says ``OUTPUT_PLAIN`` or ``OUTPUT_MASKED``: a value the
   fuzzer stored earlier through the vault), the texts of TokenizeText and RevealText (the
   caller's text with spans swapped), an export's document, and the grantee an issuer named, in
   the ``on_behalf_of`` of a ``grant.issue`` audit event (:data:`ECHO_WHEN`). A token, a record
   id, a reason, a field name, an error of any kind: never.
4. *Health.* After every example, ``grpc.health.v1.Health/Check`` of ``""`` is ``SERVING``
   (retried for up to :data:`HEALTH_PATIENCE` seconds: the monitor polls its dependencies), and
   the server has no call still running :data:`IDLE_PATIENCE` seconds after the client is done.
5. *No partial rows.* When a call fails (any status but OK), the row count of every data table
   (:data:`CHECKED_TABLES`: every table of ``vault.storage`` but the audit log's own, which a
   refused call legitimately writes, and the shared rate counters) is what it was before the
   call; only the tenant keys may have grown (:data:`GROW_ONLY_TABLES` says why).
   For a bidirectional stream, the snapshot is taken before the failing request is sent: batches
   answered before it were committed by design. Counts are kept by triggers in the fuzz database
   (:class:`RowCounts`), so a check costs one query however big the tables grow, and they are
   compared with ``count(*)`` at the end of a run. Calls whose client gave up first (a cancelled
   stream, a deadline of milliseconds) are not checked: their server side may still commit. The
   check needs one caller at a time per database, so every fuzz worker has its own.

A successful call's response feeds the :class:`~tests.fuzz.strategies.Pool` (record ids, tokens,
grants, versions), from which later requests draw plausible values.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pkgutil
import queue
import sqlite3
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AnyStr, Final, TextIO

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import strategies as st

import vault.v1
from tests.fuzz import strategies as fz
from tests.integration.access.matrix_support import RPC_BY_KEY
from tests.support import (
    API_KEYS,
    KEY_PREFIX,
    SAMPLE_POLICY,
    api_key_of,
    authenticator,
    create_tenants,
)
from vault.api import RunningServer, start_server
from vault.audit import AuditLog, AuditSink, MemoryCheckpointStore
from vault.keys import KeyManager, TokenAuth, TransitKeyWrapper
from vault.policy import Action, PolicyHolder, load_policy
from vault.schema import load_schema
from vault.service import Access, Core, RecordsService, Services
from vault.storage import Database, upgrade
from vault.storage.models import Base
from vault.v1 import records_pb2, tokens_pb2

#: the deadline of an ordinary call: a vault call that takes longer is a finding
CALL_TIMEOUT: Final = 60.0
HEALTH_PATIENCE: Final = 5.0
#: findings kept per worker with their requests and logs (all are counted in the table)
MAX_KEPT_FINDINGS: Final = 500
IDLE_PATIENCE: Final = 60.0
MARKER_FOLDED: Final = fz.MARKER.casefold()

#: Tables a refused or failed call may legitimately write: the audit log records the refusal
#: (its rows, its chain head, and its own key, made at the first row ever written) and counts
#: plaintext against the caller's limits.
UNCHECKED_TABLES: Final = frozenset(
    {"audit_events", "audit_chain_heads", "audit_keys", "rate_counters"}
)
CHECKED_TABLES: Final = tuple(sorted(set(Base.metadata.tables) - UNCHECKED_TABLES))
#: Checked tables a failed call may add rows to, but never remove any from: a tenant's tenant
#: and index keys for a class are made on first use, in a transaction of their own before the
#: write that needs them (the one step that calls the key server), so a write that then fails
#: (its linked record not found, a version conflict) leaves them for the next one. They hold no
#: customer data.
GROW_ONLY_TABLES: Final = frozenset({"tenant_keys"})

#: Response fields that exist to give back what a caller stored or sent (see rule 3 above).
ECHO_FIELDS: Final = frozenset(
    {
        "vault.v1.Consent.tenant",
        "vault.v1.Consent.source",
        "vault.v1.ErasureReceipt.tenant",
        "vault.v1.RevealedToken.token",
        "vault.v1.TextToken.token",
        "vault.v1.RedactedText.text",
        "vault.v1.RevealTextResponse.text",
        "vault.v1.ExportCustomerDataResponse.document",
    }
)
_REVEALED: Final = frozenset({records_pb2.OUTPUT_PLAIN, records_pb2.OUTPUT_MASKED})


def _revealed(message: Message) -> bool:
    return getattr(message, "output", None) in _REVEALED


def _grant_issued(message: Message) -> bool:
    return getattr(message, "action", None) == Action.GRANT_ISSUE.value


#: ... and those that may give it back only when their message says so: a stored value when it
#: was revealed; the grantee an issuer named (any principal name) in the audit row of the grant.
ECHO_WHEN: Final[dict[str, Callable[[Message], bool]]] = {
    "vault.v1.FieldValue.value": _revealed,
    "vault.v1.RevealedToken.value": _revealed,
    "vault.v1.AccessEvent.on_behalf_of": _grant_issued,
}


def _vault_methods() -> tuple[MethodDescriptor, ...]:
    """Every RPC of every service declared by a ``vault.v1.*_pb2`` module."""
    methods: list[MethodDescriptor] = []
    for info in pkgutil.iter_modules(vault.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"vault.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                methods.extend(service.methods)
    return tuple(sorted(methods, key=lambda m: m.full_name))


VAULT_METHODS: Final = _vault_methods()
INFRA_METHODS: Final[tuple[MethodDescriptor, ...]] = tuple(
    m
    for module in (health_pb2, reflection_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for m in service.methods
)
ALL_METHODS: Final = VAULT_METHODS + INFRA_METHODS
_INFRA_NAMES: Final = frozenset(m.full_name for m in INFRA_METHODS)
HEALTH_CHECK: Final = "/grpc.health.v1.Health/Check"

_POLICY: Final = load_policy(SAMPLE_POLICY)
#: the sample policy's roles that a dev API key stands for
ROLES: Final = tuple(
    sorted(
        role for principal, role in _POLICY.principals.items() if principal.startswith("apikey:")
    )
)


def rpc_name(method: MethodDescriptor) -> str:
    """``vault.v1.Records/CreateRecord``: the service and method, as in a gRPC path."""
    return f"{method.containing_service.full_name}/{method.name}"


def is_vault(method: MethodDescriptor) -> bool:
    """Whether the RPC is the vault's own (not health or reflection)."""
    return method.full_name not in _INFRA_NAMES


# --- callers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who a call claims to be: a role of the sample policy, or a kind of bad credential."""

    label: str
    metadata: tuple[tuple[str, str], ...]


def allowed_roles(method: MethodDescriptor) -> tuple[str, ...]:
    """The sample roles whose actions include the RPC's (every role for an RPC the matrix does
    not describe yet)."""
    rpc = RPC_BY_KEY.get(method.name)
    if rpc is None or method.containing_service.name != rpc.service:
        return ROLES
    return tuple(r for r in ROLES if rpc.action in _POLICY.roles[r].actions) or ROLES


def draw_caller(data: st.DataObject, method: MethodDescriptor) -> Caller:
    """A role's API key most of the time (half the time one the policy allows the RPC); else
    none, a broken one, or an unknown principal's."""
    real = [api_key_of(r) for r in ROLES]

    def role() -> Caller:
        name = data.draw(
            st.sampled_from(ROLES if data.draw(st.booleans()) else allowed_roles(method))
        )
        return Caller(name, (("x-api-key", api_key_of(name)),))

    def bad() -> Caller:
        key = fz.weighted(
            data,
            [
                (3, lambda: _ascii(fz.mutate(data, data.draw(st.sampled_from(real))))),
                (1, lambda: f"cvk_{fz.MARKER}_{data.draw(st.sampled_from(real))[-8:]}"),
                (1, lambda: data.draw(st.sampled_from(real))[:-1]),
                (1, lambda: data.draw(st.sampled_from(["", " ", "cvk_", "cvk__", "x" * 4096]))),
                (1, lambda: data.draw(st.sampled_from(real)) + " "),
            ],
        )
        return Caller("bad-key", (("x-api-key", key),))

    def two() -> Caller:
        a, b = data.draw(st.lists(st.sampled_from(real), min_size=2, max_size=2))
        return Caller("two-keys", (("x-api-key", a), ("x-api-key", b)))

    def unknown() -> Caller:
        key = data.draw(st.sampled_from([API_KEYS["test-admin"][0], API_KEYS["test-tokens"][0]]))
        return Caller("unknown-principal", (("x-api-key", key),))

    caller = fz.weighted(
        data,
        [
            (24, role),
            (1, lambda: Caller("none", ())),
            (2, bad),
            (1, two),
            (1, unknown),
        ],
    )
    if fz.one_in(data, 10):
        request_id = data.draw(st.sampled_from(["req-1", "x" * 64, "x" * 65, "a b", "é", ""]))
        caller = Caller(caller.label, (*caller.metadata, ("x-request-id", _ascii(request_id))))
    return caller


def _ascii(value: str) -> str:
    """Metadata values must be printable ASCII (grpcio refuses anything else client-side)."""
    return "".join(ch for ch in value if " " <= ch <= "~")


# --- outcomes and findings -----------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str = ""
    responses: list[bytes] = field(default_factory=list)
    metadata: list[tuple[str, str | bytes]] = field(default_factory=list)
    #: problems found while the call ran (partial rows of a stream's failing batch)
    problems: list[str] = field(default_factory=list)


@dataclass
class Finding:
    """The failed checks of one call, with the request in a safe form for a regression test."""

    rpc: str
    mode: str
    caller: str
    problems: list[str]
    code: str
    details: str
    request: str
    server_log: str = ""

    def describe(self) -> str:
        lines = [
            f"{self.rpc} [{self.mode}, as {self.caller}]: {'; '.join(self.problems)}",
            f"  status: {self.code} {self.details!r}",
            f"  request: {self.request}",
        ]
        if self.server_log:
            lines.append("  server log:\n    " + self.server_log.strip().replace("\n", "\n    "))
        return "\n".join(lines)


@dataclass
class Stats:
    """Status codes seen per RPC, and every finding (merged across workers)."""

    codes: dict[str, Counter[str]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    examples: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, rpc: str, code: str) -> None:
        self.codes.setdefault(rpc, Counter())[code] += 1

    def merge(self, other: Stats) -> None:
        for rpc, counter in other.codes.items():
            self.codes.setdefault(rpc, Counter()).update(counter)
        self.failures.update(other.failures)
        self.findings.extend(other.findings)
        self.examples += other.examples
        self.notes.extend(other.notes)

    def vault_codes(self) -> Counter[str]:
        """Status codes seen from the vault's own services (``vault.v1``), all RPCs together."""
        out: Counter[str] = Counter()
        for rpc, counter in self.codes.items():
            if not rpc.startswith("grpc."):
                out.update(counter)
        return out

    def table(self) -> str:
        """One row per RPC, one column per status code seen, totals for the vault's services
        and for everything; a last column with the failed checks."""
        order = {c.name: i for i, c in enumerate(grpc.StatusCode)}
        columns = sorted(
            {c for counter in self.codes.values() for c in counter},
            key=lambda c: order.get(c, len(order)),
        )
        rows: list[list[str]] = []
        vault_total: Counter[str] = Counter()
        total: Counter[str] = Counter()
        names = [rpc_name(m) for m in ALL_METHODS]
        names += sorted(set(self.codes) - set(names))
        for rpc in names:
            counter = self.codes.get(rpc, Counter())
            total.update(counter)
            if not rpc.startswith("grpc."):
                vault_total.update(counter)
            calls = str(sum(counter.values()))
            failed = str(self.failures[rpc])
            rows.append([_display(rpc), *(str(counter[c]) for c in columns), calls, failed])
        vault_failures = sum(n for rpc, n in self.failures.items() if not rpc.startswith("grpc."))
        for label, counts, failures in (
            ("total (vault.v1)", vault_total, vault_failures),
            ("total (all)", total, sum(self.failures.values())),
        ):
            cells = [str(counts[c]) for c in columns]
            rows.append([label, *cells, str(sum(counts.values())), str(failures)])
        header = ["RPC", *columns, "calls", "failed checks"]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
            return "| " + " | ".join([first, *rest]) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _display(rpc: str) -> str:
    """``Records/CreateRecord`` for the vault's RPCs, ``grpc Health/Check`` for the others."""
    service, _, method = rpc.partition("/")
    short = f"{service.rsplit('.', 1)[-1]}/{method}"
    return f"grpc {short}" if rpc.startswith("grpc.") else short


def safe_repr(body: Message | bytes | None) -> str:
    """A request as Python-like text that is ASCII only, with long strings and long repeated
    fields abbreviated as ``'x' * n`` / ``[...] * n``: printable, and enough to rewrite it as a
    regression test."""
    if body is None:
        return "<half-close>"
    if isinstance(body, bytes):
        return f"bytes {_short(body)}"
    return f"{body.DESCRIPTOR.name}({_fields_repr(body)})"


def _short(value: AnyStr) -> str:
    if len(value) <= 120:
        return ascii(value)
    if value == value[:1] * len(value):
        return f"{value[:1]!a} * {len(value)}"
    for unit in range(2, 24):
        piece = value[:unit]
        reps, rest = divmod(len(value), unit)
        if piece * reps + piece[:rest] == value:
            return f"({piece!a} * {reps} + {piece[:rest]!a})"
    return f"{value[:60]!a} + ... ({len(value)} long) ... + {value[-40:]!a}"


def _value_repr(value: Any) -> str:
    if isinstance(value, Message):
        return safe_repr(value)
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, bytes):
        return _short(value)
    return repr(value)


def _fields_repr(message: Message) -> str:
    parts: list[str] = []
    for fd, value in message.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            inner = ", ".join(f"{_value_repr(k)}: {_value_repr(v)}" for k, v in value.items())
            parts.append(f"{fd.name}={{{inner}}}")
        elif fd.is_repeated:
            items = list(value)
            if len(items) > 4 and all(i == items[0] for i in items):
                parts.append(f"{fd.name}=[{_value_repr(items[0])}] * {len(items)}")
            else:
                parts.append(f"{fd.name}=[{', '.join(_value_repr(i) for i in items)}]")
        else:
            parts.append(f"{fd.name}={_value_repr(value)}")
    return ", ".join(parts)


def marker_fields(message: Message) -> list[str]:
    """The paths of response fields holding the marker where they may not (rule 3)."""
    found: list[str] = []
    _scan(message, message.DESCRIPTOR.name, found)
    return found


def _scan(message: Message, path: str, found: list[str]) -> None:
    for fd, value in message.ListFields():
        full = f"{message.DESCRIPTOR.full_name}.{fd.name}"
        when = ECHO_WHEN.get(full)
        allowed = full in ECHO_FIELDS or (when is not None and when(message))
        here = f"{path}.{fd.name}"
        entries: list[tuple[str, Any]]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            entries = []
            for k, v in value.items():
                entries += [(f"{here}[key]", k), (f"{here}[{_short(str(k))}]", v)]
        elif fd.is_repeated:
            entries = [(f"{here}[{i}]", v) for i, v in enumerate(value)]
        else:
            entries = [(here, value)]
        for where, v in entries:
            if isinstance(v, Message):
                _scan(v, where, found)
            elif isinstance(v, str | bytes) and not allowed and _marked(v):
                found.append(where)


def _marked(value: str | bytes) -> bool:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return MARKER_FOLDED in text.casefold()


# --- server log ----------------------------------------------------------------------------------


class ServerLog(logging.Handler):
    """Keeps every record at ERROR or above of the vault's and grpcio's loggers (with its
    traceback's frames) until drained."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("vault", "grpc")):
            return  # the server's own loggers and grpcio's: not urllib3, hypothesis ...
        text = f"{record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            # the type and the frames, never the exception's message (it may quote a value)
            exc = record.exc_info[1]
            text += f"\n{type(exc).__name__}\n" + "".join(traceback.format_tb(exc.__traceback__))
        self._records.append(text)

    def drain(self) -> list[str]:
        self.acquire()
        try:
            out, self._records = self._records, []
        finally:
            self.release()
        return out


# --- row counts ----------------------------------------------------------------------------------


class RowCounts:
    """Row counts of :data:`CHECKED_TABLES`, kept by triggers in the SQLite file itself.

    An ``AFTER INSERT`` / ``AFTER DELETE`` trigger per table adds or subtracts one in
    ``fuzz_row_counts`` inside the writer's own transaction, so a rolled-back write leaves the
    counts alone and a snapshot is one query. :meth:`verify` compares them with ``count(*)``.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS fuzz_row_counts (tbl TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        )
        for table in CHECKED_TABLES:
            self._conn.execute(
                f"INSERT OR REPLACE INTO fuzz_row_counts SELECT '{table}', count(*) FROM {table}"
            )
            for event, delta in (("INSERT", "+ 1"), ("DELETE", "- 1")):
                self._conn.execute(
                    f"CREATE TRIGGER IF NOT EXISTS fuzz_count_{event.lower()}_{table} "
                    f"AFTER {event} ON {table} BEGIN "
                    f"UPDATE fuzz_row_counts SET n = n {delta} WHERE tbl = '{table}'; END"
                )
        self._conn.execute("COMMIT")

    def snapshot(self) -> dict[str, int]:
        return {str(t): int(n) for t, n in self._conn.execute("SELECT tbl, n FROM fuzz_row_counts")}

    def verify(self) -> list[str]:
        """Tables whose trigger count differs from ``count(*)`` (empty: the counts are right)."""
        counts = self.snapshot()
        wrong = []
        for table in CHECKED_TABLES:
            real = int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            if counts.get(table) != real:
                wrong.append(f"{table}: counted {counts.get(table)}, count(*) {real}")
        return wrong

    def close(self) -> None:
        self._conn.close()


def partial_rows(before: dict[str, int], after: dict[str, int]) -> str:
    """``tokens +3, records -1``: the tables whose counts a failed call may not have changed but
    did (empty: none). :data:`GROW_ONLY_TABLES` may grow."""
    out = []
    for table in sorted(set(before) | set(after)):
        delta = after.get(table, 0) - before.get(table, 0)
        if delta < 0 or (delta > 0 and table not in GROW_ONLY_TABLES):
            out.append(f"{table} {delta:+d}")
    return ", ".join(out)


# --- the world -----------------------------------------------------------------------------------


def build_service(
    db: Database, openbao_url: str, token: str, sinks: Sequence[AuditSink]
) -> RecordsService:
    """The vault's service stack under the sample policy, as ``cvault dev`` builds it."""
    keys = KeyManager(
        TransitKeyWrapper(openbao_url, TokenAuth(token, renew=False), key_prefix=KEY_PREFIX)
    )
    audit = AuditLog(
        db, keys, sinks=sinks, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False
    )
    return RecordsService(Core(db, keys, load_schema(), Access(PolicyHolder(SAMPLE_POLICY), audit)))


class FuzzWorld:
    """One vault (its own SQLite file, the shared OpenBao) with a client, the checks, the pool
    and the statistics. One caller at a time: the partial-row check needs it."""

    def __init__(
        self,
        workdir: Path,
        openbao_url: str,
        openbao_token: str,
        *,
        sinks: Sequence[AuditSink] = (),
    ) -> None:
        self.db_path = workdir / "fuzz.db"
        url = f"sqlite:///{self.db_path}"
        upgrade(url)
        self.rows = RowCounts(self.db_path)
        self.db = Database(url)
        create_tenants(self.db, *fz.HOME_TENANTS)  # as `cvault dev` creates its tenants
        service = build_service(self.db, openbao_url, openbao_token, sinks)
        self.server: RunningServer = start_server(
            Services.over(service.core),
            "127.0.0.1:0",
            authenticator=authenticator(),
            health_interval=0.5,
        )
        limit = 64 * 1024 * 1024
        self.channel = grpc.insecure_channel(
            self.server.address,
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
            ],
        )
        self.log = ServerLog()
        logging.getLogger().addHandler(self.log)
        self.pool = fz.Pool()
        self.stats = Stats()
        #: when set, one line per call (RPC, mode, caller, status, message): for tuning
        self.trace: TextIO | None = None

    def close(self, grace: float = 0.0) -> float:
        """Stop the server as SIGTERM does (with ``grace``), while the client's channel is still
        open, then release everything. Returns how long the server took to stop."""
        logging.getLogger().removeHandler(self.log)
        started = time.monotonic()
        self.server.stop(grace=grace)
        took = time.monotonic() - started
        self.channel.close()
        self.db.dispose()
        self.rows.close()
        return took

    # -- seeding ---------------------------------------------------------------------------

    def seed(self) -> None:
        """Records (some consented, one erased), tokens of every class and kind, text tokens and
        grants, so that the first examples already have something real to name."""
        backend = Caller("backend-service", (("x-api-key", api_key_of("backend-service")),))
        support = Caller("support-agent", (("x-api-key", api_key_of("support-agent")),))
        for tenant in fz.HOME_TENANTS:
            for i in range(3):
                fields = {
                    "email": f"{fz.MARKER}seed{i}@example.com",
                    "phone": f"+44207946{1000 + i:04d}",
                    "full_name": f"Ada {fz.MARKER}{i}",
                    "notes": f"seed {fz.MARKER} note {i}",
                    "card_number": "4111111111111111",
                    "national_id": f"QQ12345{i}C",
                }
                self.call_ok(
                    "CreateRecord",
                    records_pb2.CreateRecordRequest(
                        tenant=tenant, fields=fields, idempotency_key=f"seed-{i}"
                    ),
                    backend,
                )
            rid = self.pool.records[tenant][0]
            self.call_ok(
                "UpdateConsent",
                records_pb2.UpdateConsentRequest(
                    tenant=tenant,
                    record_id=rid,
                    purposes=["marketing", "model-training"],
                    source="web-form",
                ),
                backend,
            )
            items = [
                tokens_pb2.TokenizeItem(
                    value=self._seed_value(cls), field_class=cls, kind=kind, scope=scope
                )
                for cls in fz.FIELD_CLASSES
                for kind in (
                    tokens_pb2.TOKEN_KIND_RANDOM,
                    tokens_pb2.TOKEN_KIND_DETERMINISTIC,
                    tokens_pb2.TOKEN_KIND_FORMAT_PRESERVING,
                )
                for scope in ("", fz.SCOPES[0])
                if kind != tokens_pb2.TOKEN_KIND_FORMAT_PRESERVING or cls in fz.FPE_CLASSES
            ]
            items.append(
                tokens_pb2.TokenizeItem(
                    value="4111111111111111",
                    field_class="card_number",
                    kind=tokens_pb2.TOKEN_KIND_FORMAT_PRESERVING,
                    keep_last_four=True,
                )
            )
            self.call_ok(
                "Tokenize", tokens_pb2.TokenizeRequest(tenant=tenant, items=items), backend
            )
            self.call_ok(
                "TokenizeText",
                tokens_pb2.TokenizeTextRequest(
                    tenant=tenant,
                    texts=[f"mail {fz.MARKER}t@example.com or call +442079460958, card 4111"],
                    scope=fz.SCOPES[1],
                ),
                backend,
            )
            self.call_ok(
                "IssueGrant",
                tokens_pb2.IssueGrantRequest(
                    tenant=tenant,
                    grantee="apikey:dev-ai-pipeline",
                    record_ids=self.pool.records[tenant][:2],
                    field_classes=["email", "name", "phone"],
                    purpose="customer-support",
                    ttl_seconds=86_400,
                    max_uses=10_000,
                ),
                support,
            )
            self.call_ok(
                "DeleteRecord",
                records_pb2.DeleteRecordRequest(
                    tenant=tenant, record_id=self.pool.records[tenant][2]
                ),
                backend,
            )

    @staticmethod
    def _seed_value(field_class: str) -> str:
        return {
            "email": f"{fz.MARKER}tok@example.com",
            "phone": "+442079460958",
            "name": f"Ada {fz.MARKER}",
            "address": f"1 {fz.MARKER} Road",
            "date_of_birth": "1990-12-10",
            "national_id": "QQ123456C",
            "card_number": "4111111111111111",
            "iban": "GB82WEST12345698765432",
            "free_text": f"free {fz.MARKER}",
            "ip_address": "192.0.2.7",
        }[field_class]

    def call_ok(self, name: str, request: Message, caller: Caller) -> Message:
        """A unary call that must succeed (seeding); its response feeds the pool."""
        method = next(m for m in VAULT_METHODS if m.name == name)
        outcome = self._unary(method, request.SerializeToString(), caller, CALL_TIMEOUT)
        if outcome.code != grpc.StatusCode.OK:
            raise AssertionError(f"seeding {name}: {outcome.code.name} {outcome.details}")
        response = GetMessageClass(method.output_type).FromString(outcome.responses[0])
        self.pool.harvest(request, response)
        return response

    # -- one example -----------------------------------------------------------------------

    def example(self, data: st.DataObject, method: MethodDescriptor) -> list[Finding]:
        """Draw a caller and a call of ``method`` (all draws first), make it, run the checks;
        counts the status and returns the findings."""
        caller = draw_caller(data, method)
        self.pool.purposes = _purposes_of(caller.label)
        if method.client_streaming and method.server_streaming:
            plan = self._draw_stream(data, method)
        elif method.server_streaming:
            plan = _Plan("watch", [fz.request(data, method, self.pool)], timeout=1.0)
        else:
            plan = fz.weighted(
                data,
                [
                    (12, lambda: _Plan("message", [fz.request(data, method, self.pool)])),
                    (2, lambda: _Plan("raw", [fz.raw_body(data, method, self.pool)])),
                    (
                        1,
                        lambda: _Plan(
                            "deadline",
                            [fz.request(data, method, self.pool)],
                            timeout=data.draw(st.sampled_from([0.001, 0.005, 0.02, 0.1])),
                        ),
                    ),
                ],
            )
        return self.run(method, caller, plan)

    def _draw_stream(self, data: st.DataObject, method: MethodDescriptor) -> _Plan:
        def message() -> Message | bytes:
            return fz.request(data, method, self.pool)

        def garbage() -> Message | bytes:
            return fz.raw_body(data, method, self.pool)

        def body() -> Message | bytes:
            return fz.weighted(
                data,
                [
                    (20, message),
                    (1, garbage),
                ],
            )

        def lockstep() -> _Plan:
            n = fz.weighted(data, [(8, lambda: data.draw(st.integers(1, 4))), (1, lambda: 0)])
            return _Plan("stream", [body() for _ in range(n)])

        def cancel() -> _Plan:
            n = data.draw(st.integers(0, 4))
            answers = data.draw(st.integers(0, n))
            burst = data.draw(st.booleans())
            return _Plan(
                "cancel",
                [body() for _ in range(n)],
                cancel_after=answers,
                burst=burst,
                pause=data.draw(st.sampled_from([0.0, 0.001, 0.01])),
            )

        return fz.weighted(data, [(6, lockstep), (3, cancel)])

    def run(self, method: MethodDescriptor, caller: Caller, plan: _Plan) -> list[Finding]:
        """Make the planned call and run every check on it."""
        self.log.drain()
        before = self.rows.snapshot()
        timeout = plan.timeout or CALL_TIMEOUT
        bodies = [b if isinstance(b, bytes) else b.SerializeToString() for b in plan.bodies]
        if plan.mode == "watch":
            outcome = self._watch(method, bodies[0], caller, timeout)
        elif method.client_streaming:
            outcome = self._stream(method, bodies, caller, plan)
        else:
            outcome = self._unary(method, bodies[0], caller, timeout)
        problems = list(outcome.problems)
        if not self._wait_idle():
            problems.append(f"a call was still running on the server {IDLE_PATIENCE:.0f}s later")
        vault = is_vault(method)
        given_up = plan.mode in ("cancel", "deadline", "watch")
        code = outcome.code
        if vault:
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                problems.append(f"status {code.name}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and not given_up:
                problems.append(f"no answer within {timeout:.0f}s")
            if code == grpc.StatusCode.UNAVAILABLE and not given_up:
                problems.append("UNAVAILABLE though the database and the key server are up")
            if code == grpc.StatusCode.CANCELLED and plan.mode != "cancel":
                problems.append("CANCELLED though the client did not cancel")
        if _marked(outcome.details):
            problems.append("the status message holds the marker")
        for key, value in outcome.metadata:
            if _marked(key) or _marked(value):
                problems.append(f"metadata {key!r} holds the marker")
        if vault:
            problems += self._check_responses(method, outcome.responses)
        logged = self.log.drain()
        if vault and logged:
            problems.append(f"the server logged an error: {logged[0].splitlines()[0]}")
        if code != grpc.StatusCode.OK and not given_up and method.client_streaming is False:
            partial = partial_rows(before, self.rows.snapshot())
            if partial:
                problems.append(f"rows changed by a failed call: {partial}")
        if not self._healthy():
            problems.append("health is not SERVING after the call")
        if code == grpc.StatusCode.OK and plan.mode in ("message", "stream"):
            self._harvest(method, plan.bodies, outcome.responses)
        rpc = rpc_name(method)
        if self.trace is not None:
            print(
                f"{rpc} {plan.mode} {caller.label} {code.name} {outcome.details[:100]!r}",
                file=self.trace,
            )
        self.stats.add(rpc, code.name)
        self.stats.examples += 1
        if not problems:
            return []
        finding = Finding(
            rpc=rpc,
            mode=plan.mode,
            caller=caller.label,
            problems=problems,
            code=code.name,
            details=outcome.details[:500],
            request=" ; ".join(safe_repr(b) for b in plan.bodies) or "<no message>",
            server_log="\n".join(logged)[:4000],
        )
        self.stats.failures[rpc] += 1
        if len(self.stats.findings) < MAX_KEPT_FINDINGS:
            self.stats.findings.append(finding)
        return [finding]

    def _check_responses(self, method: MethodDescriptor, responses: Sequence[bytes]) -> list[str]:
        out: list[str] = []
        cls = GetMessageClass(method.output_type)
        for raw in responses:
            try:
                message = cls.FromString(raw)
            except DecodeError:
                out.append("a response does not parse as its declared type")
                continue
            paths = marker_fields(message)
            if paths:
                out.append(f"the marker came back in {', '.join(paths[:3])}")
        return out

    def _harvest(
        self,
        method: MethodDescriptor,
        bodies: Sequence[Message | bytes],
        responses: Sequence[bytes],
    ) -> None:
        cls = GetMessageClass(method.output_type)
        requests = [b for b in bodies if isinstance(b, Message)]
        if not requests:
            return
        for i, raw in enumerate(responses):
            with contextlib.suppress(DecodeError):
                self.pool.harvest(requests[min(i, len(requests) - 1)], cls.FromString(raw))

    # -- calls -----------------------------------------------------------------------------

    def _unary(
        self, method: MethodDescriptor, body: bytes, caller: Caller, timeout: float
    ) -> Outcome:
        call = self.channel.unary_unary(
            _path(method), request_serializer=None, response_deserializer=None
        )
        try:
            response, info = call.with_call(body, timeout=timeout, metadata=caller.metadata)
        except grpc.RpcError as exc:
            return _failed(exc)
        return Outcome(grpc.StatusCode.OK, "", [response], _metadata(info))

    def _watch(
        self, method: MethodDescriptor, body: bytes, caller: Caller, timeout: float
    ) -> Outcome:
        call: Any = self.channel.unary_stream(
            _path(method), request_serializer=None, response_deserializer=None
        )(body, timeout=timeout, metadata=caller.metadata)
        got: list[bytes] = []
        try:
            got.append(next(call))
            call.cancel()
            next(call)
        except StopIteration:
            return Outcome(grpc.StatusCode.OK, "", got, _metadata(call))
        except grpc.RpcError as exc:
            out = _failed(exc)
            out.responses = got
            return out
        return Outcome(call.code(), call.details() or "", got, _metadata(call))

    def _stream(
        self, method: MethodDescriptor, bodies: Sequence[bytes], caller: Caller, plan: _Plan
    ) -> Outcome:
        """A bidirectional stream in lockstep (snapshot, send one, read its answer), or one
        cancelled part-way (after ``cancel_after`` answers, or with the requests in a burst)."""
        requests: queue.Queue[bytes | None] = queue.Queue()

        def feed() -> Iterator[bytes]:
            while (item := requests.get()) is not None:
                yield item

        call: Any = self.channel.stream_stream(
            _path(method), request_serializer=None, response_deserializer=None
        )(feed(), timeout=plan.timeout or CALL_TIMEOUT, metadata=caller.metadata)
        got: list[bytes] = []
        problems: list[str] = []
        try:
            if plan.mode == "cancel" and plan.burst:
                for b in bodies:
                    requests.put(b)
                if plan.pause:
                    time.sleep(plan.pause)
                call.cancel()
                return _settle(call, got)
            for i, b in enumerate(bodies):
                if plan.mode == "cancel" and i == plan.cancel_after:
                    call.cancel()
                    return _settle(call, got)
                before = self.rows.snapshot()
                requests.put(b)
                try:
                    got.append(next(call))
                except StopIteration:
                    return _settle(call, got)
                except grpc.RpcError as exc:
                    out = _failed(exc)
                    out.responses = got
                    if plan.mode != "cancel":
                        self._wait_idle()
                        partial = partial_rows(before, self.rows.snapshot())
                        if partial:
                            out.problems.append(
                                f"rows changed by a failed stream request {i}: {partial}"
                            )
                    return out
            if plan.mode == "cancel":
                call.cancel()
                return _settle(call, got)
            requests.put(None)
            try:
                got.extend(call)
            except grpc.RpcError as exc:
                out = _failed(exc)
                out.responses = got
                return out
            return Outcome(grpc.StatusCode.OK, "", got, _metadata(call), problems)
        finally:
            requests.put(None)

    # -- state -----------------------------------------------------------------------------

    def _wait_idle(self) -> bool:
        """Wait until the server runs no call (grpcio's count of handlers in its pool)."""
        state = getattr(self.server.server, "_state", None)
        count = getattr(state, "active_rpc_count", None)
        if not isinstance(count, int):
            time.sleep(0.05)
            return True
        end = time.monotonic() + IDLE_PATIENCE
        while getattr(state, "active_rpc_count", 0) > 0:
            if time.monotonic() > end:
                return False
            time.sleep(0.0005)
        return True

    def _healthy(self) -> bool:
        request = health_pb2.HealthCheckRequest(service="").SerializeToString()
        check = self.channel.unary_unary(
            HEALTH_CHECK, request_serializer=None, response_deserializer=None
        )
        end = time.monotonic() + HEALTH_PATIENCE
        while True:
            try:
                raw = check(request, timeout=10)
                if health_pb2.HealthCheckResponse.FromString(raw).status == (
                    health_pb2.HealthCheckResponse.SERVING
                ):
                    return True
            except grpc.RpcError:
                pass
            if time.monotonic() > end:
                return False
            time.sleep(0.1)


@dataclass
class _Plan:
    """What one example sends: the mode, the request bodies, and for streams when to cancel."""

    mode: str
    bodies: list[Message | bytes]
    timeout: float = 0.0
    cancel_after: int = -1
    burst: bool = False
    pause: float = 0.0


def _purposes_of(role: str) -> tuple[str, ...]:
    found = _POLICY.roles.get(role)
    return tuple(sorted(found.purposes)) if found is not None else ()


def _path(method: MethodDescriptor) -> str:
    return f"/{rpc_name(method)}"


def _metadata(call: Any) -> list[tuple[str, str | bytes]]:
    out: list[tuple[str, str | bytes]] = []
    for getter in ("initial_metadata", "trailing_metadata"):
        with contextlib.suppress(Exception):
            out.extend((str(k), v) for k, v in (getattr(call, getter)() or ()))
    return out


def _failed(exc: grpc.RpcError) -> Outcome:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    return Outcome(code, details, [], _metadata(exc))


def _settle(call: Any, got: list[bytes]) -> Outcome:
    """The end of a stream the client stopped reading: its status (CANCELLED when the client
    cancelled first) and what came before."""
    with contextlib.suppress(grpc.RpcError, StopIteration):
        for item in call:
            got.append(item)
    code = call.code()
    return Outcome(code, call.details() or "", got, _metadata(call))


def method_by_name(name: str) -> MethodDescriptor:
    """``Tokenize`` or ``vault.v1.Tokens.Tokenize``: the descriptor."""
    for m in ALL_METHODS:
        if name in (m.name, m.full_name, rpc_name(m)):
            return m
    raise KeyError(name)
