#!/bin/sh
# First start of the database only (docker-entrypoint-initdb.d): the role `cvault serve` logs in
# as, with its password from secrets-init. `cvault db upgrade --runtime-role cvault_runtime`
# (the db-upgrade service) then grants it the service's rights, the audit log append-only.
set -eu
password=$(cat "$CVAULT_RUNTIME_PASSWORD_FILE")
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$password" <<'SQL'
CREATE ROLE cvault_runtime LOGIN PASSWORD :'password';
SQL
