"""keyscope.v1.RoleService."""

from __future__ import annotations

from typing import Any

import grpc

from keyscope.v1 import roles_pb2, roles_pb2_grpc
from keyscope_server.messages import permission_message, role_message
from keyscope_server.page_tokens import PageTokens
from keyscope_server.request_context import current_principal
from keyscope_server.services.paging import page_request
from keyscope_server.store import Store
from keyscope_server.validation import MAX_DESCRIPTION, Validator

__all__ = ["RoleService"]


class RoleService(roles_pb2_grpc.RoleServiceServicer):
    def __init__(self, store: Store, page_tokens: PageTokens) -> None:
        self._store = store
        self._page_tokens = page_tokens

    async def CreateRole(
        self, request: roles_pb2.CreateRoleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> roles_pb2.CreateRoleResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        check.role_name("name", request.name)
        check.text("description", request.description, max_length=MAX_DESCRIPTION, multiline=True)
        names = check.permission_names("permissions", request.permissions)
        check.done()
        written = await self._store.create_role(
            current_principal(), request.api_id, request.name, request.description, names
        )
        return roles_pb2.CreateRoleResponse(
            role=role_message(written.value),
            created_permissions=[permission_message(p) for p in written.created_permissions],
            revision=written.revision,
        )

    async def GetRole(
        self, request: roles_pb2.GetRoleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> roles_pb2.GetRoleResponse:
        check = Validator()
        check.id("role_id", request.role_id, "role")
        check.min_revision(request.min_revision)
        check.done()
        role = await self._store.get_role(current_principal(), request.role_id, request.min_revision)
        return roles_pb2.GetRoleResponse(role=role_message(role))

    async def SetRolePermissions(
        self, request: roles_pb2.SetRolePermissionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> roles_pb2.SetRolePermissionsResponse:
        check = Validator()
        check.id("role_id", request.role_id, "role")
        names = check.permission_names("permissions", request.permissions)
        check.etag(request.etag)
        check.done()
        written = await self._store.set_role_permissions(current_principal(), request.role_id, names, request.etag)
        return roles_pb2.SetRolePermissionsResponse(
            role=role_message(written.value),
            created_permissions=[permission_message(p) for p in written.created_permissions],
            revision=written.revision,
        )

    async def ListRoles(
        self, request: roles_pb2.ListRolesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> roles_pb2.ListRolesResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        page = page_request(
            check, self._page_tokens, "ListRoles", (request.api_id,), request.page_size, request.page_token
        )
        check.min_revision(request.min_revision)
        check.done()
        found = await self._store.list_roles(
            current_principal(), request.api_id, page.after, page.limit, request.min_revision
        )
        last = found.items[-1].name if found.items else ""
        return roles_pb2.ListRolesResponse(
            roles=[role_message(r) for r in found.items],
            next_page_token=page.next_token(self._page_tokens, last, found.more),
        )

    async def DeleteRole(
        self, request: roles_pb2.DeleteRoleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> roles_pb2.DeleteRoleResponse:
        check = Validator()
        check.id("role_id", request.role_id, "role")
        check.etag(request.etag)
        check.done()
        deleted = await self._store.delete_role(
            current_principal(), request.role_id, request.etag, request.validate_only
        )
        return roles_pb2.DeleteRoleResponse(keys_affected=deleted.keys, revision=deleted.revision)
