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
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from server import access
from server.access import Principal
from server.credentials import new_id
from server.errors import AlreadyExists, NotFound, PermissionDenied, StoreUnavailable, Unauthenticated
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
from server.store.sqlite_schema import LATEST_VERSION, MIGRATIONS
from server.validation import ScopeSpec

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(values: Sequence[Any]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


@contextmanager
def _store_faults() -> Iterator[None]:
    """Turn SQLite's operational failures into StoreUnavailable; constraint violations are bugs."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.DatabaseError as exc:
        log.warning("store failure: %s: %s", type(exc).__name__, exc)
        raise StoreUnavailable() from exc


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    # execute_fetchall runs, fetches and closes in one trip to the connection's thread.
    return list(await db.execute_fetchall(sql, params))  # type: ignore[arg-type]


async def _one(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = await _rows(db, sql, params)
    return rows[0] if rows else None


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.execute_fetchall("ROLLBACK")
    except (sqlite3.Error, ValueError):
        pass  # no transaction left to end, or the connection is gone


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
            with _store_faults():
                for _ in range(2):
                    db = await aiosqlite.connect(path, isolation_level=None)
                    connections.append(db)
                    await db.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                    await db.execute_fetchall("PRAGMA foreign_keys = ON")
                    await db.execute_fetchall("PRAGMA synchronous = FULL")
                writer, reader = connections
                await writer.execute_fetchall("PRAGMA journal_mode = WAL")
                await _migrate(writer)
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
            with _store_faults():
                await db.execute_fetchall("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute_fetchall("COMMIT")
                except BaseException:
                    # Shielded: a cancelled call still queues its rollback before
                    # the lock lets the next transaction in.
                    await asyncio.shield(_rollback(db))
                    raise

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._read_lock:
            self._check_open()
            db = self._reader
            with _store_faults():
                await db.execute_fetchall("BEGIN")
                try:
                    yield db
                finally:
                    await asyncio.shield(_rollback(db))

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """A read that is one statement, hence one snapshot, with no transaction around it."""
        async with self._read_lock:
            self._check_open()
            with _store_faults():
                return await _one(self._reader, sql, params)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")

    # -- root keys -----------------------------------------------------------

    async def create_root_key(self, name: str, secret_hash: bytes, permissions: Sequence[str],
                              expires_ms: int | None = None) -> RootKeyRecord:
        root_key_id = new_id("root")
        now = _now_ms()
        unique = sorted(set(permissions))
        async with self._write() as db:
            await _rows(db, "INSERT INTO root_keys (id, name, secret_hash, enabled, expires_at, created_at)"
                            " VALUES (?, ?, ?, 1, ?, ?)", (root_key_id, name, secret_hash, expires_ms, now))
            await _rows(db, "INSERT INTO root_key_permissions (root_key_id, name)"
                            " SELECT ?, value FROM json_each(?)", (root_key_id, _json(unique)))
            await _bump(db)
        return RootKeyRecord(root_key_id, name, tuple(unique), True, expires_ms, now)

    async def set_root_key_enabled(self, root_key_id: str, enabled: bool) -> None:
        async with self._write() as db:
            rows = await _rows(db, "UPDATE root_keys SET enabled = ? WHERE id = ? RETURNING id",
                               (int(enabled), root_key_id))
            if not rows:
                raise NotFound("root key", [root_key_id])
            await _bump(db)

    async def delete_root_key(self, root_key_id: str) -> None:
        async with self._write() as db:
            rows = await _rows(db, "DELETE FROM root_keys WHERE id = ? RETURNING id", (root_key_id,))
            if not rows:
                raise NotFound("root key", [root_key_id])
            await _bump(db)

    async def list_root_keys(self) -> list[RootKeyRecord]:
        async with self._read() as db:
            rows = await _rows(db, "SELECT r.id, r.name, r.enabled, r.expires_at, r.created_at,"
                                   " (SELECT json_group_array(name) FROM root_key_permissions"
                                   "  WHERE root_key_id = r.id) FROM root_keys r ORDER BY r.created_at, r.id")
        return [RootKeyRecord(r[0], r[1], tuple(sorted(json.loads(r[5]))), bool(r[2]), r[3], r[4])
                for r in rows]

    async def authenticate(self, secret_hash: bytes, now_ms: int) -> Principal:
        row = await self._query(
            "SELECT r.id, r.enabled, r.expires_at,"
            " (SELECT json_group_array(name) FROM root_key_permissions WHERE root_key_id = r.id)"
            " FROM root_keys r WHERE r.secret_hash = ?", (secret_hash,))
        if row is None:
            raise Unauthenticated("unknown root key")
        if not row[1]:
            raise Unauthenticated("the root key is disabled")
        if row[2] is not None and row[2] <= now_ms:
            raise Unauthenticated("the root key has expired")
        return Principal(row[0], tuple(json.loads(row[3])))

    # -- APIs -------------------------------------------------------------------

    async def create_api(self, principal: Principal, name: str,
                         scopes: Sequence[ScopeSpec]) -> Written[ApiRecord]:
        principal.require(access.CREATE_API)
        api_id = new_id("api")
        now = _now_ms()
        async with self._write() as db:
            await _rows(db, "INSERT INTO apis (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
                        (api_id, name, now, now))
            await _insert_permissions(db, api_id, [(s.value, s.description) for s in scopes], now)
            revision = await _bump(db)
            api = await _load_api(db, api_id)
        return Written(api, revision)

    async def get_api(self, principal: Principal, api_id: str) -> ApiRecord:
        async with self._read() as db:
            await _authorize_api(db, principal, access.READ_API, api_id)
            return await _load_api(db, api_id)

    async def update_scopes(self, principal: Principal, api_id: str,
                            scopes: Sequence[ScopeSpec]) -> ScopesUpdate:
        now = _now_ms()
        async with self._write() as db:
            await _authorize_api(db, principal, access.UPDATE_API, api_id)
            current = {r[1]: (r[0], r[2]) for r in await _rows(
                db, "SELECT id, name, description FROM permissions WHERE api_id = ?", (api_id,))}
            wanted = {s.value: s.description for s in scopes}
            removed = sorted(name for name in current if name not in wanted)
            removed_ids = _json([current[name][0] for name in removed])
            described = [[current[value][0], description] for value, description in wanted.items()
                         if value in current and current[value][1] != description]
            added = [(value, description) for value, description in wanted.items() if value not in current]
            keys_affected = roles_affected = 0
            if removed:
                keys_affected, roles_affected = await _grant_counts(db, removed_ids)
                # ON DELETE CASCADE takes the grants to keys and roles with them.
                await _rows(db, "DELETE FROM permissions WHERE id IN (SELECT value FROM json_each(?))",
                            (removed_ids,))
            if described:
                await _rows(db, "UPDATE permissions SET description = j.value ->> 1"
                                " FROM json_each(?) AS j WHERE permissions.id = j.value ->> 0",
                            (_json(described),))
            await _insert_permissions(db, api_id, added, now)
            if removed or described or added:
                await _rows(db, "UPDATE apis SET updated_at = ? WHERE id = ?", (now, api_id))
                revision = await _bump(db)
            else:
                revision = await _current_revision(db)
            api = await _load_api(db, api_id)
        return ScopesUpdate(api, tuple(removed), keys_affected, roles_affected, revision)

    # -- keys -------------------------------------------------------------------

    async def create_key(self, principal: Principal, new: NewKey) -> Written[KeyRecord]:
        key_id = new_id("key")
        now = _now_ms()
        async with self._write() as db:
            await _authorize_api(db, principal, access.CREATE_KEY, new.api_id)
            role_ids = await _resolve_roles(db, new.api_id, new.roles)
            permission_ids, created = await _resolve_permissions(db, principal, new.api_id, new.permissions, now)
            await _rows(db, "INSERT INTO keys (id, api_id, secret_hash, start, name, enabled, expires_at,"
                            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key_id, new.api_id, new.secret_hash, new.start, new.name, int(new.enabled),
                         new.expires_ms, now, now))
            await _link(db, "key_permissions", "key_id", "permission_id", key_id, permission_ids)
            await _link(db, "key_roles", "key_id", "role_id", key_id, role_ids)
            revision = await _bump(db)
            key = await _load_key(db, key_id)
        return Written(key, revision, created)

    async def get_key(self, principal: Principal, key_id: str) -> KeyRecord:
        async with self._read() as db:
            await _authorize_key(db, principal, access.READ_KEY, key_id)
            return await _load_key(db, key_id)

    async def update_key(self, principal: Principal, key_id: str, changes: KeyChanges) -> Written[KeyRecord]:
        now = _now_ms()
        async with self._write() as db:
            await _authorize_key(db, principal, access.UPDATE_KEY, key_id)
            row = await _one(db, "SELECT name, enabled, expires_at FROM keys WHERE id = ?", (key_id,))
            assert row is not None
            name = row[0] if changes.name is None else changes.name
            enabled = bool(row[1]) if changes.enabled is None else changes.enabled
            expires = None if changes.clear_expiry else (row[2] if changes.expires_ms is None else changes.expires_ms)
            if (name, enabled, expires) != (row[0], bool(row[1]), row[2]):
                await _rows(db, "UPDATE keys SET name = ?, enabled = ?, expires_at = ?, updated_at = ?"
                                " WHERE id = ?", (name, int(enabled), expires, now, key_id))
                revision = await _bump(db)
            else:
                revision = await _current_revision(db)
            key = await _load_key(db, key_id)
        return Written(key, revision)

    async def delete_key(self, principal: Principal, key_id: str) -> int:
        async with self._write() as db:
            await _authorize_key(db, principal, access.DELETE_KEY, key_id)
            await _rows(db, "DELETE FROM keys WHERE id = ?", (key_id,))
            return await _bump(db)

    async def set_permissions(self, principal: Principal, key_id: str,
                              names: Sequence[str]) -> Written[KeyRecord]:
        now = _now_ms()
        async with self._write() as db:
            api_id = await _authorize_key(db, principal, access.UPDATE_KEY, key_id)
            permission_ids, created = await _resolve_permissions(db, principal, api_id, names, now)
            changed = await _replace_links(db, "key_permissions", "key_id", "permission_id", key_id, permission_ids)
            revision = await _finish_key_change(db, key_id, now, changed or bool(created))
            key = await _load_key(db, key_id)
        return Written(key, revision, created)

    async def set_roles(self, principal: Principal, key_id: str, role_names: Sequence[str]) -> Written[KeyRecord]:
        now = _now_ms()
        async with self._write() as db:
            api_id = await _authorize_key(db, principal, access.UPDATE_KEY, key_id)
            role_ids = await _resolve_roles(db, api_id, role_names)
            changed = await _replace_links(db, "key_roles", "key_id", "role_id", key_id, role_ids)
            revision = await _finish_key_change(db, key_id, now, changed)
            key = await _load_key(db, key_id)
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
            " FROM keys k WHERE k.secret_hash = ?", (secret_hash,))
        if row is None:
            return None
        return KeyVerification(row[0], row[1], bool(row[2]), row[3],
                               tuple(sorted(json.loads(row[4]))), tuple(sorted(json.loads(row[5]))))

    # -- roles -------------------------------------------------------------------

    async def create_role(self, principal: Principal, api_id: str, name: str, description: str,
                          permissions: Sequence[str]) -> Written[RoleRecord]:
        role_id = new_id("role")
        now = _now_ms()
        async with self._write() as db:
            await _authorize_api(db, principal, access.CREATE_ROLE, api_id)
            if await _one(db, "SELECT 1 FROM roles WHERE api_id = ? AND name = ?", (api_id, name)):
                raise AlreadyExists("role", name)
            permission_ids, created = await _resolve_permissions(db, principal, api_id, permissions, now)
            await _rows(db, "INSERT INTO roles (id, api_id, name, description, created_at, updated_at)"
                            " VALUES (?, ?, ?, ?, ?, ?)", (role_id, api_id, name, description, now, now))
            await _link(db, "role_permissions", "role_id", "permission_id", role_id, permission_ids)
            revision = await _bump(db)
            role = (await _load_roles(db, [role_id]))[0]
        return Written(role, revision, created)

    async def get_role(self, principal: Principal, role_id: str) -> RoleRecord:
        async with self._read() as db:
            await _authorize_role(db, principal, access.READ_ROLE, role_id)
            return (await _load_roles(db, [role_id]))[0]

    async def set_role_permissions(self, principal: Principal, role_id: str,
                                   names: Sequence[str]) -> Written[RoleRecord]:
        now = _now_ms()
        async with self._write() as db:
            api_id = await _authorize_role(db, principal, access.UPDATE_ROLE, role_id)
            permission_ids, created = await _resolve_permissions(db, principal, api_id, names, now)
            changed = await _replace_links(db, "role_permissions", "role_id", "permission_id", role_id,
                                           permission_ids)
            if changed or created:
                await _rows(db, "UPDATE roles SET updated_at = ? WHERE id = ?", (now, role_id))
                revision = await _bump(db)
            else:
                revision = await _current_revision(db)
            role = (await _load_roles(db, [role_id]))[0]
        return Written(role, revision, created)


# -- schema ------------------------------------------------------------------------


async def _migrate(db: aiosqlite.Connection) -> None:
    # Another process may be migrating too: read the version inside the write lock.
    await db.execute_fetchall("BEGIN IMMEDIATE")
    try:
        version = (await _rows(db, "PRAGMA user_version"))[0][0]
        if version > LATEST_VERSION:
            raise StoreUnavailable(f"the database has schema version {version}, newer than this server "
                                   f"knows ({LATEST_VERSION}); upgrade the server")
        for number in range(version + 1, LATEST_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                await db.execute_fetchall(statement)
            await db.execute_fetchall(f"PRAGMA user_version = {number}")
            log.info("store schema migrated to version %d", number)
        await db.execute_fetchall("COMMIT")
    except BaseException:
        await _rollback(db)
        raise


# -- steps shared by the operations ---------------------------------------------------


async def _bump(db: aiosqlite.Connection) -> int:
    row = await _one(db, "UPDATE meta SET revision = revision + 1 RETURNING revision")
    assert row is not None
    return int(row[0])


async def _current_revision(db: aiosqlite.Connection) -> int:
    row = await _one(db, "SELECT revision FROM meta")
    assert row is not None
    return int(row[0])


async def _authorize_api(db: aiosqlite.Connection, principal: Principal, action: access.Action,
                         api_id: str) -> None:
    hidden = NotFound("api", [api_id])
    if await _one(db, "SELECT 1 FROM apis WHERE id = ?", (api_id,)) is None:
        raise hidden
    principal.authorize(action, api_id, hidden)


async def _authorize_key(db: aiosqlite.Connection, principal: Principal, action: access.Action,
                         key_id: str) -> str:
    """The key's API id, once the caller may act on the key."""
    hidden = NotFound("key", [key_id])
    row = await _one(db, "SELECT api_id FROM keys WHERE id = ?", (key_id,))
    if row is None:
        raise hidden
    principal.authorize(action, row[0], hidden)
    return str(row[0])


async def _authorize_role(db: aiosqlite.Connection, principal: Principal, action: access.Action,
                          role_id: str) -> str:
    hidden = NotFound("role", [role_id])
    row = await _one(db, "SELECT api_id FROM roles WHERE id = ?", (role_id,))
    if row is None:
        raise hidden
    principal.authorize(action, row[0], hidden)
    return str(row[0])


async def _insert_permissions(db: aiosqlite.Connection, api_id: str, entries: Sequence[tuple[str, str]],
                              now: int) -> list[PermissionEntry]:
    created = [PermissionEntry(new_id("perm"), name, description) for name, description in entries]
    if created:
        await _rows(db, "INSERT INTO permissions (id, api_id, name, description, created_at)"
                        " SELECT j.value ->> 0, ?, j.value ->> 1, j.value ->> 2, ? FROM json_each(?) AS j",
                    (api_id, now, _json([[p.id, p.name, p.description] for p in created])))
    return created


async def _resolve_permissions(db: aiosqlite.Connection, principal: Principal, api_id: str,
                               names: Sequence[str], now: int) -> tuple[list[str], tuple[PermissionEntry, ...]]:
    """Ids of the named catalog entries, creating the unknown ones if the caller may."""
    if not names:
        return [], ()
    found = {r[1]: r[0] for r in await _rows(
        db, "SELECT id, name FROM permissions WHERE api_id = ? AND name IN (SELECT value FROM json_each(?))",
        (api_id, _json(names)))}
    unknown = [name for name in dict.fromkeys(names) if name not in found]
    created: list[PermissionEntry] = []
    if unknown:
        required = access.CREATE_PERMISSION.permission(api_id)
        if not principal.allows(required):
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise PermissionDenied(
                required, reason="PERMISSIONS_NOT_IN_CATALOG", subjects=unknown,
                message=f"not in the API's catalog: {shown}; creating them needs {required}")
        created = await _insert_permissions(db, api_id, [(name, "") for name in unknown], now)
        found.update((p.name, p.id) for p in created)
    return list(dict.fromkeys(found[name] for name in names)), tuple(created)


async def _resolve_roles(db: aiosqlite.Connection, api_id: str, names: Sequence[str]) -> list[str]:
    if not names:
        return []
    found = {r[1]: r[0] for r in await _rows(
        db, "SELECT id, name FROM roles WHERE api_id = ? AND name IN (SELECT value FROM json_each(?))",
        (api_id, _json(names)))}
    unknown = [name for name in dict.fromkeys(names) if name not in found]
    if unknown:
        raise NotFound("role", unknown)
    return list(dict.fromkeys(found[name] for name in names))


async def _link(db: aiosqlite.Connection, table: str, owner_column: str, target_column: str,
                owner_id: str, target_ids: Sequence[str]) -> None:
    if target_ids:
        await _rows(db, f"INSERT INTO {table} ({owner_column}, {target_column})"
                        " SELECT ?, value FROM json_each(?)", (owner_id, _json(target_ids)))


async def _replace_links(db: aiosqlite.Connection, table: str, owner_column: str, target_column: str,
                         owner_id: str, target_ids: Sequence[str]) -> bool:
    """Make the owner's links exactly `target_ids`; True if that changed anything."""
    current = {r[0] for r in await _rows(db, f"SELECT {target_column} FROM {table} WHERE {owner_column} = ?",
                                         (owner_id,))}
    if current == set(target_ids):
        return False
    await _rows(db, f"DELETE FROM {table} WHERE {owner_column} = ?", (owner_id,))
    await _link(db, table, owner_column, target_column, owner_id, target_ids)
    return True


async def _finish_key_change(db: aiosqlite.Connection, key_id: str, now: int, changed: bool) -> int:
    if not changed:
        return await _current_revision(db)
    await _rows(db, "UPDATE keys SET updated_at = ? WHERE id = ?", (now, key_id))
    return await _bump(db)


async def _grant_counts(db: aiosqlite.Connection, permission_ids_json: str) -> tuple[int, int]:
    row = await _one(
        db,
        "SELECT (SELECT COUNT(DISTINCT key_id) FROM key_permissions"
        "        WHERE permission_id IN (SELECT value FROM json_each(?1))),"
        "       (SELECT COUNT(DISTINCT role_id) FROM role_permissions"
        "        WHERE permission_id IN (SELECT value FROM json_each(?1)))",
        (permission_ids_json,))
    assert row is not None
    return int(row[0]), int(row[1])


# -- loading whole resources --------------------------------------------------------------


async def _load_api(db: aiosqlite.Connection, api_id: str) -> ApiRecord:
    row = await _one(db, "SELECT id, name, created_at, updated_at FROM apis WHERE id = ?", (api_id,))
    if row is None:
        raise NotFound("api", [api_id])
    scopes = tuple(PermissionEntry(*r) for r in await _rows(
        db, "SELECT id, name, description FROM permissions WHERE api_id = ? ORDER BY name", (api_id,)))
    return ApiRecord(row[0], row[1], scopes, row[2], row[3])


async def _load_roles(db: aiosqlite.Connection, role_ids: Sequence[str]) -> list[RoleRecord]:
    ids = _json(role_ids)
    grants: dict[str, list[PermissionEntry]] = {role_id: [] for role_id in role_ids}
    for r in await _rows(db, "SELECT rp.role_id, p.id, p.name, p.description FROM role_permissions rp"
                             " JOIN permissions p ON p.id = rp.permission_id"
                             " WHERE rp.role_id IN (SELECT value FROM json_each(?)) ORDER BY p.name", (ids,)):
        grants[r[0]].append(PermissionEntry(r[1], r[2], r[3]))
    rows = await _rows(db, "SELECT id, api_id, name, description, created_at, updated_at FROM roles"
                           " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY name", (ids,))
    if len(rows) != len(grants):
        raise NotFound("role", [role_id for role_id in role_ids if role_id not in {r[0] for r in rows}])
    return [RoleRecord(r[0], r[1], r[2], r[3], tuple(grants[r[0]]), r[4], r[5]) for r in rows]


async def _load_key(db: aiosqlite.Connection, key_id: str) -> KeyRecord:
    row = await _one(db, "SELECT id, api_id, name, start, enabled, expires_at, created_at, updated_at"
                         " FROM keys WHERE id = ?", (key_id,))
    if row is None:
        raise NotFound("key", [key_id])
    permissions = tuple(PermissionEntry(*r) for r in await _rows(
        db, "SELECT p.id, p.name, p.description FROM key_permissions kp"
            " JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = ? ORDER BY p.name", (key_id,)))
    role_ids = [r[0] for r in await _rows(db, "SELECT role_id FROM key_roles WHERE key_id = ?", (key_id,))]
    roles = tuple(await _load_roles(db, role_ids)) if role_ids else ()
    return KeyRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5], permissions, roles, row[6], row[7])
