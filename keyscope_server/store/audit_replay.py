"""Rebuilding a store's state from its audit trail alone, and reading the same state from its snapshot.

`replay` applies events oldest first to an empty state and checks, on the way,
that each event's `before` is exactly the state the earlier events built: a
missing, doubled or wrong event shows at the first event it spoils, not only in
the final state. `store_state` reads the same shape from a snapshot, and
`check_audit_trail` says whether a snapshot's own trail rebuilds it. Events and
states are as keyscope_server.store.states shapes them (`as_event`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from keyscope_server.store.models import AuditEventRecord
from keyscope_server.store.snapshot import StoreSnapshot

__all__ = ["AuditTrailMismatch", "ReplayedState", "check_audit_trail", "replay", "store_state"]

Resource = dict[str, Any]


class AuditTrailMismatch(ValueError):
    """The audit trail does not rebuild the state it should: the message names the first place it goes wrong."""


@dataclass
class ReplayedState:
    """Each resource by id, as its audit events describe it. APIs: name, scopes (value -> description); keys and
    roles: their event shape and `api_id`; root keys: their event shape."""

    apis: dict[str, Resource] = field(default_factory=dict)
    keys: dict[str, Resource] = field(default_factory=dict)
    roles: dict[str, Resource] = field(default_factory=dict)
    root_keys: dict[str, Resource] = field(default_factory=dict)


def _api(event_shape: Resource) -> Resource:
    return {"name": event_shape["name"], "scopes": {s["value"]: s["description"] for s in event_shape["scopes"]}}


def _as_event(kind: str, resource: Resource | None) -> Resource | None:
    """A resource of the replayed state as its next event's `before` must show it."""
    if resource is None:
        return None
    if kind == "api":
        scopes = sorted(resource["scopes"].items())
        return {"name": resource["name"], "scopes": [{"value": v, "description": d} for v, d in scopes]}
    return {k: v for k, v in resource.items() if k != "api_id"}


def _remove_grants(state: ReplayedState, api_id: str, gone: set[str]) -> None:
    """Removing a scope from an API's catalog takes every grant of it with it: no event says so per holder."""
    for holder in (*state.keys.values(), *state.roles.values()):
        if holder["api_id"] == api_id and gone.intersection(holder["permissions"]):
            holder["permissions"] = [p for p in holder["permissions"] if p not in gone]


def _remove_contents(state: ReplayedState, kind: str, rid: str, event: AuditEventRecord) -> None:
    """A deletion takes what is in the deleted resource with it, which no event says per item: an API its keys and
    roles, a role its place among every key's roles."""
    if kind == "api":
        for table in (state.keys, state.roles):
            for item_id in [i for i, item in table.items() if item["api_id"] == rid]:
                del table[item_id]
    elif kind == "role":
        name = event.before["name"] if event.before else ""
        for key in state.keys.values():
            if key["api_id"] == event.api_id and name in key["roles"]:
                key["roles"] = [r for r in key["roles"] if r != name]


