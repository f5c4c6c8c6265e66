"""Generate the Python gRPC code for protos/ into vault/v1/ (committed; never hand-edited).

The proto package `vault.v1` lives at protos/vault/v1/, so protoc's output lands at vault/v1/ and
its imports (`from vault.v1 import records_pb2`) resolve inside our own package without rewriting.
`tests/unit/api/test_generated_code.py` fails when the committed output and protos/ disagree.

Usage: python scripts/gen_protos.py [OUTPUT_ROOT]   (default: the repository root)
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out_root: Path) -> None:
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    bindir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{ROOT / 'protos'}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p.relative_to(ROOT / "protos")) for p in protos],
    ]
    out_root.mkdir(parents=True, exist_ok=True)
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
