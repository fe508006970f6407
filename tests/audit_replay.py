"""The audit trail as clients read it (ListAuditEvents), replayed by the store's own replay
(keyscope_server.store.audit_replay), and states printed for a readable diff.

`replay` turns each protobuf event back into the record the store keeps and replays those: one replay for the
store and the tests. `store_state` reads the same shape from a store's logical snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from google.protobuf.json_format import MessageToDict

from keyscope.v1 import audit_pb2
from keyscope_server.store.audit_replay import ReplayedState, store_state
from keyscope_server.store.audit_replay import replay as replay_records
from keyscope_server.store.models import AuditEventRecord
from tests.client import Caller

__all__ = ["all_events", "as_json", "as_record", "replay", "store_state"]


async def all_events(caller: Caller, page_size: int = 37, **filters: Any) -> list[audit_pb2.AuditEvent]:
    """Every event ListAuditEvents gives, page after page, oldest first."""
    events: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await caller.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=page_size, page_token=token, **filters), metadata=caller.md
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events[::-1]


def as_record(event: audit_pb2.AuditEvent) -> AuditEventRecord:
    """The event as the store keeps it: `before` and `after` back from Structs to the dicts `as_event` made."""
    return AuditEventRecord(
        revision=event.revision,
        time_ms=event.time.ToMilliseconds(),
        actor=event.actor,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        api_id=event.api_id,
        before=MessageToDict(event.before) if event.HasField("before") else None,
        after=MessageToDict(event.after) if event.HasField("after") else None,
        created_permissions=tuple(event.created_permissions),
        request_id=event.request_id,
    )


def replay(events: Iterable[audit_pb2.AuditEvent]) -> ReplayedState:
    """The state the events build from empty (keyscope_server.store.audit_replay.replay, which raises AuditTrailMismatch
    at the first event whose `before` the earlier events contradict)."""
    return replay_records(as_record(e) for e in events)


def as_json(state: ReplayedState) -> str:
    """For a readable diff when two states differ."""
    return json.dumps(asdict(state), indent=1, sort_keys=True)
