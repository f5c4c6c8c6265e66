"""No plaintext in logs, audit output or errors.

One broad scenario over real gRPC drives every use case and the failures around them (bad input
carrying values, denied roles, unknown and missing purposes, missing consent, an exhausted
limit, a stale version, an erased record, a key-server outage, a tampered ciphertext) with
logging at DEBUG everywhere (SQLAlchemy's statements and parameters included). Then every log
record, every audit JSON line and database row, every gRPC error (status details, debug string,
trailing metadata), every error object the SDK and the service raised (with its chained
exceptions), what reached stdout/stderr, and what the key server's own audit log saw, is
scanned for each plaintext value the scenario used, as given and in canonical and index forms.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import grpc
import pytest
from nacl.public import PrivateKey
from sqlalchemy import text
from stdnum import iban as stdnum_iban

import vault.client._channel
from tests.integration.access.access_support import authenticator_with, policy_text
from tests.support import (
    ADMIN,
    ADMIN_KEY,
    TEST_PURPOSE,
    TOKENS_KEY,
    TcpProxy,
    luhn_complete,
    make_service,
    sample_record,
)
from vault import errors
from vault.api import start_server
from vault.audit import JsonLinesSink
from vault.client import VaultClient
from vault.deadline import Deadline
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.schema import load_schema
from vault.service import RecordInput, RecordsService, Services
from vault.storage import Database

pytestmark = pytest.mark.openbao

LETTERS = "ghjkmnpqrstvwxyz"  # not hex, so a marker never turns up inside an id by chance

#: this test's own principals, so the shared dev principals' rate counters play no part
PRINCIPALS = {
    "scan-support": "support-agent",
    "scan-backend": "backend-service",
    "scan-dpo": "dpo",
    "scan-ai": "ai-pipeline",
    "scan-limited": "scan-limited",
}
LIMITED_ROLE = """\
  scan-limited:
    description: the log-scan test's role with a tiny plaintext limit
    actions: [record.read]
    purposes: [testing]
    fields:
      "*": plain
    limits: {plain_per_day: 2}
"""
EXPECTED_ACTIONS = {
    "record.write",
    "record.read",
    "record.erase",
    "record.export",
    "consent.write",
    "audit.read",
    "limit.exceeded",
}


def _marker(n: int = 10) -> str:
    return "".join(secrets.choice(LETTERS) for _ in range(n))


def _digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


def _iban() -> str:
    bban = "WEST" + _digits(14)
    check = stdnum_iban.calc_check_digits(f"GBXX{bban}")
    return f"GB{check} {bban[:4]} {bban[4:8]} {bban[8:12]} {bban[12:16]} {bban[16:]}"


def _full_record() -> dict[str, str]:
    m = _marker()
    return {
        "email": f"Scan.{m}@Example.COM",
        "phone": f"+44 20 7946 {_digits(4)}",
        "full_name": f"Ada {m.capitalize()} Lovelace",
        "address": f"{secrets.randbelow(900) + 100} {m.capitalize()} Street, London",
        "date_of_birth": f"19{secrets.randbelow(50) + 40}-0{secrets.randbelow(9) + 1}-1{secrets.randbelow(9)}",
        "national_id": f"ZX{_digits(6)}Q",
        "card_number": luhn_complete("4" + _digits(14)),
        "iban": _iban(),
        "notes": f"Secret note {_marker()} about the customer",
    }


class Evidence:
    """Every text the scenario produced, by source, and every plaintext value it used."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.values: set[str] = set()
        self.grpc_errors = 0
        self.schema = load_schema()

    def add(self, source: str, content: object) -> None:
        self.texts.append((source, content if isinstance(content, str) else repr(content)))

    def used(self, fields: dict[str, str]) -> dict[str, str]:
        """Remember the values of a record (and their canonical and index forms)."""
        for name, value in fields.items():
            self.values.add(value)
            try:
                canonical = self.schema.validate({name: value})[name]
            except errors.InvalidInput:
                continue  # a bad value: only its raw form exists
            except KeyError:
                continue
            self.values.add(canonical)
            self.values.add(self.schema.index_form(name, canonical).decode("utf-8"))
        return fields

    def bad(self, *values: str) -> None:
        self.values.update(values)

    def error(self, exc: BaseException) -> None:
        """An error object someone got back: its repr, text and every chained exception."""
        self.add("error.format", "".join(traceback.format_exception(exc)))
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.add("error.repr", repr(current))
            self.add("error.str", str(current))
            self.add("error.args", repr(current.args))
            self.add("error.dict", repr(getattr(current, "__dict__", {})))
            current = current.__cause__ or current.__context__

    def expect(self, cls: type[BaseException], call: Callable[[], Any]) -> BaseException:
        with pytest.raises(cls) as info:
            call()
        self.error(info.value)
        return info.value


