"""Build and run the gRPC server: Records, Audit, Tokens, standard health checking and server
reflection."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vault.api._authn import Authenticator, AuthInterceptor
from vault.api._guard import CallGuard, CallLimits
from vault.api._handlers import service_handler
from vault.api._observe import ObserveInterceptor
from vault.api.audit import AuditServicer
from vault.api.records import RecordsServicer
from vault.api.tokens import TokensServicer
from vault.errors import ConfigError
from vault.metrics import DEGRADED_GAUGE
from vault.service import DEGRADED, Services
from vault.v1 import audit_pb2, records_pb2, tokens_pb2

log = logging.getLogger("vault.api.server")

RECORDS_SERVICE = records_pb2.DESCRIPTOR.services_by_name["Records"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name
TOKENS_SERVICE = tokens_pb2.DESCRIPTOR.services_by_name["Tokens"].full_name
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: how long a health probe may take before the part it waits on counts as not answering:
#: shorter than the default health interval (2 s), so a black-holed database shows at the
#: next round
PROBE_TIMEOUT = 1.5
#: the health service that says SERVING while the process runs (liveness probes)
LIVENESS_SERVICE = "cvault.liveness"
#: how long past the grace a stop waits for gRPC's own shutdown before it gives up on it
STOP_MARGIN = 2.0


class HealthMonitor:
    """Probes what the server needs in the background and sets the health status.

    NOT_SERVING while any part has a problem (:meth:`Services.readiness`: the database
    unreachable or at a schema this server does not run on, the key server unreachable or
    sealed with no cached key left, or refusing the credential, the policy file refused), with
    one log line per problem naming it; SERVING again as soon as all are fine, with no restart.
    A key server that does not answer while cached keys still serve is *degraded*: a warning
    line and ``cvault_health_degraded`` = 1, and SERVING all the same (a load balancer would
    otherwise take every replica out at once for an outage callers do not feel). Probes are
    cheap (``SELECT`` of the schema revision, the key server's unauthenticated ``sys/health``,
    a ``lookup-self`` at most every 15 s) and never counted against a tenant's key-server
    budget. ``on_change`` receives the problems after every probe (the guard refuses calls on a
    schema problem).

    A probe runs in a worker thread of its own: one that has not answered within ``timeout``
    (a database that keeps its connections open and answers nothing) makes the part it waits
    on ``not answering``, and no second probe starts until it returns.
    """

    def __init__(
        self,
        services: Services,
        servicer: health.HealthServicer,
        interval: float,
        on_change: Callable[[Mapping[str, str]], None] = lambda problems: None,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._services = services
        self._timeout = timeout
        self._worker: threading.Thread | None = None
        self._found: dict[str, str] = {}
        self._part = ""
        self._servicer = servicer
        self._interval = interval
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cvault-health", daemon=True)
        #: the problems the last probe found, by part (empty: SERVING)
        self.last: dict[str, str] = {}
        #: what the last probe found degraded ("" when nothing); SERVING all the same
        self.degraded = ""
        self._probed = False

    def check_now(self) -> bool:
        problems = dict(self._probe())
        degraded = problems.pop(DEGRADED, "")
        if degraded != self.degraded:
            self._log_degraded(degraded)
        if problems != self.last or not self._probed:
            self._log(problems)
        self.last, self._probed, self.degraded = problems, True, degraded
        self._on_change(problems)
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if problems
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in ("", RECORDS_SERVICE, AUDIT_SERVICE, TOKENS_SERVICE):
            self._servicer.set(name, status)
        return not problems

    def _probe(self) -> dict[str, str]:
        """The problems a probe finds, waiting at most ``timeout`` for it."""
        if self._worker is None or not self._worker.is_alive():
            self._part = "probe"
            self._worker = threading.Thread(
                target=self._probe_once, name="cvault-health-probe", daemon=True
            )
            self._worker.start()
        self._worker.join(self._timeout)
        if self._worker.is_alive():
            return {self._part: f"not answering within {self._timeout:g} s"}
        return self._found

    def _probe_once(self) -> None:
        def at(part: str) -> None:
            self._part = part

        try:
            found = self._services.readiness(at)
        except Exception as exc:  # a bug in a probe must not leave health as it was
            log.error("health probe failed: %s", type(exc).__name__)
            found = {"probe": f"failed ({type(exc).__name__})"}
        self._found = {part: why for part, why in found.items() if why}

    def _log(self, problems: Mapping[str, str]) -> None:
        if not problems:
            log.info("health: SERVING (database, schema, key server and policy fine)")
        for part, why in problems.items():
            log.error("health: NOT_SERVING: %s: %s", part, why)

    @staticmethod
    def _log_degraded(degraded: str) -> None:
        DEGRADED_GAUGE.set(1 if degraded else 0)
        if degraded:
            log.warning("health: degraded, still SERVING: %s", degraded)
        else:
            log.info("health: no longer degraded")

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
    #: the plaintext health-only server (``health_listen``) and its port
    probes: grpc.Server | None = None
    probe_port: int = 0
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
        self.drain()
        self.guard.close()
        done = self.server.stop(grace).wait(grace + STOP_MARGIN)
        if self.probes is not None:
            self.probes.stop(0)
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

    def drain(self) -> None:
        """Say NOT_SERVING to health checks from now on while still serving calls: the first
        step of a stop, so that load balancers move new calls elsewhere before it refuses them.
        Idempotent."""
        self.monitor.stop()
        self.health.enter_graceful_shutdown()

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


def _probe_server(
    servicer: health.HealthServicer, listen: str, reuse_port: bool
) -> tuple[grpc.Server, int]:
    """A plaintext server of ``grpc.health.v1`` only (the same statuses): Kubernetes' gRPC
    probes cannot present a client certificate. Nothing else is served there."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="cvault-probe"),
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return server, _bind(server, listen, None)


