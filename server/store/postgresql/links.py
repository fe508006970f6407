"""The link tables (key_permissions, key_roles, role_permissions): an owner's links, added or replaced whole."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

__all__ = ["KEY_PERMISSIONS", "KEY_ROLES", "ROLE_PERMISSIONS", "add_links", "replace_links"]

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
    """Make the owner's links exactly `target_ids`; True if that changed anything.

    One statement: it deletes the links not wanted and inserts those missing, rows that cannot meet (the two
    parts of a statement see the same snapshot, not each other's work)."""
    table, owner, target = links
    changed = await conn.fetchval(
        f"WITH gone AS (DELETE FROM {table} WHERE {owner} = $1 AND {target} <> ALL($2::text[]) RETURNING 1),"
        f" added AS (INSERT INTO {table} ({owner}, {target}) SELECT $1, unnest($2::text[])"
        f"  ON CONFLICT DO NOTHING RETURNING 1)"
        " SELECT EXISTS (SELECT FROM gone) OR EXISTS (SELECT FROM added)",
        owner_id,
        list(target_ids),
    )
    return bool(changed)
