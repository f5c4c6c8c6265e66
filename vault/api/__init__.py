"""gRPC layer: the only place that knows protobuf (the SDK holds the other end of the wire)."""

from vault.api._status import ERROR_OF_STATUS, REASONS, status_of
from vault.api.records import RecordsServicer
from vault.api.server import RunningServer, start_server

__all__ = [
    "ERROR_OF_STATUS",
    "REASONS",
    "RecordsServicer",
    "RunningServer",
    "start_server",
    "status_of",
]
