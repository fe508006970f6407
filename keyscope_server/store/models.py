"""What the store holds and returns: plain immutable records, free of SQL and protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from keyscope_server.permission_match import PermissionSet

__all__ = [
    "ApiDeletion",
    "ApiRecord",
    "AuditEventRecord",
    "AuditPage",
    "AuditQuery",
    "KeyChanges",
    "KeyQuery",
    "KeyRecord",
    "KeyVerification",
    "NewKey",
    "Page",
    "PermissionEntry",
    "PermissionsUpdate",
    "RoleDeletion",
    "RoleRecord",
    "RootKeyGrant",
    "RootKeyRecord",
    "ScopeSpec",
    "ScopesUpdate",
    "Written",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ScopeSpec:
    """A scope as requested: its value and description."""

    value: str
    description: str


@dataclass(frozen=True)
class PermissionEntry:
    """One entry of an API's catalog: Auth0's scope, Unkey's permission."""

    id: str
    name: str
    description: str


@dataclass(frozen=True)
class ApiRecord:
    id: str
    name: str
    scopes: tuple[PermissionEntry, ...]
    created_ms: int
    updated_ms: int
    etag: str


@dataclass(frozen=True)
class RoleRecord:
    id: str
    api_id: str
    name: str
    description: str
    permissions: tuple[PermissionEntry, ...]
    created_ms: int
    updated_ms: int
    etag: str


@dataclass(frozen=True)
class KeyRecord:
    id: str
    api_id: str
    name: str
    start: str
    enabled: bool
    expires_ms: int | None
    permissions: tuple[PermissionEntry, ...]
    roles: tuple[RoleRecord, ...]
    created_ms: int
    updated_ms: int
    etag: str


@dataclass(frozen=True)
class KeyVerification:
    """What VerifyKey needs of a key, read in one consistent snapshot."""

    key_id: str
    api_id: str
    enabled: bool
    expires_ms: int | None
    permissions: tuple[str, ...]  # effective: direct and through roles, sorted, unique
    roles: tuple[str, ...]
    revision: int  # the store revision this was read at

    @cached_property
    def held(self) -> PermissionSet:
        """`permissions`, compiled once for the checks of every VerifyKey that the cached entry answers."""
        return PermissionSet(self.permissions)


@dataclass(frozen=True)
class RootKeyGrant:
    """What authentication needs of a root key, and the store revision it was read at."""

    id: str
    permissions: tuple[str, ...]
    enabled: bool
    expires_ms: int | None
    revision: int


@dataclass(frozen=True)
class RootKeyRecord:
    id: str
    name: str
    permissions: tuple[str, ...]
    enabled: bool
    expires_ms: int | None
    created_ms: int


@dataclass(frozen=True)
class NewKey:
    api_id: str
    name: str
    secret_hash: bytes
    start: str
    enabled: bool
    expires_ms: int | None
    permissions: tuple[str, ...]
    roles: tuple[str, ...]


@dataclass(frozen=True)
class KeyChanges:
    """UpdateKey's changes; None leaves a field as it is."""

    name: str | None = None
    enabled: bool | None = None
    expires_ms: int | None = None
    clear_expiry: bool = False


@dataclass(frozen=True)
class Written(Generic[T]):
    """The outcome of a write: the resource after it, and the store revision it produced."""

    value: T
    revision: int
    created_permissions: tuple[PermissionEntry, ...] = field(default=())


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a list (AIP-158): its items in the list's order, and whether more follow them."""

    items: tuple[T, ...]
    more: bool


@dataclass(frozen=True)
class KeyQuery:
    """Which keys of an API ListKeys lists: those after `after` (a key id) that pass every filter given."""

    api_id: str
    after: str
    limit: int
    enabled: bool | None = None
    permission: str = ""  # held directly or through a role, by exact name
    role: str = ""


@dataclass(frozen=True)
class ApiDeletion:
    """What DeleteApi took with the API (or, for a dry run, would take)."""

    keys: int
    roles: int
    scopes: int
    revision: int


@dataclass(frozen=True)
class RoleDeletion:
    """How many keys lost the role DeleteRole deleted (or would lose it)."""

    keys: int
    revision: int


@dataclass(frozen=True)
class PermissionsUpdate:
    """SetPermissions' outcome: the key's direct permissions after it, the catalog entries it created, the key's
    etag and the store revision after it."""

    permissions: tuple[PermissionEntry, ...]
    created_permissions: tuple[PermissionEntry, ...]
    etag: str
    revision: int


@dataclass(frozen=True)
class ScopesUpdate:
    api: ApiRecord
    removed: tuple[str, ...]
    keys_affected: int
    roles_affected: int
    revision: int


@dataclass(frozen=True)
class AuditEventRecord:
    """One change, as the audit trail keeps it. `before` and `after` are JSON-shaped (see audit.proto)."""

    revision: int
    time_ms: int
    actor: str
    action: str
    resource_type: str
    resource_id: str
    api_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_permissions: tuple[str, ...]
    request_id: str


@dataclass(frozen=True)
class AuditQuery:
    """ListAuditEvents' filters ("" or None: any), and where the page starts."""

    api_id: str = ""
    resource_id: str = ""
    actor: str = ""
    action: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    before_revision: int | None = None  # only events older than this (the previous page's last)
    limit: int = 50


@dataclass(frozen=True)
class AuditPage:
    events: tuple[AuditEventRecord, ...]
    more: bool  # whether older events match too
