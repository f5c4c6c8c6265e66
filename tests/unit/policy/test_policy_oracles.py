"""Token scopes and search permissions: the policy rules that close the guessing oracles
(deterministic tokens in another role's scope, searches on classes a role does not see)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.errors import ConfigError, PermissionDenied
from vault.policy import (
    SEARCH_NOT_ALLOWED,
    TOKEN_SCOPE_NOT_ALLOWED,
    TOKEN_SCOPE_SHARED,
    Action,
    Limits,
    Output,
    Policy,
    Role,
    load_policy,
    parse_policy,
)
from vault.policy._scopes import compile_scopes, scope_matches
from vault.schema import FieldClass

SAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "policy" / "sample-policy.yaml"

HEAD = """policy_version: 1
purposes: {p: {}}
principals: {}
roles:
"""


def _policy(roles: str) -> Policy:
    return parse_policy(HEAD + roles, "policy.yaml")


def _refused(src: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _policy(src)
    return str(caught.value)


# --- patterns -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "scope", "matches"),
    [
        (["chat-*"], "chat-1", True),
        (["chat-*"], "chat-", True),
        (["chat-*"], "xchat-1", False),
        (["chat-*"], "", False),
        (["*"], "", True),
        (["*"], "anything.at:all", True),
        ([""], "", True),
        ([""], "a", False),
        (["a.b"], "a.b", True),
        (["a.b"], "axb", False),  # '.' is literal, not a regex wildcard
        (["a*b*c"], "a-x-b-y-c", True),
        (["a*b*c"], "a-x-b-y", False),
        ([], "", False),
        (["x-*", "y"], "y", True),
    ],
)
def test_scope_patterns(patterns: list[str], scope: str, matches: bool) -> None:
    assert scope_matches(compile_scopes(patterns), scope) is matches


@pytest.mark.parametrize("bad", ["chat 1", "a|b", "(x)", "a" * 65, "é"])
def test_a_pattern_holds_only_scope_characters(bad: str) -> None:
    with pytest.raises(ValueError, match="scope pattern"):
        compile_scopes([bad])


# --- the sample policy ---------------------------------------------------------------------------


def test_sample_roles_own_disjoint_scopes() -> None:
    policy = load_policy(SAMPLE)
    ai, backend = policy.roles["ai-pipeline"], policy.roles["backend-service"]
    assert policy.scope_owners("chat-42") == {"ai-pipeline"}
    assert policy.scope_owners("ai-training") == {"ai-pipeline"}
    assert policy.scope_owners("") == {"backend-service"}
    assert policy.scope_owners("backend-crm") == {"backend-service"}
    assert policy.scope_owners("nobody's") == frozenset()
    for cls in FieldClass:
        policy.check_deterministic(ai, cls, "chat-42")
        policy.check_deterministic(backend, cls, "backend-crm")
    # roles without token.create own nothing, whatever they list
    assert not any(policy.roles[r].token_scopes for r in ("support-agent", "dpo", "key-admin"))


def test_sample_ai_pipeline_may_not_tokenize_into_backend_scopes() -> None:
    """The attack of issue 10: deterministic dates of birth into backend-service's scope."""
    policy = load_policy(SAMPLE)
    ai = policy.roles["ai-pipeline"]
    for scope in ("", "backend-crm"):
        with pytest.raises(PermissionDenied) as caught:
            policy.check_deterministic(ai, FieldClass.DATE_OF_BIRTH, scope)
        assert caught.value.reason == TOKEN_SCOPE_NOT_ALLOWED
        assert "backend-crm" not in str(caught.value)


def test_sample_ai_pipeline_searches_no_class_it_omits() -> None:
    policy = load_policy(SAMPLE)
    for role in policy.roles.values():
        for cls in role.search:
            assert role.outputs[cls] is not Output.OMIT, (role.name, cls)
        if role.search:
            assert Action.RECORD_FIND in role.actions
    ai = policy.roles["ai-pipeline"]
    policy.check_search(ai, [FieldClass.EMAIL, FieldClass.PHONE])
    with pytest.raises(PermissionDenied) as caught:
        policy.check_search(ai, [FieldClass.EMAIL, FieldClass.NATIONAL_ID])
    assert caught.value.reason == SEARCH_NOT_ALLOWED
    assert "national_id" in str(caught.value)
    assert ai.limits.searches_per_minute is not None


# --- shared scopes -------------------------------------------------------------------------------


SHARED = """  writer:
    actions: [token.create]
    fields: {email: plain, date_of_birth: masked, "*": omit}
    token_scopes: ["shared-*", "writer-*"]
  reader:
    actions: [token.create]
    fields: {email: plain, "*": token}
    token_scopes: ["shared-*", "reader"]
  finder:
    actions: [record.find]
    fields: {email: plain}
    token_scopes: ["*"]
"""


