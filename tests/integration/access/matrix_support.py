"""The authorization matrix of the sample policy, generated from the policy file itself.

Nothing here is written per role: every expectation is computed from
``deploy/policy/sample-policy.yaml`` (loaded with :func:`vault.policy.load_policy`) and the
decision rules of ``deploy/policy/README.md``, so the matrix follows edits of the policy.

- :data:`RPCS`: every RPC of ``vault.v1.Records``, ``vault.v1.Audit`` and ``vault.v1.Tokens``
  (plus ``GetRecord`` with a ``token_scope``), its action and how it treats a purpose (taken
  from the use cases in ``vault/service/records.py``, ``tokens.py`` and ``text.py``);
- :func:`purpose_cases`: per role, each permitted purpose (consent-bound ones with and without
  the customer's consent), each forbidden purpose, an unknown purpose and no purpose;
- :func:`expect`: the exact status, reason and per-field (or, for reveals, per-token) output of
  one call;
- :data:`TOKEN_SPECS`: the tokens every reveal sends: each field class x token kind, standalone
  and linked to a record (with and without consent), expired, erased, and unknown ones (another
  tenant's, crafted, tampered, malformed); :func:`token_shown` is what the policy gives each,
  :func:`reveal_batches` cuts a reveal into calls that each stay under the role's limits (text
  reveals send only the ``tok_`` tokens a text can hold);
- :data:`CASES`: role x RPC x purpose x target (a field class, the whole record, ...);
- :class:`RecordingClient`: the SDK, keeping the gRPC status and the raw response of each call
  (streams included);
- :func:`leaks`: which customer values a response or an error message contains.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import itertools
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import grpc

import vault.client._channel
from tests.support import (
    SAMPLE,
    SAMPLE_POLICY,
    SESSION_AUDIT_SINKS,
    authenticator,
    make_wrapper,
)
from vault import errors
from vault.api import RunningServer, start_server
from vault.audit import AuditLog, MemoryCheckpointStore
from vault.client import VaultClient, _calls
from vault.crypto._surrogates import EMAIL_DOMAIN as SURROGATE_EMAIL_DOMAIN
from vault.keys import KeyManager
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.policy import (
    FIELD_NOT_ALLOWED,
    FIELD_NOT_ALLOWED_FOR_PURPOSE,
    PURPOSE_MISSING,
    Action,
    Output,
    PolicyHolder,
    Role,
    load_policy,
    mask,
)
from vault.schema import FieldClass, load_schema
from vault.service import Access, Core, RecordsService, Services
from vault.service._normal import canonical_or_none
from vault.service.tokens import FPE_CLASSES, TokenKind
from vault.storage import Database
from vault.text import TextScanner, default_detectors

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
    """How an RPC treats the caller's purpose (see the use cases in vault/service/)."""

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
    #: per-class targets of the Tokens service (each field class, plus its own error targets)
    per_class: bool = False
    #: a client- and server-streaming RPC (batches, then a summary)
    streams: bool = False
    #: a second way to call the same RPC (``token_scope``: GetRecord with a token scope)
    variant: str = ""
    #: works on free text (TokenizeText, RevealText): only ``tok_`` tokens are found in text
    text: bool = False

    @property
    def key(self) -> str:
        """The RPC's name, with its variant: unique in :data:`RPCS`."""
        return f"{self.name}+{self.variant}" if self.variant else self.name

    @property
    def tokenizes(self) -> bool:
        return self.name in ("Tokenize", "StreamTokenize")


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
        "GetRecord",
        "Records",
        Action.RECORD_READ,
        PurposeRule.IF_MAY_REVEAL,
        per_field=True,
        reveals=True,
        variant="token_scope",
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
    Rpc("Tokenize", "Tokens", Action.TOKEN_CREATE, PurposeRule.NONE, per_class=True),
    Rpc(
        "StreamTokenize",
        "Tokens",
        Action.TOKEN_CREATE,
        PurposeRule.NONE,
        per_class=True,
        streams=True,
    ),
    Rpc(
        "Reveal",
        "Tokens",
        Action.TOKEN_REVEAL,
        PurposeRule.REQUIRED,
        per_class=True,
        reveals=True,
    ),
    Rpc(
        "StreamReveal",
        "Tokens",
        Action.TOKEN_REVEAL,
        PurposeRule.REQUIRED,
        per_class=True,
        reveals=True,
        streams=True,
    ),
    Rpc("IssueGrant", "Tokens", Action.GRANT_ISSUE, PurposeRule.REQUIRED),
    Rpc("RevokeGrant", "Tokens", Action.GRANT_ISSUE, PurposeRule.NONE),
    Rpc("TokenizeText", "Tokens", Action.TOKEN_CREATE, PurposeRule.NONE, text=True),
    Rpc(
        "RevealText",
        "Tokens",
        Action.TEXT_REVEAL,
        PurposeRule.REQUIRED,
        per_class=True,
        reveals=True,
        text=True,
    ),
    Rpc(
        "StreamRevealText",
        "Tokens",
        Action.TEXT_REVEAL,
        PurposeRule.REQUIRED,
        per_class=True,
        reveals=True,
        streams=True,
        text=True,
    ),
)
RPC_BY_KEY: Final = {rpc.key: rpc for rpc in RPCS}
#: The scope of the tokenized record views (GetRecord with ``token_scope``).
VIEW_SCOPE: Final = "matrix-view"


