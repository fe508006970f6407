"""The whole PostgreSQL store as a StoreSnapshot, and a snapshot written into an empty store (with COPY)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

import asyncpg

from keyscope_server.errors import StoreUnavailable
from keyscope_server.store.audit_rows import AUDIT_COLUMNS, audit_event, audit_values
from keyscope_server.store.snapshot import (
    ApiRow,
    ImportProgress,
    KeyRow,
    PermissionRow,
    RoleRow,
    RootKeyRow,
    StoreSnapshot,
)

__all__ = ["export_snapshot", "import_snapshot"]

# Each table with its columns in the order of its row record's fields.
_TABLES: dict[str, tuple[str, ...]] = {
    "apis": ("id", "name", "created_at", "updated_at", "etag_revision"),
    "permissions": ("id", "api_id", "name", "description", "created_at"),
    "keys": (
        "id",
        "api_id",
        "secret_hash",
        "start",
        "name",
        "enabled",
        "expires_at",
        "created_at",
        "updated_at",
        "etag_revision",
    ),
    "roles": ("id", "api_id", "name", "description", "created_at", "updated_at", "etag_revision"),
    "root_keys": ("id", "name", "secret_hash", "enabled", "expires_at", "created_at"),
    "key_permissions": ("key_id", "permission_id"),
    "key_roles": ("key_id", "role_id"),
    "role_permissions": ("role_id", "permission_id"),
    "root_key_permissions": ("root_key_id", "name"),
    "changes": ("revision", "kind", "id"),
}

COPY_CHUNK = 5000  # rows per COPY: progress is reported after each


async def _select(conn: asyncpg.Connection, table: str) -> list[tuple[Any, ...]]:
    records = await conn.fetch(f"SELECT {', '.join(_TABLES[table])} FROM {table}")
    return sorted(tuple(r) for r in records)


async def export_snapshot(conn: asyncpg.Connection) -> StoreSnapshot:
    """Run inside one repeatable-read transaction, so that every table is read at the same revision."""
    events = await conn.fetch(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_events ORDER BY revision")
    return StoreSnapshot(
        revision=int(await conn.fetchval("SELECT revision FROM meta")),
        apis=tuple(ApiRow(*r) for r in await _select(conn, "apis")),
        permissions=tuple(PermissionRow(*r) for r in await _select(conn, "permissions")),
        keys=tuple(KeyRow(*r) for r in await _select(conn, "keys")),
        roles=tuple(RoleRow(*r) for r in await _select(conn, "roles")),
        key_permissions=tuple(await _select(conn, "key_permissions")),
        key_roles=tuple(await _select(conn, "key_roles")),
        role_permissions=tuple(await _select(conn, "role_permissions")),
        root_keys=tuple(RootKeyRow(*r) for r in await _select(conn, "root_keys")),
        root_key_permissions=tuple(await _select(conn, "root_key_permissions")),
        changes=tuple(await _select(conn, "changes")),
        audit_events=tuple(audit_event(r) for r in events),
    )


async def _copy(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    progress: ImportProgress | None,
) -> None:
    for start in range(0, len(rows), COPY_CHUNK):
        chunk = rows[start : start + COPY_CHUNK]
        await conn.copy_records_to_table(table, records=chunk, columns=list(columns))
        if progress is not None:
            progress(table, start + len(chunk), len(rows))
    if not rows and progress is not None:
        progress(table, 0, 0)


async def import_snapshot(conn: asyncpg.Connection, snapshot: StoreSnapshot, progress: ImportProgress | None) -> None:
    """Run inside one write transaction that holds the meta row: all of it or nothing."""
    revision = await conn.fetchval("SELECT revision FROM meta FOR UPDATE")
    if revision != 0 or await conn.fetchval("SELECT 1 FROM root_keys UNION ALL SELECT 1 FROM apis LIMIT 1"):
        raise StoreUnavailable("the target store already holds data: a snapshot is written only into an empty one")
    for table, rows in (
        ("apis", [astuple(r) for r in snapshot.apis]),
        ("permissions", [astuple(r) for r in snapshot.permissions]),
        ("keys", [astuple(r) for r in snapshot.keys]),
        ("roles", [astuple(r) for r in snapshot.roles]),
        ("root_keys", [astuple(r) for r in snapshot.root_keys]),
        ("key_permissions", list(snapshot.key_permissions)),
        ("key_roles", list(snapshot.key_roles)),
        ("role_permissions", list(snapshot.role_permissions)),
        ("root_key_permissions", list(snapshot.root_key_permissions)),
        ("changes", list(snapshot.changes)),
    ):
        await _copy(conn, table, _TABLES[table], rows, progress)
    await _copy(conn, "audit_events", AUDIT_COLUMNS, [audit_values(e) for e in snapshot.audit_events], progress)
    await conn.execute("UPDATE meta SET revision = $1", snapshot.revision)
