"""The SQL of the audit trail: one row per change, states as JSONB (never a secret)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from server.store.models import AuditEventRecord, AuditPage, AuditQuery
from server.store.postgresql.connection import as_json

__all__ = ["AUDIT_COLUMNS", "PostgresAudit", "audit_row", "event"]

AUDIT_COLUMNS = (
    "revision",
    "time",
    "actor",
    "action",
    "resource_type",
    "resource_id",
    "api_id",
    "before_state",
    "after_state",
    "created_permissions",
    "request_id",
)
_SELECT = ", ".join(AUDIT_COLUMNS)


def _state(value: str | None) -> dict[str, Any] | None:
    return None if value is None else json.loads(value)


def event(r: asyncpg.Record) -> AuditEventRecord:
    return AuditEventRecord(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], _state(r[7]), _state(r[8]), tuple(json.loads(r[9])), r[10]
    )


def audit_row(e: AuditEventRecord) -> tuple[Any, ...]:
    """The event as the row's values, in AUDIT_COLUMNS' order (JSONB as text, which asyncpg sends as is)."""
    return (
        e.revision,
        e.time_ms,
        e.actor,
        e.action,
        e.resource_type,
        e.resource_id,
        e.api_id,
        None if e.before is None else as_json(e.before),
        None if e.after is None else as_json(e.after),
        as_json(list(e.created_permissions)),
        e.request_id,
    )


class PostgresAudit:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, event: AuditEventRecord) -> None:
        await self._conn.execute(
            f"INSERT INTO audit_events ({_SELECT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            *audit_row(event),
        )

    async def page(self, query: AuditQuery) -> AuditPage:
        """Events matching `query`, newest first, at most `query.limit` of them."""
        conditions: list[str] = []
        params: list[Any] = []
        for condition, value in (
            ("api_id = ", query.api_id or None),
            ("resource_id = ", query.resource_id or None),
            ("actor = ", query.actor or None),
            ("action = ", query.action or None),
            ("time >= ", query.start_ms),
            ("time < ", query.end_ms),
            ("revision < ", query.before_revision),
        ):
            if value is not None:
                params.append(value)
                conditions.append(f"{condition}${len(params)}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        params.append(query.limit + 1)
        records = await self._conn.fetch(
            f"SELECT {_SELECT} FROM audit_events{where} ORDER BY revision DESC LIMIT ${len(params)}", *params
        )
        return AuditPage(tuple(event(r) for r in records[: query.limit]), len(records) > query.limit)
