"""The store's operations as plain functions of a sqlite3 connection.

SqliteStore runs each one whole on the connection's own thread, inside one
transaction (writes: `BEGIN IMMEDIATE`, reads: a snapshot), so an operation is
one trip from the event loop, and a cancelled call still ends in a commit or a
rollback, never halfway. Each checks the caller's permissions (and the etag it
sent) in the same transaction as its work; when it changed something, it
records the change (server.store.sqlite_audit.record_change: a new store-wide
revision, the rows' etags, one audit event). An operation asked to only
validate does the same work and then raises DryRun, which rolls it back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from server import access
from server.access import CLI, Principal
from server.credentials import new_id
from server.errors import AlreadyExists, NotFound
from server.store.models import (
    ApiRecord,
    AuditPage,
    AuditQuery,
    KeyChanges,
    KeyRecord,
    KeyVerification,
    NewKey,
    PermissionEntry,
    RoleRecord,
    RootKeyGrant,
    RootKeyRecord,
    ScopesUpdate,
    Written,
)
from server.store.snapshot import ApiRow, KeyRow, PermissionRow, RoleRow, RootKeyRow, StoreSnapshot
from server.store.sqlite_audit import (
    Change,
    api_state,
    key_state,
    list_events,
    record_change,
    role_state,
    root_key_state,
)
from server.store.sqlite_steps import (
    CHANGES_KEPT,
    DryRun,
    as_json,
    authorize_api,
    authorize_key,
    authorize_role,
    current_revision,
    etag_of,
    fetch_all,
    fetch_one,
    grantees,
    insert_permissions,
    link,
    load_api,
    load_key,
    load_roles,
    now_ms,
    replace_links,
    require_revision,
    resolve_permissions,
    resolve_roles,
)
from server.validation import ScopeSpec

__all__ = [
    "changes_since",
    "create_api",
    "create_key",
    "create_role",
    "create_root_key",
    "delete_key",
    "delete_root_key",
    "get_api",
    "get_key",
    "get_role",
    "list_audit_events",
    "list_root_keys",
    "root_key_grant",
    "set_permissions",
    "set_role_permissions",
    "set_roles",
    "set_root_key_enabled",
    "update_key",
    "update_scopes",
    "verify_key",
]

# -- root keys -----------------------------------------------------------


def create_root_key(
    db: sqlite3.Connection, name: str, secret_hash: bytes, permissions: Sequence[str], expires_ms: int | None = None
) -> RootKeyRecord:
    root_key_id = new_id("root")
    now = now_ms()
    unique = sorted(set(permissions))
    fetch_all(
        db,
        "INSERT INTO root_keys (id, name, secret_hash, enabled, expires_at, created_at) VALUES (?, ?, ?, 1, ?, ?)",
        (root_key_id, name, secret_hash, expires_ms, now),
    )
    fetch_all(
        db,
        "INSERT INTO root_key_permissions (root_key_id, name) SELECT ?, value FROM json_each(?)",
        (root_key_id, as_json(unique)),
    )
    after = root_key_state(db, root_key_id)
    record_change(db, CLI, Change("CreateRootKey", "root_key", root_key_id), None, after, now)
    return RootKeyRecord(root_key_id, name, tuple(unique), True, expires_ms, now)


def _existing_root_key(db: sqlite3.Connection, root_key_id: str) -> dict[str, object]:
    if fetch_one(db, "SELECT 1 FROM root_keys WHERE id = ?", (root_key_id,)) is None:
        raise NotFound("root key", [root_key_id])
    return root_key_state(db, root_key_id)


def set_root_key_enabled(db: sqlite3.Connection, root_key_id: str, enabled: bool) -> None:
    before = _existing_root_key(db, root_key_id)
    if before["enabled"] == enabled:
        return
    fetch_all(db, "UPDATE root_keys SET enabled = ? WHERE id = ?", (int(enabled), root_key_id))
    change = Change("EnableRootKey" if enabled else "DisableRootKey", "root_key", root_key_id)
    after = {**before, "enabled": enabled}
    record_change(db, CLI, change, before, after, now_ms(), cached=[("root", root_key_id)])


def delete_root_key(db: sqlite3.Connection, root_key_id: str) -> None:
    before = _existing_root_key(db, root_key_id)
    fetch_all(db, "DELETE FROM root_keys WHERE id = ?", (root_key_id,))
    change = Change("DeleteRootKey", "root_key", root_key_id)
    record_change(db, CLI, change, before, None, now_ms(), cached=[("root", root_key_id)])


def list_root_keys(db: sqlite3.Connection) -> list[RootKeyRecord]:
    rows = fetch_all(
        db,
        "SELECT r.id, r.name, r.enabled, r.expires_at, r.created_at,"
        " (SELECT json_group_array(name) FROM root_key_permissions"
        "  WHERE root_key_id = r.id) FROM root_keys r ORDER BY r.created_at, r.id",
    )
    return [RootKeyRecord(r[0], r[1], tuple(sorted(json.loads(r[5]))), bool(r[2]), r[3], r[4]) for r in rows]


def root_key_grant(db: sqlite3.Connection, secret_hash: bytes) -> RootKeyGrant | None:
    row = fetch_one(
        db,
        "SELECT m.revision, r.id, r.enabled, r.expires_at,"
        " (SELECT json_group_array(name) FROM root_key_permissions WHERE root_key_id = r.id)"
        " FROM meta m LEFT JOIN root_keys r ON r.secret_hash = ?",
        (secret_hash,),
    )
    assert row is not None
    if row[1] is None:
        return None
    return RootKeyGrant(row[1], tuple(json.loads(row[4])), bool(row[2]), row[3], row[0])


def changes_since(db: sqlite3.Connection, revision: int) -> tuple[int, bool, list[tuple[int, str, str]]]:
    """The store's revision; whether the change log still holds every change after `revision`; those changes.

    One statement, hence one snapshot without a transaction around it: it runs on the event loop's thread
    whenever another connection has committed.
    """
    rows = fetch_all(
        db,
        "SELECT m.revision, c.revision, c.kind, c.id FROM meta m"
        " LEFT JOIN changes c ON c.revision > ? AND c.revision <= m.revision ORDER BY c.revision",
        (revision,),
    )
    current = int(rows[0][0])
    changes = [(r, kind, id_) for _, r, kind, id_ in rows if r is not None]
    return current, revision >= current - CHANGES_KEPT, changes


def list_audit_events(db: sqlite3.Connection, principal: Principal, query: AuditQuery) -> AuditPage:
    principal.require(access.READ_EVENTS.permission(query.api_id or "*"))
    return list_events(db, query)


# -- APIs -------------------------------------------------------------------


def create_api(
    db: sqlite3.Connection, principal: Principal, name: str, scopes: Sequence[ScopeSpec]
) -> Written[ApiRecord]:
    principal.require(access.CREATE_API)
    api_id = new_id("api")
    now = now_ms()
    fetch_all(db, "INSERT INTO apis (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)", (api_id, name, now, now))
    insert_permissions(db, api_id, [(s.value, s.description) for s in scopes], now)
    after = api_state(db, api_id)
    revision = record_change(db, principal, Change("CreateApi", "api", api_id, api_id), None, after, now)
    return Written(load_api(db, api_id), revision)


def get_api(db: sqlite3.Connection, principal: Principal, api_id: str, min_revision: int) -> ApiRecord:
    require_revision(current_revision(db), min_revision)
    authorize_api(db, principal, access.READ_API, api_id)
    return load_api(db, api_id)


def update_scopes(
    db: sqlite3.Connection,
    principal: Principal,
    api_id: str,
    scopes: Sequence[ScopeSpec],
    etag: str = "",
    dry_run: bool = False,
) -> ScopesUpdate:
    now = now_ms()
    before_etag = authorize_api(db, principal, access.UPDATE_API, api_id, etag)
    before_revision = current_revision(db) if dry_run else 0
    current = {
        r[1]: (r[0], r[2])
        for r in fetch_all(db, "SELECT id, name, description FROM permissions WHERE api_id = ?", (api_id,))
    }
    wanted = {s.value: s.description for s in scopes}
    removed = sorted(name for name in current if name not in wanted)
    removed_ids = as_json([current[name][0] for name in removed])
    described = [
        [current[value][0], description]
        for value, description in wanted.items()
        if value in current and current[value][1] != description
    ]
    added = [(value, description) for value, description in wanted.items() if value not in current]
    before = api_state(db, api_id)
    key_ids: list[str] = []
    role_ids: list[str] = []
    if removed:
        key_ids, role_ids = grantees(db, removed_ids)
        # ON DELETE CASCADE takes the grants to keys and roles with them.
        fetch_all(db, "DELETE FROM permissions WHERE id IN (SELECT value FROM json_each(?))", (removed_ids,))
    if described:
        fetch_all(
            db,
            "UPDATE permissions SET description = j.value ->> 1"
            " FROM json_each(?) AS j WHERE permissions.id = j.value ->> 0",
            (as_json(described),),
        )
    created = insert_permissions(db, api_id, added, now)
    if removed or described or added:
        touched = [("keys", key_id) for key_id in key_ids] + [("roles", role_id) for role_id in role_ids]
        change = Change("UpdateScopes", "api", api_id, api_id)
        after = api_state(db, api_id)
        revision = record_change(db, principal, change, before, after, now, cached=[("api", api_id)], touched=touched)
    else:
        revision = current_revision(db)
    api = load_api(db, api_id)
    if dry_run:
        # The answer as the call would give it, but with the revision and etag that stay, and no ids yet.
        new_ids = {p.id for p in created}
        scopes = tuple(replace(s, id="") if s.id in new_ids else s for s in api.scopes)
        api = replace(api, scopes=scopes, etag=before_etag)
        raise DryRun(ScopesUpdate(api, tuple(removed), len(key_ids), len(role_ids), before_revision))
    return ScopesUpdate(api, tuple(removed), len(key_ids), len(role_ids), revision)


# -- keys -------------------------------------------------------------------


def create_key(db: sqlite3.Connection, principal: Principal, new: NewKey) -> Written[KeyRecord]:
    key_id = new_id("key")
    now = now_ms()
    authorize_api(db, principal, access.CREATE_KEY, new.api_id)
    role_ids = resolve_roles(db, new.api_id, new.roles)
    entries, created = resolve_permissions(db, principal, new.api_id, new.permissions, now)
    fetch_all(
        db,
        "INSERT INTO keys (id, api_id, secret_hash, start, name, enabled, expires_at,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key_id, new.api_id, new.secret_hash, new.start, new.name, int(new.enabled), new.expires_ms, now, now),
    )
    link(db, "key_permissions", "key_id", "permission_id", key_id, [p.id for p in entries])
    link(db, "key_roles", "key_id", "role_id", key_id, role_ids)
    change = Change("CreateKey", "key", key_id, new.api_id)
    revision = record_change(db, principal, change, None, key_state(db, key_id), now, created=created)
    return Written(load_key(db, key_id), revision, created)


def get_key(db: sqlite3.Connection, principal: Principal, key_id: str, min_revision: int) -> KeyRecord:
    require_revision(current_revision(db), min_revision)
    authorize_key(db, principal, access.READ_KEY, key_id)
    return load_key(db, key_id)


def update_key(
    db: sqlite3.Connection, principal: Principal, key_id: str, changes: KeyChanges, etag: str = ""
) -> Written[KeyRecord]:
    now = now_ms()
    api_id, _ = authorize_key(db, principal, access.UPDATE_KEY, key_id, etag)
    row = fetch_one(db, "SELECT name, enabled, expires_at FROM keys WHERE id = ?", (key_id,))
    assert row is not None
    name = row[0] if changes.name is None else changes.name
    enabled = bool(row[1]) if changes.enabled is None else changes.enabled
    expires = None if changes.clear_expiry else (row[2] if changes.expires_ms is None else changes.expires_ms)
    if (name, enabled, expires) != (row[0], bool(row[1]), row[2]):
        before = key_state(db, key_id)
        fetch_all(
            db,
            "UPDATE keys SET name = ?, enabled = ?, expires_at = ? WHERE id = ?",
            (name, int(enabled), expires, key_id),
        )
        change = Change("UpdateKey", "key", key_id, api_id)
        revision = record_change(db, principal, change, before, key_state(db, key_id), now, cached=[("key", key_id)])
    else:
        revision = current_revision(db)
    return Written(load_key(db, key_id), revision)


def delete_key(db: sqlite3.Connection, principal: Principal, key_id: str) -> int:
    api_id, _ = authorize_key(db, principal, access.DELETE_KEY, key_id)
    before = key_state(db, key_id)
    fetch_all(db, "DELETE FROM keys WHERE id = ?", (key_id,))
    change = Change("DeleteKey", "key", key_id, api_id)
    return record_change(db, principal, change, before, None, now_ms(), cached=[("key", key_id)])


def set_permissions(
    db: sqlite3.Connection,
    principal: Principal,
    key_id: str,
    names: Sequence[str],
    etag: str = "",
    dry_run: bool = False,
) -> Written[tuple[PermissionEntry, ...]]:
    """The key's direct permissions after the change (all SetPermissions answers with)."""
    now = now_ms()
    api_id, before_etag = authorize_key(db, principal, access.UPDATE_KEY, key_id, etag)
    before = key_state(db, key_id)
    entries, created = resolve_permissions(db, principal, api_id, names, now)
    changed = replace_links(db, "key_permissions", "key_id", "permission_id", key_id, [p.id for p in entries])
    permissions = tuple(sorted(entries, key=lambda p: p.name))
    if dry_run:
        # The answer as the call would give it, with the revision and etag that stay, and no ids yet.
        new_ids = {p.id for p in created}
        permissions = tuple(replace(p, id="") if p.id in new_ids else p for p in permissions)
        created = tuple(replace(p, id="") for p in created)
        raise DryRun(Written(permissions, current_revision(db), created, before_etag))
    if changed or created:
        after = {**before, "permissions": sorted(set(names))}
        change = Change("SetPermissions", "key", key_id, api_id)
        revision = record_change(db, principal, change, before, after, now, cached=[("key", key_id)], created=created)
        after_etag = etag_of(revision)
    else:
        revision, after_etag = current_revision(db), before_etag
    return Written(permissions, revision, created, after_etag)


