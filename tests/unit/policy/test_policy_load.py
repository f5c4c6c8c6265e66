"""Loading policy files: the sample, and errors that name the file, the line and the rule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vault.errors import ConfigError
from vault.policy import (
    MAX_POLICY_BYTES,
    Action,
    Binding,
    Limits,
    Output,
    Policy,
    Purpose,
    Role,
    load_policy,
    parse_policy,
)
from vault.schema import FieldClass

SAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "policy" / "sample-policy.yaml"
ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")

# A small valid policy; the variants below change one thing in it. "#!" marks the line an
# error must name.
BASE = """\
policy_version: 1
purposes:
  support: {}
  marketing: {consent_required: true}
principals:
  "spiffe://t/agent": {role: agent, tenants: ["*"]}
  "apikey:agent": {role: agent, tenants: ["*"]}
roles:
  agent:
    actions: [record.read, record.find]
    purposes: [support, marketing]
    fields:
      email: masked
      name: plain
      "*": omit
    purpose_overrides:
      marketing: {name: token}
    limits: {plain_per_minute: 10, plain_per_day: 100}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.reason == "config_error"
    return info.value.message


def marked_line(text: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if "#!" in line]
    assert len(lines) == 1, "a variant marks exactly one line"
    return lines[0]


# -- the sample ---------------------------------------------------------------------------------


def test_sample_policy_loads() -> None:
    policy = load_policy(SAMPLE)
    assert policy.source == str(SAMPLE)
    assert policy.version == 1
    assert policy.digest == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert sorted(policy.roles) == sorted(ROLES)
    assert {name for name, p in policy.purposes.items() if p.consent_required} == {
        "marketing",
        "model-training",
    }
    for role in ROLES:
        assert policy.principals[f"spiffe://cvault.dev/{role}"] == role
        assert policy.principals[f"apikey:dev-{role}"] == role
    assert policy.principals["apikey:dev-other-backend-service"] == "backend-service"
    assert len(policy.principals) == 2 * len(ROLES) + 1
    # two tenants: the dev keys reach "demo", the other backend key "other" only
    assert policy.reaches("apikey:dev-backend-service", "demo")
    assert not policy.reaches("apikey:dev-backend-service", "other")
    assert policy.reaches("apikey:dev-other-backend-service", "other")
    assert not policy.reaches("apikey:dev-other-backend-service", "demo")
    assert policy.reaches("apikey:dev-key-admin", "any-tenant")


def test_sample_ai_pipeline_is_marked_never_plaintext() -> None:
    role = load_policy(SAMPLE).roles["ai-pipeline"]
    assert role.never_plaintext
    assert not role.may_reveal


def test_sample_admin_wildcard_expands_to_every_admin_action() -> None:
    role = load_policy(SAMPLE).roles["key-admin"]
    assert role.actions == {Action.ADMIN_KEYS, Action.ADMIN_AUDIT}


def test_base_policy_loads_with_defaults() -> None:
    policy = parse_policy(BASE, "base.yaml")
    role = policy.roles["agent"]
    assert role.outputs[FieldClass.EMAIL] is Output.MASKED
    assert role.outputs[FieldClass.PHONE] is Output.OMIT
    assert role.default_output is Output.OMIT
    assert role.purpose_outputs["marketing"][FieldClass.NAME] is Output.TOKEN
    assert role.limits == Limits(10, 100)
    assert policy.purpose("marketing") == Purpose("marketing", consent_required=True)
    assert policy.purpose("nope") is None


def test_optional_role_keys_default_to_nothing() -> None:
    text = BASE.split("roles:")[0] + "roles:\n  agent:\n    actions: []\n"
    role = parse_policy(text, "p.yaml").roles["agent"]
    assert role.actions == frozenset()
    assert role.purposes == frozenset()
    assert set(role.outputs.values()) == {Output.OMIT}
    assert role.limits == Limits(None, None)
    assert not role.never_plaintext


