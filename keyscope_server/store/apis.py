"""The rules of APIs and their scope lists (Auth0's resource servers), for every engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.credentials import new_id
from keyscope_server.store.authorization import authorize_api, now_ms, require_revision
from keyscope_server.store.catalog import add_to_catalog
from keyscope_server.store.changes import Change, record_change
from keyscope_server.store.engine import Tables
from keyscope_server.store.models import ApiDeletion, ApiRecord, Page, PermissionEntry, ScopeSpec, ScopesUpdate, Written

__all__ = ["create_api", "delete_api", "get_api", "list_apis", "list_permissions", "update_scopes"]


async def create_api(tx: Tables, principal: Principal, name: str, scopes: Sequence[ScopeSpec]) -> Written[ApiRecord]:
    principal.require(access.CREATE_API)
    api_id = new_id("api")
    now = now_ms()
    await tx.apis.insert(api_id, name, now)
    await add_to_catalog(tx, api_id, [(s.value, s.description) for s in scopes], now)
    after = await tx.apis.state(api_id)
    revision = await record_change(tx, principal, Change("CreateApi", "api", api_id, api_id), None, after, now)
    return Written(await tx.apis.load(api_id), revision)


async def get_api(tx: Tables, principal: Principal, api_id: str, min_revision: int) -> ApiRecord:
    require_revision(await tx.changes.revision(), min_revision)
    await authorize_api(tx, principal, access.READ_API, api_id)
    return await tx.apis.load(api_id)


async def list_apis(tx: Tables, principal: Principal, after: str, limit: int, min_revision: int) -> Page[ApiRecord]:
    """The APIs after the id `after` that the caller may read: up to `limit`. Those it may not read are skipped
    (permissions can name APIs one by one, or by patterns, so they are sifted here rather than in SQL)."""
    require_revision(await tx.changes.revision(), min_revision)
    visible: list[str] = []
    while len(visible) <= limit:
        batch = await tx.apis.ids_after(after, limit + 1)
        visible += [api_id for api_id in batch if principal.may(access.READ_API, api_id)]
        if len(batch) <= limit:
            break
        after = batch[-1]
    return Page(tuple([await tx.apis.load(api_id) for api_id in visible[:limit]]), len(visible) > limit)


async def list_permissions(
    tx: Tables, principal: Principal, api_id: str, after: str, limit: int, min_revision: int
) -> Page[PermissionEntry]:
    """The entries of the API's catalog after the name `after`, by name: up to `limit`."""
    require_revision(await tx.changes.revision(), min_revision)
    await authorize_api(tx, principal, access.READ_API, api_id)
    entries = await tx.apis.catalog_after(api_id, after, limit + 1)
    return Page(tuple(entries[:limit]), len(entries) > limit)


async def delete_api(tx: Tables, principal: Principal, api_id: str, etag: str, dry_run: bool) -> ApiDeletion:
    """Delete the API with its catalog, roles and keys, in one change; what went with it, counted."""
    now = now_ms()
    await authorize_api(tx, principal, access.DELETE_API, api_id, etag)
    before = await tx.apis.state(api_id)
    keys, roles, scopes = await tx.apis.contents(api_id)
    if dry_run:
        return ApiDeletion(keys, roles, scopes, await tx.changes.revision())
    await tx.apis.delete(api_id)
    change = Change("DeleteApi", "api", api_id, api_id)
    revision = await record_change(tx, principal, change, before, None, now, cached=[("api", api_id)])
    return ApiDeletion(keys, roles, scopes, revision)


async def update_scopes(
    tx: Tables, principal: Principal, api_id: str, scopes: Sequence[ScopeSpec], etag: str, dry_run: bool
) -> ScopesUpdate:
    """Make the API's catalog exactly `scopes`: a removed scope leaves every key and role that held it."""
    now = now_ms()
    before_etag = await authorize_api(tx, principal, access.UPDATE_API, api_id, etag)
    before_revision = await tx.changes.revision()
    current = {p.name: p for p in await tx.apis.catalog(api_id)}
    wanted = {s.value: s.description for s in scopes}
    removed = sorted(name for name in current if name not in wanted)
    described = [
        (current[value].id, description)
        for value, description in wanted.items()
        if value in current and current[value].description != description
    ]
    added = [(value, description) for value, description in wanted.items() if value not in current]
    before = await tx.apis.state(api_id)
    key_ids: list[str] = []
    role_ids: list[str] = []
    if removed:
        key_ids, role_ids = await tx.apis.remove_permissions([current[name].id for name in removed])
    if described:
        await tx.apis.describe_permissions(described)
    created = await add_to_catalog(tx, api_id, added, now)
    revision = before_revision
    if removed or described or added:
        touched = [("key", key_id) for key_id in key_ids] + [("role", role_id) for role_id in role_ids]
        change = Change("UpdateScopes", "api", api_id, api_id)
        after = await tx.apis.state(api_id)
        revision = await record_change(
            tx, principal, change, before, after, now, cached=[("api", api_id)], touched=touched
        )
    api = await tx.apis.load(api_id)
    if dry_run:
        # The answer as the call would give it, but with the revision and etag that stay, and no ids yet.
        new_ids = {p.id for p in created}
        api = replace(
            api, scopes=tuple(replace(s, id="") if s.id in new_ids else s for s in api.scopes), etag=before_etag
        )
        revision = before_revision
    return ScopesUpdate(api, tuple(removed), len(key_ids), len(role_ids), revision)