class _RaisedRpcError(Protocol):
    """What the RpcError grpcio raises (``grpc._channel._InactiveRpcError``, also a ``grpc.Call``)
    has beyond the ``grpc.RpcError`` of grpc-stubs."""

    def debug_error_string(self) -> str | None: ...

    def initial_metadata(self) -> object: ...


@pytest.fixture
def evidence(monkeypatch: pytest.MonkeyPatch) -> Evidence:
    found = Evidence()
    original = vault.client._channel._error

    def recording(exc: grpc.RpcError) -> errors.VaultServiceError:
        raised = cast(_RaisedRpcError, exc)
        found.grpc_errors += 1
        found.add("grpc.code", str(exc.code()))
        found.add("grpc.details", exc.details() or "")
        found.add("grpc.debug_error_string", raised.debug_error_string() or "")
        found.add("grpc.trailing_metadata", exc.trailing_metadata())
        found.add("grpc.initial_metadata", raised.initial_metadata())
        found.add("grpc.repr", repr(exc))
        return original(exc)

    monkeypatch.setattr(vault.client._channel, "_error", recording)
    return found


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Everything logged, at DEBUG, formatted with exceptions and stacks (plus caplog's copy)."""
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    # libraries that keep their own level would hide their records from a root at DEBUG
    quiet = {
        name: lg.level
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and lg.level > logging.DEBUG
    }
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def _tamper(db: Database, record_id: str, field: str) -> None:
    with db.engine.begin() as conn:
        # untyped parameters: record_id is uuid on PostgreSQL, not VARCHAR
        old = conn.execute(
            text("SELECT ciphertext FROM record_values WHERE record_id = :r AND field_name = :f"),
            {"r": record_id, "f": field},
        ).scalar_one()
        changed = bytearray(old)
        changed[-1] ^= 0x01
        conn.execute(
            text(
                "UPDATE record_values SET ciphertext = :c WHERE record_id = :r AND field_name = :f"
            ),
            {"c": bytes(changed), "r": record_id, "f": field},
        )


def _scenario(
    ev: Evidence,
    service: RecordsService,
    database: Database,
    openbao: OpenBaoDevServer,
    address: str,
    keys: dict[str, str],
    tenant: str,
) -> list[str]:
    """Drive every use case and its failures; returns the record ids used."""

    def client(key: str, purpose: str = "") -> VaultClient:
        return VaultClient(address, api_key=key, purpose=purpose, timeout=15)

    admin = client(ADMIN_KEY, TEST_PURPOSE)
    tokens = client(TOKENS_KEY)
    support = client(keys["scan-support"], "customer-support")
    backend = client(keys["scan-backend"], "account-management")
    dpo = client(keys["scan-dpo"], "dsar")
    ai = client(keys["scan-ai"], "analytics")
    limited = client(keys["scan-limited"], TEST_PURPOSE)
    clients = [admin, tokens, support, backend, dpo, ai, limited]
    ids: list[str] = []
    try:
        # --- the happy paths --------------------------------------------------------------
        first = ev.used(_full_record())
        rec = admin.create_record(tenant, first, idempotency_key=f"scan-{uuid.uuid4().hex}")
        rid = rec.record_id
        ids.append(rid)
        batch = [ev.used(sample_record(900 + i)) for i in range(3)]
        batch_ids = [r.record_id for r in admin.batch_create_records(tenant, batch)]
        ids += batch_ids
        assert admin.get_record(tenant, rid).values()["email"] != first["email"]  # canonical
        assert support.get_record(tenant, rid).fields["email"].output == "masked"
        assert tokens.get_record(tenant, rid).fields["email"].output == "token"
        assert ai.get_record(tenant, rid).fields["email"].output == "token"
        assert backend.get_record(tenant, rid, fields=["email"]).fields["email"].output == "plain"
        assert admin.find_records(tenant, {"email": first["email"].upper()}) == [rid]
        assert admin.find_records(tenant, {"phone": first["phone"]}) == [rid]
        assert admin.find_records(tenant, {"national_id": first["national_id"].lower()}) == [rid]
        changed = ev.used({"email": f"changed.{_marker()}@example.org", "notes": _marker(16)})
        v2 = admin.update_record(tenant, rid, expected_version=1, set_fields=changed)
        assert v2.version == 2
        admin.update_record(tenant, rid, expected_version=2, clear_fields=["address"])
        marketing = client(keys["scan-backend"], "marketing")
        clients.append(marketing)
        ev.expect(errors.ConsentRequired, lambda: marketing.get_record(tenant, rid))
        admin.update_consent(tenant, rid, ["marketing"], expected_version=0, source="scan-test")
        assert marketing.get_record(tenant, rid).fields["email"].output == "plain"
        assert admin.get_consent(tenant, rid).purposes == ("marketing",)
        media, document = dpo.export_customer_data(tenant, rid)
        assert media == "application/json"
        assert changed["notes"] in document.decode()  # the export itself does carry values
        sealed_media, _ = dpo.export_customer_data(
            tenant, rid, recipient_public_key=bytes(PrivateKey.generate().public_key)
        )
        assert sealed_media.endswith("sealedbox")
        assert dpo.query_access(tenant, rid)
        assert admin.query_access(tenant, batch_ids[0])

        # --- bad input carrying values ----------------------------------------------------
        bad_email = f"bad.{_marker()}@@example"
        bad_phone = f"+44 20 {_marker(6)}"
        bad_card = "4" + _digits(14)
        bad_card += str((int(luhn_complete(bad_card)[-1]) + 1) % 10)
        long_name = (_marker() + " ") * 60
        ctl_name = f"ctl {_marker()}\x00 end"
        unknown_value = f"unknown-{_marker()}"
        bad_date = f"20{_digits(2)}-13-{_marker(2)}"
        ev.bad(bad_email, bad_phone, bad_card, long_name.strip(), ctl_name, unknown_value, bad_date)

        def expect_refused(f: dict[str, str]) -> None:
            ev.expect(errors.InvalidInput, lambda: admin.create_record(tenant, f))
            ev.expect(errors.InvalidInput, lambda: admin.batch_create_records(tenant, [first, f]))
            ev.expect(
                errors.InvalidInput,
                lambda: admin.update_record(tenant, rid, expected_version=3, set_fields=f),
            )
            # the same straight from the service, to see its exception chain
            ev.expect(
                errors.InvalidInput,
                lambda: service.create(
                    ADMIN, tenant, [RecordInput(f)], deadline=Deadline.after(10)
                ),
            )

        for bad_fields in (
            {"email": bad_email},
            {"phone": bad_phone},
            {"card_number": bad_card},
            {"full_name": long_name},
            {"full_name": ctl_name},
            {"date_of_birth": bad_date},
            {"iban": f"GB00 {_marker(4).upper()} {_digits(8)}"},
            {"national_id": f"!{_marker()}!"},
            {"no_such_field": unknown_value},
        ):
            ev.bad(*bad_fields.values())
            expect_refused(bad_fields)
        ev.expect(errors.InvalidInput, lambda: admin.find_records(tenant, {"email": bad_email}))
        ev.expect(errors.InvalidInput, lambda: admin.find_records(tenant, {"phone": bad_phone}))
        ev.expect(
            errors.InvalidInput,
            lambda: admin.find_records(tenant, {"full_name": first["full_name"]}),
        )
        ev.expect(
            errors.InvalidInput,
            lambda: admin.find_records(tenant, {unknown_value: first["email"]}),
        )
        ev.expect(
            errors.InvalidInput,
            lambda: admin.update_record(
                tenant, rid, expected_version=3, clear_fields=[unknown_value]
            ),
        )
        ev.expect(
            errors.InvalidInput, lambda: admin.get_record(tenant, rid, fields=[first["email"]])
        )
        ev.expect(errors.InvalidInput, lambda: admin.get_record(first["email"], rid))
        ev.expect(errors.InvalidInput, lambda: admin.get_record(tenant, first["national_id"]))
        ev.expect(
            errors.InvalidInput,
            lambda: admin.create_record(tenant, first, idempotency_key=first["notes"] + "\u00e9"),
        )

        # --- denied roles, purposes ---------------------------------------------------------
        ev.expect(errors.PermissionDenied, lambda: tokens.create_record(tenant, first))
        ev.expect(errors.PermissionDenied, lambda: ai.export_customer_data(tenant, rid))
        ev.expect(errors.PermissionDenied, lambda: support.delete_record(tenant, rid))
        ev.expect(errors.PermissionDenied, lambda: support.get_record(tenant, rid, purpose="dsar"))
        ev.expect(
            errors.InvalidInput, lambda: admin.get_record(tenant, rid, purpose="no-such-purpose")
        )
        ev.expect(errors.InvalidInput, lambda: support.get_record(tenant, rid, purpose=""))
        with client("cvk_nobody_" + secrets.token_urlsafe(16)) as stranger:
            ev.expect(errors.Unauthenticated, lambda: stranger.get_record(tenant, rid))

        # --- limits, versions, missing and erased records ---------------------------------
        assert limited.get_record(tenant, rid, fields=["email"]).fields["email"].output == "plain"
        assert limited.get_record(tenant, rid, fields=["phone"]).fields["phone"].output == "plain"
        ev.expect(errors.ResourceExhausted, lambda: limited.get_record(tenant, rid))
        ev.expect(
            errors.Conflict,
            lambda: admin.update_record(tenant, rid, expected_version=1, set_fields=changed),
        )
        ev.expect(errors.NotFound, lambda: admin.get_record(tenant, str(uuid.uuid4())))
        admin.delete_record(tenant, batch_ids[2])
        ev.expect(errors.Erased, lambda: admin.get_record(tenant, batch_ids[2]))
        ev.expect(errors.Erased, lambda: admin.export_customer_data(tenant, batch_ids[2]))

        # --- tampered ciphertext: DATA_LOSS, no detail --------------------------------------
        _tamper(database, batch_ids[1], "full_name")
        ev.expect(errors.DecryptionFailed, lambda: admin.get_record(tenant, batch_ids[1]))
        ev.expect(errors.DecryptionFailed, lambda: dpo.export_customer_data(tenant, batch_ids[1]))

        # --- key server cut: a cold replica cannot decrypt or write -----------------------
        parts = urlsplit(openbao.url)
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 8200)
        cold = make_service(database, openbao, url=f"http://{proxy.address}")
        authn, _ = authenticator_with()
        cold_server = start_server(Services.over(cold.core), "127.0.0.1:0", authenticator=authn)
        try:
            proxy.cut()
            with VaultClient(
                cold_server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=10
            ) as cold_vc:
                ev.expect(errors.Unavailable, lambda: cold_vc.get_record(tenant, rid))
                ev.expect(errors.Unavailable, lambda: cold_vc.create_record(tenant + "-x", first))
                ev.expect(
                    errors.Unavailable,
                    lambda: cold_vc.find_records(tenant, {"email": first["email"]}),
                )
        finally:
            cold_server.stop(grace=0)
            proxy.close()

        # --- erase the first record ---------------------------------------------------------
        receipt = admin.delete_record(tenant, rid)
        assert receipt.record_id == rid
        ev.expect(errors.Erased, lambda: admin.get_record(tenant, rid))
        return ids
    finally:
        for c in clients:
            c.close()