def test_empty_sections_are_allowed() -> None:
    policy = parse_policy("policy_version: 3\npurposes:\nprincipals: {}\nroles:\n", "p.yaml")
    assert policy.version == 3
    assert not policy.roles
    assert not policy.principals


# -- errors name file, line and rule ------------------------------------------------------------

# (id, old text in BASE, new text, rule path, part of the problem)
VARIANTS: list[tuple[str, str, str, str, str]] = [
    (
        "unknown-top-level-key",
        "principals:\n",
        "principal:  #!\n",
        "top level",
        "unknown key 'principal'",
    ),
    (
        "version-zero",
        "policy_version: 1",
        "policy_version: 0  #!",
        "policy_version",
        "integer >= 1",
    ),
    (
        "version-string",
        "policy_version: 1",
        "policy_version: '1'  #!",
        "policy_version",
        "integer >= 1",
    ),
    (
        "duplicate-top-level-key",
        "purposes:\n",
        "policy_version: 2  #!\npurposes:\n",
        "top level",
        "duplicate key 'policy_version'",
    ),
    (
        "unknown-purpose-key",
        "support: {}",
        "support: {consent: true}  #!",
        "purposes.support",
        "unknown key 'consent'",
    ),
    (
        "consent-required-not-bool",
        "marketing: {consent_required: true}",
        "marketing: {consent_required: 'yes'}  #!",
        "purposes.marketing.consent_required",
        "true or false",
    ),
    (
        "purpose-name-invalid",
        "support: {}",
        "Support: {}  #!",
        "purposes.'Support'",
        "purpose name 'Support' must match",
    ),
    (
        "duplicate-purpose",
        "  marketing: {consent_required: true}\n",
        "  marketing: {consent_required: true}\n  support: {}  #!\n",
        "purposes",
        "duplicate key 'support'",
    ),
    (
        "principal-unknown-role",
        '"apikey:agent": {role: agent, tenants: ["*"]}',
        '"apikey:agent": {role: agnet, tenants: ["*"]}  #!',
        "principals.'apikey:agent'.role",
        "unknown role 'agnet' (roles: agent)",
    ),
    (
        "principal-duplicate",
        '  "apikey:agent": {role: agent, tenants: ["*"]}\n',
        '  "apikey:agent": {role: agent, tenants: ["*"]}\n  "spiffe://t/agent": agent  #!\n',
        "principals",
        "duplicate key 'spiffe://t/agent'",
    ),
    (
        "principal-with-space",
        '"apikey:agent": {role: agent, tenants: ["*"]}',
        '"apikey:my agent": {role: agent, tenants: ["*"]}  #!',
        "principals.'apikey:my agent'",
        "without spaces",
    ),
    (
        "principal-empty-key-id",
        '"apikey:agent": {role: agent, tenants: ["*"]}',
        '"apikey:": {role: agent, tenants: ["*"]}  #!',
        "principals.'apikey:'",
        "apikey:<key id>",
    ),
    (
        "principal-short-form-without-tenants",
        '"apikey:agent": {role: agent, tenants: ["*"]}',
        '"apikey:agent": agent  #!',
        "principals.'apikey:agent'",
        "must be {role: <role>, tenants: [<tenant>, ...]}",
    ),
    (
        "principal-without-tenants",
        '"apikey:agent": {role: agent, tenants: ["*"]}',
        '"apikey:agent": {role: agent}  #!',
        "principals.'apikey:agent'.tenants",
        "missing (required)",
    ),
    (
        "principal-no-tenant",
        '"apikey:agent": {role: agent, tenants: ["*"]}',
        '"apikey:agent": {role: agent, tenants: []}  #!',
        "principals.'apikey:agent'.tenants",
        "must list at least one tenant",
    ),
    (
        "principal-bad-tenant",
        '"apikey:agent": {role: agent, tenants: ["*"]}',
        '"apikey:agent": {role: agent, tenants: ["a b"]}  #!',
        "principals.'apikey:agent'.tenants[0]",
        "is not a tenant name",
    ),
    (
        "principals-not-a-mapping",
        '  "spiffe://t/agent": {role: agent, tenants: ["*"]}\n  "apikey:agent": {role: agent, tenants: ["*"]}\n',
        '  - "spiffe://t/agent"  #!\n',
        "principals",
        "must be a mapping",
    ),
    (
        "role-name-invalid",
        "  agent:\n",
        "  Agent_X:  #!\n",
        "roles.'Agent_X'",
        "role name 'Agent_X' must match",
    ),
    (
        "unknown-role-key",
        "    limits:",
        "    output: {}  #!\n    limits:",
        "roles.agent",
        "unknown key 'output'",
    ),
    (
        "role-missing-actions",
        "  agent:\n    actions: [record.read, record.find]\n",
        "  agent:  #!\n",
        "roles.agent.actions",
        "missing (required",
    ),
    (
        "role-not-a-mapping",
        "  agent:\n    actions:",
        "  agent: [record.read]  #!\n  other:\n    actions:",
        "roles.agent",
        "must be a mapping",
    ),
    (
        "unknown-action",
        "actions: [record.read, record.find]",
        "actions: [record.reed, record.find]  #!",
        "roles.agent.actions[0]",
        "unknown action 'record.reed'",
    ),
    (
        "unknown-action-second-line",
        "actions: [record.read, record.find]",
        "actions:\n      - record.read\n      - token.reveel  #!",
        "roles.agent.actions[1]",
        "unknown action 'token.reveel'",
    ),
    (
        "record-wildcard-refused",
        "actions: [record.read, record.find]",
        "actions: [record.*]  #!",
        "roles.agent.actions[0]",
        "unknown action 'record.*'",
    ),
    (
        "duplicate-action",
        "actions: [record.read, record.find]",
        "actions: [record.read, record.read]  #!",
        "roles.agent.actions[1]",
        "duplicate action 'record.read'",
    ),
    (
        "actions-not-a-list",
        "actions: [record.read, record.find]",
        "actions: record.read  #!",
        "roles.agent.actions",
        "must be a list",
    ),
    (
        "action-not-a-string",
        "actions: [record.read, record.find]",
        "actions: [record.read, {x: 1}]  #!",
        "roles.agent.actions[1]",
        "unknown action a mapping or list",
    ),
    (
        "unknown-purpose-in-role",
        "purposes: [support, marketing]",
        "purposes: [support, marketting]  #!",
        "roles.agent.purposes[1]",
        "unknown purpose 'marketting' (purposes: support, marketing)",
    ),
    (
        "duplicate-purpose-in-role",
        "purposes: [support, marketing]",
        "purposes: [support, support]  #!",
        "roles.agent.purposes[1]",
        "duplicate purpose 'support'",
    ),
    (
        "unknown-field-class",
        "      email: masked\n",
        "      emial: masked  #!\n",
        "roles.agent.fields.emial",
        "unknown field class 'emial'",
    ),
    (
        "unknown-output",
        "      name: plain\n",
        "      name: visible  #!\n",
        "roles.agent.fields.name",
        "unknown output 'visible' (known: plain, masked, token, omit)",
    ),
    (
        "output-not-a-string",
        "      name: plain\n",
        "      name: true  #!\n",
        "roles.agent.fields.name",
        "unknown output True",
    ),
    (
        "fields-not-a-mapping",
        '    fields:\n      email: masked\n      name: plain\n      "*": omit\n',
        "    fields: [email]  #!\n",
        "roles.agent.fields",
        "must be a mapping",
    ),
    (
        "duplicate-field-class",
        "      name: plain\n",
        "      name: plain\n      email: token  #!\n",
        "roles.agent.fields",
        "duplicate key 'email'",
    ),
    (
        "override-widens",
        "marketing: {name: token}",
        "marketing: {email: plain}  #!",
        "roles.agent.purpose_overrides.marketing.email",
        "'plain' would widen the role's 'masked'",
    ),
    (
        "override-widens-omit",
        "marketing: {name: token}",
        "marketing: {phone: token}  #!",
        "roles.agent.purpose_overrides.marketing.phone",
        "'token' would widen the role's 'omit'",
    ),
    (
        "override-for-purpose-role-lacks",
        "marketing: {name: token}",
        "marketing: {name: token}\n      analytics: {}  #!",
        "roles.agent.purpose_overrides.analytics",
        "'analytics' is not one of the role's purposes (support, marketing)",
    ),
    (
        "override-unknown-class",
        "marketing: {name: token}",
        "marketing: {nmae: token}  #!",
        "roles.agent.purpose_overrides.marketing.nmae",
        "unknown field class 'nmae'",
    ),
    (
        "limit-zero",
        "limits: {plain_per_minute: 10, plain_per_day: 100}",
        "limits: {plain_per_minute: 0, plain_per_day: 100}  #!",
        "roles.agent.limits.plain_per_minute",
        "must be a positive integer, not 0",
    ),
    (
        "limit-negative",
        "plain_per_day: 100}",
        "plain_per_day: -5}  #!",
        "roles.agent.limits.plain_per_day",
        "must be a positive integer, not -5",
    ),
    (
        "limit-string",
        "plain_per_day: 100}",
        "plain_per_day: '100'}  #!",
        "roles.agent.limits.plain_per_day",
        "must be a positive integer",
    ),
    (
        "limit-bool",
        "plain_per_day: 100}",
        "plain_per_day: true}  #!",
        "roles.agent.limits.plain_per_day",
        "must be a positive integer, not True",
    ),
    (
        "limit-float",
        "plain_per_day: 100}",
        "plain_per_day: 1.5}  #!",
        "roles.agent.limits.plain_per_day",
        "must be a positive integer, not 1.5",
    ),
    (
        "limit-null",
        "plain_per_day: 100}",
        "plain_per_day: null}  #!",
        "roles.agent.limits.plain_per_day",
        "must be a positive integer, not None",
    ),
    (
        "unknown-limit-key",
        "plain_per_day: 100}",
        "plain_per_day: 100, reveals_per_hour: 5}  #!",
        "roles.agent.limits",
        "unknown key 'reveals_per_hour'",
    ),
    (
        "description-not-text",
        "    actions: [record.read, record.find]\n",
        "    description: [a]  #!\n    actions: [record.read, record.find]\n",
        "roles.agent.description",
        "must be a string",
    ),
    (
        "merge-key",
        "  agent:\n",
        "  agent:\n    <<: {actions: []}  #!\n",
        "roles.agent",
        "merge keys (<<) are not supported",
    ),
    (
        "python-tag",
        "policy_version: 1",
        "policy_version: !!python/name:os.system 1  #!",
        "policy_version",
        "could not determine a constructor",
    ),
    (
        "non-string-key",
        "  support: {}",
        "  1: {}  #!",
        "purposes",
        "keys must be strings",
    ),
    (
        "yaml-syntax",
        "      email: masked\n",
        "      email: masked: x  #!\n",
        "invalid YAML",
        "",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "rule", "problem"),
    [pytest.param(*v[1:], id=v[0]) for v in VARIANTS],
)
def test_load_error_names_file_line_and_rule(
    tmp_path: Path, old: str, new: str, rule: str, problem: str
) -> None:
    assert BASE.count(old) == 1
    text = BASE.replace(old, new)
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}:{marked_line(text)}: {rule}: "), message
    assert problem in message


