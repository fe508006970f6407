"""The store as the servicers see it: one interface, whichever engine is below it (keyscope_server.store.engines).

Every method that touches an API's resources takes the calling `Principal` and
checks it inside the same transaction as the work, so that authorization and
the change see the same state. Every change is recorded in the audit trail in
the same transaction; `etag` (where taken) must match the resource's current
etag, and `validate_only` answers what the call would return and writes
nothing. Methods raise `keyscope_server.errors` domain errors: NotFound,
PermissionDenied, AlreadyExists, EtagMismatch, RevisionNotReached (a read's
`min_revision` is ahead of the store), StoreFull, StoreUnavailable.
Implemented by keyscope_server.store.engine_store.EngineStore, over the SQLite engine
(keyscope_server.store.sqlite).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from keyscope_server.access import Principal
from keyscope_server.errors import DomainError
from keyscope_server.store.group_commit import BatchObserver
from keyscope_server.store.models import (
    ApiDeletion,
    ApiRecord,
    AuditPage,
    AuditQuery,
    KeyChanges,
    KeyQuery,
    KeyRecord,
    KeyVerification,
    NewKey,
    Page,
    PermissionEntry,
    PermissionsUpdate,
    RoleDeletion,
    RoleRecord,
    RootKeyRecord,
    ScopeSpec,
    ScopesUpdate,
    Written,
)
from keyscope_server.store.snapshot import ImportProgress, StoreSnapshot
from keyscope_server.store.verify_cache import CacheStats

__all__ = ["LookupGate", "Store"]


class LookupGate(Protocol):
    """What lets one call's store lookup of a credential the caches do not hold go ahead (keyscope_server.throttle).

    `admit` runs before the lookup and raises (Throttled) to refuse it; `missed` runs when the lookup found nothing.
    """

    def admit(self) -> None: ...
    def missed(self) -> None: ...


class Store(Protocol):
    # Root keys (administration from the command line, and authentication).
    async def create_root_key(
        self, name: str, secret_hash: bytes, permissions: Sequence[str], expires_ms: int | None = None
    ) -> RootKeyRecord: ...
    async def set_root_key_enabled(self, root_key_id: str, enabled: bool) -> None: ...
    async def delete_root_key(self, root_key_id: str) -> None: ...
    async def list_root_keys(self) -> list[RootKeyRecord]: ...
    async def authenticate(
        self, secret_hash: bytes, now_ms: int, request_id: str = "", gate: LookupGate | None = None
    ) -> Principal: ...

    # APIs and their scope lists.
    async def create_api(self, principal: Principal, name: str, scopes: Sequence[ScopeSpec]) -> Written[ApiRecord]: ...
    async def get_api(self, principal: Principal, api_id: str, min_revision: int = 0) -> ApiRecord: ...
    async def update_scopes(
        self,
        principal: Principal,
        api_id: str,
        scopes: Sequence[ScopeSpec],
        etag: str = "",
        validate_only: bool = False,
    ) -> ScopesUpdate: ...
    async def list_apis(
        self, principal: Principal, after: str, limit: int, min_revision: int = 0
    ) -> Page[ApiRecord]: ...
    async def list_permissions(
        self, principal: Principal, api_id: str, after: str, limit: int, min_revision: int = 0
    ) -> Page[PermissionEntry]: ...
    async def delete_api(
        self, principal: Principal, api_id: str, etag: str = "", validate_only: bool = False
    ) -> ApiDeletion: ...

    # Keys.
    async def create_key(self, principal: Principal, new: NewKey) -> Written[KeyRecord]: ...
    async def get_key(self, principal: Principal, key_id: str, min_revision: int = 0) -> KeyRecord: ...
    async def list_keys(self, principal: Principal, query: KeyQuery, min_revision: int = 0) -> Page[KeyRecord]: ...
    async def update_key(
        self, principal: Principal, key_id: str, changes: KeyChanges, etag: str = ""
    ) -> Written[KeyRecord]: ...
    async def delete_key(self, principal: Principal, key_id: str) -> int: ...
    async def set_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str], etag: str = "", validate_only: bool = False
    ) -> PermissionsUpdate: ...
    async def add_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str], etag: str = "", validate_only: bool = False
    ) -> PermissionsUpdate: ...
    async def remove_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str], etag: str = "", validate_only: bool = False
    ) -> PermissionsUpdate: ...
    async def set_roles(
        self, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
    ) -> Written[KeyRecord]: ...
    async def add_roles(
        self, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
    ) -> Written[KeyRecord]: ...
    async def remove_roles(
        self, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
    ) -> Written[KeyRecord]: ...
    async def verify_key(
        self, principal: Principal, secret_hash: bytes, min_revision: int = 0, gate: LookupGate | None = None
    ) -> KeyVerification | None: ...

    # Roles.
    async def create_role(
        self, principal: Principal, api_id: str, name: str, description: str, permissions: Sequence[str]
    ) -> Written[RoleRecord]: ...
    async def get_role(self, principal: Principal, role_id: str, min_revision: int = 0) -> RoleRecord: ...
    async def set_role_permissions(
        self, principal: Principal, role_id: str, names: Sequence[str], etag: str = ""
    ) -> Written[RoleRecord]: ...
    async def list_roles(
        self, principal: Principal, api_id: str, after: str, limit: int, min_revision: int = 0
    ) -> Page[RoleRecord]: ...
    async def delete_role(
        self, principal: Principal, role_id: str, etag: str = "", validate_only: bool = False
    ) -> RoleDeletion: ...

    # The audit trail.
    async def list_audit_events(self, principal: Principal, query: AuditQuery) -> AuditPage: ...

    # The whole store, as rows no engine shapes: to compare two stores, and to copy one into an empty one.
    async def export_snapshot(self) -> StoreSnapshot: ...
    async def import_snapshot(self, snapshot: StoreSnapshot, progress: ImportProgress | None = None) -> None: ...

    # Lifecycle.
    async def revision(self) -> int: ...
    async def page_token_key(self) -> bytes:
        """The key that signs page tokens: the store's own, the same for every server on it."""

    async def probe(self) -> DomainError | None: ...
    async def close(self) -> None: ...

    # What the store has done, for metrics (keyscope_server.metrics reads these; the store knows no metrics library).
    def cache_stats(self) -> CacheStats:
        """The verification cache's counts so far and what it holds now."""

    def observe_batches(self, observer: BatchObserver | None) -> None:
        """Have `observer` told of every write batch from now on: its size and its transaction's seconds."""
