"""Floor benchmark: BatchCreateRecords and Tokenize against a plain-Python floor that does only
the essential work, measured in the same run, on SQLite and PostgreSQL.

The **floor** is the work a batch write or a Tokenize call cannot skip, written plainly in this
file: no gRPC, no SQLAlchemy, no service layer. It validates every value with the project's own
validators (``vault.schema``), makes and wraps the data keys with AES-GCM under an unwrapped
tenant key, seals every value with AES-GCM under an AAD of the same content and byte layout as
the project's, computes the blind indexes, tokens and fingerprints with HMAC-SHA256, chains one
audit row per record (per call for Tokenize) with HMAC-SHA256, and writes the same rows into the
same tables (made by the project's migrations: same columns, indexes, constraints and
triggers) with the fastest plain method: COPY on PostgreSQL, one tuple ``executemany`` per
table on SQLite, in one transaction per call. What it includes and excludes, exactly:
benchmarks/README.md ("Floor").

The **project** figure is the real server: the records and tokens services configured as
``vault.app.build_app`` does by default, behind a gRPC server on 127.0.0.1 in this process,
called through ``vault.client.VaultClient`` from a process of its own (``ClientProcess``: as a
calling service would, and without the blocking client's polling taking this process's
interpreter lock from the server), timed there around each call. The **naive** figure is one
OpenBao transit ``encrypt`` call per value (as ``benchmarks/records.py`` and
``benchmarks/tokens.py`` measure it). Floor, project and naive run interleaved, in rounds, in a
shuffled order, on the same values; the floor and the project write databases of their own of
the same size.

    .venv/bin/python benchmarks/floor.py                 # full run: a few minutes on 2 cores
    .venv/bin/python benchmarks/floor.py --quick         # smoke test: under a minute
    .venv/bin/python benchmarks/floor.py --quick --sqlite-only --only batch

Prints figures only: no assertions, and a missed target (NOT MET) never changes the exit status.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hmac
import multiprocessing
import os
import random
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import hvac
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import (  # noqa: E402
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
    make_wrapper,
    sample_record,
)
from vault import crypto  # noqa: E402  (the row checks only, never in a timed region)
from vault.api import start_server  # noqa: E402
from vault.audit import AuditLog  # noqa: E402
from vault.client import TokenItem, VaultClient  # noqa: E402
from vault.errors import InvalidInput, VaultServiceError  # noqa: E402
from vault.keys import KeyManager, KvCheckpointStore, TokenAuth, init_field_keys  # noqa: E402
from vault.keys.openbao_dev import OpenBaoDevServer  # noqa: E402
from vault.memory import tune_gc  # noqa: E402
from vault.policy import PolicyHolder  # noqa: E402
from vault.schema import (  # noqa: E402
    DEFAULT_MAX_LENGTH,
    FieldClass,
    FieldSpec,
    RecordSchema,
    canonicalize,
    index_form_of_canonical,
    load_schema,
)
from vault.service import Access, Services  # noqa: E402
from vault.service.validators import check_scope  # noqa: E402
from vault.storage import Database, upgrade  # noqa: E402

BATCH = 1000  # records per BatchCreateRecords call and per floor transaction
BATCH_TARGET = 0.75  # project records/s at least this share of the floor's
TOKEN_TARGETS = {"random": 0.6, "deterministic": 0.75}
KINDS = ("random", "deterministic")
#: Tokenize values: these classes in turn (as benchmarks/tokens.py), from sample records
TOKEN_FIELDS = (
    ("email", "email"),
    ("phone", "phone"),
    ("card_number", "card_number"),
    ("full_name", "name"),
)
MAX_ITEMS = 10_000  # values per Tokenize call (the service's limit)
MAX_TTL = 10 * 366 * 86_400
CLIENT_TIMEOUT = 120.0
CHAIN = "floor"
PRINCIPAL, ROLE = "apikey:test-admin", "test-admin"
PEER = "ipv4:127.0.0.1:50000"

# --- the floor: plain encodings ------------------------------------------------------------

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGIT = bytes(ord(_B62[b % 62]) if b < 248 else 0 for b in range(256))  # uniform: 248 = 4 x 62
_REJECT = bytes(range(248, 256))
_MOD = 62**22


def lp(raw: bytes) -> bytes:
    """4-byte big-endian length, then the bytes (the project's AAD and MAC encoding)."""
    return len(raw).to_bytes(4, "big") + raw


def new_id() -> tuple[str, bytes]:
    """A UUIDv7 (48-bit milliseconds, then random bits), as text and as 16 bytes."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", bytes(raw)


def random_token(field_class: str) -> str:
    """``tok_<class>_<22 uniform base62 digits>`` (about 131 bits)."""
    while True:
        digits = os.urandom(32).translate(_DIGIT, _REJECT)
        if len(digits) >= 22:
            return f"tok_{field_class}_{digits[:22].decode()}"


def base62_token(field_class: str, digest: bytes) -> str:
    """``tok_<class>_<22 base62 digits of the first 24 digest bytes>`` (deterministic)."""
    n = int.from_bytes(digest[:24], "big") % _MOD
    out = []
    for _ in range(22):
        n, d = divmod(n, 62)
        out.append(_B62[d])
    return f"tok_{field_class}_{''.join(out)}"


def seal(aes: AESGCM, header: bytes, plain: bytes, aad: bytes) -> bytes:
    """``version | nonce | AES-256-GCM(ct + tag)``: the project's byte layout (format 2: the
    key id is in the AAD, not the bytes)."""
    nonce = os.urandom(12)
    return header + nonce + aes.encrypt(nonce, plain, aad)


# --- the floor: database access --------------------------------------------------------------


class FloorDb(Protocol):
    """The plain database access the floor needs: one transaction, bulk inserts, a look-up."""

    def stamp(self, now: datetime) -> Any: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows in the order of ``columns``."""

    def existing(self, tenant: str, tokens: Sequence[str]) -> set[str]:
        """Which of ``tokens`` the tenant has already."""

    def set_head(self, chain: str, seq: int, mac: bytes) -> None: ...

    def count(self, table: str) -> int: ...

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str) -> None: ...

    def close(self) -> None: ...


