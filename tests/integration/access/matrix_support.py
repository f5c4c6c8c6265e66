"""The authorization matrix of the sample policy, generated from the policy file itself.

Nothing here is written per role: every expectation is computed from
``deploy/policy/sample-policy.yaml`` (loaded with :func:`vault.policy.load_policy`) and the
decision rules of ``deploy/policy/README.md``, so the matrix follows edits of the policy.

- :data:`RPCS`: every RPC of ``vault.v1.Records`` and ``vault.v1.Audit``, its action and how it
  treats a purpose (taken from the use cases in ``vault/service/records.py``);
- :func:`purpose_cases`: per role, each permitted purpose (consent-bound ones with and without
  the customer's consent), each forbidden purpose, an unknown purpose and no purpose;
- :func:`expect`: the exact status, reason and per-field output of one call;
- :data:`CASES`: role x RPC x purpose x target (a field class, the whole record, ...);
- :class:`RecordingClient`: the SDK, keeping the gRPC status and the raw response of each call;
- :func:`leaks`: which customer values a response or an error message contains.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from tests.support import SAMPLE, SAMPLE_POLICY
from vault import errors
from vault.client import VaultClient
from vault.policy import (
    FIELD_NOT_ALLOWED,
    FIELD_NOT_ALLOWED_FOR_PURPOSE,
    PURPOSE_MISSING,
    Action,
    Output,
    Role,
    load_policy,
    mask,
)
from vault.schema import FieldClass, load_schema

POLICY: Final = load_policy(SAMPLE_POLICY)
SCHEMA: Final = load_schema()

#: The fields of the sample record, in schema order, and their canonical forms and classes.
FIELDS: Final = tuple(name for name in SCHEMA.fields if name in SAMPLE)
CANONICAL: Final = SCHEMA.validate({name: SAMPLE[name] for name in FIELDS})
CLASS_OF: Final = {name: SCHEMA.spec(name).field_class for name in FIELDS}
SEARCHABLE: Final = tuple(name for name in FIELDS if SCHEMA.spec(name).searchable)
#: The purposes a customer can consent to; the consented record carries all of them.
CONSENT_PURPOSES: Final = tuple(
    sorted(name for name, p in POLICY.purposes.items() if p.consent_required)
)
UNKNOWN_PURPOSE: Final = "no-such-purpose"
assert UNKNOWN_PURPOSE not in POLICY.purposes

REVEALING: Final = frozenset({Output.PLAIN, Output.MASKED})
#: The role that creates the matrix's records and sets their consent.
WRITER: Final = min(
    name
    for name, role in POLICY.roles.items()
    if {Action.RECORD_WRITE, Action.CONSENT_WRITE} <= role.actions
)

# Targets besides a single field.
ALL: Final = "all"  # the whole record
RECORD: Final = "record"  # an RPC whose result does not depend on fields
SEALED: Final = "sealed"  # an export sealed to a recipient's public key


class PurposeRule(enum.Enum):
    """How an RPC treats the caller's purpose (see the use cases in vault/service/records.py)."""

    NONE = "the request has no purpose field"
    IF_MAY_REVEAL = "required when the role could get plain or masked values, else optional"
    REQUIRED = "always required"
    OPTIONAL = "optional, checked when given"


@dataclass(frozen=True)
class Rpc:
    name: str
    service: str
    action: Action
    purpose: PurposeRule
    #: per-field targets (each field class, plus the whole record)
    per_field: bool = False
    #: returns field values in the policy's output forms
    reveals: bool = False
    #: changes the record it is called on (each allowed call gets a fresh record)
    mutates: bool = False


RPCS: Final = (
    Rpc("CreateRecord", "Records", Action.RECORD_WRITE, PurposeRule.NONE, per_field=True),
    Rpc("BatchCreateRecords", "Records", Action.RECORD_WRITE, PurposeRule.NONE, per_field=True),
    Rpc(
        "GetRecord",
        "Records",
        Action.RECORD_READ,
        PurposeRule.IF_MAY_REVEAL,
        per_field=True,
        reveals=True,
    ),
    Rpc(
        "UpdateRecord",
        "Records",
        Action.RECORD_WRITE,
        PurposeRule.NONE,
        per_field=True,
        mutates=True,
    ),
    Rpc("DeleteRecord", "Records", Action.RECORD_ERASE, PurposeRule.NONE, mutates=True),
    Rpc("FindRecords", "Records", Action.RECORD_FIND, PurposeRule.NONE, per_field=True),
    Rpc("UpdateConsent", "Records", Action.CONSENT_WRITE, PurposeRule.NONE, mutates=True),
    Rpc("GetConsent", "Records", Action.RECORD_READ, PurposeRule.NONE),
    Rpc(
        "ExportCustomerData",
        "Records",
        Action.EXPORT,
        PurposeRule.REQUIRED,
        per_field=True,
        reveals=True,
    ),
    Rpc("QueryAccess", "Audit", Action.AUDIT_READ, PurposeRule.OPTIONAL),
)
RPC_BY_NAME: Final = {rpc.name: rpc for rpc in RPCS}


