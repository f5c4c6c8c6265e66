"""The fuzz suite's bounded run inside ``make test``: every RPC (found from the descriptors) with
a fixed number of hypothesis examples, single-threaded, against the embedded default shape (a
private SQLite vault, the session's OpenBao, the sample policy).

Each example must pass every check of ``tests/fuzz/harness.py`` (no INTERNAL or UNKNOWN, no
marker echoed, health SERVING, no partial rows, no error in the server log); a failure prints the
request in a form that goes straight into ``test_regressions.py``. ``CVAULT_FUZZ_EXAMPLES``
sets the examples per RPC (default :data:`DEFAULT_EXAMPLES`); the examples are derandomized (the
same on every run, so CI is not flaky). ``make fuzz`` runs the long, random version.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import (
    ALL_METHODS,
    CHECKED_TABLES,
    INFRA_METHODS,
    VAULT_METHODS,
    FuzzWorld,
    partial_rows,
    rpc_name,
)
from tests.support import SESSION_AUDIT_SINKS
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage.models import Base
from vault.v1 import audit_pb2, records_pb2, tokens_pb2

pytestmark = [pytest.mark.openbao, pytest.mark.fuzz, pytest.mark.slow]

DEFAULT_EXAMPLES: Final = 250
EXAMPLES: Final = int(os.environ.get("CVAULT_FUZZ_EXAMPLES", str(DEFAULT_EXAMPLES)))


def fuzz_settings(examples: int) -> settings:
    """CI settings: derandomized, no example database, no deadline (calls reach a database and
    a key server), no shrinking (the server's state moves on, so a replay may differ; the
    failure message holds the request as sent), and no health checks about slow or large data,
    which huge values are on purpose."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        print_blob=False,
    )


@pytest.fixture(scope="module")
def world(
    openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzWorld]:
    """One vault for the whole module, seeded with records, tokens and grants."""
    fuzz = FuzzWorld(
        Path(tmp_path_factory.mktemp("fuzz")),
        openbao.url,
        openbao.root_token,
        sinks=SESSION_AUDIT_SINKS,
    )
    try:
        fuzz.seed()
        yield fuzz
    finally:
        fuzz.close()


def test_every_rpc_of_every_service_is_fuzzed() -> None:
    """The RPCs come from the descriptors: every method of every vault.v1 service, streams
    included, plus health and reflection."""
    declared = {
        m.full_name
        for module in (records_pb2, audit_pb2, tokens_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    }
    assert {m.full_name for m in VAULT_METHODS} >= declared
    assert {m.containing_service.name for m in VAULT_METHODS} >= {"Records", "Audit", "Tokens"}
    assert any(m.client_streaming and m.server_streaming for m in VAULT_METHODS)
    assert {m.containing_service.full_name for m in INFRA_METHODS} == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_partial_row_check_covers_every_data_table() -> None:
    """Every table of the storage layer is checked, but the audit log's own and the rate
    counters (see the harness docstring); the tenant keys may only grow."""
    assert set(CHECKED_TABLES) >= {
        "records",
        "record_values",
        "data_keys",
        "blind_index",
        "tokens",
        "record_consents",
        "consent_history",
        "reveal_grants",
        "erasures",
        "erased_data_keys",
        "tenant_keys",
    }
    assert set(Base.metadata.tables) - set(CHECKED_TABLES) == {
        "audit_events",
        "audit_chain_heads",
        "audit_keys",
        "rate_counters",
    }
    assert partial_rows({"tenant_keys": 4, "tokens": 9}, {"tenant_keys": 6, "tokens": 9}) == ""
    assert partial_rows({"tenant_keys": 4}, {"tenant_keys": 3}) == "tenant_keys -1"
    assert partial_rows({"records": 4}, {"records": 5}) == "records +1"


@pytest.mark.parametrize("method", ALL_METHODS, ids=rpc_name)
def test_fuzz(world: FuzzWorld, method: MethodDescriptor) -> None:
    """``EXAMPLES`` generated calls of one RPC; every check passes for each."""

    @fuzz_settings(EXAMPLES)
    @given(st.data())
    def one_call(data: st.DataObject) -> None:
        findings = world.example(data, method)
        assert not findings, "\n\n".join(f.describe() for f in findings)

    one_call()


def test_row_counters_agree_with_count(world: FuzzWorld) -> None:
    """The trigger-kept counts the partial-row check relies on equal ``count(*)`` after the
    run. Prints the module's status table (``pytest -s`` shows it)."""
    print(f"\n{world.stats.examples} fuzz examples\n{world.stats.table()}")
    assert world.rows.verify() == []