# --- tokens ------------------------------------------------------------------------------------

#: Every field class: the Tokens RPCs take any of them, not only the sample record's.
CLASSES: Final = tuple(FieldClass)
#: Values for the classes the sample record has no field of.
EXTRA_VALUES: Final = {FieldClass.IP_ADDRESS: "198.18.7.21"}


def _class_values() -> dict[FieldClass, str]:
    """A value per class, as a caller sends it: the sample record's (not canonicalized), else
    :data:`EXTRA_VALUES`."""
    out: dict[FieldClass, str] = {}
    for name in FIELDS:
        out.setdefault(CLASS_OF[name], SAMPLE[name])
    for cls, value in EXTRA_VALUES.items():
        out.setdefault(cls, value)
    missing = sorted(c.value for c in set(CLASSES) - set(out))
    assert not missing, f"no value to tokenize for {missing}: add one to EXTRA_VALUES"
    return out


#: What the matrix tokenizes per class, and its canonical form (what a mask is made of).
CLASS_VALUE: Final = _class_values()
CLASS_CANONICAL: Final = {c: canonical_or_none(c, v) or "" for c, v in CLASS_VALUE.items()}
assert all(CLASS_CANONICAL.values()), "every value to tokenize must be valid for its class"


def kinds_of(cls: FieldClass) -> tuple[TokenKind, ...]:
    """The token kinds a class can have (format-preserving only for FPE_CLASSES)."""
    kinds = [TokenKind.RANDOM, TokenKind.DETERMINISTIC]
    if cls in FPE_CLASSES:
        kinds.append(TokenKind.FORMAT_PRESERVING)
    return tuple(kinds)


class Link(enum.Enum):
    """Where a token of a reveal comes from (issued by the privileged test-admin caller)."""

    STANDALONE = "standalone"  # not linked to a record
    PLAIN = "plain-record"  # linked to the record without consent
    CONSENTED = "consented-record"  # linked to the record with every consent
    EXPIRED = "expired"  # standalone, its expires_at set in the past
    ERASED = "erased"  # linked to a record that was then erased
    FOREIGN = "other-tenant"  # issued in another tenant
    CRAFTED = "crafted"  # tok_<class>_ + 22 random base62 digits, never issued
    TAMPERED = "tampered"  # an issued token with one character changed
    MALFORMED = "malformed"  # not a token at all


ISSUED_LINKS: Final = (Link.STANDALONE, Link.PLAIN, Link.CONSENTED)
UNKNOWN_LINKS: Final = frozenset({Link.FOREIGN, Link.CRAFTED, Link.TAMPERED, Link.MALFORMED})


@dataclass(frozen=True)
class TokenSpec:
    """One token of the matrix's reveals: its class, kind (or variant) and where it is from."""

    field_class: FieldClass
    kind: str
    link: Link

    @property
    def label(self) -> str:
        return f"{self.field_class.value}/{self.kind}/{self.link.value}"


