"""A small document in OpenBao/Vault KV v2: where the audit chain head is checkpointed.

Goes through the same transport as transit (hvac's adapter, per-request token, bounded retries
with jitter inside the caller's deadline), so outages and refusals come out as the same two
classes. The runtime policy must grant ``create``, ``update`` and ``read`` on
``<mount>/data/<path>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vault.deadline import Deadline
from vault.errors import ConfigError, KeyServerPermissionDenied
from vault.keys._auth import KeyServerAuth, KeyServerResponse, TokenRejected
from vault.keys._transit import _MOUNT_RE, HttpTransport, RetryPolicy, _validate_url

_PATH_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


class KvCheckpointStore:
    """Reads and replaces one KV v2 secret of string values (``put`` / ``get``).

    Satisfies ``vault.audit.CheckpointStore``. Thread-safe; construction makes no network call.

    Args:
        url: the key server, e.g. ``https://openbao:8200``.
        auth: the service's credential (token or AppRole), shared with the transit wrapper.
        mount: the KV v2 mount (dev servers have one at ``secret``).
        path: the secret's path under the mount; use one path per audit chain.
    """

    def __init__(
        self,
        url: str,
        auth: KeyServerAuth,
        *,
        mount: str = "secret",
        path: str = "cvault/audit/head",
        verify: bool | str = True,
        timeout: float = 5.0,
        max_attempts: int = 5,
    ) -> None:
        mount, path = mount.strip("/"), path.strip("/")
        if not _MOUNT_RE.fullmatch(mount):
            raise ConfigError(f"invalid KV mount {mount!r:.80}")
        if not _PATH_RE.fullmatch(path) or ".." in path.split("/"):
            raise ConfigError(f"invalid KV path {path!r:.80}")
        if not timeout > 0 or max_attempts < 1:
            raise ConfigError("KV timeout and max_attempts must be positive")
        self._url = _validate_url(url)
        self._auth = auth
        self._data_path = f"{mount}/data/{path}"
        self._transport = HttpTransport(
            self._url, policy=RetryPolicy(max_attempts=max_attempts, timeout=timeout), verify=verify
        )

    def __repr__(self) -> str:
        return f"KvCheckpointStore(url={self._url!r}, path={self._data_path!r})"

    def put(self, data: Mapping[str, str], *, deadline: Deadline) -> None:
        """Write ``data`` as a new version of the secret.

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not write this path.
        """
        body = {"data": {str(k): str(v) for k, v in data.items()}}
        self._request("POST", body, deadline)

    def get(self, *, deadline: Deadline) -> dict[str, str] | None:
        """The secret's newest version, or None when it was never written (or was deleted).

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not read this path.
        """
        response = self._request("GET", None, deadline, accept=(404,))
        if response.status == 404:
            return None
        inner = response.data().get("data")
        if not isinstance(inner, Mapping):
            return None
        return {str(k): v for k, v in inner.items() if isinstance(v, str)}

    def healthy(self) -> bool:
        """True when the key server answers ``sys/health`` as unsealed. Never raises."""
        health = self._transport.health(1.0)
        return health is not None and health.get("sealed") is False

    def close(self) -> None:
        self._transport.close()

    def _request(
        self,
        method: str,
        body: Mapping[str, Any] | None,
        deadline: Deadline,
        *,
        accept: tuple[int, ...] = (),
    ) -> KeyServerResponse:
        subject = self._data_path
        try:
            token = self._auth.token(self._transport, deadline)
            try:
                return self._transport.request(
                    method,
                    subject,
                    token=token,
                    body=body,
                    deadline=deadline,
                    subject=subject,
                    accept=accept,
                )
            except TokenRejected:
                if not self._auth.token_rejected(self._transport, token, deadline):
                    raise
            token = self._auth.token(self._transport, deadline)
            return self._transport.request(
                method,
                subject,
                token=token,
                body=body,
                deadline=deadline,
                subject=subject,
                accept=accept,
            )
        except TokenRejected as exc:
            # Callers see one refusal class; TokenRejected is a transport detail.
            raise KeyServerPermissionDenied(exc.message) from None
