"""TokenizeText's budget and its caller's patience (issue 11, point 2): characters and spans per
call are bounded, each limit named in its error; 1,000 texts of 11 emails each pass in one
call; a call whose deadline passes or whose caller cancels stops between units of work,
having written nothing."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support import ADMIN
from tests.unit.service.service_support import DL, Vault
from vault.deadline import Deadline
from vault.errors import Cancelled, DeadlineExceeded, InvalidInput
from vault.service.text import MAX_TEXT_CHARS, MAX_TEXT_LENGTH, MAX_TEXT_SPANS, MAX_TEXTS

PROTO = Path(__file__).resolve().parents[3] / "protos" / "vault" / "v1" / "tokens.proto"
#: about 0.45 s of detection per text (one address span per kilobyte)
SLOW_TEXT = ("lives at 1 " * 6000)[:MAX_TEXT_LENGTH]


def _emails(texts: int, per_text: int) -> list[str]:
    return [
        "Please add " + ", ".join(f"user{i}.{j}@example.org" for j in range(per_text))
        for i in range(texts)
    ]


def _written(svc: Vault, tenant: str) -> tuple[int, int]:
    """Token rows and token.create audit rows of the tenant."""
    tokens = svc.scalar("SELECT count(*) FROM tokens WHERE tenant = :t", t=tenant)
    return tokens, len(svc.audit_rows(tenant, "token.create"))


def test_1000_texts_of_11_emails_each_pass_in_one_transaction(svc: Vault, tenant: str) -> None:
    texts = _emails(MAX_TEXTS, 11)
    out = svc.texts.tokenize_text(ADMIN, tenant, texts, scope="s", deadline=DL)
    assert [len(r.spans) for r in out] == [11] * MAX_TEXTS
    assert {s.field_class for r in out for s in r.spans} == {"email"}
    assert _written(svc, tenant) == (11 * MAX_TEXTS, 1)


def test_too_many_spans_fail_naming_texts_and_the_limit(svc: Vault, tenant: str) -> None:
    texts = _emails(MAX_TEXTS, MAX_TEXT_SPANS // MAX_TEXTS + 1)
    with pytest.raises(InvalidInput) as info:
        svc.texts.tokenize_text(ADMIN, tenant, texts, scope="s", deadline=DL)
    assert info.value.field == "texts"
    assert info.value.problem == f"more than {MAX_TEXT_SPANS} PII spans found (the limit per call)"
    assert _written(svc, tenant) == (0, 0)


def test_too_many_characters_fail_naming_texts_and_the_limit_before_any_scan(
    svc: Vault, tenant: str
) -> None:
    checks: list[int] = []

    def cancelled() -> bool:
        checks.append(1)
        return False

    deadline = Deadline.after(3600, cancelled=cancelled)
    texts = ["x" * MAX_TEXT_LENGTH] * (MAX_TEXT_CHARS // MAX_TEXT_LENGTH) + ["x"]
    with pytest.raises(InvalidInput) as info:
        svc.texts.tokenize_text(ADMIN, tenant, texts, scope="s", deadline=deadline)
    assert info.value.field == "texts"
    assert (
        info.value.problem == f"more than {MAX_TEXT_CHARS} characters in all (the limit per call)"
    )
    assert not checks  # refused before the scan
    texts[-1] = "mail ada@example.org"
    texts[0] = texts[0][: -len(texts[-1])]  # exactly the budget
    out = svc.texts.tokenize_text(ADMIN, tenant, texts, scope="s", deadline=deadline)
    assert len(out[-1].spans) == 1
    assert checks  # checked between texts and detectors


def test_a_cancelled_call_stops_at_the_next_check_and_writes_nothing(
    svc: Vault, tenant: str
) -> None:
    checks = 0

    def cancelled() -> bool:
        nonlocal checks
        checks += 1
        return checks > 25

    texts = _emails(MAX_TEXTS, 11)
    with pytest.raises(Cancelled):
        svc.texts.tokenize_text(
            ADMIN, tenant, texts, scope="s", deadline=Deadline.after(3600, cancelled=cancelled)
        )
    assert checks == 26  # not one unit of work more
    assert _written(svc, tenant) == (0, 0)


def test_a_deadline_that_passes_during_detection_stops_it_and_writes_nothing(
    svc: Vault, tenant: str
) -> None:
    """Eight slow texts take about 4 s; the call stops within a detector's time of its
    deadline."""
    deadline = Deadline.after(0.3)
    with pytest.raises(DeadlineExceeded):
        svc.texts.tokenize_text(ADMIN, tenant, [SLOW_TEXT] * 8, scope="s", deadline=deadline)
    assert time.monotonic() - deadline.expires_at < 1.0
    assert _written(svc, tenant) == (0, 0)


def test_the_api_documents_the_budget() -> None:
    """The request's comment (and so the generated stubs' docs) states each limit."""
    comment = re.search(
        r"message TokenizeTextRequest \{(.*?)repeated string texts", PROTO.read_text(), re.S
    )
    assert comment is not None
    for limit in (MAX_TEXTS, MAX_TEXT_LENGTH, MAX_TEXT_CHARS, MAX_TEXT_SPANS):
        assert f"{limit:,}" in comment.group(1)
