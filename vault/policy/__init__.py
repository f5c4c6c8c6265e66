"""The access policy: who may do what, for which purpose, and see which fields in which form.

A policy file (YAML, owned by the operator) maps principals to roles; a role lists actions,
purposes, the output per field class (``plain``, ``masked``, ``token``, ``omit``) and limits.
Default deny. Format, decision rules and masks: ``deploy/policy/README.md``; a complete example:
``deploy/policy/sample-policy.yaml``.

- :func:`load_policy` reads and checks a file (errors name file, line and rule);
- :class:`Policy` answers questions (``check_action``, ``check_purpose``, ``outputs``, ``decide``,
  ``check_deterministic`` for token scopes, ``check_search``);
- :class:`PolicyHolder` keeps the current policy of a server, reloaded on SIGHUP and on change;
- :func:`mask` gives the ``masked`` form of a canonical value.
"""

from vault.policy._holder import PolicyHolder
from vault.policy._load import MAX_POLICY_BYTES, load_policy, parse_policy
from vault.policy._masks import mask
from vault.policy._model import (
    ACTION_WILDCARDS,
    ALL_TENANTS,
    FIELD_NOT_ALLOWED,
    FIELD_NOT_ALLOWED_FOR_PURPOSE,
    OUTPUT_RANK,
    PURPOSE_MISSING,
    SEARCH_NOT_ALLOWED,
    TENANT_NOT_ALLOWED,
    TENANT_RE,
    TOKEN_SCOPE_NOT_ALLOWED,
    TOKEN_SCOPE_SHARED,
    Action,
    Binding,
    Decision,
    FieldDecision,
    Limits,
    Output,
    Policy,
    Purpose,
    Role,
)

__all__ = [
    "ACTION_WILDCARDS",
    "ALL_TENANTS",
    "FIELD_NOT_ALLOWED",
    "FIELD_NOT_ALLOWED_FOR_PURPOSE",
    "MAX_POLICY_BYTES",
    "OUTPUT_RANK",
    "PURPOSE_MISSING",
    "SEARCH_NOT_ALLOWED",
    "TENANT_NOT_ALLOWED",
    "TENANT_RE",
    "TOKEN_SCOPE_NOT_ALLOWED",
    "TOKEN_SCOPE_SHARED",
    "Action",
    "Binding",
    "Decision",
    "FieldDecision",
    "Limits",
    "Output",
    "Policy",
    "PolicyHolder",
    "Purpose",
    "Role",
    "load_policy",
    "mask",
    "parse_policy",
]
