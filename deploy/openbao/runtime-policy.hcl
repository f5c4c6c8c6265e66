# Runtime policy of the cvault service: wrap and unwrap under the field keys, nothing else.
#
# "cvault" below is the key prefix: it MUST match the service's `key_prefix` setting
# (transit keys are named <key_prefix>-<field class>). Change both together.
#
# Only "update" is granted. Transit turns a write to a key that does not exist into a "create"
# operation, so without "create" a typo in a field class is refused (403) instead of silently
# creating a new key. Rotation, rewrap, key reads and configuration need the admin policy.
#
# Token renewal (auth/token/renew-self) and lookup-self come from the built-in "default"
# policy: keep it attached to the service's AppRole tokens (token_no_default_policy = false).

path "transit/encrypt/cvault-*" {
  capabilities = ["update"]
}

path "transit/decrypt/cvault-*" {
  capabilities = ["update"]
}

# The audit log's chain-head checkpoint (vault/audit): KV v2 at secret/, one entry per chain.
# Kept outside the database so that deleting the newest audit rows is detected too.
path "secret/data/cvault/audit/*" {
  capabilities = ["create", "update", "read"]
}
