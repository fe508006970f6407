"""The tables of one SQLite transaction, as the store's rules see them (server.store.engine.Tables)."""

from __future__ import annotations

import sqlite3

from server.store.sqlite.apis import SqliteApis
from server.store.sqlite.audit import SqliteAudit
from server.store.sqlite.changes import SqliteChanges
from server.store.sqlite.keys import SqliteKeys
from server.store.sqlite.roles import SqliteRoles
from server.store.sqlite.root_keys import SqliteRootKeys

__all__ = ["SqliteTables"]


class SqliteTables:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.apis = SqliteApis(db)
        self.keys = SqliteKeys(db)
        self.roles = SqliteRoles(db)
        self.root_keys = SqliteRootKeys(db)
        self.changes = SqliteChanges(db)
        self.audit = SqliteAudit(db)
