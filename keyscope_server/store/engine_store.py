"""The store the servicers use, on any engine: the rules here and in the modules beside it, the SQL in the engine.

Each method is one rule run whole in one transaction of the engine (keyscope_server.store.engine), except the two on
VerifyKey's hot path, which answer from the verification cache once it has caught up with every commit.
While a probe finds the engine unable to take writes (full, read-only, gone), writes are refused at once with
that fault, and reads go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.errors import DomainError, StoreFull
from keyscope_server.store import apis, audit, keys, roles, root_keys
from keyscope_server.store.authorization import require_revision
from keyscope_server.store.changes import current_revision, page_token_key
from keyscope_server.store.engine import Engine, FirstRead, Rule
from keyscope_server.store.group_commit import BatchObserver
from keyscope_server.store.interface import LookupGate
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
from keyscope_server.store.verify_cache import DEFAULT_LIMITS, CacheLimits, CacheStats, VerifyCache

__all__ = ["EngineStore", "LookupCounts"]

T = TypeVar("T")

_NO_MARK = object()


@dataclass
class LookupCounts:
    """Lookups of a secret in the engine, what the caches did not answer: VerifyKey's keys and root keys."""

    keys: int = 0
    root_keys: int = 0


class EngineStore:
    """Implements keyscope_server.store.interface.Store over an engine."""

    def __init__(self, engine: Engine, limits: CacheLimits = DEFAULT_LIMITS) -> None:
        self.engine = engine
        self.cache = VerifyCache(limits)
        self.lookups = LookupCounts()
        self._mark: Hashable = _NO_MARK
        # When the last catch-up that finished began (time.monotonic()), and the change-log read in flight.
        self._caught_up_from = float("-inf")
        self._applying: tuple[Hashable, asyncio.Future[None]] | None = None
        # What keeps writes from working now (disk full, file read-only or gone), as `probe` last found it.
        self._fault: DomainError | None = None

    # -- lifecycle ---------------------------------------------------------

    async def close(self) -> None:
        await self.engine.close()

    async def probe(self) -> DomainError | None:
        """Check that the store can take writes; the fault if not. Writes are refused with that fault until a
        later probe finds it gone, so a server recovers on its own once the disk has room again or the file is
        back."""
        self._fault = await self.engine.probe()
        return self._fault

    async def revision(self) -> int:
        return await self.engine.read(current_revision)

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

    def observe_batches(self, observer: BatchObserver | None) -> None:
        self.engine.batches.observer = observer

    async def page_token_key(self) -> bytes:
        return await self.engine.read(page_token_key)

    async def _write(self, rule: Rule[T], *args: Any, dry_run: bool = False, first_read: FirstRead | None = None) -> T:
        if self._fault is not None:
            raise self._fault  # until a probe finds the fault gone: refused at once, nothing attempted
        try:
            return await self.engine.write(rule, *args, dry_run=dry_run, first_read=first_read)
        except StoreFull as full:
            self._fault = full
            raise

    async def _catch_up(self, min_revision: int, checked_since: float | None = None) -> float:
        """Bring the cache up to every change committed so far, by any process; then check `min_revision`. The
        time.monotonic() reading from which the cache holds every acknowledged commit.

        With `checked_since` (such a reading), a catch-up that began at or after it counts: the call that
        authenticated at that moment has had its check, and need not pay for another.
        """
        if checked_since is not None and checked_since <= self._caught_up_from and min_revision <= self.cache.seen:
            return checked_since
        began = time.monotonic()
        # The mark is read before the changes, so a commit in between shows at the next call; it is kept only
        # once the changes are applied, so a failed catch-up is tried again.
        mark = await self.engine.commit_mark()
        if mark != self._mark or min_revision > self.cache.seen:
            await self._apply_changes(mark)
        self._caught_up_from = max(self._caught_up_from, began)
        require_revision(self.cache.seen, min_revision)
        return began

    async def _apply_changes(self, mark: Hashable) -> None:
        """Read and apply the change log since the cache's revision. Calls that found the same new mark share
        one read (an engine whose reads suspend would otherwise see every waiting call read the same changes)."""
        sharing = self._applying
        if sharing is not None and sharing[0] == mark:
            await asyncio.shield(sharing[1])  # its read began after `mark` was read: it has what the mark says
            return
        done = asyncio.get_running_loop().create_future()
        self._applying = (mark, done)
        try:
            since = await self.engine.changes_since(self.cache.seen)
            self.cache.apply(since.current, since.complete, since.changes)
            self._mark = mark
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # marked as retrieved: whoever shares it raises it, and there may be no one
            raise
        finally:
            if self._applying is not None and self._applying[1] is done:
                self._applying = None

    # -- root keys -----------------------------------------------------------

    async def create_root_key(
        self, name: str, secret_hash: bytes, permissions: Sequence[str], expires_ms: int | None = None
    ) -> RootKeyRecord:
        return await self._write(root_keys.create_root_key, name, secret_hash, tuple(permissions), expires_ms)

    async def set_root_key_enabled(self, root_key_id: str, enabled: bool) -> None:
        await self._write(root_keys.set_root_key_enabled, root_key_id, enabled)

    async def delete_root_key(self, root_key_id: str) -> None:
        await self._write(root_keys.delete_root_key, root_key_id)

    async def list_root_keys(self) -> list[RootKeyRecord]:
        return await self.engine.read(root_keys.list_root_keys)

    async def authenticate(
        self, secret_hash: bytes, now_ms: int, request_id: str = "", gate: LookupGate | None = None
    ) -> Principal:
        """The caller this root key makes. `gate`: what must let a lookup in the engine go ahead (a root key the
        cache holds needs none), and hears of one that found nothing."""
        checked_since = await self._catch_up(0)
        grant = self.cache.root(secret_hash)
        if grant is None:
            if gate is not None:
                gate.admit()
            self.lookups.root_keys += 1
            grant = await self.engine.find_root_key(secret_hash)
            if grant is not None:
                self.cache.put_root(secret_hash, grant)
            elif gate is not None:
                gate.missed()
        return root_keys.admit(grant, now_ms, request_id, checked_since)

    # -- APIs -------------------------------------------------------------------

    async def create_api(self, principal: Principal, name: str, scopes: Sequence[ScopeSpec]) -> Written[ApiRecord]:
        return await self._write(apis.create_api, principal, name, tuple(scopes))

    async def get_api(self, principal: Principal, api_id: str, min_revision: int = 0) -> ApiRecord:
        return await self.engine.read(apis.get_api, principal, api_id, min_revision)

    async def update_scopes(
        self,
        principal: Principal,
        api_id: str,
        scopes: Sequence[ScopeSpec],
        etag: str = "",
        validate_only: bool = False,
    ) -> ScopesUpdate:
        return await self._write(
            apis.update_scopes, principal, api_id, tuple(scopes), etag, validate_only, dry_run=validate_only
        )

    async def list_apis(self, principal: Principal, after: str, limit: int, min_revision: int = 0) -> Page[ApiRecord]:
        return await self.engine.read(apis.list_apis, principal, after, limit, min_revision)

    async def list_permissions(
        self, principal: Principal, api_id: str, after: str, limit: int, min_revision: int = 0
    ) -> Page[PermissionEntry]:
        return await self.engine.read(apis.list_permissions, principal, api_id, after, limit, min_revision)

    async def delete_api(
        self, principal: Principal, api_id: str, etag: str = "", validate_only: bool = False
    ) -> ApiDeletion:
        return await self._write(apis.delete_api, principal, api_id, etag, validate_only, dry_run=validate_only)

    # -- keys -------------------------------------------------------------------

    async def create_key(self, principal: Principal, new: NewKey) -> Written[KeyRecord]:
        return await self._write(keys.create_key, principal, new)

    async def get_key(self, principal: Principal, key_id: str, min_revision: int = 0) -> KeyRecord:
        return await self.engine.read(keys.get_key, principal, key_id, min_revision)

    async def list_keys(self, principal: Principal, query: KeyQuery, min_revision: int = 0) -> Page[KeyRecord]:
        return await self.engine.read(keys.list_keys, principal, query, min_revision)

    async def update_key(
        self, principal: Principal, key_id: str, changes: KeyChanges, etag: str = ""
    ) -> Written[KeyRecord]:
        return await self._write(keys.update_key, principal, key_id, changes, etag, first_read=FirstRead(key_id))

    async def delete_key(self, principal: Principal, key_id: str) -> int:
        return await self._write(keys.delete_key, principal, key_id, first_read=FirstRead(key_id))

    async def set_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str], etag: str = "", validate_only: bool = False
    ) -> PermissionsUpdate:
        return await self._write(
            keys.set_permissions,
            principal,
            key_id,
            tuple(names),
            etag,
            validate_only,
            dry_run=validate_only,
            first_read=FirstRead(key_id, tuple(names)),
        )

    async def add_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str], etag: str = "", validate_only: bool = False
    ) -> PermissionsUpdate:
        return await self._write(
            keys.add_permissions,
            principal,
            key_id,
            tuple(names),
            etag,
            validate_only,
            dry_run=validate_only,
            first_read=FirstRead(key_id),
        )

    async def remove_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str], etag: str = "", validate_only: bool = False
    ) -> PermissionsUpdate:
        return await self._write(
            keys.remove_permissions,
            principal,
            key_id,
            tuple(names),
            etag,
            validate_only,
            dry_run=validate_only,
            first_read=FirstRead(key_id),
        )

    async def set_roles(
        self, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
    ) -> Written[KeyRecord]:
        return await self._write(
            keys.set_roles, principal, key_id, tuple(role_names), etag, first_read=FirstRead(key_id)
        )

    async def add_roles(
        self, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
    ) -> Written[KeyRecord]:
        return await self._write(
            keys.add_roles, principal, key_id, tuple(role_names), etag, first_read=FirstRead(key_id)
        )

    async def remove_roles(
        self, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
    ) -> Written[KeyRecord]:
        return await self._write(
            keys.remove_roles, principal, key_id, tuple(role_names), etag, first_read=FirstRead(key_id)
        )

    async def verify_key(
        self, principal: Principal, secret_hash: bytes, min_revision: int = 0, gate: LookupGate | None = None
    ) -> KeyVerification | None:
        """The key, if there is one with this secret and the caller may verify keys of its API; else None (the
        same answer, so that a caller cannot probe other APIs' keys). `gate`: what must let a lookup in the
        engine go ahead (a secret the cache holds, as a key or as unknown, needs none), and hears of one that
        found nothing."""
        await self._catch_up(min_revision, principal.checked_since)
        found = self.cache.key(secret_hash)
        if found is None:
            if self.cache.is_unknown(secret_hash):
                return None
            if gate is not None:
                gate.admit()
            revision = self.cache.seen  # what the lookup is at least as fresh as
            self.lookups.keys += 1
            found = await self.engine.find_key(secret_hash)
            if found is None:
                self.cache.put_unknown(secret_hash, revision)
                if gate is not None:
                    gate.missed()
                return None
            self.cache.put_key(secret_hash, found)
        return found if principal.may(access.VERIFY_KEY, found.api_id) else None

    # -- roles -------------------------------------------------------------------

    async def create_role(
        self, principal: Principal, api_id: str, name: str, description: str, permissions: Sequence[str]
    ) -> Written[RoleRecord]:
        return await self._write(roles.create_role, principal, api_id, name, description, tuple(permissions))

    async def get_role(self, principal: Principal, role_id: str, min_revision: int = 0) -> RoleRecord:
        return await self.engine.read(roles.get_role, principal, role_id, min_revision)

    async def set_role_permissions(
        self, principal: Principal, role_id: str, names: Sequence[str], etag: str = ""
    ) -> Written[RoleRecord]:
        return await self._write(roles.set_role_permissions, principal, role_id, tuple(names), etag)

    async def list_roles(
        self, principal: Principal, api_id: str, after: str, limit: int, min_revision: int = 0
    ) -> Page[RoleRecord]:
        return await self.engine.read(roles.list_roles, principal, api_id, after, limit, min_revision)

    async def delete_role(
        self, principal: Principal, role_id: str, etag: str = "", validate_only: bool = False
    ) -> RoleDeletion:
        return await self._write(roles.delete_role, principal, role_id, etag, validate_only, dry_run=validate_only)

    # -- the audit trail and the whole store -------------------------------------------

    async def list_audit_events(self, principal: Principal, query: AuditQuery) -> AuditPage:
        return await self.engine.read(audit.list_audit_events, principal, query)

    async def export_snapshot(self) -> StoreSnapshot:
        return await self.engine.export_snapshot()

    async def import_snapshot(self, snapshot: StoreSnapshot, progress: ImportProgress | None = None) -> None:
        await self.engine.import_snapshot(snapshot, progress)