def _token_specs() -> tuple[TokenSpec, ...]:
    specs = [
        TokenSpec(c, k.value, link)
        for link in (*ISSUED_LINKS, Link.EXPIRED, Link.ERASED)
        for c in CLASSES
        for k in kinds_of(c)
    ]
    specs += [
        TokenSpec(FieldClass.EMAIL, k.value, Link.FOREIGN) for k in kinds_of(FieldClass.EMAIL)
    ]
    specs += [TokenSpec(c, "crafted", Link.CRAFTED) for c in (FieldClass.EMAIL, FieldClass.IBAN)]
    specs += [TokenSpec(FieldClass.EMAIL, k, Link.TAMPERED) for k in ("swapcase", "last-digit")]
    specs += [
        TokenSpec(FieldClass.EMAIL, k, Link.MALFORMED)
        for k in ("empty", "prefix-only", "bad-digits", "too-long")
    ]
    return tuple(specs)


TOKEN_SPECS: Final = _token_specs()
UNKNOWN_TOKENS: Final = "unknown-tokens"  # the Reveal target of the unknown tokens
TEXT: Final = "text"  # the TokenizeText target: a text holding every value a detector finds


def _text_values() -> dict[FieldClass, str]:
    """The classes whose value the free-text detectors find as one span of that class, and
    the value (TokenizeText replaces exactly these)."""
    scanner = TextScanner(default_detectors())
    found: dict[FieldClass, str] = {}
    for cls, value in CLASS_VALUE.items():
        spans = scanner.find_spans(f"see {value} here")
        if [(s.field_class, s.start, s.end) for s in spans] == [(cls.value, 4, 4 + len(value))]:
            found[cls] = value
    return found


#: What TokenizeText is given: the values the detectors find (the others would stay as sent).
TEXT_VALUES: Final = _text_values()


def malformed_token(spec: TokenSpec) -> str:
    return {
        "empty": "",
        "prefix-only": f"tok_{spec.field_class.value}_",
        "bad-digits": f"tok_{spec.field_class.value}_" + "!" * 22,
        "too-long": "tok_" + "x" * 300,
    }[spec.kind]


_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def crafted_token(cls: FieldClass) -> str:
    """A token of the issued shape that was never issued: ``tok_<class>_`` + 22 base62."""
    return f"tok_{cls.value}_" + "".join(secrets.choice(_BASE62) for _ in range(22))


def tampered_token(token: str, how: str) -> str:
    """``token`` with one change that keeps its shape."""
    if how == "swapcase":
        return token[:-22] + token[-22:].swapcase()
    last = token[-1]
    return token[:-1] + ("0" if last != "0" else "1")


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
class TokenShown:
    """What one token of a reveal comes back as: an error (``unknown``, ``expired``,
    ``erased``, ``denied``) or an output form; the reason code; the class it names."""

    error: str = ""
    output: Output | None = None
    reason: str = ""
    field_class: str = ""

    def __str__(self) -> str:
        what = self.error or (self.output.value if self.output else "?")
        return f"{what}({self.reason})" if self.reason else what


@dataclass(frozen=True)
class Expect:
    refusal: Refusal | None = None
    #: for revealing RPCs: field name -> output, for every field the call returns
    outputs: Mapping[str, Shown] = field(default_factory=dict)
    #: for token reveals: the case's tokens -> what each comes back as
    tokens: Mapping[TokenSpec, TokenShown] = field(default_factory=dict)

    @property
    def plain_values(self) -> int:
        """Plaintext values the call takes from the role's rate limit."""
        if self.refusal is not None:
            return 0
        return sum(1 for s in self.outputs.values() if s.output is Output.PLAIN) + sum(
            1 for t in self.tokens.values() if t.output is Output.PLAIN
        )

    @property
    def masked_values(self) -> int:
        """Masked values the call takes from the role's masked limit."""
        if self.refusal is not None:
            return 0
        return sum(1 for s in self.outputs.values() if s.output is Output.MASKED) + sum(
            1 for t in self.tokens.values() if t.output is Output.MASKED
        )

    def __str__(self) -> str:
        if self.refusal is not None:
            return str(self.refusal)
        forms = [f"{n}={s.output.value}" for n, s in self.outputs.items()]
        forms += [f"{t.label}={ts}" for t, ts in self.tokens.items()]
        return f"OK ({', '.join(forms)})" if forms else "OK"


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


def invalid(field_name: str) -> Refusal:
    return Refusal(
        errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", field_name
    )


