"""Reading a policy file (YAML) into a :class:`Policy`, with file:line and rule in every error.

As in ``vault.schema._load``, the file is composed into a node tree with PyYAML's ``SafeLoader``
(no arbitrary tags) and walked by hand, so every message reads
``<file>:<line>: <rule path>: <problem>``, e.g.
``policy.yaml:17: roles.support-agent.actions[1]: unknown action 'record.reed' (known: ...)``.
Only scalars are ever constructed into Python objects.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from typing import Final, NoReturn

import yaml

from vault.errors import ConfigError
from vault.identity import principal_kind
from vault.policy._model import (
    ACTION_WILDCARDS,
    ALL_TENANTS,
    OUTPUT_RANK,
    PLAINTEXT_ACTIONS,
    REVEALING,
    TENANT_RE,
    Action,
    Binding,
    Limits,
    Output,
    Policy,
    Purpose,
    Role,
    at_most,
)
from vault.policy._scopes import SCOPE_PATTERN_RE
from vault.schema import FieldClass

#: A policy file is a few kilobytes; refuse anything absurd before parsing it.
MAX_POLICY_BYTES: Final = 1 << 20

#: Role and purpose names.
NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
#: Principal names: a certificate's URI SAN, ``dns:<DNS SAN>`` or ``apikey:<key id>`` (their
#: kind must also be clear: :func:`vault.identity.principal_kind`); no whitespace or control
#: characters.
PRINCIPAL_RE: Final = re.compile(r"[\x21-\x7e]{1,512}")
_PRINCIPAL_FORMS: Final = (
    "a certificate's URI SAN as the URI with its scheme (spiffe://...),"
    " its DNS SAN as dns:<DNS name>, or an API key as apikey:<key id>"
)

_TOP_LEVEL_KEYS: Final = ("policy_version", "purposes", "principals", "roles")
_PURPOSE_KEYS: Final = ("consent_required", "description")
_PRINCIPAL_KEYS: Final = ("role", "tenants")
_ROLE_KEYS: Final = (
    "description",
    "never_plaintext",
    "actions",
    "purposes",
    "fields",
    "purpose_overrides",
    "token_scopes",
    "search",
    "limits",
)
_LIMIT_KEYS: Final = (
    "plain_per_minute",
    "plain_per_day",
    "searches_per_minute",
    "searches_per_day",
    "masked_per_minute",
    "masked_per_day",
)
_CLASS_NAMES: Final = {member.value: member for member in FieldClass}
_OUTPUT_NAMES: Final = {member.value: member for member in Output}
_ACTION_NAMES: Final = {member.value: member for member in Action}
_DEFAULT_KEY: Final = "*"


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load and check a policy file.

    Returns:
        The policy; ``source`` is the path as given, ``digest`` the sha256 of the file.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 YAML, or does not describe a valid
            policy. The message is ``<file>:<line>: <rule path>: <problem>``.
    """
    source = os.fspath(path)
    return parse_policy(read_policy_bytes(source), source)


