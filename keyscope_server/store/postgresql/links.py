"""The link tables (key_permissions, key_roles, role_permissions): an owner's links, added or replaced whole."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

__all__ = ["KEY_PERMISSIONS", "KEY_ROLES", "ROLE_PERMISSIONS", "add_links", "replacing"]

# (table, owner column, target column): the only tables and columns these functions put into SQL.
KEY_PERMISSIONS = ("key_permissions", "key_id", "permission_id")
KEY_ROLES = ("key_roles", "key_id", "role_id")
ROLE_PERMISSIONS = ("role_permissions", "role_id", "permission_id")
# The links a change replaces (ChangeRecord.replaced), by kind.
_LINK_TABLES = {"key_permissions": KEY_PERMISSIONS, "key_roles": KEY_ROLES, "role_permissions": ROLE_PERMISSIONS}


async def add_links(
    conn: asyncpg.Connection, links: tuple[str, str, str], owner_id: str, target_ids: Sequence[str]
) -> None:
    if not target_ids:
        return
    table, owner, target = links
    await conn.execute(
        f"INSERT INTO {table} ({owner}, {target}) SELECT $1, unnest($2::text[])", owner_id, list(target_ids)
    )


def replacing(kind: str, owner: int, targets: int) -> str:
    """The parts of a statement (WITH ...,) that make an owner's links of a kind exactly the targets, given as its
    parameters number `owner` (an id) and `targets` (an array of ids): the links not wanted are deleted, the
    missing inserted. The two parts touch rows that cannot meet (the parts of a statement see the same snapshot,
    not each other's work)."""
    table, owner_column, target_column = _LINK_TABLES[kind]
    return (
        f" gone_{owner} AS (DELETE FROM {table}"
        f"  WHERE {owner_column} = ${owner} AND {target_column} <> ALL(${targets}::text[])),"
        f" added_{owner} AS (INSERT INTO {table} ({owner_column}, {target_column})"
        f"  SELECT ${owner}, unnest(${targets}::text[]) ON CONFLICT DO NOTHING),"
    )
