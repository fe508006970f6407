"""The SQL of keys: the key itself, its direct permissions and roles, and VerifyKey's lookup by secret."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from keyscope_server.errors import NotFound
from keyscope_server.store.authorization import etag_of
from keyscope_server.store.engine import Current
from keyscope_server.store.models import KeyQuery, KeyRecord, KeyVerification, NewKey, PermissionEntry
from keyscope_server.store.postgresql.apis import by_name, named_permissions
from keyscope_server.store.postgresql.links import KEY_PERMISSIONS, KEY_ROLES, add_links
from keyscope_server.store.postgresql.roles import load_roles
from keyscope_server.store.states import KeyState

if TYPE_CHECKING:
    from keyscope_server.store.postgresql.read_ahead import ReadAhead

__all__ = ["FIND_KEY", "KEY_STATE", "PostgresKeys", "key_state", "verification"]

# One statement, hence one snapshot: the store's revision, the key, its effective permissions and roles.
FIND_KEY = (
    "SELECT m.revision, k.id, k.api_id, k.enabled, k.expires_at,"
    " ARRAY(SELECT p.name FROM key_permissions kp"
    "   JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = k.id"
    "   UNION"
    "   SELECT p.name FROM key_roles kr JOIN role_permissions rp ON rp.role_id = kr.role_id"
    "   JOIN permissions p ON p.id = rp.permission_id WHERE kr.key_id = k.id),"
    " ARRAY(SELECT r.name FROM key_roles kr JOIN roles r ON r.id = kr.role_id WHERE kr.key_id = k.id)"
    " FROM meta m LEFT JOIN keys k ON k.secret_hash = $1"
)


def verification(row: asyncpg.Record) -> KeyVerification | None:
    if row[1] is None:
        return None
    return KeyVerification(row[1], row[2], row[3], row[4], tuple(sorted(row[5])), tuple(sorted(row[6])), row[0])


# A key's state (KeyState) as columns of a query of `keys k`.
KEY_STATE = (
    "k.name, k.enabled, k.expires_at,"
    " ARRAY(SELECT p.name FROM key_permissions kp JOIN permissions p ON p.id = kp.permission_id"
    "  WHERE kp.key_id = k.id),"
    " ARRAY(SELECT r.name FROM key_roles kr JOIN roles r ON r.id = kr.role_id WHERE kr.key_id = k.id)"
)


def key_state(row: Sequence[Any]) -> KeyState:
    return KeyState(row[0], row[1], row[2], tuple(row[3]), tuple(row[4]))


class PostgresKeys:
    def __init__(self, conn: asyncpg.Connection, ahead: ReadAhead | None = None) -> None:
        self._conn = conn
        self._ahead = ahead  # in a write batch: the keys its writes read first, read for all at once

    async def insert(self, key_id: str, new: NewKey, now: int) -> None:
        await self._conn.execute(
            "INSERT INTO keys (id, api_id, secret_hash, start, name, enabled, expires_at, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            key_id,
            new.api_id,
            new.secret_hash,
            new.start,
            new.name,
            new.enabled,
            new.expires_ms,
            now,
        )

    async def current(self, key_id: str, permission_names: Sequence[str] = ()) -> Current[KeyState] | None:
        if self._ahead is not None:
            read, current = self._ahead.take(key_id, permission_names)
            if read:
                return current
        row = await self._conn.fetchrow(
            f"SELECT k.api_id, k.etag_revision, {named_permissions('k.api_id', 2)}, {KEY_STATE}"
            " FROM keys k WHERE k.id = $1",
            key_id,
            list(permission_names),
        )
        return None if row is None else Current(str(row[0]), int(row[1]), key_state(row[3:]), by_name(row[2]))

    async def load(self, key_id: str) -> KeyRecord:
        row = await self._conn.fetchrow(
            "SELECT id, api_id, name, start, enabled, expires_at, created_at, updated_at, etag_revision,"
            " ARRAY(SELECT ROW(p.id, p.name, p.description) FROM key_permissions kp"
            "  JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = k.id ORDER BY p.name),"
            " ARRAY(SELECT role_id FROM key_roles WHERE key_id = k.id)"
            " FROM keys k WHERE id = $1",
            key_id,
        )
        if row is None:
            raise NotFound("key", [key_id])
        permissions = tuple(PermissionEntry(*p) for p in row[9])
        roles = tuple(await load_roles(self._conn, row[10])) if row[10] else ()
        return KeyRecord(
            row[0], row[1], row[2], row[3], row[4], row[5], permissions, roles, row[6], row[7], etag_of(row[8])
        )

    async def state(self, key_id: str) -> KeyState:
        row = await self._conn.fetchrow(f"SELECT {KEY_STATE} FROM keys k WHERE k.id = $1", key_id)
        assert row is not None
        return key_state(row)

    async def update(self, key_id: str, name: str, enabled: bool, expires_ms: int | None) -> None:
        await self._conn.execute(
            "UPDATE keys SET name = $1, enabled = $2, expires_at = $3 WHERE id = $4", name, enabled, expires_ms, key_id
        )

    async def delete(self, key_id: str) -> None:
        await self._conn.execute("DELETE FROM keys WHERE id = $1", key_id)

    async def add_permissions(self, key_id: str, permission_ids: Sequence[str]) -> None:
        await add_links(self._conn, KEY_PERMISSIONS, key_id, permission_ids)

    async def add_roles(self, key_id: str, role_ids: Sequence[str]) -> None:
        await add_links(self._conn, KEY_ROLES, key_id, role_ids)

    async def ids(self, query: KeyQuery) -> list[str]:
        # Filters left out are NULL: one statement, so one plan, for every combination.
        records = await self._conn.fetch(
            "SELECT k.id FROM keys k WHERE k.api_id = $1 AND k.id > $2"
            " AND ($3::boolean IS NULL OR k.enabled = $3)"
            " AND ($4::text IS NULL"
            "  OR k.id IN (SELECT kp.key_id FROM key_permissions kp JOIN permissions p ON p.id = kp.permission_id"
            "   WHERE p.api_id = $1 AND p.name = $4)"
            "  OR k.id IN (SELECT kr.key_id FROM key_roles kr JOIN role_permissions rp ON rp.role_id = kr.role_id"
            "   JOIN permissions p ON p.id = rp.permission_id WHERE p.api_id = $1 AND p.name = $4))"
            " AND ($5::text IS NULL OR k.id IN (SELECT kr.key_id FROM key_roles kr JOIN roles r ON r.id = kr.role_id"
            "  WHERE r.api_id = $1 AND r.name = $5))"
            " ORDER BY k.id LIMIT $6",
            query.api_id,
            query.after,
            query.enabled,
            query.permission or None,
            query.role or None,
            query.limit,
        )
        return [r[0] for r in records]
