"""The clients of the system test: one gRPC channel over the three replicas (round-robin,
client-side health checking, a retry policy on UNAVAILABLE), a steady mixed load in
background threads, a ledger of every call, and the fault windows the failures are judged by.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from tests.support import luhn_complete
from vault.v1 import records_pb2 as pb
from vault.v1 import records_pb2_grpc as pb_grpc
from vault.v1 import tokens_pb2 as tokens_pb
from vault.v1 import tokens_pb2_grpc as tokens_pb_grpc

_T = TypeVar("_T")

TENANT = "demo"
PURPOSE = "account-management"
#: fields the sample policy gives backend-service as plaintext (the others come back masked)
PLAIN_FIELDS = ("email", "phone", "full_name")
#: seconds between two writes to a tenant no replica has used yet
COLD_PAUSE = 0.5
#: every call gets this deadline, retries included
CALL_TIMEOUT = 8.0
#: gRPC caps maxAttempts at 5
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # client-side health checking: round-robin skips a replica reporting NOT_SERVING
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [
        {
            "name": [{"service": "vault.v1.Records"}, {"service": "vault.v1.Tokens"}],
            "retryPolicy": RETRY_POLICY,
        }
    ],
}


def target(addresses: Sequence[str]) -> str:
    """``ipv4:a,b,c``: one channel, a subchannel per replica."""
    return "ipv4:" + ",".join(addresses)


def balanced_channel(addresses: Sequence[str], ca: Path, cert: Path, key: Path) -> grpc.Channel:
    """An mTLS channel over every replica with round-robin and the retry policy."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    options: list[tuple[str, str | int]] = [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.enable_retries", 1),
        # one name for every replica: the server certificate's DNS SAN
        ("grpc.ssl_target_name_override", "localhost"),
        ("grpc.default_authority", "localhost"),
        # a restarted replica is used again within a second
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    return grpc.secure_channel(target(addresses), credentials, options=options)


