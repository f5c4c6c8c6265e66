"""The access policy as immutable values, and the decision rules over them.

Decision rules (the same text is in ``deploy/policy/README.md``):

1. Default deny: a principal not in the policy has no role (``unknown_principal``); a role may
   do only the actions it lists (``action_not_allowed``); a principal reaches only the tenants
   it lists (``tenant_not_allowed``; ``"*"``: every tenant, for operator roles). A write to a
   tenant that does not exist creates it only for a role with ``tenant.create``.
2. A purpose, when required or given, must be one of the policy's purposes (else
   :class:`InvalidInput` naming ``purpose``) and one of the role's (``purpose_not_allowed``).
3. Each field gets the role's output for its class (``fields``, ``*`` for the rest, absent:
   ``omit``), lowered by the role's ``purpose_overrides`` for that purpose. Overrides only lower.
4. Without a purpose, ``plain`` and ``masked`` become ``token``: never more than allowed.
5. A consent-bound purpose is reported in :attr:`Decision.needs_consent`; the caller refuses
   records without that consent (FAILED_PRECONDITION).
6. Deterministic tokens only in a scope the role lists in ``token_scopes``
   (``token_scope_not_allowed``), and, for a class the role sees neither plain nor masked, only
   in a scope no other role with ``token.create`` may create tokens in (``token_scope_shared``):
   else the role could test guesses against another role's tokens.
7. A search (``record.find``) only on the classes the role lists in ``search``
   (``search_not_allowed``); never on a class the role sees as ``omit``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from vault.errors import InvalidInput, PermissionDenied
from vault.identity import Principal
from vault.policy._scopes import compile_scopes, scope_matches
from vault.schema import FieldClass


class Output(StrEnum):
    """What a caller gets for one field, from most to least revealing."""

    PLAIN = "plain"
    MASKED = "masked"
    TOKEN = "token"  # noqa: S105 - an output form, not a secret
    OMIT = "omit"


#: How much each output reveals; a purpose override may only go down this scale.
OUTPUT_RANK: Final[Mapping[Output, int]] = MappingProxyType(
    {Output.OMIT: 0, Output.TOKEN: 1, Output.MASKED: 2, Output.PLAIN: 3}
)

#: Outputs that carry (part of) the plaintext.
REVEALING: Final = frozenset({Output.PLAIN, Output.MASKED})


def at_most(output: Output, ceiling: Output) -> Output:
    """The less revealing of two outputs."""
    return output if OUTPUT_RANK[output] <= OUTPUT_RANK[ceiling] else ceiling


class Action(StrEnum):
    """What a principal may ask the vault to do."""

    RECORD_WRITE = "record.write"
    RECORD_READ = "record.read"
    RECORD_ERASE = "record.erase"
    RECORD_FIND = "record.find"
    TOKEN_CREATE = "token.create"  # noqa: S105 - an action name, not a secret
    TOKEN_REVEAL = "token.reveal"  # noqa: S105 - an action name, not a secret
    TEXT_REVEAL = "text.reveal"
    GRANT_ISSUE = "grant.issue"
    CONSENT_WRITE = "consent.write"
    AUDIT_READ = "audit.read"
    EXPORT = "record.export"
    TENANT_CREATE = "tenant.create"
    ADMIN_KEYS = "admin.keys"
    ADMIN_AUDIT = "admin.audit"


#: Wildcards a policy file may use in a role's ``actions``. Only ``admin.*``: a ``record.*``
#: would silently grant export and erasure, and every action added later.
ACTION_WILDCARDS: Final[Mapping[str, frozenset[Action]]] = MappingProxyType(
    {"admin.*": frozenset(a for a in Action if a.value.startswith("admin."))}
)

#: Actions whose result is plaintext whatever the field outputs say; a ``never_plaintext`` role
#: may not have them.
PLAINTEXT_ACTIONS: Final = frozenset(
    {Action.TOKEN_REVEAL, Action.TEXT_REVEAL, Action.GRANT_ISSUE, Action.EXPORT}
)

# Reason codes of FieldDecision (omit, or lowered for lack of a purpose).
#: The role may not see this field class at all.
FIELD_NOT_ALLOWED: Final = "field_not_allowed"
#: The role may see this class, but not for this purpose (a purpose override omits it).
FIELD_NOT_ALLOWED_FOR_PURPOSE: Final = "field_not_allowed_for_purpose"
#: Lowered from plain/masked to token because the call stated no purpose.
PURPOSE_MISSING: Final = "purpose_missing"

#: The role may not create deterministic tokens in that scope (not in its ``token_scopes``).
TOKEN_SCOPE_NOT_ALLOWED: Final = "token_scope_not_allowed"  # noqa: S105 - a reason code
#: The scope is also another role's and the role sees the class neither plain nor masked.
TOKEN_SCOPE_SHARED: Final = "token_scope_shared"  # noqa: S105 - a reason code
#: The role may not search on that field class (not in its ``search``).
SEARCH_NOT_ALLOWED: Final = "search_not_allowed"

#: The principal may not reach that tenant (not in its ``tenants``).
TENANT_NOT_ALLOWED: Final = "tenant_not_allowed"
#: A principal's ``tenants`` entry that reaches every tenant.
ALL_TENANTS: Final = "*"
#: A tenant name (the same rule for requests and the policy file).
TENANT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Binding:
    """What a policy file gives one principal: its role and the tenants it may reach."""

    role: str
    tenants: frozenset[str]

    def reaches(self, tenant: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant in self.tenants


@dataclass(frozen=True, slots=True)
class Limits:
    """Plaintext values (fields returned ``plain``), masked values (returned ``masked``: they
    leak part of a value, so they are counted too, on their own) and searches (FindRecords
    calls) each principal of the role may make; ``None``: no limit. Counted per principal in
    the database (shared by every replica)."""

    plain_per_minute: int | None = None
    plain_per_day: int | None = None
    searches_per_minute: int | None = None
    searches_per_day: int | None = None
    masked_per_minute: int | None = None
    masked_per_day: int | None = None

    def __post_init__(self) -> None:
        for value in (
            self.plain_per_minute,
            self.plain_per_day,
            self.searches_per_minute,
            self.searches_per_day,
            self.masked_per_minute,
            self.masked_per_day,
        ):
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError("limits must be positive integers or None")


@dataclass(frozen=True, slots=True)
class Purpose:
    """A reason for a call; ``consent_required`` purposes need the customer's consent."""

    name: str
    consent_required: bool = False
    description: str = ""


