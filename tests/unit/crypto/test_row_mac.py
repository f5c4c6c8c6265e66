"""The grant and consent row MACs (format v1): frozen test vectors, the documented layout, and
every covered column moving the MAC."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vault.crypto import consent_mac, grant_mac, lp, row_mac_matches

KEY = bytes(range(32))
WHEN = datetime(2026, 12, 5, 21, 40, 0, 123456, tzinfo=UTC)
R1, R2 = "0190a1b2-0000-7000-8000-000000000001", "0190a1b2-0000-7000-8000-000000000002"


@dataclass(frozen=True)
class GrantCols:
    grant_id: str = "grt_0123456789ABCDEFabcdef"
    tenant: str = "acme"
    grantor: str = "apikey:test-admin"
    grantor_role: str = "test-admin"
    grantee: str = "apikey:dev-ai-pipeline"
    record_ids: tuple[str, ...] = (R2, R1)
    scope: str = ""
    field_classes: tuple[str, ...] = ("phone", "email")
    purpose: str = "testing"
    expires_at: datetime = WHEN
    max_uses: int = 10
    max_values: int = 0

    def mac(self, key: bytes = KEY) -> bytes:
        return grant_mac(key, **vars(self))


@dataclass(frozen=True)
class ConsentCols:
    tenant: str = "acme"
    record_id: str = R1
    version: int = 3
    purposes: tuple[str, ...] = ("model-training", "marketing")
    source: str = "signup-form"
    updated_at: datetime = WHEN

    def mac(self, key: bytes = KEY) -> bytes:
        return consent_mac(key, **vars(self))


def test_frozen_vectors() -> None:
    """Rows sealed by any release stay valid: these bytes never change for format v1."""
    assert GrantCols().mac().hex() == (
        "5e7eea5a3b03d5afa4c8d9381a8bc05d25efb2a9897c06de764f8dcd11ef5c76"
    )
    assert ConsentCols().mac().hex() == (
        "3f0569fd6fd7eebf8c5b5d2bfeb9be8a342790af5f5dcf7698b7f983a08b0771"
    )


def test_the_layout_is_the_documented_one() -> None:
    micros = "1796506800123456"  # 2026-12-05T21:40:00.123456Z
    grant = b"cvault/row/grant/v1" + b"".join(
        lp(x)
        for x in (
            "grt_0123456789ABCDEFabcdef",
            "acme",
            "apikey:test-admin",
            "test-admin",
            "apikey:dev-ai-pipeline",
            f"{R1},{R2}",
            "",
            "email,phone",
            "testing",
            micros,
            "10",
            "0",
        )
    )
    consent = b"cvault/row/consent/v1" + b"".join(
        lp(x) for x in ("acme", R1, "3", "marketing,model-training", "signup-form", micros)
    )
    assert GrantCols().mac() == hmac.digest(KEY, grant, hashlib.sha256)
    assert ConsentCols().mac() == hmac.digest(KEY, consent, hashlib.sha256)


GRANT_EDITS: dict[str, Any] = {
    "grant_id": "grt_0123456789ABCDEFabcdeg",
    "tenant": "acme2",
    "grantor": "apikey:dev-support-agent",
    "grantor_role": "support-agent",
    "grantee": "apikey:test-tokens",
    "record_ids": (R1,),
    "scope": "chat-1",
    "field_classes": ("email", "phone", "national_id"),
    "purpose": "dsar",
    "expires_at": WHEN + timedelta(microseconds=1),
    "max_uses": 11,
    "max_values": 1,
}


@pytest.mark.parametrize("column", sorted(GRANT_EDITS))
def test_every_grant_column_is_covered(column: str) -> None:
    edited = replace(GrantCols(), **{column: GRANT_EDITS[column]})
    assert edited.mac() != GrantCols().mac()


CONSENT_EDITS: dict[str, Any] = {
    "tenant": "acme2",
    "record_id": R2,
    "version": 4,
    "purposes": ("model-training",),
    "source": "signup-form2",
    "updated_at": WHEN - timedelta(microseconds=1),
}


@pytest.mark.parametrize("column", sorted(CONSENT_EDITS))
def test_every_consent_column_is_covered(column: str) -> None:
    edited = replace(ConsentCols(), **{column: CONSENT_EDITS[column]})
    assert edited.mac() != ConsentCols().mac()


def test_sets_are_canonical_and_naive_times_are_utc() -> None:
    same = replace(GrantCols(), record_ids=(R1, R2, R1), field_classes=("email", "phone"))
    assert same.mac() == GrantCols().mac()
    naive = replace(ConsentCols(), updated_at=WHEN.replace(tzinfo=None))
    assert naive.mac() == ConsentCols().mac()


def test_another_key_or_kind_gives_another_mac() -> None:
    assert GrantCols().mac(bytes(32)) != GrantCols().mac()
    assert ConsentCols().mac() != GrantCols().mac()


def test_any_integer_is_encodable() -> None:
    """An insider's out-of-range counter gives a MAC that does not match, never an error."""
    assert len(replace(GrantCols(), max_uses=-1).mac()) == 32
    assert len(replace(GrantCols(), max_uses=2**70).mac()) == 32


def test_matching() -> None:
    mac = GrantCols().mac()
    assert row_mac_matches(mac, mac)
    assert not row_mac_matches(mac, None)
    assert not row_mac_matches(mac, mac[:-1])
    assert not row_mac_matches(mac, bytes([mac[0] ^ 1]) + mac[1:])
