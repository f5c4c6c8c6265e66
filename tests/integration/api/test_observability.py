"""Observability over real gRPC and the real OpenBao (issue 12, point 4): Prometheus metrics by
method and code, key-server calls, cache lookups, audit appends, denials and limit refusals;
JSON log lines carrying the caller's ``x-request-id``; spans of the server and its key-server
calls. Nothing a customer wrote reaches a metric, a label, a log line or a span."""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    API_KEYS,
    create_tenants,
    make_service,
    plaintext_in,
    private_postgres,
    sample_record,
)
from vault import logs, tracing
from vault.api import ApiKeyStore, Authenticator, RunningServer, new_api_key, start_server
from vault.app import build_app
from vault.audit import DENIED, AuditEvent
from vault.config import AuthSettings, MetricsSettings, OpenBaoSettings, Settings
from vault.deadline import Deadline
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.metrics import (
    CACHES,
    KEY_SERVER_OPERATIONS,
    KEY_SERVER_OUTCOMES,
    MetricsServer,
    serve_metrics,
)
from vault.service import Services
from vault.storage import Database, upgrade
from vault.v1 import records_pb2 as pb
from vault.v1 import records_pb2_grpc as pb_grpc
from vault.v1 import tokens_pb2 as tokens_pb
from vault.v1 import tokens_pb2_grpc as tokens_pb_grpc

pytestmark = pytest.mark.openbao

PURPOSE = "testing"
FIELDS = 5  # sample_record's fields: the limited role may see one record's worth a day
KEYS = {name: new_api_key(name) for name in ("obs-writer", "obs-reader")}
POLICY = f"""\
policy_version: 1
purposes:
  testing:
    description: the observability test
principals:
  "apikey:obs-writer": {{role: writer, tenants: ["*"]}}
  "apikey:obs-reader": {{role: limited, tenants: ["*"]}}
roles:
  writer:
    actions: [record.write, token.create]
    fields:
      "*": omit
  limited:
    actions: [record.read]
    purposes: [testing]
    fields:
      "*": plain
    limits: {{plain_per_day: {FIELDS}}}
"""
GET = "/vault.v1.Records/GetRecord"
CREATE = "/vault.v1.Records/CreateRecord"


