"""Rebuilding the store's state from its audit trail alone, and reading the state the store really has.

`replay` applies events oldest first to an empty state and checks, on the way,
that each event's `before` is exactly the state the earlier events built: a
missing, doubled or wrong event shows there, not only in the final state.
`store_state` reads the same shape from a store's logical snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict

from keyscope.v1 import audit_pb2
from server.store.snapshot import StoreSnapshot
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


def store_state(snapshot: StoreSnapshot) -> State:
    """The state a store holds, read from its logical snapshot (`await store.export_snapshot()`)."""
    permission_name = {p.id: p.name for p in snapshot.permissions}
    role_name = {r.id: r.name for r in snapshot.roles}
    state = State()
    for api in snapshot.apis:
        scopes = {p.name: p.description for p in snapshot.permissions if p.api_id == api.id}
        state.apis[api.id] = {"name": api.name, "scopes": scopes}
    for key in snapshot.keys:
        state.keys[key.id] = {
            "api_id": key.api_id,
            "name": key.name,
            "enabled": key.enabled,
            "expire_time": _rfc3339(key.expires_ms),
            "permissions": sorted(permission_name[p] for k, p in snapshot.key_permissions if k == key.id),
            "roles": sorted(role_name[r] for k, r in snapshot.key_roles if k == key.id),
        }
    for role in snapshot.roles:
        state.roles[role.id] = {
            "api_id": role.api_id,
            "name": role.name,
            "description": role.description,
            "permissions": sorted(permission_name[p] for r, p in snapshot.role_permissions if r == role.id),
        }
    return state


def as_json(state: State) -> str:
    """For a readable diff when two states differ."""
    return json.dumps({"apis": state.apis, "keys": state.keys, "roles": state.roles}, indent=1, sort_keys=True)
