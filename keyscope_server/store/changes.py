"""What every change records, in the same transaction as the change: a new store-wide revision (the audit
event's sequence id and the changed rows' etag), what caches must drop (the change log), and one audit event
with the resource before and after."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from keyscope_server.access import Principal
from keyscope_server.store.engine import ChangeRecord, Links, Tables
from keyscope_server.store.models import AuditEventRecord, PermissionEntry
from keyscope_server.store.states import ApiState, KeyState, RoleState, RootKeyState

__all__ = ["CHANGES_KEPT", "Change", "current_revision", "page_token_key", "record_change"]

CHANGES_KEPT = 100_000  # revisions of the change log kept; a cache further behind starts afresh
PRUNE_EVERY = 1000  # revisions between two prunings: what is kept only grows by this much

AnyState = ApiState | KeyState | RoleState | RootKeyState


@dataclass(frozen=True)
class Change:
    """What a call changed: the RPC or command, and the resource (`api`, `key`, `role`, `root_key`)."""

    action: str
    resource_type: str
    resource_id: str
    api_id: str = ""


async def record_change(
    tx: Tables,
    principal: Principal,
    change: Change,
    before: AnyState | None,
    after: AnyState | None,
    now: int,
    *,
    cached: Sequence[tuple[str, str]] = (),
    created: Sequence[PermissionEntry] = (),
    touched: Sequence[tuple[str, str]] = (),
    replaced: Sequence[Links] = (),
) -> int:
    """Count the change and record it; the revision it produced.

    `cached`: what caches must drop (see ChangeRecord.cached). `created`: catalog entries the call added, which
    changes the API too. `touched`: other resources (type, id) the change reached, such as the keys and roles
    that lost a removed scope. `replaced`: the links the change replaces, written with the record.
    """
    changed: dict[str, list[str]] = defaultdict(list)
    if after is not None and change.resource_type != "root_key":
        changed[change.resource_type].append(change.resource_id)
    if created and change.resource_type != "api":
        changed["api"].append(change.api_id)
    for resource_type, resource_id in touched:
        changed[resource_type].append(resource_id)
    event = AuditEventRecord(
        revision=0,
        time_ms=now,
        actor=principal.root_key_id,
        action=change.action,
        resource_type=change.resource_type,
        resource_id=change.resource_id,
        api_id=change.api_id,
        before=None if before is None else before.as_event(),
        after=None if after is None else after.as_event(),
        created_permissions=tuple(sorted(p.name for p in created)),
        request_id=principal.request_id,
    )
    revision = await tx.changes.record(ChangeRecord(cached, changed, now, event, replaced))
    if revision % PRUNE_EVERY == 0:
        await tx.changes.prune(revision - CHANGES_KEPT)
    return revision


async def current_revision(tx: Tables) -> int:
    return await tx.changes.revision()


async def page_token_key(tx: Tables) -> bytes:
    return await tx.changes.page_token_key()