# BASE with the agent marked never_plaintext, and only outputs such a role may have.
FLAGGED = (
    BASE.replace("      email: masked\n", "      email: token\n")
    .replace("      name: plain\n", "      name: token\n")
    .replace("marketing: {name: token}", "marketing: {name: omit}")
    .replace("    actions:", "    never_plaintext: true\n    actions:")
)

NEVER_PLAINTEXT_VARIANTS: list[tuple[str, str, str, str, str]] = [
    (
        "masked-field",
        "      email: token\n",
        "      email: masked  #!\n",
        "roles.agent.fields.email",
        "'masked' reveals plaintext, but the role is never_plaintext",
    ),
    (
        "plain-default",
        '      "*": omit\n',
        '      "*": plain  #!\n',
        "roles.agent.fields.'*'",
        "'plain' reveals plaintext, but the role is never_plaintext",
    ),
    (
        "masked-in-override",
        "marketing: {name: omit}",
        'marketing: {"*": masked}  #!',
        "roles.agent.purpose_overrides.marketing.'*'",
        "'masked' reveals plaintext, but the role is never_plaintext",
    ),
    (
        "token-reveal",
        "actions: [record.read, record.find]",
        "actions: [record.read, token.reveal]  #!",
        "roles.agent.actions[1]",
        "token.reveal returns plaintext, but the role is never_plaintext",
    ),
    (
        "export",
        "actions: [record.read, record.find]",
        "actions: [record.export]  #!",
        "roles.agent.actions[0]",
        "record.export returns plaintext, but the role is never_plaintext",
    ),
    (
        "flag-not-bool",
        "never_plaintext: true\n",
        "never_plaintext: 1  #!\n",
        "roles.agent.never_plaintext",
        "true or false",
    ),
]


