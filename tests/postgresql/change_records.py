"""A change as the engine records it, for tests that write through the engine's tables below the store's rules."""

from __future__ import annotations

from server.store.engine import ChangeRecord
from server.store.models import AuditEventRecord

__all__ = ["key_change"]


def key_change(key_id: str) -> ChangeRecord:
    """A change of one key, as `ChangeLog.record` takes it: logged for caches, with its audit event."""
    event = AuditEventRecord(0, 0, "root_test", "TestChange", "key", key_id, "", None, None, (), "req_test")
    return ChangeRecord(cached=[("key", key_id)], touched={}, now=0, event=event)