def test_token_scopes_need_token_create() -> None:
    assert "roles.finder.token_scopes: needs the action token.create" in _refused(SHARED)


def test_a_shared_scope_takes_only_classes_the_role_sees_plain_or_masked() -> None:
    policy = _policy(SHARED.replace('    token_scopes: ["*"]\n', ""))
    writer, reader = policy.roles["writer"], policy.roles["reader"]
    assert policy.scope_owners("shared-1") == {"writer", "reader"}
    # plain or masked: no oracle needed, allowed in a shared scope
    policy.check_deterministic(writer, FieldClass.DATE_OF_BIRTH, "shared-1")
    policy.check_deterministic(reader, FieldClass.EMAIL, "shared-1")
    for cls in (FieldClass.DATE_OF_BIRTH, FieldClass.NATIONAL_ID):
        with pytest.raises(PermissionDenied) as caught:
            policy.check_deterministic(reader, cls, "shared-1")
        assert caught.value.reason == TOKEN_SCOPE_SHARED
    with pytest.raises(PermissionDenied) as caught:
        policy.check_deterministic(writer, FieldClass.NATIONAL_ID, "shared-1")
    assert caught.value.reason == TOKEN_SCOPE_SHARED
    # in a scope of its own, any class (only its own tokens are there)
    policy.check_deterministic(reader, FieldClass.DATE_OF_BIRTH, "reader")
    policy.check_deterministic(writer, FieldClass.NATIONAL_ID, "writer-x")
    with pytest.raises(PermissionDenied) as caught:
        policy.check_deterministic(reader, FieldClass.EMAIL, "writer-x")
    assert caught.value.reason == TOKEN_SCOPE_NOT_ALLOWED


def test_no_token_scopes_no_deterministic_tokens() -> None:
    policy = _policy("  r:\n    actions: [token.create]\n    fields: {'*': plain}\n")
    with pytest.raises(PermissionDenied) as caught:
        policy.check_deterministic(policy.roles["r"], FieldClass.EMAIL, "")
    assert caught.value.reason == TOKEN_SCOPE_NOT_ALLOWED


# --- loader errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "message"),
    [
        (
            "    actions: [token.create]\n    token_scopes: ['chat 1']\n",
            "roles.r.token_scopes[0]: 'chat 1' is not a scope pattern",
        ),
        (
            "    actions: [token.create]\n    token_scopes: [a, a]\n",
            "roles.r.token_scopes[1]: duplicate scope pattern 'a'",
        ),
        (
            "    actions: [token.create]\n    token_scopes: a\n",
            "roles.r.token_scopes: must be a list",
        ),
        (
            "    actions: [record.read]\n    fields: {'*': plain}\n    search: [email]\n",
            "roles.r.search: needs the action record.find",
        ),
        (
            "    actions: [record.find]\n    fields: {email: token}\n    search: [national_id]\n",
            "roles.r.search[0]: the role sees 'national_id' as 'omit'",
        ),
        (
            "    actions: [record.find]\n    fields: {'*': token}\n    search: [emial]\n",
            "roles.r.search[0]: unknown field class 'emial'",
        ),
        (
            "    actions: [record.find]\n    fields: {'*': token}\n    search: [email, email]\n",
            "roles.r.search[1]: duplicate field class 'email'",
        ),
        (
            "    actions: []\n    limits: {searches_per_minute: 0}\n",
            "roles.r.limits.searches_per_minute: must be a positive integer",
        ),
    ],
)
def test_loader_refuses(role: str, message: str) -> None:
    assert message in _refused("  r:\n" + role)


def test_search_star_is_every_class_the_role_does_not_omit() -> None:
    policy = _policy(
        "  r:\n    actions: [record.find]\n    fields: {email: token, phone: masked}\n"
        "    search: ['*']\n    limits: {searches_per_minute: 5, searches_per_day: 50}\n"
    )
    role = policy.roles["r"]
    assert role.search == {FieldClass.EMAIL, FieldClass.PHONE}
    assert (role.limits.searches_per_minute, role.limits.searches_per_day) == (5, 50)


def test_a_role_built_in_code_cannot_search_what_it_omits() -> None:
    with pytest.raises(ValueError, match="omit"):
        Role(
            name="r",
            actions=frozenset({Action.RECORD_FIND}),
            purposes=frozenset(),
            outputs={FieldClass.EMAIL: Output.TOKEN},
            default_output=Output.OMIT,
            limits=Limits(),
            search=frozenset({FieldClass.NATIONAL_ID}),
        )