def test_flagged_base_loads() -> None:
    role = parse_policy(FLAGGED, "flagged.yaml").roles["agent"]
    assert role.never_plaintext
    assert not role.may_reveal


@pytest.mark.parametrize(
    ("old", "new", "rule", "problem"),
    [pytest.param(*v[1:], id=v[0]) for v in NEVER_PLAINTEXT_VARIANTS],
)
def test_never_plaintext_refuses_plaintext(
    tmp_path: Path, old: str, new: str, rule: str, problem: str
) -> None:
    assert FLAGGED.count(old) == 1
    text = FLAGGED.replace(old, new)
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}:{marked_line(text)}: {rule}: "), message
    assert problem in message
    if "never_plaintext: 1" not in text:  # the same file without the flag is a valid policy
        parse_policy(text.replace("    never_plaintext: true\n", ""), "unflagged.yaml")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        pytest.param("", 1, "policy file is empty", id="empty"),
        pytest.param("# only a comment\n", 1, "policy file is empty", id="comment-only"),
        pytest.param("- a\n- b\n", 1, "top level: must be a mapping", id="top-level-list"),
        pytest.param(
            BASE.replace("policy_version: 1\n", ""),
            1,
            "policy_version: missing (required)",
            id="missing-version",
        ),
        pytest.param(
            BASE.replace("roles:", "rolez:"), 8, "top level: unknown key 'rolez'", id="typo-top"
        ),
        pytest.param(
            "policy_version: 1\n---\npolicy_version: 2\n",
            2,
            "invalid YAML: expected a single document",
            id="two-documents",
        ),
        pytest.param("policy_version: 1\n\x07\n", 2, "character U+0007", id="control-char"),
    ],
)
def test_whole_file_errors(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message


def test_missing_section_points_at_the_top_level(tmp_path: Path) -> None:
    text = "\n\npolicy_version: 1\npurposes: {}\nroles: {}\n"
    path = write(tmp_path, text)
    assert load_error(path) == f"{path}:3: principals: missing (required)"


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b"policy_version: 1\n\xff\xfe\n")
    assert load_error(path) == f"{path}: policy file is not UTF-8 text"


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_error(path) == f"{path}: cannot read policy file: No such file or directory"