def _freeze_outputs(outputs: Mapping[FieldClass, Output]) -> Mapping[FieldClass, Output]:
    return MappingProxyType({FieldClass(c): Output(o) for c, o in outputs.items()})


@dataclass(frozen=True, slots=True)
class Role:
    """What the principals of one role may do and see.

    Attributes:
        outputs: the output for every field class (explicit, or ``default_output``).
        default_output: what the policy file gave ``"*"`` (``omit`` when absent).
        purpose_outputs: for purposes with an override, the resulting output for every class;
            each is at most the one in ``outputs``.
        never_plaintext: the role may never get plain or masked values, nor plaintext actions.
        token_scopes: patterns of the scopes the role may create deterministic tokens in
            (``vault.policy._scopes``); none: no deterministic token anywhere.
        search: the field classes the role may search on (FindRecords); none of them omitted.
    """

    name: str
    actions: frozenset[Action]
    purposes: frozenset[str]
    outputs: Mapping[FieldClass, Output] = field(hash=False)
    default_output: Output
    limits: Limits
    purpose_outputs: Mapping[str, Mapping[FieldClass, Output]] = field(
        default_factory=dict, hash=False
    )
    never_plaintext: bool = False
    description: str = ""
    token_scopes: tuple[str, ...] = ()
    search: frozenset[FieldClass] = frozenset()
    _scopes_re: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        # Read-only snapshots, completed for every class, and the invariants the loader checks
        # with line numbers re-checked here so a Role built in code cannot break them either.
        default = Output(self.default_output)
        base = {c: Output(self.outputs.get(c, default)) for c in FieldClass}
        object.__setattr__(self, "outputs", _freeze_outputs(base))
        per_purpose: dict[str, Mapping[FieldClass, Output]] = {}
        for purpose, outputs in self.purpose_outputs.items():
            if purpose not in self.purposes:
                raise ValueError(f"role {self.name!r}: override for a purpose it lacks")
            full = {c: Output(outputs.get(c, base[c])) for c in FieldClass}
            if any(OUTPUT_RANK[full[c]] > OUTPUT_RANK[base[c]] for c in FieldClass):
                raise ValueError(f"role {self.name!r}: a purpose override may only lower outputs")
            per_purpose[purpose] = _freeze_outputs(full)
        object.__setattr__(self, "purpose_outputs", MappingProxyType(per_purpose))
        object.__setattr__(self, "actions", frozenset(Action(a) for a in self.actions))
        object.__setattr__(self, "purposes", frozenset(self.purposes))
        if self.never_plaintext:
            if REVEALING & set(base.values()) or default in REVEALING:
                raise ValueError(f"role {self.name!r} is never_plaintext but has plain/masked")
            if self.actions & PLAINTEXT_ACTIONS:
                raise ValueError(f"role {self.name!r} is never_plaintext but may reveal")
        object.__setattr__(self, "token_scopes", tuple(self.token_scopes))
        object.__setattr__(self, "_scopes_re", compile_scopes(self.token_scopes))
        search = frozenset(FieldClass(c) for c in self.search)
        if any(base[c] is Output.OMIT for c in search):
            raise ValueError(f"role {self.name!r} may not search a class it sees as omit")
        object.__setattr__(self, "search", search)

    def owns_scope(self, scope: str) -> bool:
        """Whether the role may create deterministic tokens in ``scope`` (its patterns)."""
        return Action.TOKEN_CREATE in self.actions and scope_matches(self._scopes_re, scope)

    def output(self, field_class: FieldClass, purpose: str | None) -> Output:
        """The output for one class under a purpose (already checked), before degrading."""
        if purpose is not None and purpose in self.purpose_outputs:
            return self.purpose_outputs[purpose][field_class]
        return self.outputs[field_class]

    @property
    def may_reveal(self) -> bool:
        """Whether any field class can come back plain or masked for this role."""
        return any(o in REVEALING for o in self.outputs.values())


