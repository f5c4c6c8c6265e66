"""Authentication: mTLS client certificates and dev API keys -> :class:`vault.identity.Principal`.

Two ways in:

* **mTLS** (production). The server requires a client certificate signed by the configured CA
  (:func:`server_credentials` with ``require_client_auth=True``; grpcio's TLS layer refuses any
  other certificate before a handler runs). Both URI and DNS SANs name principals, each with its
  type in the name (:mod:`vault.identity`): a URI SAN is the URI itself (e.g.
  ``spiffe://cvault.dev/backend-service``), a DNS SAN ``dns:<name>``. A certificate with one
  such SAN is that principal. With several, the one the current policy names is used; if the
  policy names none of them or more than one, the call is refused (``ambiguous_identity``):
  picking one would give the caller a role the policy's author did not choose. Other SAN types
  (email, IP address, ...) and the subject are ignored.
* **API keys** (development and tests). Sent as call metadata ``x-api-key: cvk_<id>_<secret>``;
  the configuration holds only a salted hash per key id (see :class:`ApiKeyStore`).

:class:`AuthInterceptor` authenticates every call except exempt method prefixes (health checks,
reflection) and exposes the principal to the handler through :func:`current_principal`. A call
without acceptable credentials ends with ``UNAUTHENTICATED`` and the message
``unauthenticated: <reason>``; the ``on_denied`` hook lets the service audit it. Presented keys
never reach a log line, a repr or an exception message.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from cryptography import x509

from vault.api._status import refusal_status
from vault.errors import ConfigError, InvalidInput, Unauthenticated
from vault.identity import (
    API_KEY_PREFIX,
    AuthMethod,
    Principal,
    PrincipalKind,
    dns_principal,
    principal_kind,
)

log = logging.getLogger("vault.api.authn")

#: Call metadata key carrying an API key.
API_KEY_HEADER = "x-api-key"
#: Methods whose full name starts with one of these are served without credentials.
DEFAULT_EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Denial reason codes (sent to the client after ``unauthenticated: `` and passed to on_denied).
MISSING_CREDENTIALS = "missing_credentials"
BAD_API_KEY = "bad_api_key"
API_KEYS_DISABLED = "api_keys_disabled"
BAD_CLIENT_CERTIFICATE = "bad_client_certificate"
AMBIGUOUS_IDENTITY = "ambiguous_identity"

# --- API keys ---------------------------------------------------------------------------------
#
# Wire format: ``cvk_<key id>_<secret>``.
#   key id  [a-z0-9-]{1,40}      (no "_", so the first "_" after the prefix ends it)
#   secret  43 chars urlsafe base64 (no padding) of 32 random bytes; may itself contain "_"
# Stored form, one entry per key id:
#   {"principal": "apikey:<key id>", "salt": <16 random bytes, hex>, "hash": <hex>}
#   hash = HMAC-SHA256(key=salt, msg=secret as ASCII)
# A fast salted HMAC (not a password hash such as scrypt/argon2) is adequate because the secret
# is 256 uniformly random bits: there is nothing for a slow KDF to protect against brute force,
# and a slow hash would only cost CPU on every call.

_KEY_ID = re.compile(r"[a-z0-9-]{1,40}")
_PRESENTED = re.compile(r"cvk_([a-z0-9-]{1,40})_([A-Za-z0-9_-]{43})")
_MAX_PRESENTED = len("cvk_") + 40 + 1 + 43
_SECRET_BYTES = 32
_SALT_BYTES = 16
_ENTRY_FIELDS = frozenset({"principal", "salt", "hash"})


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


def new_api_key(key_id: str) -> tuple[str, dict[str, str]]:
    """Make a new API key.

    Args:
        key_id: ``[a-z0-9-]{1,40}``; the principal becomes ``apikey:<key_id>``.

    Returns:
        ``(key, entry)``: the key to hand out once (``cvk_<key_id>_<secret>``), and the entry to
        store under ``key_id`` in the configuration (principal, salt, hash; no secret).

    Raises:
        InvalidInput: ``key_id`` does not match the pattern.
    """
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise InvalidInput("key_id", "must match [a-z0-9-]{1,40}")
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    salt = secrets.token_bytes(_SALT_BYTES)
    entry = {
        "principal": f"{API_KEY_PREFIX}{key_id}",
        "salt": salt.hex(),
        "hash": _digest(salt, secret).hex(),
    }
    return f"cvk_{key_id}_{secret}", entry


class _StoredKey:
    __slots__ = ("digest", "principal", "salt")

    def __init__(self, principal: Principal, salt: bytes, digest: bytes) -> None:
        self.principal = principal
        self.salt = salt
        self.digest = digest

    def __repr__(self) -> str:
        return f"_StoredKey({self.principal.name!r})"


class ApiKeyStore:
    """The configured API keys (salted hashes only), checked against presented keys.

    Args:
        entries: ``{key_id: {"principal": name, "salt": hex, "hash": hex}}``, e.g. a TOML table.
            ``principal`` may be left out (default ``apikey:<key_id>``).

    Raises:
        ConfigError: an entry is malformed; the message names the key id and the field (never
            the salt or the hash).
    """

    def __init__(self, entries: Mapping[str, Mapping[str, str]]) -> None:
        self._keys: dict[str, _StoredKey] = {}
        for key_id, entry in entries.items():
            self._keys[key_id] = self._parse(key_id, entry)
        # Compared against when the key id is unknown, so that an unknown id costs the same
        # HMAC and comparison as a wrong secret.
        self._dummy = _StoredKey(
            Principal("apikey:-", AuthMethod.API_KEY),
            secrets.token_bytes(_SALT_BYTES),
            secrets.token_bytes(32),
        )

    @staticmethod
    def _parse(key_id: object, entry: object) -> _StoredKey:
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise ConfigError("api_keys: key id must match [a-z0-9-]{1,40}")
        where = f"api_keys.{key_id}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a table with principal, salt and hash")
        unknown = sorted(str(k) for k in entry if k not in _ENTRY_FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        principal = entry.get("principal", f"{API_KEY_PREFIX}{key_id}")
        if not isinstance(principal, str) or not principal.strip() or len(principal) > 256:
            raise ConfigError(f"{where}.principal: must be a non-empty string")
        # Only an apikey: entry of the policy matches an API key: any other name would never
        # have a role, and one spelled like a SAN would only mislead the reader.
        if principal_kind(principal) is not PrincipalKind.API_KEY:
            raise ConfigError(f"{where}.principal: must be {API_KEY_PREFIX}<name>")
        try:
            salt = bytes.fromhex(entry["salt"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}.salt: must be hex") from None
        if len(salt) < _SALT_BYTES:
            raise ConfigError(f"{where}.salt: must be at least {_SALT_BYTES} bytes")
        try:
            digest = bytes.fromhex(entry["hash"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}.hash: must be hex") from None
        if len(digest) != hashlib.sha256().digest_size:
            raise ConfigError(f"{where}.hash: must be a 32-byte HMAC-SHA256 digest")
        return _StoredKey(Principal(principal, AuthMethod.API_KEY), salt, digest)

    def __repr__(self) -> str:
        return f"ApiKeyStore(key_ids={sorted(self._keys)!r})"

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of a presented key, or None if it is malformed, unknown or wrong.

        The three failures are indistinguishable to the caller, and an unknown key id costs the
        same work as a wrong secret. The key id is not secret (it is part of the principal);
        the secret is compared in constant time.
        """
        if not isinstance(presented, str) or len(presented) > _MAX_PRESENTED:
            return None
        match = _PRESENTED.fullmatch(presented)
        if match is None:
            return None
        key_id, secret = match.group(1), match.group(2)
        stored = self._keys.get(key_id)
        candidate = stored if stored is not None else self._dummy
        ok = hmac.compare_digest(_digest(candidate.salt, secret), candidate.digest)
        return stored.principal if ok and stored is not None else None