def test_oversized_file(tmp_path: Path) -> None:
    path = write(tmp_path, "#" * (MAX_POLICY_BYTES + 1))
    assert load_error(path) == f"{path}: policy file larger than {MAX_POLICY_BYTES} bytes"


def test_utf8_bom_is_accepted() -> None:
    assert parse_policy(b"\xef\xbb\xbf" + BASE.encode(), "bom.yaml").version == 1


def test_aliases_are_shared_not_copied() -> None:
    text = (
        BASE.replace(
            "    purposes: [support, marketing]",
            "    purposes: &p [support, marketing]",
        )
        + "  other:\n    actions: []\n    purposes: *p\n"
    )
    policy = parse_policy(text, "alias.yaml")
    assert policy.roles["other"].purposes == {"support", "marketing"}


def test_star_in_override_caps_every_class_not_listed() -> None:
    text = BASE.replace(
        '      email: masked\n      name: plain\n      "*": omit\n',
        "      email: plain\n      name: plain\n      phone: masked\n      address: token\n",
    ).replace("marketing: {name: token}", 'marketing: {name: omit, "*": masked}')
    role = parse_policy(text, "p.yaml").roles["agent"]
    got = role.purpose_outputs["marketing"]
    assert got[FieldClass.EMAIL] is Output.MASKED  # capped
    assert got[FieldClass.NAME] is Output.OMIT  # listed
    assert got[FieldClass.PHONE] is Output.MASKED  # already at the cap
    assert got[FieldClass.ADDRESS] is Output.TOKEN  # below the cap: "*" never raises
    assert got[FieldClass.IBAN] is Output.OMIT


