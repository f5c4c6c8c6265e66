"""Tokens benchmark: Tokenize, Reveal and StreamTokenize throughput against the naive way, and
each stream RPC against the unary batch call doing the same work.

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

Then, in rounds of their own (``--stream-rounds``), each stream RPC against the unary batch of
the same work, per item: a stream of ``--stream-messages`` (2,000) small messages sent
pipelined (the client sends without waiting for answers) against one unary call: StreamTokenize
of one value a message against Tokenize of as many values; StreamReveal of one token a message
against Reveal of the same tokens; StreamRevealText of an LLM answer holding tokens, in chunks
of 1-8 characters (about one model token each), against RevealText of the whole answer. It
prints items/s of both, the ratio stream / batch, and the audit rows each wrote; and, as the
ceiling, a stream of the same messages to a gRPC method in this process that answers each at
once (no vault code). ``--stream-items`` puts more values (tokens) in each message.

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
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import grpc
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
from vault.service import Access, Services  # noqa: E402
from vault.storage import Database, upgrade  # noqa: E402
from vault.v1 import tokens_pb2 as tokens_pb  # noqa: E402

TARGET = 50.0  # random and deterministic Tokenize values/s at least this many times the naive
TARGET_KINDS = ("random", "deterministic")
KINDS = ("random", "deterministic", "format_preserving")
#: the classes of the generated values, a quarter of each batch each; all allow
#: format-preserving tokens (vault.service.tokens.FPE_CLASSES)
CLASSES = ("email", "phone", "card_number", "name")
NAIVE, REVEAL, STREAM, TEXT = "naive", "reveal", "stream", "text"
#: streams of one small message per item against the unary batch of the same items
S_TOKENIZE, S_REVEAL, S_TEXT = "stream_tokenize", "stream_reveal", "stream_reveal_text"
B_TOKENIZE, B_REVEAL, B_TEXT = "batch_tokenize", "batch_reveal", "batch_reveal_text"
PAIRS = ((S_TOKENIZE, B_TOKENIZE), (S_REVEAL, B_REVEAL), (S_TEXT, B_TEXT))
#: gRPC alone: a stream of the same messages answered at once, with no vault code (a ceiling)
ECHO = "echo"
PAIR_VARIANTS = (*(v for pair in PAIRS for v in pair), ECHO)
#: StreamRevealText: chunk sizes in characters (an LLM streams about one model token a chunk)
CHUNK_SIZES = (1, 8)
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
    S_TOKENIZE: "StreamTokenize, small messages",
    B_TOKENIZE: "Tokenize, the same values in one call",
    S_REVEAL: "StreamReveal, small messages",
    B_REVEAL: "Reveal, the same tokens in one call",
    S_TEXT: "StreamRevealText, 1-8 characters a chunk",
    B_TEXT: "RevealText, the whole answer",
    ECHO: "gRPC alone: each message answered at once",
}
CLIENT_TIMEOUT = 120.0
#: the streams-against-batch target: a stream at least half the batch rate per item
STREAM_TARGET = 0.5
T = TypeVar("T")


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
    stream_messages: int
    stream_items: int
    stream_rounds: int
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
    #: streams against the unary batch: per variant, (items, seconds, audit rows) of every call
    pairs: dict[str, list[tuple[int, float, int]]] = field(
        default_factory=lambda: {v: [] for v in PAIR_VARIANTS}
    )
    token_rows: int = 0  # rows in the tokens table at the end (every tenant)
    problems: list[str] = field(default_factory=list)

    def rate(self, variant: str, calls: slice = slice(None)) -> float:
        """Values per second over the variant's timed calls (total values / total seconds)."""
        picked = self.calls[variant][calls]
        seconds = sum(s for _, s in picked)
        return sum(n for n, _ in picked) / seconds if seconds else 0.0

    def values(self, variant: str) -> int:
        return sum(n for n, _ in self.calls[variant])

    def pair_rate(self, variant: str) -> float:
        """Items per second over the variant's calls in the streams-against-batch rounds."""
        seconds = sum(s for _, s, _ in self.pairs[variant])
        return sum(n for n, _, _ in self.pairs[variant]) / seconds if seconds else 0.0

    def pair_ratio(self, stream: str, batch: str) -> float:
        """Stream items/s over batch items/s: the stream's share of the batch rate per item."""
        b = self.pair_rate(batch)
        return self.pair_rate(stream) / b if b else 0.0

    def ceiling(self, stream: str, batch: str, items_per_message: int) -> float:
        """The best ratio any stream of these messages could reach here: gRPC alone over the
        batch (per message for the text stream, whose messages are chunks, not items)."""
        b = self.pair_rate(batch)
        echo = self.pair_rate(ECHO) / (items_per_message if stream == S_TEXT else 1)
        return echo / b if b else 0.0

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
    services = Services.build(db, keys, load_schema(), access)
    running = start_server(services, "127.0.0.1:0", authenticator=authenticator())
    stack.callback(running.stop, grace=0)
    return running


