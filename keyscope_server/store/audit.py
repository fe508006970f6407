"""Reading the audit trail; what a change writes to it is keyscope_server.store.changes."""

from __future__ import annotations

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.store.engine import Tables
from keyscope_server.store.models import AuditPage, AuditQuery

__all__ = ["list_audit_events"]


async def list_audit_events(tx: Tables, principal: Principal, query: AuditQuery) -> AuditPage:
    principal.require(access.READ_EVENTS.permission(query.api_id or "*"))
    return await tx.audit.page(query)