def set_roles(
    db: sqlite3.Connection, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
) -> Written[KeyRecord]:
    now = now_ms()
    api_id, _ = authorize_key(db, principal, access.UPDATE_KEY, key_id, etag)
    role_ids = resolve_roles(db, api_id, role_names)
    before = key_state(db, key_id)
    if replace_links(db, "key_roles", "key_id", "role_id", key_id, role_ids):
        after = {**before, "roles": sorted(set(role_names))}
        change = Change("SetRoles", "key", key_id, api_id)
        revision = record_change(db, principal, change, before, after, now, cached=[("key", key_id)])
    else:
        revision = current_revision(db)
    return Written(load_key(db, key_id), revision)


def verify_key(db: sqlite3.Connection, secret_hash: bytes, min_revision: int) -> KeyVerification | None:
    # One statement, hence one snapshot: the store's revision, the key, its effective permissions and roles.
    row = fetch_one(
        db,
        "SELECT m.revision, k.id, k.api_id, k.enabled, k.expires_at,"
        " (SELECT json_group_array(name) FROM ("
        "   SELECT p.name AS name FROM key_permissions kp"
        "   JOIN permissions p ON p.id = kp.permission_id WHERE kp.key_id = k.id"
        "   UNION"
        "   SELECT p.name FROM key_roles kr JOIN role_permissions rp ON rp.role_id = kr.role_id"
        "   JOIN permissions p ON p.id = rp.permission_id WHERE kr.key_id = k.id)),"
        " (SELECT json_group_array(r.name) FROM key_roles kr JOIN roles r ON r.id = kr.role_id"
        "  WHERE kr.key_id = k.id)"
        " FROM meta m LEFT JOIN keys k ON k.secret_hash = ?",
        (secret_hash,),
    )
    assert row is not None
    require_revision(row[0], min_revision)
    if row[1] is None:
        return None
    return KeyVerification(
        row[1],
        row[2],
        bool(row[3]),
        row[4],
        tuple(sorted(json.loads(row[5]))),
        tuple(sorted(json.loads(row[6]))),
        row[0],
    )


