"""Property tests of the tokens service (hypothesis), against real OpenBao on SQLite and
PostgreSQL: round trips for every kind and class (of any value its class's validator takes:
any Unicode for free text), linkability of deterministic tokens, and that tokens carry nothing
of their value."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ADMIN
from vault.crypto import TOKEN_DIGITS
from vault.deadline import Deadline
from vault.schema import DEFAULT_MAX_LENGTH, FieldClass
from vault.service import RecordsService
from vault.service._normal import canonical_or_none
from vault.service.services import Services
from vault.service.tokens import FPE_CLASSES, TokenizeItem, TokenKind, TokensService

pytestmark = pytest.mark.openbao

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# any Unicode scalar value (protobuf strings are UTF-8: lone surrogates cannot travel)
TEXT = st.characters(codec="utf-8")


def values_of(field_class: FieldClass, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(TEXT, min_size=1, max_size=min(max_size, DEFAULT_MAX_LENGTH[field_class]))


# Values valid for each class that offers format-preserving surrogates.
VALID: dict[FieldClass, st.SearchStrategy[str]] = {
    FieldClass.EMAIL: st.from_regex(
        r"[a-z][a-z0-9_]{0,12}(\.[a-z0-9_]{1,8})?[a-z0-9]@[a-z]{2,12}\.(com|org|de)", fullmatch=True
    ),
    FieldClass.PHONE: st.integers(2_000_000, 9_999_999).map(lambda n: f"+44207{n}"),
    FieldClass.NAME: st.from_regex(r"[A-Z][a-z]{1,12}( [A-Z][a-z]{1,12}){0,2}", fullmatch=True),
    FieldClass.DATE_OF_BIRTH: st.dates().filter(lambda d: 1920 <= d.year <= 2005).map(str),
    FieldClass.NATIONAL_ID: st.from_regex(r"[A-Z]{2}[0-9]{6}[A-D]", fullmatch=True),
    FieldClass.CARD_NUMBER: st.from_regex(r"4[0-9]{14}", fullmatch=True).map(
        lambda d: d + str((10 - _luhn_sum(d + "0")) % 10)
    ),
    FieldClass.IBAN: st.sampled_from(
        ["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606"]
    ),
    FieldClass.IP_ADDRESS: st.ip_addresses().map(str),
}


def _accepted(field_class: FieldClass) -> st.SearchStrategy[str]:
    """Any Unicode its class's validator takes (names, addresses; free text is not validated)."""
    return values_of(field_class).filter(lambda v: canonical_or_none(field_class, v) is not None)


#: values Tokenize takes for every class and kind (it validates them as record fields are)
ACCEPTED: dict[FieldClass, st.SearchStrategy[str]] = {
    **VALID,
    FieldClass.NAME: _accepted(FieldClass.NAME),
    FieldClass.ADDRESS: _accepted(FieldClass.ADDRESS),
    FieldClass.FREE_TEXT: values_of(FieldClass.FREE_TEXT),
}


