"""Token lifetimes: one lookup at first use, renewal at a third of the TTL, re-login when capped."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from vault.deadline import Deadline
from vault.errors import KeyServerPermissionDenied, KeyServerUnavailable
from vault.keys import AppRoleAuth, TokenAuth
from vault.keys import _auth as auth_module
from vault.keys._auth import KeyServerResponse, TokenRejected

Handler = Callable[[str | None, Mapping[str, Any] | None], KeyServerResponse]


class FakeTransport:
    """Answers by path with scripted handlers and records every call."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.calls: list[tuple[str, str | None]] = []

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        body: Mapping[str, Any] | None = None,
        deadline: Deadline | None = None,
        subject: str,
    ) -> KeyServerResponse:
        self.calls.append((path, token))
        return self.handlers[path](token, body)

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth_module, "_clock", fake)
    return fake


def data(**values: Any) -> KeyServerResponse:
    return KeyServerResponse(200, {"data": values})


def auth(**values: Any) -> KeyServerResponse:
    return KeyServerResponse(200, {"auth": values})


def refused(*_: object) -> KeyServerResponse:
    raise TokenRejected("key server denied access: permission denied")


def down(*_: object) -> KeyServerResponse:
    raise KeyServerUnavailable("key server unavailable: x")


class TestTokenAuth:
    def test_root_token_is_looked_up_once_and_never_renewed(self, clock: Clock) -> None:
        transport = FakeTransport({"auth/token/lookup-self": lambda t, b: data(ttl=0)})
        auth_ = TokenAuth("root-token")
        for _ in range(5):
            assert auth_.token(transport) == "root-token"
            clock.now += 10_000
        assert transport.paths() == ["auth/token/lookup-self"]

    def test_renew_false_makes_no_call_at_all(self, clock: Clock) -> None:
        transport = FakeTransport({})
        assert TokenAuth("t", renew=False).token(transport) == "t"
        assert transport.calls == []

    def test_renewed_when_less_than_a_third_of_ttl_remains(self, clock: Clock) -> None:
        transport = FakeTransport(
            {
                "auth/token/lookup-self": lambda t, b: data(
                    ttl=300, creation_ttl=300, renewable=True
                ),
                "auth/token/renew-self": lambda t, b: auth(
                    lease_duration=b["increment"] if b else 0, renewable=True
                ),
            }
        )
        auth_ = TokenAuth("t")
        auth_.token(transport)
        clock.now += 199  # 101 s left of 300: more than a third
        auth_.token(transport)
        assert transport.paths() == ["auth/token/lookup-self"]
        clock.now += 2  # 99 s left
        auth_.token(transport)
        assert transport.paths() == ["auth/token/lookup-self", "auth/token/renew-self"]
        auth_.token(transport)  # fresh again
        assert transport.paths().count("auth/token/renew-self") == 1

    def test_capped_renewal_is_not_retried_before_every_request(self, clock: Clock) -> None:
        transport = FakeTransport(
            {
                "auth/token/lookup-self": lambda t, b: data(
                    ttl=300, creation_ttl=300, renewable=True
                ),
                "auth/token/renew-self": lambda t, b: auth(lease_duration=50, renewable=True),
            }
        )
        auth_ = TokenAuth("t")
        auth_.token(transport)
        clock.now += 250
        for _ in range(3):
            auth_.token(transport)
            clock.now += 10
        assert transport.paths().count("auth/token/renew-self") == 1

    def test_lookup_refused_means_no_renewal_not_an_error(self, clock: Clock) -> None:
        transport = FakeTransport({"auth/token/lookup-self": refused})
        auth_ = TokenAuth("t")
        assert auth_.token(transport) == "t"
        assert auth_.token(transport) == "t"
        assert transport.paths() == ["auth/token/lookup-self"]

    def test_lookup_while_down_is_unavailable_and_retried_next_time(self, clock: Clock) -> None:
        transport = FakeTransport({"auth/token/lookup-self": down})
        auth_ = TokenAuth("t")
        with pytest.raises(KeyServerUnavailable):
            auth_.token(transport)
        transport.handlers["auth/token/lookup-self"] = lambda t, b: data(ttl=0)
        assert auth_.token(transport) == "t"

    def test_static_token_refusal_stands(self) -> None:
        assert TokenAuth("t").token_rejected(FakeTransport({}), "t") is False

    def test_repr_hides_the_token(self) -> None:
        assert "s.secret" not in repr(TokenAuth("s.secret"))


