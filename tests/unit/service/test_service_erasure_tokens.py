"""Erasure reaches every token (issue 10, point 9) through the operator paths: retention's
record erasure, tokens made before fingerprints (``cvault tokens fingerprint``), and tokens
fingerprinted under an index-key version that ``rotate-index`` then drops."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import vault.schema
from tests.support import ADMIN
from tests.unit.service.service_support import DL, ServiceFactory, Vault
from vault.audit import ALLOWED, AuditEvent
from vault.crypto import FINGERPRINT_LABEL, value_fingerprint
from vault.schema import FieldClass
from vault.service import RecordInput
from vault.service._normal import PLAIN_EMAIL, canonical_or_none, deterministic_form, fingerprint
from vault.service.operations import (
    fingerprint_all,
    fingerprint_tokens,
    purge_expired,
    rotate_index,
)
from vault.service.tokens import TokenError, TokenizeItem, TokenKind

EMAIL = "ada@example.com"


def _event(action: str, tenant: str, record_id: str) -> AuditEvent:
    return AuditEvent(
        action=action,
        outcome=ALLOWED,
        principal="operator:tester",
        role="operator",
        purpose="",
        tenant=tenant,
        record_id=record_id,
    )


def _record(svc: Vault, tenant: str, fields: dict[str, str]) -> str:
    [rec] = svc.records.create(ADMIN, tenant, [RecordInput(fields)], deadline=DL)
    return rec.record_id


def _standalone(svc: Vault, tenant: str) -> list[str]:
    return svc.tokens.tokenize(
        ADMIN,
        tenant,
        [
            TokenizeItem(EMAIL, "email"),
            TokenizeItem(EMAIL.upper(), "email", TokenKind.DETERMINISTIC, scope="s"),
        ],
        deadline=DL,
    )


def _errors(svc: Vault, tenant: str, tokens: list[str]) -> list[TokenError | None]:
    return [r.error for r in svc.tokens.reveal(ADMIN, tenant, tokens, deadline=DL)]


def test_the_fingerprint_has_a_label_of_its_own() -> None:
    assert FINGERPRINT_LABEL == b"cvault/vfp/v1"


_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=70)
_PLAIN = st.builds(
    "{}@{}".format,
    st.lists(
        st.text("abcdefghijklmnopqrstuvwxyz0123456789_+-", min_size=1, max_size=70),
        min_size=1,
        max_size=3,
    ).map(".".join),
    st.lists(_LABEL, min_size=2, max_size=4).map(".".join)
    | st.sampled_from(["example.com", "x.local", "a.localhost", "b.test", "c.invalid", "d.123"]),
)


@given(_PLAIN, st.randoms())
def test_the_plain_email_shortcut_gives_the_parsers_form(value: str, rnd: random.Random) -> None:
    """For every plain ASCII email the parser accepts, in any mix of case, the shortcut's
    fingerprint is the one the parser's search form gives (what erasure computes from the
    record's stored value)."""
    value = "".join(c.upper() if rnd.random() < 0.5 else c for c in value)
    key = bytes(32)
    if "xn--" in value.lower() or not PLAIN_EMAIL.fullmatch(value):
        return
    if canonical_or_none(FieldClass.EMAIL, value) is None:
        return  # never a record's value: no erasure computes its fingerprint
    slow = value_fingerprint(key, "email", deterministic_form(FieldClass.EMAIL, value))
    assert fingerprint(key, FieldClass.EMAIL, value) == slow


@pytest.fixture
def retained(factory: ServiceFactory, tmp_path: Path) -> Vault:
    base = Path(vault.schema.__file__).with_name("default.yaml").read_text()
    schema = tmp_path / "schema.yaml"
    schema.write_text(base + "retention:\n  records_days: 365\n")
    return factory.build(schema=schema)


def test_retention_erasure_reaches_standalone_tokens(retained: Vault, tenant: str) -> None:
    svc = retained
    rid = _record(svc, tenant, {"email": EMAIL})
    tokens = _standalone(svc, tenant)
    now = datetime.now(UTC)
    svc.set_time("records", "updated_at", now - timedelta(days=400), id=rid)
    assert purge_expired(svc.core, now=now, event=_event).records == 1
    assert _errors(svc, tenant, tokens) == [TokenError.ERASED] * 2
    assert svc.scalar("SELECT tokens_erased FROM erasures WHERE record_id = :r", r=rid) == 2


def test_tokens_made_before_fingerprints_are_reached_once_fingerprinted(
    svc: Vault, tenant: str
) -> None:
    rid = _record(svc, tenant, {"email": EMAIL})
    tokens = _standalone(svc, tenant)
    svc.sql(
        "UPDATE tokens SET fingerprint = NULL, fingerprint_key_id = NULL WHERE tenant = :t",
        t=tenant,
    )  # as rows made before migration 0007
    reports = [r for r in fingerprint_all(svc.core) if r.tenant == tenant]
    assert [(r.field_class, r.fingerprinted, r.skipped) for r in reports] == [("email", 2, 0)]
    assert fingerprint_tokens(svc.core, tenant, "email").fingerprinted == 0  # nothing left
    assert svc.records.delete(ADMIN, tenant, rid, deadline=DL).tokens_erased == 2
    assert _errors(svc, tenant, tokens) == [TokenError.ERASED] * 2