#: The index of the bad item in the Tokenize calls that must fail as a whole.
BAD_ITEM: Final = 1
#: Tokenize targets that fail the whole call (nothing written), and how.
TOKENIZE_REFUSALS: Final[Mapping[str, Refusal]] = {
    "bad:field_class": invalid(f"items[{BAD_ITEM}].field_class"),
    "bad:kind": invalid(f"items[{BAD_ITEM}].kind"),
    "bad:value": invalid(f"items[{BAD_ITEM}].value"),
    "bad:scope": invalid(f"items[{BAD_ITEM}].scope"),
    "link:unknown-record": Refusal(
        errors.NotFound, grpc.StatusCode.NOT_FOUND, errors.NotFound.reason
    ),
    "link:erased-record": Refusal(
        errors.Erased, grpc.StatusCode.FAILED_PRECONDITION, errors.Erased.reason
    ),
}
#: IssueGrant targets: a grant on records, one on a conversation scope (both allowed), and
#: requests that fail (nothing issued).
GRANT_TARGETS: Final[Mapping[str, Refusal | None]] = {
    "records": None,
    "scope": None,
    "bad:ttl_seconds": invalid("ttl_seconds"),
    "bad:field_classes": invalid("field_classes[1]"),
    "link:unknown-record": Refusal(
        errors.NotFound, grpc.StatusCode.NOT_FOUND, errors.NotFound.reason
    ),
}
#: Tokenize targets on the token scope (``token_scopes`` in the policy): a deterministic item in
#: a scope no role owns, one in a scope another role owns, and random and format-preserving
#: items in a scope no role owns (fresh draws are no guessing oracle: allowed).
SCOPE_TARGETS: Final = (
    "scope:not-owned",
    "scope:other-role's",
    "scope:not-owned/random",
)
#: The scope no role of the sample policy may create deterministic tokens in.
UNOWNED_SCOPE: Final = "matrix-unowned"


def owns(role: Role, scope: str) -> bool:
    """Whether one of the role's ``token_scopes`` patterns matches ``scope`` (the README's
    syntax: ``*`` any characters, everything else literal), read with fnmatch."""
    return Action.TOKEN_CREATE in role.actions and any(
        fnmatch.fnmatchcase(scope, p) for p in role.token_scopes
    )


def owned_scope(role_name: str, tag: str) -> str:
    """A scope the role may create deterministic tokens in: its first pattern with a ``*``,
    each ``*`` replaced by ``tag``; else ``tag`` itself (which the role does not own)."""
    role = POLICY.roles[role_name]
    pattern = next((p for p in role.token_scopes if "*" in p), None)
    return pattern.replace("*", tag) if pattern is not None else tag


def other_roles_scope(role_name: str, tag: str) -> str:
    """A scope another role with ``token.create`` owns and this one does not (or, if there is
    none, one nobody owns)."""
    for name in sorted(POLICY.roles):
        scope = owned_scope(name, tag)
        mine = owns(POLICY.roles[role_name], scope)
        if name != role_name and owns(POLICY.roles[name], scope) and not mine:
            return scope
    return f"{UNOWNED_SCOPE}.{tag}"


def scope_refusal(role: Role, classes: Iterable[FieldClass], scope: str) -> Refusal | None:
    """The refusal of deterministic tokens of ``classes`` in ``scope`` (README, decision rule
    on token scopes), or None."""
    denied = errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED
    if not owns(role, scope):
        return Refusal(*denied, "token_scope_not_allowed")
    shared = any(owns(r, scope) for r in POLICY.roles.values() if r.name != role.name)
    if shared and any(role.outputs[c] not in REVEALING for c in classes):
        return Refusal(*denied, "token_scope_shared")
    return None


def search_refusal(role: Role, names: Iterable[str]) -> Refusal | None:
    """The refusal of a FindRecords call matching ``names`` (the role's ``search``), or None."""
    if all(CLASS_OF[n] in role.search for n in names):
        return None
    return Refusal(errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "search_not_allowed")


#: A class without format-preserving tokens (the ``bad:kind`` item), if there is one.
NO_FPE_CLASS: Final = next((c for c in CLASSES if c not in FPE_CLASSES), None)
assert NO_FPE_CLASS is not None, "every class has FPE tokens: replace the bad:kind target"


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


