"""The link tables (key_permissions, key_roles, role_permissions): an owner's links, added or replaced whole."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

__all__ = ["KEY_PERMISSIONS", "KEY_ROLES", "ROLE_PERMISSIONS", "add_links", "replace_links", "touch"]

# (table, owner column, target column): the only tables and columns these functions put into SQL.
KEY_PERMISSIONS = ("key_permissions", "key_id", "permission_id")
KEY_ROLES = ("key_roles", "key_id", "role_id")
ROLE_PERMISSIONS = ("role_permissions", "role_id", "permission_id")


async def add_links(
    conn: asyncpg.Connection, links: tuple[str, str, str], owner_id: str, target_ids: Sequence[str]
) -> None:
    if not target_ids:
        return
    table, owner, target = links
    await conn.execute(
        f"INSERT INTO {table} ({owner}, {target}) SELECT $1, unnest($2::text[])", owner_id, list(target_ids)
    )


async def replace_links(
    conn: asyncpg.Connection, links: tuple[str, str, str], owner_id: str, target_ids: Sequence[str]
) -> bool:
    """Make the owner's links exactly `target_ids`; True if that changed anything."""
    table, owner, target = links
    records = await conn.fetch(f"DELETE FROM {table} WHERE {owner} = $1 RETURNING {target}", owner_id)
    await add_links(conn, links, owner_id, target_ids)
    return {r[0] for r in records} != set(target_ids)


async def touch(conn: asyncpg.Connection, table: str, ids: Sequence[str], revision: int, now: int) -> None:
    """Mark rows of `table` (apis, keys, roles) as changed at `revision` (their etag) and at `now`."""
    await conn.execute(
        f"UPDATE {table} SET updated_at = $1, etag_revision = $2 WHERE id = ANY($3::text[])", now, revision, list(ids)
    )
