"""Operator-only key-server setup (``cvault keys init``): transit, field keys, policies, AppRole.

These run with an admin token (see ``deploy/openbao/admin-policy.hcl``), never with the
service's runtime credentials, which cannot create keys at all.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from vault.errors import ConfigError, DecryptionFailed, KeyServerUnavailable
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
    if not _MOUNT_RE.fullmatch(mount):
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
        KeyServerUnavailable, KeyServerRefused: the key server is down or the admin
            token may not do this.
    """
    if not _NAME_RE.fullmatch(key_prefix):
        raise ConfigError(f"invalid key_prefix {key_prefix!r}")
    mount = _check_mount(mount)
    names: list[str] = []
    for cls in [*field_classes, *extra_keys]:
        if not _NAME_RE.fullmatch(cls):
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
        KeyServerRefused: the token may not write policies, or the HCL is invalid.
        KeyServerUnavailable: the key server is down.
    """
    if not _NAME_RE.fullmatch(name):
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
        ConfigError, KeyServerRefused, KeyServerUnavailable: as for :func:`write_policy`.
    """
    if not _NAME_RE.fullmatch(role_name):
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
    #: version -> when it was made (Unix seconds), as the key server reports it
    created: Mapping[int, float] = field(default_factory=dict)


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
        KeyServerUnavailable, KeyServerRefused: as for every admin call.
    """
    with FieldKeyAdmin(
        url, admin_token, key_prefix=key_prefix, mount=mount, verify=verify, timeout=timeout
    ) as admin:
        return {name: info for name in names if (info := admin.info(name, missing_ok=True))}


def _created(versions: object) -> dict[int, float]:
    """Transit's ``keys``: version -> creation time (Unix seconds for symmetric keys)."""
    out: dict[int, float] = {}
    if isinstance(versions, Mapping):
        for v, t in versions.items():
            if isinstance(t, int | float) and str(v).isdigit():
                out[int(v)] = float(t)
    return out


def wrapped_version(wrapped: str) -> int | None:
    """The field-key version a stored wrapped key (``cvk2:vault:vN:...`` or ``vault:vN:...``)
    was wrapped under (None if it is neither)."""
    prefix, _, rest = wrapped.removeprefix("cvk2:").partition(":v")
    if prefix != "vault" or not rest:
        return None
    number, sep, _ = rest.partition(":")
    return int(number) if sep and number.isdigit() else None


#: items per rewrap / decrypt / encrypt call: OpenBao refuses bodies of more than 1,000 JSON
#: strings; an item with associated data costs 4
ADMIN_BATCH = 200


