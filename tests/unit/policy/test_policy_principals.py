"""Principal names in a policy carry their kind (URI SAN, DNS SAN, API key): the loader refuses
names whose kind is unclear, and an entry matches only callers of its kind."""

from __future__ import annotations

import pytest

from vault.errors import ConfigError, PermissionDenied
from vault.identity import AuthMethod, Principal
from vault.policy import Action, Binding, Limits, Output, Policy, Role, parse_policy

TEMPLATE = """\
policy_version: 1
purposes: {{}}
principals:
  "apikey:agent": {{role: agent, tenants: ["*"]}}
  "{name}": {{role: agent, tenants: ["*"]}}
roles:
  agent:
    actions: [record.read]
"""


def policy_with(name: str) -> Policy:
    return parse_policy(TEMPLATE.format(name=name), "p.yaml")


@pytest.mark.parametrize(
    "name",
    [
        "spiffe://cvault.dev/backend-service",
        "urn:example:backend",
        "dns:backend.acme.internal",
        "dns:spiffe://cvault.dev/dpo",
        "apikey:ci-runner",
    ],
)
def test_names_of_every_kind_load(name: str) -> None:
    assert policy_with(name).principals[name] == "agent"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("backend.acme.internal", " (a DNS SAN: 'dns:backend.acme.internal')"),
        ("DNS:backend.acme.internal", ""),
        ("APIKEY:agent", ""),
        ("dns:", ""),
        ("apikey:", ""),
        ("spiffe:", ""),
        ("1x:backend", ""),
    ],
)
def test_names_of_unclear_kind_are_refused_with_file_line_and_rule(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        policy_with(name)
    assert str(err.value) == (
        f"p.yaml:5: principals.{name!r}: ambiguous or incomplete principal {name!r}: write a"
        " certificate's URI SAN as the URI with its scheme (spiffe://...), its DNS SAN as"
        f" dns:<DNS name>, or an API key as apikey:<key id>{hint}"
    )


@pytest.mark.parametrize(
    ("entry", "principal", "has_role"),
    [
        (
            "dns:backend.acme.internal",
            Principal("dns:backend.acme.internal", AuthMethod.MTLS),
            True,
        ),
        # the same name through an API key, or the DNS name without its type
        (
            "dns:backend.acme.internal",
            Principal("dns:backend.acme.internal", AuthMethod.API_KEY),
            False,
        ),
        ("dns:backend.acme.internal", Principal("backend.acme.internal", AuthMethod.MTLS), False),
        # a DNS SAN spelled like a SPIFFE id is not the URI
        (
            "spiffe://cvault.dev/dpo",
            Principal("dns:spiffe://cvault.dev/dpo", AuthMethod.MTLS),
            False,
        ),
        ("spiffe://cvault.dev/dpo", Principal("spiffe://cvault.dev/dpo", AuthMethod.MTLS), True),
        (
            "spiffe://cvault.dev/dpo",
            Principal("spiffe://cvault.dev/dpo", AuthMethod.API_KEY),
            False,
        ),
        ("apikey:ci", Principal("apikey:ci", AuthMethod.MTLS), False),
        ("apikey:ci", Principal("apikey:ci", AuthMethod.API_KEY), True),
    ],
)
def test_an_entry_matches_only_callers_of_its_kind(
    entry: str, principal: Principal, has_role: bool
) -> None:
    policy = policy_with(entry)
    if has_role:
        assert policy.role_of(principal).name == "agent"
        assert policy.check_action(principal, Action.RECORD_READ, tenant="t").name == "agent"
        return
    with pytest.raises(PermissionDenied) as err:
        policy.role_of(principal)
    assert err.value.reason == "unknown_principal"


def test_a_name_of_no_kind_matches_nothing_even_in_a_policy_built_in_code() -> None:
    # The loader never yields such an entry; a Policy built in code still cannot grant it.
    role = Role(
        name="agent",
        actions=frozenset({Action.RECORD_READ}),
        purposes=frozenset(),
        outputs={},
        default_output=Output.OMIT,
        limits=Limits(),
    )
    policy = Policy(
        source="code",
        version=1,
        purposes={},
        roles={"agent": role},
        principals={"backend.acme.internal": Binding("agent", frozenset({"*"}))},
    )
    for method in AuthMethod:
        with pytest.raises(PermissionDenied):
            policy.role_of(Principal("backend.acme.internal", method))
