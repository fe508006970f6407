"""The whole SQLite store as a StoreSnapshot, and a snapshot written into an empty store."""

from __future__ import annotations

import sqlite3
from dataclasses import astuple

from keyscope_server.errors import StoreUnavailable
from keyscope_server.store.snapshot import (
    ApiRow,
    ImportProgress,
    KeyRow,
    PermissionRow,
    RoleRow,
    RootKeyRow,
    StoreSnapshot,
)
from keyscope_server.store.sqlite.audit import all_events, insert_events
from keyscope_server.store.sqlite.connection import Row, fetch_all, fetch_one

__all__ = ["export_snapshot", "import_snapshot"]

# Each table with its columns in the order of its row record's fields.
_APIS = "apis (id, name, created_at, updated_at, etag_revision)"
_PERMISSIONS = "permissions (id, api_id, name, description, created_at)"
_KEYS = "keys (id, api_id, secret_hash, start, name, enabled, expires_at, created_at, updated_at, etag_revision)"
_ROLES = "roles (id, api_id, name, description, created_at, updated_at, etag_revision)"
_ROOT_KEYS = "root_keys (id, name, secret_hash, enabled, expires_at, created_at)"
_KEY_PERMISSIONS = "key_permissions (key_id, permission_id)"
_KEY_ROLES = "key_roles (key_id, role_id)"
_ROLE_PERMISSIONS = "role_permissions (role_id, permission_id)"
_ROOT_KEY_PERMISSIONS = "root_key_permissions (root_key_id, name)"
_CHANGES = "changes (revision, kind, id)"


def _select(db: sqlite3.Connection, table: str) -> list[Row]:
    name, columns = table.split(" ", 1)
    return sorted(fetch_all(db, f"SELECT {columns.strip('()')} FROM {name}"))


def export_snapshot(db: sqlite3.Connection) -> StoreSnapshot:
    """Run inside one read transaction, so that every table is read at the same revision."""
    revision = fetch_one(db, "SELECT revision FROM meta")
    assert revision is not None
    return StoreSnapshot(
        revision=int(revision[0]),
        apis=tuple(ApiRow(*r) for r in _select(db, _APIS)),
        permissions=tuple(PermissionRow(*r) for r in _select(db, _PERMISSIONS)),
        keys=tuple(KeyRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), *r[6:]) for r in _select(db, _KEYS)),
        roles=tuple(RoleRow(*r) for r in _select(db, _ROLES)),
        key_permissions=tuple(_select(db, _KEY_PERMISSIONS)),
        key_roles=tuple(_select(db, _KEY_ROLES)),
        role_permissions=tuple(_select(db, _ROLE_PERMISSIONS)),
        root_keys=tuple(RootKeyRow(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in _select(db, _ROOT_KEYS)),
        root_key_permissions=tuple(_select(db, _ROOT_KEY_PERMISSIONS)),
        changes=tuple(_select(db, _CHANGES)),
        audit_events=all_events(db),
    )


def import_snapshot(db: sqlite3.Connection, snapshot: StoreSnapshot, progress: ImportProgress | None = None) -> None:
    """Run inside one write transaction: all of it or nothing. `progress` hears of each table once its rows are
    in."""
    revision = fetch_one(db, "SELECT revision FROM meta")
    assert revision is not None
    if revision[0] != 0 or fetch_one(db, "SELECT 1 FROM root_keys UNION ALL SELECT 1 FROM apis LIMIT 1"):
        raise StoreUnavailable("the target store already holds data: a snapshot is written only into an empty one")
    for table, rows in (
        (_APIS, [astuple(r) for r in snapshot.apis]),
        (_PERMISSIONS, [astuple(r) for r in snapshot.permissions]),
        (_KEYS, [astuple(r) for r in snapshot.keys]),
        (_ROLES, [astuple(r) for r in snapshot.roles]),
        (_ROOT_KEYS, [astuple(r) for r in snapshot.root_keys]),
        (_KEY_PERMISSIONS, snapshot.key_permissions),
        (_KEY_ROLES, snapshot.key_roles),
        (_ROLE_PERMISSIONS, snapshot.role_permissions),
        (_ROOT_KEY_PERMISSIONS, snapshot.root_key_permissions),
        (_CHANGES, snapshot.changes),
    ):
        marks = ", ".join("?" * (table.count(",") + 1))
        db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        if progress is not None:
            progress(table.split(" ", 1)[0], len(rows), len(rows))
    insert_events(db, snapshot.audit_events)
    if progress is not None:
        progress("audit_events", len(snapshot.audit_events), len(snapshot.audit_events))
    db.execute("UPDATE meta SET revision = ?", (snapshot.revision,))
