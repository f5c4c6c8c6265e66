"""One error tree for the whole service; `vault.api` maps each class to one gRPC status.

Messages never carry a customer value: they name the field, the reason code and, for key-server
errors, the key name. Decryption failures carry no detail at all (like pyca's ``InvalidTag``).
"""

from __future__ import annotations


class VaultServiceError(Exception):
    """Root of every error the service raises on purpose."""

    #: short machine-readable reason code, sent to clients in the status message
    reason: str = "error"
    #: whether a client may retry the same call unchanged
    retryable: bool = False

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else self.reason


class InvalidInput(VaultServiceError):
    """A request field is missing, malformed, unknown or too long. Names the field only."""

    reason = "invalid_argument"

    def __init__(self, field: str, problem: str, *, reason: str = "invalid_argument") -> None:
        super().__init__(f"{field}: {problem}", reason=reason)
        self.field = field
        self.problem = problem


class Unauthenticated(VaultServiceError):
    reason = "unauthenticated"


class PermissionDenied(VaultServiceError):
    reason = "permission_denied"


class NotFound(VaultServiceError):
    reason = "not_found"


class Erased(VaultServiceError):
    """The record was crypto-shredded: its data keys are gone, its values are unrecoverable."""

    reason = "erased"


class ConsentRequired(VaultServiceError):
    """The purpose needs the customer's consent and the record does not carry it."""

    reason = "consent_required"


class Conflict(VaultServiceError):
    """Optimistic concurrency failed (stale ``expected_version``, or a concurrent writer)."""

    reason = "version_mismatch"


class DecryptionFailed(VaultServiceError):
    """A ciphertext or wrapped key did not authenticate. Deliberately carries no detail."""

    reason = "decryption_failed"

    def __init__(self) -> None:
        super().__init__("decryption failed")


class ResourceExhausted(VaultServiceError):
    reason = "resource_exhausted"


class DeadlineExceeded(VaultServiceError):
    """The call's deadline passed before its work was done; nothing was written."""

    reason = "deadline_exceeded"


class Cancelled(VaultServiceError):
    """The caller cancelled the call (or the server is stopping); nothing was written."""

    reason = "cancelled"


class Unavailable(VaultServiceError):
    """A dependency is down or overloaded; retrying later may succeed. Nothing was written."""

    reason = "unavailable"
    retryable = True


class KeyServerUnavailable(Unavailable):
    """OpenBao/Vault could not be reached, was sealed, or kept answering 412/429/5xx."""

    reason = "key_server_unavailable"


class KeyServerTlsError(KeyServerUnavailable):
    """The key server's TLS certificate is not trusted: a setting to fix (``[openbao]
    ca_cert``), not an outage to wait out, so it is not retried."""

    reason = "key_server_tls_error"


class KeyServerRefused(VaultServiceError):
    """OpenBao/Vault answered and refused the request: a configuration problem, not an outage.

    Kept apart from :class:`KeyServerUnavailable`: retrying a refusal never helps and an
    operator must be told it is a configuration problem. Its two kinds say which one.
    """

    reason = "key_server_refused"


class KeyServerPermissionDenied(KeyServerRefused):
    """OpenBao/Vault refused the credential or the path (401/403)."""

    reason = "key_server_permission_denied"


class KeyServerRejected(KeyServerRefused):
    """OpenBao/Vault refused the request itself (400, 404, other 4xx): a missing key, or a
    setting it will not accept. The message carries the key server's own words, which name
    paths and settings, never a value."""

    reason = "key_server_rejected"


class DatabaseUnavailable(Unavailable):
    reason = "database_unavailable"


class ConfigError(VaultServiceError):
    """Configuration, schema or policy file is invalid; raised at construction, names the file."""

    reason = "config_error"