class SqliteFloorDb:
    """sqlite3 with the project's pragmas (WAL, synchronous=NORMAL, foreign keys on)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=30000",
            "cache_size=-8192",
        ):
            self.conn.execute(f"PRAGMA {pragma}")

    def stamp(self, now: datetime) -> Any:
        return now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's text form

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        self.conn.executemany(sql, rows)

    def existing(self, tenant: str, tokens: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(tokens), 500):
            chunk = tokens[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            sql = f"SELECT token FROM tokens WHERE tenant = ? AND token IN ({marks})"  # noqa: S608
            found.update(r[0] for r in self.conn.execute(sql, [tenant, *chunk]))
        return found

    def set_head(self, chain: str, seq: int, mac: bytes) -> None:
        self.conn.execute(
            "UPDATE audit_chain_heads SET seq = ?, mac = ? WHERE chain = ?", (seq, mac, chain)
        )

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql.replace("%s", "?"), params))

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()


class PostgresFloorDb:
    """psycopg 3, autocommit outside explicit transactions; inserts by COPY."""

    def __init__(self, url: str) -> None:
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        self.conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)

    def stamp(self, now: datetime) -> Any:
        return now

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def existing(self, tenant: str, tokens: Sequence[str]) -> set[str]:
        rows = self.conn.execute(
            "SELECT token FROM tokens WHERE tenant = %s AND token = ANY(%s)", (tenant, list(tokens))
        )
        return {r[0] for r in rows}

    def set_head(self, chain: str, seq: int, mac: bytes) -> None:
        self.conn.execute(
            "UPDATE audit_chain_heads SET seq = %s, mac = %s WHERE chain = %s", (seq, mac, chain)
        )

    def count(self, table: str) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        return int(row[0]) if row else 0

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params))

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()


# --- the floor: keys, audit chain, batch write, Tokenize -------------------------------------


def columns(names: str) -> tuple[str, ...]:
    return tuple(names.split())


#: the columns the floor writes, in the order of its row tuples
REC_COLS = columns("id tenant version schema_version idempotency_key created_at updated_at")
DK_COLS = columns("id tenant record_id field_class tenant_key_id wrapped")
#: a token pool's data key has an age (a record's has none since migration 0014)
POOL_DK_COLS = columns("id tenant record_id field_class tenant_key_id wrapped created_at")
VAL_COLS = columns("record_id field_name field_class data_key_id ciphertext token")
BI_COLS = columns("record_id field_name index_key_id digest")
AUDIT_COLS = columns(
    "chain seq time principal role action purpose tenant record_ref field_classes outcome"
    " reason request_id audit_key_id mac on_behalf_of peer"
)
TOKEN_COLS = columns(
    "tenant token field_class kind scope record_id data_key_id ciphertext expires_at"
    " created_at fingerprint fingerprint_key_id"
)


@dataclass(frozen=True)
class DataWrapKey:
    """An unwrapped tenant key (kind ``data``), its AES-GCM object built once."""

    id: str
    header: bytes = field(repr=False)  # the version byte: the wrapped key's header
    aes: AESGCM = field(repr=False)
    key: bytes = field(repr=False)
    id_bytes: bytes = b""  # the id as the data-key AAD binds it


@dataclass(frozen=True)
class IndexKey:
    id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class PoolKey:
    """A token pool's data key: its owner id (the pool), header and AES-GCM object."""

    pool_id: str
    id: str
    dek_bytes: bytes = field(repr=False)  # the data key id as the value AAD binds it
    aes: AESGCM = field(repr=False)
    key: bytes = field(repr=False)


class FloorAudit:
    """One audit chain, head kept in the process: a MAC'd row per event, layout as the
    project's (vault/audit/_mac.py), and one UPDATE of the head row per transaction."""

    def __init__(self, key_id: str) -> None:
        audit_key = os.urandom(32)
        self.key_id = key_id
        self.mac_key = hmac.digest(audit_key, b"mac", "sha256")
        self.ref_key = hmac.digest(audit_key, b"ref", "sha256")
        self.seq, self.mac = 0, bytes(32)

    def rows(
        self,
        tenant: str,
        action: str,
        events: Sequence[tuple[str | None, str]],
        now: datetime,
        stamp: Any,
    ) -> tuple[list[tuple[Any, ...]], int, bytes]:
        """Rows for ``events`` (record id or None, sorted comma-joined classes), the new head."""
        request_id = uuid.uuid4().hex
        micros = (now - datetime(1970, 1, 1, tzinfo=UTC)) // _US
        # the MAC'd columns that are the same for every row of the call, encoded once
        who = (PRINCIPAL, ROLE, action, TEST_PURPOSE, tenant)
        before_ref = micros.to_bytes(8, "big", signed=True) + b"".join(lp(s.encode()) for s in who)
        outcome = ("allowed", "", request_id, self.key_id)
        after_classes = b"".join(lp(s.encode()) for s in outcome) + b"\x02" + lp(PEER.encode())
        rows: list[tuple[Any, ...]] = []
        seq, prev = self.seq, self.mac
        for record_id, classes in events:
            seq += 1
            ref = None if record_id is None else self._pseudonym(tenant, record_id)
            message = b"".join(
                (
                    b"cvault/audit/v1" + prev + lp(CHAIN.encode()) + seq.to_bytes(8, "big"),
                    before_ref,
                    b"\x00" if ref is None else b"\x01" + lp(ref.encode()),
                    lp(classes.encode()) + after_classes,
                )
            )
            prev = hmac.digest(self.mac_key, message, "sha256")
            rows.append((CHAIN, seq, stamp, *who, ref, classes, *outcome, prev, "", PEER))
        return rows, seq, prev

    def _pseudonym(self, tenant: str, record_id: str) -> str:
        """The record's ``record_ref``: a keyed digest of tenant and record id."""
        message = b"cvault/audit/record-ref/v1" + lp(tenant.encode()) + lp(record_id.encode())
        return base64.urlsafe_b64encode(hmac.digest(self.ref_key, message, "sha256")).decode()[:32]

    def write(self, db: FloorDb, rows: Sequence[tuple[Any, ...]], seq: int, mac: bytes) -> None:
        """Inside the caller's transaction: the rows and the head."""
        db.insert("audit_events", AUDIT_COLS, rows)
        db.set_head(CHAIN, seq, mac)

    def committed(self, seq: int, mac: bytes) -> None:
        self.seq, self.mac = seq, mac


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


