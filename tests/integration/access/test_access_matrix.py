"""Authorization matrix of the sample policy, over real gRPC, on SQLite and PostgreSQL.

Every role x every RPC x every field class x each permitted purpose (consent-bound ones with and
without the customer's consent), a forbidden, an unknown and a missing purpose; the role's other
forbidden purposes on the whole record. Each case checks the exact status and reason, and for
revealing RPCs the exact output form and value of each field. The expectations are generated from ``deploy/policy/sample-policy.yaml`` (see
``matrix_support``), never written per role, so the matrix follows edits of the policy.

Case ids read ``<role>-<rpc>-<purpose>-<field class | all | record | sealed>``; ``none`` is the
purpose of RPCs whose request has no purpose field.

One server per database; the records are created once per database by the policy's writer role
(``backend-service``). The plaintext values each role gets stay under its per-minute limit
(``test_matrix_stays_under_the_plaintext_limits``); the limits themselves are checked on a second
server whose rate-limit clock is pinned to a window of its own.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import grpc
import pytest
from nacl.public import PrivateKey, SealedBox

from tests.integration.access.matrix_support import (
    ALL,
    CANONICAL,
    CASES,
    CLASS_OF,
    CONSENT_PURPOSES,
    FIELDS,
    POLICY,
    REVEALING,
    RPC_BY_NAME,
    RPCS,
    SAMPLE,
    SEALED,
    SEARCHABLE,
    UNKNOWN_PURPOSE,
    WRITER,
    Case,
    Outcome,
    PurposeRule,
    RecordingClient,
    Shown,
    call,
    cases_of,
    expect,
    expected_value,
    leaks,
    plaintext_budget,
    purpose_cases,
    roles_where,
    sorted_tuple,
    strict_leaks,
    value_needles,
    writer_probe_field,
    writer_purpose,
)
from tests.support import SAMPLE_POLICY, api_key_of, authenticator, make_service, make_wrapper
from vault import errors
from vault.api import RunningServer, start_server
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.client import CreatedRecord
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import Action, Output, PolicyHolder
from vault.schema import load_schema
from vault.service import Access, RecordsService
from vault.storage import Database
from vault.v1 import audit_pb2, records_pb2

pytestmark = pytest.mark.openbao


# --- the server and its records ------------------------------------------------------------------


@dataclass
class Matrix:
    db: Database
    server: RunningServer
    clients: dict[str, RecordingClient]
    tenant: str  # the records every read case reads
    scratch_tenant: str  # records created, changed and erased by the cases
    plain: CreatedRecord  # SAMPLE, no consent
    consented: CreatedRecord  # SAMPLE, consent to every consent-bound purpose
    exports: dict[tuple[str, ...], Outcome] = field(default_factory=dict)
    recipient: PrivateKey = field(default_factory=PrivateKey.generate)

    @property
    def writer(self) -> RecordingClient:
        return self.clients[WRITER]

    def fresh_record(self) -> CreatedRecord:
        return self.writer.create_record(self.scratch_tenant, SAMPLE)

    def record_for(self, case: Case) -> CreatedRecord:
        return self.consented if case.purpose.consent else self.plain


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def matrix(request: pytest.FixtureRequest, openbao: OpenBaoDevServer) -> Iterator[Matrix]:
    db = Database(str(request.getfixturevalue(f"{request.param}_url")))
    server = start_server(
        make_service(db, openbao, policy=SAMPLE_POLICY),
        "127.0.0.1:0",
        authenticator=authenticator(),
    )
    clients = {
        role: RecordingClient(server.address, api_key=api_key_of(role), timeout=30)
        for role in POLICY.roles
    }
    try:
        writer = clients[WRITER]
        tenant = f"mx-{uuid.uuid4().hex[:12]}"
        plain = writer.create_record(tenant, SAMPLE)
        consented = writer.create_record(tenant, SAMPLE)
        writer.update_consent(
            tenant, consented.record_id, CONSENT_PURPOSES, expected_version=0, source="test"
        )
        yield Matrix(
            db=db,
            server=server,
            clients=clients,
            tenant=tenant,
            scratch_tenant=f"mxs-{uuid.uuid4().hex[:12]}",
            plain=plain,
            consented=consented,
        )
    finally:
        for client in clients.values():
            client.close()
        server.stop(grace=0)
        db.dispose()


# --- performing one case ---------------------------------------------------------------------


@dataclass
class Run:
    outcome: Outcome
    record: CreatedRecord | None = None  # the record the call was about
    sent: dict[str, str] = field(default_factory=dict)  # the fields a write sent


def fields_of(case: Case) -> dict[str, str]:
    return dict(SAMPLE) if case.target == ALL else {case.target: SAMPLE[case.target]}


def perform(m: Matrix, case: Case) -> Run:
    client = m.clients[case.role]
    purpose = case.purpose.purpose
    name = case.rpc.name
    if name == "CreateRecord":
        sent = fields_of(case)
        return Run(call(client, lambda: client.create_record(m.scratch_tenant, sent)), sent=sent)
    if name == "BatchCreateRecords":
        sent = fields_of(case)
        out = call(client, lambda: client.batch_create_records(m.scratch_tenant, [sent, sent]))
        return Run(out, sent=sent)
    if name == "GetRecord":
        rec = m.record_for(case)
        subset = [] if case.target == ALL else [case.target]
        out = call(
            client,
            lambda: client.get_record(m.tenant, rec.record_id, fields=subset, purpose=purpose),
        )
        return Run(out, rec)
    if name == "UpdateRecord":
        rec = m.fresh_record()
        sent = fields_of(case)
        out = call(
            client,
            lambda: client.update_record(
                m.scratch_tenant, rec.record_id, expected_version=1, set_fields=sent
            ),
        )
        return Run(out, rec, sent)
    if name == "DeleteRecord":
        rec = m.fresh_record()
        return Run(call(client, lambda: client.delete_record(m.scratch_tenant, rec.record_id)), rec)
    if name == "FindRecords":
        match = {n: SAMPLE[n] for n in SEARCHABLE} if case.target == ALL else fields_of(case)
        return Run(call(client, lambda: client.find_records(m.tenant, match)), sent=match)
    if name == "UpdateConsent":
        rec = m.fresh_record()
        out = call(
            client,
            lambda: client.update_consent(
                m.scratch_tenant,
                rec.record_id,
                CONSENT_PURPOSES,
                expected_version=0,
                source="test",
            ),
        )
        return Run(out, rec)
    if name == "GetConsent":
        rec = m.consented
        return Run(call(client, lambda: client.get_consent(m.tenant, rec.record_id)), rec)
    if name == "ExportCustomerData":
        rec = m.record_for(case)
        key = bytes(m.recipient.public_key) if case.target == SEALED else b""
        if case.call_key not in m.exports:
            m.exports[case.call_key] = call(
                client,
                lambda: client.export_customer_data(
                    m.tenant, rec.record_id, recipient_public_key=key, purpose=purpose
                ),
            )
        return Run(m.exports[case.call_key], rec)
    if name == "QueryAccess":
        rec = m.plain
        out = call(
            client,
            lambda: client.query_access(m.tenant, rec.record_id, limit=1000, purpose=purpose),
        )
        return Run(out, rec)
    raise AssertionError(f"no runner for {name}")


# --- checking one case -----------------------------------------------------------------------


def check_status(case: Case, out: Outcome) -> bool:
    """The exact status and reason; True when the call was (rightly) allowed."""
    if out.error is not None:
        found = leaks(str(out.error), value_needles())
        assert not found, f"error message reveals {found}: {out.error}"
    refusal = case.expect.refusal
    if refusal is None:
        assert out.error is None, f"expected {case.expect}, got {out.describe()}"
        assert out.status == grpc.StatusCode.OK
        return True
    assert out.error is not None, f"expected {refusal}, got {out.describe()}"
    assert (type(out.error), out.status, out.error.reason) == (
        refusal.error,
        refusal.status,
        refusal.reason,
    ), f"expected {refusal}, got {out.describe()}"
    if refusal.field is not None:
        assert isinstance(out.error, errors.InvalidInput)
        assert out.error.field == refusal.field, out.describe()
    if case.purpose.kind == "unknown":
        assert UNKNOWN_PURPOSE not in str(out.error), "the message echoes the unknown purpose"
    return False


def check_no_values_except(out: Outcome, plain_fields: set[str]) -> None:
    """Nothing in the response but the values the policy shows in plain."""
    found = leaks(out.text(), value_needles(set(FIELDS) - plain_fields))
    assert not found, f"the response reveals {found}"


def plain_fields(outputs: Mapping[str, Shown]) -> set[str]:
    return {n for n, s in outputs.items() if s.output is Output.PLAIN}


def check_field(
    name: str, output: str, value: str, reason: str | None, s: Shown, tokens: Mapping[str, str]
) -> None:
    """One field against the policy; ``reason`` is None where the format has none (export)."""
    want = expected_value(name, s, tokens)
    assert output == s.output.value, f"{name}: expected {s.output.value}, got {output}"
    assert value == want, f"{name} ({output}): wrong value"
    if s.output is Output.MASKED:
        assert value != CANONICAL[name]
    if reason is not None:
        assert reason == s.reason, f"{name}: reason {reason!r}, expected {s.reason!r}"
    if s.output is Output.OMIT:
        assert value == ""
        assert reason is None or reason != "", f"{name}: omitted without a reason"


def check_tokens(tokens: dict[str, str], names: set[str]) -> None:
    assert set(tokens) == names
    for n, token in tokens.items():
        assert token.startswith(f"tok_{CLASS_OF[n].value}_"), f"{n}: not a token"


def probe_version(m: Matrix, rec: CreatedRecord) -> int:
    """The record's version, read by the writer (a field that costs no plaintext)."""
    got = m.writer.get_record(
        m.scratch_tenant, rec.record_id, fields=[writer_probe_field()], purpose=writer_purpose()
    )
    return got.version


