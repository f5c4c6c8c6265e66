"""`cvault records erase --record ID` goes the DeleteRecord way and prints the receipt."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ADMIN_KEY, sample_record
from vault import errors
from vault.api import RunningServer
from vault.client import VaultClient

pytestmark = pytest.mark.openbao


def test_records_erase(server: RunningServer, admin_client: VaultClient, tenant: str) -> None:
    created = admin_client.create_record(tenant, sample_record(40))
    env = dict(os.environ, CVAULT_API_KEY=ADMIN_KEY)
    args = ["records", "erase", "--record", created.record_id]
    done = subprocess.run(
        [sys.executable, "-m", "vault.cli", *args, "--address", server.address, "--tenant", tenant],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout)
    assert (receipt["tenant"], receipt["record_id"]) == (tenant, created.record_id)
    assert receipt["data_key_ids"]
    with pytest.raises(errors.Erased):
        admin_client.get_record(tenant, created.record_id)
