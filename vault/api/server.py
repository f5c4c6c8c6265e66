"""Build and run the gRPC server: Records, standard health checking and server reflection."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vault.api.records import RecordsServicer, records_handler
from vault.service import RecordsService
from vault.v1 import records_pb2

log = logging.getLogger("vault.api.server")

RECORDS_SERVICE = records_pb2.DESCRIPTOR.services_by_name["Records"].full_name
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class HealthMonitor:
    """Probes the database and the key server in the background and sets the health status.

    NOT_SERVING while either is unreachable; SERVING again as soon as both answer, with no
    restart. Probes are cheap (``SELECT 1`` and the key server's unauthenticated ``sys/health``)
    and never counted against a tenant's key-server budget.
    """

    def __init__(
        self, service: RecordsService, servicer: health.HealthServicer, interval: float
    ) -> None:
        self._service = service
        self._servicer = servicer
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cvault-health", daemon=True)
        self.last: dict[str, bool] = {}

    def check_now(self) -> bool:
        state = self._service.dependencies_healthy()
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
        for name in ("", RECORDS_SERVICE):
            self._servicer.set(name, status)
        return ok

    def start(self) -> None:
        self.check_now()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_now()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    monitor: HealthMonitor
    health: health.HealthServicer
    _stopped: bool = field(default=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.monitor.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(
    service: RecordsService,
    listen: str = "127.0.0.1:0",
    *,
    dev_admin_key_sha256: str = "",
    max_workers: int = 16,
    health_interval: float = 2.0,
    credentials: grpc.ServerCredentials | None = None,
) -> RunningServer:
    """Start serving on ``listen`` (port 0 picks a free port) and return at once."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="cvault-rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    server.add_generic_rpc_handlers(
        (records_handler(RecordsServicer(service, dev_admin_key_sha256=dev_admin_key_sha256)),)
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            RECORDS_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = (
        server.add_secure_port(listen, credentials)
        if credentials is not None
        else server.add_insecure_port(listen)
    )
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    monitor = HealthMonitor(service, health_servicer, health_interval)
    server.start()
    monitor.start()
    log.info("serving vault.v1 on port %d", port)
    return RunningServer(server, port, monitor, health_servicer)
