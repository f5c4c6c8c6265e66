"""Authorization matrix of the sample policy, over real gRPC, on SQLite and PostgreSQL.

Every role x every RPC (Records, Audit, Tokens with its text and grant RPCs, and GetRecord with a
``token_scope``) x every field class x each permitted purpose (consent-bound ones with and without the customer's
consent), a forbidden, an unknown and a missing purpose; the role's other forbidden purposes on
the whole record. Each case checks the exact status and reason, and for revealing RPCs the exact
output form and value of each field, or of each token: plain, the class's mask, the token
itself, omitted with its reason, or the token's error (unknown, expired, erased, denied for
consent). The expectations are generated from ``deploy/policy/sample-policy.yaml`` (see
``matrix_support``), never written per role, so the matrix follows edits of the policy.

Case ids read ``<role>-<rpc>[+token_scope]-<purpose>-<target>``: the target is a field class,
``all``, ``record``, ``sealed``, or for the Tokens RPCs a field class (every class, ip_address
included), ``unknown-tokens``, ``text`` (TokenizeText), an IssueGrant variant (``records``,
``scope``) or a call that must fail as a whole (``bad:*``, ``link:*``). ``none`` is the purpose
of RPCs whose request has no purpose field.

One server per database for Records and Audit; the records are created once per database by the
policy's writer role (``backend-service``), and the plaintext values each role gets there stay
under its per-minute limit (``test_matrix_stays_under_the_plaintext_limits``). The tokens to
reveal are issued once per database by the test policy's ``test-admin``, on a server of its own:
each class x kind, standalone and linked to each record, expired (through SQL), linked to an
erased record, and in another tenant. The Tokens cases run on a third server whose rate-limit
clock gives every call windows of its own, each reveal cut into calls under the role's limits.
The limits themselves are checked on a server whose rate-limit clock is pinned to a window of its
own.
"""

from __future__ import annotations

import functools
import itertools
import json
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from nacl.public import PrivateKey, SealedBox
from sqlalchemy import text

from tests.integration.access.access_support import audit_rows
from tests.integration.access.matrix_support import (
    ALL,
    BAD_ITEM,
    CANONICAL,
    CASES,
    CLASS_CANONICAL,
    CLASS_OF,
    CLASS_VALUE,
    CLASSES,
    CONSENT_PURPOSES,
    FIELDS,
    GRANT_TARGETS,
    ISSUED_LINKS,
    NO_FPE_CLASS,
    POLICY,
    RECORD,
    REVEALING,
    RPC_BY_KEY,
    RPCS,
    SCOPE_TARGETS,
    SEALED,
    SEARCHABLE,
    TEXT,
    TEXT_NOT_OWNED,
    TEXT_VALUES,
    TOKEN_SPECS,
    TOKENIZE_REFUSALS,
    UNKNOWN_LINKS,
    UNKNOWN_PURPOSE,
    UNOWNED_SCOPE,
    VIEW_SCOPE,
    WRITER,
    Case,
    Link,
    Outcome,
    PurposeRule,
    RecordingClient,
    Shown,
    TokenShown,
    TokenSpec,
    all_value_needles,
    call,
    call_specs,
    cases_of,
    class_needles,
    crafted_token,
    expect,
    expected_token_value,
    expected_value,
    fresh_window_clock,
    kinds_of,
    leaks,
    malformed_token,
    masked_budget,
    on_tokens_server,
    other_roles_scope,
    owned_scope,
    per_call_limit,
    plaintext_budget,
    purpose_cases,
    reveal_batches,
    roles_where,
    shown,
    sorted_tuple,
    start_policy_server,
    strict_leaks,
    tampered_token,
    token_shown,
    value_needles,
    writer_probe_field,
    writer_purpose,
)
from tests.support import (
    ADMIN_KEY,
    OTHER_TENANT_KEY_ID,
    SAMPLE,
    SAMPLE_POLICY,
    TEST_POLICY,
    TEST_PURPOSE,
    TOKENS_KEY,
    api_key_of,
    authenticator,
    create_tenants,
    make_service,
    make_wrapper,
    sample_record,
)
from vault import errors
from vault.api import RunningServer, start_server
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.client import CreatedRecord, TokenItem
from vault.crypto import TOKEN_RE
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import Action, Output, PolicyHolder, load_policy
from vault.schema import FieldClass, load_schema
from vault.service import Access, Core, RecordsService, Services
from vault.service.tokens import FPE_CLASSES, TokenKind
from vault.service.validators import GRANT_RE
from vault.storage import Database
from vault.v1 import audit_pb2, records_pb2, tokens_pb2

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
        Services.over(make_service(db, openbao, policy=SAMPLE_POLICY).core),
        "127.0.0.1:0",
        authenticator=authenticator(),
    )
    clients = {
        role: RecordingClient(server.address, api_key=api_key_of(role), timeout=30)
        for role in (*POLICY.roles, OTHER_TENANT)
    }
    try:
        writer = clients[WRITER]
        tenant, scratch = f"mx-{uuid.uuid4().hex[:12]}", f"mxs-{uuid.uuid4().hex[:12]}"
        create_tenants(db, tenant, scratch)
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
            scratch_tenant=scratch,
            plain=plain,
            consented=consented,
        )
    finally:
        for client in clients.values():
            client.close()
        server.stop(grace=0)
        db.dispose()


#: the clients' key of the sample policy's principal of another tenant (backend-service's role,
#: tenant "other" only: api_key_of("other-backend-service") is its key)
OTHER_TENANT = OTHER_TENANT_KEY_ID.removeprefix("dev-")
#: Whom the matrix's IssueGrant calls name: a principal of the policy (grants are not used here).
GRANTEE = min(p for p in POLICY.principals if p.startswith("apikey:"))
#: Roles whose events may appear in a record's history: the sample's and the test policy's
#: (test-admin issues the tokens linked to the matrix's records).
KNOWN_ROLES = frozenset(POLICY.roles) | frozenset(load_policy(TEST_POLICY).roles)


# --- the tokens to reveal -------------------------------------------------------------------------


