"""Rebuilding the store's state from its audit trail alone, and reading the state the store really has.

`replay` applies events oldest first to an empty state and checks, on the way,
that each event's `before` is exactly the state the earlier events built: a
missing, doubled or wrong event shows there, not only in the final state.
`store_state` reads the same shape straight from the SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from keyscope.v1 import audit_pb2
from tests.client import Caller

__all__ = ["State", "all_events", "replay", "store_state"]


@dataclass
class State:
    """APIs (name, scopes: value -> description), keys and roles, by id; what the audit trail describes."""

    apis: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)


def _api(state: dict[str, Any]) -> dict[str, Any]:
    return {"name": state["name"], "scopes": {s["value"]: s["description"] for s in state["scopes"]}}


def _api_as_event(api: dict[str, Any]) -> dict[str, Any]:
    return {"name": api["name"], "scopes": [{"value": v, "description": d} for v, d in sorted(api["scopes"].items())]}


async def all_events(caller: Caller, page_size: int = 37, **filters: Any) -> list[audit_pb2.AuditEvent]:
    """Every event ListAuditEvents gives, page after page, oldest first."""
    events: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await caller.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=page_size, page_token=token, **filters), metadata=caller.md
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events[::-1]


def replay(events: Iterable[audit_pb2.AuditEvent]) -> State:
    state = State()
    last = 0
    for event in events:
        assert event.revision > last, f"events out of order at revision {event.revision}"
        last = event.revision
        before = MessageToDict(event.before) if event.HasField("before") else None
        after = MessageToDict(event.after) if event.HasField("after") else None
        kind, rid = event.resource_type, event.resource_id
        if kind == "root_key":
            continue
        table = {"api": state.apis, "key": state.keys, "role": state.roles}[kind]
        seen = table.get(rid)
        if kind == "api":
            seen = None if seen is None else _api_as_event(seen)
        elif seen is not None:
            seen = {k: v for k, v in seen.items() if k != "api_id"}
        assert seen == before, f"revision {event.revision} ({event.action} {rid}): before {before} but state {seen}"
        for name in event.created_permissions:  # a side effect on the API's catalog
            state.apis[event.api_id]["scopes"].setdefault(name, "")
        if after is None:
            del table[rid]
        elif kind == "api":
            old = set(state.apis[rid]["scopes"]) if rid in state.apis else set()
            state.apis[rid] = _api(after)
            for gone in old - set(state.apis[rid]["scopes"]):  # removing a scope takes its grants with it
                for holder in (*state.keys.values(), *state.roles.values()):
                    if holder["api_id"] == rid and gone in holder["permissions"]:
                        holder["permissions"].remove(gone)
        else:
            table[rid] = {**after, "api_id": event.api_id}
    return state


def _rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def store_state(db_path: Path) -> State:
    """The state the SQLite file holds, read directly (read-only)."""
    state = State()
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        for api_id, name in db.execute("SELECT id, name FROM apis"):
            scopes = dict(db.execute("SELECT name, description FROM permissions WHERE api_id = ?", (api_id,)))
            state.apis[api_id] = {"name": name, "scopes": scopes}
        for key_id, api_id, name, enabled, expires in db.execute(
            "SELECT id, api_id, name, enabled, expires_at FROM keys"
        ):
            state.keys[key_id] = {
                "api_id": api_id,
                "name": name,
                "enabled": bool(enabled),
                "expire_time": _rfc3339(expires),
                "permissions": _names(db, "key_permissions", "permissions", "key_id", "permission_id", key_id),
                "roles": _names(db, "key_roles", "roles", "key_id", "role_id", key_id),
            }
        for role_id, api_id, name, description in db.execute("SELECT id, api_id, name, description FROM roles"):
            state.roles[role_id] = {
                "api_id": api_id,
                "name": name,
                "description": description,
                "permissions": _names(db, "role_permissions", "permissions", "role_id", "permission_id", role_id),
            }
    return state


def _names(db: sqlite3.Connection, links: str, targets: str, owner: str, target: str, owner_id: str) -> list[str]:
    rows = db.execute(
        f"SELECT t.name FROM {links} l JOIN {targets} t ON t.id = l.{target} WHERE l.{owner} = ?", (owner_id,)
    )
    return sorted(r[0] for r in rows)


def as_json(state: State) -> str:
    """For a readable diff when two states differ."""
    return json.dumps({"apis": state.apis, "keys": state.keys, "roles": state.roles}, indent=1, sort_keys=True)
