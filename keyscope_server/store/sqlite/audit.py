"""The SQL of the audit trail: one row per change (keyscope_server.store.audit_rows gives its columns and values)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from keyscope_server.store.audit_rows import AUDIT_COLUMNS, audit_event, audit_filters, audit_values
from keyscope_server.store.models import AuditEventRecord, AuditPage, AuditQuery
from keyscope_server.store.sqlite.connection import fetch_all

__all__ = ["SqliteAudit", "all_events", "insert_events"]

_COLUMNS = ", ".join(AUDIT_COLUMNS)


def insert_events(db: sqlite3.Connection, events: Sequence[AuditEventRecord]) -> None:
    marks = ", ".join("?" * len(AUDIT_COLUMNS))
    db.executemany(f"INSERT INTO audit_events ({_COLUMNS}) VALUES ({marks})", [audit_values(e) for e in events])


def all_events(db: sqlite3.Connection) -> tuple[AuditEventRecord, ...]:
    """The whole trail, oldest first."""
    return tuple(audit_event(r) for r in fetch_all(db, f"SELECT {_COLUMNS} FROM audit_events ORDER BY revision"))


class SqliteAudit:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def page(self, query: AuditQuery) -> AuditPage:
        """Events matching `query`, newest first, at most `query.limit` of them."""
        filters = audit_filters(query)
        where = f" WHERE {' AND '.join(f'{condition} ?' for condition, _ in filters)}" if filters else ""
        rows = fetch_all(
            self._db,
            f"SELECT {_COLUMNS} FROM audit_events{where} ORDER BY revision DESC LIMIT ?",
            (*(value for _, value in filters), query.limit + 1),
        )
        return AuditPage(tuple(audit_event(r) for r in rows[: query.limit]), len(rows) > query.limit)
