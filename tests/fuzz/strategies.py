"""Request generation for the fuzz suite: any RPC's request built from its protobuf descriptor.

Every field gets a value from its descriptor type (strings with control characters, newlines at
either end, astral and combining characters, empty and huge values; integers at their extremes;
unknown enum numbers; huge repeated fields and maps; nested messages), mixed with plausible values
chosen by the field's *name* (a tenant, a record id, a purpose of the sample policy, a schema
field name, a valid value of a field class, a token, a grant ...) so that many calls get past
validation and reach deep code. Plausible ids, tokens and grants come from a :class:`Pool` of
what earlier successful calls returned, used as they are or changed by one character. A field
name nobody taught this module about still gets values from its type, so a new RPC is fuzzed
without any change here.

Half the requests are *clean* (:attr:`Ctx.clean`): nearly every field plausible, so that the
call reaches the service's deep code; the other half mix plausible and wild values freely.

Strings that may hold a customer value carry :data:`MARKER` (``Zq9MARKER`` and a few hex digits);
``harness`` checks where it comes back (see its module docstring for the rule). Python's protobuf
refuses lone surrogates, so invalid UTF-8 travels through :func:`raw_body` instead.

Hypothesis needs the *shape* of an example's choices to depend only on the choices before them:
every draw that involves the pool is made the same way whatever the pool holds (:meth:`Pool.pick`,
:func:`index`).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from tests.support import SAMPLE_POLICY, luhn_complete
from vault.policy import load_policy
from vault.schema import load_schema
from vault.service.tokens import FPE_CLASSES as _FPE_CLASSES
from vault.service.tokens import MAX_TTL_SECONDS

T = TypeVar("T")

#: In every generated string that stands for a customer value or any other caller input. Mixed
#: case and a digit: never a well-formed schema field name (``^[a-z][a-z0-9_]{0,62}$``), which
#: the vault does name in its errors. Compared case-insensitively.
MARKER: Final = "Zq9MARKER"

SCHEMA: Final = load_schema()
FIELD_NAMES: Final = tuple(SCHEMA.fields)
SEARCHABLE: Final = tuple(n for n, s in SCHEMA.fields.items() if s.searchable)
CLASS_OF_FIELD: Final = {n: s.field_class.value for n, s in SCHEMA.fields.items()}
FIELD_CLASSES: Final = (
    "email",
    "phone",
    "name",
    "address",
    "date_of_birth",
    "national_id",
    "card_number",
    "iban",
    "free_text",
    "ip_address",
)
HOME_TENANTS: Final = ("demo", "acme")
#: the first two are backend-service's (it seeds deterministic tokens there), then
#: ai-pipeline's, then scopes no role of the sample policy owns (token_scopes)
SCOPES: Final = (
    "backend-training-2026",
    "backend-chat-1",
    "chat-1",
    "ai-rag_index.v2",
    "conv:42",
    "rag_index.v2",
)
_POLICY: Final = load_policy(SAMPLE_POLICY)
PURPOSES: Final = tuple(sorted(_POLICY.purposes))
PRINCIPALS: Final = tuple(sorted(_POLICY.principals))
_BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
_INT32: Final = (0, 1, -1, 2, 2**31 - 1, -(2**31), 2**31 - 2)
_INT64: Final = (0, 1, -1, 2**63 - 1, -(2**63), 2**63 - 2, -(2**63 - 2), 2**62, 2**53 + 1, 2**31)
_UINT32: Final = (0, 1, 2, 2**32 - 1, 2**31, 2**31 - 1)
_UINT64: Final = (0, 1, 2**64 - 1, 2**63, 2**63 - 1, 2**63 - 2)
_HUGE_LENGTHS: Final = (63, 64, 65, 128, 129, 256, 257, 1025, 4097, 8193, 65536, 65537, 300_000)
_HUGE_COUNTS: Final = (100, 1000, 1001, 10_000, 10_001)
_ODD_CHARS: Final = (
    "\x00",
    "\n",
    "\r\n",
    "\t",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\u0301",
    "\U0001f600",
    "\U0010ffff",
    "\ufffd",
    "é",
    "ß",
    "İ",
    "ﬀ",
    "%s",
    "{0}",
    "'",
    '"',
    "\\",
    "<",
)
#: any Unicode scalar value (protobuf strings are UTF-8: lone surrogates cannot travel)
_TEXT_CHARS: Final = st.characters(codec="utf-8")


def weighted(data: st.DataObject, options: Sequence[tuple[int, Callable[[], T]]]) -> T:
    """One of ``options`` (weight, thunk), drawn in proportion to the weights; the thunk draws
    what it needs. Shrinks toward the first option."""
    total = sum(w for w, _ in options)
    pick = data.draw(st.integers(0, total - 1))
    for w, make in options:
        if pick < w:
            return make()
        pick -= w
    raise AssertionError("unreachable")


def one_in(data: st.DataObject, n: int) -> bool:
    """True about once in ``n`` draws (never on the simplest choice, which hypothesis favours)."""
    return data.draw(st.integers(0, n - 1)) == n // 2


def index(data: st.DataObject, size: int) -> int:
    """A position in ``0..size-1`` (0 when empty), drawn the same way whatever ``size`` is: a
    length that depends on the pool must not change the shape of the choices."""
    return data.draw(st.integers(0, 2**16 - 1)) % max(1, size)


def marker(data: st.DataObject) -> str:
    """The marker with a few hex digits, so that one example's values differ from another's."""
    return MARKER + data.draw(st.text("0123456789abcdef", min_size=2, max_size=6))


def fresh_uuid(data: st.DataObject) -> str:
    """A well-formed record id that names no record."""
    return str(data.draw(st.uuids()))


def mutate(data: st.DataObject, value: str) -> str:
    """``value`` changed by one character: replaced, inserted, dropped, or its case flipped."""
    pos = index(data, len(value))
    char = data.draw(
        st.one_of(
            st.sampled_from([*_BASE62[:12], "-", "_", "\n", " ", "é", "\x00"]),
            _TEXT_CHARS,
        )
    )
    op = data.draw(st.sampled_from(["replace", "replace", "insert", "drop", "append", "case"]))
    if not value:
        return char
    return {
        "replace": lambda: value[:pos] + char + value[pos + 1 :],
        "insert": lambda: value[:pos] + char + value[pos:],
        "drop": lambda: value[:pos] + value[pos + 1 :],
        "append": lambda: value + char,
        "case": lambda: value[:pos] + value[pos].swapcase() + value[pos + 1 :],
    }[op]()


@dataclass
class Ctx:
    """What one request's generation knows so far (its tenant, its record), whether it is a
    clean request, and whether it may still make one huge value (at most one per request)."""

    pool: Pool
    clean: bool = False
    huge_left: bool = True
    tenant: str = ""
    record_id: str = ""
    message: str = ""
    #: while a map field is filled: its name (``fields``, ``set_fields``, ``match`` ...)
    current_map: str = ""

    def take_huge(self, data: st.DataObject, n: int = 40) -> bool:
        """About once in ``n`` draws, if this request has no huge value yet."""
        if not self.huge_left or not one_in(data, n):
            return False
        self.huge_left = False
        return True


def wild_string(data: st.DataObject, ctx: Ctx) -> str:
    """Any string protobuf can carry: marked text, odd characters, newline ends, empty, huge
    (when ``ctx`` has no huge value yet: a huge repeated field repeats a small element)."""

    def huge() -> str:
        n = data.draw(st.sampled_from(_HUGE_LENGTHS))
        unit = data.draw(st.sampled_from(["a", "é", "\U0001f600", "\n", "\x00", "Zq9MARKER "]))
        return (marker(data) + unit * n)[:n]

    def ends() -> str:
        base = weighted(
            data,
            [
                (3, lambda: data.draw(st.sampled_from([*HOME_TENANTS, *PURPOSES, *FIELD_NAMES]))),
                (2, lambda: marker(data)),
            ],
        )
        return data.draw(
            st.sampled_from(
                [base + "\n", "\n" + base, base + "\r\n", " " + base + " ", base + "\t"]
            )
        )

    options: list[tuple[int, Callable[[], str]]] = [
        (
            4,
            lambda: (
                data.draw(st.text(_TEXT_CHARS, max_size=6))
                + marker(data)
                + data.draw(st.text(_TEXT_CHARS, max_size=6))
            ),
        ),
        (1, lambda: ""),
        (3, lambda: data.draw(st.text(_TEXT_CHARS, min_size=1, max_size=24))),
        (2, lambda: "".join(data.draw(st.lists(st.sampled_from(_ODD_CHARS), max_size=6)))),
        (2, ends),
        (1, lambda: marker(data) + "".join(data.draw(st.lists(st.sampled_from(_ODD_CHARS))))),
    ]
    if ctx.take_huge(data, 3):
        options.append((1, huge))
    return weighted(data, options)


def plausible_or_wild(data: st.DataObject, ctx: Ctx, plausible: Callable[[], str]) -> str:
    """``plausible()``, or it changed by one character, or anything: in a clean request nearly
    always the first, else most of the time."""
    return weighted(
        data,
        [
            (40 if ctx.clean else 6, plausible),
            (1 if ctx.clean else 2, lambda: mutate(data, plausible())),
            (1 if ctx.clean else 2, lambda: wild_string(data, ctx)),
        ],
    )


# --- plausible values --------------------------------------------------------------------------


def _base62(data: st.DataObject, n: int = 22) -> str:
    return data.draw(st.text(_BASE62, min_size=n, max_size=n))


def valid_value(data: st.DataObject, field_class: str) -> str:
    """A value the class accepts (often carrying the marker where the class allows letters)."""
    m = marker(data)
    if field_class == "email":
        local = data.draw(st.sampled_from([m, "ada", "Ada.Lovelace", "o'neil", "user+tag", "x"]))
        domain = data.draw(st.sampled_from(["example.com", "Example.ORG", "bücher.example"]))
        return f"{local}@{domain}"
    if field_class == "phone":
        return data.draw(
            st.one_of(
                st.integers(60000, 99999).map(lambda n: f"+4420794{n:05d}"),
                st.sampled_from(["+44 20 7946 0958", "+33142685300", "+14155552671"]),
            )
        )
    if field_class == "name":
        return data.draw(st.sampled_from([f"Ada {m}", "Ada Lovelace", "José Ñúñez", "李小龍", m]))
    if field_class == "address":
        return f"{data.draw(st.integers(1, 999))} {m} Street\nLondon"
    if field_class == "date_of_birth":
        return str(data.draw(st.dates().filter(lambda d: 1900 <= d.year <= 2020)))
    if field_class == "national_id":
        return data.draw(st.sampled_from([m.upper()[:32], "QQ123456C", "AB 12 34 56 C", m]))
    if field_class == "card_number":
        digits = data.draw(st.integers(0, 10**11 - 1))
        return luhn_complete(f"4000{digits:011d}")
    if field_class == "iban":
        return data.draw(
            st.sampled_from(
                ["GB82WEST12345698765432", "DE89 3704 0044 0532 0130 00", "NL91ABNA0417164300"]
            )
        )
    if field_class == "free_text":
        return f"note {m}\n\tsecond line {data.draw(st.text(_TEXT_CHARS, max_size=8))}"
    if field_class == "ip_address":
        return str(data.draw(st.ip_addresses()))
    return m


def tenant(data: st.DataObject, ctx: Ctx) -> str:
    """A home tenant (where the pool's records and tokens live) most of the time, else another
    valid one, one at the length limit or past it, one changed by a character, or anything."""

    def plausible() -> str:
        return weighted(
            data,
            [
                (8, lambda: data.draw(st.sampled_from(HOME_TENANTS))),
                (2, lambda: ctx.pool.pick(data, ctx.pool.tenants, "demo")),
                (1, lambda: f"t-{data.draw(st.text('0123456789abcdef', min_size=4, max_size=8))}"),
                (1, lambda: data.draw(st.sampled_from(["d" * 64, "d" * 65, "a", "A.b-c_d"]))),
            ],
        )

    return weighted(
        data,
        [
            (60 if ctx.clean else 12, plausible),
            (1, lambda: mutate(data, plausible())),
            (1, lambda: wild_string(data, ctx)),
        ],
    )


def record_id(data: st.DataObject, ctx: Ctx) -> str:
    """A record of the request's tenant (a live one in a clean request), another tenant's, one
    changed by a character, a fresh UUID, an upper-case one, or anything."""
    pool = ctx.pool
    return weighted(
        data,
        [
            (
                40 if ctx.clean else 10,
                lambda: pool.pick(data, pool.live_records(ctx.tenant, ctx.clean), fresh_uuid(data)),
            ),
            (1, lambda: pool.pick(data, pool.all_records(), fresh_uuid(data))),
            (1, lambda: mutate(data, pool.pick(data, pool.all_records(), fresh_uuid(data)))),
            (1, lambda: fresh_uuid(data)),
            (1, lambda: data.draw(st.sampled_from([fresh_uuid(data).upper(), ""]))),
            (1, lambda: wild_string(data, ctx)),
        ],
    )


def token(data: st.DataObject, ctx: Ctx) -> str:
    """A token issued in the request's tenant, in another, one changed by a character, a
    crafted one of the right shape, or anything."""
    pool = ctx.pool

    def crafted() -> str:
        cls = data.draw(st.sampled_from(FIELD_CLASSES))
        return f"tok_{cls}_{_base62(data)}"

    return weighted(
        data,
        [
            (
                30 if ctx.clean else 6,
                lambda: pool.pick(data, pool.tokens.get(ctx.tenant, []), crafted()),
            ),
            (2, lambda: pool.pick(data, pool.all_tokens(), crafted())),
            (3, lambda: mutate(data, pool.pick(data, pool.all_tokens(), crafted()))),
            (1, crafted),
            (1, lambda: wild_string(data, ctx)),
        ],
    )


def grant(data: st.DataObject, ctx: Ctx) -> str:
    """Mostly none; else a grant issued in the tenant (to ai-pipeline), another tenant's, one
    changed by a character, a crafted one, or anything."""
    pool = ctx.pool

    def crafted() -> str:
        return f"grt_{_base62(data)}"

    return weighted(
        data,
        [
            (12 if ctx.clean else 6, lambda: ""),
            (
                4,
                lambda: pool.pick(data, pool.grants.get(ctx.tenant, []), crafted()),
            ),
            (1, lambda: pool.pick(data, pool.all_grants(), crafted())),
            (1, lambda: mutate(data, pool.pick(data, pool.all_grants(), crafted()))),
            (1, crafted),
            (1, lambda: wild_string(data, ctx)),
        ],
    )


def text_body(data: st.DataObject, ctx: Ctx) -> str:
    """A support message: PII of several classes, tokens (issued, altered, crafted), the marker,
    odd characters, sometimes huge."""
    pool = ctx.pool

    def piece() -> str:
        return weighted(
            data,
            [
                (3, lambda: valid_value(data, data.draw(st.sampled_from(FIELD_CLASSES)))),
                (3, lambda: token(data, ctx)),
                (2, lambda: f"Hello, I am {marker(data)} and"),
                (1, lambda: pool.pick(data, pool.all_tokens(), "tok_email_")[:9]),
                (1, lambda: wild_string(data, ctx)),
                (1, lambda: data.draw(st.sampled_from(list(_ODD_CHARS)))),
            ],
        )

    parts = [piece() for _ in range(data.draw(st.integers(0, 5)))]
    glue = data.draw(st.sampled_from([" ", "", "\n", ", ", "\u00a0"]))
    text = glue.join(parts)
    if ctx.take_huge(data, 30):
        n = data.draw(st.sampled_from((1000, 65535, 65536, 65537, 200_000)))
        text = (text + " " + marker(data) + " ") * (n // max(1, len(text) + 12) + 1)
        text = text[:n]
    return text


def _int_value(data: st.DataObject, fd: FieldDescriptor, ctx: Ctx) -> int:
    """An integer for ``fd``: usual values by its name in a clean request, else its type's
    extremes and anything in its range."""
    name = fd.name
    usual: dict[str, Sequence[int]] = {
        "ttl_seconds": (60, 120, 3600, 86400),
        "max_uses": (1, 2, 5, 100, 10_000),
        "limit": (0, 10, 100, 1000),
    }
    edge: dict[str, Sequence[int]] = {
        "ttl_seconds": (0, 1, 86401, MAX_TTL_SECONDS, MAX_TTL_SECONDS + 1, 2**31, 2**32 - 1),
        "max_uses": (0, 3, 10_001, 2**32 - 1),
        "limit": (1, 1001, -1, 2**31 - 1, -(2**31)),
    }
    if name == "expected_version":
        known = ctx.pool.versions.get((ctx.message, ctx.record_id))
        first = 0 if "Consent" in ctx.message else 1  # a record starts at 1, its consent at 0
        return weighted(
            data,
            [
                (20 if ctx.clean else 4, lambda: known if known is not None else first),
                (2, lambda: (known or 0) + data.draw(st.sampled_from([-1, 1, 2]))),
                (2, lambda: data.draw(st.sampled_from([0, 1]))),
                (2, lambda: data.draw(st.sampled_from(_INT64))),
                (1, lambda: data.draw(st.integers(-(2**63), 2**63 - 1))),
            ],
        )
    if name in usual:
        return weighted(
            data,
            [
                (20 if ctx.clean else 4, lambda: data.draw(st.sampled_from(usual[name]))),
                (2, lambda: data.draw(st.sampled_from(edge[name]))),
                (1, lambda: _by_type(data, fd)),
            ],
        )
    return _by_type(data, fd)


def _by_type(data: st.DataObject, fd: FieldDescriptor) -> int:
    """An extreme of ``fd``'s integer type, or anything in its range."""
    t = fd.type
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return data.draw(st.one_of(st.sampled_from(_INT32), st.integers(-(2**31), 2**31 - 1)))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return data.draw(st.one_of(st.sampled_from(_UINT32), st.integers(0, 2**32 - 1)))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return data.draw(st.one_of(st.sampled_from(_UINT64), st.integers(0, 2**64 - 1)))
    return data.draw(st.one_of(st.sampled_from(_INT64), st.integers(-(2**63), 2**63 - 1)))


def _enum_value(data: st.DataObject, fd: FieldDescriptor, ctx: Ctx) -> int:
    """A declared number mostly; else one the enum does not declare (proto3 enums are open)."""
    assert fd.enum_type is not None
    known: list[int] = [v.number for v in fd.enum_type.values]
    unknown = [-1, max(known) + 1, 99, 2**31 - 1, -(2**31)]
    return weighted(
        data,
        [
            (40 if ctx.clean else 8, lambda: data.draw(st.sampled_from(known))),
            (1, lambda: data.draw(st.sampled_from(unknown))),
        ],
    )


def _bytes_value(data: st.DataObject, ctx: Ctx) -> bytes:
    """32 random bytes (an X25519 key's size) or none in a clean request; else any length, the
    marker, invalid UTF-8, or huge."""
    options: list[tuple[int, Callable[[], bytes]]] = [
        (8 if ctx.clean else 3, lambda: data.draw(st.binary(min_size=32, max_size=32))),
        (8 if ctx.clean else 3, lambda: b""),
        (2, lambda: data.draw(st.binary(max_size=40))),
        (1, lambda: (marker(data) + "\n").encode()),
        (1, lambda: b"\xff\xfe\xed\xa0\x80"),
    ]
    if ctx.take_huge(data):
        options.append((1, lambda: bytes(data.draw(st.sampled_from([33, 65536, 1_000_001])))))
    return weighted(data, options)


def string_value(data: st.DataObject, fd: FieldDescriptor, ctx: Ctx, *, key: str = "") -> str:
    """A string for field ``fd`` (``key``: the map key it is the value of, if any)."""
    if fd.containing_type is not None and fd.containing_type.GetOptions().map_entry:
        # a map entry: its parent field's name decides (``fields``, ``set_fields``, ``match``)
        return _map_part(data, fd, ctx, key)
    name = fd.name
    pool = ctx.pool
    if name == "tenant":
        ctx.tenant = tenant(data, ctx)
        return ctx.tenant
    if name in ("record_id", "record_ids"):
        value = record_id(data, ctx)
        if name == "record_id":
            ctx.record_id = value
        return value
    if name in ("purpose", "purposes"):
        own = pool.purposes or PURPOSES
        return plausible_or_wild(
            data,
            ctx,
            lambda: weighted(
                data,
                [
                    (6, lambda: data.draw(st.sampled_from(own))),
                    (3, lambda: data.draw(st.sampled_from(PURPOSES))),
                    (0 if ctx.clean else 1, lambda: data.draw(st.sampled_from(["", "testing"]))),
                ],
            ),
        )
    if name in ("fields", "clear_fields"):
        return plausible_or_wild(data, ctx, lambda: data.draw(st.sampled_from(FIELD_NAMES)))
    if name in ("scope", "token_scope"):
        return weighted(
            data,
            [
                (3, lambda: ""),
                (5, lambda: pool.pick(data, pool.scopes, SCOPES[0])),
                (1, lambda: plausible_or_wild(data, ctx, lambda: SCOPES[1])),
                (1, lambda: data.draw(st.sampled_from(["s" * 64, "s" * 65]))),
            ],
        )
    if name == "idempotency_key":
        return weighted(
            data,
            [
                (3, lambda: ""),
                (3, lambda: f"idem-{_base62(data, 8)}"),
                (2, lambda: pool.pick(data, pool.idempotency_keys, "idem-1")),
                (1, lambda: data.draw(st.sampled_from(["k" * 128, "k" * 129]))),
                (1 if ctx.clean else 2, lambda: wild_string(data, ctx)),
            ],
        )
    if name == "source":
        return plausible_or_wild(
            data,
            ctx,
            lambda: data.draw(st.sampled_from(["web-form", "support call", "s" * 128])),
        )
    if name in ("tokens", "token"):
        return token(data, ctx)
    if name == "grant":
        return grant(data, ctx)
    if name == "grantee":
        return plausible_or_wild(data, ctx, lambda: data.draw(st.sampled_from(PRINCIPALS)))
    if name in ("field_class", "field_classes"):
        return plausible_or_wild(data, ctx, lambda: data.draw(st.sampled_from(FIELD_CLASSES)))
    if name == "value":
        return weighted(
            data,
            [
                (6, lambda: valid_value(data, data.draw(st.sampled_from(FIELD_CLASSES)))),
                (1 if ctx.clean else 3, lambda: wild_string(data, ctx)),
            ],
        )
    if name in ("text", "texts"):
        return text_body(data, ctx)
    if name == "default_region":
        return plausible_or_wild(
            data, ctx, lambda: data.draw(st.sampled_from(["", "US", "GB", "DE", "gb", "XX"]))
        )
    return wild_string(data, ctx)


def _map_part(data: st.DataObject, fd: FieldDescriptor, ctx: Ctx, key: str) -> str:
    """A key or value of a ``map<string, string>``: field names and values valid for them."""
    parent = ctx.current_map
    if fd.name == "key":
        if parent in ("fields", "set_fields", "match"):
            names = SEARCHABLE if parent == "match" else FIELD_NAMES
            return plausible_or_wild(data, ctx, lambda: data.draw(st.sampled_from(names)))
        return wild_string(data, ctx)
    cls = CLASS_OF_FIELD.get(key)
    if cls is not None:
        return weighted(
            data,
            [
                (30 if ctx.clean else 6, lambda: valid_value(data, cls)),
                (1, lambda: mutate(data, valid_value(data, cls))),
                (1 if ctx.clean else 2, lambda: wild_string(data, ctx)),
            ],
        )
    return wild_string(data, ctx)


def _scalar(data: st.DataObject, fd: FieldDescriptor, ctx: Ctx, *, key: str = "") -> Any:
    """A value of ``fd``'s scalar type (``key``: the map key it belongs to, if any)."""
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return string_value(data, fd, ctx, key=key)
    if t == FieldDescriptor.TYPE_BYTES:
        return _bytes_value(data, ctx)
    if t == FieldDescriptor.TYPE_BOOL:
        return data.draw(st.booleans())
    if t == FieldDescriptor.TYPE_ENUM:
        return _enum_value(data, fd, ctx)
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return data.draw(st.floats(width=32 if t == FieldDescriptor.TYPE_FLOAT else 64))
    return _int_value(data, fd, ctx)


def _count(data: st.DataObject, ctx: Ctx) -> tuple[int, bool]:
    """How many elements a repeated field or map gets, and whether that is a huge count of one
    element repeated (cheap to make, and exercises every size limit)."""
    if ctx.take_huge(data, 30):
        return data.draw(st.sampled_from(_HUGE_COUNTS)), True
    return weighted(
        data,
        [
            (9, lambda: data.draw(st.integers(1, 3))),
            (0 if ctx.clean else 1, lambda: 0),
            (1, lambda: data.draw(st.integers(4, 12))),
        ],
    ), False


def fill(data: st.DataObject, message: Message, ctx: Ctx, depth: int = 0) -> Message:
    """Give every field of ``message`` a drawn value (in descriptor order), recursively."""
    # the upb runtime's descriptor classes stand in for the pure-Python ones the stubs name
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    for fd in descriptor.fields:
        # a few fields stay unset (proto3 default), never the tenant
        if fd.name != "tenant" and one_in(data, 64 if ctx.clean else 12):
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            _fill_map(data, message, fd, ctx, depth)
        elif fd.is_repeated:
            n, huge = _count(data, ctx)
            target = getattr(message, fd.name)
            if fd.message_type is not None:
                if depth > 3:
                    continue
                if huge:
                    one = fill(data, GetMessageClass(fd.message_type)(), ctx, depth + 1)
                    target.extend([one] * n)
                else:
                    for _ in range(n):
                        fill(data, target.add(), ctx, depth + 1)
            elif huge:
                target.extend([_scalar(data, fd, ctx)] * n)
            else:
                target.extend(_scalar(data, fd, ctx) for _ in range(n))
        elif fd.message_type is not None:
            if depth <= 3:
                fill(data, getattr(message, fd.name), ctx, depth + 1)
        else:
            setattr(message, fd.name, _scalar(data, fd, ctx))
    fixup = FIXUPS.get(descriptor.full_name)
    if fixup is not None:
        fixup(data, message, ctx)
    return message


def _fill_map(
    data: st.DataObject, message: Message, fd: FieldDescriptor, ctx: Ctx, depth: int
) -> None:
    """Entries of a map field; a huge map has distinct keys (``k1``, ``k2`` ...)."""
    entry = fd.message_type
    assert entry is not None
    key_fd = entry.fields_by_name["key"]
    value_fd = entry.fields_by_name["value"]
    target = getattr(message, fd.name)
    outer = ctx.current_map
    ctx.current_map = fd.name
    try:
        n, huge = _count(data, ctx)
        if huge:
            n = min(n, 2000)  # distinct keys: a map cannot repeat one
        for i in range(n):
            k = _scalar(data, key_fd, ctx) if not huge or i == 0 else f"k{i}"
            if value_fd.message_type is not None:
                if depth <= 3:
                    fill(data, target[k], ctx, depth + 1)
            else:
                target[k] = _scalar(data, value_fd, ctx, key=k if isinstance(k, str) else "")
    finally:
        ctx.current_map = outer


def _tokenize_item(data: st.DataObject, message: Message, ctx: Ctx) -> None:
    """Mostly a value valid for the item's class (a token item is checked against it); a clean
    item is mostly standalone, and format-preserving only for a class that has the form."""
    item: Any = message
    coherent = weighted(data, [(9 if ctx.clean else 6, lambda: True), (4, lambda: False)])
    standalone = data.draw(st.integers(0, 2)) > 0
    if item.field_class in FIELD_CLASSES and coherent:
        item.value = valid_value(data, item.field_class)
    if ctx.clean:
        if standalone:
            item.ClearField("record_id")
        if item.kind == FORMAT_PRESERVING and item.field_class not in FPE_CLASSES:
            item.kind = 2


def _update_record(data: st.DataObject, message: Message, ctx: Ctx) -> None:
    """A clean update does not clear a field it sets (the service refuses that)."""
    update: Any = message
    if ctx.clean:
        keep = [f for f in update.clear_fields if f not in update.set_fields]
        del update.clear_fields[:]
        update.clear_fields.extend(keep)


def _issue_grant(data: st.DataObject, message: Message, ctx: Ctx) -> None:
    """A clean grant names record ids or a scope, not both (the service wants exactly one)."""
    drop = data.draw(st.sampled_from(["scope", "record_ids"]))
    grant: Any = message
    if ctx.clean and grant.scope and grant.record_ids:
        message.ClearField(drop)


FIXUPS: Final[dict[str, Callable[[st.DataObject, Message, Ctx], None]]] = {
    "vault.v1.TokenizeItem": _tokenize_item,
    "vault.v1.IssueGrantRequest": _issue_grant,
    "vault.v1.UpdateRecordRequest": _update_record,
}
FORMAT_PRESERVING: Final = 3
FPE_CLASSES: Final = frozenset(c.value for c in _FPE_CLASSES)


# --- whole requests ------------------------------------------------------------------------------


def request(data: st.DataObject, method: MethodDescriptor, pool: Pool) -> Message:
    """A request message for ``method``: clean half of the time."""
    ctx = Ctx(pool, clean=data.draw(st.booleans()), message=method.input_type.name)
    return fill(data, GetMessageClass(method.input_type)(), ctx)


def raw_body(data: st.DataObject, method: MethodDescriptor, pool: Pool) -> bytes:
    """Bytes that claim to be ``method``'s request: random, a valid request cut short or with a
    flipped byte, or with a string field holding invalid UTF-8 or an unknown field appended."""
    valid = request(data, method, pool).SerializeToString()
    string_fields = [
        f.number for f in method.input_type.fields if f.type == FieldDescriptor.TYPE_STRING
    ]

    def flipped() -> bytes:
        i = index(data, len(valid))
        flip = data.draw(st.integers(1, 255))
        if not valid:
            return b"\x08"
        return valid[:i] + bytes([valid[i] ^ flip]) + valid[i + 1 :]

    def bad_utf8() -> bytes:
        number = data.draw(st.sampled_from(string_fields or [1]))
        payload = data.draw(
            st.sampled_from(
                [b"\xed\xa0\x80", b"\xff", b"demo\xc3", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"a\x80"]
            )
        )
        return valid + _tag(number, 2) + _varint(len(payload)) + payload

    def unknown_field() -> bytes:
        number = data.draw(st.integers(16, 2**29 - 1))
        wire = data.draw(st.sampled_from([0, 1, 2, 5]))
        body = {
            0: _varint(data.draw(st.integers(0, 2**64 - 1))),
            1: b"\x00" * 8,
            2: _varint(3) + b"abc",
            5: b"\x00" * 4,
        }[wire]
        return valid + _tag(number, wire) + body

    return weighted(
        data,
        [
            (3, bad_utf8),
            (3, lambda: data.draw(st.binary(max_size=64))),
            (2, lambda: valid[: index(data, len(valid))]),
            (2, flipped),
            (1, unknown_field),
            (1, lambda: valid + valid[: index(data, len(valid) + 1)]),
            (1, lambda: b"\x0a\xff\xff\xff\xff\x0f"),  # a length far past the end
        ],
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


# --- what earlier calls returned -----------------------------------------------------------------


@dataclass
class Pool:
    """Ids, tokens, grants and versions harvested from successful calls (bounded), drawn by the
    strategies so that requests name things that exist."""

    cap: int = 400
    tenants: list[str] = field(default_factory=lambda: list(HOME_TENANTS))
    records: dict[str, list[str]] = field(default_factory=dict)
    tokens: dict[str, list[str]] = field(default_factory=dict)
    grants: dict[str, list[str]] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=lambda: list(SCOPES))
    idempotency_keys: list[str] = field(default_factory=list)
    #: (request message name, record id) -> the version an update of it should expect
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: records erased by a DeleteRecord (clean requests name the others)
    erased: set[str] = field(default_factory=set)
    #: the purposes of the role the current example calls as (its requests prefer them)
    purposes: tuple[str, ...] = ()
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def pick(self, data: st.DataObject, items: Sequence[str], fallback: str) -> str:
        """An element of ``items`` (``fallback`` when there is none). The draw is the same
        whatever the pool holds: hypothesis needs an example's choices to depend only on the
        choices before them, never on outside state."""
        i = index(data, len(items))
        return items[i] if items else fallback

    def _add(self, bucket: list[str], value: str) -> None:
        if not value or value in bucket[-20:]:
            return
        if len(bucket) >= self.cap:
            bucket[self._rng.randrange(len(bucket))] = value
        else:
            bucket.append(value)

    def add_record(self, tenant: str, record_id: str) -> None:
        self._add(self.records.setdefault(tenant, []), record_id)

    def add_token(self, tenant: str, token: str) -> None:
        self._add(self.tokens.setdefault(tenant, []), token)

    def add_grant(self, tenant: str, grant: str) -> None:
        self._add(self.grants.setdefault(tenant, []), grant)

    def add_tenant(self, tenant: str) -> None:
        if tenant not in self.tenants and len(self.tenants) < 50:
            self.tenants.append(tenant)

    def live_records(self, tenant: str, live: bool) -> list[str]:
        records = self.records.get(tenant, [])
        return [r for r in records if r not in self.erased] if live else records

    def all_records(self) -> list[str]:
        return [r for rs in self.records.values() for r in rs]

    def all_tokens(self) -> list[str]:
        return [t for ts in self.tokens.values() for t in ts]

    def all_grants(self) -> list[str]:
        return [g for gs in self.grants.values() for g in gs]

    def harvest(self, request: Message, response: Message) -> None:
        """Keep what a successful call's response names, under the request's tenant."""
        tenant = getattr(request, "tenant", "")
        if not isinstance(tenant, str) or not tenant:
            return
        self.add_tenant(tenant)
        for name in ("scope", "token_scope"):
            value = getattr(request, name, "")
            if isinstance(value, str) and value and value not in self.scopes:
                self._add(self.scopes, value)
        keys = [getattr(request, "idempotency_key", "")]
        keys += [getattr(r, "idempotency_key", "") for r in getattr(request, "records", [])]
        for key in keys:
            if isinstance(key, str) and key:
                self._add(self.idempotency_keys, key)
        self._walk(tenant, response)

    def _walk(self, tenant: str, message: Message) -> None:
        values = {fd.name: value for fd, value in message.ListFields()}
        rid = values.get("record_id")
        if isinstance(rid, str) and rid:
            self.add_record(tenant, rid)
            if message.DESCRIPTOR.name == "ErasureReceipt":
                self.erased.add(rid)
            version = values.get("version")
            if isinstance(version, int):
                consent = message.DESCRIPTOR.name == "Consent"
                kind = "UpdateConsentRequest" if consent else "UpdateRecordRequest"
                self.versions[(kind, rid)] = version
        for fd, value in message.ListFields():
            items: list[Any]
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                items = list(value.values())
            elif fd.is_repeated:
                items = list(value)
            else:
                items = [value]
            for v in items:
                if isinstance(v, Message):
                    self._walk(tenant, v)
                elif isinstance(v, str) and v:
                    if fd.name in ("token", "tokens") or v.startswith("tok_"):
                        self.add_token(tenant, v)
                    elif fd.name == "record_ids":
                        self.add_record(tenant, v)
                    elif fd.name == "grant":
                        self.add_grant(tenant, v)