# --- purposes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurposeCase:
    """A purpose as one call states it."""

    label: str
    kind: str  # permitted | forbidden | unknown | missing | none
    purpose: str = ""  # what the call sends ("" for none)
    consent: bool = False  # read the record that carries the customer's consent
    whole_record_only: bool = False  # not repeated per field class

    @property
    def consent_bound(self) -> bool:
        found = POLICY.purpose(self.purpose) if self.kind == "permitted" else None
        return found is not None and found.consent_required


NO_PURPOSE_FIELD: Final = PurposeCase("none", "none")


def purpose_cases(role: Role) -> list[PurposeCase]:
    """Every permitted purpose of the role (consent-bound ones on a record with the customer's
    consent and on one without), every purpose of the policy the role lacks, an unknown
    purpose, and no purpose at all. Non-consent-bound purposes come first."""
    permitted = sorted(role.purposes, key=lambda p: (POLICY.purposes[p].consent_required, p))
    cases: list[PurposeCase] = []
    for name in permitted:
        if POLICY.purposes[name].consent_required:
            cases.append(PurposeCase(f"{name}+consent", "permitted", name, consent=True))
            cases.append(PurposeCase(f"{name}+no-consent", "permitted", name, consent=False))
        else:
            cases.append(PurposeCase(name, "permitted", name))
    # Every purpose the role lacks; the first one also per field class.
    for i, name in enumerate(sorted(set(POLICY.purposes) - role.purposes)):
        cases.append(PurposeCase(f"forbidden:{name}", "forbidden", name, whole_record_only=i > 0))
    cases.append(PurposeCase(f"unknown:{UNKNOWN_PURPOSE}", "unknown", UNKNOWN_PURPOSE))
    cases.append(PurposeCase("missing", "missing", ""))
    return cases


def writer_purpose() -> str:
    """A purpose under which the writer role may read (for checks made as the writer)."""
    role = POLICY.roles[WRITER]
    return next(pc.purpose for pc in purpose_cases(role) if pc.kind == "permitted")


# --- expectations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """The exact error of a call: SDK class, gRPC status, reason code, field (InvalidInput)."""

    error: type[errors.VaultServiceError]
    status: grpc.StatusCode
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        where = f" on {self.field!r}" if self.field else ""
        return f"{self.error.__name__} ({self.status.name}, {self.reason}{where})"


@dataclass(frozen=True)
class Shown:
    """What one field comes back as: output form and reason code."""

    output: Output
    reason: str = ""


@dataclass(frozen=True)
class Expect:
    refusal: Refusal | None = None
    #: for revealing RPCs: field name -> output, for every field the call returns
    outputs: Mapping[str, Shown] = field(default_factory=dict)

    @property
    def plain_values(self) -> int:
        """Plaintext values the call takes from the role's rate limit."""
        if self.refusal is not None:
            return 0
        return sum(1 for s in self.outputs.values() if s.output is Output.PLAIN)

    def __str__(self) -> str:
        if self.refusal is not None:
            return str(self.refusal)
        forms = ", ".join(f"{n}={s.output.value}" for n, s in self.outputs.items())
        return f"OK ({forms})" if forms else "OK"


def action_denied() -> Refusal:
    return Refusal(errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "action_not_allowed")


def purpose_refusal(kind: str) -> Refusal:
    if kind == "forbidden":
        return Refusal(
            errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "purpose_not_allowed"
        )
    return Refusal(
        errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", "purpose"
    )


def shown(role: Role, field_class: FieldClass, purpose: str | None) -> Shown:
    """README "Outputs" and "No purpose, no plaintext", from the role's table."""
    base = role.outputs[field_class]
    output = role.output(field_class, purpose)
    if output is Output.OMIT:
        return Shown(
            Output.OMIT,
            FIELD_NOT_ALLOWED if base is Output.OMIT else FIELD_NOT_ALLOWED_FOR_PURPOSE,
        )
    if purpose is None and output in REVEALING:
        return Shown(Output.TOKEN, PURPOSE_MISSING)
    return Shown(output)


