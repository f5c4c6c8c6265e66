"""Acceptance: an ``ai-pipeline`` principal cannot get a plaintext or masked value by any RPC,
grant-less, including by passing a token of another tenant, an expired token or a token it
crafted.

Every RPC of every service in ``vault.v1`` (found through the proto descriptors, so an RPC added
later fails :func:`test_every_rpc_has_probes` until it gets probes here) is called as
``ai-pipeline`` over raw gRPC with plausible requests: its own tokens (every class and kind,
standalone and linked to records, format-preserving ones keeping the last four digits), tokens
issued by others in the same tenant, a token of another tenant, expired tokens (``expires_at``
set in the past through SQL), crafted ``tok_email_`` tokens, format-preserving surrogates,
records with and without consent, erased ones, GetRecord with and without ``token_scope``,
every purpose the policy knows (and an unknown and a missing one), and reveals under grants it
does not hold (made up, another principal's, expired, used up, another tenant's, or one that
covers none of the tokens). For each call:

- the status (and reason code, and the field of an INVALID_ARGUMENT) is the one the sample
  policy implies (computed with ``matrix_support.expect`` where the matrix has the case);
- no string or bytes field of any raw response message, and no status message, contains any of
  the values used (raw or canonical, case-insensitively), any of their masks, the mask bullet
  or the free-text redaction marker;
- no ``output`` field of any response is ``OUTPUT_PLAIN`` or ``OUTPUT_MASKED``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import secrets
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

import vault.v1
from tests.integration.access.matrix_support import (
    ALL,
    CANONICAL,
    CLASS_CANONICAL,
    CLASS_OF,
    CLASS_VALUE,
    CLASSES,
    CONSENT_PURPOSES,
    FIELDS,
    NO_PURPOSE_FIELD,
    POLICY,
    RECORD,
    RPC_BY_KEY,
    TEXT,
    TEXT_VALUES,
    PurposeCase,
    Refusal,
    crafted_token,
    expect,
    kinds_of,
    other_roles_scope,
    owned_scope,
    purpose_cases,
    scope_refusal,
    shown,
    start_policy_server,
)
from tests.support import (
    ADMIN_KEY,
    SAMPLE,
    SAMPLE_POLICY,
    TEST_POLICY,
    TEST_PURPOSE,
    api_key_of,
    sample_record,
)
from vault.api import RunningServer
from vault.client import TokenItem, VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import Action, Output, Role, mask
from vault.schema import FieldClass
from vault.service.tokens import TokenKind
from vault.service.validators import GRANT_RE
from vault.storage import Database
from vault.v1 import records_pb2, tokens_pb2

pytestmark = pytest.mark.openbao

ROLE: Final = "ai-pipeline"
AI: Final[Role] = POLICY.roles[ROLE]
PRINCIPAL: Final = f"apikey:dev-{ROLE}"
assert AI.never_plaintext, f"{ROLE} is the sample's never_plaintext role"
assert POLICY.principals[PRINCIPAL] == ROLE

#: Services a server also runs that carry no customer data: they are not probed.
INFRASTRUCTURE: Final = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
)
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def discovered_methods() -> list[MethodDescriptor]:
    """Every RPC of every service declared by a ``vault.v1.*_pb2`` module."""
    methods: list[MethodDescriptor] = []
    for info in pkgutil.iter_modules(vault.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"vault.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return sorted(methods, key=lambda m: m.full_name)


METHODS: Final = discovered_methods()


# --- the values that must never come back ------------------------------------------------------


def bad_email() -> str:
    """Not an email address, yet a customer's value: an error must not echo it."""
    return CLASS_VALUE[FieldClass.EMAIL].replace("@", " at ")


def _needles() -> set[str]:
    out: set[str] = {"\u2022", "[redacted", bad_email()}
    for name in FIELDS:
        out.update({SAMPLE[name], CANONICAL[name]})
    for cls in CLASSES:
        raw, canonical = CLASS_VALUE[cls], CLASS_CANONICAL[cls]
        out.update({raw, canonical, mask(cls, canonical), mask(cls, raw)})
    return out


#: Every value used (raw and canonical), every mask of one, the bullet and the redaction marker.
NEEDLES: Final = frozenset(_needles())


def strings_of(message: Message) -> Iterator[str]:
    """Every string and bytes value in a message, at any depth (map keys and values too)."""
    for fd, value in message.ListFields():
        entries: list[Any]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            entries = [x for kv in value.items() for x in kv]
        elif fd.is_repeated:
            entries = list(value)
        else:
            entries = [value]
        for v in entries:
            if isinstance(v, Message):
                yield from strings_of(v)
            elif isinstance(v, str):
                yield v
            elif isinstance(v, bytes):
                yield v.decode("utf-8", "replace")


def revealing_outputs(message: Message) -> Iterator[str]:
    """Every ``output`` field at any depth that is plain or masked."""
    for fd, value in message.ListFields():
        entries: list[Any]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            entries = list(value.values())
        elif fd.is_repeated:
            entries = list(value)
        else:
            entries = [value]
        for v in entries:
            if isinstance(v, Message):
                yield from revealing_outputs(v)
            elif (
                fd.name == "output"
                and fd.type == FieldDescriptor.TYPE_ENUM
                and v in (records_pb2.OUTPUT_PLAIN, records_pb2.OUTPUT_MASKED)
            ):
                yield records_pb2.Output.Name(v)


