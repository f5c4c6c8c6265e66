"""Operator-only key-server setup (``cvault keys init``): transit, field keys, policies, AppRole.

These run with an admin token (see ``deploy/openbao/admin-policy.hcl``), never with the
service's runtime credentials, which cannot create keys at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vault.errors import ConfigError
from vault.keys._transit import _MOUNT_RE, _NAME_RE, HttpTransport, RetryPolicy, _validate_url

log = logging.getLogger("vault.keys")

#: the only key type the vault creates or accepts for field keys
FIELD_KEY_TYPE = "aes256-gcm96"


class _Admin:
    """A root/admin-token session for the helpers below."""

    def __init__(self, url: str, admin_token: str, *, verify: bool | str, timeout: float) -> None:
        if not admin_token:
            raise ConfigError("admin token is empty")
        self._token = admin_token
        self._transport = HttpTransport(
            _validate_url(url), policy=RetryPolicy(max_attempts=3, timeout=timeout), verify=verify
        )

    def __repr__(self) -> str:
        return "_Admin(token=<redacted>)"

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        accept: Sequence[int] = (),
    ) -> tuple[int, Mapping[str, Any]]:
        response = self._transport.request(
            method, path, token=self._token, body=body, subject=path, accept=accept
        )
        return response.status, response.body

    def close(self) -> None:
        self._transport.close()


def _check_mount(mount: str) -> str:
    mount = mount.strip("/")
    if not _MOUNT_RE.match(mount):
        raise ConfigError(f"invalid mount path {mount!r}")
    return mount


def _data(body: Mapping[str, Any]) -> Mapping[str, Any]:
    data = body.get("data")
    return data if isinstance(data, Mapping) else {}


def _ensure_mount(admin: _Admin, mount: str, engine: str, *, kind: str) -> None:
    """Enable ``engine`` at ``mount`` unless it is there; refuse a different engine there."""
    # sys/mounts/<path> (secrets) answers 400 when nothing is mounted; sys/auth is a listing.
    if kind == "secret":
        status, body = admin.call("GET", f"sys/mounts/{mount}", accept=(400, 404))
        existing = _data(body).get("type") if status == 200 else None
        create_path = f"sys/mounts/{mount}"
    else:
        _, body = admin.call("GET", "sys/auth")
        entry = _data(body).get(f"{mount}/") or body.get(f"{mount}/")
        existing = entry.get("type") if isinstance(entry, Mapping) else None
        create_path = f"sys/auth/{mount}"
    if existing is None:
        admin.call("POST", create_path, {"type": engine})
        log.info("enabled %s at %s/", engine, mount)
    elif existing != engine:
        raise ConfigError(f"{mount}/ is a {existing!r} mount, expected {engine!r}")


def init_field_keys(
    url: str,
    admin_token: str,
    *,
    key_prefix: str,
    field_classes: Sequence[str],
    mount: str = "transit",
    extra_keys: Sequence[str] = ("audit",),
    verify: bool | str = True,
    timeout: float = 10.0,
) -> list[str]:
    """Enable transit at ``mount`` if missing and create every ``<key_prefix>-<class>`` key.

    New keys are ``aes256-gcm96``, not exportable, deletion not allowed (the default), no
    plaintext backup. Existing keys are left as they are but checked. Idempotent.

    Returns:
        The key names for ``field_classes`` then ``extra_keys``, in that order, without repeats.

    Raises:
        ConfigError: a name is invalid, the mount holds another engine, or an existing key has
            another type or is exportable / backup-able (its material could leave the server).
        KeyServerUnavailable, KeyServerPermissionDenied: the key server is down or the admin
            token may not do this.
    """
    if not _NAME_RE.match(key_prefix):
        raise ConfigError(f"invalid key_prefix {key_prefix!r}")
    mount = _check_mount(mount)
    names: list[str] = []
    for cls in [*field_classes, *extra_keys]:
        if not _NAME_RE.match(cls):
            raise ConfigError(f"invalid field class {cls!r}")
        name = f"{key_prefix}-{cls}"
        if name not in names:
            names.append(name)
    admin = _Admin(url, admin_token, verify=verify, timeout=timeout)
    try:
        _ensure_mount(admin, mount, "transit", kind="secret")
        for name in names:
            status, body = admin.call("GET", f"{mount}/keys/{name}", accept=(404,))
            if status == 404:
                admin.call(
                    "POST",
                    f"{mount}/keys/{name}",
                    {"type": FIELD_KEY_TYPE, "exportable": False, "allow_plaintext_backup": False},
                )
                log.info("created transit key %s/%s", mount, name)
                continue
            key = _data(body)
            if key.get("type") != FIELD_KEY_TYPE:
                raise ConfigError(
                    f"transit key {name} has type {key.get('type')!r}, expected {FIELD_KEY_TYPE}"
                )
            if key.get("exportable") is not False or key.get("allow_plaintext_backup") is True:
                raise ConfigError(
                    f"transit key {name} is exportable or allows plaintext backup: "
                    "its material can leave the key server"
                )
            if key.get("deletion_allowed") is True:
                log.warning("transit key %s/%s allows deletion", mount, name)
    finally:
        admin.close()
    return names


def write_policy(
    url: str,
    admin_token: str,
    name: str,
    hcl_text: str,
    *,
    verify: bool | str = True,
    timeout: float = 10.0,
) -> None:
    """Create or replace the ACL policy ``name`` (e.g. from ``deploy/openbao/*.hcl``).

    Raises:
        ConfigError: invalid name or empty policy.
        KeyServerPermissionDenied: the token may not write policies or the HCL is invalid.
        KeyServerUnavailable: the key server is down.
    """
    if not _NAME_RE.match(name):
        raise ConfigError(f"invalid policy name {name!r}")
    if not hcl_text.strip():
        raise ConfigError(f"policy {name} is empty")
    admin = _Admin(url, admin_token, verify=verify, timeout=timeout)
    try:
        admin.call("PUT", f"sys/policies/acl/{name}", {"policy": hcl_text})
    finally:
        admin.close()
    log.info("wrote key-server policy %s", name)


def setup_approle(
    url: str,
    admin_token: str,
    *,
    role_name: str,
    policies: Sequence[str],
    token_ttl: int | str,
    token_max_ttl: int | str,
    mount: str = "approle",
    verify: bool | str = True,
    timeout: float = 10.0,
) -> tuple[str, str]:
    """Enable AppRole at ``mount`` if missing, create/update ``role_name``, issue a secret id.

    The role's tokens get ``policies`` plus ``default`` (which grants ``renew-self`` and
    ``lookup-self``, used by :class:`vault.keys.AppRoleAuth`). TTLs are seconds or duration
    strings such as ``"1h"``.

    Returns:
        ``(role_id, secret_id)``. The secret id is a credential: do not log it.

    Raises:
        ConfigError, KeyServerPermissionDenied, KeyServerUnavailable: as for :func:`write_policy`.
    """
    if not _NAME_RE.match(role_name):
        raise ConfigError(f"invalid role name {role_name!r}")
    mount = _check_mount(mount)
    admin = _Admin(url, admin_token, verify=verify, timeout=timeout)
    try:
        _ensure_mount(admin, mount, "approle", kind="auth")
        role = f"auth/{mount}/role/{role_name}"
        admin.call(
            "POST",
            role,
            {
                "token_policies": list(policies),
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            },
        )
        _, body = admin.call("GET", f"{role}/role-id")
        role_id = _data(body).get("role_id")
        _, body = admin.call("POST", f"{role}/secret-id")
        secret_id = _data(body).get("secret_id")
    finally:
        admin.close()
    if not isinstance(role_id, str) or not isinstance(secret_id, str):
        raise ConfigError(f"key server returned no role_id/secret_id for {role_name}")
    log.info("configured AppRole role %s", role_name)
    return role_id, secret_id


def ensure_kv_v2(
    url: str,
    admin_token: str,
    *,
    mount: str = "secret",
    verify: bool | str = True,
    timeout: float = 10.0,
) -> None:
    """Enable a KV version 2 engine at ``mount`` unless one is there (the audit log keeps its
    chain-head checkpoints in it). ``bao server -dev`` has one at ``secret/``; a real server
    does not.

    Raises:
        ConfigError: something other than KV is mounted there.
    """
    admin = _Admin(url, admin_token, verify=verify, timeout=timeout)
    try:
        mount = _check_mount(mount)
        status, body = admin.call("GET", f"sys/mounts/{mount}", accept=(400, 404))
        existing = _data(body).get("type") if status == 200 else None
        if existing is None:
            admin.call("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})
            log.info("enabled kv (version 2) at %s/", mount)
        elif existing != "kv":
            raise ConfigError(f"{mount}/ is a {existing!r} mount, expected 'kv'")
    finally:
        admin.close()


@dataclass(frozen=True, slots=True)
class FieldKeyInfo:
    """What the key server says of one transit field key (no key material)."""

    name: str
    latest_version: int
    min_decryption_version: int
    min_encryption_version: int
    #: versions the key server still holds (after a trim, older ones are gone)
    versions: tuple[int, ...]


def field_key_info(
    url: str,
    admin_token: str,
    *,
    key_prefix: str,
    names: Sequence[str],
    mount: str = "transit",
    verify: bool | str = True,
    timeout: float = 10.0,
) -> dict[str, FieldKeyInfo]:
    """Versions and decryption floor of ``<key_prefix>-<name>`` for each name (a field class
    or ``audit``); names without a key are left out.

    Raises:
        ConfigError: a name or the mount is invalid.
        KeyServerUnavailable, KeyServerPermissionDenied: as for every admin call.
    """
    if not _NAME_RE.match(key_prefix):
        raise ConfigError(f"invalid key_prefix {key_prefix!r}")
    mount = _check_mount(mount)
    admin = _Admin(url, admin_token, verify=verify, timeout=timeout)
    out: dict[str, FieldKeyInfo] = {}
    try:
        for name in names:
            if not _NAME_RE.match(name):
                raise ConfigError(f"invalid field class {name!r}")
            key_name = f"{key_prefix}-{name}"
            status, body = admin.call("GET", f"{mount}/keys/{key_name}", accept=(404,))
            if status == 404:
                continue
            data = _data(body)
            versions = data.get("keys")
            out[name] = FieldKeyInfo(
                name=key_name,
                latest_version=int(data.get("latest_version", 0)),
                min_decryption_version=int(data.get("min_decryption_version", 1)),
                min_encryption_version=int(data.get("min_encryption_version", 0)),
                versions=tuple(sorted(int(v) for v in versions))
                if isinstance(versions, Mapping)
                else (),
            )
    finally:
        admin.close()
    return out


def wrapped_version(wrapped: str) -> int | None:
    """The field-key version a stored wrapped key (``cvk2:vault:vN:...`` or ``vault:vN:...``)
    was wrapped under (None if it is neither)."""
    prefix, _, rest = wrapped.removeprefix("cvk2:").partition(":v")
    if prefix != "vault" or not rest:
        return None
    number, sep, _ = rest.partition(":")
    return int(number) if sep and number.isdigit() else None