class FieldKeyAdmin:
    """Operator session for field-key rotation: rotate, rewrap, retire (min_decryption_version)
    and trim. The keys it rewraps never appear in plaintext here, except when converting keys
    wrapped in the earlier associated-data format (``rebind_legacy``), which transit cannot
    rewrap. Use as a context manager."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        *,
        key_prefix: str,
        mount: str = "transit",
        verify: bool | str = True,
        timeout: float = 30.0,
    ) -> None:
        if not _NAME_RE.fullmatch(key_prefix):
            raise ConfigError(f"invalid key_prefix {key_prefix!r}")
        self._prefix = key_prefix
        self._mount = _check_mount(mount)
        self._admin = _Admin(url, admin_token, verify=verify, timeout=timeout)

    def __enter__(self) -> FieldKeyAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FieldKeyAdmin(prefix={self._prefix!r})"

    def close(self) -> None:
        self._admin.close()

    def _key(self, name: str) -> str:
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"invalid field class {name!r}")
        return f"{self._prefix}-{name}"

    @overload
    def info(self, name: str) -> FieldKeyInfo: ...

    @overload
    def info(self, name: str, *, missing_ok: Literal[True]) -> FieldKeyInfo | None: ...

    def info(self, name: str, *, missing_ok: bool = False) -> FieldKeyInfo | None:
        """What the key server says of the key. A missing key raises ConfigError, or gives
        None with ``missing_ok``."""
        key = self._key(name)
        status, body = self._admin.call("GET", f"{self._mount}/keys/{key}", accept=(404,))
        if status == 404:
            if missing_ok:
                return None
            raise ConfigError(f"no transit key {key}")
        data = _data(body)
        versions = data.get("keys")
        return FieldKeyInfo(
            name=key,
            latest_version=int(data.get("latest_version", 0)),
            min_decryption_version=int(data.get("min_decryption_version", 1)),
            min_encryption_version=int(data.get("min_encryption_version", 0)),
            versions=tuple(sorted(int(v) for v in versions))
            if isinstance(versions, Mapping)
            else (),
            created=_created(versions),
        )

    def rotate(self, name: str) -> int:
        """A new version of the field key; returns it."""
        self._admin.call("POST", f"{self._mount}/keys/{self._key(name)}/rotate")
        return self.info(name).latest_version

    def rewrap(self, name: str, ciphertexts: Sequence[str]) -> list[str]:
        """Each ``vault:vN:...`` ciphertext re-encrypted under the newest version, in order, by
        the key server (the plaintext never leaves it).

        Raises:
            DecryptionFailed: an item did not authenticate (associated-data format, or tampered).
        """
        out: list[str] = []
        key = self._key(name)
        for i in range(0, len(ciphertexts), ADMIN_BATCH):
            chunk = ciphertexts[i : i + ADMIN_BATCH]
            _, body = self._admin.call(
                "POST",
                f"{self._mount}/rewrap/{key}",
                {"batch_input": [{"ciphertext": c} for c in chunk]},
            )
            out += _batch_field(body, "ciphertext", len(chunk))
        return out

    def rebind_legacy(self, name: str, items: Sequence[tuple[str, bytes]]) -> list[str]:
        """Keys wrapped with their binding as associated data (``(ciphertext, binding)``),
        re-wrapped in the bound format under the newest version: decrypt and encrypt, so their
        plaintext passes through this (operator) process once.

        Returns: the stored forms (``cvk2:vault:vN:...``), in order.
        """
        from vault.keys._manager import BOUND_PREFIX, bind

        out: list[str] = []
        key = self._key(name)
        for i in range(0, len(items), ADMIN_BATCH):
            chunk = items[i : i + ADMIN_BATCH]
            _, body = self._admin.call(
                "POST",
                f"{self._mount}/decrypt/{key}",
                {
                    "batch_input": [
                        {"ciphertext": c, "associated_data": _b64(aad)} for c, aad in chunk
                    ]
                },
            )
            plain = [base64.b64decode(p) for p in _batch_field(body, "plaintext", len(chunk))]
            _, body = self._admin.call(
                "POST",
                f"{self._mount}/encrypt/{key}",
                {
                    "batch_input": [
                        {"plaintext": _b64(bind(k, aad))}
                        for k, (_, aad) in zip(plain, chunk, strict=True)
                    ]
                },
            )
            out += [BOUND_PREFIX + c for c in _batch_field(body, "ciphertext", len(chunk))]
        return out

    def rewrap_stored(
        self, field_class: str, stored: Sequence[tuple[str, bytes]]
    ) -> tuple[list[str], int]:
        """Stored wrapped keys (tenant, index or audit keys, each ``(wrapped, binding)``)
        re-wrapped under the newest version: bound ones by :meth:`rewrap`, legacy ones by
        :meth:`rebind_legacy`. So callers need not know the stored formats.

        Returns: the new stored forms, in order, and how many were in the legacy format.
        """
        from vault.keys._manager import BOUND_PREFIX, transit_ciphertext

        bound = [i for i, (w, _) in enumerate(stored) if w.startswith(BOUND_PREFIX)]
        legacy = [i for i, (w, _) in enumerate(stored) if not w.startswith(BOUND_PREFIX)]
        out = [""] * len(stored)
        if bound:
            new = self.rewrap(field_class, [transit_ciphertext(stored[i][0]) for i in bound])
            for i, c in zip(bound, new, strict=True):
                out[i] = BOUND_PREFIX + c
        if legacy:
            new = self.rebind_legacy(field_class, [stored[i] for i in legacy])
            for i, c in zip(legacy, new, strict=True):
                out[i] = c
        return out, len(legacy)

    def set_min_decryption_version(self, name: str, version: int) -> None:
        """Forbid decrypting under versions below ``version``.

        The key server refuses a decryption floor above a non-zero ``min_encryption_version``
        (left by an earlier :meth:`trim`), so that one is raised with it in the same request:
        both stay consistent cycle after cycle (0 means "the newest", which needs no raise).
        """
        body: dict[str, int] = {"min_decryption_version": version}
        current = self.info(name).min_encryption_version
        if 0 < current < version:
            body["min_encryption_version"] = version
        self._admin.call("POST", f"{self._mount}/keys/{self._key(name)}/config", body)

    def trim(self, name: str, min_available_version: int) -> None:
        """Delete every version below ``min_available_version`` from the key server. The key
        server wants ``min_encryption_version`` at least that high first (new ciphertexts still
        use the newest version: this only forbids encrypting under older ones); a higher one
        is kept."""
        if self.info(name).min_encryption_version < min_available_version:
            self._admin.call(
                "POST",
                f"{self._mount}/keys/{self._key(name)}/config",
                {"min_encryption_version": min_available_version},
            )
        self._admin.call(
            "POST",
            f"{self._mount}/keys/{self._key(name)}/trim",
            {"min_available_version": min_available_version},
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _batch_field(body: Mapping[str, Any], name: str, expected: int) -> list[str]:
    results = _data(body).get("batch_results")
    if not isinstance(results, list) or len(results) != expected:
        raise KeyServerUnavailable("key server answered a batch with the wrong number of results")
    out: list[str] = []
    for r in results:
        value = r.get(name) if isinstance(r, Mapping) else None
        if not isinstance(value, str) or not value or (isinstance(r, Mapping) and r.get("error")):
            # the key server's error text is not relayed: it can quote input
            raise DecryptionFailed()
        out.append(value)
    return out
