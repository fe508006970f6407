"""The rules of root keys: administration from the command line (audited with the actor `cli`), and whether a
root key, as the store knows it, may act now."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from keyscope_server.access import CLI, Principal
from keyscope_server.credentials import new_id
from keyscope_server.errors import NotFound, Unauthenticated
from keyscope_server.store.authorization import now_ms
from keyscope_server.store.changes import Change, record_change
from keyscope_server.store.engine import Tables
from keyscope_server.store.models import RootKeyGrant, RootKeyRecord

__all__ = ["admit", "create_root_key", "delete_root_key", "list_root_keys", "set_root_key_enabled"]


def admit(
    grant: RootKeyGrant | None, now_ms: int, request_id: str = "", checked_since: float | None = None
) -> Principal:
    """The caller a root key makes for the request `request_id`, if it may act now; otherwise Unauthenticated.
    `checked_since`: when the freshness check that authentication made began."""
    if grant is None:
        raise Unauthenticated("unknown root key", reason="unknown")
    if not grant.enabled:
        raise Unauthenticated("the root key is disabled", reason="disabled")
    if grant.expires_ms is not None and grant.expires_ms <= now_ms:
        raise Unauthenticated("the root key has expired", reason="expired")
    return Principal(grant.id, grant.permissions, request_id, checked_since)


async def create_root_key(
    tx: Tables, name: str, secret_hash: bytes, permissions: Sequence[str], expires_ms: int | None
) -> RootKeyRecord:
    root_key_id = new_id("root")
    now = now_ms()
    unique = tuple(sorted(set(permissions)))
    await tx.root_keys.insert(root_key_id, name, secret_hash, unique, expires_ms, now)
    after = await tx.root_keys.state(root_key_id)
    await record_change(tx, CLI, Change("CreateRootKey", "root_key", root_key_id), None, after, now)
    return RootKeyRecord(root_key_id, name, unique, True, expires_ms, now)


async def set_root_key_enabled(tx: Tables, root_key_id: str, enabled: bool) -> None:
    before = await tx.root_keys.state(root_key_id)
    if before is None:
        raise NotFound("root key", [root_key_id])
    if before.enabled == enabled:
        return
    await tx.root_keys.set_enabled(root_key_id, enabled)
    change = Change("EnableRootKey" if enabled else "DisableRootKey", "root_key", root_key_id)
    after = replace(before, enabled=enabled)
    await record_change(tx, CLI, change, before, after, now_ms(), cached=[("root", root_key_id)])


async def delete_root_key(tx: Tables, root_key_id: str) -> None:
    before = await tx.root_keys.state(root_key_id)
    if before is None:
        raise NotFound("root key", [root_key_id])
    await tx.root_keys.delete(root_key_id)
    change = Change("DeleteRootKey", "root_key", root_key_id)
    await record_change(tx, CLI, change, before, None, now_ms(), cached=[("root", root_key_id)])


async def list_root_keys(tx: Tables) -> list[RootKeyRecord]:
    return await tx.root_keys.all()
