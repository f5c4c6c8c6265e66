"""Customer-data vault: envelope-encrypted customer records with field keys in OpenBao/Vault."""

__version__ = "0.1.0"
