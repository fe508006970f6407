"""The rules of keys: creation, their direct permissions (Unkey's setPermissions), roles and flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.credentials import new_id
from keyscope_server.store.authorization import authorize_api, authorize_key, etag_of, now_ms, require_revision
from keyscope_server.store.catalog import resolve_permissions, resolve_roles
from keyscope_server.store.changes import Change, record_change
from keyscope_server.store.engine import Links, Tables
from keyscope_server.store.models import KeyChanges, KeyRecord, NewKey, PermissionsUpdate, Written

__all__ = ["create_key", "delete_key", "get_key", "set_permissions", "set_roles", "update_key"]


async def create_key(tx: Tables, principal: Principal, new: NewKey) -> Written[KeyRecord]:
    key_id = new_id("key")
    now = now_ms()
    await authorize_api(tx, principal, access.CREATE_KEY, new.api_id)
    role_ids = await resolve_roles(tx, new.api_id, new.roles)
    entries, created = await resolve_permissions(tx, principal, new.api_id, new.permissions, now)
    await tx.keys.insert(key_id, new, now)
    await tx.keys.add_permissions(key_id, [p.id for p in entries])
    await tx.keys.add_roles(key_id, role_ids)
    change = Change("CreateKey", "key", key_id, new.api_id)
    revision = await record_change(tx, principal, change, None, await tx.keys.state(key_id), now, created=created)
    return Written(await tx.keys.load(key_id), revision, created)


async def get_key(tx: Tables, principal: Principal, key_id: str, min_revision: int) -> KeyRecord:
    require_revision(await tx.changes.revision(), min_revision)
    await authorize_key(tx, principal, access.READ_KEY, key_id)
    return await tx.keys.load(key_id)


async def update_key(
    tx: Tables, principal: Principal, key_id: str, changes: KeyChanges, etag: str
) -> Written[KeyRecord]:
    now = now_ms()
    key = await authorize_key(tx, principal, access.UPDATE_KEY, key_id, etag)
    before = key.state
    after = replace(
        before,
        name=before.name if changes.name is None else changes.name,
        enabled=before.enabled if changes.enabled is None else changes.enabled,
        expires_ms=None
        if changes.clear_expiry
        else before.expires_ms
        if changes.expires_ms is None
        else changes.expires_ms,
    )
    if after != before:
        await tx.keys.update(key_id, after.name, after.enabled, after.expires_ms)
        change = Change("UpdateKey", "key", key_id, key.api_id)
        revision = await record_change(tx, principal, change, before, after, now, cached=[("key", key_id)])
    else:
        revision = await tx.changes.revision()
    return Written(await tx.keys.load(key_id), revision)


async def delete_key(tx: Tables, principal: Principal, key_id: str) -> int:
    key = await authorize_key(tx, principal, access.DELETE_KEY, key_id)
    await tx.keys.delete(key_id)
    change = Change("DeleteKey", "key", key_id, key.api_id)
    return await record_change(tx, principal, change, key.state, None, now_ms(), cached=[("key", key_id)])


async def set_permissions(
    tx: Tables, principal: Principal, key_id: str, names: Sequence[str], etag: str, dry_run: bool
) -> PermissionsUpdate:
    """Make the key's direct permissions exactly `names`; permissions through roles stay as they are."""
    now = now_ms()
    key = await authorize_key(tx, principal, access.UPDATE_KEY, key_id, etag, permission_names=names)
    api_id, before, before_etag = key.api_id, key.state, etag_of(key.etag_revision)
    entries, created = await resolve_permissions(tx, principal, api_id, names, now, key.named_permissions)
    permissions = tuple(sorted(entries, key=lambda p: p.name))
    if dry_run:
        # The answer as the call would give it, with the revision and etag that stay, and no ids yet.
        new_ids = {p.id for p in created}
        permissions = tuple(replace(p, id="") if p.id in new_ids else p for p in permissions)
        created = tuple(replace(p, id="") for p in created)
        return PermissionsUpdate(permissions, created, before_etag, await tx.changes.revision())
    if set(names) == set(before.permissions) and not created:  # the key's links are as asked: nothing changes
        return PermissionsUpdate(permissions, created, before_etag, await tx.changes.revision())
    after = replace(before, permissions=tuple(sorted(set(names))))
    change = Change("SetPermissions", "key", key_id, api_id)
    links = Links("key_permissions", key_id, [p.id for p in entries])
    revision = await record_change(
        tx, principal, change, before, after, now, cached=[("key", key_id)], created=created, replaced=[links]
    )
    return PermissionsUpdate(permissions, created, etag_of(revision), revision)


async def set_roles(
    tx: Tables, principal: Principal, key_id: str, role_names: Sequence[str], etag: str
) -> Written[KeyRecord]:
    now = now_ms()
    key = await authorize_key(tx, principal, access.UPDATE_KEY, key_id, etag)
    role_ids = await resolve_roles(tx, key.api_id, role_names)
    if set(role_names) != set(key.state.roles):
        after = replace(key.state, roles=tuple(sorted(set(role_names))))
        change = Change("SetRoles", "key", key_id, key.api_id)
        links = Links("key_roles", key_id, role_ids)
        revision = await record_change(
            tx, principal, change, key.state, after, now, cached=[("key", key_id)], replaced=[links]
        )
    else:
        revision = await tx.changes.revision()
    return Written(await tx.keys.load(key_id), revision)
