"""Reading the audit trail; what a change writes to it is server.store.changes."""

from __future__ import annotations

from server import access
from server.access import Principal
from server.store.engine import Tables
from server.store.models import AuditPage, AuditQuery

__all__ = ["list_audit_events"]


async def list_audit_events(tx: Tables, principal: Principal, query: AuditQuery) -> AuditPage:
    principal.require(access.READ_EVENTS.permission(query.api_id or "*"))
    return await tx.audit.page(query)
