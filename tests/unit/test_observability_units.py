"""Observability pieces without a server: key-server operation names, label hygiene, request
ids on log records, the JSON log format, the settings, the span file and the cache counters."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.support import repo_root
from vault import logs, metrics, tracing
from vault.cli import build_parser
from vault.config import load_settings
from vault.errors import ConfigError
from vault.keys import CacheLimits, KeyCache
from vault.keys._transit import operation_of


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("POST", "transit/encrypt/cvault-email", "wrap"),
        ("POST", "transit/decrypt/cvault-email", "unwrap"),
        ("POST", "team/transit/rewrap/cvault-phone", "rewrap"),
        ("POST", "auth/approle/login", "login"),
        ("GET", "auth/token/lookup-self", "token"),
        ("POST", "transit/keys/cvault-email/rotate", "key_rotate"),
        ("POST", "transit/keys/cvault-email/trim", "key_trim"),
        ("POST", "transit/keys/cvault-email/config", "key_config"),
        ("GET", "transit/keys/cvault-email", "key_info"),
        ("POST", "sys/capabilities-self", "capabilities"),
        ("GET", "sys/mounts/transit", "admin"),
        ("POST", "secret/data/cvault/audit/head/main/0000001", "checkpoint"),
        ("LIST", "secret/metadata/cvault/audit/head/main", "checkpoint"),
        ("GET", "some/unknown/path", "other"),
    ],
)
def test_key_server_operations_are_a_fixed_set(method: str, path: str, operation: str) -> None:
    assert operation_of(method, path) == operation
    assert operation in metrics.KEY_SERVER_OPERATIONS


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("limit_exceeded", "limit_exceeded"),
        ("action_not_allowed", "action_not_allowed"),
        ("Ada.Lovelace@example.com", "other"),
        ("tenant-acme", "other"),
        ("", "other"),
        ("x" * 60, "other"),
    ],
)
def test_reason_labels_are_codes_only(value: str, label: str) -> None:
    assert metrics.code_label(value) == label


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_cache_lookups_are_counted_by_cache_and_result() -> None:
    cache: KeyCache[bytes] = KeyCache(CacheLimits(), name="data_keys")
    before = {
        r: _sample("cvault_key_cache_lookups_total", cache="data_keys", result=r)
        for r in ("hit", "miss")
    }
    assert cache.get("a") is None
    cache.put("a", b"k" * 32)
    assert cache.get("a") == b"k" * 32
    assert cache.get("a") == b"k" * 32
    after = {
        r: _sample("cvault_key_cache_lookups_total", cache="data_keys", result=r)
        for r in ("hit", "miss")
    }
    assert after["miss"] - before["miss"] == 1
    assert after["hit"] - before["hit"] == 2


def test_an_unknown_cache_or_operation_name_becomes_other() -> None:
    metrics.CacheCounter("tenant-acme").hit.inc()
    metrics.observe_key_server("transit/encrypt/tenant-acme", "fine", 0.01)
    text = metrics.exposition().decode()
    assert "tenant-acme" not in text
    assert _sample("cvault_key_server_calls_total", operation="other", outcome="error") >= 1


def test_audit_append_is_timed_only_with_events() -> None:
    calls: list[int] = []

    class Log:
        @metrics.timed_audit_append
        def append(self, conn: object, events: list[str]) -> list[str]:
            calls.append(len(events))
            return events

    before = _sample("cvault_audit_append_duration_seconds_count", outcome="ok")
    assert Log().append(None, []) == []
    assert Log().append(None, ["e"]) == ["e"]
    assert calls == [0, 1]
    assert _sample("cvault_audit_append_duration_seconds_count", outcome="ok") - before == 1


def test_log_records_carry_the_request_id_and_method_in_json() -> None:
    logs.install_request_ids()
    record_outside = logging.getLogger("t").makeRecord("t", logging.INFO, "f", 1, "m", (), None)
    assert record_outside.request_id == ""  # type: ignore[attr-defined]
    with logs.request_scope("req-123", "/vault.v1.Records/GetRecord"):
        assert logs.current_request_id() == "req-123"
        record = logging.getLogger("t").makeRecord(
            "vault.x", logging.WARNING, "f", 1, "denied: %s", ("action_not_allowed",), None
        )
    assert logs.current_request_id() == ""
    line = json.loads(logs.formatter("json").format(record))
    assert line["request_id"] == "req-123"
    assert line["rpc_method"] == "/vault.v1.Records/GetRecord"
    assert line["message"] == "denied: action_not_allowed"
    assert line["level"] == "WARNING"
    assert line["logger"] == "vault.x"
    assert "[req-123]" in logs.formatter("text").format(record)
    with pytest.raises(ConfigError):
        logs.formatter("xml")


def test_observability_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "vault.toml"
    cfg.write_text(
        '[metrics]\nlisten = "127.0.0.1:9464"\n'
        '[tracing]\nenabled = true\nexporter = "file"\nfile = "/tmp/spans.jsonl"\n'
        '[logging]\nformat = "json"\n'
    )
    settings = load_settings(cfg, env={})
    assert settings.metrics.listen == "127.0.0.1:9464"
    assert settings.tracing.enabled
    assert settings.tracing.file == "/tmp/spans.jsonl"
    assert settings.logging.format == "json"
    assert load_settings(cfg, env={"CVAULT_LOG_FORMAT": "text"}).logging.format == "text"
    defaults = load_settings(None, env={})
    assert defaults.metrics.listen == ""
    assert not defaults.tracing.enabled
    assert defaults.logging.format == "text"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[metrics]\nport = 9464\n", "unknown \\[metrics\\]"),
        ("[metrics]\nlisten = 9464\n", "listen must be a str"),
        ("[tracing]\nenabled = 1\n", "enabled must be a bool"),
        ('[tracing]\nexporter = "otlp"\n', "exporter must be"),
        ('[tracing]\nexporter = "file"\n', "exporter must be"),
        ('[logging]\nformat = "xml"\n', "format must be"),
    ],
)
def test_bad_observability_settings_fail_at_start(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "vault.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, env={})


def test_example_settings_document_observability() -> None:
    text = (repo_root() / "deploy" / "vault.example.toml").read_text()
    for table in ("[metrics]", "[tracing]", "[logging]"):
        assert table in text


def test_span_file_gets_one_json_span_a_line(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = tracing.configure("file", str(path), service_name="cvault-test")
    assert isinstance(provider, TracerProvider)
    try:
        tracer = tracing.tracer()
        with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
            pass
    finally:
        tracing.shutdown()
    assert not tracing.enabled()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["inner", "outer"]
    assert spans[0]["parent_id"] == spans[1]["context"]["span_id"]
    assert spans[1]["resource"]["attributes"]["service.name"] == "cvault-test"


def test_tracing_off_is_a_no_op_and_bad_exporters_are_refused(tmp_path: Path) -> None:
    assert not tracing.enabled()
    with tracing.tracer().start_as_current_span("nothing") as span:
        assert not span.is_recording()
    with pytest.raises(ConfigError, match="exporter"):
        tracing.configure("otlp")
    with pytest.raises(ConfigError, match="file"):
        tracing.configure("file", "")
    with pytest.raises(ConfigError, match="cannot open"):
        tracing.configure("file", str(tmp_path / "missing" / "spans.jsonl"))
    assert not tracing.enabled()


def test_metrics_endpoint_addresses() -> None:
    with pytest.raises(ConfigError, match="host:port"):
        metrics.serve_metrics("9464")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            metrics.serve_metrics(f"127.0.0.1:{port}")
    server = metrics.serve_metrics("127.0.0.1:0")
    try:
        assert server.port > 0
    finally:
        server.stop()


def test_cli_log_format_option() -> None:
    args = build_parser().parse_args(["--log-format", "json", "serve"])
    assert args.log_format == "json"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--log-format", "xml", "serve"])
