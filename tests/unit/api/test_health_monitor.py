"""The health monitor's probe (issue 12): a dependency that keeps its connection open and answers
nothing made the probe block with no timeout, so health stayed SERVING through a PostgreSQL
partition while every call waited for its deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

from grpc_health.v1 import health, health_pb2

from vault.api.server import HealthMonitor
from vault.metrics import REGISTRY
from vault.service import DEGRADED, Services

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Readiness:
    """Answers readiness; ``stall`` makes the database part block until released."""

    def __init__(self) -> None:
        self.stall = False
        self.release = threading.Event()
        self.calls = 0

    def readiness(self, on_part: Callable[[str], None] = lambda part: None) -> dict[str, str]:
        self.calls += 1
        on_part("database")
        if self.stall:
            self.release.wait(30)
        on_part("key_server")
        return {"database": "", "schema": "", "key_server": "", "policy": ""}


def _status(servicer: health.HealthServicer) -> Any:
    request = health_pb2.HealthCheckRequest(service="")
    return servicer.Check(request, cast(Any, None)).status


def test_a_stalled_dependency_is_not_serving_within_the_probe_timeout() -> None:
    probe = _Readiness()
    servicer = health.HealthServicer()
    monitor = HealthMonitor(cast(Services, probe), servicer, interval=60, timeout=0.3)
    assert monitor.check_now()
    assert _status(servicer) == SERVING
    probe.stall = True
    started = time.monotonic()
    assert not monitor.check_now()
    assert time.monotonic() - started < 5.0  # bounded by the timeout, not the stall
    assert monitor.last == {"database": "not answering within 0.3 s"}
    assert _status(servicer) == NOT_SERVING
    # still stuck: no second probe piles up behind it
    assert not monitor.check_now()
    assert probe.calls == 2
    probe.stall = False
    probe.release.set()
    time.sleep(0.1)
    assert monitor.check_now()  # the stuck probe has ended; a new one finds all fine
    assert _status(servicer) == SERVING


def test_a_probe_that_raises_is_not_serving() -> None:
    class Broken:
        def readiness(self, on_part: Callable[[str], None] = lambda part: None) -> dict[str, str]:
            raise RuntimeError("bug")

    servicer = health.HealthServicer()
    monitor = HealthMonitor(cast(Services, Broken()), servicer, interval=60, timeout=1.0)
    assert not monitor.check_now()
    assert monitor.last == {"probe": "failed (RuntimeError)"}


def test_degraded_is_serving_logged_and_counted_not_a_problem() -> None:
    class Degraded:
        def readiness(self, on_part: Callable[[str], None] = lambda part: None) -> dict[str, str]:
            return {"database": "", "key_server": "", DEGRADED: "key_server: unreachable"}

    seen: list[dict[str, str]] = []
    servicer = health.HealthServicer()
    monitor = HealthMonitor(
        cast(Services, Degraded()), servicer, interval=60, on_change=lambda p: seen.append(dict(p))
    )
    assert monitor.check_now()
    assert _status(servicer) == SERVING
    assert monitor.degraded == "key_server: unreachable"
    assert REGISTRY.get_sample_value("cvault_health_degraded") == 1.0
    assert seen == [{}]  # the guard hears no problem: calls are not refused