def expect(role: Role, rpc: Rpc, pc: PurposeCase, target: str) -> Expect:
    """The outcome the policy prescribes for one call. Checks run in the README's order:
    principal, action, purpose, then consent (any read for a consent-bound purpose: even
    tokens of a customer who did not consent must not flow, e.g. into a training set)."""
    if rpc.action not in role.actions:
        return Expect(action_denied())
    if rpc.purpose is not PurposeRule.NONE:
        required = rpc.purpose is PurposeRule.REQUIRED or (
            rpc.purpose is PurposeRule.IF_MAY_REVEAL and role.may_reveal
        )
        if pc.kind in ("forbidden", "unknown") or (pc.kind == "missing" and required):
            return Expect(purpose_refusal(pc.kind))
    if rpc.name == "FindRecords" and target in FIELDS and target not in SEARCHABLE:
        return Expect(
            Refusal(
                errors.InvalidInput,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid_argument",
                f"match.{target}",
            )
        )
    if not rpc.reveals:
        return Expect()
    purpose = pc.purpose if pc.kind == "permitted" else None
    # GetRecord returns the fields asked for; an export always covers the whole record.
    names = [target] if rpc.name == "GetRecord" and target in FIELDS else list(FIELDS)
    outputs = {name: shown(role, CLASS_OF[name], purpose) for name in names}
    if pc.consent_bound and not pc.consent:
        return Expect(
            Refusal(errors.ConsentRequired, grpc.StatusCode.FAILED_PRECONDITION, "consent_required")
        )
    return Expect(outputs=outputs)


def target_label(target: str) -> str:
    """A field's class (unique in the default schema), else the target's own name."""
    if target in FIELDS:
        classes = [CLASS_OF[name] for name in FIELDS]
        cls = CLASS_OF[target]
        return cls.value if classes.count(cls) == 1 else f"{cls.value}:{target}"
    return target


@dataclass(frozen=True)
class Case:
    role: str
    rpc: Rpc
    purpose: PurposeCase
    target: str
    expect: Expect

    @property
    def id(self) -> str:
        return f"{self.role}-{self.rpc.name}-{self.purpose.label}-{target_label(self.target)}"

    @property
    def call_key(self) -> tuple[str, ...]:
        """Cases with the same key share one call (an export serves all its field cases)."""
        if self.rpc.name == "ExportCustomerData" and self.target != SEALED:
            return (self.role, self.rpc.name, self.purpose.label)
        return (self.role, self.rpc.name, self.purpose.label, self.target)

    @property
    def probes_as_writer(self) -> bool:
        """A refused change is checked as the writer: the record must be unchanged."""
        return self.rpc.mutates and self.expect.refusal is not None


def _targets(role: Role, rpc: Rpc, pc: PurposeCase) -> list[str]:
    if not rpc.per_field:
        return [RECORD]
    if pc.whole_record_only:
        return [RECORD] if rpc.name == "ExportCustomerData" else [ALL]
    if rpc.name == "ExportCustomerData":
        # One export serves every field case; a refused export is one case.
        if expect(role, rpc, pc, ALL).refusal is not None:
            return [RECORD]
        return [*FIELDS, ALL, SEALED]
    return [*FIELDS, ALL]


def generate_cases() -> list[Case]:
    cases: list[Case] = []
    for role_name in sorted(POLICY.roles):
        role = POLICY.roles[role_name]
        for rpc in RPCS:
            pcs = [NO_PURPOSE_FIELD] if rpc.purpose is PurposeRule.NONE else purpose_cases(role)
            for pc in pcs:
                for target in _targets(role, rpc, pc):
                    cases.append(Case(role_name, rpc, pc, target, expect(role, rpc, pc, target)))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


CASES: Final = generate_cases()


def plaintext_budget(cases: Iterable[Case]) -> dict[str, int]:
    """Plaintext values each role gets in one run of the cases (per database)."""
    writer_probe = writer_probe_field()
    probe_cost = int(
        shown(POLICY.roles[WRITER], CLASS_OF[writer_probe], writer_purpose()).output is Output.PLAIN
    )
    calls: dict[tuple[str, ...], Case] = {}
    for case in cases:
        calls.setdefault(case.call_key, case)
    budget = dict.fromkeys(POLICY.roles, 0)
    for case in calls.values():
        budget[case.role] += case.expect.plain_values
    for case in cases:
        if case.probes_as_writer:
            budget[WRITER] += probe_cost
    return budget