def verify(m: Matrix, case: Case, run: Run) -> None:
    out = run.outcome
    allowed = check_status(case, out)
    if POLICY.roles[case.role].never_plaintext:
        found = strict_leaks(out.text())
        assert not found, f"a never_plaintext role received {found}"
    name = case.rpc.name
    if not allowed:
        if run.record is not None and case.rpc.mutates:  # a refused change changes nothing
            assert probe_version(m, run.record) == 1
            if name == "UpdateConsent":
                assert m.writer.get_consent(m.scratch_tenant, run.record.record_id).version == 0
        return
    if name == "GetRecord":
        assert run.record is not None
        record = out.result
        assert record.record_id == run.record.record_id
        assert set(record.fields) == set(case.expect.outputs)
        for n, s in case.expect.outputs.items():
            fv = record.fields[n]
            check_field(n, fv.output, fv.value, fv.reason, s, run.record.tokens)
        check_no_values_except(out, plain_fields(case.expect.outputs))
        return
    if name == "ExportCustomerData":
        verify_export(m, case, run)
        return
    # Nothing but tokens, ids, versions and purposes: no customer value at all.
    check_no_values_except(out, set())
    if name == "CreateRecord":
        assert out.result.version == 1
        check_tokens(out.result.tokens, set(run.sent))
    elif name == "BatchCreateRecords":
        assert len(out.result) == 2
        assert len({r.record_id for r in out.result}) == 2
        for rec in out.result:
            assert rec.version == 1
            check_tokens(rec.tokens, set(run.sent))
    elif name == "UpdateRecord":
        assert run.record is not None
        assert out.result.version == 2
        assert out.result.tokens == run.record.tokens  # a field's token never changes
        assert probe_version(m, run.record) == 2
    elif name == "DeleteRecord":
        assert run.record is not None
        receipt = out.result
        assert (receipt.tenant, receipt.record_id) == (m.scratch_tenant, run.record.record_id)
        assert receipt.data_key_ids
        with pytest.raises(errors.Erased):
            probe_version(m, run.record)
    elif name == "FindRecords":
        assert {m.plain.record_id, m.consented.record_id} <= set(out.result)
    elif name == "UpdateConsent":
        assert run.record is not None
        consent = out.result
        assert (consent.record_id, consent.version, consent.source) == (
            run.record.record_id,
            1,
            "test",
        )
        assert consent.purposes == sorted_tuple(CONSENT_PURPOSES)
    elif name == "GetConsent":
        consent = out.result
        assert (consent.record_id, consent.version) == (m.consented.record_id, 1)
        assert consent.purposes == sorted_tuple(CONSENT_PURPOSES)
    elif name == "QueryAccess":
        events = out.result
        assert events, "the record has an access history"
        assert all(e.role in POLICY.roles or e.role == "" for e in events)
        assert any(e.role == WRITER and e.action == Action.RECORD_WRITE.value for e in events)