def found_in(texts: Sequence[str]) -> list[str]:
    folded = [t.casefold() for t in texts]
    return sorted(n for n in NEEDLES if any(n.casefold() in t for t in folded))


# --- raw calls -----------------------------------------------------------------------------------


@dataclass
class Answer:
    responses: list[Message]
    code: grpc.StatusCode
    details: str = ""


class RawClient:
    """Calls any RPC by its descriptor, keeping every raw response message and the status."""

    def __init__(self, address: str, api_key: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.metadata = (("x-api-key", api_key),)

    def close(self) -> None:
        self.channel.close()

    def call(self, method: MethodDescriptor, requests: Sequence[Message]) -> Answer:
        path = f"/{method.containing_service.full_name}/{method.name}"
        response_type = GetMessageClass(method.output_type)

        def serialize(m: Message) -> bytes:
            return m.SerializeToString()

        kwargs: dict[str, Any] = {
            "request_serializer": serialize,
            "response_deserializer": response_type.FromString,
        }
        got: list[Message] = []
        timeout, metadata = 30, self.metadata
        try:
            if method.client_streaming and method.server_streaming:
                bidi = self.channel.stream_stream(path, **kwargs)
                got.extend(bidi(iter(requests), timeout=timeout, metadata=metadata))
            elif method.server_streaming:
                [request] = requests
                down = self.channel.unary_stream(path, **kwargs)
                got.extend(down(request, timeout=timeout, metadata=metadata))
            elif method.client_streaming:
                up = self.channel.stream_unary(path, **kwargs)
                got.append(up(iter(requests), timeout=timeout, metadata=metadata))
            else:
                [request] = requests
                unary = self.channel.unary_unary(path, **kwargs)
                got.append(unary(request, timeout=timeout, metadata=metadata))
        except grpc.RpcError as exc:
            return Answer(got, exc.code(), exc.details() or "")
        return Answer(got, grpc.StatusCode.OK)


# --- what the calls use ----------------------------------------------------------------------------


@dataclass
class World:
    db: Database
    server: RunningServer
    ai: RawClient  # ai-pipeline, on the sample policy's server
    tenant: str
    other_tenant: str
    plain: str  # record ids of ``tenant``: no consent, every consent, erased
    consented: str
    erased: str
    foreign_record: str  # a record of ``other_tenant``
    own: dict[str, str]  # label -> a token ai-pipeline issued in ``tenant``
    others: dict[str, str]  # label -> a token test-admin issued in ``tenant``
    expired: dict[str, str]  # label -> an expired token of ``tenant``
    erased_tokens: dict[str, str]  # label -> a token of the erased record
    unknown: dict[str, str]  # label -> a token unknown in ``tenant``
    grants: dict[str, str] = field(default_factory=dict)  # label -> a grant id to try
    grant_purpose: str = ""  # the purpose of the grants issued to ai-pipeline

    def live(self) -> list[str]:
        return [*self.own.values(), *self.others.values()]

    def every_token(self) -> list[str]:
        return [
            *self.live(),
            *self.expired.values(),
            *self.erased_tokens.values(),
            *self.unknown.values(),
        ]

    def token_error(self, token: str) -> str:
        """The per-token error any reveal under a grant that covers none of them gives."""
        if token in self.unknown.values():
            return "TOKEN_ERROR_UNKNOWN"
        if token in self.expired.values():
            return "TOKEN_ERROR_EXPIRED"
        if token in self.erased_tokens.values():
            return "TOKEN_ERROR_ERASED"
        return "TOKEN_ERROR_DENIED"


def items_for(
    prefix: str, record_ids: dict[str, str], scope: str
) -> tuple[list[str], list[TokenItem]]:
    """Every class x kind, standalone and linked to each record; labels and items."""
    labels: list[str] = []
    items: list[TokenItem] = []
    for link, rid in record_ids.items():
        for cls in CLASSES:
            for kind in kinds_of(cls):
                labels.append(f"{prefix}/{cls.value}/{kind.value}/{link}")
                items.append(
                    TokenItem(
                        CLASS_VALUE[cls],
                        cls.value,
                        kind.value,
                        scope=f"{scope}.{link}",
                        record_id=rid,
                    )
                )
    return labels, items


def expire_tokens(db: Database, tenant: str, tokens: Sequence[str]) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tokens SET expires_at = :t WHERE tenant = :n AND token = :k"),
            [{"t": past, "n": tenant, "k": t} for t in tokens],
        )


def grantors() -> list[str]:
    """Roles of the sample policy that may issue grants."""
    return sorted(n for n, r in POLICY.roles.items() if Action.GRANT_ISSUE in r.actions)


