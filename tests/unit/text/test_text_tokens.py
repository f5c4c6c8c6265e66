"""Finding tokens for re-identification: well-formed vs malformed, and the streaming scanner
giving exactly the whole-text result for every split into chunks."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto import TOKEN_RE, random_token
from vault.text import MAX_CANDIDATE, StreamTokenScanner, TokenFindings, TokenMatch, find_tokens
from vault.text._tokens import Piece

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
BODY = "AbC0123456789xyzXYZ987"  # 22 base62 digits
assert len(BODY) == 22

EMAIL_TOKEN = f"tok_email_{BODY}"
CARD_TOKEN = f"tok_card_number_{BODY}"


def found(text: str) -> tuple[list[str], list[str]]:
    result = find_tokens(text)
    return [m.token for m in result.tokens], [m.token for m in result.malformed]


# -- find_tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens", "malformed"),
    [
        (EMAIL_TOKEN, [EMAIL_TOKEN], []),
        (f"Dear {EMAIL_TOKEN}, your card {CARD_TOKEN}.", [EMAIL_TOKEN, CARD_TOKEN], []),
        (f"({EMAIL_TOKEN})", [EMAIL_TOKEN], []),
        (f"**{EMAIL_TOKEN}**", [EMAIL_TOKEN], []),
        (f"_{EMAIL_TOKEN}_", [EMAIL_TOKEN], []),  # Markdown italics
        (f"{EMAIL_TOKEN}__", [EMAIL_TOKEN], []),  # trailing underscores are text
        (f"x={EMAIL_TOKEN};", [EMAIL_TOKEN], []),
        (f"{EMAIL_TOKEN}é", [EMAIL_TOKEN], []),  # non-ASCII ends a token
        (f"tok_a_b_c_{BODY}", [f"tok_a_b_c_{BODY}"], []),  # class "a_b_c"
        (f"tok_email__{BODY}", [f"tok_email__{BODY}"], []),  # class "email_", as TOKEN_RE
        (f"tok_{'a' * 32}_{BODY}", [f"tok_{'a' * 32}_{BODY}"], []),
        # altered by a model: cut short, extended, re-cased, class changed
        (f"see {EMAIL_TOKEN[:-1]} now", [], [EMAIL_TOKEN[:-1]]),
        (f"see {EMAIL_TOKEN}Q now", [], [EMAIL_TOKEN + "Q"]),
        (f"{EMAIL_TOKEN.upper()}", [], [EMAIL_TOKEN.upper()]),
        (f"Tok_email_{BODY}", [], [f"Tok_email_{BODY}"]),
        (f"tok_Email_{BODY}", [], [f"tok_Email_{BODY}"]),
        (f"tok_em4il_{BODY}", [], [f"tok_em4il_{BODY}"]),
        (f"tok_{'a' * 33}_{BODY}", [], [f"tok_{'a' * 33}_{BODY}"]),
        (f"tok__{BODY}", [], [f"tok__{BODY}"]),
        ("tok_email_abc", [], ["tok_email_abc"]),
        ("tok_email_", [], ["tok_email"]),
        (f"{EMAIL_TOKEN}{CARD_TOKEN}", [], [EMAIL_TOKEN + CARD_TOKEN]),
        (f"{EMAIL_TOKEN}_x", [], [EMAIL_TOKEN + "_x"]),
        # not token-like at all
        ("", [], []),
        ("tok_", [], []),
        ("tok___ and tok", [], []),
        ("the token prefix is tok_, see docs", [], []),
        (f"mytok_email_{BODY}", [], []),
        (f"my_tok_email_{BODY}", [], []),
        (f"9tok_email_{BODY}", [], []),
        ("stock_email_list", [], []),
        ("tok-email-abc", [], []),
    ],
)
def test_find_tokens(text: str, tokens: list[str], malformed: list[str]) -> None:
    assert found(text) == (tokens, malformed)


def test_find_tokens_offsets_and_class() -> None:
    text = f"a {CARD_TOKEN} b tok_x c"
    result = find_tokens(text)
    (token,) = result.tokens
    (bad,) = result.malformed
    assert (token.start, token.end, token.well_formed) == (2, 2 + len(CARD_TOKEN), True)
    assert text[token.start : token.end] == token.token
    assert token.field_class == "card_number"
    assert text[bad.start : bad.end] == "tok_x"
    assert (bad.well_formed, bad.field_class) == (False, None)


def test_token_match_repr_leaves_out_the_text() -> None:
    match = find_tokens("tok_secretvalue").malformed[0]
    assert "secretvalue" not in repr(match)


def test_find_tokens_refuses_non_str() -> None:
    with pytest.raises(TypeError):
        find_tokens(b"tok_email_x")  # type: ignore[arg-type]


def test_long_run_is_cut_at_max_candidate() -> None:
    text = "tok_" + "a" * 500 + " " + EMAIL_TOKEN
    result = find_tokens(text)
    (long_one,) = result.malformed
    assert long_one.end - long_one.start == MAX_CANDIDATE
    assert [m.token for m in result.tokens] == [EMAIL_TOKEN]


@pytest.mark.parametrize("field_class", ["email", "phone", "card_number", "iban", "ip_address"])
def test_minted_tokens_are_found(field_class: str) -> None:
    token = random_token(field_class)
    (match,) = find_tokens(f"Hello {token}.").tokens
    assert match.token == token
    assert match.field_class == field_class


CLASS_PART = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=34)
BODY_PART = st.text(alphabet=BASE62, min_size=0, max_size=25)


@given(CLASS_PART, BODY_PART)
def test_well_formed_agrees_with_token_re(field_class: str, body: str) -> None:
    candidate = f"tok_{field_class}_{body}"
    matches = find_tokens(f" {candidate} ")
    well_formed = [m.token for m in matches.tokens]
    assert (well_formed == [candidate]) == (TOKEN_RE.fullmatch(candidate) is not None)
    if not well_formed:
        # trailing underscores are text; "tok_" with no letter or digit after it is no candidate
        stripped = candidate.rstrip("_")
        expected = [stripped] if len(stripped) > len("tok_") else []
        assert [m.token for m in matches.malformed] == expected


# -- StreamTokenScanner ---------------------------------------------------------------------------

tokens = st.builds(
    lambda c, b: f"tok_{c}_{b}",
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=32),
    st.text(alphabet=BASE62, min_size=22, max_size=22),
)
near_tokens = st.one_of(
    st.sampled_from(
        [
            "tok_",
            "tok",
            "to",
            "t",
            "T",
            "TOK_",
            "Tok_",
            "tok_email_abc",
            "tok_email_",
            "tok__",
            "tok_card_number_",
            "_",
            "__",
            "a_",
            EMAIL_TOKEN[:-1],
            EMAIL_TOKEN + "Z",
        ]
    ),
    st.builds(lambda c, b: f"tok_{c}_{b}", CLASS_PART, BODY_PART),
)
fragments = st.one_of(
    tokens,
    near_tokens,
    st.text(max_size=6),  # arbitrary unicode
    st.text(alphabet="tok_TOK19aZ -.é\n🙂", max_size=8),
    st.just("_" * (MAX_CANDIDATE + 3)),
)
texts = st.lists(fragments, max_size=10).map("".join)


@st.composite
def text_and_chunks(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))  # repeats: empty chunks
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


def spelled(pieces: list[Piece]) -> str:
    return "".join(p if isinstance(p, str) else p.token for p in pieces)


@settings(max_examples=400, deadline=None)
@given(text_and_chunks())
def test_stream_matches_find_tokens_for_every_split(case: tuple[str, list[str]]) -> None:
    text, chunks = case
    scanner = StreamTokenScanner()
    pieces: list[Piece] = []
    received = ""
    for chunk in chunks:
        new = scanner.feed(chunk)
        assert all(p != "" for p in new)
        pieces.extend(new)
        received += chunk
        released = spelled(pieces)
        assert received.startswith(released)
        held = received[len(released) :]
        # Minimal hold: the first held character can still start a token for some continuation.
        if held:
            assert len(held) < MAX_CANDIDATE
            completion = ("tok_"[len(held) :] if len(held) < 4 else "") + "a"
            starts = {m.start for m in _all(find_tokens(received + completion))}
            assert len(released) in starts
    pieces.extend(scanner.finish())
    assert spelled(pieces) == text
    expected = find_tokens(text)
    streamed = [p for p in pieces if isinstance(p, TokenMatch)]
    assert streamed == _all(expected)
    assert [p for p in streamed if p.well_formed] == list(expected.tokens)


def _all(result: TokenFindings) -> list[TokenMatch]:
    return sorted([*result.tokens, *result.malformed], key=lambda m: m.start)


def test_stream_releases_plain_text_at_once_and_holds_a_token_start() -> None:
    scanner = StreamTokenScanner()
    assert scanner.feed("Hello there, ") == ["Hello there, "]
    assert scanner.feed("your email is to") == ["your email is "]
    assert scanner.feed("k_email_AbC") == []
    pieces = scanner.feed(BODY[3:] + " ok")
    assert pieces[0] == TokenMatch(27, 27 + len(EMAIL_TOKEN), EMAIL_TOKEN, True)
    assert pieces[1:] == [" ok"]
    assert scanner.finish() == []


def test_stream_one_character_at_a_time() -> None:
    text = f"a {EMAIL_TOKEN} b tok_x"
    scanner = StreamTokenScanner()
    pieces: list[Piece] = []
    for char in text:
        pieces.extend(scanner.feed(char))
    pieces.extend(scanner.finish())
    assert [p.token for p in pieces if isinstance(p, TokenMatch)] == [EMAIL_TOKEN, "tok_x"]


def test_stream_does_not_hold_after_an_identifier() -> None:
    # "xtok" cannot start a token: nothing is held back
    assert StreamTokenScanner().feed("abc xto") == ["abc xto"]
    assert StreamTokenScanner().feed("abc a_to") == ["abc a_to"]
    assert StreamTokenScanner().feed("abc _to") == ["abc _"]


def test_stream_holds_at_most_max_candidate() -> None:
    scanner = StreamTokenScanner()
    # a token start followed by only underscores is held until MAX_CANDIDATE characters show it
    # cannot become a token
    assert scanner.feed("tok_" + "_" * 100) == []
    assert spelled(scanner.feed("_" * 100)) == "tok_" + "_" * 200


def test_stream_hold_ends_exactly_at_max_candidate() -> None:
    scanner = StreamTokenScanner()
    prefix = "tok_" + "_" * (MAX_CANDIDATE - 5)
    assert scanner.feed(prefix) == []  # one more letter would make a candidate of the cap
    assert find_tokens(prefix + "a").malformed[0].end == MAX_CANDIDATE
    assert scanner.feed("_") == [prefix + "_"]  # now no candidate can start there
    assert find_tokens(prefix + "_a").malformed == ()


def test_stream_after_finish() -> None:
    scanner = StreamTokenScanner()
    assert scanner.feed("tok_a") == []
    (piece,) = scanner.finish()
    assert isinstance(piece, TokenMatch)
    assert (piece.token, piece.well_formed) == ("tok_a", False)
    assert scanner.finish() == []
    with pytest.raises(ValueError, match="finished"):
        scanner.feed("x")


def test_stream_refuses_non_str() -> None:
    with pytest.raises(TypeError):
        StreamTokenScanner().feed(b"tok_")  # type: ignore[arg-type]