if TYPE_CHECKING:
    EchoStream: TypeAlias = grpc.StreamStreamMultiCallable[
        tokens_pb.TokenizeRequest, tokens_pb.StreamTokenizeResponse
    ]


def start_echo(stack: contextlib.ExitStack) -> EchoStream:
    """A gRPC server in this process whose one bidirectional method answers every
    TokenizeRequest at once with a one-token StreamTokenizeResponse: no vault code, no
    authentication, the same messages as StreamTokenize. What gRPC alone costs a message is
    the ceiling of any stream of one-item messages here."""
    answer = tokens_pb.StreamTokenizeResponse(
        batch=tokens_pb.TokenizeResponse(tokens=["tok_email_" + "A" * 22])
    )

    def echo(requests: Iterator[object], context: grpc.ServicerContext) -> Iterator[object]:
        for _ in requests:
            yield answer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo",
                {
                    "Stream": grpc.stream_stream_rpc_method_handler(
                        echo,
                        request_deserializer=tokens_pb.TokenizeRequest.FromString,
                        response_serializer=tokens_pb.StreamTokenizeResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stack.callback(server.stop, grace=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stack.callback(channel.close)
    method: EchoStream = channel.stream_stream(
        "/bench.Echo/Stream",
        request_serializer=tokens_pb.TokenizeRequest.SerializeToString,
        response_deserializer=tokens_pb.StreamTokenizeResponse.FromString,
    )
    return method


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
        audit_rows: Callable[[], int],
        echo: EchoStream,
    ) -> None:
        self.run = run
        self.audit_rows = audit_rows
        self.echo = echo
        self.answer: list[str] = []  # StreamRevealText: an LLM answer holding tokens, in chunks
        self.answer_revealed = ""  # ... as RevealText gives it back
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

    # --- streams against the unary batch of the same work ----------------------------------

    def prepare_answer(self) -> None:
        """An LLM answer holding tokens: redacted corpus messages (tokens of one conversation
        scope) strung together, cut at a space, in chunks of ``CHUNK_SIZES`` characters; about
        ``stream_messages`` chunks. Also tops up the issued tokens the reveals draw from."""
        while len(self.issued) < self.p.stream_messages * self.p.stream_items:
            self.tokenize("random")
        scope = f"chat-{uuid.uuid4().hex[:12]}"
        wanted = self.p.stream_messages * sum(CHUNK_SIZES) // 2
        texts: list[str] = []
        while sum(len(t) + 1 for t in texts) < wanted + 100:
            start = self.next_message
            msgs = [self.messages[(start + i) % len(self.messages)] for i in range(TEXT_BATCH)]
            self.next_message = (start + TEXT_BATCH) % len(self.messages)
            redacted, _ = self.client.tokenize_text(self.tenant, msgs, scope=scope)
            texts += [r.text for r in redacted]
        joined = " ".join(texts)
        answer = joined[: joined.rfind(" ", 0, wanted)]
        at = 0
        while at < len(answer):
            size = self.rng.randint(*CHUNK_SIZES)
            self.answer.append(answer[at : at + size])
            at += size
        self.answer_revealed = self.client.reveal_text(self.tenant, answer).text

    def _timed(self, variant: str, items: int, call: Callable[[], T]) -> T:
        """``call()``, timed, with the audit rows it wrote (counted outside the timing)."""
        rows = self.audit_rows()
        t0 = time.perf_counter()
        out = call()
        elapsed = time.perf_counter() - t0
        if self.recording:
            self.run.pairs[variant].append((items, elapsed, self.audit_rows() - rows))
        return out

    def _cut(self, items: Sequence[T]) -> list[list[T]]:
        """``items`` in messages of ``stream_items``."""
        k = self.p.stream_items
        return [list(items[i : i + k]) for i in range(0, len(items), k)]

    def stream_tokenize_small(self) -> None:
        """Small messages, pipelined: the client's request iterator runs ahead."""
        items = self.values.items(self.p.stream_messages * self.p.stream_items, "random")
        messages = self._cut(items)
        answers = self._timed(
            S_TOKENIZE,
            len(items),
            lambda: list(self.client.stream_tokenize(self.tenant, iter(messages))),
        )
        summary = answers.pop() if answers else None
        if not isinstance(summary, StreamSummary) or summary.batches != len(messages):
            self.run.problems.append(f"{S_TOKENIZE}: summary {summary!r}")
        batches = [a for a in answers if isinstance(a, list)]
        if [len(a) for a in batches] != [len(m) for m in messages]:
            self.run.problems.append(f"{S_TOKENIZE}: {len(batches)} answers, not one a message")
            return
        tokens = [t for a in batches for t in a]
        self._check_tokens(S_TOKENIZE, items, tokens, keep=False)

    def batch_tokenize_same(self) -> None:
        items = self.values.items(self.p.stream_messages * self.p.stream_items, "random")
        tokens = self._timed(
            B_TOKENIZE, len(items), lambda: self.client.tokenize(self.tenant, items)
        )
        self._check_tokens(B_TOKENIZE, items, tokens, keep=False)

    def stream_reveal_small(self) -> None:
        tokens = self.rng.sample(list(self.issued), self.p.stream_messages * self.p.stream_items)
        messages = self._cut(tokens)
        answers = self._timed(
            S_REVEAL,
            len(tokens),
            lambda: list(
                self.client.stream_reveal(self.tenant, iter(messages), purpose=TEST_PURPOSE)
            ),
        )
        summary = answers.pop() if answers else None
        if not isinstance(summary, StreamSummary) or summary.batches != len(messages):
            self.run.problems.append(f"{S_REVEAL}: summary {summary!r}")
        got = [(r.token, r.value) for a in answers if isinstance(a, list) for r in a]
        if got != [(t, self.issued[t]) for t in tokens]:
            self.run.problems.append(f"{S_REVEAL}: answers differ from the tokens' values")

    def batch_reveal_same(self) -> None:
        tokens = self.rng.sample(list(self.issued), self.p.stream_messages * self.p.stream_items)
        results = self._timed(
            B_REVEAL,
            len(tokens),
            lambda: self.client.reveal(self.tenant, tokens, purpose=TEST_PURPOSE),
        )
        if [(r.token, r.value) for r in results] != [(t, self.issued[t]) for t in tokens]:
            self.run.problems.append(f"{B_REVEAL}: answers differ from the tokens' values")

    def stream_reveal_text_chunks(self) -> None:
        outs = self._timed(
            S_TEXT,
            len(self.answer),
            lambda: list(
                self.client.stream_reveal_text(self.tenant, self.answer, purpose=TEST_PURPOSE)
            ),
        )
        if len(outs) != len(self.answer) + 1:
            self.run.problems.append(f"{S_TEXT}: {len(outs)} outputs, {len(self.answer)} chunks")
        if "".join(o.text for o in outs) != self.answer_revealed:
            self.run.problems.append(f"{S_TEXT}: the output differs from RevealText's")

    def batch_reveal_text_whole(self) -> None:
        answer = "".join(self.answer)
        out = self._timed(
            B_TEXT, len(self.answer), lambda: self.client.reveal_text(self.tenant, answer)
        )
        if out.text != self.answer_revealed:
            self.run.problems.append(f"{B_TEXT}: the output differs from the first RevealText")

    def echo_small(self) -> None:
        """Messages like StreamTokenize's, to a stream that does no work."""
        items = self.values.items(self.p.stream_messages * self.p.stream_items, "random")
        requests = [
            tokens_pb.TokenizeRequest(
                tenant=self.tenant,
                items=[tokens_pb.TokenizeItem(value=i.value, field_class=i.field_class) for i in m],
            )
            for m in self._cut(items)
        ]
        answers = self._timed(
            ECHO, len(items), lambda: list(self.echo(iter(requests), timeout=CLIENT_TIMEOUT))
        )
        if len(answers) != len(requests):
            self.run.problems.append(f"{ECHO}: {len(answers)} answers, {len(requests)} messages")

    def pair_variant(self, name: str) -> None:
        {
            ECHO: self.echo_small,
            S_TOKENIZE: self.stream_tokenize_small,
            B_TOKENIZE: self.batch_tokenize_same,
            S_REVEAL: self.stream_reveal_small,
            B_REVEAL: self.batch_reveal_same,
            S_TEXT: self.stream_reveal_text_chunks,
            B_TEXT: self.batch_reveal_text_whole,
        }[name]()

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

    def audit_rows() -> int:
        with db.begin(write=False) as conn:
            return int(conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one())

    bench = Bench(run, client, transit, counter, Values(p.seed), p, audit_rows, start_echo(stack))
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
    bench.prepare_answer()
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
    t0 = time.perf_counter()
    pair_order = list(PAIR_VARIANTS)
    for _ in range(p.stream_rounds):
        rng.shuffle(pair_order)
        for variant in pair_order:
            bench.pair_variant(variant)
    print(
        f"  measured {p.stream_rounds} rounds of streams against the unary batch"
        f" ({time.perf_counter() - t0:.1f} s)"
    )
    with db.begin(write=False) as conn:
        run.token_rows = int(conn.execute(text("SELECT count(*) FROM tokens")).scalar_one())
    print_run(run, p)
    print_pairs(run, p)
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


def print_pairs(run: Run, p: Params) -> None:
    """Each stream against the unary batch of the same work: items/s, the ratio per item, and
    the audit rows each call wrote (one a message, or fewer when the stream coalesces)."""
    print(
        f"\n  streams against the unary batch ({p.stream_messages:,} messages a stream of"
        f" {p.stream_items} item(s) each, text: chunks of {CHUNK_SIZES[0]}-{CHUNK_SIZES[1]}"
        f" characters; sent pipelined; {p.stream_rounds} rounds)"
    )
    print(f"  {'variant':<42} {'items':>8} {'seconds':>8} {'items/s':>10}   audit rows per call")
    for variant in PAIR_VARIANTS:
        calls = run.pairs[variant]
        rows = ", ".join(str(r) for _, _, r in calls)
        print(
            f"  {LABELS[variant]:<42} {sum(n for n, _, _ in calls):>8,}"
            f" {sum(s for _, s, _ in calls):8.2f} {run.pair_rate(variant):10,.0f}   {rows}"
        )
    for stream, batch in PAIRS:
        r = run.pair_ratio(stream, batch)
        print(
            f"  {LABELS[stream]:<42} / batch per item: {r:.2f}x"
            f"   target >= {STREAM_TARGET}x: {verdict(r >= STREAM_TARGET)}"
            f"   (gRPC alone / batch: {run.ceiling(stream, batch, p.stream_items):.2f}x)"
        )


def pair_rows(run: Run, p: Params) -> list[str]:
    """The summary table's rows for the streams against the unary batch."""
    rows = []
    size = f"{p.stream_messages:,} messages of {p.stream_items}"
    unit = "item" if p.stream_items == 1 else "items"
    for stream, batch in PAIRS:
        r = run.pair_ratio(stream, batch)
        what = f"{size} {unit}" if stream != S_TEXT else "chunks"
        rows.append(
            f"| {run.backend} | {LABELS[stream]} / {LABELS[batch]} ({what})"
            f" | {run.pair_rate(stream):,.0f} / {run.pair_rate(batch):,.0f} items/s"
            f" = **{r:.2f}x** ({verdict(r >= STREAM_TARGET)}); gRPC alone"
            f" {run.ceiling(stream, batch, p.stream_items):.2f}x |"
        )
    return rows


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
        rows += pair_rows(run, p)
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
    parser.add_argument(
        "--stream-messages",
        type=int,
        default=None,
        help="messages per stream against the unary batch (2,000; --quick 300)",
    )
    parser.add_argument(
        "--stream-rounds",
        type=int,
        default=None,
        help="rounds of the streams against the unary batch (3; --quick 1)",
    )
    parser.add_argument(
        "--stream-items",
        type=int,
        default=1,
        help="values (tokens) per StreamTokenize (StreamReveal) message against the batch (1)",
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
    messages = (
        args.stream_messages if args.stream_messages is not None else (300 if quick else 2000)
    )
    pair_rounds = args.stream_rounds if args.stream_rounds is not None else (1 if quick else 3)
    for name, value in (
        ("rounds", rounds),
        ("naive", naive),
        ("stream-batches", stream),
        ("stream-rounds", pair_rounds),
    ):
        if value < 1:
            parser.error(f"--{name} must be at least 1")
    if not 10 <= messages <= 10_000 or not 1 <= args.stream_items <= 10_000 // messages:
        parser.error(
            "--stream-messages must be 10..10,000 and --stream-messages x --stream-items at most"
            " 10,000 (the unary batch's limit)"
        )
    if not 4 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be 4..10,000")
    return Params(
        rounds=rounds,
        batch_size=int(args.batch_size),
        naive=naive,
        stream_batches=stream,
        stream_messages=messages,
        stream_items=int(args.stream_items),
        stream_rounds=pair_rounds,
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
        f" stream={p.stream_batches} batches/round stream-messages={p.stream_messages}"
        f" x {p.stream_items} items"
        f" x {p.stream_rounds} rounds seed={p.seed} postgres={p.postgres}"
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
        for stream, batch in PAIRS:
            ratio = r.pair_ratio(stream, batch)
            print(
                f"  {r.backend:<10} {LABELS[stream]} / batch per item = {ratio:.2f}x"
                f"   target >= {STREAM_TARGET}x: {verdict(ratio >= STREAM_TARGET)}"
            )
    print("\nsummary (Markdown)\n")
    for line in machine_context():
        print(f"{line}  ")
    print()
    print("\n".join(summary_table(runs, p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
