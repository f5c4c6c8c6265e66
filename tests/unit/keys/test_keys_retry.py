"""The retry loop: which key-server failures are retried, which are refusals, and the deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

import hvac.exceptions
import pytest
import requests

from vault.deadline import Deadline
from vault.errors import (
    KeyServerPermissionDenied,
    KeyServerRejected,
    KeyServerTlsError,
    KeyServerUnavailable,
)
from vault.keys._auth import TokenRejected
from vault.keys._transit import KeyServerHTTPError, RetryPolicy, call_with_retries

POLICY = RetryPolicy(max_attempts=5, timeout=5.0, base_delay=0.05, max_delay=2.0)


class Script:
    """A fake attempt: raises the scripted exceptions in order, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.timeouts: list[float] = []

    def __call__(self, timeout: float) -> str:
        self.timeouts.append(timeout)
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def run(
    attempt: Callable[[float], str],
    *,
    policy: RetryPolicy = POLICY,
    deadline: Deadline | None = None,
    sleeps: list[float] | None = None,
) -> str:
    recorded = sleeps if sleeps is not None else []
    return call_with_retries(
        attempt,
        subject="cvault-email",
        policy=policy,
        deadline=deadline,
        sleep=recorded.append,
        jitter=lambda: 1.0,
    )


RETRYABLE = [
    pytest.param(KeyServerHTTPError(412), id="412"),
    pytest.param(KeyServerHTTPError(429), id="429"),
    pytest.param(KeyServerHTTPError(500), id="500"),
    pytest.param(KeyServerHTTPError(502), id="502"),
    pytest.param(KeyServerHTTPError(503, ["Vault is sealed"]), id="503-sealed"),
    pytest.param(KeyServerHTTPError(504), id="504"),
    pytest.param(hvac.exceptions.PreconditionFailed(), id="hvac-412"),
    pytest.param(hvac.exceptions.RateLimitExceeded(), id="hvac-429"),
    pytest.param(hvac.exceptions.InternalServerError(), id="hvac-500"),
    pytest.param(hvac.exceptions.BadGateway(), id="hvac-502"),
    pytest.param(hvac.exceptions.VaultDown("Vault is sealed"), id="hvac-503"),
    pytest.param(requests.exceptions.ConnectionError(), id="connection-refused"),
    pytest.param(requests.exceptions.ConnectTimeout(), id="connect-timeout"),
    pytest.param(requests.exceptions.ReadTimeout(), id="read-timeout"),
    pytest.param(requests.exceptions.ChunkedEncodingError(), id="dropped-mid-body"),
]


@pytest.mark.parametrize("failure", RETRYABLE)
def test_retryable_failure_twice_then_success(failure: BaseException) -> None:
    attempt = Script(failure, failure)
    assert run(attempt) == "ok"
    assert len(attempt.timeouts) == 3


@pytest.mark.parametrize("failure", RETRYABLE)
def test_retryable_failure_every_time_is_unavailable_after_max_attempts(
    failure: BaseException,
) -> None:
    attempt = Script(*[failure] * 10)
    with pytest.raises(KeyServerUnavailable, match=r"^key server unavailable: cvault-email$"):
        run(attempt)
    assert len(attempt.timeouts) == POLICY.max_attempts


def test_429_twice_then_success_backs_off_exponentially() -> None:
    sleeps: list[float] = []
    attempt = Script(KeyServerHTTPError(429), KeyServerHTTPError(429))
    assert run(attempt, sleeps=sleeps) == "ok"
    assert sleeps == pytest.approx([0.05, 0.1])