def _luhn_sum(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10


@pytest.fixture
def tokens(records: RecordsService) -> TokensService:
    return Services.over(records.core).tokens


def _deadline() -> Deadline:
    return Deadline.after(60)


def _round_trip(service: TokensService, tenant: str, items: list[TokenizeItem]) -> list[str]:
    tokens = service.tokenize(ADMIN, tenant, items, deadline=_deadline())
    revealed = service.reveal(ADMIN, tenant, tokens, deadline=_deadline())
    assert [(r.error, r.value) for r in revealed] == [(None, i.value) for i in items]
    return tokens


@PROPERTY
@given(
    pairs=st.lists(
        st.sampled_from(list(FieldClass)).flatmap(lambda c: st.tuples(st.just(c), ACCEPTED[c])),
        min_size=1,
        max_size=12,
    ),
    kind=st.sampled_from([TokenKind.RANDOM, TokenKind.DETERMINISTIC]),
)
def test_any_accepted_value_round_trips(
    tokens: TokensService, pairs: list[tuple[FieldClass, str]], kind: TokenKind
) -> None:
    scope = uuid.uuid4().hex  # a fresh scope: no earlier spelling of a value in it
    items = [TokenizeItem(v, c.value, kind, scope=scope) for c, v in pairs]
    _round_trip(tokens, f"p{uuid.uuid4().hex[:10]}", items)


# the classes whose values may be any text (the others' validators refuse "ééé...")
@pytest.mark.parametrize("field_class", [FieldClass.NAME, FieldClass.ADDRESS, FieldClass.FREE_TEXT])
def test_values_at_the_length_limit_round_trip(
    tokens: TokensService, field_class: FieldClass
) -> None:
    value = "é" * DEFAULT_MAX_LENGTH[field_class]
    items = [
        TokenizeItem(value, field_class.value, k)
        for k in (TokenKind.RANDOM, TokenKind.DETERMINISTIC)
    ]
    _round_trip(tokens, f"p{uuid.uuid4().hex[:10]}", items)


@PROPERTY
@given(
    pairs=st.lists(
        st.sampled_from(sorted(FPE_CLASSES)).flatmap(lambda c: st.tuples(st.just(c), VALID[c])),
        min_size=1,
        max_size=10,
    )
)
def test_format_preserving_round_trips(
    tokens: TokensService, pairs: list[tuple[FieldClass, str]]
) -> None:
    items = [TokenizeItem(v, c.value, TokenKind.FORMAT_PRESERVING) for c, v in pairs]
    issued = _round_trip(tokens, f"p{uuid.uuid4().hex[:10]}", items)
    assert len(set(issued)) == len(issued)  # unique in the tenant


@PROPERTY
@given(pair=st.sampled_from(list(FieldClass)).flatmap(lambda c: st.tuples(st.just(c), ACCEPTED[c])))
def test_deterministic_tokens_link_only_within_scope_and_tenant(
    tokens: TokensService, pair: tuple[FieldClass, str]
) -> None:
    field_class, value = pair
    t1, t2 = f"p{uuid.uuid4().hex[:10]}", f"p{uuid.uuid4().hex[:10]}"
    det = TokenKind.DETERMINISTIC
    a1, a2, b = tokens.tokenize(
        ADMIN,
        t1,
        [
            TokenizeItem(value, field_class.value, det, scope="s1"),
            TokenizeItem(value, field_class.value, det, scope="s1"),
            TokenizeItem(value, field_class.value, det, scope="s2"),
        ],
        deadline=_deadline(),
    )
    [c] = tokens.tokenize(
        ADMIN, t2, [TokenizeItem(value, field_class.value, det, scope="s1")], deadline=_deadline()
    )
    [again] = tokens.tokenize(
        ADMIN, t1, [TokenizeItem(value, field_class.value, det, scope="s1")], deadline=_deadline()
    )
    assert a1 == a2 == again
    assert len({a1, b, c}) == 3
    r1, r2 = tokens.tokenize(
        ADMIN,
        t1,
        [TokenizeItem(value, field_class.value), TokenizeItem(value, field_class.value)],
        deadline=_deadline(),
    )
    assert r1 != r2


def _shared(a: str, b: str) -> tuple[int, int]:
    """(common prefix length, positions equal) of two token suffixes."""
    prefix = 0
    while prefix < len(a) and a[prefix] == b[prefix]:
        prefix += 1
    return prefix, sum(x == y for x, y in zip(a, b, strict=True))


@PROPERTY
@given(
    value=st.text(TEXT, min_size=1, max_size=60),
    position=st.integers(min_value=0),
    replacement=TEXT,
    kind=st.sampled_from([TokenKind.RANDOM, TokenKind.DETERMINISTIC]),
)
def test_one_character_apart_tokens_share_only_the_prefix(
    tokens: TokensService, value: str, position: int, replacement: str, kind: TokenKind
) -> None:
    i = position % len(value)
    other = value[:i] + replacement + value[i + 1 :]
    if other == value:
        other = value[:i] + ("a" if value[i] != "a" else "b") + value[i + 1 :]
    a, b = tokens.tokenize(
        ADMIN,
        f"p{uuid.uuid4().hex[:10]}",
        [
            TokenizeItem(value, "free_text", kind, scope="s"),
            TokenizeItem(other, "free_text", kind, scope="s"),
        ],
        deadline=_deadline(),
    )
    prefix = "tok_free_text_"
    assert a.startswith(prefix)
    assert b.startswith(prefix)
    sa, sb = a[len(prefix) :], b[len(prefix) :]
    assert len(sa) == len(sb) == TOKEN_DIGITS
    common, equal = _shared(sa, sb)
    # by chance: a common prefix of 4 has odds 62^-4; 8 equal positions of 22, below 1e-6
    assert common < 4
    assert equal < 8
