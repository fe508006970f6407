"""The audit trail in SQLite: what a change records, in the same transaction as the change, and reading it back.

Every change goes through `record_change`: it takes the next store revision
(the event's sequence id), marks the changed rows with it (their etag), logs
what caches must drop, and writes one audit event holding the resource before
and after, as JSON of names and flags (audit.proto lists the shapes). Secrets
never reach it: keys are described by name, flags and grants only.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.access import Principal
from server.store.models import AuditEventRecord, AuditPage, AuditQuery, PermissionEntry
from server.store.sqlite_steps import as_json, bump_revision, fetch_all, fetch_one

__all__ = [
    "Change",
    "api_state",
    "key_state",
    "list_events",
    "record_change",
    "role_state",
    "root_key_state",
]

State = dict[str, Any]

_TABLES = {"api": "apis", "key": "keys", "role": "roles"}


@dataclass(frozen=True)
class Change:
    """What a call changed: the RPC or command, and the resource (`api`, `key`, `role`, `root_key`)."""

    action: str
    resource_type: str
    resource_id: str
    api_id: str = ""


def record_change(
    db: sqlite3.Connection,
    principal: Principal,
    change: Change,
    before: State | None,
    after: State | None,
    now: int,
    *,
    cached: Sequence[tuple[str, str]] = (),
    created: Sequence[PermissionEntry] = (),
    touched: Sequence[tuple[str, str]] = (),
) -> int:
    """Count the change and record it; the revision it produced.

    `cached`: what caches must drop (see bump_revision). `created`: catalog entries the call added, which
    changes the API too. `touched`: other rows (table, id) the change reached, such as the keys and roles
    that lost a removed scope.
    """
    revision = bump_revision(db, *cached)
    rows: dict[str, list[str]] = defaultdict(list)
    if after is not None and change.resource_type in _TABLES:
        rows[_TABLES[change.resource_type]].append(change.resource_id)
    if created and change.resource_type != "api":
        rows["apis"].append(change.api_id)
    for table, row_id in touched:
        rows[table].append(row_id)
    for table, ids in rows.items():
        if len(ids) == 1:  # the common case, a statement simpler to run
            fetch_all(db, f"UPDATE {table} SET updated_at = ?, etag_revision = ? WHERE id = ?", (now, revision, ids[0]))
        else:
            fetch_all(
                db,
                f"UPDATE {table} SET updated_at = ?, etag_revision = ? WHERE id IN (SELECT value FROM json_each(?))",
                (now, revision, as_json(ids)),
            )
    fetch_all(
        db,
        "INSERT INTO audit_events (revision, time, actor, action, resource_type, resource_id, api_id,"
        " before_state, after_state, created_permissions, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            revision,
            now,
            principal.root_key_id,
            change.action,
            change.resource_type,
            change.resource_id,
            change.api_id,
            _as_text(before),
            _as_text(after),
            as_json(sorted(p.name for p in created)),
            principal.request_id,
        ),
    )
    return revision


def _as_text(state: State | None) -> str | None:
    return None if state is None else json.dumps(state, separators=(",", ":"), sort_keys=True)


def _rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _names(array_json: str) -> list[str]:
    return sorted(json.loads(array_json))


# -- states: a resource as its audit events describe it ------------------------------------------------


def api_state(db: sqlite3.Connection, api_id: str) -> State:
    row = fetch_one(
        db,
        "SELECT a.name, (SELECT json_group_array(json_array(name, description)) FROM permissions"
        " WHERE api_id = a.id) FROM apis a WHERE a.id = ?",
        (api_id,),
    )
    assert row is not None
    scopes = sorted(json.loads(row[1]))
    return {"name": row[0], "scopes": [{"value": v, "description": d} for v, d in scopes]}


def key_state(db: sqlite3.Connection, key_id: str) -> State:
    row = fetch_one(
        db,
        "SELECT k.name, k.enabled, k.expires_at,"
        " (SELECT json_group_array(p.name) FROM key_permissions kp JOIN permissions p ON p.id = kp.permission_id"
        "  WHERE kp.key_id = k.id),"
        " (SELECT json_group_array(r.name) FROM key_roles kr JOIN roles r ON r.id = kr.role_id"
        "  WHERE kr.key_id = k.id)"
        " FROM keys k WHERE k.id = ?",
        (key_id,),
    )
    assert row is not None
    return {
        "name": row[0],
        "enabled": bool(row[1]),
        "expire_time": _rfc3339(row[2]),
        "permissions": _names(row[3]),
        "roles": _names(row[4]),
    }


def role_state(db: sqlite3.Connection, role_id: str) -> State:
    row = fetch_one(
        db,
        "SELECT r.name, r.description, (SELECT json_group_array(p.name) FROM role_permissions rp"
        " JOIN permissions p ON p.id = rp.permission_id WHERE rp.role_id = r.id) FROM roles r WHERE r.id = ?",
        (role_id,),
    )
    assert row is not None
    return {"name": row[0], "description": row[1], "permissions": _names(row[2])}


def root_key_state(db: sqlite3.Connection, root_key_id: str) -> State:
    row = fetch_one(
        db,
        "SELECT r.name, r.enabled, r.expires_at, (SELECT json_group_array(name) FROM root_key_permissions"
        " WHERE root_key_id = r.id) FROM root_keys r WHERE r.id = ?",
        (root_key_id,),
    )
    assert row is not None
    return {"name": row[0], "enabled": bool(row[1]), "expire_time": _rfc3339(row[2]), "permissions": _names(row[3])}


# -- reading the trail ------------------------------------------------------------------------------


def list_events(db: sqlite3.Connection, query: AuditQuery) -> AuditPage:
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
    for condition, value in (
        ("time >= ?", query.start_ms),
        ("time < ?", query.end_ms),
        ("revision < ?", query.before_revision),
    ):
        if value is not None:
            conditions.append(condition)
            params.append(value)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = fetch_all(
        db,
        "SELECT revision, time, actor, action, resource_type, resource_id, api_id, before_state, after_state,"
        f" created_permissions, request_id FROM audit_events{where} ORDER BY revision DESC LIMIT ?",
        (*params, query.limit + 1 if query.limit >= 0 else -1),
    )
    events = tuple(
        AuditEventRecord(
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
        for r in (rows if query.limit < 0 else rows[: query.limit])
    )
    return AuditPage(events, query.limit >= 0 and len(rows) > query.limit)
