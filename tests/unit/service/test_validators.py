"""The shared request validators match whole strings: a final newline is not a tenant (issue
16: ``"demo\\n"`` passed a ``$``-anchored pattern and failed later as INTERNAL)."""

from __future__ import annotations

import pytest

from vault.errors import InvalidInput
from vault.service.validators import (
    GRANT_RE,
    PRINCIPAL_RE,
    check_record_id,
    check_scope,
    check_tenant,
    matches,
)

RECORD_ID = "0192f3a4-5b6c-7d8e-9f01-23456789abcd"
ENDINGS = ["\n", "\r\n", "\x00", " ", "\u2028"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_tenant_with_a_trailing_character_is_refused(ending: str) -> None:
    assert check_tenant("demo") == "demo"
    with pytest.raises(InvalidInput) as info:
        check_tenant("demo" + ending)
    assert info.value.field == "tenant"
    assert "demo" not in info.value.message


@pytest.mark.parametrize("ending", ENDINGS)
def test_record_id_scope_and_grant_match_whole_strings(ending: str) -> None:
    assert check_record_id(RECORD_ID) == RECORD_ID
    with pytest.raises(InvalidInput) as info:
        check_record_id(RECORD_ID + ending, "items[2].record_id")
    assert info.value.field == "items[2].record_id"
    with pytest.raises(InvalidInput) as info:
        check_scope("chat-1" + ending, "items[0].scope")
    assert info.value.field == "items[0].scope"
    assert check_scope("") == ""
    assert matches(GRANT_RE, "grt_" + "a" * 22)
    assert not matches(GRANT_RE, "grt_" + "a" * 22 + ending)
    assert not matches(PRINCIPAL_RE, "apikey:dev" + ending)


def test_matches_refuses_what_is_not_a_string() -> None:
    assert not matches(GRANT_RE, None)
    assert not matches(GRANT_RE, b"grt_" + b"a" * 22)
