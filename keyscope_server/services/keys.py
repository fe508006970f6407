"""keyscope.v1.KeyService."""

from __future__ import annotations

import time
from typing import Any

import grpc

from keyscope.v1 import keys_pb2, keys_pb2_grpc
from keyscope_server.credentials import hash_secret, new_secret, secret_start
from keyscope_server.messages import key_message, permission_message, role_message, timestamp_ms
from keyscope_server.page_tokens import PageTokens
from keyscope_server.permission_query import Query, QuerySyntaxError, parse_query
from keyscope_server.request_context import current_principal, verify_outcome_var
from keyscope_server.services.paging import page_request
from keyscope_server.store import Store
from keyscope_server.store.models import KeyChanges, KeyQuery, KeyRecord, NewKey, PermissionsUpdate, Written
from keyscope_server.throttle import NO_THROTTLE, Throttle
from keyscope_server.validation import MAX_NAME, Validator
from keyscope_server.verification import OUTCOMES, verdict

__all__ = ["KeyService"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class KeyService(keys_pb2_grpc.KeyServiceServicer):
    def __init__(
        self,
        store: Store,
        page_tokens: PageTokens,
        throttle: Throttle = NO_THROTTLE,
    ) -> None:
        self._store = store
        self._page_tokens = page_tokens
        self._throttle = throttle

    async def CreateKey(
        self, request: keys_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.CreateKeyResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        check.text("name", request.name, max_length=MAX_NAME)
        check.prefix("prefix", request.prefix)
        expires_ms = None
        if request.HasField("expire_time"):
            if check.timestamp("expire_time", request.expire_time.seconds, request.expire_time.nanos):
                expires_ms = timestamp_ms(request.expire_time)
                if expires_ms <= _now_ms():
                    check.add("expire_time", "must lie in the future")
        permissions = check.permission_names("permissions", request.permissions)
        roles = check.role_names("roles", request.roles)
        check.done()
        secret = new_secret(request.prefix)
        new = NewKey(
            api_id=request.api_id,
            name=request.name,
            secret_hash=hash_secret(secret),
            start=secret_start(secret, request.prefix),
            enabled=request.enabled if request.HasField("enabled") else True,
            expires_ms=expires_ms,
            permissions=tuple(permissions),
            roles=tuple(roles),
        )
        written = await self._store.create_key(current_principal(), new)
        return keys_pb2.CreateKeyResponse(
            key=key_message(written.value),
            secret=secret,
            created_permissions=[permission_message(p) for p in written.created_permissions],
            revision=written.revision,
        )

    async def GetKey(
        self, request: keys_pb2.GetKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.GetKeyResponse:
        check = Validator()
        check.id("key_id", request.key_id, "key")
        check.min_revision(request.min_revision)
        check.done()
        key = await self._store.get_key(current_principal(), request.key_id, request.min_revision)
        return keys_pb2.GetKeyResponse(key=key_message(key))

    async def ListKeys(
        self, request: keys_pb2.ListKeysRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.ListKeysResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        enabled = request.enabled if request.HasField("enabled") else None
        if request.permission:
            check.permission_name("permission", request.permission)
        if request.role:
            check.role_name("role", request.role)
        filters = (request.api_id, enabled, request.permission, request.role)
        page = page_request(check, self._page_tokens, "ListKeys", filters, request.page_size, request.page_token)
        check.min_revision(request.min_revision)
        check.done()
        query = KeyQuery(request.api_id, page.after, page.limit, enabled, request.permission, request.role)
        found = await self._store.list_keys(current_principal(), query, request.min_revision)
        last = found.items[-1].id if found.items else ""
        return keys_pb2.ListKeysResponse(
            keys=[key_message(k) for k in found.items],
            next_page_token=page.next_token(self._page_tokens, last, found.more),
        )

    async def UpdateKey(
        self, request: keys_pb2.UpdateKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.UpdateKeyResponse:
        check = Validator()
        check.id("key_id", request.key_id, "key")
        if request.HasField("name"):
            check.text("name", request.name, max_length=MAX_NAME)
        has_expiry = request.HasField("expire_time")
        if has_expiry:
            check.timestamp("expire_time", request.expire_time.seconds, request.expire_time.nanos)
        if has_expiry and request.clear_expire_time:
            check.add("clear_expire_time", "cannot be combined with expire_time")
        if not (request.HasField("name") or request.HasField("enabled") or has_expiry or request.clear_expire_time):
            check.add("key_id", "nothing to update: set name, enabled, expire_time or clear_expire_time")
        check.etag(request.etag)
        check.done()
        changes = KeyChanges(
            name=request.name if request.HasField("name") else None,
            enabled=request.enabled if request.HasField("enabled") else None,
            expires_ms=timestamp_ms(request.expire_time) if has_expiry else None,
            clear_expiry=request.clear_expire_time,
        )
        written = await self._store.update_key(current_principal(), request.key_id, changes, request.etag)
        return keys_pb2.UpdateKeyResponse(key=key_message(written.value), revision=written.revision)

    async def DeleteKey(
        self, request: keys_pb2.DeleteKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.DeleteKeyResponse:
        check = Validator()
        check.id("key_id", request.key_id, "key")
        check.done()
        revision = await self._store.delete_key(current_principal(), request.key_id)
        return keys_pb2.DeleteKeyResponse(revision=revision)

    async def SetPermissions(
        self, request: keys_pb2.SetPermissionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.SetPermissionsResponse:
        names = _permissions_request(request)
        update = await self._store.set_permissions(
            current_principal(), request.key_id, names, request.etag, request.validate_only
        )
        created = [permission_message(p) for p in update.created_permissions]
        return keys_pb2.SetPermissionsResponse(**_permissions_answer(update), created_permissions=created)

    async def AddPermissions(
        self, request: keys_pb2.AddPermissionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.AddPermissionsResponse:
        names = _permissions_request(request)
        update = await self._store.add_permissions(
            current_principal(), request.key_id, names, request.etag, request.validate_only
        )
        created = [permission_message(p) for p in update.created_permissions]
        return keys_pb2.AddPermissionsResponse(**_permissions_answer(update), created_permissions=created)

    async def RemovePermissions(
        self, request: keys_pb2.RemovePermissionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.RemovePermissionsResponse:
        names = _permissions_request(request)
        update = await self._store.remove_permissions(
            current_principal(), request.key_id, names, request.etag, request.validate_only
        )
        return keys_pb2.RemovePermissionsResponse(**_permissions_answer(update))

    async def SetRoles(
        self, request: keys_pb2.SetRolesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.SetRolesResponse:
        written = await self._store.set_roles(
            current_principal(), request.key_id, _roles_request(request), request.etag
        )
        return keys_pb2.SetRolesResponse(**_roles_answer(written))

    async def AddRoles(
        self, request: keys_pb2.AddRolesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.AddRolesResponse:
        written = await self._store.add_roles(
            current_principal(), request.key_id, _roles_request(request), request.etag
        )
        return keys_pb2.AddRolesResponse(**_roles_answer(written))

    async def RemoveRoles(
        self, request: keys_pb2.RemoveRolesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.RemoveRolesResponse:
        written = await self._store.remove_roles(
            current_principal(), request.key_id, _roles_request(request), request.etag
        )
        return keys_pb2.RemoveRolesResponse(**_roles_answer(written))

    async def VerifyKey(
        self, request: keys_pb2.VerifyKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.VerifyKeyResponse:
        check = Validator()
        check.secret("key", request.key)
        query: Query | None = None
        if request.permissions.strip():
            try:
                query = parse_query(request.permissions)
            except QuerySyntaxError as exc:
                check.add("permissions", str(exc))
        check.min_revision(request.min_revision)
        check.done()
        principal = current_principal()
        gate = self._throttle.for_root_key(principal.root_key_id)
        found = await self._store.verify_key(principal, hash_secret(request.key), request.min_revision, gate)
        answer = verdict(found, query, _now_ms())
        verify_outcome_var.set(OUTCOMES[answer.code])  # the call's outcome, for its access-log line and metrics
        return answer


PermissionsRequest = keys_pb2.SetPermissionsRequest | keys_pb2.AddPermissionsRequest | keys_pb2.RemovePermissionsRequest
RolesRequest = keys_pb2.SetRolesRequest | keys_pb2.AddRolesRequest | keys_pb2.RemoveRolesRequest


def _permissions_request(request: PermissionsRequest) -> list[str]:
    """The permission names of a Set/Add/RemovePermissions request, once its fields are checked."""
    check = Validator()
    check.id("key_id", request.key_id, "key")
    names = check.permission_names("permissions", request.permissions)
    check.etag(request.etag)
    check.done()
    return names


def _permissions_answer(update: PermissionsUpdate) -> dict[str, Any]:
    """The fields every permissions answer has (a removal's has no created_permissions)."""
    return {
        "permissions": [permission_message(p) for p in update.permissions],
        "revision": update.revision,
        "etag": update.etag,
    }


def _roles_request(request: RolesRequest) -> list[str]:
    """The role names of a Set/Add/RemoveRoles request, once its fields are checked."""
    check = Validator()
    check.id("key_id", request.key_id, "key")
    names = check.role_names("roles", request.roles)
    check.etag(request.etag)
    check.done()
    return names


def _roles_answer(written: Written[KeyRecord]) -> dict[str, Any]:
    return {
        "roles": [role_message(r) for r in written.value.roles],
        "revision": written.revision,
        "etag": written.value.etag,
    }
