"""Token-scope patterns: where a role may create deterministic tokens.

A deterministic token is the same string for the same value in the same tenant and scope, so a
caller that may create deterministic tokens in a scope can test guesses against every token of
that scope (tokenize each candidate, compare). A role therefore lists the scopes it may create
deterministic tokens in (``token_scopes``), as patterns:

- ``*`` stands for any run of scope characters, including none (``"chat-*"``, ``"*"``);
- every other character is literal (scopes are 1-64 of ``A-Z a-z 0-9 _ . : -``);
- ``""`` (the empty pattern) is the default scope, the one a call gets when it names none;
  ``"*"`` matches it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

#: A pattern as the policy file may write it.
SCOPE_PATTERN_RE: Final = re.compile(r"[A-Za-z0-9_.:*-]{0,64}")


def compile_scopes(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression matching (whole) every scope one of ``patterns`` matches;
    ``None`` for no pattern (matches nothing).

    Raises:
        ValueError: a pattern with characters a scope cannot hold, or longer than 64.
    """
    parts: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not SCOPE_PATTERN_RE.fullmatch(pattern):
            raise ValueError("a token scope pattern must be 0-64 of A-Z a-z 0-9 _ . : - *")
        parts.append(".*".join(re.escape(piece) for piece in pattern.split("*")))
    if not parts:
        return None
    return re.compile("|".join(f"(?:{p})" for p in parts))


def scope_matches(compiled: re.Pattern[str] | None, scope: str) -> bool:
    """Whether ``scope`` (``""``: the default scope) is one the patterns allow."""
    return compiled is not None and compiled.fullmatch(scope) is not None
