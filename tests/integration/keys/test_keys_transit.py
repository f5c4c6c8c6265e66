"""TransitKeyWrapper against a real OpenBao: round trips, refusals, batching, outages, renewal."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support import FIELD_CLASSES as CLASSES_OF_RECORDS
from tests.support import KEY_PREFIX
from vault.deadline import Deadline
from vault.errors import (
    ConfigError,
    DecryptionFailed,
    KeyServerPermissionDenied,
    KeyServerRejected,
    KeyServerUnavailable,
)
from vault.keys import (
    AppRoleAuth,
    TokenAuth,
    TransitKeyWrapper,
    UnwrapItem,
    WrapItem,
    init_field_keys,
    setup_approle,
    write_policy,
)
from vault.keys.openbao_dev import OpenBaoDevServer

# the suite's field classes plus the audit log's own key class
FIELD_CLASSES = (*CLASSES_OF_RECORDS, "audit")
AuditSince = Callable[..., list[str]]
# other test sessions may share these 2 cores: generous, but far below "waits for timeout=5"
SLACK = 1.0

pytestmark = pytest.mark.openbao


def root_get(openbao: OpenBaoDevServer, path: str, method: str = "GET") -> requests.Response:
    return requests.request(
        method,
        f"{openbao.url}/v1/{path}",
        headers={"X-Vault-Token": openbao.root_token},
        timeout=5,
    )


def transit_keys(openbao: OpenBaoDevServer) -> list[str]:
    return list(root_get(openbao, "transit/keys", "LIST").json()["data"]["keys"])


def items(n: int, aad_prefix: bytes = b"tenant-1/") -> list[WrapItem]:
    return [WrapItem(bytes([i % 251]) * 32, aad_prefix + str(i).encode()) for i in range(n)]


def tamper(wrapped: str) -> str:
    prefix, body = wrapped.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[len(raw) // 2] ^= 0x01
    return f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"


class TestRoundTrip:
    @pytest.mark.parametrize("field_class", FIELD_CLASSES)
    def test_round_trip_with_associated_data(
        self, root_wrapper: TransitKeyWrapper, field_class: str
    ) -> None:
        keys = [*items(3), WrapItem(b"\x00" * 32)]  # the last one without associated data
        wrapped = root_wrapper.wrap(field_class, keys)
        assert all(w.startswith("vault:v1:") for w in wrapped)
        unwrapped = root_wrapper.unwrap(
            field_class,
            [UnwrapItem(w, k.associated_data) for w, k in zip(wrapped, keys, strict=True)],
        )
        assert unwrapped == [k.plaintext for k in keys]

    def test_wrong_associated_data_fails(self, root_wrapper: TransitKeyWrapper) -> None:
        [w] = root_wrapper.wrap("email", [WrapItem(b"k" * 32, b"tenant-a")])
        for aad in (b"tenant-b", b""):
            with pytest.raises(DecryptionFailed):
                root_wrapper.unwrap("email", [UnwrapItem(w, aad)])

    def test_one_bad_item_in_a_batch_fails_the_batch(self, root_wrapper: TransitKeyWrapper) -> None:
        keys = items(3)
        wrapped = root_wrapper.wrap("email", keys)
        batch = [UnwrapItem(w, k.associated_data) for w, k in zip(wrapped, keys, strict=True)]
        batch[1] = UnwrapItem(wrapped[1], b"swapped")
        with pytest.raises(DecryptionFailed) as info:
            root_wrapper.unwrap("email", batch)
        assert info.value.message == "decryption failed"

    @pytest.mark.parametrize(
        "mangle",
        [
            pytest.param(tamper, id="flipped-bit"),
            pytest.param(lambda w: w[:-8], id="truncated"),
            pytest.param(lambda w: w.replace("vault:v1:", "vault:v9:"), id="future-version"),
            pytest.param(lambda w: "not a wrapped key", id="garbage"),
            pytest.param(lambda w: "", id="empty"),
        ],
    )
    def test_tampered_fails(
        self, root_wrapper: TransitKeyWrapper, mangle: Callable[[str], str]
    ) -> None:
        [w] = root_wrapper.wrap("email", [WrapItem(b"k" * 32, b"aad")])
        with pytest.raises(DecryptionFailed):
            root_wrapper.unwrap("email", [UnwrapItem(mangle(w), b"aad")])

    def test_key_of_another_class_fails(self, root_wrapper: TransitKeyWrapper) -> None:
        [w] = root_wrapper.wrap("email", [WrapItem(b"k" * 32, b"aad")])
        with pytest.raises(DecryptionFailed):
            root_wrapper.unwrap("phone", [UnwrapItem(w, b"aad")])


class TestBatching:
    def test_600_items_take_three_requests_each_way(
        self, root_wrapper: TransitKeyWrapper, audit: AuditSince
    ) -> None:
        keys = items(600)
        wrapped = root_wrapper.wrap("free_text", keys)
        assert audit("transit/") == ["transit/encrypt/cvault-free_text"] * 3
        unwrapped = root_wrapper.unwrap(
            "free_text",
            [UnwrapItem(w, k.associated_data) for w, k in zip(wrapped, keys, strict=True)],
        )
        assert unwrapped == [k.plaintext for k in keys]
        assert audit("transit/decrypt/") == ["transit/decrypt/cvault-free_text"] * 3

    def test_static_token_ttl_is_looked_up_once_only(
        self, openbao: OpenBaoDevServer, field_keys: list[str], audit: AuditSince
    ) -> None:
        wrapper = TransitKeyWrapper(
            openbao.url, TokenAuth(openbao.root_token), key_prefix=KEY_PREFIX
        )
        for _ in range(3):
            wrapper.wrap("email", items(2))
        wrapper.close()
        assert audit() == [
            "auth/token/lookup-self",
            *["transit/encrypt/cvault-email"] * 3,
        ]

    def test_concurrent_callers_share_one_wrapper(self, service_wrapper: TransitKeyWrapper) -> None:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for _ in range(5):
                    keys = items(20, aad_prefix=f"t{n}/".encode())
                    wrapped = service_wrapper.wrap("phone", keys)
                    batch = [
                        UnwrapItem(w, k.associated_data) for w, k in zip(wrapped, keys, strict=True)
                    ]
                    assert service_wrapper.unwrap("phone", batch) == [k.plaintext for k in keys]
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


class TestRuntimePolicy:
    def test_service_credentials_wrap_and_unwrap(self, service_wrapper: TransitKeyWrapper) -> None:
        keys = items(5)
        wrapped = service_wrapper.wrap("national_id", keys)
        batch = [UnwrapItem(w, k.associated_data) for w, k in zip(wrapped, keys, strict=True)]
        assert service_wrapper.unwrap("national_id", batch) == [k.plaintext for k in keys]

    def test_unknown_class_is_refused_and_creates_no_key(
        self, openbao: OpenBaoDevServer, service_wrapper: TransitKeyWrapper
    ) -> None:
        # 403: without "create" on the path a write to a missing key is a forbidden create
        with pytest.raises(KeyServerPermissionDenied) as info:
            service_wrapper.wrap("no_such_class", items(1))
        assert type(info.value) is KeyServerPermissionDenied
        # 400 "encryption key not found": rejected, not a permission refusal
        with pytest.raises(KeyServerRejected):
            service_wrapper.unwrap("no_such_class", [UnwrapItem("vault:v1:AAAA")])
        assert "cvault-no_such_class" not in transit_keys(openbao)

    def test_root_decrypt_of_a_missing_key_is_refused(
        self, root_wrapper: TransitKeyWrapper
    ) -> None:
        # 400 "encryption key not found": a refusal, not an outage
        with pytest.raises(KeyServerRejected):
            root_wrapper.unwrap("never_created", [UnwrapItem("vault:v1:AAAA")])

    def test_token_without_the_policy_is_refused(
        self, openbao: OpenBaoDevServer, field_keys: list[str]
    ) -> None:
        created = requests.post(
            f"{openbao.url}/v1/auth/token/create",
            headers={"X-Vault-Token": openbao.root_token},
            json={"policies": ["default"], "ttl": "5m"},
            timeout=5,
        ).json()
        wrapper = TransitKeyWrapper(
            openbao.url, TokenAuth(created["auth"]["client_token"]), key_prefix=KEY_PREFIX
        )
        with pytest.raises(KeyServerPermissionDenied):
            wrapper.wrap("email", items(1))
        with pytest.raises(KeyServerPermissionDenied):
            wrapper.unwrap("email", [UnwrapItem("vault:v1:AAAA")])
        wrapper.close()

    def test_invalid_token_is_refused(
        self, openbao: OpenBaoDevServer, field_keys: list[str]
    ) -> None:
        wrapper = TransitKeyWrapper(
            openbao.url, TokenAuth("s.not-a-real-token"), key_prefix=KEY_PREFIX
        )
        with pytest.raises(KeyServerPermissionDenied):
            wrapper.wrap("email", items(1))
        wrapper.close()

    def test_wrong_secret_id_is_refused(
        self, openbao: OpenBaoDevServer, approle_credentials: tuple[str, str]
    ) -> None:
        role_id, _ = approle_credentials
        wrapper = TransitKeyWrapper(
            openbao.url, AppRoleAuth(role_id, "wrong-secret-id"), key_prefix=KEY_PREFIX
        )
        with pytest.raises(KeyServerPermissionDenied):
            wrapper.wrap("email", items(1))
        wrapper.close()

    def test_runtime_policy_cannot_rotate_or_read_keys(
        self, openbao: OpenBaoDevServer, approle_credentials: tuple[str, str]
    ) -> None:
        role_id, secret_id = approle_credentials
        login = requests.post(
            f"{openbao.url}/v1/auth/approle/login",
            json={"role_id": role_id, "secret_id": secret_id},
            timeout=5,
        ).json()
        headers = {"X-Vault-Token": login["auth"]["client_token"]}
        for method, path in [
            ("GET", "transit/keys/cvault-email"),
            ("POST", "transit/keys/cvault-email/rotate"),
            ("POST", "transit/keys/cvault-new"),
            ("GET", "transit/export/encryption-key/cvault-email"),
        ]:
            response = requests.request(
                method, f"{openbao.url}/v1/{path}", headers=headers, timeout=5
            )
            assert response.status_code == 403, path


class TestAdmin:
    def test_init_is_idempotent(self, openbao: OpenBaoDevServer, field_keys: list[str]) -> None:
        again = init_field_keys(
            openbao.url,
            openbao.root_token,
            key_prefix=KEY_PREFIX,
            field_classes=FIELD_CLASSES,
            extra_keys=(),
        )
        assert again == field_keys == [f"cvault-{c}" for c in FIELD_CLASSES]
        key = root_get(openbao, "transit/keys/cvault-email").json()["data"]
        assert key["type"] == "aes256-gcm96"
        assert key["exportable"] is False
        assert key["deletion_allowed"] is False

    def test_exportable_existing_key_is_a_config_error(self, openbao: OpenBaoDevServer) -> None:
        requests.post(
            f"{openbao.url}/v1/transit/keys/cvault-exportable_test",
            headers={"X-Vault-Token": openbao.root_token},
            json={"type": "aes256-gcm96", "exportable": True},
            timeout=5,
        ).raise_for_status()
        with pytest.raises(ConfigError, match="exportable"):
            init_field_keys(
                openbao.url,
                openbao.root_token,
                key_prefix=KEY_PREFIX,
                field_classes=["exportable_test"],
            )

    def test_admin_policy_is_enough_for_init(
        self, openbao: OpenBaoDevServer, field_keys: list[str], deploy_dir: Path
    ) -> None:
        write_policy(
            openbao.url,
            openbao.root_token,
            "cvault-admin",
            (deploy_dir / "admin-policy.hcl").read_text(),
        )
        created = requests.post(
            f"{openbao.url}/v1/auth/token/create",
            headers={"X-Vault-Token": openbao.root_token},
            json={"policies": ["cvault-admin"], "ttl": "5m"},
            timeout=5,
        ).json()
        admin_token = created["auth"]["client_token"]
        names = init_field_keys(
            openbao.url,
            admin_token,
            key_prefix=KEY_PREFIX,
            field_classes=["email", "admin_made"],
        )
        assert names == ["cvault-email", "cvault-admin_made", "cvault-audit"]
        assert "cvault-admin_made" in transit_keys(openbao)
        with pytest.raises(KeyServerPermissionDenied):
            init_field_keys(openbao.url, admin_token, key_prefix="other", field_classes=["x"])


class TestOutages:
    def test_nothing_listening_is_unavailable_within_the_deadline(self, dead_url: str) -> None:
        wrapper = TransitKeyWrapper(
            dead_url,
            TokenAuth("t", renew=False),
            key_prefix=KEY_PREFIX,
            max_attempts=50,
        )
        start = time.monotonic()
        with pytest.raises(KeyServerUnavailable, match=r"^key server unavailable: cvault-email$"):
            wrapper.wrap("email", items(1), deadline=Deadline.after(1.0))
        assert time.monotonic() - start < 1.0 + SLACK
        assert wrapper.healthy() is False
        wrapper.close()

    def test_silent_server_is_unavailable_within_the_deadline(self, blackhole: str) -> None:
        wrapper = TransitKeyWrapper(
            blackhole, TokenAuth("t", renew=False), key_prefix=KEY_PREFIX, timeout=5.0
        )
        start = time.monotonic()
        with pytest.raises(KeyServerUnavailable):
            wrapper.unwrap("email", [UnwrapItem("vault:v1:AAAA")], deadline=Deadline.after(1.0))
        assert time.monotonic() - start < 1.0 + SLACK
        start = time.monotonic()
        assert wrapper.healthy() is False
        assert time.monotonic() - start < 1.0 + SLACK
        wrapper.close()

    def test_unreachable_approle_login_is_unavailable(self, dead_url: str) -> None:
        wrapper = TransitKeyWrapper(dead_url, AppRoleAuth("r", "s"), key_prefix=KEY_PREFIX)
        with pytest.raises(KeyServerUnavailable):
            wrapper.wrap("email", items(1), deadline=Deadline.after(0.5))
        wrapper.close()

    def test_healthy_when_up(self, root_wrapper: TransitKeyWrapper, audit: AuditSince) -> None:
        assert root_wrapper.healthy() is True
        assert audit() == []  # sys/health is not audited and needs no token


@pytest.mark.slow
def test_short_lived_approle_tokens_are_renewed_and_replaced(
    openbao: OpenBaoDevServer, runtime_policy: str, field_keys: list[str], audit: AuditSince
) -> None:
    role_id, secret_id = setup_approle(
        openbao.url,
        openbao.root_token,
        role_name="cvault-short-lived",
        policies=[runtime_policy],
        token_ttl="2s",
        token_max_ttl="4s",
    )
    wrapper = TransitKeyWrapper(openbao.url, AppRoleAuth(role_id, secret_id), key_prefix=KEY_PREFIX)
    keys = items(2)
    end = time.monotonic() + 6.5
    rounds = 0
    while time.monotonic() < end:
        wrapped = wrapper.wrap("address", keys)
        batch = [UnwrapItem(w, k.associated_data) for w, k in zip(wrapped, keys, strict=True)]
        assert wrapper.unwrap("address", batch) == [k.plaintext for k in keys]
        rounds += 1
        time.sleep(0.2)
    wrapper.close()
    assert rounds > 10
    assert len(audit("auth/approle/login")) >= 2
    assert len(audit("auth/token/renew-self")) >= 1


@pytest.mark.slow
def test_persistent_server_outage_and_recovery(tmp_path: Path) -> None:
    with OpenBaoDevServer(persistent_dir=tmp_path / "bao") as server:
        assert server.unseal_key
        init_field_keys(
            server.url, server.root_token, key_prefix=KEY_PREFIX, field_classes=["iban"]
        )
        # renew=True: the root token's TTL (none) is learned once, before the outage
        wrapper = TransitKeyWrapper(
            server.url, TokenAuth(server.root_token), key_prefix=KEY_PREFIX, timeout=2.0
        )
        keys = items(3)
        wrapped = wrapper.wrap("iban", keys)
        batch = [UnwrapItem(w, k.associated_data) for w, k in zip(wrapped, keys, strict=True)]

        server.stop()
        assert wrapper.healthy() is False
        with pytest.raises(KeyServerUnavailable):
            wrapper.unwrap("iban", batch, deadline=Deadline.after(1.0))
        with pytest.raises(KeyServerUnavailable):
            wrapper.wrap("iban", keys, deadline=Deadline.after(1.0))

        server.start()  # same port, same data; unsealed with the stored key
        assert wrapper.healthy() is True
        assert wrapper.unwrap("iban", batch) == [k.plaintext for k in keys]

        # sealed: 503 is an outage, not a refusal
        requests.put(
            f"{server.url}/v1/sys/seal", headers={"X-Vault-Token": server.root_token}, timeout=5
        ).raise_for_status()
        assert wrapper.healthy() is False
        with pytest.raises(KeyServerUnavailable):
            wrapper.unwrap("iban", batch, deadline=Deadline.after(0.5))

        server.restart()
        assert wrapper.unwrap("iban", batch) == [k.plaintext for k in keys]
        wrapper.close()
    assert not server.running
