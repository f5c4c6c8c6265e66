#!/bin/sh
# secrets-init (runs as root in the cvault image, once per `docker compose up`; idempotent):
# the dev PKI, the two PostgreSQL passwords and their pgpass files, and the owners of the
# volumes the non-root containers write (uid 10001: cvault and OpenBao; uid 999: postgres).
set -eu

# CA, a server certificate valid for every TLS name of the stack, one client certificate per
# sample role (URI SAN spiffe://cvault.dev/<role>, as deploy/policy/sample-policy.yaml expects).
# Kept while valid, so a restart does not replace the CA the clients trust.
python - <<'PY'
from pathlib import Path

from vault.devcerts import generate_dev_pki

generate_dev_pki(
    Path("/pki"),
    roles=["backend-service", "support-agent", "ai-pipeline", "fraud-analyst", "dpo", "key-admin"],
    server_names=["openbao", "cvault-1", "cvault-2", "localhost", "127.0.0.1"],
)
PY
chown -R 10001:10001 /pki
chmod 0755 /pki
chmod 0644 /pki/*.pem
chmod 0600 /pki/*-key.pem
chown 0:0 /pki/ca-key.pem   # the containers (uid 10001) cannot read the CA's key

# 32 random bytes as hex: safe inside a URL, a pgpass line and SQL
new_password() {
    python -c 'import secrets; print(secrets.token_hex(32))'
}
[ -s /db-bootstrap/owner-password ] || new_password > /db-bootstrap/owner-password
[ -s /db-bootstrap/runtime-password ] || new_password > /db-bootstrap/runtime-password
chown 999:999 /db-bootstrap/owner-password /db-bootstrap/runtime-password
chmod 0400 /db-bootstrap/owner-password /db-bootstrap/runtime-password

# pgpass files (libpq ignores one that group or others can read)
printf 'postgres:5432:cvault:cvault_owner:%s\n' "$(cat /db-bootstrap/owner-password)" \
    > /migrator/owner.pgpass
printf 'postgres:5432:cvault:cvault_runtime:%s\n' "$(cat /db-bootstrap/runtime-password)" \
    > /runtime/runtime.pgpass
chown 10001:10001 /migrator/owner.pgpass /runtime/runtime.pgpass /runtime /bao-operator /bao-data
chmod 0600 /migrator/owner.pgpass /runtime/runtime.pgpass
chmod 0700 /bao-operator /bao-data
chmod 0755 /runtime
echo "secrets-init: PKI, database passwords and volume owners are in place"