def direct_channel(address: str, ca: Path, cert: Path, key: Path) -> grpc.Channel:
    """An mTLS channel to one replica (health probes)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    return grpc.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


@dataclasses.dataclass(frozen=True)
class Call:
    """One finished call of the load."""

    kind: str  # create, read, tokenize, reveal
    start: float  # time.monotonic()
    end: float
    ok: bool
    code: str = ""  # the status code name of a failed call
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Acked:
    """An acknowledged create: what must be readable, equal, at the end."""

    record_id: str
    values: dict[str, str]
    tenant: str = TENANT


@dataclasses.dataclass
class Ledger:
    """Every call, every acknowledged write and token, every wrong value seen."""

    calls: list[Call] = dataclasses.field(default_factory=list)
    acked: list[Acked] = dataclasses.field(default_factory=list)
    tokens: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    wrong: list[str] = dataclasses.field(default_factory=list)
    #: creates that failed (outcome unknown): (idempotency key, values), retried at the end
    unknown: list[tuple[str, dict[str, str]]] = dataclasses.field(default_factory=list)
    crashes: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def snapshot_acked(self) -> list[Acked]:
        with self.lock:
            return list(self.acked)


def new_values(n: int) -> dict[str, str]:
    """A record whose values are unique to this run (so a mix-up cannot go unnoticed)."""
    tag = uuid.uuid4().hex[:10]
    return {
        "email": f"sys.{tag}@example.com",
        "phone": f"+44207946{n % 10000:04d}",
        "full_name": f"Sysperson Q{tag}",
        "national_id": f"SY{n % 1000000:06d}C",
        "card_number": luhn_complete(f"5100{n % 10**11:011d}"),
    }


class Load:
    """Background threads: creates, reads of acknowledged records, tokenize + reveal."""

    def __init__(
        self,
        channel: grpc.Channel,
        ledger: Ledger,
        *,
        pause: float = 0.03,
        cold_tenants: Sequence[str] = (),
    ) -> None:
        """``cold_tenants``: tenants no replica has used yet; the ``newtenant`` thread writes
        one record to the next of them every ``COLD_PAUSE`` seconds, so that each of those
        calls needs the key server (a tenant key not in any cache)."""
        self._cold = list(cold_tenants)
        self._records = pb_grpc.RecordsStub(channel)
        self._tokens = tokens_pb_grpc.TokensStub(channel)
        self._ledger = ledger
        self._pause = pause
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counter = 0
        self._counter_lock = threading.Lock()

    def start(self, writers: int = 2, readers: int = 1, tokenizers: int = 1) -> None:
        loops: list[Callable[[], None]] = (
            [self._create] * writers
            + [self._read] * readers
            + [self._tokenize] * tokenizers
            + ([self._create_cold] if self._cold else [])
        )
        for i, body in enumerate(loops):
            t = threading.Thread(target=self._loop, args=(body,), name=f"load-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CALL_TIMEOUT + 5)

    def _loop(self, body: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                body()
            except Exception as exc:  # a bug of the test itself: keep it, stop this thread
                with self._ledger.lock:
                    self._ledger.crashes.append(f"{type(exc).__name__}: {exc}")
                return
            self._stop.wait(self._pause)

    def _timed(self, kind: str, call: Callable[[], _T]) -> _T | None:
        start = time.monotonic()
        try:
            result = call()
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else ""
            self._ledger.add(
                Call(
                    kind,
                    start,
                    time.monotonic(),
                    False,
                    code.name if code else "UNKNOWN",
                    (details or "")[:200],
                )
            )
            return None
        self._ledger.add(Call(kind, start, time.monotonic(), True))
        return result

    def _next(self) -> int:
        with self._counter_lock:
            self._counter += 1
            return self._counter

    def _create(self) -> None:
        values = new_values(self._next())
        request = pb.CreateRecordRequest(
            tenant=TENANT, fields=values, idempotency_key=uuid.uuid4().hex
        )
        r = self._timed("create", lambda: self._records.CreateRecord(request, timeout=CALL_TIMEOUT))
        with self._ledger.lock:
            if r is not None:
                self._ledger.acked.append(Acked(r.record_id, values))
            else:
                self._ledger.unknown.append((request.idempotency_key, values))

    def _create_cold(self) -> None:
        if not self._cold:
            self._stop.wait(1.0)
            return
        tenant = self._cold.pop(0)
        values = new_values(self._next())
        request = pb.CreateRecordRequest(
            tenant=tenant, fields=values, idempotency_key=uuid.uuid4().hex
        )
        r = self._timed(
            "newtenant", lambda: self._records.CreateRecord(request, timeout=CALL_TIMEOUT)
        )
        if r is not None:
            with self._ledger.lock:
                self._ledger.acked.append(Acked(r.record_id, values, tenant))
        self._stop.wait(COLD_PAUSE)

    def _read(self) -> None:
        acked = self._ledger.snapshot_acked()
        if not acked:
            return
        want = random.choice(acked)
        request = pb.GetRecordRequest(tenant=want.tenant, record_id=want.record_id, purpose=PURPOSE)
        r = self._timed("read", lambda: self._records.GetRecord(request, timeout=CALL_TIMEOUT))
        if r is not None:
            problem = compare_record(want, r)
            if problem:
                with self._ledger.lock:
                    self._ledger.wrong.append(problem)

    def _tokenize(self) -> None:
        value = new_values(self._next())["email"]
        item = tokens_pb.TokenizeItem(
            value=value, field_class="email", kind=tokens_pb.TOKEN_KIND_RANDOM
        )
        r = self._timed(
            "tokenize",
            lambda: self._tokens.Tokenize(
                tokens_pb.TokenizeRequest(tenant=TENANT, items=[item]), timeout=CALL_TIMEOUT
            ),
        )
        if r is None:
            return
        token = r.tokens[0]
        with self._ledger.lock:
            self._ledger.tokens.append((token, value))
        request = tokens_pb.RevealRequest(tenant=TENANT, tokens=[token], purpose=PURPOSE)
        revealed = self._timed("reveal", lambda: self._tokens.Reveal(request, timeout=CALL_TIMEOUT))
        if revealed is not None:
            problem = compare_reveal(token, value, revealed)
            if problem:
                with self._ledger.lock:
                    self._ledger.wrong.append(problem)


def values_in(text: str, ledger: Ledger) -> set[str]:
    """The customer values this run sent (records, failed creates, tokenized values) that
    occur in ``text``: the distinctive ones (email, name, national id, card number)."""
    with ledger.lock:
        records = [a.values for a in ledger.acked] + [v for _, v in ledger.unknown]
        tokenized = [v for _, v in ledger.tokens]
    needles = set(tokenized)
    for values in records:
        needles.update(values[f] for f in ("email", "full_name", "national_id", "card_number"))
    return {n for n in needles if n in text}


def compare_record(want: Acked, got: pb.GetRecordResponse) -> str:
    """ "" when the record read back holds the acknowledged plaintext values, else what differs
    (field names only: never a value)."""
    if got.record_id != want.record_id:
        return f"read {want.record_id}: answered for {got.record_id}"
    bad = [
        f
        for f in PLAIN_FIELDS
        if got.fields[f].output != pb.OUTPUT_PLAIN or got.fields[f].value != want.values[f]
    ]
    return f"read {want.record_id}: wrong value of {bad}" if bad else ""


def compare_reveal(token: str, value: str, got: tokens_pb.RevealResponse) -> str:
    if len(got.results) != 1:
        return f"reveal {token}: {len(got.results)} results"
    result = got.results[0]
    if result.error or result.value != value or result.output != pb.OUTPUT_PLAIN:
        return f"reveal {token}: wrong value (error {result.error}, output {result.output})"
    return ""


def retry_unknown_creates(channel: grpc.Channel, ledger: Ledger) -> tuple[int, int, list[str]]:
    """Retry every failed create with its idempotency key, as a client does after an outage.

    Before each retry, FindRecords on the (unique) email says whether the failed attempt had
    committed; the retry must then answer with that record (no duplicate), else with a new one.
    Either way the record counts as acknowledged from then on. Returns (committed before,
    not committed, problems)."""
    records = pb_grpc.RecordsStub(channel)
    with ledger.lock:
        pending = list(ledger.unknown)
    problems: list[str] = []
    committed = fresh = 0
    for key, values in pending:
        find = pb.FindRecordsRequest(tenant=TENANT, match={"email": values["email"]})
        request = pb.CreateRecordRequest(tenant=TENANT, fields=values, idempotency_key=key)
        try:
            before = list(records.FindRecords(find, timeout=30).record_ids)
            r = records.CreateRecord(request, timeout=30)
            after = list(records.FindRecords(find, timeout=30).record_ids)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "?"
            problems.append(f"retried create {key}: {code}")
            continue
        if len(before) > 1 or after != [r.record_id] or (before and before != after):
            problems.append(
                f"retried create {key}: {len(before)} records before, {len(after)} after"
            )
        committed += 1 if before else 0
        fresh += 0 if before else 1
        with ledger.lock:
            ledger.acked.append(Acked(r.record_id, values))
    return committed, fresh, problems


def verify_all(channel: grpc.Channel, ledger: Ledger) -> tuple[list[str], list[str]]:
    """Read every acknowledged record and reveal every acknowledged token: (lost, wrong)."""
    records = pb_grpc.RecordsStub(channel)
    tokens = tokens_pb_grpc.TokensStub(channel)
    lost: list[str] = []
    wrong: list[str] = []
    for want in ledger.snapshot_acked():
        request = pb.GetRecordRequest(tenant=want.tenant, record_id=want.record_id, purpose=PURPOSE)
        try:
            got = records.GetRecord(request, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "?"
            lost.append(f"{want.record_id}: {code}")
            continue
        problem = compare_record(want, got)
        if problem:
            wrong.append(problem)
    with ledger.lock:
        pairs = list(ledger.tokens)
    for start in range(0, len(pairs), 500):
        chunk = pairs[start : start + 500]
        reveal = tokens_pb.RevealRequest(
            tenant=TENANT, tokens=[t for t, _ in chunk], purpose=PURPOSE
        )
        try:
            revealed = tokens.Reveal(reveal, timeout=60)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "?"
            lost.extend(f"{t}: {code}" for t, _ in chunk)
            continue
        for (token, value), result in zip(chunk, revealed.results, strict=True):
            if result.error == tokens_pb.TOKEN_ERROR_UNKNOWN:
                lost.append(f"token {token}: unknown")
            elif result.error or result.value != value:
                wrong.append(f"token {token}: wrong value (error {result.error})")
    return lost, wrong


# --- faults and their windows ------------------------------------------------------------------

KINDS = ("create", "newtenant", "read", "tokenize", "reveal")


@dataclasses.dataclass
class Fault:
    """One fault: when it began and ended, and which failures it excuses until when.

    ``allowed``: status codes a call may fail with if it was in flight at some moment of
    ``[start, end + margin]``; any other failure, or any failure outside, is unexpected.
    """

    name: str
    start: float
    end: float = 0.0
    allowed: frozenset[str] = frozenset()
    margin: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)

    def excuses(self, call: Call) -> bool:
        return (
            call.code in self.allowed
            and call.end >= self.start
            and call.start <= self.end + self.margin
        )


@dataclasses.dataclass(frozen=True)
class Recovery:
    """Per fault and call kind, seconds from the fault's start."""

    fault: str
    kind: str
    calls: int
    failures: int
    first_success: float | None  # the end of the first call of the window that succeeded
    steady: float | None  # from then on every call succeeded (0: no failure; None: never)
    max_latency: float


