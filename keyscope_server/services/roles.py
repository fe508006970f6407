"""keyscope.v1.RoleService."""

from __future__ import annotations

from typing import Any

import grpc

from keyscope.v1 import roles_pb2, roles_pb2_grpc
from keyscope_server.messages import permission_message, role_message
from keyscope_server.request_context import current_principal
from keyscope_server.store import Store
from keyscope_server.validation import MAX_DESCRIPTION, Validator

__all__ = ["RoleService"]


class RoleService(roles_pb2_grpc.RoleServiceServicer):
    def __init__(self, store: Store) -> None:
        self._store = store

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
