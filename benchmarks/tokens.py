"""Tokens benchmark: Tokenize, Reveal and StreamTokenize throughput against the naive way.

Runs against the embedded default: a SQLite file in a temporary directory, an OpenBao dev server
started here (with a file audit device, to count its requests) and the real gRPC server on
127.0.0.1 (in this process; every client call goes over gRPC loopback through
``vault.client.VaultClient``); with ``--postgres`` also against PostgreSQL, in a temporary
database that is dropped at the end. Prints figures only: there are no assertions, and a missed
target never changes the exit status.

    .venv/bin/python benchmarks/tokens.py               # full run (about 40 s on SQLite)
    .venv/bin/python benchmarks/tokens.py --quick       # smoke test (well under 20 s)
    .venv/bin/python benchmarks/tokens.py --postgres    # also on PostgreSQL

Measured in one run, per backend, in interleaved rounds (every round runs each variant once,
in a shuffled order, so machine noise falls on all of them alike):

1. ``Tokenize`` values/s, batches of 1,000 fresh values (emails, E.164 phone numbers, Luhn-valid
   card numbers and names, a quarter each), for each kind: random, deterministic and
   format-preserving.
2. The naive way: one OpenBao transit ``encrypt`` call per value (hvac, as in
   ``benchmarks/records.py``), values/s.
3. The ratio of each kind to the naive way; target: random and deterministic >= 50x.
4. ``Reveal`` values/s: batches of 1,000 tokens issued earlier in the run, purpose ``testing``,
   as the test policy's ``test-admin`` (plain output), so every batch is audited.
5. ``StreamTokenize`` values/s: 20 batches of 1,000 (random kind) over one stream.

It also counts the requests OpenBao served, from its audit log: while the first batches of a
new tenant were tokenized (warm-up) and while the measured tokenize and reveal calls ran. On
PostgreSQL it runs ``ANALYZE`` after the warm-up (``--no-analyze`` to skip it): see
benchmarks/README.md, "PostgreSQL statistics".
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import phonenumbers
from sqlalchemy import text

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
    BaoRequests,
    count_requests,
    describe_requests,
    load_average,
    machine_context,
    postgres_database,
    postgres_reachable,
    raise_interrupt,
    verdict,
)
from tests.support import (  # noqa: E402
    ADMIN_KEY,
    FIELD_CLASSES,
    KEY_PREFIX,
    POSTGRES_URL,
    TEST_POLICY,
    TEST_PURPOSE,
    authenticator,
    luhn_complete,
    make_wrapper,
)
from vault.api import RunningServer, start_server  # noqa: E402
from vault.audit import AuditLog  # noqa: E402
from vault.client import StreamSummary, TokenItem, VaultClient  # noqa: E402
from vault.keys import KeyManager, KvCheckpointStore, TokenAuth, init_field_keys  # noqa: E402
from vault.keys.openbao_dev import OpenBaoDevServer  # noqa: E402
from vault.policy import PolicyHolder  # noqa: E402
from vault.schema import load_schema  # noqa: E402
from vault.service import Access, Keyring, RecordsService  # noqa: E402
from vault.service.tokens import TokensService  # noqa: E402
from vault.storage import Database, upgrade  # noqa: E402

TARGET = 50.0  # random and deterministic Tokenize values/s at least this many times the naive
TARGET_KINDS = ("random", "deterministic")
KINDS = ("random", "deterministic", "format_preserving")
#: the classes of the generated values, a quarter of each batch each; all allow
#: format-preserving tokens (vault.service.tokens.FPE_CLASSES)
CLASSES = ("email", "phone", "card_number", "name")
NAIVE, REVEAL, STREAM, TEXT = "naive", "reveal", "stream", "text"
VARIANTS = (*KINDS, REVEAL, STREAM, TEXT, NAIVE)
#: TokenizeText: support messages per call, from the labelled corpus of the text tests
TEXT_BATCH = 100
CORPUS = REPO_ROOT / "tests" / "data" / "text_corpus" / "support_messages.jsonl"
LABELS = {
    "random": "Tokenize, random",
    "deterministic": "Tokenize, deterministic",
    "format_preserving": "Tokenize, format-preserving",
    REVEAL: "Reveal (plain, audited)",
    STREAM: "StreamTokenize, random",
    TEXT: "TokenizeText, support messages",
    NAIVE: "Naive: one transit encrypt per value",
}
CLIENT_TIMEOUT = 120.0


# --- realistic values ------------------------------------------------------------------------

FIRST_NAMES = (
    "Ada", "Grace", "Amara", "Wei", "Sofia", "Mateo", "Yuki", "Olusegun", "Priya", "Lars",
    "Fatima", "Jonas", "Chloé", "José", "Ingrid", "Kwame", "Mei", "Tomasz", "Leila", "Diego",
    "Hannah", "Ravi", "Aoife", "Nikolai", "Zanele", "Emre", "Camille", "Arjun", "Freya", "Omar",
    "Lucia", "Kenji", "Siobhan", "Tariq", "Elena", "Björn", "Nadia", "Pablo", "Inès", "Zoë",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Okafor", "Zhang", "Rossi", "Garcia", "Tanaka", "Adeyemi", "Sharma",
    "Andersen", "Haddad", "Schmidt", "Dubois", "Fernandez", "Larsen", "Mensah", "Chen",
    "Kowalski", "Karimi", "Morales", "Cohen", "Iyer", "Murphy", "Petrov", "Dlamini", "Yilmaz",
    "Laurent", "Nair", "Lindqvist", "Farouk", "Bianchi", "Sato", "Byrne", "Qureshi", "Popescu",
    "Eriksson", "Novak", "Ortega", "Silva", "Moreau", "O'Brien", "Müller", "Núñez", "Søndergaard",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
#: E.164 prefixes and the number of random digits after them; a draw is kept only when
#: phonenumbers calls it valid (most are), which is what the vault checks too
PHONE_PLANS = (
    ("+447", 9),  # GB mobile
    ("+4930", 8),  # DE Berlin
    ("+4915", 9),  # DE mobile
    ("+336", 8),  # FR mobile
    ("+1212", 7),  # US New York
    ("+1415", 7),  # US San Francisco
    ("+3934", 8),  # IT mobile
    ("+346", 8),  # ES mobile
    ("+8190", 8),  # JP mobile
)
#: card brands: IIN prefix and the total length, Luhn check digit last
CARD_PLANS = (("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("6011", 16))


def _ascii(name: str) -> str:
    """``"Núñez"`` -> ``"nunez"``, ``"O'Brien"`` -> ``"obrien"``: a name as in a mailbox."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


