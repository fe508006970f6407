"""The SQL of APIs and their catalogs (scopes)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from keyscope_server.errors import NotFound
from keyscope_server.store.authorization import etag_of
from keyscope_server.store.models import ApiRecord, PermissionEntry
from keyscope_server.store.sqlite.connection import as_json, fetch_all, fetch_one
from keyscope_server.store.states import ApiState

__all__ = ["SqliteApis", "load_api"]


def load_api(db: sqlite3.Connection, api_id: str) -> ApiRecord:
    row = fetch_one(db, "SELECT id, name, created_at, updated_at, etag_revision FROM apis WHERE id = ?", (api_id,))
    if row is None:
        raise NotFound("api", [api_id])
    scopes = tuple(
        PermissionEntry(*r)
        for r in fetch_all(
            db, "SELECT id, name, description FROM permissions WHERE api_id = ? ORDER BY name", (api_id,)
        )
    )
    return ApiRecord(row[0], row[1], scopes, row[2], row[3], etag_of(row[4]))


def permissions_named(db: sqlite3.Connection, api_id: str, names: Sequence[str]) -> dict[str, PermissionEntry]:
    """Those of the named entries of the API's catalog that exist, by name."""
    if not names:
        return {}
    rows = fetch_all(
        db,
        "SELECT id, name, description FROM permissions WHERE api_id = ? AND name IN (SELECT value FROM json_each(?))",
        (api_id, as_json(names)),
    )
    return {r[1]: PermissionEntry(*r) for r in rows}


class SqliteApis:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def insert(self, api_id: str, name: str, now: int) -> None:
        fetch_all(
            self._db,
            "INSERT INTO apis (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (api_id, name, now, now),
        )

    async def etag_revision(self, api_id: str) -> int | None:
        row = fetch_one(self._db, "SELECT etag_revision FROM apis WHERE id = ?", (api_id,))
        return None if row is None else int(row[0])

    async def load(self, api_id: str) -> ApiRecord:
        return load_api(self._db, api_id)

    async def state(self, api_id: str) -> ApiState:
        row = fetch_one(
            self._db,
            "SELECT a.name, (SELECT json_group_array(json_array(name, description)) FROM permissions"
            " WHERE api_id = a.id) FROM apis a WHERE a.id = ?",
            (api_id,),
        )
        assert row is not None
        return ApiState(row[0], tuple((v, d) for v, d in json.loads(row[1])))

    async def catalog(self, api_id: str) -> list[PermissionEntry]:
        rows = fetch_all(self._db, "SELECT id, name, description FROM permissions WHERE api_id = ?", (api_id,))
        return [PermissionEntry(*r) for r in rows]

    async def permissions_named(self, api_id: str, names: Sequence[str]) -> dict[str, PermissionEntry]:
        return permissions_named(self._db, api_id, names)

    async def add_permissions(self, api_id: str, entries: Sequence[PermissionEntry], now: int) -> None:
        fetch_all(
            self._db,
            "INSERT INTO permissions (id, api_id, name, description, created_at)"
            " SELECT j.value ->> 0, ?, j.value ->> 1, j.value ->> 2, ? FROM json_each(?) AS j",
            (api_id, now, as_json([[p.id, p.name, p.description] for p in entries])),
        )

    async def describe_permissions(self, descriptions: Sequence[tuple[str, str]]) -> None:
        fetch_all(
            self._db,
            "UPDATE permissions SET description = j.value ->> 1"
            " FROM json_each(?) AS j WHERE permissions.id = j.value ->> 0",
            (as_json([list(d) for d in descriptions]),),
        )

    async def remove_permissions(self, permission_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        ids = as_json(permission_ids)
        keys = fetch_all(
            self._db,
            "SELECT DISTINCT key_id FROM key_permissions WHERE permission_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )
        roles = fetch_all(
            self._db,
            "SELECT DISTINCT role_id FROM role_permissions WHERE permission_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )
        # ON DELETE CASCADE takes the grants to keys and roles with them.
        fetch_all(self._db, "DELETE FROM permissions WHERE id IN (SELECT value FROM json_each(?))", (ids,))
        return [r[0] for r in keys], [r[0] for r in roles]

    async def ids_after(self, after: str, limit: int) -> list[str]:
        rows = fetch_all(self._db, "SELECT id FROM apis WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [r[0] for r in rows]

    async def catalog_after(self, api_id: str, after: str, limit: int) -> list[PermissionEntry]:
        rows = fetch_all(
            self._db,
            "SELECT id, name, description FROM permissions WHERE api_id = ? AND name > ? ORDER BY name LIMIT ?",
            (api_id, after, limit),
        )
        return [PermissionEntry(*r) for r in rows]

    async def contents(self, api_id: str) -> tuple[int, int, int]:
        row = fetch_one(
            self._db,
            "SELECT (SELECT count(*) FROM keys WHERE api_id = ?1), (SELECT count(*) FROM roles WHERE api_id = ?1),"
            " (SELECT count(*) FROM permissions WHERE api_id = ?1)",
            (api_id,),
        )
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    async def delete(self, api_id: str) -> None:
        # ON DELETE CASCADE takes its catalog, keys and roles, and their links, with it.
        fetch_all(self._db, "DELETE FROM apis WHERE id = ?", (api_id,))