# -- the same invariants hold for objects built in code -----------------------------------------


def _role(**changes: object) -> Role:
    args: dict[str, object] = {
        "name": "r",
        "actions": frozenset({Action.RECORD_READ}),
        "purposes": frozenset({"support"}),
        "outputs": {FieldClass.EMAIL: Output.MASKED},
        "default_output": Output.OMIT,
        "limits": Limits(),
    }
    args.update(changes)
    return Role(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"never_plaintext": True}, id="never-plaintext-masked"),
        pytest.param(
            {"never_plaintext": True, "outputs": {}, "default_output": Output.PLAIN},
            id="never-plaintext-default",
        ),
        pytest.param(
            {
                "never_plaintext": True,
                "outputs": {},
                "actions": frozenset({Action.TOKEN_REVEAL}),
            },
            id="never-plaintext-reveal",
        ),
        pytest.param(
            {"purpose_outputs": {"support": {FieldClass.EMAIL: Output.PLAIN}}}, id="widening"
        ),
        pytest.param(
            {"purpose_outputs": {"other": {FieldClass.EMAIL: Output.TOKEN}}}, id="foreign-purpose"
        ),
    ],
)
def test_role_refuses_broken_invariants(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="role 'r'"):
        _role(**changes)


def test_role_outputs_are_read_only_and_complete() -> None:
    outputs = {FieldClass.EMAIL: Output.MASKED}
    role = _role(outputs=outputs)
    outputs[FieldClass.EMAIL] = Output.PLAIN
    assert role.outputs[FieldClass.EMAIL] is Output.MASKED
    assert set(role.outputs) == set(FieldClass)
    with pytest.raises(TypeError):
        role.outputs[FieldClass.EMAIL] = Output.PLAIN  # type: ignore[index]


@pytest.mark.parametrize("value", [0, -1, True, 1.0])
def test_limits_refuse_non_positive_ints(value: object) -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(plain_per_minute=value)  # type: ignore[arg-type]


def test_policy_refuses_dangling_references() -> None:
    role = _role()
    with pytest.raises(ValueError, match="unknown purpose"):
        Policy(source="x", version=1, purposes={}, roles={"r": role}, principals={})
    with pytest.raises(ValueError, match="unknown role"):
        Policy(
            source="x",
            version=1,
            purposes={"support": Purpose("support")},
            roles={"r": role},
            principals={"apikey:x": Binding("nope", frozenset({"*"}))},
        )
