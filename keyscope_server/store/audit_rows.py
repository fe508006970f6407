"""An audit event as every engine stores it: its columns, their values (states and created permissions as JSON
text, never a secret), the event read back from them, and which columns a query's filters compare. Each engine
puts these into its own SQL (keyscope_server.store.sqlite.audit, keyscope_server.store.postgresql.audit)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from keyscope_server.store.models import AuditEventRecord, AuditQuery

__all__ = ["AUDIT_COLUMNS", "audit_event", "audit_filters", "audit_values"]

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


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def audit_values(e: AuditEventRecord) -> tuple[Any, ...]:
    """The event's values, in AUDIT_COLUMNS' order."""
    return (
        e.revision,
        e.time_ms,
        e.actor,
        e.action,
        e.resource_type,
        e.resource_id,
        e.api_id,
        None if e.before is None else _json(e.before),
        None if e.after is None else _json(e.after),
        _json(list(e.created_permissions)),
        e.request_id,
    )


def audit_event(row: Sequence[Any]) -> AuditEventRecord:
    """The event from its values, in AUDIT_COLUMNS' order, as the engine reads them back (JSON as text)."""
    before, after = (None if state is None else json.loads(state) for state in (row[7], row[8]))
    revision, time_ms, actor, action, resource_type, resource_id, api_id = row[:7]
    created = tuple(json.loads(row[9]))
    return AuditEventRecord(
        revision, time_ms, actor, action, resource_type, resource_id, api_id, before, after, created, row[10]
    )


def audit_filters(query: AuditQuery) -> list[tuple[str, Any]]:
    """What the query compares, as (column and operator, value): the events matching all of them."""
    compared = (
        ("api_id =", query.api_id or None),
        ("resource_id =", query.resource_id or None),
        ("actor =", query.actor or None),
        ("action =", query.action or None),
        ("time >=", query.start_ms),
        ("time <", query.end_ms),
        ("revision <", query.before_revision),
    )
    return [(condition, value) for condition, value in compared if value is not None]
