"""A change as the engine records it, for tests that write through the engine's tables below the store's rules."""

from __future__ import annotations

from collections.abc import Sequence

from keyscope_server.store.engine import ChangeRecord, Links
from keyscope_server.store.models import AuditEventRecord

__all__ = ["key_change"]


def key_change(key_id: str, permission_ids: Sequence[str] | None = None) -> ChangeRecord:
    """A change of one key, as `ChangeLog.record` takes it: logged for caches, with its audit event; with
    `permission_ids`, the key's direct permissions replaced by these."""
    event = AuditEventRecord(0, 0, "root_test", "TestChange", "key", key_id, "", None, None, (), "req_test")
    replaced = [] if permission_ids is None else [Links("key_permissions", key_id, permission_ids)]
    return ChangeRecord(cached=[("key", key_id)], touched={}, now=0, event=event, replaced=replaced)
