"""The tables of one SQLite transaction, as the store's rules see them (keyscope_server.store.engine.Tables)."""

from __future__ import annotations

import sqlite3

from keyscope_server.store.sqlite.apis import SqliteApis
from keyscope_server.store.sqlite.audit import SqliteAudit
from keyscope_server.store.sqlite.changes import SqliteChanges
from keyscope_server.store.sqlite.keys import SqliteKeys
from keyscope_server.store.sqlite.roles import SqliteRoles
from keyscope_server.store.sqlite.root_keys import SqliteRootKeys

__all__ = ["SqliteTables"]


class SqliteTables:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.apis = SqliteApis(db)
        self.keys = SqliteKeys(db)
        self.roles = SqliteRoles(db)
        self.root_keys = SqliteRootKeys(db)
        self.changes = SqliteChanges(db)
        self.audit = SqliteAudit(db)
