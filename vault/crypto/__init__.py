"""Envelope AEAD, data-key wrapping, blind indexes and token minting (the sharp layer)."""

from vault.crypto._aead import (
    DEK_V1,
    KEY_BYTES,
    VALUE_V1,
    DataKey,
    ValueSealer,
    new_key,
    open_value,
    seal_value,
    unwrap_data_key,
    value_key_id,
    wrap_data_key,
    wrapped_dek_tenant_key_id,
)
from vault.crypto._blind_index import blind_index
from vault.crypto._encoding import lp, random_base62, uuid7
from vault.crypto._fingerprint import FINGERPRINT_LABEL, value_fingerprint
from vault.crypto._row_mac import ROW_MAC_BYTES, consent_mac, grant_mac, row_mac_matches
from vault.crypto._surrogates import (
    KEEPS_LAST_FOUR,
    SurrogateError,
    SurrogateShapeError,
    SurrogateUnavailableError,
    surrogate,
)
from vault.crypto._tokens import TOKEN_DIGITS, TOKEN_RE, deterministic_token, random_token

__all__ = [
    "DEK_V1",
    "FINGERPRINT_LABEL",
    "KEEPS_LAST_FOUR",
    "KEY_BYTES",
    "ROW_MAC_BYTES",
    "TOKEN_DIGITS",
    "TOKEN_RE",
    "VALUE_V1",
    "DataKey",
    "SurrogateError",
    "SurrogateShapeError",
    "SurrogateUnavailableError",
    "ValueSealer",
    "blind_index",
    "consent_mac",
    "deterministic_token",
    "grant_mac",
    "lp",
    "new_key",
    "open_value",
    "random_base62",
    "random_token",
    "row_mac_matches",
    "seal_value",
    "surrogate",
    "unwrap_data_key",
    "uuid7",
    "value_fingerprint",
    "value_key_id",
    "wrap_data_key",
    "wrapped_dek_tenant_key_id",
]
