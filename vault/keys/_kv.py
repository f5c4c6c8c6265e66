"""Write-once documents in OpenBao/Vault KV v2: where the audit chain is checkpointed.

Layout under the mount: document ``<name>`` of chain ``<chain>`` is the secret
``<path>/<chain>/<name>``; the secret ``<path>`` itself is the one document that versions before
write-once checkpoints overwrote (only read now).

Write-once comes from two places. Each write carries ``cas=0`` ("only if the secret does not
exist"), so this client never replaces a document, whatever its policy. And the runtime policy
(``deploy/openbao/runtime-policy.hcl``) grants ``create`` and ``read`` on ``<mount>/data/<path>/*``
and ``list`` on ``<mount>/metadata/<path>/*``, nothing else: KV v2 treats a write to a secret
that exists (its metadata exists, even with every version deleted) as ``update``, so a holder of
that credential cannot overwrite, patch, delete, destroy or expire a document either.

Goes through the same transport as transit (hvac's adapter, per-request token, bounded retries
with jitter inside the caller's deadline), so outages and refusals come out as the same two
classes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vault.deadline import Deadline
from vault.errors import (
    ConfigError,
    KeyServerPermissionDenied,
    KeyServerRefused,
    KeyServerRejected,
)
from vault.keys._auth import KeyServerAuth, KeyServerResponse, TokenRejected
from vault.keys._transit import _MOUNT_RE, HttpTransport, RetryPolicy, _validate_url

_PATH_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
# a chain or document name is one path segment
_SEGMENT_RE = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9_.-]{1,64}")
_CAS_MISMATCH = "check-and-set"


class KvCheckpointStore:
    """Write-once string documents in KV v2, one folder per chain, under a path prefix.

    Satisfies ``vault.audit.CheckpointStore``. Thread-safe; construction makes no network call.

    Args:
        url: the key server, e.g. ``https://openbao:8200``.
        auth: the service's credential (token or AppRole), shared with the transit wrapper.
        mount: the KV v2 mount (dev servers have one at ``secret``).
        path: the prefix under the mount (the ``[audit] kv_path`` setting); every chain's
            documents go under it, and the legacy document is the secret at it.
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
        if not _PATH_RE.fullmatch(path) or {".", ".."} & set(path.split("/")):
            raise ConfigError(f"invalid KV path {path!r:.80}")
        if not timeout > 0 or max_attempts < 1:
            raise ConfigError("KV timeout and max_attempts must be positive")
        self._url = _validate_url(url)
        self._auth = auth
        self._mount = mount
        self._path = path
        self._legacy_path = f"{mount}/data/{path}"
        self._transport = HttpTransport(
            self._url, policy=RetryPolicy(max_attempts=max_attempts, timeout=timeout), verify=verify
        )

    def __repr__(self) -> str:
        return f"KvCheckpointStore(url={self._url!r}, path={self._legacy_path!r})"

    def create(self, chain: str, name: str, data: Mapping[str, str], *, deadline: Deadline) -> bool:
        """Write ``data`` as ``<path>/<chain>/<name>`` unless that secret exists (``cas=0``).

        Returns:
            True when written; False when the secret exists (then it is left unchanged).

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not create (or read) this path.
            KeyServerRejected: the key server refused the write for another reason.
        """
        path = self._data(chain, name)
        body = {"options": {"cas": 0}, "data": {str(k): str(v) for k, v in data.items()}}
        try:
            response = self._request("POST", path, body, deadline, accept=(400,))
        except KeyServerPermissionDenied:
            # Under a create-only policy, a write to an existing secret is a forbidden update.
            if self._exists(path, deadline):
                return False
            raise
        if response.status == 400:
            if not any(_CAS_MISMATCH in str(e) for e in response.body.get("errors") or ()):
                raise KeyServerRejected(f"key server rejected the write to {path}")
            return False
        return True

    def read(self, chain: str, name: str, *, deadline: Deadline) -> dict[str, str] | None:
        """The document ``<path>/<chain>/<name>``; None when absent or deleted.

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not read this path.
        """
        return self._read(self._data(chain, name), deadline)

    def names(self, chain: str, *, deadline: Deadline) -> list[str]:
        """The documents of ``chain`` (one ``LIST`` on its metadata folder).

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not list this path.
        """
        _check_segment(chain)
        return [k for k in self._list(f"{self._path}/{chain}", deadline) if not k.endswith("/")]

    def chains(self, *, deadline: Deadline) -> list[str]:
        """The chains with a folder under the prefix (one ``LIST``).

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not list this path.
        """
        return [k[:-1] for k in self._list(self._path, deadline) if k.endswith("/")]

    def legacy(self, *, deadline: Deadline) -> dict[str, str] | None:
        """The secret at the prefix itself: the one document earlier versions overwrote.

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
            KeyServerPermissionDenied: the credential may not read this path.
        """
        return self._read(self._legacy_path, deadline)

    def rewritable(self, chain: str, *, deadline: Deadline) -> bool:
        """True when this credential may overwrite, patch, delete, destroy or expire ``chain``'s
        documents, i.e. its policy is not the write-once runtime policy (one
        ``sys/capabilities-self`` call, which the built-in ``default`` policy allows). False
        when it may not, or when the key server will not say.

        Raises:
            KeyServerUnavailable: the key server could not be reached in time (retryable).
        """
        _check_segment(chain)
        probe = f"{self._path}/{chain}/0"
        forbidden = {
            f"{self._mount}/data/{probe}": {"update", "patch", "delete"},
            f"{self._mount}/delete/{probe}": {"create", "update"},
            f"{self._mount}/destroy/{probe}": {"create", "update"},
            f"{self._mount}/metadata/{probe}": {"create", "update", "patch", "delete"},
        }
        try:
            answer = self._request(
                "POST", "sys/capabilities-self", {"paths": list(forbidden)}, deadline
            )
        except KeyServerRefused:
            return False
        for path, rewrites in forbidden.items():
            granted = answer.data().get(path) or answer.body.get(path) or ()
            if set(granted) & (rewrites | {"root", "sudo"}):
                return True
        return False

    def healthy(self) -> bool:
        """True when the key server answers ``sys/health`` as unsealed. Never raises."""
        health = self._transport.health(1.0)
        return health is not None and health.get("sealed") is False

    def close(self) -> None:
        self._transport.close()

    def _data(self, chain: str, name: str) -> str:
        _check_segment(chain)
        _check_segment(name)
        return f"{self._mount}/data/{self._path}/{chain}/{name}"

    def _read(self, path: str, deadline: Deadline) -> dict[str, str] | None:
        response = self._request("GET", path, None, deadline, accept=(404,))
        if response.status == 404:
            return None
        inner = response.data().get("data")
        if not isinstance(inner, Mapping):
            return None
        return {str(k): v for k, v in inner.items() if isinstance(v, str)}

    def _exists(self, path: str, deadline: Deadline) -> bool:
        return self._request("GET", path, None, deadline, accept=(404,)).status != 404

    def _list(self, folder: str, deadline: Deadline) -> list[str]:
        path = f"{self._mount}/metadata/{folder}/"
        response = self._request("LIST", path, None, deadline, accept=(404,))
        keys = response.data().get("keys") if response.status != 404 else None
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        deadline: Deadline,
        *,
        accept: tuple[int, ...] = (),
    ) -> KeyServerResponse:
        try:
            token = self._auth.token(self._transport, deadline)
            try:
                return self._transport.request(
                    method,
                    path,
                    token=token,
                    body=body,
                    deadline=deadline,
                    subject=path,
                    accept=accept,
                )
            except TokenRejected:
                if not self._auth.token_rejected(self._transport, token, deadline):
                    raise
            token = self._auth.token(self._transport, deadline)
            return self._transport.request(
                method,
                path,
                token=token,
                body=body,
                deadline=deadline,
                subject=path,
                accept=accept,
            )
        except TokenRejected as exc:
            # Callers see one refusal class; TokenRejected is a transport detail.
            raise KeyServerPermissionDenied(exc.message) from None


def _check_segment(segment: str) -> None:
    if not _SEGMENT_RE.fullmatch(segment):
        raise ValueError(f"not a KV path segment: {segment!r:.40}")