class Values:
    """Fresh realistic values: no value is handed out twice in a run (so deterministic tokens
    are new rows too, never look-ups of an earlier value)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._seen: set[str] = set()

    def _fresh(self, make: Callable[[], str]) -> str:
        while True:
            value = make()
            if value not in self._seen:
                self._seen.add(value)
                return value

    def _digits(self, n: int) -> str:
        return "".join(self._rng.choice("0123456789") for _ in range(n))

    def _name(self) -> str:
        rng = self._rng
        last = rng.choice(LAST_NAMES)
        if rng.random() < 0.3:
            last = f"{last}-{rng.choice(LAST_NAMES)}"
        middle = f" {rng.choice('ABCDEFGHIJKLMNOPRSTVW')}." if rng.random() < 0.5 else ""
        return f"{rng.choice(FIRST_NAMES)}{middle} {last}"

    def _email(self) -> str:
        rng = self._rng
        first, last = _ascii(rng.choice(FIRST_NAMES)), _ascii(rng.choice(LAST_NAMES))
        local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}"))
        return f"{local}{rng.randint(1, 99_999)}@{rng.choice(EMAIL_DOMAINS)}"

    def _phone(self) -> str:
        while True:
            prefix, n = self._rng.choice(PHONE_PLANS)
            value = prefix + self._digits(n)
            if phonenumbers.is_valid_number(phonenumbers.parse(value)):
                return value

    def _card(self) -> str:
        prefix, length = self._rng.choice(CARD_PLANS)
        return luhn_complete(prefix + self._digits(length - len(prefix) - 1))

    def value(self, field_class: str) -> str:
        make = {
            "email": self._email,
            "phone": self._phone,
            "card_number": self._card,
            "name": self._name,
        }[field_class]
        return self._fresh(make)

    def items(self, count: int, kind: str) -> list[TokenItem]:
        """``count`` fresh values, the classes in turn, all of token kind ``kind``."""
        return [TokenItem(self.value(c), c, kind) for c in (CLASSES[i % 4] for i in range(count))]


# --- parameters and results ------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    rounds: int
    batch_size: int
    naive: int
    stream_batches: int
    seed: int
    postgres: bool
    postgres_url: str
    analyze: bool


@dataclass
class Run:
    """The figures of one backend."""

    backend: str
    #: per variant: (values, seconds) of every timed call (for the stream: one whole stream)
    calls: dict[str, list[tuple[int, float]]] = field(
        default_factory=lambda: {v: [] for v in VARIANTS}
    )
    warmup_requests: list[str] = field(default_factory=list)
    tokenize_requests: list[str] = field(default_factory=list)
    reveal_requests: list[str] = field(default_factory=list)
    stream_server_seconds: float = 0.0
    token_rows: int = 0  # rows in the tokens table at the end (every tenant)
    problems: list[str] = field(default_factory=list)

    def rate(self, variant: str, calls: slice = slice(None)) -> float:
        """Values per second over the variant's timed calls (total values / total seconds)."""
        picked = self.calls[variant][calls]
        seconds = sum(s for _, s in picked)
        return sum(n for n, _ in picked) / seconds if seconds else 0.0

    def values(self, variant: str) -> int:
        return sum(n for n, _ in self.calls[variant])

    def ratio(self, variant: str, calls: slice = slice(None)) -> float:
        naive = self.rate(NAIVE, calls)
        return self.rate(variant, calls) / naive if naive else 0.0