def recoveries(faults: Sequence[Fault], calls: Sequence[Call], run_end: float) -> list[Recovery]:
    """What each fault did to each kind of call: the calls that ended between its start and
    the next fault's start (the end of the run for the last), so that a call in flight when a
    fault begins counts for that fault."""
    out: list[Recovery] = []
    for i, fault in enumerate(faults):
        until = faults[i + 1].start if i + 1 < len(faults) else run_end
        for kind in KINDS:
            window = sorted(
                (c for c in calls if c.kind == kind and fault.start <= c.end < until),
                key=lambda c: c.end,
            )
            failed = [c for c in window if not c.ok]
            first_ok = next((c for c in window if c.ok), None)
            steady: float | None = 0.0
            if failed:
                last_failure = max(c.end for c in failed)
                after = next((c for c in window if c.ok and c.end > last_failure), None)
                steady = None if after is None else after.end - fault.start
            out.append(
                Recovery(
                    fault.name,
                    kind,
                    len(window),
                    len(failed),
                    None if first_ok is None else first_ok.end - fault.start,
                    steady,
                    max((c.end - c.start for c in window), default=0.0),
                )
            )
    return out


def unexpected_failures(faults: Sequence[Fault], calls: Sequence[Call]) -> list[Call]:
    return [c for c in calls if not c.ok and not any(f.excuses(c) for f in faults)]


def table(rows: Sequence[Recovery], faults: Sequence[Fault]) -> list[str]:
    """The recovery table, one line a row, for the terminal and the README."""

    def secs(x: float | None) -> str:
        return "never" if x is None else f"{x:.2f}"

    lines = [
        f"{'fault':<30} {'call':<9} {'calls':>6} {'failed':>6} {'1st ok s':>9} "
        f"{'steady s':>9} {'max lat s':>9}"
    ]
    for r in rows:
        if not r.calls:
            continue
        lines.append(
            f"{r.fault:<30} {r.kind:<9} {r.calls:>6} {r.failures:>6} {secs(r.first_success):>9} "
            f"{secs(r.steady):>9} {r.max_latency:>9.2f}"
        )
    for f in faults:
        for note in f.notes:
            lines.append(f"  {f.name}: {note}")
    return lines


#: the report of the last system test run, printed by tests/system/conftest.py at the end
REPORT_LINES: list[str] = []
