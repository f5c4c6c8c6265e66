"""Key-server layer: wrap/unwrap tenant and index keys under OpenBao/Vault transit field keys."""

from vault.keys._admin import (
    FieldKeyAdmin,
    FieldKeyInfo,
    ensure_kv_v2,
    field_key_info,
    init_field_keys,
    setup_approle,
    wrapped_version,
    write_policy,
)
from vault.keys._auth import AppRoleAuth, KeyServerAuth, TokenAuth
from vault.keys._cache import CacheLimits, KeyCache
from vault.keys._manager import CacheSettings, KeyManager, NewKey, WrappedRef
from vault.keys._transit import TransitKeyWrapper
from vault.keys._wrapper import KeyWrapper, UnwrapItem, WrapItem

__all__ = [
    "AppRoleAuth",
    "CacheLimits",
    "CacheSettings",
    "FieldKeyAdmin",
    "FieldKeyInfo",
    "KeyCache",
    "KeyManager",
    "KeyServerAuth",
    "KeyWrapper",
    "NewKey",
    "TokenAuth",
    "TransitKeyWrapper",
    "UnwrapItem",
    "WrapItem",
    "WrappedRef",
    "ensure_kv_v2",
    "field_key_info",
    "init_field_keys",
    "setup_approle",
    "wrapped_version",
    "write_policy",
]

from vault.keys._kv import KvCheckpointStore

__all__ += ["KvCheckpointStore"]
