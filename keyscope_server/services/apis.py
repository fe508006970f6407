"""keyscope.v1.ApiService."""

from __future__ import annotations

from typing import Any

import grpc

from keyscope.v1 import apis_pb2, apis_pb2_grpc
from keyscope_server.messages import api_message
from keyscope_server.request_context import current_principal
from keyscope_server.store import Store
from keyscope_server.validation import MAX_NAME, Validator

__all__ = ["ApiService"]


class ApiService(apis_pb2_grpc.ApiServiceServicer):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def CreateApi(
        self, request: apis_pb2.CreateApiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apis_pb2.CreateApiResponse:
        check = Validator()
        check.text("name", request.name, max_length=MAX_NAME, required=True)
        scopes = check.scopes("scopes", ((s.value, s.description) for s in request.scopes))
        check.done()
        written = await self._store.create_api(current_principal(), request.name, scopes)
        return apis_pb2.CreateApiResponse(api=api_message(written.value), revision=written.revision)

    async def GetApi(
        self, request: apis_pb2.GetApiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apis_pb2.GetApiResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        check.min_revision(request.min_revision)
        check.done()
        api = await self._store.get_api(current_principal(), request.api_id, request.min_revision)
        return apis_pb2.GetApiResponse(api=api_message(api))

    async def UpdateScopes(
        self, request: apis_pb2.UpdateScopesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apis_pb2.UpdateScopesResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        scopes = check.scopes("scopes", ((s.value, s.description) for s in request.scopes))
        check.etag(request.etag)
        check.done()
        update = await self._store.update_scopes(
            current_principal(), request.api_id, scopes, request.etag, request.validate_only
        )
        return apis_pb2.UpdateScopesResponse(
            api=api_message(update.api),
            removed_scopes=update.removed,
            keys_affected=update.keys_affected,
            roles_affected=update.roles_affected,
            revision=update.revision,
        )