@dataclass(frozen=True, slots=True)
class FieldDecision:
    """The output for one field; ``reason`` is empty unless omitted or lowered."""

    output: Output
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything :meth:`Policy.decide` concluded for one call.

    Attributes:
        outputs: field name -> decision, for every field asked about.
        needs_consent: the purpose when it is consent-bound: the caller must refuse records
            without that consent (FAILED_PRECONDITION).
    """

    role: str
    outputs: Mapping[str, FieldDecision] = field(hash=False)
    needs_consent: str | None
    purpose: str | None = None


class Policy:
    """One loaded policy file. Immutable; swap whole policies to change it (PolicyHolder)."""

    __slots__ = ("_principals", "_purposes", "_roles", "digest", "source", "version")

    def __init__(
        self,
        *,
        source: str,
        version: int,
        purposes: Mapping[str, Purpose],
        roles: Mapping[str, Role],
        principals: Mapping[str, Binding],
        digest: str = "",
    ) -> None:
        """Raises ValueError when roles reference unknown purposes or principals unknown roles."""
        self.source = source
        self.version = version
        #: sha256 of the file's bytes (hex), for audit rows and logs
        self.digest = digest
        self._purposes: Mapping[str, Purpose] = MappingProxyType(dict(purposes))
        self._roles: Mapping[str, Role] = MappingProxyType(dict(roles))
        self._principals: Mapping[str, Binding] = MappingProxyType(dict(principals))
        for role in self._roles.values():
            if not role.purposes <= self._purposes.keys():
                raise ValueError(f"role {role.name!r} references an unknown purpose")
        for principal, binding in self._principals.items():
            if binding.role not in self._roles:
                raise ValueError(f"principal {principal!r} references an unknown role")

    def __repr__(self) -> str:
        return (
            f"Policy(source={self.source!r}, version={self.version}, digest={self.digest[:12]!r})"
        )

    @property
    def purposes(self) -> Mapping[str, Purpose]:
        return self._purposes

    @property
    def roles(self) -> Mapping[str, Role]:
        return self._roles

    @property
    def principals(self) -> Mapping[str, str]:
        """principal -> role name."""
        return MappingProxyType({p: b.role for p, b in self._principals.items()})

    def reaches(self, principal: str, tenant: str) -> bool:
        """Whether the policy lets ``principal`` reach ``tenant``."""
        binding = self._principals.get(principal)
        return binding is not None and binding.reaches(tenant)

    def purpose(self, name: str) -> Purpose | None:
        """The purpose of that name, or ``None``."""
        return self._purposes.get(name)

    def role_of(self, principal: Principal) -> Role:
        """The role of an authenticated principal.

        An entry matches only callers who authenticated the way its kind says
        (:func:`vault.identity.principal_kind`): ``apikey:`` entries API keys, URI and ``dns:``
        entries mTLS. So a certificate whose URI SAN reads ``apikey:...`` cannot take an API
        key's role, nor an API key named like a SAN a certificate's; a name of no kind (which a
        loaded policy never holds) matches nothing.

        Raises:
            PermissionDenied: reason ``unknown_principal`` (default deny).
        """
        return self._roles[self._binding(principal).role]

    def _binding(self, principal: Principal) -> Binding:
        binding = self._principals.get(principal.name)
        kind = principal.kind
        if binding is None or kind is None or kind.method != principal.method:
            raise PermissionDenied(
                f"principal {principal.name!r} has no role in the policy",
                reason="unknown_principal",
            )
        return binding

    def check_action(self, principal: Principal, action: Action, *, tenant: str) -> Role:
        """The principal's role, if it may perform ``action`` in ``tenant``.

        Raises:
            PermissionDenied: reason ``unknown_principal``, ``tenant_not_allowed`` or
                ``action_not_allowed`` (in that order).
        """
        binding = self._binding(principal)
        if not binding.reaches(tenant):  # first: another tenant's caller learns nothing more
            raise PermissionDenied(
                "the principal may not reach this tenant", reason=TENANT_NOT_ALLOWED
            )
        role = self._roles[binding.role]
        if Action(action) not in role.actions:
            raise PermissionDenied(
                f"role {role.name!r} may not perform {Action(action).value!r}",
                reason="action_not_allowed",
            )
        return role

    def check_purpose(self, role: Role, purpose: str | None, *, required: bool) -> Purpose | None:
        """Check a stated purpose against the policy and the role.

        Args:
            purpose: as the caller stated it; ``None`` or ``""`` for none.
            required: whether the call must state one (it can return plain or masked values).

        Returns:
            The purpose, or ``None`` when none was stated and none is required.

        Raises:
            InvalidInput: field ``purpose``, missing though required, or not in the policy (the
                message does not echo the value).
            PermissionDenied: reason ``purpose_not_allowed``: known, but not one of the role's.
        """
        if not purpose:
            if required:
                raise InvalidInput("purpose", "is required")
            return None
        found = self._purposes.get(purpose)
        if found is None:
            raise InvalidInput("purpose", "not a purpose of the policy")
        if purpose not in role.purposes:
            raise PermissionDenied(
                f"role {role.name!r} may not act for purpose {purpose!r}",
                reason="purpose_not_allowed",
            )
        return found

    def scope_owners(self, scope: str) -> frozenset[str]:
        """The roles that may create deterministic tokens in ``scope``."""
        return frozenset(r.name for r in self._roles.values() if r.owns_scope(scope))

    def check_deterministic(self, role: Role, field_class: FieldClass, scope: str) -> None:
        """Whether ``role`` may create a deterministic token of ``field_class`` in ``scope``.

        Raises:
            PermissionDenied: ``token_scope_not_allowed`` (not one of the role's scopes) or
                ``token_scope_shared`` (another role may create tokens there, and this role
                sees the class neither plain nor masked: it could test guesses against them).
                The message does not echo the scope.
        """
        if not role.owns_scope(scope):
            raise PermissionDenied(
                f"role {role.name!r} may not create deterministic tokens in this scope",
                reason=TOKEN_SCOPE_NOT_ALLOWED,
            )
        if role.outputs[FieldClass(field_class)] in REVEALING:
            return
        if self.scope_owners(scope) - {role.name}:
            raise PermissionDenied(
                f"role {role.name!r} may not create deterministic {FieldClass(field_class).value}"
                " tokens in a scope another role creates tokens in",
                reason=TOKEN_SCOPE_SHARED,
            )

    @staticmethod
    def check_search(role: Role, classes: Iterable[FieldClass]) -> None:
        """Whether ``role`` may search on every one of ``classes``.

        Raises:
            PermissionDenied: ``search_not_allowed``, naming the first class refused.
        """
        for field_class in sorted(FieldClass(c) for c in classes):
            if field_class not in role.search:
                raise PermissionDenied(
                    f"role {role.name!r} may not search on {field_class.value}",
                    reason=SEARCH_NOT_ALLOWED,
                )

    def outputs(
        self, role: Role, purpose: str | None, fields: Mapping[str, FieldClass]
    ) -> dict[str, FieldDecision]:
        """What the role gets for each field under ``purpose``; never more than allowed.

        Args:
            fields: field name -> field class (from the record schema).

        Returns:
            field name -> decision. Without a purpose, plain and masked become token (reason
            ``purpose_missing``); omitted fields say why (``field_not_allowed`` or
            ``field_not_allowed_for_purpose``).

        Raises:
            InvalidInput, PermissionDenied: as :meth:`check_purpose` (with ``required=False``).
        """
        self.check_purpose(role, purpose, required=False)
        purpose = purpose or None
        decisions: dict[str, FieldDecision] = {}
        for name, field_class in fields.items():
            base = role.outputs[field_class]
            output = role.output(field_class, purpose)
            if output is Output.OMIT:
                reason = FIELD_NOT_ALLOWED if base is Output.OMIT else FIELD_NOT_ALLOWED_FOR_PURPOSE
                decisions[name] = FieldDecision(Output.OMIT, reason)
            elif purpose is None and output in REVEALING:
                decisions[name] = FieldDecision(Output.TOKEN, PURPOSE_MISSING)
            else:
                decisions[name] = FieldDecision(output)
        return decisions

    def decide(
        self,
        principal: Principal,
        action: Action,
        purpose: str | None,
        fields: Mapping[str, FieldClass],
        *,
        tenant: str,
        purpose_required: bool = True,
    ) -> Decision:
        """Action, purpose and per-field outputs in one call, in that order of checks.

        Raises:
            PermissionDenied: ``unknown_principal``, ``action_not_allowed``,
                ``tenant_not_allowed``, ``purpose_not_allowed``.
            InvalidInput: field ``purpose``, missing (when required) or unknown.
        """
        role = self.check_action(principal, action, tenant=tenant)
        found = self.check_purpose(role, purpose, required=purpose_required)
        outputs = self.outputs(role, found.name if found else None, fields)
        return Decision(
            role=role.name,
            outputs=MappingProxyType(outputs),
            needs_consent=found.name if found is not None and found.consent_required else None,
            purpose=found.name if found is not None else None,
        )
