"""The tables of one PostgreSQL transaction, as the store's rules see them (keyscope_server.store.engine.Tables)."""

from __future__ import annotations

import asyncpg

from keyscope_server.store.postgresql.apis import PostgresApis
from keyscope_server.store.postgresql.audit import PostgresAudit
from keyscope_server.store.postgresql.changes import PostgresChanges
from keyscope_server.store.postgresql.keys import PostgresKeys
from keyscope_server.store.postgresql.read_ahead import ReadAhead
from keyscope_server.store.postgresql.roles import PostgresRoles
from keyscope_server.store.postgresql.root_keys import PostgresRootKeys

__all__ = ["PostgresTables"]


class PostgresTables:
    def __init__(self, conn: asyncpg.Connection, ahead: ReadAhead | None = None) -> None:
        """`ahead`: in a write batch, what its writes read first (read_ahead)."""
        self.apis = PostgresApis(conn)
        self.keys = PostgresKeys(conn, ahead)
        self.roles = PostgresRoles(conn)
        self.root_keys = PostgresRootKeys(conn)
        self.changes = PostgresChanges(conn, ahead)
        self.audit = PostgresAudit(conn)