def read_policy_bytes(source: str) -> bytes:
    """The bytes of a policy file, at most ``MAX_POLICY_BYTES + 1`` of them.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        with open(source, "rb") as stream:
            return stream.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{source}: cannot read policy file: {reason}") from None


def parse_policy(data: bytes | str, source: str) -> Policy:
    """Build a policy from the text of a policy file; ``source`` names it in error messages.

    Raises:
        ConfigError: as for :func:`load_policy`.
    """
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError(f"{source}: policy file larger than {MAX_POLICY_BYTES} bytes")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: policy file is not UTF-8 text") from None
    try:
        loader = yaml.SafeLoader(text)  # checks every character up front
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character U+{exc.character:04X} is not allowed in YAML"
        raise ConfigError(f"{source}:{line}: {problem}") from None
    try:
        return _Reader(source, loader, digest).policy()
    finally:
        loader.dispose()


def _key_path(parent: str, key: str) -> str:
    """``parent.key``, quoting keys that are not plain names (principals, ``*``)."""
    part = key if NAME_RE.fullmatch(key) else repr(key)
    return f"{parent}.{part}" if parent else part


class _Reader:
    """Walks the composed YAML tree of one policy file."""

    def __init__(self, source: str, loader: yaml.SafeLoader, digest: str) -> None:
        self._source = source
        self._loader = loader
        self._digest = digest

    # -- helpers --------------------------------------------------------------------------------

    def _fail(self, node: yaml.Node, rule: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self._source}:{node.start_mark.line + 1}: {rule}: {problem}") from None

    def _scalar(self, node: yaml.Node, rule: str) -> object:
        """The Python value of a scalar node; a mapping or list becomes a sentinel."""
        if not isinstance(node, yaml.ScalarNode):
            return _NotScalar()
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            problem = exc.problem or "invalid value"
        self._fail(node, rule, problem)

    def _mapping(
        self, node: yaml.Node, rule: str, allowed: tuple[str, ...] | None = None
    ) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """``(key, key node, value node)`` of a mapping with unique string keys.

        An empty value (``key:`` with nothing after it) counts as an empty mapping.
        """
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return
        if not isinstance(node, yaml.MappingNode):
            self._fail(node, rule, "must be a mapping")
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._fail(key_node, rule, "merge keys (<<) are not supported")
            key = self._scalar(key_node, rule)
            if not isinstance(key, str):
                self._fail(key_node, rule, f"keys must be strings, not {key!r}")
            if key in seen:
                self._fail(key_node, rule, f"duplicate key {key!r}")
            seen.add(key)
            if allowed is not None and key not in allowed:
                expected = ", ".join(allowed)
                self._fail(key_node, rule, f"unknown key {key!r} (expected {expected})")
            yield key, key_node, value_node

    def _sequence(self, node: yaml.Node, rule: str) -> Iterator[tuple[int, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            self._fail(node, rule, "must be a list")
        yield from enumerate(node.value)

    def _name(self, node: yaml.Node, rule: str, what: str) -> str:
        value = self._scalar(node, rule)
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            self._fail(node, rule, f"{what} {value!r} must match ^[a-z][a-z0-9_-]{{0,62}}$")
        return value

    def _bool(self, node: yaml.Node, rule: str) -> bool:
        value = self._scalar(node, rule)
        if not isinstance(value, bool):
            self._fail(node, rule, "must be true or false")
        return value

    def _text(self, node: yaml.Node, rule: str) -> str:
        value = self._scalar(node, rule)
        if not isinstance(value, str):
            self._fail(node, rule, "must be a string")
        return value

    # -- the file -------------------------------------------------------------------------------

    def policy(self) -> Policy:
        try:
            root = self._loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = 1 if mark is None else mark.line + 1
            problem = ", ".join(part for part in (exc.context, exc.problem) if part)
            raise ConfigError(f"{self._source}:{line}: invalid YAML: {problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self._source}: invalid YAML: {exc}") from None
        if root is None:
            raise ConfigError(f"{self._source}:1: policy file is empty")
        if not isinstance(root, yaml.MappingNode):
            self._fail(root, "top level", "must be a mapping with " + ", ".join(_TOP_LEVEL_KEYS))

        nodes = {
            key: (key_node, value)
            for key, key_node, value in self._mapping(root, "top level", _TOP_LEVEL_KEYS)
        }
        for key in _TOP_LEVEL_KEYS:
            if key not in nodes:
                self._fail(root, key, "missing (required)")

        version = self._scalar(nodes["policy_version"][1], "policy_version")
        if type(version) is not int or version < 1:
            self._fail(nodes["policy_version"][1], "policy_version", "must be an integer >= 1")
        purposes = self._purposes(nodes["purposes"][1])
        roles = self._roles(nodes["roles"][1], purposes)
        principals = self._principals(nodes["principals"][1], roles)
        return Policy(
            source=self._source,
            version=version,
            purposes=purposes,
            roles=roles,
            principals=principals,
            digest=self._digest,
        )

    def _purposes(self, node: yaml.Node) -> dict[str, Purpose]:
        purposes: dict[str, Purpose] = {}
        for name, key_node, value_node in self._mapping(node, "purposes"):
            rule = _key_path("purposes", name)
            self._name(key_node, rule, "purpose name")
            consent_required = False
            description = ""
            for key, _, item in self._mapping(value_node, rule, _PURPOSE_KEYS):
                if key == "consent_required":
                    consent_required = self._bool(item, f"{rule}.{key}")
                else:
                    description = self._text(item, f"{rule}.{key}")
            purposes[name] = Purpose(name, consent_required, description)
        return purposes

    def _principals(self, node: yaml.Node, roles: dict[str, Role]) -> dict[str, Binding]:
        principals: dict[str, Binding] = {}
        for name, key_node, value_node in self._mapping(node, "principals"):
            rule = _key_path("principals", name)
            self._principal_name(name, key_node, rule)
            if not isinstance(value_node, yaml.MappingNode):
                self._fail(
                    value_node,
                    rule,
                    "must be {role: <role>, tenants: [<tenant>, ...]} (tenants: the tenants"
                    ' it may reach, or ["*"] for every tenant)',
                )
            items = {k: v for k, _, v in self._mapping(value_node, rule, _PRINCIPAL_KEYS)}
            for key in _PRINCIPAL_KEYS:
                if key not in items:
                    self._fail(value_node, f"{rule}.{key}", "missing (required)")
            role = self._scalar(items["role"], f"{rule}.role")
            if not isinstance(role, str) or role not in roles:
                known = ", ".join(sorted(roles)) or "none defined"
                self._fail(items["role"], f"{rule}.role", f"unknown role {role!r} (roles: {known})")
            principals[name] = Binding(role, self._tenants(items["tenants"], f"{rule}.tenants"))
        return principals

    def _principal_name(self, name: str, node: yaml.Node, rule: str) -> None:
        """Refuse a principal name that is malformed, or whose kind (URI SAN, DNS SAN, API key)
        cannot be told from it (:func:`vault.identity.principal_kind`)."""
        if not PRINCIPAL_RE.fullmatch(name):
            self._fail(
                node,
                rule,
                "principal must be 1-512 printable ASCII characters without spaces"
                f" ({_PRINCIPAL_FORMS})",
            )
        if principal_kind(name) is None:
            # Most likely a DNS name from before principals named their SAN type.
            hint = f" (a DNS SAN: 'dns:{name}')" if ":" not in name else ""
            self._fail(
                node,
                rule,
                f"ambiguous or incomplete principal {name!r}: write {_PRINCIPAL_FORMS}{hint}",
            )

    def _tenants(self, node: yaml.Node, rule: str) -> frozenset[str]:
        tenants: set[str] = set()
        for index, item in self._sequence(node, rule):
            where = f"{rule}[{index}]"
            raw = self._scalar(item, where)
            if not isinstance(raw, str) or not (raw == ALL_TENANTS or TENANT_RE.fullmatch(raw)):
                self._fail(item, where, f'{raw!r} is not a tenant name (or "*": every tenant)')
            if raw in tenants:
                self._fail(item, where, f"duplicate tenant {raw!r}")
            tenants.add(raw)
        if not tenants:
            self._fail(node, rule, 'must list at least one tenant (["*"]: every tenant)')
        return frozenset(tenants)

    def _roles(self, node: yaml.Node, purposes: dict[str, Purpose]) -> dict[str, Role]:
        roles: dict[str, Role] = {}
        for name, key_node, value_node in self._mapping(node, "roles"):
            rule = _key_path("roles", name)
            self._name(key_node, rule, "role name")
            roles[name] = self._role(name, rule, key_node, value_node, purposes)
        return roles

    def _role(
        self,
        name: str,
        rule: str,
        name_node: yaml.Node,
        node: yaml.Node,
        purposes: dict[str, Purpose],
    ) -> Role:
        if not isinstance(node, yaml.MappingNode):
            self._fail(node, rule, "must be a mapping with at least 'actions'")
        items = {
            key: (key_node, value) for key, key_node, value in self._mapping(node, rule, _ROLE_KEYS)
        }
        if "actions" not in items:
            self._fail(name_node, f"{rule}.actions", "missing (required; [] for none)")

        never_plaintext = False
        if "never_plaintext" in items:
            never_plaintext = self._bool(items["never_plaintext"][1], f"{rule}.never_plaintext")
        description = ""
        if "description" in items:
            description = self._text(items["description"][1], f"{rule}.description")

        actions = self._actions(items["actions"][1], f"{rule}.actions", never_plaintext)
        role_purposes: list[str] = []
        if "purposes" in items:
            role_purposes = self._role_purposes(items["purposes"][1], f"{rule}.purposes", purposes)

        outputs: dict[FieldClass, Output] = {}
        default = Output.OMIT
        if "fields" in items:
            explicit, star = self._outputs(items["fields"][1], f"{rule}.fields", never_plaintext)
            default = star if star is not None else Output.OMIT
            outputs = {c: explicit.get(c, default) for c in FieldClass}
        else:
            outputs = dict.fromkeys(FieldClass, Output.OMIT)

        overrides: dict[str, dict[FieldClass, Output]] = {}
        if "purpose_overrides" in items:
            overrides = self._overrides(
                items["purpose_overrides"][1],
                f"{rule}.purpose_overrides",
                outputs,
                role_purposes,
                never_plaintext,
            )

        limits = Limits()
        if "limits" in items:
            limits = self._limits(items["limits"][1], f"{rule}.limits")
        token_scopes, search = self._reach(items, rule, actions, outputs)

        return Role(
            name=name,
            actions=frozenset(actions),
            purposes=frozenset(role_purposes),
            outputs=outputs,
            default_output=default,
            limits=limits,
            purpose_outputs=overrides,
            never_plaintext=never_plaintext,
            description=description,
            token_scopes=token_scopes,
            search=search,
        )

    def _reach(
        self,
        items: dict[str, tuple[yaml.Node, yaml.Node]],
        rule: str,
        actions: set[Action],
        outputs: dict[FieldClass, Output],
    ) -> tuple[tuple[str, ...], frozenset[FieldClass]]:
        """The role's ``token_scopes`` and ``search`` (both empty when absent)."""
        scopes: tuple[str, ...] = ()
        if "token_scopes" in items:
            key_node, node = items["token_scopes"]
            if Action.TOKEN_CREATE not in actions:
                self._fail(key_node, f"{rule}.token_scopes", "needs the action token.create")
            scopes = self._token_scopes(node, f"{rule}.token_scopes")
        search: frozenset[FieldClass] = frozenset()
        if "search" in items:
            key_node, node = items["search"]
            if Action.RECORD_FIND not in actions:
                self._fail(key_node, f"{rule}.search", "needs the action record.find")
            search = self._search(node, f"{rule}.search", outputs)
        return scopes, search

    def _token_scopes(self, node: yaml.Node, rule: str) -> tuple[str, ...]:
        patterns: list[str] = []
        for index, item in self._sequence(node, rule):
            where = f"{rule}[{index}]"
            raw = self._scalar(item, where)
            if not isinstance(raw, str) or not SCOPE_PATTERN_RE.fullmatch(raw):
                self._fail(
                    item, where, f"{raw!r} is not a scope pattern (0-64 of A-Z a-z 0-9 _ . : - *)"
                )
            if raw in patterns:
                self._fail(item, where, f"duplicate scope pattern {raw!r}")
            patterns.append(raw)
        return tuple(patterns)

    def _search(
        self, node: yaml.Node, rule: str, outputs: dict[FieldClass, Output]
    ) -> frozenset[FieldClass]:
        """The searchable classes; ``"*"``: every class the role does not omit."""
        found: set[FieldClass] = set()
        for index, item in self._sequence(node, rule):
            where = f"{rule}[{index}]"
            raw = self._scalar(item, where)
            if raw == _DEFAULT_KEY:
                found |= {c for c, o in outputs.items() if o is not Output.OMIT}
                continue
            if not isinstance(raw, str) or raw not in _CLASS_NAMES:
                known = ", ".join([*_CLASS_NAMES, _DEFAULT_KEY])
                self._fail(item, where, f"unknown field class {raw!r} (known: {known})")
            if outputs[_CLASS_NAMES[raw]] is Output.OMIT:
                self._fail(
                    item,
                    where,
                    f"the role sees {raw!r} as 'omit': searching it would test guesses"
                    " against values it may not see",
                )
            if _CLASS_NAMES[raw] in found:
                self._fail(item, where, f"duplicate field class {raw!r}")
            found.add(_CLASS_NAMES[raw])
        return frozenset(found)

    def _actions(self, node: yaml.Node, rule: str, never_plaintext: bool) -> set[Action]:
        actions: set[Action] = set()
        seen: set[str] = set()
        for index, item in self._sequence(node, rule):
            where = f"{rule}[{index}]"
            raw = self._scalar(item, where)
            if isinstance(raw, str) and raw in ACTION_WILDCARDS:
                granted = ACTION_WILDCARDS[raw]
            elif isinstance(raw, str) and raw in _ACTION_NAMES:
                granted = frozenset({_ACTION_NAMES[raw]})
            else:
                known = ", ".join([*_ACTION_NAMES, *ACTION_WILDCARDS])
                self._fail(item, where, f"unknown action {raw!r} (known: {known})")
            if raw in seen:
                self._fail(item, where, f"duplicate action {raw!r}")
            seen.add(raw)
            forbidden = granted & PLAINTEXT_ACTIONS
            if never_plaintext and forbidden:
                names = ", ".join(sorted(a.value for a in forbidden))
                self._fail(
                    item, where, f"{names} returns plaintext, but the role is never_plaintext"
                )
            actions |= granted
        return actions

    def _role_purposes(self, node: yaml.Node, rule: str, purposes: dict[str, Purpose]) -> list[str]:
        names: list[str] = []
        for index, item in self._sequence(node, rule):
            where = f"{rule}[{index}]"
            raw = self._scalar(item, where)
            if not isinstance(raw, str) or raw not in purposes:
                known = ", ".join(purposes) or "none defined"
                self._fail(item, where, f"unknown purpose {raw!r} (purposes: {known})")
            if raw in names:
                self._fail(item, where, f"duplicate purpose {raw!r}")
            names.append(raw)
        return names

    def _outputs(
        self,
        node: yaml.Node,
        rule: str,
        never_plaintext: bool,
        ceiling: dict[FieldClass, Output] | None = None,
    ) -> tuple[dict[FieldClass, Output], Output | None]:
        """Explicit outputs per class, and the ``"*"`` one if given.

        With a ``ceiling`` (a purpose override), a listed class may not exceed it: an override
        that "widens" is a misunderstanding worth stopping. ``"*"`` is only ever a cap.
        """
        explicit: dict[FieldClass, Output] = {}
        star: Output | None = None
        for key, key_node, value_node in self._mapping(node, rule):
            where = _key_path(rule, key)
            if key != _DEFAULT_KEY and key not in _CLASS_NAMES:
                known = ", ".join([*_CLASS_NAMES, _DEFAULT_KEY])
                self._fail(key_node, where, f"unknown field class {key!r} (known: {known})")
            raw = self._scalar(value_node, where)
            if not isinstance(raw, str) or raw not in _OUTPUT_NAMES:
                known = ", ".join(_OUTPUT_NAMES)
                self._fail(value_node, where, f"unknown output {raw!r} (known: {known})")
            output = _OUTPUT_NAMES[raw]
            if never_plaintext and output in REVEALING:
                self._fail(
                    value_node, where, f"{raw!r} reveals plaintext, but the role is never_plaintext"
                )
            if key == _DEFAULT_KEY:
                star = output
                continue
            field_class = _CLASS_NAMES[key]
            if ceiling is not None and OUTPUT_RANK[output] > OUTPUT_RANK[ceiling[field_class]]:
                self._fail(
                    value_node,
                    where,
                    f"{raw!r} would widen the role's {ceiling[field_class].value!r}"
                    " (purpose overrides may only lower outputs)",
                )
            explicit[field_class] = output
        return explicit, star

    def _overrides(
        self,
        node: yaml.Node,
        rule: str,
        base: dict[FieldClass, Output],
        role_purposes: list[str],
        never_plaintext: bool,
    ) -> dict[str, dict[FieldClass, Output]]:
        overrides: dict[str, dict[FieldClass, Output]] = {}
        for purpose, key_node, value_node in self._mapping(node, rule):
            where = _key_path(rule, purpose)
            if purpose not in role_purposes:
                known = ", ".join(role_purposes) or "none"
                self._fail(
                    key_node, where, f"{purpose!r} is not one of the role's purposes ({known})"
                )
            explicit, star = self._outputs(value_node, where, never_plaintext, ceiling=base)
            overrides[purpose] = {
                c: explicit[c] if c in explicit else at_most(base[c], star or base[c])
                for c in FieldClass
            }
        return overrides

    def _limits(self, node: yaml.Node, rule: str) -> Limits:
        values: dict[str, int | None] = {}
        for key, _, value_node in self._mapping(node, rule, _LIMIT_KEYS):
            where = f"{rule}.{key}"
            value = self._scalar(value_node, where)
            if type(value) is not int or value < 1:
                self._fail(value_node, where, f"must be a positive integer, not {value!r}")
            values[key] = value
        return Limits(**values)


class _NotScalar:
    """Stands for a mapping or list where a scalar was expected (fails every type check)."""

    def __repr__(self) -> str:
        return "a mapping or list"