def token_shown(role: Role, purpose: str, spec: TokenSpec) -> TokenShown:
    """One token of an allowed reveal (tokens.proto, ``RevealedToken``): the lookup comes first
    (unknown in this tenant, expired, erased with its record), then the consent of a
    consent-bound purpose (a standalone token has no customer who could have consented), then
    the role's output for the class under the purpose."""
    if spec.link in UNKNOWN_LINKS:
        return TokenShown("unknown", reason="unknown_token")
    cls = spec.field_class.value
    if spec.link is Link.EXPIRED:
        return TokenShown("expired", reason="expired", field_class=cls)
    if spec.link is Link.ERASED:
        return TokenShown("erased", reason=errors.Erased.reason, field_class=cls)
    found = POLICY.purposes[purpose]
    if found.consent_required and spec.link is not Link.CONSENTED:
        return TokenShown("denied", reason=errors.ConsentRequired.reason, field_class=cls)
    s = shown(role, spec.field_class, purpose)
    return TokenShown("", s.output, s.reason, cls)


def call_links(pc: PurposeCase) -> tuple[Link, ...]:
    """The issued tokens a reveal sends: those of the consented record only where consent
    matters."""
    if pc.consent_bound:
        return ISSUED_LINKS
    return (Link.STANDALONE, Link.PLAIN)


def case_links(pc: PurposeCase) -> tuple[Link, ...]:
    """The issued tokens one reveal case checks: a consent-bound purpose's ``+consent`` case
    the consented record's, its ``+no-consent`` case the others (standalone included)."""
    if pc.consent_bound:
        return (Link.CONSENTED,) if pc.consent else (Link.STANDALONE, Link.PLAIN)
    return call_links(pc)


def in_text(spec: TokenSpec) -> bool:
    """Whether a text reveal can find the token in a text: ``tok_`` tokens only (a surrogate
    looks like any value; a malformed one is reported as such, not revealed)."""
    return spec.kind != TokenKind.FORMAT_PRESERVING.value and spec.link is not Link.MALFORMED


def specs_of(rpc: Rpc) -> list[TokenSpec]:
    return [s for s in TOKEN_SPECS if in_text(s)] if rpc.text else list(TOKEN_SPECS)


def call_specs(pc: PurposeCase, rpc: Rpc) -> list[TokenSpec]:
    """Every token one reveal sends, in request order."""
    links = {*call_links(pc), Link.EXPIRED, Link.ERASED, *UNKNOWN_LINKS}
    return [s for s in specs_of(rpc) if s.link in links]


def case_specs(pc: PurposeCase, target: str, rpc: Rpc) -> list[TokenSpec]:
    """The tokens one reveal case checks: a class's issued ones (and its expired and erased
    ones, in one of the cases sharing the call), or every unknown one."""
    if target == UNKNOWN_TOKENS:
        return [s for s in specs_of(rpc) if s.link in UNKNOWN_LINKS]
    links = set(case_links(pc))
    if not pc.consent_bound or pc.consent:
        links |= {Link.EXPIRED, Link.ERASED}
    return [s for s in specs_of(rpc) if s.field_class.value == target and s.link in links]


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
        return Expect(invalid(f"match.{target}"))
    if rpc.name == "FindRecords":
        refusal = search_refusal(role, [target] if target in FIELDS else SEARCHABLE)
        return Expect(refusal)
    if rpc.tokenizes:
        return Expect(tokenize_refusal(role, target))
    if rpc.name == "IssueGrant":
        refusal = GRANT_TARGETS.get(target)
        return Expect(refusal) if refusal is not None else Expect()
    if rpc.name == "RevokeGrant":  # the matrix revokes a grant that is not the caller's
        return Expect(
            Refusal(errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "not_the_grantor")
        )
    if rpc.name == "TokenizeText":
        scope = UNOWNED_SCOPE if target == TEXT_NOT_OWNED else owned_scope(role.name, "t")
        return Expect(scope_refusal(role, TEXT_VALUES, scope))
    if rpc.per_class and rpc.reveals:
        if target == RECORD:
            return Expect()
        specs = case_specs(pc, target, rpc)
        return Expect(tokens={s: token_shown(role, pc.purpose, s) for s in specs})
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


#: The TokenizeText target of a text tokenized into a scope no role owns.
TEXT_NOT_OWNED: Final = "text:not-owned"