def test_an_old_deterministic_token_tokenized_again_gets_its_fingerprint(
    svc: Vault, tenant: str
) -> None:
    rid = _record(svc, tenant, {"email": EMAIL})
    item = TokenizeItem(EMAIL, "email", TokenKind.DETERMINISTIC, scope="s")
    [token] = svc.tokens.tokenize(ADMIN, tenant, [item], deadline=DL)
    svc.sql("UPDATE tokens SET fingerprint = NULL WHERE tenant = :t", t=tenant)
    svc.tokens.tokenize(ADMIN, tenant, [item], deadline=DL)
    svc.records.delete(ADMIN, tenant, rid, deadline=DL)
    assert _errors(svc, tenant, [token]) == [TokenError.ERASED]


def test_an_erasure_after_rotate_index_reaches_tokens_made_before_it(
    svc: Vault, tenant: str
) -> None:
    rid = _record(svc, tenant, {"email": EMAIL})
    tokens = _standalone(svc, tenant)
    report = rotate_index(svc.core, tenant, "email")
    assert (report.version, report.dropped) == (2, 1)
    [key_id] = {
        r[0] for r in svc.sql("SELECT fingerprint_key_id FROM tokens WHERE tenant = :t", t=tenant)
    }
    [current] = svc.core.keyring.index_keys(tenant, "email", deadline=DL)
    assert key_id == current.id
    assert svc.records.delete(ADMIN, tenant, rid, deadline=DL).tokens_erased == 2
    assert _errors(svc, tenant, tokens) == [TokenError.ERASED] * 2


# --- values removed by UpdateRecord or a class's retention --------------------------------

PHONE = "+442079460958"


def _update(
    svc: Vault,
    tenant: str,
    rid: str,
    version: int,
    set_fields: dict[str, str] | None = None,
    clear_fields: tuple[str, ...] = (),
) -> None:
    svc.records.update(
        ADMIN,
        tenant,
        rid,
        expected_version=version,
        set_fields=set_fields or {},
        clear_fields=clear_fields,
        deadline=DL,
    )


def test_an_update_replacing_a_value_reaches_its_standalone_tokens(svc: Vault, tenant: str) -> None:
    rid = _record(svc, tenant, {"email": EMAIL, "phone": PHONE})
    tokens = _standalone(svc, tenant)
    _update(svc, tenant, rid, 1, set_fields={"email": "grace@example.com"})
    assert _errors(svc, tenant, tokens) == [TokenError.ERASED] * 2
    [fresh] = svc.tokens.tokenize(ADMIN, tenant, [TokenizeItem(EMAIL, "email")], deadline=DL)
    assert _errors(svc, tenant, [fresh]) == [None]  # tokenized again later: a live token


def test_an_update_clearing_a_value_reaches_its_standalone_tokens(svc: Vault, tenant: str) -> None:
    rid = _record(svc, tenant, {"email": EMAIL, "phone": PHONE})
    [phone] = svc.tokens.tokenize(ADMIN, tenant, [TokenizeItem(PHONE, "phone")], deadline=DL)
    tokens = _standalone(svc, tenant)
    _update(svc, tenant, rid, 1, clear_fields=("phone",))
    assert _errors(svc, tenant, [phone, *tokens]) == [TokenError.ERASED, None, None]


def test_an_update_setting_the_same_value_again_leaves_its_tokens(svc: Vault, tenant: str) -> None:
    rid = _record(svc, tenant, {"email": EMAIL, "phone": PHONE})
    tokens = _standalone(svc, tenant)
    _update(svc, tenant, rid, 1, set_fields={"email": EMAIL.upper(), "phone": "+44 20 7946 0959"})
    _update(svc, tenant, rid, 2, clear_fields=("phone",))  # the email's class untouched
    assert _errors(svc, tenant, tokens) == [None, None]
    assert svc.scalar("SELECT count(*) FROM erased_fingerprints WHERE tenant = :t", t=tenant) == 2


@pytest.fixture
def phone_kept(factory: ServiceFactory, tmp_path: Path) -> Vault:
    base = Path(vault.schema.__file__).with_name("default.yaml").read_text()
    schema = tmp_path / "schema.yaml"
    schema.write_text(base + "retention:\n  classes:\n    phone: 30\n")
    return factory.build(schema=schema)


def test_a_class_retention_shred_reaches_standalone_tokens(phone_kept: Vault, tenant: str) -> None:
    svc = phone_kept
    rid = _record(svc, tenant, {"email": EMAIL, "phone": PHONE})
    items = [
        TokenizeItem(PHONE, "phone"),
        TokenizeItem("+44 20 7946 0958", "phone", TokenKind.DETERMINISTIC, scope="s"),
    ]
    phones = svc.tokens.tokenize(ADMIN, tenant, items, deadline=DL)
    emails = _standalone(svc, tenant)
    now = datetime.now(UTC)
    svc.set_time("records", "updated_at", now - timedelta(days=40), id=rid)
    assert purge_expired(svc.core, now=now, event=_event).values == 1
    assert _errors(svc, tenant, phones + emails) == [TokenError.ERASED] * 2 + [None] * 2