@dataclass
class TokenWorld:
    """The Tokens cases' servers and the tokens they reveal (one per database)."""

    admin: RecordingClient  # test-admin, under the test policy: issues and checks tokens
    clients: dict[str, RecordingClient]  # every role, under the sample policy (fresh windows)
    issued: dict[TokenSpec, str]  # every token of TOKEN_SPECS, as the reveals send it
    view_tokens: dict[str, str]  # field -> the view token of SAMPLE's value in VIEW_SCOPE
    scratch_record: str  # a record of the scratch tenant, for linked Tokenize items
    erased_scratch_record: str  # an erased record of the scratch tenant
    runs: dict[tuple[str, ...], Run] = field(default_factory=dict)

    def tokens(self, specs: Sequence[TokenSpec]) -> list[str]:
        return [self.issued[s] for s in specs]


def token_request(tenant: str, items: Sequence[TokenItem]) -> tokens_pb2.TokenizeRequest:
    """A TokenizeRequest built from the proto (not through the SDK's own conversion)."""
    return tokens_pb2.TokenizeRequest(
        tenant=tenant,
        items=[
            tokens_pb2.TokenizeItem(
                value=i.value,
                field_class=i.field_class,
                kind=tokens_pb2.TokenKind.Value(f"TOKEN_KIND_{i.kind.upper()}"),
                scope=i.scope,
                ttl_seconds=i.ttl_seconds,
                record_id=i.record_id,
                keep_last_four=i.keep_last_four,
            )
            for i in items
        ],
    )


def expire(db: Database, tenant: str, tokens: Sequence[str]) -> None:
    """Set the tokens' expiry in the past (an hour ago), directly in the token table."""
    past = datetime.now(UTC) - timedelta(hours=1)
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tokens SET expires_at = :t WHERE tenant = :n AND token = :k"),
            [{"t": past, "n": tenant, "k": t} for t in tokens],
        )


def token_rows(db: Database, tenant: str, scope: str) -> int:
    """Token rows of ``tenant`` whose scope is ``scope`` or starts with ``scope.``."""
    with db.engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM tokens WHERE tenant = :n AND (scope = :s OR scope LIKE :p)"),
            {"n": tenant, "s": scope, "p": f"{scope}.%"},
        ).scalar_one()
    return int(found)


def issue_tokens(m: Matrix, admin: RecordingClient) -> dict[TokenSpec, str]:
    """Every token of TOKEN_SPECS, issued by test-admin in the matrix's tenant (or made up)."""
    # values of its own: erasing a record tombstones every token of its values, and the
    # standalone tokens of SAMPLE's values must stay live
    erased = admin.create_record(m.tenant, sample_record(90_002))
    owner = {
        Link.STANDALONE: "",
        Link.EXPIRED: "",
        Link.PLAIN: m.plain.record_id,
        Link.CONSENTED: m.consented.record_id,
        Link.ERASED: erased.record_id,
    }
    made = [s for s in TOKEN_SPECS if s.link in owner]
    items = [
        TokenItem(
            CLASS_VALUE[s.field_class],
            s.field_class.value,
            s.kind,
            # deterministic tokens of one value in one scope are one token: a scope per link
            scope=f"matrix.{s.link.value}",
            record_id=owner[s.link],
        )
        for s in made
    ]
    issued = dict(zip(made, admin.tokenize(m.tenant, items), strict=True))
    expire(m.db, m.tenant, [t for s, t in issued.items() if s.link is Link.EXPIRED])
    admin.delete_record(m.tenant, erased.record_id)
    foreign = [s for s in TOKEN_SPECS if s.link is Link.FOREIGN]
    other_tenant = f"mxo-{uuid.uuid4().hex[:12]}"
    foreign_items = [
        TokenItem(CLASS_VALUE[s.field_class], s.field_class.value, s.kind) for s in foreign
    ]
    issued.update(zip(foreign, admin.tokenize(other_tenant, foreign_items), strict=True))
    victim = issued[TokenSpec(FieldClass.EMAIL, TokenKind.RANDOM.value, Link.STANDALONE)]
    for s in TOKEN_SPECS:
        if s.link is Link.CRAFTED:
            issued[s] = crafted_token(s.field_class)
        elif s.link is Link.TAMPERED:
            issued[s] = tampered_token(victim, s.kind)
        elif s.link is Link.MALFORMED:
            issued[s] = malformed_token(s)
    assert set(issued) == set(TOKEN_SPECS)
    assert len(set(issued.values())) == len(issued), "two specs got the same token"
    return issued


@pytest.fixture(scope="module")
def tokens_world(matrix: Matrix, openbao: OpenBaoDevServer) -> Iterator[TokenWorld]:
    admin_server = start_policy_server(matrix.db, openbao, TEST_POLICY)
    tokens_server = start_policy_server(
        matrix.db, openbao, SAMPLE_POLICY, clock=fresh_window_clock()
    )
    admin = RecordingClient(
        admin_server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE, timeout=30
    )
    clients = {
        role: RecordingClient(tokens_server.address, api_key=api_key_of(role), timeout=30)
        for role in (*POLICY.roles, OTHER_TENANT)
    }
    try:
        issued = issue_tokens(matrix, admin)
        # the view tokens of SAMPLE's values, read by the tokens-only test role from another
        # record with the same values: views join across records (and no Tokenize call can
        # make one, see test_access_ai_pipeline)
        twin = admin.create_record(matrix.tenant, SAMPLE)
        with RecordingClient(admin_server.address, api_key=TOKENS_KEY, timeout=30) as viewer:
            view = viewer.get_record(matrix.tenant, twin.record_id, token_scope=VIEW_SCOPE)
        view_tokens = {n: view.fields[n].value for n in FIELDS}
        scratch = admin.create_record(matrix.scratch_tenant, SAMPLE)
        gone = admin.create_record(matrix.scratch_tenant, SAMPLE)
        admin.delete_record(matrix.scratch_tenant, gone.record_id)
        yield TokenWorld(
            admin=admin,
            clients=clients,
            issued=issued,
            view_tokens=view_tokens,
            scratch_record=scratch.record_id,
            erased_scratch_record=gone.record_id,
        )
    finally:
        for client in (admin, *clients.values()):
            client.close()
        tokens_server.stop(grace=0)
        admin_server.stop(grace=0)