def start_server(
    services: Services,
    listen: str = "127.0.0.1:0",
    *,
    authenticator: Authenticator,
    limits: CallLimits | None = None,
    health_interval: float = 2.0,
    credentials: grpc.ServerCredentials | None = None,
    extra_ports: Sequence[tuple[str, grpc.ServerCredentials | None]] = (),
    reuse_port: bool = False,
    health_listen: str = "",
) -> RunningServer:
    """Start serving on ``listen`` (port 0 picks a free port) and return at once.

    The port is this server's alone unless ``reuse_port`` (``SO_REUSEPORT``: several processes
    on one port on purpose, the kernel spreading connections between them).

    Every call except health checks and reflection must authenticate (mTLS client certificate
    when ``credentials`` require one, or an API key when the authenticator has keys). Calls are
    admitted within ``limits`` (:mod:`vault.api._guard`): health checks always find a worker.
    ``health_listen`` adds a plaintext port that serves health checks only. The health service
    ``cvault.liveness`` says SERVING while the process runs (liveness probes), the others only
    while it can serve (:class:`HealthMonitor`).
    """
    limits = limits or CallLimits()
    guard = CallGuard(limits)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.max_workers, thread_name_prefix="cvault-rpc"),
        # outermost first: request id, span and metrics cover authentication and admission
        interceptors=[ObserveInterceptor(), AuthInterceptor(authenticator), guard],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # gRPC sets SO_REUSEPORT by default: a second server on a busy port would start
            # and silently take half the calls. Off, the bind fails and the start says so.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
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
    health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        port = _bind(server, listen, credentials)
        extra = [_bind(server, addr, creds) for addr, creds in extra_ports]
        probes, probe_port = (
            _probe_server(health_servicer, health_listen, reuse_port)
            if health_listen
            else (None, 0)
        )
    except ConfigError:
        guard.close()
        raise
    monitor = HealthMonitor(services, health_servicer, health_interval, guard.set_unavailable)
    server.start()
    if probes is not None:
        probes.start()
        log.info("serving health checks (plaintext) on port %d", probe_port)
    monitor.start()
    log.info("serving vault.v1 on port %d", port)
    return RunningServer(server, port, monitor, health_servicer, guard, extra, probes, probe_port)
