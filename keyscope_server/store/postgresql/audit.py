"""The SQL of the audit trail: one row per change (keyscope_server.store.audit_rows gives its columns and values),
states as JSONB, which asyncpg sends and reads as JSON text."""

from __future__ import annotations

import asyncpg

from keyscope_server.store.audit_rows import AUDIT_COLUMNS, audit_event, audit_filters
from keyscope_server.store.models import AuditPage, AuditQuery

__all__ = ["PostgresAudit"]

_COLUMNS = ", ".join(AUDIT_COLUMNS)


class PostgresAudit:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def page(self, query: AuditQuery) -> AuditPage:
        """Events matching `query`, newest first, at most `query.limit` of them."""
        filters = audit_filters(query)
        where = " AND ".join(f"{condition} ${n}" for n, (condition, _) in enumerate(filters, 1))
        records = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM audit_events{f' WHERE {where}' if where else ''}"
            f" ORDER BY revision DESC LIMIT ${len(filters) + 1}",
            *(value for _, value in filters),
            query.limit + 1,
        )
        return AuditPage(tuple(audit_event(r) for r in records[: query.limit]), len(records) > query.limit)