# --- performing one case ---------------------------------------------------------------------


@dataclass
class Run:
    outcome: Outcome  # the call's (for a reveal cut into calls: the first refused, else last)
    record: CreatedRecord | None = None  # the record the call was about
    sent: dict[str, str] = field(default_factory=dict)  # the fields a write sent
    # --- Tokens RPCs
    outcomes: list[Outcome] = field(default_factory=list)  # every call (reveals: one per batch)
    items: list[list[TokenItem]] = field(default_factory=list)  # Tokenize: the batches sent
    scope: str = ""  # Tokenize: every item's scope is this or starts with it
    specs: list[TokenSpec] = field(default_factory=list)  # reveals: the tokens, in order
    batches: list[list[str]] = field(default_factory=list)  # reveals: the batches sent

    @property
    def all_outcomes(self) -> list[Outcome]:
        return self.outcomes or [self.outcome]


def fields_of(case: Case) -> dict[str, str]:
    return dict(SAMPLE) if case.target == ALL else {case.target: SAMPLE[case.target]}


def needs_world(case: Case) -> bool:
    return on_tokens_server(case) or bool(case.rpc.variant)


def perform(m: Matrix, case: Case, w: TokenWorld | None = None) -> Run:
    if case.rpc.name == "RevokeGrant":  # a grant that is not the caller's (or does not exist)
        client = m.clients[case.role]
        return Run(call(client, lambda: client.revoke_grant(m.tenant, "grt_" + "A" * 22)))
    if on_tokens_server(case):
        assert w is not None
        if case.rpc.tokenizes:
            return perform_tokenize(m, w, case)
        if case.rpc.name == "IssueGrant":
            return perform_issue_grant(m, w, case)
        if case.rpc.name == "TokenizeText":
            return perform_tokenize_text(m, w, case)
        if case.call_key not in w.runs:
            w.runs[case.call_key] = perform_reveal(m, w, case)
        return w.runs[case.call_key]
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
        scope = VIEW_SCOPE if case.rpc.variant == "token_scope" else ""
        out = call(
            client,
            lambda: client.get_record(
                m.tenant, rec.record_id, fields=subset, purpose=purpose, token_scope=scope
            ),
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


def tokenize_items(w: TokenWorld, target: str, scope: str) -> list[TokenItem]:
    """A class's value in every kind, standalone and linked to a record; or a good item and,
    at BAD_ITEM, one that fails the call as the target says."""
    if target in SCOPE_TARGETS:
        email = CLASS_VALUE[FieldClass.EMAIL]
        if target == "scope:not-owned/random":
            return [
                TokenItem(email, "email", "random", scope=scope),
                TokenItem(email, "email", "format_preserving", scope=scope),
            ]
        return [TokenItem(email, "email", "deterministic", scope=scope)]
    if target in {c.value for c in CLASSES}:
        cls = FieldClass(target)
        return [
            TokenItem(
                CLASS_VALUE[cls], cls.value, kind.value, scope=f"{scope}.{link}", record_id=rid
            )
            for link, rid in (("standalone", ""), ("linked", w.scratch_record))
            for kind in kinds_of(cls)
        ]
    email = CLASS_VALUE[FieldClass.EMAIL]
    good = TokenItem(email, "email", "deterministic", scope=f"{scope}.good")
    assert NO_FPE_CLASS is not None
    bad = {
        "bad:field_class": TokenItem(email, "no_such_class", scope=scope),
        "bad:kind": TokenItem(
            CLASS_VALUE[NO_FPE_CLASS], NO_FPE_CLASS.value, "format_preserving", scope=scope
        ),
        "bad:value": TokenItem(bad_email(), "email", "format_preserving", scope=scope),
        "bad:scope": TokenItem(email, "email", "deterministic", scope="not a scope!"),
        "link:unknown-record": TokenItem(email, "email", scope=scope, record_id=str(uuid.uuid4())),
        "link:erased-record": TokenItem(
            email, "email", scope=scope, record_id=w.erased_scratch_record
        ),
    }[target]
    items = [good, bad]
    assert items[BAD_ITEM] is bad
    return items


def bad_email() -> str:
    """Not an email address, yet a customer's value: an error must not echo it."""
    return CLASS_VALUE[FieldClass.EMAIL].replace("@", " at ")


def tokenize_scope(case: Case) -> str:
    """The scope of a Tokenize case: one the role owns (its ``token_scopes``), unless the
    target is about scopes it does not own."""
    tag = f"mx.{secrets.token_hex(8)}"
    if case.target in ("scope:not-owned", "scope:not-owned/random", TEXT_NOT_OWNED):
        return f"{UNOWNED_SCOPE}.{tag}"
    if case.target == "scope:other-role's":
        return other_roles_scope(case.role, tag)
    return owned_scope(case.role, tag)


def perform_tokenize(m: Matrix, w: TokenWorld, case: Case) -> Run:
    client = w.clients[case.role]
    scope = tokenize_scope(case)
    items = tokenize_items(w, case.target, scope)
    if case.rpc.streams:
        half = len(items) // 2
        batches = [items[:half], items[half:]] if case.expect.refusal is None else [items]
        requests = [token_request(m.scratch_tenant, b) for b in batches]
        out = client.stream("StreamTokenize", requests)
        return Run(out, outcomes=[out], items=batches, scope=scope)
    out = call(client, lambda: client.tokenize(m.scratch_tenant, items))
    return Run(out, outcomes=[out], items=[items], scope=scope)


GRANT_TTL = 600


def perform_issue_grant(m: Matrix, w: TokenWorld, case: Case) -> Run:
    client = w.clients[case.role]
    classes = [c.value for c in CLASSES]
    records = [m.plain.record_id, m.consented.record_id]
    scope = ""
    ttl = GRANT_TTL
    if case.target == "scope":
        records, scope = [], "matrix-chat"
    elif case.target == "bad:ttl_seconds":
        ttl = 0
    elif case.target == "bad:field_classes":
        classes = [classes[0], "no_such_class"]
    elif case.target == "link:unknown-record":
        records = [m.plain.record_id, str(uuid.uuid4())]
    out = call(
        client,
        lambda: client.issue_grant(
            m.tenant,
            GRANTEE,
            classes,
            record_ids=records,
            scope=scope,
            ttl_seconds=ttl,
            max_uses=1,
            purpose=case.purpose.purpose,
        ),
    )
    return Run(out, outcomes=[out])


#: What separates the tokens of a text to reveal: no value holds it, so the revealed text
#: splits back into one piece per token.
TEXT_SEPARATOR = "\n"


def text_of(tokens: Sequence[str]) -> str:
    """A text (or a stream's chunk) holding these tokens, each followed by the separator."""
    return "".join(f"{t}{TEXT_SEPARATOR}" for t in tokens)


def perform_reveal_text(
    m: Matrix, w: TokenWorld, case: Case, specs: list[TokenSpec], batches: list[list[str]]
) -> Run:
    client = w.clients[case.role]
    purpose = case.purpose.purpose
    if case.rpc.streams:
        requests = [
            tokens_pb2.RevealTextRequest(tenant=m.tenant, text=text_of(b), purpose=purpose)
            if i == 0
            else tokens_pb2.RevealTextRequest(text=text_of(b))
            for i, b in enumerate(batches)
        ]
        out = client.stream("StreamRevealText", requests)
        return Run(out, outcomes=[out], specs=specs, batches=batches)
    outcomes: list[Outcome] = []
    for batch in batches:
        request = tokens_pb2.RevealTextRequest(
            tenant=m.tenant, text=text_of(batch), purpose=purpose
        )
        outcomes.append(client.unary("RevealText", request))
        if outcomes[-1].error is not None:
            break
    return Run(outcomes[-1], outcomes=outcomes, specs=specs, batches=batches)


def perform_tokenize_text(m: Matrix, w: TokenWorld, case: Case) -> Run:
    client = w.clients[case.role]
    scope = tokenize_scope(case)
    request = tokens_pb2.TokenizeTextRequest(
        tenant=m.scratch_tenant, texts=[text_to_tokenize()], scope=scope
    )
    out = client.unary("TokenizeText", request)
    return Run(out, outcomes=[out], scope=scope)


def text_to_tokenize() -> str:
    """A note holding every value the detectors find, in class order."""
    return "Customer wrote: " + " / ".join(TEXT_VALUES.values()) + " - please call back."


def perform_reveal(m: Matrix, w: TokenWorld, case: Case) -> Run:
    client = w.clients[case.role]
    purpose = case.purpose.purpose
    spec_batches = reveal_batches(
        case.role, case.rpc, case.purpose, at_least=2 if case.rpc.streams else 1
    )
    batches = [w.tokens(b) for b in spec_batches]
    specs = [s for b in spec_batches for s in b]
    if case.rpc.text:
        return perform_reveal_text(m, w, case, specs, batches)
    if case.rpc.streams:
        requests = [
            tokens_pb2.RevealRequest(tenant=m.tenant, tokens=b, purpose=purpose) for b in batches
        ]
        out = client.stream("StreamReveal", requests)
        return Run(out, outcomes=[out], specs=specs, batches=batches)
    outcomes: list[Outcome] = []
    for batch in batches:
        outcomes.append(
            call(client, functools.partial(client.reveal, m.tenant, batch, purpose=purpose))
        )
        if outcomes[-1].error is not None:
            break
    return Run(outcomes[-1], outcomes=outcomes, specs=specs, batches=batches)


# --- checking one case -----------------------------------------------------------------------


def check_status(case: Case, out: Outcome) -> bool:
    """The exact status and reason; True when the call was (rightly) allowed."""
    if out.error is not None:
        found = leaks(str(out.error), all_value_needles() | {bad_email()})
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


def verify(m: Matrix, case: Case, run: Run, w: TokenWorld | None = None) -> None:
    out = run.outcome
    allowed = check_status(case, out)
    if POLICY.roles[case.role].never_plaintext:
        for o in run.all_outcomes:
            found = strict_leaks(o.text())
            assert not found, f"a never_plaintext role received {found}"
    if on_tokens_server(case):
        assert w is not None
        if case.rpc.tokenizes:
            verify_tokenize(m, w, case, run, allowed)
        elif case.rpc.name == "TokenizeText":
            verify_tokenize_text(m, w, run, allowed)
        elif case.rpc.text:
            verify_reveal_text(case, run, allowed)
        elif case.rpc.name == "IssueGrant":
            check_no_values_except(out, set())
            if allowed:
                grant, expires = out.result
                assert GRANT_RE.fullmatch(grant), "not a grant id"
                left = (expires - datetime.now(UTC)).total_seconds()
                assert GRANT_TTL - 60 < left <= GRANT_TTL, f"grant expires in {left} s"
        else:
            verify_reveal(case, run, allowed)
        return
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
        tokens = run.record.tokens
        if case.rpc.variant == "token_scope":
            # the view's tokens: those of another record holding the same values
            assert w is not None
            tokens = w.view_tokens
            for n, s in case.expect.outputs.items():
                if s.output is Output.TOKEN:
                    assert record.fields[n].value != run.record.tokens[n], f"{n}: unscoped token"
        for n, s in case.expect.outputs.items():
            fv = record.fields[n]
            check_field(n, fv.output, fv.value, fv.reason, s, tokens)
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
        assert all(e.role in KNOWN_ROLES or e.role == "" for e in events)
        assert any(e.role == WRITER and e.action == Action.RECORD_WRITE.value for e in events)


def verify_tokenize(m: Matrix, w: TokenWorld, case: Case, run: Run, allowed: bool) -> None:
    """A refused call wrote nothing (all or nothing); an allowed one returned a token of the
    right shape per item, each revealing (to test-admin) exactly the value sent, and the
    deterministic ones equal to test-admin's for the same value and scope."""
    out = run.outcome
    rows = token_rows(m.db, m.scratch_tenant, run.scope)
    if not allowed:
        assert rows == 0, f"a refused Tokenize left {rows} token rows"
        if case.rpc.streams:
            assert not out.result, "a refused stream answered a batch"
        return
    items = [i for b in run.items for i in b]
    if case.rpc.streams:
        *answers, last = out.response
        assert [a.WhichOneof("message") for a in answers] == ["batch"] * len(run.items)
        assert last.WhichOneof("message") == "summary"
        assert (last.summary.batches, last.summary.values, last.summary.errors) == (
            len(run.items),
            len(items),
            0,
        )
        assert [len(a.batch.tokens) for a in answers] == [len(b) for b in run.items]
        tokens = [t for a in answers for t in a.batch.tokens]
    else:
        tokens = list(out.response.tokens)
        assert tokens == out.result
    assert len(tokens) == len(items)
    assert len(set(tokens)) == len(tokens), "two items got one token"
    assert rows == len(tokens)
    for item, token in zip(items, tokens, strict=True):
        value = item.value
        cls = FieldClass(item.field_class)
        if item.kind == TokenKind.FORMAT_PRESERVING.value:
            assert cls in FPE_CLASSES
            assert not token.startswith("tok_"), f"{item.kind}: not a surrogate"
            assert token not in (value, CLASS_CANONICAL[cls]), (
                f"{cls.value}: surrogate is the value"
            )
        else:
            assert TOKEN_RE.fullmatch(token), f"{cls.value} {item.kind}: not a token"
            assert token.startswith(f"tok_{cls.value}_")
    check_no_values_except(out, set())
    found = leaks(out.text(), all_value_needles())
    assert not found, f"Tokenize returned {found}"
    revealed = w.admin.reveal(m.scratch_tenant, tokens, purpose=TEST_PURPOSE)
    assert [(r.error, r.output, r.value, r.field_class) for r in revealed] == [
        ("", "plain", i.value, i.field_class) for i in items
    ], "a token does not reveal the value it was made for"
    det = [(i, t) for i, t in zip(items, tokens, strict=True) if i.kind == "deterministic"]
    again = w.admin.tokenize(m.scratch_tenant, [i for i, _ in det]) if det else []
    assert again == [t for _, t in det], "deterministic tokens differ for the same value and scope"


def verify_tokenize_text(m: Matrix, w: TokenWorld, run: Run, allowed: bool) -> None:
    """Every detected value replaced by a deterministic token of the scope (the same text
    again gives the same result), each revealing (to test-admin) exactly the string it
    replaced; a refused call wrote nothing."""
    out = run.outcome
    rows = token_rows(m.db, m.scratch_tenant, run.scope)
    if not allowed:
        assert rows == 0, f"a refused TokenizeText left {rows} token rows"
        return
    [result] = out.response.results
    note = text_to_tokenize()
    spans = list(result.spans)
    assert [s.field_class for s in spans] == [c.value for c in TEXT_VALUES]
    expected, at = [], 0
    for span, value in zip(spans, TEXT_VALUES.values(), strict=True):
        assert note[span.start : span.end] == value, f"{span.field_class}: wrong span"
        assert TOKEN_RE.fullmatch(span.token), f"{span.field_class}: not a token"
        assert span.token.startswith(f"tok_{span.field_class}_")
        expected += [note[at : span.start], span.token]
        at = span.end
    assert result.text == "".join([*expected, note[at:]])
    assert rows == len(spans)
    found = leaks(out.text(), class_needles(TEXT_VALUES))
    assert not found, f"TokenizeText returned {found}"
    revealed = w.admin.reveal(m.scratch_tenant, [s.token for s in spans], purpose=TEST_PURPOSE)
    assert [(r.error, r.output, r.value) for r in revealed] == [
        ("", "plain", v) for v in TEXT_VALUES.values()
    ], "a text token does not reveal the string it replaced"
    again = w.admin.unary(
        "TokenizeText",
        tokens_pb2.TokenizeTextRequest(tenant=m.scratch_tenant, texts=[note], scope=run.scope),
    )
    assert again.error is None, again.describe()
    assert again.response.results[0].text == result.text, "the same text, other tokens"


def verify_reveal_text(case: Case, run: Run, allowed: bool) -> None:
    """Every token of the case reported as the policy gives it, and replaced in the text by
    its value or mask exactly when it is shown plain or masked; nothing else changes."""
    role = POLICY.roles[case.role]
    if not allowed:
        assert len(run.all_outcomes) == 1, "a refused reveal was retried"
        if case.rpc.streams:
            assert not run.outcome.result, "a refused stream answered a chunk"
        return
    assert all(o.error is None for o in run.all_outcomes)
    if case.rpc.streams:
        responses = list(run.outcome.response)
        assert len(responses) == len(run.batches) + 1, "one answer per chunk, then the tail"
        texts = ["".join(text_of(b) for b in run.batches)]
        answers = ["".join(r.text for r in responses)]
        reports = [[t for r in responses for t in r.tokens]]
    else:
        texts = [text_of(b) for b in run.batches]
        answers = [o.response.text for o in run.outcomes]
        reports = [list(o.response.tokens) for o in run.outcomes]
    want = {s: token_shown(role, case.purpose.purpose, s) for s in run.specs}
    tokens = [t for b in run.batches for t in b]
    spec_of = dict(zip(tokens, run.specs, strict=True))
    assert all(TEXT_SEPARATOR not in v for v in CLASS_VALUE.values())
    for sent, answer, found in zip(texts, answers, reports, strict=True):
        sent_tokens = sent.split(TEXT_SEPARATOR)[:-1]
        assert [r.token for r in found] == sent_tokens, "not every token was found"
        pieces = answer.split(TEXT_SEPARATOR)
        assert len(pieces) == len(sent_tokens) + 1, "the revealed text lost its shape"
        assert pieces[-1] == ""
        at = 0
        for r, piece in zip(found, pieces, strict=False):
            spec = spec_of[r.token]
            assert (r.start, r.end) == (at, at + len(r.token)), f"{spec.label}: offsets"
            at = r.end + len(TEXT_SEPARATOR)
            if spec not in case.expect.tokens:
                continue
            t = case.expect.tokens[spec]
            check_revealed(spec, r, t, text=True)
            replaced = not t.error and t.output in REVEALING
            expected = expected_token_value(spec, t, r.token) if replaced else r.token
            if piece != expected:
                shown_got = piece if t.output is not Output.PLAIN else "(withheld)"
                shown_want = expected if t.output is not Output.PLAIN else "(withheld)"
                raise AssertionError(f"{spec.label} ({t}): text {shown_got!r}, not {shown_want!r}")
    plain = {s.field_class for s, t in want.items() if t.output is Output.PLAIN}
    masked = {s.field_class for s, t in want.items() if t.output is Output.MASKED}
    needles = class_needles(set(CLASSES) - plain, masks=set(CLASSES) - masked)
    for o in run.all_outcomes:
        found_needles = leaks(o.text(), needles)
        assert not found_needles, f"the response reveals {found_needles}"


def verify_reveal(case: Case, run: Run, allowed: bool) -> None:
    """Every token of the case exactly as the policy gives it; the response holds no value,
    and no mask, the policy does not show in this call; a stream's summary adds up."""
    role = POLICY.roles[case.role]
    if not allowed:
        assert len(run.all_outcomes) == 1, "a refused reveal was retried"
        if case.rpc.streams:
            assert not run.outcome.result, "a refused stream answered a batch"
        return
    assert all(o.error is None for o in run.all_outcomes)
    if case.rpc.streams:
        *answers, last = run.outcome.response
        assert [a.WhichOneof("message") for a in answers] == ["batch"] * len(run.batches)
        assert last.WhichOneof("message") == "summary"
        responses = [a.batch for a in answers]
    else:
        responses = [o.response for o in run.outcomes]
    assert [[r.token for r in resp.results] for resp in responses] == run.batches
    results = [r for resp in responses for r in resp.results]
    want = {s: token_shown(role, case.purpose.purpose, s) for s in run.specs}
    if case.rpc.streams:
        summary = last.summary
        errors_expected = sum(1 for t in want.values() if t.error)
        assert (summary.batches, summary.values, summary.errors) == (
            len(run.batches),
            len(run.specs),
            errors_expected,
        )
    index = {s: i for i, s in enumerate(run.specs)}
    assert case.expect.tokens, "a reveal case without tokens"
    for spec, t in case.expect.tokens.items():
        got = results[index[spec]]
        check_revealed(spec, got, t)
    plain = {s.field_class for s, t in want.items() if t.output is Output.PLAIN}
    masked = {s.field_class for s, t in want.items() if t.output is Output.MASKED}
    needles = class_needles(set(CLASSES) - plain, masks=set(CLASSES) - masked)
    for o in run.all_outcomes:
        found = leaks(o.text(), needles)
        assert not found, f"the response reveals {found}"


def check_revealed(spec: TokenSpec, got: Any, t: TokenShown, *, text: bool = False) -> None:
    """One token's result (a RevealedToken, or a TextToken of a text reveal, which carries
    no value: the text does)."""
    token = got.token
    where = spec.label
    want_error = tokens_pb2.TokenError.Value(f"TOKEN_ERROR_{(t.error or 'unspecified').upper()}")
    want_output = (
        records_pb2.Output.Value(f"OUTPUT_{t.output.value.upper()}")
        if t.output is not None
        else records_pb2.OUTPUT_UNSPECIFIED
    )
    assert tokens_pb2.TokenError.Name(got.error) == tokens_pb2.TokenError.Name(want_error), (
        f"{where}: expected {t}, got {tokens_pb2.TokenError.Name(got.error)} ({got.reason})"
    )
    assert records_pb2.Output.Name(got.output) == records_pb2.Output.Name(want_output), (
        f"{where}: expected {t}, got {records_pb2.Output.Name(got.output)}"
    )
    assert got.reason == t.reason, f"{where}: reason {got.reason!r}, expected {t.reason!r}"
    assert got.field_class == t.field_class, f"{where}: class {got.field_class!r}"
    if text:
        return
    want_value = expected_token_value(spec, t, token)
    if got.value != want_value:
        shown_got = got.value if t.output is not Output.PLAIN else "(withheld)"
        shown_want = want_value if t.output is not Output.PLAIN else "(withheld)"
        raise AssertionError(f"{where} ({t}): value {shown_got!r}, expected {shown_want!r}")
    if t.output is Output.MASKED:
        assert got.value != CLASS_VALUE[spec.field_class]
    if t.output is Output.OMIT:
        assert got.reason, f"{where}: omitted without a reason"


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


def world_for(request: pytest.FixtureRequest, cases: Sequence[Case]) -> TokenWorld | None:
    """The tokens world, built only when a case needs it."""
    if any(needs_world(c) for c in cases):
        world = request.getfixturevalue("tokens_world")
        assert isinstance(world, TokenWorld)
        return world
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_access_matrix(matrix: Matrix, case: Case, request: pytest.FixtureRequest) -> None:
    w = world_for(request, [case])
    verify(matrix, case, perform(matrix, case, w), w)


def other_tenant_cases() -> list[Case]:
    """One case per RPC (and variant): a role other than the writer's (whose client the
    cases' setup uses), well-formed input."""
    out: dict[str, Case] = {}
    for c in CASES:
        if c.role != WRITER and not c.target.startswith(("bad:", "link:")):
            out.setdefault(c.rpc.key, c)
    return list(out.values())


@pytest.mark.parametrize("case", other_tenant_cases(), ids=lambda c: c.rpc.key)
def test_a_principal_of_another_tenant_is_refused_every_rpc(
    matrix: Matrix, case: Case, request: pytest.FixtureRequest
) -> None:
    """The tenant dimension (issue 11): the sample's ``dev-other-backend-service`` reaches
    tenant "other" only; each RPC it sends to the matrix's tenants is PERMISSION_DENIED
    (``tenant_not_allowed``), audited, whatever the action. Before, a principal of tenant B
    read tenant A's customers by naming A."""
    w = world_for(request, [case])
    m = replace(
        matrix, clients={**matrix.clients, case.role: matrix.clients[OTHER_TENANT]}, exports={}
    )
    if w is not None:
        w = replace(w, clients={**w.clients, case.role: w.clients[OTHER_TENANT]}, runs={})
    run = perform(m, case, w)
    for outcome in run.all_outcomes:
        assert outcome.status == grpc.StatusCode.PERMISSION_DENIED, case.id
        assert outcome.error is not None
        assert outcome.error.reason == "tenant_not_allowed"
    refused = audit_rows(
        matrix.db, principal=f"apikey:{OTHER_TENANT_KEY_ID}", reason="tenant_not_allowed"
    )
    assert refused
    assert all(r["outcome"] == "denied" for r in refused)


# --- reveals and records agree ----------------------------------------------------------------


def masked_pairs() -> list[tuple[str, str, str]]:
    """(role, purpose, field) where the role reads the field masked, and may reveal tokens."""
    out = []
    for role_name, role in sorted(POLICY.roles.items()):
        if not {Action.RECORD_READ, Action.TOKEN_REVEAL} <= role.actions:
            continue
        for pc in purpose_cases(role):
            if pc.kind != "permitted" or pc.consent_bound:
                continue
            for name in FIELDS:
                if shown(role, CLASS_OF[name], pc.purpose).output is Output.MASKED:
                    out.append((role_name, pc.purpose, name))
    return out


@pytest.mark.parametrize(("role", "purpose", "name"), masked_pairs())
def test_a_masked_token_reads_like_the_masked_field(
    matrix: Matrix, tokens_world: TokenWorld, role: str, purpose: str, name: str
) -> None:
    """The same customer value, the same role and purpose: Reveal of a token of the record's
    value gives the same mask GetRecord gives for the field (the class's mask of the canonical
    value), whatever spelling the value was tokenized in."""
    record = matrix.clients[role].get_record(
        matrix.tenant, matrix.plain.record_id, fields=[name], purpose=purpose
    )
    field_value = record.fields[name]
    assert field_value.output == "masked"
    token = tokens_world.issued[TokenSpec(CLASS_OF[name], TokenKind.RANDOM.value, Link.PLAIN)]
    [revealed] = tokens_world.clients[role].reveal(matrix.tenant, [token], purpose=purpose)
    assert revealed.output == "masked"
    assert revealed.value == field_value.value, (
        f"{name}: Reveal masks it as {revealed.value!r}, GetRecord as {field_value.value!r}"
    )


# --- never_plaintext roles (ai-pipeline) -----------------------------------------------------

NEVER_PLAINTEXT = roles_where(lambda r: r.never_plaintext)


@pytest.mark.parametrize(
    ("role", "rpc"),
    [(role, rpc.key) for role in NEVER_PLAINTEXT for rpc in RPCS],
    ids=[f"{role}-{rpc.key}" for role in NEVER_PLAINTEXT for rpc in RPCS],
)
def test_never_plaintext_role_gets_no_value_through_any_rpc(
    matrix: Matrix, role: str, rpc: str, request: pytest.FixtureRequest
) -> None:
    """Across every purpose and field: no raw, canonical or masked value and no fragment of
    one, in any response or error message, and no plain or masked output form."""
    cases = cases_of(role, rpc)
    assert cases
    w = world_for(request, cases)
    outcomes = [(case, out) for case in cases for out in perform(matrix, case, w).all_outcomes]
    for case, out in outcomes:
        found = strict_leaks(out.text())
        assert not found, f"{case.id}: received {found}"
        responses = out.response if isinstance(out.response, list) else [out.response]
        for response in responses:
            if isinstance(response, records_pb2.GetRecordResponse):
                for n, fv in response.fields.items():
                    assert fv.output not in (records_pb2.OUTPUT_PLAIN, records_pb2.OUTPUT_MASKED), (
                        f"{case.id}: {n} came back {records_pb2.Output.Name(fv.output)}"
                    )
            results = []
            if isinstance(response, tokens_pb2.RevealResponse):
                results = list(response.results)
            elif isinstance(response, tokens_pb2.StreamRevealResponse):
                results = list(response.batch.results)
            for r in results:
                assert r.output not in (records_pb2.OUTPUT_PLAIN, records_pb2.OUTPUT_MASKED), (
                    f"{case.id}: {r.token} came back {records_pb2.Output.Name(r.output)}"
                )
        if out.result is not None and case.rpc.name == "GetRecord":
            assert all(f.output not in REVEALING for f in out.result.fields.values())
    if RPC_BY_KEY[rpc].action in POLICY.roles[role].actions:
        assert any(out.error is None for _, out in outcomes), "no call was allowed"


# --- rate limits -------------------------------------------------------------------------------


def test_matrix_stays_under_the_plaintext_limits() -> None:
    """The matrix (per database) takes fewer plaintext values per role than its minute allows,
    so no case depends on which minute it runs in."""
    for role, used in plaintext_budget(CASES).items():
        limit = POLICY.roles[role].limits.plain_per_minute
        assert limit is None or used <= limit, f"{role}: {used} plaintext values > {limit}/min"


def test_matrix_stays_under_the_masked_limits() -> None:
    """The same for masked values, which count against limits of their own (issue 11)."""
    for role, used in masked_budget(CASES).items():
        limit = POLICY.roles[role].limits.masked_per_minute
        assert limit is None or used <= limit, f"{role}: {used} masked values > {limit}/min"
    assert any(masked_budget(CASES).values())


def limit_plan(role_name: str) -> tuple[str, int] | None:
    """A permitted purpose under which a full read gives the role plaintext, and how much."""
    role = POLICY.roles[role_name]
    if Action.RECORD_READ not in role.actions or role.limits.plain_per_minute is None:
        return None
    for pc in purpose_cases(role):
        if pc.kind == "permitted" and not pc.consent_bound:
            per_call = expect(role, RPC_BY_KEY["GetRecord"], pc, ALL).plain_values
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
    service = RecordsService(Core(matrix.db, keys, load_schema(), access))
    server = start_server(Services.over(service.core), "127.0.0.1:0", authenticator=authenticator())
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
    outputs = expect(POLICY.roles[role], RPC_BY_KEY["GetRecord"], pc, ALL).outputs
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
    """Every RPC of the API is in the matrix, the purpose rule matches the request, and each
    variant names a field of the request."""
    methods = {
        m.name: m
        for module, service in (
            (records_pb2, "Records"),
            (audit_pb2, "Audit"),
            (tokens_pb2, "Tokens"),
        )
        for m in module.DESCRIPTOR.services_by_name[service].methods
    }
    assert set(methods) == {rpc.name for rpc in RPCS}
    for rpc in RPCS:
        request_fields = methods[rpc.name].input_type.fields_by_name
        has_purpose = "purpose" in request_fields
        assert has_purpose == (rpc.purpose is not PurposeRule.NONE), rpc.key
        assert not rpc.variant or rpc.variant in request_fields, rpc.key
        streams = methods[rpc.name].client_streaming and methods[rpc.name].server_streaming
        assert streams == rpc.streams, rpc.key


def test_every_role_has_a_dev_api_key() -> None:
    for role in POLICY.roles:
        assert POLICY.principals.get(f"apikey:dev-{role}") == role


def test_matrix_covers_every_role_rpc_and_class() -> None:
    seen = {(c.role, c.rpc.key) for c in CASES}
    assert seen == {(role, rpc.key) for role in POLICY.roles for rpc in RPCS}
    for role in POLICY.roles:
        for key in ("GetRecord", "GetRecord+token_scope"):
            get = cases_of(role, key)
            kinds = {c.purpose.kind for c in get}
            assert {"unknown", "missing"} <= kinds
            assert {c.target for c in get} == {*FIELDS, ALL}
        for rpc in RPCS:
            if rpc.service != "Tokens":
                continue
            cases = cases_of(role, rpc.key)
            classes = {c.target for c in cases} & {c.value for c in CLASSES}
            if rpc.tokenizes:
                assert classes == {c.value for c in CLASSES}
                assert set(TOKENIZE_REFUSALS) <= {c.target for c in cases}
                assert set(SCOPE_TARGETS) <= {c.target for c in cases}
            elif rpc.name == "TokenizeText":
                assert {c.target for c in cases} == {TEXT, TEXT_NOT_OWNED}
            elif rpc.name == "RevokeGrant":
                assert {c.target for c in cases} == {RECORD}
            elif not rpc.reveals:
                if rpc.action in POLICY.roles[role].actions:
                    assert set(GRANT_TARGETS) <= {c.target for c in cases}, (role, rpc.key)
            else:
                kinds = {c.purpose.kind for c in cases}
                assert {"forbidden", "unknown", "missing"} <= kinds, (role, rpc.key)
                if rpc.action in POLICY.roles[role].actions:
                    # every class's tokens, checked in some case of each permitted purpose
                    for pc in purpose_cases(POLICY.roles[role]):
                        if pc.kind != "permitted":
                            continue
                        checked = {t for c in cases if c.purpose == pc for t in c.expect.tokens}
                        if not pc.consent_bound:
                            assert checked == set(call_specs(pc, rpc)), (role, rpc.key, pc.label)
    assert {c.purpose.kind for c in CASES} >= {"permitted", "forbidden", "unknown", "missing"}


def test_tokens_to_reveal_cover_every_class_kind_and_origin() -> None:
    """Each class x kind (format-preserving where the class allows it) is issued standalone,
    on a record with and without consent, expired and on an erased record; the unknown ones
    include another tenant's tokens of every kind, crafted, tampered and malformed ones."""
    for link in (*ISSUED_LINKS, Link.EXPIRED, Link.ERASED):
        got = {(s.field_class, s.kind) for s in TOKEN_SPECS if s.link is link}
        assert got == {(c, k.value) for c in CLASSES for k in kinds_of(c)}, link
    assert {c for c in CLASSES if TokenKind.FORMAT_PRESERVING in kinds_of(c)} == set(FPE_CLASSES)
    assert {s.link for s in TOKEN_SPECS} >= UNKNOWN_LINKS
    foreign = {s.kind for s in TOKEN_SPECS if s.link is Link.FOREIGN}
    assert foreign == {k.value for k in TokenKind}


def test_consent_bound_reveals_check_every_token_once() -> None:
    """The +consent and +no-consent cases of a consent-bound purpose share one reveal and
    check each of its tokens exactly once between them."""
    for role_name, role in POLICY.roles.items():
        if Action.TOKEN_REVEAL not in role.actions:
            continue
        for pc in purpose_cases(role):
            if not pc.consent_bound or not pc.consent:
                continue
            for key in ("Reveal", "StreamReveal", "RevealText", "StreamRevealText"):
                if Action(RPC_BY_KEY[key].action) not in role.actions:
                    continue
                cases = [
                    c
                    for c in cases_of(role_name, key)
                    if c.purpose.purpose == pc.purpose and c.purpose.kind == "permitted"
                ]
                assert len({c.call_key for c in cases}) == 1
                checked = [t for c in cases for t in c.expect.tokens]
                assert sorted(checked, key=lambda s: s.label) == sorted(
                    call_specs(pc, RPC_BY_KEY[key]), key=lambda s: s.label
                )


def test_reveal_batches_stay_under_the_limits_per_call() -> None:
    """Each reveal call of the matrix takes at most the role's smaller plaintext limit (the
    tokens server gives every call a minute and a day of its own), and keeps request order."""
    for role_name, role in POLICY.roles.items():
        limit = per_call_limit(role)
        for pc in purpose_cases(role):
            for at_least, key in itertools.product((1, 2), ("Reveal", "RevealText")):
                rpc = RPC_BY_KEY[key]
                batches = reveal_batches(role_name, rpc, pc, at_least=at_least)
                assert len(batches) >= at_least
                assert [s for b in batches for s in b] == call_specs(pc, rpc)
                if limit is None or expect(role, rpc, pc, "email").refusal:
                    continue
                for b in batches:
                    plain = sum(token_shown(role, pc.purpose, s).output is Output.PLAIN for s in b)
                    assert plain <= limit