def issue_grants(w: World, address: str) -> None:
    """Grants ai-pipeline may try and must not be able to use for any of the tokens: none for
    it, another principal's, expired, used up, another tenant's, and a live one that covers no
    token (a conversation scope nothing was tokenized in)."""
    w.grants["made-up"] = "grt_" + "".join(secrets.choice(_BASE62) for _ in range(22))
    w.grants["malformed"] = "grant-please"
    names = grantors()
    if not names:
        return
    grantor = names[0]
    purpose = sorted(POLICY.roles[grantor].purposes)[0]
    w.grant_purpose = purpose
    someone_else = min(p for p, r in POLICY.principals.items() if r != ROLE)
    classes = [c.value for c in CLASSES]
    records = [w.plain, w.consented]
    with VaultClient(address, api_key=api_key_of(grantor), purpose=purpose) as g:
        w.grants["another-principal's"], _ = g.issue_grant(
            w.tenant, someone_else, classes, record_ids=records
        )
        w.grants["expired"], _ = g.issue_grant(w.tenant, PRINCIPAL, classes, record_ids=records)
        w.grants["used-up"], _ = g.issue_grant(
            w.tenant, PRINCIPAL, classes, record_ids=records, max_uses=1
        )
        w.grants["another-tenant's"], _ = g.issue_grant(
            w.other_tenant, PRINCIPAL, classes, record_ids=[w.foreign_record]
        )
        w.grants["covers-nothing"], _ = g.issue_grant(
            w.tenant, PRINCIPAL, classes, scope=f"chat-{uuid.uuid4().hex[:8]}", max_uses=1000
        )
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    with w.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE reveal_grants SET expires_at = :t WHERE id = :g"),
            {"t": past, "g": w.grants["expired"]},
        )
        conn.execute(
            text("UPDATE reveal_grants SET uses = max_uses WHERE id = :g"),
            {"g": w.grants["used-up"]},
        )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(request: pytest.FixtureRequest, openbao: OpenBaoDevServer) -> Iterator[World]:
    db = Database(str(request.getfixturevalue(f"{request.param}_url")))
    server = start_policy_server(db, openbao, SAMPLE_POLICY)
    admin_server = start_policy_server(db, openbao, TEST_POLICY)
    ai = RawClient(server.address, api_key_of(ROLE))
    admin = VaultClient(admin_server.address, api_key=ADMIN_KEY, purpose=TEST_PURPOSE)
    own_client = VaultClient(server.address, api_key=api_key_of(ROLE))
    tenant, other = f"ai-{uuid.uuid4().hex[:12]}", f"aio-{uuid.uuid4().hex[:12]}"
    try:
        plain = admin.create_record(tenant, SAMPLE).record_id
        consented = admin.create_record(tenant, SAMPLE).record_id
        admin.update_consent(tenant, consented, CONSENT_PURPOSES, expected_version=0, source="t")
        # values of its own: erasing a record tombstones every token of its values, and the
        # standalone tokens of SAMPLE's values must stay live
        erased = admin.create_record(tenant, sample_record(90_001)).record_id
        foreign_record = admin.create_record(other, SAMPLE).record_id
        links = {"standalone": "", "no-consent": plain, "consent": consented}
        labels, items = items_for("others", links, "others")
        others = dict(zip(labels, admin.tokenize(tenant, items), strict=True))
        labels, items = items_for("erased", {"erased": erased}, "erased")
        erased_tokens = dict(zip(labels, admin.tokenize(tenant, items), strict=True))
        admin.delete_record(tenant, erased)
        labels, items = items_for("own", links, owned_scope(ROLE, "own"))
        for cls in (FieldClass.CARD_NUMBER, FieldClass.PHONE, FieldClass.NATIONAL_ID):
            labels.append(f"own/{cls.value}/format_preserving/keep-last-four")
            items.append(
                TokenItem(CLASS_VALUE[cls], cls.value, "format_preserving", keep_last_four=True)
            )
        own = dict(zip(labels, own_client.tokenize(tenant, items), strict=True))
        labels, items = items_for("expired", {"standalone": "", "no-consent": plain}, "expired")
        expiring = [
            TokenItem(i.value, i.field_class, i.kind, i.scope, 3600, i.record_id) for i in items
        ]
        expired = dict(zip(labels, admin.tokenize(tenant, expiring), strict=True))
        [own_expired] = own_client.tokenize(
            tenant, [TokenItem(CLASS_VALUE[FieldClass.EMAIL], "email", ttl_seconds=3600)]
        )
        expired["own/email/random/expired"] = own_expired
        expire_tokens(db, tenant, list(expired.values()))
        foreign = admin.tokenize(
            other, [TokenItem(CLASS_VALUE[FieldClass.EMAIL], "email", k.value) for k in TokenKind]
        )
        unknown = {
            f"other-tenant/email/{k.value}": t for k, t in zip(TokenKind, foreign, strict=True)
        }
        unknown["crafted/email"] = crafted_token(FieldClass.EMAIL)
        unknown["crafted/email/upper"] = "tok_email_" + "A" * 22
        victim = own[f"own/email/{TokenKind.RANDOM.value}/standalone"]
        unknown["tampered/email"] = victim[:-1] + ("0" if victim[-1] != "0" else "1")
        # a surrogate of the shape of an own one that was never issued
        surrogate = own[f"own/email/{TokenKind.FORMAT_PRESERVING.value}/standalone"]
        unknown["made-up-surrogate/email"] = "q" + surrogate
        w = World(
            db=db,
            server=server,
            ai=ai,
            tenant=tenant,
            other_tenant=other,
            plain=plain,
            consented=consented,
            erased=erased,
            foreign_record=foreign_record,
            own=own,
            others=others,
            expired=expired,
            erased_tokens=erased_tokens,
            unknown=unknown,
        )
        issue_grants(w, server.address)
        yield w
    finally:
        ai.close()
        admin.close()
        own_client.close()
        admin_server.stop(grace=0)
        server.stop(grace=0)
        db.dispose()