# -- roles -------------------------------------------------------------------


def create_role(
    db: sqlite3.Connection, principal: Principal, api_id: str, name: str, description: str, permissions: Sequence[str]
) -> Written[RoleRecord]:
    role_id = new_id("role")
    now = now_ms()
    authorize_api(db, principal, access.CREATE_ROLE, api_id)
    if fetch_one(db, "SELECT 1 FROM roles WHERE api_id = ? AND name = ?", (api_id, name)):
        raise AlreadyExists("role", name)
    entries, created = resolve_permissions(db, principal, api_id, permissions, now)
    fetch_all(
        db,
        "INSERT INTO roles (id, api_id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        (role_id, api_id, name, description, now, now),
    )
    link(db, "role_permissions", "role_id", "permission_id", role_id, [p.id for p in entries])
    change = Change("CreateRole", "role", role_id, api_id)
    revision = record_change(db, principal, change, None, role_state(db, role_id), now, created=created)
    return Written(load_roles(db, [role_id])[0], revision, created)


def get_role(db: sqlite3.Connection, principal: Principal, role_id: str, min_revision: int) -> RoleRecord:
    require_revision(current_revision(db), min_revision)
    authorize_role(db, principal, access.READ_ROLE, role_id)
    return load_roles(db, [role_id])[0]