# --- mTLS -------------------------------------------------------------------------------------

#: The current policy's principal names, asked for on each call that needs them (a policy
#: reload changes them), e.g. ``lambda: holder.current.principals``.
KnownPrincipals = Callable[[], Container[str]]


def _first_value(auth_context: Mapping[str, Any], key: str) -> bytes | None:
    # grpcio returns a list of bytes per property (its type stubs say bytes).
    value = auth_context.get(key)
    if isinstance(value, bytes):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], bytes):
        return value[0]
    return None


def _bad_certificate(problem: str) -> Unauthenticated:
    return Unauthenticated(f"client certificate {problem}", reason=BAD_CLIENT_CERTIFICATE)


def certificate_principals(pem: bytes) -> tuple[str, ...]:
    """The principal names a client certificate carries, without repeats: each URI SAN as it
    is, then each DNS SAN as ``dns:<name>`` (:mod:`vault.identity`). Other SANs are ignored.

    Raises:
        Unauthenticated: (reason ``bad_client_certificate``) the certificate does not parse,
            has neither a URI nor a DNS SAN, or has a URI SAN that is no URI principal: one
            without a scheme, or with the scheme ``dns`` or ``apikey``, which would pass for a
            DNS SAN's or an API key's principal.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise _bad_certificate("has no SAN") from None
    except ValueError:
        raise _bad_certificate("does not parse") from None
    names: list[str] = []
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if principal_kind(uri) is not PrincipalKind.URI:
            raise _bad_certificate("has a URI SAN without a scheme or with dns:/apikey:")
        names.append(uri)
    names += [dns_principal(name) for name in sans.get_values_for_type(x509.DNSName) if name]
    if not names:
        raise _bad_certificate("has no URI or DNS SAN")
    return tuple(dict.fromkeys(names))


def choose_principal(names: Sequence[str], known: KnownPrincipals | None) -> str:
    """The principal of a certificate carrying ``names``: the only one, or else the only one of
    them the policy names (``known``; None: no policy to choose by).

    Raises:
        Unauthenticated: (reason ``ambiguous_identity``) several names, and the policy names
            none of them or more than one.
    """
    if len(names) == 1:
        return names[0]
    in_policy = known() if known is not None else ()
    named = [name for name in names if name in in_policy]
    if len(named) == 1:
        return named[0]
    # Names, not secrets: they identify the certificate for whoever fixes the policy or it.
    log.warning(
        "client certificate names %d principals %r, the policy %d of them: refused",
        len(names),
        list(names),
        len(named),
    )
    raise Unauthenticated(
        "client certificate names several principals and the policy does not pick one",
        reason=AMBIGUOUS_IDENTITY,
    )


def principal_from_auth_context(
    context: grpc.ServicerContext, known: KnownPrincipals | None = None
) -> Principal | None:
    """The principal of the call's verified client certificate, or None without one.

    Only certificates that grpcio's TLS layer verified reach this point: with
    ``require_client_auth=True`` a certificate from another CA fails the handshake, and with
    ``require_client_auth=False`` grpcio does not request client certificates at all.

    Args:
        known: the current policy's principal names, to choose among several SANs
            (:func:`choose_principal`); None: a certificate with several is refused.

    Returns:
        ``Principal(name, AuthMethod.MTLS)`` (:func:`certificate_principals`,
        :func:`choose_principal`), or None when the connection carries no client certificate
        (plaintext, or TLS without client auth).

    Raises:
        Unauthenticated: reason ``bad_client_certificate`` or ``ambiguous_identity``.
    """
    pem = _first_value(context.auth_context(), "x509_pem_cert")
    if not pem:
        return None
    return Principal(choose_principal(certificate_principals(pem), known), AuthMethod.MTLS)


# --- authenticator ----------------------------------------------------------------------------


class Authenticator:
    """Decides who is calling: mTLS identity first, then an API key if API keys are enabled.

    Args:
        api_keys: the configured API keys, or None to refuse API keys (production).
        allow_mtls: whether a verified client certificate identifies the caller.
        known_principals: the current policy's principal names, which pick the principal of a
            certificate with several SANs (:func:`choose_principal`); None refuses such
            certificates.
        on_denied: called as ``on_denied(reason, peer)`` before every refusal, so the service
            can audit it. It should not raise; if it does, the error is logged (type only) and
            the call is refused all the same.
    """

    def __init__(
        self,
        *,
        api_keys: ApiKeyStore | None,
        allow_mtls: bool,
        known_principals: KnownPrincipals | None = None,
        on_denied: Callable[[str, str], None] | None = None,
    ) -> None:
        if api_keys is None and not allow_mtls:
            raise ConfigError("authentication: enable mTLS, API keys, or both")
        self._api_keys = api_keys
        self._allow_mtls = allow_mtls
        self._known = known_principals
        self._on_denied = on_denied

    def __repr__(self) -> str:
        return (
            f"Authenticator(mtls={self._allow_mtls}, "
            f"api_keys={len(self._api_keys) if self._api_keys is not None else 'off'})"
        )

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        """The caller's principal.

        Raises:
            Unauthenticated: no acceptable credentials; ``.reason`` is one of
                ``missing_credentials``, ``bad_api_key``, ``api_keys_disabled``,
                ``bad_client_certificate``, ``ambiguous_identity``.
        """
        try:
            return self._authenticate(context)
        except Unauthenticated as exc:
            self._denied(exc.reason, context)
            raise

    def _authenticate(self, context: grpc.ServicerContext) -> Principal:
        if self._allow_mtls:
            principal = principal_from_auth_context(context, self._known)
            if principal is not None:
                return principal
        presented = [value for key, value in context.invocation_metadata() if key == API_KEY_HEADER]
        if not presented:
            raise Unauthenticated("no credentials", reason=MISSING_CREDENTIALS)
        if self._api_keys is None:
            raise Unauthenticated("API keys are not accepted", reason=API_KEYS_DISABLED)
        # More than one key header is ambiguous: refuse rather than pick one.
        if len(presented) == 1 and isinstance(presented[0], str):
            principal = self._api_keys.authenticate(presented[0])
            if principal is not None:
                return principal
        raise Unauthenticated("API key not accepted", reason=BAD_API_KEY)

    def _denied(self, reason: str, context: grpc.ServicerContext) -> None:
        if self._on_denied is None:
            return
        try:
            self._on_denied(reason, context.peer())
        except Exception as exc:
            # Type only: an exception message from the audit path could quote anything.
            log.error("on_denied hook failed (%s); refusing the call anyway", type(exc).__name__)


# --- interceptor ------------------------------------------------------------------------------

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "vault_principal", default=None
)


def current_principal() -> Principal:
    """The principal of the call being handled (set by :class:`AuthInterceptor`).

    Only valid in the handler's own thread: a thread the handler starts does not inherit it
    unless started under ``contextvars.copy_context().run``.

    Raises:
        Unauthenticated: (reason ``missing_credentials``) no principal is set: the method is
            exempt from authentication, or the server runs without the interceptor.
    """
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated principal", reason=MISSING_CREDENTIALS)
    return principal


def denial_message(exc: Unauthenticated) -> str:
    """The status message of a refused call: ``unauthenticated: <reason>``."""
    return f"unauthenticated: {exc.reason}"


Resp = TypeVar("Resp")


class _PrincipalIterator(Iterator[Resp]):
    """Sets the principal around each step of a streamed response.

    The handler's generator body runs lazily, inside ``next()``; setting the variable per step
    (instead of once around the whole generator) means nothing is left set if grpcio stops
    iterating early (cancelled call), and the variable is always reset in the context that set
    it. grpcio iterates a response stream in the handler's thread.
    """

    def __init__(self, inner: Iterator[Resp], principal: Principal) -> None:
        self._inner = inner
        self._principal = principal

    def __iter__(self) -> _PrincipalIterator[Resp]:
        return self

    def __next__(self) -> Resp:
        token = _current.set(self._principal)
        try:
            return next(self._inner)
        finally:
            _current.reset(token)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates every call except those whose method starts with an ``exempt`` prefix.

    grpcio runs ``intercept_service`` before the call has a ``ServicerContext`` (so before the
    TLS auth context is reachable), hence the check happens inside the wrapped behavior, in the
    handler thread, where the principal is also set for :func:`current_principal`. The wrapped
    handler keeps the original request deserializer and response serializer.
    """

    def __init__(
        self, authenticator: Authenticator, *, exempt: Sequence[str] = DEFAULT_EXEMPT
    ) -> None:
        if isinstance(exempt, str):
            raise TypeError("exempt must be a sequence of method prefixes, not one string")
        self._authenticator = authenticator
        self._exempt = tuple(exempt)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._exempt):
            return handler
        return _wrap(handler, self._authenticate)

    def _authenticate(self, context: grpc.ServicerContext) -> Principal:
        try:
            return self._authenticator.authenticate(context)
        except Unauthenticated as exc:
            _abort_unauthenticated(context, exc)


