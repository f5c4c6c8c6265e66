"""Build and run the gRPC server: Records, Audit, Tokens, standard health checking and server
reflection."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vault.api._authn import Authenticator, AuthInterceptor
from vault.api._guard import CallGuard, CallLimits
from vault.api._handlers import service_handler
from vault.api.audit import AuditServicer
from vault.api.records import RecordsServicer
from vault.api.tokens import TokensServicer
from vault.errors import ConfigError
from vault.service import Services
from vault.v1 import audit_pb2, records_pb2, tokens_pb2

log = logging.getLogger("vault.api.server")

RECORDS_SERVICE = records_pb2.DESCRIPTOR.services_by_name["Records"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name
TOKENS_SERVICE = tokens_pb2.DESCRIPTOR.services_by_name["Tokens"].full_name
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: how long past the grace a stop waits for gRPC's own shutdown before it gives up on it
STOP_MARGIN = 2.0


class HealthMonitor:
    """Probes the database and the key server in the background and sets the health status.

    NOT_SERVING while either is unreachable; SERVING again as soon as both answer, with no
    restart. Probes are cheap (``SELECT 1`` and the key server's unauthenticated ``sys/health``)
    and never counted against a tenant's key-server budget.
    """

    def __init__(
        self, services: Services, servicer: health.HealthServicer, interval: float
    ) -> None:
        self._services = services
        self._servicer = servicer
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cvault-health", daemon=True)
        self.last: dict[str, bool] = {}

    def check_now(self) -> bool:
        state = self._services.dependencies_healthy()
        ok = all(state.values())
        if state != self.last:
            log.info(
                "dependencies: %s",
                ", ".join(f"{k}={'up' if v else 'DOWN'}" for k, v in state.items()),
            )
        self.last = state
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", RECORDS_SERVICE, AUDIT_SERVICE, TOKENS_SERVICE):
            self._servicer.set(name, status)
        return ok

    def start(self) -> None:
        self.check_now()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_now()

    def stop(self, timeout: float = STOP_MARGIN) -> None:
        """Stop probing; a probe stuck on a dependency is left behind (a daemon thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    monitor: HealthMonitor
    health: health.HealthServicer
    guard: CallGuard
    extra_ports: list[int] = field(default_factory=list)
    _stopped: bool = field(default=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 2.0) -> bool:
        """Refuse new calls, let calls in flight finish for ``grace`` seconds, then cancel
        them (a stream stuck on a client that never reads or never half-closes included).

        Bounded: returns within ``grace + STOP_MARGIN`` seconds whatever gRPC's own shutdown
        does, logging what was left. Returns whether gRPC reported the server stopped.
        """
        if self._stopped:
            return True
        self._stopped = True
        started = time.monotonic()
        self.monitor.stop()
        self.guard.close()
        self.health.enter_graceful_shutdown()
        done = self.server.stop(grace).wait(grace + STOP_MARGIN)
        took = time.monotonic() - started
        if done:
            log.info("server stopped in %.1f s", took)
        else:
            log.warning(
                "server not stopped %.1f s after the stop (grace %.1f s): giving up on the calls"
                " gRPC still holds",
                took,
                grace,
            )
        return done

    def wait(self) -> None:
        self.server.wait_for_termination()


def _bind(server: grpc.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    """Listen on ``listen``; the port. Raises: ConfigError when the address cannot be bound
    (in use: no SO_REUSEPORT sharing), which ``cvault`` prints in one line."""
    try:
        port = (
            server.add_secure_port(listen, credentials)
            if credentials is not None
            else server.add_insecure_port(listen)
        )
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {listen} (in use, or not an address of this host)")
    return port


def start_server(
    services: Services,
    listen: str = "127.0.0.1:0",
    *,
    authenticator: Authenticator,
    limits: CallLimits | None = None,
    health_interval: float = 2.0,
    credentials: grpc.ServerCredentials | None = None,
    extra_ports: Sequence[tuple[str, grpc.ServerCredentials | None]] = (),
) -> RunningServer:
    """Start serving on ``listen`` (port 0 picks a free port) and return at once.

    Every call except health checks and reflection must authenticate (mTLS client certificate
    when ``credentials`` require one, or an API key when the authenticator has keys). Calls are
    admitted within ``limits`` (:mod:`vault.api._guard`): health checks always find a worker.
    """
    limits = limits or CallLimits()
    guard = CallGuard(limits)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.max_workers, thread_name_prefix="cvault-rpc"),
        interceptors=[AuthInterceptor(authenticator), guard],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # gRPC sets SO_REUSEPORT by default: a second server on a busy port would start
            # and silently take half the calls. Off, the bind fails and the start says so.
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers(
        (
            service_handler(RecordsServicer(services), records_pb2, "Records"),
            service_handler(AuditServicer(services), audit_pb2, "Audit"),
            service_handler(TokensServicer(services), tokens_pb2, "Tokens"),
        )
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if limits.reflection:
        reflection.enable_server_reflection(
            (
                RECORDS_SERVICE,
                AUDIT_SERVICE,
                TOKENS_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    try:
        port = _bind(server, listen, credentials)
        extra = [_bind(server, addr, creds) for addr, creds in extra_ports]
    except ConfigError:
        guard.close()
        raise
    monitor = HealthMonitor(services, health_servicer, health_interval)
    server.start()
    monitor.start()
    log.info("serving vault.v1 on port %d", port)
    return RunningServer(server, port, monitor, health_servicer, guard, extra)
