"""The committed gRPC code in vault/v1/ is exactly what protos/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import repo_root


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    root = repo_root()
    subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_protos.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc produced nothing"
    stale = [
        str(rel)
        for rel in generated
        if not (root / rel).is_file() or (root / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert not stale, f"regenerate with `make protos`: {stale}"