# --- helpers ---------------------------------------------------------------------------------


def start_services(
    db: Database, openbao: OpenBaoDevServer, stack: contextlib.ExitStack
) -> RunningServer:
    """The records and tokens services over one database, configured as
    ``vault.app.build_app`` does by default (KV checkpoint of the audit chain every 1,000 rows,
    no JSON-lines sink), with the test policy, behind a real gRPC server on 127.0.0.1. The
    checkpoint path is new for every database: one OpenBao serves them all."""
    wrapper = make_wrapper(openbao)
    keys = KeyManager(wrapper)
    checkpoint = KvCheckpointStore(
        openbao.url,
        TokenAuth(openbao.root_token, renew=False),
        path=f"cvault/audit/bench-{secrets.token_hex(6)}",
    )
    audit = AuditLog(db, keys, checkpoint=checkpoint, checkpoint_every=1000)
    # closed in reverse order, after the server stops: the audit log first (it waits for a
    # background checkpoint, which uses the other two)
    stack.callback(wrapper.close)
    stack.callback(checkpoint.close)
    stack.callback(audit.close)
    access = Access(PolicyHolder(TEST_POLICY), audit)
    keyring = Keyring(db, keys)
    records = RecordsService(db, keys, load_schema(), access, keyring=keyring)
    tokens = TokensService(db, keys, access, keyring)
    running = start_server(records, "127.0.0.1:0", authenticator=authenticator(), tokens=tokens)
    stack.callback(running.stop, grace=0)
    return running


# --- one backend -----------------------------------------------------------------------------