def test_backoff_is_capped_and_jittered() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=8, timeout=1.0, base_delay=0.5, max_delay=2.0)
    attempt = Script(*[KeyServerHTTPError(503)] * 8)
    with pytest.raises(KeyServerUnavailable):
        call_with_retries(
            attempt, subject="k", policy=policy, sleep=sleeps.append, jitter=lambda: 0.5
        )
    # full jitter: uniform(0, min(cap, base * 2**n)); no sleep after the last attempt
    assert sleeps == pytest.approx([0.25, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(KeyServerHTTPError(403, ["permission denied"]), id="403"),
        pytest.param(KeyServerHTTPError(401), id="401"),
        pytest.param(hvac.exceptions.Forbidden("permission denied"), id="hvac-403"),
    ],
)
def test_token_refusal_is_never_retried(failure: BaseException) -> None:
    attempt = Script(failure)
    with pytest.raises(TokenRejected, match="cvault-email") as info:
        run(attempt)
    assert isinstance(info.value, KeyServerPermissionDenied)
    assert len(attempt.timeouts) == 1


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(KeyServerHTTPError(400, ["encryption key not found"]), id="400-no-key"),
        pytest.param(KeyServerHTTPError(404), id="404"),
        pytest.param(hvac.exceptions.InvalidPath(), id="hvac-404"),
        pytest.param(hvac.exceptions.InvalidRequest("encryption key not found"), id="hvac-400"),
    ],
)
def test_missing_key_is_rejected_never_retried(failure: BaseException) -> None:
    # a request the key server refuses as such (400, 404) is not a permission refusal
    attempt = Script(failure)
    with pytest.raises(KeyServerRejected) as info:
        run(attempt)
    assert not isinstance(info.value, KeyServerPermissionDenied)
    assert not isinstance(info.value, KeyServerUnavailable)
    assert len(attempt.timeouts) == 1


def test_refusal_message_names_the_key_and_reason_only() -> None:
    attempt = Script(KeyServerHTTPError(400, ["encryption key\n\tnot found"]))
    with pytest.raises(KeyServerRejected) as info:
        run(attempt)
    assert info.value.message == (
        "key server rejected the request for cvault-email (HTTP 400): encryption key not found"
    )


def test_unclassified_exceptions_propagate_unchanged() -> None:
    attempt = Script(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        run(attempt)
    assert len(attempt.timeouts) == 1


def test_attempt_timeout_is_capped_by_the_deadline() -> None:
    attempt = Script(KeyServerHTTPError(503))
    run(attempt, deadline=Deadline.after(0.5))
    assert all(t <= 0.5 for t in attempt.timeouts)
    assert attempt.timeouts[0] > 0.3


def test_expired_deadline_makes_no_attempt() -> None:
    attempt = Script()
    with pytest.raises(KeyServerUnavailable):
        run(attempt, deadline=Deadline.after(0))
    assert attempt.timeouts == []


def test_no_sleep_past_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=100, timeout=5.0, base_delay=0.05, max_delay=10.0)
    attempt = Script(*[requests.exceptions.ConnectionError()] * 100)
    deadline = Deadline.after(0.4)
    start = time.monotonic()
    with pytest.raises(KeyServerUnavailable):
        call_with_retries(attempt, subject="k", policy=policy, deadline=deadline)
    assert time.monotonic() - start < 0.4 + 0.2


def test_an_untrusted_certificate_is_not_retried_and_says_so() -> None:
    """Issue 12: a TLS verification failure was retried and reported as an outage."""
    calls: list[float] = []

    def attempt(timeout: float) -> None:
        calls.append(timeout)
        raise requests.exceptions.SSLError(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
        )

    with pytest.raises(KeyServerTlsError, match="ca_cert"):
        call_with_retries(attempt, subject="k", policy=RetryPolicy(max_attempts=5))
    assert len(calls) == 1


def test_other_tls_failures_are_retried_as_network_errors() -> None:
    calls: list[float] = []

    def attempt(timeout: float) -> None:
        calls.append(timeout)
        raise requests.exceptions.SSLError("EOF occurred in violation of protocol")

    policy = RetryPolicy(max_attempts=3, base_delay=0.0)
    with pytest.raises(KeyServerUnavailable) as raised:
        call_with_retries(attempt, subject="k", policy=policy, sleep=lambda s: None)
    assert not isinstance(raised.value, KeyServerTlsError)
    assert len(calls) == 3