class _JsonLines(logging.Handler):
    """Every log record of the test, formatted as the JSON log format writes it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logs.formatter("json"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@dataclass
class Observed:
    server: RunningServer
    metrics: MetricsServer
    services: Services
    channel: grpc.Channel
    log: _JsonLines
    tenant: str
    values: list[str] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)

    def call(
        self, method: str, request: Any, key: str, request_id: str = ""
    ) -> grpc.RpcError | Any:
        """The response, or the gRPC error the call ended with."""
        stub = pb_grpc.RecordsStub(self.channel)
        metadata = [("x-api-key", KEYS[key][0] if key in KEYS else key)]
        if request_id:
            metadata.append(("x-request-id", request_id))
        try:
            return getattr(stub, method)(request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return exc

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            return str(response.read().decode())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def observed(
    request: pytest.FixtureRequest, openbao: OpenBaoDevServer, tmp_path: Path
) -> Iterator[Observed]:
    """A server over a database of its own (the role's daily limit starts unspent)."""
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(private_postgres("cvault_obs"))
        else:
            url = f"sqlite:///{tmp_path / 'observed.db'}"
            upgrade(url)
        yield from _observed(openbao, url, tmp_path)


def _observed(openbao: OpenBaoDevServer, url: str, tmp_path: Path) -> Iterator[Observed]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = Database(url)
    services = Services.over(make_service(db, openbao, policy=policy).core)

    def on_denied(reason: str, peer: str) -> None:  # as vault.app wires it
        event = AuditEvent("auth.authenticate", DENIED, "", "", "", "", reason=reason, peer=peer)
        services.core.access.record_denial(event, deadline=Deadline.after(5))

    server = start_server(
        services,
        authenticator=Authenticator(
            api_keys=ApiKeyStore({k: v[1] for k, v in KEYS.items()}),
            allow_mtls=False,
            on_denied=on_denied,
        ),
        health_interval=0.5,
    )
    metrics = serve_metrics("127.0.0.1:0")
    handler = _JsonLines()
    root = logging.getLogger()
    root.addHandler(handler)
    tenant = f"obs-{uuid.uuid4().hex[:10]}"
    create_tenants(db, tenant)
    channel = grpc.insecure_channel(server.address)
    try:
        yield Observed(server, metrics, services, channel, handler, tenant)
    finally:
        root.removeHandler(handler)
        channel.close()
        metrics.stop()
        server.stop(grace=0)
        db.dispose()


def _create(obs: Observed, i: int) -> str:
    record = sample_record(i)
    obs.values += list(record.values())
    response = obs.call(
        "CreateRecord", pb.CreateRecordRequest(tenant=obs.tenant, fields=record), "obs-writer"
    )
    assert not isinstance(response, grpc.RpcError), response
    obs.record_ids.append(response.record_id)
    return str(response.record_id)


def _get(obs: Observed, record_id: str, key: str, request_id: str = "") -> Any:
    request = pb.GetRecordRequest(tenant=obs.tenant, record_id=record_id, purpose=PURPOSE)
    return obs.call("GetRecord", request, key, request_id)


def _code(result: Any) -> grpc.StatusCode:
    return result.code() if isinstance(result, grpc.RpcError) else grpc.StatusCode.OK


def _exercise(obs: Observed) -> dict[str, str]:
    """Calls that succeed, fail, are denied and hit a limit; the request ids sent."""
    ids = {
        "denied": f"obs-deny-{uuid.uuid4().hex[:8]}",
        "limit": f"obs-limit-{uuid.uuid4().hex[:8]}",
        "internal": f"obs-bug-{uuid.uuid4().hex[:8]}",
    }
    record_id = _create(obs, 1)
    assert _code(_get(obs, record_id, "obs-reader")) == grpc.StatusCode.OK
    limited = _get(obs, record_id, "obs-reader", ids["limit"])
    assert _code(limited) == grpc.StatusCode.RESOURCE_EXHAUSTED
    denied = _get(obs, record_id, "obs-writer", ids["denied"])
    assert _code(denied) == grpc.StatusCode.PERMISSION_DENIED
    missing = obs.call(
        "GetRecord", pb.GetRecordRequest(tenant=obs.tenant, record_id=""), "obs-reader"
    )
    assert _code(missing) == grpc.StatusCode.INVALID_ARGUMENT
    bad_key = _get(obs, record_id, "cvk_nobody_" + "A" * 43)
    assert _code(bad_key) == grpc.StatusCode.UNAUTHENTICATED
    return ids


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _labels(families: dict[str, Any], family: str, sample: str) -> list[dict[str, str]]:
    return [s.labels for s in families[family].samples if s.name == sample]


def test_metrics_families_and_labels(observed: Observed) -> None:
    _exercise(observed)
    _create(observed, 2)  # a second record of the tenant: its tenant key comes from the cache
    value = sample_record(3)["email"]
    observed.values.append(value)
    item = tokens_pb.TokenizeItem(value=value, field_class="email")
    stream = tokens_pb_grpc.TokensStub(observed.channel).StreamTokenize(
        iter([tokens_pb.TokenizeRequest(tenant=observed.tenant, items=[item])]),
        metadata=(("x-api-key", KEYS["obs-writer"][0]),),
        timeout=30,
    )
    assert len(list(stream)) >= 1
    fams = _families(observed.scrape())
    rpcs = {(x["method"], x["code"]) for x in _labels(fams, "cvault_rpc", "cvault_rpc_total")}
    for code in (
        "OK",
        "RESOURCE_EXHAUSTED",
        "PERMISSION_DENIED",
        "INVALID_ARGUMENT",
        "UNAUTHENTICATED",
    ):
        assert (GET, code) in rpcs, code
    assert (CREATE, "OK") in rpcs
    assert ("/vault.v1.Tokens/StreamTokenize", "OK") in rpcs
    buckets = _labels(fams, "cvault_rpc_duration_seconds", "cvault_rpc_duration_seconds_bucket")
    assert {"method": GET, "code": "OK", "le": "+Inf"} in buckets
    calls = _labels(fams, "cvault_key_server_calls", "cvault_key_server_calls_total")
    assert {"operation": "wrap", "outcome": "ok"} in calls
    assert {x["operation"] for x in calls} <= KEY_SERVER_OPERATIONS
    assert {x["outcome"] for x in calls} <= KEY_SERVER_OUTCOMES
    assert "cvault_key_server_duration_seconds" in fams
    lookups = _labels(fams, "cvault_key_cache_lookups", "cvault_key_cache_lookups_total")
    assert {"cache": "data_keys", "result": "hit"} in lookups
    assert {x["cache"] for x in lookups} <= CACHES
    appends = _labels(
        fams, "cvault_audit_append_duration_seconds", "cvault_audit_append_duration_seconds_count"
    )
    assert {"outcome": "ok"} in appends
    denials = _labels(fams, "cvault_denials", "cvault_denials_total")
    assert {"reason": "action_not_allowed"} in denials
    assert {"reason": "bad_api_key"} in denials
    refusals = _labels(fams, "cvault_limit_refusals", "cvault_limit_refusals_total")
    assert {"reason": "limit_exceeded"} in refusals


def test_no_customer_value_tenant_or_record_id_in_metrics_or_json_logs(observed: Observed) -> None:
    _exercise(observed)
    text = observed.scrape()
    assert observed.values
    assert observed.record_ids
    assert not plaintext_in(text)
    for secret in (
        *observed.values,
        *observed.record_ids,
        observed.tenant,
        "obs-writer",
        "obs-reader",
    ):
        assert secret not in text, "a value, id, tenant or principal reached /metrics"
    # every label value of the service's metrics is one of the closed vocabulary
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("cvault_"):
            continue
        for sample in fam.samples:
            for name, value in sample.labels.items():
                assert name in (
                    "method",
                    "code",
                    "operation",
                    "outcome",
                    "cache",
                    "result",
                    "reason",
                    "le",
                )
                if name == "method":
                    assert value.startswith(("/vault.v1.", "/grpc.")), value
                elif name != "le":
                    assert value.replace("_", "").isalnum(), value
    lines = "\n".join(observed.log.lines)
    assert observed.log.lines
    assert not plaintext_in(lines)
    for value in observed.values:
        assert value not in lines


def test_denial_limit_and_internal_log_lines_carry_the_callers_request_id(
    observed: Observed, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _exercise(observed)

    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"a library message that quotes {observed.values[0]}")

    monkeypatch.setattr(observed.services.records, "get", bug)
    broken = _get(observed, observed.record_ids[0], "obs-reader", ids["internal"])
    assert _code(broken) == grpc.StatusCode.INTERNAL
    assert ids["internal"] in broken.details()
    lines = observed.log.objects()

    def by_id(request_id: str) -> list[dict[str, Any]]:
        return [x for x in lines if x.get("request_id") == request_id]

    denied = [x for x in by_id(ids["denied"]) if x["message"].startswith("denied: ")]
    assert len(denied) == 1, by_id(ids["denied"])
    assert "action_not_allowed" in denied[0]["message"]
    assert "role writer" in denied[0]["message"]
    assert denied[0]["rpc_method"] == GET
    limited = [x for x in by_id(ids["limit"]) if x["message"].startswith("limit refusal: ")]
    assert len(limited) == 1, by_id(ids["limit"])
    assert "limit_exceeded" in limited[0]["message"]
    internal = [x for x in by_id(ids["internal"]) if x["level"] == "ERROR"]
    assert len(internal) == 1
    assert internal[0]["message"].startswith(f"internal error {ids['internal']} in GetRecord")
    assert observed.values[0] not in json.dumps(lines)
    # a call without an x-request-id gets one of its own on its log lines, the same as its
    # audit row's (caller_of takes the call's id)
    assert all(x["request_id"] for x in lines if x.get("rpc_method"))


def test_spans_of_a_call_and_its_key_server_calls(observed: Observed) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        record_id = _create(observed, 3)  # a new tenant's first record: tenant keys are wrapped
        assert _code(_get(observed, record_id, "obs-writer")) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        tracing.use_provider(None)
        provider.shutdown()
    spans = exporter.get_finished_spans()
    servers = {s.name: s for s in spans if s.name.startswith("vault.v1.")}
    assert set(servers) == {"vault.v1.Records/CreateRecord", "vault.v1.Records/GetRecord"}
    create = servers["vault.v1.Records/CreateRecord"]
    assert create.attributes is not None
    assert create.attributes["rpc.grpc.status_code"] == "OK"
    get = servers["vault.v1.Records/GetRecord"]
    assert get.attributes is not None
    assert get.attributes["rpc.grpc.status_code"] == "PERMISSION_DENIED"
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == create.context.span_id
    ]
    assert any(s.name == "keyserver wrap" for s in children), [s.name for s in spans]
    for s in children:
        assert s.context.trace_id == create.context.trace_id
        assert s.attributes is not None
        assert s.attributes["cvault.keyserver.outcome"] == "ok"
    dumped = "\n".join(s.to_json() for s in spans)
    assert not plaintext_in(dumped)
    for secret in (*observed.values, observed.tenant, *KEYS):
        assert secret not in dumped


def test_app_serves_metrics_when_configured(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        openbao=OpenBaoSettings(url=openbao.url, token=openbao.root_token),
        auth=AuthSettings(api_keys={"test-admin": API_KEYS["test-admin"][1]}),
        metrics=MetricsSettings(listen="127.0.0.1:0"),
    )
    app = build_app(settings)
    try:
        app.start_observability()
        assert app.metrics_server is not None
        port = app.metrics_server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert "# HELP cvault_rpc_total" in r.read().decode()
    finally:
        app.close()
    assert app.metrics_server is None
    with pytest.raises(OSError, match=r"refused|reset"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_off_by_default(openbao: OpenBaoDevServer, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'off.db'}",
        openbao=OpenBaoSettings(url=openbao.url, token=openbao.root_token),
        auth=AuthSettings(api_keys={"test-admin": API_KEYS["test-admin"][1]}),
    )
    app = build_app(settings)
    try:
        app.start_observability()
        assert app.metrics_server is None
    finally:
        app.close()
