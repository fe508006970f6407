"""keyscope.v1.ApiService."""

from __future__ import annotations

from typing import Any

import grpc

from keyscope.v1 import apis_pb2, apis_pb2_grpc
from keyscope_server.messages import api_message, scope_message
from keyscope_server.page_tokens import PageTokens
from keyscope_server.request_context import current_principal
from keyscope_server.services.paging import page_request
from keyscope_server.store import Store
from keyscope_server.validation import MAX_NAME, Validator

__all__ = ["ApiService"]


class ApiService(apis_pb2_grpc.ApiServiceServicer):
    def __init__(self, store: Store, page_tokens: PageTokens) -> None:
        self._store = store
        self._page_tokens = page_tokens

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

    async def ListApis(
        self, request: apis_pb2.ListApisRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apis_pb2.ListApisResponse:
        check = Validator()
        page = page_request(check, self._page_tokens, "ListApis", (), request.page_size, request.page_token)
        check.min_revision(request.min_revision)
        check.done()
        found = await self._store.list_apis(current_principal(), page.after, page.limit, request.min_revision)
        last = found.items[-1].id if found.items else ""
        return apis_pb2.ListApisResponse(
            apis=[api_message(a) for a in found.items],
            next_page_token=page.next_token(self._page_tokens, last, found.more),
        )

    async def ListPermissions(
        self, request: apis_pb2.ListPermissionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apis_pb2.ListPermissionsResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        page = page_request(
            check, self._page_tokens, "ListPermissions", (request.api_id,), request.page_size, request.page_token
        )
        check.min_revision(request.min_revision)
        check.done()
        found = await self._store.list_permissions(
            current_principal(), request.api_id, page.after, page.limit, request.min_revision
        )
        last = found.items[-1].name if found.items else ""
        return apis_pb2.ListPermissionsResponse(
            scopes=[scope_message(p) for p in found.items],
            next_page_token=page.next_token(self._page_tokens, last, found.more),
        )

    async def DeleteApi(
        self, request: apis_pb2.DeleteApiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apis_pb2.DeleteApiResponse:
        check = Validator()
        check.id("api_id", request.api_id, "api")
        check.etag(request.etag)
        check.done()
        deleted = await self._store.delete_api(current_principal(), request.api_id, request.etag, request.validate_only)
        return apis_pb2.DeleteApiResponse(
            keys_deleted=deleted.keys,
            roles_deleted=deleted.roles,
            scopes_deleted=deleted.scopes,
            revision=deleted.revision,
        )