def replay(events: Iterable[AuditEventRecord]) -> ReplayedState:
    """The state the events build from empty, oldest first; AuditTrailMismatch at the first event whose `before`
    is not what the events before it built."""
    state = ReplayedState()
    tables = {"api": state.apis, "key": state.keys, "role": state.roles, "root_key": state.root_keys}
    last = 0
    for event in events:
        kind, rid = event.resource_type, event.resource_id
        where = f"revision {event.revision} ({event.action} {kind} {rid})"
        if event.revision <= last:
            raise AuditTrailMismatch(f"{where}: out of order, after revision {last}")
        last = event.revision
        if kind not in tables:
            raise AuditTrailMismatch(f"{where}: no such kind of resource")
        table = tables[kind]
        seen = _as_event(kind, table.get(rid))
        if seen != event.before:
            raise AuditTrailMismatch(f"{where}: the event says before {event.before}, the trail so far built {seen}")
        if event.created_permissions and event.api_id not in state.apis:
            raise AuditTrailMismatch(f"{where}: adds to the catalog of API {event.api_id}, which the trail lacks")
        for name in event.created_permissions:  # a side effect on the API's catalog
            state.apis[event.api_id]["scopes"].setdefault(name, "")
        if event.after is None:
            if event.before is None:
                raise AuditTrailMismatch(f"{where}: neither before nor after")
            del table[rid]
            _remove_contents(state, kind, rid, event)
        elif kind == "api":
            old = set(state.apis[rid]["scopes"]) if rid in state.apis else set()
            state.apis[rid] = _api(event.after)
            _remove_grants(state, rid, old - set(state.apis[rid]["scopes"]))
        elif kind == "root_key":
            table[rid] = dict(event.after)
        else:
            table[rid] = {**event.after, "api_id": event.api_id}
    return state


def _rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _grouped(pairs: Iterable[tuple[str, str]], names: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """(holder id, granted id or name) pairs as each holder's sorted granted names."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for holder, granted in pairs:
        grouped[holder].append(granted if names is None else names[granted])
    return {holder: sorted(granted) for holder, granted in grouped.items()}


def store_state(snapshot: StoreSnapshot) -> ReplayedState:
    """The state a store holds, read from its snapshot, in the shape `replay` builds."""
    permission_name = {p.id: p.name for p in snapshot.permissions}
    role_name = {r.id: r.name for r in snapshot.roles}
    key_permissions = _grouped(snapshot.key_permissions, permission_name)
    key_roles = _grouped(snapshot.key_roles, role_name)
    role_permissions = _grouped(snapshot.role_permissions, permission_name)
    root_key_permissions = _grouped(snapshot.root_key_permissions)
    scopes: dict[str, dict[str, str]] = defaultdict(dict)
    for p in snapshot.permissions:
        scopes[p.api_id][p.name] = p.description
    state = ReplayedState()
    for api in snapshot.apis:
        state.apis[api.id] = {"name": api.name, "scopes": scopes.get(api.id, {})}
    for key in snapshot.keys:
        state.keys[key.id] = {
            "api_id": key.api_id,
            "name": key.name,
            "enabled": key.enabled,
            "expire_time": _rfc3339(key.expires_ms),
            "permissions": key_permissions.get(key.id, []),
            "roles": key_roles.get(key.id, []),
        }
    for role in snapshot.roles:
        state.roles[role.id] = {
            "api_id": role.api_id,
            "name": role.name,
            "description": role.description,
            "permissions": role_permissions.get(role.id, []),
        }
    for root in snapshot.root_keys:
        state.root_keys[root.id] = {
            "name": root.name,
            "enabled": root.enabled,
            "expire_time": _rfc3339(root.expires_ms),
            "permissions": root_key_permissions.get(root.id, []),
        }
    return state


def _last_event_of(events: Sequence[AuditEventRecord], resource_id: str) -> str:
    revisions = [e.revision for e in events if e.resource_id == resource_id]
    return f"its last event is revision {revisions[-1]}" if revisions else "no event names it"


def check_audit_trail(snapshot: StoreSnapshot) -> None:
    """AuditTrailMismatch unless the snapshot's audit trail, replayed from empty, gives exactly what it holds."""
    rebuilt, held = replay(snapshot.audit_events), store_state(snapshot)
    for kind in fields(ReplayedState):
        replayed, actual = getattr(rebuilt, kind.name), getattr(held, kind.name)
        for rid in sorted(replayed.keys() | actual.keys()):
            if replayed.get(rid) != actual.get(rid):
                raise AuditTrailMismatch(
                    f"{kind.name} {rid} ({_last_event_of(snapshot.audit_events, rid)}): the trail rebuilds "
                    f"{replayed.get(rid)}, the store holds {actual.get(rid)}"
                )
