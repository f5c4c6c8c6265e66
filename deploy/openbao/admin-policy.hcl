# Operator policy for `cvault keys init` and key rotation (never given to the service).
#
# "cvault" is the key prefix and must match the service's `key_prefix` setting.

# Enable the transit secrets engine at transit/ (first `cvault keys init`) and read its config.
path "sys/mounts/transit" {
  capabilities = ["create", "read", "update"]
}

# List keys (to check what exists).
path "transit/keys" {
  capabilities = ["list"]
}

# Create the field keys and read their metadata (type, versions, exportable).
path "transit/keys/cvault-*" {
  capabilities = ["create", "read", "update"]
}

# Rotation: new key version, then min_decryption_version / min_encryption_version, then trim.
# (Covered by the glob above too; listed so a reader sees what rotation needs.)
path "transit/keys/cvault-*/rotate" {
  capabilities = ["update"]
}

path "transit/keys/cvault-*/config" {
  capabilities = ["update"]
}

path "transit/keys/cvault-*/trim" {
  capabilities = ["update"]
}

# Re-wrap stored wrapped keys to the newest version: the plaintext never leaves the key server.
path "transit/rewrap/cvault-*" {
  capabilities = ["update"]
}

# Only to convert keys wrapped before the cvk2 format (binding as associated data, which
# rewrap cannot carry): `cvault keys rotate-field` decrypts and re-encrypts those once. Drop
# these two once `cvault keys status` shows every key rotated.
path "transit/decrypt/cvault-*" {
  capabilities = ["update"]
}

path "transit/encrypt/cvault-*" {
  capabilities = ["update"]
}

# `cvault audit verify`: unwrap the audit key (kept when the two grants above are dropped) ...
path "transit/decrypt/cvault-audit" {
  capabilities = ["update"]
}

# ... and read every audit checkpoint (KV v2 at secret/, [audit] kv_path prefix) to compare the
# chain with. "create" without "update" (write-once, as for the service): `cvault audit
# re-anchor` writes the first checkpoint of a new epoch after a database restore. Nobody
# rewrites or deletes a checkpoint.
path "secret/data/cvault/audit/*" {
  capabilities = ["create", "read"]
}

path "secret/metadata/cvault/audit/*" {
  capabilities = ["list"]
}