def tokenize_refusal(role: Role, target: str) -> Refusal | None:
    """How a Tokenize case ends (after principal and action): the scope check runs after the
    items are validated, before any record is looked up."""
    if target in ("bad:field_class", "bad:kind", "bad:value", "bad:scope"):
        return TOKENIZE_REFUSALS[target]
    good = scope_refusal(role, [FieldClass.EMAIL], owned_scope(role.name, "t"))
    if target in TOKENIZE_REFUSALS:  # the good item is deterministic, in an owned scope
        return good or TOKENIZE_REFUSALS[target]
    if target == "scope:not-owned":
        return scope_refusal(role, [FieldClass.EMAIL], UNOWNED_SCOPE)
    if target == "scope:other-role's":
        return scope_refusal(role, [FieldClass.EMAIL], other_roles_scope(role.name, "t"))
    if target == "scope:not-owned/random":
        return None
    cls = FieldClass(target)
    deterministic = TokenKind.DETERMINISTIC in kinds_of(cls)
    return scope_refusal(role, [cls], owned_scope(role.name, "t")) if deterministic else None


def target_label(rpc: Rpc, target: str) -> str:
    """A field's class (unique in the default schema), else the target's own name."""
    if target in FIELDS and not rpc.per_class:
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
        label = target_label(self.rpc, self.target)
        return f"{self.role}-{self.rpc.key}-{self.purpose.label}-{label}"

    @property
    def call_key(self) -> tuple[str, ...]:
        """Cases with the same key share one call (an export serves all its field cases, a
        reveal all its token cases, the ``+consent`` and ``+no-consent`` ones included)."""
        if self.rpc.name == "ExportCustomerData" and self.target != SEALED:
            return (self.role, self.rpc.key, self.purpose.label)
        if self.rpc.per_class and self.rpc.reveals:
            return (self.role, self.rpc.key, self.purpose.kind, self.purpose.purpose)
        return (self.role, self.rpc.key, self.purpose.label, self.target)

    @property
    def probes_as_writer(self) -> bool:
        """A refused change is checked as the writer: the record must be unchanged."""
        return self.rpc.mutates and self.expect.refusal is not None


def _targets(role: Role, rpc: Rpc, pc: PurposeCase) -> list[str]:
    if rpc.tokenizes:
        return [*(c.value for c in CLASSES), *TOKENIZE_REFUSALS, *SCOPE_TARGETS]
    if rpc.name == "IssueGrant":  # a refused grant is one case
        refused = expect(role, rpc, pc, RECORD).refusal is not None
        return [RECORD] if pc.whole_record_only or refused else [*GRANT_TARGETS]
    if rpc.name == "TokenizeText":
        return [TEXT, TEXT_NOT_OWNED]
    if rpc.per_class:  # the reveals: one call serves every class case; a refused one is one case
        if pc.whole_record_only or expect(role, rpc, pc, RECORD).refusal is not None:
            return [RECORD]
        classes = [c.value for c in CLASSES]
        # the unknown tokens once per call (not again in a +no-consent case)
        return classes if pc.consent_bound and not pc.consent else [*classes, UNKNOWN_TOKENS]
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


def on_tokens_server(case: Case) -> bool:
    """The Tokens cases run on a server of their own whose rate-limit clock gives every charge
    a minute and a day of its own (see :func:`fresh_window_clock`): each reveal call stays
    under the role's limits by itself (:func:`reveal_batches`), whatever the others took."""
    return case.rpc.service == "Tokens"


def masked_budget(cases: Iterable[Case]) -> dict[str, int]:
    """Masked values each role gets in one run of the cases (per database), on the server
    with the real clock (the Tokens cases have windows of their own per call)."""
    calls = {c.call_key: c for c in cases if not on_tokens_server(c)}
    budget = dict.fromkeys(POLICY.roles, 0)
    for case in calls.values():
        budget[case.role] += case.expect.masked_values
    return budget


def plaintext_budget(cases: Iterable[Case]) -> dict[str, int]:
    """Plaintext values each role gets in one run of the cases (per database), on the server
    with the real clock (the Tokens cases are budgeted per call: :func:`reveal_batches`)."""
    writer_probe = writer_probe_field()
    probe_cost = int(
        shown(POLICY.roles[WRITER], CLASS_OF[writer_probe], writer_purpose()).output is Output.PLAIN
    )
    calls: dict[tuple[str, ...], Case] = {}
    for case in cases:
        if not on_tokens_server(case):
            calls.setdefault(case.call_key, case)
    budget = dict.fromkeys(POLICY.roles, 0)
    for case in calls.values():
        budget[case.role] += case.expect.plain_values
    for case in cases:
        if case.probes_as_writer:
            budget[WRITER] += probe_cost
    return budget