def verify_export(m: Matrix, case: Case, run: Run) -> None:
    out = run.outcome
    assert run.record is not None
    media_type, document = out.result
    if case.target == SEALED:
        assert media_type == "application/json+nacl-sealedbox"
        assert not leaks(out.text(), value_needles()), "a sealed export shows values"
        document = SealedBox(m.recipient).decrypt(document)
    else:
        assert media_type == "application/json"
        check_no_values_except(out, plain_fields(case.expect.outputs))
    doc = json.loads(document)
    fields = doc["fields"]
    assert (doc["tenant"], doc["record_id"]) == (m.tenant, run.record.record_id)
    assert set(fields) == set(case.expect.outputs)
    names = FIELDS if case.target in (ALL, SEALED) else (case.target,)
    for n in names:
        s = case.expect.outputs[n]
        assert fields[n]["class"] == CLASS_OF[n].value
        check_field(n, fields[n]["output"], fields[n]["value"], None, s, run.record.tokens)
    if case.target == ALL:
        rest = {k: v for k, v in doc.items() if k != "fields"}
        found = leaks(json.dumps(rest, ensure_ascii=False), value_needles())
        assert not found, f"consent or access history reveals {found}"
        assert doc["consent"]["purposes"] == sorted(
            CONSENT_PURPOSES if case.purpose.consent else ()
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_access_matrix(matrix: Matrix, case: Case) -> None:
    verify(matrix, case, perform(matrix, case))


# --- never_plaintext roles (ai-pipeline) -----------------------------------------------------

NEVER_PLAINTEXT = roles_where(lambda r: r.never_plaintext)


@pytest.mark.parametrize(
    ("role", "rpc"),
    [(role, rpc.name) for role in NEVER_PLAINTEXT for rpc in RPCS],
    ids=[f"{role}-{rpc.name}" for role in NEVER_PLAINTEXT for rpc in RPCS],
)
def test_never_plaintext_role_gets_no_value_through_any_rpc(
    matrix: Matrix, role: str, rpc: str
) -> None:
    """Across every purpose and field: no raw, canonical or masked value and no fragment of
    one, in any response or error message, and no plain or masked output form."""
    outcomes = [(case, perform(matrix, case).outcome) for case in cases_of(role, rpc)]
    assert outcomes
    for case, out in outcomes:
        found = strict_leaks(out.text())
        assert not found, f"{case.id}: received {found}"
        if isinstance(out.response, records_pb2.GetRecordResponse):
            for n, fv in out.response.fields.items():
                assert fv.output not in (records_pb2.OUTPUT_PLAIN, records_pb2.OUTPUT_MASKED), (
                    f"{case.id}: {n} came back {records_pb2.Output.Name(fv.output)}"
                )
        if out.result is not None and rpc == "GetRecord":
            assert all(f.output not in REVEALING for f in out.result.fields.values())
    if RPC_BY_NAME[rpc].action in POLICY.roles[role].actions:
        assert any(out.error is None for _, out in outcomes), "no call was allowed"


# --- rate limits -------------------------------------------------------------------------------


def test_matrix_stays_under_the_plaintext_limits() -> None:
    """The matrix (per database) takes fewer plaintext values per role than its minute allows,
    so no case depends on which minute it runs in."""
    for role, used in plaintext_budget(CASES).items():
        limit = POLICY.roles[role].limits.plain_per_minute
        assert limit is None or used <= limit, f"{role}: {used} plaintext values > {limit}/min"


def limit_plan(role_name: str) -> tuple[str, int] | None:
    """A permitted purpose under which a full read gives the role plaintext, and how much."""
    role = POLICY.roles[role_name]
    if Action.RECORD_READ not in role.actions or role.limits.plain_per_minute is None:
        return None
    for pc in purpose_cases(role):
        if pc.kind == "permitted" and not pc.consent_bound:
            per_call = expect(role, RPC_BY_NAME["GetRecord"], pc, ALL).plain_values
            if per_call:
                return pc.purpose, per_call
    return None


MAX_LIMIT_CALLS = 40
LIMITED = [
    role
    for role in sorted(POLICY.roles)
    if (plan := limit_plan(role)) is not None
    and (POLICY.roles[role].limits.plain_per_minute or 0) // plan[1] <= MAX_LIMIT_CALLS
]


@dataclass
class Limited:
    clients: dict[str, RecordingClient]
    tenant: str
    record: CreatedRecord


@pytest.fixture(scope="module")
def limited(matrix: Matrix, openbao: OpenBaoDevServer) -> Iterator[Limited]:
    """A second server on the same database whose rate-limit clock is pinned to a day of the
    22nd century: its minute and day windows are its own, whatever else runs."""
    pinned = 4_102_444_800 + secrets.randbelow(36_500) * 86_400
    keys = KeyManager(make_wrapper(openbao))
    audit = AuditLog(
        matrix.db, keys, checkpoint=MemoryCheckpointStore(), checkpoint_in_background=False
    )
    access = Access(PolicyHolder(SAMPLE_POLICY), audit, clock=lambda: float(pinned))
    service = RecordsService(matrix.db, keys, load_schema(), access)
    server = start_server(service, "127.0.0.1:0", authenticator=authenticator())
    clients = {
        role: RecordingClient(server.address, api_key=api_key_of(role), timeout=30)
        for role in LIMITED
    }
    try:
        yield Limited(clients, matrix.tenant, matrix.plain)
    finally:
        for client in clients.values():
            client.close()
        server.stop(grace=0)


@pytest.mark.parametrize("role", LIMITED)
def test_plaintext_limit_per_minute(limited: Limited, role: str) -> None:
    """Up to the limit, reads succeed; the read that would pass it is RESOURCE_EXHAUSTED and
    counts nothing; masked, token and omitted values never count."""
    plan = limit_plan(role)
    assert plan is not None
    purpose, per_call = plan
    limit = POLICY.roles[role].limits.plain_per_minute
    assert limit is not None
    client = limited.clients[role]
    pc = next(pc for pc in purpose_cases(POLICY.roles[role]) if pc.purpose == purpose)
    outputs = expect(POLICY.roles[role], RPC_BY_NAME["GetRecord"], pc, ALL).outputs
    plain = sorted(plain_fields(outputs))
    free = [n for n, s in outputs.items() if s.output is not Output.PLAIN]

    def read(fields: list[str]) -> Outcome:
        rid = limited.record.record_id
        return call(
            client, lambda: client.get_record(limited.tenant, rid, fields=fields, purpose=purpose)
        )

    def assert_exhausted(out: Outcome) -> None:
        assert isinstance(out.error, errors.ResourceExhausted), out.describe()
        assert (out.status, out.error.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "limit_exceeded",
        ), out.describe()
        assert not leaks(str(out.error), value_needles())

    full_calls, rest = divmod(limit, per_call)
    for i in range(full_calls):
        out = read([])
        assert out.error is None, f"read {i + 1} of {full_calls}: {out.describe()}"
        check_no_values_except(out, set(plain))
    assert_exhausted(read([]))
    for _ in range(rest):  # what is left of the minute, one value at a time
        assert read(plain[:1]).error is None
    assert_exhausted(read(plain[:1]))
    if free:
        out = read(free)
        assert out.error is None, f"values that are not plain were refused: {out.describe()}"


# --- the matrix itself -------------------------------------------------------------------------


def test_rpc_table_covers_the_api() -> None:
    """Every RPC of the API is in the matrix, and the purpose rule matches the request."""
    methods = {
        m.name: m
        for module, service in ((records_pb2, "Records"), (audit_pb2, "Audit"))
        for m in module.DESCRIPTOR.services_by_name[service].methods
    }
    assert set(methods) == set(RPC_BY_NAME)
    for rpc in RPCS:
        has_purpose = "purpose" in methods[rpc.name].input_type.fields_by_name
        assert has_purpose == (rpc.purpose is not PurposeRule.NONE), rpc.name


def test_every_role_has_a_dev_api_key() -> None:
    for role in POLICY.roles:
        assert POLICY.principals.get(f"apikey:dev-{role}") == role


def test_matrix_covers_every_role_rpc_and_class() -> None:
    seen = {(c.role, c.rpc.name) for c in CASES}
    assert seen == {(role, rpc.name) for role in POLICY.roles for rpc in RPCS}
    for role in POLICY.roles:
        get = cases_of(role, "GetRecord")
        kinds = {c.purpose.kind for c in get}
        assert {"unknown", "missing"} <= kinds
        assert {c.target for c in get} == {*FIELDS, ALL}
    assert {c.purpose.kind for c in CASES} >= {"permitted", "forbidden", "unknown", "missing"}