class Bench:
    """The variants of one backend, each callable once per round."""

    def __init__(
        self,
        run: Run,
        client: VaultClient,
        transit: hvac.Client,
        counter: BaoRequests,
        values: Values,
        p: Params,
    ) -> None:
        self.run = run
        self.client = client
        self.transit = transit
        self.counter = counter
        self.values = values
        self.p = p
        self.tenant = f"bench-tokens-{uuid.uuid4().hex[:8]}"
        self.issued: dict[str, str] = {}  # token -> value, to check the reveals
        self.rng = random.Random(p.seed)
        self.recording = False  # False during the warm-up
        self.messages = [
            str(json.loads(line)["text"]) for line in CORPUS.read_text("utf-8").splitlines()
        ]
        self.next_message = 0

    def _record(self, variant: str, values: int, seconds: float) -> None:
        if self.recording:
            self.run.calls[variant].append((values, seconds))

    def _requests(self, into: list[str]) -> None:
        paths = self.counter.take()
        (into if self.recording else self.run.warmup_requests).extend(paths)

    def tokenize(self, kind: str) -> None:
        items = self.values.items(self.p.batch_size, kind)
        self.counter.take()  # anything before this call is not its doing
        t0 = time.perf_counter()
        tokens = self.client.tokenize(self.tenant, items)
        elapsed = time.perf_counter() - t0
        self._requests(self.run.tokenize_requests)
        self._record(kind, len(items), elapsed)
        self._check_tokens(kind, items, tokens)

    def stream(self, batches: int) -> None:
        work = [self.values.items(self.p.batch_size, "random") for _ in range(batches)]
        self.counter.take()
        t0 = time.perf_counter()
        answers = list(self.client.stream_tokenize(self.tenant, work))
        elapsed = time.perf_counter() - t0
        self._requests(self.run.tokenize_requests)
        self._record(STREAM, batches * self.p.batch_size, elapsed)
        summary = answers.pop() if answers else None
        if not isinstance(summary, StreamSummary) or summary.values != len(work) * len(work[0]):
            self.run.problems.append(f"stream summary {summary!r} for {len(work)} batches")
        elif self.recording:
            self.run.stream_server_seconds += summary.seconds
        if len(answers) != len(work):
            self.run.problems.append(f"stream: {len(answers)} answers for {len(work)} batches")
            return
        for items, tokens in zip(work, answers, strict=True):
            assert isinstance(tokens, list)
            self._check_tokens("stream", items, tokens, keep=False)

    def reveal(self) -> None:
        tokens = self.rng.sample(list(self.issued), min(self.p.batch_size, len(self.issued)))
        self.counter.take()
        t0 = time.perf_counter()
        results = self.client.reveal(self.tenant, tokens, purpose=TEST_PURPOSE)
        elapsed = time.perf_counter() - t0
        self._requests(self.run.reveal_requests)
        self._record(REVEAL, len(tokens), elapsed)
        if len(results) != len(tokens):
            self.run.problems.append(f"reveal: {len(results)} results for {len(tokens)} tokens")
            return
        wrong = sum(
            1
            for t, r in zip(tokens, results, strict=True)
            if r.error or r.output != "plain" or r.value != self.issued[t]
        )
        if wrong:
            self.run.problems.append(f"reveal: {wrong} of {len(tokens)} not revealed as issued")

    def text(self) -> None:
        """One TokenizeText call of TEXT_BATCH corpus messages (about 250 characters and 2-3
        values each), in a scope of its own: detection, tokenizing and the audit row."""
        start = self.next_message
        msgs = [self.messages[(start + i) % len(self.messages)] for i in range(TEXT_BATCH)]
        self.next_message = (start + TEXT_BATCH) % len(self.messages)
        self.counter.take()
        t0 = time.perf_counter()
        redacted, _ = self.client.tokenize_text(
            self.tenant, msgs, scope=f"chat-{uuid.uuid4().hex[:12]}"
        )
        elapsed = time.perf_counter() - t0
        self._requests(self.run.tokenize_requests)
        self._record(TEXT, len(msgs), elapsed)
        if len(redacted) != len(msgs) or not any(r.spans for r in redacted):
            self.run.problems.append(f"text: {len(redacted)} results for {len(msgs)} messages")

    def naive(self, calls: int) -> None:
        """Each value encrypted directly under its transit field key, one HTTP call per value
        (as benchmarks/records.py measures it: encryption only, no validation, no database)."""
        work = [
            (c, base64.b64encode(self.values.value(c).encode()).decode())
            for c in (CLASSES[i % 4] for i in range(calls))
        ]
        t0 = time.perf_counter()
        for field_class, plaintext in work:
            self.transit.secrets.transit.encrypt_data(
                name=f"{KEY_PREFIX}-{field_class}", plaintext=plaintext
            )
        self._record(NAIVE, calls, time.perf_counter() - t0)

    def _check_tokens(
        self, kind: str, items: Sequence[TokenItem], tokens: Sequence[str], *, keep: bool = True
    ) -> None:
        """One distinct token per value; ``keep``: remember them for the reveals (the tokens of
        the streams are not kept: the reveals draw from the unary calls' tokens, all kinds)."""
        if len(tokens) != len(items) or len(set(tokens)) != len(tokens):
            self.run.problems.append(f"{kind}: {len(tokens)} tokens for {len(items)} values")
        elif keep:
            self.issued.update(zip(tokens, (i.value for i in items), strict=True))

    def variant(self, name: str) -> None:
        if name in KINDS:
            self.tokenize(name)
        elif name == REVEAL:
            self.reveal()
        elif name == STREAM:
            self.stream(self.p.stream_batches)
        elif name == TEXT:
            self.text()
        else:
            self.naive(self.p.naive)


