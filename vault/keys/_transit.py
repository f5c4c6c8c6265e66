"""The real :class:`KeyWrapper`: OpenBao/Vault transit ``encrypt``/``decrypt`` through hvac.

This module and its siblings are the only places that know about hvac and HTTP. Everything that
leaves them is a :mod:`vault.errors` class: an outage (:class:`KeyServerUnavailable`, retryable)
and a refusal (:class:`KeyServerPermissionDenied`, a configuration problem) never blur.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac.adapters
import hvac.exceptions
import requests
import requests.adapters
from opentelemetry.trace import SpanKind, Status, StatusCode

from vault import metrics, tracing
from vault.deadline import Deadline
from vault.errors import (
    ConfigError,
    DecryptionFailed,
    KeyServerPermissionDenied,
    KeyServerRejected,
    KeyServerTlsError,
    KeyServerUnavailable,
)
from vault.keys._auth import KeyServerAuth, KeyServerResponse, TokenRejected
from vault.keys._wrapper import UnwrapItem, WrapItem

log = logging.getLogger("vault.keys")

_T = TypeVar("_T")

#: key names and field classes become URL path segments: keep them boring
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_MOUNT_RE = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")

#: statuses worth another attempt: 412 (eventual consistency on a standby), 429 (rate limit),
#: 5xx (including 503 "sealed" and 501 "not initialized" during a restart)
_RETRYABLE_STATUS = frozenset({412, 429})
_TOKEN_REFUSED_STATUS = frozenset({401, 403})

# hvac's own classes, for callables that go through hvac's high-level methods.
_RETRYABLE_HVAC: tuple[type[BaseException], ...] = (
    hvac.exceptions.PreconditionFailed,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.BadGateway,
    hvac.exceptions.VaultDown,
    # hvac maps statuses it does not know (412 in from_status, 504, ...) to UnexpectedError
    hvac.exceptions.UnexpectedError,
)
_TOKEN_REFUSED_HVAC: tuple[type[BaseException], ...] = (
    hvac.exceptions.Forbidden,
    hvac.exceptions.Unauthorized,
)
_REFUSED_HVAC: tuple[type[BaseException], ...] = (
    hvac.exceptions.InvalidRequest,
    hvac.exceptions.InvalidPath,
    hvac.exceptions.UnsupportedOperation,
    hvac.exceptions.ParamValidationError,
)
# SSLError and ConnectTimeout are ConnectionError subclasses; ChunkedEncodingError is a
# connection dropped mid-body. All are "the server was not there this time".
_RETRYABLE_NETWORK: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def _untrusted(exc: requests.exceptions.SSLError) -> bool:
    """Whether the TLS handshake failed on the server's certificate (not on the network)."""
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def _tls_error(subject: str) -> KeyServerTlsError:
    return KeyServerTlsError(
        f"key server certificate not trusted ({subject}): set [openbao] ca_cert to its CA"
    )


def _tls_error_at(url: str) -> KeyServerTlsError:
    return KeyServerTlsError(
        f"the key server's certificate at {url} is not trusted: set [openbao] ca_cert to its CA"
    )


