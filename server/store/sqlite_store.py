"""The embedded store: SQLite in WAL mode through aiosqlite.

Two connections: a writer, whose transactions an asyncio lock serialises
(`BEGIN IMMEDIATE`, so writers in other processes wait on SQLite's busy
timeout rather than fail), and a reader, whose snapshots never see a write
before it commits. Each operation is one transaction: it checks the caller's
permissions, does the work and, when something changed, bumps the store-wide
revision, all or nothing.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from server import access
from server.access import Principal
from server.credentials import new_id
from server.errors import AlreadyExists, NotFound, StoreUnavailable, Unauthenticated
from server.store.models import (
    ApiRecord,
    KeyChanges,
    KeyRecord,
    KeyVerification,
    NewKey,
    RoleRecord,
    RootKeyRecord,
    ScopesUpdate,
    Written,
)
from server.store.sqlite_steps import (
    Row,
    as_json,
    authorize_api,
    authorize_key,
    authorize_role,
    bump_revision,
    current_revision,
    fetch_all,
    fetch_one,
    finish_key_change,
    insert_permissions,
    link,
    load_api,
    load_key,
    load_roles,
    migrate,
    now_ms,
    replace_links,
    resolve_permissions,
    resolve_roles,
    rollback,
    store_faults,
    touch_grantees,
)
from server.validation import ScopeSpec

__all__ = ["SqliteStore"]


def _probe(path: Path) -> None:
    sqlite3.connect(path).close()


class SqliteStore:
    """Implements server.store.interface.Store. Open with `await SqliteStore.open(path)`."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout_ms: int = 5000) -> SqliteStore:
        path = Path(path)
        connections: list[aiosqlite.Connection] = []
        try:
            with store_faults():
                # Fail here, in plain sqlite3, if the file cannot be opened: when aiosqlite's
                # connect fails, its worker thread outlives the call and may find the loop closed.
                await asyncio.to_thread(_probe, path)
                for _ in range(2):
                    db = await aiosqlite.connect(path, isolation_level=None)
                    connections.append(db)
                    await db.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                    await db.execute_fetchall("PRAGMA foreign_keys = ON")
                    await db.execute_fetchall("PRAGMA synchronous = FULL")
                writer, reader = connections
                await writer.execute_fetchall("PRAGMA journal_mode = WAL")
                await migrate(writer)
        except BaseException:
            for db in connections:
                await db.close()
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        async with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            for db in (self._writer, self._reader):
                await db.close()

    async def revision(self) -> int:
        row = await self._query("SELECT revision FROM meta")
        assert row is not None
        return int(row[0])

    # -- transactions ------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            self._check_open()
            db = self._writer
            with store_faults():
                await db.execute_fetchall("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute_fetchall("COMMIT")
                except BaseException:
                    # Shielded: a cancelled call still queues its rollback before
                    # the lock lets the next transaction in.
                    await asyncio.shield(rollback(db))
                    raise

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._read_lock:
            self._check_open()
            db = self._reader
            with store_faults():
                await db.execute_fetchall("BEGIN")
                try:
                    yield db
                finally:
                    await asyncio.shield(rollback(db))

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """A read that is one statement, hence one snapshot, with no transaction around it."""
        async with self._read_lock:
            self._check_open()
            with store_faults():
                return await fetch_one(self._reader, sql, params)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")

    # -- root keys -----------------------------------------------------------

    async def create_root_key(
        self, name: str, secret_hash: bytes, permissions: Sequence[str], expires_ms: int | None = None
    ) -> RootKeyRecord:
        root_key_id = new_id("root")
        now = now_ms()
        unique = sorted(set(permissions))
        async with self._write() as db:
            await fetch_all(
                db,
                "INSERT INTO root_keys (id, name, secret_hash, enabled, expires_at, created_at)"
                " VALUES (?, ?, ?, 1, ?, ?)",
                (root_key_id, name, secret_hash, expires_ms, now),
            )
            await fetch_all(
                db,
                "INSERT INTO root_key_permissions (root_key_id, name) SELECT ?, value FROM json_each(?)",
                (root_key_id, as_json(unique)),
            )
            await bump_revision(db)
        return RootKeyRecord(root_key_id, name, tuple(unique), True, expires_ms, now)

    async def set_root_key_enabled(self, root_key_id: str, enabled: bool) -> None:
        async with self._write() as db:
            rows = await fetch_all(
                db, "UPDATE root_keys SET enabled = ? WHERE id = ? RETURNING id", (int(enabled), root_key_id)
            )
            if not rows:
                raise NotFound("root key", [root_key_id])
            await bump_revision(db)

    async def delete_root_key(self, root_key_id: str) -> None:
        async with self._write() as db:
            rows = await fetch_all(db, "DELETE FROM root_keys WHERE id = ? RETURNING id", (root_key_id,))
            if not rows:
                raise NotFound("root key", [root_key_id])
            await bump_revision(db)

    async def list_root_keys(self) -> list[RootKeyRecord]:
        async with self._read() as db:
            rows = await fetch_all(
                db,
                "SELECT r.id, r.name, r.enabled, r.expires_at, r.created_at,"
                " (SELECT json_group_array(name) FROM root_key_permissions"
                "  WHERE root_key_id = r.id) FROM root_keys r ORDER BY r.created_at, r.id",
            )
        return [RootKeyRecord(r[0], r[1], tuple(sorted(json.loads(r[5]))), bool(r[2]), r[3], r[4]) for r in rows]

    async def authenticate(self, secret_hash: bytes, now_ms: int) -> Principal:
        row = await self._query(
            "SELECT r.id, r.enabled, r.expires_at,"
            " (SELECT json_group_array(name) FROM root_key_permissions WHERE root_key_id = r.id)"
            " FROM root_keys r WHERE r.secret_hash = ?",
            (secret_hash,),
        )
        if row is None:
            raise Unauthenticated("unknown root key")
        if not row[1]:
            raise Unauthenticated("the root key is disabled")
        if row[2] is not None and row[2] <= now_ms:
            raise Unauthenticated("the root key has expired")
        return Principal(row[0], tuple(json.loads(row[3])))

    # -- APIs -------------------------------------------------------------------

    async def create_api(self, principal: Principal, name: str, scopes: Sequence[ScopeSpec]) -> Written[ApiRecord]:
        principal.require(access.CREATE_API)
        api_id = new_id("api")
        now = now_ms()
        async with self._write() as db:
            await fetch_all(
                db, "INSERT INTO apis (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)", (api_id, name, now, now)
            )
            await insert_permissions(db, api_id, [(s.value, s.description) for s in scopes], now)
            revision = await bump_revision(db)
            api = await load_api(db, api_id)
        return Written(api, revision)

    async def get_api(self, principal: Principal, api_id: str) -> ApiRecord:
        async with self._read() as db:
            await authorize_api(db, principal, access.READ_API, api_id)
            return await load_api(db, api_id)

    async def update_scopes(self, principal: Principal, api_id: str, scopes: Sequence[ScopeSpec]) -> ScopesUpdate:
        now = now_ms()
        async with self._write() as db:
            await authorize_api(db, principal, access.UPDATE_API, api_id)
            current = {
                r[1]: (r[0], r[2])
                for r in await fetch_all(
                    db, "SELECT id, name, description FROM permissions WHERE api_id = ?", (api_id,)
                )
            }
            wanted = {s.value: s.description for s in scopes}
            removed = sorted(name for name in current if name not in wanted)
            removed_ids = as_json([current[name][0] for name in removed])
            described = [
                [current[value][0], description]
                for value, description in wanted.items()
                if value in current and current[value][1] != description
            ]
            added = [(value, description) for value, description in wanted.items() if value not in current]
            keys_affected = roles_affected = 0
            if removed:
                keys_affected, roles_affected = await touch_grantees(db, removed_ids, now)
                # ON DELETE CASCADE takes the grants to keys and roles with them.
                await fetch_all(
                    db, "DELETE FROM permissions WHERE id IN (SELECT value FROM json_each(?))", (removed_ids,)
                )
            if described:
                await fetch_all(
                    db,
                    "UPDATE permissions SET description = j.value ->> 1"
                    " FROM json_each(?) AS j WHERE permissions.id = j.value ->> 0",
                    (as_json(described),),
                )
            await insert_permissions(db, api_id, added, now)
            if removed or described or added:
                await fetch_all(db, "UPDATE apis SET updated_at = ? WHERE id = ?", (now, api_id))
                revision = await bump_revision(db)
            else:
                revision = await current_revision(db)
            api = await load_api(db, api_id)
        return ScopesUpdate(api, tuple(removed), keys_affected, roles_affected, revision)

    # -- keys -------------------------------------------------------------------

    async def create_key(self, principal: Principal, new: NewKey) -> Written[KeyRecord]:
        key_id = new_id("key")
        now = now_ms()
        async with self._write() as db:
            await authorize_api(db, principal, access.CREATE_KEY, new.api_id)
            role_ids = await resolve_roles(db, new.api_id, new.roles)
            permission_ids, created = await resolve_permissions(db, principal, new.api_id, new.permissions, now)
            await fetch_all(
                db,
                "INSERT INTO keys (id, api_id, secret_hash, start, name, enabled, expires_at,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, new.api_id, new.secret_hash, new.start, new.name, int(new.enabled), new.expires_ms, now, now),
            )
            await link(db, "key_permissions", "key_id", "permission_id", key_id, permission_ids)
            await link(db, "key_roles", "key_id", "role_id", key_id, role_ids)
            revision = await bump_revision(db)
            key = await load_key(db, key_id)
        return Written(key, revision, created)

    async def get_key(self, principal: Principal, key_id: str) -> KeyRecord:
        async with self._read() as db:
            await authorize_key(db, principal, access.READ_KEY, key_id)
            return await load_key(db, key_id)

    async def update_key(self, principal: Principal, key_id: str, changes: KeyChanges) -> Written[KeyRecord]:
        now = now_ms()
        async with self._write() as db:
            await authorize_key(db, principal, access.UPDATE_KEY, key_id)
            row = await fetch_one(db, "SELECT name, enabled, expires_at FROM keys WHERE id = ?", (key_id,))
            assert row is not None
            name = row[0] if changes.name is None else changes.name
            enabled = bool(row[1]) if changes.enabled is None else changes.enabled
            expires = None if changes.clear_expiry else (row[2] if changes.expires_ms is None else changes.expires_ms)
            if (name, enabled, expires) != (row[0], bool(row[1]), row[2]):
                await fetch_all(
                    db,
                    "UPDATE keys SET name = ?, enabled = ?, expires_at = ?, updated_at = ? WHERE id = ?",
                    (name, int(enabled), expires, now, key_id),
                )
                revision = await bump_revision(db)
            else:
                revision = await current_revision(db)
            key = await load_key(db, key_id)
        return Written(key, revision)

    async def delete_key(self, principal: Principal, key_id: str) -> int:
        async with self._write() as db:
            await authorize_key(db, principal, access.DELETE_KEY, key_id)
            await fetch_all(db, "DELETE FROM keys WHERE id = ?", (key_id,))
            return await bump_revision(db)

    async def set_permissions(self, principal: Principal, key_id: str, names: Sequence[str]) -> Written[KeyRecord]:
        now = now_ms()
        async with self._write() as db:
            api_id = await authorize_key(db, principal, access.UPDATE_KEY, key_id)
            permission_ids, created = await resolve_permissions(db, principal, api_id, names, now)
            changed = await replace_links(db, "key_permissions", "key_id", "permission_id", key_id, permission_ids)
            revision = await finish_key_change(db, key_id, now, changed or bool(created))
            key = await load_key(db, key_id)
        return Written(key, revision, created)

    async def set_roles(self, principal: Principal, key_id: str, role_names: Sequence[str]) -> Written[KeyRecord]:
        now = now_ms()
        async with self._write() as db:
            api_id = await authorize_key(db, principal, access.UPDATE_KEY, key_id)
            role_ids = await resolve_roles(db, api_id, role_names)
            changed = await replace_links(db, "key_roles", "key_id", "role_id", key_id, role_ids)
            revision = await finish_key_change(db, key_id, now, changed)
            key = await load_key(db, key_id)
        return Written(key, revision)

    async def verify_key(self, secret_hash: bytes) -> KeyVerification | None:
        # One statement: the key, its effective permissions and its roles in one snapshot.
        row = await self._query(
            "SELECT k.id, k.api_id, k.enabled, k.expires_at,"
            " (SELECT json_group_array(name) FROM ("
            "   SELECT p.name AS name FROM key_permissions kp"
            "   JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = k.id"
            "   UNION"
            "   SELECT p.name FROM key_roles kr JOIN role_permissions rp ON rp.role_id = kr.role_id"
            "   JOIN permissions p ON p.id = rp.permission_id WHERE kr.key_id = k.id)),"
            " (SELECT json_group_array(r.name) FROM key_roles kr JOIN roles r ON r.id = kr.role_id"
            "  WHERE kr.key_id = k.id)"
            " FROM keys k WHERE k.secret_hash = ?",
            (secret_hash,),
        )
        if row is None:
            return None
        return KeyVerification(
            row[0], row[1], bool(row[2]), row[3], tuple(sorted(json.loads(row[4]))), tuple(sorted(json.loads(row[5])))
        )

    # -- roles -------------------------------------------------------------------

    async def create_role(
        self, principal: Principal, api_id: str, name: str, description: str, permissions: Sequence[str]
    ) -> Written[RoleRecord]:
        role_id = new_id("role")
        now = now_ms()
        async with self._write() as db:
            await authorize_api(db, principal, access.CREATE_ROLE, api_id)
            if await fetch_one(db, "SELECT 1 FROM roles WHERE api_id = ? AND name = ?", (api_id, name)):
                raise AlreadyExists("role", name)
            permission_ids, created = await resolve_permissions(db, principal, api_id, permissions, now)
            await fetch_all(
                db,
                "INSERT INTO roles (id, api_id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (role_id, api_id, name, description, now, now),
            )
            await link(db, "role_permissions", "role_id", "permission_id", role_id, permission_ids)
            revision = await bump_revision(db)
            role = (await load_roles(db, [role_id]))[0]
        return Written(role, revision, created)

    async def get_role(self, principal: Principal, role_id: str) -> RoleRecord:
        async with self._read() as db:
            await authorize_role(db, principal, access.READ_ROLE, role_id)
            return (await load_roles(db, [role_id]))[0]

    async def set_role_permissions(
        self, principal: Principal, role_id: str, names: Sequence[str]
    ) -> Written[RoleRecord]:
        now = now_ms()
        async with self._write() as db:
            api_id = await authorize_role(db, principal, access.UPDATE_ROLE, role_id)
            permission_ids, created = await resolve_permissions(db, principal, api_id, names, now)
            changed = await replace_links(db, "role_permissions", "role_id", "permission_id", role_id, permission_ids)
            if changed or created:
                await fetch_all(db, "UPDATE roles SET updated_at = ? WHERE id = ?", (now, role_id))
                revision = await bump_revision(db)
            else:
                revision = await current_revision(db)
            role = (await load_roles(db, [role_id]))[0]
        return Written(role, revision, created)
