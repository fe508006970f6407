"""A test caller: the generated stubs over a real channel, with one root key's credentials.

Fixtures in conftest.py hand these out; `make_*` methods create what a test
needs in one call, through the public RPCs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from keyscope.v1 import (
    apis_pb2,
    apis_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    permissions_pb2,
    roles_pb2,
    roles_pb2_grpc,
)


@dataclass
class Caller:
    channel: grpc.aio.Channel
    root_key: str  # the root key's secret
    root_key_id: str

    def __post_init__(self) -> None:
        self.apis = apis_pb2_grpc.ApiServiceStub(self.channel)
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channel)
        self.roles = roles_pb2_grpc.RoleServiceStub(self.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: `await caller.keys.GetKey(request, metadata=caller.md)`."""
        return (("authorization", f"Bearer {self.root_key}"),)

    async def make_api(self, scopes: Sequence[str | tuple[str, str]] = (), name: str = "test api") -> apis_pb2.Api:
        entries = [permissions_pb2.Scope(value=s) if isinstance(s, str)
                   else permissions_pb2.Scope(value=s[0], description=s[1]) for s in scopes]
        response = await self.apis.CreateApi(apis_pb2.CreateApiRequest(name=name, scopes=entries), metadata=self.md)
        return response.api

    async def make_key(self, api_id: str, permissions: Sequence[str] = (), roles: Sequence[str] = (),
                       **fields: object) -> tuple[keys_pb2.Key, str]:
        """A new key and its secret."""
        response = await self.keys.CreateKey(
            keys_pb2.CreateKeyRequest(api_id=api_id, permissions=permissions, roles=roles, **fields),  # type: ignore[arg-type]
            metadata=self.md)
        return response.key, response.secret

    async def make_role(self, api_id: str, name: str, permissions: Sequence[str] = (),
                        description: str = "") -> roles_pb2.Role:
        response = await self.roles.CreateRole(
            roles_pb2.CreateRoleRequest(api_id=api_id, name=name, description=description, permissions=permissions),
            metadata=self.md)
        return response.role

    async def verify(self, secret: str, query: str = "") -> keys_pb2.VerifyKeyResponse:
        return await self.keys.VerifyKey(keys_pb2.VerifyKeyRequest(key=secret, permissions=query), metadata=self.md)
