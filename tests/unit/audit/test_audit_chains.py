"""Which chain a process appends to (issue 13, point 4): one per server process by default,
named from the host, a suffix per worker of ``cvault serve --workers``, and an operator chain
of its own; the settings that choose them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from vault.app import worker_settings
from vault.audit import operator_chain, server_chain, valid_chain
from vault.audit._chains import host_label
from vault.config import MetricsSettings, Settings, load_settings
from vault.errors import ConfigError


def test_a_server_chain_is_the_host_name_by_default() -> None:
    assert server_chain(host="vault-7d9f8c6b5-x2k4q") == "vault-7d9f8c6b5-x2k4q"
    assert server_chain() == host_label(socket.gethostname())
    assert valid_chain(server_chain())


def test_workers_get_a_suffix_each() -> None:
    assert server_chain(host="web1", worker=0) == "web1-w0"
    assert server_chain("main", worker=3) == "main-w3"
    assert server_chain("main") == "main"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("web1.example.com", "web1.example.com"),
        ("héllo wörld", "h-llo-w-rld"),
        ("..", "host"),
        ("", "host"),
        ("-web-", "web"),
    ],
)
def test_host_names_are_made_valid_chain_names(host: str, expected: str) -> None:
    assert server_chain(host=host) == expected
    assert valid_chain(server_chain(host=host))


def test_long_names_keep_their_start_and_a_hash_of_the_whole() -> None:
    a = "cvault-production-statefulset-eu-west-1-0"
    b = "cvault-production-statefulset-eu-west-1-1"
    chains = {server_chain(host=h, worker=w) for h in (a, b) for w in (None, 0, 12)}
    assert len(chains) == 6
    for chain in chains:
        assert valid_chain(chain)
        assert chain.startswith("cvault-production")
    assert server_chain(host=a, worker=12).endswith("-w12")
    long_setting = "x" * 32  # valid alone; shortened to make room for the suffix
    assert server_chain(long_setting) == long_setting
    assert len(server_chain(long_setting, worker=1)) == 32


def test_the_operator_chain_is_never_a_server_default() -> None:
    assert operator_chain(host="web1") == "ops_web1"
    assert operator_chain("audit-ops") == "audit-ops"
    assert valid_chain(operator_chain(host="a" * 64))
    # no host label holds "_": no server's default chain is ops_<anything>
    assert server_chain(host="ops_web1") == "ops-web1"
    assert server_chain("ops_web1") == "ops_web1"  # configured on purpose: as named


@pytest.mark.parametrize("bad", ["a b", "..", "x" * 33, "main;drop"])
def test_invalid_configured_chains_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="chain"):
        server_chain(bad)
    with pytest.raises(ValueError, match="chain"):
        operator_chain(bad)


def test_settings_default_to_a_chain_per_process() -> None:
    assert load_settings(env={}).audit.chain == ""
    assert load_settings(env={"CVAULT_AUDIT_CHAIN": "pod-a"}).audit.chain == "pod-a"


def test_settings_name_the_chains(tmp_path: Path) -> None:
    path = tmp_path / "vault.toml"
    path.write_text('[audit]\nchain = "main"\noperator_chain = "ops"\n')
    audit = load_settings(path, env={}).audit
    assert (audit.chain, audit.operator_chain) == ("main", "ops")
    assert load_settings(path, env={"CVAULT_AUDIT_CHAIN": "b"}).audit.chain == "b"


def test_worker_settings_give_each_worker_its_chain_and_metrics_port() -> None:
    base = Settings(metrics=MetricsSettings(listen="127.0.0.1:9464"))
    w2 = worker_settings(base, 2)
    assert w2.audit.chain == server_chain(worker=2)
    assert w2.metrics.listen == "127.0.0.1:9466"
    assert w2.listen == base.listen  # the gRPC port is shared
    assert worker_settings(Settings(), 1).metrics.listen == ""  # metrics off stays off
    any_port = Settings(metrics=MetricsSettings(listen="127.0.0.1:0"))
    assert worker_settings(any_port, 1).metrics.listen == "127.0.0.1:0"


def test_worker_settings_refuse_what_does_not_fit() -> None:
    with pytest.raises(ConfigError, match="metrics"):
        worker_settings(Settings(metrics=MetricsSettings(listen="0.0.0.0:65535")), 1)
