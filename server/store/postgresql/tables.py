"""The tables of one PostgreSQL transaction, as the store's rules see them (server.store.engine.Tables)."""

from __future__ import annotations

import asyncpg

from server.store.postgresql.apis import PostgresApis
from server.store.postgresql.audit import PostgresAudit
from server.store.postgresql.changes import PostgresChanges
from server.store.postgresql.keys import PostgresKeys
from server.store.postgresql.roles import PostgresRoles
from server.store.postgresql.root_keys import PostgresRootKeys

__all__ = ["PostgresTables"]


class PostgresTables:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.apis = PostgresApis(conn)
        self.keys = PostgresKeys(conn)
        self.roles = PostgresRoles(conn)
        self.root_keys = PostgresRootKeys(conn)
        self.changes = PostgresChanges(conn)
        self.audit = PostgresAudit(conn)
