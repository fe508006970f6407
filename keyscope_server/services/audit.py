"""keyscope.v1.AuditService."""

from __future__ import annotations

from typing import Any

import grpc

from keyscope.v1 import audit_pb2, audit_pb2_grpc
from keyscope_server.messages import audit_event_message, timestamp_ms
from keyscope_server.page_tokens import PageTokens
from keyscope_server.request_context import current_principal
from keyscope_server.services.paging import DEFAULT_PAGE_SIZE
from keyscope_server.store import Store
from keyscope_server.store.models import AuditQuery
from keyscope_server.validation import Validator

__all__ = ["AuditService"]


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, store: Store, page_tokens: PageTokens) -> None:
        self._store = store
        self._page_tokens = page_tokens

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.ListAuditEventsResponse:
        check = Validator()
        check.optional_id("api_id", request.api_id)
        check.optional_id("resource_id", request.resource_id)
        check.optional_id("actor", request.actor)
        check.action("action", request.action)
        times: dict[str, int | None] = {}
        for field in ("start_time", "end_time"):
            times[field] = None
            if request.HasField(field):
                value = getattr(request, field)
                if check.timestamp(field, value.seconds, value.nanos):
                    times[field] = timestamp_ms(value)
        check.page_size(request.page_size)
        filters = (request.api_id, request.resource_id, request.actor, request.action, *times.values())
        before: int | None = None
        if request.page_token:
            try:
                before = self._page_tokens.decode(request.page_token, filters)
            except ValueError as exc:
                check.add("page_token", f"{exc}: send the next_page_token of the same list, with the same filters")
        check.done()
        query = AuditQuery(
            api_id=request.api_id,
            resource_id=request.resource_id,
            actor=request.actor,
            action=request.action,
            start_ms=times["start_time"],
            end_ms=times["end_time"],
            before_revision=before,
            limit=request.page_size or DEFAULT_PAGE_SIZE,
        )
        page = await self._store.list_audit_events(current_principal(), query)
        next_token = self._page_tokens.encode(page.events[-1].revision, filters) if page.more else ""
        return audit_pb2.ListAuditEventsResponse(
            events=[audit_event_message(e) for e in page.events], next_page_token=next_token
        )
