"""The SQL of root keys, and authentication's lookup by secret."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from keyscope_server.store.models import RootKeyGrant, RootKeyRecord
from keyscope_server.store.states import RootKeyState

__all__ = ["FIND_ROOT_KEY", "PostgresRootKeys", "grant"]

FIND_ROOT_KEY = (
    "SELECT m.revision, r.id, r.enabled, r.expires_at,"
    " ARRAY(SELECT name FROM root_key_permissions WHERE root_key_id = r.id)"
    " FROM meta m LEFT JOIN root_keys r ON r.secret_hash = $1"
)


def grant(row: asyncpg.Record) -> RootKeyGrant | None:
    if row[1] is None:
        return None
    return RootKeyGrant(row[1], tuple(row[4]), row[2], row[3], row[0])


class PostgresRootKeys:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(
        self,
        root_key_id: str,
        name: str,
        secret_hash: bytes,
        permissions: Sequence[str],
        expires_ms: int | None,
        now: int,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO root_keys (id, name, secret_hash, enabled, expires_at, created_at)"
            " VALUES ($1, $2, $3, TRUE, $4, $5)",
            root_key_id,
            name,
            secret_hash,
            expires_ms,
            now,
        )
        await self._conn.execute(
            "INSERT INTO root_key_permissions (root_key_id, name) SELECT $1, unnest($2::text[])",
            root_key_id,
            list(permissions),
        )

    async def state(self, root_key_id: str) -> RootKeyState | None:
        row = await self._conn.fetchrow(
            "SELECT r.name, r.enabled, r.expires_at, ARRAY(SELECT name FROM root_key_permissions"
            " WHERE root_key_id = r.id) FROM root_keys r WHERE r.id = $1",
            root_key_id,
        )
        return None if row is None else RootKeyState(row[0], row[1], row[2], tuple(row[3]))

    async def set_enabled(self, root_key_id: str, enabled: bool) -> None:
        await self._conn.execute("UPDATE root_keys SET enabled = $1 WHERE id = $2", enabled, root_key_id)

    async def delete(self, root_key_id: str) -> None:
        await self._conn.execute("DELETE FROM root_keys WHERE id = $1", root_key_id)

    async def all(self) -> list[RootKeyRecord]:
        records = await self._conn.fetch(
            "SELECT r.id, r.name, r.enabled, r.expires_at, r.created_at,"
            " ARRAY(SELECT name FROM root_key_permissions WHERE root_key_id = r.id ORDER BY name)"
            " FROM root_keys r ORDER BY r.created_at, r.id"
        )
        return [RootKeyRecord(r[0], r[1], tuple(r[5]), r[2], r[3], r[4]) for r in records]
