# Runtime policy of the cvault service: wrap and unwrap under the field keys, and add (never
# rewrite or delete) audit checkpoints; nothing else.
#
# "cvault" below is the key prefix: it MUST match the service's `key_prefix` setting
# (transit keys are named <key_prefix>-<field class>). Change both together.
#
# Only "update" is granted on transit. Transit turns a write to a key that does not exist into
# a "create" operation, so without "create" a typo in a field class is refused (403) instead of
# silently creating a new key. Rotation, rewrap, key reads and configuration need the admin policy.
#
# Token renewal (auth/token/renew-self) and lookup-self come from the built-in "default"
# policy: keep it attached to the service's AppRole tokens (token_no_default_policy = false).

path "transit/encrypt/cvault-*" {
  capabilities = ["update"]
}

path "transit/decrypt/cvault-*" {
  capabilities = ["update"]
}

# The audit log's checkpoints (vault/audit): KV v2 at secret/, under the [audit] kv_path prefix
# (default cvault/audit/head), one secret per checkpoint: <kv_path>/<chain>/<seq>. Kept outside
# the database so that deleting the newest audit rows is detected too.
#
# WRITE-ONCE: "create" without "update". KV v2 treats a write to a secret that exists (its
# metadata exists, even with every version deleted) as "update", so this credential can add a
# checkpoint but never rewrite one, nor the single <kv_path> secret that versions before
# write-once checkpoints overwrote. Even with this credential in hand (it can unwrap the audit
# key and re-MAC the chain), nobody can make an old checkpoint agree with rewritten rows.
# Never add "update", "patch" or "delete" here, and grant nothing on secret/delete/,
# secret/destroy/, secret/undelete/, secret/config or writes to secret/metadata/ (metadata
# writes could set delete_version_after and expire checkpoints).
# "read": when a process starts it reads the newest checkpoint of its chain, once.
path "secret/data/cvault/audit/*" {
  capabilities = ["create", "read"]
}

# "list" only (not read/update/delete of metadata): finding that newest checkpoint.
path "secret/metadata/cvault/audit/*" {
  capabilities = ["list"]
}
