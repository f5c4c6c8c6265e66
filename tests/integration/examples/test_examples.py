"""The examples under examples/ run, offline, against a real server and say what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.access.matrix_support import start_policy_server
from tests.support import API_KEYS, SAMPLE_POLICY, create_tenants
from vault.api import RunningServer
from vault.keys.openbao_dev import OpenBaoDevServer
from vault.storage import Database

pytestmark = pytest.mark.openbao

ROOT = Path(__file__).resolve().parents[3]
ROLES = ("backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin")


@pytest.fixture
def dev_server(db_url: str, openbao: OpenBaoDevServer, tenant: str) -> Iterator[RunningServer]:
    """A server under the sample policy, as ``cvault dev`` runs (the examples use its roles;
    under the test policy, test-admin's scopes overlap ai-pipeline's chat scopes)."""
    db = Database(db_url)
    server = start_policy_server(db, openbao, SAMPLE_POLICY)
    create_tenants(db, tenant)  # as `cvault dev` creates "demo"
    yield server
    server.stop(grace=0)
    db.dispose()


def test_support_chat_example(dev_server: RunningServer, tenant: str, tmp_path: Path) -> None:
    server = dev_server
    (tmp_path / "dev.json").write_text(
        json.dumps(
            {"address": server.address, "api_keys": {r: API_KEYS[f"dev-{r}"][0] for r in ROLES}}
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "support_chat.py"),
            "--state",
            str(tmp_path),
            "--tenant",
            tenant,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    model_sees = out.split("# the model's answer")[0]
    for value in ("ada.lovelace@example.com", "4111 1111 1111 1111", "+44 20 7946 0958"):
        assert value not in model_sees
    agent_sees = out.split("# what the support agent sees")[1].split("# the LLM agent")[0]
    assert "a•••@example.com" in agent_sees  # the support-agent role gets emails masked
    assert "•••• 1111" in agent_sees
    assert "4111 1111 1111 1111" not in out
    assert ": unknown unknown_token" in agent_sees
    assert "not a token (altered by the model?)" in agent_sees
    assert "gets the email masked: send_receipt(to=a•••@example.com)" in out
