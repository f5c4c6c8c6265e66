"""No guessing oracles (issue 10, points 7 and 8), through gRPC against the real OpenBao.

- Tokenize: ``ai-pipeline`` recovered another role's dates of birth by tokenizing every
  candidate date deterministically into the scope of that role's tokens and comparing. A role
  now makes deterministic tokens only in the scopes its ``token_scopes`` list, and, for a class
  it sees neither plain nor masked, only where no other role makes tokens.
- FindRecords: ``ai-pipeline`` tested guesses of ``national_id`` (a class it sees as ``omit``)
  with no audit row and no limit. A search now needs the role's ``search`` permission for each
  class, is audited (classes, outcome, ``results:<n>``) and counted (``searches_per_minute``).

Every refusal is PERMISSION_DENIED (or RESOURCE_EXHAUSTED) with an audit row.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.access.matrix_support import start_policy_server
from tests.support import SAMPLE, SAMPLE_POLICY, api_key_of, create_tenants
from vault import errors
from vault.api import RunningServer
from vault.client import TokenItem, VaultClient
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import Database

AI = "ai-pipeline"
BACKEND = "backend-service"
#: a scope of backend-service's in the sample policy (``token_scopes: ["", "backend-*"]``)
VICTIM_SCOPE = "backend-crm"
DOB = "1984-03-17"


@dataclass
class Served:
    db: Database
    server: RunningServer
    tenant: str

    def client(self, role: str, purpose: str = "") -> VaultClient:
        return VaultClient(self.server.address, api_key=api_key_of(role), purpose=purpose)

    def audit_rows(self, role: str, action: str) -> list[tuple[str, str, str]]:
        """(outcome, field_classes, reason) of the role's audit rows of ``action`` here."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT outcome, field_classes, reason FROM audit_events"
                    " WHERE tenant = :t AND role = :r AND action = :a ORDER BY time, seq"
                ),
                {"t": self.tenant, "r": role, "a": action},
            ).all()
        return [(str(o), str(c), str(r)) for o, c, r in rows]


def _serve(
    db_url: str,
    openbao: OpenBaoDevServer,
    policy: Path,
    clock: Callable[[], float] | None = None,
) -> Iterator[Served]:
    db = Database(db_url)
    server = start_policy_server(db, openbao, policy, clock=clock)
    tenant = f"orc-{uuid.uuid4().hex[:12]}"
    create_tenants(db, tenant)
    try:
        yield Served(db, server, tenant)
    finally:
        server.stop(grace=0)
        db.dispose()


@pytest.fixture
def sample(db_url: str, openbao: OpenBaoDevServer) -> Iterator[Served]:
    """A server under the sample policy."""
    yield from _serve(db_url, openbao, SAMPLE_POLICY)


def _policy_variant(tmp_path: Path, old: str, new: str) -> Path:
    """The sample policy with one line changed (asserted to be there)."""
    source = SAMPLE_POLICY.read_text(encoding="utf-8")
    assert source.count(old) == 1, old
    path = tmp_path / "policy.yaml"
    path.write_text(source.replace(old, new), encoding="utf-8")
    return path


def _candidate_dates(year: int) -> list[str]:
    start = dt.date(year, 1, 1)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(366)]


# --- Tokenize -----------------------------------------------------------------------------------


def test_ai_pipeline_cannot_guess_another_roles_deterministic_tokens(sample: Served) -> None:
    """The attack of the issue: backend-service tokenizes a date of birth deterministically in
    its scope; ai-pipeline tokenizes every date of that year into the same scope and compares.
    Refused before any token is made, and audited."""
    with sample.client(BACKEND) as backend, sample.client(AI) as ai:
        [victim] = backend.tokenize(
            sample.tenant, [TokenItem(DOB, "date_of_birth", "deterministic", scope=VICTIM_SCOPE)]
        )
        guesses = [
            TokenItem(d, "date_of_birth", "deterministic", scope=VICTIM_SCOPE)
            for d in _candidate_dates(1984)
        ]
        refusal: errors.PermissionDenied | None = None
        try:
            tokens = ai.tokenize(sample.tenant, guesses)
        except errors.PermissionDenied as exc:
            refusal = exc
        else:
            recovered = [g.value for g, t in zip(guesses, tokens, strict=True) if t == victim]
            pytest.fail(f"{AI} tokenized {len(guesses)} guesses; recovered {recovered}")
        assert refusal is not None
        assert refusal.reason == "token_scope_not_allowed"
        assert DOB not in str(refusal)
        assert VICTIM_SCOPE not in str(refusal)
        # TokenizeText makes deterministic tokens too: the same guess through free text
        with pytest.raises(errors.PermissionDenied) as caught:
            ai.tokenize_text(
                sample.tenant, [f"born {DOB}, card 4111111111111111"], scope=VICTIM_SCOPE
            )
        assert caught.value.reason == "token_scope_not_allowed"
        # random and format-preserving tokens are fresh draws, not an oracle: still allowed
        fresh = ai.tokenize(
            sample.tenant,
            [
                TokenItem(DOB, "date_of_birth", "random", scope=VICTIM_SCOPE),
                TokenItem(SAMPLE["email"], "email", "format_preserving", scope=VICTIM_SCOPE),
            ],
        )
        assert victim not in fresh
        # in its own scope the role makes deterministic tokens as before
        mine = ai.tokenize(
            sample.tenant, [TokenItem(DOB, "date_of_birth", "deterministic", scope="ai-set")] * 2
        )
        assert mine[0] == mine[1] != victim
    denied = [r for r in sample.audit_rows(AI, "token.create") if r[0] == "denied"]
    assert len(denied) == 2
    assert denied[0] == ("denied", "date_of_birth", "token_scope_not_allowed")
    assert denied[1][2] == "token_scope_not_allowed"


