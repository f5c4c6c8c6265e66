"""Token minting. Random tokens carry no information about the value they stand for."""

from __future__ import annotations

import re

from vault.crypto._encoding import random_base62

TOKEN_RE = re.compile(r"^tok_[a-z_]{1,32}_[0-9A-Za-z]{22}$")


def random_token(field_class: str) -> str:
    """``tok_<class>_<base62 of 128 random bits>``."""
    return f"tok_{field_class}_{random_base62(128)}"
