"""Credentials for the key server: a static token or an AppRole login, renewed before expiry.

Renewal is driven by the local monotonic clock, checked before each request: the happy path makes
no extra calls (no per-request ``lookup-self``). A token is renewed when less than a third of its
TTL remains; an AppRole token that cannot be renewed (max TTL reached, renewal refused) is
replaced by logging in again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vault.deadline import Deadline
from vault.errors import (
    ConfigError,
    KeyServerPermissionDenied,
    KeyServerRefused,
    KeyServerRejected,
    KeyServerUnavailable,
)

log = logging.getLogger("vault.keys")

#: renew when less than this fraction of the granted TTL remains
_RENEW_FRACTION = 1 / 3


def _clock() -> float:
    """Local monotonic clock for token lifetimes (a seam for unit tests)."""
    return time.monotonic()


@dataclass(frozen=True, slots=True)
class KeyServerResponse:
    """A parsed key-server answer. The body can hold tokens or key material: never printed."""

    status: int
    body: Mapping[str, Any] = field(repr=False)

    def data(self) -> Mapping[str, Any]:
        """The ``data`` object of the body (``{}`` when absent or not an object)."""
        value = self.body.get("data")
        return value if isinstance(value, Mapping) else {}

    def auth(self) -> Mapping[str, Any]:
        """The ``auth`` object of the body (``{}`` when absent or not an object)."""
        value = self.body.get("auth")
        return value if isinstance(value, Mapping) else {}


class TokenRejected(KeyServerPermissionDenied):
    """The key server answered 401/403: the token is invalid or expired, or policy forbids the path.

    Part of the transport contract so that credentials can tell "my token died" (log in again)
    from other refusals. Callers of the key layer only ever see :class:`KeyServerPermissionDenied`.
    """


class KeyServerTransport(Protocol):
    """One authenticated HTTP call to the key server, with bounded retries.

    Implemented by the transit transport; credentials use it for their own calls (login, renew).
    """

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
        """Send ``method /v1/<path>``; ``subject`` names the key or endpoint in error messages.

        Raises:
            KeyServerUnavailable: unreachable, sealed, or 412/429/5xx until attempts or the
                deadline ran out.
            TokenRejected: HTTP 401/403.
            KeyServerRejected: any other refusal (400, 404, ...).
        """
        ...


class KeyServerAuth(Protocol):
    """Supplies the token for key-server requests. Implementations must be thread-safe."""

    def token(self, transport: KeyServerTransport, deadline: Deadline | None = None) -> str:
        """A token expected to be valid now; logs in or renews first when due.

        Raises:
            KeyServerUnavailable: a needed login/renewal could not reach the key server.
            KeyServerPermissionDenied: the credentials were refused.
        """
        ...

    def token_rejected(
        self, transport: KeyServerTransport, token: str, deadline: Deadline | None = None
    ) -> bool:
        """Called when a request made with ``token`` got HTTP 403.

        Returns True when a different token is now available and the request is worth retrying
        once; False when the refusal stands (the path is forbidden, or nothing can be done).
        """
        ...


@dataclass(slots=True)
class _Lease:
    """A token and its lifetime as seen on the local monotonic clock."""

    token: str = field(repr=False)
    #: monotonic time taken *before* the request that granted the TTL (so we err early)
    granted_at: float
    #: seconds granted; 0 means the token never expires
    ttl: float
    #: increment to ask for on renewal (the token's original TTL)
    period: int
    renewable: bool

    def remaining(self, now: float) -> float:
        return self.granted_at + self.ttl - now

    def expired(self, now: float) -> bool:
        return self.ttl > 0 and self.remaining(now) <= 0

    def renewal_due(self, now: float) -> bool:
        return self.ttl > 0 and self.remaining(now) < self.ttl * _RENEW_FRACTION


def _int_field(mapping: Mapping[str, Any], name: str) -> int:
    value = mapping.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class TokenAuth:
    """A static token (e.g. from a secrets file or the dev server).

    With ``renew=True`` the token's TTL is learned by a single ``auth/token/lookup-self`` the first
    time a token is needed (never again; root tokens have TTL 0 and are never renewed), and the
    token is renewed with ``renew-self`` when less than a third of its TTL remains. With
    ``renew=False`` no call is ever made on the token's behalf.
    """

    def __init__(self, token: str, *, renew: bool = True) -> None:
        if not token or not token.strip():
            raise ConfigError("key server token is empty")
        self._token = token
        self._renew = renew
        self._lock = threading.Lock()
        self._learned = not renew
        self._lease: _Lease | None = None
        self._renewal_exhausted = False

    def __repr__(self) -> str:
        return f"TokenAuth(token=<redacted>, renew={self._renew})"

    def token(self, transport: KeyServerTransport, deadline: Deadline | None = None) -> str:
        with self._lock:
            if not self._learned:
                self._lookup(transport, deadline)
            lease = self._lease
            if (
                lease is not None
                and lease.renewable
                and not self._renewal_exhausted
                and lease.renewal_due(_clock())
            ):
                self._renew_self(transport, lease, deadline)
            return self._token

    def token_rejected(
        self, transport: KeyServerTransport, token: str, deadline: Deadline | None = None
    ) -> bool:
        # A static token cannot be replaced: the refusal stands.
        return False

    def _lookup(self, transport: KeyServerTransport, deadline: Deadline | None) -> None:
        granted_at = _clock()
        try:
            response = transport.request(
                "GET",
                "auth/token/lookup-self",
                token=self._token,
                deadline=deadline,
                subject="auth/token/lookup-self",
            )
        except KeyServerRefused:
            # Either the token is bad (the real request will say so) or its policy lacks the
            # default `lookup-self` grant; in both cases renewal is impossible, not fatal.
            log.warning("cannot look up the key-server token's TTL; it will not be renewed")
            self._learned = True
            return
        self._learned = True
        data = response.data()
        ttl = _int_field(data, "ttl")
        if ttl == 0:
            log.info("key-server token does not expire")
            return
        renewable = data.get("renewable") is True
        self._lease = _Lease(
            token=self._token,
            granted_at=granted_at,
            ttl=ttl,
            period=_int_field(data, "creation_ttl") or ttl,
            renewable=renewable,
        )
        if not renewable:
            log.warning("key-server token is not renewable and expires in %ds", ttl)

    def _renew_self(
        self, transport: KeyServerTransport, lease: _Lease, deadline: Deadline | None
    ) -> None:
        granted_at = _clock()
        try:
            response = transport.request(
                "POST",
                "auth/token/renew-self",
                token=self._token,
                body={"increment": lease.period},
                deadline=deadline,
                subject="auth/token/renew-self",
            )
        except KeyServerRefused:
            log.warning("key server refused to renew the static token; it will not be renewed")
            self._renewal_exhausted = True
            return
        except KeyServerUnavailable:
            if lease.expired(_clock()):
                raise
            log.warning("could not renew the key-server token (unavailable); will retry")
            return
        ttl = _int_field(response.auth(), "lease_duration")
        self._lease = _Lease(
            token=self._token,
            granted_at=granted_at,
            ttl=ttl,
            period=lease.period,
            renewable=response.auth().get("renewable") is True,
        )
        if ttl < lease.period:
            log.warning("key-server token reached its max TTL; it expires in %ds", ttl)
            self._renewal_exhausted = True


class AppRoleAuth:
    """AppRole login (``auth/<mount>/login``), renewed before expiry and re-done when needed.

    The token is renewed with ``renew-self`` when less than a third of its TTL remains; when the
    renewal is refused or cannot give the full TTL back (the role's ``token_max_ttl`` is reached),
    it logs in again. A request refused with 403 while the token should still be valid triggers
    one ``lookup-self``: if the token itself is dead (revoked, server restored from backup, clock
    jump), it logs in again and the request is retried once; if the token is fine, the refusal is
    a policy decision and stands. This costs extra calls only on the 403 path.
    """

    def __init__(self, role_id: str, secret_id: str, *, mount: str = "approle") -> None:
        if not role_id or not secret_id:
            raise ConfigError("AppRole role_id and secret_id must both be set")
        if not mount or "/" in mount.strip("/"):
            raise ConfigError(f"invalid AppRole mount: {mount!r}")
        self._role_id = role_id
        self._secret_id = secret_id
        self._mount = mount.strip("/")
        self._lock = threading.Lock()
        self._lease: _Lease | None = None

    def __repr__(self) -> str:
        return f"AppRoleAuth(role_id=<redacted>, secret_id=<redacted>, mount={self._mount!r})"

    def token(self, transport: KeyServerTransport, deadline: Deadline | None = None) -> str:
        with self._lock:
            now = _clock()
            lease = self._lease
            if lease is None or lease.expired(now):
                return self._login(transport, deadline).token
            if lease.renewal_due(now):
                return self._renew_or_login(transport, lease, deadline).token
            return lease.token

    def token_rejected(
        self, transport: KeyServerTransport, token: str, deadline: Deadline | None = None
    ) -> bool:
        with self._lock:
            lease = self._lease
            if lease is None or lease.token != token:
                # Another thread already replaced it: retry with the new one.
                return True
            try:
                transport.request(
                    "GET",
                    "auth/token/lookup-self",
                    token=token,
                    deadline=deadline,
                    subject="auth/token/lookup-self",
                )
            except TokenRejected:
                log.warning("key-server token was rejected before its expected expiry; logging in")
                self._login(transport, deadline)
                return True
            return False

    def _login(self, transport: KeyServerTransport, deadline: Deadline | None) -> _Lease:
        granted_at = _clock()
        path = f"auth/{self._mount}/login"
        try:
            response = transport.request(
                "POST",
                path,
                token=None,
                body={"role_id": self._role_id, "secret_id": self._secret_id},
                deadline=deadline,
                subject=path,
            )
        except KeyServerRejected as exc:
            # OpenBao answers a wrong role or secret id with 400: a refused credential
            raise KeyServerPermissionDenied(exc.message) from None
        auth = response.auth()
        client_token = auth.get("client_token")
        if not isinstance(client_token, str) or not client_token:
            raise KeyServerPermissionDenied(f"key server login returned no token: {path}")
        ttl = _int_field(auth, "lease_duration")
        self._lease = _Lease(
            token=client_token,
            granted_at=granted_at,
            ttl=ttl,
            period=ttl,
            renewable=auth.get("renewable") is True,
        )
        log.info("logged in to the key server with AppRole (token TTL %ds)", ttl)
        return self._lease

    def _renew_or_login(
        self, transport: KeyServerTransport, lease: _Lease, deadline: Deadline | None
    ) -> _Lease:
        if not lease.renewable:
            return self._login(transport, deadline)
        granted_at = _clock()
        try:
            response = transport.request(
                "POST",
                "auth/token/renew-self",
                token=lease.token,
                body={"increment": lease.period},
                deadline=deadline,
                subject="auth/token/renew-self",
            )
        except KeyServerRefused:
            log.info("key server refused to renew the AppRole token; logging in again")
            return self._login(transport, deadline)
        except KeyServerUnavailable:
            if lease.expired(_clock()):
                raise
            log.warning("could not renew the AppRole token (unavailable); will retry")
            return lease
        auth = response.auth()
        ttl = _int_field(auth, "lease_duration")
        if ttl < lease.period:
            # Capped by token_max_ttl: a fresh login gives a full TTL again.
            log.info("AppRole token reached its max TTL; logging in again")
            return self._login(transport, deadline)
        self._lease = _Lease(
            token=lease.token,
            granted_at=granted_at,
            ttl=ttl,
            period=lease.period,
            renewable=auth.get("renewable") is True,
        )
        return self._lease