def set_role_permissions(
    db: sqlite3.Connection, principal: Principal, role_id: str, names: Sequence[str], etag: str = ""
) -> Written[RoleRecord]:
    now = now_ms()
    api_id, _ = authorize_role(db, principal, access.UPDATE_ROLE, role_id, etag)
    before = role_state(db, role_id)
    entries, created = resolve_permissions(db, principal, api_id, names, now)
    if replace_links(db, "role_permissions", "role_id", "permission_id", role_id, [p.id for p in entries]) or created:
        after = {**before, "permissions": sorted(set(names))}
        change = Change("SetRolePermissions", "role", role_id, api_id)
        # Every key holding the role may have gained or lost permissions: drop the API's keys from caches.
        revision = record_change(db, principal, change, before, after, now, cached=[("api", api_id)], created=created)
    else:
        revision = current_revision(db)
    return Written(load_roles(db, [role_id])[0], revision, created)


# -- the whole store ----------------------------------------------------------------


def export_snapshot(db: sqlite3.Connection) -> StoreSnapshot:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return sorted(fetch_all(db, sql))

    events = list_events(db, AuditQuery(limit=-1))  # every event, newest first
    return StoreSnapshot(
        revision=current_revision(db),
        apis=tuple(ApiRow(*r) for r in rows("SELECT id, name, created_at, updated_at, etag_revision FROM apis")),
        permissions=tuple(
            PermissionRow(*r) for r in rows("SELECT id, api_id, name, description, created_at FROM permissions")
        ),
        keys=tuple(
            KeyRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), *r[6:])
            for r in rows(
                "SELECT id, api_id, secret_hash, start, name, enabled, expires_at, created_at, updated_at,"
                " etag_revision FROM keys"
            )
        ),
        roles=tuple(
            RoleRow(*r)
            for r in rows("SELECT id, api_id, name, description, created_at, updated_at, etag_revision FROM roles")
        ),
        key_permissions=tuple(rows("SELECT key_id, permission_id FROM key_permissions")),
        key_roles=tuple(rows("SELECT key_id, role_id FROM key_roles")),
        role_permissions=tuple(rows("SELECT role_id, permission_id FROM role_permissions")),
        root_keys=tuple(
            RootKeyRow(r[0], r[1], r[2], bool(r[3]), r[4], r[5])
            for r in rows("SELECT id, name, secret_hash, enabled, expires_at, created_at FROM root_keys")
        ),
        root_key_permissions=tuple(rows("SELECT root_key_id, name FROM root_key_permissions")),
        changes=tuple(rows("SELECT revision, kind, id FROM changes")),
        audit_events=events.events[::-1],
    )
