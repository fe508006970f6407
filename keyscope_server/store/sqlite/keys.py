"""The SQL of keys: the key itself, its direct permissions and roles, and VerifyKey's lookup by secret."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from keyscope_server.errors import NotFound
from keyscope_server.store.authorization import etag_of
from keyscope_server.store.engine import Current
from keyscope_server.store.models import KeyQuery, KeyRecord, KeyVerification, NewKey, PermissionEntry
from keyscope_server.store.sqlite.apis import permissions_named
from keyscope_server.store.sqlite.connection import fetch_all, fetch_one
from keyscope_server.store.sqlite.links import KEY_PERMISSIONS, KEY_ROLES, add_links
from keyscope_server.store.sqlite.roles import load_roles
from keyscope_server.store.states import KeyState

__all__ = ["SqliteKeys", "find_key"]


def find_key(db: sqlite3.Connection, secret_hash: bytes) -> KeyVerification | None:
    """One statement, hence one snapshot: the store's revision, the key, its effective permissions and roles."""
    row = fetch_one(
        db,
        "SELECT m.revision, k.id, k.api_id, k.enabled, k.expires_at,"
        " (SELECT json_group_array(name) FROM ("
        "   SELECT p.name AS name FROM key_permissions kp"
        "   JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = k.id"
        "   UNION"
        "   SELECT p.name FROM key_roles kr JOIN role_permissions rp ON rp.role_id = kr.role_id"
        "   JOIN permissions p ON p.id = rp.permission_id WHERE kr.key_id = k.id)),"
        " (SELECT json_group_array(r.name) FROM key_roles kr JOIN roles r ON r.id = kr.role_id"
        "  WHERE kr.key_id = k.id)"
        " FROM meta m LEFT JOIN keys k ON k.secret_hash = ?",
        (secret_hash,),
    )
    assert row is not None
    if row[1] is None:
        return None
    return KeyVerification(
        row[1],
        row[2],
        bool(row[3]),
        row[4],
        tuple(sorted(json.loads(row[5]))),
        tuple(sorted(json.loads(row[6]))),
        row[0],
    )


# A key's state (KeyState) as columns of a query of `keys k`.
_STATE = (
    "k.name, k.enabled, k.expires_at,"
    " (SELECT json_group_array(p.name) FROM key_permissions kp JOIN permissions p ON p.id = kp.permission_id"
    "  WHERE kp.key_id = k.id),"
    " (SELECT json_group_array(r.name) FROM key_roles kr JOIN roles r ON r.id = kr.role_id WHERE kr.key_id = k.id)"
)


def _state(row: Sequence[Any]) -> KeyState:
    return KeyState(row[0], bool(row[1]), row[2], tuple(json.loads(row[3])), tuple(json.loads(row[4])))


class SqliteKeys:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def insert(self, key_id: str, new: NewKey, now: int) -> None:
        fetch_all(
            self._db,
            "INSERT INTO keys (id, api_id, secret_hash, start, name, enabled, expires_at,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, new.api_id, new.secret_hash, new.start, new.name, int(new.enabled), new.expires_ms, now, now),
        )

    async def current(self, key_id: str, permission_names: Sequence[str] = ()) -> Current[KeyState] | None:
        row = fetch_one(self._db, f"SELECT k.api_id, k.etag_revision, {_STATE} FROM keys k WHERE k.id = ?", (key_id,))
        if row is None:
            return None
        named = permissions_named(self._db, row[0], permission_names)
        return Current(str(row[0]), int(row[1]), _state(row[2:]), named)

    async def load(self, key_id: str) -> KeyRecord:
        db = self._db
        row = fetch_one(
            db,
            "SELECT id, api_id, name, start, enabled, expires_at, created_at, updated_at, etag_revision"
            " FROM keys WHERE id = ?",
            (key_id,),
        )
        if row is None:
            raise NotFound("key", [key_id])
        permissions = tuple(
            PermissionEntry(*r)
            for r in fetch_all(
                db,
                "SELECT p.id, p.name, p.description FROM key_permissions kp"
                " JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = ? ORDER BY p.name",
                (key_id,),
            )
        )
        role_ids = [r[0] for r in fetch_all(db, "SELECT role_id FROM key_roles WHERE key_id = ?", (key_id,))]
        roles = tuple(load_roles(db, role_ids)) if role_ids else ()
        return KeyRecord(
            row[0], row[1], row[2], row[3], bool(row[4]), row[5], permissions, roles, row[6], row[7], etag_of(row[8])
        )

    async def state(self, key_id: str) -> KeyState:
        row = fetch_one(self._db, f"SELECT {_STATE} FROM keys k WHERE k.id = ?", (key_id,))
        assert row is not None
        return _state(row)

    async def update(self, key_id: str, name: str, enabled: bool, expires_ms: int | None) -> None:
        fetch_all(
            self._db,
            "UPDATE keys SET name = ?, enabled = ?, expires_at = ? WHERE id = ?",
            (name, int(enabled), expires_ms, key_id),
        )

    async def delete(self, key_id: str) -> None:
        fetch_all(self._db, "DELETE FROM keys WHERE id = ?", (key_id,))

    async def add_permissions(self, key_id: str, permission_ids: Sequence[str]) -> None:
        add_links(self._db, KEY_PERMISSIONS, key_id, permission_ids)

    async def add_roles(self, key_id: str, role_ids: Sequence[str]) -> None:
        add_links(self._db, KEY_ROLES, key_id, role_ids)

    async def ids(self, query: KeyQuery) -> list[str]:
        sql = ["SELECT k.id FROM keys k WHERE k.api_id = ? AND k.id > ?"]
        params: list[object] = [query.api_id, query.after]
        if query.enabled is not None:
            sql.append("AND k.enabled = ?")
            params.append(int(query.enabled))
        if query.permission:
            sql.append(
                "AND (k.id IN (SELECT kp.key_id FROM key_permissions kp JOIN permissions p ON p.id = kp.permission_id"
                "  WHERE p.api_id = k.api_id AND p.name = ?)"
                " OR k.id IN (SELECT kr.key_id FROM key_roles kr JOIN role_permissions rp ON rp.role_id = kr.role_id"
                "  JOIN permissions p ON p.id = rp.permission_id WHERE p.api_id = k.api_id AND p.name = ?))"
            )
            params += [query.permission, query.permission]
        if query.role:
            sql.append(
                "AND k.id IN (SELECT kr.key_id FROM key_roles kr JOIN roles r ON r.id = kr.role_id"
                " WHERE r.api_id = k.api_id AND r.name = ?)"
            )
            params.append(query.role)
        sql.append("ORDER BY k.id LIMIT ?")
        params.append(query.limit)
        return [r[0] for r in fetch_all(self._db, " ".join(sql), params)]