def writer_probe_field() -> str:
    """A field the writer reads to check a record's version: one that costs no plaintext if
    the policy allows (masked, token or omit)."""
    role = POLICY.roles[WRITER]
    purpose = writer_purpose()
    for name in FIELDS:
        if shown(role, CLASS_OF[name], purpose).output is not Output.PLAIN:
            return name
    return FIELDS[0]


def expected_value(name: str, s: Shown, tokens: Mapping[str, str]) -> str:
    """The exact value of a field shown as ``s``; ``tokens``: what CreateRecord returned."""
    canonical = CANONICAL[name]
    if s.output is Output.PLAIN:
        return canonical
    if s.output is Output.MASKED:
        return mask(CLASS_OF[name], canonical)
    if s.output is Output.TOKEN:
        return tokens[name]
    return ""


# --- calls ---------------------------------------------------------------------------------------


class RecordingClient(VaultClient):
    """The SDK, also keeping the gRPC status and the raw response message of the last call."""

    last_status: grpc.StatusCode | None = None
    last_response: Any = None

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        self.last_status = None
        self.last_response = None
        try:
            response = super()._call(method, request, timeout)
        except errors.VaultServiceError as exc:
            # The SDK raises from the grpc.RpcError (``from None`` keeps it as __context__).
            rpc_error = exc.__context__
            assert isinstance(rpc_error, grpc.RpcError), "SDK error without its RpcError"
            self.last_status = rpc_error.code()
            raise
        self.last_status = grpc.StatusCode.OK
        self.last_response = response
        return response


@dataclass
class Outcome:
    result: Any = None
    error: errors.VaultServiceError | None = None
    status: grpc.StatusCode | None = None
    response: Any = None  # the raw protobuf response

    @property
    def raw(self) -> bytes:
        return self.response.SerializeToString() if self.response is not None else b""

    def text(self) -> str:
        """Everything a caller received, as text: raw bytes, SDK objects, error message."""
        parts = [self.raw.decode("utf-8", "replace"), repr(to_plain(self.result))]
        if self.error is not None:
            parts.append(str(self.error))
        return "\n".join(parts)

    def describe(self) -> str:
        if self.error is not None:
            name = self.status.name if self.status else "?"
            return f"{type(self.error).__name__} ({name}, {self.error.reason}): {self.error}"
        return f"OK ({self.status.name if self.status else '?'})"


def call(client: RecordingClient, fn: Callable[[], Any]) -> Outcome:
    try:
        result = fn()
    except errors.VaultServiceError as exc:
        return Outcome(error=exc, status=client.last_status)
    return Outcome(result=result, status=client.last_status, response=client.last_response)


def to_plain(value: Any) -> Any:
    """SDK results as plain data, including fields hidden from repr (FieldValue.value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# --- leak scanning -------------------------------------------------------------------------------


def value_needles(names: Iterable[str] = FIELDS) -> set[str]:
    """The raw and canonical values of these fields."""
    out: set[str] = set()
    for name in names:
        out.add(SAMPLE[name])
        out.add(CANONICAL[name])
    return out


_FRAGMENT_RE: Final = re.compile(r"[A-Za-z0-9]{6,}")


def strict_needles() -> set[str]:
    """For a never_plaintext role: whole values, their masks, the mask bullet and redaction
    marker, and every run of 6+ letters or digits of a value (a name, a card's digits)."""
    out = value_needles()
    for name in FIELDS:
        out.add(mask(CLASS_OF[name], CANONICAL[name]))
        for value in (SAMPLE[name], CANONICAL[name]):
            out.update(_FRAGMENT_RE.findall(value))
    out.update({"\u2022", "[redacted"})
    return out


def leaks(text: str, needles: Iterable[str], *, exact_case: Iterable[str] = ()) -> list[str]:
    """The needles found in ``text``: case-insensitively, except those in ``exact_case``."""
    folded = text.casefold()
    exact = set(exact_case)
    found = []
    for needle in sorted(set(needles)):
        hit = needle in text if needle in exact else needle.casefold() in folded
        if hit:
            found.append(needle)
    return found


def strict_leaks(text: str) -> list[str]:
    whole = value_needles()
    return leaks(text, strict_needles(), exact_case=strict_needles() - whole)


def cases_of(role: str | None = None, rpc: str | None = None) -> list[Case]:
    return [
        c for c in CASES if (role is None or c.role == role) and (rpc is None or c.rpc.name == rpc)
    ]


def roles_where(predicate: Callable[[Role], bool]) -> list[str]:
    return sorted(name for name, role in POLICY.roles.items() if predicate(role))


def sorted_tuple(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(values))