def run_backend(
    backend: str,
    url: str,
    openbao: OpenBaoDevServer,
    counter: BaoRequests,
    p: Params,
    stack: contextlib.ExitStack,
) -> Run:
    run = Run(backend)
    t0 = time.perf_counter()
    upgrade(url)
    db = Database(url)
    stack.callback(db.dispose)
    server = start_services(db, openbao, stack)
    client = stack.enter_context(
        VaultClient(server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=CLIENT_TIMEOUT)
    )
    transit = hvac.Client(url=openbao.url, token=openbao.root_token, timeout=30)
    stack.callback(transit.adapter.close)
    print(f"  gRPC {server.address}, health {client.health()} ({time.perf_counter() - t0:.1f} s)")

    bench = Bench(run, client, transit, counter, Values(p.seed), p)
    # Warm-up, not recorded: the tenant's keys are made on its first tokenize (transit calls),
    # the pools on the first batch of each class, and the connections are opened.
    t0 = time.perf_counter()
    for kind in KINDS:
        bench.tokenize(kind)
    bench.reveal()
    bench.stream(2)
    for _ in range(3):  # the corpus's other classes (IBAN, national id, IP) get their keys
        bench.text()
    bench.naive(20)
    print(
        f"  warm-up in tenant {bench.tenant} ({time.perf_counter() - t0:.1f} s): OpenBao requests"
        f" {describe_requests(run.warmup_requests)}"
    )
    if db.engine.dialect.name == "postgresql":
        if p.analyze:
            # A new table has no planner statistics until autovacuum analyzes it (up to a
            # minute, and again as it grows); until then the IN (...) look-ups of deterministic
            # tokens, surrogates and reveals can take a plan that scans the tenant's rows.
            # A database in service has statistics, so this measures it with them.
            with db.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
            print("  ANALYZE after the warm-up (planner statistics, as autovacuum would keep)")
        else:
            print("  no ANALYZE (--no-analyze): the tables have no statistics until autovacuum")

    bench.recording = True
    rng = random.Random(p.seed)
    order = list(VARIANTS)
    t0 = time.perf_counter()
    for _ in range(p.rounds):
        rng.shuffle(order)
        for variant in order:
            bench.variant(variant)
    print(
        f"  measured {p.rounds} rounds, each variant once per round in a shuffled order"
        f" ({time.perf_counter() - t0:.1f} s)"
    )
    with db.begin(write=False) as conn:
        run.token_rows = int(conn.execute(text("SELECT count(*) FROM tokens")).scalar_one())
    print_run(run, p)
    return run


# --- reporting -------------------------------------------------------------------------------


def size_of(run: Run, variant: str, p: Params) -> str:
    n = len(run.calls[variant])
    if variant == STREAM:
        return f"{n} streams x {p.stream_batches} x {p.batch_size:,}"
    if variant == NAIVE:
        return f"{run.values(NAIVE):,} calls"
    if variant == TEXT:
        return f"{n} x {TEXT_BATCH} messages"
    return f"{n} x {p.batch_size:,}"