def test_a_shared_scope_admits_only_roles_that_see_the_class(
    db_url: str, openbao: OpenBaoDevServer, tmp_path: Path
) -> None:
    """When the operator gives two roles the same scope, a role that sees a class only as a
    token (or not at all) may not make deterministic tokens of it there; a role that sees it
    plain or masked may (it has no need of an oracle)."""
    policy = _policy_variant(
        tmp_path,
        'token_scopes: ["ai-*", "chat-*"]',
        'token_scopes: ["ai-*", "chat-*", "backend-*"]',
    )
    for served in _serve(db_url, openbao, policy):
        with served.client(BACKEND) as backend, served.client(AI) as ai:
            [victim] = backend.tokenize(
                served.tenant,
                [TokenItem(DOB, "date_of_birth", "deterministic", scope=VICTIM_SCOPE)],
            )
            with pytest.raises(errors.PermissionDenied) as caught:
                ai.tokenize(
                    served.tenant,
                    [
                        TokenItem(d, "date_of_birth", "deterministic", scope=VICTIM_SCOPE)
                        for d in _candidate_dates(1984)
                    ],
                )
            assert caught.value.reason == "token_scope_shared"
            # the role that sees dates of birth plain still links its own tokens
            [again] = backend.tokenize(
                served.tenant,
                [TokenItem(DOB, "date_of_birth", "deterministic", scope=VICTIM_SCOPE)],
            )
            assert again == victim
        denied = [r for r in served.audit_rows(AI, "token.create") if r[0] == "denied"]
        assert [(c, r) for _, c, r in denied] == [("date_of_birth", "token_scope_shared")]


# --- FindRecords --------------------------------------------------------------------------------


def test_ai_pipeline_may_not_search_a_class_it_does_not_see(sample: Served) -> None:
    """national_id is ``omit`` for ai-pipeline: a search on it is refused and audited, so it
    cannot test guesses; a search it may make is audited with its classes and result count."""
    with sample.client(BACKEND) as backend, sample.client(AI) as ai:
        record = backend.create_record(sample.tenant, SAMPLE)
        with pytest.raises(errors.PermissionDenied) as caught:
            ai.find_records(sample.tenant, {"national_id": SAMPLE["national_id"]})
        assert caught.value.reason == "search_not_allowed"
        assert SAMPLE["national_id"] not in str(caught.value)
        with pytest.raises(errors.PermissionDenied):
            ai.find_records(
                sample.tenant,
                {"email": SAMPLE["email"], "national_id": SAMPLE["national_id"]},
            )
        assert ai.find_records(sample.tenant, {"email": SAMPLE["email"]}) == [record.record_id]
        assert ai.find_records(sample.tenant, {"email": "nobody@example.org"}) == []
    rows = sample.audit_rows(AI, "record.find")
    assert rows == [
        ("denied", "national_id", "search_not_allowed"),
        ("denied", "email,national_id", "search_not_allowed"),
        ("allowed", "email", "results:1"),
        ("allowed", "email", "results:0"),
    ]


def test_searches_count_against_the_roles_search_limit(
    db_url: str, openbao: OpenBaoDevServer, tmp_path: Path
) -> None:
    """``searches_per_minute`` counts every search, found or not: past it, RESOURCE_EXHAUSTED,
    audited, and nothing searched."""
    policy = _policy_variant(
        tmp_path,
        "limits: {searches_per_minute: 60, searches_per_day: 10000}",
        "limits: {searches_per_minute: 3, searches_per_day: 10000}",
    )
    # counters are per principal and window, shared by the session: a minute of its own
    minute = 60 * (10**9 + secrets.randbelow(10**6))
    for served in _serve(db_url, openbao, policy, clock=lambda: float(minute)):
        with served.client(AI) as ai:
            for i in range(3):
                assert ai.find_records(served.tenant, {"email": f"guess{i}@example.org"}) == []
            with pytest.raises(errors.ResourceExhausted) as caught:
                ai.find_records(served.tenant, {"email": "guess3@example.org"})
            assert caught.value.reason == "limit_exceeded"
        assert [r[0] for r in served.audit_rows(AI, "record.find")] == ["allowed"] * 3
        assert [r[0] for r in served.audit_rows(AI, "limit.exceeded")] == ["denied"]