class KeyServerHTTPError(Exception):
    """A non-success HTTP answer from the key server (internal: classified by the retry loop)."""

    def __init__(self, status: int, errors: Sequence[str] = ()) -> None:
        self.status = status
        self.errors = tuple(errors)
        super().__init__(f"HTTP {status}: {_describe_errors(self.errors)}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and full jitter.

    Attempt ``n`` (from 0) is followed by a sleep drawn uniformly from
    ``[0, min(max_delay, base_delay * 2**n)]``. Each attempt's HTTP timeout is
    ``min(timeout, deadline.remaining())``; no sleep or attempt starts past the deadline.
    """

    max_attempts: int = 5
    timeout: float = 5.0
    base_delay: float = 0.05
    max_delay: float = 2.0


def _describe_errors(errors: Sequence[str]) -> str:
    # Server error strings name paths and reasons, not values; still, keep them short.
    text = "; ".join(" ".join(str(e).split()) for e in errors if e) or "no detail"
    return text[:200]


def _hvac_errors(exc: BaseException) -> Sequence[str]:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list | tuple):
        return [str(e) for e in errors]
    return [str(exc.args[0])] if exc.args and exc.args[0] else []


def call_with_retries(
    attempt: Callable[[float], _T],
    *,
    subject: str,
    policy: RetryPolicy,
    deadline: Deadline | None = None,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> _T:
    """Run ``attempt(http_timeout)`` until it returns, is refused, or attempts/deadline run out.

    ``attempt`` may raise :class:`KeyServerHTTPError`, hvac's status exceptions, or requests'
    connection/timeout errors; anything else propagates unchanged (it is a bug, not an outage).

    Raises:
        KeyServerUnavailable: connection errors, timeouts, 412/429/5xx on every attempt, or the
            deadline expired ("key server unavailable: <subject>").
        TokenRejected: 401/403 (a :class:`KeyServerPermissionDenied`), never retried.
        KeyServerRejected: any other 4xx (missing key, a setting refused), never retried; the
            message carries the key server's own words.
    """
    last_problem = "deadline expired before the first attempt"
    attempts = 0
    for n in range(policy.max_attempts):
        if deadline is None:
            timeout = policy.timeout
        else:
            remaining = deadline.remaining()
            if remaining <= 0:
                break
            timeout = min(policy.timeout, remaining)
        attempts += 1
        try:
            return attempt(timeout)
        except KeyServerHTTPError as exc:
            if exc.status in _RETRYABLE_STATUS or exc.status >= 500:
                last_problem = str(exc)
            elif exc.status in _TOKEN_REFUSED_STATUS:
                raise TokenRejected(
                    f"key server denied access to {subject}: {_describe_errors(exc.errors)}"
                ) from None
            else:
                raise KeyServerRejected(
                    f"key server rejected the request for {subject} (HTTP {exc.status}):"
                    f" {_describe_errors(exc.errors)}"
                ) from None
        except _RETRYABLE_HVAC as exc:
            last_problem = f"{type(exc).__name__}: {_describe_errors(_hvac_errors(exc))}"
        except _TOKEN_REFUSED_HVAC as exc:
            raise TokenRejected(
                f"key server denied access to {subject}: {_describe_errors(_hvac_errors(exc))}"
            ) from None
        except _REFUSED_HVAC as exc:
            raise KeyServerRejected(
                f"key server refused the request for {subject}: "
                f"{_describe_errors(_hvac_errors(exc))}"
            ) from None
        except requests.exceptions.SSLError as exc:
            if _untrusted(exc):
                raise _tls_error(subject) from None
            last_problem = type(exc).__name__
        except _RETRYABLE_NETWORK as exc:
            last_problem = type(exc).__name__
        log.debug("key server attempt %d for %s failed: %s", n + 1, subject, last_problem)
        if n + 1 >= policy.max_attempts:
            break
        delay = jitter() * min(policy.max_delay, policy.base_delay * (2**n))
        if deadline is not None and delay >= deadline.remaining():
            break
        sleep(delay)
    log.warning(
        "key server unavailable for %s after %d attempt(s): %s", subject, attempts, last_problem
    )
    raise KeyServerUnavailable(f"key server unavailable: {subject}")


#: (pattern on "<METHOD> <path>", operation label), first match wins
_OPERATIONS = tuple(
    (re.compile(pattern), op)
    for pattern, op in (
        (r"POST .*/encrypt/[^/]+$", "wrap"),
        (r"POST .*/decrypt/[^/]+$", "unwrap"),
        (r"POST .*/rewrap/[^/]+$", "rewrap"),
        (r".* auth/.+/login(/.*)?$", "login"),
        (r".* auth/token/.*", "token"),
        (r"POST .*/keys/[^/]+/rotate$", "key_rotate"),
        (r"POST .*/keys/[^/]+/trim$", "key_trim"),
        (r"POST .*/keys/[^/]+/config$", "key_config"),
        (r"\S+ sys/capabilities-self$", "capabilities"),
        (r"\S+ sys/.*", "admin"),
        (r"\S+ .*/keys/[^/]+$", "key_info"),
        (r"\S+ .*/(data|metadata)/.*", "checkpoint"),
    )
)


def operation_of(method: str, path: str) -> str:
    """The metric and span name of a key-server request (a fixed set: never a path)."""
    line = f"{method.upper()} {path}"
    return next((op for pattern, op in _OPERATIONS if pattern.fullmatch(line)), "other")


def observed(operation: str, call: Callable[[], _T]) -> _T:
    """Run one key-server request (with its retries) as a child span, counted and timed by
    operation and outcome (:mod:`vault.metrics`)."""
    started = time.perf_counter()
    outcome = "error"
    with tracing.tracer("vault.keys").start_as_current_span(
        f"keyserver {operation}",
        kind=SpanKind.CLIENT,
        attributes={"cvault.keyserver.operation": operation},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            result = call()
            outcome = "ok"
            return result
        except KeyServerUnavailable:
            outcome = "unavailable"
            raise
        except KeyServerPermissionDenied:
            outcome = "denied"
            raise
        except KeyServerRejected:
            outcome = "rejected"
            raise
        finally:
            span.set_attribute("cvault.keyserver.outcome", outcome)
            if outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, outcome))
            metrics.observe_key_server(operation, outcome, time.perf_counter() - started)


def _json_body(response: requests.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _has_batch_results(body: Mapping[str, Any]) -> bool:
    data = body.get("data")
    return isinstance(data, dict) and isinstance(data.get("batch_results"), list)


class HttpTransport:
    """HTTP to one key server through an hvac adapter; the token travels per request.

    The token is passed as a header on each call rather than stored on the shared adapter, so
    concurrent threads never see each other's half-updated state. ``requests.Session`` pools
    connections and is safe to share for this use.
    """

    def __init__(
        self,
        url: str,
        *,
        policy: RetryPolicy,
        verify: bool | str = True,
        pool_size: int = 32,
    ) -> None:
        self._url = url
        self._policy = policy
        # While the last health check found the key server not answering (see health()):
        # one short attempt, so a call that needs it fails UNAVAILABLE in about a second
        # rather than waiting out its deadline on a black-holed host.
        self._unreachable = False
        self._while_unreachable = RetryPolicy(max_attempts=1, timeout=min(1.0, policy.timeout))
        session = requests.Session()
        session.verify = verify
        # The default pool keeps 10 connections; the gRPC thread pool may run more calls at once.
        pooled = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size)
        session.mount("http://", pooled)
        session.mount("https://", pooled)
        self._session = session
        self._adapter = hvac.adapters.RawAdapter(
            base_uri=url, session=session, verify=verify, timeout=policy.timeout
        )

    def __repr__(self) -> str:
        return f"HttpTransport(url={self._url!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        body: Mapping[str, Any] | None = None,
        deadline: Deadline | None = None,
        subject: str,
        accept: Collection[int] = (),
        batch: bool = False,
    ) -> KeyServerResponse:
        """Send ``method /v1/<path>`` with retries (see :func:`call_with_retries`).

        Args:
            accept: extra statuses returned instead of raised (e.g. 404 when probing for a key).
            batch: return a 400 whose body carries ``data.batch_results`` (transit reports
                per-item failures that way) instead of raising.
        """
        url = f"/v1/{path}"

        def attempt(timeout: float) -> KeyServerResponse:
            headers = {"X-Vault-Token": token} if token else {}
            response = self._adapter.request(
                method,
                url,
                headers=headers,
                raise_exception=False,
                json=body,
                timeout=timeout,
            )
            status = int(response.status_code)
            self._unreachable = False
            parsed = _json_body(response)
            if (
                200 <= status < 300
                or status in accept
                or (batch and status == 400 and _has_batch_results(parsed))
            ):
                return KeyServerResponse(status, parsed)
            errors = parsed.get("errors")
            raise KeyServerHTTPError(
                status, [str(e) for e in errors] if isinstance(errors, list) else []
            )

        policy = self._while_unreachable if self._unreachable else self._policy
        try:
            return observed(
                operation_of(method, path),
                lambda: call_with_retries(
                    attempt, subject=subject, policy=policy, deadline=deadline
                ),
            )
        except KeyServerTlsError:
            raise _tls_error_at(self._url) from None

    def health(self, timeout: float) -> Mapping[str, Any] | None:
        """One unauthenticated, unaudited ``GET sys/health``; None when unreachable (and the
        requests that follow make one short attempt until the key server answers again)."""
        found = self._health(timeout)
        self._unreachable = found is None
        return found

    def _health(self, timeout: float) -> Mapping[str, Any] | None:
        try:
            response = self._adapter.request(
                "GET",
                "/v1/sys/health",
                # standbys forward requests to the active node: they count as healthy
                params={"standbyok": "true", "perfstandbyok": "true"},
                raise_exception=False,
                timeout=timeout,
            )
        except requests.exceptions.SSLError as exc:
            if _untrusted(exc):
                raise _tls_error_at(self._url) from None
            log.debug("key server health check failed: %s", type(exc).__name__)
            return None
        except requests.exceptions.RequestException as exc:
            log.debug("key server health check failed: %s", type(exc).__name__)
            return None
        return _json_body(response)

    def close(self) -> None:
        self._session.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _validate_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError("key server url must look like https://host:port")
    if parsed.username or parsed.password:
        # never echoed: it would put a credential in a log line
        raise ConfigError("key server url must not carry credentials")
    return url.rstrip("/")


class TransitKeyWrapper:
    """Wraps keys with OpenBao/Vault transit, one transit key per field class.

    The key for field class ``c`` is ``<key_prefix>-<c>`` under ``mount``. Batches go out in
    chunks of at most ``batch_size`` items and at most ``max_json_strings`` JSON strings: OpenBao
    (>= 2.4.1) refuses request bodies with more than ``max_request_json_strings`` strings (1000 by
    default: "refused JSON input due to high complexity"). An item costs 2 strings, 4 with
    associated data, so the default chunk is 250 items, or 249 with associated data.
    Associated data is sent per batch item (``associated_data``, honoured by aes256-gcm96 keys).

    Thread-safe: one instance serves the whole process. Construction makes no network call; use
    :meth:`healthy` to check reachability at startup.
    """

    def __init__(
        self,
        url: str,
        auth: KeyServerAuth,
        *,
        key_prefix: str,
        mount: str = "transit",
        timeout: float = 5.0,
        max_attempts: int = 5,
        batch_size: int = 250,
        verify: bool | str = True,
        max_json_strings: int = 1000,
    ) -> None:
        if not _NAME_RE.fullmatch(key_prefix):
            raise ConfigError(f"invalid key_prefix {key_prefix!r}: use letters, digits, _ and -")
        if not _MOUNT_RE.fullmatch(mount.strip("/")):
            raise ConfigError(f"invalid transit mount {mount!r}")
        if not timeout > 0:
            raise ConfigError("key server timeout must be positive")
        if max_attempts < 1:
            raise ConfigError("key server max_attempts must be at least 1")
        if batch_size < 1:
            raise ConfigError("transit batch_size must be at least 1")
        if max_json_strings < 5:
            raise ConfigError("max_json_strings must be at least 5")
        self._url = _validate_url(url)
        self._auth = auth
        self._key_prefix = key_prefix
        self._mount = mount.strip("/")
        self._batch_size = batch_size
        # one string is the "batch_input" key itself
        self._string_budget = max_json_strings - 1
        self._health_timeout = min(1.0, timeout)
        self._transport = HttpTransport(
            self._url,
            policy=RetryPolicy(max_attempts=max_attempts, timeout=timeout),
            verify=verify,
        )

    def __repr__(self) -> str:
        return (
            f"TransitKeyWrapper(url={self._url!r}, mount={self._mount!r}, "
            f"key_prefix={self._key_prefix!r})"
        )

    @property
    def url(self) -> str:
        return self._url

    def key_name(self, field_class: str) -> str:
        """The transit key name for ``field_class``.

        Raises:
            KeyServerPermissionDenied: the class is not a valid key name (no such key can exist).
        """
        if not _NAME_RE.fullmatch(field_class):
            raise KeyServerPermissionDenied(
                f"not a valid field class for a key: {field_class!r:.80}"
            )
        return f"{self._key_prefix}-{field_class}"

    def wrap(
        self, field_class: str, items: Sequence[WrapItem], *, deadline: Deadline | None = None
    ) -> list[str]:
        """Wrap every item under the field key; returns ``vault:vN:...`` strings in order.

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not use this key, or it does not exist.
        """
        key = self.key_name(field_class)
        out: list[str] = []
        for chunk in self._chunks(items, [bool(i.associated_data) for i in items]):
            batch: list[dict[str, str]] = []
            for item in chunk:
                entry = {"plaintext": _b64(item.plaintext)}
                if item.associated_data:
                    entry["associated_data"] = _b64(item.associated_data)
                batch.append(entry)
            response = self._post(f"{self._mount}/encrypt/{key}", batch, key, deadline)
            for result in self._batch_results(response, len(chunk), key):
                ciphertext = result.get("ciphertext")
                if result.get("error") or not isinstance(ciphertext, str) or not ciphertext:
                    raise KeyServerPermissionDenied(f"key server refused to wrap under {key}")
                out.append(ciphertext)
        return out

    def unwrap(
        self, field_class: str, items: Sequence[UnwrapItem], *, deadline: Deadline | None = None
    ) -> list[bytes]:
        """Unwrap every item; returns the plaintext keys in order.

        Raises:
            KeyServerUnavailable, KeyServerPermissionDenied: as for :meth:`wrap`.
            DecryptionFailed: any item did not authenticate (tampered, wrong associated data,
                wrong key, version trimmed away).
        """
        key = self.key_name(field_class)
        out: list[bytes] = []
        for chunk in self._chunks(items, [bool(i.associated_data) for i in items]):
            batch: list[dict[str, str]] = []
            for item in chunk:
                entry = {"ciphertext": item.wrapped}
                if item.associated_data:
                    entry["associated_data"] = _b64(item.associated_data)
                batch.append(entry)
            response = self._post(f"{self._mount}/decrypt/{key}", batch, key, deadline)
            for result in self._batch_results(response, len(chunk), key):
                plaintext = result.get("plaintext")
                if result.get("error") or not isinstance(plaintext, str):
                    raise DecryptionFailed()
                try:
                    out.append(base64.b64decode(plaintext, validate=True))
                except binascii.Error:
                    raise DecryptionFailed() from None
        return out

    def healthy(self) -> bool:
        """True when the key server answers ``sys/health`` as initialized and unsealed."""
        return not self.reach_problem()

    def reach_problem(self) -> str:
        """Why ``sys/health`` does not say initialized and unsealed; "" when it does."""
        try:
            health = self._transport.health(self._health_timeout)
        except KeyServerTlsError as exc:
            return exc.message
        if health is None:
            return "unreachable"
        if health.get("initialized") is not True:
            return "not initialized"
        return "" if health.get("sealed") is False else "sealed"

    def close(self) -> None:
        """Release pooled connections."""
        self._transport.close()

    def _chunks(self, items: Sequence[_T], has_aad: Sequence[bool]) -> Iterator[Sequence[_T]]:
        start = 0
        used = 0
        for i, aad in enumerate(has_aad):
            cost = 4 if aad else 2
            if i > start and (i - start >= self._batch_size or used + cost > self._string_budget):
                yield items[start:i]
                start, used = i, 0
            used += cost
        if start < len(items):
            yield items[start:]

    def _post(
        self,
        path: str,
        batch: list[dict[str, str]],
        key: str,
        deadline: Deadline | None,
    ) -> KeyServerResponse:
        return self._authorized("POST", path, {"batch_input": batch}, key, deadline)

    def _authorized(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        subject: str,
        deadline: Deadline | None,
    ) -> KeyServerResponse:
        """One request with this server's token; once more with a new token when the key
        server rejected one it should still accept (see :class:`AppRoleAuth`)."""
        batch = body is not None and "batch_input" in body
        try:
            token = self._auth.token(self._transport, deadline)
            try:
                return self._transport.request(
                    method,
                    path,
                    token=token,
                    body=body,
                    deadline=deadline,
                    subject=subject,
                    batch=batch,
                )
            except TokenRejected:
                if not self._auth.token_rejected(self._transport, token, deadline):
                    raise
            token = self._auth.token(self._transport, deadline)
            return self._transport.request(
                method,
                path,
                token=token,
                body=body,
                deadline=deadline,
                subject=subject,
                batch=batch,
            )
        except TokenRejected as exc:
            # Callers see one refusal class; TokenRejected is a transport detail.
            raise KeyServerPermissionDenied(exc.message) from None

    def credential_problem(self) -> str:
        """Why the key server refuses this server's credential; "" when it accepts it (or
        cannot be asked: reachability is :meth:`healthy`'s part). One ``lookup-self``, after a
        login when there is no token yet."""
        path = "auth/token/lookup-self"
        try:
            self._authorized("GET", path, None, path, Deadline.after(self._health_timeout))
        except KeyServerPermissionDenied as exc:
            return f"credential refused: {exc.message}"
        except KeyServerUnavailable:
            return ""
        return ""

    @staticmethod
    def _batch_results(
        response: KeyServerResponse, expected: int, key: str
    ) -> list[Mapping[str, Any]]:
        results = response.data().get("batch_results")
        if (
            not isinstance(results, list)
            or len(results) != expected
            or not all(isinstance(r, Mapping) for r in results)
        ):
            log.warning("key server returned a malformed batch answer for %s", key)
            raise KeyServerUnavailable(f"key server unavailable: {key}")
        return results