class Floor:
    """The essential work of BatchCreateRecords and Tokenize, written plainly, in one tenant
    whose keys are already unwrapped (as the project's are in steady state)."""

    def __init__(self, db: FloorDb, schema: RecordSchema, classes: Sequence[str]) -> None:
        self.db = db
        self.schema = schema
        self.tenant = f"floor-{secrets.token_hex(4)}"
        self.ltenant = lp(self.tenant.encode())
        self.class_of = {n: s.field_class.value for n, s in schema.fields.items()}
        self.searchable = {n: s.searchable for n, s in schema.fields.items()}
        self.lfield = {n: lp(n.encode()) for n in schema.fields}
        self.lclass = {c.value: lp(c.value.encode()) for c in FieldClass}
        #: Tokenize validates as a record field of the class is validated (the project's rule)
        self.specs = {
            c.value: FieldSpec(f"token_{c.value}", c, True, DEFAULT_MAX_LENGTH[c], {})
            for c in FieldClass
        }
        self.data: dict[str, DataWrapKey] = {}
        self.index: dict[str, IndexKey] = {}
        self.pools: dict[str, PoolKey] = {}
        self.audit = FloorAudit(str(uuid.uuid4()))
        self._setup(classes)

    # setup (not timed): the rows the tenant's keys, pools and audit chain stand on
    def _setup(self, classes: Sequence[str]) -> None:
        now = datetime.now(UTC)
        stamp = self.db.stamp(now)
        tk_rows: list[tuple[Any, ...]] = []
        for c in classes:
            data_id, index_id = str(uuid.uuid4()), str(uuid.uuid4())
            key = os.urandom(32)
            header = b"\x02"
            self.data[c] = DataWrapKey(data_id, header, AESGCM(key), key, uuid.UUID(data_id).bytes)
            self.index[c] = IndexKey(index_id, os.urandom(32))
            for kid, kind in ((data_id, "data"), (index_id, "index")):
                tk_rows.append((kid, self.tenant, c, kind, 1, "floor:not-wrapped", stamp))
        pool_rows: list[tuple[Any, ...]] = []
        for c in sorted({c for _, c in TOKEN_FIELDS}):
            pool_id, _ = new_id()
            dek_id, dek_bytes = new_id()
            key = os.urandom(32)
            tk = self.data[c]
            aad = (
                b"cvault/dek/v2"
                + dek_bytes
                + tk.id_bytes
                + self.ltenant
                + lp(pool_id.encode())
                + self.lclass[c]
            )
            wrapped = seal(tk.aes, tk.header, key, aad)
            pool_rows.append((dek_id, self.tenant, pool_id, c, tk.id, wrapped, stamp))
            self.pools[c] = PoolKey(pool_id, dek_id, dek_bytes, AESGCM(key), key)
        with self.db.transaction():
            self.db.insert(
                "tenants", ("name", "created_at", "created_by"), [(self.tenant, stamp, "floor")]
            )
            self.db.insert(
                "tenant_keys",
                ("id", "tenant", "field_class", "kind", "version", "wrapped", "created_at"),
                tk_rows,
            )
            self.db.insert("data_keys", POOL_DK_COLS, pool_rows)
            self.db.insert(
                "audit_keys",
                ("id", "version", "wrapped", "created_at"),
                [(self.audit.key_id, 1, "floor:not-wrapped", stamp)],
            )
            self.db.insert("audit_chain_heads", ("chain", "seq", "mac"), [(CHAIN, 0, bytes(32))])

    # --- BatchCreateRecords ----------------------------------------------------------------

    def create_records(
        self, records: Sequence[Mapping[str, str]]
    ) -> list[tuple[str, dict[str, str]]]:
        """Validate, seal and write ``records`` in one transaction (all or nothing); the
        record ids and tokens, as BatchCreateRecords answers."""
        if not records or len(records) > BATCH:
            raise InvalidInput("records", f"1 to {BATCH} records per call")
        canonical: list[dict[str, str]] = []
        for i, rec in enumerate(records):
            try:
                canonical.append(self.schema.validate(rec))
            except InvalidInput as exc:
                raise InvalidInput(f"records[{i}].fields.{exc.field}", exc.problem) from None
        now = datetime.now(UTC)
        stamp = self.db.stamp(now)
        rows: tuple[list[tuple[Any, ...]], ...] = ([], [], [], [])
        events: list[tuple[str | None, str]] = []
        out: list[tuple[str, dict[str, str]]] = []
        for values in canonical:
            record_id, tokens, classes = self._seal_record(values, stamp, rows)
            events.append((record_id, classes))
            out.append((record_id, tokens))
        audit_rows, seq, mac = self.audit.rows(self.tenant, "record.write", events, now, stamp)
        recs, dks, vals, bidx = rows
        with self.db.transaction():
            self.db.insert("records", REC_COLS, recs)
            self.db.insert("data_keys", DK_COLS, dks)
            self.db.insert("record_values", VAL_COLS, vals)
            self.db.insert("blind_index", BI_COLS, bidx)
            self.audit.write(self.db, audit_rows, seq, mac)
        self.audit.committed(seq, mac)
        return out

    def _seal_record(
        self, values: Mapping[str, str], stamp: Any, rows: tuple[list[tuple[Any, ...]], ...]
    ) -> tuple[str, dict[str, str], str]:
        """One record's rows (appended to ``rows``), its tokens and its classes."""
        recs, dks, vals, bidx = rows
        tenant, ltenant = self.tenant, self.ltenant
        record_id, _ = new_id()
        lrid = lp(record_id.encode())
        recs.append((record_id, tenant, 1, self.schema.version, None, stamp, stamp))
        classes = sorted({self.class_of[n] for n in values})
        sealers: dict[str, tuple[AESGCM, str, bytes, bytes]] = {}
        for c in classes:
            key = os.urandom(32)
            dek_id, dek_bytes = new_id()
            tk = self.data[c]
            aad = b"cvault/dek/v2" + dek_bytes + tk.id_bytes + ltenant + lrid + self.lclass[c]
            dks.append((dek_id, tenant, record_id, c, tk.id, seal(tk.aes, tk.header, key, aad)))
            sealers[c] = (AESGCM(key), dek_id, dek_bytes, b"\x02")
        tokens: dict[str, str] = {}
        for name, value in values.items():
            c = self.class_of[name]
            aes, dek_id, dek_bytes, header = sealers[c]
            aad = b"cvault/value/v2" + ltenant + lrid + self.lfield[name] + dek_bytes
            token = random_token(c)
            tokens[name] = token
            vals.append((record_id, name, c, dek_id, seal(aes, header, value.encode(), aad), token))
            if self.searchable[name]:
                ik = self.index[c]
                form = self.schema.index_form(name, value, trusted=True)
                digest = hmac.digest(ik.key, b"cvault/bidx/v1" + self.lfield[name] + form, "sha256")
                bidx.append((record_id, name, ik.id, digest))
        return record_id, tokens, ",".join(classes)

    # --- Tokenize (standalone values: random and deterministic) -------------------------------

    def tokenize(self, items: Sequence[TokenItem]) -> list[str]:
        """A token per item, in order, in one transaction (all or nothing)."""
        if not items or len(items) > MAX_ITEMS:
            raise InvalidInput("items", f"1 to {MAX_ITEMS} items per call")
        prepared = [self._prepare(i, item) for i, item in enumerate(items)]
        now = datetime.now(UTC)
        stamp = self.db.stamp(now)
        tokens: list[str] = []
        rows: dict[str, tuple[Any, ...]] = {}
        deterministic: list[str] = []
        for item, (c, raw, form) in zip(items, prepared, strict=True):
            ik = self.index[c]
            if item.kind == "deterministic":
                message = b"cvault/dtok/v1" + self.lclass[c] + lp(item.scope.encode()) + form
                token = base62_token(c, hmac.digest(ik.key, message, "sha256"))
                deterministic.append(token)
            else:
                token = random_token(c)
            tokens.append(token)
            if token not in rows:
                rows[token] = self._token_row(item, c, raw, form, token, stamp)
        classes = ",".join(sorted({c for c, _, _ in prepared}))
        audit_rows, seq, mac = self.audit.rows(
            self.tenant, "token.create", [(None, classes)], now, stamp
        )
        with self.db.transaction():
            if deterministic:  # a value tokenized before keeps its row
                for token in self.db.existing(self.tenant, deterministic):
                    del rows[token]
            self.db.insert("tokens", TOKEN_COLS, list(rows.values()))
            self.audit.write(self.db, audit_rows, seq, mac)
        self.audit.committed(seq, mac)
        return tokens

    def _token_row(
        self, item: TokenItem, c: str, raw: bytes, form: bytes, token: str, stamp: Any
    ) -> tuple[Any, ...]:
        """The value sealed under the class's pool key (AAD bound to the token), and the
        value's fingerprint under the index key."""
        pool = self.pools[c]
        owner = lp(pool.pool_id.encode())
        aad = (
            b"cvault/value/v2"
            + self.ltenant
            + owner
            + lp(f"token:{token}".encode())
            + pool.dek_bytes
        )
        ik = self.index[c]
        fingerprint = hmac.digest(ik.key, b"cvault/vfp/v1" + self.lclass[c] + form, "sha256")
        return (
            self.tenant, token, c, item.kind, item.scope, None, pool.id,
            seal(pool.aes, b"\x02", raw, aad), None, stamp, fingerprint, ik.id,
        )  # fmt: skip

    def _prepare(self, i: int, item: TokenItem) -> tuple[str, bytes, bytes]:
        """The item checked as the project checks it: its class, UTF-8 value, search form."""
        spec = self.specs.get(item.field_class)
        if spec is None:
            raise InvalidInput(f"items[{i}].field_class", "unknown field class")
        value = item.value
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"items[{i}].value", "must be a non-empty string")
        if len(value) > spec.max_length:
            raise InvalidInput(f"items[{i}].value", f"longer than {spec.max_length} characters")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"items[{i}].value", "is not valid unicode") from None
        if item.kind not in KINDS or item.record_id or not 0 <= item.ttl_seconds <= MAX_TTL:
            raise InvalidInput(
                f"items[{i}]", "the floor makes standalone random and deterministic tokens"
            )
        check_scope(item.scope, f"items[{i}].scope")
        try:
            canonical = canonicalize(spec, value)
        except InvalidInput as exc:
            raise InvalidInput(f"items[{i}].value", exc.problem) from None
        return item.field_class, raw, index_form_of_canonical(spec, canonical)