def per_call_limit(role: Role) -> int | None:
    """The most plaintext values one call may take: the smaller of the role's limits."""
    limits = [x for x in (role.limits.plain_per_minute, role.limits.plain_per_day) if x]
    return min(limits) if limits else None


def reveal_batches(
    role_name: str, rpc: Rpc, pc: PurposeCase, *, at_least: int = 1
) -> list[list[TokenSpec]]:
    """The tokens of one reveal (:func:`call_specs`), in request order, cut into batches that
    each take at most :func:`per_call_limit` plaintext values (the tokens server gives each
    call windows of its own), and into at least ``at_least`` batches (a stream's)."""
    specs = call_specs(pc, rpc)
    role = POLICY.roles[role_name]
    allowed = expect(role, rpc, pc, RECORD).refusal is None
    limit = per_call_limit(role) if allowed else None
    batches: list[list[TokenSpec]] = [[]]
    used = 0
    for spec in specs:
        plain = int(allowed and token_shown(role, pc.purpose, spec).output is Output.PLAIN)
        if limit is not None and used + plain > limit:
            batches.append([])
            used = 0
        batches[-1].append(spec)
        used += plain
    while len(batches) < at_least:
        longest = max(range(len(batches)), key=lambda i: len(batches[i]))
        half = len(batches[longest]) // 2
        assert half, "too few tokens to split"
        batches[longest : longest + 1] = [batches[longest][:half], batches[longest][half:]]
    return batches


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
    """The exact value of a field shown as ``s``; ``tokens``: what CreateRecord returned (or
    the scoped tokens of a tokenized view)."""
    canonical = CANONICAL[name]
    if s.output is Output.PLAIN:
        return canonical
    if s.output is Output.MASKED:
        return mask(CLASS_OF[name], canonical)
    if s.output is Output.TOKEN:
        return tokens[name]
    return ""


def expected_token_value(spec: TokenSpec, t: TokenShown, token: str) -> str:
    """The exact value of a revealed token: the value as it was tokenized (plain), the class's
    mask of its canonical form (masked: the same mask GetRecord gives), or the token itself."""
    if t.error or t.output is None:
        return ""
    if t.output is Output.PLAIN:
        return CLASS_VALUE[spec.field_class]
    if t.output is Output.MASKED:
        return mask(spec.field_class, CLASS_CANONICAL[spec.field_class])
    if t.output is Output.TOKEN:
        return token
    return ""


# --- calls ---------------------------------------------------------------------------------------


class RecordingClient(VaultClient):
    """The SDK, also keeping the gRPC status and the raw response message of the last call."""

    last_status: grpc.StatusCode | None = None
    last_response: Any = None

    def _unary(self, call: _calls.Unary[Any], timeout: float | None) -> Any:
        self.last_status = None
        self.last_response = None
        parse = call.parse

        def keep(response: Any) -> Any:
            self.last_response = response
            return parse(response)

        try:
            result = super()._unary(replace(call, parse=keep), timeout)
        except errors.VaultServiceError as exc:
            # The SDK raises from the grpc.RpcError (``from None`` keeps it as __context__).
            rpc_error = exc.__context__
            assert isinstance(rpc_error, grpc.RpcError), "SDK error without its RpcError"
            self.last_status = rpc_error.code()
            raise
        self.last_status = grpc.StatusCode.OK
        return result

    def unary(self, method: str, request: Any) -> Outcome:
        """One call of a unary Tokens RPC by name (no SDK method needed): the raw response
        is the result."""
        raw = _calls.Unary(_calls.TOKENS, method, request, lambda response: response)
        return call(self, lambda: self._unary(raw, None))

    def stream(self, method: str, requests: Sequence[Any]) -> Outcome:
        """One call of a streaming Tokens RPC (``StreamTokenize``, ``StreamReveal``): every raw
        response message, and the status the stream ended with (as the SDK's error class)."""
        stub = self._method(_calls.TOKENS, method)
        responses: list[Any] = []
        try:
            for response in stub(iter(requests), timeout=self._timeout, metadata=self._metadata):
                responses.append(response)
        except grpc.RpcError as exc:
            # through the module, so that the session's error-message scan sees it too
            error = vault.client._channel._error(exc)
            return Outcome(responses, error, exc.code(), responses)
        return Outcome(responses, None, grpc.StatusCode.OK, responses)


