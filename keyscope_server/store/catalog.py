"""Names to catalog entries and roles: unknown permission names are created only when the caller may create
permissions (Unkey's rule); unknown role names are not found."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.credentials import new_id
from keyscope_server.errors import NotFound, PermissionDenied
from keyscope_server.store.engine import Tables
from keyscope_server.store.models import PermissionEntry

__all__ = ["add_to_catalog", "resolve_permissions", "resolve_roles"]


async def add_to_catalog(
    tx: Tables, api_id: str, entries: Sequence[tuple[str, str]], now: int
) -> list[PermissionEntry]:
    """New catalog entries (name, description), each with a new id."""
    created = [PermissionEntry(new_id("perm"), name, description) for name, description in entries]
    if created:
        await tx.apis.add_permissions(api_id, created, now)
    return created


async def resolve_permissions(
    tx: Tables,
    principal: Principal,
    api_id: str,
    names: Sequence[str],
    now: int,
    existing: Mapping[str, PermissionEntry] | None = None,
) -> tuple[list[PermissionEntry], tuple[PermissionEntry, ...]]:
    """The named catalog entries (once each, in order), creating the unknown ones if the caller may; and those
    it created. `existing`: those of the names the catalog has, if the caller has read them already (with the key
    or role they are for: Current.named_permissions)."""
    if not names:
        return [], ()
    found = dict(await tx.apis.permissions_named(api_id, names) if existing is None else existing)
    unknown = [name for name in dict.fromkeys(names) if name not in found]
    created: list[PermissionEntry] = []
    if unknown:
        required = access.CREATE_PERMISSION.permission(api_id)
        if not principal.allows(required):
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise PermissionDenied(
                required,
                reason="PERMISSIONS_NOT_IN_CATALOG",
                subjects=unknown,
                message=f"not in the API's catalog: {shown}; creating them needs {required}",
            )
        created = await add_to_catalog(tx, api_id, [(name, "") for name in unknown], now)
        found.update((p.name, p) for p in created)
    return [found[name] for name in dict.fromkeys(names)], tuple(created)


async def resolve_roles(tx: Tables, api_id: str, names: Sequence[str]) -> list[str]:
    """The ids of the API's named roles (once each, in order); NotFound names those it does not have."""
    if not names:
        return []
    found = await tx.roles.named(api_id, names)
    unknown = [name for name in dict.fromkeys(names) if name not in found]
    if unknown:
        raise NotFound("role", unknown)
    return [found[name] for name in dict.fromkeys(names)]