# --- the project, and the naive way ----------------------------------------------------------


@dataclass
class Project:
    """The real server over one database, and a client of it (in a process of its own)."""

    client: ClientProcess
    audit: AuditLog
    db: Database
    tenant: str = field(default_factory=lambda: f"bench-floor-{uuid.uuid4().hex[:8]}")
    checkpoint_wait: float = 0.0  # seconds waited for background audit checkpoints

    def settle(self) -> None:
        """Wait, outside the timed region, for a background audit checkpoint the last call
        started: it must not run during the next variant's timed work."""
        t0 = time.perf_counter()
        self.audit.close()
        self.checkpoint_wait += time.perf_counter() - t0


def start_project(db: Database, openbao: OpenBaoDevServer, stack: contextlib.ExitStack) -> Project:
    """The records and tokens services as ``vault.app.build_app`` configures them by default
    (audit chain checkpointed to OpenBao KV every 1,000 rows, in the background), with the
    test policy, behind a real gRPC server on 127.0.0.1; the caller is ``test-admin``."""
    wrapper = make_wrapper(openbao)
    keys = KeyManager(wrapper)
    checkpoint = KvCheckpointStore(
        openbao.url,
        TokenAuth(openbao.root_token, renew=False),
        path=f"cvault/audit/floor-{secrets.token_hex(6)}",
    )
    audit = AuditLog(db, keys, checkpoint=checkpoint, checkpoint_every=1000)
    # closed in reverse order, after the server stops: the audit log first
    stack.callback(wrapper.close)
    stack.callback(checkpoint.close)
    stack.callback(audit.close)
    access = Access(PolicyHolder(TEST_POLICY), audit)
    services = Services.build(db, keys, load_schema(), access)
    tune_gc()  # as App.serve does (the floor runs in this process, under the same setting)
    running = start_server(services, "127.0.0.1:0", authenticator=authenticator())
    stack.callback(running.stop, grace=0)
    client = ClientProcess(running.address)
    stack.callback(client.close)
    return Project(client, audit, db)


