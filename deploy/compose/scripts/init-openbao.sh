#!/bin/sh
# openbao-init (OpenBao image, uid 10001; idempotent, runs at every `docker compose up`):
# operator init on the first run (one unseal key share: DEMO ONLY), unseal on every run, then
# KV v2 at secret/ for the audit checkpoints, the policies of deploy/openbao/, the AppRole of
# the service (role_id and secret_id into the `runtime` volume) and an admin token for the
# operator one-shots (keys-init, tenants-init).
set -eu
state=/bao-operator

i=0
until bao status > /dev/null 2>&1 || [ $? -eq 2 ]; do   # 2: sealed, but answering
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
        echo "openbao-init: OpenBao at $BAO_ADDR does not answer" >&2
        exit 1
    fi
    sleep 1
done

if [ ! -s "$state/unseal-key" ]; then
    if bao status -format=json 2>/dev/null | grep -q '"initialized": *true'; then
        echo "openbao-init: OpenBao is initialized but $state/unseal-key is missing" >&2
        exit 1
    fi
    umask 077
    bao operator init -key-shares=1 -key-threshold=1 > "$state/init.txt"
    sed -n 's/^Unseal Key 1: //p' "$state/init.txt" > "$state/unseal-key"
    sed -n 's/^Initial Root Token: //p' "$state/init.txt" > "$state/root-token"
    rm -f "$state/init.txt"
fi
bao operator unseal "$(cat "$state/unseal-key")" > /dev/null
BAO_TOKEN=$(cat "$state/root-token")
export BAO_TOKEN

i=0
until bao status > /dev/null 2>&1; do   # Raft: wait for this node to become active
    i=$((i + 1))
    [ "$i" -le 60 ] || { echo "openbao-init: still sealed or standby" >&2; exit 1; }
    sleep 1
done

bao secrets list | grep -q '^secret/' || bao secrets enable -path=secret kv-v2
bao auth list | grep -q '^approle/' || bao auth enable approle
bao policy write cvault-runtime /policies/runtime-policy.hcl
bao policy write cvault-admin /policies/admin-policy.hcl
bao write auth/approle/role/cvault \
    token_policies=cvault-runtime token_ttl=1h token_max_ttl=24h > /dev/null

umask 077
bao read -field=role_id auth/approle/role/cvault/role-id > /runtime/role_id
if [ ! -s /runtime/secret_id ]; then
    bao write -f -field=secret_id auth/approle/role/cvault/secret-id > /runtime/secret_id
fi
chmod 0600 /runtime/role_id /runtime/secret_id
bao token create -policy=cvault-admin -ttl=1h -field=token > "$state/admin-token"
echo "openbao-init: unsealed; AppRole cvault (policy cvault-runtime) and an admin token ready"