def test_no_plaintext_in_logs_audit_or_errors(
    database: Database,
    openbao: OpenBaoDevServer,
    tenant: str,
    tmp_path: Path,
    evidence: Evidence,
    debug_logs: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    bao_audit = openbao.audit_log_path
    bao_offset = bao_audit.stat().st_size if bao_audit is not None and bao_audit.exists() else 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        policy_text(
            principals={f"apikey:{k}": r for k, r in PRINCIPALS.items()}, roles=LIMITED_ROLE
        )
    )
    jsonl = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(jsonl)
    service = make_service(database, openbao, policy=policy, sinks=[sink])
    authn, keys = authenticator_with(*PRINCIPALS)
    running = start_server(
        Services.over(service.core), "127.0.0.1:0", authenticator=authn, health_interval=0.2
    )
    try:
        ids = _scenario(evidence, service, database, openbao, running.address, keys, tenant)
    finally:
        running.stop(grace=0)
        sink.close()

    # --- gather -------------------------------------------------------------------------------
    ev = evidence
    ev.add("log.formatted", debug_logs.getvalue())
    for r in caplog.records:
        ev.add(f"log.record[{r.name}]", r.getMessage())
        ev.add(f"log.args[{r.name}]", r.args)
        if r.exc_info and r.exc_info[1] is not None:
            ev.error(r.exc_info[1])
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    ev.add("audit.jsonl", "\n".join(lines))
    with database.engine.connect() as conn:
        for row in conn.execute(text("SELECT * FROM audit_events")):
            ev.add("audit.db", tuple(row))
    out, err = capfd.readouterr()
    ev.add("stdout", out)
    ev.add("stderr", err)
    if bao_audit is not None and bao_audit.exists():
        with open(bao_audit, "rb") as fh:
            fh.seek(bao_offset)
            ev.add("openbao.audit", fh.read().decode("utf-8", "replace"))

    # --- the scan was not vacuous -------------------------------------------------------------
    names = {r.name for r in caplog.records}
    assert any(n.startswith("vault.") for n in names), names
    assert any(n.startswith("sqlalchemy.engine") for n in names), "SQL was not logged"
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert ev.grpc_errors >= 40, ev.grpc_errors
    assert len(ev.values) >= 40

    # --- scan ---------------------------------------------------------------------------------
    needles = sorted({v for v in ev.values if len(v.strip()) >= 6}, key=len)
    leaks = []
    for source, content in ev.texts:
        haystack = content.casefold()
        for value in needles:
            if value.casefold() in haystack:
                at = haystack.index(value.casefold())
                leaks.append((source, value, content[max(0, at - 200) : at + len(value) + 100]))
    assert not leaks, "\n\n".join(f"{s}: {v!r} in ...{c!r}..." for s, v, c in leaks[:20])

    # --- the audit JSON lines -------------------------------------------------------------------
    entries = [json.loads(line) for line in lines]
    assert entries
    assert {e["action"] for e in entries} >= EXPECTED_ACTIONS
    assert {"allowed", "denied"} <= {e["outcome"] for e in entries}
    for e in entries:
        assert set(e) == {
            "time",
            "chain",
            "seq",
            "principal",
            "role",
            "action",
            "purpose",
            "tenant",
            "record_ref",
            "field_classes",
            "outcome",
            "reason",
            "request_id",
            "on_behalf_of",
            "peer",
        }
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs)
    # the record's pseudonym only, never its id
    for rid in ids:
        assert rid not in jsonl.read_text(encoding="utf-8")