def _abort_unauthenticated(context: grpc.ServicerContext, exc: Unauthenticated) -> NoReturn:
    # the text is denial_message(exc): "unauthenticated: <cause>"
    code = grpc.StatusCode.UNAUTHENTICATED
    context.abort_with_status(refusal_status(code, "unauthenticated", exc.reason, cause=exc.reason))
    raise AssertionError("unreachable")  # context.abort raises


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    authenticate: Callable[[grpc.ServicerContext], Principal],
) -> grpc.RpcMethodHandler[Any, Any]:
    def call(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            principal = authenticate(context)
            token = _current.set(principal)
            try:
                return behavior(request, context)
            finally:
                _current.reset(token)

        return wrapped

    def stream(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Any:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            principal = authenticate(context)
            token = _current.set(principal)
            try:
                # Usually a generator whose body has not started yet; the first steps run in
                # _PrincipalIterator.__next__ with the principal set.
                responses = behavior(request, context)
            finally:
                _current.reset(token)
            return _PrincipalIterator(iter(responses), principal)

        return wrapped

    return rewrapped(handler, call, stream)


Wrap = Callable[[Callable[[Any, grpc.ServicerContext], Any]], Any]


def rewrapped(
    handler: grpc.RpcMethodHandler[Any, Any], unary: Wrap, streamed: Wrap
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` rebuilt with its behavior wrapped: by ``unary`` when it returns one response,
    by ``streamed`` when it returns a response iterator (the interceptors' one way to do it;
    the request deserializer and response serializer are kept)."""
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streamed(handler.unary_stream), **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(streamed(handler.stream_stream), **kw)
    return handler  # pragma: no cover - grpcio handlers always have one behavior


# --- transport credentials --------------------------------------------------------------------


def server_credentials(
    *,
    cert_chain: bytes,
    private_key: bytes,
    client_ca: bytes | None,
    require_client_auth: bool,
) -> grpc.ServerCredentials:
    """TLS credentials for ``server.add_secure_port``.

    With ``require_client_auth=True`` every client must present a certificate signed by
    ``client_ca``; the handshake fails otherwise (the client sees UNAVAILABLE). With False,
    grpcio does not even ask for a client certificate (``client_ca`` is then unused), so mTLS
    and "TLS + API key" cannot be mixed on one port.

    Raises:
        ConfigError: ``require_client_auth`` without ``client_ca``, or empty PEM input.
    """
    if not cert_chain or not private_key:
        raise ConfigError("tls: the server certificate and key are required")
    if require_client_auth and not client_ca:
        raise ConfigError("tls: require_client_auth needs a client CA")
    return grpc.ssl_server_credentials(
        [(private_key, cert_chain)],
        root_certificates=client_ca,
        require_client_auth=require_client_auth,
    )


def channel_credentials(
    *, ca: bytes, client_cert: bytes | None, client_key: bytes | None
) -> grpc.ChannelCredentials:
    """TLS credentials for ``grpc.secure_channel``: trust ``ca``, optionally present a cert.

    Raises:
        ConfigError: only one of ``client_cert`` and ``client_key`` is given.
    """
    if (client_cert is None) != (client_key is None):
        raise ConfigError("tls: give both the client certificate and its key, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=client_key, certificate_chain=client_cert
    )
