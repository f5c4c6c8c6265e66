"""Decisions over the sample policy: default deny, actions, purposes, outputs per field class."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from vault.errors import InvalidInput, PermissionDenied
from vault.identity import AuthMethod, Principal
from vault.policy import (
    FIELD_NOT_ALLOWED,
    FIELD_NOT_ALLOWED_FOR_PURPOSE,
    PURPOSE_MISSING,
    Action,
    FieldDecision,
    Output,
    Policy,
    load_policy,
    parse_policy,
)
from vault.schema import FieldClass

SAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "policy" / "sample-policy.yaml"

# X: omitted
P, M, T, X = Output.PLAIN, Output.MASKED, Output.TOKEN, Output.OMIT
# Column order of the table below.
CLASSES = (
    FieldClass.EMAIL,
    FieldClass.PHONE,
    FieldClass.NAME,
    FieldClass.ADDRESS,
    FieldClass.DATE_OF_BIRTH,
    FieldClass.NATIONAL_ID,
    FieldClass.CARD_NUMBER,
    FieldClass.IBAN,
    FieldClass.FREE_TEXT,
)
# Every role x every permitted purpose -> exactly what each field class comes back as.
#                                   email phone name addr dob natid card iban text
EXPECTED: dict[str, dict[str, tuple[Output, ...]]] = {
    "backend-service": {
        "account-management":  (P, P, P, P, P, M, M, M, P),
        "marketing":           (P, X, P, X, X, X, X, X, X),
    },
    "support-agent": {
        "customer-support":    (M, M, P, T, M, X, M, M, P),
    },
    "ai-pipeline": {
        "analytics":           (T, T, T, T, T, X, X, X, X),
        "model-training":      (T, T, T, X, X, X, X, X, X),
    },
    "fraud-analyst": {
        "fraud-investigation": (P, P, P, P, M, M, M, M, P),
    },
    "dpo": {
        "dsar":                (P, P, P, P, P, P, P, P, P),
    },
    "key-admin": {
        "key-management":      (X, X, X, X, X, X, X, X, X),
    },
}  # fmt: skip
# The role's outputs before any purpose override (the purpose without one).
BASE_PURPOSE = {
    "backend-service": "account-management",
    "support-agent": "customer-support",
    "ai-pipeline": "analytics",
    "fraud-analyst": "fraud-investigation",
    "dpo": "dsar",
    "key-admin": "key-management",
}
# Every role x every action it may perform (everything else is refused).
ACTIONS: dict[str, set[Action]] = {
    "backend-service": {
        Action.RECORD_WRITE,
        Action.RECORD_READ,
        Action.RECORD_FIND,
        Action.RECORD_ERASE,
        Action.TOKEN_CREATE,
        Action.TOKEN_REVEAL,
        Action.TEXT_REVEAL,
        Action.CONSENT_WRITE,
    },
    "support-agent": {
        Action.RECORD_READ,
        Action.RECORD_FIND,
        Action.TEXT_REVEAL,
        Action.GRANT_ISSUE,
    },
    "ai-pipeline": {Action.RECORD_READ, Action.RECORD_FIND, Action.TOKEN_CREATE},
    "fraud-analyst": {
        Action.RECORD_READ,
        Action.RECORD_FIND,
        Action.TOKEN_REVEAL,
        Action.TEXT_REVEAL,
    },
    "dpo": {
        Action.RECORD_READ,
        Action.RECORD_FIND,
        Action.EXPORT,
        Action.RECORD_ERASE,
        Action.CONSENT_WRITE,
        Action.AUDIT_READ,
    },
    "key-admin": {Action.ADMIN_KEYS, Action.ADMIN_AUDIT},
}
CONSENT_BOUND = {"marketing", "model-training"}
# One field per class, named after it, plus a second field of a class (names are per field).
FIELDS = {c.value: c for c in CLASSES} | {"work_email": FieldClass.EMAIL}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(SAMPLE)


def mtls(role: str) -> Principal:
    return Principal(f"spiffe://cvault.dev/{role}", AuthMethod.MTLS)


def api_key(role: str) -> Principal:
    return Principal(f"apikey:dev-{role}", AuthMethod.API_KEY)


def test_tables_cover_the_sample(policy: Policy) -> None:
    assert set(EXPECTED) == set(policy.roles) == set(ACTIONS)
    for role_name, by_purpose in EXPECTED.items():
        assert set(by_purpose) == policy.roles[role_name].purposes
    assert {n for n, p in policy.purposes.items() if p.consent_required} == CONSENT_BOUND


# -- default deny -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "principal",
    [
        Principal("spiffe://cvault.dev/stranger", AuthMethod.MTLS),
        Principal("apikey:dev-stranger", AuthMethod.API_KEY),
        Principal("", AuthMethod.MTLS),
        Principal("spiffe://cvault.dev/DPO", AuthMethod.MTLS),  # exact match only
        # a known name presented through the other method: a certificate with the URI SAN
        # "apikey:dev-dpo" must not get the API key's role, nor an API key named like a SAN
        Principal("apikey:dev-dpo", AuthMethod.MTLS),
        Principal("spiffe://cvault.dev/dpo", AuthMethod.API_KEY),
    ],
    ids=lambda p: f"{p.method}:{p.name}",
)
def test_unknown_principal_is_denied_everything(policy: Policy, principal: Principal) -> None:
    with pytest.raises(PermissionDenied) as info:
        policy.role_of(principal)
    assert info.value.reason == "unknown_principal"
    for action in Action:
        with pytest.raises(PermissionDenied) as info:
            policy.check_action(principal, action, tenant="demo")
        assert info.value.reason == "unknown_principal"
    with pytest.raises(PermissionDenied) as info:
        policy.decide(
            principal, Action.RECORD_READ, None, FIELDS, purpose_required=False, tenant="demo"
        )
    assert info.value.reason == "unknown_principal"


@pytest.mark.parametrize("role", sorted(ACTIONS))
@pytest.mark.parametrize("make", [mtls, api_key], ids=["mtls", "api_key"])
def test_both_principal_forms_map_to_the_role(
    policy: Policy, role: str, make: Callable[[str], Principal]
) -> None:
    assert policy.role_of(make(role)).name == role


@pytest.mark.parametrize(("role", "action"), list(itertools.product(sorted(ACTIONS), list(Action))))
def test_action_matrix(policy: Policy, role: str, action: Action) -> None:
    if action in ACTIONS[role]:
        assert policy.check_action(mtls(role), action, tenant="demo").name == role
    else:
        with pytest.raises(PermissionDenied) as info:
            policy.check_action(mtls(role), action, tenant="demo")
        assert info.value.reason == "action_not_allowed"
        assert role in info.value.message


# -- purposes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_purpose_required_but_missing(policy: Policy, role: str) -> None:
    for missing in (None, ""):
        with pytest.raises(InvalidInput) as info:
            policy.check_purpose(policy.roles[role], missing, required=True)
        assert info.value.field == "purpose"
        assert info.value.message == "purpose: is required"
    assert policy.check_purpose(policy.roles[role], None, required=False) is None


@pytest.mark.parametrize("required", [True, False])
def test_unknown_purpose_is_invalid_input_without_echo(policy: Policy, required: bool) -> None:
    with pytest.raises(InvalidInput) as info:
        policy.check_purpose(policy.roles["dpo"], "curiosity<script>", required=required)
    assert info.value.field == "purpose"
    assert "curiosity" not in info.value.message


@pytest.mark.parametrize(
    ("role", "purpose"),
    [
        (role, purpose)
        for role in sorted(EXPECTED)
        for purpose in sorted(
            {
                "account-management",
                "customer-support",
                "fraud-investigation",
                "analytics",
                "marketing",
                "model-training",
                "dsar",
                "key-management",
            }
        )
    ],
)
def test_purpose_matrix(policy: Policy, role: str, purpose: str) -> None:
    found = policy.purpose(purpose)
    assert found is not None
    if purpose in EXPECTED[role]:
        assert policy.check_purpose(policy.roles[role], purpose, required=True) == found
        assert found.consent_required == (purpose in CONSENT_BOUND)
    else:
        with pytest.raises(PermissionDenied) as info:
            policy.check_purpose(policy.roles[role], purpose, required=True)
        assert info.value.reason == "purpose_not_allowed"
        # outputs() checks it too: no way around the check
        with pytest.raises(PermissionDenied):
            policy.outputs(policy.roles[role], purpose, FIELDS)


# -- outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "purpose", "field_class"),
    [
        (role, purpose, field_class)
        for role, by_purpose in EXPECTED.items()
        for purpose in by_purpose
        for field_class in CLASSES
    ],
)
def test_output_matrix(policy: Policy, role: str, purpose: str, field_class: FieldClass) -> None:
    expected = EXPECTED[role][purpose][CLASSES.index(field_class)]
    base = EXPECTED[role][BASE_PURPOSE[role]][CLASSES.index(field_class)]
    got = policy.outputs(policy.roles[role], purpose, {"f": field_class})
    if expected is not X:
        reason = ""
    elif base is X:
        reason = FIELD_NOT_ALLOWED
    else:
        reason = FIELD_NOT_ALLOWED_FOR_PURPOSE
    assert got == {"f": FieldDecision(expected, reason)}


@pytest.mark.parametrize(("role", "field_class"), list(itertools.product(EXPECTED, CLASSES)))
def test_without_purpose_plain_and_masked_become_token(
    policy: Policy, role: str, field_class: FieldClass
) -> None:
    base = EXPECTED[role][BASE_PURPOSE[role]][CLASSES.index(field_class)]
    expected = {
        P: FieldDecision(T, PURPOSE_MISSING),
        M: FieldDecision(T, PURPOSE_MISSING),
        T: FieldDecision(T),
        X: FieldDecision(X, FIELD_NOT_ALLOWED),
    }[base]
    for no_purpose in (None, ""):
        got = policy.outputs(policy.roles[role], no_purpose, {"f": field_class})
        assert got == {"f": expected}


def test_outputs_are_per_field_name(policy: Policy) -> None:
    got = policy.outputs(policy.roles["backend-service"], "marketing", FIELDS)
    assert set(got) == set(FIELDS)
    assert got["work_email"] == got["email"] == FieldDecision(P)
    assert policy.outputs(policy.roles["dpo"], "dsar", {}) == {}


@pytest.mark.parametrize("purpose", [None, "analytics", "model-training"])
def test_ai_pipeline_never_gets_plaintext(policy: Policy, purpose: str | None) -> None:
    role = policy.role_of(mtls("ai-pipeline"))
    got = policy.outputs(role, purpose, FIELDS)
    assert {d.output for d in got.values()} <= {T, X}
    for action in (Action.TOKEN_REVEAL, Action.EXPORT):
        with pytest.raises(PermissionDenied):
            policy.check_action(mtls("ai-pipeline"), action, tenant="demo")


def test_ai_pipeline_is_refused_every_other_purpose(policy: Policy) -> None:
    role = policy.roles["ai-pipeline"]
    for purpose in set(policy.purposes) - role.purposes:
        with pytest.raises(PermissionDenied):
            policy.outputs(role, purpose, FIELDS)


# -- decide: the checks in order ----------------------------------------------------------------


def test_decide_reports_consent_bound_purposes(policy: Policy) -> None:
    decision = policy.decide(
        mtls("backend-service"), Action.RECORD_READ, "marketing", FIELDS, tenant="demo"
    )
    assert decision.role == "backend-service"
    assert decision.needs_consent == "marketing"
    assert decision.purpose == "marketing"
    assert decision.outputs["phone"] == FieldDecision(X, FIELD_NOT_ALLOWED_FOR_PURPOSE)
    plain = policy.decide(
        mtls("backend-service"), Action.RECORD_READ, "account-management", {}, tenant="demo"
    )
    assert plain.needs_consent is None
    assert plain.purpose == "account-management"


def test_decide_without_purpose_when_not_required(policy: Policy) -> None:
    decision = policy.decide(
        api_key("support-agent"),
        Action.RECORD_FIND,
        None,
        FIELDS,
        purpose_required=False,
        tenant="demo",
    )
    assert decision.purpose is None
    assert decision.needs_consent is None
    assert decision.outputs["email"] == FieldDecision(T, PURPOSE_MISSING)
    assert decision.outputs["national_id"] == FieldDecision(X, FIELD_NOT_ALLOWED)


def test_decide_checks_action_before_purpose(policy: Policy) -> None:
    # a refused action is reported as such, even with a bad purpose (which would say more)
    with pytest.raises(PermissionDenied) as info:
        policy.decide(
            mtls("support-agent"), Action.RECORD_ERASE, "no-such-purpose", FIELDS, tenant="demo"
        )
    assert info.value.reason == "action_not_allowed"
    with pytest.raises(InvalidInput):
        policy.decide(mtls("support-agent"), Action.RECORD_READ, None, FIELDS, tenant="demo")
    with pytest.raises(PermissionDenied) as info:
        policy.decide(mtls("support-agent"), Action.RECORD_READ, "dsar", FIELDS, tenant="demo")
    assert info.value.reason == "purpose_not_allowed"


def test_decision_is_read_only(policy: Policy) -> None:
    decision = policy.decide(mtls("dpo"), Action.EXPORT, "dsar", FIELDS, tenant="demo")
    with pytest.raises(TypeError):
        decision.outputs["email"] = FieldDecision(X)  # type: ignore[index]


def test_a_policy_with_no_principals_denies_everyone() -> None:
    policy = parse_policy(
        "policy_version: 1\npurposes: {}\nprincipals: {}\nroles:\n"
        "  r: {actions: [record.read], fields: {'*': plain}}\n",
        "p.yaml",
    )
    with pytest.raises(PermissionDenied):
        policy.check_action(mtls("r"), Action.RECORD_READ, tenant="demo")


def test_a_principal_reaches_only_its_tenants(policy: Policy) -> None:
    """Tenant scoping (issue 11): the sample's dev keys reach "demo", the other backend key
    "other" only; any other tenant is tenant_not_allowed for every action, checked before the
    action (another tenant's caller learns nothing about the role). Before, every principal
    reached every tenant by naming it."""
    other = api_key("other-backend-service")
    assert policy.check_action(other, Action.RECORD_READ, tenant="other").name == "backend-service"
    for who, tenant in ((other, "demo"), (api_key("backend-service"), "other")):
        for action in Action:
            with pytest.raises(PermissionDenied) as info:
                policy.check_action(who, action, tenant=tenant)
            assert info.value.reason == "tenant_not_allowed"
    with pytest.raises(PermissionDenied) as info:
        policy.check_action(other, Action.ADMIN_KEYS, tenant="other")
    assert info.value.reason == "action_not_allowed"
    assert policy.check_action(mtls("key-admin"), Action.ADMIN_KEYS, tenant="x").name == "key-admin"
