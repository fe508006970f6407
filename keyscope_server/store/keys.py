"""The rules of keys: creation, their direct permissions (Unkey's setPermissions), roles and flags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.credentials import new_id
from keyscope_server.store.authorization import authorize_api, authorize_key, etag_of, now_ms, require_revision
from keyscope_server.store.catalog import resolve_permissions, resolve_roles
from keyscope_server.store.changes import Change, record_change
from keyscope_server.store.engine import Links, Tables
from keyscope_server.store.models import KeyChanges, KeyQuery, KeyRecord, NewKey, Page, PermissionsUpdate, Written

__all__ = [
    "add_permissions",
    "add_roles",
    "create_key",
    "delete_key",
    "get_key",
    "list_keys",
    "remove_permissions",
    "remove_roles",
    "set_permissions",
    "set_roles",
    "update_key",
]


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


async def list_keys(tx: Tables, principal: Principal, query: KeyQuery, min_revision: int) -> Page[KeyRecord]:
    """The keys of the API that the query lists: up to `query.limit`, in id order."""
    require_revision(await tx.changes.revision(), min_revision)
    await authorize_api(tx, principal, access.LIST_KEYS, query.api_id)
    key_ids = await tx.keys.ids(replace(query, limit=query.limit + 1))
    return Page(tuple([await tx.keys.load(key_id) for key_id in key_ids[: query.limit]]), len(key_ids) > query.limit)


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
    """Make the key's direct permissions exactly `names` (Unkey's setPermissions); those through roles stay."""
    return await _replace_permissions(tx, principal, "SetPermissions", key_id, etag, dry_run, names)


async def add_permissions(
    tx: Tables, principal: Principal, key_id: str, names: Sequence[str], etag: str, dry_run: bool
) -> PermissionsUpdate:
    """Give the key `names` too (Unkey's addPermissions): its direct permissions and these."""
    return await _replace_permissions(
        tx, principal, "AddPermissions", key_id, etag, dry_run, (), lambda held: (*held, *names)
    )


async def remove_permissions(
    tx: Tables, principal: Principal, key_id: str, names: Sequence[str], etag: str, dry_run: bool
) -> PermissionsUpdate:
    """Take `names` from the key's direct permissions (Unkey's removePermissions); names it lacks are ignored."""
    removed = set(names)
    return await _replace_permissions(
        tx,
        principal,
        "RemovePermissions",
        key_id,
        etag,
        dry_run,
        (),
        lambda held: [n for n in held if n not in removed],
    )


async def _replace_permissions(
    tx: Tables,
    principal: Principal,
    action: str,
    key_id: str,
    etag: str,
    dry_run: bool,
    named: Sequence[str],
    wanted_of: Callable[[tuple[str, ...]], Sequence[str]] | None = None,
) -> PermissionsUpdate:
    """Replace the key's direct permissions, in one change: by the names of the request (`named`), or by what
    `wanted_of` makes of those the key holds. The catalog entries of `named` are read with the key."""
    now = now_ms()
    key = await authorize_key(tx, principal, access.UPDATE_KEY, key_id, etag, permission_names=named)
    api_id, before, before_etag = key.api_id, key.state, etag_of(key.etag_revision)
    if wanted_of is None:
        wanted, existing = named, key.named_permissions
    else:
        wanted, existing = tuple(dict.fromkeys(wanted_of(before.permissions))), None  # read with the rest
    entries, created = await resolve_permissions(tx, principal, api_id, wanted, now, existing)
    permissions = tuple(sorted(entries, key=lambda p: p.name))
    if dry_run:
        # The answer as the call would give it, with the revision and etag that stay, and no ids yet.
        new_ids = {p.id for p in created}
        permissions = tuple(replace(p, id="") if p.id in new_ids else p for p in permissions)
        created = tuple(replace(p, id="") for p in created)
        return PermissionsUpdate(permissions, created, before_etag, await tx.changes.revision())
    if set(wanted) == set(before.permissions) and not created:  # the key's links are as asked: nothing changes
        return PermissionsUpdate(permissions, created, before_etag, await tx.changes.revision())
    after = replace(before, permissions=tuple(sorted(set(wanted))))
    change = Change(action, "key", key_id, api_id)
    links = Links("key_permissions", key_id, [p.id for p in entries])
    revision = await record_change(
        tx, principal, change, before, after, now, cached=[("key", key_id)], created=created, replaced=[links]
    )
    return PermissionsUpdate(permissions, created, etag_of(revision), revision)


async def set_roles(
    tx: Tables, principal: Principal, key_id: str, role_names: Sequence[str], etag: str
) -> Written[KeyRecord]:
    """Make the key's roles exactly `role_names`, roles of its API."""
    return await _replace_roles(tx, principal, "SetRoles", key_id, etag, lambda held: role_names)


async def add_roles(
    tx: Tables, principal: Principal, key_id: str, role_names: Sequence[str], etag: str
) -> Written[KeyRecord]:
    """Give the key the roles `role_names` too (Unkey's addRoles)."""
    return await _replace_roles(tx, principal, "AddRoles", key_id, etag, lambda held: (*held, *role_names))


async def remove_roles(
    tx: Tables, principal: Principal, key_id: str, role_names: Sequence[str], etag: str
) -> Written[KeyRecord]:
    """Take the roles `role_names` from the key (Unkey's removeRoles); names it does not hold are ignored."""
    removed = set(role_names)
    return await _replace_roles(
        tx, principal, "RemoveRoles", key_id, etag, lambda held: [r for r in held if r not in removed]
    )


async def _replace_roles(
    tx: Tables,
    principal: Principal,
    action: str,
    key_id: str,
    etag: str,
    wanted_of: Callable[[tuple[str, ...]], Sequence[str]],
) -> Written[KeyRecord]:
    now = now_ms()
    key = await authorize_key(tx, principal, access.UPDATE_KEY, key_id, etag)
    wanted = tuple(dict.fromkeys(wanted_of(key.state.roles)))
    role_ids = await resolve_roles(tx, key.api_id, wanted)
    if set(wanted) != set(key.state.roles):
        after = replace(key.state, roles=tuple(sorted(set(wanted))))
        change = Change(action, "key", key_id, key.api_id)
        links = Links("key_roles", key_id, role_ids)
        revision = await record_change(
            tx, principal, change, key.state, after, now, cached=[("key", key_id)], replaced=[links]
        )
    else:
        revision = await tx.changes.revision()
    return Written(await tx.keys.load(key_id), revision)