def print_run(run: Run, p: Params) -> None:
    half = slice(None, p.rounds // 2), slice(p.rounds // 2, None)
    print()
    print(f"  {'variant':<38} {'values':>8} {'seconds':>8} {'values/s':>10}   per call (ms)")
    for variant in VARIANTS:
        calls = run.calls[variant]
        ms = [s * 1000.0 for _, s in calls]
        unit = "stream" if variant == STREAM else ("block" if variant == NAIVE else "batch")
        print(
            f"  {LABELS[variant]:<38} {run.values(variant):>8,} {sum(s for _, s in calls):8.2f}"
            f" {run.rate(variant):10,.0f}   per {unit} p50 {statistics.median(ms):.0f},"
            f" min {min(ms):.0f}, max {max(ms):.0f}"
        )
    naive_ms = 1000.0 / run.rate(NAIVE)
    print(f"  (naive: {naive_ms:.2f} ms per transit encrypt call)")
    # Every round adds (3 + stream batches) x batch size rows to the token table, and inserting
    # random keys into a larger primary-key index costs more: show the trend.
    print(f"  per call, in order (ms); {run.token_rows:,} token rows at the end:")
    for variant in (*KINDS, REVEAL):
        in_order = " ".join(f"{s * 1000:.0f}" for _, s in run.calls[variant])
        print(f"    {LABELS[variant]:<36} {in_order}")
    print("\n  ratio to the naive way (values/s / naive values/s; halves: first / second half)")
    for variant in (*KINDS, STREAM, REVEAL):
        r = run.ratio(variant)
        target = (
            f"   target >= {TARGET:.0f}x: {verdict(r >= TARGET)}" if variant in TARGET_KINDS else ""
        )
        halves = ""
        if p.rounds >= 2:
            first, second = run.ratio(variant, half[0]), run.ratio(variant, half[1])
            halves = f"  (halves {first:.1f}x / {second:.1f}x)"
        print(f"  {LABELS[variant]:<38} {r:8.1f}x{halves}{target}")
    stream_vs = run.rate(STREAM) / run.rate("random") if run.rate("random") else 0.0
    print(
        f"\n  StreamTokenize / Tokenize (both random): {stream_vs:.2f}x;"
        f" server-side stream time {run.stream_server_seconds:.2f} s of"
        f" {sum(s for _, s in run.calls[STREAM]):.2f} s"
    )
    tokenized = sum(run.values(k) for k in (*KINDS, STREAM))
    print(
        f"  OpenBao requests while {tokenized:,} values were tokenized (measured):"
        f" {describe_requests(run.tokenize_requests)}"
    )
    print(
        f"  OpenBao requests while {run.values(REVEAL):,} tokens were revealed (measured):"
        f" {describe_requests(run.reveal_requests)}"
    )
    for problem in run.problems:
        print(f"  WARNING: {problem}")


def summary_table(runs: Sequence[Run], p: Params) -> list[str]:
    rows = ["| Backend | Measurement | Result |", "|---|---|---|"]
    for run in runs:
        b = run.backend
        for variant in (*KINDS, NAIVE):
            rows.append(
                f"| {b} | {LABELS[variant]} ({size_of(run, variant, p)}) "
                f"| {run.rate(variant):,.0f} values/s |"
            )
        for kind in KINDS:
            r = run.ratio(kind)
            if kind in TARGET_KINDS:
                rows.append(
                    f"| {b} | **{kind} / naive (target >= {TARGET:.0f}x)** "
                    f"| **{r:,.1f}x ({verdict(r >= TARGET)})** |"
                )
            else:
                rows.append(f"| {b} | {kind} / naive (no target) | {r:,.1f}x |")
        for variant in (REVEAL, STREAM):
            rows.append(
                f"| {b} | {LABELS[variant]} ({size_of(run, variant, p)}) "
                f"| {run.rate(variant):,.0f} values/s |"
            )
        rows.append(
            f"| {b} | {LABELS[TEXT]} ({size_of(run, TEXT, p)}) | {run.rate(TEXT):,.0f} messages/s |"
        )
        tokenized = sum(run.values(k) for k in (*KINDS, STREAM))
        rows.append(
            f"| {b} | OpenBao requests: warm-up (new tenant, first batches) "
            f"| {count_requests(run.warmup_requests)} |"
        )
        rows.append(
            f"| {b} | OpenBao requests: measured tokenize ({tokenized:,} values) "
            f"| {count_requests(run.tokenize_requests)} |"
        )
        rows.append(
            f"| {b} | OpenBao requests: measured reveal ({run.values(REVEAL):,} tokens) "
            f"| {count_requests(run.reveal_requests)} |"
        )
    return rows


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 rounds, short streams (smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (15; --quick 3)")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="values per Tokenize/Reveal batch (1,000)"
    )
    parser.add_argument(
        "--naive", type=int, default=None, help="naive transit calls per round (300; --quick 100)"
    )
    parser.add_argument(
        "--stream-batches",
        type=int,
        default=None,
        help="batches per StreamTokenize stream, one stream per round (20; --quick 5)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for values and variant order")
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="PostgreSQL: no ANALYZE after the warm-up (a new table without statistics)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run on PostgreSQL at CVAULT_TEST_POSTGRES_URL (a temporary database)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    rounds = args.rounds if args.rounds is not None else (3 if quick else 15)
    naive = args.naive if args.naive is not None else (100 if quick else 300)
    stream = args.stream_batches if args.stream_batches is not None else (5 if quick else 20)
    for name, value in (("rounds", rounds), ("naive", naive), ("stream-batches", stream)):
        if value < 1:
            parser.error(f"--{name} must be at least 1")
    if not 4 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be 4..10,000")
    return Params(
        rounds=rounds,
        batch_size=int(args.batch_size),
        naive=naive,
        stream_batches=stream,
        seed=int(args.seed),
        postgres=bool(args.postgres),
        postgres_url=POSTGRES_URL,
        analyze=not args.no_analyze,
    )


def run(p: Params) -> list[Run]:
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvault-bench-")))
        print("setup")
        t0 = time.perf_counter()
        openbao = OpenBaoDevServer(audit_log_path=tmp / "openbao-audit.log")
        stack.callback(openbao.stop)  # registered before start: a half-started server stops too
        openbao.start()
        init_field_keys(
            openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        assert openbao.audit_log_path is not None
        counter = BaoRequests(openbao.audit_log_path)
        print(f"  OpenBao dev server {openbao.url} ({time.perf_counter() - t0:.1f} s)")

        print(f"\nSQLite (WAL, synchronous=NORMAL): {tmp / 'vault.db'}")
        with contextlib.ExitStack() as inner:
            url = f"sqlite:///{tmp / 'vault.db'}"
            runs.append(run_backend("SQLite", url, openbao, counter, p, inner))

        if p.postgres:
            why = postgres_reachable(p.postgres_url)
            if why is not None:
                print(f"\nPostgreSQL: not reachable at CVAULT_TEST_POSTGRES_URL ({why}); skipped")
            else:
                with contextlib.ExitStack() as inner:
                    url = inner.enter_context(postgres_database(p.postgres_url))
                    print(f"\nPostgreSQL: temporary database {url.rpartition('/')[2]}")
                    runs.append(run_backend("PostgreSQL", url, openbao, counter, p, inner))
        print("\nteardown")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault tokens benchmark: Tokenize, Reveal and StreamTokenize vs the naive way")
    for line in machine_context():
        print(f"  {line}")
    print(
        f"  params     rounds={p.rounds} batch={p.batch_size} values"
        f" ({', '.join(CLASSES)} in turn) naive={p.naive} calls/round"
        f" stream={p.stream_batches} batches/round seed={p.seed} postgres={p.postgres}"
    )
    started = time.perf_counter()
    try:
        runs = run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the servers, dropped the temporary database, removed files")
        return 130
    print(f"  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    print("\ntargets")
    for r in runs:
        for kind in TARGET_KINDS:
            ratio = r.ratio(kind)
            print(
                f"  {r.backend:<10} Tokenize {kind:<13} / naive = {r.rate(kind):,.0f} /"
                f" {r.rate(NAIVE):,.0f} values/s = {ratio:,.1f}x"
                f"   target >= {TARGET:.0f}x: {verdict(ratio >= TARGET)}"
            )
    print("\nsummary (Markdown)\n")
    for line in machine_context():
        print(f"{line}  ")
    print()
    print("\n".join(summary_table(runs, p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