@dataclass
class Outcome:
    result: Any = None
    error: errors.VaultServiceError | None = None
    status: grpc.StatusCode | None = None
    response: Any = None  # the raw protobuf response (a list of them for a stream)

    @property
    def raw(self) -> bytes:
        if isinstance(self.response, list):
            return b"\n".join(r.SerializeToString() for r in self.response)
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


# --- servers -------------------------------------------------------------------------------------


def fresh_window_clock() -> Callable[[], float]:
    """A rate-limit clock on which every call lands in a minute and a day of its own: a day
    later each time, from a random day of the 23rd century (the limits tests pin theirs in
    the 22nd), so no two charges ever share a window."""
    start = 7_258_118_400 + secrets.randbelow(36_500) * 86_400
    days = itertools.count()
    return lambda: float(start + next(days) * 86_400)


def start_policy_server(
    db: Database,
    openbao: OpenBaoDevServer,
    policy: Path,
    *,
    clock: Callable[[], float] | None = None,
) -> RunningServer:
    """A server (Records, Audit, Tokens) on ``db`` with fresh key caches, under ``policy``;
    its audit events also go to the session's scanned sink."""
    keys = KeyManager(make_wrapper(openbao))
    audit = AuditLog(
        db,
        keys,
        sinks=SESSION_AUDIT_SINKS,
        checkpoint=MemoryCheckpointStore(),
        checkpoint_in_background=False,
    )
    holder = PolicyHolder(policy)
    access = Access(holder, audit) if clock is None else Access(holder, audit, clock=clock)
    service = RecordsService(Core(db, keys, load_schema(), access))
    return start_server(Services.over(service.core), "127.0.0.1:0", authenticator=authenticator())


# --- leak scanning -------------------------------------------------------------------------------


def value_needles(names: Iterable[str] = FIELDS) -> set[str]:
    """The raw and canonical values of these fields."""
    out: set[str] = set()
    for name in names:
        out.add(SAMPLE[name])
        out.add(CANONICAL[name])
    return out


def shows_something(masked: str) -> bool:
    """Whether a mask shows any of its value (``•••`` shows nothing)."""
    return any(ch.isalnum() for ch in masked)


def class_needles(classes: Iterable[FieldClass], *, masks: Iterable[FieldClass] = ()) -> set[str]:
    """The tokenized values of ``classes``, raw and canonical, and the masks of ``masks``
    (those that show something of the value)."""
    out: set[str] = set()
    for cls in classes:
        out.update({CLASS_VALUE[cls], CLASS_CANONICAL[cls]})
    for cls in masks:
        masked = mask(cls, CLASS_CANONICAL[cls])
        if shows_something(masked):
            out.add(masked)
    return out


def all_value_needles() -> set[str]:
    """Every customer value the matrix uses, raw and canonical (records and tokens)."""
    return value_needles() | class_needles(CLASSES)


_FRAGMENT_RE: Final = re.compile(r"[A-Za-z0-9]{6,}")


def strict_needles() -> set[str]:
    """For a never_plaintext role: whole values, their masks, the mask bullet and redaction
    marker, and every run of 6+ letters or digits of a value (a name, a card's digits), except
    runs of the fixed text every email surrogate carries (its reserved domain, not the
    value's: a format-preserving token is no value)."""
    out = all_value_needles()
    fragments: set[str] = set()
    for name in FIELDS:
        out.add(mask(CLASS_OF[name], CANONICAL[name]))
        for value in (SAMPLE[name], CANONICAL[name]):
            fragments.update(_FRAGMENT_RE.findall(value))
    for cls in CLASSES:
        out.add(mask(cls, CLASS_CANONICAL[cls]))
        for value in (CLASS_VALUE[cls], CLASS_CANONICAL[cls]):
            fragments.update(_FRAGMENT_RE.findall(value))
    out.update(f for f in fragments if f not in SURROGATE_EMAIL_DOMAIN)
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
    needles = strict_needles()
    return leaks(text, needles, exact_case=needles - all_value_needles())


def cases_of(role: str | None = None, rpc: str | None = None) -> list[Case]:
    """The cases of a role and an RPC (by :attr:`Rpc.key`)."""
    return [
        c for c in CASES if (role is None or c.role == role) and (rpc is None or c.rpc.key == rpc)
    ]


def roles_where(predicate: Callable[[Role], bool]) -> list[str]:
    return sorted(name for name, role in POLICY.roles.items() if predicate(role))


def sorted_tuple(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(values))