# --- probes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """The status a probe must end with: code, reason code, and the field of a bad argument."""

    code: grpc.StatusCode
    reason: str = ""
    field: str | None = None

    @classmethod
    def of(cls, refusal: Refusal | None) -> Want:
        if refusal is None:
            return OK
        return cls(refusal.status, refusal.reason, refusal.field)


OK: Final = Want(grpc.StatusCode.OK)


def bad(field_name: str) -> Want:
    return Want(grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", field_name)


@dataclass
class Probe:
    label: str
    requests: list[Message]
    want: Want
    #: further checks of an allowed call's responses
    check: Callable[[list[Message]], None] | None = None


def policy_then(rpc: str, pc: PurposeCase, target: str, otherwise: Want = OK) -> Want:
    """The matrix's expectation for the call when the policy refuses it, else ``otherwise``
    (what the request's content leads to)."""
    refusal = expect(AI, RPC_BY_KEY[rpc], pc, target).refusal
    return Want.of(refusal) if refusal is not None else otherwise


def allowed_purpose() -> PurposeCase:
    """A permitted purpose that needs no consent (the first one), else the first permitted."""
    permitted = [pc for pc in purpose_cases(AI) if pc.kind == "permitted"]
    return next((pc for pc in permitted if not pc.consent_bound), permitted[0])


def get_record_probes(w: World) -> list[Probe]:
    probes: list[Probe] = []
    for scope in ("", "ai-view"):
        key = "GetRecord+token_scope" if scope else "GetRecord"
        for pc in purpose_cases(AI):
            rid = w.consented if pc.consent else w.plain
            exp = expect(AI, RPC_BY_KEY[key], pc, ALL)

            def check(rs: list[Message], exp_outputs: Any = exp.outputs) -> None:
                [r] = rs
                assert isinstance(r, records_pb2.GetRecordResponse)
                assert set(r.fields) == set(exp_outputs)
                for n, s in exp_outputs.items():
                    got = records_pb2.Output.Name(r.fields[n].output)
                    assert got == f"OUTPUT_{s.output.value.upper()}", f"{n}: {got}"

            probes.append(
                Probe(
                    f"{key}/{pc.label}",
                    [
                        records_pb2.GetRecordRequest(
                            tenant=w.tenant, record_id=rid, purpose=pc.purpose, token_scope=scope
                        )
                    ],
                    Want.of(exp.refusal),
                    check,
                )
            )
        pc = allowed_purpose()
        odd: list[tuple[str, str, Want]] = [
            ("erased-record", w.erased, Want(grpc.StatusCode.FAILED_PRECONDITION, "erased")),
            ("other-tenant's-record", w.foreign_record, Want(grpc.StatusCode.NOT_FOUND)),
            ("no-such-record", str(uuid.uuid4()), Want(grpc.StatusCode.NOT_FOUND)),
        ]
        odd += [
            (f"token-as-record-id/{label}", token, bad("record_id"))
            for label, token in (
                ("own", w.own["own/email/random/no-consent"]),
                ("others", w.others["others/email/deterministic/consent"]),
                ("surrogate", w.own["own/email/format_preserving/standalone"]),
                *w.unknown.items(),
            )
        ]
        for label, rid, otherwise in odd:
            probes.append(
                Probe(
                    f"{key}/{pc.label}/{label}",
                    [
                        records_pb2.GetRecordRequest(
                            tenant=w.tenant, record_id=rid, purpose=pc.purpose, token_scope=scope
                        )
                    ],
                    policy_then(key, pc, ALL, otherwise),
                )
            )
    return probes


def find_probes(w: World) -> list[Probe]:
    rpc = "FindRecords"

    def finds_both(rs: list[Message]) -> None:
        [r] = rs
        assert isinstance(r, records_pb2.FindRecordsResponse)
        assert {w.plain, w.consented} <= set(r.record_ids)

    def finds_none(rs: list[Message]) -> None:
        [r] = rs
        assert isinstance(r, records_pb2.FindRecordsResponse)
        assert not r.record_ids

    surrogate = w.own["own/email/format_preserving/standalone"]
    cases: list[tuple[str, dict[str, str], str, Want, Callable[[list[Message]], None] | None]] = [
        ("email", {"email": SAMPLE["email"]}, "email", OK, finds_both),
        ("surrogate-as-email", {"email": surrogate}, "email", OK, finds_none),
        (
            "token-as-email",
            {"email": w.others["others/email/random/consent"]},
            "email",
            bad("match.email"),
            None,
        ),
        (
            "other-tenant-token-as-email",
            {"email": w.unknown["other-tenant/email/random"]},
            "email",
            bad("match.email"),
            None,
        ),
    ]
    probes = []
    for label, match, target, otherwise, check in cases:
        want = policy_then(rpc, NO_PURPOSE_FIELD, target, otherwise)
        request = records_pb2.FindRecordsRequest(tenant=w.tenant, match=match)
        probes.append(Probe(f"{rpc}/{label}", [request], want, check if want == OK else None))
    return probes


def tokenize_request(tenant: str, items: Sequence[TokenItem]) -> tokens_pb2.TokenizeRequest:
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


def tokenize_batches(w: World) -> dict[str, tuple[list[list[TokenItem]], Want]]:
    """Batches of items (and how the call must end) that ai-pipeline tokenizes."""
    links = {"standalone": "", "no-consent": w.plain, "consent": w.consented}
    _, own = items_for("probe", links, owned_scope(ROLE, f"probe-{uuid.uuid4().hex[:8]}"))
    own += [
        TokenItem(CLASS_VALUE[c], c.value, "format_preserving", keep_last_four=True, ttl_seconds=60)
        for c in (FieldClass.CARD_NUMBER, FieldClass.PHONE, FieldClass.NATIONAL_ID)
    ]
    mine = owned_scope(ROLE, f"probe-{uuid.uuid4().hex[:8]}")
    tokens_as_values = [
        TokenItem(t, "free_text", kind, scope=mine)
        for t in (*w.live()[:3], *w.expired.values(), *w.unknown.values())
        for kind in ("random", "deterministic")
    ]
    surrogate = w.own["own/email/format_preserving/standalone"]
    tokens_as_values.append(TokenItem(surrogate, "email", "format_preserving"))
    email = CLASS_VALUE[FieldClass.EMAIL]
    rpc_ok = Want.of(expect(AI, RPC_BY_KEY["Tokenize"], NO_PURPOSE_FIELD, "email").refusal)

    def unless_refused(want: Want) -> Want:
        return rpc_ok if rpc_ok != OK else want

    half = len(own) // 2
    guesses = [TokenItem(CLASS_VALUE[c], c.value, "deterministic") for c in CLASSES]
    others = other_roles_scope(ROLE, f"probe-{uuid.uuid4().hex[:8]}")

    def in_scope(scope: str) -> list[TokenItem]:
        return [TokenItem(i.value, i.field_class, i.kind, scope=scope) for i in guesses]

    def scope_want(scope: str) -> Want:
        return unless_refused(Want.of(scope_refusal(AI, CLASSES, scope)))

    return {
        "own-values": ([own[:half], own[half:]], unless_refused(OK)),
        # deterministic tokens where other roles' tokens live: a guessing oracle
        "deterministic-in-another-role's-scope": ([in_scope(others)], scope_want(others)),
        "deterministic-in-the-default-scope": ([in_scope("")], scope_want("")),
        "tokens-as-values": ([tokens_as_values], unless_refused(OK)),
        "linked-to-erased-record": (
            [[TokenItem(email, "email", record_id=w.erased)]],
            unless_refused(Want(grpc.StatusCode.FAILED_PRECONDITION, "erased")),
        ),
        "linked-to-other-tenant's-record": (
            [[TokenItem(email, "email", record_id=w.foreign_record)]],
            unless_refused(Want(grpc.StatusCode.NOT_FOUND, "not_found")),
        ),
        "not-an-email": (
            [[TokenItem(bad_email(), "email", "format_preserving")]],
            unless_refused(bad("items[0].value")),
        ),
    }


def tokenize_probes(w: World, method: MethodDescriptor) -> list[Probe]:
    probes: list[Probe] = []
    for label, (batches, want) in tokenize_batches(w).items():
        n_items = sum(len(b) for b in batches)

        def check(rs: list[Message], n: int = n_items, nb: int = len(batches)) -> None:
            tokens = [
                t
                for r in rs
                for t in (
                    r.tokens
                    if isinstance(r, tokens_pb2.TokenizeResponse)
                    else r.batch.tokens
                    if isinstance(r, tokens_pb2.StreamTokenizeResponse) and r.HasField("batch")
                    else []
                )
            ]
            assert len(tokens) == n
            if isinstance(rs[-1], tokens_pb2.StreamTokenizeResponse):
                assert rs[-1].HasField("summary")
                assert (rs[-1].summary.batches, rs[-1].summary.values) == (nb, n)

        if method.client_streaming:
            probes.append(
                Probe(label, [tokenize_request(w.tenant, b) for b in batches], want, check)
            )
        else:
            items = [i for b in batches for i in b]
            probes.append(Probe(label, [tokenize_request(w.tenant, items)], want, check))
    return probes


def reveal_probes(w: World, method: MethodDescriptor) -> list[Probe]:
    tokens = w.every_token()
    half = len(tokens) // 2
    streams = method.client_streaming

    def requests(purpose: str, grant: str = "") -> list[Message]:
        chunks = [tokens[:half], tokens[half:]] if streams else [tokens]
        return [
            tokens_pb2.RevealRequest(tenant=w.tenant, tokens=c, purpose=purpose, grant=grant)
            for c in chunks
        ]

    probes = [
        Probe(
            f"no-grant/{pc.label}",
            requests(pc.purpose),
            Want.of(expect(AI, RPC_BY_KEY["Reveal"], pc, RECORD).refusal),
        )
        for pc in purpose_cases(AI)
    ]
    invalid = Want(grpc.StatusCode.PERMISSION_DENIED, "grant_invalid")
    for label, grant in w.grants.items():
        if label == "covers-nothing":
            continue
        probes.append(Probe(f"grant:{label}", requests("", grant), invalid))
    if "covers-nothing" in w.grants:
        grant = w.grants["covers-nothing"]
        other = next(p for p in sorted(POLICY.purposes) if p != w.grant_purpose)
        probes.append(
            Probe(
                f"grant:covers-nothing/purpose:{other}",
                requests(other, grant),
                Want(grpc.StatusCode.PERMISSION_DENIED, "purpose_not_allowed"),
            )
        )

        def none_revealed(rs: list[Message]) -> None:
            results = [
                x
                for r in rs
                for x in (
                    r.results
                    if isinstance(r, tokens_pb2.RevealResponse)
                    else r.batch.results
                    if isinstance(r, tokens_pb2.StreamRevealResponse) and r.HasField("batch")
                    else []
                )
            ]
            assert [x.token for x in results] == tokens
            for x in results:
                got = tokens_pb2.TokenError.Name(x.error)
                assert got == w.token_error(x.token), f"{x.token}: {got} ({x.reason})"
                assert not x.value

        # a grant lends only what its grantor holds: Reveal needs token.reveal in its role
        lends = Action.TOKEN_REVEAL in POLICY.roles[grantors()[0]].actions
        for purpose in ("", w.grant_purpose):
            probes.append(
                Probe(
                    f"grant:covers-nothing/purpose:{purpose or 'none'}",
                    requests(purpose, grant),
                    OK if lends else invalid,
                    none_revealed if lends else lambda rs: None,
                )
            )
    return probes


def tokenize_text_probes(w: World) -> list[Probe]:
    values = list(TEXT_VALUES.values())
    note = "Customer wrote: " + " / ".join(values) + " - call back."
    with_tokens = "Earlier: " + " ".join([*w.live()[:4], *w.unknown.values()])
    ok = policy_then("TokenizeText", NO_PURPOSE_FIELD, TEXT)

    def replaced_all(rs: list[Message]) -> None:
        [r] = rs
        assert isinstance(r, tokens_pb2.TokenizeTextResponse)
        [result] = r.results
        assert [s.field_class for s in result.spans] == [c.value for c in TEXT_VALUES]

    def request(text: str, scope: str) -> tokens_pb2.TokenizeTextRequest:
        return tokens_pb2.TokenizeTextRequest(tenant=w.tenant, texts=[text], scope=scope)

    scope = owned_scope(ROLE, f"chat-{uuid.uuid4().hex[:8]}")

    def in_scope(scope: str) -> Want:
        refusal = scope_refusal(AI, TEXT_VALUES, scope)
        return ok if ok != OK or refusal is None else Want.of(refusal)

    return [
        Probe("detected-values", [request(note, scope)], in_scope(scope), replaced_all),
        Probe("detected-values/tenant-scope", [request(note, "")], in_scope(""), replaced_all),
        Probe("tokens-in-text", [request(with_tokens, scope)], ok),
        Probe("bad-scope", [request(note, "not a scope!")], bad("scope")),
    ]


def reveal_text_probes(w: World, method: MethodDescriptor) -> list[Probe]:
    tokens = w.every_token()
    half = len(tokens) // 2
    chunks = [" ".join(tokens[:half]) + " ", " ".join(tokens[half:])]

    def requests(purpose: str, grant: str = "") -> list[Message]:
        if not method.client_streaming:
            text = "".join(chunks)
            return [
                tokens_pb2.RevealTextRequest(
                    tenant=w.tenant, text=text, purpose=purpose, grant=grant
                )
            ]
        first = tokens_pb2.RevealTextRequest(
            tenant=w.tenant, text=chunks[0], purpose=purpose, grant=grant
        )
        return [first, tokens_pb2.RevealTextRequest(text=chunks[1])]

    probes = [
        Probe(
            f"no-grant/{pc.label}",
            requests(pc.purpose),
            Want.of(expect(AI, RPC_BY_KEY["RevealText"], pc, RECORD).refusal),
        )
        for pc in purpose_cases(AI)
    ]
    invalid = Want(grpc.StatusCode.PERMISSION_DENIED, "grant_invalid")
    for label, grant in w.grants.items():
        if label != "covers-nothing":
            probes.append(Probe(f"grant:{label}", requests("", grant), invalid))
    if "covers-nothing" in w.grants:
        grant = w.grants["covers-nothing"]

        def nothing_replaced(rs: list[Message]) -> None:
            answers = [r for r in rs if isinstance(r, tokens_pb2.RevealTextResponse)]
            assert "".join(r.text for r in answers) == "".join(chunks)
            for r in answers:
                for t in r.tokens:
                    got = tokens_pb2.TokenError.Name(t.error)
                    assert got == w.token_error(t.token), f"{t.token}: {got} ({t.reason})"

        for purpose in ("", w.grant_purpose):
            probes.append(
                Probe(
                    f"grant:covers-nothing/purpose:{purpose or 'none'}",
                    requests(purpose, grant),
                    OK,
                    nothing_replaced,
                )
            )
    return probes


def issue_grant_probes(w: World) -> list[Probe]:
    return [
        Probe(
            f"to-itself/{pc.label}",
            [
                tokens_pb2.IssueGrantRequest(
                    tenant=w.tenant,
                    grantee=PRINCIPAL,
                    record_ids=[w.plain, w.consented],
                    field_classes=[c.value for c in CLASSES],
                    purpose=pc.purpose,
                    ttl_seconds=600,
                    max_uses=100,
                )
            ],
            Want.of(expect(AI, RPC_BY_KEY["IssueGrant"], pc, "records").refusal),
            lambda rs: None,
        )
        for pc in purpose_cases(AI)
    ]


def revoke_grant_probes(w: World) -> list[Probe]:
    """RevokeGrant of a grant another role issued to ai-pipeline: it holds no grant.issue."""
    grant = w.grants.get("covers-nothing", w.grants["made-up"])
    request = tokens_pb2.RevokeGrantRequest(tenant=w.tenant, grant=grant)
    refusal = expect(AI, RPC_BY_KEY["RevokeGrant"], NO_PURPOSE_FIELD, "record").refusal
    return [Probe("its-own-grant", [request], Want.of(refusal), lambda rs: None)]


def records_probes(w: World, name: str) -> list[Probe]:
    """The Records and Audit RPCs that take a record and no token: valid requests."""
    fields = dict(SAMPLE)
    scratch = w.plain
    single: dict[str, tuple[Message, str]] = {
        "CreateRecord": (records_pb2.CreateRecordRequest(tenant=w.tenant, fields=fields), ALL),
        "BatchCreateRecords": (
            records_pb2.BatchCreateRecordsRequest(
                tenant=w.tenant,
                records=[records_pb2.RecordInput(fields=fields) for _ in range(2)],
            ),
            ALL,
        ),
        "UpdateRecord": (
            records_pb2.UpdateRecordRequest(
                tenant=w.tenant, record_id=scratch, expected_version=1, set_fields=fields
            ),
            ALL,
        ),
        "DeleteRecord": (
            records_pb2.DeleteRecordRequest(tenant=w.tenant, record_id=scratch),
            RECORD,
        ),
        "UpdateConsent": (
            records_pb2.UpdateConsentRequest(
                tenant=w.tenant,
                record_id=scratch,
                purposes=list(CONSENT_PURPOSES),
                expected_version=0,
                source="ai",
            ),
            RECORD,
        ),
    }
    if name in single:
        request, target = single[name]
        want = policy_then(name, NO_PURPOSE_FIELD, target)
        # none of these may be allowed: they would change the records the other probes read
        assert want != OK, f"{ROLE} may call {name}: give it a record of its own"
        return [Probe(name, [request], want)]
    if name == "GetConsent":
        return [
            Probe(
                f"GetConsent/{label}",
                [records_pb2.GetConsentRequest(tenant=w.tenant, record_id=rid)],
                policy_then(name, NO_PURPOSE_FIELD, RECORD),
            )
            for label, rid in (("no-consent", w.plain), ("consent", w.consented))
        ]
    if name == "ExportCustomerData":
        return [
            Probe(
                f"{name}/{pc.label}",
                [
                    records_pb2.ExportCustomerDataRequest(
                        tenant=w.tenant,
                        record_id=w.consented if pc.consent else w.plain,
                        purpose=pc.purpose,
                    )
                ],
                policy_then(name, pc, ALL),
            )
            for pc in purpose_cases(AI)
        ]
    raise AssertionError(f"no probes for {name}")


def query_access_probes(w: World) -> list[Probe]:
    from vault.v1 import audit_pb2

    return [
        Probe(
            f"QueryAccess/{pc.label}",
            [audit_pb2.QueryAccessRequest(tenant=w.tenant, record_id=w.plain, purpose=pc.purpose)],
            policy_then("QueryAccess", pc, RECORD),
        )
        for pc in purpose_cases(AI)
    ]


#: RPC full name -> the probes ai-pipeline sends to it.
PROBES: Final[dict[str, Callable[[World, MethodDescriptor], list[Probe]]]] = {
    "vault.v1.Records.CreateRecord": lambda w, m: records_probes(w, "CreateRecord"),
    "vault.v1.Records.BatchCreateRecords": lambda w, m: records_probes(w, "BatchCreateRecords"),
    "vault.v1.Records.GetRecord": lambda w, m: get_record_probes(w),
    "vault.v1.Records.UpdateRecord": lambda w, m: records_probes(w, "UpdateRecord"),
    "vault.v1.Records.DeleteRecord": lambda w, m: records_probes(w, "DeleteRecord"),
    "vault.v1.Records.FindRecords": lambda w, m: find_probes(w),
    "vault.v1.Records.UpdateConsent": lambda w, m: records_probes(w, "UpdateConsent"),
    "vault.v1.Records.GetConsent": lambda w, m: records_probes(w, "GetConsent"),
    "vault.v1.Records.ExportCustomerData": lambda w, m: records_probes(w, "ExportCustomerData"),
    "vault.v1.Audit.QueryAccess": lambda w, m: query_access_probes(w),
    "vault.v1.Tokens.Tokenize": tokenize_probes,
    "vault.v1.Tokens.StreamTokenize": tokenize_probes,
    "vault.v1.Tokens.Reveal": reveal_probes,
    "vault.v1.Tokens.StreamReveal": reveal_probes,
    "vault.v1.Tokens.IssueGrant": lambda w, m: issue_grant_probes(w),
    "vault.v1.Tokens.RevokeGrant": lambda w, m: revoke_grant_probes(w),
    "vault.v1.Tokens.TokenizeText": lambda w, m: tokenize_text_probes(w),
    "vault.v1.Tokens.RevealText": reveal_text_probes,
    "vault.v1.Tokens.StreamRevealText": reveal_text_probes,
}


# --- the tests -----------------------------------------------------------------------------------


def test_every_rpc_has_probes() -> None:
    """A new RPC fails here until it gets probes (and a removed one until its probes go)."""
    assert {m.full_name for m in METHODS} == set(PROBES)


def test_the_server_serves_only_probed_services(world: World) -> None:
    """Every service the server lists by reflection is probed here or carries no data."""
    channel = grpc.insecure_channel(world.server.address)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
    finally:
        channel.close()
    served = {s.name for s in answer.list_services_response.service}
    probed = {m.containing_service.full_name for m in METHODS}
    assert served - INFRASTRUCTURE == probed


@pytest.mark.parametrize("method", METHODS, ids=[m.full_name for m in METHODS])
def test_ai_pipeline_gets_no_value_through(world: World, method: MethodDescriptor) -> None:
    make = PROBES.get(method.full_name)
    assert make is not None, f"{method.full_name} has no probes: add them to PROBES"
    probes = make(world, method)
    assert probes
    for probe in probes:
        answer = world.ai.call(method, probe.requests)
        where = f"{method.name} {probe.label}"
        texts = [s for r in answer.responses for s in strings_of(r)] + [answer.details]
        leaked = found_in(texts)
        assert not leaked, f"{where}: the response holds {len(leaked)} values or masks"
        forms = [o for r in answer.responses for o in revealing_outputs(r)]
        assert not forms, f"{where}: outputs {forms}"
        want = probe.want
        assert answer.code == want.code, (
            f"{where}: expected {want.code.name} ({want.reason}), got {answer.code.name}: "
            f"{answer.details}"
        )
        if want.code != grpc.StatusCode.OK:
            reason, _, rest = answer.details.partition(": ")
            if want.reason:
                assert reason == want.reason, f"{where}: reason {reason!r}, not {want.reason!r}"
            if want.field is not None:
                assert rest.partition(": ")[0] == want.field, f"{where}: {answer.details}"
        elif probe.check is not None:
            probe.check(answer.responses)


def test_ai_pipeline_cannot_recover_a_value_by_guessing_deterministic_tokens(world: World) -> None:
    """No plaintext by combining RPCs either. A tokenized view (GetRecord with ``token_scope``)
    gives deterministic tokens of a scope the caller picks, and Tokenize gives the caller the
    deterministic token of any value it picks in that scope: a role with both can test
    guesses. For a date of birth, one Tokenize call of a decade's dates finds the record's.

    (Fails while the tokens of a view equal the caller's own Tokenize tokens of the scope.)"""
    cls = FieldClass.DATE_OF_BIRTH
    name = next(n for n in FIELDS if CLASS_OF[n] is cls)
    pc = allowed_purpose()
    if shown(AI, cls, pc.purpose).output is not Output.TOKEN:
        return  # the view shows no token of it: nothing to compare guesses with
    year = int(CANONICAL[name][:4])
    start = dt.date(year - year % 10, 1, 1)
    guesses = [
        (start + dt.timedelta(days=i)).isoformat()
        for i in range((dt.date(start.year + 10, 1, 1) - start).days)
    ]
    scope = owned_scope(ROLE, f"guess-{uuid.uuid4().hex[:8]}")
    method = tokens_pb2.DESCRIPTOR.services_by_name["Tokens"].methods_by_name["Tokenize"]
    items = [TokenItem(g, cls.value, "deterministic", scope=scope) for g in guesses]
    tokenized = world.ai.call(method, [tokenize_request(world.tenant, items)])
    if tokenized.code != grpc.StatusCode.OK:
        return  # the role cannot make the tokens to compare with
    [response] = tokenized.responses
    assert isinstance(response, tokens_pb2.TokenizeResponse)
    guess_of = dict(zip(response.tokens, guesses, strict=True))
    get = records_pb2.DESCRIPTOR.services_by_name["Records"].methods_by_name["GetRecord"]
    view = world.ai.call(
        get,
        [
            records_pb2.GetRecordRequest(
                tenant=world.tenant,
                record_id=world.plain,
                fields=[name],
                purpose=pc.purpose,
                token_scope=scope,
            )
        ],
    )
    assert view.code == grpc.StatusCode.OK, view.details
    [record] = view.responses
    assert isinstance(record, records_pb2.GetRecordResponse)
    recovered = guess_of.get(record.fields[name].value)
    assert recovered is None, (
        f"{ROLE} recovered the record's {cls.value} from {len(guesses)} guesses "
        f"(Tokenize deterministic + GetRecord token_scope={scope!r})"
    )


def test_the_grants_tried_are_real_ones(world: World) -> None:
    """The grants the reveals try were issued by the policy's grantor role (so their refusal
    is the grant check's, not a typo's), and ai-pipeline's own tokens include surrogates that
    keep the last four digits."""
    if grantors():
        for label in ("another-principal's", "expired", "used-up", "covers-nothing"):
            assert GRANT_RE.fullmatch(world.grants[label]), label
    kept = [t for label, t in world.own.items() if label.endswith("keep-last-four")]
    assert len(kept) == 3
    assert all(not t.startswith("tok_") for t in kept)
