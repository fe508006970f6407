"""The SQL of the audit trail: one row per change, states as JSON text (never a secret)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from server.store.models import AuditEventRecord, AuditPage, AuditQuery
from server.store.sqlite.connection import Row, as_json, fetch_all

__all__ = ["SqliteAudit", "all_events", "insert_events"]

_COLUMNS = (
    "revision, time, actor, action, resource_type, resource_id, api_id, before_state, after_state,"
    " created_permissions, request_id"
)


def _as_text(state: dict[str, Any] | None) -> str | None:
    return None if state is None else json.dumps(state, separators=(",", ":"), sort_keys=True)


def _event(r: Row) -> AuditEventRecord:
    return AuditEventRecord(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        None if r[7] is None else json.loads(r[7]),
        None if r[8] is None else json.loads(r[8]),
        tuple(json.loads(r[9])),
        r[10],
    )


def insert_events(db: sqlite3.Connection, events: Sequence[AuditEventRecord]) -> None:
    db.executemany(
        f"INSERT INTO audit_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.revision,
                e.time_ms,
                e.actor,
                e.action,
                e.resource_type,
                e.resource_id,
                e.api_id,
                _as_text(e.before),
                _as_text(e.after),
                as_json(e.created_permissions),
                e.request_id,
            )
            for e in events
        ],
    )


def all_events(db: sqlite3.Connection) -> tuple[AuditEventRecord, ...]:
    """The whole trail, oldest first."""
    return tuple(_event(r) for r in fetch_all(db, f"SELECT {_COLUMNS} FROM audit_events ORDER BY revision"))


class SqliteAudit:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def insert(self, event: AuditEventRecord) -> None:
        insert_events(self._db, [event])

    async def page(self, query: AuditQuery) -> AuditPage:
        """Events matching `query`, newest first, at most `query.limit` of them."""
        conditions: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("api_id", query.api_id),
            ("resource_id", query.resource_id),
            ("actor", query.actor),
            ("action", query.action),
        ):
            if value:
                conditions.append(f"{column} = ?")
                params.append(value)
        for condition, bound in (
            ("time >= ?", query.start_ms),
            ("time < ?", query.end_ms),
            ("revision < ?", query.before_revision),
        ):
            if bound is not None:
                conditions.append(condition)
                params.append(bound)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = fetch_all(
            self._db,
            f"SELECT {_COLUMNS} FROM audit_events{where} ORDER BY revision DESC LIMIT ?",
            (*params, query.limit + 1),
        )
        return AuditPage(tuple(_event(r) for r in rows[: query.limit]), len(rows) > query.limit)