class LoginServer:
    """Issues tokens tok-1, tok-2, ... with a fixed TTL and caps renewals at max_ttl."""

    def __init__(self, clock: Clock, ttl: int = 30, max_ttl: int = 60) -> None:
        self.clock = clock
        self.ttl = ttl
        self.max_ttl = max_ttl
        self.issued: dict[str, float] = {}
        self.dead: set[str] = set()

    def login(self, token: str | None, body: Mapping[str, Any] | None) -> KeyServerResponse:
        assert token is None
        assert body == {"role_id": "rid", "secret_id": "sid"}
        name = f"tok-{len(self.issued) + 1}"
        self.issued[name] = self.clock.now
        return auth(client_token=name, lease_duration=self.ttl, renewable=True)

    def renew(self, token: str | None, body: Mapping[str, Any] | None) -> KeyServerResponse:
        assert token is not None
        assert body is not None
        if token in self.dead:
            raise TokenRejected("permission denied")
        left_of_max = self.issued[token] + self.max_ttl - self.clock.now
        return auth(lease_duration=int(min(body["increment"], left_of_max)), renewable=True)

    def lookup(self, token: str | None, body: Mapping[str, Any] | None) -> KeyServerResponse:
        if token in self.dead:
            raise TokenRejected("permission denied")
        return data(ttl=1)

    def transport(self) -> FakeTransport:
        return FakeTransport(
            {
                "auth/approle/login": self.login,
                "auth/token/renew-self": self.renew,
                "auth/token/lookup-self": self.lookup,
            }
        )


class TestAppRoleAuth:
    def test_login_once_then_cached(self, clock: Clock) -> None:
        server = LoginServer(clock)
        transport = server.transport()
        auth_ = AppRoleAuth("rid", "sid")
        assert [auth_.token(transport) for _ in range(3)] == ["tok-1"] * 3
        assert transport.paths() == ["auth/approle/login"]

    def test_renews_then_logs_in_again_at_max_ttl(self, clock: Clock) -> None:
        server = LoginServer(clock, ttl=30, max_ttl=60)
        transport = server.transport()
        auth_ = AppRoleAuth("rid", "sid")
        seen = []
        for _ in range(14):
            seen.append(auth_.token(transport))
            clock.now += 7
        assert transport.paths()[:2] == ["auth/approle/login", "auth/token/renew-self"]
        assert transport.paths().count("auth/approle/login") >= 2
        assert seen[0] == "tok-1"
        assert seen[-1] != "tok-1"
        # no token was ever handed out past its (server-side) max TTL
        for i, tok in enumerate(seen):
            assert 1000.0 + 7 * i < server.issued[tok] + server.max_ttl

    def test_expired_token_leads_straight_to_login(self, clock: Clock) -> None:
        server = LoginServer(clock)
        transport = server.transport()
        auth_ = AppRoleAuth("rid", "sid")
        auth_.token(transport)
        clock.now += 31
        assert auth_.token(transport) == "tok-2"
        assert transport.paths() == ["auth/approle/login", "auth/approle/login"]

    def test_refused_renewal_logs_in_again(self, clock: Clock) -> None:
        server = LoginServer(clock)
        transport = server.transport()
        auth_ = AppRoleAuth("rid", "sid")
        auth_.token(transport)
        server.dead.add("tok-1")
        clock.now += 25
        assert auth_.token(transport) == "tok-2"

    def test_rejected_dead_token_is_replaced(self, clock: Clock) -> None:
        server = LoginServer(clock)
        transport = server.transport()
        auth_ = AppRoleAuth("rid", "sid")
        auth_.token(transport)
        server.dead.add("tok-1")
        assert auth_.token_rejected(transport, "tok-1") is True
        assert auth_.token(transport) == "tok-2"

    def test_rejected_live_token_means_policy_refusal(self, clock: Clock) -> None:
        server = LoginServer(clock)
        transport = server.transport()
        auth_ = AppRoleAuth("rid", "sid")
        auth_.token(transport)
        assert auth_.token_rejected(transport, "tok-1") is False
        assert transport.paths() == ["auth/approle/login", "auth/token/lookup-self"]

    def test_bad_credentials_are_permission_denied(self, clock: Clock) -> None:
        def bad_login(*_: object) -> KeyServerResponse:
            raise KeyServerPermissionDenied("invalid role or secret ID")

        transport = FakeTransport({"auth/approle/login": bad_login})
        with pytest.raises(KeyServerPermissionDenied):
            AppRoleAuth("rid", "sid").token(transport)

    def test_unreachable_login_is_unavailable(self, clock: Clock) -> None:
        transport = FakeTransport({"auth/approle/login": down})
        with pytest.raises(KeyServerUnavailable):
            AppRoleAuth("rid", "sid").token(transport)

    def test_repr_hides_credentials(self) -> None:
        text = repr(AppRoleAuth("role-123", "secret-456"))
        assert "role-123" not in text
        assert "secret-456" not in text
