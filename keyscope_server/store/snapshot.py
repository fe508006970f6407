"""Everything a store holds, as plain rows that no engine shapes: what `Store.export_snapshot` returns.

Two stores hold the same data exactly when their snapshots are equal, whichever
engines they run on. Tests compare snapshots to prove that a failed call
changed nothing; copying a store to another engine writes one. Secrets appear
only as the SHA-256 digests the store keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keyscope_server.store.models import AuditEventRecord

__all__ = ["ApiRow", "ImportProgress", "KeyRow", "PermissionRow", "RoleRow", "RootKeyRow", "StoreSnapshot"]

# What `Store.import_snapshot` reports as it writes: (table, rows of it written so far, rows of it in all).
ImportProgress = Callable[[str, int, int], None]


@dataclass(frozen=True, order=True)
class ApiRow:
    id: str
    name: str
    created_ms: int
    updated_ms: int
    etag_revision: int


@dataclass(frozen=True, order=True)
class PermissionRow:
    """An entry of an API's catalog (a scope)."""

    id: str
    api_id: str
    name: str
    description: str
    created_ms: int


@dataclass(frozen=True, order=True)
class KeyRow:
    id: str
    api_id: str
    secret_hash: bytes
    start: str
    name: str
    enabled: bool
    expires_ms: int | None
    created_ms: int
    updated_ms: int
    etag_revision: int


@dataclass(frozen=True, order=True)
class RoleRow:
    id: str
    api_id: str
    name: str
    description: str
    created_ms: int
    updated_ms: int
    etag_revision: int


@dataclass(frozen=True, order=True)
class RootKeyRow:
    id: str
    name: str
    secret_hash: bytes
    enabled: bool
    expires_ms: int | None
    created_ms: int


@dataclass(frozen=True)
class StoreSnapshot:
    """Every row of every kind, each tuple sorted, so that equal contents compare equal."""

    revision: int
    apis: tuple[ApiRow, ...]
    permissions: tuple[PermissionRow, ...]
    keys: tuple[KeyRow, ...]
    roles: tuple[RoleRow, ...]
    key_permissions: tuple[tuple[str, str], ...]  # (key id, permission id)
    key_roles: tuple[tuple[str, str], ...]  # (key id, role id)
    role_permissions: tuple[tuple[str, str], ...]  # (role id, permission id)
    root_keys: tuple[RootKeyRow, ...]
    root_key_permissions: tuple[tuple[str, str], ...]  # (root key id, permission name)
    changes: tuple[tuple[int, str, str], ...]  # the change log: (revision, kind, id)
    audit_events: tuple[AuditEventRecord, ...]  # oldest first
