"""The SQL of roles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from keyscope_server.errors import NotFound
from keyscope_server.store.authorization import etag_of
from keyscope_server.store.engine import Current
from keyscope_server.store.models import PermissionEntry, RoleRecord
from keyscope_server.store.postgresql.apis import by_name, named_permissions
from keyscope_server.store.postgresql.links import ROLE_PERMISSIONS, add_links
from keyscope_server.store.states import RoleState

__all__ = ["PostgresRoles", "load_roles"]


async def load_roles(conn: asyncpg.Connection, role_ids: Sequence[str]) -> list[RoleRecord]:
    """The roles, by name; NotFound names the ids that are not there."""
    records = await conn.fetch(
        "SELECT r.id, r.api_id, r.name, r.description, r.created_at, r.updated_at, r.etag_revision,"
        " ARRAY(SELECT ROW(p.id, p.name, p.description) FROM role_permissions rp"
        "  JOIN permissions p ON p.id = rp.permission_id WHERE rp.role_id = r.id ORDER BY p.name)"
        " FROM roles r WHERE r.id = ANY($1::text[]) ORDER BY r.name",
        list(role_ids),
    )
    found = {r[0] for r in records}
    if len(found) != len(set(role_ids)):
        raise NotFound("role", [role_id for role_id in role_ids if role_id not in found])
    return [
        RoleRecord(r[0], r[1], r[2], r[3], tuple(PermissionEntry(*p) for p in r[7]), r[4], r[5], etag_of(r[6]))
        for r in records
    ]


# A role's state (RoleState) as columns of a query of `roles r`.
_STATE = (
    "r.name, r.description, ARRAY(SELECT p.name FROM role_permissions rp"
    " JOIN permissions p ON p.id = rp.permission_id WHERE rp.role_id = r.id)"
)


def _state(row: Sequence[Any]) -> RoleState:
    return RoleState(row[0], row[1], tuple(row[2]))


class PostgresRoles:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, role_id: str, api_id: str, name: str, description: str, now: int) -> None:
        await self._conn.execute(
            "INSERT INTO roles (id, api_id, name, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
            role_id,
            api_id,
            name,
            description,
            now,
        )

    async def current(self, role_id: str, permission_names: Sequence[str] = ()) -> Current[RoleState] | None:
        row = await self._conn.fetchrow(
            f"SELECT r.api_id, r.etag_revision, {named_permissions('r.api_id', 2)}, {_STATE}"
            " FROM roles r WHERE r.id = $1",
            role_id,
            list(permission_names),
        )
        return None if row is None else Current(str(row[0]), int(row[1]), _state(row[3:]), by_name(row[2]))

    async def named(self, api_id: str, names: Sequence[str]) -> dict[str, str]:
        records = await self._conn.fetch(
            "SELECT id, name FROM roles WHERE api_id = $1 AND name = ANY($2::text[])", api_id, list(names)
        )
        return {r[1]: r[0] for r in records}

    async def load(self, role_id: str) -> RoleRecord:
        return (await load_roles(self._conn, [role_id]))[0]

    async def state(self, role_id: str) -> RoleState:
        row = await self._conn.fetchrow(f"SELECT {_STATE} FROM roles r WHERE r.id = $1", role_id)
        assert row is not None
        return _state(row)

    async def add_permissions(self, role_id: str, permission_ids: Sequence[str]) -> None:
        await add_links(self._conn, ROLE_PERMISSIONS, role_id, permission_ids)

    async def ids_after(self, api_id: str, after: str, limit: int) -> list[str]:
        records = await self._conn.fetch(
            "SELECT id FROM roles WHERE api_id = $1 AND name > $2 ORDER BY name LIMIT $3", api_id, after, limit
        )
        return [r[0] for r in records]

    async def holders(self, role_id: str) -> list[str]:
        records = await self._conn.fetch("SELECT key_id FROM key_roles WHERE role_id = $1", role_id)
        return [r[0] for r in records]

    async def delete(self, role_id: str) -> None:
        # ON DELETE CASCADE takes its links to keys and permissions with it.
        await self._conn.execute("DELETE FROM roles WHERE id = $1", role_id)
