"""The SQL of APIs and their catalogs (scopes)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from keyscope_server.errors import NotFound
from keyscope_server.store.authorization import etag_of
from keyscope_server.store.models import ApiRecord, PermissionEntry
from keyscope_server.store.states import ApiState

__all__ = ["PostgresApis", "by_name", "named_permissions"]


def named_permissions(api_column: str, names: int) -> str:
    """A column of a query: the entries of the catalog of the API in `api_column` named in parameter number
    `names` (an array), as rows (id, name, description); by_name reads it."""
    return (
        "ARRAY(SELECT ROW(p.id, p.name, p.description) FROM permissions p"
        f" WHERE p.api_id = {api_column} AND p.name = ANY(${names}::text[]))"
    )


def by_name(entries: Sequence[Sequence[str]]) -> dict[str, PermissionEntry]:
    return {entry[1]: PermissionEntry(*entry) for entry in entries}


class PostgresApis:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, api_id: str, name: str, now: int) -> None:
        await self._conn.execute(
            "INSERT INTO apis (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)", api_id, name, now
        )

    async def etag_revision(self, api_id: str) -> int | None:
        value = await self._conn.fetchval("SELECT etag_revision FROM apis WHERE id = $1", api_id)
        return None if value is None else int(value)

    async def load(self, api_id: str) -> ApiRecord:
        row = await self._conn.fetchrow(
            "SELECT id, name, created_at, updated_at, etag_revision,"
            " ARRAY(SELECT ROW(p.id, p.name, p.description) FROM permissions p WHERE p.api_id = a.id"
            " ORDER BY p.name) FROM apis a WHERE a.id = $1",
            api_id,
        )
        if row is None:
            raise NotFound("api", [api_id])
        scopes = tuple(PermissionEntry(*r) for r in row[5])
        return ApiRecord(row[0], row[1], scopes, row[2], row[3], etag_of(row[4]))

    async def state(self, api_id: str) -> ApiState:
        row = await self._conn.fetchrow(
            "SELECT a.name, ARRAY(SELECT ROW(p.name, p.description) FROM permissions p WHERE p.api_id = a.id"
            " ORDER BY p.name) FROM apis a WHERE a.id = $1",
            api_id,
        )
        assert row is not None
        return ApiState(row[0], tuple((v, d) for v, d in row[1]))

    async def catalog(self, api_id: str) -> list[PermissionEntry]:
        records = await self._conn.fetch("SELECT id, name, description FROM permissions WHERE api_id = $1", api_id)
        return [PermissionEntry(*r) for r in records]

    async def permissions_named(self, api_id: str, names: Sequence[str]) -> dict[str, PermissionEntry]:
        records = await self._conn.fetch(
            "SELECT id, name, description FROM permissions WHERE api_id = $1 AND name = ANY($2::text[])",
            api_id,
            list(names),
        )
        return {r[1]: PermissionEntry(*r) for r in records}

    async def add_permissions(self, api_id: str, entries: Sequence[PermissionEntry], now: int) -> None:
        if not entries:
            return
        await self._conn.execute(
            "INSERT INTO permissions (id, api_id, name, description, created_at)"
            " SELECT e.id, $1, e.name, e.description, $2"
            " FROM unnest($3::text[], $4::text[], $5::text[]) AS e (id, name, description)",
            api_id,
            now,
            [p.id for p in entries],
            [p.name for p in entries],
            [p.description for p in entries],
        )

    async def describe_permissions(self, descriptions: Sequence[tuple[str, str]]) -> None:
        if not descriptions:
            return
        await self._conn.execute(
            "UPDATE permissions SET description = d.description"
            " FROM unnest($1::text[], $2::text[]) AS d (id, description) WHERE permissions.id = d.id",
            [d[0] for d in descriptions],
            [d[1] for d in descriptions],
        )

    async def remove_permissions(self, permission_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        ids = list(permission_ids)
        row = await self._conn.fetchrow(
            "SELECT ARRAY(SELECT DISTINCT key_id FROM key_permissions WHERE permission_id = ANY($1::text[])),"
            " ARRAY(SELECT DISTINCT role_id FROM role_permissions WHERE permission_id = ANY($1::text[]))",
            ids,
        )
        assert row is not None
        # ON DELETE CASCADE takes the grants to keys and roles with them.
        await self._conn.execute("DELETE FROM permissions WHERE id = ANY($1::text[])", ids)
        return list(row[0]), list(row[1])

    async def ids_after(self, after: str, limit: int) -> list[str]:
        records = await self._conn.fetch("SELECT id FROM apis WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
        return [r[0] for r in records]

    async def catalog_after(self, api_id: str, after: str, limit: int) -> list[PermissionEntry]:
        records = await self._conn.fetch(
            "SELECT id, name, description FROM permissions WHERE api_id = $1 AND name > $2 ORDER BY name LIMIT $3",
            api_id,
            after,
            limit,
        )
        return [PermissionEntry(*r) for r in records]

    async def contents(self, api_id: str) -> tuple[int, int, int]:
        row = await self._conn.fetchrow(
            "SELECT (SELECT count(*) FROM keys WHERE api_id = $1), (SELECT count(*) FROM roles WHERE api_id = $1),"
            " (SELECT count(*) FROM permissions WHERE api_id = $1)",
            api_id,
        )
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    async def delete(self, api_id: str) -> None:
        # ON DELETE CASCADE takes its catalog, keys and roles, and their links, with it.
        await self._conn.execute("DELETE FROM apis WHERE id = $1", api_id)
