"""The rules of roles: a named set of an API's permissions, granted to every key that has the role."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.credentials import new_id
from keyscope_server.errors import AlreadyExists
from keyscope_server.store.authorization import authorize_api, authorize_role, now_ms, require_revision
from keyscope_server.store.catalog import resolve_permissions
from keyscope_server.store.changes import Change, record_change
from keyscope_server.store.engine import Links, Tables
from keyscope_server.store.models import Page, RoleDeletion, RoleRecord, Written

__all__ = ["create_role", "delete_role", "get_role", "list_roles", "set_role_permissions"]


async def create_role(
    tx: Tables, principal: Principal, api_id: str, name: str, description: str, permissions: Sequence[str]
) -> Written[RoleRecord]:
    role_id = new_id("role")
    now = now_ms()
    await authorize_api(tx, principal, access.CREATE_ROLE, api_id)
    if await tx.roles.named(api_id, [name]):
        raise AlreadyExists("role", name)
    entries, created = await resolve_permissions(tx, principal, api_id, permissions, now)
    await tx.roles.insert(role_id, api_id, name, description, now)
    await tx.roles.add_permissions(role_id, [p.id for p in entries])
    change = Change("CreateRole", "role", role_id, api_id)
    revision = await record_change(tx, principal, change, None, await tx.roles.state(role_id), now, created=created)
    return Written(await tx.roles.load(role_id), revision, created)


async def get_role(tx: Tables, principal: Principal, role_id: str, min_revision: int) -> RoleRecord:
    require_revision(await tx.changes.revision(), min_revision)
    await authorize_role(tx, principal, access.READ_ROLE, role_id)
    return await tx.roles.load(role_id)


async def set_role_permissions(
    tx: Tables, principal: Principal, role_id: str, names: Sequence[str], etag: str
) -> Written[RoleRecord]:
    now = now_ms()
    role = await authorize_role(tx, principal, access.UPDATE_ROLE, role_id, etag, permission_names=names)
    api_id, before = role.api_id, role.state
    entries, created = await resolve_permissions(tx, principal, api_id, names, now, role.named_permissions)
    if set(names) != set(before.permissions) or created:
        after = replace(before, permissions=tuple(sorted(set(names))))
        change = Change("SetRolePermissions", "role", role_id, api_id)
        links = Links("role_permissions", role_id, [p.id for p in entries])
        # Every key holding the role may have gained or lost permissions: caches drop the API's keys.
        revision = await record_change(
            tx, principal, change, before, after, now, cached=[("api", api_id)], created=created, replaced=[links]
        )
    else:
        revision = await tx.changes.revision()
    return Written(await tx.roles.load(role_id), revision, created)


async def list_roles(
    tx: Tables, principal: Principal, api_id: str, after: str, limit: int, min_revision: int
) -> Page[RoleRecord]:
    """The API's roles after the name `after`, by name: up to `limit`."""
    require_revision(await tx.changes.revision(), min_revision)
    await authorize_api(tx, principal, access.LIST_ROLES, api_id)
    role_ids = await tx.roles.ids_after(api_id, after, limit + 1)
    return Page(tuple([await tx.roles.load(role_id) for role_id in role_ids[:limit]]), len(role_ids) > limit)


async def delete_role(tx: Tables, principal: Principal, role_id: str, etag: str, dry_run: bool) -> RoleDeletion:
    """Delete the role: every key that had it loses it, and with it the permissions it granted them."""
    now = now_ms()
    role = await authorize_role(tx, principal, access.DELETE_ROLE, role_id, etag)
    holders = await tx.roles.holders(role_id)
    if dry_run:
        return RoleDeletion(len(holders), await tx.changes.revision())
    await tx.roles.delete(role_id)
    change = Change("DeleteRole", "role", role_id, role.api_id)
    keys = [("key", key_id) for key_id in holders]
    revision = await record_change(tx, principal, change, role.state, None, now, cached=keys, touched=keys)
    return RoleDeletion(len(holders), revision)
