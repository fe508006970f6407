"""Store records to keyscope.v1 messages."""

from __future__ import annotations

from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from keyscope.v1 import apis_pb2, audit_pb2, keys_pb2, permissions_pb2, roles_pb2
from keyscope_server.store.models import ApiRecord, AuditEventRecord, KeyRecord, PermissionEntry, RoleRecord

__all__ = [
    "api_message",
    "audit_event_message",
    "key_message",
    "permission_message",
    "role_message",
    "timestamp",
    "scope_message",
    "timestamp_ms",
]


def timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def timestamp_ms(ts: Timestamp) -> int:
    return int(ts.ToMilliseconds())


def permission_message(entry: PermissionEntry) -> permissions_pb2.Permission:
    return permissions_pb2.Permission(id=entry.id, name=entry.name, description=entry.description)


def scope_message(entry: PermissionEntry) -> permissions_pb2.Scope:
    return permissions_pb2.Scope(id=entry.id, value=entry.name, description=entry.description)


def api_message(api: ApiRecord) -> apis_pb2.Api:
    return apis_pb2.Api(
        id=api.id,
        name=api.name,
        scopes=[scope_message(s) for s in api.scopes],
        create_time=timestamp(api.created_ms),
        update_time=timestamp(api.updated_ms),
        etag=api.etag,
    )


def role_message(role: RoleRecord) -> roles_pb2.Role:
    return roles_pb2.Role(
        id=role.id,
        api_id=role.api_id,
        name=role.name,
        description=role.description,
        permissions=[permission_message(p) for p in role.permissions],
        create_time=timestamp(role.created_ms),
        update_time=timestamp(role.updated_ms),
        etag=role.etag,
    )


def key_message(key: KeyRecord) -> keys_pb2.Key:
    message = keys_pb2.Key(
        id=key.id,
        api_id=key.api_id,
        name=key.name,
        start=key.start,
        enabled=key.enabled,
        permissions=[permission_message(p) for p in key.permissions],
        roles=[role_message(r) for r in key.roles],
        create_time=timestamp(key.created_ms),
        update_time=timestamp(key.updated_ms),
        etag=key.etag,
    )
    if key.expires_ms is not None:
        message.expire_time.CopyFrom(timestamp(key.expires_ms))
    return message


def _struct(state: dict[str, Any]) -> Struct:
    message = Struct()
    message.update(state)
    return message


def audit_event_message(event: AuditEventRecord) -> audit_pb2.AuditEvent:
    message = audit_pb2.AuditEvent(
        revision=event.revision,
        time=timestamp(event.time_ms),
        actor=event.actor,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        api_id=event.api_id,
        created_permissions=event.created_permissions,
        request_id=event.request_id,
    )
    if event.before is not None:
        message.before.CopyFrom(_struct(event.before))
    if event.after is not None:
        message.after.CopyFrom(_struct(event.after))
    return message
