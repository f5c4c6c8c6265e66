"""Key status: what exists, and what depends on what.

``key_status`` joins what the key server says of each transit field key (versions, decryption
floor) with what the database holds: every wrapped tenant, index and audit key, the field-key
version it is wrapped under (read from its ``vault:vN:`` prefix, so no key-server call per key),
and how many data keys each tenant-key version wraps. It is what an operator checks before
``retire`` / ``trim`` and after a rotation: "nothing below the newest versions".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vault.keys import FieldKeyInfo, wrapped_version
from vault.storage import Database, keys_repo


@dataclass(frozen=True, slots=True)
class FieldKeyStatus:
    """One transit field key and the wrapped keys that depend on it."""

    field_class: str
    key_name: str
    latest_version: int
    min_decryption_version: int
    available_versions: tuple[int, ...]
    #: field-key version -> how many tenant, index and audit keys are wrapped under it
    wrapped_by_version: Mapping[int, int]

    @property
    def oldest_in_use(self) -> int | None:
        return min(self.wrapped_by_version) if self.wrapped_by_version else None

    @property
    def below_latest(self) -> int:
        """Wrapped keys still under an older field-key version than the newest."""
        return sum(n for v, n in self.wrapped_by_version.items() if v < self.latest_version)


@dataclass(frozen=True, slots=True)
class TenantKeyStatus:
    """The tenant and index keys of one (tenant, class)."""

    tenant: str
    field_class: str
    #: tenant-key version -> data keys it wraps (a version with none is still listed)
    data_keys_by_version: Mapping[int, int]
    index_versions: tuple[int, ...]

    @property
    def current_version(self) -> int:
        return max(self.data_keys_by_version, default=0)

    @property
    def oldest_in_use(self) -> int | None:
        used = [v for v, n in self.data_keys_by_version.items() if n]
        return min(used) if used else None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    field_keys: tuple[FieldKeyStatus, ...]
    tenants: tuple[TenantKeyStatus, ...]
    #: wrapped keys whose class has no field key on the key server, or whose blob is unreadable
    orphans: int = 0
    notes: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {
            "field_keys": [
                {
                    "class": f.field_class,
                    "key": f.key_name,
                    "latest_version": f.latest_version,
                    "min_decryption_version": f.min_decryption_version,
                    "available_versions": list(f.available_versions),
                    "wrapped_keys_by_version": {
                        str(v): n for v, n in sorted(f.wrapped_by_version.items())
                    },
                    "oldest_version_in_use": f.oldest_in_use,
                    "wrapped_keys_below_latest": f.below_latest,
                }
                for f in self.field_keys
            ],
            "tenants": [
                {
                    "tenant": t.tenant,
                    "class": t.field_class,
                    "tenant_key_versions": {
                        str(v): n for v, n in sorted(t.data_keys_by_version.items())
                    },
                    "current_tenant_key_version": t.current_version,
                    "oldest_tenant_key_version_in_use": t.oldest_in_use,
                    "index_key_versions": list(t.index_versions),
                }
                for t in self.tenants
            ],
            "orphans": self.orphans,
        }


def key_status(db: Database, field_keys: Mapping[str, FieldKeyInfo]) -> KeyStatus:
    """The status of every field key in ``field_keys`` (class -> key-server info) and of every
    tenant and index key in the database. Reads only."""
    with db.begin(write=False) as conn:
        rows = keys_repo.wrapped_keys(conn)
        deks = keys_repo.data_keys_per_tenant_key(conn)
    by_class: dict[str, dict[int, int]] = {c: {} for c in field_keys}
    orphans = 0
    tenants: dict[tuple[str, str], tuple[dict[int, int], set[int]]] = {}
    for r in rows:
        version = wrapped_version(r.wrapped)
        if version is None or r.field_class not in by_class:
            orphans += 1
        else:
            counts = by_class[r.field_class]
            counts[version] = counts.get(version, 0) + 1
        if r.kind == "audit":
            continue
        data, index = tenants.setdefault((r.tenant, r.field_class), ({}, set()))
        if r.kind == "data":
            data[r.version] = data.get(r.version, 0) + deks.get(r.id, 0)
        else:
            index.add(r.version)
    return KeyStatus(
        field_keys=tuple(
            FieldKeyStatus(
                field_class=c,
                key_name=info.name,
                latest_version=info.latest_version,
                min_decryption_version=info.min_decryption_version,
                available_versions=info.versions,
                wrapped_by_version=dict(sorted(by_class[c].items())),
            )
            for c, info in sorted(field_keys.items())
        ),
        tenants=tuple(
            TenantKeyStatus(t, c, dict(sorted(data.items())), tuple(sorted(index)))
            for (t, c), (data, index) in sorted(tenants.items())
        ),
        orphans=orphans,
    )


def format_status(status: KeyStatus) -> str:
    """A plain-text report for a terminal."""
    lines = ["field keys (transit):"]
    lines.append(
        f"  {'class':<14} {'latest':>6} {'min dec':>7} {'held':<12} {'wrapped keys by version':<28}"
        " oldest in use"
    )
    for f in status.field_keys:
        held = ",".join(str(v) for v in f.available_versions)
        wrapped = " ".join(f"v{v}:{n}" for v, n in f.wrapped_by_version.items()) or "-"
        oldest = "-" if f.oldest_in_use is None else f"v{f.oldest_in_use}"
        lines.append(
            f"  {f.field_class:<14} {f.latest_version:>6} {f.min_decryption_version:>7}"
            f" {held:<12} {wrapped:<28} {oldest}"
        )
    lines.append("tenant keys (data keys wrapped per tenant-key version) and index keys:")
    for t in status.tenants:
        data = " ".join(f"v{v}:{n}" for v, n in t.data_keys_by_version.items()) or "-"
        index = ",".join(f"v{v}" for v in t.index_versions) or "-"
        lines.append(f"  {t.tenant:<20} {t.field_class:<14} tenant {data:<20} index {index}")
    in_use = [f.oldest_in_use for f in status.field_keys if f.oldest_in_use is not None]
    below = sum(f.below_latest for f in status.field_keys)
    lines.append(
        f"oldest field-key version in use: {min(in_use) if in_use else '-'};"
        f" wrapped keys below their key's newest version: {below}"
    )
    if status.orphans:
        lines.append(f"WARNING: {status.orphans} wrapped keys name no known field key")
    return "\n".join(lines)