class ClientProcess:
    """A ``VaultClient`` in a process of its own, as the service calling the vault would be.

    In this process, gRPC's blocking client polls for the answer holding the interpreter lock in
    short turns, and took it from the server's threads while they worked (about a quarter of
    the server's own time, py-spy): a cost no deployment pays. Each call is timed in the client
    process, around the ``VaultClient`` call (its request building and answer conversion
    included); sending the arguments and results between the processes is not timed."""

    def __init__(self, address: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # the key is passed: the test support module makes its keys anew in each process
        self._proc = ctx.Process(
            target=_client_main, args=(child, address, ADMIN_KEY, TEST_PURPOSE), daemon=True
        )
        self._proc.start()
        child.close()

    def call(self, method: str, *args: object) -> tuple[Any, float]:
        """``VaultClient.<method>(*args)``'s result and its seconds.

        Raises: VaultServiceError with the call's reason."""
        self._conn.send((method, args))
        ok, value, seconds = self._conn.recv()
        if not ok:
            raise VaultServiceError(f"{method} failed", reason=str(value))
        return value, seconds

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def _client_main(conn: Any, address: str, api_key: str, purpose: str) -> None:
    """The client process: run each call it is sent, answer (ok, result or reason, seconds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    with VaultClient(address, api_key=api_key, purpose=purpose, timeout=CLIENT_TIMEOUT) as client:
        while (message := conn.recv()) is not None:
            method, args = message
            t0 = time.perf_counter()
            try:
                out, ok = getattr(client, method)(*args), True
            except VaultServiceError as exc:
                out, ok = exc.reason, False
            conn.send((ok, out, time.perf_counter() - t0))


class Naive:
    """One transit ``encrypt`` call per value under ``cvault-<class>`` (hvac, one HTTP call
    each, on the same OpenBao): encryption only, no validation, no gRPC, no database."""

    def __init__(self, openbao: OpenBaoDevServer, stack: contextlib.ExitStack) -> None:
        self.client = hvac.Client(url=openbao.url, token=openbao.root_token, timeout=30)
        stack.callback(self.client.adapter.close)

    def encrypt(self, work: Sequence[tuple[str, str]]) -> None:
        """``work``: (field class, value) pairs."""
        transit = self.client.secrets.transit
        for field_class, value in work:
            transit.encrypt_data(
                name=f"{KEY_PREFIX}-{field_class}",
                plaintext=base64.b64encode(value.encode()).decode(),
            )


# --- values ----------------------------------------------------------------------------------


class Values:
    """Records and Tokenize items from ``tests.support.sample_record``: no value twice in a run
    (a deterministic token is always a new row, never a look-up of an earlier one)."""

    def __init__(self) -> None:
        self._next = 0

    def records(self, count: int) -> list[dict[str, str]]:
        start, self._next = self._next, self._next + count
        return [sample_record(start + i) for i in range(count)]

    def items(self, count: int, kind: str) -> list[TokenItem]:
        """``count`` values of the TOKEN_FIELDS classes in turn, all of token kind ``kind``."""
        recs = self.records(-(-count // len(TOKEN_FIELDS)))
        out = [
            TokenItem(rec[name], field_class, kind)
            for rec in recs
            for name, field_class in TOKEN_FIELDS
        ]
        return out[:count]


def record_work(
    records: Sequence[Mapping[str, str]], schema: RecordSchema
) -> list[tuple[str, str]]:
    return [(schema.spec(n).field_class.value, v) for r in records for n, v in r.items()]


# --- measurement -----------------------------------------------------------------------------


@dataclass
class Series:
    """Timed calls of one variant: (values, seconds) each."""

    calls: list[tuple[int, float]] = field(default_factory=list)

    def add(self, values: int, seconds: float) -> None:
        self.calls.append((values, seconds))

    @property
    def values(self) -> int:
        return sum(n for n, _ in self.calls)

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.calls)

    @property
    def rate(self) -> float:
        return self.values / self.seconds if self.seconds else 0.0

    def p50_ms(self) -> float:
        return statistics.median(s for _, s in self.calls) * 1000.0 if self.calls else 0.0


@dataclass
class BackendRun:
    """The figures of one backend, by variant: ``batch.floor``, ``random.project``, ..."""

    backend: str
    series: dict[str, Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Series:
        return self.series.setdefault(name, Series())

    def has(self, name: str) -> bool:
        return bool(self.series.get(name, Series()).calls)


def timed(call: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = call()
    return out, time.perf_counter() - t0


@dataclass(frozen=True)
class Params:
    records: int
    items: int
    rounds: int
    naive: int
    seed: int
    postgres_url: str
    sqlite_only: bool
    only: str

    @property
    def batch(self) -> bool:
        return self.only in ("", "batch")

    @property
    def tokenize(self) -> bool:
        return self.only in ("", "tokenize")


class Bench:
    """The variants of one backend. ``recording`` is False during the warm-up."""

    def __init__(
        self, run: BackendRun, floor: Floor, project: Project, naive: Naive, p: Params
    ) -> None:
        self.run, self.floor, self.project, self.naive, self.p = run, floor, project, naive, p
        self.values = Values()
        self.schema = floor.schema
        self.recording = False

    def _keep(self, name: str, values: int, seconds: float) -> None:
        if self.recording:
            self.run[name].add(values, seconds)

    def batch_round(self, rng: random.Random, naive_records: int) -> None:
        """One batch of the same records by the floor and by the project, and naive calls,
        in a shuffled order."""
        records = self.values.records(BATCH)
        naive = record_work(self.values.records(naive_records), self.schema)
        steps: list[Callable[[], None]] = [
            lambda: self._floor_batch(records),
            lambda: self._project_batch(records),
            lambda: self._naive("batch.naive", naive, naive_records),
        ]
        rng.shuffle(steps)
        for step in steps:
            step()

    def _floor_batch(self, records: Sequence[Mapping[str, str]]) -> None:
        out, seconds = timed(lambda: self.floor.create_records(records))
        self._keep("batch.floor", len(records), seconds)
        if not isinstance(out, list) or len(out) != len(records):
            self.run.problems.append("floor: a batch did not return one record per record")

    def _project_batch(self, records: Sequence[Mapping[str, str]]) -> None:
        client, tenant = self.project.client, self.project.tenant
        try:
            out, seconds = client.call("batch_create_records", tenant, list(records))
        except VaultServiceError as exc:  # reported; the other figures still count
            self.run.problems.append(f"project: BatchCreateRecords failed ({exc.reason})")
            return
        finally:
            self.project.settle()
        self._keep("batch.project", len(records), seconds)
        if not isinstance(out, list) or len({c.record_id for c in out}) != len(records):
            self.run.problems.append("project: a batch did not return one record per record")

    def _naive(self, name: str, work: Sequence[tuple[str, str]], units: int) -> None:
        _, seconds = timed(lambda: self.naive.encrypt(work))
        self._keep(name, units, seconds)

    def tokenize_round(self, rng: random.Random, naive_values: int) -> None:
        """Per kind, one call of the same values by the floor and by the project; naive calls;
        in a shuffled order."""
        work = {kind: self.values.items(self.p.items, kind) for kind in KINDS}
        naive = [(i.field_class, i.value) for i in self.values.items(naive_values, "random")]
        steps: list[Callable[[], None]] = [
            lambda: self._naive("tokenize.naive", naive, naive_values)
        ]
        for kind, items in work.items():
            steps.append(functools.partial(self._floor_tokenize, kind, items))
            steps.append(functools.partial(self._project_tokenize, kind, items))
        rng.shuffle(steps)
        for step in steps:
            step()

    def _floor_tokenize(self, kind: str, items: Sequence[TokenItem]) -> None:
        out, seconds = timed(lambda: self.floor.tokenize(items))
        self._keep(f"{kind}.floor", len(items), seconds)
        if not isinstance(out, list) or len(set(out)) != len(items):
            self.run.problems.append(f"floor: {kind} Tokenize did not return distinct tokens")

    def _project_tokenize(self, kind: str, items: Sequence[TokenItem]) -> None:
        client, tenant = self.project.client, self.project.tenant
        try:
            out, seconds = client.call("tokenize", tenant, list(items))
        except VaultServiceError as exc:  # reported; the other figures still count
            self.run.problems.append(f"project: {kind} Tokenize failed ({exc.reason})")
            return
        finally:
            self.project.settle()
        self._keep(f"{kind}.project", len(items), seconds)
        if not isinstance(out, list) or len(set(out)) != len(items):
            self.run.problems.append(f"project: {kind} Tokenize did not return distinct tokens")


# --- checks (outside the timed regions) ------------------------------------------------------

COUNTED = ("records", "data_keys", "record_values", "blind_index", "tokens", "audit_events")


def row_counts(floor: Floor, project: Project) -> list[str]:
    """Rows per table in the floor's and the project's database (the same work, so about the
    same rows; the project's audit chain also holds its own setup rows)."""
    from sqlalchemy import text

    lines = []
    with project.db.begin(write=False) as conn:
        theirs = {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608
            for t in COUNTED
        }
    for t in COUNTED:
        lines.append(f"{t} {floor.db.count(t):,} / {theirs[t]:,}")
    return lines


def check_floor_rows(floor: Floor) -> list[str]:
    """Problems found opening the floor's rows with the project's own crypto (none: the floor
    wrote what the project writes, byte layout and AAD included)."""
    db, tenant, problems = floor.db, floor.tenant, []
    rows = db.fetch(
        "SELECT v.record_id, v.field_name, v.field_class, v.ciphertext, d.id, d.wrapped"
        " FROM record_values v JOIN data_keys d ON d.id = v.data_key_id"
        " WHERE d.tenant = %s ORDER BY v.record_id DESC LIMIT 5",
        [tenant],
    )
    for rid, name, c, ct, dek_id, wrapped in rows:
        record_id = str(rid)  # ids come back as text, or as uuid.UUID from a uuid column
        tk = floor.data[c]
        dek = crypto.unwrap_data_key(
            uuid.UUID(tk.id), tk.key, uuid.UUID(str(dek_id)), bytes(wrapped),
            tenant=tenant, record_id=record_id, field_class=c,
        )  # fmt: skip
        value = crypto.open_value(dek, tenant, record_id, name, bytes(ct))
        if floor.schema.validate({name: value})[name] != value:
            problems.append(f"record value {name} is not canonical")
        if floor.searchable[name]:
            digest = crypto.blind_index(
                floor.index[c].key, name, floor.schema.index_form(name, value)
            )
            found = db.fetch(
                "SELECT count(*) FROM blind_index WHERE record_id = %s AND field_name = %s"
                " AND digest = %s",
                [record_id, name, digest],
            )
            if found[0][0] != 1:
                problems.append(f"blind index of {name} differs from the project's")
    tokens = db.fetch(
        "SELECT token, field_class, kind, scope, ciphertext, fingerprint FROM tokens"
        " WHERE tenant = %s ORDER BY created_at DESC LIMIT 20",
        [tenant],
    )
    for token, c, kind, scope, ct, fingerprint in tokens:
        pool, ik = floor.pools[c], floor.index[c].key
        dek = crypto.DataKey(uuid.UUID(pool.id), pool.key)
        value = crypto.open_value(dek, tenant, pool.pool_id, f"token:{token}", bytes(ct))
        form = index_form_of_canonical(floor.specs[c], canonicalize(floor.specs[c], value))
        if bytes(fingerprint) != crypto.value_fingerprint(ik, c, form):
            problems.append(f"fingerprint of a {c} token differs from the project's")
        if kind == "deterministic" and crypto.deterministic_token(ik, c, scope, form) != token:
            problems.append(f"deterministic {c} token differs from the project's")
    if not rows and not tokens:
        problems.append("no floor rows to check")
    return problems


def run_checks(run: BackendRun, floor: Floor, project: Project) -> None:
    try:
        run.problems += check_floor_rows(floor)
        run.notes.append("rows (floor / project): " + ", ".join(row_counts(floor, project)))
    except Exception as exc:  # a check must never hide the figures
        run.problems.append(f"row check could not run ({type(exc).__name__})")


# --- one backend -----------------------------------------------------------------------------


def classes_used(schema: RecordSchema) -> list[str]:
    names = sample_record(0)
    return sorted({schema.spec(n).field_class.value for n in names} | {c for _, c in TOKEN_FIELDS})


def run_backend(
    backend: str,
    project_url: str,
    floor_db: FloorDb,
    openbao: OpenBaoDevServer,
    p: Params,
    stack: contextlib.ExitStack,
) -> BackendRun:
    run = BackendRun(backend)
    t0 = time.perf_counter()
    db = Database(project_url)
    stack.callback(db.dispose)
    project = start_project(db, openbao, stack)
    schema = load_schema()
    floor = Floor(floor_db, schema, classes_used(schema))
    bench = Bench(run, floor, project, Naive(openbao, stack), p)
    rng = random.Random(p.seed)
    health, _ = project.client.call("health")
    print(f"  gRPC server up, health {health} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    # Warm-up, not recorded: the project's tenant keys are made on its first call (transit),
    # its pools on the first Tokenize of each class; connections and statements get ready.
    if p.batch:
        bench.batch_round(rng, 4)
    if p.tokenize:
        bench.tokenize_round(rng, 20)
    if db.engine.dialect.name == "postgresql":
        # a database in service has planner statistics (autovacuum): give both of them theirs
        from sqlalchemy import text

        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        floor_db.execute("ANALYZE")
    print(f"  warm-up ({time.perf_counter() - t0:.1f} s)")
    bench.recording = True
    project.checkpoint_wait = 0.0
    t0 = time.perf_counter()
    if p.batch:
        for _ in range(max(1, p.records // BATCH)):
            bench.batch_round(rng, max(1, p.naive // len(sample_record(0))))
    if p.tokenize:
        for _ in range(p.rounds):
            bench.tokenize_round(rng, p.naive)
    print(f"  measured ({time.perf_counter() - t0:.1f} s)")
    run.notes.append(
        f"waited {project.checkpoint_wait:.2f} s in all, outside the timings, for the project's"
        " background audit checkpoints"
    )
    run_checks(run, floor, project)
    print_backend(run, p)
    return run


# --- reporting -------------------------------------------------------------------------------

VARIANTS = (
    ("batch", "BatchCreateRecords", "rec/s", BATCH_TARGET, "batch.naive"),
    ("random", "Tokenize, random", "values/s", TOKEN_TARGETS["random"], "tokenize.naive"),
    (
        "deterministic",
        "Tokenize, deterministic",
        "values/s",
        TOKEN_TARGETS["deterministic"],
        "tokenize.naive",
    ),
)


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def share_text(share: float, target: float) -> str:
    """``0.93x``; three decimals where two would round a miss up to the target."""
    text = f"{share:.2f}x"
    return f"{share:.3f}x" if (share >= target) != (round(share, 2) >= target) else text


def ratio_lines(run: BackendRun, key: str, unit: str, target: float, naive_key: str) -> list[str]:
    floor, project, naive = run[f"{key}.floor"], run[f"{key}.project"], run[naive_key]
    share = ratio(project.rate, floor.rate)
    return [
        f"floor   {floor.rate:10,.0f} {unit}   (p50 {floor.p50_ms():.0f} ms a call)",
        f"project {project.rate:10,.0f} {unit}  = {share_text(share, target)} of floor"
        f" (target >= {target}x): {verdict(share >= target)}"
        f"   (p50 {project.p50_ms():.0f} ms a call)",
        f"project / naive = {ratio(project.rate, naive.rate):.1f}x"
        f"   (naive {naive.rate:,.0f} {unit}, one transit call per value;"
        f" floor / naive = {ratio(floor.rate, naive.rate):.1f}x)",
    ]


def paired_shares(run: BackendRun, key: str) -> list[float]:
    """Each round's floor time over the project's time (empty if a project call failed)."""
    floor, project = run[f"{key}.floor"].calls, run[f"{key}.project"].calls
    if len(floor) != len(project):
        return []
    return [ratio(f, p) for (_, f), (_, p) in zip(floor, project, strict=True)]


def print_backend(run: BackendRun, p: Params) -> None:
    for key, label, unit, target, naive_key in VARIANTS:
        if not run.has(f"{key}.floor"):
            continue
        n = len(run[f"{key}.floor"].calls)
        size = f"{BATCH:,} records" if key == "batch" else f"{p.items:,} values"
        print(f"\n  {label}: {n} calls of {size} each (floor and project, same values)")
        for line in ratio_lines(run, key, unit, target, naive_key):
            print(f"    {line}")
        for who in ("floor", "project"):
            calls = " ".join(f"{s * 1000:.0f}" for _, s in run[f"{key}.{who}"].calls)
            print(f"      {who} per call (ms, in order): {calls}")
        paired = paired_shares(run, key)
        if paired:
            print(
                f"      per round, floor time / project time (same values, a noise gauge):"
                f" median {statistics.median(paired):.2f}x,"
                f" {min(paired):.2f}x to {max(paired):.2f}x"
            )
    print()
    for note in run.notes:
        print(f"  {note}")
    for problem, times in Counter(run.problems).items():
        print(f"  WARNING: {problem}" + (f" (x{times})" if times > 1 else ""))


def summary(runs: Sequence[BackendRun]) -> list[str]:
    rows = ["| Backend | Measurement | Floor | Project | Project / floor | Project / naive |"]
    rows.append("|---|---|---|---|---|---|")
    for run in runs:
        for key, label, unit, target, naive_key in VARIANTS:
            if not run.has(f"{key}.floor"):
                continue
            floor, project, naive = run[f"{key}.floor"], run[f"{key}.project"], run[naive_key]
            share = ratio(project.rate, floor.rate)
            rows.append(
                f"| {run.backend} | {label} | {floor.rate:,.0f} {unit} | {project.rate:,.0f} {unit}"
                f" | **{share_text(share, target)}** (target >= {target}x:"
                f" {verdict(share >= target)})"
                f" | {ratio(project.rate, naive.rate):.1f}x"
                f" (floor {ratio(floor.rate, naive.rate):.1f}x) |"
            )
    return rows


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test, < 60 s)")
    parser.add_argument(
        "--records", type=int, default=None,
        help="records per variant, in calls of 1,000 (default 10,000; --quick 2,000)",
    )  # fmt: skip
    parser.add_argument("--items", type=int, default=1000, help="values per Tokenize call (1,000)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="Tokenize rounds, one call per kind each (15; --quick 3)",
    )
    parser.add_argument(
        "--naive", type=int, default=None, help="naive transit calls per round (500; --quick 100)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the shuffled order")
    parser.add_argument(
        "--postgres-url", default=POSTGRES_URL,
        help="PostgreSQL server (a database of this run's own is made there and dropped;"
        " default CVAULT_TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/test)",
    )  # fmt: skip
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--only", choices=("batch", "tokenize"), default="", help="one benchmark")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    records = args.records if args.records is not None else (2000 if quick else 10_000)
    rounds = args.rounds if args.rounds is not None else (3 if quick else 15)
    naive = args.naive if args.naive is not None else (100 if quick else 500)
    if records < BATCH:
        parser.error(f"--records must be at least {BATCH}")
    if not 1 <= args.items <= MAX_ITEMS:
        parser.error(f"--items must be 1..{MAX_ITEMS}")
    if rounds < 1 or naive < 5:
        parser.error("--rounds must be at least 1 and --naive at least 5")
    return Params(
        records=records,
        items=int(args.items),
        rounds=rounds,
        naive=naive,
        seed=int(args.seed),
        postgres_url=str(args.postgres_url),
        sqlite_only=bool(args.sqlite_only),
        only=str(args.only),
    )


def run(p: Params) -> list[BackendRun]:
    runs: list[BackendRun] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvault-floor-")))
        print("setup")
        t0 = time.perf_counter()
        openbao = OpenBaoDevServer()
        stack.callback(openbao.stop)  # registered before start: a half-started server stops too
        openbao.start()
        init_field_keys(
            openbao.url, openbao.root_token, key_prefix=KEY_PREFIX, field_classes=FIELD_CLASSES
        )
        print(f"  OpenBao dev server {openbao.url} ({time.perf_counter() - t0:.1f} s)")

        print(f"\nSQLite (WAL, synchronous=NORMAL): {tmp}")
        with contextlib.ExitStack() as inner:
            project_url, floor_url = (f"sqlite:///{tmp / f'{n}.db'}" for n in ("project", "floor"))
            upgrade(project_url)
            upgrade(floor_url)
            floor_db = SqliteFloorDb(tmp / "floor.db")
            inner.callback(floor_db.close)
            runs.append(run_backend("SQLite", project_url, floor_db, openbao, p, inner))

        if not p.sqlite_only:
            why = postgres_reachable(p.postgres_url)
            if why is not None:
                print(f"\nPostgreSQL: not reachable at {p.postgres_url} ({why}); skipped")
            else:
                with contextlib.ExitStack() as inner:
                    project_url = inner.enter_context(postgres_database(p.postgres_url))
                    floor_url = inner.enter_context(postgres_database(p.postgres_url))
                    print(
                        f"\nPostgreSQL: temporary databases {project_url.rpartition('/')[2]}"
                        f" (project) and {floor_url.rpartition('/')[2]} (floor)"
                    )
                    upgrade(project_url)
                    upgrade(floor_url)
                    pg_floor = PostgresFloorDb(floor_url)
                    inner.callback(pg_floor.close)
                    runs.append(run_backend("PostgreSQL", project_url, pg_floor, openbao, p, inner))
        print("\nteardown")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    print("customer-vault floor benchmark: the project against the essential work, written plainly")
    for line in machine_context():
        print(f"  {line}")
    print(
        f"  params     records={p.records:,} (calls of {BATCH:,}) items={p.items:,} per Tokenize"
        f" rounds={p.rounds} naive={p.naive} calls/round seed={p.seed}"
        f" backends={'SQLite' if p.sqlite_only else 'SQLite, PostgreSQL'} only={p.only or 'all'}"
    )
    started = time.perf_counter()
    try:
        runs = run(p)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the servers, dropped the databases, removed the files")
        return 130
    print(f"  cleaned up; total wall time {time.perf_counter() - started:.1f} s")
    print(f"  load avg at the end: {load_average()}")
    print("\ntargets (project records/s or values/s as a share of the floor's, same run)")
    for r in runs:
        for key, label, unit, target, naive_key in VARIANTS:
            if r.has(f"{key}.floor"):
                lines = ratio_lines(r, key, unit, target, naive_key)
                print(f"  {r.backend:<10} {label:<24} {lines[1].split('= ', 1)[1]}")
                print(f"  {'':<10} {'':<24} {lines[2]}")
    print("\nsummary (Markdown)\n")
    for line in machine_context():
        print(f"{line}  ")
    print()
    print("\n".join(summary(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
