"""The store as the servicers see it. Another engine implements this and nothing else changes.

Every method that touches an API's resources takes the calling `Principal` and
checks it inside the same transaction as the work, so that authorization and
the change see the same state. Methods raise `server.errors` domain errors:
NotFound, PermissionDenied, AlreadyExists, RevisionNotReached (a read's
`min_revision` is ahead of the store), StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from server.access import Principal
from server.store.models import (
    ApiRecord,
    KeyChanges,
    KeyRecord,
    KeyVerification,
    NewKey,
    PermissionEntry,
    RoleRecord,
    RootKeyRecord,
    ScopesUpdate,
    Written,
)
from server.validation import ScopeSpec

__all__ = ["Store"]


class Store(Protocol):
    # Root keys (administration from the command line, and authentication).
    async def create_root_key(
        self, name: str, secret_hash: bytes, permissions: Sequence[str], expires_ms: int | None = None
    ) -> RootKeyRecord: ...
    async def set_root_key_enabled(self, root_key_id: str, enabled: bool) -> None: ...
    async def delete_root_key(self, root_key_id: str) -> None: ...
    async def list_root_keys(self) -> list[RootKeyRecord]: ...
    async def authenticate(self, secret_hash: bytes, now_ms: int) -> Principal: ...

    # APIs and their scope lists.
    async def create_api(self, principal: Principal, name: str, scopes: Sequence[ScopeSpec]) -> Written[ApiRecord]: ...
    async def get_api(self, principal: Principal, api_id: str, min_revision: int = 0) -> ApiRecord: ...
    async def update_scopes(self, principal: Principal, api_id: str, scopes: Sequence[ScopeSpec]) -> ScopesUpdate: ...

    # Keys.
    async def create_key(self, principal: Principal, new: NewKey) -> Written[KeyRecord]: ...
    async def get_key(self, principal: Principal, key_id: str, min_revision: int = 0) -> KeyRecord: ...
    async def update_key(self, principal: Principal, key_id: str, changes: KeyChanges) -> Written[KeyRecord]: ...
    async def delete_key(self, principal: Principal, key_id: str) -> int: ...
    async def set_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str]
    ) -> Written[tuple[PermissionEntry, ...]]: ...
    async def set_roles(self, principal: Principal, key_id: str, role_names: Sequence[str]) -> Written[KeyRecord]: ...
    async def verify_key(self, secret_hash: bytes, min_revision: int = 0) -> KeyVerification | None: ...

    # Roles.
    async def create_role(
        self, principal: Principal, api_id: str, name: str, description: str, permissions: Sequence[str]
    ) -> Written[RoleRecord]: ...
    async def get_role(self, principal: Principal, role_id: str, min_revision: int = 0) -> RoleRecord: ...
    async def set_role_permissions(
        self, principal: Principal, role_id: str, names: Sequence[str]
    ) -> Written[RoleRecord]: ...

    # Lifecycle.
    async def revision(self) -> int: ...
    async def close(self) -> None: ...
