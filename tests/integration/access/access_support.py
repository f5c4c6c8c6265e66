"""Helpers for the access tests (policy files written on the fly, extra API keys, row counts)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from sqlalchemy import text

from tests.support import API_KEYS, TEST_POLICY
from vault.api._authn import ApiKeyStore, Authenticator, new_api_key
from vault.storage import Database

#: every table a call can write to (audit tables included)
WRITTEN_TABLES = (
    "records",
    "record_values",
    "data_keys",
    "blind_index",
    "tenant_keys",
    "erasures",
    "erased_data_keys",
    "record_consents",
    "consent_history",
    "rate_counters",
    "audit_keys",
    "audit_events",
)


def wait_for(predicate: Callable[[], bool], seconds: float = 20.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass (an upper bound, not a threshold)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def table_counts(db: Database, tables: Iterable[str] = WRITTEN_TABLES) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in tables
        }


def rate_counters(db: Database, principal: str) -> set[tuple[str, int, int]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                'SELECT "window", window_start, count FROM rate_counters WHERE principal = :p'
            ).bindparams(p=principal)
        )
        return {(str(r[0]), int(r[1]), int(r[2])) for r in rows}


def audit_rows(db: Database, **where: str) -> list[dict[str, object]]:
    """Rows of ``audit_events`` matching every ``column=value`` given, in chain order."""
    clauses = " AND ".join(f"{k} = :{k}" for k in where) or "1 = 1"
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT * FROM audit_events WHERE {clauses} ORDER BY chain, seq").bindparams(
                **where
            )
        )
        return [dict(r._mapping) for r in rows]


def write_atomically(path: Path, content: str) -> None:
    """Replace ``path`` the way an operator should: write a new file, then rename it over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)


def policy_text(
    *, principals: Mapping[str, str] = {}, roles: str = "", version: int | None = None
) -> str:
    """The test policy (tests/data/policy.yaml) with extra principals (principal -> role) and
    extra role definitions (YAML text indented like the other roles) appended."""
    content = TEST_POLICY.read_text(encoding="utf-8")
    if principals:
        extra = "".join(f'  "{p}": {{role: {r}, tenants: ["*"]}}\n' for p, r in principals.items())
        content = content.replace("principals:\n", "principals:\n" + extra, 1)
    if roles:
        content = content.rstrip("\n") + "\n\n" + roles.rstrip("\n") + "\n"
    if version is not None:
        content = content.replace("policy_version: 1\n", f"policy_version: {version}\n", 1)
    return content


def role_block(content: str, role: str) -> tuple[int, int]:
    """(start, end) character offsets of one role's block in a policy text."""
    start = content.index(f"\n  {role}:\n") + 1
    lines = content[start:].splitlines(keepends=True)
    end = start + len(lines[0])
    for line in lines[1:]:
        if line.strip() and not line.startswith("   ") and not line.startswith("  #"):
            break
        end += len(line)
    return start, end


def edit_role(content: str, role: str, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` (exactly once) inside ``role``'s block."""
    start, end = role_block(content, role)
    block = content[start:end]
    if block.count(old) != 1:
        raise AssertionError(f"{old!r} is not exactly once in role {role}")
    return content[:start] + block.replace(old, new) + content[end:]


def line_of(content: str, needle: str) -> int:
    """1-based line number of the (single) line that contains ``needle``."""
    hits = [i for i, line in enumerate(content.splitlines(), 1) if needle in line]
    if len(hits) != 1:
        raise AssertionError(f"{needle!r} is on {len(hits)} lines")
    return hits[0]


def authenticator_with(*key_ids: str) -> tuple[Authenticator, dict[str, str]]:
    """The test authenticator plus new API keys ``apikey:<key_id>``; returns it and the keys."""
    stored = {k: v[1] for k, v in API_KEYS.items()}
    keys: dict[str, str] = {}
    for key_id in key_ids:
        key, entry = new_api_key(key_id)
        keys[key_id] = key
        stored[key_id] = entry
    return Authenticator(api_keys=ApiKeyStore(stored), allow_mtls=False), keys
