"""The SQL of root keys, and authentication's lookup by secret."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from keyscope_server.store.models import RootKeyGrant, RootKeyRecord
from keyscope_server.store.sqlite.connection import as_json, fetch_all, fetch_one
from keyscope_server.store.states import RootKeyState

__all__ = ["SqliteRootKeys", "find_root_key"]


def find_root_key(db: sqlite3.Connection, secret_hash: bytes) -> RootKeyGrant | None:
    row = fetch_one(
        db,
        "SELECT m.revision, r.id, r.enabled, r.expires_at,"
        " (SELECT json_group_array(name) FROM root_key_permissions WHERE root_key_id = r.id)"
        " FROM meta m LEFT JOIN root_keys r ON r.secret_hash = ?",
        (secret_hash,),
    )
    assert row is not None
    if row[1] is None:
        return None
    return RootKeyGrant(row[1], tuple(json.loads(row[4])), bool(row[2]), row[3], row[0])


class SqliteRootKeys:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def insert(
        self,
        root_key_id: str,
        name: str,
        secret_hash: bytes,
        permissions: Sequence[str],
        expires_ms: int | None,
        now: int,
    ) -> None:
        fetch_all(
            self._db,
            "INSERT INTO root_keys (id, name, secret_hash, enabled, expires_at, created_at) VALUES (?, ?, ?, 1, ?, ?)",
            (root_key_id, name, secret_hash, expires_ms, now),
        )
        fetch_all(
            self._db,
            "INSERT INTO root_key_permissions (root_key_id, name) SELECT ?, value FROM json_each(?)",
            (root_key_id, as_json(permissions)),
        )

    async def state(self, root_key_id: str) -> RootKeyState | None:
        row = fetch_one(
            self._db,
            "SELECT r.name, r.enabled, r.expires_at, (SELECT json_group_array(name) FROM root_key_permissions"
            " WHERE root_key_id = r.id) FROM root_keys r WHERE r.id = ?",
            (root_key_id,),
        )
        return None if row is None else RootKeyState(row[0], bool(row[1]), row[2], tuple(json.loads(row[3])))

    async def set_enabled(self, root_key_id: str, enabled: bool) -> None:
        fetch_all(self._db, "UPDATE root_keys SET enabled = ? WHERE id = ?", (int(enabled), root_key_id))

    async def delete(self, root_key_id: str) -> None:
        fetch_all(self._db, "DELETE FROM root_keys WHERE id = ?", (root_key_id,))

    async def all(self) -> list[RootKeyRecord]:
        rows = fetch_all(
            self._db,
            "SELECT r.id, r.name, r.enabled, r.expires_at, r.created_at,"
            " (SELECT json_group_array(name) FROM root_key_permissions"
            "  WHERE root_key_id = r.id) FROM root_keys r ORDER BY r.created_at, r.id",
        )
        return [RootKeyRecord(r[0], r[1], tuple(sorted(json.loads(r[5]))), bool(r[2]), r[3], r[4]) for r in rows]
