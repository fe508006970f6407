"""The SQL of roles."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from keyscope_server.errors import NotFound
from keyscope_server.store.authorization import etag_of
from keyscope_server.store.engine import Current
from keyscope_server.store.models import PermissionEntry, RoleRecord
from keyscope_server.store.sqlite.apis import permissions_named
from keyscope_server.store.sqlite.connection import as_json, fetch_all, fetch_one
from keyscope_server.store.sqlite.links import ROLE_PERMISSIONS, add_links
from keyscope_server.store.states import RoleState

__all__ = ["SqliteRoles", "load_roles"]


def load_roles(db: sqlite3.Connection, role_ids: Sequence[str]) -> list[RoleRecord]:
    """The roles, by name; NotFound names the ids that are not there."""
    ids = as_json(role_ids)
    grants: dict[str, list[PermissionEntry]] = {role_id: [] for role_id in role_ids}
    for r in fetch_all(
        db,
        "SELECT rp.role_id, p.id, p.name, p.description FROM role_permissions rp"
        " JOIN permissions p ON p.id = rp.permission_id"
        " WHERE rp.role_id IN (SELECT value FROM json_each(?)) ORDER BY p.name",
        (ids,),
    ):
        grants[r[0]].append(PermissionEntry(r[1], r[2], r[3]))
    rows = fetch_all(
        db,
        "SELECT id, api_id, name, description, created_at, updated_at, etag_revision FROM roles"
        " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY name",
        (ids,),
    )
    if len(rows) != len(grants):
        raise NotFound("role", [role_id for role_id in role_ids if role_id not in {r[0] for r in rows}])
    return [RoleRecord(r[0], r[1], r[2], r[3], tuple(grants[r[0]]), r[4], r[5], etag_of(r[6])) for r in rows]


# A role's state (RoleState) as columns of a query of `roles r`.
_STATE = (
    "r.name, r.description, (SELECT json_group_array(p.name) FROM role_permissions rp"
    " JOIN permissions p ON p.id = rp.permission_id WHERE rp.role_id = r.id)"
)


def _state(row: Sequence[Any]) -> RoleState:
    return RoleState(row[0], row[1], tuple(json.loads(row[2])))


class SqliteRoles:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def insert(self, role_id: str, api_id: str, name: str, description: str, now: int) -> None:
        fetch_all(
            self._db,
            "INSERT INTO roles (id, api_id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (role_id, api_id, name, description, now, now),
        )

    async def current(self, role_id: str, permission_names: Sequence[str] = ()) -> Current[RoleState] | None:
        row = fetch_one(self._db, f"SELECT r.api_id, r.etag_revision, {_STATE} FROM roles r WHERE r.id = ?", (role_id,))
        if row is None:
            return None
        named = permissions_named(self._db, row[0], permission_names)
        return Current(str(row[0]), int(row[1]), _state(row[2:]), named)

    async def named(self, api_id: str, names: Sequence[str]) -> dict[str, str]:
        rows = fetch_all(
            self._db,
            "SELECT id, name FROM roles WHERE api_id = ? AND name IN (SELECT value FROM json_each(?))",
            (api_id, as_json(names)),
        )
        return {r[1]: r[0] for r in rows}

    async def load(self, role_id: str) -> RoleRecord:
        return load_roles(self._db, [role_id])[0]

    async def state(self, role_id: str) -> RoleState:
        row = fetch_one(self._db, f"SELECT {_STATE} FROM roles r WHERE r.id = ?", (role_id,))
        assert row is not None
        return _state(row)

    async def add_permissions(self, role_id: str, permission_ids: Sequence[str]) -> None:
        add_links(self._db, ROLE_PERMISSIONS, role_id, permission_ids)

    async def ids_after(self, api_id: str, after: str, limit: int) -> list[str]:
        rows = fetch_all(
            self._db,
            "SELECT id FROM roles WHERE api_id = ? AND name > ? ORDER BY name LIMIT ?",
            (api_id, after, limit),
        )
        return [r[0] for r in rows]

    async def holders(self, role_id: str) -> list[str]:
        return [r[0] for r in fetch_all(self._db, "SELECT key_id FROM key_roles WHERE role_id = ?", (role_id,))]

    async def delete(self, role_id: str) -> None:
        # ON DELETE CASCADE takes its links to keys and permissions with it.
        fetch_all(self._db, "DELETE FROM roles WHERE id = ?", (role_id,))
